//! The acknowledged path reaches the disk sync: counters, ordering of apply / sync / return,
//! the event log's durable-only visibility, and poisoning after a failed sync — on each
//! backend (SQLite: the group-commit round that fdatasyncs the WAL; PostgreSQL later).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::path::Path;

use idbridge_store::{
    ChangeSet, DurabilityProbe, NewEvent, SqliteOptions, SqliteStore, Store, StoreError,
};

/// Opens a backend in `dir` with a probe.
type Opener = fn(&Path, Option<Arc<dyn DurabilityProbe>>) -> Arc<dyn Store>;

fn sqlite(dir: &Path, probe: Option<Arc<dyn DurabilityProbe>>) -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::open_with(
            dir,
            SqliteOptions {
                probe,
                ..SqliteOptions::default()
            },
        )
        .expect("open sqlite"),
    )
}

/// `#[test]`s running `$body(opener)` on each backend.
macro_rules! on_each_backend {
    ($body:ident) => {
        mod $body {
            #[test]
            fn sqlite() {
                super::$body(super::sqlite);
            }
        }
    };
}

fn event(id: &str) -> NewEvent {
    NewEvent {
        id: id.to_owned(),
        kind: "dsync.user.created".to_owned(),
        organization_id: None,
        created_at_ms: 0,
        body: b"{}".to_vec(),
    }
}

fn commit_one(s: &dyn Store, key: &str) -> idbridge_store::Result<u64> {
    let mut cs = ChangeSet::new();
    cs.put("users", key, vec![b'x'; 600])
        .event(event(&format!("event_{key}")));
    Ok(s.commit(cs)?.event_seqs[0])
}

on_each_backend!(every_sequential_commit_gets_its_own_flush_and_fdatasync);
fn every_sequential_commit_gets_its_own_flush_and_fdatasync(open: Opener) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path(), None);
    let s = s.as_ref();
    let base = s.stats();
    for n in 0..20 {
        let before = s.stats();
        commit_one(s, &format!("k{n}")).expect("commit");
        let after = s.stats();
        assert_eq!(after.fdatasyncs, before.fdatasyncs + 1, "commit {n}");
        assert_eq!(after.flushes, before.flushes + 1, "commit {n}");
    }
    // Durable expiring-table writes sync too; reads and misses do not.
    let before = s.stats().fdatasyncs;
    s.put_expiring("codes", "c", b"v".to_vec(), i64::MAX)
        .expect("put");
    assert_eq!(s.stats().fdatasyncs, before + 1);
    assert!(s.take_expiring("codes", "c", 0).expect("take").is_some());
    assert_eq!(s.stats().fdatasyncs, before + 2);
    assert!(s.take_expiring("codes", "c", 0).expect("take").is_none());
    s.get("users", "k1").expect("get");
    assert_eq!(s.stats().fdatasyncs, before + 2);
    assert_eq!(s.stats().durable_writes, base.durable_writes + 22);
}

/// One step of the trace, stamped from one shared clock. `Applied` may come from a backend's
/// own writer thread; `Acked` comes from the caller's thread just before its call returns.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Applied { ticket: u64 },
    SyncStart { covers: u64 },
    SyncEnd { covers: u64 },
    Acked { ticket: u64, thread: usize },
    Returned { thread: usize },
}

#[derive(Default)]
struct Tracer {
    steps: Mutex<Vec<Step>>,
}

