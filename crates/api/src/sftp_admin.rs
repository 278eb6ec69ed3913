//! Admin API for SFTP directories (behind the API key):
//!
//! - `GET /admin/directories/{id}/deliveries?limit=&before=`: the directory's deliveries,
//!   newest first (status, files, rows, changes, rejection problems with file and line), and a
//!   `summary` (last delivery, last applied one, totals, rejections).
//!
//! The delivery records belong to the SFTP crate's delivery log; this handler asks it
//! (`idbridge_sftp::list_deliveries`, `idbridge_sftp::summary`) and names no table, so it
//! needs no handle on the SFTP server.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use idbridge_model::{parse_id, IdPrefix};
use serde_json::{json, Value};
use tracing::Instrument;

use crate::body::Query;
use crate::directories_admin::engine_error;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/directories/{id}/deliveries", get(list))
}

async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Query,
) -> ApiResult<Json<Value>> {
    let span = tracing::info_span!("admin.sftp_deliveries", directory_id = %id);
    parse_id(IdPrefix::Directory, &id).map_err(|_| ApiError::not_found("Directory", &id))?;
    let limit = match q.get("limit") {
        None => 10,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => return Err(ApiError::invalid("limit", "must be between 1 and 100")),
        },
    };
    let before = q.get("before").map(str::to_owned);
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        state_directory_exists(&st, &id)?;
        let store = st.store.clone();
        // One extra row says whether another page follows.
        let mut data =
            idbridge_sftp::list_deliveries(store.as_ref(), &id, before.as_deref(), limit + 1)
                .map_err(ApiError::internal)?;
        let more = data.len() > limit;
        data.truncate(limit);
        let summary = idbridge_sftp::summary(store.as_ref(), &id).map_err(ApiError::internal)?;
        Ok(Json(json!({
            "object": "list",
            "data": data,
            "list_metadata": {
                "before": if more { data.last().map(|d| d.id.clone()) } else { None },
                "after": null,
            },
            "summary": {
                "deliveries": summary.deliveries,
                "rejections": summary.rejections,
                "last_delivery": summary.last_delivery,
                "last_applied": summary.last_applied,
            },
        })))
    })
    .instrument(span)
    .await
    .map_err(ApiError::internal)?
}

fn state_directory_exists(state: &AppState, id: &str) -> ApiResult<()> {
    state.directory.get_directory(id).map_err(engine_error)?;
    Ok(())
}
