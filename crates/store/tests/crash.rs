//! Crash tests (own `main`, `harness = false`).
//!
//! The binary plays two roles. Run by cargo it is the parent: it re-executes itself with
//! `IDBRIDGE_STORE_CRASH_DIR` set, and that child commits from several threads and prints
//! `ACK <key> <seq>` (or `CODE <key>`) on stdout once each write returned.
//!
//! Each test runs on every backend it applies to (`..._sqlite`, `..._postgres`; the child
//! learns which from `IDBRIDGE_STORE_CRASH_BACKEND`, and PostgreSQL's connection string from
//! `IDBRIDGE_STORE_CRASH_PG_URL`). PostgreSQL runs on testkit's private server with fsync on.
//!
//! * `kill9_loses_no_acknowledged_write`: ≥ 20 rounds of SIGKILL at a random 50–400 ms, then
//!   reopen: every acknowledged record is there and the event log is 1..=last with no gaps,
//!   one event per user row (atomicity).
//! * `postgres_server_kill9_loses_no_acknowledged_write` (PostgreSQL only): the writer child
//!   commits to a private server while the SERVER is killed with SIGKILL and restarted (crash
//!   recovery from its WAL), several rounds: every acknowledged write survives, the log stays
//!   gap-free and atomic.
//! * `strace_sees_fdatasync_before_every_ack`: a single-threaded child under
//!   `strace -f -e trace=fdatasync,fsync,write`: at least one completed sync of the durable
//!   file (SQLite: the WAL, by a group-commit leader) between any two
//!   acknowledgements (commits and expiring-table writes). Needs `strace`
//!   (scripts/test-deps.d/idbridge-store.sh); fails if it is missing unless
//!   IDBRIDGE_SKIP_PEERS=1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idbridge_store::rows::PRIMARY;
use idbridge_store::{
    ChangeSet, Column, IndexDef, NewEvent, OwnerMigration, OwnerSchema, PgOptions, PgStore,
    SqliteStore, Store, TableDef,
};
use idbridge_testkit::Postgres;

/// Each commit also writes one typed row (with a unique index): rows are as durable as
/// key-value entries and events.
static ROWS: TableDef = TableDef {
    name: "crash_users",
    columns: &[
        Column::text("id"),
        Column::text("email"),
        Column::integer("version"),
    ],
    primary_key: &["id"],
    indexes: &[IndexDef {
        name: "crash_users_by_email",
        terms: &["email"],
        unique: true,
        partial: None,
    }],
    version_column: Some("version"),
    without_rowid: false,
};

static ROWS_SCHEMA: OwnerSchema = OwnerSchema {
    owner: "tests.crash",
    migrations: &[OwnerMigration {
        version: 1,
        description: "crash_users",
        create: &[&ROWS],
        sql: "",
    }],
};
use rand::Rng;

const CHILD_DIR: &str = "IDBRIDGE_STORE_CRASH_DIR";
const CHILD_ROUND: &str = "IDBRIDGE_STORE_CRASH_ROUND";
const CHILD_THREADS: &str = "IDBRIDGE_STORE_CRASH_THREADS";
const CHILD_COMMITS: &str = "IDBRIDGE_STORE_CRASH_COMMITS";
const CHILD_BACKEND: &str = "IDBRIDGE_STORE_CRASH_BACKEND";
const CHILD_PG_URL: &str = "IDBRIDGE_STORE_CRASH_PG_URL";

