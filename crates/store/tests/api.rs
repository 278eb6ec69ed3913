//! Behaviour of every `Store` method, on each backend: the shared suite (tests/suite/api.rs)
//! runs once per backend module below (SQLite, then PostgreSQL on a private server started by
//! testkit's `Postgres`); backend-specific tests follow it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod sqlite {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Arc;

    use idbridge_store::{
        ChangeSet, Condition, ConflictKind, ExportRecord, NewEvent, SqliteStore, Store, StoreError,
        EVENT_LOG,
    };

    type Backend = SqliteStore;
    const COUNTS_SYNCS: bool = true;

    fn open_at(dir: &Path) -> Backend {
        SqliteStore::open(dir).expect("open")
    }

    include!("suite/api.rs");

    #[test]
    fn ephemeral_stores_work_are_separate_and_vanish_on_drop() {
        let a = SqliteStore::open_ephemeral().expect("ephemeral");
        let b = SqliteStore::open_ephemeral().expect("ephemeral");
        assert_ne!(a.path(), b.path());
        let mut cs = ChangeSet::new();
        cs.put("t", "k", b"v".to_vec()).event(event("event_e", 1));
        assert_eq!(a.commit(cs).expect("commit").event_seqs, vec![1]);
        assert_eq!(a.get("t", "k").expect("get"), Some(b"v".to_vec()));
        assert_eq!(b.get("t", "k").expect("get"), None);
        assert_eq!(
            a.stats().fdatasyncs,
            2,
            "same durable path: one sync at open, one for the commit"
        );
        let dir = a.path().parent().expect("dir").to_path_buf();
        assert!(a.path().exists());
        drop(a);
        assert!(!dir.exists(), "{} left behind", dir.display());
    }

    #[test]
    fn a_new_file_gets_the_current_schema_and_reopening_keeps_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = open_at(dir.path());
            assert_eq!(
                s.schema_version().expect("version"),
                SqliteStore::current_schema_version()
            );
            let mut cs = ChangeSet::new();
            cs.put("t", "k", b"v".to_vec()).event(event("event_1", 1));
            s.commit(cs).expect("commit");
        }
        let s = open_at(dir.path());
        assert_eq!(s.get("t", "k").expect("get"), Some(b"v".to_vec()));
        let conn = rusqlite::Connection::open(s.path()).expect("sqlite3");
        let applied: Vec<i64> = conn
            .prepare("SELECT version FROM schema_version ORDER BY version")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        let expected: Vec<i64> = (1..=SqliteStore::current_schema_version()).collect();
        assert_eq!(applied, expected, "each migration recorded once");
        // The operator's view: plain SQL tables.
        let users: i64 = conn
            .query_row("SELECT count(*) FROM \"t:t\"", [], |r| r.get(0))
            .expect("count");
        assert_eq!(users, 1);
    }

    #[test]
    fn a_file_from_a_newer_build_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = open_at(dir.path()).path().to_path_buf();
        let conn = rusqlite::Connection::open(&path).expect("sqlite3");
        conn.execute(
            "INSERT INTO schema_version (version, description, applied_at_ms) VALUES (999, 'future', 0)",
            [],
        )
        .expect("insert");
        drop(conn);
        let err = SqliteStore::open(dir.path()).expect_err("newer schema");
        let text = err.to_string();
        assert!(
            text.contains("version 999") && text.contains("knows only up to"),
            "{text}"
        );
    }

    #[test]
    fn an_old_file_is_migrated_at_open() {
        // A file as schema version 1 left it (the release before typed rows): drop the
        // record of the later migrations and their effect, reopen, and they are back.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = open_at(dir.path()).path().to_path_buf();
        let conn = rusqlite::Connection::open(&path).expect("sqlite3");
        conn.execute_batch(
            "DELETE FROM schema_version WHERE version >= 2; \
             DROP TABLE owner_migrations; DROP TABLE row_tables;",
        )
        .expect("downgrade");
        let v: i64 = conn
            .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(v, 1);
        drop(conn);
        let s = open_at(dir.path());
        assert_eq!(
            s.schema_version().expect("version"),
            SqliteStore::current_schema_version()
        );
        // The typed-row bookkeeping is there again: an owner can migrate its tables.
        static T: idbridge_store::TableDef = idbridge_store::TableDef {
            name: "old_file_rows",
            columns: &[idbridge_store::Column::text("id")],
            primary_key: &["id"],
            indexes: &[],
            version_column: None,
            without_rowid: true,
        };
        static OWNER: idbridge_store::OwnerSchema = idbridge_store::OwnerSchema {
            owner: "tests.old_file",
            migrations: &[idbridge_store::OwnerMigration {
                version: 1,
                description: "one table",
                create: &[&T],
                sql: "",
            }],
        };
        assert_eq!(s.migrate_owner(&OWNER).expect("owner migration"), 1);
        let mut cs = ChangeSet::new();
        cs.event(event("event_1", 1));
        assert_eq!(s.commit(cs).expect("commit").event_seqs, vec![1]);
    }

    /// Two handles on one file (the server and `idbridge export`, say): SQLite serializes
    /// them, and each batch reads the event counter inside its transaction, so seqs stay
    /// gap-free and unique.
    #[test]
    fn two_handles_on_one_file_keep_one_gap_free_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = open_at(dir.path());
        let b = open_at(dir.path());
        for n in 0..10 {
            let s = if n % 2 == 0 { &a } else { &b };
            let mut cs = ChangeSet::new();
            cs.put("t", format!("k{n}"), b"v".to_vec())
                .event(event(&format!("event_{n}"), n));
            assert_eq!(s.commit(cs).expect("commit").event_seqs, vec![n as u64 + 1]);
        }
        assert_eq!(b.count_prefix("t", "").expect("count"), 10);
        assert_eq!(a.last_event_seq().expect("last"), 10);
    }

    /// One failed condition in a batch fails only its own caller; the others commit.
    #[test]
    fn a_conflict_in_a_group_fails_only_its_own_change_set() {
        let (_d, s) = open();
        let s = Arc::new(s);
        let mut seed = ChangeSet::new();
        seed.put("slots", "taken", b"x".to_vec());
        s.commit(seed).expect("seed");
        let handles: Vec<_> = (0..16)
            .map(|t| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    let mut outcomes = Vec::new();
                    for n in 0..20 {
                        let mut cs = ChangeSet::new();
                        let key = format!("{t}-{n}");
                        if n % 4 == 0 {
                            cs.require_absent("slots", "taken");
                        }
                        cs.put("users", key.clone(), b"u".to_vec())
                            .event(event(&format!("event_{key}"), 0));
                        outcomes.push((key, n % 4 == 0, s.commit(cs)));
                    }
                    outcomes
                })
            })
            .collect();
        let mut ok = 0;
        for h in handles {
            for (key, must_fail, outcome) in h.join().expect("thread") {
                if must_fail {
                    assert!(
                        matches!(
                            outcome,
                            Err(StoreError::Conflict {
                                kind: ConflictKind::Exists,
                                ..
                            })
                        ),
                        "{key}: {outcome:?}"
                    );
                    assert_eq!(
                        s.get("users", &key).expect("get"),
                        None,
                        "{key} half-written"
                    );
                } else {
                    outcome.expect("commit");
                    assert!(s.get("users", &key).expect("get").is_some());
                    ok += 1;
                }
            }
        }
        assert_eq!(s.last_event_seq().expect("last"), ok);
        let seqs: Vec<u64> = s
            .events_after(0, usize::MAX)
            .expect("events")
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(
            seqs,
            (1..=ok).collect::<Vec<_>>(),
            "rolled-back change sets took no seq"
        );
        assert_eq!(s.stats().conflicts, 16 * 5);
    }

    #[test]
    fn checkpoints_run_off_the_writer_and_large_values_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
        {
            let s = open_at(dir.path());
            let mut cs = ChangeSet::new();
            cs.put("files", "big", big.clone());
            s.commit(cs).expect("commit");
            for n in 0..50 {
                let mut cs = ChangeSet::new();
                cs.put("users", format!("u{n}"), vec![b'x'; 600]);
                s.commit(cs).expect("commit");
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while s.stats().checkpoints == 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            assert!(
                s.stats().checkpoints >= 1,
                "no checkpoint ran: {:?}",
                s.stats()
            );
        }
        let s = open_at(dir.path());
        assert_eq!(s.get("files", "big").expect("get"), Some(big));
    }
}

