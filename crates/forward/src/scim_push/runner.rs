//! One target's forwarder: the backfill of the directory's current state, then the event log
//! from the position taken when the backfill started, in lanes.
//!
//! Objects are spread over `concurrency` lanes by id; a lane runs its objects one at a time, so
//! each object's changes reach the target in log order while different objects go in parallel.
//! A membership change runs in its group's lane and first waits until the user's lane has
//! finished everything logged before it (the user's create). Completions are folded into the
//! durable cursor in dispatch order (the done prefix) and committed in batches together with
//! the id map, so a crash never leaves the cursor past an object whose remote id was not
//! recorded. Before dispatching a batch the forwarder durably reserves it: after a crash,
//! objects of the reserved window are looked up before they are created.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idbridge_directory::{Cursor, DirectoryEngine, Order, PageRequest};
use idbridge_model::Timestamp;
use idbridge_store::{Store, StoredEvent};
use serde::Deserialize;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::client::{ClientSettings, ScimClient};
use super::reconcile::{ReconcileReport, ReconcileRun};
use super::records::{
    directory_prefix, Backfill, BackfillPhase, IdMapEntry, ParkedObject, PushState, TargetRecord,
    IDMAP_TABLE, PARKED_TABLE, STATE_TABLE,
};
use super::shared::{lock, Cache, KeyedLocks, LaneQueue, Pending, Pos, Shared};
use super::sync::{Item, Work};
use super::PushError;

/// Objects dispatched but not yet durable, at most.
const MAX_IN_FLIGHT: usize = 4096;
/// Log entries read at once (and reserved by one commit).
const LOG_BATCH: usize = 512;
/// Backfill page size (and reservation).
const BACKFILL_PAGE: usize = 500;
/// How often finished work is committed (the store group-commits concurrent writers anyway).
const COMMIT_INTERVAL: Duration = Duration::from_millis(20);
/// How often an idle forwarder looks at the log.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What the admin API sees of a running forwarder.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub phase: Mutex<String>,
    pub reconcile: Mutex<ReconcileSlot>,
    pub wake: Notify,
}

/// A reconcile's life.
#[derive(Debug, Clone, Default)]
pub(crate) enum ReconcileSlot {
    #[default]
    Idle,
    Queued {
        dry_run: bool,
    },
    Running(ReconcileRun),
    Done(Box<ReconcileReport>),
}

impl Live {
    pub fn set_phase(&self, p: impl Into<String>) {
        *lock(&self.phase) = p.into();
    }
}

/// Everything a target's run needs.
pub(crate) struct RunCtx {
    pub store: Arc<dyn Store>,
    pub engine: Arc<DirectoryEngine>,
    pub record: TargetRecord,
    pub record_bytes: Vec<u8>,
    pub token: String,
    pub live: Arc<Live>,
}

/// The part of an event body the forwarder reads.
#[derive(Deserialize)]
struct EventBody {
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    id: Option<String>,
    directory_id: Option<String>,
    user: Option<IdOnly>,
    group: Option<IdOnly>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

/// The work an event asks for in directory `dir` (None: not this directory's, or not a change
/// the target sees).
fn work_of(event: &StoredEvent, dir: &str) -> Option<Work> {
    let kind = event.kind.as_str();
    let what = kind.strip_prefix("dsync.")?;
    let relevant = matches!(
        what,
        "user.created"
            | "user.updated"
            | "user.deleted"
            | "group.created"
            | "group.updated"
            | "group.deleted"
            | "group.user_added"
            | "group.user_removed"
    );
    if !relevant {
        return None;
    }
    let body: EventBody = match serde_json::from_slice(&event.body) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(event_id = %event.id, error = %e, "unreadable event skipped by the SCIM push");
            return None;
        }
    };
    if body.data.directory_id.as_deref() != Some(dir) {
        return None;
    }
    match what {
        "group.user_added" | "group.user_removed" => Some(Work::Membership {
            group: body.data.group?.id,
            user: body.data.user?.id,
            added: what == "group.user_added",
        }),
        w if w.starts_with("user.") => Some(Work::User {
            id: body.data.id?,
            snapshot: None,
        }),
        _ => Some(Work::Group {
            id: body.data.id?,
            snapshot: None,
        }),
    }
}

