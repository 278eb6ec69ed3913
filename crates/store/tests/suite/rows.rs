// The backend-independent typed-row tests, included by tests/rows.rs once per backend inside
// a module that defines `Backend`, `fresh() -> Backend` (a new empty store) and
// `open_at(dir) -> Backend` (the same store for the same dir).

fn open() -> Backend {
    let store = fresh();
    assert_eq!(store.migrate_owner(&SCHEMA).unwrap(), 2);
    store
}

fn thing(
    id: &str,
    dir: &str,
    idp: &str,
    email: Option<&str>,
    username: Option<&str>,
) -> Vec<RowValue> {
    vec![
        id.into(),
        dir.into(),
        idp.into(),
        email.into(),
        username.into(),
        RowValue::Blob(format!("{{\"id\":\"{id}\"}}").into_bytes()),
        RowValue::Null,
    ]
}

fn text(v: &RowValue) -> &str {
    v.as_text().unwrap()
}

fn conflict(e: StoreError) -> ConflictKind {
    match e {
        StoreError::Conflict { kind, .. } => kind,
        other => panic!("expected a conflict, got {other}"),
    }
}

#[test]
fn insert_read_by_key_unique_index_and_pages() {
    let store = open();
    let mut cs = ChangeSet::new();
    for i in 0..5 {
        cs.insert_row(
            &THINGS,
            thing(
                &format!("u{i}"),
                "d1",
                &format!("idp{i}"),
                Some(&format!("U{i}@X.test")),
                None,
            ),
        );
    }
    cs.insert_row(
        &THINGS,
        thing("v0", "d2", "idp0", Some("u0@x.test"), Some("alice")),
    );
    store.commit(cs).unwrap();

    let row = store.get_row(&THINGS, &["u3".into()]).unwrap().unwrap();
    assert_eq!(text(row.get(&THINGS, "idp_id").unwrap()), "idp3");
    assert_eq!(
        row.version(&THINGS),
        1,
        "the store sets version 1 on insert"
    );
    assert!(store.get_row(&THINGS, &["nope".into()]).unwrap().is_none());

    let found = store
        .find_unique(&THINGS, "things_by_idp", &["d2".into(), "idp0".into()])
        .unwrap()
        .unwrap();
    assert_eq!(text(&found.values[0]), "v0");
    let by_name = store
        .find_unique(
            &THINGS,
            "things_by_username",
            &["d2".into(), "alice".into()],
        )
        .unwrap();
    assert!(by_name.is_some());
    // A non-unique index is not a lookup by unique value.
    assert!(store
        .find_unique(
            &THINGS,
            "things_by_email",
            &["d1".into(), "u1@x.test".into()]
        )
        .is_err());

    // Case-folded email: lower(email) is the index term.
    let hits = store
        .scan_index(
            &THINGS,
            "things_by_email",
            &["d1".into(), "u2@x.test".into()],
            None,
            10,
        )
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(text(&hits[0].values[0]), "u2");

    // Pages of d1 by id: 2, 2, 1.
    let mut after: Option<Vec<RowValue>> = None;
    let mut seen = Vec::new();
    loop {
        let page = store
            .scan_index(
                &THINGS,
                "things_by_dir",
                &["d1".into()],
                after.as_deref(),
                2,
            )
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        after = Some(vec![page.last().unwrap().values[0].clone()]);
        seen.extend(page.into_iter().map(|r| text(&r.values[0]).to_owned()));
    }
    assert_eq!(seen, ["u0", "u1", "u2", "u3", "u4"]);
    assert_eq!(
        store
            .count_index(&THINGS, "things_by_dir", &["d1".into()])
            .unwrap(),
        5
    );
    assert_eq!(store.count_index(&THINGS, PRIMARY, &[]).unwrap(), 6);
    // A wrong index name or arity is an error, not an empty answer.
    assert!(store.scan_index(&THINGS, "nope", &[], None, 1).is_err());
    assert!(store
        .scan_index(
            &THINGS,
            "things_by_dir",
            &["a".into(), "b".into(), "c".into()],
            None,
            1
        )
        .is_err());
}

