//! CSV delivery benchmark: a 1,000,000-user `users.csv` with 1,000 groups and one membership
//! per user. Prints rows per second and memory (VmRSS at open and end, peak VmHWM) per phase,
//! each phase in its own child process so their peaks do not mix (the store persists on disk
//! between them, as a server's data directory does):
//!
//! * `validate`: the streaming first pass alone (every check; keeps only the user id set);
//! * `apply` = `initial,again,changed`: the whole delivery path into an on-disk SQLite store,
//!   opened as the server opens it (page cache `store_cache_mb` = 128, or env
//!   `STORE_CACHE_MB`): validate, then the engine streams the files through `CsvSnapshot`.
//!   `initial`: the initial load (every user, group and membership created, durable, with its
//!   events); `again`: the same delivery again (the daily re-delivery, nothing changed);
//!   `changed`: a delivery with 0.1% of the users' titles changed and 0.1% of the memberships
//!   moved to another group. Env `COMMIT_OPS` overrides the engine's commit limit.
//! * `stats` (only when `PHASES` names it; needs a store, e.g. `WORK_DIR` after `initial`):
//!   where an opened store's memory goes: RSS right after open and after a full export scan;
//!   entries and key/value bytes per table against the store file's size on disk.
//!   `STATS_OPEN_ONLY=1` stops after the open (for heaptrack).
//! * `ingest` (only when `PHASES` names it): validate + build an in-memory `Snapshot` (what
//!   the delivery path used before it streamed; kept for comparison).
//!
//! Rows = users.csv + groups.csv + user_groups.csv rows. The apply phases' rows/s cover
//! validate + apply (the store is already open, as in the server); the phase line's own
//! figure also counts opening the store. Env `IDBRIDGE_SNAPSHOT_PHASES=1` makes the engine
//! print its phase timings and VmRSS; `WORK_DIR=<dir>` keeps files and store there, so a
//! phase can be re-run (or profiled) alone against the store an earlier run left.
//! Allocator: mimalloc, as the server binary. Run:
//! `cargo bench -p idbridge-sftp --bench csv_ingest` (env `ROWS` to change the size,
//! `PHASES=validate,initial,again,changed,stats,ingest` to choose phases).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// The server binary's allocator (crates/server/src/main.rs): the figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use idbridge_directory::SnapshotPolicy;
use idbridge_sftp::feed::{ingest, validate_only, CsvSnapshot, DeliveryFiles, IngestOptions};

fn vm_hwm_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn generate(dir: &Path, rows: u64) -> std::io::Result<()> {
    let mut u = std::io::BufWriter::new(std::fs::File::create(dir.join("users.csv"))?);
    writeln!(
        u,
        "user_id,first_name,last_name,email,username,job_title,department_name,manager_id,employee_type,work_address_country"
    )?;
    for i in 0..rows {
        writeln!(
            u,
            "emp{i:07},First{i},Last{i},first.last{i}@example-corp.com,fl{i},Engineer {},Dept {},emp{:07},Full-Time,US",
            i % 50,
            i % 1000,
            i / 10
        )?;
    }
    u.flush()?;
    let mut g = std::io::BufWriter::new(std::fs::File::create(dir.join("groups.csv"))?);
    writeln!(g, "group_name,description")?;
    for i in 0..1000 {
        writeln!(g, "Group {i},The group number {i}")?;
    }
    g.flush()?;
    let mut m = std::io::BufWriter::new(std::fs::File::create(dir.join("user_groups.csv"))?);
    writeln!(m, "group_name,user_id")?;
    for i in 0..rows {
        writeln!(m, "Group {},emp{i:07}", i % 1000)?;
    }
    m.flush()
}

fn vm_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// `files` with 0.1% of the users changed: every 1000th user gets a new job title, and
/// another 0.1% moves to a different group (a realistic daily difference).
fn make_changed(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::io::BufRead;
    std::fs::create_dir_all(dst)?;
    std::fs::copy(src.join("groups.csv"), dst.join("groups.csv"))?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(dst.join("users.csv"))?);
    for (n, line) in std::io::BufReader::new(std::fs::File::open(src.join("users.csv"))?)
        .lines()
        .enumerate()
    {
        let line = line?;
        if n > 0 && n % 1000 == 1 {
            writeln!(out, "{}", line.replacen("Engineer ", "Senior Engineer ", 1))?;
        } else {
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(dst.join("user_groups.csv"))?);
    for (n, line) in std::io::BufReader::new(std::fs::File::open(src.join("user_groups.csv"))?)
        .lines()
        .enumerate()
    {
        let line = line?;
        if n > 0 && n % 1000 == 2 {
            writeln!(out, "{}", line.replacen("Group ", "Group 1", 1))?;
        } else {
            writeln!(out, "{line}")?;
        }
    }
    out.flush()
}

