//! # idbridge-oidc — the OpenID Connect relying party (and, in [`op`], the provider side)
//!
//! One [`OidcClient`] per OIDC connection. [`OidcClient::begin`] builds the authorization URL
//! (authorization-code flow, PKCE S256, fresh `state` and `nonce`); the caller binds
//! [`BeginAuth`]'s `state`, `nonce` and `pkce_verifier` to the browser. On the callback,
//! [`OidcClient::finish`] checks `state`, exchanges the code (`client_secret_basic` or
//! `client_secret_post`), verifies the ID token, merges userinfo and maps claims to an
//! an [`idbridge_model::Identity`] (the identity type every login protocol maps into). IdP error callbacks go through [`map_idp_error`].
//!
//! ID token checks: an algorithm allow-list of asymmetric algorithms only (RS/PS/ES; `none` and
//! HMAC cannot be configured), signature with the provider's JWKS, exact `iss`, `aud` containing
//! the client id and no untrusted extra audience, `azp` (when present) equal to the client id,
//! `exp` and `nbf` with a bounded skew, `iat` neither in the future nor older than
//! `max_id_token_age`, `nonce`, and `at_hash` when present. Signature/`iss`/`aud`/`exp`/`nonce`
//! are done by the `openidconnect` crate; the rest here.
//!
//! Discovery documents and JWKS are cached per client ([`OidcSettings::discovery_ttl`]); a token
//! naming an unknown `kid` triggers a JWKS re-fetch at most once per
//! [`OidcSettings::jwks_refetch_min_interval`], so key rotation is followed without a restart.
//! The client secret lives in [`Secret`], which never prints.
//!
//! ```no_run
//! use idbridge_oidc::*;
//! # async fn demo() -> Result<(), OidcError> {
//! let settings = OidcSettings::new(
//!     ConnectionType::EntraIdOidc, // preset: scopes, claim map (oid, upn fallback, groups)
//!     "https://login.microsoftonline.com/TENANT_ID/v2.0",
//!     "client-id",
//!     Secret::from_env("IDBRIDGE_ENTRA_SECRET")?,
//! );
//! let client = OidcClient::new(settings, default_http_client()?)?;
//! let redirect = url::Url::parse("https://sso.example.com/sso/oidc/callback").unwrap();
//!
//! // 1. Login starts: store state, nonce and verifier in the browser's server-side session.
//! let begin = client.begin(&redirect, Some("user@example.com")).await?;
//! // ... 302 the browser to begin.url ...
//!
//! // 2. Callback `?code=..&state=..[&iss=..]` (or `?error=..`: see map_idp_error).
//! let identity = client
//!     .finish(FinishParams {
//!         code: "code-from-query",
//!         returned_state: "state-from-query",
//!         expected_state: &begin.state,
//!         returned_iss: None,
//!         nonce: &begin.nonce,
//!         pkce_verifier: begin.pkce_verifier.expose(),
//!         redirect_uri: &redirect,
//!     })
//!     .await;
//! match identity {
//!     Ok(id) => println!("{} <{:?}> groups={:?}", id.idp_id, id.email, id.groups),
//!     // Redirect the app with ?error=<code>&error_description=...
//!     Err(e) => println!("error={} ({e})", e.workos_error_code()),
//! }
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod claims;
mod client;
mod error;
mod http;
pub mod op;
mod provider;
mod secret;
mod settings;

pub use client::{BeginAuth, BeginOptions, FinishParams, OidcClient, MAX_EXTRA_SCOPES};
pub use error::{map_idp_error, OidcError};
pub use http::{default_http_client, MAX_RESPONSE_BYTES};
/// What [`OidcClient::finish`] returns: the identity type every login protocol maps into.
pub use idbridge_model::Identity;
pub use provider::ProviderMetadata;
pub use secret::Secret;
pub use settings::{
    AuthMethod, ClaimMap, ConnectionType, OidcSettings, SigningAlg, MAX_CLOCK_SKEW,
};
