//! Runtime settings: the sections of the config file an admin can read and change through
//! `/admin/settings/{section}` while the server runs, kept in the store so a change survives
//! a restart.
//!
//! This module owns the `server.settings` table: one [`SettingsRecord`] per section, holding
//! the values set through the admin API (`runtime`) and the file's values when the server last
//! started (`seeded`).
//!
//! Which wins: **a value set through the API wins until the file's value of that key
//! changes.** At each start the file (with its `IDBRIDGE_*` overrides) is compared key by key
//! with the values it had at the previous start: a key the file changed since then takes the
//! file's value (the runtime value is dropped); a key the file did not change keeps the
//! runtime value. So editing the file and restarting always does what the edit says, and a
//! change made through the API is not undone by a restart. `GET` shows each value's source
//! (`default|file|env|runtime`; a file value equal to the default shows as `default`).
//!
//! Keys read only at start (`server.listen`, `server.tls`, ...) can be changed
//! too: the change is stored and used from the next start (`pending_restart` in `GET` until
//! then); the running server keeps its value. Only `server.data_dir` — where the store, and so
//! these settings, live — is set by the file alone (a PATCH is a 422 `file_only`).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idbridge_api::error::FieldError;
use idbridge_api::settings_admin::{SettingsRuntime, MAX_BODY_BYTES_SETTABLE};
use idbridge_api::{ApiError, ApiResult};
use idbridge_store::{ChangeSet, Store};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::config::{Config, ConfigError};

/// Section name → [`SettingsRecord`] (JSON).
pub const SETTINGS_TABLE: &str = "server.settings";

/// One section's stored state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SettingsRecord {
    /// Values set through the admin API, by key.
    #[serde(default)]
    pub runtime: Map<String, Value>,
    /// The file's (and environment's) values at the last start, by key: a key whose file
    /// value differs from this at the next start was changed in the file, and the file wins.
    #[serde(default)]
    pub seeded: Map<String, Value>,
    /// When the API last changed the section (RFC 3339).
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// A section of the config file that is live through the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    Server,
    Log,
    Limits,
    Events,
    Webhooks,
    Sso,
    Dns,
    Idp,
    SftpServer,
    Store,
}

