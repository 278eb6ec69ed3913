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

use anyhow::Context;
use clap::Subcommand;
use idbridge_sftp::{DeliveryFiles, DeliverySource, HostKeyPin, Processor};
use serde::Deserialize;

use crate::config::Config;

/// `[sftp_server]`: the embedded server (started only when a push directory is configured).
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
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
    #[serde(default = "idbridge_sftp::settings::default_port")]
    pub port: u16,
    pub username: String,
    pub private_key_file: PathBuf,
    /// `ssh-ed25519 AAAA...` or `SHA256:...`.
    pub host_key: String,
    #[serde(default = "idbridge_sftp::settings::default_remote_dir")]
    pub remote_dir: String,
    #[serde(default = "idbridge_sftp::settings::default_interval")]
    pub interval_secs: u64,
    #[serde(default)]
    pub remove_remote: bool,
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

/// `idbridge directory import`.
#[derive(Debug, Subcommand)]
pub enum DirectoryCommand {
    /// Apply a folder's users.csv (+ groups.csv, user_groups.csv) to an SFTP directory as one
    /// snapshot, with a progress bar (the server must be stopped: the store is single-process).
    Import {
        /// The directory id (`directory_...`), or the key of its `[[directories]]` entry.
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
    // Works before the first start: the file's declarations are applied first.
    let offline = crate::feeds::Offline::prepare(config)?;
    let id = offline.directory_id(&id, crate::directories::SFTP_TYPES)?;
    let mut p = Processor::new(offline.engine.clone());
    // The directory's own guard, when it has a feed.
    if let Some(rec) = offline
        .feeds
        .get(&id)?
        .filter(|r| r.kind == idbridge_directory::feeds::FeedKind::Sftp)
    {
        p.policy = crate::feeds::sftp_settings(&rec)?.policy();
    }
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
