//! What a target's tasks share: the id map cache, the writes waiting for the next commit, the
//! in-flight tracker that turns out-of-order completions into a durable cursor, per-lane
//! queues for cross-object waits, and the commit itself.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use idbridge_directory::DirectoryEngine;
use idbridge_model::{Event, EventKind, Timestamp};
use idbridge_store::{ChangeSet, NewEvent, Store, StoreError};
use serde_json::json;
use tokio::sync::Notify;

use super::client::ScimClient;
use super::records::{
    object_key, BackfillPhase, IdMapEntry, ParkedObject, PushState, TargetOptions, IDMAP_TABLE,
    PARKED_TABLE, STATE_TABLE, TARGETS_TABLE,
};
use super::PushError;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A position in what the forwarder walks: a log seq, or a backfill object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pos {
    Seq(u64),
    User(String),
    Group(String),
}

/// Dispatched positions in order, with their completion flags: the done prefix is durable
/// progress (everything before it finished), whatever order the lanes finished in.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    base: u64,
    entries: VecDeque<(Pos, bool)>,
}

impl Tracker {
    pub fn push(&mut self, pos: Pos, done: bool) -> u64 {
        self.entries.push_back((pos, done));
        self.base + self.entries.len() as u64 - 1
    }

    pub fn done(&mut self, ordinal: u64) {
        if let Some(i) = ordinal.checked_sub(self.base) {
            if let Some(e) = usize::try_from(i)
                .ok()
                .and_then(|i| self.entries.get_mut(i))
            {
                e.1 = true;
            }
        }
    }

    pub fn pop_done(&mut self) -> Vec<Pos> {
        let mut out = Vec::new();
        while self.entries.front().is_some_and(|e| e.1) {
            if let Some((p, _)) = self.entries.pop_front() {
                out.push(p);
            }
            self.base += 1;
        }
        out
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The id map of one target in memory (loaded at start; every change is also a pending write).
#[derive(Debug, Default)]
pub(crate) struct Cache {
    pub map: HashMap<String, IdMapEntry>,
    /// Folded userName → local user id.
    pub user_names: HashMap<String, String>,
    pub parked: HashMap<String, ParkedObject>,
}

impl Cache {
    pub fn set(&mut self, local_id: &str, entry: Option<IdMapEntry>) {
        if let Some(old) = self.map.get(local_id) {
            if let Some(n) = &old.user_name {
                if self.user_names.get(n).map(String::as_str) == Some(local_id) {
                    self.user_names.remove(n);
                }
            }
        }
        match entry {
            Some(e) => {
                if let Some(n) = &e.user_name {
                    self.user_names.insert(n.clone(), local_id.to_owned());
                }
                self.map.insert(local_id.to_owned(), e);
            }
            None => {
                self.map.remove(local_id);
            }
        }
    }

    pub fn remote_id(&self, local_id: &str) -> Option<String> {
        self.map.get(local_id).map(|e| e.remote_id.clone())
    }
}

/// Writes waiting for the next commit.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub tracker: Tracker,
    pub idmap: HashMap<String, Option<IdMapEntry>>,
    pub parked: HashMap<String, Option<ParkedObject>>,
    pub events: Vec<NewEvent>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.idmap.is_empty() && self.parked.is_empty() && self.events.is_empty()
    }
}

/// What finishing one object changes.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub idmap: Vec<(String, Option<IdMapEntry>)>,
    /// `Some(parked)` parks, `None` clears a parked record.
    pub parked: Vec<(String, Option<ParkedObject>)>,
}

/// One lane's dispatched-but-unfinished ordinals (for cross-lane waits).
#[derive(Debug, Default)]
pub(crate) struct LaneQueue {
    pub unfinished: Mutex<VecDeque<u64>>,
    pub notify: Notify,
}

/// Async locks by key (a group's remote writes are serialized even when two lanes touch it).
#[derive(Debug, Default)]
pub(crate) struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    pub async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut map = lock(&self.locks);
            if map.len() > 4096 {
                map.retain(|_, m| Arc::strong_count(m) > 1);
            }
            map.entry(key.to_owned()).or_default().clone()
        };
        m.lock_owned().await
    }
}