/// The backends under test.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    fn from_env() -> Result<Self, String> {
        match std::env::var(CHILD_BACKEND).as_deref() {
            Ok("sqlite") => Ok(Backend::Sqlite),
            Ok("postgres") => Ok(Backend::Postgres),
            other => Err(format!("{CHILD_BACKEND} is {other:?}")),
        }
    }

    fn open(self, dir: &Path) -> Result<Arc<dyn Store>, String> {
        Ok(match self {
            Backend::Sqlite => {
                let store = SqliteStore::open(dir).map_err(|e| e.to_string())?;
                store
                    .migrate_owner(&ROWS_SCHEMA)
                    .map_err(|e| e.to_string())?;
                Arc::new(store)
            }
            Backend::Postgres => {
                let url = match std::env::var(CHILD_PG_URL) {
                    Ok(url) => url,
                    Err(_) => self.url(dir)?.ok_or("no url")?,
                };
                let store = PgStore::open(&url, PgOptions::default()).map_err(|e| e.to_string())?;
                store
                    .migrate_owner(&ROWS_SCHEMA)
                    .map_err(|e| e.to_string())?;
                Arc::new(store)
            }
        })
    }

    /// PostgreSQL: the database of `dir` on the shared server (None for SQLite).
    fn url(self, dir: &Path) -> Result<Option<String>, String> {
        match self {
            Backend::Sqlite => Ok(None),
            Backend::Postgres => {
                let pg = Postgres::shared().map_err(|e| e.to_string())?;
                pg.database_for(dir).map(Some).map_err(|e| e.to_string())
            }
        }
    }
}

