//! idbridge as an identity provider (issue 16), HTTP only: the service-provider admin API
//! ([`admin`]) and the per-organization SAML IdP endpoints and login page ([`saml`]). The
//! domain (records, keys, sessions, password checks, assertions) is `idbridge_sso::idp`.

pub mod admin;
pub mod oidc;
pub mod oidc_admin;
pub mod saml;

#[cfg(test)]
mod broker_tests;
#[cfg(test)]
mod tests;

use axum::Router;

use crate::AppState;

/// Routes that need an API key.
pub fn protected_routes() -> Router<AppState> {
    admin::routes().merge(oidc_admin::routes())
}

/// Browser-facing routes.
pub fn public_routes() -> Router<AppState> {
    saml::routes().merge(oidc::routes())
}
