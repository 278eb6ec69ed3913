//! The configuration file (TOML) and its `IDBRIDGE_*` environment overrides.
//!
//! Every option has a default, so `idbridge serve` runs with no file at all. Unknown keys are
//! errors (a typo must not silently fall back to a default), reported with the key's path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    pub events: EventsConfig,
    /// Organizations declared here are created or updated at start-up, keyed by external_id.
    pub organizations: Vec<DeclaredOrganization>,
    /// SSO flow settings (redirect-URI allow-list, code and token lifetimes).
    pub sso: SsoSection,
    /// `[webhooks]`: the delivery worker's polling, backoff and timeouts.
    pub webhooks: idbridge_forward::DeliveryConfig,
    /// `[[ldap_directories]]`: LDAP / AD pull sources (see `crate::ldap`).
    pub ldap_directories: Vec<crate::ldap::LdapDirectoryConfig>,
    /// `[[directories]]`: directories created at start-up when absent (keyed by `key`), with
    /// an optional pre-registered SCIM token (see `crate::directories`).
    pub directories: Vec<crate::directories::DeclaredDirectory>,
    /// `[sftp_server]`: the embedded SFTP server (see `crate::sftp_cli`).
    pub sftp_server: crate::sftp_cli::SftpServerSection,
    /// `[[sftp_directories]]`: SFTP CSV feeds, pushed or pulled (see `crate::sftp_cli`).
    pub sftp_directories: Vec<crate::sftp_cli::SftpDirectoryConfig>,
    /// `[limits]`: request-rate and failed-authentication limits of the API and SCIM.
    pub limits: LimitsSection,
    /// `[idp]`: idbridge as an IdP — login session lifetime, attempt limits, failure delay,
    /// default assertion lifetime, trusted proxies (also `GET|PATCH /admin/idp/settings`);
    /// `[[idp.service_providers]]` and `[[idp.oidc_clients]]` (see `crate::idp_declared`).
    pub idp: crate::idp_declared::IdpSection,
    /// `[dns]`: organization domain verification (resolver, timeouts, re-check cadence).
    pub dns: DnsSection,
    /// `[store]`: the store backend (SQLite in the data dir, or PostgreSQL; see
    /// `crate::store_config`).
    pub store: crate::store_config::StoreSection,
}

/// `[dns]`: see `idbridge_sso::dns::DnsSettings`; also read and changed at `/admin/dns`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DnsSection {
    /// `"ip:port"` of the DNS server to ask; absent = the system's resolvers.
    pub resolver: Option<SocketAddr>,
    pub timeout_ms: u64,
    pub recheck_interval_secs: u64,
    pub verification_period_secs: u64,
}

impl Default for DnsSection {
    fn default() -> Self {
        let d = idbridge_sso::dns::DnsSettings::default();
        DnsSection {
            resolver: d.resolver,
            timeout_ms: u64::try_from(d.timeout.as_millis()).unwrap_or(5000),
            recheck_interval_secs: d.recheck_interval.as_secs(),
            verification_period_secs: d.verification_period.as_secs(),
        }
    }
}

impl DnsSection {
    /// The service's settings (zero durations are raised to the smallest useful value).
    pub fn to_settings(&self) -> idbridge_sso::dns::DnsSettings {
        use std::time::Duration;
        idbridge_sso::dns::DnsSettings {
            resolver: self.resolver,
            timeout: Duration::from_millis(self.timeout_ms.max(1)),
            recheck_interval: Duration::from_secs(self.recheck_interval_secs.max(1)),
            verification_period: Duration::from_secs(self.verification_period_secs.max(1)),
        }
    }
}