/// Loads a directory's id map and parked objects.
fn load_cache(store: &dyn Store, dir: &str) -> Result<Cache, PushError> {
    let prefix = directory_prefix(dir);
    let mut cache = Cache::default();
    let mut bad = 0u64;
    store.for_each_prefixed(IDMAP_TABLE, &prefix, &mut |k, v| {
        let local = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
        match serde_json::from_slice::<IdMapEntry>(v) {
            Ok(e) => cache.set(&local, Some(e)),
            Err(_) => bad += 1,
        }
        true
    })?;
    store.for_each_prefixed(PARKED_TABLE, &prefix, &mut |k, v| {
        let local = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
        match serde_json::from_slice::<ParkedObject>(v) {
            Ok(p) => {
                cache.parked.insert(local, p);
            }
            Err(_) => bad += 1,
        }
        true
    })?;
    if bad > 0 {
        tracing::error!(directory_id = dir, bad, "corrupt SCIM push rows ignored");
    }
    Ok(cache)
}

/// Runs a target until it is stopped (the task is aborted) or fails.
pub(crate) async fn run_target(ctx: RunCtx) -> Result<(), PushError> {
    let dir = ctx.record.directory_id.clone();
    let span =
        tracing::info_span!("scim_push", directory_id = %dir, endpoint = %ctx.record.endpoint);
    run_inner(ctx).instrument(span).await
}

async fn blocking<T, F>(store: &Arc<dyn Store>, f: F) -> Result<T, PushError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store) -> Result<T, PushError> + Send + 'static,
{
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|e| PushError::Join(e.to_string()))?
}

async fn run_inner(ctx: RunCtx) -> Result<(), PushError> {
    let dir = ctx.record.directory_id.clone();
    ctx.live.set_phase("starting");
    let engine = ctx.engine.clone();
    let d = dir.clone();
    let organization_id = tokio::task::spawn_blocking(move || engine.get_directory(&d))
        .await
        .map_err(|e| PushError::Join(e.to_string()))?
        .map_err(|e| PushError::Directory(e.to_string()))?
        .directory
        .organization_id;
    let d = dir.clone();
    let (state, cache) = blocking(&ctx.store, move |store| {
        let state: Option<PushState> = match store.get(STATE_TABLE, &d)? {
            Some(b) => Some(serde_json::from_slice(&b).map_err(|e| PushError::Corrupt {
                table: STATE_TABLE,
                key: d.clone(),
                detail: e.to_string(),
            })?),
            None => None,
        };
        Ok((state, load_cache(store, &d)?))
    })
    .await?;
    let state = match state {
        Some(s) => s,
        None => {
            // Written by the admin service on create; without it (a hand-made record) start
            // like a new target: backfill now, then the log from here.
            let last = blocking(&ctx.store, |s| Ok(s.last_event_seq()?)).await?;
            PushState {
                cursor: last,
                reserved: last,
                backfill: Some(new_backfill(last)),
                ..PushState::default()
            }
        }
    };
    let opts = ctx.record.options.clone();
    let client = ScimClient::new(&ClientSettings {
        endpoint: ctx.record.endpoint.clone(),
        token: ctx.token.clone(),
        connect_timeout: Duration::from_millis(opts.connect_timeout_ms),
        request_timeout: Duration::from_millis(opts.request_timeout_ms),
        max_idle: usize::from(opts.concurrency),
    })
    .map_err(PushError::Client)?;
    let lanes = usize::from(opts.concurrency.max(1));
    let recovery_backfill = state
        .backfill
        .as_ref()
        .and_then(|b| b.reserved_through.as_ref().map(|k| (b.phase, k.clone())));
    tracing::info!(
        cursor = state.cursor,
        reserved = state.reserved,
        backfill = state.backfill.is_some(),
        forwarded = cache.map.len(),
        parked = cache.parked.len(),
        "SCIM push started"
    );
    let shared = Arc::new(Shared {
        dir: dir.clone(),
        organization_id,
        store: ctx.store.clone(),
        engine: ctx.engine.clone(),
        client,
        options: opts,
        endpoint: ctx.record.endpoint.clone(),
        record_bytes: ctx.record_bytes.clone(),
        cache: Mutex::new(cache),
        pending: Mutex::new(Pending::default()),
        progress: Notify::new(),
        lanes: (0..lanes).map(|_| LaneQueue::default()).collect(),
        group_locks: KeyedLocks::default(),
        recovery_seq: state.reserved,
        recovery_backfill,
        state: Mutex::new(state),
        counters: Default::default(),
        commit_lock: tokio::sync::Mutex::new(()),
    });
    {
        let st = lock(&shared.state);
        shared
            .counters
            .sent
            .store(st.sent_total, std::sync::atomic::Ordering::Relaxed);
        shared
            .counters
            .failed
            .store(st.failed_total, std::sync::atomic::Ordering::Relaxed);
    }
    // The lane workers and the committer live in this set: aborting the run aborts them.
    let mut tasks: JoinSet<Result<(), PushError>> = JoinSet::new();
    let mut senders = Vec::with_capacity(lanes);
    for lane in 0..lanes {
        let (tx, mut rx) = mpsc::channel::<Item>(256);
        senders.push(tx);
        let sh = shared.clone();
        tasks.spawn(async move {
            while let Some(item) = rx.recv().await {
                let out = sh.process(&item).await;
                sh.finish(Some(item.ordinal), Some(lane), out);
            }
            Ok(())
        });
    }
    let sh = shared.clone();
    tasks.spawn(async move {
        loop {
            tokio::time::sleep(COMMIT_INTERVAL).await;
            if sh.commit_due() {
                match sh.commit(|_| {}).await {
                    Ok(()) => {}
                    Err(PushError::Stopped) => return Err(PushError::Stopped),
                    Err(e) => {
                        tracing::warn!(error = %e, "committing SCIM push progress failed; retrying")
                    }
                }
            }
        }
    });
    let mut d = Dispatcher {
        shared: shared.clone(),
        senders,
        live: ctx.live.clone(),
        last_lag_at: Instant::now() - Duration::from_secs(10),
    };
    let result = tokio::select! {
        r = d.run() => r,
        Some(r) = tasks.join_next() => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(PushError::Join(e.to_string())),
        },
    };
    tasks.abort_all();
    result
}