/// Live counters (copied into the state at each commit).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    /// The state changed without a completion (a new last error): commit it anyway, so the
    /// status shows a target that keeps failing.
    pub dirty: std::sync::atomic::AtomicBool,
}

/// Everything a target's tasks share.
pub(crate) struct Shared {
    pub dir: String,
    pub organization_id: String,
    pub store: Arc<dyn Store>,
    pub engine: Arc<DirectoryEngine>,
    pub client: ScimClient,
    pub options: TargetOptions,
    pub endpoint: String,
    /// The target record as this run read it: commits require it unchanged, so a run whose
    /// target was changed or deleted cannot write after the change.
    pub record_bytes: Vec<u8>,
    pub cache: Mutex<Cache>,
    pub pending: Mutex<Pending>,
    pub progress: Notify,
    pub lanes: Vec<LaneQueue>,
    pub group_locks: KeyedLocks,
    pub state: Mutex<PushState>,
    pub counters: Counters,
    pub commit_lock: tokio::sync::Mutex<()>,
    /// Seqs up to here, and backfill objects up to `reserved_key` of `reserved_phase`, may
    /// have been sent before the last stop: look before creating them.
    pub recovery_seq: u64,
    pub recovery_backfill: Option<(BackfillPhase, String)>,
}

impl Shared {
    pub fn lane_of(&self, key: &str) -> usize {
        // FNV-1a: stable and cheap; any spread will do.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        usize::try_from(h % self.lanes.len().max(1) as u64).unwrap_or(0)
    }

    /// Records a finished object: its writes join the next commit and its ordinal is done.
    pub fn finish(&self, ordinal: Option<u64>, lane: Option<usize>, outcome: Outcome) {
        {
            let mut cache = lock(&self.cache);
            let mut p = lock(&self.pending);
            for (id, e) in outcome.idmap {
                cache.set(&id, e.clone());
                p.idmap.insert(id, e);
            }
            for (id, parked) in outcome.parked {
                let was = cache.parked.get(&id).cloned();
                match &parked {
                    Some(np) => {
                        // A parked object reports once per new reason, not on every retry.
                        let new_reason = was.as_ref().is_none_or(|w| w.reason != np.reason);
                        if new_reason {
                            p.events.push(self.failed_event(np));
                        }
                        let kept = match was {
                            Some(w) if w.reason == np.reason => ParkedObject {
                                since: w.since,
                                ..np.clone()
                            },
                            _ => np.clone(),
                        };
                        cache.parked.insert(id.clone(), kept.clone());
                        p.parked.insert(id, Some(kept));
                    }
                    None => {
                        if was.is_some() {
                            cache.parked.remove(&id);
                            p.parked.insert(id, None);
                        }
                    }
                }
            }
            if let Some(o) = ordinal {
                p.tracker.done(o);
            }
        }
        if let (Some(l), Some(o)) = (lane, ordinal) {
            if let Some(q) = self.lanes.get(l) {
                let mut u = lock(&q.unfinished);
                if let Some(i) = u.iter().position(|x| *x == o) {
                    u.remove(i);
                }
                drop(u);
                q.notify.notify_waiters();
            }
        }
        self.progress.notify_waiters();
    }

    fn failed_event(&self, p: &ParkedObject) -> NewEvent {
        let data = json!({
            "object": "directory_forward_failure",
            "directory_id": self.dir,
            "organization_id": self.organization_id,
            "endpoint": self.endpoint,
            "object_type": p.kind.object_name(),
            "object_id": p.id,
            "idp_id": p.idp_id,
            "code": p.code,
            "reason": p.reason,
            "status": p.status,
        });
        let event = Event::new(EventKind::DsyncForwardFailed, data);
        NewEvent::from_event(&event, Some(&self.organization_id))
    }

    pub fn record_error(&self, message: String) {
        metrics::counter!("idbridge_scim_push_request_failures_total", "directory" => self.dir.clone())
            .increment(1);
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        let mut st = lock(&self.state);
        st.last_error = Some(message);
        st.last_error_at = Some(Timestamp::now());
        self.counters.dirty.store(true, Ordering::Relaxed);
    }

    pub fn record_success(&self) {
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("idbridge_scim_push_requests_total", "directory" => self.dir.clone())
            .increment(1);
    }