/// `[limits]`: abuse limits of the REST API (per API key) and SCIM (per directory token).
/// A rate of 0 turns that limit off; answers over a limit are 429 with `Retry-After`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    pub api_requests_per_second: f64,
    pub api_burst: u32,
    pub scim_requests_per_second: f64,
    pub scim_burst: u32,
    /// Failed authentications per client address in the window (API keys and SCIM tokens
    /// counted apart); past it every attempt from the address is refused until the window
    /// passes (0 turns it off).
    pub failed_auth_max: u32,
    pub failed_auth_window_secs: u64,
    /// Members one SCIM group PATCH may add and remove in all.
    pub scim_max_patch_members: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            api_requests_per_second: 100.0,
            api_burst: 500,
            scim_requests_per_second: 200.0,
            scim_burst: 2000,
            failed_auth_max: 100,
            failed_auth_window_secs: 60,
            scim_max_patch_members: 10_000,
        }
    }
}

impl LimitsSection {
    /// The API's view of these limits.
    pub fn to_api(&self) -> idbridge_api::AbuseLimits {
        use idbridge_limits::{FailureLimit, RateLimit};
        idbridge_api::AbuseLimits {
            api_rate: RateLimit {
                per_second: self.api_requests_per_second,
                burst: self.api_burst,
            },
            scim_rate: RateLimit {
                per_second: self.scim_requests_per_second,
                burst: self.scim_burst,
            },
            failed_auth: FailureLimit {
                max_failures: self.failed_auth_max,
                window_secs: self.failed_auth_window_secs,
            },
            scim_max_patch_members: self.scim_max_patch_members,
        }
    }
}

/// `[sso]`: see `idbridge_sso::SsoConfig`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SsoSection {
    /// Allowed `redirect_uri`s: exact URIs or wildcard patterns (workos-api.md §1.1).
    pub redirect_uris: Vec<String>,
    /// Target of IdP-initiated logins; default: the first exact `redirect_uris` entry.
    pub default_redirect_uri: Option<String>,
    pub code_ttl_secs: u64,
    pub access_token_ttl_secs: u64,
    /// How long a started login may take (authorize → IdP → ACS/callback); an unfinished one
    /// is announced with `authentication.sso_timed_out` after this.
    pub login_ttl_secs: u64,
    /// Connections created at start-up when absent (keyed by `external_id`).
    pub connections: Vec<DeclaredConnection>,
}

/// `[[sso.connections]]`: a `POST /connections` body in TOML. Created once; an existing
/// connection with the same `external_id` is left as it is (delete it to re-declare).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeclaredConnection {
    pub external_id: String,
    /// An organization id (`org_…`) or the `external_id` of a declared organization.
    pub organization: String,
    pub name: Option<String>,
    pub connection_type: Option<String>,
    pub attribute_maps: Option<serde_json::Value>,
    pub saml_options: Option<serde_json::Value>,
    pub oidc_options: Option<serde_json::Value>,
}

impl Default for SsoSection {
    fn default() -> Self {
        SsoSection {
            redirect_uris: Vec::new(),
            default_redirect_uri: None,
            code_ttl_secs: 600,
            access_token_ttl_secs: 600,
            login_ttl_secs: 900,
            connections: Vec::new(),
        }
    }
}

impl SsoSection {
    /// The API's view of this section.
    pub fn to_api(&self) -> idbridge_sso::SsoConfig {
        idbridge_sso::SsoConfig {
            redirect_uris: self.redirect_uris.clone(),
            default_redirect_uri: self.default_redirect_uri.clone(),
            code_ttl: std::time::Duration::from_secs(self.code_ttl_secs),
            access_token_ttl: std::time::Duration::from_secs(self.access_token_ttl_secs),
            login_ttl: std::time::Duration::from_secs(self.login_ttl_secs),
        }
    }

