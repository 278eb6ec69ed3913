//! The embedded default backend: one SQLite file (bundled SQLite, WAL).
//!
//! * Writes go through ONE writer thread ([`writer`]): queued change sets, one SAVEPOINT each,
//!   one COMMIT per batch under `synchronous=NORMAL` (written to the WAL, not synced); the
//!   caller gets "applied" at once and waits for durability in [`Store::wait_durable`]: a
//!   group `fdatasync` of the `-wal` file ([`wal`]) shared by every commit before it — the
//!   same group commit as sled's ([`GroupCommit`]), the same guarantee as `synchronous=FULL`.
//! * Reads use a small pool of connections of their own (WAL: readers never block the
//!   writer). Entity reads see applied data (like sled); the event log shows only events
//!   known durable, so a consumer's cursor never passes a seq a crash could hand out again.
//! * Checkpoints run off the writer's path: `wal_autocheckpoint` is off on the writer and a
//!   checkpointer thread runs PASSIVE checkpoints from its own connection on a timer.
//! * The schema is versioned; migrations run at open ([`schema`]).

mod backup;
pub(crate) mod rows;
mod schema;
mod wal;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use self::schema::{quoted, sql_name, EXPIRING_PREFIX, TABLE_PREFIX};
use self::writer::{CommitReply, Job, Shared, Writer};
use crate::codec::prefix_end;
use crate::durability::{DurabilityProbe, GroupCommit};
use crate::error::{Result, StoreError};
use crate::export::{import_in_chunks, ExportRecord};
use crate::rows::{OwnerSchema, Row, RowValue, TableDef};
use crate::types::{ChangeSet, CommitReceipt, PendingSync, StoreStats, StoredEvent};
use crate::Store;

pub use self::backup::{backup_sqlite_file, list_backups, BackupFile, BackupSummary};

/// The database file's name inside a data directory.
pub const SQLITE_FILE_NAME: &str = "idbridge.sqlite3";

/// Rows per transaction for compaction and import (keeps the writer available between them).
const CHUNK: usize = 5000;

/// Options for [`SqliteStore::open_with`].
#[derive(Clone)]
pub struct SqliteOptions {
    /// Observer / fault injector of the group commit (tests, metrics).
    pub probe: Option<Arc<dyn DurabilityProbe>>,
    /// Page cache of the writer connection, MiB (readers get a quarter each).
    pub cache_mb: u64,
    /// How often the checkpointer copies the WAL into the database file (PASSIVE). Short, so
    /// each checkpoint (and its fdatasync of the database file) stays small: at 500 ms the
    /// forward bench's steady-state lag had a p99 of 1.1–1.4 s, at 100 ms 0.10 s (issue 15).
    pub checkpoint_interval: Duration,
    /// Read connections kept open.
    pub readers: usize,
    /// The WAL is truncated back to this size after a checkpoint reset it (bytes).
    pub journal_size_limit: u64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            probe: None,
            cache_mb: 64,
            checkpoint_interval: Duration::from_millis(100),
            readers: 4,
            journal_size_limit: 64 << 20,
        }
    }
}

impl std::fmt::Debug for SqliteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteOptions")
            .field("probe", &self.probe.is_some())
            .field("cache_mb", &self.cache_mb)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("readers", &self.readers)
            .finish()
    }
}

/// The SQLite-backed [`Store`].
pub struct SqliteStore {
    path: PathBuf,
    options: SqliteOptions,
    shared: Arc<Shared>,
    group: Arc<GroupCommit>,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    readers: Mutex<Vec<Connection>>,
    checkpointer: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
    /// Removed on drop (ephemeral stores).
    temporary_dir: Option<PathBuf>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn sql_err(context: &str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::backend(context, e)
}

fn open_connection(path: &Path, options: &SqliteOptions, cache_mb: u64) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::backend(&format!("opening {}", path.display()), e))?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(sql_err("setting the busy timeout"))?;
    conn.set_prepared_statement_cache_capacity(128);
    let cache_kib = cache_mb.max(1).saturating_mul(1024);
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA wal_autocheckpoint = 0;
         PRAGMA journal_size_limit = {};
         PRAGMA cache_size = -{cache_kib};
         PRAGMA temp_store = MEMORY;",
        options.journal_size_limit
    ))
    .map_err(|e| StoreError::backend(&format!("configuring {}", path.display()), e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(sql_err("reading journal_mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "{} cannot use WAL mode (got {mode}): put the data directory on a local file system",
            path.display()
        )));
    }
    Ok(conn)
}

