//! Request bodies (JSON, forms, query strings) of the admin, WorkOS, SSO and SCIM APIs through
//! the complete router in-process (`tower::ServiceExt::oneshot`, every middleware layer
//! included), against one in-memory store set up once with an organization, a SCIM directory
//! with a user and a group, a webhook endpoint and a SAML connection.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use idbridge_api::{router, ApiConfig, AppState};
use idbridge_sso::api_keys as auth;
use idbridge_sso::{SecretBox, SsoConfig};
use idbridge_store::{SqliteStore, Store};
use serde_json::{json, Value};
use tower::ServiceExt;

/// How a route authenticates.
#[derive(Clone, Copy)]
enum Auth {
    ApiKey,
    Scim,
    Open,
}

/// One route the fuzzer can reach: `{org}`, `{dir}`, `{user}`, `{group}`, `{wh}` and
/// `{conn}` stand for the ids made at setup; `query` routes take the input as query string.
struct Route {
    method: &'static str,
    path: &'static str,
    content_type: &'static str,
    auth: Auth,
    query: bool,
}

const JSON: &str = "application/json";
const SCIM: &str = "application/scim+json";
const FORM: &str = "application/x-www-form-urlencoded";

const fn r(method: &'static str, path: &'static str, ct: &'static str, auth: Auth) -> Route {
    Route {
        method,
        path,
        content_type: ct,
        auth,
        query: false,
    }
}

const fn q(path: &'static str, auth: Auth) -> Route {
    Route {
        method: "GET",
        path,
        content_type: JSON,
        auth,
        query: true,
    }
}

/// The first input byte picks a route (modulo the length).
const ROUTES: &[Route] = &[
    r("POST", "/organizations", JSON, Auth::ApiKey),
    r("PUT", "/organizations/{org}", JSON, Auth::ApiKey),
    r("POST", "/admin/directories", JSON, Auth::ApiKey),
    r(
        "PUT",
        "/admin/organizations/{org}/roles",
        JSON,
        Auth::ApiKey,
    ),
    r(
        "PUT",
        "/admin/organizations/{org}/role_mappings",
        JSON,
        Auth::ApiKey,
    ),
    r("POST", "/webhook_endpoints", JSON, Auth::ApiKey),
    r("PATCH", "/webhook_endpoints/{wh}", JSON, Auth::ApiKey),
    r("POST", "/connections", JSON, Auth::ApiKey),
    r(
        "POST",
        "/admin/directories/{dir}/sync/confirm",
        JSON,
        Auth::ApiKey,
    ),
    r("POST", "/sso/token", FORM, Auth::Open),
    r("POST", "/sso/saml/acs/{conn}", FORM, Auth::Open),
    r("POST", "/scim/v2/{dir}/Users", SCIM, Auth::Scim),
    r("PUT", "/scim/v2/{dir}/Users/{user}", SCIM, Auth::Scim),
    r("PATCH", "/scim/v2/{dir}/Users/{user}", SCIM, Auth::Scim),
    r("POST", "/scim/v2/{dir}/Groups", SCIM, Auth::Scim),
    r("PATCH", "/scim/v2/{dir}/Groups/{group}", SCIM, Auth::Scim),
    r("POST", "/scim/v2/{dir}/Bulk", SCIM, Auth::Scim),
    q("/organizations", Auth::ApiKey),
    q("/directory_users", Auth::ApiKey),
    q("/events", Auth::ApiKey),
    q("/sso/authorize", Auth::Open),
    q("/scim/v2/{dir}/Users", Auth::Scim),
    q("/scim/v2/{dir}/Groups", Auth::Scim),
];