    fn validate(&self) -> Result<(), (String, String)> {
        for (i, uri) in self.redirect_uris.iter().enumerate() {
            if let Err(e) = idbridge_sso::redirect_uri::validate_entry(uri) {
                return Err((format!("sso.redirect_uris[{i}]"), e.to_string()));
            }
        }
        if let Some(d) = &self.default_redirect_uri {
            if !idbridge_sso::redirect_uri::is_allowed(&self.redirect_uris, d) {
                return Err((
                    "sso.default_redirect_uri".into(),
                    "must be allowed by sso.redirect_uris".into(),
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, c) in self.connections.iter().enumerate() {
            if c.external_id.trim().is_empty() || !seen.insert(&c.external_id) {
                return Err((
                    format!("sso.connections[{i}].external_id"),
                    "must be non-empty and unique".into(),
                ));
            }
            if c.saml_options.is_none() == c.oidc_options.is_none() {
                return Err((
                    format!("sso.connections[{i}]"),
                    "needs exactly one of saml_options and oidc_options".into(),
                ));
            }
        }
        for (key, v) in [
            ("sso.code_ttl_secs", self.code_ttl_secs),
            ("sso.access_token_ttl_secs", self.access_token_ttl_secs),
            ("sso.login_ttl_secs", self.login_ttl_secs),
        ] {
            if !(1..=3600).contains(&v) {
                return Err((key.into(), "must be between 1 and 3600".into()));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Base of every external URL; defaults to `http(s)://<listen>`.
    pub public_url: Option<String>,
    pub data_dir: PathBuf,
    pub request_timeout_secs: u64,
    pub max_body_bytes: usize,
    /// The store's page cache, in MiB (SQLite's writer connection; readers get a quarter each).
    /// Bounded so a big directory feed does not grow the process past what an appliance budgets.
    pub store_cache_mb: u64,
    pub tls: Option<TlsConfig>,
    /// A request head must arrive within this time of the server waiting for it (a new
    /// connection, or a kept-alive one after its last response); else the connection closes.
    pub header_read_timeout_secs: u64,
    /// A request body must arrive whole within this time of its head; else 408 and close.
    pub body_read_timeout_secs: u64,
    /// A kept-alive HTTP/1 connection idle this long after a response is closed (at most
    /// `header_read_timeout_secs` in effect, since that timer also runs while idle).
    pub keep_alive_idle_secs: u64,
    /// Open connections at most (over it, new connections are closed at once).
    pub max_connections: usize,
    /// Open connections from one client address at most (behind a reverse proxy every
    /// client shares the proxy's address: raise this to `max_connections` there).
    pub max_connections_per_ip: usize,
    /// On SIGTERM/SIGINT: stop accepting, give in-flight requests this long to finish, then
    /// close what is left, stop the background workers and close the store (exit 0).
    pub shutdown_grace_secs: u64,
    /// On SIGTERM/SIGINT, before that: `/readyz` answers 503 while the listener keeps serving
    /// for this long, so a load balancer or Kubernetes takes the node out of rotation before
    /// its connections are refused (0: stop accepting at once).
    pub shutdown_delay_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            data_dir: PathBuf::from("./idbridge-data"),
            request_timeout_secs: 30,
            max_body_bytes: idbridge_api::MAX_BODY_BYTES,
            store_cache_mb: 128,
            tls: None,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 15,
            keep_alive_idle_secs: 5,
            max_connections: 1024,
            max_connections_per_ip: 256,
            shutdown_grace_secs: 10,
            shutdown_delay_secs: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when stdout is not a terminal, text otherwise.
    #[default]
    Auto,
    Json,
    Text,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `idbridge_api=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Auto,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    pub retention_days: u32,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig { retention_days: 30 }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeclaredOrganization {
    pub external_id: String,
    pub name: String,
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: key `{key}`: {message}")]
    Key {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

impl Config {
    /// Reads and validates a config file (no environment overrides).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Key {
                path: path.to_path_buf(),
                key,
                message: e.into_inner().message().to_string(),
            }
        })?;
        config.validate(path)?;
        Ok(config)
    }

    pub(crate) fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let key_err = |key: String, message: &str| ConfigError::Key {
            path: path.to_path_buf(),
            key,
            message: message.to_string(),
        };
        if let Err((key, message)) = self.store.validate() {
            return Err(key_err(key, &message));
        }
        if let Some(url) = &self.server.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(key_err(
                    "server.public_url".into(),
                    "must start with http:// or https://",
                ));
            }
        }
        if self.server.request_timeout_secs == 0 {
            return Err(key_err(
                "server.request_timeout_secs".into(),
                "must be at least 1",
            ));
        }
        for (key, value) in [
            (
                "header_read_timeout_secs",
                self.server.header_read_timeout_secs,
            ),
            ("body_read_timeout_secs", self.server.body_read_timeout_secs),
            ("keep_alive_idle_secs", self.server.keep_alive_idle_secs),
            ("max_connections", self.server.max_connections as u64),
            (
                "max_connections_per_ip",
                self.server.max_connections_per_ip as u64,
            ),
        ] {
            if value == 0 {
                return Err(key_err(format!("server.{key}"), "must be at least 1"));
            }
        }
        if self.server.shutdown_grace_secs > 3600 {
            return Err(key_err(
                "server.shutdown_grace_secs".into(),
                "must be at most 3600",
            ));
        }
        if self.server.shutdown_delay_secs > 300 {
            return Err(key_err(
                "server.shutdown_delay_secs".into(),
                "must be at most 300",
            ));
        }
        if self.events.retention_days == 0 {
            return Err(key_err(
                "events.retention_days".into(),
                "must be at least 1",
            ));
        }
        if let Err((key, message)) = self.sso.validate() {
            return Err(key_err(key, &message));
        }
        if let Err(idbridge_sso::SsoError::Invalid(issues)) = self.idp.settings.to_config() {
            if let Some(i) = issues.first() {
                return Err(key_err(format!("idp.{}", i.field), &i.code));
            }
        }
        if let Err(message) = self.webhooks.validate() {
            return Err(key_err("webhooks".into(), &message));
        }
        let mut keys = std::collections::HashSet::new();
        for (i, d) in self.directories.iter().enumerate() {
            if let Err((field, message)) = d.validate() {
                return Err(key_err(format!("directories[{i}].{field}"), &message));
            }
            if !keys.insert(d.key.as_str()) {
                return Err(key_err(format!("directories[{i}].key"), "declared twice"));
            }
        }
        if let Err((key, message)) =
            crate::ldap::validate_all(&self.ldap_directories, &self.directories)
        {
            return Err(key_err(key, &message));
        }
        if let Err((key, message)) =
            crate::sftp_cli::validate_all(&self.sftp_directories, &self.directories)
        {
            return Err(key_err(key, &message));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, org) in self.organizations.iter().enumerate() {
            if org.external_id.trim().is_empty() {
                return Err(key_err(
                    format!("organizations[{i}].external_id"),
                    "must not be empty",
                ));
            }
            if !seen.insert(&org.external_id) {
                return Err(key_err(
                    format!("organizations[{i}].external_id"),
                    "declared twice",
                ));
            }
            if org.name.trim().is_empty() {
                return Err(key_err(
                    format!("organizations[{i}].name"),
                    "must not be empty",
                ));
            }
        }
        Ok(())
    }

    /// Applies `IDBRIDGE_*` overrides from `vars` (the process environment in production).
    pub fn apply_env<I>(&mut self, vars: I) -> Result<(), ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        for (var, value) in vars {
            let bad = |message: String| ConfigError::Env {
                var: var.clone(),
                message,
            };
            match var.as_str() {
                "IDBRIDGE_LISTEN" => {
                    self.server.listen = value
                        .parse()
                        .map_err(|e| bad(format!("not a socket address: {e}")))?
                }
                "IDBRIDGE_PUBLIC_URL" => self.server.public_url = Some(value),
                "IDBRIDGE_DATA_DIR" => self.server.data_dir = PathBuf::from(value),
                "IDBRIDGE_REQUEST_TIMEOUT_SECS" => {
                    self.server.request_timeout_secs = value
                        .parse()
                        .map_err(|e| bad(format!("not a number: {e}")))?
                }
                "IDBRIDGE_MAX_BODY_BYTES" => {
                    self.server.max_body_bytes = value
                        .parse()
                        .map_err(|e| bad(format!("not a number: {e}")))?
                }
                "IDBRIDGE_HEADER_READ_TIMEOUT_SECS" => {
                    self.server.header_read_timeout_secs = value
                        .parse()
                        .map_err(|e| bad(format!("not a number: {e}")))?
                }
                "IDBRIDGE_BODY_READ_TIMEOUT_SECS" => {
                    self.server.body_read_timeout_secs = value
                        .parse()
                        .map_err(|e| bad(format!("not a number: {e}")))?
                }
                "IDBRIDGE_KEEP_ALIVE_IDLE_SECS" => {
                    self.server.keep_alive_idle_secs = value
                        .parse()
                        .map_err(|e| bad(format!("not a number: {e}")))?
                }
                "IDBRIDGE_MAX_CONNECTIONS" => {
                    self.server.max_connections = value
                        .parse()
                        .map_err(|e| bad(format!("not a number: {e}")))?
                }
                "IDBRIDGE_MAX_CONNECTIONS_PER_IP" => {
                    self.server.max_connections_per_ip = value
                        .parse()
                        .map_err(|e| bad(format!("not a number: {e}")))?
                }
                "IDBRIDGE_SHUTDOWN_GRACE_SECS" => {
                    let secs: u64 = value
                        .parse()
                        .map_err(|e| bad(format!("not a number: {e}")))?;
                    if secs > 3600 {
                        return Err(bad("must be at most 3600".into()));
                    }
                    self.server.shutdown_grace_secs = secs
                }
                "IDBRIDGE_SHUTDOWN_DELAY_SECS" => {
                    let secs: u64 = value
                        .parse()
                        .map_err(|e| bad(format!("not a number: {e}")))?;
                    if secs > 300 {
                        return Err(bad("must be at most 300".into()));
                    }
                    self.server.shutdown_delay_secs = secs
                }
                "IDBRIDGE_STORE_CACHE_MB" => {
                    self.server.store_cache_mb = value
                        .parse()
                        .map_err(|e| bad(format!("not a number: {e}")))?
                }
                "IDBRIDGE_TLS_CERT" | "IDBRIDGE_TLS_KEY" => {
                    let tls = self.server.tls.get_or_insert_with(|| TlsConfig {
                        cert: PathBuf::new(),
                        key: PathBuf::new(),
                    });
                    if var == "IDBRIDGE_TLS_CERT" {
                        tls.cert = PathBuf::from(value);
                    } else {
                        tls.key = PathBuf::from(value);
                    }
                }
                "IDBRIDGE_LOG_FORMAT" => {
                    self.log.format = match value.as_str() {
                        "auto" => LogFormat::Auto,
                        "json" => LogFormat::Json,
                        "text" => LogFormat::Text,
                        other => return Err(bad(format!("unknown format {other:?}"))),
                    }
                }
                "IDBRIDGE_LOG_LEVEL" => self.log.level = value,
                "IDBRIDGE_SSO_REDIRECT_URIS" => {
                    let uris: Vec<String> = value
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect();
                    for uri in &uris {
                        idbridge_sso::redirect_uri::validate_entry(uri)
                            .map_err(|e| bad(format!("{uri}: {e}")))?;
                    }
                    self.sso.redirect_uris = uris;
                }
                "IDBRIDGE_DNS_RESOLVER" => {
                    self.dns.resolver = if value.is_empty() {
                        None
                    } else {
                        Some(value.parse().map_err(|e| {
                            bad(format!("not an ip:port address (e.g. 127.0.0.1:53): {e}"))
                        })?)
                    }
                }
                "IDBRIDGE_EVENTS_RETENTION_DAYS" => {
                    self.events.retention_days = value
                        .parse()
                        .map_err(|e| bad(format!("not a number: {e}")))?
                }
                _ => {
                    // IDBRIDGE_WEBHOOKS_* (the delivery worker's own settings).
                    self.webhooks.apply_env_var(&var, &value).map_err(bad)?;
                }
            }
        }
        if let Err(message) = self.webhooks.validate() {
            return Err(ConfigError::Env {
                var: "IDBRIDGE_WEBHOOKS_*".into(),
                message,
            });
        }
        if let Some(tls) = &self.server.tls {
            if tls.cert.as_os_str().is_empty() || tls.key.as_os_str().is_empty() {
                return Err(ConfigError::Env {
                    var: "IDBRIDGE_TLS_CERT/IDBRIDGE_TLS_KEY".into(),
                    message: "both must be set together".into(),
                });
            }
        }
        Ok(())
    }

    /// The public base URL, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.server.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => {
                let scheme = if self.server.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{}", self.server.listen)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_is_the_embedded_default() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.public_url(), "http://127.0.0.1:8080");
    }

    #[test]
    fn the_example_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/idbridge.example.toml");
        let c = Config::from_file(&path).unwrap();
        assert_eq!(c.organizations.len(), 1);
    }

    #[test]
    fn unknown_and_mistyped_keys_name_the_key() {
        match parse("[server]\nlisten = \"127.0.0.1:9\"\nlistne = 1\n") {
            Err(ConfigError::Key { key, message, .. }) => {
                // The unknown key itself is named, with its table.
                assert_eq!(key, "server.listne");
                assert!(message.contains("listne"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        match parse("[server]\nrequest_timeout_secs = \"soon\"\n") {
            Err(ConfigError::Key { key, .. }) => assert_eq!(key, "server.request_timeout_secs"),
            other => panic!("{other:?}"),
        }
        match parse("[[organizations]]\nexternal_id = \"a\"\nname = \"A\"\n[[organizations]]\nexternal_id = \"a\"\nname = \"B\"\n") {
            Err(ConfigError::Key { key, .. }) => assert_eq!(key, "organizations[1].external_id"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse("server = ["),
            Err(ConfigError::Syntax { .. })
        ));
    }

    #[test]
    fn the_idp_section_is_checked_and_names_the_key() {
        let c =
            parse("[idp]\naccount_max_failures = 9\ntrusted_proxies = [\"10.0.0.0/8\"]\n").unwrap();
        let idp = c.idp.settings.to_config().unwrap();
        assert_eq!(idp.account_failures.max_failures, 9);
        assert_eq!(
            idp.login_ttl.as_secs(),
            900,
            "unset keys keep their defaults"
        );
        for (toml, key) in [
            ("[idp]\nfailure_delay_ms = 99999\n", "idp.failure_delay_ms"),
            (
                "[idp]\ntrusted_proxies = [\"proxy\"]\n",
                "idp.trusted_proxies[0]",
            ),
            ("[idp]\nlogin_ttl = 5\n", "idp.login_ttl"),
        ] {
            match parse(toml) {
                Err(ConfigError::Key { key: got, .. }) => assert_eq!(got, key, "{toml}"),
                other => panic!("{toml}: {other:?}"),
            }
        }
    }

    #[test]
    fn environment_overrides_file() {
        let mut c = parse("[server]\nlisten = \"127.0.0.1:9000\"\n").unwrap();
        c.apply_env([
            ("IDBRIDGE_LISTEN".to_string(), "127.0.0.1:9100".to_string()),
            (
                "IDBRIDGE_DATA_DIR".to_string(),
                "/var/lib/idbridge".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ])
        .unwrap();
        assert_eq!(c.server.listen.port(), 9100);
        assert_eq!(c.server.data_dir, PathBuf::from("/var/lib/idbridge"));
        let err = c
            .apply_env([("IDBRIDGE_LISTEN".to_string(), "nowhere".to_string())])
            .unwrap_err();
        assert!(err.to_string().contains("IDBRIDGE_LISTEN"));
        let mut c = Config::default();
        assert!(c
            .apply_env([("IDBRIDGE_TLS_CERT".to_string(), "c.pem".to_string())])
            .is_err());
    }

    #[test]
    fn shutdown_grace_is_bounded_in_the_file_and_the_environment() {
        assert_eq!(Config::default().server.shutdown_grace_secs, 10);
        let c = parse("[server]\nshutdown_grace_secs = 0\n").unwrap();
        assert_eq!(
            c.server.shutdown_grace_secs, 0,
            "0 closes connections at once"
        );
        match parse("[server]\nshutdown_grace_secs = 3601\n") {
            Err(ConfigError::Key { key, .. }) => assert_eq!(key, "server.shutdown_grace_secs"),
            other => panic!("{other:?}"),
        }
        let mut c = Config::default();
        c.apply_env([("IDBRIDGE_SHUTDOWN_GRACE_SECS".to_string(), "25".to_string())])
            .unwrap();
        assert_eq!(c.server.shutdown_grace_secs, 25);
        for bad in ["3601", "soon"] {
            let err = c
                .apply_env([("IDBRIDGE_SHUTDOWN_GRACE_SECS".to_string(), bad.to_string())])
                .unwrap_err();
            assert!(
                err.to_string().contains("IDBRIDGE_SHUTDOWN_GRACE_SECS"),
                "{err}"
            );
        }
        assert_eq!(
            c.server.shutdown_grace_secs, 25,
            "a refused value changes nothing"
        );
    }

    #[test]
    fn sso_section_validates_redirect_uris_and_env_override() {
        let c = parse("[sso]\nredirect_uris = [\"https://app.example.com/cb\", \"https://*.example.com/cb\"]\n").unwrap();
        assert_eq!(c.sso.redirect_uris.len(), 2);
        assert_eq!(c.sso.to_api().code_ttl.as_secs(), 600);
        for bad in [
            "[sso]\nredirect_uris = [\"https://*.com/cb\"]\n",
            "[sso]\nredirect_uris = [\"not a uri\"]\n",
            "[sso]\ncode_ttl_secs = 0\n",
            "[sso]\nredirect_uris = [\"https://a.example.com/cb\"]\ndefault_redirect_uri = \"https://b.example.com/cb\"\n",
        ] {
            match parse(bad) {
                Err(ConfigError::Key { key, .. }) => assert!(key.starts_with("sso."), "{key}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let mut c = Config::default();
        c.apply_env([(
            "IDBRIDGE_SSO_REDIRECT_URIS".to_string(),
            "https://a.example.com/cb, http://localhost:*/cb".to_string(),
        )])
        .unwrap();
        assert_eq!(
            c.sso.redirect_uris,
            ["https://a.example.com/cb", "http://localhost:*/cb"]
        );
        assert!(Config::default()
            .apply_env([(
                "IDBRIDGE_SSO_REDIRECT_URIS".to_string(),
                "http://*.example.com/cb".to_string()
            )])
            .is_err());
    }

    #[test]
    fn declared_connections_parse_and_validate() {
        let ok = parse(
            "[[sso.connections]]\nexternal_id = \"okta\"\norganization = \"acme\"\nconnection_type = \"OktaSAML\"\n\
             [sso.connections.saml_options]\nidp_metadata_url = \"https://idp.example.com/md\"\n",
        )
        .unwrap();
        assert_eq!(ok.sso.connections.len(), 1);
        assert_eq!(
            ok.sso.connections[0].saml_options,
            Some(serde_json::json!({"idp_metadata_url": "https://idp.example.com/md"}))
        );
        for bad in [
            "[[sso.connections]]\nexternal_id = \"x\"\norganization = \"acme\"\n",
            "[[sso.connections]]\nexternal_id = \"\"\norganization = \"acme\"\nsaml_options = {}\n",
            "[[sso.connections]]\nexternal_id = \"x\"\norganization = \"a\"\nsaml_options = {}\noidc_options = {}\n",
            "[[sso.connections]]\nexternal_id = \"x\"\norganization = \"a\"\nsaml_options = {}\nbogus = 1\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