impl Section {
    pub const ALL: [Section; 10] = [
        Section::Server,
        Section::Log,
        Section::Limits,
        Section::Events,
        Section::Webhooks,
        Section::Sso,
        Section::Dns,
        Section::Idp,
        Section::SftpServer,
        Section::Store,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Section::Server => "server",
            Section::Log => "log",
            Section::Limits => "limits",
            Section::Events => "events",
            Section::Webhooks => "webhooks",
            Section::Sso => "sso",
            Section::Dns => "dns",
            Section::Idp => "idp",
            Section::SftpServer => "sftp_server",
            Section::Store => "store",
        }
    }

    pub fn parse(name: &str) -> Option<Section> {
        Section::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Keys read only at start: shown, but a PATCH of one is refused.
    pub fn restart_only(self) -> &'static [&'static str] {
        match self {
            Section::Server => &[
                "listen",
                "public_url",
                "data_dir",
                "store_cache_mb",
                "tls",
                "header_read_timeout_secs",
                "keep_alive_idle_secs",
            ],
            Section::Limits => &["scim_max_patch_members"],
            Section::Store => &["backend", "url", "url_env", "url_file", "pool_size"],
            _ => &[],
        }
    }

    /// Keys only the config file sets: the data directory holds the store these settings are
    /// kept in, so a value stored there could never be read before it is needed.
    pub fn file_only(self) -> &'static [&'static str] {
        match self {
            Section::Server => &["data_dir"],
            // Where the store (holding these settings) is: like data_dir.
            Section::Store => &["backend", "url", "url_env", "url_file"],
            _ => &[],
        }
    }

    /// `config` with this section's keys read only at start taken from `in_force`: a PATCH of
    /// one is stored and used from the next start, while the running server keeps its value.
    fn keep_start_values(self, config: &mut Config, in_force: &Config) {
        let restart_only = self.restart_only();
        if restart_only.is_empty() {
            return;
        }
        let mut values = self.values(config);
        let current = self.values(in_force);
        for key in restart_only {
            if let Some(v) = current.get(*key) {
                values.insert((*key).to_string(), v.clone());
            }
        }
        if self.replace(config, values).is_err() {
            // The in-force values were valid when they were put in force.
            *config = in_force.clone();
        }
    }

    /// The allowed range of a numeric key (what a PATCH may set).
    fn range(self, key: &str) -> Option<(f64, f64)> {
        let r = match (self, key) {
            (Section::Server, "request_timeout_secs" | "body_read_timeout_secs") => (1.0, 3600.0),
            (Section::Server, "max_body_bytes") => (1024.0, MAX_BODY_BYTES_SETTABLE as f64),
            (Section::Server, "max_connections" | "max_connections_per_ip") => (1.0, 1_000_000.0),
            (Section::Limits, "api_requests_per_second" | "scim_requests_per_second") => {
                (0.0, 1_000_000.0)
            }
            (Section::Limits, "api_burst" | "scim_burst") => (0.0, 10_000_000.0),
            (Section::Limits, "failed_auth_max") => (0.0, 1_000_000.0),
            (Section::Limits, "failed_auth_window_secs") => (1.0, 86_400.0),
            (Section::Events, "retention_days") => (1.0, 3650.0),
            (Section::Webhooks, "poll_interval_ms") => (1.0, 60_000.0),
            (Section::Webhooks, "initial_backoff_ms") => (1.0, 3_600_000.0),
            (Section::Webhooks, "max_backoff_ms") => (1.0, 86_400_000.0),
            (Section::Webhooks, "connect_timeout_ms" | "request_timeout_ms") => (1.0, 600_000.0),
            (Section::Webhooks, "batch_size") => (1.0, 10_000.0),
            (Section::Sso, "code_ttl_secs" | "access_token_ttl_secs" | "login_ttl_secs") => {
                (1.0, 3600.0)
            }
            (Section::Dns, "timeout_ms") => (1.0, 60_000.0),
            (Section::Dns, "recheck_interval_secs") => (1.0, 86_400.0),
            (Section::Dns, "verification_period_secs") => (1.0, 366.0 * 86_400.0),
            (Section::SftpServer, "max_file_bytes") => (1024.0, 1024.0 * 1024.0 * 1024.0 * 1024.0),
            (Section::SftpServer, "max_files") => (1.0, 10_000.0),
            (Section::SftpServer, "debounce_ms") => (0.0, 600_000.0),
            (Section::SftpServer, "max_connections" | "max_connections_per_ip") => {
                (1.0, 1_000_000.0)
            }
            (Section::SftpServer, "failed_auth_max") => (0.0, 1_000_000.0),
            (Section::SftpServer, "failed_auth_window_secs") => (1.0, 86_400.0),
            (Section::Store, "pool_size") => (1.0, 1000.0),
            _ => return None,
        };
        Some(r)
    }

    /// The section's values in `config`, as JSON (the keys the API shows and takes).
    pub fn values(self, config: &Config) -> Map<String, Value> {
        let value = match self {
            Section::Server => serde_json::to_value(&config.server),
            Section::Log => serde_json::to_value(&config.log),
            Section::Limits => serde_json::to_value(&config.limits),
            Section::Events => serde_json::to_value(&config.events),
            Section::Webhooks => serde_json::to_value(&config.webhooks),
            Section::Sso => serde_json::to_value(&config.sso),
            Section::Dns => serde_json::to_value(&config.dns),
            Section::Idp => serde_json::to_value(&config.idp.settings),
            Section::SftpServer => serde_json::to_value(&config.sftp_server),
            // A password inside `url` is never shown (nor stored in the settings record).
            Section::Store => serde_json::to_value(config.store.redacted()),
        };
        let mut map = match value {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        // `[[sso.connections]]` are connections (the connection API), not settings.
        if self == Section::Sso {
            map.remove("connections");
        }
        map
    }

    /// Replaces the section in `config` by `values` (every key of the section).
    fn replace(self, config: &mut Config, values: Map<String, Value>) -> Result<(), FieldError> {
        fn parse<T: serde::de::DeserializeOwned>(
            values: Map<String, Value>,
        ) -> Result<T, FieldError> {
            serde_path_to_error::deserialize(Value::Object(values)).map_err(|e| {
                let field = e.path().to_string();
                FieldError::new(field, "invalid_value").with_message(e.into_inner().to_string())
            })
        }
        match self {
            Section::Server => config.server = parse(values)?,
            Section::Log => config.log = parse(values)?,
            Section::Limits => config.limits = parse(values)?,
            Section::Events => config.events = parse(values)?,
            Section::Webhooks => config.webhooks = parse(values)?,
            Section::Sso => {
                let connections = std::mem::take(&mut config.sso.connections);
                config.sso = parse(values)?;
                config.sso.connections = connections;
            }
            Section::Dns => config.dns = parse(values)?,
            Section::Idp => config.idp.settings = parse(values)?,
            Section::SftpServer => config.sftp_server = parse(values)?,
            Section::Store => {
                // The url keys are file-only: keep the real (unredacted) values.
                let mut store: crate::store_config::StoreSection = parse(values)?;
                store.url = config.store.url.clone();
                store.url_env = config.store.url_env.clone();
                store.url_file = config.store.url_file.clone();
                store.backend = config.store.backend;
                config.store = store;
            }
        }
        Ok(())
    }

    /// Section-specific checks beyond the types and ranges.
    fn check(self, config: &Config) -> Vec<FieldError> {
        let mut errors = Vec::new();
        match self {
            Section::Log => {
                if let Err(message) = crate::logging::check_level(&config.log.level) {
                    errors.push(FieldError::new("level", "invalid_value").with_message(message));
                }
            }
            Section::Idp => {
                if let Err(idbridge_sso::SsoError::Invalid(issues)) =
                    config.idp.settings.to_config()
                {
                    errors.extend(issues.into_iter().map(|i| FieldError::new(i.field, i.code)));
                }
            }
            _ => {}
        }
        if errors.is_empty() {
            if let Err(ConfigError::Key { key, message, .. }) =
                config.validate(Path::new("the admin API"))
            {
                let prefix = format!("{}.", self.name());
                let field = key.strip_prefix(&prefix).unwrap_or(&key).to_string();
                errors.push(FieldError::new(field, "invalid_value").with_message(message));
            }
        }
        errors
    }
}

