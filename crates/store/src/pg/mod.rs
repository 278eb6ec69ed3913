//! The PostgreSQL backend: the same [`Store`] semantics as [`crate::SqliteStore`] on a server
//! several idbridge nodes can share.
//!
//! * **Tables.** All key-value store tables live in ONE SQL table (`"kv:entries"`, keyed by
//!   `(tbl, key)`), all expiring tables in another (`"kv:expiring"`), instead of one SQL table
//!   per store table as on SQLite: the write path never runs DDL (on PostgreSQL DDL takes
//!   exclusive locks, and two transactions creating the same table race on the catalog), a
//!   purge of expired entries is one indexed DELETE, and the table count stays fixed. Keys are
//!   `bytea`, so they compare as bytes exactly like SQLite's BINARY text (and a prefix's end
//!   bound need not be UTF-8). Typed rows ([`crate::rows`]) are real tables with real indexes,
//!   as on SQLite; their text columns are `COLLATE "C"` (byte order, ASCII-only `lower()`).
//! * **Conditions.** Transactions run at READ COMMITTED. Before checking its conditions a
//!   change set takes transaction-scoped advisory locks on every key it checks or writes, in
//!   ascending order (no deadlock between change sets), so check-then-write is atomic against
//!   every other change set touching those keys — what SQLite's single writer gives for free.
//!   Typed-row uniqueness is PostgreSQL's own unique indexes. A deadlock between row writes
//!   (40P01) or a serialization failure is retried.
//! * **Event log.** Seqs come from one counter row (`meta.last_seq`), incremented as the LAST
//!   statement before COMMIT. Its row lock is held until the committing transaction is
//!   visible, so the next change set with events gets the next seq only after the previous one
//!   committed: seqs are gap-free and become visible in seq order — a reader never sees seq
//!   n+1 without n, so a cursor never skips an event that commits later. The price: change
//!   sets WITH events commit one at a time (each waits for the previous one's WAL flush);
//!   change sets without events group-commit in PostgreSQL freely.
//! * **Durability.** `synchronous_commit = on` on every connection: COMMIT returns after the
//!   commit record is flushed, and PostgreSQL's own group commit covers concurrent
//!   connections. [`Store::commit_applied`] therefore returns an already durable commit.
//! * **Schema.** Versioned; migrations run at open under an advisory lock (two nodes opening
//!   at once migrate once). A database from a newer build is refused.

mod pool;
mod rows;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::ToSql;

use self::pool::{Conn, Pool};
use crate::codec::prefix_end;
use crate::error::{ConflictKind, Result, StoreError, EVENT_LOG};
use crate::export::{import_in_chunks, ExportRecord};
use crate::rows::{OwnerSchema, Row, RowValue, TableDef};
use crate::types::{ChangeSet, CommitReceipt, PendingSync, StoreStats, StoredEvent};
use crate::Store;

/// The key-value entries of every ordinary store table.
const KV: &str = "\"kv:entries\"";
/// The entries of every expiring store table.
const EXPIRING: &str = "\"kv:expiring\"";

/// Rows per statement batch for compaction, import and export pages.
const CHUNK: usize = 5000;

/// How often a change set is retried after a deadlock or serialization failure.
const RETRIES: usize = 20;

/// Advisory lock key held while the schema is migrated at open.
const MIGRATION_LOCK: i64 = 0x6964_6272_6467_0001;

/// Schema migrations: version -> SQL. Append only; a released one is frozen.
const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    r#"
    CREATE TABLE meta (name text PRIMARY KEY, value bigint NOT NULL);
    INSERT INTO meta (name, value) VALUES ('last_seq', 0);
    CREATE TABLE "kv:entries" (
        tbl text COLLATE "C" NOT NULL, key bytea NOT NULL, value bytea NOT NULL,
        PRIMARY KEY (tbl, key));
    CREATE TABLE "kv:expiring" (
        tbl text COLLATE "C" NOT NULL, key bytea NOT NULL, value bytea NOT NULL,
        expires_at bigint NOT NULL, PRIMARY KEY (tbl, key));
    CREATE INDEX "kv:expiring_by_expiry" ON "kv:expiring" (expires_at);
    CREATE TABLE events (
        seq bigint PRIMARY KEY, id text COLLATE "C" NOT NULL CONSTRAINT events_id_unique UNIQUE,
        kind text NOT NULL, organization_id text, created_at_ms bigint NOT NULL,
        body bytea NOT NULL);
    CREATE INDEX events_by_created ON events (created_at_ms);
    CREATE TABLE owner_migrations (
        owner text NOT NULL, version bigint NOT NULL, description text NOT NULL,
        applied_at_ms bigint NOT NULL, PRIMARY KEY (owner, version));
    CREATE TABLE row_tables (
        name text PRIMARY KEY, owner text NOT NULL, create_sql text NOT NULL);
    CREATE FUNCTION "kv:lock_keys"(keys bigint[]) RETURNS void LANGUAGE plpgsql AS $$
    DECLARE k bigint;
    BEGIN
        FOREACH k IN ARRAY keys LOOP PERFORM pg_advisory_xact_lock(k); END LOOP;
    END $$;
    "#,
)];

