//! What feeds LDAP/AD and SFTP directories while the server runs, and where it is configured.
//!
//! The settings live in the store (`idbridge_directory::feeds`): the admin API writes them
//! (`/admin/directories/{id}/feed`) and the config file's `[[ldap_directories]]` and
//! `[[sftp_directories]]` entries seed them at each start ([`seed`]) by the rule of declared
//! entries ([`crate::declared`]): an entry is written when its feed is absent or when the entry
//! changed since it was last applied (origin `config`); an unchanged entry leaves a change made
//! through the API alone; a directory the file no longer declares loses a feed that came from
//! the file; feeds written through the API (origin `api`) are never removed by it.
//!
//! [`FeedSupervisor`] makes the running server match the table, after every write and at
//! start: one LDAP scheduler per LDAP feed (restarted when its settings change, stopped when
//! removed), the embedded SFTP server's accounts and keys (replaced live; the server starts
//! when the first push account appears), one pull job per pull feed (rescheduled on change).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use idbridge_api::feeds_admin::FeedRuntime;
use idbridge_api::ldap_admin::LdapRunners;
use idbridge_directory::feeds::{FeedKind, FeedOrigin, FeedRecord, FeedStore, SecretChange};
use idbridge_directory::DirectoryEngine;
use idbridge_ldap::feed::{LdapFeed, BIND_PASSWORD_SECRET};
use idbridge_ldap::scheduler::{self, Schedule};
use idbridge_ldap::{LdapSource, SecretValue, Syncer};
use idbridge_sftp::server::{RunningSftpServer, ServerConfig, SftpAccount};
use idbridge_sftp::settings::{PullSettings, SftpFeed, PRIVATE_KEY_SECRET};
use idbridge_sftp::{HostKeyPin, Processor, PullConfig};
use idbridge_store::Store;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::declared::Seed;
use crate::sftp_cli::SftpServerSection;

/// The feed of an `[[ldap_directories]]` entry.
pub fn ldap_feed(d: &crate::ldap::LdapDirectoryConfig) -> LdapFeed {
    LdapFeed {
        full_sync_interval_secs: d.full_sync_interval_secs,
        delta_sync_interval_secs: d.delta_sync_interval_secs,
        ldap: d.ldap.clone(),
    }
}

/// The feed of an `[[sftp_directories]]` entry.
pub fn sftp_feed(d: &crate::sftp_cli::SftpDirectoryConfig) -> SftpFeed {
    SftpFeed {
        username: d.username.clone(),
        authorized_keys: d.authorized_keys.clone(),
        pull: d.pull.as_ref().map(|p| PullSettings {
            host: p.host.clone(),
            port: p.port,
            username: p.username.clone(),
            private_key_file: Some(p.private_key_file.clone()),
            host_key: p.host_key.clone(),
            remote_dir: p.remote_dir.clone(),
            interval_secs: p.interval_secs,
            remove_remote: p.remove_remote,
        }),
        max_delete_ratio: d.max_delete_ratio,
    }
}

