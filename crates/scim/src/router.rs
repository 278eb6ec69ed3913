//! The SCIM 2.0 HTTP endpoint of every SCIM directory, over the directory engine.
//!
//! Mounted at `/scim/v2/{directory_id}` (the directory's `scim.endpoint`). Each request is
//! authenticated with the directory's own bearer token (a token of directory A never reaches
//! directory B: the token is checked against the directory named in the path, and every read
//! and write is scoped to that directory). The SCIM resource as received (normalised by
//! [`crate::validate`]) is kept as the directory user's / group's `raw_attributes`, so a GET
//! returns what was PUT, plus `id`, `meta` and the computed `groups` / `members`.
//!
//! Every failure is a SCIM error body; a request that fails changes nothing: bodies, filters,
//! PATCH operations and member references are all checked before the first write.

use std::collections::HashMap;
use std::sync::Arc;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use chrono::{DateTime, Utc};
use http::header::{HeaderName, HeaderValue};
use http::{header, Method, StatusCode};
use idbridge_directory::{
    ChangeKind, Constraint, Cursor, DirectoryEngine, EngineError, GroupInput, MemberEdit, Order,
    PageRequest, ScimAuth, StoredGroup, StoredUser, UserInput,
};
use idbridge_limits::{FailureLimit, FailureLimiter, RateLimit, RateLimiter, RetryAfter};
use idbridge_model::{new_id, DirectoryUserEmail, IdPrefix, Timestamp};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::auth::{bearer_token, WWW_AUTHENTICATE};
use crate::error::{ScimError, SCIM_CONTENT_TYPE};
use crate::etag::{check_if_match, etag};
use crate::filter::{index_lookup, matches, IndexedAttr};
use crate::list::{list_response, ListQuery, QueryParams};
use crate::patch::{apply_patch, compare_resources, PatchRequest};
use crate::projection::Projection;
use crate::resource::{stamp, Meta, Resource};
use crate::schema::{
    resource_types_json, schemas_json, service_provider_config_json, ResourceSchema,
    DEFAULT_MAX_RESULTS,
};
use crate::validate::{parse_body, parse_bool, validate_create, validate_replace};

/// Unique index of users' `userName` (case-folded, as `caseExact: false` requires).
pub const USER_NAME_KEY: &str = "scim.userName";
/// Unique index of groups' `displayName` (case-folded).
pub const GROUP_NAME_KEY: &str = "scim.displayName";

/// Default of [`ScimConfig::max_patch_members`].
pub const DEFAULT_MAX_PATCH_MEMBERS: usize = 10_000;

/// Settings of the SCIM endpoint.
#[derive(Debug, Clone)]
pub struct ScimConfig {
    /// idbridge's public base URL (no trailing slash): `meta.location` and `$ref`s start here.
    pub public_url: String,
    /// Largest request body (413 above it).
    pub max_body_bytes: usize,
    /// `maxResults` of list responses.
    pub max_results: usize,
    /// Requests per directory (after authentication); 429 with `Retry-After` above it.
    pub rate_limit: RateLimit,
    /// Failed authentications per client address; past it every attempt from the address is
    /// refused (429 with `Retry-After`) until the window passes.
    pub failed_auth_limit: FailureLimit,
    /// Members one group PATCH may add and remove in all (400 above it): bounds the store
    /// lookups and the single write one request can cause.
    pub max_patch_members: usize,
    /// Limiters owned by the caller, so it can change their limits while the router runs
    /// (the admin API's `/admin/settings/limits`); `None`: built from the two limits above.
    pub limiters: Option<ScimLimiters>,
}

/// The SCIM endpoint's request-rate and failed-authentication limiters.
#[derive(Debug, Clone)]
pub struct ScimLimiters {
    /// Requests per directory.
    pub rate: Arc<RateLimiter>,
    /// Failed authentications per client address.
    pub failed_auth: Arc<FailureLimiter>,
}

impl Default for ScimConfig {
    fn default() -> Self {
        ScimConfig {
            public_url: "http://127.0.0.1:8080".into(),
            max_body_bytes: crate::validate::MAX_BODY_BYTES,
            max_results: DEFAULT_MAX_RESULTS,
            // Off in the library; the server's config turns them on.
            rate_limit: RateLimit {
                per_second: 0.0,
                burst: 0,
            },
            failed_auth_limit: FailureLimit {
                max_failures: 0,
                window_secs: 60,
            },
            max_patch_members: DEFAULT_MAX_PATCH_MEMBERS,
            limiters: None,
        }
    }
}

/// The path of a directory's SCIM base URL relative to the public URL.
pub fn endpoint_path(directory_id: &str) -> String {
    format!("/scim/v2/{directory_id}")
}

/// A directory's SCIM base URL (`scim.endpoint`).
pub fn endpoint_url(public_url: &str, directory_id: &str) -> String {
    format!(
        "{}{}",
        public_url.trim_end_matches('/'),
        endpoint_path(directory_id)
    )
}

#[derive(Clone)]
struct Svc {
    engine: Arc<DirectoryEngine>,
    cfg: Arc<ScimConfig>,
    rate: Arc<RateLimiter>,
    failed_auth: Arc<FailureLimiter>,
}

