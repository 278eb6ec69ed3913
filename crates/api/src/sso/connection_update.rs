//! `PATCH /connections/{id}` (py10 `sso.update_connection`, and `{"state": "active" |
//! "inactive"}`) over `idbridge_sso::connections::update`. Fields the service does not change
//! through PATCH (protocol options, attribute maps) are a 422 naming them, never ignored.

use axum::extract::{Path, State};
use axum::routing::patch;
use axum::{Json, Router};
use idbridge_model::Connection;
use idbridge_sso::connections::update::{ConnectionChanges, RequestedState};
use serde_json::{Map, Value};

use crate::body::{Fields, JsonObject};
use crate::error::ApiResult;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/connections/{id}", patch(update))
}

/// Parses a PATCH body against the connection's current type (`connection_type` may be sent,
/// but only unchanged, as the py10 SDK documents).
pub fn parse_changes(
    body: &Map<String, Value>,
    current_type: &str,
) -> ApiResult<ConnectionChanges> {
    let mut f = Fields::new(body);
    for key in body.keys() {
        match key.as_str() {
            "name" | "external_id" | "state" | "connection_type" => {}
            "attribute_maps" | "saml_options" | "oidc_options" => {
                f.error(key, "not_changeable_by_patch_recreate_the_connection")
            }
            _ => f.error(key, "unknown_field"),
        }
    }
    let name = f.opt_string("name");
    let external_id = f
        .present("external_id")
        .then(|| f.opt_string("external_id"));
    let state = match body.get("state") {
        None => None,
        Some(Value::String(s)) if s == "active" => Some(RequestedState::Active),
        Some(Value::String(s)) if s == "inactive" => Some(RequestedState::Inactive),
        Some(_) => {
            f.error("state", "must_be_active_or_inactive");
            None
        }
    };
    if let Some(t) = f.opt_string("connection_type") {
        if t != current_type {
            f.error("connection_type", "immutable");
        }
    }
    f.finish()?;
    Ok(ConnectionChanges {
        name,
        external_id,
        state,
    })
}

async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Connection>> {
    // An unknown connection is 404 before any field is judged.
    let current = state.sso.connection(&id)?;
    let changes = parse_changes(&body, &current.connection_type)?;
    Ok(Json(state.sso.update_connection(&id, changes).await?))
}
