//! `idbridge directory create|list|delete|rotate-token` and the `[[directories]]` declared in
//! the config file (applied idempotently at start-up, like declared organizations).
//!
//! The CLI works on the data directory directly (the server must be stopped: the store is
//! single-process), through the same directory engine the server uses.

use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use idbridge_directory::{Deactivation, DirectoryEngine, DirectorySettings, EngineError};
use idbridge_sso::organizations::Organizations;
use idbridge_store::Store;
use serde::Deserialize;

use crate::config::Config;

/// Server-owned table: declared directory `key` → directory id (so a restart finds the
/// directory it created; a directory deleted by an admin is created again).
pub const DECLARED_TABLE: &str = "declared_directories";

/// `idbridge directory ...`
#[derive(Debug, Subcommand)]
pub enum DirectoryCommand {
    /// Create a directory; for SCIM types prints the SCIM endpoint and bearer token, once.
    Create {
        /// Organization id (`org_...`) or the external_id of an organization.
        #[arg(long)]
        organization: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Directory type, e.g. "okta scim v2.0", "azure scim v2.0", "generic scim v2.0".
        #[arg(long = "type")]
        directory_type: String,
        /// Keep deactivated users as `inactive` instead of deleting them.
        #[arg(long)]
        keep_inactive: bool,
    },
    /// List directories (id, type, state, organization, name).
    List {
        /// Only this organization's (id or external_id).
        #[arg(long)]
        organization: Option<String>,
    },
    /// Delete a directory and everything in it (one `dsync.deleted` event).
    Delete { id: String },
    /// Issue a new SCIM bearer token (printed once); the old one stops working.
    RotateToken { id: String },
    /// Review (and with --yes apply) a deletion the mass-deletion guard stopped, for LDAP and
    /// SFTP directories: prints the count and the first users it would remove. The server
    /// must be stopped (while it runs: GET|POST /admin/directories/{id}/pending_deletion).
    ConfirmDeletion {
        /// The directory id, or the key of its `[[directories]]` entry.
        id: String,
        /// Apply it (LDAP: a full sync past the guard; SFTP: the stopped delivery's files).
        #[arg(long)]
        yes: bool,
        /// How many users to list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// LDAP sync commands.
    #[command(flatten)]
    Ldap(crate::ldap::DirectoryCommand),
    /// SFTP CSV import.
    #[command(flatten)]
    Sftp(crate::sftp_cli::DirectoryCommand),
    /// SCIM push into a remote SCIM endpoint (a WorkOS "Custom SCIM v2.0" directory), through
    /// the running server's admin API: `set|show|delete|reconcile <id>`.
    Forward {
        #[command(subcommand)]
        command: crate::forward_cli::ForwardCommand,
    },
}

/// `[[directories]]`: a directory created at start-up when absent.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeclaredDirectory {
    /// Stable key of this entry (idempotency): the same key is the same directory.
    pub key: String,
    /// Organization id (`org_...`) or the `external_id` of a (declared) organization.
    pub organization: String,
    pub name: String,
    #[serde(rename = "type")]
    pub directory_type: String,
    /// `delete_user` (default, as WorkOS) or `keep_inactive`.
    #[serde(default)]
    pub deactivation: Deactivation,
    /// Custom attribute name → source path (e.g. the enterprise extension's `department`).
    #[serde(default)]
    pub attribute_map: std::collections::BTreeMap<String, String>,
    /// SCIM token from this environment variable (pre-registered in the IdP).
    pub scim_token_env: Option<String>,
    /// SCIM token from this file (first line; mode 0600 advised).
    pub scim_token_file: Option<std::path::PathBuf>,
    /// SCIM push of this directory into a remote SCIM endpoint (see `crate::forward_cli`).
    #[serde(default)]
    pub forward: Option<crate::forward_cli::ForwardConfig>,
}

