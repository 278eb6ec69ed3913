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

pub mod broker;
pub mod initiated;
pub mod keys;
pub mod login;
pub mod oidc;
pub mod oidc_clients;
pub mod service_providers;
pub mod sessions;
pub mod settings;
pub mod source;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use idbridge_limits::{FailureLimit, FailureLimiter};
use idbridge_saml::idp::IdpSigningKey;

use crate::SsoService;

pub use broker::BrokerReturn;
/// A client secret (never printed, serialized or logged).
pub use idbridge_oidc::Secret;
pub use initiated::InitiatedStart;
pub use login::{
    FinishError, Finished, IdpPage, PasswordLogin, PasswordOutcome, PendingRequest, RelyingParty,
    SamlPending, SsoBinding, SsoOutcome, SsoRequest, IDP_SESSIONS,
};
pub use oidc::{OidcAuthorize, OidcAuthorizeOutcome, PendingAuthorization};
pub use oidc_clients::{
    IssuedClient, NewOidcClient, OidcClient, OidcClientOptions, OidcClientUpdate, OidcClients,
    MIN_GIVEN_SECRET_LEN,
};
pub use service_providers::{
    AuthSource, NewServiceProvider, ServiceProvider, ServiceProviderUpdate, ServiceProviders,
    SpOptions, SpSource,
};
pub use sessions::{BrowserSession, RememberCookie, SloBinding, SloOutcome};
pub use settings::{IdpSettings, TrustedProxies};
pub use source::{AuthenticatedSubject, SubjectSource};

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
    /// The SingleLogoutService (HTTP-Redirect and HTTP-POST).
    pub slo_url: String,
    /// Where a browser ends its own idbridge session.
    pub logout_url: String,
}

/// IdP settings (defaults suit most deployments); from the config file's `[idp]` section and
/// changeable while the server runs (`GET|PATCH /admin/idp/settings`, see [`settings`]).
#[derive(Debug, Clone, PartialEq)]
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
    /// The assertion lifetime (NotOnOrAfter) new service providers get.
    pub default_assertion_validity_secs: u64,
    /// Proxies whose `X-Forwarded-For` names the client address for the per-address limit;
    /// from anyone else the socket's peer address counts.
    pub trusted_proxies: TrustedProxies,
    /// The OpenID Provider's authorization-code lifetime (seconds).
    pub oidc_code_ttl_secs: i64,
    /// The OpenID Provider's access-token lifetime (seconds; also `expires_in`).
    pub oidc_access_token_ttl_secs: i64,
    /// The OpenID Provider's ID-token lifetime (its `exp`, seconds after `iat`).
    pub oidc_id_token_ttl_secs: i64,
    /// The "remember this browser" session's lifetime; zero = off.
    pub remember_browser_ttl: Duration,
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
            default_assertion_validity_secs: service_providers::DEFAULT_ASSERTION_VALIDITY_SECS,
            trusted_proxies: TrustedProxies::default(),
            oidc_code_ttl_secs: idbridge_oidc::op::DEFAULT_CODE_TTL_SECS,
            oidc_access_token_ttl_secs: idbridge_oidc::op::DEFAULT_TOKEN_TTL_SECS,
            oidc_id_token_ttl_secs: idbridge_oidc::op::DEFAULT_TOKEN_TTL_SECS,
            remember_browser_ttl: Duration::ZERO,
        }
    }
}

/// The settings in force and the attempt limiters built from them.
pub(crate) struct IdpLive {
    pub(crate) config: IdpConfig,
    pub(crate) account_limiter: Arc<FailureLimiter>,
    pub(crate) address_limiter: Arc<FailureLimiter>,
}

/// The IdP's part of the service.
pub(crate) struct IdpState {
    pub(crate) service_providers: ServiceProviders,
    pub(crate) oidc_clients: OidcClients,
    live: RwLock<Arc<IdpLive>>,
    /// Unsealed, parsed current signing keys per organization, each with the sealed form it
    /// came from: a login reuses the key while the stored set's current key is unchanged (a
    /// rotation on any node changes it), instead of unsealing and parsing it every time.
    pub(crate) signing_keys: std::sync::Mutex<HashMap<String, (String, IdpSigningKey)>>,
    /// Password checks per directory, holding their reusable LDAP connections.
    pub(crate) authenticators:
        std::sync::Mutex<HashMap<String, Arc<idbridge_ldap::BindAuthenticator>>>,
}

impl IdpState {
    pub(crate) fn new(store: std::sync::Arc<dyn idbridge_store::Store>, config: IdpConfig) -> Self {
        IdpState {
            service_providers: ServiceProviders::new(store.clone()),
            oidc_clients: OidcClients::new(store),
            signing_keys: std::sync::Mutex::default(),
            authenticators: std::sync::Mutex::default(),
            live: RwLock::new(Arc::new(IdpLive {
                account_limiter: Arc::new(FailureLimiter::new(config.account_failures)),
                address_limiter: Arc::new(FailureLimiter::new(config.address_failures)),
                config,
            })),
        }
    }

    pub(crate) fn live(&self) -> Arc<IdpLive> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `config` in force; a limiter whose limit is unchanged keeps its counts.
    fn replace(&self, config: IdpConfig) {
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        let limiter = |old: &Arc<FailureLimiter>, limit: FailureLimit| {
            if old.limit() == limit {
                old.clone()
            } else {
                Arc::new(FailureLimiter::new(limit))
            }
        };
        *live = Arc::new(IdpLive {
            account_limiter: limiter(&live.account_limiter, config.account_failures),
            address_limiter: limiter(&live.address_limiter, config.address_failures),
            config,
        });
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
            slo_url: format!("{base}/saml/slo"),
            logout_url: format!("{base}/logout"),
        }
    }

    /// The IdP settings in force.
    pub fn idp_config(&self) -> IdpConfig {
        self.idp.live().config.clone()
    }

    /// Puts IdP settings in force now (the server's config at start, the admin API later);
    /// logins in progress use them from their next step.
    pub fn set_idp_config(&self, config: IdpConfig) {
        self.idp.replace(config);
    }
}
