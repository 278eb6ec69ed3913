//! Generator of the sled data-dir fixture in `crates/store/tests/fixtures/sled-0.34/`
//! (ignored: run it only to remake the fixture, with the last build that still wrote sled):
//!
//! ```text
//! IDBRIDGE_SLED_FIXTURE_OUT=crates/store/tests/fixtures/sled-0.34 \
//!   cargo test -p idbridge --test sled_fixture_gen -- --ignored --nocapture
//! ```
//!
//! It writes a sled data directory the way the sled release did: through the product router
//! (`idbridge_api::router` over a `SledStore`, as `idbridge serve` wired it) with the data
//! directory's own secret key, then records next to the tarred directory the export taken
//! from it before any migration (`export.jsonl`), the record counts per table
//! (`counts.json`) and the API key (`api-key.txt`, a test secret).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use idbridge_api::{router, ApiConfig, AppState};
use idbridge_sso::{api_keys, SecretBox, SsoConfig};
use idbridge_store::{ExportRecord, SledStore, Store};
use serde_json::{json, Value};
use tower::ServiceExt;

struct Api {
    app: Router,
    key: String,
}

impl Api {
    async fn call(&self, bearer: &str, method: &str, uri: &str, body: Value) -> Value {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {bearer}"));
        let body = if body.is_null() {
            Body::empty()
        } else {
            let ct = if uri.starts_with("/scim/") {
                "application/scim+json"
            } else {
                "application/json"
            };
            req = req.header("content-type", ct);
            Body::from(body.to_string())
        };
        let resp = self.app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(
            status.is_success(),
            "{method} {uri}: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
        if bytes.is_empty() || status == StatusCode::NO_CONTENT {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        }
    }

    async fn admin(&self, method: &str, uri: &str, body: Value) -> Value {
        let key = self.key.clone();
        self.call(&key, method, uri, body).await
    }
}

async fn generate(data: &Path) -> String {
    let store: Arc<dyn Store> = Arc::new(SledStore::open(data).unwrap());
    let boot = api_keys::bootstrap(store.as_ref()).unwrap().unwrap();
    // The data directory's own key seals connection secrets and SCIM tokens, as in `serve`.
    let secrets = SecretBox::load_or_create(None, data).unwrap();
    let state = AppState::new(store.clone(), ApiConfig::default())
        .with_sso(SsoConfig::default(), Some(secrets));
    let api = Api {
        app: router(state),
        key: boot.api_key.clone(),
    };

    let org = api
        .admin(
            "POST",
            "/organizations",
            json!({"name": "Fixture Corp", "external_id": "fixture-corp",
                   "domain_data": [{"domain": "fixture.test", "state": "verified"}]}),
        )
        .await;
    let org = org["id"].as_str().unwrap().to_owned();
    let cert = rcgen::generate_simple_self_signed(vec!["idp.fixture.test".to_owned()])
        .unwrap()
        .cert
        .pem();
    api.admin(
        "POST",
        "/connections",
        json!({"organization_id": org, "name": "Fixture SAML", "connection_type": "OktaSAML",
               "attribute_maps": {"custom_attributes": {"department": "dept"}},
               "saml_options": {"idp_entity_id": "https://idp.fixture.test/saml",
                                "idp_sso_url": "https://idp.fixture.test/sso",
                                "idp_signing_certs": [cert]}}),
    )
    .await;
    api.admin(
        "POST",
        "/connections",
        json!({"organization_id": org, "name": "Fixture OIDC", "connection_type": "GenericOIDC",
               "oidc_options": {"issuer": "https://op.fixture.test", "client_id": "fixture-client",
                                "client_secret": "fixture-secret"}}),
    )
    .await;
    api.admin(
        "POST",
        "/webhook_endpoints",
        json!({"endpoint_url": "https://hooks.fixture.test/idbridge",
               "events": ["dsync.user.created", "dsync.group.user_added"]}),
    )
    .await;
    api.admin(
        "PUT",
        &format!("/admin/organizations/{org}/roles"),
        json!({"roles": [{"slug": "member", "default": true, "priority": 10},
                         {"slug": "admin", "name": "Admin", "priority": 1}]}),
    )
    .await;
    api.admin(
        "PUT",
        &format!("/admin/organizations/{org}/role_mappings"),
        json!({"role_mappings": [{"idp_group": "Admins", "role_slug": "admin"}]}),
    )
    .await;
    let dir = api
        .admin(
            "POST",
            "/admin/directories",
            json!({"organization_id": org, "name": "Fixture Okta", "type": "okta scim v2.0"}),
        )
        .await;
    let token = dir["scim"]["bearer_token"].as_str().unwrap().to_owned();
    let scim = format!("/scim/v2/{}", dir["directory"]["id"].as_str().unwrap());

    let mut users = Vec::new();
    for n in 0..50 {
        let name = format!("user{n:02}@fixture.test");
        let u = api
            .call(
                &token,
                "POST",
                &format!("{scim}/Users"),
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                       "userName": name, "externalId": format!("okta-{n:02}"), "active": true,
                       "name": {"givenName": format!("Given{n:02}"), "familyName": "Fixture"},
                       "emails": [{"value": name, "primary": true, "type": "work"}]}),
            )
            .await;
        users.push(u["id"].as_str().unwrap().to_owned());
    }
    // Five groups: "Admins" is role-mapped; "All" holds everyone; three teams of ten.
    let member_sets: Vec<(&str, Vec<&String>)> = vec![
        ("Admins", users.iter().take(3).collect()),
        ("All", users.iter().collect()),
        ("Team A", users.iter().skip(10).take(10).collect()),
        ("Team B", users.iter().skip(20).take(10).collect()),
        ("Team C", users.iter().skip(30).take(10).collect()),
    ];
    let mut groups = Vec::new();
    for (name, members) in member_sets {
        let members: Vec<Value> = members.iter().map(|id| json!({"value": id})).collect();
        let g = api
            .call(
                &token,
                "POST",
                &format!("{scim}/Groups"),
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                       "displayName": name, "members": members}),
            )
            .await;
        groups.push(g["id"].as_str().unwrap().to_owned());
    }
    // A membership change by PATCH, a renamed user, and two parked (deactivated) users.
    api.call(
        &token,
        "PATCH",
        &format!("{scim}/Groups/{}", groups[2]),
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
               "Operations": [{"op": "remove", "path": format!("members[value eq \"{}\"]", users[10])}]}),
    )
    .await;
    api.call(
        &token,
        "PATCH",
        &format!("{scim}/Users/{}", users[5]),
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
               "Operations": [{"op": "replace", "path": "name.givenName", "value": "Renamed"}]}),
    )
    .await;
    for id in [&users[48], &users[49]] {
        api.call(
            &token,
            "PATCH",
            &format!("{scim}/Users/{id}"),
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "replace", "path": "active", "value": false}]}),
        )
        .await;
    }
    // A second API key, made by its owner as `idbridge api-key create` does.
    api_keys::create_api_key(store.as_ref(), "fixture second key").unwrap();
    boot.api_key
}

