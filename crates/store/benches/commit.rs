//! Durable commits per second at 1, 16 and 64 concurrent writers.
//!
//! `cargo bench -p idbridge-store --bench commit` (IDBRIDGE_BENCH_SECS sets the time per
//! point, default 3; IDBRIDGE_BENCH_BACKENDS=sqlite,postgres picks backends, default both).
//! PostgreSQL runs on testkit's private server (Debian's postgresql, data dir on the same
//! disk, fsync and synchronous_commit on), one fresh database per point, a pool as large as
//! the writer count; its commits are durable when COMMIT returns (PostgreSQL's own group
//! commit). The load average is printed before and after: other builds share the cores. Each commit is what
//! a directory change costs: one ~600-byte user, one index entry, one event, and the store
//! returns only after the data is on disk (SQLite: the group-commit round that fdatasyncs the
//! WAL), shared by concurrent writers. (sled, retired, gave 1,247 / 5,473 / 11,466 at 1 / 16 /
//! 64 writers in the run of storage2-report.md, beside SQLite's 1,874 / 6,475 / 4,820.)
//! The store lives under target/ (a real disk), not a tmpfs where fdatasync is free; two
//! extra rows run the same code on tmpfs to show what the store itself costs.
//!
//! Shapes (IDBRIDGE_BENCH_SHAPES, default `kv,user-kv,user-row`): `kv` is the figure above
//! (user + index entry + event). `user-kv` is a directory user as the engine writes it today:
//! the record, `user_dir`, `users_by_idp`, a `user_key` slot (both checked absent), two
//! membership keys and the event. `user-row` is the same user as ONE typed row (unique
//! (directory, idp_id), (directory, userName), (directory, lower(email)) and (directory, id)
//! indexes) plus one membership row and the event: what issue 17's relational shape writes.
//! After the concurrent runs, a bulk load (IDBRIDGE_BENCH_BULK users, default 100,000, in
//! change sets of 1,000, one writer, durable) of each user shape prints users/s.
//! IDBRIDGE_BENCH_WRITERS picks the writer counts (default 1,16,64), IDBRIDGE_BENCH_NO_TMPFS=1
//! skips the tmpfs rows, IDBRIDGE_BENCH_BULK=0 the bulk load.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idbridge_store::{
    ChangeSet, Column, IndexDef, NewEvent, OwnerMigration, OwnerSchema, RowValue, SqliteStore,
    Store, TableDef,
};

/// The directory user as one row (the layout issue 17 asks for).
static USERS: TableDef = TableDef {
    name: "bench_directory_users",
    columns: &[
        Column::text("id"),
        Column::text("directory_id"),
        Column::text("idp_id"),
        Column::text("email").nullable(),
        Column::text("username").nullable(),
        Column::text("state"),
        Column::blob("body"),
        Column::blob("fingerprint").nullable(),
        Column::integer("parked"),
        Column::integer("version"),
    ],
    primary_key: &["id"],
    indexes: &[
        IndexDef {
            name: "bench_users_by_idp",
            terms: &["directory_id", "idp_id"],
            unique: true,
            partial: None,
        },
        IndexDef {
            name: "bench_users_by_email",
            terms: &["directory_id", "lower(email)"],
            unique: false,
            partial: None,
        },
        IndexDef {
            name: "bench_users_by_username",
            terms: &["directory_id", "username"],
            unique: true,
            partial: Some("username IS NOT NULL"),
        },
        IndexDef {
            name: "bench_users_by_directory",
            terms: &["directory_id", "id"],
            unique: false,
            partial: None,
        },
    ],
    version_column: Some("version"),
    without_rowid: false,
};

/// Memberships as compact pairs.
static MEMBERSHIPS: TableDef = TableDef {
    name: "bench_directory_memberships",
    columns: &[Column::text("group_id"), Column::text("user_id")],
    primary_key: &["group_id", "user_id"],
    indexes: &[IndexDef {
        name: "bench_memberships_by_user",
        terms: &["user_id", "group_id"],
        unique: false,
        partial: None,
    }],
    version_column: None,
    without_rowid: true,
};

static BENCH_SCHEMA: OwnerSchema = OwnerSchema {
    owner: "bench.directory",
    migrations: &[OwnerMigration {
        version: 1,
        description: "bench users and memberships",
        create: &[&USERS, &MEMBERSHIPS],
        sql: "",
    }],
};

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Kv,
    UserKv,
    UserRow,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Kv => "kv",
            Shape::UserKv => "user-kv",
            Shape::UserRow => "user-row",
        }
    }
}