/// Which `section.key`s the process environment sets (`IDBRIDGE_*`, see `Config::apply_env`).
pub fn env_keys<I: IntoIterator<Item = (String, String)>>(vars: I) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for (var, _) in vars {
        let key = match var.as_str() {
            "IDBRIDGE_LISTEN" => "server.listen".to_string(),
            "IDBRIDGE_PUBLIC_URL" => "server.public_url".into(),
            "IDBRIDGE_DATA_DIR" => "server.data_dir".into(),
            "IDBRIDGE_TLS_CERT" | "IDBRIDGE_TLS_KEY" => "server.tls".into(),
            "IDBRIDGE_LOG_FORMAT" => "log.format".into(),
            "IDBRIDGE_LOG_LEVEL" => "log.level".into(),
            "IDBRIDGE_SSO_REDIRECT_URIS" => "sso.redirect_uris".into(),
            "IDBRIDGE_DNS_RESOLVER" => "dns.resolver".into(),
            "IDBRIDGE_EVENTS_RETENTION_DAYS" => "events.retention_days".into(),
            "IDBRIDGE_REQUEST_TIMEOUT_SECS"
            | "IDBRIDGE_MAX_BODY_BYTES"
            | "IDBRIDGE_HEADER_READ_TIMEOUT_SECS"
            | "IDBRIDGE_BODY_READ_TIMEOUT_SECS"
            | "IDBRIDGE_KEEP_ALIVE_IDLE_SECS"
            | "IDBRIDGE_MAX_CONNECTIONS"
            | "IDBRIDGE_MAX_CONNECTIONS_PER_IP"
            | "IDBRIDGE_SHUTDOWN_GRACE_SECS"
            | "IDBRIDGE_SHUTDOWN_DELAY_SECS"
            | "IDBRIDGE_STORE_CACHE_MB" => format!(
                "server.{}",
                var.trim_start_matches("IDBRIDGE_").to_ascii_lowercase()
            ),
            other => match other.strip_prefix("IDBRIDGE_WEBHOOKS_") {
                Some(rest) => format!("webhooks.{}", rest.to_ascii_lowercase()),
                None => continue,
            },
        };
        keys.insert(key);
    }
    keys
}

