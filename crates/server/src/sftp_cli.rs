//! SFTP directories in the binary: the `[sftp_server]` and `[[sftp_directories]]` config
//! sections, the embedded server and pull schedulers started by `serve`, and
//! `idbridge directory import <id> <dir>`.
//!
//! ```toml
//! [sftp_server]
//! listen = "0.0.0.0:2222"          # host key: <data_dir>/sftp/ssh_host_ed25519_key
//! max_file_bytes = 536870912
//! max_files = 20
//! debounce_ms = 2000
//! max_connections = 64             # over it a new connection is closed at once
//! max_connections_per_ip = 16
//! failed_auth_max = 30             # refused keys per account in the window, then a lockout
//! failed_auth_window_secs = 300
//!
//! [[sftp_directories]]             # push: the HR system uploads to us
//! directory_id = "directory_01H..." # created with POST /admin/directories, type "sftp"
//!                                   # (or directory = "<key of a [[directories]] entry>")
//! username = "acme-workday"
//! authorized_keys = ["ssh-ed25519 AAAA... workday@acme"]
//!
//! [[sftp_directories]]             # pull: we fetch from the customer's server
//! directory_id = "directory_01J..."
//! [sftp_directories.pull]
//! host = "sftp.acme.example"
//! username = "idbridge"
//! private_key_file = "/etc/idbridge/sftp_pull_key"
//! host_key = "SHA256:..."          # or "ssh-ed25519 AAAA..."
//! remote_dir = "/outbox"
//! interval_secs = 1800
//! ```

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use idbridge_directory::{DirectoryEngine, SnapshotPolicy};
use idbridge_sftp::server::{RunningSftpServer, ServerConfig, SftpAccount};
use idbridge_sftp::{DeliveryFiles, DeliverySource, HostKeyPin, Processor, PullConfig};
use serde::Deserialize;

use crate::config::Config;

/// `[sftp_server]`: the embedded server (started only when a push directory is configured).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SftpServerSection {
    pub listen: SocketAddr,
    pub max_file_bytes: u64,
    pub max_files: usize,
    /// Quiet time after the last upload closes before a delivery is processed.
    pub debounce_ms: u64,
    /// Open SFTP connections at most, and from one client address at most.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Refused keys per account in `failed_auth_window_secs`; past it the account refuses
    /// every key until the window passes (0 turns it off).
    pub failed_auth_max: u32,
    pub failed_auth_window_secs: u64,
}

impl Default for SftpServerSection {
    fn default() -> Self {
        SftpServerSection {
            listen: SocketAddr::from(([0, 0, 0, 0], 2222)),
            max_file_bytes: 512 * 1024 * 1024,
            max_files: 20,
            debounce_ms: 2000,
            max_connections: 64,
            max_connections_per_ip: 16,
            failed_auth_max: 30,
            failed_auth_window_secs: 300,
        }
    }
}

/// `[sftp_directories.pull]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PullSection {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub username: String,
    pub private_key_file: PathBuf,
    /// `ssh-ed25519 AAAA...` or `SHA256:...`.
    pub host_key: String,
    #[serde(default = "default_remote_dir")]
    pub remote_dir: String,
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    #[serde(default)]
    pub remove_remote: bool,
}

fn default_port() -> u16 {
    22
}
fn default_remote_dir() -> String {
    ".".into()
}
fn default_interval() -> u64 {
    1800
}

/// One `[[sftp_directories]]` entry: push (username + keys) or pull (a `pull` table).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SftpDirectoryConfig {
    /// An existing directory of type `sftp` (exactly one of this and `directory`). Filled in
    /// from `directory` at start-up ([`crate::directories::resolve_references`]).
    pub directory_id: Option<String>,
    /// ... or the key of a `[[directories]]` entry of type `sftp` (created at start-up).
    pub directory: Option<String>,
    /// Push: login on the embedded server (also the inbox folder name).
    pub username: Option<String>,
    /// Push: authorized public keys, one OpenSSH line each.
    #[serde(default)]
    pub authorized_keys: Vec<String>,
    /// Pull mode settings.
    pub pull: Option<PullSection>,
    /// Largest share of users one delivery may remove (default 0.10).
    pub max_delete_ratio: Option<f64>,
}

