//! Admin API for LDAP / AD directories (behind the API key):
//!
//! - `GET /admin/directories/{id}/sync`: the sync state (last full and delta runs with counts
//!   and durations, last error, next runs, a deletion waiting for confirmation).
//! - `POST /admin/directories/{id}/sync` with `{"kind": "full" | "delta"}`: runs one sync now
//!   and answers its run record (`ok: false` with `error` when it failed or the guard refused
//!   it; nothing was applied then). 409 `sync_in_progress` while another run of the directory
//!   is going, 409 `sync_not_configured` when no `[[ldap_directories]]` entry feeds it.
//! - `POST /admin/directories/{id}/sync/confirm`: an admin confirms the deletion the
//!   mass-deletion guard stopped; the scheduler's next full run applies it (409 when nothing
//!   is pending).
//!
//! The state endpoints read and write the state the LDAP runner keeps in the store; the
//! trigger runs through the [`LdapRunners`] the binary installs, i.e. the schedulers' own
//! [`Syncer`], so a manual run and a scheduled one of the same directory never overlap.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use idbridge_ldap::{LdapSource, NoProgress, Progress, StateStore, SyncError, SyncKind, Syncer};
use idbridge_model::{parse_id, IdPrefix};
use serde_json::Value;
use tracing::Instrument;

use crate::body::{Fields, JsonObject};
use crate::directories_admin::engine_error;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/directories/{id}/sync", get(get_sync).post(run_sync))
        .route("/admin/directories/{id}/sync/confirm", post(confirm))
}

/// The LDAP sources the server runs, registered by the binary at start-up (empty in a bare
/// [`AppState`]): the trigger endpoint needs the source's settings, which live in the config
/// file, and the schedulers' [`Syncer`], whose run registry keeps one run per directory.
#[derive(Default)]
pub struct LdapRunners {
    inner: RwLock<Option<Registered>>,
}

struct Registered {
    syncer: Arc<Syncer>,
    sources: HashMap<String, LdapSource>,
}

impl LdapRunners {
    /// Registers the syncer and the sources it runs (replaces an earlier registration).
    pub fn install(&self, syncer: Arc<Syncer>, sources: impl IntoIterator<Item = LdapSource>) {
        let sources = sources
            .into_iter()
            .map(|s| (s.directory_id.clone(), s))
            .collect();
        if let Ok(mut slot) = self.inner.write() {
            *slot = Some(Registered { syncer, sources });
        }
    }

    /// The LDAP settings of a configured directory (the IdP login page binds with them).
    pub fn settings(&self, id: &str) -> Option<idbridge_ldap::LdapSettings> {
        self.get(id).map(|(_, src)| src.settings)
    }

    /// The syncer and source of a configured directory.
    fn get(&self, id: &str) -> Option<(Arc<Syncer>, LdapSource)> {
        let slot = self.inner.read().ok()?;
        let reg = slot.as_ref()?;
        let src = reg.sources.get(id)?.clone();
        Some((reg.syncer.clone(), src))
    }
}

impl std::fmt::Debug for LdapRunners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self
            .inner
            .read()
            .ok()
            .and_then(|s| s.as_ref().map(|r| r.sources.keys().cloned().collect()))
            .unwrap_or_default();
        f.debug_struct("LdapRunners")
            .field("sources", &ids)
            .finish()
    }
}

/// Progress of a run the console started, as the syncer reports it.
#[derive(Default)]
struct LiveProgress(std::sync::Mutex<idbridge_console::SyncProgress>);

impl Progress for LiveProgress {
    fn phase(&self, name: &str, total: Option<u64>) {
        if let Ok(mut p) = self.0.lock() {
            *p = idbridge_console::SyncProgress {
                phase: name.to_string(),
                done: 0,
                total,
            };
        }
    }

    fn inc(&self, n: u64) {
        if let Ok(mut p) = self.0.lock() {
            p.done += n;
        }
    }
}

/// The console's "sync now": the same runners and syncer as `POST .../sync`, run in the
/// background with live progress (the run's record lands in the sync state as usual).
pub struct ConsoleSyncs {
    runners: Arc<LdapRunners>,
    live: Arc<std::sync::Mutex<HashMap<String, Arc<LiveProgress>>>>,
}

impl ConsoleSyncs {
    pub fn new(runners: Arc<LdapRunners>) -> Self {
        ConsoleSyncs {
            runners,
            live: Arc::default(),
        }
    }
}

impl idbridge_console::LdapSyncs for ConsoleSyncs {
    fn start(&self, directory_id: &str) -> Result<(), String> {
        let Some((syncer, src)) = self.runners.get(directory_id) else {
            return Err(
                "This directory has no LDAP feed, so there is nothing to sync: set one \
                        with PUT /admin/directories/{id}/feed or an [[ldap_directories]] entry."
                    .into(),
            );
        };
        let progress = Arc::new(LiveProgress::default());
        {
            let mut live = self.live.lock().map_err(|_| "sync state unavailable")?;
            if live.contains_key(directory_id) {
                return Err("A sync of this directory is already running.".into());
            }
            live.insert(directory_id.to_string(), progress.clone());
        }
        let live = self.live.clone();
        let id = directory_id.to_string();
        let span = tracing::info_span!("console.ldap_run_sync", directory_id = %id);
        tokio::spawn(
            async move {
                match syncer.run(&src, SyncKind::Full, progress).await {
                    Ok(rec) => tracing::info!(ok = rec.ok, "console ldap sync finished"),
                    Err(e) => tracing::warn!(error = %e, "console ldap sync failed"),
                }
                if let Ok(mut live) = live.lock() {
                    live.remove(&id);
                }
            }
            .instrument(span),
        );
        Ok(())
    }

