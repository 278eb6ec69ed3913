//! Typed rows on SQLite: DDL from [`TableDef`]s, row writes inside the writer's savepoints,
//! index reads on the read connections, owner migrations, and rows in export/import.
//!
//! Each [`TableDef`] is one `STRICT` SQL table under its own name (`directory_users`, ...)
//! with its indexes, so an operator's `sqlite3` shows the real schema. `row_tables` lists them
//! (with the DDL that made them, which an export carries so an import can recreate them);
//! `owner_migrations` records each owner's applied migrations.

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use super::schema::{now_ms, quoted};
use crate::error::{ConflictKind, Result, StoreError};
use crate::rows::{render_key, OwnerMigration, Row, RowOp, RowValue, RowWrite, TableDef, PRIMARY};

fn sql_err(context: &str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::backend(context, e)
}

/// `CREATE TABLE IF NOT EXISTS` + its indexes for `table`.
pub(crate) fn create_sql(table: &TableDef) -> String {
    let q = quoted(table.name);
    let mut cols: Vec<String> = table
        .columns
        .iter()
        .map(|c| {
            format!(
                "{} {}{}",
                quoted(c.name),
                c.ty.sql(),
                if c.nullable { "" } else { " NOT NULL" }
            )
        })
        .collect();
    cols.push(format!("PRIMARY KEY ({})", quoted_list(table.primary_key)));
    let options = if table.without_rowid {
        "STRICT, WITHOUT ROWID"
    } else {
        "STRICT"
    };
    let mut sql = format!(
        "CREATE TABLE IF NOT EXISTS {q} ({}) {options};",
        cols.join(", ")
    );
    for index in table.indexes {
        sql.push_str(&format!(
            "\nCREATE {}INDEX IF NOT EXISTS {} ON {q} ({}){};",
            if index.unique { "UNIQUE " } else { "" },
            quoted(index.name),
            index.terms.join(", "),
            index
                .partial
                .map(|p| format!(" WHERE {p}"))
                .unwrap_or_default()
        ));
    }
    sql
}

fn quoted_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| quoted(n))
        .collect::<Vec<_>>()
        .join(", ")
}

fn to_sql(v: &RowValue) -> ToSqlOutput<'_> {
    ToSqlOutput::Borrowed(match v {
        RowValue::Null => ValueRef::Null,
        RowValue::Integer(i) => ValueRef::Integer(*i),
        RowValue::Text(s) => ValueRef::Text(s.as_bytes()),
        RowValue::Blob(b) => ValueRef::Blob(b),
    })
}

fn int_arg(i: i64) -> ToSqlOutput<'static> {
    ToSqlOutput::Borrowed(ValueRef::Integer(i))
}

fn from_sql(table: &str, v: ValueRef<'_>) -> Result<RowValue> {
    Ok(match v {
        ValueRef::Null => RowValue::Null,
        ValueRef::Integer(i) => RowValue::Integer(i),
        ValueRef::Text(t) => RowValue::Text(
            std::str::from_utf8(t)
                .map_err(|e| StoreError::corrupt(table, format!("text column: {e}")))?
                .to_owned(),
        ),
        ValueRef::Blob(b) => RowValue::Blob(b.to_vec()),
        ValueRef::Real(_) => return Err(StoreError::corrupt(table, "unexpected REAL value")),
    })
}

fn read_row(table: &TableDef, row: &rusqlite::Row<'_>) -> Result<Row> {
    let mut values = Vec::with_capacity(table.columns.len());
    for i in 0..table.columns.len() {
        values.push(from_sql(
            table.name,
            row.get_ref(i).map_err(sql_err("reading a row"))?,
        )?);
    }
    Ok(Row { values })
}