impl SftpDirectoryConfig {
    /// The directory id (empty while a `directory` key is not resolved yet).
    pub fn id(&self) -> &str {
        self.directory_id.as_deref().unwrap_or_default()
    }
}

/// Checks every entry (it names one directory, declared ones by key; keys parse and meet the
/// key policy, names are unique).
pub fn validate_all(
    dirs: &[SftpDirectoryConfig],
    declared: &[crate::directories::DeclaredDirectory],
) -> Result<(), (String, String)> {
    let mut ids = std::collections::HashSet::new();
    let mut users = std::collections::HashSet::new();
    for (i, d) in dirs.iter().enumerate() {
        let at = |f: &str| format!("sftp_directories[{i}].{f}");
        crate::directories::check_reference(
            &at,
            d.directory_id.as_deref(),
            d.directory.as_deref(),
            declared,
            crate::directories::SFTP_TYPES,
        )?;
        let (field, name) = match (&d.directory_id, &d.directory) {
            (Some(id), _) => ("directory_id", id),
            (None, Some(key)) => ("directory", key),
            (None, None) => continue,
        };
        if !ids.insert((field, name)) {
            return Err((at(field), "declared twice".into()));
        }
        match (&d.username, &d.pull) {
            (Some(_), Some(_)) => {
                return Err((at("pull"), "use either username (push) or pull".into()))
            }
            (None, None) => {
                return Err((at("username"), "required (or a pull table)".into()));
            }
            (Some(u), None) => {
                if idbridge_sftp::jail::components(u).map(|c| c.len()) != Ok(1) {
                    return Err((
                        at("username"),
                        "letters, digits, . _ - + @ only; not starting with '.'".into(),
                    ));
                }
                if !users.insert(u) {
                    return Err((at("username"), "used twice".into()));
                }
                if d.authorized_keys.is_empty() {
                    return Err((at("authorized_keys"), "at least one key is required".into()));
                }
                for (k, line) in d.authorized_keys.iter().enumerate() {
                    idbridge_sftp::parse_authorized_key(line)
                        .map_err(|e| (at(&format!("authorized_keys[{k}]")), e.to_string()))?;
                }
            }
            (None, Some(p)) => {
                HostKeyPin::parse(&p.host_key).map_err(|e| (at("pull.host_key"), e.to_string()))?;
                if p.interval_secs == 0 {
                    return Err((at("pull.interval_secs"), "must be at least 1".into()));
                }
            }
        }
        if let Some(r) = d.max_delete_ratio {
            if !(0.0..=1.0).contains(&r) {
                return Err((at("max_delete_ratio"), "must be between 0 and 1".into()));
            }
        }
    }
    Ok(())
}

/// What `serve` keeps running for SFTP directories.
pub struct SftpRuntime {
    pub server: Option<RunningSftpServer>,
    pub pullers: Vec<tokio::task::JoinHandle<()>>,
}

fn processor(engine: &Arc<DirectoryEngine>, d: &SftpDirectoryConfig) -> Processor {
    let mut p = Processor::new(engine.clone());
    if let Some(r) = d.max_delete_ratio {
        p.policy = SnapshotPolicy {
            max_delete_ratio: r,
            confirmed: false,
        };
    }
    p
}