struct Env {
    runtime: tokio::runtime::Runtime,
    app: Router,
    api_key: String,
    scim_token: String,
    ids: Vec<(&'static str, String)>,
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let resp = match app.clone().oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    (status, body)
}

/// A setup call that must succeed; returns its JSON.
async fn setup(app: &Router, auth: &str, method: &str, uri: &str, body: Value) -> Value {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {auth}"))
        .header("content-type", JSON)
        .body(Body::from(body.to_string()))
        .unwrap_or_else(|e| panic!("setup request {uri}: {e}"));
    let (status, bytes) = call(app, req).await;
    assert!(
        status.is_success(),
        "setup {method} {uri}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("setup {uri}: {e}"))
}

fn id(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("setup: no {pointer} in {v}"))
        .to_owned()
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open_ephemeral().unwrap_or_else(|e| panic!("store: {e}")));
        let boot = auth::bootstrap(store.as_ref())
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("bootstrap"));
        let config = ApiConfig {
            public_url: "https://sso.example.test".into(),
            ..ApiConfig::default()
        };
        // Connection secrets are sealed with a fixed key: the target needs no key file.
        let state = AppState::new(store, config)
            .with_sso(SsoConfig::default(), Some(SecretBox::new([7; 32])));
        let app = router(state);
        let key = boot.api_key;
        let cert = String::from_utf8_lossy(include_bytes!("../fixtures/idp.crt.pem")).into_owned();
        let (scim_token, ids) =
            runtime.block_on(async {
                let org = setup(
                    &app,
                    &key,
                    "POST",
                    "/organizations",
                    json!({"name": "Fuzz Corp", "domains": ["fuzz.example.test"]}),
                )
                .await;
                let org = id(&org, "/id");
                let dir = setup(
                    &app,
                    &key,
                    "POST",
                    "/admin/directories",
                    json!({"organization_id": org, "name": "Okta", "type": "okta scim v2.0"}),
                )
                .await;
                let token = id(&dir, "/scim/bearer_token");
                let dir = id(&dir, "/directory/id");
                let wh = setup(
                    &app,
                    &key,
                    "POST",
                    "/webhook_endpoints",
                    json!({"endpoint_url": "https://hooks.example.test/idbridge",
                       "events": ["dsync.user.created"]}),
                )
                .await;
                let wh = id(&wh, "/id");
                let conn = setup(&app, &key, "POST", "/connections",
                json!({"organization_id": org, "name": "Fuzz SAML", "connection_type": "OktaSAML",
                       "saml_options": {"idp_entity_id": "https://idp.example.test/metadata",
                                        "idp_sso_url": "https://idp.example.test/sso",
                                        "idp_signing_certs": [cert]}})).await;
                let conn = id(&conn, "/id");
                let user = setup(
                    &app,
                    &token,
                    "POST",
                    &format!("/scim/v2/{dir}/Users"),
                    json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                       "userName": "alice@fuzz.example.test", "externalId": "u1",
                       "name": {"givenName": "Alice", "familyName": "Fuzz"},
                       "emails": [{"value": "alice@fuzz.example.test", "primary": true}],
                       "active": true}),
                )
                .await;
                let user = id(&user, "/id");
                let group = setup(
                    &app,
                    &token,
                    "POST",
                    &format!("/scim/v2/{dir}/Groups"),
                    json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                       "displayName": "Engineering", "members": [{"value": user}]}),
                )
                .await;
                let group = id(&group, "/id");
                let ids = vec![
                    ("{org}", org),
                    ("{dir}", dir),
                    ("{wh}", wh),
                    ("{conn}", conn),
                    ("{user}", user),
                    ("{group}", group),
                ];
                (token, ids)
            });
        Env {
            runtime,
            app,
            api_key: key,
            scim_token,
            ids,
        }
    })
}

/// First byte: the route; the rest: its body (or query string). Property: never a 5xx (the
/// router's panic layer turns a handler panic into a 500, so this also finds panics).
pub fn api_json(data: &[u8]) {
    let Some((which, body)) = data.split_first() else {
        return;
    };
    let route = &ROUTES[usize::from(*which) % ROUTES.len()];
    let env = env();
    let mut uri = route.path.to_owned();
    for (name, value) in &env.ids {
        uri = uri.replace(name, value);
    }
    let body = if route.query {
        let Ok(query) = std::str::from_utf8(body) else {
            return;
        };
        uri.push('?');
        uri.push_str(query);
        Vec::new()
    } else {
        body.to_vec()
    };
    let mut req = Request::builder()
        .method(route.method)
        .uri(&uri)
        .header("content-type", route.content_type);
    match route.auth {
        Auth::ApiKey => req = req.header("authorization", format!("Bearer {}", env.api_key)),
        Auth::Scim => req = req.header("authorization", format!("Bearer {}", env.scim_token)),
        Auth::Open => {}
    }
    // A query string that is not a valid URI never reaches the server either.
    let Ok(req) = req.body(Body::from(body.clone())) else {
        return;
    };
    let (status, answer) = env.runtime.block_on(call(&env.app, req));
    assert!(
        !status.is_server_error(),
        "{} {uri} with {:?} answered {status}: {}",
        route.method,
        String::from_utf8_lossy(&body),
        String::from_utf8_lossy(&answer)
    );
}
