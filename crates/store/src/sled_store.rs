//! The embedded backend: sled 0.34 plus our own fdatasync and group commit.
//!
//! Layout: one sled tree per table (`t:<table>`), per expiring table (`x:<table>`), and four
//! internal trees (`_events`, `_event_ids`, `_expiry`, `_meta`; see `codec`). Every mutation
//! runs as one sled transaction under `apply` (a mutex): sled 0.34 serializes transactions
//! behind a global lock anyway, and holding ours too lets us hand out event seqs and
//! group-commit tickets in exactly the order transactions applied, with no retries.

use std::collections::HashMap;
use std::ops::Bound;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError,
    TransactionalTree,
};
use sled::{Transactional, Tree};

use crate::codec::{
    decode_event, decode_expiring, decode_expiry_key, encode_event, encode_event_fields,
    encode_expiring, expiry_key, prefix_end, u64_from_be, utf8_key, EVENTS_TREE, EVENT_IDS_TREE,
    EXPIRING_PREFIX, EXPIRY_TREE, META_LAST_SEQ, META_TREE, TABLE_PREFIX,
};
use crate::durability::{DurabilityProbe, GroupCommit, SledFiles};
use crate::error::{ConflictKind, Result, StoreError, EVENT_LOG};
use crate::export::{check_import_seq, ExportRecord};
use crate::types::{ChangeSet, CommitReceipt, PendingSync, StoreStats, StoredEvent};
use crate::Store;

/// Rows handled per transaction by compaction and purge, so neither holds the write path long.
const BATCH: usize = 512;

/// Options for [`SledStore::open_with`].
#[derive(Clone)]
pub struct SledOptions {
    /// Observer / fault injector of the group commit (tests, metrics).
    pub probe: Option<Arc<dyn DurabilityProbe>>,
    /// sled page-cache size in bytes (sled's default when None).
    pub cache_capacity_bytes: Option<u64>,
    /// How long to wait for the directory's lock. sled's background threads keep a dropped
    /// store's file (and lock) open for a moment, so an immediate reopen in the same process
    /// would fail spuriously; another live process still gets a clear error after this.
    pub lock_wait: Duration,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions {
            probe: None,
            cache_capacity_bytes: None,
            lock_wait: Duration::from_secs(3),
        }
    }
}

/// Waits until nobody holds sled's lock on `<dir>/db` (same `flock` sled takes), or errors.
#[allow(unsafe_code)] // flock(2): the one unsafe call of the store
fn wait_for_lock(dir: &Path, wait: Duration) -> Result<()> {
    let path = dir.join("db");
    let Ok(file) = std::fs::File::open(&path) else {
        return Ok(()); // a new store: nothing to wait for
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
                "{} is locked: the store is open in another process (or another SledStore)",
                path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl std::fmt::Debug for SledOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledOptions")
            .field("probe", &self.probe.is_some())
            .field("cache_capacity_bytes", &self.cache_capacity_bytes)
            .finish()
    }
}

struct ApplyState {
    /// Highest event seq assigned (durable or not).
    last_seq: u64,
}

/// The apply lock, held while one write's transaction runs; records how long it was held so
/// the benchmark can tell whether this serialization point is the bottleneck.
struct WriteGuard<'a> {
    state: MutexGuard<'a, ApplyState>,
    since: Instant,
    held_nanos: &'a AtomicU64,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        let nanos = u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.held_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// The sled-backed [`Store`].
pub struct SledStore {
    dir: PathBuf,
    db: sled::Db,
    trees: RwLock<HashMap<String, Tree>>,
    events: Tree,
    event_ids: Tree,
    expiry: Tree,
    meta: Tree,
    apply: Mutex<ApplyState>,
    group: GroupCommit,
    commits: AtomicU64,
    conflicts: AtomicU64,
    apply_nanos: AtomicU64,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn sled_err(context: &str) -> impl FnOnce(sled::Error) -> StoreError + '_ {
    move |e| StoreError::backend(context, e)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // ApplyState is a counter updated only after a successful transaction; a panic elsewhere
    // cannot leave it half-written, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn abort<T>(e: StoreError) -> ConflictableTransactionResult<T, StoreError> {
    Err(ConflictableTransactionError::Abort(e))
}

