//! Reading a data directory left by a sled release (sled 0.34), for the migration to SQLite
//! only: sled is no longer a backend idbridge writes.
//!
//! Layout (kept byte for byte from the retired backend): one sled tree per table
//! (`t:<table>`), per expiring table (`x:<table>`), and the internal trees `_events`,
//! `_event_ids`, `_expiry` and `_meta` (see `codec`). The index trees (`_event_ids`,
//! `_expiry`) are derived data: SQLite rebuilds its own from the export.

use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::codec::{
    decode_event, decode_expiring, u64_from_be, utf8_key, EVENTS_TREE, EXPIRING_PREFIX,
    META_LAST_SEQ, META_TREE, TABLE_PREFIX,
};
use crate::error::{Result, StoreError};
use crate::export::ExportRecord;

/// How long to wait for sled's lock on `<dir>/db`: a process that just closed the store (or
/// sled's own background threads) may hold it for a moment.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// An open sled store, read only by the migration.
pub(crate) struct SledReader {
    db: sled::Db,
}

fn sled_err(context: &str) -> impl FnOnce(sled::Error) -> StoreError + '_ {
    move |e| StoreError::Backend(format!("sled {context}: {e}"))
}

impl SledReader {
    /// Opens the sled store in `dir` (sled recovers its log as it opens).
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        wait_for_lock(dir, LOCK_WAIT)?;
        let db = sled::Config::new()
            .path(dir)
            .open()
            .map_err(sled_err("opening the store"))?;
        Ok(SledReader { db })
    }

    /// The highest event seq ever assigned: the counter in `_meta`, or the log's last event
    /// if that is higher.
    fn last_event_seq(&self) -> Result<u64> {
        let meta = self
            .db
            .open_tree(META_TREE)
            .map_err(sled_err("open tree"))?;
        let events = self
            .db
            .open_tree(EVENTS_TREE)
            .map_err(sled_err("open tree"))?;
        let from_meta = match meta.get(META_LAST_SEQ).map_err(sled_err("read"))? {
            Some(v) => u64_from_be(META_TREE, &v)?,
            None => 0,
        };
        let from_log = match events.last().map_err(sled_err("read"))? {
            Some((k, _)) => u64_from_be(EVENTS_TREE, &k)?,
            None => 0,
        };
        Ok(from_meta.max(from_log))
    }

    /// Every record, in the order the retired backend exported them (tables by tree name,
    /// then the event log, then the event counter): the same order as SQLite's export, so the
    /// migration compares the two record by record.
    pub(crate) fn export(&self, sink: &mut dyn FnMut(ExportRecord) -> Result<()>) -> Result<()> {
        let _span = tracing::info_span!("store.sled_export").entered();
        let last_seq = self.last_event_seq()?;
        let mut names = self.db.tree_names();
        names.sort();
        for name in names {
            let Ok(name) = std::str::from_utf8(&name) else {
                continue;
            };
            if let Some(table) = name.strip_prefix(TABLE_PREFIX) {
                let tree = self.db.open_tree(name).map_err(sled_err("open tree"))?;
                for item in tree.iter() {
                    let (k, v) = item.map_err(sled_err("export"))?;
                    sink(ExportRecord::Entry {
                        table: table.to_owned(),
                        key: utf8_key(table, &k)?,
                        value: v.to_vec(),
                    })?;
                }
            } else if let Some(table) = name.strip_prefix(EXPIRING_PREFIX) {
                let tree = self.db.open_tree(name).map_err(sled_err("open tree"))?;
                for item in tree.iter() {
                    let (k, v) = item.map_err(sled_err("export"))?;
                    let (expires_at_ms, value) = decode_expiring(table, &v)?;
                    sink(ExportRecord::Expiring {
                        table: table.to_owned(),
                        key: utf8_key(table, &k)?,
                        value,
                        expires_at_ms,
                    })?;
                }
            }
        }
        let events = self
            .db
            .open_tree(EVENTS_TREE)
            .map_err(sled_err("open tree"))?;
        for item in events.iter() {
            let (k, v) = item.map_err(sled_err("export"))?;
            sink(ExportRecord::Event(decode_event(&k, &v)?))?;
        }
        sink(ExportRecord::EventSeq { last_seq })?;
        Ok(())
    }
}

/// Waits until nobody holds sled's lock on `<dir>/db` (the same `flock` sled takes), or
/// errors saying another process has the store open.
#[allow(unsafe_code)] // flock(2): the one unsafe call of the store
fn wait_for_lock(dir: &Path, wait: Duration) -> Result<()> {
    let path = dir.join("db");
    let Ok(file) = std::fs::File::open(&path) else {
        return Ok(()); // let sled report what is missing
    };
    let deadline = Instant::now() + wait;
    loop {
        // SAFETY: flock takes a valid open fd (owned by `file`, alive for this call) and flags;
        // no memory is shared. Dropping `file` at return releases the probe lock.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::WouldBlock {
            return Ok(()); // let sled try and report what is wrong
        }
        if Instant::now() >= deadline {
            return Err(StoreError::Backend(format!(
                "{} is locked: the sled store is open in another process (stop the old \
                 idbridge before migrating)",
                path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
