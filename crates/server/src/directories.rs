//! `idbridge directory create|list|delete|rotate-token` and the `[[directories]]` declared in
//! the config file (applied idempotently at start-up, like declared organizations).
//!
//! The CLI works on the data directory directly (the server must be stopped: the store is
//! single-process), through the same directory engine the server uses.

use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use idbridge_directory::{Deactivation, DirectoryEngine, DirectorySettings, EngineError};
use idbridge_store::{ChangeSet, Store};
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
    /// LDAP sync commands.
    #[command(flatten)]
    Ldap(crate::ldap::DirectoryCommand),
    /// SFTP CSV import.
    #[command(flatten)]
    Sftp(crate::sftp_cli::DirectoryCommand),
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
        Ok(())
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
fn resolve_org(store: &dyn Store, org: &str) -> anyhow::Result<String> {
    if org.starts_with("org_") {
        return Ok(org.to_owned());
    }
    store
        .get(idbridge_api::tables::ORG_BY_EXTERNAL_ID, org)?
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| anyhow::anyhow!("no organization with external_id {org:?}"))
}

/// What applying one declared directory did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub id: String,
    pub created: bool,
    /// A generated token to show once (created without a configured token).
    pub new_token: Option<String>,
}

/// Creates the declared directory if its key is unknown (or its directory was deleted), and
/// (re)sets the configured token. Idempotent.
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
    let (id, created, generated) = match existing {
        Some(rec) => (rec.directory.id, false, None),
        None => {
            let org = resolve_org(store.as_ref(), &d.organization)?;
            let ty = d.directory_type.trim().to_ascii_lowercase();
            let (rec, generated) = engine.create_directory(&org, &d.name, &ty, d.settings())?;
            let mut cs = ChangeSet::new();
            cs.put(
                DECLARED_TABLE,
                d.key.clone(),
                rec.directory.id.as_bytes().to_vec(),
            );
            store.commit(cs)?;
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

/// Runs `idbridge directory ...`.
pub fn run(config: &Config, command: DirectoryCommand) -> anyhow::Result<()> {
    let command = match command {
        DirectoryCommand::Ldap(c) => return crate::ldap::run(config, c),
        DirectoryCommand::Sftp(c) => return crate::sftp_cli::run(config, c),
        other => other,
    };
    let store = crate::open_store(config)?;
    let engine = DirectoryEngine::new(Arc::clone(&store));
    let public_url = config.public_url();
    match command {
        DirectoryCommand::Create {
            organization,
            name,
            directory_type,
            keep_inactive,
        } => {
            let org = resolve_org(store.as_ref(), &organization)?;
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
            let org = organization
                .map(|o| resolve_org(store.as_ref(), &o))
                .transpose()?;
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
        DirectoryCommand::Ldap(_) | DirectoryCommand::Sftp(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use idbridge_model::tag::OrganizationTag;
    use idbridge_model::{new_id, IdPrefix, Organization, Timestamp};
    use idbridge_store::SledStore;
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

    #[test]
    fn apply_one_is_idempotent_and_sets_the_configured_token() {
        let store: Arc<dyn Store> =
            Arc::new(SledStore::open_ephemeral().unwrap_or_else(|e| panic!("{e}")));
        let org = new_id(IdPrefix::Organization);
        let now = Timestamp::now();
        let rec = Organization {
            object: OrganizationTag,
            id: org.clone(),
            name: "Acme".into(),
            domains: Vec::new(),
            metadata: Default::default(),
            external_id: Some("acme".into()),
            stripe_customer_id: None,
            allow_profiles_outside_organization: false,
            created_at: now,
            updated_at: now,
        };
        let mut cs = ChangeSet::new();
        cs.put_json("organizations", &org, &rec)
            .unwrap_or_else(|e| panic!("{e}"));
        cs.put(
            idbridge_api::tables::ORG_BY_EXTERNAL_ID,
            "acme",
            org.as_bytes().to_vec(),
        );
        store.commit(cs).unwrap_or_else(|e| panic!("{e}"));
        let engine = DirectoryEngine::new(store.clone());
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
}
