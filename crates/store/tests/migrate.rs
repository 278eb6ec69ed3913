//! Moving a sled data directory to SQLite, on the fixture the last sled release wrote
//! (`tests/fixtures/sled-0.34/`, made by `crates/server/tests/sled_fixture_gen.rs` at commit
//! named in its README): a full copy verified record by record against the export recorded
//! when the fixture was made, the sled files kept aside, and the two interrupted states
//! (before and after the rename that commits the migration) recovered on the next run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use idbridge_store::{
    holds_sled_store, migrate_sled_dir, ChangeSet, ExportRecord, NewEvent, SqliteStore, Store,
    SQLITE_FILE_NAME,
};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sled-0.34")
}

/// Unpacks the fixture's sled data directory into `dir`.
fn unpack_fixture(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(fixture_dir().join("data.tar.gz"))
        .arg("-C")
        .arg(dir)
        .status()
        .expect("run tar");
    assert!(status.success(), "tar -xzf failed");
    assert!(holds_sled_store(dir));
}

/// The export taken from the fixture before any migration, one record per line.
fn expected_export() -> Vec<String> {
    std::fs::read_to_string(fixture_dir().join("export.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn export(s: &dyn Store) -> Vec<String> {
    let mut lines = Vec::new();
    s.export(&mut |r| {
        lines.push(serde_json::to_string(&r).expect("json"));
        Ok(())
    })
    .expect("export");
    lines
}

/// Records per kind (`entry <table>`, `expiring <table>`, `event`, `event_seq`), as the
/// fixture's `counts.json` has them.
fn counts(lines: &[String]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in lines {
        let kind = match serde_json::from_str::<ExportRecord>(line).expect("record") {
            ExportRecord::Entry { table, .. } => format!("entry {table}"),
            ExportRecord::Expiring { table, .. } => format!("expiring {table}"),
            ExportRecord::Event(_) => "event".to_owned(),
            ExportRecord::EventSeq { .. } => "event_seq".to_owned(),
            ExportRecord::OwnerMigration { owner, .. } => format!("owner_migration {owner}"),
            ExportRecord::RowTable { table, .. } => format!("row_table {table}"),
            ExportRecord::Row { table, .. } => format!("row {table}"),
        };
        *counts.entry(kind).or_insert(0) += 1;
    }
    counts
}

/// Where `after` differs from `expected`: the first line missing, changed or extra.
fn differences(expected: &[String], after: &[String]) -> Option<String> {
    if let Some((n, (e, a))) = expected
        .iter()
        .zip(after)
        .enumerate()
        .find(|(_, (e, a))| e != a)
    {
        return Some(format!("record {n} differs:\n expected {e}\n found    {a}"));
    }
    match expected.len().cmp(&after.len()) {
        std::cmp::Ordering::Greater => Some(format!(
            "{} record(s) lost, first: {}",
            expected.len() - after.len(),
            expected[after.len()]
        )),
        std::cmp::Ordering::Less => Some(format!(
            "{} record(s) extra, first: {}",
            after.len() - expected.len(),
            after[expected.len()]
        )),
        std::cmp::Ordering::Equal => None,
    }
}

fn backups(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("sled-backup-"))
        })
        .collect()
}

#[test]
fn the_release_fixture_is_copied_verified_and_kept_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    unpack_fixture(dir.path());
    let expected = expected_export();
    let expected_counts: BTreeMap<String, u64> =
        serde_json::from_str(&std::fs::read_to_string(fixture_dir().join("counts.json")).unwrap())
            .unwrap();
    assert_eq!(
        counts(&expected),
        expected_counts,
        "the fixture's own files agree"
    );

    let done = migrate_sled_dir(dir.path(), 16)
        .expect("migrate")
        .expect("there was a sled store");
    assert_eq!(done.records, expected.len() as u64);
    assert_eq!(done.sqlite_file, dir.path().join(SQLITE_FILE_NAME));
    assert!(!holds_sled_store(dir.path()));
    assert_eq!(backups(dir.path()), vec![done.sled_backup.clone()]);
    assert!(
        holds_sled_store(&done.sled_backup),
        "the sled files are kept"
    );
    assert!(
        dir.path().join("secret.key").is_file(),
        "the data dir's other files stay"
    );
    assert!(!dir.path().join(".sqlite-migration").exists());

    let s = SqliteStore::open(dir.path()).expect("open sqlite");
    let after = export(&s);
    assert_eq!(counts(&after), expected_counts, "counts per kind");
    if let Some(diff) = differences(&expected, &after) {
        panic!("the migration changed the store: {diff}");
    }
    // The counter survived: the next event follows the log's last seq.
    let last = s.last_event_seq().expect("seq");
    let mut cs = ChangeSet::new();
    cs.event(NewEvent {
        id: "event_after_migration".to_owned(),
        kind: "dsync.user.created".to_owned(),
        organization_id: None,
        created_at_ms: 100,
        body: b"{}".to_vec(),
    });
    assert_eq!(s.commit(cs).expect("commit").event_seqs, vec![last + 1]);
    drop(s);
    assert_eq!(migrate_sled_dir(dir.path(), 16).expect("again"), None);

    // The kept sled files are the store as it was: migrated again elsewhere, same export.
    let again = tempfile::tempdir().expect("tempdir");
    for name in ["conf", "db"] {
        std::fs::copy(done.sled_backup.join(name), again.path().join(name)).expect("copy");
    }
    migrate_sled_dir(again.path(), 16)
        .expect("migrate the kept files")
        .expect("a sled store");
    assert_eq!(
        export(&SqliteStore::open(again.path()).expect("open")),
        expected
    );
}

