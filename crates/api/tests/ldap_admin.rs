//! `GET /admin/directories/{id}/sync` and `POST .../sync/confirm`: the LDAP sync state as the
//! runner keeps it in the store, and an admin's confirmation of a guarded deletion.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use idbridge_api::{router, ApiConfig, AppState};
use idbridge_ldap::{PendingGuard, StateStore};
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
        let config = ApiConfig {
            public_url: "https://sso.example.com".into(),
            ..ApiConfig::default()
        };
        let app = router(AppState::new(store.clone(), config));
        Api {
            app,
            store,
            key: boot.api_key,
        }
    }

    async fn call_as(
        &self,
        bearer: Option<&str>,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(b) = bearer {
            req = req.header("authorization", format!("Bearer {b}"));
        }
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
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        (status, value)
    }

    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let key = self.key.clone();
        self.call_as(Some(&key), method, uri, body).await
    }

    async fn org(&self) -> String {
        let (s, v) = self
            .call("POST", "/organizations", Some(json!({"name": "Acme"})))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn sync_state_and_confirmation() {
    let api = Api::new();
    let org = api.org().await;
    let (s, v) = api
        .call(
            "POST",
            "/admin/directories",
            Some(json!({"organization_id": org, "name": "Corp AD", "type": "ldap"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let dir = v["directory"]["id"].as_str().unwrap().to_owned();

    let (s, _) = api
        .call_as(None, "GET", &format!("/admin/directories/{dir}/sync"), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let (s, v) = api
        .call("GET", &format!("/admin/directories/{dir}/sync"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["directory_id"], dir.as_str());
    assert_eq!(v["runs"], 0);
    assert!(v["pending_guard"].is_null());

    // Nothing to confirm yet.
    let (s, v) = api
        .call(
            "POST",
            &format!("/admin/directories/{dir}/sync/confirm"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    // The runner recorded a refused full sync.
    let states = StateStore::new(api.store.clone());
    states
        .update(&dir, |st| {
            st.pending_guard = Some(PendingGuard {
                would_delete: 90,
                total: 100,
                threshold: 0.1,
                at: chrono::Utc::now(),
                sample: Vec::new(),
            })
        })
        .unwrap();
    let (s, v) = api
        .call("GET", &format!("/admin/directories/{dir}/sync"), None)
        .await;
    assert_eq!(
        (s, &v["pending_guard"]["would_delete"]),
        (StatusCode::OK, &json!(90))
    );
    assert_eq!(v["deletion_confirmed"], false);
    let (s, v) = api
        .call(
            "POST",
            &format!("/admin/directories/{dir}/sync/confirm"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["deletion_confirmed"], true);
    assert!(states.load(&dir).unwrap().deletion_confirmed);

    // Unknown ids and non-LDAP directories are 404.
    let (s, _) = api
        .call(
            "GET",
            "/admin/directories/directory_01HZZZZZZZZZZZZZZZZZZZZZZZ/sync",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = api
        .call(
            "POST",
            "/admin/directories",
            Some(json!({"organization_id": org, "name": "HR", "type": "sftp"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let sftp = v["directory"]["id"].as_str().unwrap().to_owned();
    let (s, _) = api
        .call("GET", &format!("/admin/directories/{sftp}/sync"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// `POST /admin/directories/{id}/sync`: 409 without a registered source, the run's record
/// (`ok: false`, nothing applied) when the server is unreachable, 422 for an unknown kind.
/// The success path runs against a real slapd in tests/tests/ldap_e2e.rs.
#[tokio::test]
async fn sync_trigger_runs_through_the_registered_source() {
    let mut api = Api::new();
    let org = api.org().await;
    let (s, v) = api
        .call(
            "POST",
            "/admin/directories",
            Some(json!({"organization_id": org, "name": "Corp LDAP", "type": "ldap"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let dir = v["directory"]["id"].as_str().unwrap().to_owned();
    let path = format!("/admin/directories/{dir}/sync");

    let (s, v) = api.call("POST", &path, Some(json!({"kind": "full"}))).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["code"], "sync_not_configured");
    let (s, v) = api.call("POST", &path, Some(json!({"kind": "both"}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["errors"][0]["field"], "kind");

    // A source whose server is not listening: the run fails, is recorded, applies nothing.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut settings = idbridge_ldap::LdapSettings::new(
        format!("ldap://127.0.0.1:{port}"),
        idbridge_ldap::Flavor::Openldap,
        "ou=People,dc=example,dc=test",
    );
    settings.allow_plain = true;
    settings.timeouts.connect_secs = 2;
    let config = ApiConfig {
        public_url: "https://sso.example.com".into(),
        ..ApiConfig::default()
    };
    let state = AppState::new(api.store.clone(), config);
    state.ldap.install(
        Arc::new(idbridge_ldap::Syncer::new(state.directory.clone())),
        [idbridge_ldap::LdapSource {
            directory_id: dir.clone(),
            settings,
        }],
    );
    api.app = router(state);
    let (s, v) = api.call("POST", &path, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["ok"].clone(), v["kind"].clone()),
        (json!(false), json!("full"))
    );
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    let (_, st) = api.call("GET", &path, None).await;
    assert_eq!(
        (st["runs"].clone(), st["failures"].clone()),
        (json!(1), json!(1))
    );
    let (_, users) = api
        .call("GET", &format!("/directory_users?directory={dir}"), None)
        .await;
    assert_eq!(users["data"], json!([]));
    let (_, d) = api.call("GET", &format!("/directories/{dir}"), None).await;
    assert_eq!(
        d["state"], "unlinked",
        "a failed run must not link the directory"
    );
}
