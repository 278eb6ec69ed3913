//! The config file's `[idp]` section: the IdP settings plus the declared
//! `[[idp.service_providers]]` and `[[idp.oidc_clients]]`, applied at start through the same
//! parsers as `POST|PUT /admin/service_providers` and `/admin/oidc_clients`.
//!
//! An entry is keyed by its `key` and follows the rule of every declared entry
//! ([`crate::declared`]): the first start creates the SP or client, a later start with the
//! same entry leaves it alone (changes made through the admin API stay), and a start with a
//! changed entry applies it to the existing one. The server-owned table [`DECLARED_IDP_TABLE`]
//! remembers, per key, the id the entry made (ids are generated); the digest of the applied
//! entry is a [`crate::declared::Seed`]. A client secret comes only from an environment
//! variable or a file, never from the file's text, and never reaches a log line.

use std::path::PathBuf;

use anyhow::Context;
use idbridge_sso::idp::IdpSettings;
use idbridge_sso::SsoService;
use idbridge_store::{ChangeSet, Store};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::declared::Seed;

/// Server-owned table: `sp/<key>` or `oidc_client/<key>` → the id of the SP or client the
/// entry made.
pub const DECLARED_IDP_TABLE: &str = "declared_idp_entries";

/// `[idp]`: the settings (`GET|PATCH /admin/idp/settings`) and the declared SPs and clients.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdpSection {
    pub settings: IdpSettings,
    pub service_providers: Vec<DeclaredEntry>,
    pub oidc_clients: Vec<DeclaredEntry>,
}

/// One `[[idp.service_providers]]` / `[[idp.oidc_clients]]` entry: the admin API's create body
/// in TOML, plus `key`, `organization` (id or external_id) and, instead of `directory_id`,
/// optionally `directory` (the key of a `[[directories]]` entry). The body's own fields are
/// checked by the admin API's parser when the entry is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredEntry {
    pub key: String,
    pub organization: String,
    pub directory: Option<String>,
    /// OIDC clients: the client secret's environment variable or file (first line).
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    /// The rest: the admin API body.
    pub body: Map<String, Value>,
}

impl Serialize for IdpSection {
    /// Only the settings (what `/admin/settings/idp` shows); SPs and clients have their APIs.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.settings.serialize(s)
    }
}

impl<'de> Deserialize<'de> for IdpSection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(SectionVisitor)
    }
}

/// Reads `[idp]` key by key, so an unknown key is reported at its own path (`idp.<key>`).
struct SectionVisitor;

/// Fails inside the value of an unknown key (so the error's path names the key).
struct UnknownKey(String);

impl<'de> serde::de::DeserializeSeed<'de> for UnknownKey {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, _: D) -> Result<(), D::Error> {
        Err(serde::de::Error::custom(format!(
            "unknown field `{}`, expected one of {}, service_providers, oidc_clients",
            self.0,
            IdpSettings::FIELDS.join(", ")
        )))
    }
}