    fn progress(&self, directory_id: &str) -> Option<idbridge_console::SyncProgress> {
        let live = self.live.lock().ok()?;
        let p = live.get(directory_id)?;
        let snapshot = p.0.lock().ok()?.clone();
        Some(snapshot)
    }
}

/// 404 unless `id` is an existing LDAP directory.
fn check_ldap(state: &AppState, id: &str) -> ApiResult<()> {
    parse_id(IdPrefix::Directory, id).map_err(|_| ApiError::not_found("Directory", id))?;
    let rec = state.directory.get_directory(id).map_err(engine_error)?;
    if rec.directory.directory_type != idbridge_ldap::DIRECTORY_TYPE {
        return Err(ApiError::not_found("Directory", id));
    }
    Ok(())
}

async fn get_sync(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let span = tracing::info_span!("admin.ldap_sync_state", directory_id = %id);
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        check_ldap(&st, &id)?;
        let s = StateStore::new(st.store.clone())
            .load(&id)
            .map_err(ApiError::internal)?;
        serde_json::to_value(s)
            .map(Json)
            .map_err(ApiError::internal)
    })
    .instrument(span)
    .await
    .map_err(ApiError::internal)?
}

/// `POST /admin/directories/{id}/sync`: one full or delta run now.
async fn run_sync(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    let mut f = Fields::new(&body);
    f.deny_unknown(&["kind"]);
    let kind = match f.opt_string("kind").as_deref() {
        None | Some("full") => Some(SyncKind::Full),
        Some("delta") => Some(SyncKind::Delta),
        Some(_) => {
            f.error("kind", "invalid_sync_kind");
            None
        }
    };
    f.finish()?;
    let kind = kind.unwrap_or(SyncKind::Full);
    let span = tracing::info_span!("admin.ldap_run_sync", directory_id = %id, kind = ?kind);
    async move {
        let st = state.clone();
        let check_id = id.clone();
        tokio::task::spawn_blocking(move || check_ldap(&st, &check_id))
            .await
            .map_err(ApiError::internal)??;
        let (syncer, src) = state.ldap.get(&id).ok_or_else(|| ApiError::Conflict {
            code: "sync_not_configured",
            message: "this directory has no LDAP feed: set one with PUT \
                      /admin/directories/{id}/feed (or an [[ldap_directories]] entry)"
                .into(),
        })?;
        // Its own task: a request that times out or a client that hangs up must not cancel
        // the run between the engine's apply and the state update that records it.
        let runner = syncer.clone();
        let result =
            tokio::spawn(async move { runner.run(&src, kind, Arc::new(NoProgress)).await })
                .await
                .map_err(ApiError::internal)?;
        let rec = match result {
            Ok(rec) => rec,
            Err(SyncError::Busy(_)) => {
                return Err(ApiError::Conflict {
                    code: "sync_in_progress",
                    message: "a sync of this directory is running; try again when it is done"
                        .into(),
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "manual ldap sync failed; nothing was applied");
                // The failed run was recorded in the sync state: answer that record.
                let s = syncer.state(&id).map_err(ApiError::internal)?;
                // A delta of a never-synced directory runs (and is recorded) as a full one.
                let last = [s.last_full, s.last_delta]
                    .into_iter()
                    .flatten()
                    .max_by_key(|r| r.started_at);
                match last {
                    Some(r) if !r.ok => r,
                    _ => return Err(ApiError::internal(e)),
                }
            }
        };
        serde_json::to_value(rec)
            .map(Json)
            .map_err(ApiError::internal)
    }
    .instrument(span)
    .await
}

async fn confirm(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    let mut f = Fields::new(&body);
    f.deny_unknown(&[]);
    f.finish()?;
    let span = tracing::info_span!("admin.ldap_confirm_deletion", directory_id = %id);
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        check_ldap(&st, &id)?;
        match StateStore::new(st.store.clone())
            .confirm_deletion(&id)
            .map_err(ApiError::internal)?
        {
            Some(s) => {
                tracing::warn!(directory_id = %id, pending = ?s.pending_guard, "admin confirmed a guarded ldap deletion");
                serde_json::to_value(s)
                    .map(Json)
                    .map_err(ApiError::internal)
            }
            None => Err(ApiError::Conflict {
                code: "nothing_to_confirm",
                message: "no sync of this directory is waiting for a deletion confirmation".into(),
            }),
        }
    })
    .instrument(span)
    .await
    .map_err(ApiError::internal)?
}
