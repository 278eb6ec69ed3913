//! Test support for the SCIM push: a source directory (engine over a durable SQLite store), a
//! second idbridge's real SCIM endpoint (router + engine over its own store) on a loopback
//! port, a fault-injecting HTTP proxy in front of any target, and the field-by-field
//! comparison of two directories.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use idbridge_directory::{
    Cursor, DirectoryEngine, DirectorySettings, Order, PageRequest, StoredGroup, StoredUser,
};
use idbridge_forward::scim_push::{ScimPush, TargetInput, TargetOptions, TargetStatus};
use idbridge_model::tag::OrganizationTag;
use idbridge_model::{new_id, IdPrefix, Organization, Timestamp};
use idbridge_secrets::SecretBox;
use idbridge_store::{SqliteStore, Store};
use serde_json::{json, Value};

/// One idbridge's directory: a durable store, the engine, an organization and a directory.
pub struct Side {
    pub store: Arc<dyn Store>,
    pub engine: Arc<DirectoryEngine>,
    pub org: String,
    pub dir: String,
    /// The SCIM bearer token (for a target).
    pub token: String,
    _tmp: tempfile::TempDir,
}

impl Side {
    pub fn new(settings: DirectorySettings) -> Side {
        let tmp = tempfile::tempdir().expect("tempdir");
        Side::open(tmp, settings)
    }

    fn open(tmp: tempfile::TempDir, settings: DirectorySettings) -> Side {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(tmp.path()).expect("store"));
        let org = new_id(IdPrefix::Organization);
        let now = Timestamp::now();
        let rec = Organization {
            object: OrganizationTag,
            id: org.clone(),
            name: "Acme".into(),
            domains: Vec::new(),
            metadata: Default::default(),
            external_id: None,
            stripe_customer_id: None,
            allow_profiles_outside_organization: false,
            created_at: now,
            updated_at: now,
        };
        // Organizations belong to the SSO service; the engine only reads them.
        let orgs = Arc::new(idbridge_directory::FixedOrganizations::new([rec]));
        let engine = Arc::new(DirectoryEngine::new(store.clone(), orgs));
        let (d, token) = engine
            .create_directory(&org, "Acme", "generic scim v2.0", settings)
            .expect("directory");
        Side {
            store,
            engine,
            org,
            dir: d.directory.id,
            token: token.expect("token"),
            _tmp: tmp,
        }
    }

    pub fn users(&self) -> Vec<StoredUser> {
        let mut out = Vec::new();
        let mut cursor = Cursor::None;
        loop {
            let page = self
                .engine
                .list_users(
                    &self.dir,
                    None,
                    &PageRequest {
                        limit: 1000,
                        order: Order::Asc,
                        cursor,
                    },
                )
                .expect("users");
            out.extend(page.data);
            match page.after {
                Some(a) => cursor = Cursor::After(a),
                None => return out,
            }
        }
    }

    pub fn groups(&self) -> Vec<StoredGroup> {
        let mut out = Vec::new();
        let mut cursor = Cursor::None;
        loop {
            let page = self
                .engine
                .list_groups(
                    &self.dir,
                    None,
                    &PageRequest {
                        limit: 1000,
                        order: Order::Asc,
                        cursor,
                    },
                )
                .expect("groups");
            out.extend(page.data);
            match page.after {
                Some(a) => cursor = Cursor::After(a),
                None => return out,
            }
        }
    }
}

/// A server on its own runtime: dropping it shuts the runtime down, which closes the
/// listener AND every open connection (a target that is really gone).
pub struct ServerGuard(Option<tokio::runtime::Runtime>);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Serves `app` on `listener` in a runtime of its own.
pub fn serve_own_runtime(listener: std::net::TcpListener, app: axum::Router) -> ServerGuard {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    listener.set_nonblocking(true).expect("nonblocking");
    rt.spawn(async move {
        let l = tokio::net::TcpListener::from_std(listener).expect("listener");
        let _ = axum::serve(l, app).await;
    });
    ServerGuard(Some(rt))
}

/// A second idbridge's SCIM endpoint (the product's router) on a loopback port.
pub struct Target {
    pub side: Side,
    pub base: String,
    pub endpoint: String,
    server: ServerGuard,
}

impl Target {
    pub async fn start(settings: DirectorySettings) -> Target {
        Target::start_on(Side::new(settings), None).await
    }