impl<'de> serde::de::Visitor<'de> for SectionVisitor {
    type Value = IdpSection;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("the [idp] table")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<IdpSection, A::Error> {
        use serde::de::Error;
        let mut settings = Map::new();
        let mut section = IdpSection::default();
        while let Some(key) = map.next_key::<String>()? {
            let client = match key.as_str() {
                "service_providers" => false,
                "oidc_clients" => true,
                k if IdpSettings::FIELDS.contains(&k) => {
                    settings.insert(key, map.next_value::<Value>()?);
                    continue;
                }
                _ => {
                    map.next_value_seed(UnknownKey(key))?;
                    continue;
                }
            };
            let Value::Array(items) = map.next_value::<Value>()? else {
                return Err(A::Error::custom(format!(
                    "{key}: must be an array of tables ([[idp.{key}]])"
                )));
            };
            let entries = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    DeclaredEntry::from_value(item, client)
                        .map_err(|m| A::Error::custom(format!("{key}[{i}]: {m}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if client {
                section.oidc_clients = entries;
            } else {
                section.service_providers = entries;
            }
        }
        section.settings =
            serde_path_to_error::deserialize(Value::Object(settings)).map_err(|e| {
                let path = e.path().to_string();
                A::Error::custom(format!("{path}: {}", e.into_inner()))
            })?;
        Ok(section)
    }
}

impl DeclaredEntry {
    fn from_value(item: Value, client: bool) -> Result<Self, String> {
        let Value::Object(mut body) = item else {
            return Err("must be a table".into());
        };
        let mut text = |k: &str| -> Result<Option<String>, String> {
            match body.remove(k) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(format!("{k}: must be a string")),
            }
        };
        let key = text("key")?.ok_or("key: required (the entry's stable name)")?;
        let organization =
            text("organization")?.ok_or("organization: required (an id or external_id)")?;
        let directory = text("directory")?;
        let (client_secret_env, client_secret_file) = if client {
            (text("client_secret_env")?, text("client_secret_file")?)
        } else {
            (None, None)
        };
        if key.trim().is_empty() || key.contains('/') {
            return Err("key: must be non-empty and contain no '/'".into());
        }
        for refused in ["organization_id", "client_secret"] {
            if body.contains_key(refused) {
                return Err(format!(
                    "{refused}: not allowed here (use {})",
                    if refused == "client_secret" {
                        "client_secret_env or client_secret_file"
                    } else {
                        "organization"
                    }
                ));
            }
        }
        if directory.is_some() && body.contains_key("directory_id") {
            return Err("directory: give directory or directory_id, not both".into());
        }
        Ok(DeclaredEntry {
            key,
            organization,
            directory,
            client_secret_env,
            client_secret_file: client_secret_file.map(PathBuf::from),
            body,
        })
    }

    /// The secret this entry names, if any (never in an error message: only where it lives).
    fn client_secret(&self) -> anyhow::Result<Option<idbridge_sso::idp::Secret>> {
        let value = match (&self.client_secret_env, &self.client_secret_file) {
            (Some(_), Some(_)) => {
                anyhow::bail!("give client_secret_env or client_secret_file, not both")
            }
            (Some(var), None) => std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .with_context(|| {
                    format!("client_secret_env: the environment variable {var} is unset or empty")
                })?,
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("client_secret_file: reading {}", path.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned(),
            (None, None) => return Ok(None),
        };
        Ok(Some(idbridge_sso::idp::Secret::new(value)))
    }
}

/// The SP or client id an entry made, if any.
fn made_id(store: &dyn Store, key: &str) -> anyhow::Result<Option<String>> {
    Ok(store
        .get(DECLARED_IDP_TABLE, key)?
        .and_then(|b| String::from_utf8(b).ok()))
}

/// Records the id an entry made and the entry as applied, in one commit.
fn remember(store: &dyn Store, key: &str, id: &str, seed: &Seed) -> anyhow::Result<()> {
    let mut cs = ChangeSet::new();
    cs.put(DECLARED_IDP_TABLE, key.to_owned(), id.as_bytes().to_vec());
    seed.stage(&mut cs);
    store.commit(cs)?;
    Ok(())
}

/// The entry's admin API body with `organization_id` and `directory_id` resolved.
fn resolved_body(
    sso: &SsoService,
    directories: &idbridge_directory::DirectoryEngine,
    e: &DeclaredEntry,
) -> anyhow::Result<Map<String, Value>> {
    let org = sso
        .organizations()
        .resolve(&e.organization)?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no organization with id or external_id {:?}",
                e.organization
            )
        })?;
    let mut body = e.body.clone();
    body.insert("organization_id".into(), org.id.into());
    if let Some(key) = &e.directory {
        let id =
            crate::directories::resolve_declared(directories, key, crate::directories::LDAP_TYPES)
                .with_context(|| format!("directory = {key:?}"))?;
        body.insert("directory_id".into(), id.into());
    }
    Ok(body)
}

