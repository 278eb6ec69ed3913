//! Admin API for LDAP / AD directories (behind the API key):
//!
//! - `GET /admin/directories/{id}/sync`: the sync state (last full and delta runs with counts
//!   and durations, last error, next runs, a deletion waiting for confirmation).
//! - `POST /admin/directories/{id}/sync/confirm`: an admin confirms the deletion the
//!   mass-deletion guard stopped; the scheduler's next full run applies it (409 when nothing
//!   is pending).
//!
//! Both read and write the state the LDAP runner keeps in the store, so they need no handle
//! on the scheduler itself.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use idbridge_ldap::StateStore;
use idbridge_model::{parse_id, IdPrefix};
use serde_json::Value;
use tracing::Instrument;

use crate::directories_admin::engine_error;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/directories/{id}/sync", get(get_sync))
        .route("/admin/directories/{id}/sync/confirm", post(confirm))
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
        let s = StateStore::new(st.db.store().clone())
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

async fn confirm(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let span = tracing::info_span!("admin.ldap_confirm_deletion", directory_id = %id);
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        check_ldap(&st, &id)?;
        match StateStore::new(st.db.store().clone())
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