pub(crate) fn new_backfill(start_seq: u64) -> Backfill {
    Backfill {
        start_seq,
        phase: BackfillPhase::Users,
        done_through: None,
        reserved_through: None,
        users_done: 0,
        users_total: 0,
        groups_done: 0,
        groups_total: 0,
        started_at: Timestamp::now(),
    }
}

struct Dispatcher {
    shared: Arc<Shared>,
    senders: Vec<mpsc::Sender<Item>>,
    live: Arc<Live>,
    last_lag_at: Instant,
}

impl Dispatcher {
    async fn run(&mut self) -> Result<(), PushError> {
        loop {
            let backfill = lock(&self.shared.state).backfill.clone();
            if let Some(b) = backfill {
                self.live.set_phase("backfilling");
                self.backfill(b).await?;
                continue;
            }
            self.live.set_phase("forwarding");
            self.follow_log().await?;
        }
    }

    async fn dispatch(
        &self,
        pos: Pos,
        key: &str,
        maybe_sent: bool,
        work: Work,
    ) -> Result<(), PushError> {
        self.shared.wait_in_flight_below(MAX_IN_FLIGHT).await;
        let lane = self.shared.lane_of(key);
        let ordinal = lock(&self.shared.pending).tracker.push(pos, false);
        if let Some(q) = self.shared.lanes.get(lane) {
            lock(&q.unfinished).push_back(ordinal);
        }
        let item = Item {
            ordinal,
            lane,
            maybe_sent,
            work,
        };
        match self.senders.get(lane) {
            Some(tx) => tx
                .send(item)
                .await
                .map_err(|_| PushError::Join("a SCIM push lane stopped".into())),
            None => Err(PushError::Join("no such lane".into())),
        }
    }

    /// Waits until every dispatched object is done and durable.
    async fn drain(&self) -> Result<(), PushError> {
        self.shared.wait_in_flight_below(1).await;
        self.shared.commit(|_| {}).await
    }