/// Starts the embedded server (when a push directory is configured) and one pull scheduler
/// per pull directory. Expects `directory` keys resolved. Unknown directories are reported
/// and skipped.
pub async fn start(engine: Arc<DirectoryEngine>, config: &Config) -> anyhow::Result<SftpRuntime> {
    let data_dir = &config.server.data_dir;
    let mut accounts = Vec::new();
    let mut pullers = Vec::new();
    // One guard policy per server: the strictest configured push ratio.
    let mut push_processor: Option<Processor> = None;
    for d in &config.sftp_directories {
        if let Err(e) = engine.get_directory(d.id()) {
            tracing::error!(directory_id = %d.id(), error = %e, "sftp_directories entry names an unknown directory; skipped");
            continue;
        }
        if let Some(p) = &d.pull {
            let key = idbridge_sftp::pull::load_private_key(&p.private_key_file)?;
            let cfg = PullConfig {
                directory_id: d.id().to_owned(),
                host: p.host.clone(),
                port: p.port,
                username: p.username.clone(),
                private_key: Arc::new(key),
                host_key: HostKeyPin::parse(&p.host_key)?,
                remote_dir: p.remote_dir.clone(),
                staging_dir: data_dir.join("sftp").join("pull").join(d.id()),
                max_file_bytes: config.sftp_server.max_file_bytes,
                timeout: Duration::from_secs(300),
                remove_remote: p.remove_remote,
            };
            let proc = processor(&engine, d);
            pullers.push(tokio::spawn(idbridge_sftp::run_schedule(
                cfg,
                proc,
                Duration::from_secs(p.interval_secs),
            )));
        } else if let Some(username) = &d.username {
            let keys = d
                .authorized_keys
                .iter()
                .map(|k| idbridge_sftp::parse_authorized_key(k))
                .collect::<Result<Vec<_>, _>>()?;
            accounts.push(SftpAccount {
                username: username.clone(),
                directory_id: d.id().to_owned(),
                keys,
            });
            let p = processor(&engine, d);
            push_processor = Some(match push_processor {
                Some(old) if old.policy.max_delete_ratio <= p.policy.max_delete_ratio => old,
                _ => p,
            });
        }
    }
    let server = match push_processor {
        Some(p) if !accounts.is_empty() => {
            let mut cfg = ServerConfig::new(data_dir);
            cfg.listen = config.sftp_server.listen;
            cfg.max_file_bytes = config.sftp_server.max_file_bytes;
            cfg.max_files = config.sftp_server.max_files;
            cfg.debounce = Duration::from_millis(config.sftp_server.debounce_ms);
            cfg.max_connections = config.sftp_server.max_connections;
            cfg.max_connections_per_ip = config.sftp_server.max_connections_per_ip;
            cfg.failed_auth_limit = idbridge_limits::FailureLimit {
                max_failures: config.sftp_server.failed_auth_max,
                window_secs: config.sftp_server.failed_auth_window_secs,
            };
            cfg.accounts = accounts;
            Some(
                idbridge_sftp::server::start(cfg, p)
                    .await
                    .context("starting the SFTP server")?,
            )
        }
        _ => None,
    };
    Ok(SftpRuntime { server, pullers })
}

/// `idbridge directory import`.
#[derive(Debug, Subcommand)]
pub enum DirectoryCommand {
    /// Apply a folder's users.csv (+ groups.csv, user_groups.csv) to an SFTP directory as one
    /// snapshot, with a progress bar (the server must be stopped: the store is single-process).
    Import {
        /// The directory id (`directory_...`).
        id: String,
        /// The folder holding the CSV files (left untouched).
        dir: PathBuf,
        /// Apply even if more than the guard's share of users would be removed.
        #[arg(long)]
        confirm: bool,
    },
}

pub fn run(config: &Config, command: DirectoryCommand) -> anyhow::Result<()> {
    let DirectoryCommand::Import { id, dir, confirm } = command;
    let files = DeliveryFiles::in_dir(&dir)
        .with_context(|| format!("no users.csv in {}", dir.display()))?;
    let store = crate::open_store(config)?;
    let engine = Arc::new(crate::directory_engine(store));
    let mut p = Processor::new(engine);
    p.policy.confirmed = confirm;
    let total = files.total_bytes();
    // Both passes read the files: the bar covers twice their size.
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(total * 2);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        ) {
            b.set_style(style);
        }
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let rec = p.process_files(&id, &files, DeliverySource::Import, &mut |n| bar.inc(n))?;
    bar.finish_and_clear();
    println!("delivery:  {}", rec.id);
    println!("status:    {:?}", rec.status);
    println!(
        "rows:      users {} groups {} user_groups {}",
        rec.rows.users, rec.rows.groups, rec.rows.user_groups
    );
    if let Some(c) = rec.changes {
        println!(
            "changes:   users +{} ~{} -{}, groups +{} ~{} -{}, memberships +{} -{}, {} events",
            c.users_created,
            c.users_updated,
            c.users_deleted,
            c.groups_created,
            c.groups_updated,
            c.groups_deleted,
            c.memberships_added,
            c.memberships_removed,
            c.events
        );
    }
    println!("took:      {} ms", rec.duration_ms);
    match rec.status {
        idbridge_sftp::DeliveryStatus::Applied => Ok(()),
        _ => {
            eprint!("{}", idbridge_sftp::delivery::report_text(&rec));
            if let Some(e) = &rec.error {
                eprintln!("error: {e}");
            }
            anyhow::bail!("delivery not applied")
        }
    }
}
