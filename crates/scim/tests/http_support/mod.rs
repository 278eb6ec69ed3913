//! Test support for the real SCIM router: an ephemeral SQLite store, the directory engine, one
//! organization, and helpers to send requests (in-process with `oneshot`, or over a loopback
//! socket for third-party clients) and to read the events the engine appended.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::Router;
use http::{HeaderMap, Request};
use http_body_util::BodyExt;
use idbridge_directory::{DirectoryEngine, DirectorySettings, StoredUser};
use idbridge_model::tag::OrganizationTag;
use idbridge_model::{new_id, IdPrefix, Organization, Timestamp};
use idbridge_scim::router::{router, ScimConfig};
use idbridge_store::{SqliteStore, Store};
use serde_json::Value;
use tower::ServiceExt;

pub const PUBLIC_URL: &str = "https://idbridge.test";

pub struct Env {
    pub store: Arc<dyn Store>,
    pub engine: Arc<DirectoryEngine>,
    pub org: String,
    pub app: Router,
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub fn org_record(id: &str) -> Organization {
    let now = Timestamp::now();
    Organization {
        object: OrganizationTag,
        id: id.to_owned(),
        name: "Acme".into(),
        domains: Vec::new(),
        metadata: BTreeMap::new(),
        external_id: None,
        stripe_customer_id: None,
        allow_profiles_outside_organization: false,
        created_at: now,
        updated_at: now,
    }
}

impl Env {
    pub fn new() -> Env {
        Env::with_url(PUBLIC_URL)
    }

    pub fn with_url(public_url: &str) -> Env {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open_ephemeral().unwrap_or_else(|e| panic!("store: {e}")));
        let org = new_id(IdPrefix::Organization);
        let orgs = Arc::new(idbridge_directory::FixedOrganizations::new([org_record(
            &org,
        )]));
        let engine = Arc::new(DirectoryEngine::new(store.clone(), orgs));
        let app = router(
            engine.clone(),
            ScimConfig {
                public_url: public_url.into(),
                max_body_bytes: 64 * 1024,
                ..ScimConfig::default()
            },
        );
        Env {
            store,
            engine,
            org,
            app,
        }
    }

    /// A SCIM directory: (id, token).
    pub fn dir(&self, settings: DirectorySettings) -> (String, String) {
        let (rec, token) = self
            .engine
            .create_directory(&self.org, "Okta", "okta scim v2.0", settings)
            .unwrap_or_else(|e| panic!("{e}"));
        (
            rec.directory.id,
            token.unwrap_or_else(|| panic!("no token")),
        )
    }

    pub async fn send(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some() {
            b = b.header("content-type", "application/scim+json");
        }
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        let req = b
            .body(Body::from(body.unwrap_or_default().to_owned()))
            .unwrap_or_else(|e| panic!("{e}"));
        let resp = self
            .app
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    pub fn last_seq(&self) -> u64 {
        self.store
            .last_event_seq()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Events appended after `seq`: (type, data).
    pub fn events_after(&self, seq: u64) -> Vec<(String, Value)> {
        self.store
            .events_after(seq, 10_000)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|e| {
                let v: Value = serde_json::from_slice(&e.body).unwrap_or(Value::Null);
                (e.kind, v["data"].clone())
            })
            .collect()
    }

    pub fn kinds_after(&self, seq: u64) -> Vec<String> {
        self.events_after(seq).into_iter().map(|(k, _)| k).collect()
    }

    pub fn user(&self, dir: &str, id: &str) -> Option<StoredUser> {
        self.engine.get_user(Some(dir), id).ok()
    }

    /// Every record of the store as (table, key, value) for "nothing changed" checks.
    pub fn dump(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.store
            .export(&mut |r| {
                out.push(format!("{r:?}"));
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
        out
    }
}

pub fn fixture(path: &str) -> String {
    let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// Serves `app` on a loopback port from a background runtime; returns `http://127.0.0.1:<port>`.
pub fn serve_on_socket(make: impl FnOnce(&str) -> Router + Send + 'static) -> String {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let base = format!("http://{addr}");
    let app = make(&base);
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap_or_else(|e| panic!("{e}"));
            let _ = axum::serve(l, app).await;
        });
    });
    base
}