impl SqliteStore {
    /// Opens (or creates) the store in data directory `dir` (`dir/idbridge.sqlite3`).
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, SqliteOptions::default())
    }

    /// Opens (or creates) the store in data directory `dir` with options.
    pub fn open_with(dir: &Path, options: SqliteOptions) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::backend(&format!("creating {}", dir.display()), e))?;
        Self::open_file(&dir.join(SQLITE_FILE_NAME), options)
    }

    /// A throwaway store for tests: in `/dev/shm` (the temp dir if there is none), deleted
    /// when dropped. The real code path (writer thread, WAL, COMMIT syncs) on a tmpfs, where
    /// syncs cost nothing. Never use it for data.
    pub fn open_ephemeral() -> Result<Self> {
        let dir = crate::ephemeral_dir("sqlite");
        let options = SqliteOptions {
            cache_mb: 8,
            readers: 2,
            ..SqliteOptions::default()
        };
        let mut store = Self::open_with(&dir, options)?;
        store.temporary_dir = Some(dir);
        Ok(store)
    }

    /// Opens (or creates) the store in the database file `path`.
    pub fn open_file(path: &Path, options: SqliteOptions) -> Result<Self> {
        let _span = tracing::info_span!("store.open", path = %path.display()).entered();
        let mut conn = open_connection(path, &options, options.cache_mb)?;
        schema::migrate(&mut conn)?;
        let shared = Arc::new(Shared::default());
        {
            let tables = schema::store_tables(&conn)?;
            let mut known = shared
                .known_tables
                .write()
                .unwrap_or_else(|p| p.into_inner());
            known.extend(tables);
        }
        let last_seq = schema::last_seq(&conn)?;
        // Commits are written, not synced: the group commit syncs the WAL (see `wal`).
        conn.execute_batch("PRAGMA synchronous = NORMAL")
            .map_err(sql_err("setting synchronous = NORMAL"))?;
        let group = Arc::new(GroupCommit::new(
            Box::new(wal::WalFile::open(path)?),
            last_seq,
            options.probe.clone(),
        )?);
        let (tx, rx) = mpsc::channel::<Job>();
        let writer = Writer::new(conn, Arc::clone(&shared), Arc::clone(&group));
        let writer = std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::backend("starting the store writer thread", e))?;
        let checkpointer = Self::start_checkpointer(path, &options, Arc::clone(&shared))?;
        tracing::info!(last_event_seq = last_seq, "store opened (SQLite)");
        Ok(SqliteStore {
            path: path.to_path_buf(),
            options,
            shared,
            group,
            jobs: Some(tx),
            writer: Some(writer),
            readers: Mutex::new(Vec::new()),
            checkpointer: Some(checkpointer),
            temporary_dir: None,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open file.
    pub fn schema_version(&self) -> Result<i64> {
        self.with_reader(schema::version)
    }

    /// The schema version this build writes (a newer file is refused at open).
    pub fn current_schema_version() -> i64 {
        schema::current_version()
    }

    fn start_checkpointer(
        path: &Path,
        options: &SqliteOptions,
        shared: Arc<Shared>,
    ) -> Result<(mpsc::Sender<()>, JoinHandle<()>)> {
        let conn = open_connection(path, options, 2)?;
        let interval = options.checkpoint_interval;
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("sqlite-checkpoint".to_owned())
            .spawn(move || {
                // Until told to stop (or the store is gone).
                while let Err(mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(interval) {
                    // PASSIVE: copies what it can without waiting for (or blocking) the writer.
                    let started = std::time::Instant::now();
                    let outcome: rusqlite::Result<(i64, i64, i64)> =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        });
                    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(0);
                    shared
                        .slowest_checkpoint_micros
                        .fetch_max(micros, Ordering::Relaxed);
                    match outcome {
                        Ok((_, log, done)) if log > 0 => {
                            shared.checkpoints.fetch_add(1, Ordering::Relaxed);
                            tracing::trace!(wal_frames = log, checkpointed = done, "checkpoint");
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; will retry"),
                    }
                }
            })
            .map_err(|e| StoreError::backend("starting the checkpoint thread", e))?;
        Ok((stop_tx, handle))
    }

    fn send(&self, job: Job) -> Result<()> {
        self.jobs
            .as_ref()
            .ok_or_else(|| StoreError::Backend("the store is closed".to_owned()))?
            .send(job)
            .map_err(|_| StoreError::Backend("the store's writer thread stopped".to_owned()))
    }

    /// Runs `f` on the writer thread between batches and returns its result.
    fn exclusive<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Writer) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Job::Exclusive(Box::new(move |w| {
            let _ = tx.send(f(w));
        })))?;
        rx.recv()
            .map_err(|_| StoreError::Backend("the store's writer thread stopped".to_owned()))?
    }

    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = open_connection(&self.path, &self.options, self.options.cache_mb / 4)?;
                c.execute_batch("PRAGMA query_only = ON")
                    .map_err(sql_err("configuring a read connection"))?;
                c
            }
        };
        let out = f(&conn);
        if conn.is_autocommit() {
            let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < self.options.readers {
                pool.push(conn);
            }
        }
        out
    }

    /// Whether store table `name` (SQL name) exists, as `conn` sees it.
    fn table_exists(&self, conn: &Connection, name: &str) -> Result<bool> {
        if self
            .shared
            .known_tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
        {
            return Ok(true);
        }
        let found = schema::table_exists(conn, name)?;
        if found {
            self.shared
                .known_tables
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.to_owned());
        }
        Ok(found)
    }

    /// Rows of `table` in key order (`descending` reverses), between the bounds of `range`.
    fn select_range(
        &self,
        table: &str,
        range: KeyRange,
        descending: bool,
        limit: usize,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        if limit == 0 || range.empty {
            return Ok(());
        }
        let name = sql_name(false, table);
        self.with_reader(|conn| {
            if !self.table_exists(conn, &name)? {
                return Ok(());
            }
            let (clause, mut args) = range.clause();
            let order = if descending { "DESC" } else { "ASC" };
            let sql = format!(
                "SELECT key, value FROM {} WHERE {clause} ORDER BY key {order} LIMIT ?{}",
                quoted(&name),
                args.len() + 1
            );
            args.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
            let mut stmt = conn.prepare_cached(&sql).map_err(sql_err("scan"))?;
            let mut rows = stmt
                .query(rusqlite::params_from_iter(args))
                .map_err(sql_err("scan"))?;
            while let Some(row) = rows.next().map_err(sql_err("scan"))? {
                let key = row.get_ref(0).map_err(sql_err("scan"))?;
                let key = key
                    .as_str()
                    .map(str::as_bytes)
                    .map_err(|e| StoreError::corrupt(table, format!("key: {e}")))?;
                let value = row.get_ref(1).map_err(sql_err("scan"))?;
                let value = value
                    .as_blob()
                    .map_err(|e| StoreError::corrupt(table, format!("value: {e}")))?;
                if !f(key, value) {
                    break;
                }
            }
            Ok(())
        })
    }

    /// Highest event seq readers may see: durable events only. This handle knows which of its
    /// own commits are durable; events another handle on the same file committed (another
    /// process, say) are made durable by a sync round before they are shown.
    fn visible_event_seq(&self, conn: &Connection) -> Result<u64> {
        let durable = self.group.durable_event_seq();
        let committed = schema::last_seq(conn)?;
        if committed <= durable || committed <= self.group.applied_event_seq() {
            // Ours: the sync covering them is on its way (their committers wait for it).
            return Ok(durable);
        }
        self.group.wait_event_durable(committed)?;
        Ok(committed)
    }

    fn is_empty_store(conn: &Connection) -> Result<bool> {
        for name in schema::store_tables(conn)? {
            let any: Option<i64> = conn
                .query_row(
                    &format!("SELECT 1 FROM {} LIMIT 1", quoted(&name)),
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql_err("checking emptiness"))?;
            if any.is_some() {
                return Ok(false);
            }
        }
        let events: i64 = conn
            .query_row(
                "SELECT count(*) FROM (SELECT 1 FROM events LIMIT 1)",
                [],
                |r| r.get(0),
            )
            .map_err(sql_err("checking emptiness"))?;
        Ok(events == 0 && schema::last_seq(conn)? == 0 && !rows::any_row(conn)?)
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.checkpointer.take() {
            let _ = stop.send(());
            let _ = handle.join();
        }
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        drop(self.jobs.take());
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
        if let Some(dir) = self.temporary_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A key range in SQL: `key >= prefix` (or `> after`) and `key < end` (or `< before`).
struct KeyRange {
    lower: Option<(&'static str, Value)>,
    upper: Option<(&'static str, Value)>,
    empty: bool,
}

impl KeyRange {
    /// `prefix`'s keys strictly after `after` (ascending scans).
    fn after(prefix: &str, after: Option<&str>) -> Self {
        let end = prefix_end(prefix.as_bytes());
        let upper = end.clone().map(|e| ("<", Value::Blob(e)));
        match after {
            Some(a) if end.as_deref().is_some_and(|e| a.as_bytes() >= e) => KeyRange {
                lower: None,
                upper: None,
                empty: true,
            },
            Some(a) if a >= prefix => KeyRange {
                lower: Some((">", Value::Text(a.to_owned()))),
                upper,
                empty: false,
            },
            _ => KeyRange {
                lower: Some((">=", Value::Text(prefix.to_owned()))),
                upper,
                empty: false,
            },
        }
    }

    /// `prefix`'s keys strictly before `before` (descending scans).
    fn before(prefix: &str, before: Option<&str>) -> Self {
        let end = prefix_end(prefix.as_bytes());
        let lower = Some((">=", Value::Text(prefix.to_owned())));
        match before {
            Some(b) if b <= prefix => KeyRange {
                lower: None,
                upper: None,
                empty: true,
            },
            Some(b) if end.as_deref().is_none_or(|e| b.as_bytes() < e) => KeyRange {
                lower,
                upper: Some(("<", Value::Text(b.to_owned()))),
                empty: false,
            },
            _ => KeyRange {
                lower,
                upper: end.map(|e| ("<", Value::Blob(e))),
                empty: false,
            },
        }
    }

    /// The WHERE clause and its arguments (`?1`, `?2`). A blob bound (the end of a prefix,
    /// which need not be UTF-8) is cast to TEXT so the comparison is BINARY memcmp order.
    fn clause(&self) -> (String, Vec<Value>) {
        let mut parts = vec!["1".to_owned()];
        let mut args = Vec::new();
        for (op, v) in [&self.lower, &self.upper].into_iter().flatten() {
            args.push(v.clone());
            let n = args.len();
            parts.push(match v {
                Value::Blob(_) => format!("key {op} CAST(?{n} AS TEXT)"),
                _ => format!("key {op} ?{n}"),
            });
        }
        (parts.join(" AND "), args)
    }
}

fn stored_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        seq: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
        id: row.get(1)?,
        kind: row.get(2)?,
        organization_id: row.get(3)?,
        created_at_ms: row.get(4)?,
        body: row.get(5)?,
    })
}