fn load(store: &dyn Store, section: Section) -> anyhow::Result<Option<SettingsRecord>> {
    match store.get(SETTINGS_TABLE, section.name())? {
        None => Ok(None),
        Some(bytes) => match serde_json::from_slice(&bytes) {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                tracing::warn!(section = section.name(), error = %e, "stored runtime settings do not parse; the file's values are used");
                Ok(None)
            }
        },
    }
}

fn save(store: &dyn Store, section: Section, record: &SettingsRecord) -> anyhow::Result<()> {
    let mut cs = ChangeSet::new();
    cs.put(SETTINGS_TABLE, section.name(), serde_json::to_vec(record)?);
    store.commit(cs)?;
    Ok(())
}

/// The settings in force after a start: the file's, with the runtime values that still win.
#[derive(Debug, Clone)]
pub struct Seeded {
    /// The effective configuration (what the server runs with).
    pub config: Config,
    records: BTreeMap<Section, SettingsRecord>,
}

/// Applies the precedence rule (see the module docs) at start: reads each section's record,
/// keeps the runtime values whose file value did not change, and records the file's values.
pub fn seed(store: &dyn Store, file: &Config) -> anyhow::Result<Seeded> {
    let mut effective = file.clone();
    let mut records = BTreeMap::new();
    for section in Section::ALL {
        let old = load(store, section)?;
        let stored = old.clone().unwrap_or_default();
        let file_values = section.values(file);
        let mut kept = Map::new();
        for (key, value) in stored.runtime {
            if !file_values.contains_key(&key) || section.file_only().contains(&key.as_str()) {
                continue;
            }
            match stored.seeded.get(&key) {
                Some(seeded) if Some(seeded) != file_values.get(&key) => {
                    tracing::info!(
                        setting = %format!("{}.{key}", section.name()),
                        "the config file changed this setting since the last start: the file's value replaces the one set through the admin API"
                    );
                }
                _ => {
                    kept.insert(key, value);
                }
            }
        }
        if !kept.is_empty() {
            let mut merged = section.values(&effective);
            merged.extend(kept.clone());
            let mut candidate = effective.clone();
            match section.replace(&mut candidate, merged) {
                Ok(()) if section.check(&candidate).is_empty() => effective = candidate,
                _ => {
                    tracing::warn!(
                        section = section.name(),
                        "the values set through the admin API are no longer valid; the file's values are used"
                    );
                    kept.clear();
                }
            }
        }
        let record = SettingsRecord {
            runtime: kept,
            seeded: file_values,
            updated_at: stored.updated_at,
        };
        if old.as_ref() != Some(&record) {
            save(store, section, &record)?;
        }
        records.insert(section, record);
    }
    Ok(Seeded {
        config: effective,
        records,
    })
}

/// The webhook delivery worker, restarted with new settings (endpoints resume from their
/// cursors, so a restart loses nothing; a delivery in flight may be sent again).
pub struct WebhookWorker {
    store: Arc<dyn Store>,
    handle: Mutex<Option<idbridge_forward::DeliveryWorker>>,
}

impl WebhookWorker {
    pub fn start(
        store: Arc<dyn Store>,
        config: idbridge_forward::DeliveryConfig,
    ) -> anyhow::Result<Self> {
        let handle = idbridge_forward::spawn(store.clone(), config)?;
        Ok(WebhookWorker {
            store,
            handle: Mutex::new(Some(handle)),
        })
    }

    /// Stops the worker at shutdown: deliveries in flight finish and are recorded (within
    /// `within`, then the rest is aborted and sent again after the restart).
    pub async fn stop(&self, within: std::time::Duration) -> bool {
        let worker = self.handle.lock().unwrap_or_else(|p| p.into_inner()).take();
        match worker {
            Some(worker) => worker.stop(within).await,
            None => true,
        }
    }

    fn restart(&self, config: idbridge_forward::DeliveryConfig) -> Result<(), String> {
        let new = idbridge_forward::spawn(self.store.clone(), config).map_err(|e| e.to_string())?;
        let mut slot = self.handle.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.replace(new) {
            old.abort();
        }
        Ok(())
    }
}

