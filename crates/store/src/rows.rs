//! Typed rows: tables with columns, a primary key and real secondary indexes, declared by the
//! module that owns them ([`TableDef`]) and written inside a [`crate::ChangeSet`] beside the
//! key-value puts and the events — still one atomic, group-committed unit.
//!
//! Why: a directory user kept as ~6–10 key-value entries (the record plus one entry per
//! index) costs 6–10 B-tree writes and as many conditions per change; as one row the database
//! maintains the indexes itself and checks uniqueness in the same insert.
//!
//! Rules the backend enforces:
//! * Unique violations (primary key or a unique index) fail the change set with
//!   [`ConflictKind::Exists`](crate::ConflictKind::Exists); an update of an absent row with
//!   [`ConflictKind::Missing`](crate::ConflictKind::Missing); an update whose expected version
//!   is not the stored one with [`ConflictKind::Changed`](crate::ConflictKind::Changed). Owners
//!   keep their error mapping.
//! * The version column (if the table has one) belongs to the store: 1 on insert, +1 on every
//!   update or upsert that replaces a row. The value a caller puts in that position is ignored.
//! * Tables are created by versioned migrations registered per owner
//!   ([`OwnerSchema`], [`crate::Store::migrate_owner`]). A released migration is frozen: a
//!   later change to a table is a new migration (its `sql`), never an edit of an old one.

use crate::error::{Result, StoreError};

/// A column's storage type (SQLite `STRICT` tables enforce it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// UTF-8 text.
    Text,
    /// 64-bit signed integer.
    Integer,
    /// Bytes.
    Blob,
}

impl ColumnType {
    pub(crate) fn sql(self) -> &'static str {
        match self {
            ColumnType::Text => "TEXT",
            ColumnType::Integer => "INTEGER",
            ColumnType::Blob => "BLOB",
        }
    }
}

/// One column of a [`TableDef`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Column name (`[a-z0-9_]`).
    pub name: &'static str,
    /// Storage type.
    pub ty: ColumnType,
    /// Whether NULL is allowed.
    pub nullable: bool,
}

impl Column {
    /// A NOT NULL text column.
    pub const fn text(name: &'static str) -> Self {
        Column {
            name,
            ty: ColumnType::Text,
            nullable: false,
        }
    }

    /// A NOT NULL integer column.
    pub const fn integer(name: &'static str) -> Self {
        Column {
            name,
            ty: ColumnType::Integer,
            nullable: false,
        }
    }

    /// A NOT NULL blob column.
    pub const fn blob(name: &'static str) -> Self {
        Column {
            name,
            ty: ColumnType::Blob,
            nullable: false,
        }
    }

    /// The same column, NULL allowed.
    pub const fn nullable(self) -> Self {
        Column {
            nullable: true,
            ..self
        }
    }
}

/// A secondary index of a [`TableDef`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexDef {
    /// Index name, unique in the database (by convention `<table>_by_<what>`).
    pub name: &'static str,
    /// Indexed terms in order: column names or SQL expressions over the table's columns
    /// (`lower(email)`), written by the owning module, never from input.
    pub terms: &'static [&'static str],
    /// Whether two rows may not share the terms' values (NULLs never collide).
    pub unique: bool,
    /// A partial index's condition (`username IS NOT NULL`); reads through the index add it.
    pub partial: Option<&'static str>,
}

/// A table with typed columns, declared once by its owning module.
#[derive(Debug, PartialEq, Eq)]
pub struct TableDef {
    /// Table name (`[a-z0-9_]`, not one of the store's own tables).
    pub name: &'static str,
    /// Columns in order: row values are given and returned in this order.
    pub columns: &'static [Column],
    /// Primary-key column names, in key order.
    pub primary_key: &'static [&'static str],
    /// Secondary indexes.
    pub indexes: &'static [IndexDef],
    /// The optimistic-concurrency column (an INTEGER column), if any: see the module docs.
    pub version_column: Option<&'static str>,
    /// `WITHOUT ROWID` (the primary key is the storage order): for narrow tables such as
    /// compact membership pairs.
    pub without_rowid: bool,
}

/// Passed as the index name to [`crate::Store::scan_index`]: the primary key's order.
pub const PRIMARY: &str = "primary";

/// Names the store keeps for itself; a [`TableDef`] may not use them.
const RESERVED: &[&str] = &[
    "meta",
    "events",
    "schema_version",
    "owner_migrations",
    "row_tables",
];

fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

