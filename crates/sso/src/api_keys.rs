//! API keys (`sk_…`) and the environment's client id: the one owner of the [`API_KEYS`] and
//! [`ENVIRONMENT`] tables.
//!
//! Keys are stored only as SHA-256 digests and looked up by digest, then compared in constant
//! time; the plaintext exists once, when a key is created.

use idbridge_model::{new_id, IdPrefix, Timestamp};
use idbridge_secrets::{random_alphanumeric, sha256_hex};
use idbridge_store::{ChangeSet, Store, StoreError};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::db;

/// `<sha256 hex of the key>` → [`ApiKeyRecord`].
const API_KEYS: &str = "api_keys";
/// Environment singletons, e.g. `client_id`.
const ENVIRONMENT: &str = "environment";
const CLIENT_ID_KEY: &str = "client_id";

/// What is stored for a key: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the full key (also the table key).
    pub digest: String,
    /// The last four characters, so admins can tell keys apart.
    pub last4: String,
    pub created_at: Timestamp,
}

/// A freshly minted key: the only moment the plaintext exists.
pub struct NewApiKey {
    pub plaintext: String,
    pub record: ApiKeyRecord,
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

/// The digest a key is stored under (also scopes idempotency keys per API key).
pub fn digest(key: &str) -> String {
    sha256_hex(key)
}

/// Creates and durably stores a new API key.
pub fn create_api_key(store: &dyn Store, name: &str) -> Result<NewApiKey, StoreError> {
    let mut cs = ChangeSet::new();
    let key = stage_new_key(&mut cs, name)?;
    store.commit(cs)?;
    Ok(key)
}

/// Mints a key and stages its record (its digest must be free).
fn stage_new_key(cs: &mut ChangeSet, name: &str) -> Result<NewApiKey, StoreError> {
    let plaintext = format!("sk_{}", random_alphanumeric(40));
    let record = stage_key(cs, name, &plaintext)?;
    Ok(NewApiKey { plaintext, record })
}

/// Stages the record of key `plaintext` (its digest must be free).
fn stage_key(cs: &mut ChangeSet, name: &str, plaintext: &str) -> Result<ApiKeyRecord, StoreError> {
    let last4 = plaintext
        .get(plaintext.len().saturating_sub(4)..)
        .unwrap_or_default()
        .to_string();
    let record = ApiKeyRecord {
        created_at: Timestamp::now(),
        id: new_id(IdPrefix::ApiKey),
        name: name.to_string(),
        digest: digest(plaintext),
        last4,
    };
    cs.put_json(API_KEYS, &record.digest, &record)?;
    cs.require_absent(API_KEYS, &record.digest);
    Ok(record)
}

/// Every key's record, in id (creation) order.
pub fn list_api_keys(store: &dyn Store) -> Result<Vec<ApiKeyRecord>, StoreError> {
    let mut keys = Vec::new();
    for (digest, bytes) in store.scan(API_KEYS, "", None, usize::MAX)? {
        keys.push(db::decode::<ApiKeyRecord>(API_KEYS, &digest, &bytes)?);
    }
    keys.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(keys)
}

/// Revokes by id (`key_…`) or by the last four characters when unambiguous. Returns the
/// revoked record, or None when nothing (or more than one key) matched.
pub fn revoke_api_key(
    store: &dyn Store,
    id_or_last4: &str,
) -> Result<Option<ApiKeyRecord>, StoreError> {
    let matches: Vec<ApiKeyRecord> = list_api_keys(store)?
        .into_iter()
        .filter(|k| k.id == id_or_last4 || k.last4 == id_or_last4)
        .collect();
    let [record] = matches.as_slice() else {
        return Ok(None);
    };
    let mut cs = ChangeSet::new();
    cs.delete(API_KEYS, &record.digest);
    store.commit(cs)?;
    Ok(Some(record.clone()))
}

/// Looks a presented key up by digest and confirms it in constant time.
pub fn verify_api_key(
    store: &dyn Store,
    presented: &str,
) -> Result<Option<ApiKeyRecord>, StoreError> {
    if !presented.starts_with("sk_") || presented.len() > 200 {
        return Ok(None);
    }
    let d = digest(presented);
    let Some(record) = db::get_json::<ApiKeyRecord>(store, API_KEYS, &d)? else {
        return Ok(None);
    };
    if bool::from(record.digest.as_bytes().ct_eq(d.as_bytes())) {
        Ok(Some(record))
    } else {
        Ok(None)
    }
}

/// Why an operator-provided key (`IDBRIDGE_API_KEY`) was not provisioned.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(
        "the provided API key must be \"sk_\" followed by 32 to 197 letters or digits \
         (e.g. sk_$(openssl rand -hex 24)): {0}"
    )]
    Weak(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`provision_api_key`] did.