/// Runs one sled transaction over `trees`, turning sled's error shape into ours.
fn transact<A>(
    trees: &[Tree],
    f: impl Fn(&Vec<TransactionalTree>) -> ConflictableTransactionResult<A, StoreError>,
) -> Result<A> {
    match trees.transaction(f) {
        Ok(a) => Ok(a),
        Err(TransactionError::Abort(e)) => Err(e),
        Err(TransactionError::Storage(e)) => Err(StoreError::backend("sled transaction", e)),
    }
}

/// Collects `(key, value)` pairs of table `table` from a sled iterator.
fn collect_rows(
    table: &str,
    iter: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    limit: usize,
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for item in iter.take(limit) {
        let (k, v) = item.map_err(sled_err("scan"))?;
        out.push((utf8_key(table, &k)?, v.to_vec()));
    }
    Ok(out)
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, SledOptions::default())
    }

    /// Opens (or creates) the store in `dir` with options.
    pub fn open_with(dir: &Path, options: SledOptions) -> Result<Self> {
        Self::open_inner(dir, options, false)
    }

    /// A throwaway store for other crates' tests: in `/dev/shm` (the temp dir if there is
    /// none), deleted when dropped. It runs the real code path — transactions, group commit,
    /// fdatasync — but on tmpfs syncs cost nothing and nothing survives a reboot, so tests
    /// stay fast on a busy disk. Never use it for data.
    pub fn open_ephemeral() -> Result<Self> {
        let dir = crate::ephemeral_dir("store");
        Self::open_inner(&dir, SledOptions::default(), true)
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// What the store holds, per sled tree (entries, key and value bytes), and sled's size on
    /// disk: sled 0.34 splits a leaf past 16 entries and keeps in-memory state per page, so
    /// its memory follows the entry count, not the bytes (the memory benchmark prints this).
    /// Scans every tree (calling `each` after each one): a diagnostic, not for a request path.
    pub fn tree_stats(&self, each: &mut dyn FnMut(&TreeStats)) -> Result<(Vec<TreeStats>, u64)> {
        let mut out = Vec::new();
        for name in self.db.tree_names() {
            let tree = self.db.open_tree(&name).map_err(sled_err("open tree"))?;
            let mut s = TreeStats {
                name: String::from_utf8_lossy(&name).into_owned(),
                ..TreeStats::default()
            };
            for item in tree.iter() {
                let (k, v) = item.map_err(sled_err("scan"))?;
                s.entries += 1;
                s.key_bytes += k.len() as u64;
                s.value_bytes += v.len() as u64;
            }
            each(&s);
            out.push(s);
        }
        let on_disk = self.db.size_on_disk().map_err(sled_err("size on disk"))?;
        Ok((out, on_disk))
    }

    fn open_inner(dir: &Path, options: SledOptions, temporary: bool) -> Result<Self> {
        let _span = tracing::info_span!("store.open", dir = %dir.display()).entered();
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::backend(&format!("creating {}", dir.display()), e))?;
        wait_for_lock(dir, options.lock_wait)?;
        // `temporary` makes sled delete the directory when the last handle drops.
        let mut config = sled::Config::new().path(dir).temporary(temporary);
        if let Some(bytes) = options.cache_capacity_bytes {
            config = config.cache_capacity(bytes);
        }
        let db = config.open().map_err(sled_err("opening sled"))?;
        let open = |name: &str| db.open_tree(name).map_err(sled_err("opening tree"));
        let events = open(EVENTS_TREE)?;
        let event_ids = open(EVENT_IDS_TREE)?;
        let expiry = open(EXPIRY_TREE)?;
        let meta = open(META_TREE)?;
        let from_meta = match meta.get(META_LAST_SEQ).map_err(sled_err("reading meta"))? {
            Some(v) => u64_from_be(META_TREE, &v)?,
            None => 0,
        };
        let from_log = match events.last().map_err(sled_err("reading events"))? {
            Some((k, _)) => u64_from_be(EVENTS_TREE, &k)?,
            None => 0,
        };
        let last_seq = from_meta.max(from_log);
        let group = GroupCommit::new(
            Box::new(SledFiles::new(db.clone(), dir)?),
            last_seq,
            options.probe,
        )?;
        tracing::info!(last_event_seq = last_seq, "store opened");
        Ok(SledStore {
            dir: dir.to_path_buf(),
            db,
            trees: RwLock::new(HashMap::new()),
            events,
            event_ids,
            expiry,
            meta,
            apply: Mutex::new(ApplyState { last_seq }),
            group,
            commits: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            apply_nanos: AtomicU64::new(0),
        })
    }

    fn tree(&self, name: String) -> Result<Tree> {
        if let Some(tree) = self
            .trees
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name)
        {
            return Ok(tree.clone());
        }
        let tree = self
            .db
            .open_tree(name.as_bytes())
            .map_err(sled_err("opening tree"))?;
        self.trees
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, tree.clone());
        Ok(tree)
    }

    fn table_tree(&self, table: &str) -> Result<Tree> {
        self.tree(format!("{TABLE_PREFIX}{table}"))
    }

    fn expiring_tree(&self, table: &str) -> Result<Tree> {
        self.tree(format!("{EXPIRING_PREFIX}{table}"))
    }

    /// Takes the apply lock for a write (and refuses if the store is poisoned).
    fn begin_write(&self) -> Result<WriteGuard<'_>> {
        let state = lock(&self.apply);
        let guard = WriteGuard {
            state,
            since: Instant::now(),
            held_nanos: &self.apply_nanos,
        };
        self.group.check_writable()?;
        Ok(guard)
    }

    /// Hands out the group-commit ticket while still holding `apply`, then waits for the sync.
    fn finish_write(&self, apply: WriteGuard<'_>) -> Result<()> {
        let ticket = self.group.record_applied(apply.state.last_seq)?;
        drop(apply);
        self.group.wait_durable(ticket)
    }

    fn is_empty_store(&self, apply: &ApplyState) -> Result<bool> {
        for name in self.db.tree_names() {
            let user_tree = name.starts_with(TABLE_PREFIX.as_bytes())
                || name.starts_with(EXPIRING_PREFIX.as_bytes());
            if user_tree
                && !self
                    .db
                    .open_tree(&name)
                    .map_err(sled_err("open tree"))?
                    .is_empty()
            {
                return Ok(false);
            }
        }
        Ok(self.events.is_empty()
            && self.event_ids.is_empty()
            && self.expiry.is_empty()
            && apply.last_seq == 0)
    }
}