#[test]
fn unique_violations_missing_rows_and_stale_versions_are_typed_conflicts_that_write_nothing() {
    let store = open();
    let mut cs = ChangeSet::new();
    cs.insert_row(&THINGS, thing("a", "d", "idp-a", None, Some("alice")));
    store.commit(cs).unwrap();
    let seq_before = store.last_event_seq().unwrap();

    let event = |id: &str| NewEvent {
        id: id.to_owned(),
        kind: "dsync.user.created".to_owned(),
        organization_id: None,
        created_at_ms: 0,
        body: b"{}".to_vec(),
    };
    // Each of these fails its whole change set: the put and event beside it are not written.
    let cases: Vec<(ChangeSet, ConflictKind)> = vec![
        // Same primary key.
        (
            {
                let mut cs = ChangeSet::new();
                cs.insert_row(&THINGS, thing("a", "d", "idp-other", None, None));
                cs
            },
            ConflictKind::Exists,
        ),
        // Same (dir, idp_id) under another id.
        (
            {
                let mut cs = ChangeSet::new();
                cs.insert_row(&THINGS, thing("b", "d", "idp-a", None, None));
                cs
            },
            ConflictKind::Exists,
        ),
        // Same (dir, username), through an upsert of another row.
        (
            {
                let mut cs = ChangeSet::new();
                cs.upsert_row(&THINGS, thing("b", "d", "idp-b", None, Some("alice")));
                cs
            },
            ConflictKind::Exists,
        ),
        // Update of an absent row.
        (
            {
                let mut cs = ChangeSet::new();
                cs.update_row(&THINGS, thing("zz", "d", "idp-z", None, None), None);
                cs
            },
            ConflictKind::Missing,
        ),
        // Update expecting a version that is not the stored one.
        (
            {
                let mut cs = ChangeSet::new();
                cs.update_row(&THINGS, thing("a", "d", "idp-a", None, None), Some(7));
                cs
            },
            ConflictKind::Changed,
        ),
    ];
    for (i, (mut cs, kind)) in cases.into_iter().enumerate() {
        cs.put("side", format!("k{i}"), b"v".to_vec());
        cs.event(event(&format!("event_{i}")));
        let err = store.commit(cs).unwrap_err();
        assert_eq!(conflict(err), kind, "case {i}");
        assert!(
            store.get("side", &format!("k{i}")).unwrap().is_none(),
            "case {i}"
        );
    }
    assert_eq!(store.last_event_seq().unwrap(), seq_before);
    assert!(store.get_row(&THINGS, &["b".into()]).unwrap().is_none());

    // NULL usernames never collide (partial unique index).
    let mut cs = ChangeSet::new();
    cs.insert_row(&THINGS, thing("n1", "d", "idp-n1", None, None))
        .insert_row(&THINGS, thing("n2", "d", "idp-n2", None, None));
    store.commit(cs).unwrap();

    // The right version updates, and bumps it; upsert of an existing row bumps it too.
    let mut cs = ChangeSet::new();
    cs.update_row(
        &THINGS,
        thing("a", "d", "idp-a2", None, Some("alice")),
        Some(1),
    );
    store.commit(cs).unwrap();
    let row = store.get_row(&THINGS, &["a".into()]).unwrap().unwrap();
    assert_eq!(row.version(&THINGS), 2);
    assert_eq!(text(row.get(&THINGS, "idp_id").unwrap()), "idp-a2");
    let mut cs = ChangeSet::new();
    cs.upsert_row(&THINGS, thing("a", "d", "idp-a3", None, None));
    store.commit(cs).unwrap();
    assert_eq!(
        store
            .get_row(&THINGS, &["a".into()])
            .unwrap()
            .unwrap()
            .version(&THINGS),
        3
    );
    // The old unique slots are free again.
    let mut cs = ChangeSet::new();
    cs.insert_row(&THINGS, thing("c", "d", "idp-a", None, Some("alice")));
    store.commit(cs).unwrap();
}

#[test]
fn a_row_conflict_in_a_group_commit_fails_only_its_own_change_set() {
    let store = std::sync::Arc::new(open());
    // 16 threads insert the same 8 idp ids under distinct row ids: exactly 8 win.
    let handles: Vec<_> = (0..16)
        .map(|t| {
            let store = std::sync::Arc::clone(&store);
            std::thread::spawn(move || {
                let mut cs = ChangeSet::new();
                cs.insert_row(
                    &THINGS,
                    thing(&format!("t{t}"), "d", &format!("idp{}", t % 8), None, None),
                );
                store.commit(cs).map_err(conflict)
            })
        })
        .collect();
    let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 8);
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, Ok(_) | Err(ConflictKind::Exists))));
    assert_eq!(store.count_index(&THINGS, PRIMARY, &[]).unwrap(), 8);
}

