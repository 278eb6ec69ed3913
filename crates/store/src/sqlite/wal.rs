//! The group commit's sync for SQLite: one `fdatasync` of the `-wal` file.
//!
//! The writer connection runs `synchronous=NORMAL`: in WAL mode its COMMIT writes the frames
//! (and the commit frame) to the `-wal` file without syncing, makes them visible, and
//! returns. A round of [`crate::durability::GroupCommit`] then `fdatasync`s that file once for
//! every commit that returned before the round started — the same frames `synchronous=FULL`
//! would have synced one COMMIT at a time. SQLite's recovery replays every frame up to the last
//! valid commit frame, so a synced commit frame is a durable commit.
//!
//! Why this is safe with SQLite's own file handling:
//! * The `-wal` file keeps its inode while any connection is open (SQLite deletes it only when
//!   the last connection closes; the writer's stays open for the store's lifetime). A WAL
//!   *restart* rewrites the same file from its header (SQLite syncs that header itself, even
//!   under NORMAL), and `journal_size_limit` truncates the same file. Each round still checks
//!   that the path names the inode it syncs, and fails (poisoning the store) if not.
//! * A restart only happens once every frame was checkpointed, and a checkpoint (run with the
//!   checkpointer's own `synchronous` setting, never OFF) syncs the WAL before it copies frames
//!   into the database file and syncs the database file before it lets the WAL be reused: no
//!   unsynced frame reaches the database file, and no synced one is overwritten unsaved.
//! * Frames written by another handle on the same file are in the same file: a round covers
//!   their commits too.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::durability::SyncTarget;
use crate::error::{Result, StoreError};

/// The `-wal` file of an open database, held open for `fdatasync`.
pub(crate) struct WalFile {
    path: PathBuf,
    file: File,
    /// (device, inode) of `file`.
    identity: (u64, u64),
}

impl WalFile {
    /// Opens the WAL of `db_path`; the database must be open in WAL mode (so the file exists).
    pub(crate) fn open(db_path: &Path) -> Result<Self> {
        let mut name = db_path.as_os_str().to_owned();
        name.push("-wal");
        let path = PathBuf::from(name);
        let file = File::open(&path).map_err(|e| {
            StoreError::backend(
                &format!(
                    "opening the write-ahead log {} for fdatasync",
                    path.display()
                ),
                e,
            )
        })?;
        let meta = file
            .metadata()
            .map_err(|e| StoreError::backend(&format!("stat {}", path.display()), e))?;
        Ok(WalFile {
            path,
            file,
            identity: (meta.dev(), meta.ino()),
        })
    }
}

impl SyncTarget for WalFile {
    fn sync(&self) -> Result<()> {
        let now = std::fs::metadata(&self.path)
            .map(|m| (m.dev(), m.ino()))
            .map_err(|e| StoreError::backend(&format!("stat {}", self.path.display()), e))?;
        if now != self.identity {
            return Err(StoreError::Backend(format!(
                "{} was replaced while the store was open (another program deleted or moved \
                 it); restart idbridge",
                self.path.display()
            )));
        }
        self.file
            .sync_data()
            .map_err(|e| StoreError::backend(&format!("fdatasync of {}", self.path.display()), e))
    }
}
