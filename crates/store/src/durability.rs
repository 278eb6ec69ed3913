//! Group commit and the fdatasync that sled 0.34 leaves out.
//!
//! sled's `flush()` writes its log with `sync_file_range` on Linux, which persists neither the
//! file size / block map nor the disk's write cache. So after every flush we `fdatasync` the
//! data file (`<dir>/db`), and `fsync` any file sled created since the last round (snapshots
//! `snap.*`, `conf`, large values under `blobs/`) plus the directory that names it.
//!
//! Many writers share one round: a writer applies its transaction, takes a ticket, and waits
//! until `durable >= ticket`. If no round is running it leads one, covering every ticket issued
//! before the round started. A ticket is issued only after its transaction applied, so the sync
//! that covers it started after its data was in sled: nothing is acknowledged early.
//!
//! A failed sync poisons the store for writes: after a failed fsync the kernel may have dropped
//! the dirty pages, so retrying could report success for data that is gone.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::error::{Result, StoreError};
use crate::types::StoreStats;

/// Observation and fault-injection points of the group commit (tests, metrics).
///
/// Calls are made in this order for a write: `applied(ticket)` (under the group lock, after
/// the write's transaction applied), then some round with `covers_through >= ticket` calls
/// `before_sync` and `after_sync` before that write is acknowledged.
pub trait DurabilityProbe: Send + Sync + 'static {
    /// A write applied and received `ticket` (tickets are 1, 2, 3, ... in apply order).
    fn applied(&self, _ticket: u64) {}
    /// A sync round covering tickets up to `covers_through` is starting. An error here is
    /// treated exactly like a failed fsync (fault injection).
    fn before_sync(&self, _covers_through: u64) -> std::io::Result<()> {
        Ok(())
    }
    /// The round covering tickets up to `covers_through` finished successfully.
    fn after_sync(&self, _covers_through: u64) {}
    /// The write holding `ticket` is about to be acknowledged to its caller (called on the
    /// caller's thread, after the sync covering it): lets a test pair tickets with callers
    /// when a backend applies writes on a thread of its own.
    fn acknowledged(&self, _ticket: u64) {}
}

#[derive(Default)]
struct GroupState {
    /// Last ticket handed out (= number of writes applied since open).
    applied: u64,
    /// Highest event seq applied when `applied` was handed out.
    applied_event_seq: u64,
    /// Every ticket <= durable is flushed and fdatasynced.
    durable: u64,
    /// Highest event seq known durable: readers of the log never see past it.
    durable_event_seq: u64,
    /// A leader is running a round.
    syncing: bool,
    /// Set after a failed round; all later writes fail.
    poisoned: Option<String>,
}

#[derive(Default)]
struct Counters {
    durable_writes: AtomicU64,
    flushes: AtomicU64,
    fdatasyncs: AtomicU64,
    dir_fsyncs: AtomicU64,
    sync_groups: AtomicU64,
    max_group_size: AtomicU64,
}

/// Names last seen in the data directory and in `blobs/`, to fsync only what is new.
#[derive(Default)]
struct Listing {
    root: BTreeSet<OsString>,
    blobs: BTreeSet<OsString>,
}

pub(crate) struct GroupCommit {
    db: sled::Db,
    dir: PathBuf,
    /// sled's log file, opened once.
    data_file: File,
    /// The data directory itself (fsync makes new names durable).
    dir_file: File,
    state: Mutex<GroupState>,
    cv: Condvar,
    listing: Mutex<Listing>,
    counters: Counters,
    probe: Option<Arc<dyn DurabilityProbe>>,
}

fn relock<'a, T>(res: std::sync::LockResult<MutexGuard<'a, T>>) -> MutexGuard<'a, T> {
    // The guarded state is plain counters kept consistent by each critical section, so a
    // panic elsewhere leaves nothing half-updated; carry on rather than cascade the panic.
    res.unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Resets `syncing` if a leader unwinds, so the other writers fail instead of hanging.