thread_local! {
    static THREAD_NO: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

impl Tracer {
    fn push(&self, step: Step) {
        self.steps.lock().expect("trace lock").push(step);
    }
}

impl DurabilityProbe for Tracer {
    fn applied(&self, ticket: u64) {
        self.push(Step::Applied { ticket });
    }
    fn acknowledged(&self, ticket: u64) {
        let thread = THREAD_NO.with(|t| t.get());
        self.push(Step::Acked { ticket, thread });
    }
    fn before_sync(&self, covers_through: u64) -> std::io::Result<()> {
        self.push(Step::SyncStart {
            covers: covers_through,
        });
        Ok(())
    }
    fn after_sync(&self, covers_through: u64) {
        self.push(Step::SyncEnd {
            covers: covers_through,
        });
    }
}

/// For every write: some sync that started after it applied, covering its ticket, ended
/// before it was acknowledged, and its caller's call returned only after that. Returns the
/// number of writes checked, or the first violation.
fn check_trace(steps: &[Step]) -> Result<usize, String> {
    let mut checked = 0;
    for (i, step) in steps.iter().enumerate() {
        let Step::Applied { ticket } = step else {
            continue;
        };
        let Some((ack, thread)) = steps[i + 1..]
            .iter()
            .enumerate()
            .find_map(|(p, s)| match s {
                Step::Acked { ticket: t, thread } if t == ticket => Some((i + 1 + p, *thread)),
                _ => None,
            })
        else {
            return Err(format!("ticket {ticket} never acknowledged"));
        };
        let covered = steps[i + 1..ack].iter().enumerate().any(|(j, s)| {
            matches!(s, Step::SyncStart { covers } if covers >= ticket)
                && steps[i + 1 + j..ack]
                    .iter()
                    .any(|e| matches!(e, Step::SyncEnd { covers } if covers >= ticket))
        });
        if !covered {
            return Err(format!(
                "ticket {ticket} (thread {thread}) acknowledged without a sync started after it applied"
            ));
        }
        // The caller's previous return must not lie between apply and ack of this ticket
        // for another write of the same thread: each thread has one write in flight.
        if !steps[ack + 1..].contains(&Step::Returned { thread }) {
            return Err(format!("ticket {ticket}: thread {thread} never returned"));
        }
        checked += 1;
    }
    Ok(checked)
}

#[test]
fn trace_checker_catches_an_early_acknowledgement() {
    use Step::*;
    let good = [
        Applied { ticket: 1 },
        Applied { ticket: 2 },
        SyncStart { covers: 2 },
        SyncEnd { covers: 2 },
        Acked {
            ticket: 2,
            thread: 1,
        },
        Returned { thread: 1 },
        Acked {
            ticket: 1,
            thread: 0,
        },
        Returned { thread: 0 },
    ];
    assert_eq!(check_trace(&good), Ok(2));
    // Sync started before ticket 2 applied: it does not cover it.
    let early_sync = [
        Applied { ticket: 1 },
        SyncStart { covers: 1 },
        Applied { ticket: 2 },
        SyncEnd { covers: 1 },
        Acked {
            ticket: 1,
            thread: 0,
        },
        Returned { thread: 0 },
        Acked {
            ticket: 2,
            thread: 1,
        },
        Returned { thread: 1 },
    ];
    assert!(check_trace(&early_sync).is_err());
    // Acknowledged before the sync ended.
    let early_ack = [
        Applied { ticket: 1 },
        SyncStart { covers: 1 },
        Acked {
            ticket: 1,
            thread: 0,
        },
        Returned { thread: 0 },
        SyncEnd { covers: 1 },
    ];
    assert!(check_trace(&early_ack).is_err());
    // Never acknowledged.
    assert!(check_trace(&[Applied { ticket: 1 }, Returned { thread: 0 }]).is_err());
}

on_each_backend!(no_write_returns_before_a_sync_that_started_after_it_applied);
fn no_write_returns_before_a_sync_that_started_after_it_applied(open: Opener) {
    let dir = tempfile::tempdir().expect("tempdir");
    let tracer = Arc::new(Tracer::default());
    let s = open(dir.path(), Some(tracer.clone()));
    tracer.steps.lock().expect("lock").clear();
    let threads = 12;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let s = Arc::clone(&s);
            let tracer = Arc::clone(&tracer);
            std::thread::spawn(move || {
                THREAD_NO.with(|n| n.set(t));
                for n in 0..30 {
                    if n % 3 == 0 {
                        s.put_expiring("codes", &format!("{t}-{n}"), b"v".to_vec(), i64::MAX)
                            .expect("put");
                    } else {
                        commit_one(s.as_ref(), &format!("{t}-{n}")).expect("commit");
                    }
                    tracer.push(Step::Returned { thread: t });
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let steps = tracer.steps.lock().expect("lock").clone();
    let checked = check_trace(&steps).expect("durability ordering");
    assert_eq!(checked, threads * 30);
    let syncs = steps
        .iter()
        .filter(|s| matches!(s, Step::SyncEnd { .. }))
        .count();
    assert!(syncs >= 1 && syncs <= checked, "syncs {syncs}");
}

/// Blocks sync rounds until released, to observe the store mid-commit.
struct Gate {
    blocked: AtomicBool,
    entered: Mutex<Option<mpsc::Sender<u64>>>,
    release: Mutex<Option<mpsc::Receiver<()>>>,
}

impl DurabilityProbe for Gate {
    fn before_sync(&self, covers_through: u64) -> std::io::Result<()> {
        if self.blocked.load(Ordering::SeqCst) {
            if let Some(tx) = self.entered.lock().expect("lock").take() {
                let _ = tx.send(covers_through);
            }
            if let Some(rx) = self.release.lock().expect("lock").take() {
                let _ = rx.recv();
            }
        }
        Ok(())
    }
}

on_each_backend!(commit_waits_for_the_sync_and_events_stay_hidden_until_durable);
fn commit_waits_for_the_sync_and_events_stay_hidden_until_durable(open: Opener) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let gate = Arc::new(Gate {
        blocked: AtomicBool::new(false),
        entered: Mutex::new(Some(entered_tx)),
        release: Mutex::new(Some(release_rx)),
    });
    let s = open(dir.path(), Some(gate.clone()));
    commit_one(s.as_ref(), "before").expect("commit");
    gate.blocked.store(true, Ordering::SeqCst);

    let returned = Arc::new(AtomicU64::new(0));
    let writer = {
        let s = Arc::clone(&s);
        let returned = Arc::clone(&returned);
        std::thread::spawn(move || {
            let seq = commit_one(s.as_ref(), "held").expect("commit");
            returned.store(seq, Ordering::SeqCst);
        })
    };
    entered_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("sync round started");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        returned.load(Ordering::SeqCst),
        0,
        "acknowledged before its sync finished"
    );
    // Applied: entity reads may see it (SQLite shows committed rows before their sync round
    // ends); the event log must not show it.
    let _ = s.get("users", "held").expect("get");
    assert_eq!(s.last_event_seq().expect("last"), 1);
    assert_eq!(s.events_after(0, 10).expect("events").len(), 1);
    assert_eq!(s.event_seq("event_held").expect("seq"), None);

    release_tx.send(()).expect("release");
    writer.join().expect("writer");
    assert_eq!(returned.load(Ordering::SeqCst), 2);
    assert_eq!(s.last_event_seq().expect("last"), 2);
    assert_eq!(s.event_seq("event_held").expect("seq"), Some(2));
}

struct FailingSync {
    fail: AtomicBool,
}

impl DurabilityProbe for FailingSync {
    fn before_sync(&self, _covers_through: u64) -> std::io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            Err(std::io::Error::other("injected EIO"))
        } else {
            Ok(())
        }
    }
}