/// `"a" = ?n AND "b" = ?n+1 ...` over `names`, numbering parameters from `first`.
fn key_match(names: &[&str], first: usize) -> String {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{} = ?{}", quoted(n), first + i))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// A constraint failure of a row write, as the conflict owners already map.
fn write_error(table: &TableDef, key: &[&RowValue], e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, msg) = &e {
        if f.code == ErrorCode::ConstraintViolation
            && (f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
        {
            // Which slot is taken: SQLite names the columns (or the expression index).
            let what = msg
                .as_deref()
                .and_then(|m| m.split_once("constraint failed: "))
                .map(|(_, w)| w.to_owned())
                .unwrap_or_default();
            return StoreError::conflict(
                table.name,
                &format!("{} ({what})", render_key(key)),
                ConflictKind::Exists,
            );
        }
    }
    StoreError::backend(&format!("writing a row of {}", table.name), e)
}

/// Which statement a row write runs (the cache key beside the table).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum WriteKind {
    Insert,
    Upsert,
    Update,
    Delete,
}

thread_local! {
    /// Each table's write statements, built once per thread (the writer thread): building
    /// them per write cost more CPU than the B-tree work they do.
    static WRITE_SQL: std::cell::RefCell<std::collections::HashMap<(usize, WriteKind), std::rc::Rc<str>>> =
        std::cell::RefCell::default();
}

fn write_sql(table: &'static TableDef, kind: WriteKind) -> std::rc::Rc<str> {
    let key = (std::ptr::from_ref(table) as usize, kind);
    WRITE_SQL.with(|cache| {
        std::rc::Rc::clone(
            cache
                .borrow_mut()
                .entry(key)
                .or_insert_with(|| build_write_sql(table, kind).into()),
        )
    })
}

