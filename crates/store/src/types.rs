//! Plain data types of the store API: change sets, events, receipts, statistics.

use serde::Serialize;

use idbridge_model::Event;

use crate::error::{ConflictKind, Result, StoreError};
use crate::rows::{RowOp, RowValue, RowWrite, TableDef};

/// Write `value` under `key` in `table` (replacing any previous value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    /// Table name (free string chosen by the domain layer).
    pub table: String,
    /// Key; keys are compared as UTF-8 bytes.
    pub key: String,
    /// Value bytes (JSON by convention).
    pub value: Vec<u8>,
}

/// Remove `key` from `table` (no error if it is absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// Table name.
    pub table: String,
    /// Key.
    pub key: String,
}

/// Write `value` under `key` in expiring table `table`, live until `expires_at_ms` (Unix ms):
/// one-time codes, login sessions, tokens, replay-cache entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiringPut {
    /// Expiring table name (a namespace of its own: it never clashes with an ordinary table).
    pub table: String,
    /// Key.
    pub key: String,
    /// Value bytes.
    pub value: Vec<u8>,
    /// The entry is live while the clock is before this (Unix milliseconds).
    pub expires_at_ms: i64,
}

/// A precondition checked inside the transaction, before any write of the change set.
///
/// Expiring conditions name the instant they judge liveness at (`now_ms`: the caller's clock,
/// so a request sees one consistent "now"; an entry is live while `now_ms < expiry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The key must not exist (e.g. a unique index slot is free).
    Absent {
        /// Table name.
        table: String,
        /// Key.
        key: String,
    },
    /// The key must exist.
    Present {
        /// Table name.
        table: String,
        /// Key.
        key: String,
    },
    /// The current value must equal `value` (`None` = absent): optimistic concurrency.
    Equals {
        /// Table name.
        table: String,
        /// Key.
        key: String,
        /// Expected current value.
        value: Option<Vec<u8>>,
    },
    /// The expiring entry must be absent or expired at `now_ms` (a replay cache's first use).
    ExpiringVacant {
        /// Expiring table name.
        table: String,
        /// Key.
        key: String,
        /// Unix milliseconds liveness is judged at.
        now_ms: i64,
    },
    /// The expiring entry must be live at `now_ms` (a single-use code being taken).
    ExpiringLive {
        /// Expiring table name.
        table: String,
        /// Key.
        key: String,
        /// Unix milliseconds liveness is judged at.
        now_ms: i64,
    },
}

impl Condition {
    /// Table the condition reads.
    pub fn table(&self) -> &str {
        match self {
            Condition::Absent { table, .. }
            | Condition::Present { table, .. }
            | Condition::Equals { table, .. }
            | Condition::ExpiringVacant { table, .. }
            | Condition::ExpiringLive { table, .. } => table,
        }
    }

    /// Key the condition reads.
    pub fn key(&self) -> &str {
        match self {
            Condition::Absent { key, .. }
            | Condition::Present { key, .. }
            | Condition::Equals { key, .. }
            | Condition::ExpiringVacant { key, .. }
            | Condition::ExpiringLive { key, .. } => key,
        }
    }

    /// Whether the condition reads an expiring table.
    pub fn is_expiring(&self) -> bool {
        matches!(
            self,
            Condition::ExpiringVacant { .. } | Condition::ExpiringLive { .. }
        )
    }

    /// Whether the condition holds. `current` is the value in the store, if any; for expiring
    /// conditions, `expires_at_ms` is that entry's expiry (ignored for the others).
    pub fn holds(&self, current: Option<&[u8]>, expires_at_ms: Option<i64>) -> bool {
        let live = |now: &i64| current.is_some() && expires_at_ms.is_some_and(|exp| *now < exp);
        match self {
            Condition::Absent { .. } => current.is_none(),
            Condition::Present { .. } => current.is_some(),
            Condition::Equals { value, .. } => value.as_deref() == current,
            Condition::ExpiringVacant { now_ms, .. } => !live(now_ms),
            Condition::ExpiringLive { now_ms, .. } => live(now_ms),
        }
    }