/// Options for [`PgStore::open`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections kept (and the most open at once).
    pub pool_size: usize,
    /// How long connecting may take.
    pub connect_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size: 16,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    conflicts: AtomicU64,
    durable_writes: AtomicU64,
    apply_nanos: AtomicU64,
    slowest_commit_micros: AtomicU64,
    retries: AtomicU64,
}

/// The PostgreSQL-backed [`Store`].
pub struct PgStore {
    pool: Pool,
    target: String,
    counters: Counters,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

pub(crate) fn pg_err(context: &str) -> impl FnOnce(postgres::Error) -> StoreError + '_ {
    move |e| StoreError::Backend(format!("{context}: {}", describe(&e)))
}

/// The server's message (with detail) rather than the client's "db error".
pub(crate) fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(d) => format!("{} ({d})", db.message()),
            None => db.message().to_owned(),
        },
        None => e.to_string(),
    }
}

fn retryable(e: &StoreError) -> bool {
    matches!(e, StoreError::Backend(m) if m.contains(RETRY_MARK))
}

/// Put into the message of errors worth retrying (deadlock, serialization failure).
const RETRY_MARK: &str = "[retryable]";

fn write_err(context: &str) -> impl FnOnce(postgres::Error) -> StoreError + '_ {
    move |e| {
        let code = e.code();
        if code == Some(&SqlState::T_R_DEADLOCK_DETECTED)
            || code == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
        {
            return StoreError::Backend(format!("{context}: {} {RETRY_MARK}", describe(&e)));
        }
        StoreError::Backend(format!("{context}: {}", describe(&e)))
    }
}

