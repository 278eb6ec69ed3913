//! [`ScimPush`]: the admin service behind `PUT|GET|DELETE /admin/directories/{id}/forward`,
//! the config file and the CLI, and the scheduler that runs one forwarder task per target.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idbridge_directory::{DirectoryEngine, EngineError};
use idbridge_model::Timestamp;
use idbridge_secrets::SecretBox;
use idbridge_store::{ChangeSet, Store, StoreError};
use serde::Serialize;
use tokio::task::JoinHandle;

use super::reconcile::{ReconcileReport, ReconcileRun};
use super::records::{
    directory_prefix, token_context, BackfillPhase, ParkedObject, PushState, TargetOptions,
    TargetRecord, IDMAP_TABLE, PARKED_TABLE, STATE_TABLE, TARGETS_TABLE,
};
use super::runner::{new_backfill, run_target, Live, ReconcileSlot, RunCtx};
use super::shared::lock;
use super::PushError;

/// How often the scheduler re-reads the targets (a change reaches the forwarder this fast).
const SCHEDULE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a failed run waits before it is started again.
const RESTART_DELAY: Duration = Duration::from_secs(5);
/// Most parked objects listed by the status view.
const PARKED_SHOWN: usize = 100;
/// Rows deleted per commit when a mapping is purged.
const PURGE_CHUNK: usize = 2000;

/// What `PUT /admin/directories/{id}/forward` (or the config file, or the CLI) asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInput {
    /// The remote SCIM base URL.
    pub endpoint: String,
    /// The bearer token (sealed before it is stored; never shown again).
    pub bearer_token: String,
    /// Options.
    pub options: TargetOptions,
    /// `api` or `config`.
    pub source: String,
}

/// Why an admin operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No such directory, or no target set.
    #[error("{what} not found: {id}")]
    NotFound {
        /// `directory` or `forward target`.
        what: &'static str,
        /// The id.
        id: String,
    },
    /// A field is wrong (answered 422 naming it).
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// A short code (`required`, `invalid_url`, ...).
        code: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
    /// The request conflicts with the current state.
    #[error("{message}")]
    Conflict {
        /// A short code.
        code: &'static str,
        /// What to do.
        message: String,
    },
    /// The server has no secret key to seal the token with.
    #[error("no secret key is configured, so the bearer token cannot be stored sealed: set IDBRIDGE_SECRET_KEY or let the server create <data_dir>/secret.key")]
    NoSecretKey,
    /// Sealing or opening failed.
    #[error("secret box: {0}")]
    Secret(String),
    /// Store or engine failure.
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError::Internal(e.to_string())
    }
}

fn engine_error(e: EngineError, dir: &str) -> AdminError {
    match e {
        EngineError::NotFound { .. } => AdminError::NotFound {
            what: "directory",
            id: dir.to_owned(),
        },
        other => AdminError::Internal(other.to_string()),
    }
}

/// What `set_target` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    /// A new target (a backfill starts).
    Created,
    /// Token or options changed (the forwarder restarts from its cursor).
    Updated,
    /// The endpoint changed: the mapping was reset and a new backfill starts.
    Reset,
    /// Nothing differed.
    Unchanged,
}

/// Backfill progress as the status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BackfillView {
    /// `running` or `done`.
    pub state: &'static str,
    /// `users` or `groups` while running.
    pub phase: Option<BackfillPhase>,
    /// Users done.
    pub users_done: u64,
    /// Users when it started.
    pub users_total: u64,
    /// Groups done.
    pub groups_done: u64,
    /// Groups when it started.
    pub groups_total: u64,
    /// 0–100.
    pub percent: f64,
    /// Start.
    pub started_at: Option<Timestamp>,
    /// End.
    pub finished_at: Option<Timestamp>,
}

/// A reconcile as the status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileView {
    /// `queued`, `running`, `done`.
    pub state: &'static str,
    /// Report only.
    pub dry_run: bool,
    /// While running.
    pub progress: Option<ReconcileRun>,
    /// When done.
    pub report: Option<ReconcileReport>,
}