/// The SQL of a row write. Parameters: `?1..?n` are the columns in declared order (Delete:
/// the key columns); an update's version slot carries the expected version (NULL: any).
fn build_write_sql(table: &TableDef, kind: WriteKind) -> String {
    let q = quoted(table.name);
    let cols = table.columns.iter().map(|c| c.name).collect::<Vec<_>>();
    let placeholders = (1..=cols.len())
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let non_key: Vec<&str> = cols
        .iter()
        .copied()
        .filter(|c| !table.primary_key.contains(c))
        .collect();
    let set_clause = |source: &dyn Fn(usize, &str) -> String| -> String {
        non_key
            .iter()
            .map(|c| match Some(*c) == table.version_column {
                true => format!("{} = {q}.{} + 1", quoted(c), quoted(c)),
                false => {
                    let i = cols.iter().position(|x| x == c).unwrap_or(0);
                    format!("{} = {}", quoted(c), source(i, c))
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match kind {
        WriteKind::Delete => format!("DELETE FROM {q} WHERE {}", key_match(table.primary_key, 1)),
        WriteKind::Insert => format!(
            "INSERT INTO {q} ({}) VALUES ({placeholders})",
            quoted_list(&cols)
        ),
        WriteKind::Upsert if non_key.is_empty() => format!(
            "INSERT INTO {q} ({}) VALUES ({placeholders}) ON CONFLICT ({}) DO NOTHING",
            quoted_list(&cols),
            quoted_list(table.primary_key)
        ),
        WriteKind::Upsert => format!(
            "INSERT INTO {q} ({}) VALUES ({placeholders}) ON CONFLICT ({}) DO UPDATE SET {}",
            quoted_list(&cols),
            quoted_list(table.primary_key),
            set_clause(&|_, c| format!("excluded.{}", quoted(c)))
        ),
        WriteKind::Update => {
            let mut where_clause = table
                .key_positions()
                .iter()
                .map(|&i| format!("{} = ?{}", quoted(cols[i]), i + 1))
                .collect::<Vec<_>>()
                .join(" AND ");
            if let Some(v) = table.version_position() {
                where_clause.push_str(&format!(
                    " AND (?{n} IS NULL OR {} = ?{n})",
                    quoted(cols[v]),
                    n = v + 1
                ));
            }
            format!(
                "UPDATE {q} SET {} WHERE {where_clause}",
                set_clause(&|i, _| format!("?{}", i + 1))
            )
        }
    }
}

/// Applies one row write inside the caller's savepoint.
pub(crate) fn apply_row(conn: &Connection, w: &RowWrite) -> Result<()> {
    let table = w.table;
    if w.op == RowOp::Delete {
        table.check_key(&w.values)?;
        let sql = write_sql(table, WriteKind::Delete);
        return conn
            .prepare_cached(&sql)
            .and_then(|mut s| s.execute(rusqlite::params_from_iter(w.values.iter().map(to_sql))))
            .map(|_| ())
            .map_err(|e| row_write_error(table, &[], e));
    }
    table.check_row(&w.values)?;
    let key_pos = table.key_positions();
    let key: Vec<&RowValue> = key_pos.iter().map(|&i| &w.values[i]).collect();
    let version_pos = table.version_position();
    // The store's version: 1 for a new row (an update's is set in SQL).
    let mut values: Vec<ToSqlOutput<'_>> = w
        .values
        .iter()
        .enumerate()
        .map(|(i, v)| match Some(i) == version_pos {
            true => int_arg(1),
            false => to_sql(v),
        })
        .collect();
    match w.op {
        RowOp::Insert | RowOp::Upsert => {
            let kind = match w.op {
                RowOp::Insert => WriteKind::Insert,
                _ => WriteKind::Upsert,
            };
            let sql = write_sql(table, kind);
            conn.prepare_cached(&sql)
                .and_then(|mut s| s.execute(rusqlite::params_from_iter(values)))
                .map(|_| ())
                .map_err(|e| row_write_error(table, &key, e))
        }
        RowOp::Update { expect_version } => {
            if expect_version.is_some() && version_pos.is_none() {
                return Err(StoreError::Backend(format!(
                    "{} has no version column: an update cannot expect a version",
                    table.name
                )));
            }
            if table.columns.len() == table.primary_key.len() {
                // Nothing but the key: an update only checks that the row is there.
                return match read_version(conn, table, &key)? {
                    Some(_) => Ok(()),
                    None => Err(StoreError::conflict(
                        table.name,
                        &render_key(&key),
                        ConflictKind::Missing,
                    )),
                };
            }
            if let Some(v) = version_pos {
                values[v] = match expect_version {
                    Some(expected) => int_arg(expected),
                    None => ToSqlOutput::Borrowed(ValueRef::Null),
                };
            }
            let sql = write_sql(table, WriteKind::Update);
            let changed = conn
                .prepare_cached(&sql)
                .and_then(|mut s| s.execute(rusqlite::params_from_iter(values)))
                .map_err(|e| row_write_error(table, &key, e))?;
            if changed == 0 {
                let kind = match read_version(conn, table, &key)? {
                    None => ConflictKind::Missing,
                    Some(_) => ConflictKind::Changed,
                };
                return Err(StoreError::conflict(table.name, &render_key(&key), kind));
            }
            Ok(())
        }
        RowOp::Delete => Ok(()),
    }
}

/// A write's error: "no such table" says which migration is missing; constraint failures are
/// conflicts; anything else a backend error.
fn row_write_error(table: &TableDef, key: &[&RowValue], e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(_, Some(msg)) = &e {
        if msg.starts_with("no such table") {
            return StoreError::Backend(format!(
                "table {} does not exist: its owner must run Store::migrate_owner first",
                table.name
            ));
        }
    }
    write_error(table, key, e)
}

fn read_version(conn: &Connection, table: &TableDef, key: &[&RowValue]) -> Result<Option<i64>> {
    let col = table
        .version_column
        .map(quoted)
        .unwrap_or_else(|| "1".to_owned());
    let sql = format!(
        "SELECT {col} FROM {} WHERE {}",
        quoted(table.name),
        key_match(table.primary_key, 1)
    );
    conn.prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_row(
                rusqlite::params_from_iter(key.iter().map(|v| to_sql(v))),
                |r| r.get::<_, i64>(0),
            )
            .optional()
        })
        .map_err(sql_err("reading a row version"))
}

/// The row of `table` with primary key `key`.
pub(crate) fn get_row(
    conn: &Connection,
    table: &TableDef,
    key: &[RowValue],
) -> Result<Option<Row>> {
    table.check_key(key)?;
    let sql = format!(
        "SELECT {} FROM {} WHERE {}",
        column_list(table),
        quoted(table.name),
        key_match(table.primary_key, 1)
    );
    select(conn, table, &sql, key.iter().map(to_sql).collect(), 1).map(|mut v| v.pop())
}

fn column_list(table: &TableDef) -> String {
    quoted_list(&table.columns.iter().map(|c| c.name).collect::<Vec<_>>())
}

fn select(
    conn: &Connection,
    table: &TableDef,
    sql: &str,
    args: Vec<ToSqlOutput<'_>>,
    limit: usize,
) -> Result<Vec<Row>> {
    let mut stmt = conn.prepare_cached(sql).map_err(|e| read_error(table, e))?;
    let mut rows = stmt
        .query(rusqlite::params_from_iter(args))
        .map_err(|e| read_error(table, e))?;
    let mut out = Vec::new();
    while out.len() < limit {
        match rows.next().map_err(|e| read_error(table, e))? {
            Some(row) => out.push(read_row(table, row)?),
            None => break,
        }
    }
    Ok(out)
}

fn read_error(table: &TableDef, e: rusqlite::Error) -> StoreError {
    match row_write_error(table, &[], e) {
        StoreError::Conflict { .. } => StoreError::Backend(format!("reading {}", table.name)),
        other => other,
    }
}

/// The ordering terms of `index` (its terms, then the primary-key columns not among them)
/// and its partial condition.
fn order_terms(table: &TableDef, index: &str) -> Result<(Vec<String>, Option<&'static str>, bool)> {
    if index == PRIMARY {
        return Ok((
            table.primary_key.iter().map(|k| quoted(k)).collect(),
            None,
            true,
        ));
    }
    let def = table
        .index(index)
        .ok_or_else(|| StoreError::Backend(format!("table {} has no index {index}", table.name)))?;
    let mut terms: Vec<String> = def.terms.iter().map(|t| (*t).to_owned()).collect();
    for k in table.primary_key {
        if !def.terms.contains(k) {
            terms.push(quoted(k));
        }
    }
    Ok((terms, def.partial, def.unique))
}

/// The row whose unique index `index` holds `values`.
pub(crate) fn find_unique(
    conn: &Connection,
    table: &TableDef,
    index: &str,
    values: &[RowValue],
) -> Result<Option<Row>> {
    let def_terms = match index {
        PRIMARY => return get_row(conn, table, values),
        _ => table.index(index).filter(|d| d.unique).ok_or_else(|| {
            StoreError::Backend(format!("table {} has no unique index {index}", table.name))
        })?,
    };
    if values.len() != def_terms.terms.len() {
        return Err(StoreError::Backend(format!(
            "index {index} of {} has {} terms, {} values given",
            table.name,
            def_terms.terms.len(),
            values.len()
        )));
    }
    let mut clause = def_terms
        .terms
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{t} = ?{}", i + 1))
        .collect::<Vec<_>>()
        .join(" AND ");
    if let Some(p) = def_terms.partial {
        clause.push_str(&format!(" AND ({p})"));
    }
    let sql = format!(
        "SELECT {} FROM {} WHERE {clause}",
        column_list(table),
        quoted(table.name)
    );
    select(conn, table, &sql, values.iter().map(to_sql).collect(), 1).map(|mut v| v.pop())
}

/// `WHERE` clause and arguments selecting `prefix` (and rows after `after`) in `index`'s order.
fn range_clause<'a>(
    table: &TableDef,
    index: &str,
    prefix: &'a [RowValue],
    after: Option<&'a [RowValue]>,
) -> Result<(String, String, Vec<ToSqlOutput<'a>>)> {
    let (terms, partial, _) = order_terms(table, index)?;
    let rest = terms.len().saturating_sub(prefix.len());
    if prefix.len() > terms.len() || after.is_some_and(|a| a.is_empty() || a.len() > rest) {
        return Err(StoreError::Backend(format!(
            "index {index} of {} orders by {} terms: {} prefix values and {} after values do \
             not fit",
            table.name,
            terms.len(),
            prefix.len(),
            after.map_or(0, <[RowValue]>::len)
        )));
    }
    let mut parts = vec!["1".to_owned()];
    let mut args: Vec<ToSqlOutput<'a>> = Vec::new();
    for (t, v) in terms.iter().zip(prefix) {
        args.push(to_sql(v));
        parts.push(format!("{t} = ?{}", args.len()));
    }
    if let Some(after) = after {
        let cols = &terms[prefix.len()..prefix.len() + after.len()];
        let marks: Vec<String> = after
            .iter()
            .map(|v| {
                args.push(to_sql(v));
                format!("?{}", args.len())
            })
            .collect();
        parts.push(format!("({}) > ({})", cols.join(", "), marks.join(", ")));
    }
    if let Some(p) = partial {
        parts.push(format!("({p})"));
    }
    Ok((parts.join(" AND "), terms.join(", "), args))
}

/// Rows in `index` order under `prefix`, after `after`, at most `limit`.
pub(crate) fn scan_index(
    conn: &Connection,
    table: &TableDef,
    index: &str,
    prefix: &[RowValue],
    after: Option<&[RowValue]>,
    limit: usize,
) -> Result<Vec<Row>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let (clause, order, mut args) = range_clause(table, index, prefix, after)?;
    let lim = i64::try_from(limit).unwrap_or(i64::MAX);
    args.push(int_arg(lim));
    let sql = format!(
        "SELECT {} FROM {} WHERE {clause} ORDER BY {order} LIMIT ?{}",
        column_list(table),
        quoted(table.name),
        args.len()
    );
    select(conn, table, &sql, args, limit)
}

