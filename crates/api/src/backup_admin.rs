//! Online backups of the store (behind the API key; `docs/admin-openapi.yaml`):
//!
//! - `POST /admin/backup` (no body, or `{}`): copies the live store into a new file
//!   `<data dir>/backups/idbridge-<UTC time>.sqlite3` while writes go on, and answers 201 with
//!   the file, its size and the last event seq it holds once the copy is checked and on disk.
//!   One backup runs at a time (a second request waits for the first). An unknown field is a
//!   422 naming it; a store without online backup (none today: every data directory is SQLite)
//!   is a 409 saying what to use instead.
//! - `GET /admin/backups`: the finished backups, newest first.
//!
//! Restoring is an operator's step with the server stopped (README, "Backup and restore").
//! The handlers only parse and map: the copy is `idbridge_store::backup_sqlite_file`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use idbridge_model::Timestamp;
use serde_json::{json, Value};

use crate::body::JsonObject;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/backup", post(create_backup))
        .route("/admin/backups", get(list_backups))
}

/// One backup at a time: a second copy would only compete for the same disk.
static RUNNING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn unsupported() -> ApiError {
    ApiError::Conflict {
        code: "backup_unsupported",
        message: "this store has no online backup: stop the server and use `idbridge export`"
            .to_owned(),
    }
}

async fn create_backup(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if !body.is_empty() {
        return Err(ApiError::Validation(
            body.keys()
                .map(|k| FieldError::new(k.clone(), "unknown_field"))
                .collect(),
        ));
    }
    let dir = state.store.backup_dir().ok_or_else(unsupported)?;
    let _one_at_a_time = RUNNING.lock().await;
    let store = state.store.clone();
    let summary = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)
            .map_err(|e| ApiError::internal(format!("creating {}: {e}", dir.display())))?;
        let name = format!(
            "idbridge-{}.sqlite3",
            Timestamp::now().to_datetime().format("%Y%m%dT%H%M%S%.3fZ")
        );
        store.backup_to(&dir.join(name)).map_err(ApiError::from)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "object": "backup",
            "path": summary.path.display().to_string(),
            "bytes": summary.bytes,
            "last_event_seq": summary.last_event_seq,
            "duration_ms": u64::try_from(summary.elapsed.as_millis()).unwrap_or(u64::MAX),
        })),
    ))
}

async fn list_backups(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let dir = state.store.backup_dir().ok_or_else(unsupported)?;
    let files = tokio::task::spawn_blocking(move || idbridge_store::list_backups(&dir))
        .await
        .map_err(ApiError::internal)??;
    let data: Vec<Value> = files
        .iter()
        .map(|f| {
            json!({
                "object": "backup",
                "path": f.path.display().to_string(),
                "bytes": f.bytes,
                "created_at": Timestamp::from_millis(f.modified_ms),
            })
        })
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}
