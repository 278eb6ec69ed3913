//! LDAP / Active Directory pull sync in the binary: the `[[ldap_directories]]` config section,
//! the background schedulers started by `serve`, and `idbridge directory sync <id>`.
//!
//! ```toml
//! [[directories]]
//! key = "corp-ad"
//! organization = "acme"
//! name = "Corp AD"
//! type = "ldap"
//!
//! [[ldap_directories]]
//! directory = "corp-ad"   # a [[directories]] key, or: directory_id = "directory_01H..."
//! full_sync_interval_secs = 3600
//! delta_sync_interval_secs = 300
//! [ldap_directories.ldap]
//! url = "ldaps://dc1.corp.example:636"
//! ca_file = "/etc/idbridge/corp-ca.pem"
//! flavor = "active_directory"
//! bind_dn = "CN=idbridge,OU=Service,DC=corp,DC=example"
//! bind_password_file = "/etc/idbridge/ldap.pw"
//! user_base_dns = ["OU=Staff,DC=corp,DC=example"]
//! ```

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use idbridge_ldap::{LdapSettings, LdapSource, NoProgress, Progress, SyncKind, Syncer};
use serde::Deserialize;

use crate::config::Config;
use crate::directories::DeclaredDirectory;

fn default_full() -> u64 {
    3600
}
fn default_delta() -> u64 {
    300
}

/// One `[[ldap_directories]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LdapDirectoryConfig {
    /// The engine directory (type `ldap`) this source feeds: created with
    /// `POST /admin/directories` ... (exactly one of this and `directory`). Filled in from
    /// `directory` at start-up ([`crate::directories::resolve_references`]).
    pub directory_id: Option<String>,
    /// ... or the key of a `[[directories]]` entry of type `ldap` (created at start-up).
    pub directory: Option<String>,
    /// Seconds between full syncs (the only runs that see deletions).
    #[serde(default = "default_full")]
    pub full_sync_interval_secs: u64,
    /// Seconds between delta syncs.
    #[serde(default = "default_delta")]
    pub delta_sync_interval_secs: u64,
    /// Connection, mapping and guard settings.
    pub ldap: LdapSettings,
}

impl LdapDirectoryConfig {
    /// The directory id (empty while a `directory` key is not resolved yet).
    pub fn id(&self) -> &str {
        self.directory_id.as_deref().unwrap_or_default()
    }

    /// The runner's view.
    pub fn source(&self) -> LdapSource {
        LdapSource {
            directory_id: self.id().to_owned(),
            settings: self.ldap.clone(),
        }
    }

    /// Checks the settings against the declared directories (returns the failing key and why).
    pub fn validate(
        &self,
        i: usize,
        declared: &[DeclaredDirectory],
    ) -> Result<(), (String, String)> {
        let key = |k: &str| format!("ldap_directories[{i}].{k}");
        crate::directories::check_reference(
            &key,
            self.directory_id.as_deref(),
            self.directory.as_deref(),
            declared,
            crate::directories::LDAP_TYPES,
        )?;
        if self.full_sync_interval_secs == 0 || self.delta_sync_interval_secs == 0 {
            return Err((
                key("full_sync_interval_secs"),
                "intervals must be at least 1".into(),
            ));
        }
        self.ldap
            .validate()
            .map(|_| ())
            .map_err(|e| (key("ldap"), e.to_string()))
    }
}

/// Validates every `[[ldap_directories]]` entry (called from `Config::validate`).
pub fn validate_all(
    dirs: &[LdapDirectoryConfig],
    declared: &[DeclaredDirectory],
) -> Result<(), (String, String)> {
    let mut seen = std::collections::HashSet::new();
    for (i, d) in dirs.iter().enumerate() {
        d.validate(i, declared)?;
        let (field, name) = match (&d.directory_id, &d.directory) {
            (Some(id), _) => ("directory_id", id),
            (None, Some(key)) => ("directory", key),
            (None, None) => continue,
        };
        if !seen.insert((field, name)) {
            return Err((
                format!("ldap_directories[{i}].{field}"),
                "declared twice".into(),
            ));
        }
    }
    Ok(())
}