/// The advisory-lock key of one store entry (FNV-1a; a collision only serializes two
/// unrelated change sets).
fn lock_key(expiring: bool, table: &str, key: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |b: u8| h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    feed(u8::from(expiring));
    table.bytes().for_each(&mut feed);
    feed(0);
    key.bytes().for_each(&mut feed);
    h as i64
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn now_ms() -> i64 {
    idbridge_model::Timestamp::now().as_millis()
}

impl PgStore {
    /// Connects to `url` (`postgresql://user:pw@host:port/db` or `host=... dbname=...`),
    /// migrates the schema and returns the store. The database must exist.
    pub fn open(url: &str, options: PgOptions) -> Result<Self> {
        pool::off_runtime(|| Self::open_here(url, options))
    }

    fn open_here(url: &str, options: PgOptions) -> Result<Self> {
        let mut config: postgres::Config = url.parse().map_err(|e| {
            StoreError::Backend(format!(
                "[store] url is not a PostgreSQL connection string ({e}): use \
                 postgresql://user@host:port/database or \"host=... port=... dbname=...\""
            ))
        })?;
        config.connect_timeout(options.connect_timeout);
        config.application_name("idbridge");
        let target = format!(
            "{}:{}/{}",
            config
                .get_hosts()
                .first()
                .map(|h| match h {
                    postgres::config::Host::Tcp(h) => h.clone(),
                    postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .unwrap_or_default(),
            config.get_ports().first().copied().unwrap_or(5432),
            config.get_dbname().unwrap_or("")
        );
        let _span = tracing::info_span!("store.open", backend = "postgres", %target).entered();
        let pool = Pool::new(config, options.pool_size);
        let store = PgStore {
            pool,
            target,
            counters: Counters::default(),
        };
        let mut conn = store.pool.connect()?;
        store.migrate(&mut conn)?;
        let last = store.read_last_seq(&mut conn)?;
        drop(conn);
        tracing::info!(last_event_seq = last, "store opened (PostgreSQL)");
        Ok(store)
    }

    /// `host:port/database` (no credentials): for logs and the admin API.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The schema version this build writes (a newer database is refused at open).
    pub fn current_schema_version() -> i64 {
        MIGRATIONS.last().map_or(0, |m| m.0)
    }

    /// The schema version of the database.
    pub fn schema_version(&self) -> Result<i64> {
        self.pool.with(schema_version)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.pool.open_connections()
    }

    fn migrate(&self, conn: &mut Conn) -> Result<()> {
        conn.batch(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
            .map_err(pg_err("locking the schema for migration"))?;
        let out = self.migrate_locked(conn);
        let _ = conn.batch(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"));
        out
    }

    fn migrate_locked(&self, conn: &mut Conn) -> Result<()> {
        conn.batch(
            "CREATE TABLE IF NOT EXISTS schema_version \
             (version bigint PRIMARY KEY, applied_at_ms bigint NOT NULL)",
        )
        .map_err(pg_err("creating schema_version"))?;
        let current = schema_version(conn)?;
        let newest = Self::current_schema_version();
        if current > newest {
            return Err(StoreError::Backend(format!(
                "the PostgreSQL database {} has schema version {current}, newer than this \
                 build's {newest}: run the idbridge release that wrote it (or newer)",
                self.target
            )));
        }
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            let run = |conn: &mut Conn| -> std::result::Result<(), postgres::Error> {
                conn.batch("BEGIN")?;
                conn.batch(sql)?;
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at_ms) VALUES ($1, $2)",
                    &[version, &now_ms()],
                )?;
                conn.batch("COMMIT")
            };
            if let Err(e) = run(conn) {
                conn.rollback();
                return Err(StoreError::Backend(format!(
                    "migrating the PostgreSQL schema to version {version}: {}",
                    describe(&e)
                )));
            }
            tracing::info!(version, "PostgreSQL schema migrated");
        }
        Ok(())
    }

    fn read_last_seq(&self, conn: &mut Conn) -> Result<u64> {
        let rows = conn
            .query("SELECT value FROM meta WHERE name = 'last_seq'", &[])
            .map_err(pg_err("reading the event counter"))?;
        let v: i64 = rows.first().map_or(0, |r| r.get(0));
        u64::try_from(v).map_err(|_| StoreError::corrupt("meta", "negative last_seq"))
    }

    /// One attempt at a change set, inside BEGIN..COMMIT on `conn`.
    fn try_commit(&self, conn: &mut Conn, cs: &ChangeSet) -> Result<Vec<u64>> {
        conn.batch("BEGIN").map_err(pg_err("BEGIN"))?;
        match apply(conn, cs) {
            Ok(seqs) => {
                conn.batch("COMMIT").map_err(write_err("COMMIT"))?;
                Ok(seqs)
            }
            Err(e) => {
                conn.rollback();
                Err(e)
            }
        }
    }

    fn is_empty_store(conn: &mut Conn) -> Result<bool> {
        let any = conn
            .query(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM {KV}) OR EXISTS (SELECT 1 FROM {EXPIRING}) \
                     OR EXISTS (SELECT 1 FROM events) \
                     OR (SELECT value FROM meta WHERE name = 'last_seq') <> 0"
                ),
                &[],
            )
            .map_err(pg_err("checking emptiness"))?;
        if any.first().is_some_and(|r| r.get::<_, bool>(0)) {
            return Ok(false);
        }
        Ok(!rows::any_row(conn)?)
    }
}

