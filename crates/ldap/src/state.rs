//! Per-directory sync state, kept in the store (table [`STATE_TABLE`], key = directory id) so
//! it survives restarts and the admin API, metrics and CLI all see the same picture.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use idbridge_directory::{DeltaOutcome, SnapshotOutcome};
use idbridge_store::{ChangeSet, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::error::SyncError;

/// Store table of [`SyncState`] records.
pub const STATE_TABLE: &str = "ldap.sync_state";

/// Full or delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncKind {
    /// Reads everything and reconciles, deletions included.
    Full,
    /// Reads what changed since the last cursor: adds and updates, and with RFC 4533
    /// cookies also deletions and moves out of scope.
    Delta,
}

/// Where the next delta starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeltaCursor {
    /// OpenLDAP / generic: the newest value of the change attribute seen (`entryCSN`, or
    /// `modifyTimestamp` in generalized time); the next delta asks for strictly newer.
    Stamp(String),
    /// AD: `highestCommittedUSN` read before the last run began.
    Usn(u64),
    /// RFC 4533 refreshOnly: one cookie per search.
    Sync(SyncCookies),
}

/// RFC 4533 cookies (hex of the server's opaque bytes), one per search base, so a delta asks
/// each search for exactly what changed in it, deletions and moves out of scope included.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncCookies {
    /// User base DN → cookie.
    pub users: BTreeMap<String, String>,
    /// Group base DN → cookie.
    pub groups: BTreeMap<String, String>,
    /// A delta's reply carried an empty cookie for some base: the server did not take up the
    /// cookie sent (slapd reads one it cannot parse as none and answers with an empty cookie;
    /// no cookie at all means the state did not move, and the one sent stays good). Such
    /// cookies still drive deltas, but a full sync seeds new ones instead of keeping them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unconfirmed: bool,
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Full or delta (None only in `Default`).
    pub kind: Option<SyncKind>,
    /// Start.
    pub started_at: Option<DateTime<Utc>>,
    /// Wall time.
    pub duration_ms: u64,
    /// Of which reading from the server (the rest is the engine's apply).
    #[serde(default)]
    pub read_ms: u64,
    /// Finished and applied.
    pub ok: bool,
    /// Users read from the server.
    pub users_read: u64,
    /// Groups read from the server.
    pub groups_read: u64,
    /// Users created.
    pub created: u64,
    /// Users updated.
    pub updated: u64,
    /// Users deleted.
    pub deleted: u64,
    /// Groups created, updated or deleted (the sum of the three below).
    pub groups_changed: u64,
    /// Groups created.
    #[serde(default)]
    pub groups_created: u64,
    /// Groups updated.
    #[serde(default)]
    pub groups_updated: u64,
    /// Groups deleted.
    #[serde(default)]
    pub groups_deleted: u64,
    /// Memberships added or removed.
    pub memberships_changed: u64,
    /// Events appended.
    pub events: u64,
    /// Why it failed (never contains secrets).
    pub error: Option<String>,
}

/// What a run's apply changed, as the engine counted it (full and delta runs alike).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counted {
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    pub groups_created: u64,
    pub groups_updated: u64,
    pub groups_deleted: u64,
    /// Added + removed.
    pub memberships: u64,
}

impl From<&SnapshotOutcome> for Counted {
    fn from(o: &SnapshotOutcome) -> Self {
        Counted {
            created: o.created,
            updated: o.updated,
            deleted: o.deleted,
            groups_created: o.groups_created,
            groups_updated: o.groups_updated,
            groups_deleted: o.groups_deleted,
            memberships: o.memberships_added + o.memberships_removed,
        }
    }
}

impl From<&DeltaOutcome> for Counted {
    fn from(o: &DeltaOutcome) -> Self {
        Counted {
            created: o.created,
            updated: o.updated,
            deleted: o.deleted,
            groups_created: o.groups_created,
            groups_updated: o.groups_updated,
            groups_deleted: o.groups_deleted,
            memberships: o.memberships_added + o.memberships_removed,
        }
    }
}

impl RunRecord {
    pub(crate) fn record_counts(&mut self, c: &Counted) {
        self.created = c.created;
        self.updated = c.updated;
        self.deleted = c.deleted;
        self.groups_created = c.groups_created;
        self.groups_updated = c.groups_updated;
        self.groups_deleted = c.groups_deleted;
        self.groups_changed = c.groups_created + c.groups_updated + c.groups_deleted;
        self.memberships_changed = c.memberships;
    }
}

