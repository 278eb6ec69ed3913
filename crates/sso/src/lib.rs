//! idbridge-sso: SSO and organizations as a service with typed inputs.
//!
//! What it owns (each store table has exactly one owning module here, which declares its name
//! and its typed record; nothing outside reads or writes those tables directly):
//! - [`organizations`]: organizations and their domains;
//! - [`connections`]: SSO connections — the record, secret sealing ([`connections::keys`]), IdP
//!   metadata fetching and the refresh worker ([`connections::metadata`]);
//! - [`login`]: the login flow — login session → one [`idbridge_model::Identity`] (from a SAML
//!   assertion or OIDC claims) → profile → single-use code → access token. A whole login is
//!   one store commit: the session take, the SAML replay entries, the profile id, the code,
//!   the `authentication.sso_succeeded` event and the connection's activation;
//! - [`api_keys`]: API keys and the environment's client id;
//! - [`webhooks`]: webhook endpoint records (idbridge-forward owns their delivery cursors);
//! - [`events`]: the event feed (WorkOS `/events`): reading, filtering and paging the log;
//! - [`idempotency`]: stored responses of `Idempotency-Key` requests;
//! - [`idp`]: idbridge as an identity provider (service providers, IdP keys, the IdP login);
//! - [`domains`] + [`dns`]: organization domain verification by DNS TXT records (no table:
//!   the domains are [`organizations`]' records).
//!
//! [`SsoService`] is the entry point. Its calls take typed inputs and fail with [`SsoError`];
//! `idbridge-api` parses HTTP into those inputs and maps the errors to WorkOS status codes, and
//! the CLI calls the service directly.

#![forbid(unsafe_code)]

pub mod api_keys;
pub mod connections;
mod db;
pub mod dns;
pub mod domains;
mod error;
pub mod events;
pub mod idempotency;
pub mod idp;
pub mod login;
pub mod organizations;
pub mod redirect_uri;
pub mod webhooks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idbridge_directory::DirectoryEngine;
use idbridge_store::{Store, StoreError};

pub use error::{FieldIssue, SsoError, SsoResult};

/// The records of a whole table that decode, and the ids of those that do not (with why): a
/// bad record is reported and skipped, never allowed to stop the others' readers.
pub type Readable<T> = (Vec<T>, Vec<(String, StoreError)>);
pub use idbridge_secrets::{SecretBox, SecretError, SECRET_KEY_ENV};

use crate::connections::Connections;
use crate::idempotency::Idempotency;
use crate::login::Logins;
use crate::organizations::Organizations;
use crate::webhooks::WebhookEndpoints;

/// The `[sso]` part of the configuration.
#[derive(Debug, Clone)]
pub struct SsoConfig {
    /// Allowed redirect URIs (exact or wildcard patterns, see [`redirect_uri`]).
    pub redirect_uris: Vec<String>,
    /// Where IdP-initiated logins go when RelayState names no allowed URI; defaults to the
    /// first exact entry of `redirect_uris`.
    pub default_redirect_uri: Option<String>,
    /// Lifetime of an authorization code.
    pub code_ttl: Duration,
    /// Lifetime of an access token (`expires_in`).
    pub access_token_ttl: Duration,
    /// Lifetime of a browser's login session (authorize → IdP → ACS/callback).
    pub login_ttl: Duration,
}

impl Default for SsoConfig {
    fn default() -> Self {
        SsoConfig {
            redirect_uris: Vec::new(),
            default_redirect_uri: None,
            code_ttl: Duration::from_secs(600),
            access_token_ttl: Duration::from_secs(600),
            login_ttl: Duration::from_secs(900),
        }
    }
}

impl SsoConfig {
    /// The default redirect URI for IdP-initiated logins, if one is known.
    pub fn default_redirect(&self) -> Option<String> {
        self.default_redirect_uri
            .clone()
            .or_else(|| {
                self.redirect_uris
                    .iter()
                    .find(|u| !u.contains('*'))
                    .cloned()
            })
            .filter(|u| redirect_uri::is_allowed(&self.redirect_uris, u))
    }
}

/// What the service needs besides the store and the directory engine.
#[derive(Debug, Clone)]
pub struct SsoSettings {
    /// Base of every external URL (ACS, SP metadata, OIDC callback); no trailing slash.
    pub public_url: String,
    pub config: SsoConfig,
    /// Seals connection secrets; `None` refuses to create connections that need one.
    pub secrets: Option<SecretBox>,
}

impl Default for SsoSettings {
    fn default() -> Self {
        SsoSettings {
            public_url: "http://127.0.0.1:8080".into(),
            config: SsoConfig::default(),
            secrets: None,
        }
    }
}

