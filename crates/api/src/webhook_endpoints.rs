//! `/webhook_endpoints`: WorkOS-compatible endpoint management (workos-api.md §4.4, OpenAPI
//! `WebhookEndpointJson`), plus the admin view of each endpoint's delivery state.
//!
//! Deliveries themselves are made by `idbridge-forward`, which reads the records written here
//! (same table names, same JSON). A new endpoint's cursor is set, in the creating transaction,
//! to the current end of the event log: it receives the events committed after its creation,
//! not the backlog. Disabling keeps the cursor, so re-enabling resumes where delivery stopped
//! (events compacted by retention meanwhile are gone). WorkOS returns the secret with every
//! endpoint object (`secret` is a required key), so GET/PATCH return it too; it is only
//! readable with an API key.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use axum::{Json, Router};
use idbridge_model::{new_id, parse_id, IdPrefix, List, Timestamp};
use idbridge_store::{ChangeSet, StoreError};
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::body::{JsonObject, Query};
use crate::db::to_json;
use crate::error::{ApiError, ApiResult};
use crate::pagination::{paginate, PageRequest};
use crate::{tables, AppState};

idbridge_model::object_tag!(WebhookEndpointTag, "webhook_endpoint");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/webhook_endpoints", get(list).post(create))
        .route("/webhook_endpoints/{id}", patch(update).delete(delete))
        .route("/admin/webhook_endpoints/{id}/delivery", get(delivery))
}

/// Longest accepted `endpoint_url`.
const MAX_URL_LEN: usize = 2048;
/// Most event types one endpoint may subscribe to.
const MAX_EVENTS: usize = 200;

/// Event types an endpoint may subscribe to: the OpenAPI enum, plus the ones idbridge emits
/// that the enum lacks (`dsync.deactivated`).
/// idbridge's own event types. WorkOS SDKs with strict event models would fail on them, so they
/// reach only webhook endpoints and `/events` queries that name them explicitly.
pub const OPT_IN_EVENT_TYPES: &[&str] = &["dsync.delivery_rejected", "dsync.forward_failed"];