    /// Commits the pending writes and the progress the tracker allows, with `adjust` applied
    /// to the state (e.g. a new dispatch reservation). Returns `Err(Stopped)` when the target
    /// was deleted meanwhile (nothing is written then).
    pub async fn commit(
        &self,
        adjust: impl FnOnce(&mut PushState) + Send,
    ) -> Result<(), PushError> {
        let _g = self.commit_lock.lock().await;
        self.counters.dirty.store(false, Ordering::Relaxed);
        let (idmap, parked, events, popped) = {
            let mut p = lock(&self.pending);
            let popped = p.tracker.pop_done();
            (
                std::mem::take(&mut p.idmap),
                std::mem::take(&mut p.parked),
                std::mem::take(&mut p.events),
                popped,
            )
        };
        let snapshot = {
            let mut st = lock(&self.state);
            for pos in popped {
                match pos {
                    Pos::Seq(s) => st.cursor = st.cursor.max(s),
                    Pos::User(id) => {
                        if let Some(b) = st.backfill.as_mut() {
                            b.users_done += 1;
                            b.done_through = Some(id);
                        }
                    }
                    Pos::Group(id) => {
                        if let Some(b) = st.backfill.as_mut() {
                            b.groups_done += 1;
                            b.done_through = Some(id);
                        }
                    }
                }
            }
            adjust(&mut st);
            st.sent_total = st
                .sent_total
                .max(self.counters.sent.load(Ordering::Relaxed));
            st.failed_total = st
                .failed_total
                .max(self.counters.failed.load(Ordering::Relaxed));
            st.clone()
        };
        let mut cs = ChangeSet::new();
        cs.require_equals(
            TARGETS_TABLE,
            self.dir.clone(),
            Some(self.record_bytes.clone()),
        );
        for (id, e) in &idmap {
            let key = object_key(&self.dir, id);
            match e {
                Some(e) => {
                    cs.put_json(IDMAP_TABLE, key, e)?;
                }
                None => {
                    cs.delete(IDMAP_TABLE, key);
                }
            }
        }
        for (id, p) in &parked {
            let key = object_key(&self.dir, id);
            match p {
                Some(p) => {
                    cs.put_json(PARKED_TABLE, key, p)?;
                }
                None => {
                    cs.delete(PARKED_TABLE, key);
                }
            }
        }
        for e in &events {
            cs.event(e.clone());
        }
        cs.put_json(STATE_TABLE, self.dir.clone(), &snapshot)?;
        let store = self.store.clone();
        let result = tokio::task::spawn_blocking(move || store.commit(cs))
            .await
            .map_err(|e| PushError::Join(e.to_string()))?;
        match result {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict { .. }) => Err(PushError::Stopped),
            Err(e) => {
                // Put the writes back (newer ones win) so the next commit carries them.
                let mut p = lock(&self.pending);
                for (k, v) in idmap {
                    p.idmap.entry(k).or_insert(v);
                }
                for (k, v) in parked {
                    p.parked.entry(k).or_insert(v);
                }
                let newer = std::mem::take(&mut p.events);
                p.events = events;
                p.events.extend(newer);
                Err(e.into())
            }
        }
    }

    /// Whether anything waits for a commit.
    pub fn commit_due(&self) -> bool {
        let p = lock(&self.pending);
        !p.is_empty()
            || p.tracker.entries.front().is_some_and(|e| e.1)
            || self.counters.dirty.load(Ordering::Relaxed)
    }

    /// In-flight positions.
    pub fn in_flight(&self) -> usize {
        lock(&self.pending).tracker.len()
    }

    /// Waits until the in-flight count is below `limit` (or a timeout passes).
    pub async fn wait_in_flight_below(&self, limit: usize) {
        loop {
            let notified = self.progress.notified();
            if self.in_flight() < limit {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }

    /// Waits until lane `lane` has finished every object dispatched before `ordinal`.
    pub async fn wait_lane_before(&self, lane: usize, ordinal: u64) {
        let Some(q) = self.lanes.get(lane) else {
            return;
        };
        loop {
            let notified = q.notify.notified();
            let ready = lock(&q.unfinished).front().is_none_or(|o| *o >= ordinal);
            if ready {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }
}
