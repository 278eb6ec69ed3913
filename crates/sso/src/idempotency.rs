//! Stored responses of `Idempotency-Key` requests: the one owner of the [`IDEMPOTENCY`]
//! expiring table. The HTTP middleware (idbridge-api) decides what to store and replays it;
//! this module keeps the records, typed, scoped by the API key that made the request.

use std::sync::Arc;

use base64::Engine as _;
use idbridge_store::{ChangeSet, ConflictKind, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::db::{self, now_ms};

/// `<sha256 hex of (api key digest, idempotency key)>` → [`IdempotencyEntry`] (expiring).
const IDEMPOTENCY: &str = "idempotency";

/// A request's record: running, or finished with its response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyEntry {
    /// The first request with this key is still running.
    InFlight {
        /// Hash of method, path, query and body.
        fingerprint: String,
    },
    /// The first request finished with this response.
    Done {
        fingerprint: String,
        status: u16,
        content_type: Option<String>,
        location: Option<String>,
        body: Vec<u8>,
    },
}

impl IdempotencyEntry {
    /// The fingerprint of the request that made the record.
    pub fn fingerprint(&self) -> &str {
        match self {
            IdempotencyEntry::InFlight { fingerprint }
            | IdempotencyEntry::Done { fingerprint, .. } => fingerprint,
        }
    }
}

/// The stored form (the body as base64, so the record stays JSON).
#[derive(Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Stored {
    InFlight {
        fingerprint: String,
    },
    Done {
        fingerprint: String,
        status: u16,
        content_type: Option<String>,
        location: Option<String>,
        body: String,
    },
}

fn encode(entry: &IdempotencyEntry) -> Result<Vec<u8>, StoreError> {
    let stored = match entry {
        IdempotencyEntry::InFlight { fingerprint } => Stored::InFlight {
            fingerprint: fingerprint.clone(),
        },
        IdempotencyEntry::Done {
            fingerprint,
            status,
            content_type,
            location,
            body,
        } => Stored::Done {
            fingerprint: fingerprint.clone(),
            status: *status,
            content_type: content_type.clone(),
            location: location.clone(),
            body: base64::engine::general_purpose::STANDARD.encode(body),
        },
    };
    serde_json::to_vec(&stored).map_err(|e| StoreError::Backend(format!("encoding: {e}")))
}

fn decode(slot: &str, bytes: &[u8]) -> Result<IdempotencyEntry, StoreError> {
    let corrupt = |e: String| StoreError::corrupt(IDEMPOTENCY, format!("{slot}: {e}"));
    Ok(match db::decode::<Stored>(IDEMPOTENCY, slot, bytes)? {
        Stored::InFlight { fingerprint } => IdempotencyEntry::InFlight { fingerprint },
        Stored::Done {
            fingerprint,
            status,
            content_type,
            location,
            body,
        } => IdempotencyEntry::Done {
            fingerprint,
            status,
            content_type,
            location,
            body: base64::engine::general_purpose::STANDARD
                .decode(body)
                .map_err(|e| corrupt(e.to_string()))?,
        },
    })
}

/// The record slot of an idempotency key: scoped by the API key, so two tenants' keys never
/// collide, and hashed, so neither key is stored.
pub fn slot(api_key: &str, idempotency_key: &str) -> String {
    idbridge_secrets::sha256_hex(&format!(
        "{}\n{idempotency_key}",
        crate::api_keys::digest(api_key)
    ))
}

/// What claiming a slot found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This request owns the slot now (an in-flight marker was stored).
    Claimed,
    /// Another request holds it.
    Taken(IdempotencyEntry),
    /// It expired between looking and claiming: try again.
    Vanished,
}

/// The owner of the idempotency records.
#[derive(Clone)]
pub struct Idempotency {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency").finish_non_exhaustive()
    }
}

impl Idempotency {
    /// Over a store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Idempotency { store }
    }

    /// Stores an in-flight marker (live for `ttl_ms`) unless the slot holds a live record.
    pub fn claim(&self, slot: &str, fingerprint: &str, ttl_ms: i64) -> Result<Claim, StoreError> {
        let marker = encode(&IdempotencyEntry::InFlight {
            fingerprint: fingerprint.to_owned(),
        })?;
        let now = now_ms();
        let mut cs = ChangeSet::new();
        cs.insert_expiring(IDEMPOTENCY, slot, marker, now.saturating_add(ttl_ms), now);
        match self.store.commit(cs) {
            Ok(_) => Ok(Claim::Claimed),
            Err(StoreError::Conflict {
                kind: ConflictKind::Live,
                ..
            }) => match self.store.get_expiring(IDEMPOTENCY, slot, now_ms())? {
                Some(bytes) => Ok(Claim::Taken(decode(slot, &bytes)?)),
                None => Ok(Claim::Vanished),
            },
            Err(e) => Err(e),
        }
    }

    /// Stores the finished request's response for `retention_ms`.
    pub fn finish(
        &self,
        slot: &str,
        entry: &IdempotencyEntry,
        retention_ms: i64,
    ) -> Result<(), StoreError> {
        let expires = now_ms().saturating_add(retention_ms);
        self.store
            .put_expiring(IDEMPOTENCY, slot, encode(entry)?, expires)
    }

    /// Frees the slot after a transient failure, so a retry runs the request again.
    pub fn release(&self, slot: &str) -> Result<(), StoreError> {
        let mut cs = ChangeSet::new();
        cs.delete_expiring(IDEMPOTENCY, slot);
        self.store.commit(cs).map(|_| ())
    }
}
