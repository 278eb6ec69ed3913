//! The unknown-field audit: every admin and WorkOS-compatible JSON body idbridge takes is sent
//! with one field it does not know, and must be a 422 naming that field with nothing changed.
//!
//! Not covered here: `/sso/token`, `/idp/{org}/oidc/token` and the IdP login forms
//! (form-encoded OAuth/OIDC and browser requests, where RFC 6749 §3.2 says unknown
//! parameters are ignored), SAML ACS posts (XML), SCIM (its own protocol, tested in
//! idbridge-scim), `/admin/settings/{section}` (needs the binary's runtime; tested in
//! tests/tests/runtime_settings_e2e.rs) and `/admin/directories/{id}/feed` (a SCIM directory
//! has no feed, so 409 comes first; unknown fields at any depth are tested with LDAP and SFTP
//! feeds in tests/tests/directory_feeds_e2e.rs).

use serde_json::{json, Value};

use crate::events_api::test_support::{harness, Harness};

const BOGUS: &str = "bogus_field_x";

/// What the state looks like through the API (compared before and after the audit).
async fn snapshot(h: &Harness, org: &str, dir: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for path in [
        "/organizations?limit=100".to_string(),
        format!("/organizations/{org}"),
        "/webhook_endpoints?limit=100".to_string(),
        "/admin/directories?limit=100".to_string(),
        format!("/admin/directories/{dir}"),
        format!("/admin/organizations/{org}/roles"),
        format!("/admin/organizations/{org}/role_mappings"),
        format!("/authorization/organizations/{org}/roles"),
        "/admin/dns".to_string(),
        "/admin/idp/settings".to_string(),
        "/admin/oidc_clients".to_string(),
        "/admin/service_providers?limit=100".to_string(),
        "/connections?limit=100".to_string(),
    ] {
        let r = h.call("GET", &path, None, &[]).await;
        out.push(json!({"path": path, "status": r.status.as_u16(), "body": r.json()}));
    }
    out
}

fn with_bogus(mut body: Value) -> Value {
    if let Some(map) = body.as_object_mut() {
        map.insert(BOGUS.into(), json!(1));
    }
    body
}