/// Writes the file's feeds into the table (origin `config`) by the rule of declared entries
/// ([`crate::declared`]): a feed the file declares is written when absent or when its entry
/// changed since it was last applied, and left as it is otherwise (a change made through the
/// API stays). File-origin feeds the file no longer declares are removed. Expects `directory`
/// keys resolved.
pub fn seed(feeds: &FeedStore, store: &dyn Store, config: &Config) -> anyhow::Result<()> {
    let mut declared = HashSet::new();
    let remove = |name: &str| BTreeMap::from([(name.to_owned(), SecretChange::Remove)]);
    let unchanged = |kind: &str, id: &str, settings: &Value| -> anyhow::Result<(bool, Seed)> {
        let seed = Seed::of(kind, id, settings)?;
        Ok((feeds.get(id)?.is_some() && !seed.changed(store)?, seed))
    };
    for (i, d) in config.ldap_directories.iter().enumerate() {
        let id = d.id();
        if id.is_empty() {
            continue;
        }
        let settings = serde_json::to_value(ldap_feed(d))?;
        declared.insert(id.to_owned());
        let (keep, seed) = unchanged("ldap_feed", id, &settings)?;
        if keep {
            continue;
        }
        let (_, changed) = feeds
            .put(
                id,
                FeedKind::Ldap,
                settings,
                &remove(BIND_PASSWORD_SECRET),
                FeedOrigin::Config,
            )
            .with_context(|| format!("ldap_directories[{i}]"))?;
        seed.record(store)?;
        tracing::info!(directory_id = %id, changed, "ldap feed from the config file");
    }
    for (i, d) in config.sftp_directories.iter().enumerate() {
        let id = d.id();
        if id.is_empty() {
            continue;
        }
        let settings = serde_json::to_value(sftp_feed(d))?;
        declared.insert(id.to_owned());
        let (keep, seed) = unchanged("sftp_feed", id, &settings)?;
        if keep {
            continue;
        }
        let (_, changed) = feeds
            .put(
                id,
                FeedKind::Sftp,
                settings,
                &remove(PRIVATE_KEY_SECRET),
                FeedOrigin::Config,
            )
            .with_context(|| format!("sftp_directories[{i}]"))?;
        seed.record(store)?;
        tracing::info!(directory_id = %id, changed, "sftp feed from the config file");
    }
    for rec in feeds.list()? {
        if rec.origin == FeedOrigin::Config && !declared.contains(&rec.directory_id) {
            feeds.delete(&rec.directory_id)?;
            tracing::info!(directory_id = %rec.directory_id, "feed removed: the config file no longer declares it");
        }
    }
    Ok(())
}

/// The LDAP source of a stored LDAP feed (the sealed bind password opened).
pub fn ldap_source(feeds: &FeedStore, rec: &FeedRecord) -> anyhow::Result<(LdapSource, Schedule)> {
    let mut feed: LdapFeed = serde_json::from_value(rec.settings.clone())
        .with_context(|| format!("stored ldap feed of {}", rec.directory_id))?;
    if let Some(pw) = feeds.secret(rec, BIND_PASSWORD_SECRET)? {
        feed.ldap.bind_password_value = Some(SecretValue(pw));
    }
    Ok((
        LdapSource {
            directory_id: rec.directory_id.clone(),
            settings: feed.ldap.clone(),
        },
        feed.schedule(),
    ))
}

/// The SFTP feed of a stored record.
pub fn sftp_settings(rec: &FeedRecord) -> anyhow::Result<SftpFeed> {
    serde_json::from_value(rec.settings.clone())
        .with_context(|| format!("stored sftp feed of {}", rec.directory_id))
}

/// What a runner was started from (settings + sealed secrets): a change restarts it.
type FeedKey = (Value, BTreeMap<String, String>);
/// A running task and the record it was started from.
type Started = (FeedKey, JoinHandle<()>);

#[derive(Default)]
struct Running {
    ldap: HashMap<String, Started>,
    pulls: HashMap<String, Started>,
    server: Option<RunningSftpServer>,
}

/// What the table asks for, built off the async runtime (store reads, key files).
#[derive(Default)]
struct Desired {
    ldap: HashMap<String, (FeedKey, LdapSource, Schedule)>,
    pulls: HashMap<String, (FeedKey, PullConfig, Processor, u64)>,
    accounts: Vec<SftpAccount>,
    errors: Vec<String>,
}

/// Keeps the running feeds in line with the table (see the module docs).
pub struct FeedSupervisor {
    engine: Arc<DirectoryEngine>,
    feeds: FeedStore,
    syncer: Arc<Syncer>,
    runners: Arc<LdapRunners>,
    data_dir: PathBuf,
    /// `[sftp_server]` in force (changed live by `PATCH /admin/settings/sftp_server`).
    sftp: std::sync::Mutex<SftpServerSection>,
    running: tokio::sync::Mutex<Running>,
}