    /// Serves `side` (on `port` when given, e.g. to come back on the same port).
    pub async fn start_on(side: Side, port: Option<u16>) -> Target {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port.unwrap_or(0))).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let base = format!("http://{addr}");
        let app: axum::Router = idbridge_scim::router::router(
            side.engine.clone(),
            idbridge_scim::router::ScimConfig {
                public_url: base.clone(),
                ..Default::default()
            },
        );
        let server = serve_own_runtime(listener, app);
        let endpoint = idbridge_scim::router::endpoint_url(&base, &side.dir);
        Target {
            side,
            base,
            endpoint,
            server,
        }
    }

    /// Stops serving and hands back the data (to serve it again later on the same port).
    pub fn stop(self) -> (Side, u16) {
        let port: u16 = self
            .base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        drop(self.server);
        (self.side, port)
    }

    /// A raw SCIM request to the target (bypassing the forwarder), e.g. to make drift.
    pub async fn scim(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let c = reqwest::Client::new();
        let mut req = c
            .request(method, format!("{}/{path}", self.endpoint))
            .bearer_auth(&self.side.token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/scim+json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("scim request");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap_or_default();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Every SCIM user the target holds (parked / inactive ones included).
    pub async fn scim_users(&self) -> Vec<Value> {
        let (_, v) = self
            .scim(Method::GET, "Users?count=200&startIndex=1", None)
            .await;
        v["Resources"].as_array().cloned().unwrap_or_default()
    }

    pub async fn scim_groups(&self) -> Vec<Value> {
        let (_, v) = self
            .scim(Method::GET, "Groups?count=200&startIndex=1", None)
            .await;
        v["Resources"].as_array().cloned().unwrap_or_default()
    }
}

/// What the proxy does to a matching request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer this status without forwarding (with `Retry-After` when given).
    Status { code: u16, retry_after: Option<u64> },
    /// Forward, then answer the target's status with a body that is not JSON.
    MalformedJson,
    /// Forward, then answer 200/201 with the body minus its `id`.
    NoId,
    /// Answer 302 to another URL without forwarding.
    Redirect,
    /// Wait this long, then forward.
    Hang(Duration),
}

/// A fault for the next `count` requests whose method and path match.
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: Option<Method>,
    /// A substring of the path (`/Users`, `/Groups`).
    pub path: &'static str,
    pub fault: Fault,
    pub count: usize,
}

#[derive(Default)]
struct ProxyState {
    rules: VecDeque<Rule>,
    /// (method, path, status answered).
    log: Vec<(String, String, u16)>,
}

/// A small HTTP proxy in front of a real target that injects faults.
pub struct FaultProxy {
    pub base: String,
    target_base: Arc<Mutex<String>>,
    state: Arc<Mutex<ProxyState>>,
    _server: ServerGuard,
}

#[derive(Clone)]
struct ProxyCtx {
    target_base: Arc<Mutex<String>>,
    state: Arc<Mutex<ProxyState>>,
    http: reqwest::Client,
}

impl FaultProxy {
    /// A proxy forwarding to `target_base` (scheme://host:port).
    pub async fn start(target_base: &str) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let ctx = ProxyCtx {
            target_base: Arc::new(Mutex::new(target_base.to_owned())),
            state: Arc::new(Mutex::new(ProxyState::default())),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
        };
        let app = axum::Router::new()
            .fallback(proxy_handler)
            .with_state(ctx.clone());
        let server = serve_own_runtime(listener, app);
        FaultProxy {
            base: format!("http://{addr}"),
            target_base: ctx.target_base,
            state: ctx.state,
            _server: server,
        }
    }

    /// The endpoint as seen through the proxy (the target's endpoint path, proxy's host).
    pub fn endpoint_for(&self, target: &Target) -> String {
        target.endpoint.replacen(&target.base, &self.base, 1)
    }

    pub fn add(&self, rule: Rule) {
        self.state.lock().expect("lock").rules.push_back(rule);
    }

    /// Drops every rule not used up yet (the target answers normally again).
    pub fn clear(&self) {
        self.state.lock().expect("lock").rules.clear();
    }

    pub fn rules_left(&self) -> usize {
        self.state
            .lock()
            .expect("lock")
            .rules
            .iter()
            .map(|r| r.count)
            .sum()
    }

    /// Requests seen: (method, path, status).
    pub fn log(&self) -> Vec<(String, String, u16)> {
        self.state.lock().expect("lock").log.clone()
    }

    pub fn retarget(&self, base: &str) {
        *self.target_base.lock().expect("lock") = base.to_owned();
    }
}

