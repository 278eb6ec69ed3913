//! idbridge as an identity provider (issue 16): WorkOS (or any SAML SP) registers idbridge as a
//! "Custom SAML" IdP of an organization; idbridge authenticates the user and posts a signed
//! assertion to the SP's registered ACS.
//!
//! - [`service_providers`]: the SP registry (one owner of its tables).
//! - [`keys`]: the organization's IdP signing keys, generated on first use, sealed.
//! - [`login`]: the IdP login — AuthnRequest intake (the part-1 library in idbridge-saml), the
//!   IdP login session (expiring, single use, bound to a browser cookie and a CSRF token), the
//!   *directory* authentication source (a password checked by binding as the user against the
//!   organization's LDAP/AD directory, see `idbridge_ldap::bind_auth`) with per-account and
//!   per-address attempt limits, and the signed assertion.
//!
//! One IdP per organization, at `{public_url}/idp/{organization id}/saml/…`.

pub mod keys;
pub mod login;
pub mod oidc;
pub mod oidc_clients;
pub mod service_providers;

use std::time::Duration;

use idbridge_limits::{FailureLimit, FailureLimiter};

use crate::SsoService;

pub use login::{
    AuthenticatedSubject, IdpPage, PasswordLogin, PasswordOutcome, PendingRequest, RelyingParty,
    SsoBinding, SsoOutcome, SsoRequest, SubjectSource, IDP_SESSIONS,
};
pub use oidc::{OidcAuthorize, OidcAuthorizeOutcome, PendingAuthorization};
pub use oidc_clients::{
    IssuedClient, NewOidcClient, OidcClient, OidcClientOptions, OidcClientUpdate, OidcClients,
};
pub use service_providers::{
    AuthSource, NewServiceProvider, ServiceProvider, ServiceProviderUpdate, ServiceProviders,
    SpOptions, SpSource,
};

/// The URLs of one organization's IdP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpUrls {
    /// The IdP entity id (the metadata URL, by convention).
    pub entity_id: String,
    pub metadata_url: String,
    /// The SSO endpoint (HTTP-Redirect and HTTP-POST).
    pub sso_url: String,
    /// Where the login page posts.
    pub login_url: String,
}

/// IdP settings (defaults suit most deployments).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdpConfig {
    /// How long a browser may take from the AuthnRequest to the password.
    pub login_ttl: Duration,
    /// Failed passwords per account (organization + login name) in the window.
    pub account_failures: FailureLimit,
    /// Failed passwords per client address in the window.
    pub address_failures: FailureLimit,
    /// Every refused password takes at least this long, so timing does not tell an unknown
    /// user (one search) from a wrong password (a search and a bind).
    pub failure_floor: Duration,
}

impl Default for IdpConfig {
    fn default() -> Self {
        IdpConfig {
            login_ttl: Duration::from_secs(900),
            account_failures: FailureLimit {
                max_failures: 5,
                window_secs: 900,
            },
            address_failures: FailureLimit {
                max_failures: 50,
                window_secs: 900,
            },
            failure_floor: Duration::from_millis(300),
        }
    }
}

/// The IdP's part of the service.
pub(crate) struct IdpState {
    pub(crate) service_providers: ServiceProviders,
    pub(crate) oidc_clients: OidcClients,
    pub(crate) oidc_lifetimes: oidc::OidcLifetimes,
    pub(crate) config: IdpConfig,
    pub(crate) account_limiter: FailureLimiter,
    pub(crate) address_limiter: FailureLimiter,
}

impl IdpState {
    pub(crate) fn new(store: std::sync::Arc<dyn idbridge_store::Store>, config: IdpConfig) -> Self {
        IdpState {
            service_providers: ServiceProviders::new(store.clone()),
            oidc_clients: OidcClients::new(store),
            oidc_lifetimes: oidc::OidcLifetimes::default(),
            account_limiter: FailureLimiter::new(config.account_failures),
            address_limiter: FailureLimiter::new(config.address_failures),
            config,
        }
    }
}

impl SsoService {
    /// The URLs of an organization's IdP.
    pub fn idp_urls(&self, org_id: &str) -> IdpUrls {
        let base = format!("{}/idp/{org_id}", self.public_url());
        IdpUrls {
            entity_id: format!("{base}/saml/metadata"),
            metadata_url: format!("{base}/saml/metadata"),
            sso_url: format!("{base}/saml/sso"),
            login_url: format!("{base}/login"),
        }
    }

    /// Replaces the IdP settings (tests and the server's config).
    pub fn set_idp_config(&mut self, config: IdpConfig) {
        self.idp = IdpState::new(self.store.clone(), config);
    }
}