/// What a change is applied to.
pub struct LiveHandles {
    pub sso: Arc<idbridge_sso::SsoService>,
    pub http: Arc<idbridge_api::middleware::LiveHttp>,
    pub api_limiters: Arc<idbridge_api::ApiLimiters>,
    pub scim_limiters: idbridge_scim::router::ScimLimiters,
    pub conn_caps: Arc<crate::conn_limits::ConnCaps>,
    pub retention_days: Arc<AtomicU32>,
    pub webhooks: Arc<WebhookWorker>,
    pub feeds: Arc<crate::feeds::FeedSupervisor>,
    pub shutdown: Arc<crate::serve::ShutdownTimes>,
}

impl LiveHandles {
    async fn apply(&self, section: Section, c: &Config) -> Result<(), String> {
        match section {
            Section::Server => {
                self.http.set(
                    c.server.max_body_bytes,
                    Duration::from_secs(c.server.request_timeout_secs),
                    Duration::from_secs(c.server.body_read_timeout_secs),
                );
                self.conn_caps
                    .set(c.server.max_connections, c.server.max_connections_per_ip);
                self.shutdown.set(&c.server);
            }
            Section::Log => {
                crate::logging::set_level(&c.log.level)?;
                crate::logging::set_format(c.log.format)?;
            }
            Section::Limits => {
                let l = c.limits.to_api();
                self.api_limiters.rate.set_limit(l.api_rate);
                self.api_limiters.failed_auth.set_limit(l.failed_auth);
                self.scim_limiters.rate.set_limit(l.scim_rate);
                self.scim_limiters.failed_auth.set_limit(l.failed_auth);
            }
            Section::Events => self
                .retention_days
                .store(c.events.retention_days, Ordering::Relaxed),
            Section::Webhooks => self.webhooks.restart(c.webhooks.clone())?,
            Section::Sso => self.sso.set_config(c.sso.to_api()),
            Section::Dns => self.sso.dns().set_settings(c.dns.to_settings()),
            Section::Idp => self
                .sso
                .set_idp_config(c.idp.settings.to_config().map_err(|e| e.to_string())?),
            Section::SftpServer => self.feeds.set_sftp_server(c.sftp_server.clone()).await?,
            // Read at start only (every key is restart-only).
            Section::Store => {}
        }
        Ok(())
    }
}

struct Snapshot {
    config: Config,
    records: BTreeMap<Section, SettingsRecord>,
}

/// The admin API's [`SettingsRuntime`]: validates, stores and applies changes.
pub struct RuntimeSettings {
    store: Arc<dyn Store>,
    /// The file's values (with the environment's): what `file`/`env`/`default` are told from.
    file: Config,
    env_keys: BTreeSet<String>,
    snapshot: Mutex<Snapshot>,
    /// One change at a time (validate, store, apply), so two PATCHes cannot interleave.
    writing: tokio::sync::Mutex<()>,
    live: LiveHandles,
}

impl RuntimeSettings {
    pub fn new(
        store: Arc<dyn Store>,
        file: Config,
        env_keys: BTreeSet<String>,
        seeded: Seeded,
        live: LiveHandles,
    ) -> Self {
        RuntimeSettings {
            store,
            file,
            env_keys,
            snapshot: Mutex::new(Snapshot {
                config: seeded.config,
                records: seeded.records,
            }),
            writing: tokio::sync::Mutex::new(()),
            live,
        }
    }

    fn view(&self, section: Section, snapshot: &Snapshot) -> Value {
        let values = section.values(&snapshot.config);
        let defaults = section.values(&Config::default());
        let file = section.values(&self.file);
        let record = snapshot.records.get(&section);
        let mut sources = Map::new();
        let mut pending = Map::new();
        for key in section.restart_only() {
            if let Some(v) = record.and_then(|r| r.runtime.get(*key)) {
                if values.get(*key) != Some(v) {
                    pending.insert((*key).to_string(), v.clone());
                }
            }
        }
        for key in values.keys() {
            let from_runtime = record
                .and_then(|r| r.runtime.get(key))
                .is_some_and(|v| values.get(key) == Some(v));
            let source = if from_runtime {
                "runtime"
            } else if self.env_keys.contains(&format!("{}.{key}", section.name())) {
                "env"
            } else if file.get(key) != defaults.get(key) {
                "file"
            } else {
                "default"
            };
            sources.insert(key.clone(), Value::from(source));
        }
        json!({
            "section": section.name(),
            "values": values,
            "sources": sources,
            "restart_required": section.restart_only(),
            "pending_restart": pending,
            "file_only": section.file_only(),
            "updated_at": record.and_then(|r| r.updated_at.clone()),
        })
    }

