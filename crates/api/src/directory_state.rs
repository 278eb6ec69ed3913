//! `POST /admin/directories/{id}/deactivate`: unlinks a linked directory by hand
//! (`dsync.deactivated`); it links again (`dsync.activated`) on the next change its source
//! delivers. The engine does the work (`DirectoryEngine::deactivate_directory`).

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::body::{Fields, JsonObject};
use crate::directories_admin::engine_error;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/directories/{id}/deactivate", post(deactivate))
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
        // null when it was not linked (nothing changed).
        "event_id": event.map(|e| e.id),
    })))
}