fn export(store: &dyn Store) -> (Vec<String>, BTreeMap<String, u64>) {
    let mut lines = Vec::new();
    let mut counts = BTreeMap::new();
    store
        .export(&mut |r| {
            let kind = match &r {
                ExportRecord::Entry { table, .. } => format!("entry {table}"),
                ExportRecord::Expiring { table, .. } => format!("expiring {table}"),
                ExportRecord::Event(_) => "event".to_owned(),
                ExportRecord::EventSeq { .. } => "event_seq".to_owned(),
            };
            *counts.entry(kind).or_insert(0) += 1;
            lines.push(serde_json::to_string(&r).unwrap());
            Ok(())
        })
        .unwrap();
    (lines, counts)
}

#[test]
#[ignore = "remakes the committed sled fixture; run by hand (see the file's docs)"]
fn generate_sled_fixture() {
    let out = std::path::PathBuf::from(
        std::env::var("IDBRIDGE_SLED_FIXTURE_OUT").expect("IDBRIDGE_SLED_FIXTURE_OUT=<dir>"),
    );
    std::fs::create_dir_all(&out).unwrap();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let key = rt.block_on(generate(&data));
    drop(rt);
    // Reopened: the export is what a later start finds on disk.
    let (lines, counts) = export(&SledStore::open(&data).unwrap());
    std::fs::write(out.join("export.jsonl"), lines.join("\n") + "\n").unwrap();
    std::fs::write(
        out.join("counts.json"),
        serde_json::to_string_pretty(&counts).unwrap() + "\n",
    )
    .unwrap();
    std::fs::write(out.join("api-key.txt"), key + "\n").unwrap();
    let status = std::process::Command::new("tar")
        .arg("-czf")
        .arg(out.join("data.tar.gz"))
        .arg("-C")
        .arg(&data)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    println!("{} records: {counts:?}", lines.len());
}

/// A larger sled store for measuring the migration's memory (not committed: ~100 MB):
/// `IDBRIDGE_SLED_LARGE_OUT=<dir> IDBRIDGE_SLED_LARGE_USERS=200000 cargo test -p idbridge
/// --test sled_fixture_gen large -- --ignored`, then `/usr/bin/time -v idbridge migrate` on a
/// copy. Each user is a ~600-byte row, two index rows and an event, 100 users per commit.
#[test]
#[ignore = "writes a large sled store for the migration's memory figure; run by hand"]
fn generate_large_sled_store() {
    let out = std::path::PathBuf::from(
        std::env::var("IDBRIDGE_SLED_LARGE_OUT").expect("IDBRIDGE_SLED_LARGE_OUT=<dir>"),
    );
    let users: u64 = std::env::var("IDBRIDGE_SLED_LARGE_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let store = SledStore::open(&out).unwrap();
    let pad = "x".repeat(500);
    for batch in 0..users.div_ceil(100) {
        let mut cs = idbridge_store::ChangeSet::new();
        for n in batch * 100..((batch + 1) * 100).min(users) {
            let id = format!("directory_user_{n:010}");
            cs.put(
                "dsync.users",
                format!("directory_x/{id}"),
                format!("{{\"id\":\"{id}\",\"email\":\"u{n}@large.test\",\"pad\":\"{pad}\"}}")
                    .into_bytes(),
            )
            .put(
                "dsync.user_by_email",
                format!("directory_x/u{n}@large.test"),
                id.clone().into_bytes(),
            )
            .put(
                "dsync.user_by_idp",
                format!("directory_x/idp-{n}"),
                id.clone().into_bytes(),
            )
            .event(idbridge_store::NewEvent {
                id: format!("event_{n:010}"),
                kind: "dsync.user.created".to_owned(),
                organization_id: Some("org_large".to_owned()),
                created_at_ms: 1_765_000_000_000,
                body: format!("{{\"id\":\"{id}\"}}").into_bytes(),
            });
        }
        store.commit(cs).unwrap();
    }
    println!("{users} users written to {}", out.display());
}
