//! Typed rows on PostgreSQL: each [`TableDef`] is a real table with its indexes (expression
//! and partial ones included), written inside the change set's transaction.
//!
//! The DDL is made from the SAME text SQLite runs ([`crate::sqlite::rows::create_sql`]),
//! translated statement by statement ([`pg_ddl`]): `INTEGER` -> `bigint`, `BLOB` -> `bytea`,
//! `TEXT` -> `text COLLATE "C"` (byte order like SQLite's BINARY, ASCII-only `lower()` like
//! SQLite's), `STRICT` / `WITHOUT ROWID` dropped. `row_tables` keeps the SQLite text, so an
//! export from either backend imports into the other.

use postgres::error::SqlState;
use postgres::types::{IsNull, ToSql, Type};

use super::pool::Conn;
use super::{describe, pg_err};
use crate::error::{ConflictKind, Result, StoreError};
use crate::rows::{
    render_key, ColumnType, OwnerMigration, Row, RowOp, RowValue, RowWrite, TableDef, PRIMARY,
};
use crate::sqlite::rows::create_sql;

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quoted_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| quoted(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A row value as a statement parameter.
#[derive(Debug)]
struct Param<'a>(&'a RowValue);

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let mismatch = || -> Box<dyn std::error::Error + Sync + Send> {
            format!("a {:?} value cannot be a {ty} parameter", self.0).into()
        };
        match self.0 {
            RowValue::Null => Ok(IsNull::Yes),
            RowValue::Integer(i) if <i64 as ToSql>::accepts(ty) => i.to_sql(ty, out),
            RowValue::Text(s) if <&str as ToSql>::accepts(ty) => s.as_str().to_sql(ty, out),
            RowValue::Blob(b) if <&[u8] as ToSql>::accepts(ty) => b.as_slice().to_sql(ty, out),
            _ => Err(mismatch()),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// The SQL type a parameter is cast to: the column's when known, else the value's.
fn cast(v: &RowValue, col: Option<ColumnType>) -> &'static str {
    match (col, v) {
        (Some(ColumnType::Integer), _) | (None, RowValue::Integer(_)) => "::bigint",
        (Some(ColumnType::Blob), _) | (None, RowValue::Blob(_)) => "::bytea",
        _ => "::text",
    }
}

fn column_type(table: &TableDef, term: &str) -> Option<ColumnType> {
    table.column_index(term).map(|i| table.columns[i].ty)
}

fn params<'a>(values: &'a [Param<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    values.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// Translates SQLite DDL as [`create_sql`] writes it into PostgreSQL statements. `None` when a
/// statement is not a CREATE of `table` or one of its indexes (import input is checked).
pub(crate) fn pg_ddl(table: &str, sqlite: &str) -> std::result::Result<Vec<String>, String> {
    let q = quoted(table);
    let mut out = Vec::new();
    for (i, line) in sqlite.lines().enumerate() {
        let line = line.trim_end();
        let stmt = line.strip_suffix(';').unwrap_or(line);
        if i == 0 {
            if !stmt.starts_with(&format!("CREATE TABLE IF NOT EXISTS {q} (")) {
                return Err(format!("line {} is not a CREATE of this table", i + 1));
            }
            let body = stmt
                .strip_suffix(") STRICT, WITHOUT ROWID")
                .or_else(|| stmt.strip_suffix(") STRICT"))
                .ok_or_else(|| format!("line {} does not end like an export's table", i + 1))?;
            let body = body
                .replace("\" INTEGER", "\" bigint")
                .replace("\" BLOB", "\" bytea")
                .replace("\" TEXT", "\" text COLLATE \"C\"");
            out.push(format!("{body})"));
        } else {
            let fits = (stmt.starts_with("CREATE INDEX IF NOT EXISTS ")
                || stmt.starts_with("CREATE UNIQUE INDEX IF NOT EXISTS "))
                && stmt.contains(&format!(" ON {q} ("));
            if !fits {
                return Err(format!(
                    "line {} is not a CREATE of this table or its index",
                    i + 1
                ));
            }
            out.push(stmt.to_owned());
        }
    }
    if out.is_empty() {
        return Err("is empty".to_owned());
    }
    Ok(out)
}

/// Runs translated DDL, one statement per call (the extended protocol refuses a second
/// statement hidden after a `;`).
fn run_ddl(c: &mut Conn, table: &str, sqlite: &str, context: &str) -> Result<()> {
    let stmts = pg_ddl(table, sqlite).map_err(|why| {
        StoreError::corrupt(
            "import",
            format!("row table {table}: its create_sql {why}; it must be the DDL an export wrote"),
        )
    })?;
    for stmt in stmts {
        c.client
            .execute(stmt.as_str(), &[])
            .map_err(|e| StoreError::Backend(format!("{context}: {}", describe(&e))))?;
    }
    Ok(())
}

/// A row write's error: unique violations are conflicts, a missing table names the migration.
fn row_error(table: &TableDef, key: &[&RowValue], e: postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        if db.code() == &SqlState::UNIQUE_VIOLATION {
            let what = db.constraint().unwrap_or_default();
            return StoreError::conflict(
                table.name,
                &format!("{} ({what})", render_key(key)),
                ConflictKind::Exists,
            );
        }
        if db.code() == &SqlState::UNDEFINED_TABLE {
            return StoreError::Backend(format!(
                "table {} does not exist: its owner must run Store::migrate_owner first",
                table.name
            ));
        }
    }
    super::write_err(&format!("writing a row of {}", table.name))(e)
}