/// The SCIM routes (`/scim/v2/{directory_id}/...`), ready to merge into any router. They carry
/// their own bearer authentication; mount them outside API-key checks.
pub fn router<S: Clone + Send + Sync + 'static>(
    engine: Arc<DirectoryEngine>,
    cfg: ScimConfig,
) -> Router<S> {
    let limiters = cfg.limiters.clone().unwrap_or_else(|| ScimLimiters {
        rate: Arc::new(RateLimiter::new(cfg.rate_limit)),
        failed_auth: Arc::new(FailureLimiter::new(cfg.failed_auth_limit)),
    });
    let svc = Svc {
        engine,
        rate: limiters.rate,
        failed_auth: limiters.failed_auth,
        cfg: Arc::new(cfg),
    };
    Router::new()
        .route("/scim/v2/{directory_id}", any(handle_base))
        .route("/scim/v2/{directory_id}/", any(handle_base))
        .route("/scim/v2/{directory_id}/{*rest}", any(handle))
        .with_state(svc)
}

/// A successful answer.
struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, String)>,
    body: Option<Value>,
}

impl Reply {
    fn ok(body: Value) -> Self {
        Reply {
            status: StatusCode::OK,
            headers: Vec::new(),
            body: Some(body),
        }
    }

    fn with_etag(mut self, tag: &str) -> Self {
        self.headers.push((header::ETAG, tag.to_owned()));
        self
    }
}

fn respond(
    status: StatusCode,
    headers: Vec<(HeaderName, String)>,
    body: Option<Value>,
) -> Response {
    let mut resp = match body {
        Some(b) => (status, b.to_string()).into_response(),
        None => status.into_response(),
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SCIM_CONTENT_TYPE),
    );
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    resp
}

fn error_response(e: ScimError) -> Response {
    let mut headers = Vec::new();
    if e.status == 401 {
        headers.push((header::WWW_AUTHENTICATE, WWW_AUTHENTICATE.to_owned()));
    }
    if e.status >= 500 {
        tracing::error!(status = e.status, detail = %e.detail, "SCIM request failed");
    } else {
        tracing::info!(status = e.status, detail = %e.detail, "SCIM request refused");
    }
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    respond(status, headers, Some(e.to_json()))
}

