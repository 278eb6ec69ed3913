//! idbridge-store: the durable store behind idbridge.
//!
//! A deliberately generic store: ordered key/value tables holding (JSON) bytes, an ordered
//! event log read by cursor, and expiring tables for one-time codes and replay caches. The
//! domain layer decides keys and builds index entries; the store makes each [`ChangeSet`]
//! atomic and durable. A change set carries entity writes, expiring entries (put,
//! insert-if-vacant, take) and events together, so a change and its events — a whole login,
//! say — are one commit.
//!
//! Typed rows ([`rows`]): tables with columns, a primary key and real secondary indexes,
//! declared by their owner ([`TableDef`]), created by the owner's versioned migrations
//! ([`Store::migrate_owner`]) and written inside the same change sets ([`ChangeSet::insert_row`]
//! and friends) — the relational shape issue 17 moves the directory to. Read with
//! [`Store::get_row`], [`Store::find_unique`], [`Store::scan_index`].
//!
//! Tables belong to the domain: each has exactly one owning module (which declares its name,
//! its typed record and codec); other crates go through that owner. A backend only ever sees
//! change sets, reads and the event log — which is all a relational backend needs to implement.
//!
//! Backends: [`SqliteStore`] (one SQLite file, WAL, one writer thread with group commit), the
//! embedded default; [`PgStore`] (PostgreSQL, shared by several nodes; see its module docs for
//! how it keeps the same semantics: advisory key locks for conditions, a counter row for
//! gap-free event seqs visible in commit order).
//! Releases before it wrote sled; sled is no longer a backend: [`migrate_sled_dir`] reads a
//! sled data directory (upstream `sled` 0.34.7, the only use of the crate) and moves it to
//! SQLite.
//!
//! Durability contract: a write is acknowledged only after it is on disk. A backend splits
//! apply from durability ([`Store::commit_applied`] then [`Store::wait_durable`]):
//! concurrent writers share one sync round (group commit) that started after they applied —
//! see [`DurabilityProbe`]. SQLite: the writer thread COMMITs under `synchronous=NORMAL`
//! (written to the WAL, not synced) and the round `fdatasync`s the `-wal` file.
//!
//! Visibility: entity reads (`get`, `scan`) can observe a change set that applied but is not
//! yet durable. The event log only exposes events that are durable, so a consumer's cursor can
//! never move past a seq that a crash could hand out again.

mod codec;
mod durability;
mod error;
mod export;
mod migrate;
mod page;
mod pg;
pub mod rows;
mod sled_reader;
mod sqlite;
mod types;

pub use durability::DurabilityProbe;
pub use error::{ConflictKind, Result, StoreError, EVENT_LOG};
pub use export::ExportRecord;
pub use migrate::{holds_sled_store, migrate_sled_dir, SledMigration};
pub use page::page;
pub use pg::{PgOptions, PgStore};
pub use rows::{
    Column, ColumnType, IndexDef, OwnerMigration, OwnerSchema, Row, RowOp, RowValue, RowWrite,
    TableDef,
};
pub use sqlite::{
    backup_sqlite_file, list_backups, BackupFile, BackupSummary, SqliteOptions, SqliteStore,
    SQLITE_FILE_NAME,
};
pub use types::{
    ChangeSet, CommitReceipt, Condition, Delete, ExpiringPut, NewEvent, PendingSync, Put,
    StoreStats, StoredEvent,
};