impl Store for SledStore {
    fn commit_applied(&self, changes: ChangeSet) -> Result<(CommitReceipt, PendingSync)> {
        if changes.is_empty() {
            return Ok((CommitReceipt::default(), PendingSync::default()));
        }
        let _span = tracing::debug_span!(
            "store.commit",
            puts = changes.puts.len(),
            deletes = changes.deletes.len(),
            events = changes.events.len(),
            conditions = changes.conditions.len()
        )
        .entered();

        // Slots 0..4 are the internal trees; each table (ordinary or expiring) follows once.
        let mut trees = vec![
            self.events.clone(),
            self.event_ids.clone(),
            self.meta.clone(),
            self.expiry.clone(),
        ];
        let mut slots: HashMap<(bool, String), usize> = HashMap::new();
        let mut slot_for = |expiring: bool, table: &str| -> Result<usize> {
            if let Some(i) = slots.get(&(expiring, table.to_owned())) {
                return Ok(*i);
            }
            trees.push(if expiring {
                self.expiring_tree(table)?
            } else {
                self.table_tree(table)?
            });
            slots.insert((expiring, table.to_owned()), trees.len() - 1);
            Ok(trees.len() - 1)
        };
        let cond_slots = changes
            .conditions
            .iter()
            .map(|c| slot_for(c.is_expiring(), c.table()))
            .collect::<Result<Vec<_>>>()?;
        let del_slots = changes
            .deletes
            .iter()
            .map(|d| slot_for(false, &d.table))
            .collect::<Result<Vec<_>>>()?;
        let put_slots = changes
            .puts
            .iter()
            .map(|p| slot_for(false, &p.table))
            .collect::<Result<Vec<_>>>()?;
        let xdel_slots = changes
            .expiring_deletes
            .iter()
            .map(|d| slot_for(true, &d.table))
            .collect::<Result<Vec<_>>>()?;
        let xput_slots = changes
            .expiring_puts
            .iter()
            .map(|p| slot_for(true, &p.table))
            .collect::<Result<Vec<_>>>()?;
        let xput_values: Vec<Vec<u8>> = changes
            .expiring_puts
            .iter()
            .map(|p| encode_expiring(p.expires_at_ms, &p.value))
            .collect();
        let encoded: Vec<Vec<u8>> = changes.events.iter().map(encode_event).collect();
        let n_events = changes.events.len() as u64;

        let mut apply = self.begin_write()?;
        let first_seq = apply.state.last_seq + 1;
        let outcome = transact(&trees, |v| {
            for (cond, &i) in changes.conditions.iter().zip(&cond_slots) {
                let current = v[i].get(cond.key().as_bytes())?;
                let expiry = match (&current, cond.is_expiring()) {
                    (Some(raw), true) => match decode_expiring(cond.table(), raw) {
                        Ok((exp, _)) => Some(exp),
                        Err(e) => return abort(e),
                    },
                    _ => None,
                };
                if !cond.holds(current.as_deref(), expiry) {
                    return abort(cond.conflict());
                }
            }
            for (n, event) in changes.events.iter().enumerate() {
                if v[1].get(event.id.as_bytes())?.is_some() {
                    return abort(StoreError::conflict(
                        EVENT_LOG,
                        &event.id,
                        ConflictKind::DuplicateEventId,
                    ));
                }
                let seq = first_seq + n as u64;
                v[1].insert(event.id.as_bytes(), &seq.to_be_bytes()[..])?;
            }
            for (d, &i) in changes.deletes.iter().zip(&del_slots) {
                v[i].remove(d.key.as_bytes())?;
            }
            for (p, &i) in changes.puts.iter().zip(&put_slots) {
                v[i].insert(p.key.as_bytes(), p.value.as_slice())?;
            }
            // Expiring entries keep their slot in the expiry index (tree 3) in step.
            for (d, &i) in changes.expiring_deletes.iter().zip(&xdel_slots) {
                if let Some(old) = v[i].remove(d.key.as_bytes())? {
                    match decode_expiring(&d.table, &old) {
                        Ok((old_exp, _)) => {
                            v[3].remove(expiry_key(old_exp, &d.table, &d.key))?;
                        }
                        Err(e) => return abort(e),
                    }
                }
            }
            for ((p, &i), value) in changes
                .expiring_puts
                .iter()
                .zip(&xput_slots)
                .zip(&xput_values)
            {
                if let Some(old) = v[i].insert(p.key.as_bytes(), value.as_slice())? {
                    match decode_expiring(&p.table, &old) {
                        Ok((old_exp, _)) => {
                            v[3].remove(expiry_key(old_exp, &p.table, &p.key))?;
                        }
                        Err(e) => return abort(e),
                    }
                }
                v[3].insert(expiry_key(p.expires_at_ms, &p.table, &p.key), &[][..])?;
            }
            for (n, bytes) in encoded.iter().enumerate() {
                let seq = first_seq + n as u64;
                v[0].insert(&seq.to_be_bytes()[..], bytes.as_slice())?;
            }
            if n_events > 0 {
                let last = first_seq + n_events - 1;
                v[2].insert(META_LAST_SEQ, &last.to_be_bytes()[..])?;
            }
            Ok(())
        });
        if let Err(e) = outcome {
            if matches!(e, StoreError::Conflict { .. }) {
                self.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            return Err(e);
        }
        apply.state.last_seq += n_events;
        let receipt = CommitReceipt {
            event_seqs: (first_seq..first_seq + n_events).collect(),
        };
        let pending = if changes.has_writes() {
            PendingSync(Some(self.group.record_applied(apply.state.last_seq)?))
        } else {
            PendingSync(None)
        };
        drop(apply);
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok((receipt, pending))
    }

    fn wait_durable(&self, pending: PendingSync) -> Result<()> {
        match pending.0 {
            Some(ticket) => self.group.wait_durable(ticket),
            None => Ok(()),
        }
    }

    fn get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .table_tree(table)?
            .get(key.as_bytes())
            .map_err(sled_err("get"))?
            .map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        table: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let p = prefix.as_bytes();
        let end = prefix_end(p);
        let lower = match after {
            Some(a) if end.as_deref().is_some_and(|e| a.as_bytes() >= e) => return Ok(Vec::new()),
            Some(a) if a.as_bytes() >= p => Bound::Excluded(a.as_bytes().to_vec()),
            _ => Bound::Included(p.to_vec()),
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        let tree = self.table_tree(table)?;
        collect_rows(table, tree.range::<Vec<u8>, _>((lower, upper)), limit)
    }

    fn for_each_prefixed(
        &self,
        table: &str,
        prefix: &str,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        for item in self.table_tree(table)?.scan_prefix(prefix.as_bytes()) {
            let (k, v) = item.map_err(sled_err("scan"))?;
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn scan_rev(
        &self,
        table: &str,
        prefix: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let p = prefix.as_bytes();
        let end = prefix_end(p);
        let upper = match before {
            Some(b) if b.as_bytes() <= p => return Ok(Vec::new()),
            Some(b) if end.as_deref().is_none_or(|e| b.as_bytes() < e) => {
                Bound::Excluded(b.as_bytes().to_vec())
            }
            _ => end.map_or(Bound::Unbounded, Bound::Excluded),
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let tree = self.table_tree(table)?;
        let lower = Bound::Included(p.to_vec());
        collect_rows(table, tree.range::<Vec<u8>, _>((lower, upper)).rev(), limit)
    }

    fn count_prefix(&self, table: &str, prefix: &str) -> Result<u64> {
        let mut n = 0;
        for item in self.table_tree(table)?.scan_prefix(prefix.as_bytes()) {
            item.map_err(sled_err("count"))?;
            n += 1;
        }
        Ok(n)
    }

    fn events_after(&self, after_seq: u64, limit: usize) -> Result<Vec<StoredEvent>> {
        let durable = self.group.durable_event_seq();
        if limit == 0 || after_seq >= durable {
            return Ok(Vec::new());
        }
        let start = (after_seq + 1).to_be_bytes();
        let end = durable.to_be_bytes();
        let mut out = Vec::new();
        for item in self.events.range(start..=end).take(limit) {
            let (k, v) = item.map_err(sled_err("reading events"))?;
            out.push(decode_event(&k, &v)?);
        }
        Ok(out)
    }

    fn event_seq(&self, event_id: &str) -> Result<Option<u64>> {
        let Some(raw) = self
            .event_ids
            .get(event_id.as_bytes())
            .map_err(sled_err("reading event ids"))?
        else {
            return Ok(None);
        };
        let seq = u64_from_be(EVENT_IDS_TREE, &raw)?;
        Ok((seq <= self.group.durable_event_seq()).then_some(seq))
    }

    fn last_event_seq(&self) -> Result<u64> {
        Ok(self.group.durable_event_seq())
    }

    fn compact_events_before(&self, cutoff_ms: i64) -> Result<u64> {
        let _span = tracing::info_span!("store.compact_events", cutoff_ms).entered();
        let trees = [self.events.clone(), self.event_ids.clone()];
        let mut removed = 0u64;
        loop {
            let apply = self.begin_write()?;
            let durable = self.group.durable_event_seq();
            let mut batch: Vec<(u64, String)> = Vec::new();
            let mut reached_kept = false;
            for item in self.events.iter() {
                let (k, v) = item.map_err(sled_err("reading events"))?;
                let event = decode_event(&k, &v)?;
                if event.seq > durable || event.created_at_ms >= cutoff_ms {
                    reached_kept = true;
                    break;
                }
                batch.push((event.seq, event.id));
                if batch.len() == BATCH {
                    break;
                }
            }
            if batch.is_empty() {
                break;
            }
            transact(&trees, |v| {
                for (seq, id) in &batch {
                    v[0].remove(&seq.to_be_bytes()[..])?;
                    v[1].remove(id.as_bytes())?;
                }
                Ok(())
            })?;
            removed += batch.len() as u64;
            let full = batch.len() == BATCH;
            self.finish_write(apply)?;
            if reached_kept || !full {
                break;
            }
        }
        tracing::info!(removed, "compacted event log");
        Ok(removed)
    }

    fn get_expiring(&self, table: &str, key: &str, now_ms: i64) -> Result<Option<Vec<u8>>> {
        let Some(raw) = self
            .expiring_tree(table)?
            .get(key.as_bytes())
            .map_err(sled_err("get"))?
        else {
            return Ok(None);
        };
        let (exp, value) = decode_expiring(table, &raw)?;
        Ok((now_ms < exp).then_some(value))
    }

    fn purge_expired(&self, now_ms: i64) -> Result<u64> {
        let _span = tracing::debug_span!("store.purge_expired", now_ms).entered();
        let mut removed = 0u64;
        loop {
            let apply = self.begin_write()?;
            let mut batch = Vec::new();
            for item in self.expiry.iter().take(BATCH) {
                let (k, _) = item.map_err(sled_err("reading expiry index"))?;
                let (exp, table, key) = decode_expiry_key(&k)?;
                if exp > now_ms {
                    break;
                }
                batch.push((k, exp, table, key));
            }
            if batch.is_empty() {
                break;
            }
            let mut trees = vec![self.expiry.clone()];
            let mut slots: HashMap<&str, usize> = HashMap::new();
            let mut entry_slots = Vec::with_capacity(batch.len());
            for (_, _, table, _) in &batch {
                let i = match slots.get(table.as_str()) {
                    Some(i) => *i,
                    None => {
                        trees.push(self.expiring_tree(table)?);
                        slots.insert(table, trees.len() - 1);
                        trees.len() - 1
                    }
                };
                entry_slots.push(i);
            }
            let n = transact(&trees, |v| {
                let mut n = 0u64;
                for ((index_key, exp, table, key), &i) in batch.iter().zip(&entry_slots) {
                    v[0].remove(index_key)?;
                    if let Some(current) = v[i].get(key.as_bytes())? {
                        match decode_expiring(table, &current) {
                            // Only the entry this index slot describes; a newer put has its own.
                            Ok((cur_exp, _)) if cur_exp == *exp => {
                                v[i].remove(key.as_bytes())?;
                                n += 1;
                            }
                            Ok(_) => {}
                            Err(e) => return abort(e),
                        }
                    }
                }
                Ok(n)
            })?;
            removed += n;
            let full = batch.len() == BATCH;
            self.finish_write(apply)?;
            if !full {
                break;
            }
        }
        Ok(removed)
    }

    fn export(&self, sink: &mut dyn FnMut(ExportRecord) -> Result<()>) -> Result<()> {
        let _span = tracing::info_span!("store.export").entered();
        let apply = self.begin_write()?;
        // Everything applied so far becomes durable: the dump holds only acknowledged state.
        self.group.sync_now(apply.state.last_seq)?;
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
        for item in self.events.iter() {
            let (k, v) = item.map_err(sled_err("export"))?;
            sink(ExportRecord::Event(decode_event(&k, &v)?))?;
        }
        sink(ExportRecord::EventSeq {
            last_seq: apply.state.last_seq,
        })?;
        Ok(())
    }

    fn import(&self, records: &mut dyn Iterator<Item = Result<ExportRecord>>) -> Result<u64> {
        let _span = tracing::info_span!("store.import").entered();
        let mut apply = self.begin_write()?;
        if !self.is_empty_store(&apply.state)? {
            return Err(StoreError::NotEmpty);
        }
        let mut count = 0u64;
        let mut prev_seq: Option<u64> = None;
        let mut declared_last = 0u64;
        for record in records {
            match record? {
                ExportRecord::Entry { table, key, value } => {
                    self.table_tree(&table)?
                        .insert(key.as_bytes(), value)
                        .map_err(sled_err("import"))?;
                }
                ExportRecord::Expiring {
                    table,
                    key,
                    value,
                    expires_at_ms,
                } => {
                    self.expiring_tree(&table)?
                        .insert(key.as_bytes(), encode_expiring(expires_at_ms, &value))
                        .map_err(sled_err("import"))?;
                    self.expiry
                        .insert(expiry_key(expires_at_ms, &table, &key), &[][..])
                        .map_err(sled_err("import"))?;
                }
                ExportRecord::Event(event) => {
                    check_import_seq(prev_seq, &event)?;
                    let id_taken = self
                        .event_ids
                        .insert(event.id.as_bytes(), &event.seq.to_be_bytes()[..])
                        .map_err(sled_err("import"))?;
                    if id_taken.is_some() {
                        return Err(StoreError::corrupt(
                            "import",
                            format!("duplicate event id {}", event.id),
                        ));
                    }
                    let encoded = encode_event_fields(
                        &event.id,
                        &event.kind,
                        event.organization_id.as_deref(),
                        event.created_at_ms,
                        &event.body,
                    );
                    self.events
                        .insert(&event.seq.to_be_bytes()[..], encoded)
                        .map_err(sled_err("import"))?;
                    prev_seq = Some(event.seq);
                }
                ExportRecord::EventSeq { last_seq } => declared_last = declared_last.max(last_seq),
            }
            count += 1;
        }
        let last = declared_last.max(prev_seq.unwrap_or(0));
        self.meta
            .insert(META_LAST_SEQ, &last.to_be_bytes()[..])
            .map_err(sled_err("import"))?;
        apply.state.last_seq = last;
        self.finish_write(apply)?;
        tracing::info!(records = count, last_event_seq = last, "import finished");
        Ok(count)
    }

    fn stats(&self) -> StoreStats {
        let mut stats = StoreStats {
            commits: self.commits.load(Ordering::Relaxed),
            conflicts: self.conflicts.load(Ordering::Relaxed),
            apply_nanos: self.apply_nanos.load(Ordering::Relaxed),
            ..StoreStats::default()
        };
        self.group.fill_stats(&mut stats);
        stats
    }
}

/// One sled tree's contents, from [`SledStore::tree_stats`].
#[derive(Debug, Clone, Default)]
pub struct TreeStats {
    /// sled's tree name (`t:<table>`, `x:<table>`, `_events`, ...).
    pub name: String,
    /// Entries.
    pub entries: u64,
    /// Sum of the keys' lengths.
    pub key_bytes: u64,
    /// Sum of the values' lengths.
    pub value_bytes: u64,
}