impl TableDef {
    /// Position of column `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The index called `name` ([`PRIMARY`] is not one: it has no [`IndexDef`]).
    pub fn index(&self, name: &str) -> Option<&IndexDef> {
        self.indexes.iter().find(|i| i.name == name)
    }

    /// Positions of the primary-key columns.
    pub(crate) fn key_positions(&self) -> Vec<usize> {
        self.primary_key
            .iter()
            .filter_map(|k| self.column_index(k))
            .collect()
    }

    /// Position of the version column.
    pub(crate) fn version_position(&self) -> Option<usize> {
        self.version_column.and_then(|v| self.column_index(v))
    }

    /// Checks the declaration (names, key and version columns exist): a mistake here is the
    /// owner's bug, reported at migration time rather than at the first write.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| {
            Err(StoreError::Backend(format!(
                "table definition {}: {what}",
                self.name
            )))
        };
        if !plain_name(self.name) || self.name.starts_with("sqlite_") {
            return bad("the name must be [a-z0-9_] and not start with a digit or sqlite_".into());
        }
        if RESERVED.contains(&self.name) {
            return bad("the name is one of the store's own tables".into());
        }
        if self.columns.is_empty() || self.primary_key.is_empty() {
            return bad("a table needs columns and a primary key".into());
        }
        for (i, c) in self.columns.iter().enumerate() {
            if !plain_name(c.name) {
                return bad(format!("column name {:?} must be [a-z0-9_]", c.name));
            }
            if self.columns[..i].iter().any(|o| o.name == c.name) {
                return bad(format!("column {} is declared twice", c.name));
            }
        }
        for k in self.primary_key {
            match self.column_index(k) {
                Some(i) if !self.columns[i].nullable => {}
                Some(_) => return bad(format!("primary-key column {k} must be NOT NULL")),
                None => return bad(format!("primary-key column {k} is not a column")),
            }
        }
        if let Some(v) = self.version_column {
            match self.column_index(v) {
                Some(i) if self.columns[i].ty == ColumnType::Integer => {}
                _ => return bad(format!("version column {v} must be an INTEGER column")),
            }
            if self.primary_key.contains(&v) {
                return bad("the version column cannot be part of the primary key".into());
            }
        }
        for (i, index) in self.indexes.iter().enumerate() {
            if !plain_name(index.name) || index.name == PRIMARY || index.terms.is_empty() {
                return bad(format!(
                    "index {:?} needs a [a-z0-9_] name and terms",
                    index.name
                ));
            }
            if self.indexes[..i].iter().any(|o| o.name == index.name) {
                return bad(format!("index {} is declared twice", index.name));
            }
        }
        Ok(())
    }

    /// Checks that `values` fits the table: one per column, NULL only where allowed.
    pub(crate) fn check_row(&self, values: &[RowValue]) -> Result<()> {
        if values.len() != self.columns.len() {
            return Err(StoreError::Backend(format!(
                "a row of {} has {} values but the table has {} columns",
                self.name,
                values.len(),
                self.columns.len()
            )));
        }
        self.check_values(self.columns.iter().zip(values))
    }

    /// Checks that `key` fits the primary key.
    pub(crate) fn check_key(&self, key: &[RowValue]) -> Result<()> {
        if key.len() != self.primary_key.len() {
            return Err(StoreError::Backend(format!(
                "a key of {} has {} values but the primary key has {} columns",
                self.name,
                key.len(),
                self.primary_key.len()
            )));
        }
        let cols: Vec<&Column> = self
            .key_positions()
            .into_iter()
            .map(|i| &self.columns[i])
            .collect();
        self.check_values(cols.into_iter().zip(key))
    }

    fn check_values<'a>(
        &self,
        pairs: impl Iterator<Item = (&'a Column, &'a RowValue)>,
    ) -> Result<()> {
        for (col, value) in pairs {
            let fits = match value {
                RowValue::Null => col.nullable || Some(col.name) == self.version_column,
                RowValue::Integer(_) => col.ty == ColumnType::Integer,
                RowValue::Text(_) => col.ty == ColumnType::Text,
                RowValue::Blob(_) => col.ty == ColumnType::Blob,
            };
            if !fits {
                return Err(StoreError::Backend(format!(
                    "{}.{} is {} {} and cannot hold {value:?}",
                    self.name,
                    col.name,
                    if col.nullable { "nullable" } else { "NOT NULL" },
                    col.ty.sql()
                )));
            }
        }
        Ok(())
    }
}