    fn section_of(name: &str) -> ApiResult<Section> {
        Section::parse(name).ok_or_else(|| ApiError::not_found("settings section", name))
    }

    /// Checks a PATCH whole: every problem is reported, and the candidate configuration
    /// returned only when there is none.
    fn check(
        &self,
        section: Section,
        current: &Config,
        patch: &Map<String, Value>,
    ) -> Result<Config, Vec<FieldError>> {
        let known = section.values(&Config::default());
        let name = section.name();
        let mut errors = Vec::new();
        for (key, value) in patch {
            if !known.contains_key(key) {
                let names: Vec<&str> = known.keys().map(String::as_str).collect();
                errors.push(FieldError::new(key, "unknown_field").with_message(format!(
                    "[{name}] has no setting `{key}`; its settings are: {}",
                    names.join(", ")
                )));
            } else if section.file_only().contains(&key.as_str()) {
                errors.push(FieldError::new(key, "file_only").with_message(format!(
                    "{name}.{key} is where the store (and these settings) live, so only the \
                     config file or its IDBRIDGE_* variable can set it: move the data and restart"
                )));
            } else if let Some((min, max)) = section.range(key) {
                match value.as_f64() {
                    Some(n) if (min..=max).contains(&n) => {}
                    _ => errors.push(FieldError::new(key, "out_of_range").with_message(format!(
                        "{name}.{key} must be a number from {min} to {max}"
                    ))),
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut merged = section.values(current);
        merged.extend(patch.clone());
        let mut candidate = current.clone();
        section
            .replace(&mut candidate, merged)
            .map_err(|e| vec![e])?;
        let errors = section.check(&candidate);
        if errors.is_empty() {
            Ok(candidate)
        } else {
            Err(errors)
        }
    }

    async fn patch_section(
        self: Arc<Self>,
        name: String,
        patch: Map<String, Value>,
    ) -> ApiResult<Value> {
        let section = Self::section_of(&name)?;
        let _writing = self.writing.lock().await;
        let current = self.lock().config.clone();
        let candidate = self
            .check(section, &current, &patch)
            .map_err(ApiError::Validation)?;
        // Stored first (durable before the answer), then applied.
        let previous = self.lock().records.get(&section).cloned();
        let record = {
            let this = self.clone();
            tokio::task::spawn_blocking(move || -> anyhow::Result<SettingsRecord> {
                let mut record = load(this.store.as_ref(), section)?.unwrap_or_default();
                for (key, value) in patch {
                    record.runtime.insert(key, value);
                }
                record.updated_at =
                    Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
                save(this.store.as_ref(), section, &record)?;
                Ok(record)
            })
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?
        };
        if let Err(e) = self.live.apply(section, &candidate).await {
            // Not applicable now (e.g. the SFTP port is taken): the stored record goes back to
            // what it was, so a restart does not fail on it either; nothing changed.
            let this = self.clone();
            let restored = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                match previous {
                    Some(r) => save(this.store.as_ref(), section, &r),
                    None => {
                        let mut cs = ChangeSet::new();
                        cs.delete(SETTINGS_TABLE, section.name());
                        this.store.commit(cs)?;
                        Ok(())
                    }
                }
            })
            .await
            .map_err(ApiError::internal)?;
            if let Err(re) = restored {
                return Err(ApiError::internal(format!(
                    "[{name}] could not be applied ({e}) and restoring the stored values failed \
                     ({re}); check GET /admin/settings/{name}"
                )));
            }
            tracing::warn!(section = %name, error = %e, "settings change refused: could not be applied");
            return Err(ApiError::BadRequest {
                code: "not_applied",
                message: format!("[{name}] could not be applied now: {e}. Nothing was changed."),
            });
        }
        let mut in_force = candidate;
        section.keep_start_values(&mut in_force, &current);
        let mut snapshot = self.lock();
        snapshot.config = in_force;
        snapshot.records.insert(section, record);
        tracing::info!(section = %name, "settings changed through the admin API");
        Ok(self.view(section, &snapshot))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.snapshot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SettingsRuntime for RuntimeSettings {
    fn all(&self) -> ApiResult<Value> {
        let snapshot = self.lock();
        let sections: Map<String, Value> = Section::ALL
            .into_iter()
            .map(|s| (s.name().to_string(), self.view(s, &snapshot)))
            .collect();
        Ok(json!({ "sections": sections }))
    }

    fn section(&self, name: &str) -> ApiResult<Value> {
        let section = Self::section_of(name)?;
        Ok(self.view(section, &self.lock()))
    }

    fn patch(
        self: Arc<Self>,
        name: String,
        patch: Map<String, Value>,
    ) -> Pin<Box<dyn Future<Output = ApiResult<Value>> + Send>> {
        Box::pin(self.patch_section(name, patch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Arc<dyn Store> {
        Arc::new(idbridge_store::SqliteStore::open_ephemeral().unwrap())
    }

    fn file(toml: &str) -> Config {
        Config::from_toml(toml, Path::new("test.toml")).unwrap()
    }

    #[test]
    fn runtime_values_win_until_the_file_changes_that_key() {
        let store = store();
        let f = file("[server]\nmax_body_bytes = 4096\n[events]\nretention_days = 7\n");
        let s = seed(store.as_ref(), &f).unwrap();
        assert_eq!(s.config.server.max_body_bytes, 4096);
        // An admin sets two keys at runtime.
        let mut rec = load(store.as_ref(), Section::Server).unwrap().unwrap();
        rec.runtime.insert("max_body_bytes".into(), json!(2048));
        rec.runtime.insert("request_timeout_secs".into(), json!(5));
        save(store.as_ref(), Section::Server, &rec).unwrap();
        // Restart with the same file: both runtime values kept.
        let s = seed(store.as_ref(), &f).unwrap();
        assert_eq!(s.config.server.max_body_bytes, 2048);
        assert_eq!(s.config.server.request_timeout_secs, 5);
        // The file changes max_body_bytes: the file wins for that key only.
        let f2 = file("[server]\nmax_body_bytes = 8192\n[events]\nretention_days = 7\n");
        let s = seed(store.as_ref(), &f2).unwrap();
        assert_eq!(s.config.server.max_body_bytes, 8192);
        assert_eq!(s.config.server.request_timeout_secs, 5);
        assert!(!s.records[&Section::Server]
            .runtime
            .contains_key("max_body_bytes"));
    }

    #[test]
    fn invalid_stored_values_fall_back_to_the_file() {
        let store = store();
        let f = file("");
        seed(store.as_ref(), &f).unwrap();
        let mut rec = load(store.as_ref(), Section::Events).unwrap().unwrap();
        rec.runtime.insert("retention_days".into(), json!(0));
        save(store.as_ref(), Section::Events, &rec).unwrap();
        let s = seed(store.as_ref(), &f).unwrap();
        assert_eq!(s.config.events.retention_days, 30);
    }

    #[test]
    fn env_keys_name_the_settings_they_set() {
        let keys = env_keys([
            ("IDBRIDGE_MAX_BODY_BYTES".to_string(), "1".to_string()),
            ("IDBRIDGE_WEBHOOKS_BATCH_SIZE".to_string(), "1".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ]);
        assert_eq!(
            keys.into_iter().collect::<Vec<_>>(),
            ["server.max_body_bytes", "webhooks.batch_size"]
        );
    }

    #[test]
    fn every_section_round_trips_its_own_values() {
        let c = Config::default();
        for s in Section::ALL {
            let mut copy = c.clone();
            s.replace(&mut copy, s.values(&c)).unwrap();
            assert_eq!(copy, c, "{}", s.name());
            for key in s.restart_only() {
                assert!(s.values(&c).contains_key(*key), "{}.{key}", s.name());
            }
        }
    }
}