/// SSO and organizations, over one store.
pub struct SsoService {
    store: Arc<dyn Store>,
    /// Roles: the organization's role settings live in the directory engine.
    directory: Arc<DirectoryEngine>,
    settings: SsoSettings,
    /// The `[sso]` settings in force: `settings.config` at start, changed live by the admin
    /// API (`/admin/settings/sso`).
    live_config: std::sync::RwLock<Arc<SsoConfig>>,
    /// HTTP client for IdP metadata and OIDC providers (redirects off, timeouts on).
    http: Option<reqwest::Client>,
    /// OIDC clients (they hold discovery/JWKS caches), keyed by connection id and version.
    oidc_clients: Mutex<HashMap<String, (i64, Arc<idbridge_oidc::OidcClient>)>>,
    organizations: Organizations,
    connections: Connections,
    logins: Logins,
    webhooks: WebhookEndpoints,
    idempotency: Idempotency,
    /// idbridge as an IdP: the SP registry and the login page's attempt limits.
    idp: idp::IdpState,
    /// Organization domain verification by DNS.
    dns: dns::DnsVerifier,
}

impl std::fmt::Debug for SsoService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoService")
            .field("public_url", &self.settings.public_url)
            .field("config", &self.config())
            .field("secrets", &self.settings.secrets)
            .finish_non_exhaustive()
    }
}

impl SsoService {
    /// The service over `store`, with the process's directory engine (for roles).
    pub fn new(
        store: Arc<dyn Store>,
        directory: Arc<DirectoryEngine>,
        settings: SsoSettings,
    ) -> Self {
        let http = match idbridge_oidc::default_http_client() {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "no HTTP client for IdP requests");
                None
            }
        };
        SsoService {
            organizations: Organizations::new(store.clone()),
            connections: Connections::new(store.clone()),
            logins: Logins::new(store.clone()),
            webhooks: WebhookEndpoints::new(store.clone()),
            idempotency: Idempotency::new(store.clone()),
            idp: idp::IdpState::new(store.clone(), idp::IdpConfig::default()),
            store,
            directory,
            live_config: std::sync::RwLock::new(Arc::new(settings.config.clone())),
            settings,
            http,
            oidc_clients: Mutex::new(HashMap::new()),
            dns: dns::DnsVerifier::default(),
        }
    }

    /// Organizations and domains.
    pub fn organizations(&self) -> &Organizations {
        &self.organizations
    }

    /// Connection records (reads; changes go through the service's connection methods).
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// Webhook endpoint records.
    pub fn webhooks(&self) -> &WebhookEndpoints {
        &self.webhooks
    }

    /// Stored `Idempotency-Key` responses.
    pub fn idempotency(&self) -> &Idempotency {
        &self.idempotency
    }

    /// The `[sso]` settings in force.
    pub fn config(&self) -> Arc<SsoConfig> {
        self.live_config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts new `[sso]` settings in force now (logins in progress use them from their next
    /// step).
    pub fn set_config(&self, config: SsoConfig) {
        *self.live_config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }

    /// Base of external URLs.
    pub fn public_url(&self) -> &str {
        &self.settings.public_url
    }

    /// The environment's client id, once bootstrapped.
    pub fn client_id(&self) -> Result<Option<String>, StoreError> {
        api_keys::client_id(self.store.as_ref())
    }

    /// The record of a presented API key, if it is one of ours.
    pub fn verify_api_key(
        &self,
        presented: &str,
    ) -> Result<Option<api_keys::ApiKeyRecord>, StoreError> {
        api_keys::verify_api_key(self.store.as_ref(), presented)
    }

    pub(crate) fn secrets(&self) -> Result<&SecretBox, SsoError> {
        self.settings
            .secrets
            .as_ref()
            .ok_or_else(|| SecretError::NoKey.into())
    }

    pub(crate) fn http(&self) -> Result<&reqwest::Client, SsoError> {
        self.http
            .as_ref()
            .ok_or_else(|| SsoError::internal("no HTTP client for IdP requests"))
    }

    /// A cached OIDC client for this connection version, or a fresh one.
    pub(crate) fn oidc_client(
        &self,
        conn_id: &str,
        version: i64,
        build: impl FnOnce() -> Result<idbridge_oidc::OidcClient, SsoError>,
    ) -> Result<Arc<idbridge_oidc::OidcClient>, SsoError> {
        if let Ok(map) = self.oidc_clients.lock() {
            if let Some((v, c)) = map.get(conn_id) {
                if *v == version {
                    return Ok(c.clone());
                }
            }
        }
        let client = Arc::new(build()?);
        if let Ok(mut map) = self.oidc_clients.lock() {
            map.insert(conn_id.to_string(), (version, client.clone()));
        }
        Ok(client)
    }

    pub(crate) fn forget_oidc_client(&self, conn_id: &str) {
        if let Ok(mut map) = self.oidc_clients.lock() {
            map.remove(conn_id);
        }
    }
}