fn schema_version(conn: &mut Conn) -> Result<i64> {
    let rows = conn
        .query("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .map_err(pg_err("reading the schema version"))?;
    Ok(rows.first().map_or(0, |r| r.get(0)))
}

/// Reads an entry for a condition: (value, expiry).
fn read_entry(
    conn: &mut Conn,
    expiring: bool,
    table: &str,
    key: &str,
) -> Result<(Option<Vec<u8>>, Option<i64>)> {
    let rows = if expiring {
        conn.query(
            &format!("SELECT value, expires_at FROM {EXPIRING} WHERE tbl = $1 AND key = $2"),
            &[&table, &key.as_bytes()],
        )
    } else {
        conn.query(
            &format!("SELECT value, NULL::bigint FROM {KV} WHERE tbl = $1 AND key = $2"),
            &[&table, &key.as_bytes()],
        )
    }
    .map_err(write_err("reading an entry"))?;
    Ok(match rows.first() {
        Some(r) => (Some(r.get(0)), r.get(1)),
        None => (None, None),
    })
}

/// The body of one change set's transaction: locks, conditions, writes, events (last).
fn apply(conn: &mut Conn, cs: &ChangeSet) -> Result<Vec<u64>> {
    let mut keys: Vec<i64> = cs
        .conditions
        .iter()
        .map(|c| lock_key(c.is_expiring(), c.table(), c.key()))
        .chain(cs.deletes.iter().map(|d| lock_key(false, &d.table, &d.key)))
        .chain(cs.puts.iter().map(|p| lock_key(false, &p.table, &p.key)))
        .chain(
            cs.expiring_deletes
                .iter()
                .map(|d| lock_key(true, &d.table, &d.key)),
        )
        .chain(
            cs.expiring_puts
                .iter()
                .map(|p| lock_key(true, &p.table, &p.key)),
        )
        .collect();
    keys.sort_unstable();
    keys.dedup();
    if !keys.is_empty() {
        conn.execute("SELECT \"kv:lock_keys\"($1)", &[&keys])
            .map_err(write_err("locking the change set's keys"))?;
    }
    for cond in &cs.conditions {
        let (current, expiry) = read_entry(conn, cond.is_expiring(), cond.table(), cond.key())?;
        if !cond.holds(current.as_deref(), expiry) {
            return Err(cond.conflict());
        }
    }
    for d in &cs.deletes {
        conn.execute(
            &format!("DELETE FROM {KV} WHERE tbl = $1 AND key = $2"),
            &[&d.table, &d.key.as_bytes()],
        )
        .map_err(write_err("delete"))?;
    }
    for p in &cs.puts {
        conn.execute(
            &format!(
                "INSERT INTO {KV} (tbl, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (tbl, key) DO UPDATE SET value = excluded.value"
            ),
            &[&p.table, &p.key.as_bytes(), &p.value],
        )
        .map_err(write_err("put"))?;
    }
    for row in &cs.rows {
        rows::apply_row(conn, row)?;
    }
    for d in &cs.expiring_deletes {
        conn.execute(
            &format!("DELETE FROM {EXPIRING} WHERE tbl = $1 AND key = $2"),
            &[&d.table, &d.key.as_bytes()],
        )
        .map_err(write_err("expiring delete"))?;
    }
    for p in &cs.expiring_puts {
        conn.execute(
            &format!(
                "INSERT INTO {EXPIRING} (tbl, key, value, expires_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tbl, key) DO UPDATE SET value = excluded.value, \
                 expires_at = excluded.expires_at"
            ),
            &[&p.table, &p.key.as_bytes(), &p.value, &p.expires_at_ms],
        )
        .map_err(write_err("expiring put"))?;
    }
    if cs.events.is_empty() {
        return Ok(Vec::new());
    }
    // A reused id is a conflict naming it (checked before the counter is locked).
    let ids: Vec<&str> = cs.events.iter().map(|e| e.id.as_str()).collect();
    let taken = conn
        .query("SELECT id FROM events WHERE id = ANY($1) LIMIT 1", &[&ids])
        .map_err(write_err("checking event ids"))?;
    if let Some(r) = taken.first() {
        return Err(StoreError::conflict(
            EVENT_LOG,
            r.get::<_, &str>(0),
            ConflictKind::DuplicateEventId,
        ));
    }
    for (i, id) in ids.iter().enumerate() {
        if ids[..i].contains(id) {
            return Err(StoreError::conflict(
                EVENT_LOG,
                id,
                ConflictKind::DuplicateEventId,
            ));
        }
    }
    // LAST: the counter row's lock orders the commits that append events (module docs).
    let n = i64::try_from(cs.events.len()).unwrap_or(i64::MAX);
    let rows = conn
        .query(
            "UPDATE meta SET value = value + $1 WHERE name = 'last_seq' RETURNING value",
            &[&n],
        )
        .map_err(write_err("taking event seqs"))?;
    let last: i64 = rows
        .first()
        .map(|r| r.get(0))
        .ok_or_else(|| StoreError::corrupt("meta", "the event counter row is missing"))?;
    let first = last - n + 1;
    let seqs: Vec<i64> = (first..=last).collect();
    let kinds: Vec<&str> = cs.events.iter().map(|e| e.kind.as_str()).collect();
    let orgs: Vec<Option<&str>> = cs
        .events
        .iter()
        .map(|e| e.organization_id.as_deref())
        .collect();
    let created: Vec<i64> = cs.events.iter().map(|e| e.created_at_ms).collect();
    let bodies: Vec<&[u8]> = cs.events.iter().map(|e| e.body.as_slice()).collect();
    conn.execute(
        "INSERT INTO events (seq, id, kind, organization_id, created_at_ms, body) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], \
         $6::bytea[])",
        &[&seqs, &ids, &kinds, &orgs, &created, &bodies],
    )
    .map_err(|e| match e.as_db_error() {
        Some(db) if db.code() == &SqlState::UNIQUE_VIOLATION => {
            StoreError::conflict(EVENT_LOG, ids[0], ConflictKind::DuplicateEventId)
        }
        _ => write_err("appending events")(e),
    })?;
    Ok(seqs.into_iter().map(|s| s as u64).collect())
}

/// `key >= $lower` / `key > $after` and `key < $end` for a prefix scan.
struct KeyRange {
    lower: Vec<u8>,
    lower_inclusive: bool,
    upper: Option<Vec<u8>>,
    empty: bool,
}

impl KeyRange {
    fn after(prefix: &str, after: Option<&str>) -> Self {
        let end = prefix_end(prefix.as_bytes());
        match after {
            Some(a) if end.as_deref().is_some_and(|e| a.as_bytes() >= e) => KeyRange {
                lower: Vec::new(),
                lower_inclusive: true,
                upper: None,
                empty: true,
            },
            Some(a) if a >= prefix => KeyRange {
                lower: a.as_bytes().to_vec(),
                lower_inclusive: false,
                upper: end,
                empty: false,
            },
            _ => KeyRange {
                lower: prefix.as_bytes().to_vec(),
                lower_inclusive: true,
                upper: end,
                empty: false,
            },
        }
    }

    fn before(prefix: &str, before: Option<&str>) -> Self {
        let end = prefix_end(prefix.as_bytes());
        let lower = prefix.as_bytes().to_vec();
        match before {
            Some(b) if b <= prefix => KeyRange {
                lower,
                lower_inclusive: true,
                upper: None,
                empty: true,
            },
            Some(b) if end.as_deref().is_none_or(|e| b.as_bytes() < e) => KeyRange {
                lower,
                lower_inclusive: true,
                upper: Some(b.as_bytes().to_vec()),
                empty: false,
            },
            _ => KeyRange {
                lower,
                lower_inclusive: true,
                upper: end,
                empty: false,
            },
        }
    }

    /// The WHERE clause over `$1` (table), `$2` (lower) and `$3` (upper, NULL: none).
    fn clause(&self) -> &'static str {
        if self.lower_inclusive {
            "tbl = $1 AND key >= $2 AND ($3::bytea IS NULL OR key < $3)"
        } else {
            "tbl = $1 AND key > $2 AND ($3::bytea IS NULL OR key < $3)"
        }
    }
}

