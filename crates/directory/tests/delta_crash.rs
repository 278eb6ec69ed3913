//! Crash test of LDAP-style deltas (own `main`, `harness = false`, built like
//! crates/sso/tests/login_crash.rs).
//!
//! Run by cargo the binary is the parent: it re-executes itself with `IDBRIDGE_DELTA_CRASH_DIR`
//! set, and that child applies deltas to one directory on a durable SQLite store, each with the
//! cursor that covers it (`apply_delta_with`): delta `i` creates user `u{i}`, makes it the only
//! member of group `g`, and sets the cursor to `i`; it prints `APPLIED i` once the call
//! returned. The parent SIGKILLs it at a random moment, reopens the store and checks that the
//! state is exactly what the stored cursor says: users `u0..=u{cursor}` and no more, `g` holding
//! `u{cursor}` alone, one `dsync.user.created` per user — never the cursor past unapplied
//! changes, never applied changes behind the cursor — and that every acknowledged delta is
//! covered by the cursor.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{group, organization, user};
use idbridge_directory::{DeltaChange, DirectoryEngine, DirectorySettings, FixedOrganizations};
use idbridge_store::{SqliteStore, Store};

const CHILD_DIR: &str = "IDBRIDGE_DELTA_CRASH_DIR";
const CURSOR_TABLE: &str = "test.delta_cursor";
const ROUNDS: u32 = 10;
const TEST: &str = "kill9_mid_delta_leaves_changes_and_cursor_together";

fn main() -> ExitCode {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        return match child(Path::new(&dir)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("delta crash child: {e}");
                ExitCode::from(2)
            }
        };
    }
    if std::env::args().any(|a| a == "--list") {
        println!("{TEST}: test");
        return ExitCode::SUCCESS;
    }
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.as_deref().is_some_and(|f| !TEST.contains(f)) {
        println!("\ntest result: ok. 0 passed; 0 failed");
        return ExitCode::SUCCESS;
    }
    let started = Instant::now();
    match run() {
        Ok(()) => {
            println!("test {TEST} ... ok ({:.1?})", started.elapsed());
            println!("\ntest result: ok. 1 passed; 0 failed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("test {TEST} ... FAILED\n  {e}");
            println!("\ntest result: FAILED. 0 passed; 1 failed");
            ExitCode::FAILURE
        }
    }
}

fn engine(store: Arc<dyn Store>) -> DirectoryEngine {
    DirectoryEngine::new(store, Arc::new(FixedOrganizations::new([organization()])))
}

/// The child: one directory, then deltas forever.
fn child(dir: &Path) -> Result<(), String> {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir).map_err(|e| e.to_string())?);
    let org = organization();
    let engine = DirectoryEngine::new(
        store.clone(),
        Arc::new(FixedOrganizations::new([org.clone()])),
    );
    let (rec, _) = engine
        .create_directory(&org.id, "Corp LDAP", "ldap", DirectorySettings::default())
        .map_err(|e| e.to_string())?;
    let dir_id = rec.directory.id;
    println!("READY {dir_id}");
    for i in 0u64.. {
        let changes = vec![
            DeltaChange::UpsertUser(user(&format!("u{i}"), &format!("u{i}@foo-corp.com"), "U")),
            DeltaChange::UpsertGroup(group("g", "G")),
            DeltaChange::SetMembers {
                group_idp_id: "g".into(),
                user_idp_ids: vec![format!("u{i}")],
            },
        ];
        engine
            .apply_delta_with(&dir_id, changes, |cs| {
                cs.put(CURSOR_TABLE, dir_id.clone(), i.to_string().into_bytes());
                Ok(())
            })
            .map_err(|e| e.to_string())?;
        println!("APPLIED {i}");
    }
    Ok(())
}

/// A pseudo-random delay in `[lo, hi)` ms.
fn jitter(lo: u64, hi: u64) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    Duration::from_millis(lo + nanos % (hi - lo))
}

fn run() -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut total = 0u64;
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut child = Command::new(&exe)
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("read: {e}"))?;
        let Some(dir_id) = line.trim().strip_prefix("READY ").map(str::to_owned) else {
            let _ = child.kill();
            return Err(format!("round {round}: child did not start: {line:?}"));
        };
        let delay = jitter(20, 400);
        std::thread::sleep(delay);
        child.kill().map_err(|e| format!("kill: {e}"))?; // SIGKILL
        let mut out = String::new();
        reader
            .read_to_string(&mut out)
            .map_err(|e| format!("read: {e}"))?;
        let status = child.wait().map_err(|e| format!("wait: {e}"))?;
        if status.success() {
            return Err(format!("round {round}: the child exited by itself"));
        }
        let complete = match out.rfind('\n') {
            Some(end) => &out[..end],
            None => "",
        };
        let acked = complete
            .lines()
            .filter_map(|l| l.strip_prefix("APPLIED ")?.parse::<u64>().ok())
            .max();
        let applied = verify(dir.path(), &dir_id, acked)
            .map_err(|e| format!("round {round} (killed after {delay:?}): {e}"))?;
        total += applied;
    }
    if total == 0 {
        return Err("no delta finished in any round: the kills came too early".into());
    }
    println!("{ROUNDS} rounds, {total} deltas committed before the kills");
    Ok(())
}

/// Reopens the store and checks the state against the stored cursor; returns the number of
/// deltas the cursor covers.
fn verify(dir: &Path, dir_id: &str, acked: Option<u64>) -> Result<u64, String> {
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(dir).map_err(|e| format!("reopen: {e}"))?);
    let cursor: Option<u64> = store
        .get(CURSOR_TABLE, dir_id)
        .map_err(|e| e.to_string())?
        .map(|b| String::from_utf8_lossy(&b).parse::<u64>())
        .transpose()
        .map_err(|e| format!("cursor: {e}"))?;
    if acked > cursor {
        return Err(format!(
            "delta {acked:?} was acknowledged but the cursor is {cursor:?}"
        ));
    }
    let engine = engine(store.clone());
    let n = cursor.map_or(0, |c| c + 1);
    let mut ids = engine.user_idp_ids(dir_id).map_err(|e| e.to_string())?;
    ids.sort();
    let mut want: Vec<String> = (0..n).map(|i| format!("u{i}")).collect();
    want.sort();
    if ids != want {
        return Err(format!(
            "cursor {cursor:?} but the directory holds {} users (want {n}): changes and cursor were committed apart",
            ids.len()
        ));
    }
    let members = match engine
        .find_group_by_idp_id(dir_id, "g")
        .map_err(|e| e.to_string())?
    {
        Some(g) => engine
            .group_members(&g.group.id)
            .map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    if let Some(c) = cursor {
        let last = engine
            .find_user_by_idp_id(dir_id, &format!("u{c}"))
            .map_err(|e| e.to_string())?
            .ok_or("the cursor's user is missing")?;
        if members != [last.user.id] {
            return Err(format!("g has {} members, want u{c} alone", members.len()));
        }
    } else if !members.is_empty() {
        return Err("members without a cursor".into());
    }
    let created = store
        .events_after(0, usize::MAX)
        .map_err(|e| e.to_string())?
        .iter()
        .filter(|e| e.kind == "dsync.user.created")
        .count() as u64;
    if created != n {
        return Err(format!("{created} user.created events for {n} users"));
    }
    Ok(n)
}