struct LeaderGuard<'a> {
    gc: &'a GroupCommit,
    armed: bool,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut st = relock(self.gc.state.lock());
            st.syncing = false;
            st.poisoned = Some("a sync round panicked".to_owned());
            self.gc.cv.notify_all();
        }
    }
}

impl GroupCommit {
    pub(crate) fn new(
        db: sled::Db,
        dir: &Path,
        last_event_seq: u64,
        probe: Option<Arc<dyn DurabilityProbe>>,
    ) -> Result<Self> {
        let data_path = dir.join("db");
        let data_file = File::open(&data_path).map_err(|e| {
            StoreError::backend(&format!("opening {} for fdatasync", data_path.display()), e)
        })?;
        let dir_file = File::open(dir)
            .map_err(|e| StoreError::backend(&format!("opening {}", dir.display()), e))?;
        let gc = GroupCommit {
            db,
            dir: dir.to_path_buf(),
            data_file,
            dir_file,
            state: Mutex::new(GroupState {
                applied_event_seq: last_event_seq,
                durable_event_seq: last_event_seq,
                ..GroupState::default()
            }),
            cv: Condvar::new(),
            listing: Mutex::new(Listing::default()),
            counters: Counters::default(),
            probe,
        };
        // Whatever recovery found becomes durable before anyone reads it (and the empty listing
        // makes this first round fsync every file and the directory once).
        gc.sync_files(0)?;
        Ok(gc)
    }

    /// Fails if an earlier sync failed; checked before applying, so a poisoned store stops
    /// taking writes at all rather than applying ones it can never acknowledge.
    pub(crate) fn check_writable(&self) -> Result<()> {
        match &relock(self.state.lock()).poisoned {
            Some(reason) => Err(StoreError::Backend(format!(
                "store is read-only after a failed sync: {reason}"
            ))),
            None => Ok(()),
        }
    }

    /// Registers an applied write and returns its ticket. Call while still holding the apply
    /// lock, so tickets and event seqs advance together.
    pub(crate) fn record_applied(&self, last_event_seq: u64) -> Result<u64> {
        let mut st = relock(self.state.lock());
        if let Some(reason) = &st.poisoned {
            return Err(StoreError::Backend(format!(
                "store is read-only after a failed sync: {reason}"
            )));
        }
        st.applied += 1;
        st.applied_event_seq = last_event_seq;
        if let Some(probe) = &self.probe {
            probe.applied(st.applied);
        }
        Ok(st.applied)
    }