pub const KNOWN_EVENT_TYPES: &[&str] = &[
    "authentication.email_verification_succeeded",
    "authentication.magic_auth_failed",
    "authentication.magic_auth_succeeded",
    "authentication.mfa_succeeded",
    "authentication.oauth_failed",
    "authentication.oauth_succeeded",
    "authentication.password_failed",
    "authentication.password_succeeded",
    "authentication.passkey_failed",
    "authentication.passkey_succeeded",
    "authentication.sso_failed",
    "authentication.sso_started",
    "authentication.sso_succeeded",
    "authentication.sso_timed_out",
    "authentication.radar_risk_detected",
    "api_key.created",
    "api_key.revoked",
    "connection.activated",
    "connection.deactivated",
    "connection.saml_certificate_renewal_required",
    "connection.saml_certificate_renewed",
    "connection.deleted",
    "dsync.activated",
    "dsync.deactivated",
    "dsync.deleted",
    // idbridge's own (not WorkOS's): see OPT_IN_EVENT_TYPES.
    "dsync.delivery_rejected",
    "dsync.forward_failed",
    "dsync.group.created",
    "dsync.group.deleted",
    "dsync.group.updated",
    "dsync.group.user_added",
    "dsync.group.user_removed",
    "dsync.user.created",
    "dsync.user.deleted",
    "dsync.user.updated",
    "email_verification.created",
    "group.created",
    "group.deleted",
    "group.member_added",
    "group.member_removed",
    "group.updated",
    "flag.created",
    "flag.deleted",
    "flag.updated",
    "flag.rule_updated",
    "invitation.accepted",
    "invitation.created",
    "invitation.resent",
    "invitation.revoked",
    "magic_auth.created",
    "organization.created",
    "organization.deleted",
    "organization.updated",
    "organization_domain.created",
    "organization_domain.deleted",
    "organization_domain.updated",
    "organization_domain.verified",
    "organization_domain.verification_failed",
    "password_reset.created",
    "password_reset.succeeded",
    "user.created",
    "user.updated",
    "user.deleted",
    "organization_membership.created",
    "organization_membership.deleted",
    "organization_membership.updated",
    "role.created",
    "role.deleted",
    "role.updated",
    "organization_role.created",
    "organization_role.deleted",
    "organization_role.updated",
    "permission.created",
    "permission.deleted",
    "permission.updated",
    "session.created",
    "session.revoked",
    "waitlist_user.approved",
    "waitlist_user.created",
    "waitlist_user.denied",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointStatus {
    Enabled,
    Disabled,
}

/// The WorkOS `webhook_endpoint` object; also the stored record (`idbridge-forward` reads
/// `id`, `endpoint_url`, `secret`, `status`, `events` from it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    pub object: WebhookEndpointTag,
    pub id: String,
    pub endpoint_url: String,
    pub secret: String,
    pub status: EndpointStatus,
    pub events: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Delivery progress as `idbridge-forward` stores it (every field defaulted, so the starting
/// record `{"cursor": n}` written at creation reads back).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeliveryState {
    pub cursor: u64,
    pub last_success_at: Option<Timestamp>,
    pub last_failure_at: Option<Timestamp>,
    pub consecutive_failures: u32,
    pub next_attempt_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub last_event_id: Option<String>,
    pub delivered_total: u64,
}

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

/// http(s) only, a host, no user or password (the URL is shown back in listings and logs).
/// Returns the normalized form, which is also the duplicate check's key.
pub fn validate_url(raw: &str) -> Result<String, String> {
    if raw.len() > MAX_URL_LEN {
        return Err(format!(
            "endpoint_url is longer than {MAX_URL_LEN} characters."
        ));
    }
    let url = url::Url::parse(raw.trim())
        .map_err(|e| format!("endpoint_url is not a valid URL: {e}."))?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err("endpoint_url must use http or https.".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("endpoint_url must have a host.".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("endpoint_url must not contain credentials.".into());
    }
    if url.fragment().is_some() {
        return Err("endpoint_url must not contain a fragment.".into());
    }
    Ok(url.to_string())
}

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
            Some(name) if KNOWN_EVENT_TYPES.contains(&name) => {
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

/// A fresh signing secret: 32 characters from the OS RNG (about 190 bits).
fn new_secret() -> String {
    let random: String = rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    format!("whsec_{random}")
}

fn duplicate(url: &str) -> EndpointError {
    EndpointError::Api(ApiError::Conflict {
        code: "duplicate_endpoint",
        message: format!("A Webhook Endpoint with the URL '{url}' already exists."),
    })
}

async fn create(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> EndpointResult<Response> {
    let url = endpoint_url_field(&body, true)?.unwrap_or_default();
    let mut errors = Vec::new();
    let events = parse_events(body.get("events"), true, &mut errors);
    if !errors.is_empty() {
        return Err(EndpointError::Invalid(errors));
    }
    let id = new_id(IdPrefix::WebhookEndpoint);
    let created_at = parse_id(IdPrefix::WebhookEndpoint, &id)
        .map(|u| Timestamp::from_millis(i64::try_from(u.timestamp_ms()).unwrap_or(0)))
        .unwrap_or_else(|_| Timestamp::now());
    let endpoint = WebhookEndpoint {
        object: WebhookEndpointTag,
        id,
        endpoint_url: url.clone(),
        secret: new_secret(),
        status: EndpointStatus::Enabled,
        events: events.unwrap_or_default(),
        created_at,
        updated_at: created_at,
    };
    // The starting cursor: only events committed from now on are delivered.
    let start = DeliveryState {
        cursor: state.db.store().last_event_seq()?,
        ..DeliveryState::default()
    };
    let mut cs = ChangeSet::new();
    cs.require_absent(tables::WEBHOOK_ENDPOINT_BY_URL, &url);
    cs.put(
        tables::WEBHOOK_ENDPOINT_BY_URL,
        &url,
        endpoint.id.as_bytes().to_vec(),
    );
    cs.put(tables::WEBHOOK_ENDPOINTS, &endpoint.id, to_json(&endpoint)?);
    cs.put(tables::WEBHOOK_DELIVERY, &endpoint.id, to_json(&start)?);
    match state.db.commit(cs).await? {
        Ok(_) => Ok((StatusCode::CREATED, Json(endpoint)).into_response()),
        Err(StoreError::Conflict(_)) => Err(duplicate(&url)),
        Err(e) => Err(e.into()),
    }
}

fn load(state: &AppState, id: &str) -> ApiResult<WebhookEndpoint> {
    if parse_id(IdPrefix::WebhookEndpoint, id).is_err() {
        return Err(ApiError::not_found("Webhook Endpoint", id));
    }
    state
        .db
        .get_json(tables::WEBHOOK_ENDPOINTS, id)?
        .ok_or_else(|| ApiError::not_found("Webhook Endpoint", id))
}

async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> EndpointResult<Json<WebhookEndpoint>> {
    let old = load(&state, &id)?;
    let url = endpoint_url_field(&body, false)?;
    let mut errors = Vec::new();
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
    let mut endpoint = old.clone();
    if let Some(u) = &url {
        endpoint.endpoint_url = u.clone();
    }
    if let Some(e) = events {
        endpoint.events = e;
    }
    if let Some(s) = status {
        endpoint.status = s;
    }
    if endpoint == old {
        return Ok(Json(endpoint));
    }
    endpoint.updated_at = Timestamp::now();
    let mut cs = ChangeSet::new();
    // Optimistic concurrency: the record must still be what was read.
    cs.require_equals(tables::WEBHOOK_ENDPOINTS, &id, Some(to_json(&old)?));
    if endpoint.endpoint_url != old.endpoint_url {
        cs.delete(tables::WEBHOOK_ENDPOINT_BY_URL, &old.endpoint_url);
        cs.require_absent(tables::WEBHOOK_ENDPOINT_BY_URL, &endpoint.endpoint_url);
        cs.put(
            tables::WEBHOOK_ENDPOINT_BY_URL,
            &endpoint.endpoint_url,
            id.as_bytes().to_vec(),
        );
    }
    cs.put(tables::WEBHOOK_ENDPOINTS, &id, to_json(&endpoint)?);
    match state.db.commit(cs).await? {
        Ok(_) => Ok(Json(endpoint)),
        Err(StoreError::Conflict(detail))
            if detail.starts_with(tables::WEBHOOK_ENDPOINT_BY_URL) =>
        {
            Err(duplicate(&endpoint.endpoint_url))
        }
        Err(StoreError::Conflict(_)) => Err(EndpointError::Api(ApiError::Conflict {
            code: "concurrent_update",
            message: "The webhook endpoint was changed concurrently; retry.".into(),
        })),
        Err(e) => Err(e.into()),
    }
}

async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let endpoint = load(&state, &id)?;
    let mut cs = ChangeSet::new();
    cs.require_present(tables::WEBHOOK_ENDPOINTS, &id);
    cs.delete(tables::WEBHOOK_ENDPOINTS, &id);
    cs.delete(tables::WEBHOOK_ENDPOINT_BY_URL, &endpoint.endpoint_url);
    cs.delete(tables::WEBHOOK_DELIVERY, &id);
    match state.db.commit(cs).await? {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::Conflict(_)) => Err(ApiError::not_found("Webhook Endpoint", id)),
        Err(e) => Err(e.into()),
    }
}

async fn list(State(state): State<AppState>, q: Query) -> ApiResult<Json<List<WebhookEndpoint>>> {
    let page = PageRequest::from_query(&q, IdPrefix::WebhookEndpoint)?;
    let result = paginate(
        &state.db,
        tables::WEBHOOK_ENDPOINTS,
        "",
        &page,
        |_: &WebhookEndpoint| true,
        |e| e.id.clone(),
    )?;
    Ok(Json(List::new(result.data, result.before, result.after)))
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
    let endpoint = load(&state, &id)?;
    let ds: DeliveryState = state
        .db
        .get_json(tables::WEBHOOK_DELIVERY, &id)?
        .unwrap_or_default();
    let last = state.db.store().last_event_seq()?;
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
        assert!(validate_url(&format!("https://example.com/{}", "a".repeat(MAX_URL_LEN))).is_err());
    }

    #[tokio::test]
    async fn crud_in_the_workos_shape() {
        let h = harness();
        // An event before creation: the new endpoint's cursor starts past it.
        let mut cs = ChangeSet::new();
        crate::events::append(&mut cs, "organization.created", json!({}), None);
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
        crate::events::append(&mut cs, "organization.updated", json!({}), None);
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
        assert!(h
            .store
            .get(tables::WEBHOOK_DELIVERY, &id)
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
