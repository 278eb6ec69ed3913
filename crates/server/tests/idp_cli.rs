//! `idbridge idp sp|oidc-client add|list|show|remove` as an operator meets it: the same
//! validation as the admin API (an unknown field is named), the organization given by its
//! external_id, an OIDC client's secret printed once and never shown again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::sync::Arc;

use idbridge_sso::organizations::{NewOrganization, Organizations};
use idbridge_store::{SqliteStore, Store};
use serde_json::{json, Value};

fn idp(data: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_idbridge"))
        .env("IDBRIDGE_DATA_DIR", data)
        .arg("idp")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn service_providers_and_oidc_clients_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let org_id = {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&data).unwrap());
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(Organizations::new(store).create(NewOrganization {
                name: "Acme".into(),
                external_id: Some("acme".into()),
                ..NewOrganization::default()
            }))
            .unwrap()
            .id
    };
    let body = |name: &str, v: Value| {
        let p = tmp.path().join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p.display().to_string()
    };

    // A service provider: an unknown field is named and nothing is stored.
    let bad = body(
        "bad.json",
        json!({"organization_id": "acme", "entity_id": "https://app.example.test/saml",
            "acs_urls": ["https://app.example.test/acs"], "colour": "blue"}),
    );
    let (ok, out, err) = idp(&data, &["sp", "add", &bad]);
    assert!(!ok && err.contains("colour"), "{out}{err}");
    let (ok, out, err) = idp(&data, &["sp", "list"]);
    assert!(ok && out.trim().is_empty(), "{out}{err}");
    let sp = body(
        "sp.json",
        json!({"organization_id": "acme", "entity_id": "https://app.example.test/saml",
            "acs_urls": ["https://app.example.test/acs"], "name": "App"}),
    );
    let (ok, out, err) = idp(&data, &["sp", "add", &sp]);
    assert!(ok, "{out}{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let sp_id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["organization_id"], org_id.as_str());
    // The same entity id again is refused.
    let (ok, out, err) = idp(&data, &["sp", "add", &sp]);
    assert!(!ok, "duplicate accepted: {out}");
    assert!(err.contains("entity_id"), "{err}");
    let (ok, out, _) = idp(&data, &["sp", "list", "--organization", "acme"]);
    assert!(
        ok && out.contains(&sp_id) && out.contains("https://app.example.test/saml"),
        "{out}"
    );
    let (ok, out, _) = idp(&data, &["sp", "show", &sp_id]);
    assert!(ok && out.contains("\"App\""), "{out}");
    let (ok, out, err) = idp(&data, &["sp", "remove", &sp_id]);
    assert!(ok, "{out}{err}");
    let (ok, out, _) = idp(&data, &["sp", "list"]);
    assert!(ok && !out.contains(&sp_id), "{out}");
    let (ok, _, err) = idp(&data, &["sp", "show", &sp_id]);
    assert!(!ok && !err.is_empty());

    // An OIDC client: the secret is printed by `add` only.
    let client = body(
        "client.json",
        json!({"organization_id": org_id, "name": "RP",
            "redirect_uris": ["https://rp.example.test/callback"]}),
    );
    let (ok, out, err) = idp(&data, &["oidc-client", "add", &client]);
    assert!(ok, "{out}{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 32);
    let (ok, out, _) = idp(&data, &["oidc-client", "list"]);
    assert!(ok && out.contains(&id) && !out.contains(&secret), "{out}");
    let (ok, out, _) = idp(&data, &["oidc-client", "show", &id]);
    assert!(ok && !out.contains(&secret), "{out}");
    let (ok, _, err) = idp(&data, &["oidc-client", "remove", &id]);
    assert!(ok, "{err}");
    let (ok, out, _) = idp(&data, &["oidc-client", "list"]);
    assert!(ok && !out.contains(&id), "{out}");
}