mod postgres {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use idbridge_store::{
        ChangeSet, Condition, ConflictKind, ExportRecord, NewEvent, PgOptions, PgStore, Store,
        StoreError, EVENT_LOG,
    };
    use idbridge_testkit::Postgres;

    type Backend = PgStore;
    const COUNTS_SYNCS: bool = false;

    /// The test's dir names its database on the process's shared server: reopening "the
    /// store in this dir" reopens the same data.
    fn open_at(dir: &Path) -> Backend {
        let pg = Postgres::shared().expect("postgres");
        let url = pg.database_for(dir).expect("database");
        PgStore::open(&url, PgOptions::default()).expect("open")
    }

    include!("suite/api.rs");

    #[test]
    fn a_database_from_a_newer_build_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = open_at(dir.path());
        assert_eq!(
            s.schema_version().expect("version"),
            PgStore::current_schema_version()
        );
        drop(s);
        let pg = Postgres::shared().expect("postgres");
        let url = pg.database_for(dir.path()).expect("database");
        let db = url.rsplit("dbname=").next().expect("dbname").to_owned();
        pg.psql(
            &db,
            "INSERT INTO schema_version (version, applied_at_ms) VALUES (999, 0)",
        )
        .expect("insert");
        let err = PgStore::open(&url, PgOptions::default()).expect_err("newer schema");
        let text = err.to_string();
        assert!(text.contains("schema version 999"), "{text}");
    }

    #[test]
    fn a_bad_url_and_an_unreachable_server_are_clear_errors() {
        let err = PgStore::open("postgresql://[::1", PgOptions::default()).expect_err("bad url");
        assert!(err.to_string().contains("[store] url"), "{err}");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let err = PgStore::open(
            &format!("host=127.0.0.1 port={port} user=postgres dbname=x"),
            PgOptions::default(),
        )
        .expect_err("nobody listens");
        assert!(
            err.to_string().contains("connecting to PostgreSQL"),
            "{err}"
        );
    }

    /// The visibility rule: a reader following the log by cursor never skips an event that
    /// commits later with a lower seq. 8 writers on 2 handles (two "nodes") append while a
    /// reader polls; every page must start right after the cursor.
    #[test]
    fn a_reader_following_the_log_never_skips_a_seq_under_concurrent_writers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Arc::new(open_at(dir.path()));
        let b = Arc::new(open_at(dir.path()));
        let done = Arc::new(AtomicBool::new(false));
        let per_writer = 60;
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let s = if w % 2 == 0 {
                    Arc::clone(&a)
                } else {
                    Arc::clone(&b)
                };
                std::thread::spawn(move || {
                    for n in 0..per_writer {
                        let mut cs = ChangeSet::new();
                        cs.put("t", format!("{w}-{n}"), vec![1; 100])
                            .event(event(&format!("event_{w}_{n}"), 0));
                        s.commit(cs).expect("commit");
                    }
                })
            })
            .collect();
        let reader = {
            let s = Arc::clone(&b);
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut cursor = 0u64;
                let mut pages = 0;
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    let page = s.events_after(cursor, 7).expect("events");
                    for e in &page {
                        assert_eq!(e.seq, cursor + 1, "skipped past seq {}", cursor + 1);
                        cursor = e.seq;
                    }
                    pages += 1;
                    if finished && page.is_empty() {
                        return (cursor, pages);
                    }
                }
            })
        };
        for w in writers {
            w.join().expect("writer");
        }
        done.store(true, Ordering::SeqCst);
        let (cursor, pages) = reader.join().expect("reader");
        assert_eq!(cursor, 8 * per_writer);
        assert!(
            pages > 10,
            "the reader polled while writers ran ({pages} pages)"
        );
        assert_eq!(a.last_event_seq().expect("last"), 8 * per_writer);
    }

    /// Conditions hold across nodes: two handles (two pools) racing on one replay key, and
    /// optimistic updates of one counter from both.
    #[test]
    fn conditions_are_exclusive_across_two_handles_on_one_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Arc::new(open_at(dir.path()));
        let b = Arc::new(open_at(dir.path()));
        for round in 0..20 {
            let key = format!("assertion-{round}");
            let handles: Vec<_> = (0..6)
                .map(|i| {
                    let s = if i % 2 == 0 {
                        Arc::clone(&a)
                    } else {
                        Arc::clone(&b)
                    };
                    let key = key.clone();
                    std::thread::spawn(move || {
                        s.insert_expiring_if_absent("replay", &key, vec![1], i64::MAX)
                            .expect("insert")
                    })
                })
                .collect();
            let wins = handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .filter(|w| *w)
                .count();
            assert_eq!(wins, 1, "round {round}");
        }
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let s = if i % 2 == 0 {
                    Arc::clone(&a)
                } else {
                    Arc::clone(&b)
                };
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        loop {
                            let current = s.get("c", "n").expect("get");
                            let n: u64 = current
                                .as_deref()
                                .map(|v| std::str::from_utf8(v).expect("utf8").parse().expect("n"))
                                .unwrap_or(0);
                            let mut cs = ChangeSet::new();
                            cs.require_equals("c", "n", current).put(
                                "c",
                                "n",
                                (n + 1).to_string().into_bytes(),
                            );
                            match s.commit(cs) {
                                Ok(_) => break,
                                Err(StoreError::Conflict { .. }) => continue,
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        assert_eq!(a.get("c", "n").expect("get"), Some(b"80".to_vec()));
    }

    #[test]
    fn the_pool_never_opens_more_connections_than_its_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pg = Postgres::shared().expect("postgres");
        let url = pg.database_for(dir.path()).expect("database");
        let s = Arc::new(
            PgStore::open(
                &url,
                PgOptions {
                    pool_size: 3,
                    ..PgOptions::default()
                },
            )
            .expect("open"),
        );
        let handles: Vec<_> = (0..12)
            .map(|t| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    for n in 0..20 {
                        let mut cs = ChangeSet::new();
                        cs.put("t", format!("{t}-{n}"), vec![0]);
                        s.commit(cs).expect("commit");
                        assert!(s.open_connections() <= 3);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        assert_eq!(s.count_prefix("t", "").expect("count"), 240);
        assert!(s.open_connections() <= 3);
    }
}

/// `idbridge export` from SQLite imports into PostgreSQL and back, byte for byte.
#[test]
fn an_export_moves_between_sqlite_and_postgres_both_ways() {
    use idbridge_store::{
        ChangeSet, ExportRecord, NewEvent, PgOptions, PgStore, SqliteStore, Store,
    };
    let sqlite = SqliteStore::open_ephemeral().expect("sqlite");
    let mut cs = ChangeSet::new();
    cs.put("users", "u1", br#"{"name":"A"}"#.to_vec())
        .put("users", "u2", vec![0, 159, 146, 150])
        .put("orgs", "o1", b"x".to_vec())
        .put_expiring("codes", "c1", b"code".to_vec(), 4_000_000_000_000);
    for n in 1..=3 {
        cs.event(NewEvent {
            id: format!("event_{n}"),
            kind: "dsync.user.created".into(),
            organization_id: (n != 2).then(|| "org_1".to_owned()),
            created_at_ms: n,
            body: format!(r#"{{"n":{n}}}"#).into_bytes(),
        });
    }
    sqlite.commit(cs).expect("commit");
    sqlite.compact_events_before(2).expect("compact");
    let dump = |s: &dyn Store| {
        let mut lines = Vec::new();
        s.export(&mut |r| {
            lines.push(serde_json::to_string(&r).expect("json"));
            Ok(())
        })
        .expect("export");
        lines
    };
    let parse = |lines: &[String]| -> Vec<idbridge_store::Result<ExportRecord>> {
        lines
            .iter()
            .map(|l| Ok(serde_json::from_str::<ExportRecord>(l).expect("parse")))
            .collect()
    };
    let from_sqlite = dump(&sqlite);
    let pg = idbridge_testkit::Postgres::shared().expect("postgres");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = pg.database_for(dir.path()).expect("database");
    let pgs = PgStore::open(&url, PgOptions::default()).expect("open");
    pgs.import(&mut parse(&from_sqlite).into_iter())
        .expect("import into PG");
    let mut from_pg = dump(&pgs);
    let mut sorted_sqlite = from_sqlite.clone();
    sorted_sqlite.sort();
    from_pg.sort();
    assert_eq!(
        from_pg, sorted_sqlite,
        "PostgreSQL holds what SQLite exported"
    );
    assert_eq!(pgs.last_event_seq().expect("last"), 3);
    let back = SqliteStore::open_ephemeral().expect("sqlite");
    back.import(&mut parse(&dump(&pgs)).into_iter())
        .expect("import back");
    assert_eq!(dump(&back), from_sqlite, "and back into SQLite unchanged");
}
