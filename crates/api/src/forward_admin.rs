//! Admin API for SCIM push forwarding (behind the API key; `docs/admin-openapi.yaml`):
//!
//! - `PUT /admin/directories/{id}/forward` `{"endpoint", "bearer_token", options...}`: sets the
//!   directory's target (201 when new, 200 otherwise). The token is sealed before it is
//!   stored and never shown again. An unknown field, a missing token or a plain `http://`
//!   endpoint on a non-loopback host (without `allow_insecure_http`) is a 422 naming it.
//! - `GET /admin/directories/{id}/forward`: settings (never the token) and progress: lag,
//!   counts, parked objects with reasons, last error, backfill and reconcile progress. 404
//!   when none is set.
//! - `DELETE /admin/directories/{id}/forward`: removes the target and its mapping (the remote
//!   objects stay).
//! - `POST /admin/directories/{id}/forward/reconcile` `{"dry_run": bool}`: asks the running
//!   forwarder for a reconcile (202); its progress and report appear in the GET.
//!
//! The handlers only parse and map: the service is `idbridge_forward::scim_push::ScimPush`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{post, put};
use axum::{Json, Router};
use idbridge_forward::scim_push::{
    AdminError, Deprovision, SetOutcome, TargetInput, TargetOptions,
};
use idbridge_model::{parse_id, IdPrefix};
use serde_json::{Map, Value};
use tracing::Instrument;

use crate::body::{Fields, JsonObject};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/admin/directories/{id}/forward",
            put(set_target).get(get_target).delete(delete_target),
        )
        .route("/admin/directories/{id}/forward/reconcile", post(reconcile))
}

/// The fields `PUT /admin/directories/{id}/forward` accepts.
pub const FIELDS: &[&str] = &[
    "endpoint",
    "bearer_token",
    "deprovision",
    "allow_insecure_http",
    "concurrency",
    "connect_timeout_ms",
    "request_timeout_ms",
    "custom_attributes_schema",
];

/// Parses a target body (also what the CLI sends). Every wrong field is reported at once.
pub fn parse_target(body: &Map<String, Value>) -> ApiResult<TargetInput> {
    let mut f = Fields::new(body);
    for key in body.keys() {
        if !FIELDS.contains(&key.as_str()) {
            f.error(key, "unknown_field");
        }
    }
    let endpoint = f.required_string("endpoint");
    let token = f.required_string("bearer_token");
    let mut options = TargetOptions::default();
    match f.opt_string("deprovision").as_deref() {
        None => {}
        Some("deactivate") => options.deprovision = Deprovision::Deactivate,
        Some("delete") => options.deprovision = Deprovision::Delete,
        Some(_) => f.error("deprovision", "must_be_deactivate_or_delete"),
    }
    if let Some(b) = f.opt_bool("allow_insecure_http") {
        options.allow_insecure_http = b;
    }
    if let Some(n) = number(&mut f, "concurrency") {
        match u16::try_from(n) {
            Ok(n) => options.concurrency = n,
            Err(_) => f.error("concurrency", "out_of_range"),
        }
    }
    if let Some(n) = number(&mut f, "connect_timeout_ms") {
        options.connect_timeout_ms = n;
    }
    if let Some(n) = number(&mut f, "request_timeout_ms") {
        options.request_timeout_ms = n;
    }
    match f.raw("custom_attributes_schema") {
        None => {}
        Some(Value::Null) => options.custom_attributes_schema = None,
        Some(Value::String(s)) => options.custom_attributes_schema = Some(s.clone()),
        Some(_) => f.error("custom_attributes_schema", "must_be_string_or_null"),
    }
    f.finish()?;
    match (endpoint, token) {
        (Some(endpoint), Some(bearer_token)) => Ok(TargetInput {
            endpoint,
            bearer_token,
            options,
            source: "api".into(),
        }),
        _ => Err(ApiError::internal("validated fields missing")),
    }
}

fn number(f: &mut Fields, field: &str) -> Option<u64> {
    match f.raw(field) {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) => Some(n),
            None => {
                f.error(field, "must_be_positive_integer");
                None
            }
        },
    }
}

/// The service's errors in WorkOS shapes.
pub fn admin_error(e: AdminError) -> ApiError {
    match e {
        AdminError::NotFound { what, id } => ApiError::not_found(
            if what == "directory" {
                "Directory"
            } else {
                "Forward target"
            },
            id,
        ),
        AdminError::Invalid { field, code, .. } => {
            ApiError::Validation(vec![FieldError::new(field, code)])
        }
        AdminError::Conflict { code, message } => ApiError::Conflict { code, message },
        e @ AdminError::NoSecretKey => ApiError::Conflict {
            code: "no_secret_key",
            message: e.to_string(),
        },
        AdminError::Secret(m) | AdminError::Internal(m) => ApiError::Internal(m),
    }
}

fn check_dir(id: &str) -> ApiResult<()> {
    parse_id(IdPrefix::Directory, id)
        .map(|_| ())
        .map_err(|_| ApiError::not_found("Directory", id))
}

async fn blocking<T, F>(f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> ApiResult<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

async fn set_target(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<(StatusCode, Json<Value>)> {
    check_dir(&id)?;
    let input = parse_target(&body)?;
    let span = tracing::info_span!("admin.forward_set", directory_id = %id);
    let svc = state.forward.clone();
    blocking(move || {
        let outcome = svc.set_target(&id, input).map_err(admin_error)?;
        let status = svc.status(&id).map_err(admin_error)?;
        let code = match outcome {
            SetOutcome::Created | SetOutcome::Reset => StatusCode::CREATED,
            SetOutcome::Updated | SetOutcome::Unchanged => StatusCode::OK,
        };
        let body = serde_json::to_value(status).map_err(ApiError::internal)?;
        Ok((code, Json(body)))
    })
    .instrument(span)
    .await
}

async fn get_target(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    check_dir(&id)?;
    let span = tracing::info_span!("admin.forward_status", directory_id = %id);
    let svc = state.forward.clone();
    blocking(move || {
        let status = svc.status(&id).map_err(admin_error)?;
        serde_json::to_value(status)
            .map(Json)
            .map_err(ApiError::internal)
    })
    .instrument(span)
    .await
}

async fn delete_target(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    check_dir(&id)?;
    let span = tracing::info_span!("admin.forward_delete", directory_id = %id);
    let svc = state.forward.clone();
    blocking(move || {
        svc.delete_target(&id).map_err(admin_error)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .instrument(span)
    .await
}

async fn reconcile(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<(StatusCode, Json<Value>)> {
    check_dir(&id)?;
    let mut f = Fields::new(&body);
    for key in body.keys() {
        if key != "dry_run" {
            f.error(key, "unknown_field");
        }
    }
    let dry_run = f.opt_bool("dry_run").unwrap_or(false);
    f.finish()?;
    let span = tracing::info_span!("admin.forward_reconcile", directory_id = %id, dry_run);
    let svc = state.forward.clone();
    blocking(move || {
        svc.start_reconcile(&id, dry_run).map_err(admin_error)?;
        let status = svc.status(&id).map_err(admin_error)?;
        let body = serde_json::to_value(status).map_err(ApiError::internal)?;
        Ok((StatusCode::ACCEPTED, Json(body)))
    })
    .instrument(span)
    .await
}