fn stored_event(r: &postgres::Row) -> StoredEvent {
    StoredEvent {
        seq: u64::try_from(r.get::<_, i64>(0)).unwrap_or(0),
        id: r.get(1),
        kind: r.get(2),
        organization_id: r.get(3),
        created_at_ms: r.get(4),
        body: r.get(5),
    }
}

const EVENT_COLUMNS: &str = "seq, id, kind, organization_id, created_at_ms, body";

impl PgStore {
    fn select_range(
        &self,
        table: &str,
        range: &KeyRange,
        descending: bool,
        limit: usize,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        if limit == 0 || range.empty {
            return Ok(());
        }
        let order = if descending { "DESC" } else { "ASC" };
        // Pages of CHUNK, so a bulk reader never holds a whole table in memory.
        let mut lower = range.lower.clone();
        let mut upper = range.upper.clone();
        let mut first_page = true;
        let mut left = limit;
        loop {
            let page = left.min(CHUNK);
            let clause = match (descending, first_page) {
                (false, false) => "tbl = $1 AND key > $2 AND ($3::bytea IS NULL OR key < $3)",
                (true, false) => {
                    if range.lower_inclusive {
                        "tbl = $1 AND key >= $2 AND key < $3"
                    } else {
                        "tbl = $1 AND key > $2 AND key < $3"
                    }
                }
                _ => range.clause(),
            };
            let sql =
                format!("SELECT key, value FROM {KV} WHERE {clause} ORDER BY key {order} LIMIT $4");
            let rows = self.pool.with(|c| {
                c.query(&sql, &[&table, &lower, &upper, &to_i64(page as u64)])
                    .map_err(pg_err("scan"))
            })?;
            let n = rows.len();
            let mut last_key = None;
            for r in &rows {
                let k: &[u8] = r.get(0);
                let v: &[u8] = r.get(1);
                if !f(k, v) {
                    return Ok(());
                }
                last_key = Some(k.to_vec());
            }
            left -= n;
            match last_key {
                Some(k) if n == page && left > 0 => {
                    if descending {
                        upper = Some(k);
                    } else {
                        lower = k;
                    }
                    first_page = false;
                }
                _ => return Ok(()),
            }
        }
    }
}

