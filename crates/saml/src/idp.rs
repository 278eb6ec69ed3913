//! idbridge as a SAML identity provider (issue 16): the protocol pieces the SSO crate's IdP
//! endpoints call.
//!
//! - [`request`]: AuthnRequests received on the HTTP-Redirect or HTTP-POST binding — decoded
//!   under caps, gated, signature-verified with the registered SP's certificates, checked against
//!   the registered SP ([`RegisteredSp`]) and a replay cache.
//! - [`response`]: login Responses written directly in exclusive-canonical form and signed with
//!   one SHA-256 and one RSA operation ([`build_login_response`]); error Responses.
//! - [`metadata`]: our IdP metadata ([`idp_metadata_xml`]) and SP metadata import
//!   ([`SpMetadata::from_xml`]).
//! - [`keys`]: the IdP signing key ([`IdpSigningKey`]).
//! - [`post_form`]: the auto-submitting HTTP-POST page and its CSP.
//! - [`c14n`]: the canonical XML writer everything above writes with.
//! - The xmlsec-based test signer ([`IdpSigner`], [`AssertionSpec`], [`ResponseSpec`], ...)
//!   that the SP-side tests use to forge valid and hostile responses.

pub mod c14n;
pub mod encrypt;
pub mod error;
pub mod keys;
pub mod metadata;
pub mod post_form;
pub mod request;
pub mod response;
mod sign;
mod testsigner;

pub use encrypt::{DataEnc, KeyEnc};
pub use error::{status, IdpError, RequestViolation, SpErrorResponse};
pub use keys::{IdpSigningKey, RsaBits};
pub use metadata::{idp_metadata_xml, AcsEndpoint, IdpMetadata, SpMetadata};
pub use post_form::{post_form, PostField, PostForm};
pub use request::{
    AcceptedRequest, Binding, Comparison, ReceivedRequest, RegisteredSp, RequestContext,
    RequestedAuthnContext,
};
pub use response::{
    build_login_response, build_status_response, name_id_format, AssertionEncryption,
    LoginResponse, NameId, ResponseOptions, SamlAttribute, SignedResponse, UserAttributes,
};
pub use testsigner::*;