/// One column value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RowValue {
    /// SQL NULL.
    Null,
    /// An integer.
    Integer(i64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl RowValue {
    /// The text, if this is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            RowValue::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            RowValue::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The bytes, if this is a blob.
    pub fn as_blob(&self) -> Option<&[u8]> {
        match self {
            RowValue::Blob(b) => Some(b),
            _ => None,
        }
    }
}

impl From<&str> for RowValue {
    fn from(s: &str) -> Self {
        RowValue::Text(s.to_owned())
    }
}

impl From<String> for RowValue {
    fn from(s: String) -> Self {
        RowValue::Text(s)
    }
}

impl From<i64> for RowValue {
    fn from(i: i64) -> Self {
        RowValue::Integer(i)
    }
}

impl From<bool> for RowValue {
    fn from(b: bool) -> Self {
        RowValue::Integer(i64::from(b))
    }
}

impl From<Vec<u8>> for RowValue {
    fn from(b: Vec<u8>) -> Self {
        RowValue::Blob(b)
    }
}

impl<T: Into<RowValue>> From<Option<T>> for RowValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(RowValue::Null, Into::into)
    }
}

/// A row as read back: its values in the table's column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// One value per column of the table, in declared order.
    pub values: Vec<RowValue>,
}

impl Row {
    /// The value of column `name` of `table` (None if the table has no such column).
    pub fn get(&self, table: &TableDef, name: &str) -> Option<&RowValue> {
        table.column_index(name).and_then(|i| self.values.get(i))
    }

    /// The row's version (0 when the table has none).
    pub fn version(&self, table: &TableDef) -> i64 {
        table
            .version_position()
            .and_then(|i| self.values.get(i))
            .and_then(RowValue::as_integer)
            .unwrap_or(0)
    }
}

/// What a [`RowWrite`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOp {
    /// Add a new row; [`ConflictKind::Exists`](crate::ConflictKind::Exists) if its key or a
    /// unique index value is taken.
    Insert,
    /// Add the row, or replace the row with the same primary key (a unique index value taken
    /// by another row is still [`ConflictKind::Exists`](crate::ConflictKind::Exists)).
    Upsert,
    /// Replace an existing row: [`ConflictKind::Missing`](crate::ConflictKind::Missing) if
    /// absent; with `expect_version`, [`ConflictKind::Changed`](crate::ConflictKind::Changed)
    /// unless the stored version is that one.
    Update {
        /// The version the caller read (needs a version column).
        expect_version: Option<i64>,
    },
    /// Remove the row with the given primary key (no error if absent): `values` is the key.
    Delete,
}

/// One row write inside a [`crate::ChangeSet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowWrite {
    /// The table (its owner's declaration).
    pub table: &'static TableDef,
    /// Insert, upsert, update or delete.
    pub op: RowOp,
    /// The whole row in column order, or for [`RowOp::Delete`] the primary key.
    pub values: Vec<RowValue>,
}

/// One versioned migration of an owner's tables.
#[derive(Debug)]
pub struct OwnerMigration {
    /// 1, 2, ... per owner (append only).
    pub version: i64,
    /// What it does (recorded, shown in logs).
    pub description: &'static str,
    /// Tables (with their indexes) it creates, as declared when it was released.
    pub create: &'static [&'static TableDef],
    /// Further SQL run after the creates in the same transaction (an added column, an index);
    /// empty for none.
    pub sql: &'static str,
}

/// Every migration of one owner's tables, in order: the owning module declares it and calls
/// [`crate::Store::migrate_owner`] before it reads or writes its tables.
#[derive(Debug)]
pub struct OwnerSchema {
    /// The owner's name (its crate and module, e.g. `directory.users`).
    pub owner: &'static str,
    /// Its migrations in version order.
    pub migrations: &'static [OwnerMigration],
}

impl OwnerSchema {
    /// Checks the migrations before any runs: increasing versions, valid table declarations.
    pub(crate) fn check(&self) -> Result<()> {
        let mut last = 0;
        for m in self.migrations {
            if m.version <= last {
                return Err(StoreError::Backend(format!(
                    "the migrations of {} must have increasing versions ({} after {last})",
                    self.owner, m.version
                )));
            }
            last = m.version;
            for t in m.create {
                t.validate()?;
            }
        }
        Ok(())
    }
}

/// A row key as conflicts name it (`a/b`, NULL, `<n bytes>`).
pub(crate) fn render_key(key: &[&RowValue]) -> String {
    key.iter()
        .map(|v| match v {
            RowValue::Null => "NULL".to_owned(),
            RowValue::Integer(i) => i.to_string(),
            RowValue::Text(s) => s.clone(),
            RowValue::Blob(b) => format!("<{} bytes>", b.len()),
        })
        .collect::<Vec<_>>()
        .join("/")
}