fn user_event(key: &str) -> NewEvent {
    NewEvent {
        id: format!("event_{key}"),
        kind: "dsync.user.created".to_owned(),
        organization_id: Some("org_bench".to_owned()),
        created_at_ms: 0,
        body: format!(r#"{{"id":"event_{key}"}}"#).into_bytes(),
    }
}

/// Stages one directory user (and one membership) in `shape`.
fn stage_user(cs: &mut ChangeSet, shape: Shape, writer: usize, n: u64, pad: &str) {
    let dir = format!("directory_{writer:03}");
    let id = format!("directory_user_{writer:03}_{n:010}");
    let group = format!("directory_group_{writer:03}_{:04}", n % 1000);
    let body = format!(
        r#"{{"object":"directory_user","id":"{id}","email":"{id}@example.com","pad":"{pad}"}}"#
    );
    match shape {
        Shape::Kv => {
            cs.put("users", id.clone(), body.into_bytes()).put(
                "users_by_email",
                format!("{id}@example.com"),
                id.clone().into_bytes(),
            );
        }
        Shape::UserKv => {
            let idp = format!("{dir}/idp-{n}");
            let name = format!("{dir}/{id}@example.com");
            cs.require_absent("dsync.users_by_idp", idp.clone())
                .require_absent("dsync.user_key.scim.userName", name.clone())
                .put("dsync.users", format!("{dir}/{id}"), body.into_bytes())
                .put("dsync.user_dir", id.clone(), dir.clone().into_bytes())
                .put("dsync.users_by_idp", idp, id.clone().into_bytes())
                .put(
                    "dsync.user_key.scim.userName",
                    name,
                    id.clone().into_bytes(),
                )
                .put("dsync.members", format!("g/{group}/{id}"), Vec::new())
                .put("dsync.members", format!("u/{id}/{group}"), Vec::new());
        }
        Shape::UserRow => {
            cs.insert_row(
                &USERS,
                vec![
                    RowValue::from(id.as_str()),
                    dir.as_str().into(),
                    format!("idp-{n}").into(),
                    format!("{id}@example.com").into(),
                    format!("{id}@example.com").into(),
                    "active".into(),
                    RowValue::Blob(body.into_bytes()),
                    RowValue::Null,
                    0i64.into(),
                    RowValue::Null,
                ],
            )
            .insert_row(&MEMBERSHIPS, vec![group.into(), id.as_str().into()]);
        }
    }
    cs.event(user_event(&id));
}

fn commit_one(store: &dyn Store, shape: Shape, writer: usize, n: u64, pad: &str) {
    let mut cs = ChangeSet::new();
    stage_user(&mut cs, shape, writer, n, pad);
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

/// Where a run's store lives.
#[derive(Clone, Copy)]
enum Target<'a> {
    SqliteDisk,
    SqliteTmpfs,
    Postgres(&'a idbridge_testkit::Postgres),
}

impl Target<'_> {
    fn label(self) -> &'static str {
        match self {
            Target::SqliteDisk => "sqlite disk ",
            Target::SqliteTmpfs => "sqlite tmpfs",
            Target::Postgres(_) => "postgres    ",
        }
    }
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| {
            format!(
                "load average {}",
                l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
            )
        })
        .unwrap_or_default()
}

fn open_target(target: Target<'_>, writers: usize) -> (tempfile::TempDir, Arc<dyn Store>) {
    let Target::Postgres(pg) = target else {
        return open_store(matches!(target, Target::SqliteTmpfs));
    };
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!("bench_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let dir = tempfile::tempdir().unwrap();
    let url = pg.database(&name).unwrap();
    let options = idbridge_store::PgOptions {
        pool_size: writers.max(1),
        ..idbridge_store::PgOptions::default()
    };
    let store = idbridge_store::PgStore::open(&url, options).unwrap();
    store.migrate_owner(&BENCH_SCHEMA).unwrap();
    (dir, Arc::new(store))
}

fn open_store(on_tmpfs: bool) -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = match tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("tempdir: {e}");
            std::process::exit(1);
        }
    };
    let opened: idbridge_store::Result<Arc<dyn Store>> = match on_tmpfs {
        true => SqliteStore::open_ephemeral().map(|s| Arc::new(s) as Arc<dyn Store>),
        false => {
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
    let store = match opened.and_then(|s| s.migrate_owner(&BENCH_SCHEMA).map(|_| s)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("open: {e}");
            std::process::exit(1);
        }
    };
    (dir, store)
}