    /// Returns once `ticket` is durable (leading a sync round if none is running).
    pub(crate) fn wait_durable(&self, ticket: u64) -> Result<()> {
        let mut st = relock(self.state.lock());
        loop {
            if st.durable >= ticket {
                drop(st);
                if let Some(probe) = &self.probe {
                    probe.acknowledged(ticket);
                }
                return Ok(());
            }
            if let Some(reason) = &st.poisoned {
                return Err(StoreError::Backend(format!("sync failed: {reason}")));
            }
            if st.syncing {
                st = relock(self.cv.wait(st));
                continue;
            }
            // Lead a round for everything applied so far.
            st.syncing = true;
            let target = st.applied;
            let target_event_seq = st.applied_event_seq;
            let group = target - st.durable;
            drop(st);
            let mut guard = LeaderGuard {
                gc: self,
                armed: true,
            };
            let outcome = {
                let _span =
                    tracing::debug_span!("store.sync", covers_through = target, group).entered();
                self.sync_files(target)
            };
            guard.armed = false;
            st = relock(self.state.lock());
            st.syncing = false;
            match outcome {
                Ok(()) => {
                    st.durable = target;
                    st.durable_event_seq = target_event_seq;
                    self.counters
                        .durable_writes
                        .fetch_add(group, Ordering::Relaxed);
                    self.counters
                        .max_group_size
                        .fetch_max(group, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::error!(error = %e, "store sync failed; refusing further writes");
                    st.poisoned = Some(e.to_string());
                }
            }
            self.cv.notify_all();
        }
    }

    /// Applies-then-syncs barrier: makes everything applied so far durable.
    pub(crate) fn sync_now(&self, last_event_seq: u64) -> Result<()> {
        let ticket = self.record_applied(last_event_seq)?;
        self.wait_durable(ticket)
    }

    /// Highest event seq readers may see.
    pub(crate) fn durable_event_seq(&self) -> u64 {
        relock(self.state.lock()).durable_event_seq
    }

    fn sync_files(&self, covers_through: u64) -> Result<()> {
        if let Some(probe) = &self.probe {
            probe
                .before_sync(covers_through)
                .map_err(|e| StoreError::backend("sync (probe)", e))?;
        }
        self.db
            .flush()
            .map_err(|e| StoreError::backend("sled flush", e))?;
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        // New files and names first, so the log is never durable while a blob it points to
        // is not.
        self.sync_new_files()?;
        self.data_file
            .sync_data()
            .map_err(|e| StoreError::backend("fdatasync of sled data file", e))?;
        self.counters.fdatasyncs.fetch_add(1, Ordering::Relaxed);
        self.counters.sync_groups.fetch_add(1, Ordering::Relaxed);
        if let Some(probe) = &self.probe {
            probe.after_sync(covers_through);
        }
        Ok(())
    }

    /// fsyncs files that appeared since the last round, then their directory. A directory
    /// listing of a handful of names costs microseconds next to an fdatasync.
    fn sync_new_files(&self) -> Result<()> {
        let mut listing = relock(self.listing.lock());
        let root = list_dir(&self.dir)?;
        if root != listing.root {
            for name in root.difference(&listing.root) {
                let path = self.dir.join(name);
                if name != "db" && path.is_file() {
                    self.fsync_path(&path)?;
                }
            }
            self.dir_file
                .sync_all()
                .map_err(|e| StoreError::backend("fsync of data directory", e))?;
            self.counters.dir_fsyncs.fetch_add(1, Ordering::Relaxed);
            listing.root = root;
        }
        let blob_dir = self.dir.join("blobs");
        if blob_dir.is_dir() {
            let blobs = list_dir(&blob_dir)?;
            if blobs != listing.blobs {
                for name in blobs.difference(&listing.blobs) {
                    self.fsync_path(&blob_dir.join(name))?;
                }
                self.fsync_path(&blob_dir)?;
                listing.blobs = blobs;
            }
        }
        Ok(())
    }

    fn fsync_path(&self, path: &Path) -> Result<()> {
        match File::open(path) {
            Ok(f) => {
                f.sync_all()
                    .map_err(|e| StoreError::backend(&format!("fsync {}", path.display()), e))?;
                self.counters.dir_fsyncs.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            // sled removes old snapshots and collected blobs concurrently; gone is fine.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::backend(&format!("open {}", path.display()), e)),
        }
    }

    pub(crate) fn fill_stats(&self, stats: &mut StoreStats) {
        let c = &self.counters;
        stats.durable_writes = c.durable_writes.load(Ordering::Relaxed);
        stats.flushes = c.flushes.load(Ordering::Relaxed);
        stats.fdatasyncs = c.fdatasyncs.load(Ordering::Relaxed);
        stats.dir_fsyncs = c.dir_fsyncs.load(Ordering::Relaxed);
        stats.sync_groups = c.sync_groups.load(Ordering::Relaxed);
        stats.max_group_size = c.max_group_size.load(Ordering::Relaxed);
    }
}

fn list_dir(dir: &Path) -> Result<BTreeSet<OsString>> {
    let mut names = BTreeSet::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| StoreError::backend(&format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry =
            entry.map_err(|e| StoreError::backend(&format!("listing {}", dir.display()), e))?;
        names.insert(entry.file_name());
    }
    Ok(names)
}