impl FeedSupervisor {
    pub fn new(
        engine: Arc<DirectoryEngine>,
        feeds: FeedStore,
        runners: Arc<LdapRunners>,
        config: &Config,
    ) -> Arc<Self> {
        Arc::new(FeedSupervisor {
            syncer: Arc::new(Syncer::new(engine.clone())),
            engine,
            feeds,
            runners,
            data_dir: config.server.data_dir.clone(),
            sftp: std::sync::Mutex::new(config.sftp_server.clone()),
            running: tokio::sync::Mutex::default(),
        })
    }

    fn desired(&self) -> anyhow::Result<Desired> {
        let mut out = Desired::default();
        for rec in self.feeds.list()? {
            let id = rec.directory_id.clone();
            if let Err(e) = self.engine.get_directory(&id) {
                out.errors
                    .push(format!("feed of {id}: {e}; not running it"));
                continue;
            }
            let key = (rec.settings.clone(), rec.secrets.clone());
            match rec.kind {
                FeedKind::Ldap => match ldap_source(&self.feeds, &rec) {
                    Ok((src, schedule)) => {
                        out.ldap.insert(id, (key, src, schedule));
                    }
                    Err(e) => out.errors.push(format!("ldap feed of {id}: {e:#}")),
                },
                FeedKind::Sftp => {
                    if let Err(e) = self.sftp_one(&rec, key, &mut out) {
                        out.errors.push(format!("sftp feed of {id}: {e:#}"));
                    }
                }
            }
        }
        Ok(out)
    }

    fn sftp_one(&self, rec: &FeedRecord, key: FeedKey, out: &mut Desired) -> anyhow::Result<()> {
        let feed = sftp_settings(rec)?;
        let id = &rec.directory_id;
        if let Some(p) = &feed.pull {
            let private_key = match (
                &p.private_key_file,
                self.feeds.secret(rec, PRIVATE_KEY_SECRET)?,
            ) {
                (_, Some(pem)) => idbridge_sftp::pull::parse_private_key(&pem)?,
                (Some(path), None) => idbridge_sftp::pull::load_private_key(path)?,
                (None, None) => anyhow::bail!("no private key"),
            };
            let cfg = PullConfig {
                directory_id: id.clone(),
                host: p.host.clone(),
                port: p.port,
                username: p.username.clone(),
                private_key: Arc::new(private_key),
                host_key: HostKeyPin::parse(&p.host_key)?,
                remote_dir: p.remote_dir.clone(),
                staging_dir: self.data_dir.join("sftp").join("pull").join(id),
                max_file_bytes: self.sftp_section().max_file_bytes,
                timeout: Duration::from_secs(300),
                remove_remote: p.remove_remote,
            };
            let mut proc = Processor::new(self.engine.clone());
            proc.policy = feed.policy();
            out.pulls
                .insert(id.clone(), (key, cfg, proc, p.interval_secs));
        } else if let Some(username) = &feed.username {
            let keys = feed
                .authorized_keys
                .iter()
                .map(|k| idbridge_sftp::parse_authorized_key(k))
                .collect::<Result<Vec<_>, _>>()?;
            out.accounts.push(SftpAccount {
                username: username.clone(),
                directory_id: id.clone(),
                keys,
                policy: Some(feed.policy()),
            });
        }
        Ok(())
    }

