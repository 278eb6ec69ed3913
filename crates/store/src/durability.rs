//! Group commit: many writers share one sync round, for every backend.
//!
//! A writer applies its change set, takes a ticket, and waits until `durable >= ticket`. If no
//! round is running it leads one, covering every ticket issued before the round started. A
//! ticket is issued only after its change set applied, so the sync that covers it started after
//! its data was written: nothing is acknowledged early. What one round makes durable is the
//! backend's [`SyncTarget`]: SQLite's fdatasync of its `-wal` file (`sqlite::wal`).
//!
//! A failed sync poisons the store for writes: after a failed fsync the kernel may have dropped
//! the dirty pages, so retrying could report success for data that is gone.

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

/// What one sync round makes durable: everything the backend wrote before the round started.
pub(crate) trait SyncTarget: Send + Sync + 'static {
    /// Makes every write that completed before this call durable.
    fn sync(&self) -> Result<()>;
    /// Backend-specific counters (files fsynced, ...).
    fn fill_stats(&self, _stats: &mut StoreStats) {}
}

#[derive(Default)]
struct GroupState {
    /// Last ticket handed out (= number of writes applied since open).
    applied: u64,
    /// Highest event seq applied when `applied` was handed out.
    applied_event_seq: u64,
    /// Highest event seq seen committed by another handle on the same file (SQLite): the
    /// next round makes it durable too.
    foreign_event_seq: u64,
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
    rounds: AtomicU64,
    max_group_size: AtomicU64,
    slowest_micros: AtomicU64,
}

pub(crate) struct GroupCommit {
    target: Box<dyn SyncTarget>,
    state: Mutex<GroupState>,
    cv: Condvar,
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

fn read_only(reason: &str) -> StoreError {
    StoreError::Backend(format!(
        "store is read-only after a failed write or sync (restart idbridge; check the disk): \
         {reason}"
    ))
}

impl GroupCommit {
    /// A group commit over `target`. Runs one round at once, so whatever crash recovery found
    /// (sled's log, SQLite's WAL) is durable before anyone reads it.
    pub(crate) fn new(
        target: Box<dyn SyncTarget>,
        last_event_seq: u64,
        probe: Option<Arc<dyn DurabilityProbe>>,
    ) -> Result<Self> {
        target.sync()?;
        let counters = Counters::default();
        counters.rounds.fetch_add(1, Ordering::Relaxed);
        Ok(GroupCommit {
            target,
            state: Mutex::new(GroupState {
                applied_event_seq: last_event_seq,
                durable_event_seq: last_event_seq,
                ..GroupState::default()
            }),
            cv: Condvar::new(),
            counters,
            probe,
        })
    }

    /// Fails if an earlier sync failed; checked before applying, so a poisoned store stops
    /// taking writes at all rather than applying ones it can never acknowledge.
    pub(crate) fn check_writable(&self) -> Result<()> {
        match &relock(self.state.lock()).poisoned {
            Some(reason) => Err(read_only(reason)),
            None => Ok(()),
        }
    }

    /// Refuses every later write (a failed COMMIT: its outcome on disk is unknown).
    pub(crate) fn poison(&self, reason: &str) {
        tracing::error!(
            error = reason,
            "store write failed; refusing further writes"
        );
        let mut st = relock(self.state.lock());
        if st.poisoned.is_none() {
            st.poisoned = Some(reason.to_owned());
        }
        self.cv.notify_all();
    }

    /// Registers an applied write and returns its ticket. Call while still holding the apply
    /// lock (or on the one writer thread), so tickets and event seqs advance together.
    pub(crate) fn record_applied(&self, last_event_seq: u64) -> Result<u64> {
        let mut st = relock(self.state.lock());
        if let Some(reason) = &st.poisoned {
            return Err(read_only(reason));
        }
        st.applied += 1;
        st.applied_event_seq = st.applied_event_seq.max(last_event_seq);
        if let Some(probe) = &self.probe {
            probe.applied(st.applied);
        }
        Ok(st.applied)
    }

    /// Returns once `ticket` is durable (leading a sync round if none is running).
    pub(crate) fn wait_durable(&self, ticket: u64) -> Result<()> {
        self.wait_until(|st| st.durable >= ticket)?;
        if let Some(probe) = &self.probe {
            probe.acknowledged(ticket);
        }
        Ok(())
    }

    /// Returns once events up to `seq`, committed by another handle on the same file, are
    /// durable: a round that starts after this call covers them.
    pub(crate) fn wait_event_durable(&self, seq: u64) -> Result<()> {
        {
            let mut st = relock(self.state.lock());
            st.foreign_event_seq = st.foreign_event_seq.max(seq);
        }
        self.wait_until(|st| st.durable_event_seq >= seq)
    }

    fn wait_until(&self, done: impl Fn(&GroupState) -> bool) -> Result<()> {
        let mut st = relock(self.state.lock());
        loop {
            if done(&st) {
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
            let target_event_seq = st.applied_event_seq.max(st.foreign_event_seq);
            let group = target - st.durable;
            drop(st);
            let mut guard = LeaderGuard {
                gc: self,
                armed: true,
            };
            let outcome = {
                let _span =
                    tracing::debug_span!("store.sync", covers_through = target, group).entered();
                self.run_round(target)
            };
            guard.armed = false;
            st = relock(self.state.lock());
            st.syncing = false;
            match outcome {
                Ok(()) => {
                    st.durable = st.durable.max(target);
                    st.durable_event_seq = st.durable_event_seq.max(target_event_seq);
                    self.counters
                        .durable_writes
                        .fetch_add(group, Ordering::Relaxed);
                    self.counters
                        .max_group_size
                        .fetch_max(group, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::error!(error = %e, "store sync failed; refusing further writes");
                    if st.poisoned.is_none() {
                        st.poisoned = Some(e.to_string());
                    }
                }
            }
            self.cv.notify_all();
        }
    }

    /// Highest event seq readers may see.
    pub(crate) fn durable_event_seq(&self) -> u64 {
        relock(self.state.lock()).durable_event_seq
    }

    /// Highest event seq applied by this handle (durable or on its way).
    pub(crate) fn applied_event_seq(&self) -> u64 {
        relock(self.state.lock()).applied_event_seq
    }

    fn run_round(&self, covers_through: u64) -> Result<()> {
        if let Some(probe) = &self.probe {
            probe
                .before_sync(covers_through)
                .map_err(|e| StoreError::backend("sync (probe)", e))?;
        }
        let started = std::time::Instant::now();
        self.target.sync()?;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.counters
            .slowest_micros
            .fetch_max(micros, Ordering::Relaxed);
        self.counters.rounds.fetch_add(1, Ordering::Relaxed);
        if let Some(probe) = &self.probe {
            probe.after_sync(covers_through);
        }
        Ok(())
    }

    pub(crate) fn fill_stats(&self, stats: &mut StoreStats) {
        let c = &self.counters;
        let rounds = c.rounds.load(Ordering::Relaxed);
        stats.durable_writes = c.durable_writes.load(Ordering::Relaxed);
        stats.flushes = rounds;
        stats.fdatasyncs = rounds;
        stats.sync_groups = rounds;
        stats.max_group_size = c.max_group_size.load(Ordering::Relaxed);
        stats.slowest_sync_micros = c.slowest_micros.load(Ordering::Relaxed);
        self.target.fill_stats(stats);
    }
}
