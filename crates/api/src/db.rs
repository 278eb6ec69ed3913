//! Async access to the blocking [`Store`].
//!
//! Commits wait for fdatasync (group commit), so they run on the blocking pool; reads are
//! memory-speed sled lookups and run inline.

use std::sync::Arc;

use idbridge_store::{ChangeSet, CommitReceipt, Store, StoreError};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

#[derive(Clone)]
pub struct Db {
    store: Arc<dyn Store>,
}

impl Db {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Db { store }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Commits durably off the async runtime. Precondition failures come back as
    /// `Err(StoreError::Conflict)` for the caller to map to a domain error.
    pub async fn commit(
        &self,
        changes: ChangeSet,
    ) -> Result<Result<CommitReceipt, StoreError>, ApiError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.commit(changes))
            .await
            .map_err(ApiError::internal)
    }

    /// Commits, treating any failure (conflicts included) as internal.
    pub async fn commit_ok(&self, changes: ChangeSet) -> Result<CommitReceipt, ApiError> {
        Ok(self.commit(changes).await??)
    }

    pub fn get_json<T: DeserializeOwned>(
        &self,
        table: &str,
        key: &str,
    ) -> Result<Option<T>, ApiError> {
        match self.store.get(table, key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| ApiError::Internal(format!("corrupt record {table}/{key}: {e}"))),
        }
    }

    pub fn get_raw(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
        Ok(self.store.get(table, key)?)
    }
}

/// Serializes a record for the store. Our records are plain data, so failure is a bug.
pub fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(ApiError::internal)
}