#[test]
fn pairs_without_rowid_and_idempotent_deletes() {
    let store = open();
    let mut cs = ChangeSet::new();
    for (g, u) in [("g1", "u1"), ("g1", "u2"), ("g2", "u1")] {
        cs.insert_row(&PAIRS, vec![g.into(), u.into()]);
    }
    store.commit(cs).unwrap();
    let groups_of_u1 = store
        .scan_index(&PAIRS, "pairs_by_user", &["u1".into()], None, 10)
        .unwrap();
    assert_eq!(groups_of_u1.len(), 2);
    // Upsert of an existing pair does nothing; insert is a conflict.
    let mut cs = ChangeSet::new();
    cs.upsert_row(&PAIRS, vec!["g1".into(), "u1".into()]);
    store.commit(cs).unwrap();
    let mut cs = ChangeSet::new();
    cs.insert_row(&PAIRS, vec!["g1".into(), "u1".into()]);
    assert_eq!(
        conflict(store.commit(cs).unwrap_err()),
        ConflictKind::Exists
    );
    let mut cs = ChangeSet::new();
    cs.delete_row(&PAIRS, vec!["g1".into(), "u1".into()])
        .delete_row(&PAIRS, vec!["g9".into(), "u9".into()]);
    store.commit(cs).unwrap();
    assert_eq!(
        store.count_index(&PAIRS, PRIMARY, &["g1".into()]).unwrap(),
        1
    );
    // Update expecting a version on a table without one is refused.
    let mut cs = ChangeSet::new();
    cs.update_row(&PAIRS, vec!["g1".into(), "u2".into()], Some(1));
    assert!(matches!(store.commit(cs), Err(StoreError::Backend(_))));
}

#[test]
fn bad_rows_and_unmigrated_tables_are_clear_errors() {
    static LATER: TableDef = TableDef {
        name: "later",
        columns: &[Column::text("id")],
        primary_key: &["id"],
        indexes: &[],
        version_column: None,
        without_rowid: true,
    };
    let store = open();
    let mut cs = ChangeSet::new();
    cs.insert_row(&LATER, vec!["x".into()]);
    let e = store.commit(cs).unwrap_err().to_string();
    assert!(e.contains("migrate_owner"), "{e}");
    // Wrong arity, NULL in a NOT NULL column, wrong type.
    for bad in [
        vec!["a".into()],
        {
            let mut r = thing("a", "d", "i", None, None);
            r[1] = RowValue::Null;
            r
        },
        {
            let mut r = thing("a", "d", "i", None, None);
            r[5] = RowValue::Integer(1);
            r
        },
    ] {
        let mut cs = ChangeSet::new();
        cs.insert_row(&THINGS, bad);
        let e = store.commit(cs).unwrap_err();
        assert!(matches!(e, StoreError::Backend(_)), "{e}");
    }
    assert_eq!(store.count_index(&THINGS, PRIMARY, &[]).unwrap(), 0);
    // A bad declaration is refused at migration time.
    static BAD: TableDef = TableDef {
        name: "events",
        columns: &[Column::text("id")],
        primary_key: &["id"],
        indexes: &[],
        version_column: None,
        without_rowid: false,
    };
    static BAD_SCHEMA: OwnerSchema = OwnerSchema {
        owner: "tests.bad",
        migrations: &[OwnerMigration {
            version: 1,
            description: "clashes with the event log",
            create: &[&BAD],
            sql: "",
        }],
    };
    assert!(store.migrate_owner(&BAD_SCHEMA).is_err());
}