fn run(shape: Shape, writers: usize, secs: f64, target: Target<'_>) {
    let (_dir, store) = open_target(target, writers);
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
                    commit_one(store.as_ref(), shape, w, n, &pad);
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
        "{:<8} {} writers {writers:>3}: {:>8.0} durable commits/s  ({commits} in {elapsed:.2}s; {syncs} syncs, \
         {:.1} commits/sync, max group {}; latency p50 {:.2?} p99 {:.2?}; writer busy {:.0}%; {} checkpoints)",
        shape.name(),
        target.label(),
        commits as f64 / elapsed,
        commits as f64 / syncs.max(1) as f64,
        after.max_group_size,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        apply_busy * 100.0,
        after.checkpoints - before.checkpoints,
    );
}

/// One writer loads `users` users in change sets of 1,000 (each durable): users/s.
fn bulk(shape: Shape, users: u64, target: Target<'_>) {
    let (_dir, store) = open_target(target, 1);
    let pad = "x".repeat(500);
    let started = Instant::now();
    let mut n = 0;
    while n < users {
        let mut cs = ChangeSet::new();
        for _ in 0..1000.min(users - n) {
            stage_user(&mut cs, shape, 0, n, &pad);
            n += 1;
        }
        if let Err(e) = store.commit(cs) {
            eprintln!("bulk commit failed: {e}");
            std::process::exit(1);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "bulk {:<8} {} {users} users (+1 membership +1 event each) in change sets of 1000: {:>8.0} users/s ({secs:.2}s)",
        shape.name(),
        target.label(),
        users as f64 / secs
    );
}

fn main() {
    let secs: f64 = std::env::var("IDBRIDGE_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let backends: Vec<String> = std::env::var("IDBRIDGE_BENCH_BACKENDS")
        .unwrap_or_else(|_| "sqlite,postgres".to_owned())
        .split(',')
        .map(|b| b.trim().to_owned())
        .collect();
    if let Some(unknown) = backends.iter().find(|b| *b != "sqlite" && *b != "postgres") {
        eprintln!("IDBRIDGE_BENCH_BACKENDS: unknown backend {unknown:?} (known: sqlite, postgres)");
        std::process::exit(2);
    }
    let pg = backends
        .iter()
        .any(|b| b == "postgres")
        .then(|| idbridge_testkit::Postgres::start().unwrap());
    let mut targets = Vec::new();
    if backends.iter().any(|b| b == "sqlite") {
        targets.push(Target::SqliteDisk);
    }
    if let Some(pg) = &pg {
        targets.push(Target::Postgres(pg));
    }
    let mut shapes = Vec::new();
    for name in std::env::var("IDBRIDGE_BENCH_SHAPES")
        .unwrap_or_else(|_| "kv,user-kv,user-row".to_owned())
        .split(',')
        .map(str::trim)
    {
        match [Shape::Kv, Shape::UserKv, Shape::UserRow]
            .into_iter()
            .find(|s| s.name() == name)
        {
            Some(s) => shapes.push(s),
            None => {
                eprintln!(
                    "IDBRIDGE_BENCH_SHAPES: unknown shape {name:?} (known: kv, user-kv, user-row)"
                );
                std::process::exit(2);
            }
        }
    }
    let bulk_users: u64 = std::env::var("IDBRIDGE_BENCH_BULK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    // IDBRIDGE_BENCH_WRITERS: the writer counts of the disk runs (default 1,16,64).
    let writer_counts: Vec<usize> = std::env::var("IDBRIDGE_BENCH_WRITERS")
        .unwrap_or_else(|_| "1,16,64".to_owned())
        .split(',')
        .filter_map(|w| w.trim().parse().ok())
        .collect();
    println!(
        "idbridge-store commit benchmark ({}; durable before the ack; shapes: see the file's docs); {}",
        backends.join(", "),
        uptime()
    );
    for &shape in &shapes {
        for &target in &targets {
            for &writers in &writer_counts {
                run(shape, writers, secs, target);
            }
        }
    }
    // The same code on tmpfs (syncs are free): the store's own CPU ceiling, for comparison.
    println!("for comparison, on tmpfs (not durable; shows the cost of the store itself):");
    let tmpfs = std::env::var_os("IDBRIDGE_BENCH_NO_TMPFS").is_none()
        && backends.iter().any(|b| b == "sqlite");
    for &shape in shapes.iter().filter(|_| tmpfs) {
        for writers in [1, 64] {
            run(shape, writers, secs, Target::SqliteTmpfs);
        }
    }
    if bulk_users > 0 {
        for &shape in shapes.iter().filter(|s| **s != Shape::Kv) {
            for &target in &targets {
                bulk(shape, bulk_users, target);
            }
        }
    }
    println!("done; {}", uptime());
}