/// Creates the declared SPs and OIDC clients that do not exist yet and applies the entries
/// that changed since they were last applied. Any refused entry stops the start, naming the
/// entry and the field.
pub async fn apply_declared(
    sso: &SsoService,
    directories: &idbridge_directory::DirectoryEngine,
    store: &dyn Store,
    section: &IdpSection,
) -> anyhow::Result<()> {
    for e in &section.service_providers {
        apply_sp(sso, directories, store, e)
            .await
            .with_context(|| format!("[[idp.service_providers]] key = {:?}", e.key))?;
    }
    for e in &section.oidc_clients {
        apply_client(sso, directories, store, e)
            .await
            .with_context(|| format!("[[idp.oidc_clients]] key = {:?}", e.key))?;
    }
    Ok(())
}

fn api_err(e: idbridge_api::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{}", e.body())
}

async fn apply_sp(
    sso: &SsoService,
    directories: &idbridge_directory::DirectoryEngine,
    store: &dyn Store,
    e: &DeclaredEntry,
) -> anyhow::Result<()> {
    let mut body = resolved_body(sso, directories, e)?;
    let input = idbridge_api::idp::admin::parse_new(&body).map_err(api_err)?;
    let seed = Seed::of("idp_service_provider", &e.key, &body)?;
    let table_key = format!("sp/{}", e.key);
    let existing = match made_id(store, &table_key)? {
        Some(id) => sso.service_providers().get(&id)?,
        None => None,
    };
    let id = match existing {
        Some(_) if !seed.changed(store)? => return Ok(()),
        Some(sp) => {
            body.remove("organization_id");
            let update = idbridge_api::idp::admin::parse_update(&body).map_err(api_err)?;
            sso.update_service_provider(&sp.id, update)
                .await
                .map_err(|e| api_err(e.into()))?;
            tracing::info!(sp = %sp.id, key = %e.key, "declared service provider updated from the file");
            sp.id
        }
        None => {
            let v = sso
                .create_service_provider(input)
                .await
                .map_err(|e| api_err(e.into()))?;
            let id = v["id"].as_str().unwrap_or_default().to_owned();
            tracing::info!(sp = %id, key = %e.key, "declared service provider created");
            id
        }
    };
    remember(store, &table_key, &id, &seed)
}