impl DeclaredDirectory {
    /// Checks what can be checked without the store.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.key.trim().is_empty() || self.key.contains('/') {
            return Err(("key", "must be non-empty and contain no '/'".into()));
        }
        if self.name.trim().is_empty() {
            return Err(("name", "must not be empty".into()));
        }
        let t = self.directory_type.trim().to_ascii_lowercase();
        if !idbridge_api::directories_admin::DIRECTORY_TYPES.contains(&t.as_str()) {
            return Err(("type", format!("unknown directory type {t:?}")));
        }
        if self.scim_token_env.is_some() && self.scim_token_file.is_some() {
            return Err((
                "scim_token_env",
                "set scim_token_env or scim_token_file, not both".into(),
            ));
        }
        if (self.scim_token_env.is_some() || self.scim_token_file.is_some()) && !t.contains("scim")
        {
            return Err(("type", "only SCIM directories have a token".into()));
        }
        if let Some(f) = &self.forward {
            f.validate()?;
        }
        Ok(())
    }

    /// What this entry declares about an existing directory ([`crate::declared`]).
    fn seed(&self) -> anyhow::Result<crate::declared::Seed> {
        crate::declared::Seed::of(
            "directory",
            &self.key,
            &serde_json::json!({
                "name": self.name,
                "deactivation": self.deactivation,
                "attribute_map": self.attribute_map,
            }),
        )
    }

    fn settings(&self) -> DirectorySettings {
        DirectorySettings {
            deactivation: self.deactivation,
            attribute_map: self.attribute_map.clone(),
            ..DirectorySettings::default()
        }
    }

    /// The pre-registered token, if configured.
    fn token(&self) -> anyhow::Result<Option<String>> {
        if let Some(var) = &self.scim_token_env {
            let t = std::env::var(var)
                .with_context(|| format!("environment variable {var} is not set"))?;
            return Ok(Some(t.trim().to_owned()));
        }
        if let Some(path) = &self.scim_token_file {
            let t = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let line = t.lines().next().unwrap_or_default().trim().to_owned();
            return Ok(Some(line));
        }
        Ok(None)
    }
}

/// An organization id from an id or an external_id.
fn resolve_org(store: &Arc<dyn Store>, org: &str) -> anyhow::Result<String> {
    Organizations::new(store.clone())
        .resolve(org)?
        .map(|o| o.id)
        .ok_or_else(|| anyhow::anyhow!("no organization with id or external_id {org:?}"))
}

/// What applying one declared directory did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub id: String,
    pub created: bool,
    /// A generated token to show once (created without a configured token).
    pub new_token: Option<String>,
}