/// Number of rows under `prefix` in `index`.
pub(crate) fn count_index(
    conn: &Connection,
    table: &TableDef,
    index: &str,
    prefix: &[RowValue],
) -> Result<u64> {
    let (clause, _, args) = range_clause(table, index, prefix, None)?;
    let sql = format!("SELECT count(*) FROM {} WHERE {clause}", quoted(table.name));
    let n: i64 = conn
        .prepare_cached(&sql)
        .and_then(|mut s| s.query_row(rusqlite::params_from_iter(args), |r| r.get(0)))
        .map_err(|e| read_error(table, e))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The owner's applied schema version (0 when none).
pub(crate) fn owner_version(conn: &Connection, owner: &str) -> Result<i64> {
    conn.prepare_cached("SELECT max(version) FROM owner_migrations WHERE owner = ?1")
        .and_then(|mut s| s.query_row([owner], |r| r.get::<_, Option<i64>>(0)))
        .map(|v| v.unwrap_or(0))
        .map_err(sql_err("reading an owner's schema version"))
}

/// Runs one owner migration (inside the caller's transaction); false if it was already
/// applied (another handle may have run it).
pub(crate) fn apply_owner_migration(
    conn: &Connection,
    owner: &str,
    m: &OwnerMigration,
) -> Result<bool> {
    if owner_version(conn, owner)? >= m.version {
        return Ok(false);
    }
    let context = format!("migration {} of {owner}", m.version);
    for table in m.create {
        table.validate()?;
        let ddl = create_sql(table);
        conn.execute_batch(&ddl)
            .map_err(|e| StoreError::backend(&context, e))?;
        conn.execute(
            "INSERT INTO row_tables (name, owner, create_sql) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET create_sql = excluded.create_sql",
            params![table.name, owner, ddl],
        )
        .map_err(|e| StoreError::backend(&context, e))?;
    }
    if !m.sql.trim().is_empty() {
        conn.execute_batch(m.sql)
            .map_err(|e| StoreError::backend(&context, e))?;
    }
    record_owner_migration(conn, owner, m.version, m.description, now_ms())?;
    Ok(true)
}

pub(crate) fn record_owner_migration(
    conn: &Connection,
    owner: &str,
    version: i64,
    description: &str,
    applied_at_ms: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO owner_migrations (owner, version, description, applied_at_ms) \
         VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| s.execute(params![owner, version, description, applied_at_ms]))
    .map(|_| ())
    .map_err(sql_err("recording an owner migration"))
}

