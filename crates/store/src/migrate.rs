//! Moving a data directory from sled to SQLite: detect, copy, verify, keep the old files.
//! This is the one place idbridge still reads sled (`sled_reader`): releases before SQLite
//! wrote their store with it, and `idbridge serve` runs this at every start.
//!
//! A sled store lives directly in the data directory (`conf`, `db`, `snap.*`, `blobs/`). The
//! migration exports it into a SQLite file built in a staging directory, compares a full
//! export of both record by record (so counts and bytes agree), and only then renames the
//! file into place — that rename is the commit point. The sled files are then moved, not
//! deleted, into `sled-backup-<unix seconds>/` for the operator to remove.
//!
//! A crash before the rename leaves the sled store untouched (the staging directory is
//! rebuilt next time); a crash after it leaves the SQLite file authoritative and the next
//! start finishes moving the sled files aside.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Result, StoreError};
use crate::export::ExportRecord;
use crate::sled_reader::SledReader;
use crate::sqlite::{SqliteOptions, SqliteStore, SQLITE_FILE_NAME};
use crate::Store;

/// The staging directory a migration builds the SQLite file in.
const STAGING_DIR: &str = ".sqlite-migration";

/// What a finished migration did, for the log and the `idbridge migrate` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SledMigration {
    /// Records copied (entries, expiring entries, events, the event counter).
    pub records: u64,
    /// Where the sled files now are (the operator removes this directory).
    pub sled_backup: PathBuf,
    /// The SQLite file that now holds the store.
    pub sqlite_file: PathBuf,
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |e| StoreError::Backend(format!("{context}: {e}"))
}

/// Whether `dir` holds a sled store (sled's `conf` and `db` files).
pub fn holds_sled_store(dir: &Path) -> bool {
    dir.join("conf").is_file() && dir.join("db").is_file()
}

/// Migrates the sled store in `dir` to `dir/idbridge.sqlite3` if there is one to migrate.
/// Returns `None` when `dir` holds no sled store. `cache_mb` sizes the new store's cache
/// while it is built.
pub fn migrate_sled_dir(dir: &Path, cache_mb: u64) -> Result<Option<SledMigration>> {
    if !holds_sled_store(dir) {
        return Ok(None);
    }
    let sqlite_file = dir.join(SQLITE_FILE_NAME);
    if sqlite_file.exists() {
        // The rename happened; only moving the sled files aside was left undone.
        let sled_backup = move_sled_aside(dir)?;
        tracing::warn!(
            sled_backup = %sled_backup.display(),
            "found a sled store beside {}: the SQLite file is authoritative (an earlier \
             migration finished copying); moved the sled files aside",
            sqlite_file.display()
        );
        return Ok(Some(SledMigration {
            records: 0,
            sled_backup,
            sqlite_file,
        }));
    }
    let _span = tracing::info_span!("store.migrate_sled", dir = %dir.display()).entered();
    tracing::info!("migrating the sled store to SQLite");
    let staging = dir.join(STAGING_DIR);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io_err(format!(
            "removing the unfinished migration in {}",
            staging.display()
        )))?;
    }
    let records = {
        let sled = SledReader::open(dir)?;
        let target = SqliteStore::open_with(
            &staging,
            SqliteOptions {
                cache_mb: cache_mb.max(8),
                ..SqliteOptions::default()
            },
        )?;
        let sled_export = |sink: &mut dyn FnMut(ExportRecord) -> Result<()>| sled.export(sink);
        let records = copy(&sled_export, &target)?;
        let compared = compare(&sled_export, &target)?;
        if compared != records {
            return Err(verification_failed(&format!(
                "{records} records copied but {compared} compared"
            )));
        }
        records
    }; // both closed: the SQLite file is checkpointed and its WAL removed
    let staged = staging.join(SQLITE_FILE_NAME);
    // Closing the last connection checkpointed and removed the WAL; should one be left, it
    // moves with the file (it holds committed data).
    let staged_wal = PathBuf::from(format!("{}-wal", staged.display()));
    if staged_wal.exists() {
        std::fs::rename(&staged_wal, format!("{}-wal", sqlite_file.display()))
            .map_err(io_err(format!("moving {}", staged_wal.display())))?;
    }
    sync_file(&staged)?;
    std::fs::rename(&staged, &sqlite_file)
        .map_err(io_err(format!("moving {} into place", staged.display())))?;
    sync_dir(dir)?;
    let _ = std::fs::remove_dir_all(&staging);
    let sled_backup = move_sled_aside(dir)?;
    tracing::info!(
        records,
        sqlite_file = %sqlite_file.display(),
        sled_backup = %sled_backup.display(),
        "migrated the sled store to SQLite and verified it record by record; the old sled \
         files are kept: remove {} once you no longer need them",
        sled_backup.display()
    );
    Ok(Some(SledMigration {
        records,
        sled_backup,
        sqlite_file,
    }))
}