/// The client's address (from the listener's connect info), or "unknown" in-process.
fn client_address(req: &Request) -> String {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// 429 in SCIM's error format, with `Retry-After` (RFC 7644 §3.12 lists 429 among its codes).
fn too_many_requests(wait: RetryAfter, what: &str) -> Response {
    let secs = wait.secs();
    tracing::info!(retry_after = secs, "{what}");
    let e = ScimError::new(429, None, format!("{what}; retry after {secs} seconds"));
    respond(
        StatusCode::TOO_MANY_REQUESTS,
        vec![(header::RETRY_AFTER, secs.to_string())],
        Some(e.to_json()),
    )
}

async fn handle_base(
    State(svc): State<Svc>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    req: Request,
) -> Response {
    match path {
        Ok(Path(dir)) => serve(svc, dir, String::new(), req).await,
        Err(_) => error_response(ScimError::not_found("no such SCIM endpoint")),
    }
}

async fn handle(
    State(svc): State<Svc>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    req: Request,
) -> Response {
    match path {
        Ok(Path((dir, rest))) => serve(svc, dir, rest, req).await,
        Err(_) => error_response(ScimError::not_found("no such SCIM endpoint")),
    }
}

/// What the blocking part needs from the HTTP request.
struct Call {
    dir: String,
    method: Method,
    segments: Vec<String>,
    query: HashMap<String, String>,
    if_match: Option<String>,
    body: Vec<u8>,
}

async fn serve(svc: Svc, dir: String, rest: String, req: Request) -> Response {
    let span =
        tracing::info_span!("scim", directory_id = %dir, method = %req.method(), path = %rest);
    serve_in_span(svc, dir, rest, req, span.clone())
        .instrument(span)
        .await
}

async fn serve_in_span(
    svc: Svc,
    dir: String,
    rest: String,
    req: Request,
    span: tracing::Span,
) -> Response {
    // Authenticate before reading the body: an anonymous client cannot make us buffer 2 MB.
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let client = client_address(&req);
    if let Err(wait) = svc.failed_auth.check(&client) {
        return too_many_requests(wait, "too many failed authentications from this address");
    }
    let token = match bearer_token(auth.as_deref()) {
        Ok(t) => t.to_owned(),
        Err(e) => {
            svc.failed_auth.failed(&client);
            return error_response(e);
        }
    };
    match svc.engine.scim_auth(&dir, &token) {
        Ok(ScimAuth::Accepted(_)) => {}
        Ok(ScimAuth::Refused) => {
            svc.failed_auth.failed(&client);
            return error_response(ScimError::unauthorized(
                "the bearer token is not valid for this directory",
            ));
        }
        // The right token: no guessing to throttle, and the caller may know why.
        Ok(ScimAuth::Deactivated) => {
            return error_response(ScimError::unauthorized(
                "the directory is deactivated; an administrator can activate it with POST /admin/directories/{id}/activate",
            ));
        }
        Err(e) => return error_response(engine_error(e)),
    }
    if let Err(wait) = svc.rate.check(&dir) {
        return too_many_requests(wait, "too many requests for this directory");
    }
    let method = req.method().clone();
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let if_match = req
        .headers()
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let limit = svc.cfg.max_body_bytes;
    let body = match axum::body::to_bytes(req.into_body(), limit).await {
        Ok(b) => b.to_vec(),
        Err(_) => {
            return error_response(ScimError::payload_too_large(format!(
                "request body is larger than {limit} bytes"
            )))
        }
    };
    let call = Call {
        dir,
        method,
        segments: rest
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        query,
        if_match,
        body,
    };
    let span2 = span.clone();
    let result = tokio::task::spawn_blocking(move || {
        let _e = span2.enter();
        svc.dispatch(&call)
    })
    .await;
    match result {
        Ok(Ok(r)) => respond(r.status, r.headers, r.body),
        Ok(Err(e)) => error_response(e),
        Err(e) => error_response(ScimError::internal(format!("request task failed: {e}"))),
    }
}

/// Maps engine failures onto SCIM statuses (RFC 7644 §3.12).
fn engine_error(e: EngineError) -> ScimError {
    match e {
        EngineError::NotFound { what, id } => {
            ScimError::not_found(format!("{} {id} not found", what.replace('_', " ")))
        }
        EngineError::Conflict { constraint, detail } => match constraint {
            Constraint::Version => ScimError::precondition_failed(
                "the resource has changed: If-Match does not match meta.version",
            ),
            Constraint::UniqueKey(k) if k == USER_NAME_KEY => {
                ScimError::uniqueness("userName is already taken")
            }
            Constraint::UniqueKey(k) if k == GROUP_NAME_KEY => {
                ScimError::uniqueness("displayName is already taken")
            }
            Constraint::IdpId => ScimError::uniqueness("externalId is already taken"),
            _ => ScimError::new(409, None, format!("conflicting change: {detail}")),
        },
        EngineError::Invalid(m) => ScimError::invalid_value(m),
        EngineError::Guard(g) => ScimError::new(400, None, g.to_string()),
        EngineError::Store(s) => ScimError::internal(format!("store: {s}")),
        EngineError::Source(s) => ScimError::internal(format!("snapshot source: {s}")),
    }
}

fn to_chrono(t: Timestamp) -> DateTime<Utc> {
    t.to_datetime()
}

fn short_hash(items: &[String]) -> String {
    let mut h = Sha256::new();
    for i in items {
        h.update(i.as_bytes());
        h.update([0u8]);
    }
    hex_prefix(&h.finalize())
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Strips what the server owns (`id`, `meta`, computed `groups`/`members`) from a resource.
fn stored_part(resource: &Value, drop: &[&str]) -> Map<String, Value> {
    let mut m = resource.as_object().cloned().unwrap_or_default();
    m.retain(|k, _| {
        !k.eq_ignore_ascii_case("id")
            && !k.eq_ignore_ascii_case("meta")
            && !drop.iter().any(|d| k.eq_ignore_ascii_case(d))
    });
    m
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// SCIM User → engine input. `idp_id` is `externalId` (Entra's object id, Okta's user id),
/// else our own SCIM id.
pub fn user_input(resource: &Value, scim_id: &str) -> UserInput {
    let r = Resource(resource);
    let idp_id = non_empty(r.external_id()).unwrap_or(scim_id).to_owned();
    let emails: Vec<DirectoryUserEmail> = resource
        .get("emails")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| DirectoryUserEmail {
                    primary: match e.get("primary") {
                        Some(Value::Bool(b)) => *b,
                        Some(Value::String(s)) => parse_bool(s).unwrap_or(false),
                        _ => false,
                    },
                    email_type: e.get("type").and_then(Value::as_str).map(str::to_owned),
                    value: e.get("value").and_then(Value::as_str).map(str::to_owned),
                })
                .collect()
        })
        .unwrap_or_default();
    let given = r.given_name().map(str::to_owned);
    let family = r.family_name().map(str::to_owned);
    let formatted = resource
        .get("name")
        .and_then(|n| n.get("formatted"))
        .and_then(Value::as_str);
    let name = non_empty(r.display_name())
        .or(non_empty(formatted))
        .map(str::to_owned)
        .or_else(|| match (&given, &family) {
            (Some(g), Some(f)) => Some(format!("{g} {f}")),
            (Some(x), None) | (None, Some(x)) => Some(x.clone()),
            (None, None) => None,
        });
    let raw = stored_part(resource, &["groups"]);
    let user_name = r.user_name().map(str::to_owned);
    let unique_keys = user_name
        .iter()
        .map(|u| (USER_NAME_KEY.to_owned(), u.to_lowercase()))
        .collect();
    UserInput {
        idp_id,
        email: r.primary_email().map(str::to_owned),
        first_name: given,
        last_name: family,
        name,
        emails,
        username: user_name,
        job_title: resource
            .get("title")
            .and_then(Value::as_str)
            .map(str::to_owned),
        active: r.active(),
        source: Value::Object(raw.clone()),
        raw_attributes: raw,
        unique_keys,
    }
}

/// `members[]` entries the client gave a `display` for, as `{value, display}`: kept with the
/// group so a GET returns the display that was sent (membership itself lives in the engine).
fn member_displays(resource: &Value) -> Vec<Value> {
    resource
        .get("members")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let v = m.get("value").and_then(Value::as_str)?;
            let d = m.get("display").and_then(Value::as_str)?;
            Some(json!({"value": v, "display": d}))
        })
        .collect()
}

fn display_of<'a>(raw: &'a Map<String, Value>, uid: &str) -> Option<&'a str> {
    raw.get("members")
        .and_then(Value::as_array)?
        .iter()
        .find(|m| m.get("value").and_then(Value::as_str) == Some(uid))
        .and_then(|m| m.get("display"))
        .and_then(Value::as_str)
}

