//! `GET /admin/directories/{id}/deliveries`: an SFTP directory's deliveries and summary, as
//! the processor records them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use idbridge_api::{router, ApiConfig, AppState};
use idbridge_directory::DirectoryEngine;
use idbridge_sftp::{DeliverySource, Processor};
use idbridge_sso::api_keys as auth;
use idbridge_store::{SqliteStore, Store};
use serde_json::{json, Value};
use tower::ServiceExt;

async fn call(
    app: &axum::Router,
    key: &str,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {key}"));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(
            body.map(|b| Body::from(b.to_string()))
                .unwrap_or(Body::empty()),
        )
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, v)
}

#[tokio::test]
async fn lists_deliveries_with_summary() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_ephemeral().unwrap());
    let boot = auth::bootstrap(store.as_ref()).unwrap().unwrap();
    let app = router(AppState::new(store.clone(), ApiConfig::default()));
    let key = boot.api_key;
    let (s, org) = call(
        &app,
        &key,
        "POST",
        "/organizations",
        Some(json!({"name": "Acme"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{org}");
    let (s, dir) = call(
        &app,
        &key,
        "POST",
        "/admin/directories",
        Some(json!({"organization_id": org["id"], "name": "HR", "type": "sftp"})),
    )
    .await;
    assert!(s.is_success(), "{dir}");
    let dir_id = dir["directory"]["id"].as_str().unwrap().to_owned();

    let p = Processor::new(Arc::new(DirectoryEngine::new(
        store.clone(),
        Arc::new(idbridge_sso::organizations::Organizations::new(
            store.clone(),
        )),
    )));
    let inbox = tempfile::tempdir().unwrap();
    std::fs::write(
        inbox.path().join("users.csv"),
        "user_id,first_name,last_name,email\nu1,A,B,a@x.com\n",
    )
    .unwrap();
    p.process_inbox(&dir_id, inbox.path(), DeliverySource::Push)
        .unwrap()
        .unwrap();
    std::fs::write(inbox.path().join("users.csv"), "user_id,first_name\nu1,A\n").unwrap();
    p.process_inbox(&dir_id, inbox.path(), DeliverySource::Push)
        .unwrap()
        .unwrap();

    let (s, v) = call(
        &app,
        &key,
        "GET",
        &format!("/admin/directories/{dir_id}/deliveries"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][0]["status"], "rejected");
    assert_eq!(v["data"][0]["problems"][0]["file"], "users.csv");
    assert_eq!(v["data"][0]["problems"][0]["line"], 1);
    assert_eq!(v["data"][1]["status"], "applied");
    assert_eq!(v["data"][1]["changes"]["users_created"], 1);
    assert_eq!(v["summary"]["deliveries"], 2);
    assert_eq!(v["summary"]["rejections"], 1);
    assert_eq!(v["summary"]["last_applied"]["id"], v["data"][1]["id"]);

    let (s, v) = call(
        &app,
        &key,
        "GET",
        &format!("/admin/directories/{dir_id}/deliveries?limit=1"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    let before = v["list_metadata"]["before"].as_str().unwrap().to_owned();
    let (_, v) = call(
        &app,
        &key,
        "GET",
        &format!("/admin/directories/{dir_id}/deliveries?limit=1&before={before}"),
        None,
    )
    .await;
    assert_eq!(v["data"][0]["status"], "applied");

    let (s, _) = call(
        &app,
        &key,
        "GET",
        "/admin/directories/directory_01HZZZZZZZZZZZZZZZZZZZZZZZ/deliveries",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(
        &app,
        "wrong",
        "GET",
        &format!("/admin/directories/{dir_id}/deliveries"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