const EVENT_COLUMNS: &str = "seq, id, kind, organization_id, created_at_ms, body";

impl Store for SqliteStore {
    fn commit_applied(&self, changes: ChangeSet) -> Result<(CommitReceipt, PendingSync)> {
        if changes.is_empty() {
            return Ok((CommitReceipt::default(), PendingSync::default()));
        }
        let _span = tracing::debug_span!(
            "store.commit",
            puts = changes.puts.len(),
            deletes = changes.deletes.len(),
            events = changes.events.len(),
            conditions = changes.conditions.len()
        )
        .entered();
        if changes.has_writes() {
            self.group.check_writable()?;
        }
        let (tx, rx) = mpsc::sync_channel::<CommitReply>(1);
        self.send(Job::Commit { changes, reply: tx })?;
        let (receipt, ticket) = rx
            .recv()
            .map_err(|_| StoreError::Backend("the store's writer thread stopped".to_owned()))??;
        Ok((receipt, PendingSync(ticket)))
    }

    fn wait_durable(&self, pending: PendingSync) -> Result<()> {
        match pending.0 {
            Some(ticket) => self.group.wait_durable(ticket),
            None => Ok(()),
        }
    }

    fn get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let name = sql_name(false, table);
        self.with_reader(|conn| {
            if !self.table_exists(conn, &name)? {
                return Ok(None);
            }
            Ok(writer::read_entry(conn, &name, key, false)?.0)
        })
    }

    fn scan(
        &self,
        table: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut bad_key = None;
        self.select_range(
            table,
            KeyRange::after(prefix, after),
            false,
            limit,
            &mut |k, v| match std::str::from_utf8(k) {
                Ok(k) => {
                    out.push((k.to_owned(), v.to_vec()));
                    true
                }
                Err(e) => {
                    bad_key = Some(e.to_string());
                    false
                }
            },
        )?;
        match bad_key {
            Some(e) => Err(StoreError::corrupt(table, format!("key: {e}"))),
            None => Ok(out),
        }
    }

    fn for_each_prefixed(
        &self,
        table: &str,
        prefix: &str,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.select_range(table, KeyRange::after(prefix, None), false, usize::MAX, f)
    }

    fn scan_rev(
        &self,
        table: &str,
        prefix: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        self.select_range(
            table,
            KeyRange::before(prefix, before),
            true,
            limit,
            &mut |k, v| {
                out.push((String::from_utf8_lossy(k).into_owned(), v.to_vec()));
                true
            },
        )?;
        Ok(out)
    }

    fn count_prefix(&self, table: &str, prefix: &str) -> Result<u64> {
        let name = sql_name(false, table);
        let range = KeyRange::after(prefix, None);
        self.with_reader(|conn| {
            if !self.table_exists(conn, &name)? {
                return Ok(0);
            }
            let (clause, args) = range.clause();
            let sql = format!("SELECT count(*) FROM {} WHERE {clause}", quoted(&name));
            let n: i64 = conn
                .prepare_cached(&sql)
                .and_then(|mut s| s.query_row(rusqlite::params_from_iter(args), |r| r.get(0)))
                .map_err(sql_err("count"))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn events_after(&self, after_seq: u64, limit: usize) -> Result<Vec<StoredEvent>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_reader(|conn| {
            let visible = self.visible_event_seq(conn)?;
            if after_seq >= visible {
                return Ok(Vec::new());
            }
            let visible = i64::try_from(visible).unwrap_or(i64::MAX);
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE seq > ?1 AND seq <= ?3 \
                     ORDER BY seq LIMIT ?2"
                ))
                .map_err(sql_err("reading events"))?;
            let rows = stmt
                .query_map(params![after, limit, visible], stored_event)
                .map_err(sql_err("reading events"))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_err("reading events"))
        })
    }

    fn event_seq(&self, event_id: &str) -> Result<Option<u64>> {
        self.with_reader(|conn| {
            let seq: Option<i64> = conn
                .prepare_cached("SELECT seq FROM events WHERE id = ?1")
                .and_then(|mut s| s.query_row([event_id], |r| r.get(0)).optional())
                .map_err(sql_err("reading event ids"))?;
            let Some(seq) = seq.and_then(|s| u64::try_from(s).ok()) else {
                return Ok(None);
            };
            Ok((seq <= self.visible_event_seq(conn)?).then_some(seq))
        })
    }

    fn last_event_seq(&self) -> Result<u64> {
        self.with_reader(|conn| self.visible_event_seq(conn))
    }

    fn compact_events_before(&self, cutoff_ms: i64) -> Result<u64> {
        let _span = tracing::info_span!("store.compact_events", cutoff_ms).entered();
        let mut removed = 0u64;
        // Never a non-durable event: readers cannot see those yet.
        let durable = i64::try_from(self.group.durable_event_seq()).unwrap_or(i64::MAX);
        loop {
            let n = self.exclusive(move |w| {
                w.write_tx(|conn| {
                    // The first event at or after the cutoff ends the prefix that goes.
                    let stop: Option<i64> = conn
                        .query_row(
                            "SELECT min(seq) FROM events WHERE created_at_ms >= ?1",
                            [cutoff_ms],
                            |r| r.get(0),
                        )
                        .map_err(sql_err("compacting events"))?;
                    let n = conn
                        .prepare_cached(
                            "DELETE FROM events WHERE seq IN (SELECT seq FROM events \
                             WHERE (?1 IS NULL OR seq < ?1) AND seq <= ?3 ORDER BY seq LIMIT ?2)",
                        )
                        .and_then(|mut s| s.execute(params![stop, CHUNK as i64, durable]))
                        .map_err(sql_err("compacting events"))?;
                    Ok((n as u64, n > 0))
                })
            })?;
            removed += n;
            if n < CHUNK as u64 {
                break;
            }
        }
        tracing::info!(removed, "compacted event log");
        Ok(removed)
    }

    fn get_expiring(&self, table: &str, key: &str, now_ms: i64) -> Result<Option<Vec<u8>>> {
        let name = sql_name(true, table);
        self.with_reader(|conn| {
            if !self.table_exists(conn, &name)? {
                return Ok(None);
            }
            let (value, expiry) = writer::read_entry(conn, &name, key, true)?;
            Ok(value.filter(|_| expiry.is_some_and(|exp| now_ms < exp)))
        })
    }

    fn purge_expired(&self, now_ms: i64) -> Result<u64> {
        let _span = tracing::debug_span!("store.purge_expired", now_ms).entered();
        self.exclusive(move |w| {
            w.write_tx(|conn| {
                let mut n = 0u64;
                for name in schema::store_tables(conn)? {
                    if !name.starts_with(EXPIRING_PREFIX) {
                        continue;
                    }
                    n += conn
                        .prepare_cached(&format!(
                            "DELETE FROM {} WHERE expires_at <= ?1",
                            quoted(&name)
                        ))
                        .and_then(|mut s| s.execute([now_ms]))
                        .map_err(sql_err("purging expired entries"))?
                        as u64;
                }
                Ok((n, n > 0))
            })
        })
    }

    fn export(&self, sink: &mut dyn FnMut(ExportRecord) -> Result<()>) -> Result<()> {
        let _span = tracing::info_span!("store.export").entered();
        // One read transaction: a consistent snapshot of committed (= durable) state, taken
        // without stopping the writer.
        self.with_reader(|conn| {
            conn.execute_batch("BEGIN").map_err(sql_err("export"))?;
            let out = export_snapshot(conn, sink);
            let _ = conn.execute_batch("COMMIT");
            out
        })?;
        // The snapshot may hold commits whose sync round is still running: make them durable,
        // so the dump never holds a write a crash of this store could still lose.
        backup::sync_source_wal(&self.path)
    }

    fn import(&self, records: &mut dyn Iterator<Item = Result<ExportRecord>>) -> Result<u64> {
        let _span = tracing::info_span!("store.import").entered();
        let empty = self.exclusive(|w| Self::is_empty_store(&w.conn))?;
        if !empty {
            return Err(StoreError::NotEmpty);
        }
        import_in_chunks(records, CHUNK, &mut |chunk| {
            self.exclusive(move |w| {
                let shared = Arc::clone(&w.shared);
                w.write_tx(move |conn| {
                    import_chunk(conn, &shared, chunk)?;
                    Ok(((), true))
                })
            })
        })
    }

    fn migrate_owner(&self, owner_schema: &OwnerSchema) -> Result<i64> {
        let _span =
            tracing::info_span!("store.migrate_owner", owner = owner_schema.owner).entered();
        let owner = owner_schema.owner;
        owner_schema.check()?;
        let current = self.with_reader(|conn| rows::owner_version(conn, owner))?;
        for m in owner_schema
            .migrations
            .iter()
            .filter(|m| m.version > current)
        {
            // 'static: the writer thread runs it.
            let m: &'static crate::rows::OwnerMigration = m;
            let applied = self.exclusive(move |w| {
                w.write_tx(|conn| {
                    let ran = rows::apply_owner_migration(conn, owner, m)?;
                    Ok((ran, ran))
                })
            })?;
            if applied {
                tracing::info!(
                    owner,
                    version = m.version,
                    description = m.description,
                    "owner tables migrated"
                );
            }
        }
        self.with_reader(|conn| rows::owner_version(conn, owner))
    }

    fn get_row(&self, table: &TableDef, key: &[RowValue]) -> Result<Option<Row>> {
        self.with_reader(|conn| rows::get_row(conn, table, key))
    }

    fn find_unique(
        &self,
        table: &TableDef,
        index: &str,
        values: &[RowValue],
    ) -> Result<Option<Row>> {
        self.with_reader(|conn| rows::find_unique(conn, table, index, values))
    }

    fn scan_index(
        &self,
        table: &TableDef,
        index: &str,
        prefix: &[RowValue],
        after: Option<&[RowValue]>,
        limit: usize,
    ) -> Result<Vec<Row>> {
        self.with_reader(|conn| rows::scan_index(conn, table, index, prefix, after, limit))
    }

    fn count_index(&self, table: &TableDef, index: &str, prefix: &[RowValue]) -> Result<u64> {
        self.with_reader(|conn| rows::count_index(conn, table, index, prefix))
    }

    fn stats(&self) -> StoreStats {
        let mut stats = StoreStats::default();
        self.shared.fill_stats(&mut stats);
        self.group.fill_stats(&mut stats);
        stats
    }

    fn backup_to(&self, dest: &Path) -> Result<BackupSummary> {
        backup_sqlite_file(&self.path, dest)
    }

    fn backup_dir(&self) -> Option<PathBuf> {
        let dir = self.path.parent()?;
        Some(dir.join("backups"))
    }
}

