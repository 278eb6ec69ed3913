//! Small helpers every owner module of this crate shares: async commits, JSON codecs, clocks.

use std::sync::Arc;
use std::time::Duration;

use idbridge_model::{parse_id, IdPrefix, Timestamp};
use idbridge_store::{ChangeSet, CommitReceipt, Store, StoreError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::SsoError;

/// Commits durably off the async runtime (a commit waits for fdatasync). Conflicts come back
/// as `Err(StoreError::Conflict)` for the caller to map to a domain error.
pub(crate) async fn commit(
    store: &Arc<dyn Store>,
    changes: ChangeSet,
) -> Result<CommitReceipt, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.commit(changes))
        .await
        .map_err(|e| StoreError::Backend(format!("commit task failed: {e}")))?
}

/// Applies `changes` at once (readers see them) WITHOUT waiting for their fdatasync: only for
/// records whose loss in a crash makes a user start over and that count only once a later
/// durable commit depends on them. The store has one writer and one write-ahead log, so the
/// next durable commit syncs these changes too. Each caller says why its rule still holds.
pub(crate) async fn commit_unsynced(
    store: &Arc<dyn Store>,
    changes: ChangeSet,
) -> Result<CommitReceipt, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.commit_applied(changes).map(|(receipt, _)| receipt))
        .await
        .map_err(|e| StoreError::Backend(format!("commit task failed: {e}")))?
}

/// The record under `table/key`, decoded; undecodable bytes are [`StoreError::Corrupt`].
pub(crate) fn get_json<T: DeserializeOwned>(
    store: &dyn Store,
    table: &str,
    key: &str,
) -> Result<Option<T>, StoreError> {
    match store.get(table, key)? {
        None => Ok(None),
        Some(bytes) => decode(table, key, &bytes).map(Some),
    }
}

/// Decodes a stored record of `table`.
pub(crate) fn decode<T: DeserializeOwned>(
    table: &str,
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::corrupt(table, format!("{key}: {e}")))
}

/// A UTF-8 value (index tables hold ids).
pub(crate) fn get_string(
    store: &dyn Store,
    table: &str,
    key: &str,
) -> Result<Option<String>, StoreError> {
    match store.get(table, key)? {
        None => Ok(None),
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| StoreError::corrupt(table, format!("{key}: not UTF-8"))),
    }
}

/// Serializes a record. Our records are plain data, so a failure is a bug.
pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, SsoError> {
    serde_json::to_vec(value).map_err(SsoError::internal)
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    Timestamp::now().as_millis()
}

/// A lifetime in milliseconds (saturating).
pub(crate) fn ttl_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

/// `created_at` from the id's ULID, so key order is list order.
pub(crate) fn created_at_of(prefix: IdPrefix, id: &str) -> Timestamp {
    parse_id(prefix, id)
        .map(|u| Timestamp::from_millis(i64::try_from(u.timestamp_ms()).unwrap_or(i64::MAX)))
        .unwrap_or_else(|_| Timestamp::now())
}
