//! Moving a sled data directory to SQLite: a full copy verified record by record, the sled
//! files kept aside, and the two interrupted states (before and after the rename that
//! commits the migration) recovered on the next run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use idbridge_store::{
    holds_sled_store, migrate_sled_dir, ChangeSet, NewEvent, SledStore, SqliteStore, Store,
    SQLITE_FILE_NAME,
};

/// A sled store with every kind of record: entries (JSON and binary), expiring entries,
/// events with the oldest compacted away (so the counter is ahead of the log).
fn sled_fixture(dir: &Path) -> Vec<String> {
    let s = SledStore::open(dir).expect("open sled");
    for n in 0..40i64 {
        let mut cs = ChangeSet::new();
        cs.put(
            "users",
            format!("u{n:03}"),
            format!("{{\"n\":{n}}}").into_bytes(),
        )
        .put("bin", format!("b{n}"), vec![0u8, 255, n as u8, b'\n'])
        .put_expiring("codes", format!("c{n}"), b"code".to_vec(), 1_000 + n)
        .event(NewEvent {
            id: format!("event_{n}"),
            kind: "dsync.user.created".to_owned(),
            organization_id: (n % 2 == 0).then(|| "org_1".to_owned()),
            created_at_ms: n,
            body: format!("{{\"id\":\"event_{n}\"}}").into_bytes(),
        });
        s.commit(cs).expect("commit");
    }
    assert_eq!(s.compact_events_before(5).expect("compact"), 5);
    export(&s)
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
fn a_sled_dir_is_copied_verified_and_kept_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let before = sled_fixture(dir.path());
    std::fs::write(dir.path().join("secret.key"), b"not the store's").expect("write");
    assert!(holds_sled_store(dir.path()));

    let done = migrate_sled_dir(dir.path(), 16)
        .expect("migrate")
        .expect("there was a sled store");
    assert_eq!(done.records, before.len() as u64);
    assert_eq!(done.sqlite_file, dir.path().join(SQLITE_FILE_NAME));
    assert!(!holds_sled_store(dir.path()));
    assert_eq!(backups(dir.path()), vec![done.sled_backup.clone()]);
    assert!(dir.path().join("secret.key").is_file(), "other files stay");
    assert!(!dir.path().join(".sqlite-migration").exists());

    let s = SqliteStore::open(dir.path()).expect("open sqlite");
    assert_eq!(export(&s), before, "same records, same bytes, same order");
    // The counter survived: the next event follows the compacted log's last seq.
    let mut cs = ChangeSet::new();
    cs.event(NewEvent {
        id: "event_next".to_owned(),
        kind: "dsync.user.created".to_owned(),
        organization_id: None,
        created_at_ms: 100,
        body: b"{}".to_vec(),
    });
    assert_eq!(s.commit(cs).expect("commit").event_seqs, vec![41]);
    drop(s);
    assert_eq!(
        export(&SledStore::open(&done.sled_backup).expect("open backup")),
        before,
        "the sled files are kept as they were"
    );
    assert_eq!(migrate_sled_dir(dir.path(), 16).expect("again"), None);
}

#[test]
fn an_interrupted_copy_is_redone_and_a_finished_one_is_tidied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let before = sled_fixture(dir.path());
    // Crash before the rename: a half-built staging file is thrown away and rebuilt.
    let staging = dir.path().join(".sqlite-migration");
    std::fs::create_dir_all(&staging).expect("mkdir");
    std::fs::write(staging.join(SQLITE_FILE_NAME), b"half a file").expect("write");
    let done = migrate_sled_dir(dir.path(), 16)
        .expect("migrate")
        .expect("migrated");
    assert_eq!(done.records, before.len() as u64);
    assert_eq!(
        export(&SqliteStore::open(dir.path()).expect("open")),
        before
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
        before
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