/// Every row table: (name, owner, create_sql), by name.
pub(crate) fn row_tables(conn: &Connection) -> Result<Vec<(String, String, String)>> {
    let mut stmt = conn
        .prepare_cached("SELECT name, owner, create_sql FROM row_tables ORDER BY name")
        .map_err(sql_err("listing row tables"))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(sql_err("listing row tables"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql_err("listing row tables"))
}

/// Every applied owner migration: (owner, version, description, applied_at_ms).
pub(crate) fn owner_migrations(conn: &Connection) -> Result<Vec<(String, i64, String, i64)>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT owner, version, description, applied_at_ms FROM owner_migrations \
             ORDER BY owner, version",
        )
        .map_err(sql_err("listing owner migrations"))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .map_err(sql_err("listing owner migrations"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql_err("listing owner migrations"))
}

/// Calls `f` with every row of SQL table `name` (all columns, declared order; by rowid or key).
pub(crate) fn for_each_raw_row(
    conn: &Connection,
    name: &str,
    f: &mut dyn FnMut(Vec<RowValue>) -> Result<()>,
) -> Result<()> {
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM {}", quoted(name)))
        .map_err(sql_err("export"))?;
    let n = stmt.column_count();
    let mut rows = stmt.query([]).map_err(sql_err("export"))?;
    while let Some(row) = rows.next().map_err(sql_err("export"))? {
        let mut values = Vec::with_capacity(n);
        for i in 0..n {
            values.push(from_sql(name, row.get_ref(i).map_err(sql_err("export"))?)?);
        }
        f(values)?;
    }
    Ok(())
}

