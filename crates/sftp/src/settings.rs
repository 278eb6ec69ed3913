//! The stored configuration of one SFTP directory's feed (`idbridge_directory::feeds`, kind
//! `sftp`): a push account (username + authorized keys) on the embedded server, or a pull
//! from the customer's server, and the directory's own mass-deletion guard. The admin API takes
//! it as JSON and `[[sftp_directories]]` config entries seed it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::pull::HostKeyPin;

/// Name of the sealed pull private key (OpenSSH PEM) in the feed record.
pub const PRIVATE_KEY_SECRET: &str = "pull.private_key";

/// Default pull port (also the config file's).
pub fn default_port() -> u16 {
    22
}
/// Default remote folder.
pub fn default_remote_dir() -> String {
    ".".into()
}
/// Default seconds between pulls.
pub fn default_interval() -> u64 {
    1800
}

/// Pull settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullSettings {
    /// The customer's server.
    pub host: String,
    /// Its port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Our login there.
    pub username: String,
    /// Our private key, from a file (or sealed in the record, given as `private_key` through
    /// the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_file: Option<PathBuf>,
    /// The server's key: `ssh-ed25519 AAAA...` or `SHA256:...`.
    pub host_key: String,
    /// Remote folder holding the CSV files.
    #[serde(default = "default_remote_dir")]
    pub remote_dir: String,
    /// Seconds between pulls.
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    /// Delete the remote files after a successful fetch.
    #[serde(default)]
    pub remove_remote: bool,
}

/// One SFTP directory's feed: push (`username` + `authorized_keys`) or `pull`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftpFeed {
    /// Push: login on the embedded server (also the inbox folder name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Push: authorized public keys, one OpenSSH line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorized_keys: Vec<String>,
    /// Pull settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<PullSettings>,
    /// Largest share of users one delivery may remove (default 0.10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delete_ratio: Option<f64>,
}

impl SftpFeed {
    /// Checks the entry; `has_private_key` says whether a sealed pull key is (or will be) set.
    /// Returns the failing field (relative to the entry) and why.
    pub fn validate(&self, has_private_key: bool) -> Result<(), (String, String)> {
        match (&self.username, &self.pull) {
            (Some(_), Some(_)) => {
                return Err(("pull".into(), "use either username (push) or pull".into()))
            }
            (None, None) => {
                return Err(("username".into(), "required (or a pull table)".into()));
            }
            (Some(u), None) => {
                if crate::jail::components(u).map(|c| c.len()) != Ok(1) {
                    return Err((
                        "username".into(),
                        "letters, digits, . _ - + @ only; not starting with '.'".into(),
                    ));
                }
                if self.authorized_keys.is_empty() {
                    return Err((
                        "authorized_keys".into(),
                        "at least one key is required".into(),
                    ));
                }
                for (k, line) in self.authorized_keys.iter().enumerate() {
                    crate::parse_authorized_key(line)
                        .map_err(|e| (format!("authorized_keys[{k}]"), e.to_string()))?;
                }
            }
            (None, Some(p)) => {
                if !self.authorized_keys.is_empty() {
                    return Err((
                        "authorized_keys".into(),
                        "is for push accounts (username); a pull has none".into(),
                    ));
                }
                if p.host.trim().is_empty() {
                    return Err(("pull.host".into(), "must not be empty".into()));
                }
                HostKeyPin::parse(&p.host_key)
                    .map_err(|e| ("pull.host_key".into(), e.to_string()))?;
                if p.interval_secs == 0 {
                    return Err(("pull.interval_secs".into(), "must be at least 1".into()));
                }
                match (&p.private_key_file, has_private_key) {
                    (Some(_), true) => {
                        return Err((
                            "pull.private_key".into(),
                            "set private_key_file or private_key, not both".into(),
                        ))
                    }
                    (None, false) => {
                        return Err((
                            "pull.private_key".into(),
                            "required: private_key (OpenSSH PEM, stored sealed) or \
                             private_key_file"
                                .into(),
                        ))
                    }
                    _ => {}
                }
            }
        }
        if let Some(r) = self.max_delete_ratio {
            if !(0.0..=1.0).contains(&r) {
                return Err(("max_delete_ratio".into(), "must be between 0 and 1".into()));
            }
        }
        Ok(())
    }

    /// The mass-deletion guard this directory's deliveries are applied with.
    pub fn policy(&self) -> idbridge_directory::SnapshotPolicy {
        let mut p = idbridge_directory::SnapshotPolicy::default();
        if let Some(r) = self.max_delete_ratio {
            p.max_delete_ratio = r;
        }
        p
    }
}