/// A run the mass-deletion guard stopped, waiting for an admin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingGuard {
    /// Users the run would have deleted.
    pub would_delete: u64,
    /// Users in the directory.
    pub total: u64,
    /// Configured ratio.
    pub threshold: f64,
    /// The first directory user ids it would remove (for the admin who reviews it).
    #[serde(default)]
    pub sample: Vec<String>,
    /// When the guard tripped.
    pub at: DateTime<Utc>,
}

/// The sync state of one LDAP directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncState {
    /// Directory id.
    pub directory_id: String,
    /// Last full run.
    pub last_full: Option<RunRecord>,
    /// Last delta run.
    pub last_delta: Option<RunRecord>,
    /// Last successful full run's finish time.
    pub last_full_success_at: Option<DateTime<Utc>>,
    /// Error of the most recent run, if it failed.
    pub last_error: Option<String>,
    /// Set when a full sync was refused by the guard.
    pub pending_guard: Option<PendingGuard>,
    /// An admin confirmed: the next run may delete past the guard (consumed by a successful
    /// full run, or by a delta whose deletions needed it).
    pub deletion_confirmed: bool,
    /// Where the next delta starts (None: the next run must be a full sync).
    pub cursor: Option<DeltaCursor>,
    /// Next scheduled full run.
    pub next_full_at: Option<DateTime<Utc>>,
    /// Next scheduled delta run.
    pub next_delta_at: Option<DateTime<Utc>>,
    /// Runs so far.
    pub runs: u64,
    /// Failed runs so far.
    pub failures: u64,
}

/// Reads and writes [`SyncState`].
#[derive(Clone)]
pub struct StateStore {
    store: Arc<dyn Store>,
}

impl StateStore {
    /// Over a store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        StateStore { store }
    }

    /// The state (a fresh one when the directory never synced).
    pub fn load(&self, dir_id: &str) -> Result<SyncState, SyncError> {
        match self
            .store
            .get(STATE_TABLE, dir_id)
            .map_err(|e| SyncError::State(e.to_string()))?
        {
            Some(b) => serde_json::from_slice(&b).map_err(|e| SyncError::State(e.to_string())),
            None => Ok(SyncState {
                directory_id: dir_id.to_owned(),
                ..SyncState::default()
            }),
        }
    }

    /// Saves the state.
    pub fn save(&self, st: &SyncState) -> Result<(), SyncError> {
        let mut cs = ChangeSet::new();
        cs.put_json(STATE_TABLE, st.directory_id.clone(), st)
            .map_err(|e| SyncError::State(e.to_string()))?;
        self.store
            .commit(cs)
            .map_err(|e| SyncError::State(e.to_string()))?;
        Ok(())
    }

    /// An admin confirms the deletion the guard stopped: the next run applies it.
    /// `None` when nothing is pending.
    pub fn confirm_deletion(&self, dir_id: &str) -> Result<Option<SyncState>, SyncError> {
        let mut st = self.load(dir_id)?;
        if st.pending_guard.is_none() {
            return Ok(None);
        }
        st.deletion_confirmed = true;
        self.save(&st)?;
        Ok(Some(st))
    }

    /// Stages, into a delta's own commit, the cursor that covers it (and the admin's deletion
    /// confirmation the delta consumed), so the changes and the cursor land together. The
    /// state is re-read here, at commit time, and the put is conditional on it: a concurrent
    /// change to the state (an admin confirming) fails the commit rather than being lost.
    pub fn stage_cursor(
        &self,
        cs: &mut ChangeSet,
        dir_id: &str,
        cursor: Option<DeltaCursor>,
        consumed_confirmation: bool,
    ) -> Result<(), StoreError> {
        let old = self.store.get(STATE_TABLE, dir_id)?;
        let mut st: SyncState = match &old {
            Some(b) => serde_json::from_slice(b)
                .map_err(|e| StoreError::Backend(format!("{STATE_TABLE}/{dir_id}: {e}")))?,
            None => SyncState {
                directory_id: dir_id.to_owned(),
                ..SyncState::default()
            },
        };
        if let Some(c) = cursor {
            st.cursor = Some(c);
        }
        if consumed_confirmation {
            st.pending_guard = None;
            st.deletion_confirmed = false;
        }
        cs.require_equals(STATE_TABLE, dir_id, old);
        cs.put_json(STATE_TABLE, dir_id, &st)?;
        Ok(())
    }

    /// Load, change, save.
    pub fn update(
        &self,
        dir_id: &str,
        f: impl FnOnce(&mut SyncState),
    ) -> Result<SyncState, SyncError> {
        let mut st = self.load(dir_id)?;
        f(&mut st);
        self.save(&st)?;
        Ok(st)
    }
}