#[tokio::test]
async fn every_json_body_refuses_an_unknown_field_by_name_and_changes_nothing() {
    let h = harness();
    let org = h
        .call("POST", "/organizations", Some(json!({"name": "Acme"})), &[])
        .await
        .json()["id"]
        .as_str()
        .expect("org id")
        .to_string();
    let domain = h
        .call(
            "POST",
            "/organization_domains",
            Some(json!({"organization_id": org, "domain": "acme.example.com"})),
            &[],
        )
        .await
        .json()["id"]
        .as_str()
        .expect("domain id")
        .to_string();
    let hook = h
        .call(
            "POST",
            "/webhook_endpoints",
            Some(json!({"endpoint_url": "https://hooks.example.com/a", "events": ["dsync.user.created"]})),
            &[],
        )
        .await
        .json()["id"]
        .as_str()
        .expect("webhook id")
        .to_string();
    let dir = h
        .call(
            "POST",
            "/admin/directories",
            Some(json!({"organization_id": org, "name": "Okta", "type": "okta scim v2.0"})),
            &[],
        )
        .await
        .json()["directory"]["id"]
        .as_str()
        .expect("directory id")
        .to_string();
    let oidc = json!({"connection_type": "GenericOIDC", "oidc_options":
        {"issuer": "https://op.example.com", "client_id": "c", "client_secret_env": "UNUSED_SECRET"}});
    let mut create_conn = oidc.clone();
    create_conn["organization_id"] = json!(org);
    let conn = h
        .call("POST", "/connections", Some(create_conn), &[])
        .await
        .json()["id"]
        .as_str()
        .expect("connection id")
        .to_string();

    let before = snapshot(&h, &org, &dir).await;
    let cases: Vec<(&str, String, Value)> = vec![
        ("POST", "/organizations".into(), json!({"name": "Other"})),
        (
            "PUT",
            format!("/organizations/{org}"),
            json!({"name": "Renamed"}),
        ),
        (
            "POST",
            "/organization_domains".into(),
            json!({"organization_id": org, "domain": "other.example.com"}),
        ),
        (
            "POST",
            format!("/organization_domains/{domain}/verify"),
            json!({}),
        ),
        ("PUT", "/admin/dns".into(), json!({"timeout_ms": 1000})),
        (
            "POST",
            "/webhook_endpoints".into(),
            json!({"endpoint_url": "https://hooks.example.com/b", "events": ["dsync.user.created"]}),
        ),
        (
            "PATCH",
            format!("/webhook_endpoints/{hook}"),
            json!({"status": "disabled"}),
        ),
        (
            "POST",
            "/admin/directories".into(),
            json!({"organization_id": org, "name": "Two", "type": "generic scim v2.0"}),
        ),
        (
            "PATCH",
            format!("/admin/directories/{dir}"),
            json!({"name": "Renamed"}),
        ),
        (
            "PATCH",
            format!("/admin/directories/{dir}"),
            json!({"settings": {"deactivation": "keep_inactive"}}),
        ),
        (
            "POST",
            format!("/admin/directories/{dir}/scim_token"),
            json!({}),
        ),
        (
            "POST",
            format!("/admin/directories/{dir}/deactivate"),
            json!({}),
        ),
        (
            "POST",
            format!("/admin/directories/{dir}/activate"),
            json!({}),
        ),
        (
            "POST",
            format!("/connections/{conn}/saml_idp_signing_certs"),
            json!({"value": "-----BEGIN CERTIFICATE-----"}),
        ),
        (
            "POST",
            format!("/connections/{conn}/saml_sp_encryption_certs"),
            json!({}),
        ),
        (
            "POST",
            format!("/connections/{conn}/saml_sp_signing_cert"),
            json!({}),
        ),
        (
            "POST",
            format!("/admin/directories/{dir}/sync"),
            json!({"kind": "full"}),
        ),
        (
            "POST",
            format!("/admin/directories/{dir}/sync/confirm"),
            json!({}),
        ),
        (
            "POST",
            format!("/admin/directories/{dir}/pending_deletion/confirm"),
            json!({}),
        ),
        (
            "PUT",
            format!("/admin/directories/{dir}/forward"),
            json!({}),
        ),
        (
            "POST",
            format!("/admin/directories/{dir}/forward/reconcile"),
            json!({}),
        ),
        (
            "PUT",
            format!("/admin/organizations/{org}/roles"),
            json!({"roles": [{"slug": "member"}]}),
        ),
        (
            "PUT",
            format!("/admin/organizations/{org}/role_mappings"),
            json!({"role_mappings": []}),
        ),
        ("POST", "/admin/backup".into(), json!({})),
        (
            "PATCH",
            "/admin/idp/settings".into(),
            json!({"account_max_failures": 3}),
        ),
        ("POST", "/admin/oidc_clients".into(), json!({})),
        ("POST", "/admin/service_providers".into(), json!({})),
        ("POST", "/connections".into(), json!({})),
        ("PUT", format!("/admin/connections/{conn}"), oidc.clone()),
        (
            "PATCH",
            format!("/connections/{conn}"),
            json!({"saml_options": {"idp_sso_url": "https://idp.example.test/sso"}}),
        ),
        (
            "POST",
            format!("/authorization/organizations/{org}/roles"),
            json!({"name": "Billing"}),
        ),
        (
            "PATCH",
            format!("/authorization/organizations/{org}/roles/member"),
            json!({"name": "Members"}),
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, body) in &cases {
        let r = h
            .call(method, path, Some(with_bogus(body.clone())), &[])
            .await;
        let reply = r.json();
        let named = reply["errors"]
            .as_array()
            .is_some_and(|errs| errs.iter().any(|e| e["field"] == BOGUS));
        if r.status.as_u16() != 422 || !named {
            failures.push(format!("{method} {path}: {} {reply}", r.status));
        }
    }
    assert!(
        failures.is_empty(),
        "bodies that did not refuse `{BOGUS}` with a 422 naming it:\n{}",
        failures.join("\n")
    );
    assert_eq!(
        snapshot(&h, &org, &dir).await,
        before,
        "a refused request changed something"
    );
}
