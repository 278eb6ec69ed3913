//! idbridge-scim: the SCIM 2.0 protocol layer (RFC 7643/7644) as pure library code.
//!
//! Everything here works on `serde_json::Value` resources and knows nothing of storage or HTTP,
//! so the directory engine and the router can be built and tested independently. A request
//! flows through it like this:
//!
//! - body: [`validate::parse_body`] (413 / invalidSyntax), then [`validate::validate_create`] or
//!   [`validate::validate_replace`] for POST/PUT, or [`patch::PatchRequest::from_json`] +
//!   [`patch::apply_patch`] for PATCH;
//! - preconditions: [`etag::check_if_match`] against `meta.version`;
//! - lists: [`filter::parse_filter`] + [`filter::check_filter`], [`filter::index_lookup`] to use
//!   an index, [`filter::matches`] to confirm, [`list::ListParams`] and [`list::list_response`];
//! - output: [`resource::stamp`] for `id`/`meta`, [`projection::Projection`] for
//!   `attributes`/`excludedAttributes`;
//! - auth: [`auth::bearer_token`] + [`auth::verify_token`] (401 as a SCIM error);
//! - every failure: [`ScimError::to_json`] with [`SCIM_CONTENT_TYPE`].
//!
//! [`router`] joins all of this to the directory engine as the `/scim/v2/{directory_id}` HTTP
//! endpoint.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod error;
pub mod etag;
pub mod filter;
pub mod list;
pub mod patch;
pub mod projection;
pub mod resource;
pub mod router;
pub mod schema;
pub mod validate;

pub use error::{ScimError, ScimType, SCIM_CONTENT_TYPE};
pub use filter::{matches, parse_filter, Filter};
pub use patch::{apply_patch, compare_resources, PatchOutcome, PatchRequest};
pub use projection::Projection;
pub use resource::Resource;
pub use schema::ResourceSchema;
