//! `/webhook_endpoints`: WorkOS-compatible endpoint management (workos-api.md §4.4, OpenAPI
//! `WebhookEndpointJson`), plus the admin view of each endpoint's delivery state.
//!
//! The records belong to `idbridge_sso::webhooks`, the delivery cursors to `idbridge-forward`;
//! creating an endpoint is one commit with its starting cursor (the current end of the event
//! log: it receives the events committed after its creation, not the backlog), deleting one
//! removes both. Disabling keeps the cursor, so re-enabling resumes where delivery stopped
//! (events compacted by retention meanwhile are gone). WorkOS returns the secret with every
//! endpoint object (`secret` is a required key), so GET/PATCH return it too; it is only
//! readable with an API key.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use axum::{Json, Router};
use idbridge_forward::DeliveryStates;
use idbridge_model::{IdPrefix, List, Timestamp, WEBHOOK_EVENT_TYPES};
use idbridge_sso::webhooks::{
    validate_url, EndpointStatus, NewWebhookEndpoint, WebhookEndpoint, WebhookEndpointChanges,
};
use idbridge_sso::SsoError;
use idbridge_store::StoreError;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::body::{JsonObject, Query};
use crate::error::{ApiError, ApiResult};
use crate::pagination::page_request;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/webhook_endpoints", get(list).post(create))
        .route("/webhook_endpoints/{id}", patch(update).delete(delete))
        .route("/admin/webhook_endpoints/{id}/delivery", get(delivery))
}

/// Most event types one endpoint may subscribe to.
const MAX_EVENTS: usize = 200;

/// Failures of this resource. WorkOS answers URL problems with `422 {code:"invalid_url"}` and
/// other field problems with `422 {code:"invalid_request_parameters", errors:[{code,message}]}`,
/// which differ from the shared validation shape, so they are rendered here.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("invalid url: {0}")]
    InvalidUrl(String),
    #[error("invalid request parameters")]
    Invalid(Vec<ParamError>),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<StoreError> for EndpointError {
    fn from(e: StoreError) -> Self {
        EndpointError::Api(e.into())
    }
}

impl From<SsoError> for EndpointError {
    fn from(e: SsoError) -> Self {
        EndpointError::Api(e.into())
    }
}

/// One entry of `errors[]`: the OpenAPI requires `code` and `message`; `field` helps humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParamError {
    pub field: String,
    pub code: String,
    pub message: String,
}

impl ParamError {
    fn new(field: &str, code: &str, message: impl Into<String>) -> Self {
        ParamError {
            field: field.into(),
            code: code.into(),
            message: message.into(),
        }
    }
}

impl IntoResponse for EndpointError {
    fn into_response(self) -> Response {
        match self {
            EndpointError::InvalidUrl(message) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"code": "invalid_url", "message": message})),
            )
                .into_response(),
            EndpointError::Invalid(errors) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({
                    "code": "invalid_request_parameters",
                    "message": "Validation failed.",
                    "errors": errors,
                })),
            )
                .into_response(),
            EndpointError::Api(e) => e.into_response(),
        }
    }
}

type EndpointResult<T> = Result<T, EndpointError>;

fn parse_events(
    value: Option<&Value>,
    required: bool,
    errors: &mut Vec<ParamError>,
) -> Option<Vec<String>> {
    let items = match value {
        None | Some(Value::Null) if required => {
            errors.push(ParamError::new("events", "required", "events is required."));
            return None;
        }
        None | Some(Value::Null) => return None,
        Some(Value::Array(items)) => items,
        Some(_) => {
            errors.push(ParamError::new(
                "events",
                "must_be_array",
                "events must be an array of event names.",
            ));
            return None;
        }
    };
    if items.is_empty() {
        errors.push(ParamError::new(
            "events",
            "must_not_be_empty",
            "events must list at least one event.",
        ));
        return None;
    }
    if items.len() > MAX_EVENTS {
        errors.push(ParamError::new(
            "events",
            "too_many_events",
            format!("At most {MAX_EVENTS} events."),
        ));
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_str() {
            Some(name) if WEBHOOK_EVENT_TYPES.contains(&name) => {
                if !out.iter().any(|e| e == name) {
                    out.push(name.to_string());
                }
            }
            Some(name) => errors.push(ParamError::new(
                &format!("events[{i}]"),
                "unknown_event_type",
                format!("Unknown event type '{name}'."),
            )),
            None => errors.push(ParamError::new(
                &format!("events[{i}]"),
                "must_be_string",
                "Event names are strings.",
            )),
        }
    }
    Some(out)
}