/// A fresh directory name for a throwaway store: under `/dev/shm` (the temp dir if there is
/// none), unique per process and call. Backends' `open_ephemeral` use it.
fn ephemeral_dir(kind: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    base.join(format!(
        "idbridge-{kind}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

fn no_rows(what: &str) -> StoreError {
    StoreError::Backend(format!("this store backend has no typed rows ({what})"))
}

/// The storage interface every backend implements (SQLite; PostgreSQL later).
///
/// All calls block; async callers use `spawn_blocking`.
pub trait Store: Send + Sync + 'static {
    /// Applies atomically and returns only after the data is durable (flush + fdatasync, shared by
    /// concurrent committers = group commit). Blocking call (async callers use spawn_blocking).
    ///
    /// A failed condition returns [`StoreError::Conflict`] (naming the entry and the failed
    /// precondition) with nothing written. A reused event id is a conflict too.
    fn commit(&self, changes: ChangeSet) -> Result<CommitReceipt> {
        let (receipt, pending) = self.commit_applied(changes)?;
        self.wait_durable(pending)?;
        Ok(receipt)
    }

    /// [`Store::commit`] in two steps: applies now (entity reads see the changes at once; the
    /// event log does not until they are durable) and returns the sync to wait for with
    /// [`Store::wait_durable`] before anything is acknowledged. A caller that serializes its
    /// own writes (the directory engine's per-directory lock) releases its lock in between, so
    /// concurrent writers share one group-commit sync instead of queueing one sync each.
    fn commit_applied(&self, changes: ChangeSet) -> Result<(CommitReceipt, PendingSync)>;

    /// Blocks until the commit that handed out `pending` is durable (flushed and fdatasync'ed).
    fn wait_durable(&self, pending: PendingSync) -> Result<()>;

    /// The value under `table/key`, if any.
    fn get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>>;

    /// Keys in byte order, starting strictly after `after` (if Some), all with `prefix`, at most `limit`.
    fn scan(
        &self,
        table: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>>;

    /// Calls `f(key, value)` for every key starting with `prefix`, in byte order, until `f`
    /// returns `false`. One ordered pass without collecting pages: for bulk readers (a full
    /// snapshot reads a million-row index). `f` must not write to the store. The default
    /// reads [`Store::scan`] pages.
    fn for_each_prefixed(
        &self,
        table: &str,
        prefix: &str,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        const PAGE: usize = 1000;
        let mut after: Option<String> = None;
        loop {
            let rows = self.scan(table, prefix, after.as_deref(), PAGE)?;
            for (k, v) in &rows {
                if !f(k.as_bytes(), v) {
                    return Ok(());
                }
            }
            match rows.into_iter().last() {
                Some((k, _)) => after = Some(k),
                None => return Ok(()),
            }
        }
    }

    /// Same but descending: keys strictly before `before` (if Some).
    fn scan_rev(
        &self,
        table: &str,
        prefix: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>>;

    /// Number of keys in `table` starting with `prefix`.
    fn count_prefix(&self, table: &str, prefix: &str) -> Result<u64>;

    /// Event log: seq starts at 1, strictly increasing by 1 with no gaps, in commit order.
    /// Returns events with seq > `after_seq`, oldest first, at most `limit`.
    fn events_after(&self, after_seq: u64, limit: usize) -> Result<Vec<StoredEvent>>;

    /// id -> seq, for cursors (None if unknown or compacted away).
    fn event_seq(&self, event_id: &str) -> Result<Option<u64>>;

    /// Highest durable event seq; 0 when no event was ever appended.
    fn last_event_seq(&self) -> Result<u64>;

    /// Drops events older than the cutoff (retention). Returns how many were removed. The seqs of
    /// the remaining events do not change; events_after(0, ..) then starts at the oldest kept.
    ///
    /// Only a prefix of the log is removed (it stops at the first event at or after the
    /// cutoff), so the kept log stays contiguous even if callers' clocks were not monotonic.
    fn compact_events_before(&self, cutoff_ms: i64) -> Result<u64>;

    /// Writes an expiring entry in its own commit ([`ChangeSet::put_expiring`] joins a
    /// bigger one).
    fn put_expiring(
        &self,
        table: &str,
        key: &str,
        value: Vec<u8>,
        expires_at_ms: i64,
    ) -> Result<()> {
        let mut cs = ChangeSet::new();
        cs.put_expiring(table, key, value, expires_at_ms);
        self.commit(cs).map(|_| ())
    }

    /// Insert only if absent or expired; false if a live entry exists (replay cache). Atomic.
    /// "Expired" is judged against the system clock (an entry is live while now < expiry).
    fn insert_expiring_if_absent(
        &self,
        table: &str,
        key: &str,
        value: Vec<u8>,
        expires_at_ms: i64,
    ) -> Result<bool> {
        let mut cs = ChangeSet::new();
        let now = idbridge_model::Timestamp::now().as_millis();
        cs.insert_expiring(table, key, value, expires_at_ms, now);
        match self.commit(cs) {
            Ok(_) => Ok(true),
            Err(e) if e.conflict_on().is_some() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Atomically remove and return a live entry (single-use codes); None if absent or expired
    /// (or taken by a concurrent caller). The removal is durable before the value is
    /// returned, so a crash cannot revive a code.
    fn take_expiring(&self, table: &str, key: &str, now_ms: i64) -> Result<Option<Vec<u8>>> {
        let Some(value) = self.get_expiring(table, key, now_ms)? else {
            return Ok(None);
        };
        let mut cs = ChangeSet::new();
        cs.take_expiring(table, key, now_ms);
        match self.commit(cs) {
            Ok(_) => Ok(Some(value)),
            Err(e) if e.conflict_on().is_some() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A live entry's value, without removing it.
    fn get_expiring(&self, table: &str, key: &str, now_ms: i64) -> Result<Option<Vec<u8>>>;

    /// Removes every entry of every expiring table with expiry <= `now_ms`; returns the count.
    fn purge_expired(&self, now_ms: i64) -> Result<u64>;

    /// Whole-store dump for `idbridge export` (JSON lines are made by the caller). Writers are
    /// blocked while it runs, so the dump is consistent; `sink` must not write to the store.
    fn export(&self, sink: &mut dyn FnMut(ExportRecord) -> Result<()>) -> Result<()>;

    /// Loads a dump into an empty store ([`StoreError::Conflict`] otherwise); returns the number
    /// of records loaded. Not atomic: on error, discard the target store and retry.
    fn import(&self, records: &mut dyn Iterator<Item = Result<ExportRecord>>) -> Result<u64>;

    /// Runs the pending migrations of `schema`'s owner (each in its own transaction, recorded
    /// once; a second call does nothing) and returns the owner's schema version. Owners call
    /// it before touching their tables.
    fn migrate_owner(&self, schema: &rows::OwnerSchema) -> Result<i64> {
        Err(no_rows(schema.owner))
    }

    /// The row of `table` with primary key `key` (values in primary-key order).
    fn get_row(&self, table: &rows::TableDef, key: &[rows::RowValue]) -> Result<Option<Row>> {
        let _ = key;
        Err(no_rows(table.name))
    }

    /// The row whose unique index `index` holds `values` (one per index term).
    fn find_unique(
        &self,
        table: &rows::TableDef,
        index: &str,
        values: &[rows::RowValue],
    ) -> Result<Option<Row>> {
        let _ = (index, values);
        Err(no_rows(table.name))
    }

    /// Rows in the order of index `index` ([`rows::PRIMARY`] for the primary key), whose
    /// first terms equal `prefix`; the order is the index terms then the primary-key columns
    /// not among them. `after` continues a page: the values of that order's columns that
    /// follow the prefix, taken from the last row of the previous page. At most `limit`.
    fn scan_index(
        &self,
        table: &rows::TableDef,
        index: &str,
        prefix: &[rows::RowValue],
        after: Option<&[rows::RowValue]>,
        limit: usize,
    ) -> Result<Vec<Row>> {
        let _ = (index, prefix, after, limit);
        Err(no_rows(table.name))
    }

    /// Number of rows whose first terms of index `index` equal `prefix`.
    fn count_index(
        &self,
        table: &rows::TableDef,
        index: &str,
        prefix: &[rows::RowValue],
    ) -> Result<u64> {
        let _ = (index, prefix);
        Err(no_rows(table.name))
    }

    /// Counters: commits, fdatasyncs (the seam for the durability test), flushes, group sizes.
    fn stats(&self) -> StoreStats;

    /// Online backup: a consistent copy of the whole store in the new file `dest`, taken while
    /// writers go on (see [`backup_sqlite_file`]). Backends without one say so.
    fn backup_to(&self, dest: &std::path::Path) -> Result<BackupSummary> {
        Err(StoreError::Backend(format!(
            "this store has no online backup (cannot write {}): stop the server and use \
             `idbridge export`",
            dest.display()
        )))
    }

    /// Where online backups go unless told otherwise: `<data dir>/backups` (None: the backend
    /// has no online backup).
    fn backup_dir(&self) -> Option<std::path::PathBuf> {
        None
    }
}
