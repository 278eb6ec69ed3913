//! `PUT|GET|DELETE /admin/directories/{id}/forward` and `.../forward/reconcile`, through the
//! full router: validation (unknown field, missing token, insecure URL: 422 naming the field,
//! nothing stored), the token sealed at rest and never shown, 404s, idempotent PUTs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use idbridge_api::{router, ApiConfig, AppState};
use idbridge_forward::scim_push::{ScimPush, TARGETS_TABLE};
use idbridge_secrets::SecretBox;
use idbridge_sso::api_keys as auth;
use idbridge_store::{SqliteStore, Store};
use serde_json::{json, Value};
use tower::ServiceExt;

const TOKEN: &str = "se_forward_token_0123456789abcdef";

struct Api {
    app: Router,
    store: Arc<dyn Store>,
    key: String,
}

impl Api {
    fn new() -> Api {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_ephemeral().unwrap());
        let boot = auth::bootstrap(store.as_ref()).unwrap().unwrap();
        let mut state = AppState::new(store.clone(), ApiConfig::default());
        state.forward = ScimPush::new(
            store.clone(),
            state.directory.clone(),
            Some(SecretBox::generate().unwrap()),
        );
        Api {
            app: router(state),
            store,
            key: boot.api_key,
        }
    }

    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {}", self.key));
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(
                body.map(|b| Body::from(b.to_string()))
                    .unwrap_or(Body::empty()),
            )
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        assert!(!text.contains(TOKEN), "the token was echoed: {text}");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        (status, value)
    }

    async fn directory(&self) -> String {
        let (s, v) = self
            .call("POST", "/organizations", Some(json!({"name": "Acme"})))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let org = v["id"].as_str().unwrap().to_owned();
        let (s, v) = self
            .call(
                "POST",
                "/admin/directories",
                Some(json!({"organization_id": org, "name": "HR", "type": "sftp"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["directory"]["id"].as_str().unwrap().to_owned()
    }
}

fn fields(v: &Value) -> Vec<String> {
    v["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    format!(
                        "{}:{}",
                        e["field"].as_str().unwrap_or(""),
                        e["code"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn set_show_update_delete() {
    let api = Api::new();
    let dir = api.directory().await;
    let path = format!("/admin/directories/{dir}/forward");
    let (s, v) = api.call("GET", &path, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let body = json!({"endpoint": "https://api.workos.example/scim/v2.0/abc/", "bearer_token": TOKEN,
        "deprovision": "delete", "concurrency": 4});
    let (s, v) = api.call("PUT", &path, Some(body.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["object"], "directory_forward");
    assert_eq!(v["endpoint"], "https://api.workos.example/scim/v2.0/abc");
    assert_eq!(v["has_bearer_token"], true);
    assert_eq!(v["deprovision"], "delete");
    assert_eq!(v["concurrency"], 4);
    assert!(
        v["lag_events"].is_u64() && v["lag_seconds"].is_number(),
        "{v}"
    );
    assert_eq!(v["backfill"]["state"], "running");
    assert_eq!(v["parked"], 0);
    // Sealed at rest: the stored record does not hold the token.
    let raw = api.store.get(TARGETS_TABLE, &dir).unwrap().unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains(TOKEN));
    // The same PUT again changes nothing.
    let (s, v) = api.call("PUT", &path, Some(body.clone())).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(api.store.get(TARGETS_TABLE, &dir).unwrap().unwrap(), raw);
    // Options change: 200, kept mapping.
    let mut b2 = body.clone();
    b2["concurrency"] = json!(16);
    let (s, v) = api.call("PUT", &path, Some(b2)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["concurrency"], 16);
    // Another endpoint: a new target (201, new backfill).
    let mut b3 = body.clone();
    b3["endpoint"] = json!("https://other.example/scim/v2");
    let (s, v) = api.call("PUT", &path, Some(b3)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = api.call("DELETE", &path, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = api.call("GET", &path, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api.call("DELETE", &path, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Deleting the directory removes its target.
    let (s, _) = api.call("PUT", &path, Some(body.clone())).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = api
        .call("DELETE", &format!("/admin/directories/{dir}"), None)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert!(api.store.get(TARGETS_TABLE, &dir).unwrap().is_none());
    // Unknown directories.
    let (s, _) = api
        .call(
            "PUT",
            "/admin/directories/directory_01HZZZZZZZZZZZZZZZZZZZZZZZ/forward",
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api
        .call("GET", "/admin/directories/nope/forward", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_bodies_are_422_naming_the_field_and_store_nothing() {
    let api = Api::new();
    let dir = api.directory().await;
    let path = format!("/admin/directories/{dir}/forward");
    let ok = || json!({"endpoint": "https://scim.example.com/v2", "bearer_token": TOKEN});
    let with = |k: &str, v: Value| {
        let mut b = ok();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = ok();
        b.as_object_mut().unwrap().remove(k);
        b
    };
    let cases: Vec<(Value, &str)> = vec![
        (with("bogus", json!(1)), "bogus:unknown_field"),
        (without("bearer_token"), "bearer_token:required"),
        (
            with("bearer_token", json!("  ")),
            "bearer_token:must_not_be_blank",
        ),
        (without("endpoint"), "endpoint:required"),
        (
            with("endpoint", json!("http://scim.example.com/v2")),
            "endpoint:insecure_url",
        ),
        (with("endpoint", json!("not a url")), "endpoint:invalid_url"),
        (with("endpoint", json!("ftp://h/x")), "endpoint:invalid_url"),
        (
            with("endpoint", json!("https://u:p@h/x")),
            "endpoint:invalid_url",
        ),
        (
            with("deprovision", json!("explode")),
            "deprovision:must_be_deactivate_or_delete",
        ),
        (with("concurrency", json!(0)), "concurrency:out_of_range"),
        (
            with("concurrency", json!("8")),
            "concurrency:must_be_positive_integer",
        ),
        (
            with("request_timeout_ms", json!(5)),
            "request_timeout_ms:out_of_range",
        ),
        (
            with("allow_insecure_http", json!("yes")),
            "allow_insecure_http:must_be_boolean",
        ),
        (
            with("custom_attributes_schema", json!(7)),
            "custom_attributes_schema:must_be_string_or_null",
        ),
        (
            with("custom_attributes_schema", json!("no urn")),
            "custom_attributes_schema:invalid_urn",
        ),
    ];
    for (body, want) in cases {
        let (s, v) = api.call("PUT", &path, Some(body.clone())).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert!(fields(&v).contains(&want.to_owned()), "{body}: {v}");
        let (s, _) = api.call("GET", &path, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{body} stored something");
    }
    // Loopback http is fine; other hosts only when allowed explicitly.
    let (s, v) = api
        .call(
            "PUT",
            &path,
            Some(with("endpoint", json!("http://127.0.0.1:9/scim/v2"))),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let mut insecure = with("endpoint", json!("http://scim.lan/v2"));
    insecure["allow_insecure_http"] = json!(true);
    let (s, v) = api.call("PUT", &path, Some(insecure)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["allow_insecure_http"], true);
    // null sends no custom attributes beyond the enterprise extension.
    let (s, v) = api
        .call(
            "PUT",
            &path,
            Some(with("custom_attributes_schema", Value::Null)),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["custom_attributes_schema"], Value::Null);
}

#[tokio::test]
async fn reconcile_needs_a_target_and_a_running_forwarder() {
    let api = Api::new();
    let dir = api.directory().await;
    let rec = format!("/admin/directories/{dir}/forward/reconcile");
    let (s, _) = api.call("POST", &rec, Some(json!({"dry_run": true}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = api.call("POST", &rec, Some(json!({"dry": true}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(fields(&v), ["dry:unknown_field"]);
    let (s, _) = api
        .call(
            "PUT",
            &format!("/admin/directories/{dir}/forward"),
            Some(json!({"endpoint": "https://scim.example.com/v2", "bearer_token": TOKEN})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    // This router runs no forwarder (the binary starts the scheduler).
    let (s, v) = api.call("POST", &rec, Some(json!({}))).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["code"], "forward_not_running");
}