/// The comparison the test above relies on catches a lost row: one user row deleted from
/// the migrated store is reported, with the row.
#[test]
fn a_user_row_dropped_after_migration_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    unpack_fixture(dir.path());
    migrate_sled_dir(dir.path(), 16)
        .expect("migrate")
        .expect("migrated");
    let expected = expected_export();
    let user_row = expected
        .iter()
        .find_map(
            |line| match serde_json::from_str::<ExportRecord>(line).unwrap() {
                ExportRecord::Entry { table, key, value }
                    if table.contains("user")
                        && String::from_utf8_lossy(&value).contains("user07@fixture.test") =>
                {
                    Some((table, key))
                }
                _ => None,
            },
        )
        .expect("the fixture has user07's row");
    let s = SqliteStore::open(dir.path()).expect("open");
    let mut cs = ChangeSet::new();
    cs.delete(user_row.0.clone(), user_row.1.clone());
    s.commit(cs).expect("delete");
    let diff = differences(&expected, &export(&s)).expect("a dropped row is a difference");
    assert!(diff.contains(&user_row.1), "{diff}");
    assert_ne!(counts(&expected), counts(&export(&s)));
}

#[test]
fn an_interrupted_copy_is_redone_and_a_finished_one_is_tidied() {
    let dir = tempfile::tempdir().expect("tempdir");
    unpack_fixture(dir.path());
    let expected = expected_export();
    // Crash before the rename: a half-built staging file is thrown away and rebuilt.
    let staging = dir.path().join(".sqlite-migration");
    std::fs::create_dir_all(&staging).expect("mkdir");
    std::fs::write(staging.join(SQLITE_FILE_NAME), b"half a file").expect("write");
    let done = migrate_sled_dir(dir.path(), 16)
        .expect("migrate")
        .expect("migrated");
    assert_eq!(done.records, expected.len() as u64);
    assert_eq!(
        export(&SqliteStore::open(dir.path()).expect("open")),
        expected
    );

    // Crash after the rename, before the sled files moved: SQLite is authoritative and the
    // sled files are moved aside without copying anything again.
    let backup = done.sled_backup;
    for name in ["conf", "db"] {
        std::fs::copy(backup.join(name), dir.path().join(name)).expect("restore");
    }
    assert!(holds_sled_store(dir.path()));
    let tidied = migrate_sled_dir(dir.path(), 16)
        .expect("tidy")
        .expect("found sled files");
    assert_eq!(tidied.records, 0);
    assert!(!holds_sled_store(dir.path()));
    assert_eq!(backups(dir.path()).len(), 2);
    assert_eq!(
        export(&SqliteStore::open(dir.path()).expect("open")),
        expected
    );
}

#[test]
fn a_dir_without_sled_is_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(migrate_sled_dir(dir.path(), 16).expect("nothing"), None);
    let s = SqliteStore::open(dir.path()).expect("open");
    drop(s);
    assert_eq!(migrate_sled_dir(dir.path(), 16).expect("nothing"), None);
    assert!(backups(dir.path()).is_empty());
}

/// Expiring entries (login sessions, codes, replay entries) keep their value and expiry. The
/// API flows of the fixture leave none, so this writes sled's layout for them directly
/// (`x:<table>` tree, value = expiry as i64 big-endian + bytes), as the retired backend did.
#[test]
fn expiring_entries_keep_their_expiry() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = sled::Config::new().path(dir.path()).open().expect("sled");
        let codes = db.open_tree("x:codes").expect("tree");
        for (key, expires) in [("live", i64::MAX), ("expired", 1_000i64)] {
            let mut value = expires.to_be_bytes().to_vec();
            value.extend_from_slice(format!("code-{key}").as_bytes());
            codes.insert(key, value).expect("insert");
        }
        db.open_tree("t:users")
            .expect("tree")
            .insert("u1", b"{}".to_vec())
            .expect("insert");
        db.flush().expect("flush");
    }
    assert!(holds_sled_store(dir.path()));
    let done = migrate_sled_dir(dir.path(), 16)
        .expect("migrate")
        .expect("migrated");
    assert_eq!(
        done.records, 4,
        "two expiring entries, one row, the event counter"
    );
    let s = SqliteStore::open(dir.path()).expect("open");
    assert_eq!(
        s.get_expiring("codes", "live", 2_000).expect("get"),
        Some(b"code-live".to_vec())
    );
    assert_eq!(
        s.get_expiring("codes", "expired", 2_000).expect("get"),
        None
    );
    let expiring: Vec<(String, i64)> = export(&s)
        .iter()
        .filter_map(|l| match serde_json::from_str::<ExportRecord>(l).unwrap() {
            ExportRecord::Expiring {
                key, expires_at_ms, ..
            } => Some((key, expires_at_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(
        expiring,
        vec![("expired".to_owned(), 1_000), ("live".to_owned(), i64::MAX)]
    );
}