/// Inserts an exported row into SQL table `name` (created by its `row_table` record).
pub(crate) fn insert_raw_row(conn: &Connection, name: &str, values: &[RowValue]) -> Result<()> {
    let marks = (1..=values.len())
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    conn.prepare_cached(&format!("INSERT INTO {} VALUES ({marks})", quoted(name)))
        .and_then(|mut s| s.execute(rusqlite::params_from_iter(values.iter().map(to_sql))))
        .map(|_| ())
        .map_err(|e| StoreError::backend(&format!("import: a row of {name}"), e))
}

/// Whether any row table holds a row.
pub(crate) fn any_row(conn: &Connection) -> Result<bool> {
    for (name, _, _) in row_tables(conn)? {
        let any: Option<i64> = conn
            .query_row(
                &format!("SELECT 1 FROM {} LIMIT 1", quoted(&name)),
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql_err("checking emptiness"))?;
        if any.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Recreates an exported row table from its DDL. An import file is input: each line of the
/// DDL must be ONE statement (SQLite prepares it alone) creating this table or an index on it,
/// as [`create_sql`] writes them; anything else is refused before it runs.
pub(crate) fn import_row_table(
    conn: &Connection,
    table: &str,
    owner: &str,
    create_sql: &str,
) -> Result<()> {
    let q = quoted(table);
    let refuse = |why: &str| {
        StoreError::corrupt(
            "import",
            format!("row table {table}: its create_sql {why}; it must be the DDL an export wrote"),
        )
    };
    for (i, line) in create_sql.lines().enumerate() {
        let fits = if i == 0 {
            line.starts_with(&format!("CREATE TABLE IF NOT EXISTS {q} ("))
        } else {
            (line.starts_with("CREATE INDEX IF NOT EXISTS ")
                || line.starts_with("CREATE UNIQUE INDEX IF NOT EXISTS "))
                && line.contains(&format!(" ON {q} ("))
        };
        if !fits {
            return Err(refuse(&format!(
                "line {} is not a CREATE of this table or its index",
                i + 1
            )));
        }
        // One statement per line: prepare refuses a second one hidden after a `;`.
        let stmt = conn
            .prepare(line)
            .map_err(|e| refuse(&format!("line {} does not prepare alone ({e})", i + 1)))?;
        if !stmt.readonly() && stmt.parameter_count() == 0 {
            drop(stmt);
            conn.execute_batch(line).map_err(|e| {
                StoreError::backend(&format!("import: creating row table {table}"), e)
            })?;
        } else {
            return Err(refuse(&format!("line {} is not DDL", i + 1)));
        }
    }
    if create_sql.trim().is_empty() {
        return Err(refuse("is empty"));
    }
    conn.execute(
        "INSERT INTO row_tables (name, owner, create_sql) VALUES (?1, ?2, ?3) \
         ON CONFLICT (name) DO NOTHING",
        params![table, owner, create_sql],
    )
    .map(|_| ())
    .map_err(sql_err("import: recording a row table"))
}
