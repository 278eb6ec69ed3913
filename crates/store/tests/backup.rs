//! Online backup of a live SQLite store: taken while writers go on, restored by putting the
//! file in place of a data directory's `idbridge.sqlite3`, it holds every write acknowledged
//! before the backup started, whole change sets only, and a contiguous event log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idbridge_store::{
    backup_sqlite_file, ChangeSet, NewEvent, SqliteStore, Store, StoreError, SQLITE_FILE_NAME,
};

fn commit_user(store: &dyn Store, key: &str) -> u64 {
    let mut cs = ChangeSet::new();
    cs.put("users", key, vec![b'u'; 600])
        .put(
            "users_by_email",
            format!("{key}@example.test"),
            key.as_bytes().to_vec(),
        )
        .event(NewEvent {
            id: format!("event_{key}"),
            kind: "dsync.user.created".into(),
            organization_id: None,
            created_at_ms: 0,
            body: b"{}".to_vec(),
        });
    store.commit(cs).expect("commit").event_seqs[0]
}

#[test]
fn a_backup_taken_during_writes_restores_every_acknowledged_write_and_a_contiguous_log() {
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let live_dir = work.path().join("live");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&live_dir).expect("open"));
    // Some volume first, so the copy takes a while.
    for n in 0..3000 {
        commit_user(store.as_ref(), &format!("seed-{n}"));
    }
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let slowest_micros = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let (store, acked, stop, slowest) = (
                store.clone(),
                acked.clone(),
                stop.clone(),
                slowest_micros.clone(),
            );
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w{t}-{n}");
                    let started = Instant::now();
                    let seq = commit_user(store.as_ref(), &key);
                    let took = started.elapsed().as_micros() as u64;
                    slowest.fetch_max(took, Ordering::Relaxed);
                    acked.lock().unwrap().push((key, seq));
                    n += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let before: Vec<(String, u64)> = acked.lock().unwrap().clone();
    let acked_at_start = before.len();
    slowest_micros.store(0, Ordering::Relaxed);
    let dest = work.path().join("nightly.sqlite3");
    let summary = store.backup_to(&dest).expect("backup");
    let during = acked.lock().unwrap().len() - acked_at_start;
    let slowest_during = slowest_micros.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    println!(
        "backup: {} bytes, last seq {}, {:?}; {during} writes acknowledged during it, slowest \
         commit {slowest_during} µs",
        summary.bytes, summary.last_event_seq, summary.elapsed
    );
    assert!(
        acked_at_start > 0,
        "the writers made no progress before the backup"
    );
    assert_eq!(summary.path, dest);
    assert_eq!(
        std::fs::metadata(&dest).expect("backup file").len(),
        summary.bytes
    );
    assert!(!work.path().join("nightly.sqlite3.partial").exists());
    // The live store went on past the snapshot.
    assert!(store.last_event_seq().expect("last") > summary.last_event_seq);

    // Restore: the backup file becomes a data directory's store.
    let restored_dir = work.path().join("restored");
    std::fs::create_dir_all(&restored_dir).expect("mkdir");
    std::fs::copy(&dest, restored_dir.join(SQLITE_FILE_NAME)).expect("copy");
    let restored = SqliteStore::open(&restored_dir).expect("open the restored store");
    for (key, seq) in &before {
        assert!(
            restored.get("users", key).expect("get").is_some(),
            "write {key} acknowledged before the backup started is missing"
        );
        assert_eq!(
            restored.event_seq(&format!("event_{key}")).expect("seq"),
            Some(*seq)
        );
    }
    let last = restored.last_event_seq().expect("last");
    assert_eq!(last, summary.last_event_seq);
    let seqs: Vec<u64> = restored
        .events_after(0, usize::MAX)
        .expect("events")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(
        seqs,
        (1..=last).collect::<Vec<_>>(),
        "event log not contiguous"
    );
    // Whole change sets only: one user and one index row per event.
    assert_eq!(restored.count_prefix("users", "").expect("count"), last);
    assert_eq!(
        restored.count_prefix("users_by_email", "").expect("count"),
        last
    );
    // The restored store takes writes and continues the log.
    assert_eq!(commit_user(&restored, "after-restore"), last + 1);
}

#[test]
fn a_backup_never_overwrites_and_needs_a_store() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&work.path().join("live")).expect("open");
    commit_user(&store, "one");
    let dest = work.path().join("b.sqlite3");
    store.backup_to(&dest).expect("first backup");
    let err = store
        .backup_to(&dest)
        .expect_err("second backup to the same file");
    assert!(
        matches!(err, StoreError::Backend(ref m) if m.contains("already exists")),
        "{err}"
    );
    let err = backup_sqlite_file(&work.path().join("nothing.sqlite3"), &work.path().join("c"))
        .expect_err("no source");
    assert!(
        matches!(err, StoreError::Backend(ref m) if m.contains("no store at")),
        "{err}"
    );
    assert!(!work.path().join("c").exists() && !work.path().join("c.partial").exists());
    assert_eq!(
        store.backup_dir(),
        Some(work.path().join("live").join("backups"))
    );
}