/// `GET /admin/directories/{id}/forward`.
#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    /// Always `directory_forward`.
    pub object: &'static str,
    /// The directory.
    pub directory_id: String,
    /// The remote SCIM base URL.
    pub endpoint: String,
    /// A token is stored (it is never shown).
    pub has_bearer_token: bool,
    /// Options.
    #[serde(flatten)]
    pub options: TargetOptions,
    /// `config` or `api`.
    pub source: String,
    /// `starting`, `backfilling`, `forwarding`, `reconciling`, `not running`, `stopped: ...`.
    pub state: String,
    /// Events in the log the forwarder has not finished.
    pub lag_events: u64,
    /// Age of the oldest of them (0 when none).
    pub lag_seconds: f64,
    /// Requests that succeeded.
    pub sent: u64,
    /// Requests that failed (each retry counts).
    pub failed: u64,
    /// Objects not forwarded.
    pub parked: u64,
    /// Users and groups with a remote id.
    pub forwarded: u64,
    /// The last failure.
    pub last_error: Option<String>,
    /// When.
    pub last_error_at: Option<Timestamp>,
    /// The log position the forwarder finished.
    pub cursor: u64,
    /// The running or last backfill.
    pub backfill: Option<BackfillView>,
    /// The first parked objects, with their reasons.
    pub parked_objects: Vec<ParkedObject>,
    /// The running or last reconcile.
    pub reconcile: Option<ReconcileView>,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
}

/// A running target task.
struct Running {
    bytes: Vec<u8>,
    handle: JoinHandle<()>,
    live: Arc<Live>,
    ended_at: Arc<Mutex<Option<Instant>>>,
}

/// The SCIM push service and scheduler of one server.
pub struct ScimPush {
    store: Arc<dyn Store>,
    engine: Arc<DirectoryEngine>,
    secrets: Option<SecretBox>,
    running: Mutex<HashMap<String, Running>>,
}

impl std::fmt::Debug for ScimPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScimPush").finish_non_exhaustive()
    }
}

impl Drop for ScimPush {
    fn drop(&mut self) {
        for (_, r) in lock(&self.running).drain() {
            r.handle.abort();
        }
    }
}

/// Whether a host is a loopback address (`http://` is allowed there).
fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(a) => IpAddr::V4(*a).is_loopback(),
        url::Host::Ipv6(a) => IpAddr::V6(*a).is_loopback(),
    }
}