/// An export: calls its sink once per record, in export order.
type Exporter<'a> = dyn Fn(&mut dyn FnMut(ExportRecord) -> Result<()>) -> Result<()> + Sync + 'a;

/// Streams the sled export into `to`'s import.
fn copy(from: &Exporter<'_>, to: &dyn Store) -> Result<u64> {
    let (tx, rx) = mpsc::sync_channel::<ExportRecord>(4096);
    std::thread::scope(|scope| {
        let exporter = scope.spawn(move || {
            from(&mut |record| {
                tx.send(record)
                    .map_err(|_| StoreError::Backend("the import stopped".to_owned()))
            })
        });
        let imported = to.import(&mut rx.iter().map(Ok));
        let exported = exporter
            .join()
            .map_err(|_| StoreError::Backend("the export thread panicked".to_owned()))?;
        // An import error makes the export's send fail; report the import's own error.
        let imported = imported?;
        exported?;
        Ok(imported)
    })
}

/// Exports both stores side by side and fails on the first record that differs; returns
/// the number of records compared.
fn compare(a: &Exporter<'_>, b: &dyn Store) -> Result<u64> {
    let (tx, rx) = mpsc::sync_channel::<ExportRecord>(4096);
    std::thread::scope(|scope| {
        let exporter = scope.spawn(move || {
            a(&mut |record| {
                tx.send(record)
                    .map_err(|_| StoreError::Backend("the comparison stopped".to_owned()))
            })
        });
        let mut n = 0u64;
        let mut mismatch: Option<String> = None;
        let outcome = b.export(&mut |record| {
            n += 1;
            match rx.recv() {
                Ok(expected) if expected == record => Ok(()),
                Ok(expected) => {
                    mismatch = Some(format!(
                        "record {n} differs: sled has {expected:?}, SQLite has {record:?}"
                    ));
                    Err(StoreError::Backend("mismatch".to_owned()))
                }
                Err(_) => {
                    mismatch = Some(format!("SQLite has more records than sled (record {n})"));
                    Err(StoreError::Backend("mismatch".to_owned()))
                }
            }
        });
        let extra = rx.recv().ok();
        drop(rx);
        let exported = exporter
            .join()
            .map_err(|_| StoreError::Backend("the export thread panicked".to_owned()))?;
        if let Some(m) = mismatch {
            return Err(verification_failed(&m));
        }
        outcome?;
        exported?;
        if let Some(extra) = extra {
            return Err(verification_failed(&format!(
                "sled has more records than SQLite (next: {extra:?})"
            )));
        }
        Ok(n)
    })
}

fn verification_failed(detail: &str) -> StoreError {
    StoreError::Backend(format!(
        "the migrated SQLite store does not match the sled store ({detail}); the sled store \
         is unchanged and still in use: report this, with the data directory kept as it is"
    ))
}

/// Moves sled's files into `sled-backup-<unix seconds>/` and returns that directory.
fn move_sled_aside(dir: &Path) -> Result<PathBuf> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut backup = dir.join(format!("sled-backup-{secs}"));
    let mut n = 1;
    while backup.exists() {
        backup = dir.join(format!("sled-backup-{secs}-{n}"));
        n += 1;
    }
    std::fs::create_dir(&backup).map_err(io_err(format!("creating {}", backup.display())))?;
    let entries = std::fs::read_dir(dir).map_err(io_err(format!("listing {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_err(format!("listing {}", dir.display())))?;
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        let is_sled =
            matches!(name_str.as_ref(), "conf" | "db" | "blobs") || name_str.starts_with("snap.");
        if is_sled {
            std::fs::rename(entry.path(), backup.join(&name))
                .map_err(io_err(format!("moving {}", entry.path().display())))?;
        }
    }
    sync_dir(&backup)?;
    sync_dir(dir)?;
    Ok(backup)
}

fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err(format!("fsync {}", path.display())))
}

fn sync_dir(dir: &Path) -> Result<()> {
    sync_file(dir)
}