type TestResult = Result<(), String>;
type NamedTest = (&'static str, fn() -> TestResult);

fn main() -> ExitCode {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        return match child(Path::new(&dir)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("crash writer: {e}");
                ExitCode::from(2)
            }
        };
    }
    // Honour a name filter like libtest does (`cargo test --test crash -- kill9`).
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let tests: [NamedTest; 4] = [
        ("kill9_loses_no_acknowledged_write_sqlite", || {
            kill9_loses_no_acknowledged_write(Backend::Sqlite)
        }),
        ("kill9_loses_no_acknowledged_write_postgres", || {
            kill9_loses_no_acknowledged_write(Backend::Postgres)
        }),
        (
            "postgres_server_kill9_loses_no_acknowledged_write",
            postgres_server_kill9_loses_no_acknowledged_write,
        ),
        ("strace_sees_fdatasync_before_every_ack_sqlite", || {
            strace_sees_fdatasync_before_every_ack(Backend::Sqlite)
        }),
    ];
    if std::env::args().any(|a| a == "--list") {
        for (name, _) in &tests {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let mut failed = 0;
    let mut ran = 0;
    for (name, test) in tests {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        ran += 1;
        let started = Instant::now();
        match test() {
            Ok(()) => println!("test {name} ... ok ({:.1?})", started.elapsed()),
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED\n  {e}");
            }
        }
    }
    println!(
        "\ntest result: {}. {} passed; {failed} failed",
        if failed == 0 { "ok" } else { "FAILED" },
        ran - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn email_of(key: &str) -> String {
    format!("{key}@example.test")
}

fn event_id_of(key: &str) -> String {
    format!("event_{key}")
}

/// The writer. Each commit: a ~600-byte user, its email index entry, one event.
fn child(dir: &Path) -> Result<(), String> {
    let backend = Backend::from_env()?;
    let store = backend.open(dir)?;
    if backend == Backend::Sqlite {
        ack(&format!(
            "WRITER_TID {}\nCHECKPOINT_TID {}\n",
            thread_id_named("sqlite-writer")?,
            thread_id_named("sqlite-checkpoint")?
        ))?;
    }
    let round = env_num(CHILD_ROUND, 0);
    let threads = env_num(CHILD_THREADS, 4);
    let limit = std::env::var(CHILD_COMMITS)
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || -> Result<(), String> {
                let mut n = 0u64;
                while limit.is_none_or(|l| n < l) {
                    let key = format!("r{round}-t{t}-{n}");
                    let user = serde_json::json!({
                        "id": key,
                        "email": email_of(&key),
                        "pad": "x".repeat(520),
                    });
                    let mut cs = ChangeSet::new();
                    cs.put_json("users", key.clone(), &user)
                        .map_err(|e| e.to_string())?
                        .put("users_by_email", email_of(&key), key.clone().into_bytes())
                        .insert_row(
                            &ROWS,
                            vec![key.as_str().into(), email_of(&key).into(), 0i64.into()],
                        )
                        .event(NewEvent {
                            id: event_id_of(&key),
                            kind: "dsync.user.created".into(),
                            organization_id: Some("org_crash".into()),
                            created_at_ms: 0,
                            body: serde_json::to_vec(&serde_json::json!({"user": key}))
                                .map_err(|e| e.to_string())?,
                        });
                    let receipt = store.commit(cs).map_err(|e| e.to_string())?;
                    let seq = receipt.event_seqs.first().copied().ok_or("no seq")?;
                    ack(&format!("ACK {key} {seq}\n"))?;
                    if n % 5 == 0 {
                        store
                            .put_expiring("codes", &key, b"code".to_vec(), i64::MAX)
                            .map_err(|e| e.to_string())?;
                        ack(&format!("CODE {key}\n"))?;
                    }
                    n += 1;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| "writer thread panicked".to_owned())??;
    }
    let stats = store.stats();
    ack(&format!(
        "STATS commits={} fdatasyncs={}\n",
        stats.commits, stats.fdatasyncs
    ))
}

/// The kernel id of this process's thread called `name` (from /proc), for strace.
/// A new thread names itself once it runs, so look for a little while. The kernel keeps 15
/// bytes of a thread's name.
fn thread_id_named(name: &str) -> Result<u64, String> {
    let comm_name = &name[..name.len().min(15)];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tasks = std::fs::read_dir("/proc/self/task").map_err(|e| e.to_string())?;
        for task in tasks {
            let task = task.map_err(|e| e.to_string())?;
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end() == comm_name {
                return task
                    .file_name()
                    .to_string_lossy()
                    .parse()
                    .map_err(|e| format!("task id: {e}"));
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("no thread named {name}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One line, one write(2), flushed: the line exists only once the write it reports returned.
fn ack(line: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())
}

fn work_dir() -> Result<tempfile::TempDir, String> {
    // On the real disk under target/, not a tmpfs: fdatasync must mean something.
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).map_err(|e| e.to_string())
}

fn exe() -> Result<PathBuf, String> {
    std::env::current_exe().map_err(|e| e.to_string())
}

#[derive(Debug)]
enum Ack {
    Commit { key: String, seq: u64 },
    Code { key: String },
}

/// Complete lines only: a line cut by the kill was never fully reported.
fn parse_acks(out: &str) -> Result<Vec<Ack>, String> {
    let mut acks = Vec::new();
    for line in out.split_inclusive('\n') {
        let Some(line) = line.strip_suffix('\n') else {
            continue;
        };
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["ACK", key, seq] => acks.push(Ack::Commit {
                key: (*key).to_owned(),
                seq: seq.parse().map_err(|_| format!("bad ack line {line:?}"))?,
            }),
            ["CODE", key] => acks.push(Ack::Code {
                key: (*key).to_owned(),
            }),
            _ => {}
        }
    }
    Ok(acks)
}

/// Reopens the store and checks every acknowledged write and the shape of the log.
fn verify(backend: Backend, dir: &Path, acks: &[Ack]) -> TestResult {
    let s = backend
        .open(dir)
        .map_err(|e| format!("reopen failed: {e}"))?;
    verify_store(&*s, acks)
}

/// Checks every acknowledged write and the shape of the log in `s`.
fn verify_store(s: &dyn Store, acks: &[Ack]) -> TestResult {
    let err = |e: idbridge_store::StoreError| e.to_string();
    for ack in acks {
        match ack {
            Ack::Commit { key, seq } => {
                let user = s.get("users", key).map_err(err)?;
                let user = user.ok_or_else(|| format!("acknowledged user {key} lost"))?;
                let user: serde_json::Value =
                    serde_json::from_slice(&user).map_err(|e| format!("user {key}: {e}"))?;
                if user["id"] != key.as_str() {
                    return Err(format!("user {key} has wrong content"));
                }
                let index = s.get("users_by_email", &email_of(key)).map_err(err)?;
                if index.as_deref() != Some(key.as_bytes()) {
                    return Err(format!("index entry of {key} lost"));
                }
                let row = s
                    .find_unique(&ROWS, "crash_users_by_email", &[email_of(key).into()])
                    .map_err(err)?;
                if row
                    .and_then(|r| r.values[0].as_text().map(str::to_owned))
                    .as_deref()
                    != Some(key.as_str())
                {
                    return Err(format!("typed row of {key} lost"));
                }
                let stored_seq = s.event_seq(&event_id_of(key)).map_err(err)?;
                if stored_seq != Some(*seq) {
                    return Err(format!(
                        "event of {key}: seq {stored_seq:?}, acknowledged {seq}"
                    ));
                }
            }
            Ack::Code { key } => {
                if s.get_expiring("codes", key, 0).map_err(err)?.is_none() {
                    return Err(format!("acknowledged code {key} lost"));
                }
            }
        }
    }
    let last = s.last_event_seq().map_err(err)?;
    let events = s.events_after(0, usize::MAX).map_err(err)?;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    if seqs != (1..=last).collect::<Vec<_>>() {
        let gap = seqs.windows(2).find(|w| w[1] != w[0] + 1);
        return Err(format!(
            "event log not contiguous 1..={last}: {} events, first gap {gap:?}",
            seqs.len()
        ));
    }
    // All-or-nothing: one user row and one index row per event, and each event's user exists.
    let users = s.count_prefix("users", "").map_err(err)?;
    let index = s.count_prefix("users_by_email", "").map_err(err)?;
    let rows = s.count_index(&ROWS, PRIMARY, &[]).map_err(err)?;
    if users != last || index != last || rows != last {
        return Err(format!(
            "{users} users, {index} index rows, {rows} typed rows, {last} events"
        ));
    }
    for e in &events {
        let key = e.id.strip_prefix("event_").ok_or("bad event id")?;
        if s.get("users", key).map_err(err)?.is_none() {
            return Err(format!("event {} without its user", e.id));
        }
    }
    Ok(())
}

fn kill9_loses_no_acknowledged_write(backend: Backend) -> TestResult {
    let work = work_dir()?;
    let dir = work.path().join("store");
    let rounds = env_num("IDBRIDGE_CRASH_ROUNDS", 24).max(20);
    let exe = exe()?;
    let mut rng = rand::thread_rng();
    let mut acked: Vec<Ack> = Vec::new();
    let mut rounds_with_acks = 0;
    let pg_url = backend.url(&dir)?;
    for round in 0..rounds {
        let mut cmd = Command::new(&exe);
        if let Some(url) = &pg_url {
            cmd.env(CHILD_PG_URL, url);
        }
        let mut child = cmd
            .env(CHILD_DIR, &dir)
            .env(CHILD_BACKEND, backend.name())
            .env(CHILD_ROUND, round.to_string())
            .env(CHILD_THREADS, "4")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        let mut stdout = child.stdout.take().ok_or("no stdout")?;
        let reader = std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = stdout.read_to_string(&mut buf);
            buf
        });
        let delay = Duration::from_millis(rng.gen_range(50..=400));
        std::thread::sleep(delay);
        let early_exit = child.try_wait().map_err(|e| e.to_string())?;
        if let Some(status) = early_exit {
            return Err(format!("round {round}: writer exited on its own: {status}"));
        }
        child.kill().map_err(|e| format!("kill: {e}"))?; // SIGKILL
        child.wait().map_err(|e| e.to_string())?;
        let out = reader.join().map_err(|_| "reader panicked")?;
        let new = parse_acks(&out)?;
        if !new.is_empty() {
            rounds_with_acks += 1;
        }
        acked.extend(new);
        verify(backend, &dir, &acked)
            .map_err(|e| format!("round {round} (killed after {delay:?}): {e}"))?;
    }
    let commits = acked
        .iter()
        .filter(|a| matches!(a, Ack::Commit { .. }))
        .count();
    println!(
        "  {rounds} rounds, {commits} acknowledged commits + {} codes, all present",
        acked.len() - commits
    );
    // The test must be able to fail: a writer that never got going would "pass" vacuously.
    if commits < 100 || rounds_with_acks < rounds / 2 {
        return Err(format!(
            "writer made too little progress: {commits} commits, {rounds_with_acks}/{rounds} rounds"
        ));
    }
    Ok(())
}

/// Kills the PostgreSQL SERVER (SIGKILL) under a writer child, restarts it, checks every
/// acknowledged write; the writer sees its connection fail and exits.
fn postgres_server_kill9_loses_no_acknowledged_write() -> TestResult {
    let mut pg = Postgres::start().map_err(|e| e.to_string())?;
    let url = pg.database("crash").map_err(|e| e.to_string())?;
    let work = work_dir()?;
    let dir = work.path().join("unused");
    let rounds = env_num("IDBRIDGE_PG_CRASH_ROUNDS", 4);
    let exe = exe()?;
    let mut rng = rand::thread_rng();
    let mut acked: Vec<Ack> = Vec::new();
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .env(CHILD_DIR, &dir)
            .env(CHILD_BACKEND, "postgres")
            .env(CHILD_PG_URL, &url)
            .env(CHILD_ROUND, round.to_string())
            .env(CHILD_THREADS, "4")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        let mut stdout = child.stdout.take().ok_or("no stdout")?;
        let reader = std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = stdout.read_to_string(&mut buf);
            buf
        });
        let delay = Duration::from_millis(rng.gen_range(300..=900));
        std::thread::sleep(delay);
        pg.kill9();
        // The writer's commits now fail; it exits (or is killed if it hangs).
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().map_err(|e| e.to_string())?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = reader.join().map_err(|_| "reader panicked")?;
        let new = parse_acks(&out)?;
        if new.is_empty() {
            return Err(format!("round {round}: the writer acknowledged nothing"));
        }
        acked.extend(new);
        pg.restart()
            .map_err(|e| format!("round {round}: restart: {e}"))?;
        let store = PgStore::open(&url, PgOptions::default())
            .map_err(|e| format!("round {round}: reopen after the restart: {e}"))?;
        verify_store(&store, &acked)
            .map_err(|e| format!("round {round} (server killed after {delay:?}): {e}"))?;
    }
    let commits = acked
        .iter()
        .filter(|a| matches!(a, Ack::Commit { .. }))
        .count();
    println!("  {rounds} server kills, {commits} acknowledged commits, all present");
    Ok(())
}