    async fn backfill(&mut self, b: Backfill) -> Result<(), PushError> {
        let sh = self.shared.clone();
        if b.users_total == 0 && b.groups_total == 0 && b.done_through.is_none() {
            let engine = sh.engine.clone();
            let d = sh.dir.clone();
            let counts = tokio::task::spawn_blocking(move || engine.counts(&d))
                .await
                .map_err(|e| PushError::Join(e.to_string()))?
                .map_err(|e| PushError::Directory(e.to_string()))?;
            sh.commit(move |st| {
                if let Some(b) = st.backfill.as_mut() {
                    b.users_total = counts.active + counts.inactive;
                    b.groups_total = counts.groups;
                }
            })
            .await?;
            tracing::info!(
                users = counts.active + counts.inactive,
                groups = counts.groups,
                start_seq = b.start_seq,
                "backfill started"
            );
        }
        if b.phase == BackfillPhase::Users {
            self.backfill_phase(BackfillPhase::Users, b.done_through.clone())
                .await?;
            self.drain().await?;
            sh.commit(|st| {
                if let Some(b) = st.backfill.as_mut() {
                    b.phase = BackfillPhase::Groups;
                    b.done_through = None;
                    b.reserved_through = None;
                }
            })
            .await?;
            self.backfill_phase(BackfillPhase::Groups, None).await?;
        } else {
            self.backfill_phase(BackfillPhase::Groups, b.done_through.clone())
                .await?;
        }
        self.drain().await?;
        let done = {
            let st = lock(&sh.state);
            st.backfill
                .as_ref()
                .map(|b| b.users_done + b.groups_done)
                .unwrap_or(0)
        };
        sh.commit(move |st| {
            st.backfill = None;
            st.backfill_finished_at = Some(Timestamp::now());
            st.backfill_objects = done;
        })
        .await?;
        tracing::info!(objects = done, "backfill finished; following the event log");
        Ok(())
    }

    async fn backfill_phase(
        &mut self,
        phase: BackfillPhase,
        mut after: Option<String>,
    ) -> Result<(), PushError> {
        let sh = self.shared.clone();
        loop {
            let engine = sh.engine.clone();
            let d = sh.dir.clone();
            let cursor = after.clone().map(Cursor::After).unwrap_or(Cursor::None);
            let page = PageRequest {
                limit: BACKFILL_PAGE,
                order: Order::Asc,
                cursor,
            };
            // (id, work) of the page.
            let items: Vec<(String, Work)> = tokio::task::spawn_blocking(move || {
                Ok::<_, idbridge_directory::EngineError>(match phase {
                    BackfillPhase::Users => engine
                        .list_users(&d, None, &page)?
                        .data
                        .into_iter()
                        .map(|u| {
                            (
                                u.user.id.clone(),
                                Work::User {
                                    id: u.user.id.clone(),
                                    snapshot: Some(Box::new(u)),
                                },
                            )
                        })
                        .collect(),
                    BackfillPhase::Groups => engine
                        .list_groups(&d, None, &page)?
                        .data
                        .into_iter()
                        .map(|g| {
                            (
                                g.group.id.clone(),
                                Work::Group {
                                    id: g.group.id.clone(),
                                    snapshot: Some(Box::new(g)),
                                },
                            )
                        })
                        .collect(),
                })
            })
            .await
            .map_err(|e| PushError::Join(e.to_string()))?
            .map_err(|e| PushError::Directory(e.to_string()))?;
            let Some((last, _)) = items.last() else {
                return Ok(());
            };
            let last = last.clone();
            let reserved = lock(&sh.state)
                .backfill
                .as_ref()
                .and_then(|b| b.reserved_through.clone());
            if reserved.as_deref().is_none_or(|r| r < last.as_str()) {
                let l = last.clone();
                sh.commit(move |st| {
                    if let Some(b) = st.backfill.as_mut() {
                        b.reserved_through = Some(l);
                    }
                })
                .await?;
            }
            for (id, work) in items {
                let maybe = sh
                    .recovery_backfill
                    .as_ref()
                    .is_some_and(|(p, k)| *p == phase && id.as_str() <= k.as_str());
                let pos = match phase {
                    BackfillPhase::Users => Pos::User(id.clone()),
                    BackfillPhase::Groups => Pos::Group(id.clone()),
                };
                self.dispatch(pos, &id, maybe, work).await?;
            }
            after = Some(last);
        }
    }