/// Checks and normalizes an endpoint: `https://` (or `http://` on loopback, or when
/// `allow_insecure_http`), a host, no credentials, query or fragment; no trailing `/`.
pub fn validate_endpoint(endpoint: &str, allow_insecure_http: bool) -> Result<String, AdminError> {
    let invalid = |code, message: String| AdminError::Invalid {
        field: "endpoint",
        code,
        message,
    };
    let trimmed = endpoint.trim();
    if trimmed.is_empty() {
        return Err(invalid(
            "required",
            "the remote SCIM base URL is required".into(),
        ));
    }
    let url = url::Url::parse(trimmed).map_err(|e| {
        invalid(
            "invalid_url",
            format!("not a URL ({e}): give the SCIM base URL the target shows, e.g. https://api.workos.com/scim/v2.0/<key>"),
        )
    })?;
    let host = url
        .host()
        .ok_or_else(|| invalid("invalid_url", "the URL has no host".into()))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback_host(&host) || allow_insecure_http => {}
        "http" => {
            return Err(invalid(
                "insecure_url",
                "plain http:// sends the bearer token in clear text; use https://, or set \
                 allow_insecure_http = true for a trusted network"
                    .into(),
            ))
        }
        other => {
            return Err(invalid(
                "invalid_url",
                format!("scheme {other:?} is not http(s)"),
            ))
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "invalid_url",
            "credentials in the URL are refused: the token goes in bearer_token".into(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            "invalid_url",
            "the SCIM base URL takes no query or fragment".into(),
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Checks a token.
fn validate_token(token: &str) -> Result<(), AdminError> {
    let invalid = |code, message: &str| AdminError::Invalid {
        field: "bearer_token",
        code,
        message: message.to_owned(),
    };
    if token.trim().is_empty() {
        return Err(invalid(
            "required",
            "the bearer token the target shows is required",
        ));
    }
    if token.len() > 4096 {
        return Err(invalid(
            "too_long",
            "the bearer token is longer than 4096 characters",
        ));
    }
    if token.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid(
            "invalid_token",
            "the bearer token contains spaces or control characters",
        ));
    }
    Ok(())
}

/// Checks options.
pub fn validate_options(o: &TargetOptions) -> Result<(), AdminError> {
    if !(1..=64).contains(&o.concurrency) {
        return Err(AdminError::Invalid {
            field: "concurrency",
            code: "out_of_range",
            message: "concurrency must be between 1 and 64".into(),
        });
    }
    for (field, v) in [
        ("connect_timeout_ms", o.connect_timeout_ms),
        ("request_timeout_ms", o.request_timeout_ms),
    ] {
        if !(100..=600_000).contains(&v) {
            return Err(AdminError::Invalid {
                field,
                code: "out_of_range",
                message: format!("{field} must be between 100 and 600000"),
            });
        }
    }
    if let Some(s) = &o.custom_attributes_schema {
        if s.trim().is_empty()
            || s.len() > 300
            || !s.contains(':')
            || s.contains(char::is_whitespace)
        {
            return Err(AdminError::Invalid {
                field: "custom_attributes_schema",
                code: "invalid_urn",
                message: "custom_attributes_schema must be a schema URN (or null to send no \
                          custom attributes beyond the enterprise extension)"
                    .into(),
            });
        }
    }
    Ok(())
}

impl ScimPush {
    /// A service over the server's store and directory engine; `secrets` seals tokens.
    pub fn new(
        store: Arc<dyn Store>,
        engine: Arc<DirectoryEngine>,
        secrets: Option<SecretBox>,
    ) -> Arc<Self> {
        Arc::new(ScimPush {
            store,
            engine,
            secrets,
            running: Mutex::new(HashMap::new()),
        })
    }

    fn load_record(&self, dir: &str) -> Result<Option<(TargetRecord, Vec<u8>)>, AdminError> {
        match self.store.get(TARGETS_TABLE, dir)? {
            Some(b) => {
                let rec = serde_json::from_slice(&b).map_err(|e| {
                    AdminError::Internal(format!("corrupt forward target {dir}: {e}"))
                })?;
                Ok(Some((rec, b)))
            }
            None => Ok(None),
        }
    }

    fn load_state(&self, dir: &str) -> Result<PushState, AdminError> {
        match self.store.get(STATE_TABLE, dir)? {
            Some(b) => serde_json::from_slice(&b)
                .map_err(|e| AdminError::Internal(format!("corrupt forward state {dir}: {e}"))),
            None => Ok(PushState::default()),
        }
    }

    fn purge_rows(&self, dir: &str) -> Result<(), AdminError> {
        let prefix = directory_prefix(dir);
        for table in [IDMAP_TABLE, PARKED_TABLE] {
            loop {
                let rows = self.store.scan(table, &prefix, None, PURGE_CHUNK)?;
                if rows.is_empty() {
                    break;
                }
                let mut cs = ChangeSet::new();
                for (k, _) in rows {
                    cs.delete(table, k);
                }
                self.store.commit(cs)?;
            }
        }
        Ok(())
    }

    /// Creates or replaces a directory's target. Blocking.
    ///
    /// Same endpoint: the token and options change, the mapping and cursor stay. Another
    /// endpoint: the mapping is purged and a new backfill starts (the remote ids belong to the
    /// old target).
    pub fn set_target(&self, dir: &str, input: TargetInput) -> Result<SetOutcome, AdminError> {
        self.engine
            .get_directory(dir)
            .map_err(|e| engine_error(e, dir))?;
        let endpoint = validate_endpoint(&input.endpoint, input.options.allow_insecure_http)?;
        validate_token(&input.bearer_token)?;
        validate_options(&input.options)?;
        let secrets = self.secrets.as_ref().ok_or(AdminError::NoSecretKey)?;
        let context = token_context(dir);
        let now = Timestamp::now();
        let existing = self.load_record(dir)?;
        let sealed = secrets
            .seal(&context, input.bearer_token.as_bytes())
            .map_err(|e| AdminError::Secret(e.to_string()))?;
        let mut outcome = SetOutcome::Created;
        if let Some((old, old_bytes)) = &existing {
            let same_token = secrets
                .open(&context, &old.sealed_token)
                .map(|t| t == input.bearer_token.as_bytes())
                .unwrap_or(false);
            if old.endpoint == endpoint {
                if same_token && old.options == input.options {
                    return Ok(SetOutcome::Unchanged);
                }
                let rec = TargetRecord {
                    endpoint,
                    sealed_token: sealed,
                    options: input.options,
                    generation: old.generation + 1,
                    source: input.source,
                    updated_at: now,
                    ..old.clone()
                };
                let mut cs = ChangeSet::new();
                cs.require_equals(TARGETS_TABLE, dir, Some(old_bytes.clone()));
                cs.put_json(TARGETS_TABLE, dir, &rec)?;
                return self.commit_or_conflict(cs).map(|_| SetOutcome::Updated);
            }
            // Another target: stop the old forwarder (its commits require the old record),
            // then forget its mapping.
            let mut cs = ChangeSet::new();
            cs.require_equals(TARGETS_TABLE, dir, Some(old_bytes.clone()));
            cs.delete(TARGETS_TABLE, dir).delete(STATE_TABLE, dir);
            self.commit_or_conflict(cs)?;
            outcome = SetOutcome::Reset;
        }
        // Rows a crashed delete may have left, or the old target's.
        self.purge_rows(dir)?;
        let last = self.store.last_event_seq()?;
        let rec = TargetRecord {
            directory_id: dir.to_owned(),
            endpoint,
            sealed_token: sealed,
            options: input.options,
            generation: existing
                .as_ref()
                .map(|(o, _)| o.generation + 1)
                .unwrap_or(1),
            source: input.source,
            created_at: now,
            updated_at: now,
        };
        let state = PushState {
            cursor: last,
            reserved: last,
            backfill: Some(new_backfill(last)),
            ..PushState::default()
        };
        let mut cs = ChangeSet::new();
        cs.require_absent(TARGETS_TABLE, dir);
        cs.put_json(TARGETS_TABLE, dir, &rec)?;
        cs.put_json(STATE_TABLE, dir, &state)?;
        self.commit_or_conflict(cs)?;
        tracing::info!(directory_id = dir, endpoint = %rec.endpoint, ?outcome, "SCIM push target set");
        Ok(outcome)
    }

    fn commit_or_conflict(&self, cs: ChangeSet) -> Result<(), AdminError> {
        match self.store.commit(cs) {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict { .. }) => Err(AdminError::Conflict {
                code: "concurrent_update",
                message: "the forward target changed meanwhile; read it and try again".into(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a directory's target and its mapping (the remote objects stay). Blocking.
    pub fn delete_target(&self, dir: &str) -> Result<(), AdminError> {
        let (_, bytes) = self.load_record(dir)?.ok_or_else(|| AdminError::NotFound {
            what: "forward target",
            id: dir.to_owned(),
        })?;
        let mut cs = ChangeSet::new();
        cs.require_equals(TARGETS_TABLE, dir, Some(bytes));
        cs.delete(TARGETS_TABLE, dir).delete(STATE_TABLE, dir);
        self.commit_or_conflict(cs)?;
        self.purge_rows(dir)?;
        if let Some(r) = lock(&self.running).remove(dir) {
            r.handle.abort();
        }
        tracing::info!(directory_id = dir, "SCIM push target deleted");
        Ok(())
    }

    /// The target's settings (never the token) and the forwarder's progress. Blocking.
    pub fn status(&self, dir: &str) -> Result<TargetStatus, AdminError> {
        let (rec, _) = self.load_record(dir)?.ok_or_else(|| AdminError::NotFound {
            what: "forward target",
            id: dir.to_owned(),
        })?;
        let st = self.load_state(dir)?;
        let last = self.store.last_event_seq()?;
        let lag_events = last.saturating_sub(st.cursor);
        let lag_seconds = if lag_events == 0 {
            0.0
        } else {
            self.store
                .events_after(st.cursor, 1)?
                .first()
                .map(|e| ((Timestamp::now().as_millis() - e.created_at_ms).max(0) as f64) / 1000.0)
                .unwrap_or(0.0)
        };
        let prefix = directory_prefix(dir);
        let parked = self.store.count_prefix(PARKED_TABLE, &prefix)?;
        let forwarded = self.store.count_prefix(IDMAP_TABLE, &prefix)?;
        let parked_objects = self
            .store
            .scan(PARKED_TABLE, &prefix, None, PARKED_SHOWN)?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        let backfill = match (&st.backfill, st.backfill_finished_at) {
            (Some(b), _) => {
                let total = (b.users_total + b.groups_total).max(1);
                Some(BackfillView {
                    state: "running",
                    phase: Some(b.phase),
                    users_done: b.users_done,
                    users_total: b.users_total,
                    groups_done: b.groups_done,
                    groups_total: b.groups_total,
                    percent: (((b.users_done + b.groups_done) as f64 / total as f64) * 100.0)
                        .min(100.0),
                    started_at: Some(b.started_at),
                    finished_at: None,
                })
            }
            (None, Some(at)) => Some(BackfillView {
                state: "done",
                phase: None,
                users_done: 0,
                users_total: 0,
                groups_done: 0,
                groups_total: 0,
                percent: 100.0,
                started_at: None,
                finished_at: Some(at),
            }),
            (None, None) => None,
        };
        let (state, reconcile) = match lock(&self.running).get(dir) {
            Some(r) => {
                let phase = lock(&r.live.phase).clone();
                let view = match &*lock(&r.live.reconcile) {
                    ReconcileSlot::Idle => None,
                    ReconcileSlot::Queued { dry_run, .. } => Some(ReconcileView {
                        state: "queued",
                        dry_run: *dry_run,
                        progress: None,
                        report: None,
                    }),
                    ReconcileSlot::Running(run) => Some(ReconcileView {
                        state: "running",
                        dry_run: run.dry_run,
                        progress: Some(run.clone()),
                        report: None,
                    }),
                    ReconcileSlot::Done(rep) => Some(ReconcileView {
                        state: "done",
                        dry_run: rep.dry_run,
                        progress: None,
                        report: Some((**rep).clone()),
                    }),
                };
                (phase, view)
            }
            None => ("not running".to_owned(), None),
        };
        Ok(TargetStatus {
            object: "directory_forward",
            directory_id: dir.to_owned(),
            endpoint: rec.endpoint,
            has_bearer_token: !rec.sealed_token.is_empty(),
            options: rec.options,
            source: rec.source,
            state,
            lag_events,
            lag_seconds,
            sent: st.sent_total,
            failed: st.failed_total,
            parked,
            forwarded,
            last_error: st.last_error,
            last_error_at: st.last_error_at,
            cursor: st.cursor,
            backfill,
            parked_objects,
            reconcile,
            created_at: rec.created_at,
            updated_at: rec.updated_at,
        })
    }

    /// Asks the running forwarder for a reconcile (it starts once the work in flight is done,
    /// or after a running backfill). Progress and the report appear in [`Self::status`].
    pub fn start_reconcile(&self, dir: &str, dry_run: bool) -> Result<(), AdminError> {
        if self.load_record(dir)?.is_none() {
            return Err(AdminError::NotFound {
                what: "forward target",
                id: dir.to_owned(),
            });
        }
        let running = lock(&self.running);
        let r = running.get(dir).ok_or_else(|| AdminError::Conflict {
            code: "forward_not_running",
            message: "the forwarder of this directory is not running in this server (it is \
                      starting, or it stopped: see the status' state); try again shortly"
                .into(),
        })?;
        let mut slot = lock(&r.live.reconcile);
        if matches!(
            *slot,
            ReconcileSlot::Queued { .. } | ReconcileSlot::Running(_)
        ) {
            return Err(AdminError::Conflict {
                code: "reconcile_in_progress",
                message: "a reconcile of this directory is queued or running; wait for its report"
                    .into(),
            });
        }
        *slot = ReconcileSlot::Queued { dry_run };
        drop(slot);
        r.live.wake.notify_waiters();
        Ok(())
    }

    /// Starts the scheduler on the current runtime: one task per target, restarted when its
    /// record changes; aborting the handle stops it (the tasks stop when the service drops).
    pub fn spawn(self: &Arc<Self>) -> JoinHandle<()> {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(svc) = me.upgrade() else { return };
                if let Err(e) = svc.schedule_once().await {
                    tracing::warn!(error = %e, "reading SCIM push targets failed");
                }
                drop(svc);
                tokio::time::sleep(SCHEDULE_INTERVAL).await;
            }
        })
    }

    async fn schedule_once(&self) -> Result<(), PushError> {
        let store = self.store.clone();
        let rows =
            tokio::task::spawn_blocking(move || store.scan(TARGETS_TABLE, "", None, usize::MAX))
                .await
                .map_err(|e| PushError::Join(e.to_string()))??;
        let wanted: HashMap<String, Vec<u8>> = rows.into_iter().collect();
        let mut running = lock(&self.running);
        running.retain(|dir, r| {
            let keep = wanted.get(dir) == Some(&r.bytes);
            if !keep {
                r.handle.abort();
            }
            keep
        });
        for (dir, bytes) in wanted {
            if let Some(r) = running.get(&dir) {
                let ended = *lock(&r.ended_at);
                match ended {
                    None => continue,
                    Some(at) if at.elapsed() < RESTART_DELAY => continue,
                    Some(_) => {}
                }
            }
            let record: TargetRecord = match serde_json::from_slice(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(directory_id = %dir, error = %e, "corrupt SCIM push target skipped");
                    continue;
                }
            };
            let live = running
                .get(&dir)
                .map(|r| r.live.clone())
                .unwrap_or_default();
            let ended_at = Arc::new(Mutex::new(None));
            let token = match self.secrets.as_ref() {
                Some(s) => s
                    .open(&token_context(&dir), &record.sealed_token)
                    .map_err(|e| e.to_string())
                    .and_then(|t| String::from_utf8(t).map_err(|e| e.to_string())),
                None => Err("no secret key configured".to_owned()),
            };
            let handle = match token {
                Ok(token) => {
                    let ctx = RunCtx {
                        store: self.store.clone(),
                        engine: self.engine.clone(),
                        record,
                        record_bytes: bytes.clone(),
                        token,
                        live: live.clone(),
                    };
                    let (l, end) = (live.clone(), ended_at.clone());
                    let d = dir.clone();
                    tokio::spawn(async move {
                        let result = run_target(ctx).await;
                        match result {
                            Ok(()) | Err(PushError::Stopped) => {
                                tracing::info!(directory_id = %d, "SCIM push run ended")
                            }
                            Err(e) => {
                                tracing::error!(directory_id = %d, error = %e, "SCIM push stopped; restarting in 5 s");
                                l.set_phase(format!("stopped: {e}"));
                            }
                        }
                        *lock(&end) = Some(Instant::now());
                    })
                }
                Err(e) => {
                    tracing::error!(directory_id = %dir, error = %e, "cannot open the SCIM push bearer token");
                    live.set_phase(format!(
                        "stopped: the stored bearer token cannot be opened with this server's secret key ({e}); set the token again"
                    ));
                    *lock(&ended_at) = Some(Instant::now());
                    tokio::spawn(async {})
                }
            };
            running.insert(
                dir,
                Running {
                    bytes,
                    handle,
                    live,
                    ended_at,
                },
            );
        }
        Ok(())
    }
}
