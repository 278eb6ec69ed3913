//! One confirmation flow for mass deletions, for LDAP and SFTP directories (behind the API
//! key; documented in `docs/admin-openapi.yaml`):
//!
//! - `GET /admin/directories/{id}/pending_deletion?limit=`: what the mass-deletion guard
//!   stopped: the count, the directory's size and ratio and the first `limit` users it would
//!   remove (id, idp_id, email; LDAP keeps the first 20). 404 when nothing waits.
//! - `POST /admin/directories/{id}/pending_deletion/confirm`: LDAP: the next full run (the
//!   scheduler picks it up within seconds) applies it; SFTP: the stopped delivery's archived
//!   files are applied now, past the guard, and the new delivery record is answered.
//!
//! The state belongs to the LDAP runner (`ldap.sync_state`) and the SFTP processor
//! (`sftp.deliveries`); this module only reads and triggers through them.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use idbridge_directory::feeds::FeedKind;
use idbridge_ldap::StateStore;
use idbridge_model::{parse_id, IdPrefix};
use idbridge_sftp::Processor;
use serde_json::{json, Value};
use tracing::Instrument;

use crate::body::{Fields, JsonObject, Query};
use crate::directories_admin::engine_error;
use crate::error::{ApiError, ApiResult};
use crate::feeds_admin::SFTP_TYPES;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/directories/{id}/pending_deletion", get(get_pending))
        .route(
            "/admin/directories/{id}/pending_deletion/confirm",
            post(confirm),
        )
}

fn kind_of(state: &AppState, id: &str) -> ApiResult<FeedKind> {
    parse_id(IdPrefix::Directory, id).map_err(|_| ApiError::not_found("Directory", id))?;
    let t = state
        .directory
        .get_directory(id)
        .map_err(engine_error)?
        .directory
        .directory_type;
    if t == idbridge_ldap::DIRECTORY_TYPE {
        Ok(FeedKind::Ldap)
    } else if SFTP_TYPES.contains(&t.as_str()) {
        Ok(FeedKind::Sftp)
    } else {
        Err(ApiError::Conflict {
            code: "feed_not_supported",
            message: format!(
                "a directory of type {t:?} has no mass-deletion guard here (SCIM changes are \
                 applied one by one)"
            ),
        })
    }
}

fn nothing_pending(id: &str) -> ApiError {
    ApiError::not_found("Pending deletion", id)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e)
}

async fn get_pending(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Query,
) -> ApiResult<Json<Value>> {
    let limit = match q.get("limit") {
        None => 20,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => return Err(ApiError::invalid("limit", "must be between 1 and 100")),
        },
    };
    let span = tracing::info_span!("admin.pending_deletion", directory_id = %id);
    let st = state.clone();
    tokio::task::spawn_blocking(move || match kind_of(&st, &id)? {
        FeedKind::Ldap => {
            let s = StateStore::new(st.store.clone())
                .load(&id)
                .map_err(internal)?;
            let g = s.pending_guard.ok_or_else(|| nothing_pending(&id))?;
            Ok(Json(json!({
                "object": "pending_deletion",
                "directory_id": id,
                "kind": "ldap",
                "at": g.at,
                "would_delete": g.would_delete,
                "total": g.total,
                "threshold": g.threshold,
                "confirmed": s.deletion_confirmed,
                "sample": leaving(&st, &id, &g.sample, limit),
            })))
        }
        FeedKind::Sftp => {
            let p = Processor::new(st.directory.clone());
            let pd = idbridge_sftp::pending::pending(&p, &id, limit)
                .map_err(internal)?
                .ok_or_else(|| nothing_pending(&id))?;
            let mut v = serde_json::to_value(pd).map_err(internal)?;
            v["object"] = json!("pending_deletion");
            v["kind"] = json!("sftp");
            v["confirmed"] = json!(false);
            Ok(Json(v))
        }
    })
    .instrument(span)
    .await
    .map_err(internal)?
}

/// The users behind a guard's sample of ids (those still in the directory).
fn leaving(state: &AppState, dir: &str, ids: &[String], limit: usize) -> Vec<Value> {
    ids.iter()
        .take(limit)
        .filter_map(|id| state.directory.get_user(Some(dir), id).ok())
        .map(|u| json!({"id": u.user.id, "idp_id": u.user.idp_id, "email": u.user.email}))
        .collect()
}

async fn confirm(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    let mut f = Fields::new(&body);
    f.deny_unknown(&[]);
    f.finish()?;
    let span = tracing::info_span!("admin.confirm_deletion", directory_id = %id);
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        let nothing = || ApiError::Conflict {
            code: "nothing_to_confirm",
            message: "no sync or delivery of this directory is waiting for a deletion \
                      confirmation"
                .into(),
        };
        match kind_of(&st, &id)? {
            FeedKind::Ldap => {
                let s = StateStore::new(st.store.clone())
                    .confirm_deletion(&id)
                    .map_err(internal)?
                    .ok_or_else(nothing)?;
                tracing::warn!(directory_id = %id, pending = ?s.pending_guard, "admin confirmed a guarded ldap deletion");
                Ok(Json(json!({
                    "object": "deletion_confirmation",
                    "directory_id": id,
                    "kind": "ldap",
                    "applies": "at the next full sync (the scheduler starts it within seconds)",
                    "sync_state": s,
                })))
            }
            FeedKind::Sftp => {
                let p = Processor::new(st.directory.clone());
                let rec = idbridge_sftp::pending::confirm(&p, &id)
                    .map_err(internal)?
                    .ok_or_else(nothing)?;
                Ok(Json(json!({
                    "object": "deletion_confirmation",
                    "directory_id": id,
                    "kind": "sftp",
                    "delivery": rec,
                })))
            }
        }
    })
    .instrument(span)
    .await
    .map_err(internal)?
}