async fn apply_client(
    sso: &SsoService,
    directories: &idbridge_directory::DirectoryEngine,
    store: &dyn Store,
    e: &DeclaredEntry,
) -> anyhow::Result<()> {
    let mut body = resolved_body(sso, directories, e)?;
    let input = idbridge_api::idp::oidc_admin::parse_new(&body).map_err(api_err)?;
    let secret = e.client_secret()?;
    match (input.public, &secret) {
        (true, Some(_)) => anyhow::bail!(
            "a public client (public = true) has no secret: remove client_secret_env / client_secret_file"
        ),
        (false, None) => anyhow::bail!(
            "a confidential client needs its secret from client_secret_env or client_secret_file (or public = true)"
        ),
        _ => {}
    }
    // The secret counts as part of the entry (only its digest, inside the seed's digest).
    let secret_digest = secret
        .as_ref()
        .map(|s| idbridge_secrets::sha256_hex(s.expose()));
    let seed = Seed::of(
        "idp_oidc_client",
        &e.key,
        &serde_json::json!({"body": body, "secret": secret_digest}),
    )?;
    let table_key = format!("oidc_client/{}", e.key);
    let existing = match made_id(store, &table_key)? {
        Some(id) => sso.idp_oidc_clients().get(&id)?,
        None => None,
    };
    let id = match existing {
        Some(_) if !seed.changed(store)? => return Ok(()),
        Some(c) => {
            body.remove("organization_id");
            if body
                .remove("public")
                .and_then(|v| v.as_bool())
                .unwrap_or(false)
                != c.public
            {
                anyhow::bail!("public cannot change on an existing client: give the entry a new key to register a new client");
            }
            let update = idbridge_api::idp::oidc_admin::parse_update(&body).map_err(api_err)?;
            sso.update_oidc_client(&c.id, update)
                .await
                .map_err(|e| api_err(e.into()))?;
            tracing::info!(client = %c.id, key = %e.key, "declared OIDC client updated from the file");
            c.id
        }
        None => {
            let issued = sso
                .create_oidc_client(input)
                .await
                .map_err(|e| api_err(e.into()))?;
            let id = issued.object["id"].as_str().unwrap_or_default().to_owned();
            tracing::info!(client = %id, key = %e.key, "declared OIDC client created");
            id
        }
    };
    if let Some(s) = &secret {
        sso.set_oidc_client_secret(&id, s)
            .await
            .map_err(|e| api_err(e.into()))?;
    }
    remember(store, &table_key, &id, &seed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::path::Path;

    use crate::config::{Config, ConfigError};

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    fn refused(text: &str) -> String {
        match parse(text) {
            Err(ConfigError::Key { key, message, .. }) => format!("{key}: {message}"),
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn entries_are_split_from_the_settings() {
        let c = parse(
            "[idp]\naccount_max_failures = 9\n[[idp.service_providers]]\nkey = \"a\"\norganization = \"acme\"\nentity_id = \"https://sp\"\nacs_urls = [\"https://sp/acs\"]\ndirectory = \"ldap\"\n[[idp.oidc_clients]]\nkey = \"c\"\norganization = \"acme\"\nredirect_uris = [\"https://rp/cb\"]\nclient_secret_env = \"X\"\n",
        )
        .unwrap();
        assert_eq!(c.idp.settings.account_max_failures, 9);
        let sp = &c.idp.service_providers[0];
        assert_eq!((sp.key.as_str(), sp.organization.as_str()), ("a", "acme"));
        assert_eq!(sp.directory.as_deref(), Some("ldap"));
        // The body keeps exactly the admin API's fields (checked by its parser at start).
        let mut keys: Vec<_> = sp.body.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["acs_urls", "entity_id"]);
        let client = &c.idp.oidc_clients[0];
        assert_eq!(client.client_secret_env.as_deref(), Some("X"));
        assert!(!client.body.contains_key("client_secret_env"));
        // GET /admin/settings/idp shows the settings only.
        let shown = serde_json::to_value(&c.idp).unwrap();
        assert!(shown.get("service_providers").is_none(), "{shown}");
        assert_eq!(shown["account_max_failures"], 9);
    }

    #[test]
    fn bad_entries_and_unknown_settings_are_named() {
        for (text, expected) in [
            ("[idp]\naccount_max_failure = 1\n", "account_max_failure"),
            (
                "[[idp.service_providers]]\norganization = \"acme\"\n",
                "service_providers[0]: key: required",
            ),
            (
                "[[idp.service_providers]]\nkey = \"a\"\n",
                "service_providers[0]: organization: required",
            ),
            (
                "[[idp.service_providers]]\nkey = \"a/b\"\norganization = \"acme\"\n",
                "no '/'",
            ),
            (
                "[[idp.service_providers]]\nkey = \"a\"\norganization = \"acme\"\norganization_id = \"org_1\"\n",
                "organization_id: not allowed here",
            ),
            (
                "[[idp.oidc_clients]]\nkey = \"c\"\norganization = \"acme\"\nclient_secret = \"s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t\"\n",
                "client_secret: not allowed here",
            ),
            (
                "[[idp.service_providers]]\nkey = \"a\"\norganization = \"acme\"\ndirectory = \"d\"\ndirectory_id = \"directory_1\"\n",
                "not both",
            ),
            ("[idp]\nservice_providers = 3\n", "array of tables"),
        ] {
            let got = refused(text);
            assert!(got.starts_with("idp"), "{text}: {got}");
            assert!(got.contains(expected), "{text}: {got}");
            assert!(!got.contains("s3cr3t"), "{got}");
        }
    }
}
