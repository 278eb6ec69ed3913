//! A user deactivated through SCIM under the default setting (deactivation deletes, as WorkOS
//! does) is parked: its SCIM resource stays for the IdP, but nothing of it leaks into the
//! WorkOS Directory Sync API (lists, get, group filters, directory metadata), until the IdP
//! reactivates it. Driven through the product router: SCIM writes in, WorkOS reads out.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use idbridge_api::{router, ApiConfig, AppState};
use idbridge_directory::DirectorySettings;
use idbridge_sso::api_keys as auth;
use idbridge_store::{SqliteStore, Store};
use serde_json::{json, Value};
use tower::ServiceExt;

struct Api {
    app: Router,
    key: String,
}

impl Api {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        bearer: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {bearer}"));
        if body.is_some() {
            req = req.header("content-type", "application/scim+json");
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
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        (status, value)
    }

    async fn workos(&self, uri: &str) -> (StatusCode, Value) {
        let key = self.key.clone();
        self.call("GET", uri, &key, None).await
    }
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data: {page}"))
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn parked_users_do_not_leak_into_the_directory_sync_api() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_ephemeral().unwrap());
    let boot = auth::bootstrap(store.as_ref()).unwrap().unwrap();
    let state = AppState::new(store.clone(), ApiConfig::default());
    let engine = state.directory.clone();
    let api = Api {
        app: router(state),
        key: boot.api_key,
    };
    let (s, org) = api
        .call(
            "POST",
            "/organizations",
            &api.key.clone(),
            Some(json!({"name": "Acme", "domain_data": [{"domain": "acme.test", "state": "verified"}]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{org}");
    let org = org["id"].as_str().unwrap().to_string();
    let (rec, token) = engine
        .create_directory(&org, "Okta", "okta scim v2.0", DirectorySettings::default())
        .unwrap();
    let dir = rec.directory.id;
    let token = token.unwrap();
    let scim = format!("/scim/v2/{dir}");

    let mut users = Vec::new();
    for name in ["jane@acme.test", "joe@acme.test"] {
        let (s, u) = api
            .call(
                "POST",
                &format!("{scim}/Users"),
                &token,
                Some(
                    json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": name, "active": true,
                    "emails": [{"value": name, "primary": true, "type": "work"}]}),
                ),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{u}");
        users.push(u["id"].as_str().unwrap().to_string());
    }
    let (jane, joe) = (users[0].clone(), users[1].clone());
    let (s, g) = api
        .call(
            "POST",
            &format!("{scim}/Groups"),
            &token,
            Some(
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "Eng", "members": [{"value": jane}, {"value": joe}]}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{g}");
    let gid = g["id"].as_str().unwrap().to_string();

    // Okta deactivates Jane.
    let (s, r) = api
        .call(
            "PATCH",
            &format!("{scim}/Users/{jane}"),
            &token,
            Some(
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "value": {"active": false}}]}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let (s, r) = api
        .call("GET", &format!("{scim}/Users/{jane}"), &token, None)
        .await;
    assert_eq!((s, r["active"].clone()), (StatusCode::OK, json!(false)));

    // The WorkOS API does not see her anywhere.
    let (s, list) = api
        .workos(&format!("/directory_users?directory={dir}&limit=100"))
        .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(ids(&list), vec![joe.clone()]);
    let (s, list) = api
        .workos(&format!("/directory_users?group={gid}&limit=100"))
        .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(ids(&list), vec![joe.clone()]);
    let (s, v) = api.workos(&format!("/directory_users/{jane}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = api
        .workos(&format!("/directory_groups?user={jane}&limit=100"))
        .await;
    assert_ne!(s, StatusCode::OK, "{v}");
    let (s, d) = api.workos(&format!("/directories/{dir}")).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(
        d["metadata"]["users"],
        json!({"active": 1, "inactive": 0}),
        "{d}"
    );
    let (s, ev) = api
        .workos("/events?events=dsync.user.deleted&limit=100")
        .await;
    assert_eq!(s, StatusCode::OK, "{ev}");
    let deleted: Vec<&Value> = ev["data"].as_array().unwrap().iter().collect();
    assert_eq!(deleted.len(), 1, "{ev}");
    assert_eq!(deleted[0]["data"]["id"], jane.as_str());

    // Reactivated: the same id is back in the API.
    let (s, r) = api
        .call(
            "PATCH",
            &format!("{scim}/Users/{jane}"),
            &token,
            Some(
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "value": {"active": true}}]}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let (s, u) = api.workos(&format!("/directory_users/{jane}")).await;
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(u["state"], "active");
    assert_eq!(u["groups"], json!([]));
    let (_, list) = api
        .workos(&format!("/directory_users?directory={dir}&limit=100"))
        .await;
    let mut got = ids(&list);
    got.sort();
    let mut want = vec![jane, joe];
    want.sort();
    assert_eq!(got, want);
    let (_, d) = api.workos(&format!("/directories/{dir}")).await;
    assert_eq!(d["metadata"]["users"], json!({"active": 2, "inactive": 0}));
}