/// SCIM Group → engine input. Membership is applied separately; only the displays the client
/// sent for members are kept in `raw_attributes.members`.
pub fn group_input(resource: &Value, scim_id: &str) -> GroupInput {
    let r = Resource(resource);
    let mut raw = stored_part(resource, &["members"]);
    let displays = member_displays(resource);
    if !displays.is_empty() {
        raw.insert("members".into(), Value::Array(displays));
    }
    let name = r.display_name().unwrap_or_default().to_owned();
    GroupInput {
        idp_id: non_empty(r.external_id()).unwrap_or(scim_id).to_owned(),
        unique_keys: vec![(GROUP_NAME_KEY.to_owned(), name.to_lowercase())],
        name,
        source: Value::Object(raw.clone()),
        raw_attributes: raw,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Users,
    Groups,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        match s {
            "Users" => Some(Kind::Users),
            "Groups" => Some(Kind::Groups),
            _ => None,
        }
    }

    fn schema(self) -> &'static ResourceSchema {
        match self {
            Kind::Users => ResourceSchema::user(),
            Kind::Groups => ResourceSchema::group(),
        }
    }
}

/// Whether `projection` would return the computed attribute `name` (`groups` / `members`),
/// so it is only computed when asked for.
fn wants(projection: &Projection, schema: &ResourceSchema, name: &str) -> bool {
    let probe = json!({ name: [{"value": "x"}] });
    projection.apply(&probe, schema).get(name).is_some()
}

fn filter_mentions(q: &HashMap<String, String>, lq: &ListQuery, name: &str) -> bool {
    lq.filter.is_some()
        && q.get("filter")
            .is_none_or(|f| f.to_ascii_lowercase().contains(&name.to_ascii_lowercase()))
}

impl Svc {
    fn base(&self, dir: &str) -> String {
        endpoint_url(&self.cfg.public_url, dir)
    }

    fn dispatch(&self, c: &Call) -> Result<Reply, ScimError> {
        let base = self.base(&c.dir);
        let seg: Vec<&str> = c.segments.iter().map(String::as_str).collect();
        let get = c.method == Method::GET;
        match seg.as_slice() {
            ["ServiceProviderConfig" | "Schemas" | "ResourceTypes", ..] if !get => Err(
                ScimError::method_not_allowed("discovery endpoints are read-only"),
            ),
            ["ServiceProviderConfig"] => Ok(Reply::ok(service_provider_config_json(
                &base,
                self.cfg.max_results,
            ))),
            ["Schemas"] => {
                let all = schemas_json(&base);
                let n = all.len();
                Ok(Reply::ok(list_response(all, n, 1)))
            }
            ["Schemas", id] => schemas_json(&base)
                .into_iter()
                .find(|s| s["id"] == *id)
                .map(Reply::ok)
                .ok_or_else(|| ScimError::not_found(format!("no schema {id}"))),
            ["ResourceTypes"] => {
                let all = resource_types_json(&base);
                let n = all.len();
                Ok(Reply::ok(list_response(all, n, 1)))
            }
            ["ResourceTypes", id] => resource_types_json(&base)
                .into_iter()
                .find(|s| s["id"] == *id)
                .map(Reply::ok)
                .ok_or_else(|| ScimError::not_found(format!("no resource type {id}"))),
            [".search"] if c.method == Method::POST => self.root_search(c),
            [".search"] => Err(ScimError::method_not_allowed("use POST for .search")),
            [kind] if Kind::parse(kind).is_some() => {
                let kind = Kind::parse(kind).ok_or_else(|| ScimError::internal("kind"))?;
                match c.method {
                    Method::GET => {
                        let q = |k: &str| c.query.get(k).map(String::as_str);
                        let params = QueryParams {
                            filter: q("filter"),
                            attributes: q("attributes"),
                            excluded_attributes: q("excludedAttributes"),
                            start_index: q("startIndex"),
                            count: q("count"),
                        };
                        let lq =
                            ListQuery::from_params(&params, kind.schema(), self.cfg.max_results)?;
                        self.list(c, kind, &lq).map(Reply::ok)
                    }
                    Method::POST => self.create(c, kind),
                    _ => Err(ScimError::method_not_allowed(format!(
                        "{} is not allowed on /{}",
                        c.method,
                        seg.join("/")
                    ))),
                }
            }
            [kind, ".search"] if Kind::parse(kind).is_some() => {
                let kind = Kind::parse(kind).ok_or_else(|| ScimError::internal("kind"))?;
                if c.method != Method::POST {
                    return Err(ScimError::method_not_allowed("use POST for .search"));
                }
                let body = parse_body(&c.body, self.cfg.max_body_bytes)?;
                let lq = ListQuery::from_search_body(&body, kind.schema(), self.cfg.max_results)?;
                self.list(c, kind, &lq).map(Reply::ok)
            }
            [kind, id] if Kind::parse(kind).is_some() => {
                let kind = Kind::parse(kind).ok_or_else(|| ScimError::internal("kind"))?;
                match (c.method.clone(), kind) {
                    (Method::GET, _) => self.get_one(c, kind, id),
                    (Method::PUT, Kind::Users) => self.put_user(c, id),
                    (Method::PUT, Kind::Groups) => self.put_group(c, id),
                    (Method::PATCH, Kind::Users) => self.patch_user(c, id),
                    (Method::PATCH, Kind::Groups) => self.patch_group(c, id),
                    (Method::DELETE, _) => self.delete(c, kind, id),
                    _ => Err(ScimError::method_not_allowed(format!(
                        "{} is not allowed on a resource",
                        c.method
                    ))),
                }
            }
            _ => Err(ScimError::not_found(format!(
                "no SCIM endpoint at /{}",
                seg.join("/")
            ))),
        }
    }

