//! Feed configurations: how an LDAP/AD or SFTP directory is fed (the pull source's connection
//! settings, the SFTP account and its keys, the pull schedule), stored so that the admin API
//! can create, change and delete them while the server runs.
//!
//! This module owns the `directory.feeds` table (directory id → [`FeedRecord`]). The settings
//! are kept as the protocol crate's JSON (`idbridge_ldap::LdapFeed`, `idbridge_sftp::SftpFeed`):
//! this crate sits below those and does not interpret them. Secrets (bind passwords, pull
//! private keys) are never part of the settings: they are sealed with the server's secret key,
//! bound to the directory and the secret's name, and kept beside them in `secrets`, so a GET
//! can say that one is set without being able to show it.
//!
//! Where a record came from is kept in `origin`: the config file seeds records at each start
//! (`config`, when an entry is new or changed), the admin API writes `api`. SFTP usernames are
//! unique across feeds ([`SFTP_USERNAMES_TABLE`], kept in each write's own commit).

use std::collections::BTreeMap;
use std::sync::Arc;

use idbridge_model::Timestamp;
use idbridge_secrets::{SecretBox, SecretError};
use idbridge_store::{ChangeSet, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Directory id → [`FeedRecord`] (JSON).
pub const FEEDS_TABLE: &str = "directory.feeds";

/// SFTP username → directory id: one account per username on the one embedded server, kept
/// unique by the commit that writes the feed (two concurrent writes cannot both take a name).
pub const SFTP_USERNAMES_TABLE: &str = "directory.feed_sftp_usernames";

/// Which feed a record configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedKind {
    /// LDAP / Active Directory pull sync.
    Ldap,
    /// SFTP CSV deliveries (pushed to the embedded server, or pulled).
    Sftp,
}

/// Who wrote a record last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedOrigin {
    /// The config file (applied at a start when its entry is new or changed).
    Config,
    /// The admin API.
    Api,
}

/// One directory's feed configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedRecord {
    /// The directory fed.
    pub directory_id: String,
    /// LDAP or SFTP.
    pub kind: FeedKind,
    /// The protocol crate's settings (no secret values).
    pub settings: Value,
    /// Secret name → sealed value (see [`secret_context`]).
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Who wrote it.
    pub origin: FeedOrigin,
    /// When it was written.
    pub updated_at: Timestamp,
}

impl FeedRecord {
    /// The names of the secrets that are set (what a GET may show).
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.secrets.keys().map(String::as_str)
    }
}

/// What to do with one secret on a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretChange {
    /// Keep the stored one (a write that does not mention it).
    Keep,
    /// Set a new value (sealed before it is stored).
    Set(String),
    /// Remove it.
    Remove,
}

/// Errors of the feed table.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Another write changed the record meanwhile.
    #[error("the feed of directory {0} was changed by another request; read it again and retry")]
    Conflict(String),
    /// A secret was given but the server has no key to seal it with.
    #[error("no secret key is configured, so the secret cannot be stored sealed: set IDBRIDGE_SECRET_KEY or let the server create <data_dir>/secret.key")]
    NoKey,
    /// Sealing or opening failed (wrong key, or a record moved between directories).
    #[error("secret {name} of directory {directory_id}: {source}")]
    Secret {
        /// The directory.
        directory_id: String,
        /// The secret's name.
        name: String,
        /// Why.
        source: SecretError,
    },
    /// A stored record does not parse.
    #[error("corrupt feed record of directory {0}: {1}")]
    Corrupt(String, String),
    /// The SFTP username is another directory's account.
    #[error("SFTP username {username:?} is already the account of directory {directory_id}; choose another username")]
    UsernameTaken {
        /// The name asked for.
        username: String,
        /// The directory whose account it is.
        directory_id: String,
    },
}

/// The SFTP account name a record holds (push accounts only).
fn sftp_username(kind: FeedKind, settings: &Value) -> Option<&str> {
    match kind {
        FeedKind::Sftp => settings.get("username").and_then(Value::as_str),
        FeedKind::Ldap => None,
    }
}

/// The context a secret is sealed under: a sealed value moved to another directory or another
/// secret name does not open.
pub fn secret_context(directory_id: &str, name: &str) -> String {
    format!("{directory_id}/feed/{name}")
}

/// The owner of [`FEEDS_TABLE`].
#[derive(Clone)]
pub struct FeedStore {
    store: Arc<dyn Store>,
    secrets: Option<SecretBox>,
}

impl std::fmt::Debug for FeedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedStore")
            .field("secrets", &self.secrets.is_some())
            .finish_non_exhaustive()
    }
}