fn export_snapshot(
    conn: &Connection,
    sink: &mut dyn FnMut(ExportRecord) -> Result<()>,
) -> Result<()> {
    for (owner, version, description, applied_at_ms) in rows::owner_migrations(conn)? {
        sink(ExportRecord::OwnerMigration {
            owner,
            version,
            description,
            applied_at_ms,
        })?;
    }
    for (table, owner, create_sql) in rows::row_tables(conn)? {
        sink(ExportRecord::RowTable {
            table: table.clone(),
            owner,
            create_sql,
        })?;
        rows::for_each_raw_row(conn, &table, &mut |values| {
            sink(ExportRecord::Row {
                table: table.clone(),
                values,
            })
        })?;
    }
    for name in schema::store_tables(conn)? {
        let q = quoted(&name);
        if let Some(table) = name.strip_prefix(TABLE_PREFIX) {
            let mut stmt = conn
                .prepare(&format!("SELECT key, value FROM {q} ORDER BY key"))
                .map_err(sql_err("export"))?;
            let mut rows = stmt.query([]).map_err(sql_err("export"))?;
            while let Some(row) = rows.next().map_err(sql_err("export"))? {
                sink(ExportRecord::Entry {
                    table: table.to_owned(),
                    key: row.get(0).map_err(sql_err("export"))?,
                    value: row.get(1).map_err(sql_err("export"))?,
                })?;
            }
        } else if let Some(table) = name.strip_prefix(EXPIRING_PREFIX) {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT key, value, expires_at FROM {q} ORDER BY key"
                ))
                .map_err(sql_err("export"))?;
            let mut rows = stmt.query([]).map_err(sql_err("export"))?;
            while let Some(row) = rows.next().map_err(sql_err("export"))? {
                sink(ExportRecord::Expiring {
                    table: table.to_owned(),
                    key: row.get(0).map_err(sql_err("export"))?,
                    value: row.get(1).map_err(sql_err("export"))?,
                    expires_at_ms: row.get(2).map_err(sql_err("export"))?,
                })?;
            }
        }
    }
    let mut stmt = conn
        .prepare(&format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY seq"))
        .map_err(sql_err("export"))?;
    let mut rows = stmt.query([]).map_err(sql_err("export"))?;
    while let Some(row) = rows.next().map_err(sql_err("export"))? {
        sink(ExportRecord::Event(
            stored_event(row).map_err(sql_err("export"))?,
        ))?;
    }
    sink(ExportRecord::EventSeq {
        last_seq: schema::last_seq(conn)?,
    })
}