/// `idbridge directory ...`
#[derive(Debug, Subcommand)]
pub enum DirectoryCommand {
    /// Run one LDAP sync in the foreground (the server must be stopped: the store is
    /// single-process). Prints a summary; exits non-zero when the run failed or was refused.
    Sync {
        /// The directory id, or the key of its `[[directories]]` entry (works before the
        /// first start: the file's declarations are applied first).
        id: String,
        /// A delta run instead of a full one.
        #[arg(long)]
        delta: bool,
        /// Confirm a deletion the mass-deletion guard stopped, then run a full sync.
        #[arg(long, conflicts_with = "delta")]
        confirm_deletion: bool,
    },
}

/// A spinner on a terminal (entries read per phase); nothing otherwise.
struct Bar(indicatif::ProgressBar);

impl Progress for Bar {
    fn phase(&self, name: &str, total: Option<u64>) {
        self.0.set_position(0);
        if let Some(t) = total {
            self.0.set_length(t);
        }
        self.0.set_message(name.to_owned());
    }
    fn inc(&self, n: u64) {
        self.0.inc(n);
    }
}

/// Runs the `directory` subcommand.
pub fn run(config: &Config, command: DirectoryCommand) -> anyhow::Result<()> {
    let DirectoryCommand::Sync {
        id,
        delta,
        confirm_deletion,
    } = command;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // Works before the first start: the file's declarations are applied first.
    let offline = crate::feeds::Offline::prepare(config)?;
    let id = offline.directory_id(&id, crate::directories::LDAP_TYPES)?;
    let rec = offline.feed(&id, idbridge_directory::feeds::FeedKind::Ldap)?;
    let (source, _) = crate::feeds::ldap_source(&offline.feeds, &rec)?;
    let engine = offline.engine.clone();
    let syncer = Syncer::new(engine);
    if confirm_deletion && syncer.confirm_deletion(&id)?.is_none() {
        anyhow::bail!("nothing to confirm: no sync of {id} is waiting for a deletion confirmation");
    }
    let progress: Arc<dyn Progress> = if std::io::stderr().is_terminal() {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg}: {pos} entries ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        pb.enable_steady_tick(Duration::from_millis(120));
        Arc::new(Bar(pb))
    } else {
        Arc::new(NoProgress)
    };
    let kind = if delta {
        SyncKind::Delta
    } else {
        SyncKind::Full
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(syncer.run(&source, kind, progress.clone()));
    progress.phase("done", None);
    match result {
        Ok(r) => {
            println!(
                "{} sync of {id}: ok in {:.1}s — read {} users, {} groups; users +{} ~{} -{}; \
                 groups changed {}; memberships changed {}; {} events",
                if r.kind == Some(SyncKind::Delta) {
                    "delta"
                } else {
                    "full"
                },
                r.duration_ms as f64 / 1000.0,
                r.users_read,
                r.groups_read,
                r.created,
                r.updated,
                r.deleted,
                r.groups_changed,
                r.memberships_changed,
                r.events
            );
            Ok(())
        }
        Err(idbridge_ldap::SyncError::Guard(g)) => anyhow::bail!(
            "sync of {id} refused, nothing applied: {g}. Check the base DNs and filters; if the \
             deletion is intended, run again with --confirm-deletion (or POST \
             /admin/directories/{id}/sync/confirm while the server runs)"
        ),
        Err(e) => Err(anyhow::anyhow!("sync of {id} failed, nothing applied: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_parses_and_validates() {
        let text = r#"
[[ldap_directories]]
directory_id = "directory_01HZ"
[ldap_directories.ldap]
url = "ldaps://dc.example:636"
flavor = "active_directory"
bind_dn = "CN=svc,DC=example"
bind_password_env = "LDAP_PW"
user_base_dns = ["OU=Staff,DC=example"]
"#;
        let cfg = Config::from_toml(text, std::path::Path::new("t.toml")).expect("parses");
        let d = &cfg.ldap_directories[0];
        assert_eq!(d.full_sync_interval_secs, 3600);
        assert_eq!(d.delta_sync_interval_secs, 300);
        assert_eq!(d.ldap.flavor, idbridge_ldap::Flavor::ActiveDirectory);
        let plain = text.replace("ldaps://dc.example:636", "ldap://dc.example");
        let err = Config::from_toml(&plain, std::path::Path::new("t.toml"))
            .expect_err("plain ldap refused");
        assert!(
            err.to_string().contains("ldap_directories[0].ldap"),
            "{err}"
        );
    }
}
