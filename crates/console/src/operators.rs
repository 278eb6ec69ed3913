//! Console operator accounts: the one owner of the [`OPERATORS`] table.
//!
//! Passwords are stored only as argon2id PHC strings; verification takes the same time for
//! an unknown account (a dummy hash is checked) so the answer does not reveal which accounts
//! exist.

use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use idbridge_model::Timestamp;
use idbridge_store::{ChangeSet, Store, StoreError};
use serde::{Deserialize, Serialize};

/// `<username>` → [`OperatorRecord`].
pub const OPERATORS: &str = "console_operators";

/// Shortest password accepted for an operator.
pub const MIN_PASSWORD_LEN: usize = 12;

/// The account made on the first start of a store without any operator.
pub const BOOTSTRAP_USERNAME: &str = "admin";

/// What is stored for an operator: never the password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorRecord {
    pub username: String,
    /// argon2id PHC string (`$argon2id$v=19$...`).
    pub password_hash: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("the username {0:?} is not valid: use 1-64 characters among a-z, 0-9, '.', '_', '-' and '@'")]
    InvalidUsername(String),
    #[error("the password is too short: use at least {MIN_PASSWORD_LEN} characters")]
    WeakPassword,
    #[error("an operator named {0:?} already exists: use `idbridge console-user passwd` to change its password")]
    Exists(String),
    #[error("no operator is named {0:?}: `idbridge console-user list` shows them")]
    NotFound(String),
    #[error("hashing the password failed: {0}")]
    Hash(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn valid_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-' | b'@')
        })
}

fn hash_password(password: &str) -> Result<String, OperatorError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| OperatorError::Hash(e.to_string()))
}

fn check_new(username: &str, password: &str) -> Result<(), OperatorError> {
    if !valid_username(username) {
        return Err(OperatorError::InvalidUsername(username.to_string()));
    }
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(OperatorError::WeakPassword);
    }
    Ok(())
}

fn get(store: &dyn Store, username: &str) -> Result<Option<OperatorRecord>, StoreError> {
    match store.get(OPERATORS, username)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::corrupt(OPERATORS, format!("{username}: {e}"))),
    }
}

/// Adds an operator (argon2id hash of `password`).
pub fn add(
    store: &dyn Store,
    username: &str,
    password: &str,
) -> Result<OperatorRecord, OperatorError> {
    check_new(username, password)?;
    let now = Timestamp::now();
    let record = OperatorRecord {
        username: username.to_string(),
        password_hash: hash_password(password)?,
        created_at: now,
        updated_at: now,
    };
    let mut cs = ChangeSet::new();
    cs.put_json(OPERATORS, username, &record)?;
    cs.require_absent(OPERATORS, username);
    match store.commit(cs) {
        Ok(_) => Ok(record),
        Err(e) if e.conflict_on().is_some() => Err(OperatorError::Exists(username.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Replaces an operator's password. Existing sessions stay valid until they expire or log
/// out; remove and re-add the operator to end them at once.
pub fn set_password(
    store: &dyn Store,
    username: &str,
    password: &str,
) -> Result<(), OperatorError> {
    check_new(username, password)?;
    let mut record =
        get(store, username)?.ok_or_else(|| OperatorError::NotFound(username.to_string()))?;
    record.password_hash = hash_password(password)?;
    record.updated_at = Timestamp::now();
    let mut cs = ChangeSet::new();
    cs.put_json(OPERATORS, username, &record)?;
    cs.require_present(OPERATORS, username);
    store.commit(cs)?;
    Ok(())
}

/// Removes an operator; its sessions stop working at their next request.
pub fn remove(store: &dyn Store, username: &str) -> Result<(), OperatorError> {
    if get(store, username)?.is_none() {
        return Err(OperatorError::NotFound(username.to_string()));
    }
    let mut cs = ChangeSet::new();
    cs.delete(OPERATORS, username);
    store.commit(cs)?;
    Ok(())
}

/// Every operator (without hashes), in name order.
pub fn list(store: &dyn Store) -> Result<Vec<String>, StoreError> {
    Ok(store
        .scan(OPERATORS, "", None, usize::MAX)?
        .into_iter()
        .map(|(k, _)| k)
        .collect())
}

/// Whether `username` still exists (sessions check this on every request).
pub fn exists(store: &dyn Store, username: &str) -> Result<bool, StoreError> {
    Ok(store.get(OPERATORS, username)?.is_some())
}

/// A hash checked for unknown accounts, so they cost the same time as known ones.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_password(&idbridge_secrets::random_alphanumeric(24)).unwrap_or_default()
    })
}

/// Checks a sign-in. CPU-heavy (argon2): call it off the async runtime.
pub fn verify(store: &dyn Store, username: &str, password: &str) -> Result<bool, StoreError> {
    let record = if valid_username(username) {
        get(store, username)?
    } else {
        None
    };
    let phc: &str = match &record {
        Some(r) => &r.password_hash,
        None => dummy_hash(),
    };
    let ok = match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    };
    Ok(ok && record.is_some())
}