    /// The typed conflict a failure of this condition reports.
    pub fn conflict(&self) -> StoreError {
        let kind = match self {
            Condition::Absent { .. } => ConflictKind::Exists,
            Condition::Present { .. } => ConflictKind::Missing,
            Condition::Equals { .. } => ConflictKind::Changed,
            Condition::ExpiringVacant { .. } => ConflictKind::Live,
            Condition::ExpiringLive { .. } => ConflictKind::NotLive,
        };
        StoreError::conflict(self.table(), self.key(), kind)
    }
}

/// An event to append to the log as part of a change set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// `event_<ULID>`, made by the caller; unique across the log.
    pub id: String,
    /// Event type, e.g. `dsync.user.created`.
    pub kind: String,
    /// Organization the event belongs to, if any (for filtered feeds).
    pub organization_id: Option<String>,
    /// Creation time, Unix milliseconds (used by retention).
    pub created_at_ms: i64,
    /// The full event JSON as served.
    pub body: Vec<u8>,
}

impl NewEvent {
    /// The log record of `event`: THE conversion from the model's event to the store's (its
    /// body is [`Event::to_compact_json`], the bytes webhooks sign and `/events` serves).
    pub fn from_event<D: Serialize>(event: &Event<D>, organization_id: Option<&str>) -> Self {
        NewEvent {
            id: event.id.clone(),
            kind: event.event.as_str().to_owned(),
            organization_id: organization_id.map(str::to_owned),
            created_at_ms: event.created_at.as_millis(),
            body: event.to_compact_json(),
        }
    }
}

/// An event as stored in the log, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in the log: starts at 1, +1 per event, in commit order.
    pub seq: u64,
    /// `event_<ULID>`.
    pub id: String,
    /// Event type.
    pub kind: String,
    /// Organization, if any.
    pub organization_id: Option<String>,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: i64,
    /// Full event JSON.
    pub body: Vec<u8>,
}

impl StoredEvent {
    /// Attaches a sequence number to a new event.
    pub fn from_new(seq: u64, event: NewEvent) -> Self {
        StoredEvent {
            seq,
            id: event.id,
            kind: event.kind,
            organization_id: event.organization_id,
            created_at_ms: event.created_at_ms,
            body: event.body,
        }
    }
}

/// An applied commit's place in the group-commit queue: pass it to
/// [`crate::Store::wait_durable`]. Nothing may be acknowledged until that returns.
#[must_use = "an applied commit is not durable until Store::wait_durable returns"]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PendingSync(pub(crate) Option<u64>);

/// What a successful commit reports back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitReceipt {
    /// The seqs given to the change set's events, in the order they were listed.
    pub event_seqs: Vec<u64>,
}

/// One atomic, durable write. Applied all-or-nothing; events appended in order.
///
/// Order inside the transaction: conditions are checked first, then deletes, then puts, then
/// row writes (in the order listed), then events; so a delete and a put of the same key leave
/// the put's value. Expiring entries follow the same order (expiring deletes, then expiring
/// puts).
///
/// Several owners may contribute to one change set (each stages its own tables), so a change
/// that spans them is still one atomic commit.
#[derive(Debug, Default, Clone)]
pub struct ChangeSet {
    /// Values to write.
    pub puts: Vec<Put>,
    /// Keys to remove.
    pub deletes: Vec<Delete>,
    /// Expiring entries to write.
    pub expiring_puts: Vec<ExpiringPut>,
    /// Expiring entries to remove (no error if absent).
    pub expiring_deletes: Vec<Delete>,
    /// Events to append, in order.
    pub events: Vec<NewEvent>,
    /// Preconditions; if any fails the commit returns [`StoreError::Conflict`] and writes nothing.
    pub conditions: Vec<Condition>,
    /// Typed row writes, applied in order (see [`crate::rows`]); a unique violation, an absent
    /// row or a version mismatch fails the change set like a failed condition.
    pub rows: Vec<RowWrite>,
}

