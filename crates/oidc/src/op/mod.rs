//! # The OpenID Provider side (idbridge as the IdP of a "Generic OIDC" connection)
//!
//! Not to be confused with [`crate::ProviderMetadata`], which describes *upstream* providers
//! idbridge logs users in through. This module is the protocol half of issue 16's OIDC provider
//! mode; the SSO crate owns the endpoints, the client registry and the stored grants:
//!
//! - discovery: [`discovery_document`] of [`OpEndpoints`]; JWKS: [`jwks_document`] of one or two
//!   [`OpSigningKey`]s (rollover);
//! - authorization endpoint: [`parse_authorization`] → look the client up →
//!   [`UncheckedAuthorization::validate`] (exact redirect URI, `code` only, `openid` scope, PKCE
//!   S256) → after login [`CodeGrant::new`] stored under [`secret_key`] of [`new_secret`] →
//!   [`AuthorizationRequest::success_redirect`] (or [`AuthorizationRequest::error`]);
//! - token endpoint: [`TokenRequest::parse_form`] → [`client_credentials`] +
//!   [`authenticate_client`] (`client_secret_basic` / `client_secret_post` / `none`, constant
//!   time) → take the grant by [`TokenRequest::code_key`] (single use) → [`redeem`] (client,
//!   expiry, redirect URI, PKCE) → [`issue_tokens`] (RS256 ID token with `at_hash`, `nonce`,
//!   `auth_time`; opaque access token, stored as an [`AccessGrant`]);
//! - userinfo endpoint: [`bearer_token`] → the stored grant → [`userinfo`];
//! - errors: [`OAuthError`] (JSON body, HTTP status, `WWW-Authenticate`) and
//!   [`AuthorizeError`] (our error page vs. a redirect to the client).

mod authorize;
mod client;
mod discovery;
mod error;
mod keys;
mod token;

pub use authorize::{
    parse_authorization, AuthorizationRequest, AuthorizeError, Prompt, UncheckedAuthorization,
    MAX_STATE_LEN,
};
pub use client::{
    authenticate_client, client_credentials, generate_client_secret, secret_matches,
    ClientAuthMethod, ClientCredentials, RegisteredClient,
};
pub use discovery::{discovery_document, OpEndpoints, SUPPORTED_CLAIMS, SUPPORTED_SCOPES};
pub use error::{ErrorCode, OAuthError};
pub use keys::{jwks_document, OpSigningKey};
pub use token::{
    bearer_token, issue_tokens, new_secret, redeem, secret_key, userinfo, AccessGrant, CodeGrant,
    IssuedTokens, OpUser, TokenRequest, TokenResponse, DEFAULT_CODE_TTL_SECS,
    DEFAULT_TOKEN_TTL_SECS, MAX_TOKEN_FORM, RESERVED_CLAIMS,
};