impl Store for PgStore {
    fn commit_applied(&self, changes: ChangeSet) -> Result<(CommitReceipt, PendingSync)> {
        if changes.is_empty() {
            return Ok((CommitReceipt::default(), PendingSync::default()));
        }
        let _span = tracing::debug_span!(
            "store.commit",
            backend = "postgres",
            puts = changes.puts.len(),
            deletes = changes.deletes.len(),
            events = changes.events.len(),
            conditions = changes.conditions.len()
        )
        .entered();
        let started = std::time::Instant::now();
        let mut attempt = 0;
        let seqs = loop {
            attempt += 1;
            match self.pool.with(|c| self.try_commit(c, &changes)) {
                Err(e) if retryable(&e) && attempt < RETRIES => {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(attempt as u64));
                }
                Err(e) => {
                    if matches!(e, StoreError::Conflict { .. }) {
                        self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
                    }
                    return Err(e);
                }
                Ok(seqs) => break seqs,
            }
        };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.counters
            .apply_nanos
            .fetch_add(micros.saturating_mul(1000), Ordering::Relaxed);
        self.counters
            .slowest_commit_micros
            .fetch_max(micros, Ordering::Relaxed);
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        if changes.has_writes() {
            self.counters.durable_writes.fetch_add(1, Ordering::Relaxed);
        }
        // COMMIT returned: already durable (synchronous_commit = on).
        Ok((CommitReceipt { event_seqs: seqs }, PendingSync::default()))
    }

    fn wait_durable(&self, _pending: PendingSync) -> Result<()> {
        Ok(())
    }

    fn get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>> {
        self.pool.with(|c| {
            let rows = c
                .query(
                    &format!("SELECT value FROM {KV} WHERE tbl = $1 AND key = $2"),
                    &[&table, &key.as_bytes()],
                )
                .map_err(pg_err("get"))?;
            Ok(rows.first().map(|r| r.get(0)))
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
            &KeyRange::after(prefix, after),
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
        self.select_range(table, &KeyRange::after(prefix, None), false, usize::MAX, f)
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
            &KeyRange::before(prefix, before),
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
        let range = KeyRange::after(prefix, None);
        let sql = format!("SELECT count(*) FROM {KV} WHERE {}", range.clause());
        self.pool.with(|c| {
            let rows = c
                .query(&sql, &[&table, &range.lower, &range.upper])
                .map_err(pg_err("count"))?;
            Ok(rows
                .first()
                .map_or(0, |r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
        })
    }

    fn events_after(&self, after_seq: u64, limit: usize) -> Result<Vec<StoredEvent>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.pool.with(|c| {
            let rows = c
                .query(
                    &format!(
                        "SELECT {EVENT_COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2"
                    ),
                    &[&to_i64(after_seq), &to_i64(limit as u64)],
                )
                .map_err(pg_err("reading events"))?;
            Ok(rows.iter().map(stored_event).collect())
        })
    }

    fn event_seq(&self, event_id: &str) -> Result<Option<u64>> {
        self.pool.with(|c| {
            let rows = c
                .query("SELECT seq FROM events WHERE id = $1", &[&event_id])
                .map_err(pg_err("reading event ids"))?;
            Ok(rows
                .first()
                .and_then(|r| u64::try_from(r.get::<_, i64>(0)).ok()))
        })
    }

    fn last_event_seq(&self) -> Result<u64> {
        self.pool.with(|c| self.read_last_seq(c))
    }

    fn compact_events_before(&self, cutoff_ms: i64) -> Result<u64> {
        let _span = tracing::info_span!("store.compact_events", cutoff_ms).entered();
        let mut removed = 0u64;
        loop {
            let n = self.pool.with(|c| {
                c.execute(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE seq < \
                     coalesce((SELECT min(seq) FROM events WHERE created_at_ms >= $1), \
                     9223372036854775807) ORDER BY seq LIMIT $2)",
                    &[&cutoff_ms, &to_i64(CHUNK as u64)],
                )
                .map_err(pg_err("compacting events"))
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
        self.pool.with(|c| {
            let rows = c
                .query(
                    &format!(
                        "SELECT value FROM {EXPIRING} WHERE tbl = $1 AND key = $2 \
                         AND expires_at > $3"
                    ),
                    &[&table, &key.as_bytes(), &now_ms],
                )
                .map_err(pg_err("get_expiring"))?;
            Ok(rows.first().map(|r| r.get(0)))
        })
    }

    fn purge_expired(&self, now_ms: i64) -> Result<u64> {
        let _span = tracing::debug_span!("store.purge_expired", now_ms).entered();
        self.pool.with(|c| {
            c.execute(
                &format!("DELETE FROM {EXPIRING} WHERE expires_at <= $1"),
                &[&now_ms],
            )
            .map_err(pg_err("purging expired entries"))
        })
    }

    fn export(&self, sink: &mut dyn FnMut(ExportRecord) -> Result<()>) -> Result<()> {
        let _span = tracing::info_span!("store.export", backend = "postgres").entered();
        self.pool.with_local(|c| {
            // One snapshot: consistent without stopping writers; committed = durable.
            c.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .map_err(pg_err("export"))?;
            let out = export_snapshot(c, sink);
            c.rollback();
            out
        })
    }

    fn import(&self, records: &mut dyn Iterator<Item = Result<ExportRecord>>) -> Result<u64> {
        let _span = tracing::info_span!("store.import", backend = "postgres").entered();
        if !self.pool.with(Self::is_empty_store)? {
            return Err(StoreError::NotEmpty);
        }
        import_in_chunks(records, CHUNK, &mut |chunk| {
            self.pool.with(|c| {
                c.batch("BEGIN").map_err(pg_err("import"))?;
                match import_chunk(c, chunk) {
                    Ok(()) => c.batch("COMMIT").map_err(pg_err("import: COMMIT")),
                    Err(e) => {
                        c.rollback();
                        Err(e)
                    }
                }
            })
        })
    }

    fn migrate_owner(&self, owner_schema: &OwnerSchema) -> Result<i64> {
        let _span =
            tracing::info_span!("store.migrate_owner", owner = owner_schema.owner).entered();
        owner_schema.check()?;
        let owner = owner_schema.owner;
        let current = self.pool.with(|c| rows::owner_version(c, owner))?;
        for m in owner_schema
            .migrations
            .iter()
            .filter(|m| m.version > current)
        {
            let applied = self.pool.with(|c| {
                c.batch("BEGIN").map_err(pg_err("owner migration"))?;
                match rows::apply_owner_migration(c, owner, m) {
                    Ok(ran) => c
                        .batch("COMMIT")
                        .map_err(pg_err("owner migration: COMMIT"))
                        .map(|()| ran),
                    Err(e) => {
                        c.rollback();
                        Err(e)
                    }
                }
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
        self.pool.with(|c| rows::owner_version(c, owner))
    }

    fn get_row(&self, table: &TableDef, key: &[RowValue]) -> Result<Option<Row>> {
        self.pool.with(|c| rows::get_row(c, table, key))
    }

    fn find_unique(
        &self,
        table: &TableDef,
        index: &str,
        values: &[RowValue],
    ) -> Result<Option<Row>> {
        self.pool
            .with(|c| rows::find_unique(c, table, index, values))
    }

    fn scan_index(
        &self,
        table: &TableDef,
        index: &str,
        prefix: &[RowValue],
        after: Option<&[RowValue]>,
        limit: usize,
    ) -> Result<Vec<Row>> {
        self.pool
            .with(|c| rows::scan_index(c, table, index, prefix, after, limit))
    }

    fn count_index(&self, table: &TableDef, index: &str, prefix: &[RowValue]) -> Result<u64> {
        self.pool
            .with(|c| rows::count_index(c, table, index, prefix))
    }

    fn stats(&self) -> StoreStats {
        let c = &self.counters;
        StoreStats {
            commits: c.commits.load(Ordering::Relaxed),
            conflicts: c.conflicts.load(Ordering::Relaxed),
            durable_writes: c.durable_writes.load(Ordering::Relaxed),
            apply_nanos: c.apply_nanos.load(Ordering::Relaxed),
            slowest_batch_micros: c.slowest_commit_micros.load(Ordering::Relaxed),
            ..StoreStats::default()
        }
    }
}

fn export_snapshot(c: &mut Conn, sink: &mut dyn FnMut(ExportRecord) -> Result<()>) -> Result<()> {
    for (owner, version, description, applied_at_ms) in rows::owner_migrations(c)? {
        sink(ExportRecord::OwnerMigration {
            owner,
            version,
            description,
            applied_at_ms,
        })?;
    }
    for (table, owner, create_sql) in rows::row_tables(c)? {
        sink(ExportRecord::RowTable {
            table: table.clone(),
            owner,
            create_sql,
        })?;
        rows::for_each_raw_row(c, &table, &mut |values| {
            sink(ExportRecord::Row {
                table: table.clone(),
                values,
            })
        })?;
    }
    // Keyset pages inside the snapshot: bounded memory without server-side cursors.
    for expiring in [false, true] {
        let (from, extra) = match expiring {
            false => (KV, "NULL::bigint"),
            true => (EXPIRING, "expires_at"),
        };
        let sql = format!(
            "SELECT tbl, key, value, {extra} FROM {from} WHERE (tbl, key) > ($1, $2) \
             ORDER BY tbl, key LIMIT {CHUNK}"
        );
        let mut last: (String, Vec<u8>) = (String::new(), Vec::new());
        loop {
            let rows = c
                .query(&sql, &[&last.0, &last.1])
                .map_err(pg_err("export"))?;
            for r in &rows {
                let table: String = r.get(0);
                let key_bytes: Vec<u8> = r.get(1);
                let key = String::from_utf8(key_bytes.clone())
                    .map_err(|e| StoreError::corrupt(&table, format!("key: {e}")))?;
                let value: Vec<u8> = r.get(2);
                let expires: Option<i64> = r.get(3);
                last = (table.clone(), key_bytes);
                sink(match expires {
                    Some(expires_at_ms) if expiring => ExportRecord::Expiring {
                        table,
                        key,
                        value,
                        expires_at_ms,
                    },
                    _ => ExportRecord::Entry { table, key, value },
                })?;
            }
            if rows.len() < CHUNK {
                break;
            }
        }
    }
    let mut after = 0i64;
    loop {
        let rows = c
            .query(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT {CHUNK}"
                ),
                &[&after],
            )
            .map_err(pg_err("export"))?;
        for r in &rows {
            after = r.get(0);
            sink(ExportRecord::Event(stored_event(r)))?;
        }
        if rows.len() < CHUNK {
            break;
        }
    }
    let rows = c
        .query("SELECT value FROM meta WHERE name = 'last_seq'", &[])
        .map_err(pg_err("export"))?;
    let last: i64 = rows.first().map_or(0, |r| r.get(0));
    sink(ExportRecord::EventSeq {
        last_seq: u64::try_from(last).unwrap_or(0),
    })
}

fn import_chunk(c: &mut Conn, chunk: Vec<ExportRecord>) -> Result<()> {
    let mut max_seq = 0i64;
    for record in chunk {
        match record {
            ExportRecord::Entry { table, key, value } => {
                c.execute(
                    &format!(
                        "INSERT INTO {KV} (tbl, key, value) VALUES ($1, $2, $3) \
                         ON CONFLICT (tbl, key) DO UPDATE SET value = excluded.value"
                    ),
                    &[&table, &key.as_bytes(), &value],
                )
                .map_err(pg_err("import"))?;
            }
            ExportRecord::Expiring {
                table,
                key,
                value,
                expires_at_ms,
            } => {
                c.execute(
                    &format!(
                        "INSERT INTO {EXPIRING} (tbl, key, value, expires_at) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (tbl, key) DO UPDATE SET \
                         value = excluded.value, expires_at = excluded.expires_at"
                    ),
                    &[&table, &key.as_bytes(), &value, &expires_at_ms],
                )
                .map_err(pg_err("import"))?;
            }
            ExportRecord::Event(e) => {
                let seq = i64::try_from(e.seq)
                    .map_err(|_| StoreError::corrupt("import", "event seq overflow"))?;
                let params: [&(dyn ToSql + Sync); 6] = [
                    &seq,
                    &e.id,
                    &e.kind,
                    &e.organization_id,
                    &e.created_at_ms,
                    &e.body,
                ];
                match c.execute(
                    "INSERT INTO events (seq, id, kind, organization_id, created_at_ms, body) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &params,
                ) {
                    Ok(_) => {}
                    Err(err) if err.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                        return Err(StoreError::corrupt(
                            "import",
                            format!("duplicate event id {}", e.id),
                        ))
                    }
                    Err(err) => return Err(pg_err("import")(err)),
                }
                max_seq = max_seq.max(seq);
            }
            ExportRecord::OwnerMigration {
                owner,
                version,
                description,
                applied_at_ms,
            } => rows::record_owner_migration(c, &owner, version, &description, applied_at_ms)?,
            ExportRecord::RowTable {
                table,
                owner,
                create_sql,
            } => rows::import_row_table(c, &table, &owner, &create_sql)?,
            ExportRecord::Row { table, values } => rows::insert_raw_row(c, &table, &values)?,
            ExportRecord::EventSeq { last_seq } => {
                max_seq = max_seq.max(to_i64(last_seq));
            }
        }
    }
    // A later chunk (or a write racing the import) must not hand these seqs out again.
    c.execute(
        "UPDATE meta SET value = greatest(value, $1) WHERE name = 'last_seq'",
        &[&max_seq],
    )
    .map_err(pg_err("import: the event counter"))?;
    Ok(())
}