impl FeedStore {
    /// The table over `store`; `secrets` seals and opens secret values (`None`: records
    /// without secrets only).
    pub fn new(store: Arc<dyn Store>, secrets: Option<SecretBox>) -> Self {
        FeedStore { store, secrets }
    }

    /// The record of a directory.
    pub fn get(&self, directory_id: &str) -> Result<Option<FeedRecord>, FeedError> {
        Ok(self.load(directory_id)?.map(|(r, _)| r))
    }

    fn load(&self, directory_id: &str) -> Result<Option<(FeedRecord, Vec<u8>)>, FeedError> {
        match self.store.get(FEEDS_TABLE, directory_id)? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(|r| Some((r, b)))
                .map_err(|e| FeedError::Corrupt(directory_id.to_owned(), e.to_string())),
        }
    }

    /// Every record, in directory id order.
    pub fn list(&self) -> Result<Vec<FeedRecord>, FeedError> {
        let mut out = Vec::new();
        let mut bad = None;
        self.store.for_each_prefixed(FEEDS_TABLE, "", &mut |k, v| {
            match serde_json::from_slice(v) {
                Ok(r) => out.push(r),
                Err(e) => {
                    bad = Some(FeedError::Corrupt(
                        String::from_utf8_lossy(k).into_owned(),
                        e.to_string(),
                    ))
                }
            }
            true
        })?;
        match bad {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Writes a directory's record (replacing settings and kind; secrets changed as asked) in
    /// one commit that fails if another write came in between. Returns the new record and
    /// whether anything changed (an identical write leaves the record and its time alone, so
    /// seeding the file at each start is idempotent).
    pub fn put(
        &self,
        directory_id: &str,
        kind: FeedKind,
        settings: Value,
        secrets: &BTreeMap<String, SecretChange>,
        origin: FeedOrigin,
    ) -> Result<(FeedRecord, bool), FeedError> {
        let old = self.load(directory_id)?;
        let mut sealed = old
            .as_ref()
            .filter(|(r, _)| r.kind == kind)
            .map(|(r, _)| r.secrets.clone())
            .unwrap_or_default();
        let mut secrets_changed = false;
        for (name, change) in secrets {
            match change {
                SecretChange::Keep => {}
                SecretChange::Remove => secrets_changed |= sealed.remove(name).is_some(),
                SecretChange::Set(value) => {
                    // The same value again is no change (sealing is randomized).
                    if self
                        .open(directory_id, name, sealed.get(name))
                        .ok()
                        .flatten()
                        == Some(value.clone())
                    {
                        continue;
                    }
                    let b = self.secrets.as_ref().ok_or(FeedError::NoKey)?;
                    let ct = b
                        .seal(&secret_context(directory_id, name), value.as_bytes())
                        .map_err(|source| FeedError::Secret {
                            directory_id: directory_id.to_owned(),
                            name: name.clone(),
                            source,
                        })?;
                    sealed.insert(name.clone(), ct);
                    secrets_changed = true;
                }
            }
        }
        if let Some((r, _)) = &old {
            if r.kind == kind && r.settings == settings && !secrets_changed && r.origin == origin {
                return Ok((r.clone(), false));
            }
        }
        let rec = FeedRecord {
            directory_id: directory_id.to_owned(),
            kind,
            settings,
            secrets: sealed,
            origin,
            updated_at: Timestamp::now(),
        };
        let mut cs = ChangeSet::new();
        let old_user = old
            .as_ref()
            .and_then(|(r, _)| sftp_username(r.kind, &r.settings))
            .map(str::to_owned);
        let new_user = sftp_username(rec.kind, &rec.settings).map(str::to_owned);
        if let Some(user) = &new_user {
            self.stage_take_username(&mut cs, directory_id, user)?;
        }
        if let Some(user) = old_user.filter(|u| Some(u) != new_user.as_ref()) {
            cs.delete(SFTP_USERNAMES_TABLE, user);
        }
        cs.require_equals(FEEDS_TABLE, directory_id, old.map(|(_, b)| b));
        cs.put_json(FEEDS_TABLE, directory_id, &rec)?;
        self.commit(directory_id, cs)?;
        Ok((rec, true))
    }

    /// Stages `directory_id` as the holder of SFTP `username`: refused when another directory
    /// holds it (in the index, or in a record written before the index existed), and
    /// conditional on the index so a concurrent write of the same name fails its commit.
    fn stage_take_username(
        &self,
        cs: &mut ChangeSet,
        directory_id: &str,
        username: &str,
    ) -> Result<(), FeedError> {
        let taken = |other: String| FeedError::UsernameTaken {
            username: username.to_owned(),
            directory_id: other,
        };
        match self.store.get(SFTP_USERNAMES_TABLE, username)? {
            Some(holder) if holder == directory_id.as_bytes() => return Ok(()),
            Some(holder) => return Err(taken(String::from_utf8_lossy(&holder).into_owned())),
            None => {}
        }
        for other in self.list()? {
            if other.directory_id != directory_id
                && sftp_username(other.kind, &other.settings) == Some(username)
            {
                return Err(taken(other.directory_id));
            }
        }
        cs.require_absent(SFTP_USERNAMES_TABLE, username);
        cs.put(
            SFTP_USERNAMES_TABLE,
            username,
            directory_id.as_bytes().to_vec(),
        );
        Ok(())
    }

    /// Removes a directory's record; `false` when there was none.
    pub fn delete(&self, directory_id: &str) -> Result<bool, FeedError> {
        let Some((rec, bytes)) = self.load(directory_id)? else {
            return Ok(false);
        };
        let mut cs = ChangeSet::new();
        if let Some(user) = sftp_username(rec.kind, &rec.settings) {
            if self.store.get(SFTP_USERNAMES_TABLE, user)?.as_deref()
                == Some(directory_id.as_bytes())
            {
                cs.delete(SFTP_USERNAMES_TABLE, user);
            }
        }
        cs.require_equals(FEEDS_TABLE, directory_id, Some(bytes));
        cs.delete(FEEDS_TABLE, directory_id);
        self.commit(directory_id, cs)?;
        Ok(true)
    }

    fn commit(&self, directory_id: &str, cs: ChangeSet) -> Result<(), FeedError> {
        match self.store.commit(cs) {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict { table, key, .. }) if table == SFTP_USERNAMES_TABLE => {
                let holder = self
                    .store
                    .get(SFTP_USERNAMES_TABLE, &key)?
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                Err(FeedError::UsernameTaken {
                    username: key,
                    directory_id: holder,
                })
            }
            Err(StoreError::Conflict { .. }) => Err(FeedError::Conflict(directory_id.to_owned())),
            Err(e) => Err(e.into()),
        }
    }

    /// The clear value of a record's secret (for the runner that needs it).
    pub fn secret(&self, rec: &FeedRecord, name: &str) -> Result<Option<String>, FeedError> {
        self.open(&rec.directory_id, name, rec.secrets.get(name))
    }

    fn open(
        &self,
        directory_id: &str,
        name: &str,
        sealed: Option<&String>,
    ) -> Result<Option<String>, FeedError> {
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let err = |source| FeedError::Secret {
            directory_id: directory_id.to_owned(),
            name: name.to_owned(),
            source,
        };
        let b = self.secrets.as_ref().ok_or(FeedError::NoKey)?;
        let clear = b
            .open(&secret_context(directory_id, name), sealed)
            .map_err(err)?;
        String::from_utf8(clear)
            .map(Some)
            .map_err(|_| err(SecretError::Decrypt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idbridge_store::SqliteStore;
    use serde_json::json;

    fn feeds() -> (Arc<dyn Store>, FeedStore) {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open_ephemeral().unwrap_or_else(|e| panic!("{e}")));
        let b = SecretBox::generate().unwrap_or_else(|e| panic!("{e}"));
        (store.clone(), FeedStore::new(store, Some(b)))
    }

    fn set(name: &str, v: &str) -> BTreeMap<String, SecretChange> {
        BTreeMap::from([(name.to_owned(), SecretChange::Set(v.to_owned()))])
    }

    #[test]
    fn secrets_are_sealed_bound_and_kept_across_writes() {
        let (store, f) = feeds();
        let (rec, changed) = f
            .put(
                "directory_A",
                FeedKind::Ldap,
                json!({"url": "ldap://x"}),
                &set("bind_password", "s3cret"),
                FeedOrigin::Api,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(changed);
        // Not in the clear at rest.
        let raw = store
            .get(FEEDS_TABLE, "directory_A")
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_default();
        assert!(!String::from_utf8_lossy(&raw).contains("s3cret"));
        assert_eq!(
            f.secret(&rec, "bind_password").ok().flatten().as_deref(),
            Some("s3cret")
        );
        // A write that does not mention it keeps it; the same write again changes nothing.
        let (rec2, changed) = f
            .put(
                "directory_A",
                FeedKind::Ldap,
                json!({"url": "ldap://y"}),
                &BTreeMap::new(),
                FeedOrigin::Api,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(changed);
        assert_eq!(rec2.secrets, rec.secrets);
        let (_, changed) = f
            .put(
                "directory_A",
                FeedKind::Ldap,
                json!({"url": "ldap://y"}),
                &set("bind_password", "s3cret"),
                FeedOrigin::Api,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!changed, "the same secret again is no change");
        // Moved to another directory, the sealed value does not open.
        let moved = FeedRecord {
            directory_id: "directory_B".into(),
            ..rec2.clone()
        };
        assert!(f.secret(&moved, "bind_password").is_err());
        // Removed.
        let (rec3, _) = f
            .put(
                "directory_A",
                FeedKind::Ldap,
                json!({"url": "ldap://y"}),
                &BTreeMap::from([("bind_password".to_owned(), SecretChange::Remove)]),
                FeedOrigin::Api,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rec3.secret_names().count(), 0);
        assert_eq!(f.list().unwrap_or_else(|e| panic!("{e}")).len(), 1);
        assert!(f.delete("directory_A").unwrap_or_else(|e| panic!("{e}")));
        assert!(!f.delete("directory_A").unwrap_or_else(|e| panic!("{e}")));
    }

    #[test]
    fn a_secret_without_a_key_is_refused() {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open_ephemeral().unwrap_or_else(|e| panic!("{e}")));
        let f = FeedStore::new(store, None);
        let err = f
            .put(
                "directory_A",
                FeedKind::Ldap,
                json!({}),
                &set("bind_password", "x"),
                FeedOrigin::Api,
            )
            .expect_err("no key");
        assert!(matches!(err, FeedError::NoKey));
        assert!(f
            .get("directory_A")
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none());
    }

    fn account(user: &str) -> Value {
        json!({"username": user, "authorized_keys": ["ssh-ed25519 AAAA"]})
    }

    fn put_sftp(f: &FeedStore, dir: &str, user: &str) -> Result<(FeedRecord, bool), FeedError> {
        f.put(
            dir,
            FeedKind::Sftp,
            account(user),
            &BTreeMap::new(),
            FeedOrigin::Api,
        )
    }

    #[test]
    fn an_sftp_username_belongs_to_one_directory_at_a_time() {
        let (store, f) = feeds();
        put_sftp(&f, "directory_A", "acme-hr").unwrap_or_else(|e| panic!("{e}"));
        let err = put_sftp(&f, "directory_B", "acme-hr").expect_err("taken");
        assert!(
            matches!(&err, FeedError::UsernameTaken { directory_id, .. } if directory_id == "directory_A"),
            "{err}"
        );
        assert!(f
            .get("directory_B")
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none());
        // A renames its account: the old name is free, the new one taken.
        put_sftp(&f, "directory_A", "acme-people").unwrap_or_else(|e| panic!("{e}"));
        put_sftp(&f, "directory_B", "acme-hr").unwrap_or_else(|e| panic!("{e}"));
        assert!(put_sftp(&f, "directory_C", "acme-people").is_err());
        // Deleting A frees its name.
        assert!(f.delete("directory_A").unwrap_or_else(|e| panic!("{e}")));
        put_sftp(&f, "directory_C", "acme-people").unwrap_or_else(|e| panic!("{e}"));
        // A record written before the index existed still holds its name.
        let legacy = FeedRecord {
            directory_id: "directory_L".into(),
            kind: FeedKind::Sftp,
            settings: account("legacy"),
            secrets: BTreeMap::new(),
            origin: FeedOrigin::Config,
            updated_at: Timestamp::now(),
        };
        let mut cs = ChangeSet::new();
        cs.put_json(FEEDS_TABLE, "directory_L", &legacy)
            .unwrap_or_else(|e| panic!("{e}"));
        store.commit(cs).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            put_sftp(&f, "directory_D", "legacy"),
            Err(FeedError::UsernameTaken { .. })
        ));
    }

    #[test]
    fn concurrent_writes_of_one_username_let_exactly_one_directory_have_it() {
        for round in 0..20 {
            let (_store, f) = feeds();
            let user = format!("race-{round}");
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    let f = f.clone();
                    let user = user.clone();
                    std::thread::spawn(move || {
                        put_sftp(&f, &format!("directory_{i}"), &user).is_ok()
                    })
                })
                .collect();
            let won = handles
                .into_iter()
                .map(|h| h.join().unwrap_or(false))
                .filter(|ok| *ok)
                .count();
            let holders = f
                .list()
                .unwrap_or_else(|e| panic!("{e}"))
                .into_iter()
                .filter(|r| sftp_username(r.kind, &r.settings) == Some(user.as_str()))
                .count();
            assert_eq!((won, holders), (1, 1), "round {round}");
        }
    }
}
