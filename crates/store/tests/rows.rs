//! Typed rows on each backend (SQLite, PostgreSQL): writes inside change sets, conflicts, index
//! reads, owner migrations, export/import — and a proptest of random row writes against an
//! in-memory model. The tests are in tests/suite/rows.rs, included once per backend below.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use idbridge_store::{Column, IndexDef, OwnerMigration, OwnerSchema, TableDef};

/// A user-shaped table: id PK, a unique (dir, idp_id), a partial unique (dir, username), a
/// case-folded email index and (dir, id) for pages.
static THINGS: TableDef = TableDef {
    name: "things",
    columns: &[
        Column::text("id"),
        Column::text("dir"),
        Column::text("idp_id"),
        Column::text("email").nullable(),
        Column::text("username").nullable(),
        Column::blob("body"),
        Column::integer("version"),
    ],
    primary_key: &["id"],
    indexes: &[
        IndexDef {
            name: "things_by_idp",
            terms: &["dir", "idp_id"],
            unique: true,
            partial: None,
        },
        IndexDef {
            name: "things_by_username",
            terms: &["dir", "username"],
            unique: true,
            partial: Some("username IS NOT NULL"),
        },
        IndexDef {
            name: "things_by_email",
            terms: &["dir", "lower(email)"],
            unique: false,
            partial: None,
        },
        IndexDef {
            name: "things_by_dir",
            terms: &["dir", "id"],
            unique: false,
            partial: None,
        },
    ],
    version_column: Some("version"),
    without_rowid: false,
};

/// Compact pairs, no version.
static PAIRS: TableDef = TableDef {
    name: "pairs",
    columns: &[Column::text("group_id"), Column::text("user_id")],
    primary_key: &["group_id", "user_id"],
    indexes: &[IndexDef {
        name: "pairs_by_user",
        terms: &["user_id", "group_id"],
        unique: false,
        partial: None,
    }],
    version_column: None,
    without_rowid: true,
};

static SCHEMA: OwnerSchema = OwnerSchema {
    owner: "tests.things",
    migrations: &[
        OwnerMigration {
            version: 1,
            description: "things",
            create: &[&THINGS],
            sql: "",
        },
        OwnerMigration {
            version: 2,
            description: "pairs",
            create: &[&PAIRS],
            sql: "",
        },
    ],
};

mod sqlite {
    use std::collections::BTreeMap;
    use std::path::Path;

    use idbridge_store::rows::PRIMARY;
    use idbridge_store::{
        ChangeSet, Column, ConflictKind, ExportRecord, NewEvent, OwnerMigration, OwnerSchema,
        RowValue, SqliteStore, Store, StoreError, TableDef,
    };
    use proptest::prelude::*;

    use super::{PAIRS, SCHEMA, THINGS};

    type Backend = SqliteStore;

    fn fresh() -> Backend {
        SqliteStore::open_ephemeral().unwrap()
    }

    fn open_at(dir: &Path) -> Backend {
        SqliteStore::open(dir).unwrap()
    }

    include!("suite/rows.rs");
}

mod postgres {
    use std::collections::BTreeMap;
    use std::path::Path;

    use idbridge_store::rows::PRIMARY;
    use idbridge_store::{
        ChangeSet, Column, ConflictKind, ExportRecord, NewEvent, OwnerMigration, OwnerSchema,
        PgOptions, PgStore, RowValue, Store, StoreError, TableDef,
    };
    use idbridge_testkit::Postgres;
    use proptest::prelude::*;

    use super::{PAIRS, SCHEMA, THINGS};

    type Backend = PgStore;

    /// A new database on the process's shared server.
    fn fresh() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        open_at(dir.path())
    }

    fn open_at(dir: &Path) -> Backend {
        let pg = Postgres::shared().unwrap();
        PgStore::open(&pg.database_for(dir).unwrap(), PgOptions::default()).unwrap()
    }

    include!("suite/rows.rs");
}

/// Row tables, rows and versions exported from SQLite import into PostgreSQL (the SQLite DDL
/// translated), and PostgreSQL's export imports back into SQLite unchanged.
#[test]
fn row_tables_move_between_sqlite_and_postgres_both_ways() {
    use idbridge_store::{
        ChangeSet, ExportRecord, PgOptions, PgStore, RowValue, SqliteStore, Store,
    };
    let sqlite = SqliteStore::open_ephemeral().unwrap();
    sqlite.migrate_owner(&SCHEMA).unwrap();
    let thing = |id: &str, email: &str, username: Option<&str>| -> Vec<RowValue> {
        vec![
            id.into(),
            "d".into(),
            format!("idp-{id}").into(),
            Some(email).into(),
            username.into(),
            RowValue::Blob(vec![0, 1, 2, 255]),
            RowValue::Null,
        ]
    };
    let mut cs = ChangeSet::new();
    cs.insert_row(&THINGS, thing("a", "A@X.test", Some("alice")))
        .insert_row(&THINGS, thing("b", "b@x.test", None))
        .insert_row(&PAIRS, vec!["g".into(), "a".into()]);
    sqlite.commit(cs).unwrap();
    let mut cs = ChangeSet::new();
    cs.update_row(&THINGS, thing("a", "a@x.test", Some("alice")), Some(1));
    sqlite.commit(cs).unwrap();
    let dump = |s: &dyn Store| {
        let mut lines = Vec::new();
        s.export(&mut |r| {
            lines.push(serde_json::to_string(&r).unwrap());
            Ok(())
        })
        .unwrap();
        lines
    };
    let records = |lines: &[String]| -> Vec<idbridge_store::Result<ExportRecord>> {
        lines
            .iter()
            .map(|l| Ok(serde_json::from_str::<ExportRecord>(l).unwrap()))
            .collect()
    };
    let from_sqlite = dump(&sqlite);
    let dir = tempfile::tempdir().unwrap();
    let pg = idbridge_testkit::Postgres::shared().unwrap();
    let pgs = PgStore::open(&pg.database_for(dir.path()).unwrap(), PgOptions::default()).unwrap();
    pgs.import(&mut records(&from_sqlite).into_iter()).unwrap();
    // The owner finds its tables migrated; the indexes work on PostgreSQL.
    assert_eq!(pgs.migrate_owner(&SCHEMA).unwrap(), 2);
    let row = pgs
        .find_unique(&THINGS, "things_by_username", &["d".into(), "alice".into()])
        .unwrap()
        .unwrap();
    assert_eq!(row.version(&THINGS), 2);
    let by_email = pgs
        .scan_index(
            &THINGS,
            "things_by_email",
            &["d".into(), "a@x.test".into()],
            None,
            10,
        )
        .unwrap();
    assert_eq!(by_email.len(), 1);
    let mut a = dump(&pgs);
    let mut b = from_sqlite.clone();
    a.sort();
    b.sort();
    assert_eq!(a, b, "PostgreSQL holds what SQLite exported");
    let back = SqliteStore::open_ephemeral().unwrap();
    back.import(&mut records(&dump(&pgs)).into_iter()).unwrap();
    assert_eq!(dump(&back), from_sqlite, "and back into SQLite unchanged");
}