fn import_chunk(conn: &Connection, shared: &Shared, chunk: Vec<ExportRecord>) -> Result<()> {
    let mut created = Vec::new();
    let mut max_seq = 0u64;
    let mut ensure = |expiring: bool, table: &str| -> Result<String> {
        let name = sql_name(expiring, table);
        let known = shared
            .known_tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&name);
        if !known && !created.contains(&name) {
            conn.execute_batch(&schema::create_table_sql(&name))
                .map_err(sql_err("import: creating a table"))?;
            created.push(name.clone());
        }
        Ok(name)
    };
    for record in chunk {
        match record {
            ExportRecord::Entry { table, key, value } => {
                let name = ensure(false, &table)?;
                conn.prepare_cached(&format!(
                    "INSERT OR REPLACE INTO {} (key, value) VALUES (?1, ?2)",
                    quoted(&name)
                ))
                .and_then(|mut s| s.execute(params![key, value]))
                .map_err(sql_err("import"))?;
            }
            ExportRecord::Expiring {
                table,
                key,
                value,
                expires_at_ms,
            } => {
                let name = ensure(true, &table)?;
                conn.prepare_cached(&format!(
                    "INSERT OR REPLACE INTO {} (key, value, expires_at) VALUES (?1, ?2, ?3)",
                    quoted(&name)
                ))
                .and_then(|mut s| s.execute(params![key, value, expires_at_ms]))
                .map_err(sql_err("import"))?;
            }
            ExportRecord::Event(e) => {
                match writer::insert_event(
                    conn,
                    e.seq,
                    &e.id,
                    &e.kind,
                    e.organization_id.as_deref(),
                    e.created_at_ms,
                    &e.body,
                ) {
                    Err(StoreError::Conflict { .. }) => {
                        return Err(StoreError::corrupt(
                            "import",
                            format!("duplicate event id {}", e.id),
                        ))
                    }
                    other => other?,
                }
                max_seq = max_seq.max(e.seq);
            }
            ExportRecord::OwnerMigration {
                owner,
                version,
                description,
                applied_at_ms,
            } => rows::record_owner_migration(conn, &owner, version, &description, applied_at_ms)?,
            ExportRecord::RowTable {
                table,
                owner,
                create_sql,
            } => rows::import_row_table(conn, &table, &owner, &create_sql)?,
            ExportRecord::Row { table, values } => rows::insert_raw_row(conn, &table, &values)?,
            ExportRecord::EventSeq { last_seq } => {
                if last_seq > schema::last_seq(conn)? {
                    schema::set_last_seq(conn, last_seq)?;
                }
            }
        }
    }
    // A later chunk (or a write racing the import) must not hand these seqs out again.
    if max_seq > schema::last_seq(conn)? {
        schema::set_last_seq(conn, max_seq)?;
    }
    // Tables created here become known once this transaction commits; a reader that looks
    // first finds them through sqlite_master, so adding them now is harmless.
    shared
        .known_tables
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .extend(created);
    Ok(())
}
