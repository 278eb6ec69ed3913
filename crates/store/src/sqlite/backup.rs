//! Online backup: a consistent copy of a live store file, taken without stopping its writer.
//!
//! SQLite's backup API copies every page of the source in ONE step, inside one read
//! transaction: the copy is the committed state at one instant (every change set whole, the
//! event log contiguous), and in WAL mode that read blocks no writer (it only keeps the
//! checkpointer from recycling the WAL until it ends). The copy is written to `<dest>.partial`,
//! checked (`PRAGMA quick_check`), fsynced and renamed into place, so `dest` is either a whole
//! checked backup or absent. Finally the source's `-wal` is fdatasynced: whatever the snapshot
//! holds is then durable in the live store too, so a backup never holds a write that a crash
//! of the live store could still lose.
//!
//! Works from another process too (`idbridge backup` while the server runs): it needs only
//! the database file, never the store's writer.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::schema;
use crate::error::{Result, StoreError};

/// What an online backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// The backup file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// The highest event seq the copy holds (the log in it is contiguous up to there).
    pub last_event_seq: u64,
    /// How long the copy took.
    pub elapsed: Duration,
}

/// How long to retry while the source is locked (a writer holding it exclusively at open).
const BUSY_RETRY: Duration = Duration::from_secs(30);

fn err(context: &str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::backend(context, e)
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |e| StoreError::backend(&context, e)
}

/// Copies the SQLite store file `source` (live or not) into the new file `dest`.
///
/// Refuses to overwrite `dest`. The directory of `dest` must exist.
pub fn backup_sqlite_file(source: &Path, dest: &Path) -> Result<BackupSummary> {
    let _span =
        tracing::info_span!("store.backup", source = %source.display(), dest = %dest.display())
            .entered();
    let started = Instant::now();
    if !source.is_file() {
        return Err(StoreError::Backend(format!(
            "no store at {}: check the data directory (a sled store must be migrated first: \
             `idbridge migrate`)",
            source.display()
        )));
    }
    if dest.exists() {
        return Err(StoreError::Backend(format!(
            "{} already exists: choose a new file name (a backup never overwrites a file)",
            dest.display()
        )));
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = dest
        .file_name()
        .ok_or_else(|| StoreError::Backend(format!("{} names no file", dest.display())))?;
    let mut partial_name = file_name.to_owned();
    partial_name.push(".partial");
    let partial = parent.join(partial_name);
    let _ = std::fs::remove_file(&partial);

    let outcome = copy_snapshot(source, &partial).and_then(|()| check_copy(&partial));
    let last_event_seq = match outcome {
        Ok(seq) => seq,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    let file =
        std::fs::File::open(&partial).map_err(io_err(format!("opening {}", partial.display())))?;
    file.sync_all()
        .map_err(io_err(format!("fsync of {}", partial.display())))?;
    let bytes = file
        .metadata()
        .map_err(io_err(format!("stat {}", partial.display())))?
        .len();
    drop(file);
    std::fs::rename(&partial, dest).map_err(io_err(format!(
        "renaming {} to {}",
        partial.display(),
        dest.display()
    )))?;
    std::fs::File::open(&parent)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("fsync of {}", parent.display())))?;
    sync_source_wal(source)?;
    let summary = BackupSummary {
        path: dest.to_path_buf(),
        bytes,
        last_event_seq,
        elapsed: started.elapsed(),
    };
    tracing::info!(
        bytes,
        last_event_seq,
        elapsed_ms = summary.elapsed.as_millis() as u64,
        "online backup written"
    );
    Ok(summary)
}

/// Every page of `source` into the new file `partial`, in one step (one read transaction).
fn copy_snapshot(source: &Path, partial: &Path) -> Result<()> {
    let src = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::backend(&format!("opening {}", source.display()), e))?;
    src.busy_timeout(Duration::from_secs(10))
        .map_err(err("setting the busy timeout"))?;
    src.execute_batch("PRAGMA query_only = ON")
        .map_err(err("configuring the backup's read connection"))?;
    let mut dst = Connection::open(partial)
        .map_err(|e| StoreError::backend(&format!("creating {}", partial.display()), e))?;
    let backup = Backup::new(&src, &mut dst).map_err(err("starting the backup"))?;
    let deadline = Instant::now() + BUSY_RETRY;
    loop {
        match backup.step(-1).map_err(err("copying the store"))? {
            StepResult::Done => return Ok(()),
            StepResult::More => {}
            StepResult::Busy | StepResult::Locked if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            StepResult::Busy | StepResult::Locked => {
                return Err(StoreError::Backend(format!(
                    "{} stayed locked for {} s: try again",
                    source.display(),
                    BUSY_RETRY.as_secs()
                )))
            }
            // A variant added by a later rusqlite: treat it as "not done yet".
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Opens the copy on its own: it must pass `quick_check`; returns its last event seq.
fn check_copy(partial: &Path) -> Result<u64> {
    let conn = Connection::open_with_flags(
        partial,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::backend(&format!("opening {}", partial.display()), e))?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(err("checking the backup"))?;
    if check != "ok" {
        return Err(StoreError::corrupt(
            "backup",
            format!("the copy failed SQLite's quick_check: {check}"),
        ));
    }
    let seq = schema::last_seq(&conn)?;
    conn.close()
        .map_err(|(_, e)| StoreError::backend("closing the backup", e))?;
    Ok(seq)
}

/// fdatasync of the source's WAL (absent: nothing to sync; the database file holds it all).
/// Everything committed before the call is then durable.
pub(crate) fn sync_source_wal(source: &Path) -> Result<()> {
    let mut name = source.as_os_str().to_owned();
    name.push("-wal");
    let wal = PathBuf::from(name);
    match std::fs::File::open(&wal) {
        Ok(f) => f
            .sync_data()
            .map_err(io_err(format!("fdatasync of {}", wal.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::backend(
            &format!("opening {}", wal.display()),
            e,
        )),
    }
}

/// A finished backup file in a backup directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFile {
    pub path: PathBuf,
    pub bytes: u64,
    /// Last modification (= when the backup finished), ms since the epoch.
    pub modified_ms: i64,
}

/// The finished backups (`*.sqlite3`; never a `.partial` copy) in `dir`, newest first; none
/// when `dir` does not exist.
pub fn list_backups(dir: &Path) -> Result<Vec<BackupFile>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(StoreError::backend(
                &format!("listing {}", dir.display()),
                e,
            ))
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(format!("listing {}", dir.display())))?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("sqlite3") {
            continue;
        }
        let meta = entry
            .metadata()
            .map_err(io_err(format!("stat {}", path.display())))?;
        if !meta.is_file() {
            continue;
        }
        let modified_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_millis()).ok())
            .unwrap_or(0);
        out.push(BackupFile {
            path,
            bytes: meta.len(),
            modified_ms,
        });
    }
    out.sort_by(|a, b| b.modified_ms.cmp(&a.modified_ms).then(b.path.cmp(&a.path)));
    Ok(out)
}