impl ChangeSet {
    /// An empty change set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(
        &mut self,
        table: impl Into<String>,
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.puts.push(Put {
            table: table.into(),
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Adds a put of `value` serialized as JSON.
    pub fn put_json<T: Serialize + ?Sized>(
        &mut self,
        table: impl Into<String>,
        key: impl Into<String>,
        value: &T,
    ) -> Result<&mut Self> {
        let table = table.into();
        let key = key.into();
        let bytes = serde_json::to_vec(value)
            .map_err(|e| StoreError::backend(&format!("serializing {table}/{key}"), e))?;
        Ok(self.put(table, key, bytes))
    }

    /// Adds a delete.
    pub fn delete(&mut self, table: impl Into<String>, key: impl Into<String>) -> &mut Self {
        self.deletes.push(Delete {
            table: table.into(),
            key: key.into(),
        });
        self
    }

    /// Appends an event.
    pub fn event(&mut self, event: NewEvent) -> &mut Self {
        self.events.push(event);
        self
    }

    /// Appends `event` (converted with [`NewEvent::from_event`]).
    pub fn append_event<D: Serialize>(
        &mut self,
        event: &Event<D>,
        organization_id: Option<&str>,
    ) -> &mut Self {
        self.event(NewEvent::from_event(event, organization_id))
    }

    /// Writes an expiring entry (replacing any previous one under the key).
    pub fn put_expiring(
        &mut self,
        table: impl Into<String>,
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
        expires_at_ms: i64,
    ) -> &mut Self {
        self.expiring_puts.push(ExpiringPut {
            table: table.into(),
            key: key.into(),
            value: value.into(),
            expires_at_ms,
        });
        self
    }

    /// Writes an expiring entry only if none is live under the key at `now_ms` (a replay
    /// cache's insert): the commit fails with [`ConflictKind::Live`] otherwise.
    pub fn insert_expiring(
        &mut self,
        table: impl Into<String>,
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> &mut Self {
        let (table, key) = (table.into(), key.into());
        self.conditions.push(Condition::ExpiringVacant {
            table: table.clone(),
            key: key.clone(),
            now_ms,
        });
        self.put_expiring(table, key, value, expires_at_ms)
    }

    /// Removes an expiring entry that is live at `now_ms` (single use): the commit fails with
    /// [`ConflictKind::NotLive`] if it is absent or expired, so two takes cannot both commit.
    /// Read the value first with [`crate::Store::get_expiring`].
    pub fn take_expiring(
        &mut self,
        table: impl Into<String>,
        key: impl Into<String>,
        now_ms: i64,
    ) -> &mut Self {
        let (table, key) = (table.into(), key.into());
        self.conditions.push(Condition::ExpiringLive {
            table: table.clone(),
            key: key.clone(),
            now_ms,
        });
        self.delete_expiring(table, key)
    }

    /// Removes an expiring entry (no error if absent).
    pub fn delete_expiring(
        &mut self,
        table: impl Into<String>,
        key: impl Into<String>,
    ) -> &mut Self {
        self.expiring_deletes.push(Delete {
            table: table.into(),
            key: key.into(),
        });
        self
    }

    /// Requires `table/key` to be absent.
    pub fn require_absent(
        &mut self,
        table: impl Into<String>,
        key: impl Into<String>,
    ) -> &mut Self {
        self.conditions.push(Condition::Absent {
            table: table.into(),
            key: key.into(),
        });
        self
    }

    /// Requires `table/key` to exist.
    pub fn require_present(
        &mut self,
        table: impl Into<String>,
        key: impl Into<String>,
    ) -> &mut Self {
        self.conditions.push(Condition::Present {
            table: table.into(),
            key: key.into(),
        });
        self
    }

    /// Requires `table/key` to hold exactly `value` (`None` = absent).
    pub fn require_equals(
        &mut self,
        table: impl Into<String>,
        key: impl Into<String>,
        value: Option<Vec<u8>>,
    ) -> &mut Self {
        self.conditions.push(Condition::Equals {
            table: table.into(),
            key: key.into(),
            value,
        });
        self
    }

    /// Adds a row ([`RowOp::Insert`]): `values` in `table`'s column order.
    pub fn insert_row(&mut self, table: &'static TableDef, values: Vec<RowValue>) -> &mut Self {
        self.row(table, RowOp::Insert, values)
    }

    /// Adds or replaces a row by primary key ([`RowOp::Upsert`]).
    pub fn upsert_row(&mut self, table: &'static TableDef, values: Vec<RowValue>) -> &mut Self {
        self.row(table, RowOp::Upsert, values)
    }

    /// Replaces an existing row ([`RowOp::Update`]), checking its version when given.
    pub fn update_row(
        &mut self,
        table: &'static TableDef,
        values: Vec<RowValue>,
        expect_version: Option<i64>,
    ) -> &mut Self {
        self.row(table, RowOp::Update { expect_version }, values)
    }

    /// Removes the row with primary key `key` ([`RowOp::Delete`]; no error if absent).
    pub fn delete_row(&mut self, table: &'static TableDef, key: Vec<RowValue>) -> &mut Self {
        self.row(table, RowOp::Delete, key)
    }

    fn row(&mut self, table: &'static TableDef, op: RowOp, values: Vec<RowValue>) -> &mut Self {
        self.rows.push(RowWrite { table, op, values });
        self
    }

    /// Appends everything from `other` (lets the domain layer build one commit from parts).
    pub fn extend(&mut self, other: ChangeSet) -> &mut Self {
        self.puts.extend(other.puts);
        self.deletes.extend(other.deletes);
        self.expiring_puts.extend(other.expiring_puts);
        self.expiring_deletes.extend(other.expiring_deletes);
        self.events.extend(other.events);
        self.conditions.extend(other.conditions);
        self.rows.extend(other.rows);
        self
    }

    /// True when there is nothing to check and nothing to write.
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty() && !self.has_writes()
    }

    /// True when the change set writes something (conditions alone do not).
    pub fn has_writes(&self) -> bool {
        !(self.puts.is_empty()
            && self.deletes.is_empty()
            && self.expiring_puts.is_empty()
            && self.expiring_deletes.is_empty()
            && self.events.is_empty()
            && self.rows.is_empty())
    }
}

/// Counters for metrics and for the durability tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Successful `commit` calls (acknowledged change sets; the expiring-entry helpers of
    /// [`crate::Store`] commit change sets too).
    pub commits: u64,
    /// Change sets rejected because a condition failed.
    pub conflicts: u64,
    /// Every acknowledged write that waited for a sync (commits + expiring-table writes + ...).
    pub durable_writes: u64,
    /// `sled::Db::flush` calls.
    pub flushes: u64,
    /// `fdatasync` calls on sled's data file (the seam the durability test watches).
    pub fdatasyncs: u64,
    /// `fsync` calls on the data directory or on files sled created (snapshots, blobs).
    pub dir_fsyncs: u64,
    /// Sync rounds run by a group-commit leader.
    pub sync_groups: u64,
    /// Largest number of writes one sync round made durable.
    pub max_group_size: u64,
    /// Total time writers held the apply lock (transaction apply, serialized), nanoseconds.
    /// SQLite: the writer thread's busy time (apply + COMMIT).
    pub apply_nanos: u64,
    /// SQLite: WAL checkpoints run off the writer's path (0 for sled).
    pub checkpoints: u64,
    /// Longest sync round since open, microseconds (what a write waits for at worst).
    pub slowest_sync_micros: u64,
    /// SQLite: longest WAL checkpoint since open, microseconds.
    pub slowest_checkpoint_micros: u64,
    /// SQLite: longest batch on the writer thread (apply + COMMIT), microseconds.
    pub slowest_batch_micros: u64,
}

impl StoreStats {
    /// Average number of writes covered by one sync round (0 when none ran).
    pub fn mean_group_size(&self) -> f64 {
        if self.sync_groups == 0 {
            0.0
        } else {
            self.durable_writes as f64 / self.sync_groups as f64
        }
    }
}