    /// Applies the table: starts, restarts and stops what differs. Errors of single feeds are
    /// collected (the others are still applied) and returned together.
    pub async fn apply_all(self: &Arc<Self>) -> Result<(), String> {
        let mut running = self.running.lock().await;
        let this = self.clone();
        let desired = tokio::task::spawn_blocking(move || this.desired())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{e:#}"))?;
        let mut errors = desired.errors;

        // LDAP schedulers.
        running.ldap.retain(|id, (key, handle)| {
            let keep = desired.ldap.get(id).is_some_and(|(k, _, _)| k == key);
            if !keep {
                handle.abort();
                tracing::info!(directory_id = %id, "ldap scheduler stopped");
            }
            keep
        });
        let mut sources = Vec::new();
        for (id, (key, src, schedule)) in desired.ldap {
            sources.push(src.clone());
            if running.ldap.contains_key(&id) {
                continue;
            }
            tracing::info!(directory_id = %id, url = %src.settings.url, "ldap sync scheduled");
            let handle = scheduler::spawn(self.syncer.clone(), src, schedule);
            running.ldap.insert(id, (key, handle));
        }
        self.runners.install(self.syncer.clone(), sources);

        // SFTP pull jobs.
        running.pulls.retain(|id, (key, handle)| {
            let keep = desired.pulls.get(id).is_some_and(|(k, ..)| k == key);
            if !keep {
                handle.abort();
                tracing::info!(directory_id = %id, "sftp pull stopped");
            }
            keep
        });
        for (id, (key, cfg, proc, interval)) in desired.pulls {
            if running.pulls.contains_key(&id) {
                continue;
            }
            tracing::info!(directory_id = %id, host = %cfg.host, "sftp pull scheduled");
            let handle = tokio::spawn(idbridge_sftp::run_schedule(
                cfg,
                proc,
                Duration::from_secs(interval.max(1)),
            ));
            running.pulls.insert(id, (key, handle));
        }

        // The embedded SFTP server's accounts.
        match &running.server {
            Some(server) => {
                if let Err(e) = server.set_accounts(desired.accounts) {
                    errors.push(format!("sftp accounts: {e}"));
                }
            }
            None if !desired.accounts.is_empty() => {
                let sftp = self.sftp_section();
                let mut cfg = ServerConfig::new(&self.data_dir);
                cfg.listen = sftp.listen;
                cfg.max_file_bytes = sftp.max_file_bytes;
                cfg.max_files = sftp.max_files;
                cfg.debounce = Duration::from_millis(sftp.debounce_ms);
                cfg.max_connections = sftp.max_connections;
                cfg.max_connections_per_ip = sftp.max_connections_per_ip;
                cfg.failed_auth_limit = idbridge_limits::FailureLimit {
                    max_failures: sftp.failed_auth_max,
                    window_secs: sftp.failed_auth_window_secs,
                };
                cfg.accounts = desired.accounts;
                match idbridge_sftp::server::start(cfg, Processor::new(self.engine.clone())).await {
                    Ok(s) => running.server = Some(s),
                    Err(e) => {
                        errors.push(format!("starting the SFTP server on {}: {e}", sftp.listen))
                    }
                }
            }
            None => {}
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

impl FeedSupervisor {
    fn sftp_section(&self) -> SftpServerSection {
        self.sftp.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Applies a new `[sftp_server]`: the embedded server (if it runs) is restarted with it —
    /// open SFTP sessions are closed, clients reconnect — and pull jobs are rescheduled (their
    /// file size limit). If the server cannot start with the new values (e.g. the port is
    /// taken), the previous values are put back and started again, and the error is returned.
    pub async fn set_sftp_server(self: &Arc<Self>, next: SftpServerSection) -> Result<(), String> {
        let previous = {
            let mut cur = self.sftp.lock().unwrap_or_else(|p| p.into_inner());
            if *cur == next {
                return Ok(());
            }
            std::mem::replace(&mut *cur, next)
        };
        let had_server = {
            let mut running = self.running.lock().await;
            for (id, (_, handle)) in running.pulls.drain() {
                handle.abort();
                tracing::debug!(directory_id = %id, "sftp pull stopped for new [sftp_server] settings");
            }
            match running.server.take() {
                Some(server) => {
                    server.shutdown().await;
                    tracing::info!("embedded SFTP server stopped for new [sftp_server] settings");
                    true
                }
                None => false,
            }
        };
        let outcome = self.apply_all().await;
        let started = self.running.lock().await.server.is_some();
        if started || !had_server {
            // Errors of other feeds are not this change's: they are logged as at start.
            if let Err(e) = outcome {
                tracing::error!(error = %e, "some directory feeds could not be started");
            }
            return Ok(());
        }
        let why = outcome
            .err()
            .unwrap_or_else(|| "the SFTP server did not start".into());
        *self.sftp.lock().unwrap_or_else(|p| p.into_inner()) = previous;
        let back = self.apply_all().await;
        let restored = self.running.lock().await.server.is_some();
        Err(if restored {
            format!("{why}; the previous [sftp_server] values are back in force")
        } else {
            format!(
                "{why}; restarting with the previous values failed too: {}",
                back.err().unwrap_or_default()
            )
        })
    }

    /// Stops every runner (at shutdown): LDAP schedulers and SFTP pull jobs are cancelled at
    /// their next await (a store write in progress runs to its end on its blocking thread),
    /// and the embedded SFTP server stops accepting and disconnects its clients.
    pub async fn stop_all(&self) {
        let mut guard = self.running.lock().await;
        let running = &mut *guard;
        for (id, (_, handle)) in running.ldap.drain().chain(running.pulls.drain()) {
            handle.abort();
            tracing::debug!(directory_id = %id, "feed runner stopped");
        }
        if let Some(server) = running.server.take() {
            server.shutdown().await;
            tracing::info!("embedded SFTP server stopped");
        }
    }
}

impl FeedRuntime for FeedSupervisor {
    fn apply(self: Arc<Self>) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        Box::pin(async move { self.apply_all().await })
    }
}

/// The store prepared for a CLI command while the server is stopped: what `serve` applies at
/// start (declared organizations, `[[directories]]`, the feeds of the file) applied the same
/// idempotent way, so `idbridge directory sync|import <key>` works before the first start.
pub struct Offline {
    pub engine: Arc<DirectoryEngine>,
    pub feeds: FeedStore,
}

impl Offline {
    /// Opens the store and applies the file's declarations.
    pub fn prepare(config: &Config) -> anyhow::Result<Offline> {
        let store = crate::open_store(config)?;
        let orgs = idbridge_sso::organizations::Organizations::new(store.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        runtime.block_on(crate::declared::apply_organizations(
            &orgs,
            store.as_ref(),
            &config.organizations,
        ))?;
        drop(runtime);
        let engine = Arc::new(crate::directory_engine(store.clone()));
        for d in &config.directories {
            let applied = crate::directories::apply_one(&engine, d)
                .with_context(|| format!("declared directory {:?}", d.key))?;
            if let Some(t) = applied.new_token {
                // As at a first start: the generated token is shown once.
                println!(
                    "IDBRIDGE_SCIM[{}]: endpoint={} token={t}",
                    d.key,
                    idbridge_scim::router::endpoint_url(&config.public_url(), &applied.id)
                );
            }
        }
        let mut resolved = config.clone();
        crate::directories::resolve_references(&engine, &mut resolved)?;
        let feeds = FeedStore::new(store.clone(), Some(crate::secret_key(config)?));
        seed(&feeds, store.as_ref(), &resolved)?;
        Ok(Offline { engine, feeds })
    }

    /// A directory id, or the key of a `[[directories]]` entry of one of `types`.
    pub fn directory_id(&self, id_or_key: &str, types: &[&str]) -> anyhow::Result<String> {
        if id_or_key.starts_with("directory_") {
            self.engine
                .get_directory(id_or_key)
                .with_context(|| format!("directory {id_or_key}"))?;
            return Ok(id_or_key.to_owned());
        }
        crate::directories::resolve_declared(&self.engine, id_or_key, types)
    }

    /// The stored feed of `kind` of a directory, or an error saying how to configure one.
    pub fn feed(&self, id: &str, kind: FeedKind) -> anyhow::Result<FeedRecord> {
        self.feeds
            .get(id)?
            .filter(|r| r.kind == kind)
            .with_context(|| {
                format!(
                    "directory {id} has no {} feed: declare it in the config file or set it with \
                     PUT /admin/directories/{id}/feed",
                    match kind {
                        FeedKind::Ldap => "LDAP",
                        FeedKind::Sftp => "SFTP",
                    }
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idbridge_store::{SqliteStore, Store};
    use serde_json::json;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKS8c5Ee5TPRd2q2Hl/QJ0l9CGDIoO7gVcWwlP7yGaGx k";

    fn config(text: &str) -> Config {
        Config::from_toml(text, std::path::Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_declared_feed_is_written_when_its_entry_changes_and_api_changes_stay_otherwise() {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open_ephemeral().unwrap_or_else(|e| panic!("{e}")));
        let feeds = FeedStore::new(
            store.clone(),
            Some(idbridge_sso::SecretBox::generate().unwrap_or_else(|e| panic!("{e}"))),
        );
        let file_with = |ratio: f64| {
            config(&format!(
                "[[sftp_directories]]\ndirectory_id = \"directory_A\"\nusername = \"a\"\n\
                 authorized_keys = [\"{KEY}\"]\nmax_delete_ratio = {ratio}\n"
            ))
        };
        let file = file_with(0.5);
        // An API feed for another directory.
        let api = json!({"username": "b", "authorized_keys": [KEY]});
        feeds
            .put(
                "directory_B",
                FeedKind::Sftp,
                api.clone(),
                &BTreeMap::new(),
                FeedOrigin::Api,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        seed(&feeds, store.as_ref(), &file).unwrap_or_else(|e| panic!("{e}"));
        let a = feeds
            .get("directory_A")
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("seeded"));
        assert_eq!(a.origin, FeedOrigin::Config);
        assert_eq!(a.settings["max_delete_ratio"], 0.5);
        // Seeding the same file again rewrites nothing.
        seed(&feeds, store.as_ref(), &file).unwrap_or_else(|e| panic!("{e}"));
        let same = feeds
            .get("directory_A")
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("kept"));
        assert_eq!(
            same.updated_at, a.updated_at,
            "an unchanged entry is not rewritten"
        );
        // An API change to the file's directory survives the next start with the same file.
        let changed = json!({"username": "a", "authorized_keys": [KEY], "max_delete_ratio": 1.0});
        feeds
            .put(
                "directory_A",
                FeedKind::Sftp,
                changed.clone(),
                &BTreeMap::new(),
                FeedOrigin::Api,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        seed(&feeds, store.as_ref(), &file).unwrap_or_else(|e| panic!("{e}"));
        let kept = feeds
            .get("directory_A")
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("kept"));
        assert_eq!(
            kept.settings["max_delete_ratio"], 1.0,
            "{:?}",
            kept.settings
        );
        // The file entry changes: the file's value is applied.
        seed(&feeds, store.as_ref(), &file_with(0.25)).unwrap_or_else(|e| panic!("{e}"));
        let edited = feeds
            .get("directory_A")
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("kept"));
        assert_eq!(
            (edited.origin, edited.settings["max_delete_ratio"].clone()),
            (FeedOrigin::Config, json!(0.25))
        );
        // The file stops declaring A: its file feed goes; B (from the API) stays.
        seed(&feeds, store.as_ref(), &Config::default()).unwrap_or_else(|e| panic!("{e}"));
        assert!(feeds.get("directory_A").ok().flatten().is_none());
        let b = feeds
            .get("directory_B")
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("api feed kept"));
        assert_eq!((b.origin, b.settings), (FeedOrigin::Api, api));
    }
}
