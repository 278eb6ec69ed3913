//! `POST /admin/directories/{id}/deactivate`: unlinks a linked directory by hand
//! (`dsync.deactivated`) and stops it: its SCIM token is refused (SCIM 401) and no source's
//! change is written. `POST /admin/directories/{id}/activate` lifts that; the next change its
//! source delivers links it again (`dsync.activated`). The engine does the work
//! (`DirectoryEngine::deactivate_directory`, `activate_directory`).

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::body::{Fields, JsonObject};
use crate::directories_admin::engine_error;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/directories/{id}/deactivate", post(deactivate))
        .route("/admin/directories/{id}/activate", post(activate))
}

async fn deactivate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    let mut f = Fields::new(&body);
    for key in body.keys() {
        f.error(key, "unknown_field");
    }
    f.finish()?;
    let engine = state.directory.clone();
    let dir = id.clone();
    let event = tokio::task::spawn_blocking(move || engine.deactivate_directory(&dir))
        .await
        .map_err(ApiError::internal)?
        .map_err(engine_error)?;
    Ok(Json(json!({
        "directory_id": id,
        "state": "unlinked",
        "deactivated": true,
        // null when it was not linked (no dsync.deactivated).
        "event_id": event.map(|e| e.id),
    })))
}

async fn activate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    let mut f = Fields::new(&body);
    f.deny_unknown(&[]);
    f.finish()?;
    let engine = state.directory.clone();
    let dir = id.clone();
    let changed = tokio::task::spawn_blocking(move || engine.activate_directory(&dir))
        .await
        .map_err(ApiError::internal)?
        .map_err(engine_error)?;
    Ok(Json(json!({
        "directory_id": id,
        "deactivated": false,
        // false when it was not deactivated (nothing changed).
        "changed": changed,
    })))
}