    fn projection(c: &Call) -> Result<Projection, ScimError> {
        Projection::from_query(
            c.query.get("attributes").map(String::as_str),
            c.query.get("excludedAttributes").map(String::as_str),
        )
    }

    // ---- building resources ----

    fn user_resource(
        &self,
        dir: &str,
        u: &StoredUser,
        with_groups: bool,
    ) -> Result<Value, ScimError> {
        let mut r = Value::Object(u.user.raw_attributes.clone());
        let version = u.version.to_string();
        stamp(
            &mut r,
            &u.user.id,
            &Meta {
                resource_type: "User",
                created: to_chrono(u.user.created_at),
                last_modified: to_chrono(u.user.updated_at),
                location: format!("{}/Users/{}", self.base(dir), u.user.id),
                version: &version,
            },
        );
        if with_groups {
            let groups = self
                .engine
                .user_groups(&u.user.id)
                .or_else(|e| match e {
                    EngineError::NotFound { .. } => Ok(Vec::new()),
                    e => Err(e),
                })
                .map_err(engine_error)?;
            if !groups.is_empty() {
                let base = self.base(dir);
                let list: Vec<Value> = groups
                    .iter()
                    .map(|g| {
                        json!({"value": g.group.id, "display": g.group.name,
                               "$ref": format!("{base}/Groups/{}", g.group.id), "type": "direct"})
                    })
                    .collect();
                if let Some(o) = r.as_object_mut() {
                    o.insert("groups".into(), Value::Array(list));
                }
            }
        }
        Ok(r)
    }

    /// Member user ids of a group (id order).
    fn member_ids(&self, g: &StoredGroup) -> Result<Vec<String>, ScimError> {
        self.engine.group_members(&g.group.id).map_err(engine_error)
    }

    /// A group's ETag covers its record and its member list: membership lives outside the
    /// group record, and a PATCH of members must change `meta.version`.
    fn group_version(g: &StoredGroup, members: &[String]) -> String {
        format!("{}-{}", g.version, short_hash(members))
    }