async fn proxy_handler(State(ctx): State<ProxyCtx>, req: Request) -> Response {
    let method = req.method().clone();
    let path_q = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let path = req.uri().path().to_owned();
    let headers: HeaderMap = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    let fault = {
        let mut st = ctx.state.lock().expect("lock");
        let idx = st.rules.iter().position(|r| {
            r.count > 0 && r.method.as_ref().is_none_or(|m| *m == method) && path.contains(r.path)
        });
        match idx {
            Some(i) => {
                let f = st.rules[i].fault.clone();
                st.rules[i].count -= 1;
                if st.rules[i].count == 0 {
                    st.rules.remove(i);
                }
                Some(f)
            }
            None => None,
        }
    };
    let log = |status: u16| {
        ctx.state
            .lock()
            .expect("lock")
            .log
            .push((method.to_string(), path.clone(), status));
    };
    match &fault {
        Some(Fault::Status { code, retry_after }) => {
            log(*code);
            let mut resp = (
                StatusCode::from_u16(*code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                "{\"detail\":\"injected\"}",
            )
                .into_response();
            if let Some(s) = retry_after {
                resp.headers_mut()
                    .insert("retry-after", s.to_string().parse().expect("header"));
            }
            return resp;
        }
        Some(Fault::Redirect) => {
            log(302);
            let mut resp = StatusCode::FOUND.into_response();
            resp.headers_mut().insert(
                "location",
                "http://127.0.0.1:9/elsewhere".parse().expect("header"),
            );
            return resp;
        }
        Some(Fault::Hang(d)) => tokio::time::sleep(*d).await,
        _ => {}
    }
    let base = ctx.target_base.lock().expect("lock").clone();
    let mut out = ctx
        .http
        .request(method.clone(), format!("{base}{path_q}"))
        .body(body);
    for name in ["authorization", "content-type", "accept", "if-match"] {
        if let Some(v) = headers.get(name) {
            out = out.header(name, v.clone());
        }
    }
    let resp = match out.send().await {
        Ok(r) => r,
        Err(e) => {
            log(502);
            return (StatusCode::BAD_GATEWAY, e.to_string()).into_response();
        }
    };
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap_or_default();
    log(status);
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    match fault {
        Some(Fault::MalformedJson) => (code, "{\"id\": \"abc\", oops").into_response(),
        Some(Fault::NoId) => {
            let mut v: Value = serde_json::from_slice(&bytes).unwrap_or(json!({}));
            if let Some(o) = v.as_object_mut() {
                o.remove("id");
            }
            (code, v.to_string()).into_response()
        }
        _ => {
            let mut r = (code, bytes).into_response();
            r.headers_mut().insert(
                "content-type",
                "application/scim+json".parse().expect("header"),
            );
            r
        }
    }
}

/// A running forwarder over a source side.
pub struct Forwarder {
    pub push: Arc<ScimPush>,
    scheduler: tokio::task::JoinHandle<()>,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.scheduler.abort();
    }
}

impl Forwarder {
    pub fn start(source: &Side, secrets: &SecretBox) -> Forwarder {
        let push = ScimPush::new(
            source.store.clone(),
            source.engine.clone(),
            Some(secrets.clone()),
        );
        let scheduler = push.spawn();
        Forwarder { push, scheduler }
    }

    pub fn set(&self, source: &Side, endpoint: &str, token: &str, options: TargetOptions) {
        self.push
            .set_target(
                &source.dir,
                TargetInput {
                    endpoint: endpoint.to_owned(),
                    bearer_token: token.to_owned(),
                    options,
                    source: "api".into(),
                },
            )
            .expect("set target");
    }

    pub fn status(&self, source: &Side) -> TargetStatus {
        self.push.status(&source.dir).expect("status")
    }
}

/// Options for tests: short timeouts, and the custom-attributes extension idbridge accepts.
pub fn test_options() -> TargetOptions {
    TargetOptions {
        request_timeout_ms: 2_000,
        connect_timeout_ms: 500,
        concurrency: 4,
        ..TargetOptions::default()
    }
}

/// Polls `check` until it returns Ok or `timeout` passes (then panics with the last error).
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => panic!("not reached in {timeout:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The fields of a directory user compared across the hop (ids, directory/organization ids,
/// timestamps and `raw_attributes` excluded: ids and times are each side's own, and
/// `raw_attributes` is deprecated — WorkOS serves `{}` — and holds each side's own input).
pub fn user_view(u: &StoredUser) -> Value {
    let x = &u.user;
    json!({
        "idp_id": x.idp_id, "email": x.email, "first_name": x.first_name,
        "last_name": x.last_name, "name": x.name, "emails": x.emails, "username": x.username,
        "job_title": x.job_title, "state": x.state, "custom_attributes": x.custom_attributes,
        "role": x.role, "roles": x.roles,
    })
}

/// A directory as idp_id → user view, idp_id → group name, and (group idp, user idp) pairs.
pub fn directory_view(side: &Side) -> Value {
    let users = side.users();
    let by_id: BTreeMap<String, String> = users
        .iter()
        .map(|u| (u.user.id.clone(), u.user.idp_id.clone()))
        .collect();
    let mut u_out = BTreeMap::new();
    for u in &users {
        u_out.insert(u.user.idp_id.clone(), user_view(u));
    }
    let mut g_out = BTreeMap::new();
    let mut members = Vec::new();
    for g in side.groups() {
        g_out.insert(g.group.idp_id.clone(), json!(g.group.name));
        for m in side.engine.group_members(&g.group.id).expect("members") {
            if let Some(idp) = by_id.get(&m) {
                members.push(format!("{} <- {idp}", g.group.idp_id));
            }
        }
    }
    members.sort();
    json!({"users": u_out, "groups": g_out, "memberships": members})
}

/// Ok when the two directories show the same users, groups and memberships.
pub fn same_directory(a: &Side, b: &Side) -> Result<(), String> {
    let (va, vb) = (directory_view(a), directory_view(b));
    if va == vb {
        Ok(())
    } else {
        Err(format!(
            "source:\n{}\ntarget:\n{}",
            serde_json::to_string_pretty(&va).unwrap_or_default(),
            serde_json::to_string_pretty(&vb).unwrap_or_default()
        ))
    }
}