fn read_error(table: &TableDef, e: postgres::Error) -> StoreError {
    match row_error(table, &[], e) {
        StoreError::Conflict { .. } => StoreError::Backend(format!("reading {}", table.name)),
        other => other,
    }
}

/// `"a" = $n::type AND ...` over the key columns, numbering from `first`.
fn key_match(table: &TableDef, key: &[RowValue], first: usize) -> String {
    table
        .primary_key
        .iter()
        .zip(key)
        .enumerate()
        .map(|(i, (k, v))| {
            format!(
                "{} = ${}{}",
                quoted(k),
                first + i,
                cast(v, column_type(table, k))
            )
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn column_list(table: &TableDef) -> String {
    quoted_list(&table.columns.iter().map(|c| c.name).collect::<Vec<_>>())
}

fn read_row(table: &TableDef, r: &postgres::Row) -> Result<Row> {
    let mut values = Vec::with_capacity(table.columns.len());
    for (i, col) in table.columns.iter().enumerate() {
        let bad = |e: postgres::Error| StoreError::corrupt(table.name, e.to_string());
        values.push(match col.ty {
            ColumnType::Integer => r
                .try_get::<_, Option<i64>>(i)
                .map_err(bad)?
                .map_or(RowValue::Null, RowValue::Integer),
            ColumnType::Text => r
                .try_get::<_, Option<String>>(i)
                .map_err(bad)?
                .map_or(RowValue::Null, RowValue::Text),
            ColumnType::Blob => r
                .try_get::<_, Option<Vec<u8>>>(i)
                .map_err(bad)?
                .map_or(RowValue::Null, RowValue::Blob),
        });
    }
    Ok(Row { values })
}

fn select(c: &mut Conn, table: &TableDef, sql: &str, args: &[Param<'_>]) -> Result<Vec<Row>> {
    let rows = c
        .query(sql, &params(args))
        .map_err(|e| read_error(table, e))?;
    rows.iter().map(|r| read_row(table, r)).collect()
}

/// Applies one row write inside the change set's transaction.
pub(crate) fn apply_row(c: &mut Conn, w: &RowWrite) -> Result<()> {
    let table = w.table;
    let q = quoted(table.name);
    if w.op == RowOp::Delete {
        table.check_key(&w.values)?;
        let args: Vec<Param<'_>> = w.values.iter().map(Param).collect();
        let sql = format!("DELETE FROM {q} WHERE {}", key_match(table, &w.values, 1));
        return c
            .execute(&sql, &params(&args))
            .map(|_| ())
            .map_err(|e| row_error(table, &[], e));
    }
    table.check_row(&w.values)?;
    let key_pos = table.key_positions();
    let key: Vec<&RowValue> = key_pos.iter().map(|&i| &w.values[i]).collect();
    let version_pos = table.version_position();
    let one = RowValue::Integer(1);
    let cols: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
    let marks = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, col)| format!("${}{}", i + 1, cast(&RowValue::Null, Some(col.ty))))
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
            .map(|col| match Some(*col) == table.version_column {
                true => format!("{} = {q}.{} + 1", quoted(col), quoted(col)),
                false => {
                    let i = cols.iter().position(|x| x == col).unwrap_or(0);
                    format!("{} = {}", quoted(col), source(i, col))
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    // The store's version: 1 for a new row (an update's is set in SQL).
    let mut args: Vec<Param<'_>> = w
        .values
        .iter()
        .enumerate()
        .map(|(i, v)| Param(if Some(i) == version_pos { &one } else { v }))
        .collect();
    match w.op {
        RowOp::Insert | RowOp::Upsert => {
            let mut sql = format!("INSERT INTO {q} ({}) VALUES ({marks})", quoted_list(&cols));
            if w.op == RowOp::Upsert {
                if non_key.is_empty() {
                    sql.push_str(&format!(
                        " ON CONFLICT ({}) DO NOTHING",
                        quoted_list(table.primary_key)
                    ));
                } else {
                    sql.push_str(&format!(
                        " ON CONFLICT ({}) DO UPDATE SET {}",
                        quoted_list(table.primary_key),
                        set_clause(&|_, col| format!("excluded.{}", quoted(col)))
                    ));
                }
            }
            c.execute(&sql, &params(&args))
                .map(|_| ())
                .map_err(|e| row_error(table, &key, e))
        }
        RowOp::Update { expect_version } => {
            if expect_version.is_some() && version_pos.is_none() {
                return Err(StoreError::Backend(format!(
                    "{} has no version column: an update cannot expect a version",
                    table.name
                )));
            }
            let key_owned: Vec<RowValue> = key.iter().map(|v| (*v).clone()).collect();
            if non_key.is_empty() {
                // Nothing but the key: an update only checks that the row is there.
                return match read_version(c, table, &key_owned)? {
                    Some(_) => Ok(()),
                    None => Err(StoreError::conflict(
                        table.name,
                        &render_key(&key),
                        ConflictKind::Missing,
                    )),
                };
            }
            let expected = expect_version.map_or(RowValue::Null, RowValue::Integer);
            let mut where_clause = key_pos
                .iter()
                .map(|&i| {
                    format!(
                        "{} = ${}{}",
                        quoted(cols[i]),
                        i + 1,
                        cast(&RowValue::Null, Some(table.columns[i].ty))
                    )
                })
                .collect::<Vec<_>>()
                .join(" AND ");
            if let Some(v) = version_pos {
                args[v] = Param(&expected);
                where_clause.push_str(&format!(
                    " AND (${n}::bigint IS NULL OR {} = ${n}::bigint)",
                    quoted(cols[v]),
                    n = v + 1
                ));
            }
            let sql = format!(
                "UPDATE {q} SET {} WHERE {where_clause}",
                set_clause(&|i, _| format!(
                    "${}{}",
                    i + 1,
                    cast(&RowValue::Null, Some(table.columns[i].ty))
                ))
            );
            // Parameters unused by the statement (the version slot when not compared) still
            // need a type: every slot is cast above or in the WHERE clause.
            let changed = c
                .execute(&sql, &params(&args))
                .map_err(|e| row_error(table, &key, e))?;
            if changed == 0 {
                let kind = match read_version(c, table, &key_owned)? {
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

fn read_version(c: &mut Conn, table: &TableDef, key: &[RowValue]) -> Result<Option<i64>> {
    let col = table
        .version_column
        .map(quoted)
        .unwrap_or_else(|| "1::bigint".to_owned());
    let sql = format!(
        "SELECT {col} FROM {} WHERE {}",
        quoted(table.name),
        key_match(table, key, 1)
    );
    let args: Vec<Param<'_>> = key.iter().map(Param).collect();
    let rows = c
        .query(&sql, &params(&args))
        .map_err(|e| read_error(table, e))?;
    Ok(rows.first().map(|r| r.get(0)))
}

/// The row of `table` with primary key `key`.
pub(crate) fn get_row(c: &mut Conn, table: &TableDef, key: &[RowValue]) -> Result<Option<Row>> {
    table.check_key(key)?;
    let sql = format!(
        "SELECT {} FROM {} WHERE {}",
        column_list(table),
        quoted(table.name),
        key_match(table, key, 1)
    );
    let args: Vec<Param<'_>> = key.iter().map(Param).collect();
    select(c, table, &sql, &args).map(|mut v| v.pop())
}

/// The ordering terms of `index` (its terms, then the primary-key columns not among them)
/// and its partial condition.
fn order_terms(table: &TableDef, index: &str) -> Result<(Vec<String>, Option<&'static str>)> {
    if index == PRIMARY {
        return Ok((table.primary_key.iter().map(|k| quoted(k)).collect(), None));
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
    Ok((terms, def.partial))
}

/// The column type of an order term (`"name"` or a bare column name), if it is a column.
fn term_type(table: &TableDef, term: &str) -> Option<ColumnType> {
    column_type(table, term.trim_matches('"'))
}

/// The row whose unique index `index` holds `values`.
pub(crate) fn find_unique(
    c: &mut Conn,
    table: &TableDef,
    index: &str,
    values: &[RowValue],
) -> Result<Option<Row>> {
    let def = match index {
        PRIMARY => return get_row(c, table, values),
        _ => table.index(index).filter(|d| d.unique).ok_or_else(|| {
            StoreError::Backend(format!("table {} has no unique index {index}", table.name))
        })?,
    };
    if values.len() != def.terms.len() {
        return Err(StoreError::Backend(format!(
            "index {index} of {} has {} terms, {} values given",
            table.name,
            def.terms.len(),
            values.len()
        )));
    }
    let mut clause = def
        .terms
        .iter()
        .zip(values)
        .enumerate()
        .map(|(i, (t, v))| format!("{t} = ${}{}", i + 1, cast(v, term_type(table, t))))
        .collect::<Vec<_>>()
        .join(" AND ");
    if let Some(p) = def.partial {
        clause.push_str(&format!(" AND ({p})"));
    }
    let sql = format!(
        "SELECT {} FROM {} WHERE {clause}",
        column_list(table),
        quoted(table.name)
    );
    let args: Vec<Param<'_>> = values.iter().map(Param).collect();
    select(c, table, &sql, &args).map(|mut v| v.pop())
}

/// `WHERE` clause, ORDER BY list and arguments selecting `prefix` (and rows after `after`).
fn range_clause<'a>(
    table: &TableDef,
    index: &str,
    prefix: &'a [RowValue],
    after: Option<&'a [RowValue]>,
) -> Result<(String, String, Vec<Param<'a>>)> {
    let (terms, partial) = order_terms(table, index)?;
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
    let mut parts = vec!["TRUE".to_owned()];
    let mut args: Vec<Param<'a>> = Vec::new();
    for (t, v) in terms.iter().zip(prefix) {
        args.push(Param(v));
        parts.push(format!(
            "{t} = ${}{}",
            args.len(),
            cast(v, term_type(table, t))
        ));
    }
    if let Some(after) = after {
        let cols = &terms[prefix.len()..prefix.len() + after.len()];
        let marks: Vec<String> = cols
            .iter()
            .zip(after)
            .map(|(t, v)| {
                args.push(Param(v));
                format!("${}{}", args.len(), cast(v, term_type(table, t)))
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
    c: &mut Conn,
    table: &TableDef,
    index: &str,
    prefix: &[RowValue],
    after: Option<&[RowValue]>,
    limit: usize,
) -> Result<Vec<Row>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let (clause, order, args) = range_clause(table, index, prefix, after)?;
    let lim = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql = format!(
        "SELECT {} FROM {} WHERE {clause} ORDER BY {order} LIMIT {lim}",
        column_list(table),
        quoted(table.name),
    );
    select(c, table, &sql, &args)
}

/// Number of rows under `prefix` in `index`.
pub(crate) fn count_index(
    c: &mut Conn,
    table: &TableDef,
    index: &str,
    prefix: &[RowValue],
) -> Result<u64> {
    let (clause, _, args) = range_clause(table, index, prefix, None)?;
    let sql = format!("SELECT count(*) FROM {} WHERE {clause}", quoted(table.name));
    let rows = c
        .query(&sql, &params(&args))
        .map_err(|e| read_error(table, e))?;
    Ok(rows
        .first()
        .map_or(0, |r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
}

/// The owner's applied schema version (0 when none).
pub(crate) fn owner_version(c: &mut Conn, owner: &str) -> Result<i64> {
    let rows = c
        .query(
            "SELECT coalesce(max(version), 0) FROM owner_migrations WHERE owner = $1",
            &[&owner],
        )
        .map_err(pg_err("reading an owner's schema version"))?;
    Ok(rows.first().map_or(0, |r| r.get(0)))
}

/// Runs one owner migration in the caller's transaction; false if it was already applied
/// (another node may have run it: the owner's advisory lock serializes them).
pub(crate) fn apply_owner_migration(c: &mut Conn, owner: &str, m: &OwnerMigration) -> Result<bool> {
    let lock = super::lock_key(false, "owner_migrations", owner);
    c.execute("SELECT pg_advisory_xact_lock($1)", &[&lock])
        .map_err(pg_err("locking an owner migration"))?;
    if owner_version(c, owner)? >= m.version {
        return Ok(false);
    }
    let context = format!("migration {} of {owner}", m.version);
    for table in m.create {
        table.validate()?;
        let ddl = create_sql(table);
        run_ddl(c, table.name, &ddl, &context)?;
        c.execute(
            "INSERT INTO row_tables (name, owner, create_sql) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET create_sql = excluded.create_sql",
            &[&table.name, &owner, &ddl],
        )
        .map_err(pg_err("recording a row table"))?;
    }
    if !m.sql.trim().is_empty() {
        c.batch(m.sql)
            .map_err(|e| StoreError::Backend(format!("{context}: {}", describe(&e))))?;
    }
    record_owner_migration(c, owner, m.version, m.description, super::now_ms())?;
    Ok(true)
}

pub(crate) fn record_owner_migration(
    c: &mut Conn,
    owner: &str,
    version: i64,
    description: &str,
    applied_at_ms: i64,
) -> Result<()> {
    c.execute(
        "INSERT INTO owner_migrations (owner, version, description, applied_at_ms) \
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        &[&owner, &version, &description, &applied_at_ms],
    )
    .map(|_| ())
    .map_err(pg_err("recording an owner migration"))
}

/// Every row table: (name, owner, create_sql in SQLite's text), by name.
pub(crate) fn row_tables(c: &mut Conn) -> Result<Vec<(String, String, String)>> {
    let rows = c
        .query(
            "SELECT name, owner, create_sql FROM row_tables ORDER BY name",
            &[],
        )
        .map_err(pg_err("listing row tables"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Every applied owner migration: (owner, version, description, applied_at_ms).
pub(crate) fn owner_migrations(c: &mut Conn) -> Result<Vec<(String, i64, String, i64)>> {
    let rows = c
        .query(
            "SELECT owner, version, description, applied_at_ms FROM owner_migrations \
             ORDER BY owner, version",
            &[],
        )
        .map_err(pg_err("listing owner migrations"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect())
}

/// Calls `f` with every row of table `name` (all columns in declared order), in key order.
pub(crate) fn for_each_raw_row(
    c: &mut Conn,
    name: &str,
    f: &mut dyn FnMut(Vec<RowValue>) -> Result<()>,
) -> Result<()> {
    // Pages by physical row id inside the export's snapshot (stable there): bounded memory
    // without a server-side cursor, and without knowing the table's key.
    let sql = format!(
        "SELECT ctid::text, * FROM {} WHERE ctid > $1::text::tid ORDER BY ctid LIMIT 5000",
        quoted(name)
    );
    let mut after = "(0,0)".to_owned();
    loop {
        let rows = c.query(&sql, &[&after]).map_err(pg_err("export"))?;
        for r in &rows {
            after = r.get(0);
            let mut values = Vec::with_capacity(r.len());
            for (i, col) in r.columns().iter().enumerate().skip(1) {
                let bad = |e: postgres::Error| StoreError::corrupt(name, e.to_string());
                let ty = col.type_();
                values.push(if *ty == Type::INT8 {
                    r.try_get::<_, Option<i64>>(i)
                        .map_err(bad)?
                        .map_or(RowValue::Null, RowValue::Integer)
                } else if *ty == Type::BYTEA {
                    r.try_get::<_, Option<Vec<u8>>>(i)
                        .map_err(bad)?
                        .map_or(RowValue::Null, RowValue::Blob)
                } else {
                    r.try_get::<_, Option<String>>(i)
                        .map_err(bad)?
                        .map_or(RowValue::Null, RowValue::Text)
                });
            }
            f(values)?;
        }
        if rows.len() < 5000 {
            return Ok(());
        }
    }
}

/// Inserts an exported row into table `name` (created by its `row_table` record).
pub(crate) fn insert_raw_row(c: &mut Conn, name: &str, values: &[RowValue]) -> Result<()> {
    let marks = (1..=values.len())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let args: Vec<Param<'_>> = values.iter().map(Param).collect();
    c.execute(
        &format!("INSERT INTO {} VALUES ({marks})", quoted(name)),
        &params(&args),
    )
    .map(|_| ())
    .map_err(|e| StoreError::Backend(format!("import: a row of {name}: {}", describe(&e))))
}

/// Whether any row table holds a row.
pub(crate) fn any_row(c: &mut Conn) -> Result<bool> {
    for (name, _, _) in row_tables(c)? {
        let rows = c
            .query(
                &format!("SELECT EXISTS (SELECT 1 FROM {})", quoted(&name)),
                &[],
            )
            .map_err(pg_err("checking emptiness"))?;
        if rows.first().is_some_and(|r| r.get::<_, bool>(0)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Recreates an exported row table from its (SQLite-text) DDL; anything but a CREATE of that
/// table and its indexes is refused before it runs.
pub(crate) fn import_row_table(c: &mut Conn, table: &str, owner: &str, sqlite: &str) -> Result<()> {
    run_ddl(
        c,
        table,
        sqlite,
        &format!("import: creating row table {table}"),
    )?;
    c.execute(
        "INSERT INTO row_tables (name, owner, create_sql) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO NOTHING",
        &[&table, &owner, &sqlite],
    )
    .map(|_| ())
    .map_err(pg_err("import: recording a row table"))
}