    fn group_resource(
        &self,
        dir: &str,
        g: &StoredGroup,
        members: &[String],
        with_members: bool,
    ) -> Result<Value, ScimError> {
        let mut raw = g.group.raw_attributes.clone();
        raw.remove("members");
        let mut r = Value::Object(raw);
        let version = Self::group_version(g, members);
        stamp(
            &mut r,
            &g.group.id,
            &Meta {
                resource_type: "Group",
                created: to_chrono(g.group.created_at),
                last_modified: to_chrono(g.group.updated_at),
                location: format!("{}/Groups/{}", self.base(dir), g.group.id),
                version: &version,
            },
        );
        if with_members && !members.is_empty() {
            let base = self.base(dir);
            let mut list = Vec::with_capacity(members.len());
            for uid in members {
                let sent = display_of(&g.group.raw_attributes, uid).map(str::to_owned);
                let display = sent.or_else(|| {
                    self.engine.get_user(Some(dir), uid).ok().and_then(|u| {
                        u.user
                            .raw_attributes
                            .get("displayName")
                            .or_else(|| u.user.raw_attributes.get("userName"))
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                });
                let mut m =
                    json!({"value": uid, "$ref": format!("{base}/Users/{uid}"), "type": "User"});
                if let (Some(d), Some(o)) = (display, m.as_object_mut()) {
                    o.insert("display".into(), Value::String(d));
                }
                list.push(m);
            }
            if let Some(o) = r.as_object_mut() {
                o.insert("members".into(), Value::Array(list));
            }
        }
        Ok(r)
    }

    /// A SCIM user: a directory user or a parked (deactivated, kept) one.
    fn load_user(&self, dir: &str, id: &str) -> Result<StoredUser, ScimError> {
        self.engine.get_scim_user(dir, id).map_err(engine_error)
    }

    fn load_group(&self, dir: &str, id: &str) -> Result<StoredGroup, ScimError> {
        self.engine.get_group(Some(dir), id).map_err(engine_error)
    }

    /// Every SCIM user, parked ones included, in id order.
    fn all_users(&self, dir: &str) -> Result<Vec<StoredUser>, ScimError> {
        self.engine.scim_users(dir).map_err(engine_error)
    }

    fn all_groups(&self, dir: &str) -> Result<Vec<StoredGroup>, ScimError> {
        let mut out = Vec::new();
        let mut cursor = Cursor::None;
        loop {
            let page = self
                .engine
                .list_groups(
                    dir,
                    None,
                    &PageRequest {
                        limit: 1000,
                        order: Order::Asc,
                        cursor,
                    },
                )
                .map_err(engine_error)?;
            out.extend(page.data);
            match page.after {
                Some(a) => cursor = Cursor::After(a),
                None => return Ok(out),
            }
        }
    }

    // ---- reads ----

    /// The filtered, paged, projected resources of one kind (before the ListResponse wrapper):
    /// `(page, total)`. `eq` on `userName` / `externalId` / `displayName` goes through the
    /// engine's unique indexes instead of a scan; computed attributes are built only for the
    /// page unless the filter reads them.
    fn query(
        &self,
        c: &Call,
        kind: Kind,
        lq: &ListQuery,
        skip_paging: bool,
    ) -> Result<(Vec<Value>, usize), ScimError> {
        let dir = c.dir.as_str();
        let schema = kind.schema();
        let lookup = lq.filter.as_ref().and_then(index_lookup);
        let computed = match kind {
            Kind::Users => "groups",
            Kind::Groups => "members",
        };
        let filter_needs = filter_mentions(&c.query, lq, computed);
        let show = wants(&lq.projection, schema, computed);
        let mut hits: Vec<Value> = Vec::new();
        match kind {
            Kind::Users => {
                let candidates: Vec<StoredUser> = match lookup.map(|l| (l.attr, l.value)) {
                    Some((IndexedAttr::UserName, v)) => self
                        .engine
                        .find_scim_user_by_key(dir, USER_NAME_KEY, &v.to_lowercase())
                        .map_err(engine_error)?
                        .into_iter()
                        .collect(),
                    Some((IndexedAttr::ExternalId, v)) => self
                        .engine
                        .find_scim_user_by_idp_id(dir, v)
                        .map_err(engine_error)?
                        .into_iter()
                        .collect(),
                    _ => self.all_users(dir)?,
                };
                let mut kept = Vec::new();
                for u in &candidates {
                    let r = self.user_resource(dir, u, filter_needs)?;
                    if lq.filter.as_ref().is_none_or(|f| matches(f, &r, schema)) {
                        kept.push((u, r));
                    }
                }
                let total = kept.len();
                let page: Vec<(&StoredUser, Value)> = if skip_paging {
                    kept
                } else {
                    lq.params.page(&kept).to_vec()
                };
                for (u, r) in page {
                    let r = if show && !filter_needs {
                        self.user_resource(dir, u, true)?
                    } else {
                        r
                    };
                    hits.push(lq.projection.apply(&r, schema));
                }
                Ok((hits, total))
            }
            Kind::Groups => {
                let candidates: Vec<StoredGroup> = match lookup.map(|l| (l.attr, l.value)) {
                    Some((IndexedAttr::DisplayName, v)) => self
                        .engine
                        .find_group_by_key(dir, GROUP_NAME_KEY, &v.to_lowercase())
                        .map_err(engine_error)?
                        .into_iter()
                        .collect(),
                    Some((IndexedAttr::ExternalId, v)) => self
                        .engine
                        .find_group_by_idp_id(dir, v)
                        .map_err(engine_error)?
                        .into_iter()
                        .collect(),
                    _ => self.all_groups(dir)?,
                };
                let mut kept = Vec::new();
                for g in &candidates {
                    let members = self.member_ids(g)?;
                    let r = self.group_resource(dir, g, &members, filter_needs)?;
                    if lq.filter.as_ref().is_none_or(|f| matches(f, &r, schema)) {
                        kept.push((g, members, r));
                    }
                }
                let total = kept.len();
                let page: Vec<(&StoredGroup, Vec<String>, Value)> = if skip_paging {
                    kept
                } else {
                    lq.params.page(&kept).to_vec()
                };
                for (g, members, r) in page {
                    let r = if show && !filter_needs {
                        self.group_resource(dir, g, &members, true)?
                    } else {
                        r
                    };
                    hits.push(lq.projection.apply(&r, schema));
                }
                Ok((hits, total))
            }
        }
    }

    fn list(&self, c: &Call, kind: Kind, lq: &ListQuery) -> Result<Value, ScimError> {
        let (page, total) = self.query(c, kind, lq, false)?;
        Ok(list_response(page, total, lq.params.start_index))
    }

    /// `POST /.search` at the root: Users then Groups, each with its own schema.
    fn root_search(&self, c: &Call) -> Result<Reply, ScimError> {
        let body = parse_body(&c.body, self.cfg.max_body_bytes)?;
        let mut all = Vec::new();
        let mut params = None;
        for kind in [Kind::Users, Kind::Groups] {
            let lq = match ListQuery::from_search_body(&body, kind.schema(), self.cfg.max_results) {
                Ok(lq) => lq,
                // A filter naming attributes only one type has does not fail the other type.
                Err(e) if e.scim_type == Some(crate::error::ScimType::InvalidFilter) => continue,
                Err(e) => return Err(e),
            };
            let (hits, _) = self.query(c, kind, &lq, true)?;
            all.extend(hits);
            params = Some(lq.params);
        }
        let params = params.ok_or_else(|| {
            ScimError::invalid_filter("the filter matches no resource type's schema")
        })?;
        let total = all.len();
        let page = params.page(&all).to_vec();
        Ok(Reply::ok(list_response(page, total, params.start_index)))
    }

    fn get_one(&self, c: &Call, kind: Kind, id: &str) -> Result<Reply, ScimError> {
        let projection = Self::projection(c)?;
        let schema = kind.schema();
        match kind {
            Kind::Users => {
                let u = self.load_user(&c.dir, id)?;
                let r = self.user_resource(&c.dir, &u, wants(&projection, schema, "groups"))?;
                Ok(
                    Reply::ok(projection.apply(&r, schema))
                        .with_etag(&etag(&u.version.to_string())),
                )
            }
            Kind::Groups => {
                let g = self.load_group(&c.dir, id)?;
                let members = self.member_ids(&g)?;
                let r = self.group_resource(
                    &c.dir,
                    &g,
                    &members,
                    wants(&projection, schema, "members"),
                )?;
                let tag = etag(&Self::group_version(&g, &members));
                Ok(Reply::ok(projection.apply(&r, schema)).with_etag(&tag))
            }
        }
    }

    // ---- users ----

    fn user_reply(&self, c: &Call, u: &StoredUser, status: StatusCode) -> Result<Reply, ScimError> {
        let projection = Self::projection(c)?;
        let schema = ResourceSchema::user();
        let r = self.user_resource(&c.dir, u, wants(&projection, schema, "groups"))?;
        let mut reply = Reply {
            status,
            headers: Vec::new(),
            body: Some(projection.apply(&r, schema)),
        }
        .with_etag(&etag(&u.version.to_string()));
        if status == StatusCode::CREATED {
            reply.headers.push((
                header::LOCATION,
                format!("{}/Users/{}", self.base(&c.dir), u.user.id),
            ));
        }
        Ok(reply)
    }

    fn create(&self, c: &Call, kind: Kind) -> Result<Reply, ScimError> {
        let body = parse_body(&c.body, self.cfg.max_body_bytes)?;
        let resource = validate_create(&body, kind.schema())?;
        match kind {
            Kind::Users => {
                let id = new_id(IdPrefix::DirectoryUser);
                let input = user_input(&resource, &id);
                let change = self
                    .engine
                    .create_scim_user(&c.dir, &id, input)
                    .map_err(engine_error)?;
                if change.kind == ChangeKind::Parked {
                    tracing::info!(user_id = %id, "user created inactive: parked, not in the directory (deactivation deletes)");
                }
                self.user_reply(c, &change.user, StatusCode::CREATED)
            }
            Kind::Groups => {
                let members = self.check_members(&c.dir, &resource)?;
                let id = new_id(IdPrefix::DirectoryGroup);
                let input = group_input(&resource, &id);
                let change = self
                    .engine
                    .create_group_with_members(&c.dir, &id, input, members)
                    .map_err(engine_error)?;
                self.group_reply(c, &change.group, StatusCode::CREATED)
            }
        }
    }

    fn put_user(&self, c: &Call, id: &str) -> Result<Reply, ScimError> {
        let u = self.load_user(&c.dir, id)?;
        check_if_match(c.if_match.as_deref(), &etag(&u.version.to_string()))?;
        let current = self.user_resource(&c.dir, &u, false)?;
        let body = parse_body(&c.body, self.cfg.max_body_bytes)?;
        let resource = validate_replace(&body, ResourceSchema::user(), &current)?;
        self.write_user(c, &u, &resource)
    }

    fn patch_user(&self, c: &Call, id: &str) -> Result<Reply, ScimError> {
        let u = self.load_user(&c.dir, id)?;
        check_if_match(c.if_match.as_deref(), &etag(&u.version.to_string()))?;
        let req = PatchRequest::from_json(&parse_body(&c.body, self.cfg.max_body_bytes)?)?;
        let mut resource = self.user_resource(&c.dir, &u, false)?;
        let outcome = apply_patch(&mut resource, &req, ResourceSchema::user())?;
        if !outcome.changed {
            return self.user_reply(c, &u, StatusCode::OK);
        }
        self.write_user(c, &u, &resource)
    }

    fn write_user(&self, c: &Call, u: &StoredUser, resource: &Value) -> Result<Reply, ScimError> {
        let input = user_input(resource, &u.user.id);
        let change = self
            .engine
            .update_scim_user(&c.dir, &u.user.id, input, Some(u.version))
            .map_err(engine_error)?;
        match change.kind {
            ChangeKind::Parked => tracing::info!(user_id = %u.user.id,
                "user deactivated: deleted from the directory, SCIM resource parked"),
            ChangeKind::Created => tracing::info!(user_id = %u.user.id,
                "parked user reactivated: back in the directory"),
            _ => {}
        }
        self.user_reply(c, &change.user, StatusCode::OK)
    }

    fn delete(&self, c: &Call, kind: Kind, id: &str) -> Result<Reply, ScimError> {
        match kind {
            Kind::Users => {
                let u = self.load_user(&c.dir, id)?;
                check_if_match(c.if_match.as_deref(), &etag(&u.version.to_string()))?;
                self.engine
                    .delete_scim_user(&c.dir, id)
                    .map_err(engine_error)?;
            }
            Kind::Groups => {
                let g = self.load_group(&c.dir, id)?;
                let members = self.member_ids(&g)?;
                check_if_match(
                    c.if_match.as_deref(),
                    &etag(&Self::group_version(&g, &members)),
                )?;
                self.engine.delete_group(&c.dir, id).map_err(engine_error)?;
            }
        }
        Ok(Reply {
            status: StatusCode::NO_CONTENT,
            headers: Vec::new(),
            body: None,
        })
    }

    // ---- groups ----

    fn group_reply(
        &self,
        c: &Call,
        g: &StoredGroup,
        status: StatusCode,
    ) -> Result<Reply, ScimError> {
        let projection = Self::projection(c)?;
        let schema = ResourceSchema::group();
        // Re-read: membership changes do not bump the group record.
        let g = self
            .load_group(&c.dir, &g.group.id)
            .unwrap_or_else(|_| g.clone());
        let members = self.member_ids(&g)?;
        let r = self.group_resource(&c.dir, &g, &members, wants(&projection, schema, "members"))?;
        let mut reply = Reply {
            status,
            headers: Vec::new(),
            body: Some(projection.apply(&r, schema)),
        }
        .with_etag(&etag(&Self::group_version(&g, &members)));
        if status == StatusCode::CREATED {
            reply.headers.push((
                header::LOCATION,
                format!("{}/Groups/{}", self.base(&c.dir), g.group.id),
            ));
        }
        Ok(reply)
    }

    /// The member ids a group resource names, each checked to be a user of this directory
    /// (before anything is written, so a bad member changes nothing).
    fn check_members(&self, dir: &str, resource: &Value) -> Result<Vec<String>, ScimError> {
        let ids: Vec<String> = Resource(resource)
            .member_values()
            .into_iter()
            .map(str::to_owned)
            .collect();
        self.check_ids(dir, &ids)?;
        Ok(ids)
    }

    /// Parked users pass: the engine skips them (not directory-group members while parked).
    fn check_ids(&self, dir: &str, ids: &[String]) -> Result<(), ScimError> {
        for id in ids {
            match self.engine.get_scim_user(dir, id) {
                Ok(_) => {}
                Err(EngineError::NotFound { .. }) => {
                    return Err(ScimError::invalid_value(format!(
                        "member {id} is not a user of this directory"
                    )))
                }
                Err(e) => return Err(engine_error(e)),
            }
        }
        Ok(())
    }

    fn current_group(
        &self,
        c: &Call,
        id: &str,
    ) -> Result<(StoredGroup, Vec<String>, Value), ScimError> {
        let g = self.load_group(&c.dir, id)?;
        let members = self.member_ids(&g)?;
        check_if_match(
            c.if_match.as_deref(),
            &etag(&Self::group_version(&g, &members)),
        )?;
        let mut resource = self.group_resource(&c.dir, &g, &[], false)?;
        // PATCH needs the members as plain values to add to / filter on / remove from.
        if !members.is_empty() {
            if let Some(o) = resource.as_object_mut() {
                o.insert(
                    "members".into(),
                    Value::Array(
                        members
                            .iter()
                            .map(|m| match display_of(&g.group.raw_attributes, m) {
                                Some(d) => json!({"value": m, "display": d}),
                                None => json!({"value": m}),
                            })
                            .collect(),
                    ),
                );
            }
        }
        Ok((g, members, resource))
    }

    fn put_group(&self, c: &Call, id: &str) -> Result<Reply, ScimError> {
        let (g, _members, current) = self.current_group(c, id)?;
        let body = parse_body(&c.body, self.cfg.max_body_bytes)?;
        let resource = validate_replace(&body, ResourceSchema::group(), &current)?;
        let new_members = self.check_members(&c.dir, &resource)?;
        self.write_group(c, &g, &current, &resource, MemberEdit::Set(new_members))?;
        self.group_reply(c, &g, StatusCode::OK)
    }

    fn patch_group(&self, c: &Call, id: &str) -> Result<Reply, ScimError> {
        let (g, _members, current) = self.current_group(c, id)?;
        let req = PatchRequest::from_json(&parse_body(&c.body, self.cfg.max_body_bytes)?)?;
        let mut resource = current.clone();
        let outcome = apply_patch(&mut resource, &req, ResourceSchema::group())?;
        let changed = outcome.members_added.len() + outcome.members_removed.len();
        if changed > self.cfg.max_patch_members {
            return Err(ScimError::invalid_value(format!(
                "this PATCH changes {changed} members; at most {} may change in one PATCH \
                 (send several)",
                self.cfg.max_patch_members
            )));
        }
        self.check_ids(&c.dir, &outcome.members_added)?;
        let edit = MemberEdit::Delta {
            add: outcome.members_added,
            remove: outcome.members_removed,
        };
        self.write_group(c, &g, &current, &resource, edit)?;
        self.group_reply(c, &g, StatusCode::OK)
    }

    /// Writes the group's own attributes (when they changed) and its members as one commit,
    /// guarded by the group version the request read.
    fn write_group(
        &self,
        c: &Call,
        g: &StoredGroup,
        before: &Value,
        after: &Value,
        members: MemberEdit,
    ) -> Result<(), ScimError> {
        let input = group_input(after, &g.group.id);
        let unchanged = input.raw_attributes == g.group.raw_attributes
            && input.name == g.group.name
            && input.idp_id == g.group.idp_id;
        let input = if unchanged || !compare_resources(before, after).changed {
            None
        } else if input.name.trim().is_empty() {
            return Err(ScimError::invalid_value("displayName is required"));
        } else {
            Some(input)
        };
        let members_unchanged = matches!(&members,
            MemberEdit::Delta { add, remove } if add.is_empty() && remove.is_empty());
        if input.is_none() && members_unchanged {
            return Ok(());
        }
        // The record version guards attribute writes computed from what this request read;
        // a member-only change is a diff and needs no guard (concurrent PATCHes of members).
        let expected_version = input.as_ref().map(|_| g.version);
        self.engine
            .update_group(&c.dir, &g.group.id, input, Some(members), expected_version)
            .map_err(engine_error)?;
        Ok(())
    }
}