on_each_backend!(a_failed_sync_fails_the_write_and_poisons_the_store);
fn a_failed_sync_fails_the_write_and_poisons_the_store(open: Opener) {
    let dir = tempfile::tempdir().expect("tempdir");
    let probe = Arc::new(FailingSync {
        fail: AtomicBool::new(false),
    });
    let s = open(dir.path(), Some(probe.clone()));
    let s = s.as_ref();
    commit_one(s, "ok").expect("commit");
    probe.fail.store(true, Ordering::SeqCst);
    let err = commit_one(s, "lost").expect_err("sync failed");
    assert!(
        matches!(err, StoreError::Backend(ref m) if m.contains("injected EIO")),
        "{err}"
    );
    // Even with the disk "back", nothing more is acknowledged.
    probe.fail.store(false, Ordering::SeqCst);
    assert!(matches!(
        commit_one(s, "after"),
        Err(StoreError::Backend(_))
    ));
    assert!(matches!(
        s.put_expiring("codes", "c", b"v".to_vec(), i64::MAX),
        Err(StoreError::Backend(_))
    ));
    // Reads keep working and never show the unsynced event.
    assert_eq!(
        s.get("users", "ok").expect("get").map(|v| v.len()),
        Some(600)
    );
    assert_eq!(s.last_event_seq().expect("last"), 1);
}
