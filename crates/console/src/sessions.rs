//! Operator sessions: the one owner of the expiring [`SESSIONS`] table.
//!
//! The cookie holds a random id; the store keys the session by the id's SHA-256, so a copy of
//! the store does not hand out live sessions. A session ends at its idle timeout, at its
//! absolute lifetime, at logout, or when its operator is removed.

use std::time::Duration;

use idbridge_secrets::{random_token, sha256_hex};
use idbridge_store::{ChangeSet, Store, StoreError};
use serde::{Deserialize, Serialize};

/// `<sha256 hex of the session id>` → [`SessionRecord`] (expiring).
pub const SESSIONS: &str = "console_sessions";

/// A session's activity is written back at most this often (each write is a durable commit).
const TOUCH_EVERY_MS: i64 = 30_000;

/// How long sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Ends after this long without a request.
    pub idle: Duration,
    /// Ends this long after sign-in, however active.
    pub absolute: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            idle: Duration::from_secs(30 * 60),
            absolute: Duration::from_secs(12 * 3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub operator: String,
    /// The per-session token every form must carry.
    pub csrf: String,
    pub created_ms: i64,
    pub last_seen_ms: i64,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl SessionRecord {
    fn expires_ms(&self, policy: SessionPolicy) -> i64 {
        (self.last_seen_ms.saturating_add(ms(policy.idle)))
            .min(self.created_ms.saturating_add(ms(policy.absolute)))
    }
}

fn put(
    store: &dyn Store,
    key: &str,
    record: &SessionRecord,
    policy: SessionPolicy,
) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(record).map_err(|e| StoreError::Backend(e.to_string()))?;
    let mut cs = ChangeSet::new();
    cs.put_expiring(SESSIONS, key, bytes, record.expires_ms(policy));
    store.commit(cs).map(|_| ())
}

/// Starts a session for `operator`; returns the cookie value (shown to no one else).
pub fn start(
    store: &dyn Store,
    operator: &str,
    policy: SessionPolicy,
    now_ms: i64,
) -> Result<(String, SessionRecord), StoreError> {
    let id = random_token(32);
    let record = SessionRecord {
        operator: operator.to_string(),
        csrf: random_token(32),
        created_ms: now_ms,
        last_seen_ms: now_ms,
    };
    put(store, &sha256_hex(&id), &record, policy)?;
    Ok((id, record))
}

/// The live session of a cookie value, its activity refreshed; `None` when unknown, expired,
/// or its operator is gone.
pub fn resume(
    store: &dyn Store,
    id: &str,
    policy: SessionPolicy,
    now_ms: i64,
) -> Result<Option<SessionRecord>, StoreError> {
    if id.is_empty() || id.len() > 128 {
        return Ok(None);
    }
    let key = sha256_hex(id);
    let Some(bytes) = store.get_expiring(SESSIONS, &key, now_ms)? else {
        return Ok(None);
    };
    let Ok(mut record) = serde_json::from_slice::<SessionRecord>(&bytes) else {
        return Ok(None);
    };
    if record.expires_ms(policy) <= now_ms || !crate::operators::exists(store, &record.operator)? {
        end(store, id)?;
        return Ok(None);
    }
    if now_ms - record.last_seen_ms >= TOUCH_EVERY_MS {
        record.last_seen_ms = now_ms;
        put(store, &key, &record, policy)?;
    }
    Ok(Some(record))
}

/// Ends a session (logout).
pub fn end(store: &dyn Store, id: &str) -> Result<(), StoreError> {
    let mut cs = ChangeSet::new();
    cs.delete_expiring(SESSIONS, sha256_hex(id));
    store.commit(cs).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use idbridge_store::SqliteStore;

    const POLICY: SessionPolicy = SessionPolicy {
        idle: Duration::from_secs(60),
        absolute: Duration::from_secs(300),
    };

    fn store_with(operator: &str) -> SqliteStore {
        let store = SqliteStore::open_ephemeral().unwrap();
        crate::operators::add(&store, operator, "a long enough password").unwrap();
        store
    }

    #[test]
    fn idle_sessions_end() {
        let store = store_with("op");
        let (id, _) = start(&store, "op", POLICY, 1_000_000).unwrap();
        assert!(resume(&store, &id, POLICY, 1_000_000 + 59_000)
            .unwrap()
            .is_some());
        // Activity at +59 s moved the idle deadline to +119 s.
        assert!(resume(&store, &id, POLICY, 1_000_000 + 118_000)
            .unwrap()
            .is_some());
        assert!(resume(&store, &id, POLICY, 1_000_000 + 118_000 + 61_000)
            .unwrap()
            .is_none());
    }

    #[test]
    fn sessions_end_at_their_absolute_lifetime_however_active() {
        let store = store_with("op");
        let t0 = 1_000_000;
        let (id, _) = start(&store, "op", POLICY, t0).unwrap();
        let mut t = t0;
        while t < t0 + 290_000 {
            t += 40_000;
            let live = resume(&store, &id, POLICY, t).unwrap().is_some();
            assert_eq!(live, t < t0 + 300_000, "at +{} s", (t - t0) / 1000);
        }
    }

    #[test]
    fn logout_and_unknown_ids() {
        let store = store_with("op");
        let (id, record) = start(&store, "op", POLICY, 1_000).unwrap();
        assert_eq!(record.csrf.len(), 43, "32 random bytes, base64url");
        assert!(resume(&store, "", POLICY, 1_000).unwrap().is_none());
        assert!(resume(&store, "x", POLICY, 1_000).unwrap().is_none());
        // The store holds only the id's digest.
        assert!(store.get_expiring(SESSIONS, &id, 1_000).unwrap().is_none());
        end(&store, &id).unwrap();
        assert!(resume(&store, &id, POLICY, 1_001).unwrap().is_none());
    }
}