fn endpoint_url_field(body: &Map<String, Value>, required: bool) -> EndpointResult<Option<String>> {
    match body.get("endpoint_url") {
        None | Some(Value::Null) if required => Err(EndpointError::Invalid(vec![ParamError::new(
            "endpoint_url",
            "required",
            "endpoint_url is required.",
        )])),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => validate_url(s).map(Some).map_err(EndpointError::InvalidUrl),
        Some(_) => Err(EndpointError::InvalidUrl(
            "endpoint_url must be a string.".into(),
        )),
    }
}

/// A `unknown_field` error for every key of `body` not in `known` (nothing is dropped
/// silently).
fn unknown_fields(body: &serde_json::Map<String, Value>, known: &[&str]) -> Vec<ParamError> {
    body.keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| {
            ParamError::new(
                k,
                "unknown_field",
                format!(
                    "`{k}` is not a field of this request; known fields: {}",
                    known.join(", ")
                ),
            )
        })
        .collect()
}

async fn create(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> EndpointResult<Response> {
    let mut errors = unknown_fields(&body, &["endpoint_url", "events"]);
    let url = endpoint_url_field(&body, true)?.unwrap_or_default();
    let events = parse_events(body.get("events"), true, &mut errors);
    if !errors.is_empty() {
        return Err(EndpointError::Invalid(errors));
    }
    let input = NewWebhookEndpoint {
        endpoint_url: url,
        events: events.unwrap_or_default(),
    };
    let store = state.store.clone();
    let endpoint = state
        .sso
        .webhooks()
        .create(
            input,
            Box::new(move |ep, cs| {
                // Only events committed from now on are delivered.
                DeliveryStates::stage_start(cs, &ep.id, store.last_event_seq()?)
            }),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(endpoint)).into_response())
}

async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> EndpointResult<Json<WebhookEndpoint>> {
    // An unknown endpoint is 404 before any field is judged.
    state.sso.webhooks().load(&id)?;
    let mut errors = unknown_fields(&body, &["endpoint_url", "events", "status"]);
    let endpoint_url = endpoint_url_field(&body, false)?;
    let events = parse_events(body.get("events"), false, &mut errors);
    let status = match body.get("status") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "enabled" => Some(EndpointStatus::Enabled),
        Some(Value::String(s)) if s == "disabled" => Some(EndpointStatus::Disabled),
        Some(_) => {
            errors.push(ParamError::new(
                "status",
                "invalid_status",
                "status must be 'enabled' or 'disabled'.",
            ));
            None
        }
    };
    if !errors.is_empty() {
        return Err(EndpointError::Invalid(errors));
    }
    let changes = WebhookEndpointChanges {
        endpoint_url,
        events,
        status,
    };
    Ok(Json(state.sso.webhooks().update(&id, changes).await?))
}

async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    state
        .sso
        .webhooks()
        .delete(
            &id,
            Box::new(|ep, cs| {
                DeliveryStates::stage_remove(cs, &ep.id);
                Ok(())
            }),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list(State(state): State<AppState>, q: Query) -> ApiResult<Json<List<WebhookEndpoint>>> {
    let page = page_request(&q, IdPrefix::WebhookEndpoint)?;
    Ok(Json(state.sso.webhooks().list(&page)?.into_list()))
}

/// The admin view of one endpoint's delivery (`lag` = durable events not yet handled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryView {
    pub object: &'static str,
    pub endpoint_id: String,
    pub endpoint_url: String,
    pub status: EndpointStatus,
    pub cursor: u64,
    pub last_event_seq: u64,
    pub lag: u64,
    pub last_success_at: Option<Timestamp>,
    pub last_failure_at: Option<Timestamp>,
    pub consecutive_failures: u32,
    pub next_attempt_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub last_event_id: Option<String>,
    pub delivered_total: u64,
}