/// A `write(1, ...)` line (with `-y`, `write(1<pipe:[...]>, ...)`).
fn is_stdout_write(line: &str) -> bool {
    line.contains("write(1, ") || line.contains("write(1<")
}

fn strace_sees_fdatasync_before_every_ack(backend: Backend) -> TestResult {
    let have_strace = Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_strace {
        if std::env::var("IDBRIDGE_SKIP_PEERS").as_deref() == Ok("1") {
            println!("  skipped: strace missing and IDBRIDGE_SKIP_PEERS=1");
            return Ok(());
        }
        return Err(
            "strace is not installed: run scripts/test-deps.sh (or apt-get install -y strace), \
             or set IDBRIDGE_SKIP_PEERS=1 to skip"
                .to_owned(),
        );
    }
    let work = work_dir()?;
    let trace = work.path().join("strace.out");
    let commits = 150u64;
    let out = Command::new("strace")
        .arg("-f")
        .arg("-qq")
        // -y: file descriptors shown with their paths (which file each sync made durable).
        .arg("-y")
        .args(["-e", "trace=fdatasync,fsync,write", "-e", "signal=none"])
        .arg("-o")
        .arg(&trace)
        .arg(exe()?)
        .env(CHILD_DIR, work.path().join("store"))
        .env(CHILD_BACKEND, backend.name())
        .env(CHILD_THREADS, "1")
        .env(CHILD_COMMITS, commits.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running strace: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "writer under strace failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stats_fdatasyncs: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("STATS "))
        .and_then(|l| l.split(' ').find_map(|kv| kv.strip_prefix("fdatasyncs=")))
        .and_then(|v| v.parse().ok())
        .ok_or("writer printed no STATS line")?;
    let text = std::fs::read_to_string(&trace).map_err(|e| e.to_string())?;
    // Which syncs count: SQLite's fdatasync of the WAL by a group-commit leader (a caller's
    // thread). Not the writer thread's (under synchronous=NORMAL SQLite syncs only the
    // WAL header when the WAL restarts, before the frames of the commit are written) nor the
    // checkpointer's (it syncs the WAL before copying it): neither makes an ack durable.
    let tid_of = |name: &str| -> Option<String> {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|t| t.trim().to_owned())
    };
    let writer_tid = tid_of("WRITER_TID ");
    let checkpoint_tid = tid_of("CHECKPOINT_TID ");
    if backend == Backend::Sqlite && (writer_tid.is_none() || checkpoint_tid.is_none()) {
        return Err("the SQLite child printed no WRITER_TID / CHECKPOINT_TID line".to_owned());
    }
    let counts = |line: &str| -> bool {
        match backend {
            Backend::Sqlite => {
                let tid = line.split_whitespace().next();
                (line.contains("fdatasync(") || line.contains("fsync("))
                    && line.contains("-wal>")
                    && tid != writer_tid.as_deref()
                    && tid != checkpoint_tid.as_deref()
            }
            // The server syncs its WAL, not this process: nothing to see here.
            Backend::Postgres => false,
        }
    };
    // A sync split by another thread's line resumes as `<... fdatasync resumed>`: pair it
    // with its start line by thread id.
    let mut started: std::collections::HashMap<String, bool> = Default::default();

    // Walk the trace: every ACK write needs a completed sync since the previous ACK.
    let mut syncs = 0u64;
    let mut since_last_ack = 0u64;
    let mut acks = 0u64;
    let mut ack_keys = BTreeSet::new();
    for line in text.lines() {
        let tid = line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        let resumed =
            line.contains("<... fdatasync resumed>") || line.contains("<... fsync resumed>");
        let completed_sync = if resumed {
            started.remove(&tid).unwrap_or(false)
        } else if line.contains("<unfinished") {
            started.insert(tid, counts(line));
            false
        } else {
            counts(line)
        };
        if completed_sync {
            if !line.trim_end().ends_with("= 0") {
                return Err(format!("fdatasync failed: {line}"));
            }
            syncs += 1;
            since_last_ack += 1;
        } else if is_stdout_write(line) && line.contains("\"CODE ") {
            if since_last_ack == 0 {
                return Err(format!(
                    "CODE written with no fdatasync since the previous ack: {line}"
                ));
            }
            since_last_ack = 0;
        } else if let Some(rest) = line
            .split("\"ACK ")
            .nth(1)
            .filter(|_| is_stdout_write(line))
        {
            if since_last_ack == 0 {
                return Err(format!(
                    "ACK written with no fdatasync since the previous ack: {line}"
                ));
            }
            since_last_ack = 0;
            acks += 1;
            ack_keys.insert(rest.split(' ').next().unwrap_or_default().to_owned());
        }
    }
    println!(
        "  {acks} acks, {syncs} fdatasync calls under strace, store counted {stats_fdatasyncs}"
    );
    if acks != commits || ack_keys.len() as u64 != commits {
        return Err(format!(
            "expected {commits} ACK writes in the trace, saw {acks}"
        ));
    }
    // Every commit and every code write needs its own sync when there is one writer, plus the
    // one at open; the store's own counter must agree with the kernel's view (SQLite's own
    // syncs while it creates and migrates a new file at open run on the opening thread).
    let codes = commits.div_ceil(5);
    let agrees = match backend {
        Backend::Sqlite => syncs >= stats_fdatasyncs && stats_fdatasyncs >= commits + codes,
        Backend::Postgres => false,
    };
    if syncs < commits + codes || !agrees {
        return Err(format!(
            "fdatasync count {syncs} (store says {stats_fdatasyncs}) for {commits} commits + {codes} codes"
        ));
    }
    Ok(())
}
