//! The organizations API driven in-process: CRUD, pagination in both directions and orders,
//! events written with each change, and bad input that changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use idbridge_api::{router, ApiConfig, AppState};
use idbridge_sso::api_keys as auth;
use idbridge_store::{SqliteStore, Store};
use serde_json::{json, Value};
use tower::ServiceExt;

struct Api {
    app: Router,
    store: Arc<dyn Store>,
    key: String,
}

impl Api {
    fn new() -> Api {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_ephemeral().unwrap());
        let boot = auth::bootstrap(store.as_ref()).unwrap().unwrap();
        let app = router(AppState::new(store.clone(), ApiConfig::default()));
        Api {
            app,
            store,
            key: boot.api_key,
        }
    }

    async fn call(&self, method: &str, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
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
        assert!(resp.headers().contains_key("x-request-id"));
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        (status, value)
    }

    async fn create(&self, name: &str) -> Value {
        let (s, v) = self
            .call(
                "POST",
                "/organizations",
                Some(&json!({"name": name}).to_string()),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }

    fn event_kinds(&self) -> Vec<String> {
        self.store
            .events_after(0, 1000)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }
}

fn names(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn crud_round_trip_with_events() {
    let api = Api::new();
    let body = json!({
        "name": "Acme", "external_id": "ext-1", "metadata": {"tier": "gold"},
        "domain_data": [{"domain": "Acme.COM", "state": "verified"}, {"domain": "acme.dev", "state": "pending"}]
    });
    let (s, org) = api
        .call("POST", "/organizations", Some(&body.to_string()))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let id = org["id"].as_str().unwrap().to_string();
    assert_eq!(org["domains"][0]["domain"], "acme.com");
    assert_eq!(org["domains"][1]["state"], "pending");
    assert_eq!(org["metadata"], json!({"tier": "gold"}));

    let (s, got) = api.call("GET", &format!("/organizations/{id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got, org);
    let (s, by_ext) = api
        .call("GET", "/organizations/external_id/ext-1", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(by_ext["id"], org["id"]);

    let upd = json!({"name": "Acme 2", "metadata": {"tier": null, "region": "eu"},
        "domain_data": [{"domain": "acme.com", "state": "verified"}]});
    let (s, updated) = api
        .call(
            "PUT",
            &format!("/organizations/{id}"),
            Some(&upd.to_string()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    assert_eq!(updated["name"], "Acme 2");
    assert_eq!(updated["metadata"], json!({"region": "eu"}));
    assert_eq!(updated["domains"].as_array().unwrap().len(), 1);
    // A kept domain keeps its id.
    assert_eq!(updated["domains"][0]["id"], org["domains"][0]["id"]);

    let (_, filtered) = api
        .call("GET", "/organizations?domains=acme.dev", None)
        .await;
    assert!(
        filtered["data"].as_array().unwrap().is_empty(),
        "removed domain still indexed"
    );
    let (_, filtered) = api
        .call("GET", "/organizations?domains=acme.com,other.com", None)
        .await;
    assert_eq!(names(&filtered), ["Acme 2"]);

    let (s, _) = api
        .call("DELETE", &format!("/organizations/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, err) = api.call("GET", &format!("/organizations/{id}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(err["code"], "entity_not_found");
    let (s, _) = api
        .call("GET", "/organizations/external_id/ext-1", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The external id is free again.
    let (s, _) = api
        .call(
            "POST",
            "/organizations",
            Some(r#"{"name":"Again","external_id":"ext-1"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    assert_eq!(
        api.event_kinds(),
        [
            "organization.created",
            "organization.updated",
            "organization.deleted",
            "organization.created"
        ]
    );
}

#[tokio::test]
async fn pagination_walks_every_page_in_both_orders_and_directions() {
    let api = Api::new();
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(
            api.create(&format!("org-{i}")).await["name"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Default order is desc: newest first; follow `after` to the end.
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut uri = "/organizations?limit=3".to_string();
    loop {
        let (s, page) = api.call("GET", &uri, None).await;
        assert_eq!(s, StatusCode::OK);
        seen.extend(names(&page));
        pages.push(page.clone());
        match page["list_metadata"]["after"].as_str() {
            Some(after) => uri = format!("/organizations?limit=3&after={after}"),
            None => break,
        }
    }
    let mut newest_first = created.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    assert_eq!(pages.len(), 3);
    assert!(pages[0]["list_metadata"]["before"].is_null());
    assert!(pages[1]["list_metadata"]["before"].is_string());

    // From the last page, `before` walks back to the same second page.
    let before = pages[2]["list_metadata"]["before"].as_str().unwrap();
    let (_, back) = api
        .call(
            "GET",
            &format!("/organizations?limit=3&before={before}"),
            None,
        )
        .await;
    assert_eq!(names(&back), names(&pages[1]));

    // Ascending order lists oldest first.
    let (_, asc) = api
        .call("GET", "/organizations?order=asc&limit=4", None)
        .await;
    assert_eq!(names(&asc), created[..4]);
    let after = asc["list_metadata"]["after"].as_str().unwrap();
    let (_, asc2) = api
        .call(
            "GET",
            &format!("/organizations?order=asc&limit=4&after={after}"),
            None,
        )
        .await;
    assert_eq!(names(&asc2), created[4..]);
    assert!(asc2["list_metadata"]["after"].is_null());

    let (_, searched) = api.call("GET", "/organizations?search=ORG-3", None).await;
    assert_eq!(names(&searched), ["org-3"]);
}

#[tokio::test]
async fn bad_input_gets_workos_errors_and_writes_nothing() {
    let api = Api::new();
    api.create("keep").await;
    let events_before = api.event_kinds().len();
    let cases: Vec<(&str, &str, Option<String>, StatusCode)> = vec![
        (
            "POST",
            "/organizations",
            Some("{not json".into()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/organizations",
            Some("[1,2]".into()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/organizations",
            Some(r#"{"name":5}"#.into()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/organizations",
            Some(r#"{"name":"x","domain_data":"x"}"#.into()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/organizations",
            Some(r#"{"name":"x","domain_data":[{"domain":"not a domain"}]}"#.into()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/organizations",
            Some(r#"{"name":"x","metadata":{"k":1}}"#.into()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/organizations",
            Some(r#"{"name":"   "}"#.into()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/organizations",
            Some(format!(r#"{{"name":"{}"}}"#, "x".repeat(2 * 1024 * 1024))),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "GET",
            "/organizations?limit=0",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "GET",
            "/organizations?limit=101",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "GET",
            "/organizations?limit=abc",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "GET",
            "/organizations?after=bogus",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "GET",
            "/organizations?order=sideways",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "PUT",
            "/organizations/org_01EHWNCE74X7JSDV0X3SZ3KJNY",
            Some(r#"{"name":"x"}"#.into()),
            StatusCode::NOT_FOUND,
        ),
        ("DELETE", "/organizations/nope", None, StatusCode::NOT_FOUND),
        (
            "PATCH",
            "/organizations",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];
    for (method, uri, body, want) in cases {
        let (status, err) = api.call(method, uri, body.as_deref()).await;
        assert_eq!(status, want, "{method} {uri}: {err}");
        assert!(
            err["message"].is_string(),
            "{method} {uri}: no message in {err}"
        );
        if want == StatusCode::UNPROCESSABLE_ENTITY {
            assert_eq!(err["code"], "invalid_request_parameters");
            assert!(!err["errors"].as_array().unwrap().is_empty());
        }
    }
    let (_, list) = api.call("GET", "/organizations", None).await;
    assert_eq!(names(&list), ["keep"]);
    assert_eq!(api.event_kinds().len(), events_before);

    // Duplicate external id: 400 with its code, and still nothing written.
    api.call(
        "POST",
        "/organizations",
        Some(r#"{"name":"a","external_id":"dup"}"#),
    )
    .await;
    let (s, err) = api
        .call(
            "POST",
            "/organizations",
            Some(r#"{"name":"b","external_id":"dup"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(err["code"], "external_id_already_used");
    let (_, list) = api.call("GET", "/organizations?limit=100", None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn api_key_is_required_and_checked() {
    let api = Api::new();
    for auth in [
        None,
        Some("Bearer sk_wrong"),
        Some("Basic abc"),
        Some("Bearer "),
    ] {
        let mut req = Request::builder().uri("/organizations");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = api
            .app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
    }
    // Health needs no key; a revoked key stops working.
    let resp = api
        .app
        .clone()
        .oneshot(
            Request::builder()
                .uri("/healthz")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let keys = auth::list_api_keys(api.store.as_ref()).unwrap();
    auth::revoke_api_key(api.store.as_ref(), &keys[0].id).unwrap();
    let (s, _) = api.call("GET", "/organizations", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
