//! The SQLite file's schema: fixed tables, per-table DDL, and the migrations run at open.
//!
//! Fixed tables: `schema_version` (one row per applied migration), `meta` (named integers:
//! the highest event seq ever handed out), `events` (the log: `seq` is the rowid, `id` unique,
//! `created_at_ms` indexed for retention). Each store table `T` is its own SQL table `"t:T"`
//! (key TEXT PRIMARY KEY, value BLOB, WITHOUT ROWID) and each expiring table `"x:T"` adds an
//! indexed `expires_at` column. Keys compare with SQLite's BINARY collation (memcmp of UTF-8),
//! which is the byte order the `Store` trait promises.

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Result, StoreError};

/// The `meta` row holding the highest event seq ever assigned (events may be compacted away).
pub(crate) const META_LAST_SEQ: &str = "last_event_seq";

/// Prefix of an ordinary table's SQL name (`"t:users"`).
pub(crate) const TABLE_PREFIX: &str = "t:";
/// Prefix of an expiring table's SQL name (`"x:codes"`).
pub(crate) const EXPIRING_PREFIX: &str = "x:";

/// One migration: its version, what it does, and its SQL (run in one transaction).
struct Migration {
    version: i64,
    description: &'static str,
    sql: &'static str,
}

/// Every migration in order. Append only: a released version's SQL never changes.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "event log, meta counters",
        sql: "
        CREATE TABLE meta (
            name TEXT PRIMARY KEY NOT NULL,
            value INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL,
            kind TEXT NOT NULL,
            organization_id TEXT,
            created_at_ms INTEGER NOT NULL,
            body BLOB NOT NULL
        );
        CREATE UNIQUE INDEX events_by_id ON events (id);
        CREATE INDEX events_by_created_at ON events (created_at_ms);
    ",
    },
    Migration {
        version: 2,
        description: "typed-row tables: per-owner migrations and the list of row tables",
        sql: "
        CREATE TABLE owner_migrations (
            owner TEXT NOT NULL,
            version INTEGER NOT NULL,
            description TEXT NOT NULL,
            applied_at_ms INTEGER NOT NULL,
            PRIMARY KEY (owner, version)
        ) WITHOUT ROWID;
        CREATE TABLE row_tables (
            name TEXT PRIMARY KEY NOT NULL,
            owner TEXT NOT NULL,
            create_sql TEXT NOT NULL
        ) WITHOUT ROWID;
    ",
    },
];

/// The schema version this build writes.
pub(crate) fn current_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

fn sql_err(context: &str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::backend(context, e)
}

/// The schema version of an open database (0 for a new file).
pub(crate) fn version(conn: &Connection) -> Result<i64> {
    let has_table: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(sql_err("reading the schema version"))?
        > 0;
    if !has_table {
        return Ok(0);
    }
    conn.query_row("SELECT max(version) FROM schema_version", [], |r| {
        r.get::<_, Option<i64>>(0)
    })
    .map(|v| v.unwrap_or(0))
    .map_err(sql_err("reading the schema version"))
}

/// Brings the schema up to [`current_version`], each migration in its own transaction.
/// Refuses a file written by a newer build (its schema is unknown to this one).
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
            version INTEGER PRIMARY KEY,
            description TEXT NOT NULL,
            applied_at_ms INTEGER NOT NULL
        )",
    )
    .map_err(sql_err("creating schema_version"))?;
    let found = version(conn)?;
    let latest = current_version();
    if found > latest {
        return Err(StoreError::Backend(format!(
            "the store's schema is version {found} but this idbridge knows only up to {latest}: \
             run the idbridge release that wrote it (or a newer one)"
        )));
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql_err("starting a migration"))?;
        // Another process may have migrated while we waited for the lock.
        if version(&tx)? >= m.version {
            continue;
        }
        tx.execute_batch(m.sql)
            .map_err(|e| StoreError::backend(&format!("migration {}", m.version), e))?;
        tx.execute(
            "INSERT INTO schema_version (version, description, applied_at_ms) VALUES (?1, ?2, ?3)",
            params![m.version, m.description, now_ms()],
        )
        .map_err(sql_err("recording a migration"))?;
        tx.commit().map_err(sql_err("committing a migration"))?;
        tracing::info!(
            version = m.version,
            description = m.description,
            "store schema migrated"
        );
    }
    Ok(())
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A SQL identifier for `name`, double-quoted (any table name the domain picks is safe).
pub(crate) fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The SQL name of an ordinary (`expiring == false`) or expiring store table.
pub(crate) fn sql_name(expiring: bool, table: &str) -> String {
    let prefix = if expiring {
        EXPIRING_PREFIX
    } else {
        TABLE_PREFIX
    };
    format!("{prefix}{table}")
}

/// DDL creating the SQL table `sql_name` (from [`sql_name`]) if it does not exist.
pub(crate) fn create_table_sql(sql_name: &str) -> String {
    let q = quoted(sql_name);
    if sql_name.starts_with(EXPIRING_PREFIX) {
        let index = quoted(&format!("{sql_name}:expires_at"));
        format!(
            "CREATE TABLE IF NOT EXISTS {q} (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL, \
             expires_at INTEGER NOT NULL) WITHOUT ROWID; \
             CREATE INDEX IF NOT EXISTS {index} ON {q} (expires_at);"
        )
    } else {
        format!(
            "CREATE TABLE IF NOT EXISTS {q} (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL) \
             WITHOUT ROWID;"
        )
    }
}

/// Every store table's SQL name (`t:*` and `x:*`), sorted.
pub(crate) fn store_tables(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND (substr(name, 1, 2) = 't:' OR substr(name, 1, 2) = 'x:') ORDER BY name",
        )
        .map_err(sql_err("listing tables"))?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(sql_err("listing tables"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql_err("listing tables"))
}

/// Whether the SQL table `sql_name` exists (as seen by `conn`'s snapshot).
pub(crate) fn table_exists(conn: &Connection, sql_name: &str) -> Result<bool> {
    conn.prepare_cached("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")
        .and_then(|mut s| s.query_row([sql_name], |_| Ok(())).optional())
        .map(|found| found.is_some())
        .map_err(sql_err("looking up a table"))
}

/// The highest event seq ever assigned (0 for a new store).
pub(crate) fn last_seq(conn: &Connection) -> Result<u64> {
    let v: Option<i64> = conn
        .prepare_cached("SELECT value FROM meta WHERE name = ?1")
        .and_then(|mut s| s.query_row([META_LAST_SEQ], |r| r.get(0)).optional())
        .map_err(sql_err("reading the event counter"))?;
    u64::try_from(v.unwrap_or(0))
        .map_err(|_| StoreError::corrupt("meta", "negative last_event_seq"))
}

/// Sets the highest event seq ever assigned.
pub(crate) fn set_last_seq(conn: &Connection, seq: u64) -> Result<()> {
    let seq = i64::try_from(seq).map_err(|_| StoreError::corrupt("meta", "event seq overflow"))?;
    conn.prepare_cached("INSERT OR REPLACE INTO meta (name, value) VALUES (?1, ?2)")
        .and_then(|mut s| s.execute(params![META_LAST_SEQ, seq]))
        .map(|_| ())
        .map_err(sql_err("writing the event counter"))
}
