//! Abuse limits through the product router: request rates per API key and per SCIM
//! directory, failed authentications per client address (the right credential is refused too
//! while locked, other addresses are not), and the member cap of one SCIM group PATCH. Every
//! refusal is 429 with `Retry-After` in the protocol's own error format.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use idbridge_api::{router, AbuseLimits, ApiConfig, AppState};
use idbridge_directory::{DirectoryEngine, DirectorySettings};
use idbridge_limits::{FailureLimit, RateLimit};
use idbridge_sso::api_keys as auth;
use idbridge_store::{SqliteStore, Store};
use serde_json::{json, Value};
use tower::ServiceExt;

struct Api {
    app: Router,
    key: String,
    engine: Arc<DirectoryEngine>,
}

fn api(limits: AbuseLimits) -> Api {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_ephemeral().unwrap());
    let boot = auth::bootstrap(store.as_ref()).unwrap().unwrap();
    let state = AppState::new(
        store,
        ApiConfig {
            limits,
            ..ApiConfig::default()
        },
    );
    let engine = state.directory.clone();
    Api {
        app: router(state),
        key: boot.api_key,
        engine,
    }
}

impl Api {
    async fn call(
        &self,
        from: &str,
        method: &str,
        uri: &str,
        bearer: &str,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {bearer}"))
            .header("content-type", "application/json");
        let addr: SocketAddr = format!("{from}:40000").parse().unwrap();
        req = req.extension(ConnectInfo(addr));
        let req = req
            .body(body.map(|b| Body::from(b.to_string())).unwrap_or_default())
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, headers, value)
    }

    async fn scim_directory(&self) -> (String, String) {
        let (s, _, org) = self
            .call(
                "127.0.0.1",
                "POST",
                "/organizations",
                &self.key,
                Some(json!({"name": "Acme"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{org}");
        let org = org["id"].as_str().unwrap().to_string();
        let (rec, token) = self
            .engine
            .create_directory(&org, "Okta", "okta scim v2.0", DirectorySettings::default())
            .unwrap();
        (rec.directory.id, token.unwrap())
    }
}

fn off() -> RateLimit {
    RateLimit {
        per_second: 0.0,
        burst: 0,
    }
}

fn retry_after(h: &HeaderMap) -> u64 {
    h.get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {h:?}"))
}

#[tokio::test]
async fn api_key_requests_over_the_rate_get_429_with_retry_after() {
    let api = api(AbuseLimits {
        api_rate: RateLimit {
            per_second: 0.5,
            burst: 3,
        },
        ..AbuseLimits::default()
    });
    for _ in 0..3 {
        let (s, _, v) = api
            .call("127.0.0.1", "GET", "/organizations", &api.key, None)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, h, v) = api
        .call("127.0.0.1", "GET", "/organizations", &api.key, None)
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["code"], "rate_limit_exceeded", "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("retry after"),
        "{v}"
    );
    assert!((1..=2).contains(&retry_after(&h)), "{h:?}");
}

#[tokio::test]
async fn failed_api_key_attempts_lock_out_the_address_only() {
    let api = api(AbuseLimits {
        failed_auth: FailureLimit {
            max_failures: 3,
            window_secs: 60,
        },
        ..AbuseLimits::default()
    });
    for _ in 0..3 {
        let (s, _, _) = api
            .call("10.0.0.9", "GET", "/organizations", "sk_wrong", None)
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    // Locked: the right key from that address is refused too.
    let (s, h, v) = api
        .call("10.0.0.9", "GET", "/organizations", &api.key, None)
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["code"], "rate_limit_exceeded");
    assert!((50..=60).contains(&retry_after(&h)), "{h:?}");
    // Another address is not locked.
    let (s, _, _) = api
        .call("10.0.0.10", "GET", "/organizations", &api.key, None)
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn scim_requests_over_the_rate_get_a_scim_429() {
    let api = api(AbuseLimits {
        scim_rate: RateLimit {
            per_second: 0.5,
            burst: 2,
        },
        api_rate: off(),
        ..AbuseLimits::default()
    });
    let (dir, token) = api.scim_directory().await;
    let users = format!("/scim/v2/{dir}/Users");
    for _ in 0..2 {
        let (s, _, v) = api.call("127.0.0.1", "GET", &users, &token, None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, h, v) = api.call("127.0.0.1", "GET", &users, &token, None).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(
        v["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error",
        "{v}"
    );
    assert_eq!(v["status"], "429", "{v}");
    assert!((1..=2).contains(&retry_after(&h)), "{h:?}");
    assert_eq!(h["content-type"], "application/scim+json");
}

#[tokio::test]
async fn failed_scim_tokens_lock_out_the_address() {
    let api = api(AbuseLimits {
        failed_auth: FailureLimit {
            max_failures: 2,
            window_secs: 30,
        },
        ..AbuseLimits::default()
    });
    let (dir, token) = api.scim_directory().await;
    let users = format!("/scim/v2/{dir}/Users");
    for _ in 0..2 {
        let (s, _, _) = api
            .call("10.1.1.1", "GET", &users, "wrong-token", None)
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, h, v) = api.call("10.1.1.1", "GET", &users, &token, None).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["status"], "429", "{v}");
    assert!((25..=30).contains(&retry_after(&h)), "{h:?}");
    let (s, _, _) = api.call("10.1.1.2", "GET", &users, &token, None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn a_group_patch_over_the_member_cap_is_refused_and_changes_nothing() {
    let api = api(AbuseLimits {
        scim_max_patch_members: 2,
        ..AbuseLimits::default()
    });
    let (dir, token) = api.scim_directory().await;
    let mut users = Vec::new();
    for i in 0..3 {
        let name = format!("u{i}@acme.test");
        let (s, _, v) = api
            .call(
                "127.0.0.1",
                "POST",
                &format!("/scim/v2/{dir}/Users"),
                &token,
                Some(
                    json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                            "userName": name, "active": true}),
                ),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        users.push(json!({"value": v["id"]}));
    }
    let (s, _, g) = api
        .call(
            "127.0.0.1",
            "POST",
            &format!("/scim/v2/{dir}/Groups"),
            &token,
            Some(
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                        "displayName": "Eng"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{g}");
    let group = format!("/scim/v2/{dir}/Groups/{}", g["id"].as_str().unwrap());
    let patch = |members: &[Value]| {
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
               "Operations": [{"op": "add", "path": "members", "value": members}]})
    };
    let (s, _, v) = api
        .call("127.0.0.1", "PATCH", &group, &token, Some(patch(&users)))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["scimType"], "invalidValue", "{v}");
    assert!(v["detail"].as_str().unwrap().contains("at most 2"), "{v}");
    let (_, _, now) = api.call("127.0.0.1", "GET", &group, &token, None).await;
    assert!(now["members"].as_array().is_none_or(Vec::is_empty), "{now}");
    // At the cap it goes through.
    let (s, _, v) = api
        .call(
            "127.0.0.1",
            "PATCH",
            &group,
            &token,
            Some(patch(&users[..2])),
        )
        .await;
    assert!(s.is_success(), "{s} {v}");
}