#[test]
fn owner_migrations_run_once_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_at(dir.path());
        static V1: OwnerSchema = OwnerSchema {
            owner: "tests.things",
            migrations: &[OwnerMigration {
                version: 1,
                description: "things",
                create: &[&THINGS],
                sql: "",
            }],
        };
        assert_eq!(store.migrate_owner(&V1).unwrap(), 1);
        let mut cs = ChangeSet::new();
        cs.insert_row(&THINGS, thing("a", "d", "i", None, None));
        store.commit(cs).unwrap();
    }
    let store = open_at(dir.path());
    // Version 2 runs now; version 1 is not run again (its row is still there).
    assert_eq!(store.migrate_owner(&SCHEMA).unwrap(), 2);
    assert_eq!(store.migrate_owner(&SCHEMA).unwrap(), 2);
    assert!(store.get_row(&THINGS, &["a".into()]).unwrap().is_some());
    let mut migrations = Vec::new();
    store
        .export(&mut |r| {
            if let ExportRecord::OwnerMigration { owner, version, .. } = r {
                migrations.push((owner, version));
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(
        migrations,
        [
            ("tests.things".to_owned(), 1),
            ("tests.things".to_owned(), 2)
        ]
    );
}

fn export_lines(store: &dyn Store) -> Vec<String> {
    let mut lines = Vec::new();
    store
        .export(&mut |r| {
            lines.push(serde_json::to_string(&r).unwrap());
            Ok(())
        })
        .unwrap();
    lines
}

#[test]
fn export_and_import_carry_row_tables_rows_and_versions() {
    let source = open();
    let mut cs = ChangeSet::new();
    cs.insert_row(&THINGS, thing("a", "d", "i", Some("A@x"), Some("alice")))
        .insert_row(&PAIRS, vec!["g".into(), "a".into()])
        .put("kv", "k", b"{\"v\":1}".to_vec());
    source.commit(cs).unwrap();
    let mut cs = ChangeSet::new();
    cs.update_row(
        &THINGS,
        thing("a", "d", "i", Some("A@x"), Some("alice")),
        Some(1),
    );
    source.commit(cs).unwrap();
    let lines = export_lines(&source);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(r#"{"row_table":{"table":"things""#)),
        "{lines:?}"
    );

    let target = fresh();
    let mut records = lines.iter().map(|l| {
        serde_json::from_str::<ExportRecord>(l).map_err(|e| StoreError::Backend(e.to_string()))
    });
    target.import(&mut records).unwrap();
    assert_eq!(export_lines(&target), lines, "the round trip is exact");
    // The imported tables are the owner's: its migration finds them done, indexes work.
    assert_eq!(target.migrate_owner(&SCHEMA).unwrap(), 2);
    let row = target
        .find_unique(&THINGS, "things_by_username", &["d".into(), "alice".into()])
        .unwrap()
        .unwrap();
    assert_eq!(row.version(&THINGS), 2);
    // And a store holding only rows is not empty for a second import.
    let mut again = lines.iter().map(|l| {
        serde_json::from_str::<ExportRecord>(l).map_err(|e| StoreError::Backend(e.to_string()))
    });
    assert!(matches!(
        target.import(&mut again),
        Err(StoreError::NotEmpty)
    ));
}

#[test]
fn an_import_refuses_row_table_ddl_that_is_not_a_create_of_that_table() {
    for create_sql in [
        "DROP TABLE events",
        "CREATE TABLE IF NOT EXISTS \"x\" (id TEXT PRIMARY KEY); DELETE FROM meta;",
        "CREATE TABLE IF NOT EXISTS \"x\" (id TEXT PRIMARY KEY);\nCREATE INDEX IF NOT EXISTS i ON \"events\" (id);",
        "CREATE TABLE IF NOT EXISTS \"x\" (id TEXT PRIMARY KEY);\nDELETE FROM meta;",
        "",
    ] {
        let target = fresh();
        let record = ExportRecord::RowTable {
            table: "x".into(),
            owner: "o".into(),
            create_sql: create_sql.into(),
        };
        let mut records = vec![Ok(record)].into_iter();
        let e = target.import(&mut records);
        assert!(e.is_err(), "accepted {create_sql:?}");
        assert_eq!(target.last_event_seq().unwrap(), 0);
    }
}

// ---- proptest: random row writes against a model ----

#[derive(Debug, Clone)]
enum Op {
    Insert(u8, u8, Option<u8>),
    Upsert(u8, u8, Option<u8>),
    Update(u8, u8, Option<u8>, Option<i64>),
    Delete(u8),
}

/// Model row: (idp, username, version).
type Model = BTreeMap<u8, (u8, Option<u8>, i64)>;

fn op_strategy() -> impl Strategy<Value = Op> {
    let id = 0u8..6;
    let idp = 0u8..4;
    let name = proptest::option::of(0u8..3);
    prop_oneof![
        (id.clone(), idp.clone(), name.clone()).prop_map(|(a, b, c)| Op::Insert(a, b, c)),
        (id.clone(), idp.clone(), name.clone()).prop_map(|(a, b, c)| Op::Upsert(a, b, c)),
        (id.clone(), idp, name, proptest::option::of(1i64..4))
            .prop_map(|(a, b, c, v)| Op::Update(a, b, c, v)),
        id.prop_map(Op::Delete),
    ]
}

fn model_row(id: u8, idp: u8, name: Option<u8>) -> Vec<RowValue> {
    thing(
        &format!("id{id}"),
        "d",
        &format!("idp{idp}"),
        Some(&format!("E{id}@x")),
        name.map(|n| format!("name{n}")).as_deref(),
    )
}

/// What the model says an op does: the new model, or the conflict.
fn model_apply(model: &Model, op: &Op) -> Result<Model, ConflictKind> {
    let mut next = model.clone();
    let taken = |m: &Model, id: u8, idp: u8, name: Option<u8>| {
        m.iter().any(|(other, (oidp, oname, _))| {
            *other != id && (*oidp == idp || (name.is_some() && *oname == name))
        })
    };
    match *op {
        Op::Insert(id, idp, name) => {
            if model.contains_key(&id) || taken(model, id, idp, name) {
                return Err(ConflictKind::Exists);
            }
            next.insert(id, (idp, name, 1));
        }
        Op::Upsert(id, idp, name) => {
            if taken(model, id, idp, name) {
                return Err(ConflictKind::Exists);
            }
            let v = model.get(&id).map_or(1, |r| r.2 + 1);
            next.insert(id, (idp, name, v));
        }
        Op::Update(id, idp, name, expect) => {
            let Some(cur) = model.get(&id) else {
                return Err(ConflictKind::Missing);
            };
            if expect.is_some_and(|e| e != cur.2) {
                return Err(ConflictKind::Changed);
            }
            if taken(model, id, idp, name) {
                return Err(ConflictKind::Exists);
            }
            next.insert(id, (idp, name, cur.2 + 1));
        }
        Op::Delete(id) => {
            next.remove(&id);
        }
    }
    Ok(next)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn row_writes_match_the_model(ops in proptest::collection::vec(op_strategy(), 1..40)) {
        let store = open();
        let mut model = Model::new();
        for op in &ops {
            let mut cs = ChangeSet::new();
            match *op {
                Op::Insert(id, idp, name) => { cs.insert_row(&THINGS, model_row(id, idp, name)); }
                Op::Upsert(id, idp, name) => { cs.upsert_row(&THINGS, model_row(id, idp, name)); }
                Op::Update(id, idp, name, v) => { cs.update_row(&THINGS, model_row(id, idp, name), v); }
                Op::Delete(id) => { cs.delete_row(&THINGS, vec![format!("id{id}").into()]); }
            }
            let expected = model_apply(&model, op);
            let got = store.commit(cs).map(|_| ()).map_err(conflict);
            prop_assert_eq!(got.err(), expected.clone().err(), "op {:?}", op);
            if let Ok(next) = expected { model = next; }
            // Every read agrees with the model.
            let rows = store.scan_index(&THINGS, "things_by_dir", &["d".into()], None, 100).unwrap();
            let seen: Vec<(String, String, Option<String>, i64)> = rows.iter().map(|r| (
                text(&r.values[0]).to_owned(),
                text(&r.values[2]).to_owned(),
                r.values[4].as_text().map(str::to_owned),
                r.version(&THINGS),
            )).collect();
            let want: Vec<(String, String, Option<String>, i64)> = model.iter().map(|(id, (idp, name, v))| (
                format!("id{id}"), format!("idp{idp}"), name.map(|n| format!("name{n}")), *v,
            )).collect();
            prop_assert_eq!(seen, want);
            for (id, (idp, name, _)) in &model {
                let by_idp = store.find_unique(&THINGS, "things_by_idp", &["d".into(), format!("idp{idp}").into()]).unwrap();
                prop_assert_eq!(by_idp.map(|r| text(&r.values[0]).to_owned()), Some(format!("id{id}")));
                if let Some(n) = name {
                    let by_name = store.find_unique(&THINGS, "things_by_username", &["d".into(), format!("name{n}").into()]).unwrap();
                    prop_assert_eq!(by_name.map(|r| text(&r.values[0]).to_owned()), Some(format!("id{id}")));
                }
                let by_email = store.scan_index(&THINGS, "things_by_email", &["d".into(), format!("e{id}@x").into()], None, 5).unwrap();
                prop_assert_eq!(by_email.len(), 1);
            }
        }
    }
}