async fn delivery(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<DeliveryView>> {
    let endpoint = state.sso.webhooks().load(&id)?;
    let ds = DeliveryStates::new(state.store.clone())
        .get(&id)?
        .unwrap_or_default();
    let last = state.store.last_event_seq()?;
    Ok(Json(DeliveryView {
        object: "webhook_delivery_state",
        endpoint_id: endpoint.id,
        endpoint_url: endpoint.endpoint_url,
        status: endpoint.status,
        cursor: ds.cursor,
        last_event_seq: last,
        lag: last.saturating_sub(ds.cursor),
        last_success_at: ds.last_success_at,
        last_failure_at: ds.last_failure_at,
        consecutive_failures: ds.consecutive_failures,
        next_attempt_at: ds.next_attempt_at,
        last_error: ds.last_error,
        last_event_id: ds.last_event_id,
        delivered_total: ds.delivered_total,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events_api::test_support::harness;
    use idbridge_model::{parse_id, Event, EventKind};
    use idbridge_store::ChangeSet;

    const EVENTS: [&str; 2] = ["organization.created", "dsync.user.created"];

    #[test]
    fn urls_are_checked() {
        assert_eq!(
            validate_url("https://Example.COM/hook").as_deref(),
            Ok("https://example.com/hook")
        );
        assert!(validate_url("http://127.0.0.1:8080/x?y=1").is_ok());
        for bad in [
            "ftp://example.com/",
            "https://user@example.com/",
            "https://user:pw@example.com/",
            "https://example.com/#frag",
            "/relative",
            "javascript:alert(1)",
        ] {
            assert!(validate_url(bad).is_err(), "{bad}");
        }
        let long = format!(
            "https://example.com/{}",
            "a".repeat(idbridge_sso::webhooks::MAX_URL_LEN)
        );
        assert!(validate_url(&long).is_err());
    }

    #[tokio::test]
    async fn crud_in_the_workos_shape() {
        let h = harness();
        // An event before creation: the new endpoint's cursor starts past it.
        let mut cs = ChangeSet::new();
        cs.append_event(&Event::new(EventKind::OrganizationCreated, json!({})), None);
        h.store.commit(cs).expect("commit");

        let body = json!({"endpoint_url": "https://example.com/hook", "events": EVENTS});
        let created = h
            .call("POST", "/webhook_endpoints", Some(body.clone()), &[])
            .await;
        assert_eq!(created.status, StatusCode::CREATED);
        let ep = created.json();
        let id = ep["id"].as_str().expect("id").to_string();
        assert!(parse_id(IdPrefix::WebhookEndpoint, &id).is_ok());
        assert_eq!(ep["object"], "webhook_endpoint");
        assert_eq!(ep["status"], "enabled");
        assert_eq!(ep["events"], json!(EVENTS));
        assert!(ep["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_") && s.len() == 38));
        for key in ["created_at", "updated_at", "endpoint_url"] {
            assert!(ep[key].is_string(), "{key}");
        }
        let delivery = h
            .call(
                "GET",
                &format!("/admin/webhook_endpoints/{id}/delivery"),
                None,
                &[],
            )
            .await;
        assert_eq!(delivery.status, StatusCode::OK);
        assert_eq!(delivery.json()["cursor"], json!(1));
        assert_eq!(delivery.json()["lag"], json!(0));

        // A later event is lag until the worker (not running here) moves the cursor.
        let mut cs = ChangeSet::new();
        cs.append_event(&Event::new(EventKind::OrganizationUpdated, json!({})), None);
        h.store.commit(cs).expect("commit");
        let behind = h
            .call(
                "GET",
                &format!("/admin/webhook_endpoints/{id}/delivery"),
                None,
                &[],
            )
            .await
            .json();
        assert_eq!(
            (behind["cursor"].clone(), behind["lag"].clone()),
            (json!(1), json!(1))
        );
        assert_eq!(behind["last_event_seq"], json!(2));

        let dup = h.call("POST", "/webhook_endpoints", Some(body), &[]).await;
        assert_eq!(dup.status, StatusCode::CONFLICT);
        assert_eq!(dup.json()["code"], "duplicate_endpoint");

        let creds = h
            .call(
                "POST",
                "/webhook_endpoints",
                Some(json!({"endpoint_url": "https://a:b@example.com/", "events": EVENTS})),
                &[],
            )
            .await;
        assert_eq!(creds.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(creds.json()["code"], "invalid_url");
        let unknown = h
            .call(
                "POST",
                "/webhook_endpoints",
                Some(json!({"endpoint_url": "https://example.com/2", "events": ["nope.x"]})),
                &[],
            )
            .await;
        assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(unknown.json()["code"], "invalid_request_parameters");
        assert_eq!(unknown.json()["errors"][0]["code"], "unknown_event_type");
        assert!(unknown.json()["errors"][0]["message"].is_string());
        let missing = h
            .call(
                "POST",
                "/webhook_endpoints",
                Some(json!({"endpoint_url": "https://example.com/3"})),
                &[],
            )
            .await;
        assert_eq!(missing.json()["errors"][0]["code"], "required");

        let patched = h
            .call(
                "PATCH",
                &format!("/webhook_endpoints/{id}"),
                Some(json!({"status": "disabled", "events": ["user.created"]})),
                &[],
            )
            .await;
        assert_eq!(patched.status, StatusCode::OK);
        assert_eq!(patched.json()["status"], "disabled");
        assert_eq!(patched.json()["events"], json!(["user.created"]));
        assert_eq!(patched.json()["secret"], ep["secret"]);
        let bad_status = h
            .call(
                "PATCH",
                &format!("/webhook_endpoints/{id}"),
                Some(json!({"status": "paused"})),
                &[],
            )
            .await;
        assert_eq!(bad_status.status, StatusCode::UNPROCESSABLE_ENTITY);

        // URL change frees the old URL for someone else.
        let moved = h
            .call(
                "PATCH",
                &format!("/webhook_endpoints/{id}"),
                Some(json!({"endpoint_url": "https://example.com/moved"})),
                &[],
            )
            .await;
        assert_eq!(moved.status, StatusCode::OK);
        let reuse = h
            .call(
                "POST",
                "/webhook_endpoints",
                Some(json!({"endpoint_url": "https://example.com/hook", "events": EVENTS})),
                &[],
            )
            .await;
        assert_eq!(reuse.status, StatusCode::CREATED);
        let clash = h
            .call(
                "PATCH",
                &format!("/webhook_endpoints/{id}"),
                Some(json!({"endpoint_url": "https://example.com/hook"})),
                &[],
            )
            .await;
        assert_eq!(clash.status, StatusCode::CONFLICT);

        let list = h
            .call("GET", "/webhook_endpoints?order=asc", None, &[])
            .await
            .json();
        assert_eq!(list["object"], "list");
        assert_eq!(list["data"].as_array().map(Vec::len), Some(2));
        assert_eq!(list["data"][0]["id"], json!(id));
        assert!(list["list_metadata"].get("before").is_some());

        let gone = h
            .call("DELETE", &format!("/webhook_endpoints/{id}"), None, &[])
            .await;
        assert_eq!(gone.status, StatusCode::NO_CONTENT);
        assert!(DeliveryStates::new(h.store.clone())
            .get(&id)
            .expect("get")
            .is_none());
        for (method, uri) in [
            ("DELETE", format!("/webhook_endpoints/{id}")),
            ("PATCH", format!("/webhook_endpoints/{id}")),
            ("GET", format!("/admin/webhook_endpoints/{id}/delivery")),
        ] {
            let body = (method == "PATCH").then(|| json!({"status": "enabled"}));
            let r = h.call(method, &uri, body, &[]).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {uri}");
            assert_eq!(r.json()["code"], "entity_not_found");
        }
    }
}