/// The first start of a store without any operator creates [`BOOTSTRAP_USERNAME`] with a
/// random password and returns it once (to print, like the first API key); `None` otherwise.
pub fn bootstrap(store: &dyn Store) -> Result<Option<(String, String)>, OperatorError> {
    if !store.scan(OPERATORS, "", None, 1)?.is_empty() {
        return Ok(None);
    }
    let password = idbridge_secrets::random_alphanumeric(24);
    match add(store, BOOTSTRAP_USERNAME, &password) {
        Ok(_) => Ok(Some((BOOTSTRAP_USERNAME.to_string(), password))),
        Err(OperatorError::Exists(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idbridge_store::SqliteStore;

    #[test]
    fn passwords_are_hashed_and_verified() {
        let store = SqliteStore::open_ephemeral().unwrap();
        add(&store, "ops@example.com", "a long enough password").unwrap();
        let bytes = store.get(OPERATORS, "ops@example.com").unwrap().unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(!text.contains("a long enough password"));
        assert!(text.contains("$argon2id$"), "{text}");
        assert!(verify(&store, "ops@example.com", "a long enough password").unwrap());
        assert!(!verify(&store, "ops@example.com", "a long enough passworD").unwrap());
        assert!(!verify(&store, "nobody", "a long enough password").unwrap());
        assert!(!verify(&store, "Not Valid!", "a long enough password").unwrap());
        set_password(&store, "ops@example.com", "another long password").unwrap();
        assert!(!verify(&store, "ops@example.com", "a long enough password").unwrap());
        assert!(verify(&store, "ops@example.com", "another long password").unwrap());
    }

    #[test]
    fn bad_input_changes_nothing() {
        let store = SqliteStore::open_ephemeral().unwrap();
        assert!(matches!(
            add(&store, "op", "short"),
            Err(OperatorError::WeakPassword)
        ));
        assert!(matches!(
            add(&store, "Op Name", "a long enough password"),
            Err(OperatorError::InvalidUsername(_))
        ));
        assert!(list(&store).unwrap().is_empty());
        add(&store, "op", "a long enough password").unwrap();
        assert!(matches!(
            add(&store, "op", "another long password"),
            Err(OperatorError::Exists(_))
        ));
        assert!(verify(&store, "op", "a long enough password").unwrap());
        assert!(matches!(
            remove(&store, "ghost"),
            Err(OperatorError::NotFound(_))
        ));
        assert!(matches!(
            set_password(&store, "ghost", "a long enough password"),
            Err(OperatorError::NotFound(_))
        ));
    }

    #[test]
    fn bootstrap_runs_once() {
        let store = SqliteStore::open_ephemeral().unwrap();
        let (user, password) = bootstrap(&store).unwrap().unwrap();
        assert_eq!(user, BOOTSTRAP_USERNAME);
        assert!(password.len() >= MIN_PASSWORD_LEN);
        assert!(verify(&store, &user, &password).unwrap());
        assert!(bootstrap(&store).unwrap().is_none());
        remove(&store, &user).unwrap();
        add(&store, "other", "a long enough password").unwrap();
        assert!(bootstrap(&store).unwrap().is_none(), "an operator exists");
    }
}
