//! Durable commits per second at 1, 16 and 64 concurrent writers.
//!
//! `cargo bench -p idbridge-store --bench commit` (IDBRIDGE_BENCH_SECS sets the time per
//! point, default 3; IDBRIDGE_BENCH_BACKENDS=sqlite picks backends). Each commit is what
//! a directory change costs: one ~600-byte user, one index entry, one event, and the store
//! returns only after the data is on disk (SQLite: the group-commit round that fdatasyncs the
//! WAL), shared by concurrent writers. (sled, retired, gave 1,247 / 5,473 / 11,466 at 1 / 16 /
//! 64 writers in the run of storage2-report.md, beside SQLite's 1,874 / 6,475 / 4,820.)
//! The store lives under target/ (a real disk), not a tmpfs where fdatasync is free; two
//! extra rows run the same code on tmpfs to show what the store itself costs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idbridge_store::{ChangeSet, NewEvent, SqliteStore, Store};

fn commit_one(store: &dyn Store, writer: usize, n: u64, pad: &str) {
    let key = format!("directory_user_{writer:03}_{n:010}");
    let user = format!(
        r#"{{"object":"directory_user","id":"{key}","email":"{key}@example.com","pad":"{pad}"}}"#
    );
    let mut cs = ChangeSet::new();
    cs.put("users", key.clone(), user.into_bytes())
        .put(
            "users_by_email",
            format!("{key}@example.com"),
            key.clone().into_bytes(),
        )
        .event(NewEvent {
            id: format!("event_{key}"),
            kind: "dsync.user.created".to_owned(),
            organization_id: Some("org_bench".to_owned()),
            created_at_ms: 0,
            body: format!(r#"{{"id":"event_{key}"}}"#).into_bytes(),
        });
    if let Err(e) = store.commit(cs) {
        eprintln!("commit failed: {e}");
        std::process::exit(1);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn run(backend: &str, writers: usize, secs: f64, on_tmpfs: bool) {
    let dir = match tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("tempdir: {e}");
            std::process::exit(1);
        }
    };
    let opened: idbridge_store::Result<Arc<dyn Store>> = match (backend, on_tmpfs) {
        (_, true) => SqliteStore::open_ephemeral().map(|s| Arc::new(s) as Arc<dyn Store>),
        (_, false) => {
            // IDBRIDGE_BENCH_CHECKPOINT_MS: the WAL checkpoint interval (default: the store's).
            let mut options = idbridge_store::SqliteOptions::default();
            if let Some(ms) = std::env::var("IDBRIDGE_BENCH_CHECKPOINT_MS")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                options.checkpoint_interval = std::time::Duration::from_millis(ms);
            }
            SqliteStore::open_with(dir.path(), options).map(|s| Arc::new(s) as Arc<dyn Store>)
        }
    };
    let store = match opened {
        Ok(s) => s,
        Err(e) => {
            eprintln!("open: {e}");
            std::process::exit(1);
        }
    };
    // ~600 bytes of user JSON in total.
    let pad: Arc<str> = "x".repeat(500).into();
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let before = store.stats();
    let started = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (store, stop, total, pad) = (
                Arc::clone(&store),
                Arc::clone(&stop),
                Arc::clone(&total),
                Arc::clone(&pad),
            );
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    commit_one(store.as_ref(), w, n, &pad);
                    latencies.push(t.elapsed());
                    n += 1;
                }
                total.fetch_add(n, Ordering::Relaxed);
                latencies
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut latencies: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let after = store.stats();
    let commits = total.load(Ordering::Relaxed);
    let syncs = after.fdatasyncs - before.fdatasyncs;
    let apply_busy = (after.apply_nanos - before.apply_nanos) as f64 / 1e9 / elapsed;
    println!(
        "{backend:<6} {} writers {writers:>3}: {:>8.0} durable commits/s  ({commits} in {elapsed:.2}s; {syncs} syncs, \
         {:.1} commits/sync, max group {}; latency p50 {:.2?} p99 {:.2?}; writer busy {:.0}%; {} checkpoints)",
        if on_tmpfs { "tmpfs" } else { "disk " },
        commits as f64 / elapsed,
        commits as f64 / syncs.max(1) as f64,
        after.max_group_size,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        apply_busy * 100.0,
        after.checkpoints - before.checkpoints,
    );
}

fn main() {
    let secs: f64 = std::env::var("IDBRIDGE_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let backends: Vec<String> = std::env::var("IDBRIDGE_BENCH_BACKENDS")
        .unwrap_or_else(|_| "sqlite".to_owned())
        .split(',')
        .map(|b| b.trim().to_owned())
        .collect();
    if let Some(unknown) = backends.iter().find(|b| b.as_str() != "sqlite") {
        eprintln!("IDBRIDGE_BENCH_BACKENDS: unknown backend {unknown:?} (known: sqlite)");
        std::process::exit(2);
    }
    println!("idbridge-store commit benchmark (user + index entry + event per commit, durable before the ack)");
    for writers in [1, 16, 64] {
        for backend in &backends {
            run(backend, writers, secs, false);
        }
    }
    // The same code on tmpfs (syncs are free): the store's own CPU ceiling, for comparison.
    println!("for comparison, on tmpfs (not durable; shows the cost of the store itself):");
    for writers in [1, 64] {
        for backend in &backends {
            run(backend, writers, secs, true);
        }
    }
}