/// Opens the bench store as the server opens it (page cache `store_cache_mb` = 128, or env
/// `STORE_CACHE_MB`).
fn open_store(path: &Path) -> Result<std::sync::Arc<idbridge_store::SqliteStore>, String> {
    let cache_mb = std::env::var("STORE_CACHE_MB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(128);
    let options = idbridge_store::SqliteOptions {
        cache_mb,
        ..Default::default()
    };
    Ok(std::sync::Arc::new(
        idbridge_store::SqliteStore::open_with(path, options).map_err(|e| e.to_string())?,
    ))
}

/// One delivery of `files` into the store under `work` (created with an org and an sftp
/// directory when `initial`). Prints the run; returns the rows of the delivery.
fn apply(
    files: &DeliveryFiles,
    opts: &IngestOptions,
    work: &Path,
    run: &str,
    initial: bool,
) -> Result<(u64, String), String> {
    let store = open_store(&work.join("store"))?;
    let id_file = work.join("dir_id");
    // The organization only matters when the directory is created (the bench runs no SSO).
    let orgs = Arc::new(idbridge_directory::FixedOrganizations::default());
    let mut engine = idbridge_directory::DirectoryEngine::new(store.clone(), orgs.clone());
    if let Some(ops) = std::env::var("COMMIT_OPS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        engine = engine.with_commit_limit(ops);
    }
    let dir_id = if initial {
        let org = idbridge_model::new_id(idbridge_model::IdPrefix::Organization);
        let now = idbridge_model::Timestamp::now();
        let body = idbridge_model::Organization {
            object: idbridge_model::tag::OrganizationTag,
            id: org.clone(),
            name: "Bench".into(),
            domains: vec![],
            metadata: Default::default(),
            external_id: None,
            stripe_customer_id: None,
            allow_profiles_outside_organization: false,
            created_at: now,
            updated_at: now,
        };
        orgs.insert(body);
        let (rec, _) = engine
            .create_directory(&org, "bench", "sftp", Default::default())
            .map_err(|e| e.to_string())?;
        std::fs::write(&id_file, &rec.directory.id).map_err(|e| e.to_string())?;
        rec.directory.id
    } else {
        std::fs::read_to_string(&id_file).map_err(|e| e.to_string())?
    };
    let rss_open = vm_rss_mb();
    let start = Instant::now();
    let counts = validate_only(files, opts, &mut |_| {}).map_err(|e| e.to_string())?;
    let validated = start.elapsed().as_secs_f64();
    let rows = counts.users + counts.groups + counts.user_groups;
    let mut no_progress = |_: u64| {};
    let src = CsvSnapshot::new(files, opts, &mut no_progress);
    let out = engine
        .apply_snapshot_from(&dir_id, &src, SnapshotPolicy::default())
        .map_err(|e| e.to_string())?;
    let secs = start.elapsed().as_secs_f64();
    let line = format!(
        "{run}: {secs:.2} s (validate {validated:.2} s) = {:.0} rows/s ({:.0} users.csv rows/s), RSS at open {rss_open:.0} MB, at end {:.0} MB, peak {:.0} MB: {} users created, {} updated, {} memberships added, {} removed, {} events, {} commits",
        rows as f64 / secs,
        counts.users as f64 / secs,
        vm_rss_mb(),
        vm_hwm_mb(),
        out.created,
        out.updated,
        out.memberships_added,
        out.memberships_removed,
        out.events,
        out.commits
    );
    Ok((rows, line))
}

/// `stats`: where the memory of an opened store goes. RSS at open and after a full export
/// scan; entries and logical bytes per table against the store file's size on disk.
fn stats(work: &Path) -> Result<(u64, String), String> {
    let t = Instant::now();
    let store = open_store(&work.join("store"))?;
    println!(
        "opened in {:.2} s: RSS {:.0} MB",
        t.elapsed().as_secs_f64(),
        vm_rss_mb()
    );
    if std::env::var_os("STATS_OPEN_ONLY").is_some() {
        return Ok((0, "open only".into()));
    }
    // Entries and key/value bytes per table (events as one "events" table), from the export.
    let mut tables: std::collections::BTreeMap<String, (u64, u64, u64)> = Default::default();
    idbridge_store::Store::export(store.as_ref(), &mut |r| {
        let (name, key, value) = match r {
            idbridge_store::ExportRecord::Entry { table, key, value } => {
                (table, key.len(), value.len())
            }
            idbridge_store::ExportRecord::Expiring {
                table, key, value, ..
            } => (format!("{table} (expiring)"), key.len(), value.len()),
            idbridge_store::ExportRecord::Event(e) => {
                ("events".to_owned(), e.id.len(), e.body.len())
            }
            idbridge_store::ExportRecord::Row { table, values } => {
                let bytes = values.iter().map(|v| match v {
                    idbridge_store::RowValue::Text(s) => s.len(),
                    idbridge_store::RowValue::Blob(b) => b.len(),
                    _ => 8,
                });
                (format!("{table} (rows)"), 0, bytes.sum())
            }
            idbridge_store::ExportRecord::EventSeq { .. }
            | idbridge_store::ExportRecord::OwnerMigration { .. }
            | idbridge_store::ExportRecord::RowTable { .. } => return Ok(()),
        };
        let t = tables.entry(name).or_default();
        t.0 += 1;
        t.1 += key as u64;
        t.2 += value as u64;
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    for (name, (entries, keys, values)) in &tables {
        println!(
            "  {:<32} {:>9} entries, keys {:>7.1} MB, values {:>8.1} MB",
            name,
            entries,
            *keys as f64 / 1e6,
            *values as f64 / 1e6
        );
    }
    println!("  after the scan: RSS {:.0} MB", vm_rss_mb());
    let on_disk = std::fs::metadata(work.join("store").join(idbridge_store::SQLITE_FILE_NAME))
        .map(|m| m.len())
        .unwrap_or(0);
    let entries: u64 = tables.values().map(|t| t.0).sum();
    let bytes: u64 = tables.values().map(|t| t.1 + t.2).sum();
    Ok((
        entries,
        format!(
            "{entries} entries, {:.0} MB logical, {:.0} MB on disk",
            bytes as f64 / 1e6,
            on_disk as f64 / 1e6
        ),
    ))
}

fn child(phase: &str, work: &Path) {
    let dir = &if phase == "changed" {
        work.join("changed")
    } else {
        work.join("files")
    };
    let Some(files) = DeliveryFiles::in_dir(dir) else {
        eprintln!("no users.csv in {}", dir.display());
        std::process::exit(2);
    };
    let opts = IngestOptions::default();
    let bytes = files.total_bytes();
    let start = Instant::now();
    let (rows, extra) = match phase {
        "validate" => match validate_only(&files, &opts, &mut |_| {}) {
            Ok(r) => (
                r.users + r.groups + r.user_groups,
                format!("users {}", r.users),
            ),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        },
        "stats" => match stats(work) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        },
        "initial" | "again" | "changed" => match apply(
            &files,
            &opts,
            work,
            match phase {
                "initial" => "initial load",
                "again" => "same delivery again",
                _ => "0.1% changed",
            },
            phase == "initial",
        ) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        },
        _ => match ingest(&files, &opts, &mut |_| {}) {
            Ok(i) => (
                i.rows.users + i.rows.groups + i.rows.user_groups,
                format!(
                    "snapshot: {} users, {} groups, {} memberships",
                    i.snapshot.users.len(),
                    i.snapshot.groups.len(),
                    i.snapshot.memberships.len()
                ),
            ),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        },
    };
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{phase:>8}: {rows} rows ({:.0} MB) in {secs:.2} s = {:.0} rows/s ({:.0} users.csv rows/s); peak RSS (VmHWM) {:.0} MB; {extra}",
        bytes as f64 / 1e6,
        rows as f64 / secs,
        rows as f64 / 2.0 / secs,
        vm_hwm_mb()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let (Some(phase), Some(dir)) = (
        args.iter()
            .position(|a| a == "--phase")
            .and_then(|i| args.get(i + 1)),
        args.iter()
            .position(|a| a == "--dir")
            .and_then(|i| args.get(i + 1)),
    ) {
        child(phase, Path::new(dir));
        return;
    }
    let rows: u64 = std::env::var("ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // On disk (the target dir), like a real data directory: not a tmpfs /tmp. `WORK_DIR`
    // reuses a work dir (files and store) from an earlier run, to profile one phase alone.
    let base = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let _ = std::fs::create_dir_all(&base);
    let tmp = match tempfile::tempdir_in(&base) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tempdir: {e}");
            std::process::exit(1);
        }
    };
    let work = std::env::var("WORK_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| tmp.path().to_path_buf());
    let files = work.join("files");
    if !files.join("users.csv").exists() {
        let t = Instant::now();
        if let Err(e) = std::fs::create_dir_all(&files).and_then(|_| generate(&files, rows)) {
            eprintln!("generating: {e}");
            std::process::exit(1);
        }
        println!(
            "generated {rows} users + 1000 groups + {rows} memberships in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("current_exe: {e}");
            std::process::exit(1);
        }
    };
    let phases = std::env::var("PHASES").unwrap_or_else(|_| "validate,apply".into());
    let phases = phases.replace("apply", "initial,again,changed");
    if phases.contains("changed") {
        if let Err(e) = make_changed(&files, &work.join("changed")) {
            eprintln!("making the changed delivery: {e}");
            std::process::exit(1);
        }
    }
    for phase in phases.split(',') {
        let status = Command::new(&exe)
            .args(["--phase", phase, "--dir"])
            .arg(&work)
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("phase {phase} failed: {status:?}");
            std::process::exit(1);
        }
    }
}