    async fn follow_log(&mut self) -> Result<(), PushError> {
        let sh = self.shared.clone();
        let mut dispatched = lock(&sh.state).cursor;
        loop {
            self.take_reconcile().await?;
            let after = dispatched;
            let (batch, last_seq) = blocking(&sh.store, move |s| {
                Ok((s.events_after(after, LOG_BATCH)?, s.last_event_seq()?))
            })
            .await?;
            self.report_lag(last_seq).await;
            let Some(first) = batch.first() else {
                let wake = self.live.wake.notified();
                let _ = tokio::time::timeout(POLL_INTERVAL, wake).await;
                continue;
            };
            if first.seq > dispatched.saturating_add(1) {
                // Retention removed events this target never saw: push the current state again.
                self.drain().await?;
                tracing::warn!(
                    cursor = dispatched,
                    oldest_kept = first.seq,
                    "events behind the SCIM push cursor were compacted away; starting a new backfill"
                );
                sh.commit(move |st| {
                    st.backfill = Some(new_backfill(last_seq));
                    st.cursor = last_seq;
                    st.reserved = last_seq;
                })
                .await?;
                return Ok(());
            }
            let end = batch.last().map(|e| e.seq).unwrap_or(dispatched);
            if end > lock(&sh.state).reserved {
                sh.commit(move |st| st.reserved = st.reserved.max(end))
                    .await?;
            }
            for event in &batch {
                match work_of(event, &sh.dir) {
                    Some(work) => {
                        let key = match &work {
                            Work::User { id, .. } | Work::Group { id, .. } => id.clone(),
                            Work::Membership { group, .. } => group.clone(),
                        };
                        let maybe = event.seq <= sh.recovery_seq;
                        self.dispatch(Pos::Seq(event.seq), &key, maybe, work)
                            .await?;
                    }
                    None => {
                        lock(&sh.pending).tracker.push(Pos::Seq(event.seq), true);
                    }
                }
                dispatched = event.seq;
            }
        }
    }

    async fn report_lag(&mut self, last_seq: u64) {
        if self.last_lag_at.elapsed() < Duration::from_millis(500) {
            return;
        }
        self.last_lag_at = Instant::now();
        let (cursor, backfill_left) = {
            let st = lock(&self.shared.state);
            let left = st.backfill.as_ref().map(|b| {
                (b.users_total + b.groups_total).saturating_sub(b.users_done + b.groups_done)
            });
            (st.cursor, left)
        };
        let dir = self.shared.dir.clone();
        let lag = last_seq.saturating_sub(cursor);
        metrics::gauge!("idbridge_scim_push_lag_events", "directory" => dir.clone())
            .set(lag as f64);
        let secs = if lag == 0 {
            0.0
        } else {
            match blocking(&self.shared.store, move |s| Ok(s.events_after(cursor, 1)?)).await {
                Ok(e) => e
                    .first()
                    .map(|e| {
                        ((Timestamp::now().as_millis() - e.created_at_ms).max(0) as f64) / 1000.0
                    })
                    .unwrap_or(0.0),
                Err(_) => 0.0,
            }
        };
        metrics::gauge!("idbridge_scim_push_lag_seconds", "directory" => dir.clone()).set(secs);
        let parked = lock(&self.shared.cache).parked.len();
        metrics::gauge!("idbridge_scim_push_parked", "directory" => dir.clone()).set(parked as f64);
        metrics::gauge!("idbridge_scim_push_backfill_remaining", "directory" => dir)
            .set(backfill_left.unwrap_or(0) as f64);
    }

    /// Runs a requested reconcile, after the work in flight is done.
    async fn take_reconcile(&mut self) -> Result<(), PushError> {
        let dry_run = match &*lock(&self.live.reconcile) {
            ReconcileSlot::Queued { dry_run, .. } => *dry_run,
            _ => return Ok(()),
        };
        self.drain().await?;
        let phase = lock(&self.live.phase).clone();
        self.live.set_phase("reconciling");
        let report = super::reconcile::run(&self.shared, &self.live, dry_run).await;
        self.drain().await?;
        *lock(&self.live.reconcile) = ReconcileSlot::Done(Box::new(report));
        self.live.set_phase(phase);
        Ok(())
    }
}