/// Creates the declared directory if its key is unknown (or its directory was deleted), applies
/// a changed entry's name and settings to the existing one, and (re)sets the configured token.
/// Idempotent.
pub fn apply_one(engine: &DirectoryEngine, d: &DeclaredDirectory) -> anyhow::Result<Applied> {
    let _span = tracing::info_span!("declared_directory", key = %d.key).entered();
    let store = engine.store().clone();
    let token = d.token()?;
    let known = store
        .get(DECLARED_TABLE, &d.key)?
        .and_then(|b| String::from_utf8(b).ok());
    let existing = match known {
        Some(id) => match engine.get_directory(&id) {
            Ok(rec) => Some(rec),
            Err(EngineError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let seed = d.seed()?;
    let (id, created, generated) = match existing {
        Some(rec) => {
            let ty = d.directory_type.trim().to_ascii_lowercase();
            if rec.directory.directory_type != ty {
                anyhow::bail!(
                    "the file says type {ty:?} but directory {} was created as {:?}; a \
                     directory's type cannot change: give the entry a new key (a new directory) \
                     or restore the type",
                    rec.directory.id,
                    rec.directory.directory_type
                );
            }
            if seed.changed(store.as_ref())? {
                // The entry changed since it was last applied (or was never recorded): the file
                // wins for what it declares; role_mode and the rest stay as they are.
                let settings = DirectorySettings {
                    deactivation: d.deactivation,
                    attribute_map: d.attribute_map.clone(),
                    ..rec.settings.clone()
                };
                let (_, changed) =
                    engine.update_directory(&rec.directory.id, Some(&d.name), Some(settings))?;
                seed.record(store.as_ref())?;
                if changed {
                    tracing::info!(directory_id = %rec.directory.id, key = %d.key, "declared directory updated from the file");
                }
            }
            (rec.directory.id, false, None)
        }
        None => {
            let org = resolve_org(&store, &d.organization)?;
            let ty = d.directory_type.trim().to_ascii_lowercase();
            // The directory and its declared key are one commit.
            let (rec, generated) =
                engine.create_directory_with(&org, &d.name, &ty, d.settings(), |rec, cs| {
                    cs.put(
                        DECLARED_TABLE,
                        d.key.clone(),
                        rec.directory.id.as_bytes().to_vec(),
                    );
                    seed.stage(cs);
                    Ok(())
                })?;
            (rec.directory.id, true, generated)
        }
    };
    let new_token = match token {
        Some(t) => {
            engine.set_scim_token(&id, &t)?;
            None
        }
        None => generated,
    };
    Ok(Applied {
        id,
        created,
        new_token,
    })
}

/// Applies every `[[directories]]` entry; prints generated tokens once (stdout).
pub fn apply_declared(
    engine: &DirectoryEngine,
    config: &Config,
    public_url: &str,
) -> anyhow::Result<()> {
    for d in &config.directories {
        let applied =
            apply_one(engine, d).with_context(|| format!("declared directory {:?}", d.key))?;
        tracing::info!(id = %applied.id, key = %d.key, created = applied.created, "declared directory applied");
        if let Some(t) = applied.new_token {
            println!(
                "IDBRIDGE_SCIM[{}]: endpoint={} token={t}",
                d.key,
                idbridge_scim::router::endpoint_url(public_url, &applied.id)
            );
            eprintln!(
                "Created directory {} ({}); its SCIM token is printed above once. Set \
                 scim_token_env or scim_token_file to choose it yourself.",
                applied.id, d.key
            );
        }
    }
    Ok(())
}

/// Directory types an `[[ldap_directories]]` entry may feed.
pub const LDAP_TYPES: &[&str] = &[idbridge_ldap::DIRECTORY_TYPE];
/// Directory types an `[[sftp_directories]]` entry may feed.
pub const SFTP_TYPES: &[&str] = &["sftp", "sftp workday"];

/// Checks how a feed entry (`[[ldap_directories]]`, `[[sftp_directories]]`) names its
/// directory: exactly one of `directory_id` (an existing directory) and `directory` (the key
/// of a `[[directories]]` entry of an accepted type, so a fresh appliance can be configured
/// from the file alone). `at` turns a field name into the entry's key path.
pub fn check_reference(
    at: &dyn Fn(&str) -> String,
    directory_id: Option<&str>,
    directory: Option<&str>,
    declared: &[DeclaredDirectory],
    types: &[&str],
) -> Result<(), (String, String)> {
    match (directory_id, directory) {
        (Some(_), Some(_)) => Err((
            at("directory"),
            "set either directory_id or directory, not both".into(),
        )),
        (None, None) => Err((
            at("directory_id"),
            "required: directory_id = \"directory_...\", or directory = \"<key of a \
             [[directories]] entry>\""
                .into(),
        )),
        (Some(id), None) if id.trim().is_empty() => {
            Err((at("directory_id"), "must not be empty".into()))
        }
        (Some(_), None) => Ok(()),
        (None, Some(key)) => match declared.iter().find(|d| d.key == key) {
            None => Err((
                at("directory"),
                format!("no [[directories]] entry has key {key:?}"),
            )),
            Some(d) => {
                let t = d.directory_type.trim().to_ascii_lowercase();
                if types.contains(&t.as_str()) {
                    Ok(())
                } else {
                    Err((
                        at("directory"),
                        format!(
                            "[[directories]] entry {key:?} has type {t:?}; this section feeds \
                             only {types:?}"
                        ),
                    ))
                }
            }
        },
    }
}

/// The id of the directory created for declared `key`, checked to exist and to have one of
/// `types` (an admin may have deleted it, or an older file declared it with another type).
pub fn resolve_declared(
    engine: &DirectoryEngine,
    key: &str,
    types: &[&str],
) -> anyhow::Result<String> {
    let id = engine
        .store()
        .get(DECLARED_TABLE, key)?
        .and_then(|b| String::from_utf8(b).ok())
        .with_context(|| {
            format!("the declared directory {key:?} has not been created (no [[directories]] entry with this key was applied)")
        })?;
    let rec = engine
        .get_directory(&id)
        .with_context(|| format!("the declared directory {key:?} ({id})"))?;
    let t = rec.directory.directory_type;
    if !types.contains(&t.as_str()) {
        anyhow::bail!(
            "the declared directory {key:?} ({id}) has type {t:?}; this section feeds only {types:?}"
        );
    }
    Ok(id)
}

/// Fills in `directory_id` of every `[[ldap_directories]]` / `[[sftp_directories]]` entry that
/// names a declared directory by key. `serve` runs it after [`apply_declared`]; the CLI runs it
/// on what an earlier start applied.
pub fn resolve_references(engine: &DirectoryEngine, config: &mut Config) -> anyhow::Result<()> {
    for (i, d) in config.ldap_directories.iter_mut().enumerate() {
        if let Some(key) = &d.directory {
            let id = resolve_declared(engine, key, LDAP_TYPES)
                .with_context(|| format!("ldap_directories[{i}].directory = {key:?}"))?;
            d.directory_id = Some(id);
        }
    }
    for (i, d) in config.sftp_directories.iter_mut().enumerate() {
        if let Some(key) = &d.directory {
            let id = resolve_declared(engine, key, SFTP_TYPES)
                .with_context(|| format!("sftp_directories[{i}].directory = {key:?}"))?;
            d.directory_id = Some(id);
        }
    }
    Ok(())
}

/// Runs `idbridge directory ...`.
pub fn run(config: &Config, command: DirectoryCommand) -> anyhow::Result<()> {
    let command = match command {
        DirectoryCommand::Ldap(c) => return crate::ldap::run(config, c),
        DirectoryCommand::Sftp(c) => return crate::sftp_cli::run(config, c),
        DirectoryCommand::Forward { command } => return crate::forward_cli::run(config, command),
        DirectoryCommand::ConfirmDeletion { id, yes, limit } => {
            return confirm_deletion(config, &id, yes, limit)
        }
        other => other,
    };
    let store = crate::open_store(config)?;
    let engine = crate::directory_engine(Arc::clone(&store));
    let public_url = config.public_url();
    match command {
        DirectoryCommand::Create {
            organization,
            name,
            directory_type,
            keep_inactive,
        } => {
            let org = resolve_org(&store, &organization)?;
            let mut body = serde_json::Map::new();
            body.insert("organization_id".into(), org.into());
            body.insert("name".into(), name.into());
            body.insert("type".into(), directory_type.into());
            if keep_inactive {
                body.insert(
                    "settings".into(),
                    serde_json::json!({"deactivation": "keep_inactive"}),
                );
            }
            let (org, name, ty, settings) = idbridge_api::directories_admin::parse_create(&body)
                .map_err(|e| anyhow::anyhow!("{}", e.body()))?;
            let (rec, token) = engine.create_directory(&org, &name, &ty, settings)?;
            println!("id:       {}", rec.directory.id);
            if let Some(t) = token {
                println!(
                    "endpoint: {}",
                    idbridge_scim::router::endpoint_url(&public_url, &rec.directory.id)
                );
                println!("token:    {t}");
                eprintln!("store the token now: it is kept only as a hash and not shown again");
            }
        }
        DirectoryCommand::List { organization } => {
            let org = organization.map(|o| resolve_org(&store, &o)).transpose()?;
            let mut cursor = idbridge_directory::Cursor::None;
            loop {
                let page = engine.list_directories(
                    org.as_deref(),
                    &idbridge_directory::PageRequest {
                        limit: 100,
                        order: idbridge_directory::Order::Asc,
                        cursor,
                    },
                )?;
                for rec in &page.data {
                    let d = &rec.directory;
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        d.id,
                        d.directory_type,
                        serde_json::to_value(d.state)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        d.organization_id,
                        d.name
                    );
                }
                match page.after {
                    Some(a) => cursor = idbridge_directory::Cursor::After(a),
                    None => break,
                }
            }
        }
        DirectoryCommand::Delete { id } => {
            engine.delete_directory(&id)?;
            // Its LDAP/SFTP feed goes with it (no secret is opened: no key needed).
            idbridge_directory::feeds::FeedStore::new(store.clone(), None).delete(&id)?;
            println!("deleted {id}");
        }
        DirectoryCommand::RotateToken { id } => {
            let token = engine.rotate_scim_token(&id)?;
            println!(
                "endpoint: {}",
                idbridge_scim::router::endpoint_url(&public_url, &id)
            );
            println!("token:    {token}");
            eprintln!("the previous token no longer works");
        }
        DirectoryCommand::Ldap(_)
        | DirectoryCommand::Sftp(_)
        | DirectoryCommand::Forward { .. }
        | DirectoryCommand::ConfirmDeletion { .. } => {}
    }
    Ok(())
}

/// `idbridge directory confirm-deletion <id|key> [--yes]`.
fn confirm_deletion(config: &Config, id: &str, yes: bool, limit: usize) -> anyhow::Result<()> {
    let offline = crate::feeds::Offline::prepare(config)?;
    let all: Vec<&str> = LDAP_TYPES.iter().chain(SFTP_TYPES).copied().collect();
    let id = offline.directory_id(id, &all)?;
    let ty = offline.engine.get_directory(&id)?.directory.directory_type;
    if LDAP_TYPES.contains(&ty.as_str()) {
        let state = idbridge_ldap::StateStore::new(offline.engine.store().clone()).load(&id)?;
        let Some(g) = state.pending_guard else {
            anyhow::bail!(
                "nothing to confirm: no sync of {id} was stopped by the mass-deletion guard"
            );
        };
        println!(
            "pending:   a full sync of {id} at {} would delete {} of {} users (threshold {})",
            g.at, g.would_delete, g.total, g.threshold
        );
        for id in g.sample.iter().take(limit) {
            if let Ok(u) = offline.engine.get_user(Some(&state.directory_id), id) {
                println!(
                    "  {}\t{}\t{}",
                    u.user.id,
                    u.user.idp_id,
                    u.user.email.as_deref().unwrap_or("")
                );
            }
        }
        if g.would_delete > g.sample.len().min(limit) as u64 {
            println!(
                "  ... and {} more",
                g.would_delete - g.sample.len().min(limit) as u64
            );
        }
        if !yes {
            println!("run again with --yes to apply it (a full sync past the guard)");
            return Ok(());
        }
        drop(offline);
        return crate::ldap::run(
            config,
            crate::ldap::DirectoryCommand::Sync {
                id,
                delta: false,
                confirm_deletion: true,
            },
        );
    }
    let p = idbridge_sftp::Processor::new(offline.engine.clone());
    let Some(pd) = idbridge_sftp::pending::pending(&p, &id, limit)? else {
        anyhow::bail!("nothing to confirm: the newest delivery of {id} was not stopped by the mass-deletion guard (or its files are gone)");
    };
    println!(
        "pending:   delivery {} at {} would remove {} of {} users (threshold {})",
        pd.delivery_id, pd.at, pd.would_delete, pd.total, pd.threshold
    );
    for u in &pd.sample {
        println!(
            "  {}\t{}\t{}",
            u.id,
            u.idp_id,
            u.email.as_deref().unwrap_or("")
        );
    }
    if pd.would_delete > pd.sample.len() as u64 {
        println!(
            "  ... and {} more",
            pd.would_delete - pd.sample.len() as u64
        );
    }
    if !yes {
        println!("run again with --yes to apply it");
        return Ok(());
    }
    let rec = idbridge_sftp::pending::confirm(&p, &id)?
        .with_context(|| format!("nothing to confirm for {id}"))?;
    println!("delivery:  {}", rec.id);
    println!("status:    {:?}", rec.status);
    if let Some(c) = rec.changes {
        println!(
            "changes:   users +{} ~{} -{}",
            c.users_created, c.users_updated, c.users_deleted
        );
    }
    match rec.status {
        idbridge_sftp::DeliveryStatus::Applied => Ok(()),
        _ => anyhow::bail!(
            "not applied: {}",
            idbridge_sftp::delivery::report_text(&rec)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idbridge_sso::organizations::NewOrganization;
    use idbridge_store::SqliteStore;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::from_toml(text, Path::new("t.toml"))
    }

    #[test]
    fn declared_directories_parse_and_validate() {
        let ok = parse(
            "[[directories]]\nkey = \"k\"\norganization = \"acme\"\nname = \"N\"\ntype = \"okta scim v2.0\"\ndeactivation = \"keep_inactive\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.directories[0].deactivation, Deactivation::KeepInactive);
        for (bad, key) in [
            ("[[directories]]\nkey = \"k\"\norganization = \"a\"\nname = \"N\"\ntype = \"pigeon\"\n", "directories[0].type"),
            ("[[directories]]\nkey = \"\"\norganization = \"a\"\nname = \"N\"\ntype = \"sftp\"\n", "directories[0].key"),
            ("[[directories]]\nkey = \"k\"\norganization = \"a\"\nname = \"N\"\ntype = \"sftp\"\nscim_token_env = \"X\"\n", "directories[0].type"),
            ("[[directories]]\nkey = \"k\"\norganization = \"a\"\nname = \"N\"\ntype = \"sftp\"\n[[directories]]\nkey = \"k\"\norganization = \"a\"\nname = \"M\"\ntype = \"sftp\"\n", "directories[1].key"),
            ("[[directories]]\nkey = \"k\"\norganization = \"a\"\nname = \"N\"\ntype = \"sftp\"\nbogus = 1\n", "directories[0]"),
        ] {
            match parse(bad) {
                Err(crate::config::ConfigError::Key { key: k, .. }) => {
                    assert!(k.starts_with(key), "{bad}: {k}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    const LDAP_SECTION: &str = "[ldap_directories.ldap]\nurl = \"ldaps://dc.example:636\"\nuser_base_dns = [\"ou=People,dc=example\"]\n";

    fn declared(key: &str, ty: &str) -> String {
        format!("[[directories]]\nkey = \"{key}\"\norganization = \"acme\"\nname = \"N\"\ntype = \"{ty}\"\n")
    }

    fn key_error(text: &str) -> (String, String) {
        match parse(text) {
            Err(crate::config::ConfigError::Key { key, message, .. }) => (key, message),
            other => panic!("{text}: expected a key error, got {other:?}"),
        }
    }

    #[test]
    fn feeds_name_exactly_one_directory_of_their_type() {
        // By key, for both feed kinds.
        let ok = parse(&format!(
            "{}{}[[ldap_directories]]\ndirectory = \"corp\"\n{LDAP_SECTION}\
             [[sftp_directories]]\ndirectory = \"hr\"\n[sftp_directories.pull]\nhost = \"h\"\n\
             username = \"u\"\nprivate_key_file = \"/k\"\nhost_key = \"SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"\n",
            declared("corp", "LDAP"),
            declared("hr", "sftp workday"),
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.ldap_directories[0].directory.as_deref(), Some("corp"));
        assert_eq!(ok.ldap_directories[0].id(), "");
        assert_eq!(ok.sftp_directories[0].directory.as_deref(), Some("hr"));
        // Both, neither, an unknown key, a declared directory of another type.
        let cases = [
            (
                format!("{}[[ldap_directories]]\ndirectory_id = \"directory_01H\"\ndirectory = \"corp\"\n{LDAP_SECTION}", declared("corp", "ldap")),
                "ldap_directories[0].directory",
                "not both",
            ),
            (
                format!("[[ldap_directories]]\n{LDAP_SECTION}"),
                "ldap_directories[0].directory_id",
                "directory = ",
            ),
            (
                format!("{}[[ldap_directories]]\ndirectory = \"corp-ad\"\n{LDAP_SECTION}", declared("corp", "ldap")),
                "ldap_directories[0].directory",
                "no [[directories]] entry has key \"corp-ad\"",
            ),
            (
                format!("{}[[ldap_directories]]\ndirectory = \"okta\"\n{LDAP_SECTION}", declared("okta", "okta scim v2.0")),
                "ldap_directories[0].directory",
                "okta scim v2.0",
            ),
            (
                format!("{}[[ldap_directories]]\ndirectory = \"corp\"\n{LDAP_SECTION}[[ldap_directories]]\ndirectory = \"corp\"\n{LDAP_SECTION}", declared("corp", "ldap")),
                "ldap_directories[1].directory",
                "declared twice",
            ),
            (
                format!("{}[[sftp_directories]]\ndirectory = \"corp\"\nusername = \"acme\"\nauthorized_keys = [\"x\"]\n", declared("corp", "ldap")),
                "sftp_directories[0].directory",
                "\"ldap\"",
            ),
            (
                "[[sftp_directories]]\nusername = \"acme\"\nauthorized_keys = [\"x\"]\n".to_owned(),
                "sftp_directories[0].directory_id",
                "required",
            ),
        ];
        for (text, want_key, want_msg) in cases {
            let (key, message) = key_error(&text);
            assert_eq!(key, want_key, "{text}");
            assert!(message.contains(want_msg), "{text}: {message}");
        }
    }

    /// A store with organization `acme` (by external id) and its engine.
    fn store_with_acme() -> (Arc<dyn Store>, DirectoryEngine) {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open_ephemeral().unwrap_or_else(|e| panic!("{e}")));
        let orgs = Organizations::new(store.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        runtime
            .block_on(orgs.create(NewOrganization {
                name: "Acme".into(),
                external_id: Some("acme".into()),
                ..NewOrganization::default()
            }))
            .unwrap_or_else(|e| panic!("{e}"));
        let engine = crate::directory_engine(store.clone());
        (store, engine)
    }

    fn engine_with_acme() -> DirectoryEngine {
        store_with_acme().1
    }

    #[test]
    fn references_resolve_to_the_applied_directory() {
        let engine = engine_with_acme();
        let text = format!(
            "{}[[ldap_directories]]\ndirectory = \"corp\"\n{LDAP_SECTION}\
             [[ldap_directories]]\ndirectory_id = \"directory_01HZ\"\n{LDAP_SECTION}",
            declared("corp", "ldap")
        );
        let mut config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        // Not applied yet (the CLI before the first start): a clear error naming the entry.
        let err = resolve_references(&engine, &mut config).expect_err("not applied yet");
        let chain = format!("{err:#}");
        assert!(
            chain.contains("ldap_directories[0].directory = \"corp\"")
                && chain.contains("has not been created"),
            "{chain}"
        );
        let applied = apply_one(&engine, &config.directories[0]).unwrap_or_else(|e| panic!("{e}"));
        resolve_references(&engine, &mut config).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.ldap_directories[0].id(), applied.id);
        assert_eq!(config.ldap_directories[0].source().directory_id, applied.id);
        // Entries with a directory_id are left as they are.
        assert_eq!(config.ldap_directories[1].id(), "directory_01HZ");
        // Resolving again (a restart) gives the same directory.
        resolve_references(&engine, &mut config).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.ldap_directories[0].id(), applied.id);
    }

    #[test]
    fn a_stored_directory_of_another_type_is_refused() {
        let engine = engine_with_acme();
        // An older file declared the key as SCIM; the store still maps it to that directory.
        let scim = parse(&declared("corp", "okta scim v2.0")).unwrap_or_else(|e| panic!("{e}"));
        let applied = apply_one(&engine, &scim.directories[0]).unwrap_or_else(|e| panic!("{e}"));
        let err = resolve_declared(&engine, "corp", LDAP_TYPES).expect_err("wrong type");
        let text = format!("{err:#}");
        assert!(
            text.contains(&applied.id) && text.contains("okta scim v2.0"),
            "{text}"
        );
        assert_eq!(
            resolve_declared(&engine, "corp", &["okta scim v2.0"])
                .unwrap_or_else(|e| panic!("{e}")),
            applied.id
        );
    }

    #[test]
    fn apply_one_is_idempotent_and_sets_the_configured_token() {
        let (_store, engine) = store_with_acme();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "preregistered-token-0123456789\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let d = DeclaredDirectory {
            key: "acme-okta".into(),
            organization: "acme".into(),
            name: "Acme Okta".into(),
            directory_type: "okta scim v2.0".into(),
            deactivation: Deactivation::DeleteUser,
            attribute_map: Default::default(),
            scim_token_env: None,
            scim_token_file: Some(token_file),
            forward: None,
        };
        let first = apply_one(&engine, &d).unwrap_or_else(|e| panic!("{e}"));
        assert!(first.created && first.new_token.is_none());
        let again = apply_one(&engine, &d).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (again.id.as_str(), again.created),
            (first.id.as_str(), false)
        );
        let authed = engine
            .authenticate_scim(&first.id, "preregistered-token-0123456789")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(authed.is_some());
        // Deleted by an admin: created again on the next start.
        engine
            .delete_directory(&first.id)
            .unwrap_or_else(|e| panic!("{e}"));
        let third = apply_one(&engine, &d).unwrap_or_else(|e| panic!("{e}"));
        assert!(third.created && third.id != first.id);
        // Without a configured token, a generated one is returned once.
        let d2 = DeclaredDirectory {
            key: "gen".into(),
            scim_token_file: None,
            ..d
        };
        let gen = apply_one(&engine, &d2).unwrap_or_else(|e| panic!("{e}"));
        assert!(gen.new_token.is_some());
        assert!(apply_one(&engine, &d2)
            .unwrap_or_else(|e| panic!("{e}"))
            .new_token
            .is_none());
    }

    #[test]
    fn a_changed_entry_updates_the_directory_and_an_unchanged_one_keeps_api_changes() {
        let (_store, engine) = store_with_acme();
        let mut d = DeclaredDirectory {
            key: "acme-okta".into(),
            organization: "acme".into(),
            name: "Acme Okta".into(),
            directory_type: "okta scim v2.0".into(),
            deactivation: Deactivation::DeleteUser,
            attribute_map: Default::default(),
            scim_token_env: None,
            scim_token_file: None,
            forward: None,
        };
        let first = apply_one(&engine, &d).unwrap_or_else(|e| panic!("{e}"));
        // An admin renames it through the API; the next start with the same file keeps that.
        engine
            .update_directory(&first.id, Some("Renamed by an admin"), None)
            .unwrap_or_else(|e| panic!("{e}"));
        apply_one(&engine, &d).unwrap_or_else(|e| panic!("{e}"));
        let rec = engine
            .get_directory(&first.id)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rec.directory.name, "Renamed by an admin");
        // The file changes: its values win, on the same directory.
        d.name = "Acme Okta (prod)".into();
        d.deactivation = Deactivation::KeepInactive;
        d.attribute_map
            .insert("department".into(), "department".into());
        let again = apply_one(&engine, &d).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (again.id.as_str(), again.created),
            (first.id.as_str(), false)
        );
        let rec = engine
            .get_directory(&first.id)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rec.directory.name, "Acme Okta (prod)");
        assert_eq!(rec.settings.deactivation, Deactivation::KeepInactive);
        assert_eq!(
            rec.settings
                .attribute_map
                .get("department")
                .map(String::as_str),
            Some("department")
        );
        // A type change is refused with what to do, and changes nothing.
        d.directory_type = "azure scim v2.0".into();
        let err = apply_one(&engine, &d).expect_err("type change");
        assert!(format!("{err:#}").contains("new key"), "{err:#}");
        let rec = engine
            .get_directory(&first.id)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rec.directory.directory_type, "okta scim v2.0");
    }
}