#[derive(Debug)]
pub struct Provisioned {
    /// The key was not stored yet (first start, or a changed value).
    pub created: bool,
    /// Earlier keys of the same name that were revoked (the value was changed).
    pub revoked: usize,
}

/// Checks the shape of an operator-provided key: it is a credential, so short or odd values
/// are refused rather than stored.
fn check_provided(plaintext: &str) -> Result<(), ProvisionError> {
    let Some(rest) = plaintext.strip_prefix("sk_") else {
        return Err(ProvisionError::Weak("it does not start with sk_"));
    };
    if rest.len() < 32 {
        return Err(ProvisionError::Weak("it is too short"));
    }
    if plaintext.len() > 200 {
        return Err(ProvisionError::Weak("it is too long"));
    }
    if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ProvisionError::Weak(
            "it holds a character other than a letter or digit",
        ));
    }
    Ok(())
}

/// Makes an operator-provided key valid (a Kubernetes Secret), in one commit: the key is
/// stored under `name` unless it already is, other keys of that `name` are revoked (the
/// Secret is the source of truth, so a changed value replaces the old key), and the client
/// id is created if absent, so [`bootstrap`] mints no random key beside it.
pub fn provision_api_key(
    store: &dyn Store,
    name: &str,
    plaintext: &str,
) -> Result<Provisioned, ProvisionError> {
    check_provided(plaintext)?;
    let d = digest(plaintext);
    let mut cs = ChangeSet::new();
    if client_id(store)?.is_none() {
        let record = ClientIdRecord {
            client_id: format!("client_{}", ulid::Ulid::new()),
        };
        cs.put_json(ENVIRONMENT, CLIENT_ID_KEY, &record)?;
        cs.require_absent(ENVIRONMENT, CLIENT_ID_KEY);
    }
    let existing = list_api_keys(store)?;
    let mut revoked = 0;
    for old in existing.iter().filter(|k| k.name == name && k.digest != d) {
        cs.delete(API_KEYS, &old.digest);
        revoked += 1;
    }
    let created = !existing.iter().any(|k| k.digest == d);
    if created {
        stage_key(&mut cs, name, plaintext)?;
    }
    if !cs.is_empty() {
        store.commit(cs)?;
    }
    Ok(Provisioned { created, revoked })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClientIdRecord {
    client_id: String,
}

/// The environment's client id (`client_…`), once bootstrapped.
pub fn client_id(store: &dyn Store) -> Result<Option<String>, StoreError> {
    Ok(db::get_json::<ClientIdRecord>(store, ENVIRONMENT, CLIENT_ID_KEY)?.map(|r| r.client_id))
}

/// What the first start of a fresh data directory creates and prints once.
pub struct Bootstrap {
    pub api_key: String,
    pub client_id: String,
}

impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrap")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// Creates the client id and a first API key, in one commit, if the environment has neither.
/// Idempotent: a store that already has a client id is left alone (returns None).
pub fn bootstrap(store: &dyn Store) -> Result<Option<Bootstrap>, StoreError> {
    if client_id(store)?.is_some() {
        return Ok(None);
    }
    let client_id = format!("client_{}", ulid::Ulid::new());
    let mut cs = ChangeSet::new();
    cs.put_json(
        ENVIRONMENT,
        CLIENT_ID_KEY,
        &ClientIdRecord {
            client_id: client_id.clone(),
        },
    )?;
    cs.require_absent(ENVIRONMENT, CLIENT_ID_KEY);
    let key = stage_new_key(&mut cs, "default")?;
    store.commit(cs)?;
    Ok(Some(Bootstrap {
        api_key: key.plaintext,
        client_id,
    }))
}
