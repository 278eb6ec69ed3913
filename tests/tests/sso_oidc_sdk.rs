//! OIDC SSO end to end with the official WorkOS SDKs (Node 11 in tests/js/sso_oidc.test.mjs,
//! Python 10.8 in tests/py/test_sso_oidc.py) against a real `idbridge serve` and a real OpenID
//! Provider (`oidc-provider` on loopback, installed by scripts/test-deps.d/oidc.sh).
//!
//! This file prepares what an operator would: two organizations with roles and IdP-group → role
//! mappings, a GenericOIDC connection in one and an OktaOIDC connection in the other, and a
//! third organization without roles whose GenericOIDC connection does not ask for `groups`
//! (the app adds it with `provider_scopes`); all on the provider's client. The SDK files then log users in non-interactively (the provider's
//! login and consent pages driven over plain HTTP) and check profile, groups and roles.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use idbridge_tests::{
    run_node_test, run_python_test, OidcProvider, OidcProviderOptions, TestServer,
};
use serde_json::{json, Value};

/// The app's callback: allow-listed, never contacted (the tests stop at the redirect).
const CALLBACK: &str = "http://127.0.0.1:9/callback";
const OP_CLIENT_ID: &str = "idbridge-sdk-e2e";
const OP_CLIENT_SECRET: &str = "sdk-e2e-client-secret-that-must-not-leak";
/// At least this many tests must pass in each file (a file that silently lost tests fails).
const NODE_TESTS: u32 = 6;
const PYTHON_TESTS: u32 = 7;

/// A server, a provider whose only redirect URI is the server's OIDC callback, and the
/// organizations and connections the SDK files use (as env for them).
struct Setup {
    server: TestServer,
    _provider: OidcProvider,
    env: Vec<(String, String)>,
}

async fn json_ok(resp: reqwest::Response, what: &str, status: u16) -> anyhow::Result<Value> {
    let got = resp.status();
    let text = resp.text().await?;
    anyhow::ensure!(
        got == status,
        "{what}: expected {status}, got {got}: {text}"
    );
    Ok(serde_json::from_str(&text)?)
}

fn id_of(v: &Value) -> anyhow::Result<String> {
    v["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no id in {v}"))
}

/// An organization with its roles, role mode and group → role mappings.
async fn organization(
    server: &TestServer,
    name: &str,
    roles: Value,
    mode: &str,
    mappings: Value,
) -> anyhow::Result<String> {
    let org = json_ok(
        server
            .post("/organizations")
            .json(&json!({ "name": name }))
            .send()
            .await?,
        "POST /organizations",
        201,
    )
    .await?;
    let org_id = id_of(&org)?;
    json_ok(
        server
            .put(&format!("/admin/organizations/{org_id}/roles"))
            .json(&json!({ "roles": roles, "mode": mode }))
            .send()
            .await?,
        "PUT roles",
        200,
    )
    .await?;
    json_ok(
        server
            .put(&format!("/admin/organizations/{org_id}/role_mappings"))
            .json(&json!({ "role_mappings": mappings }))
            .send()
            .await?,
        "PUT role_mappings",
        200,
    )
    .await?;
    Ok(org_id)
}

/// An OIDC connection on the provider's client; the secret must not come back.
async fn connection(
    server: &TestServer,
    provider: &OidcProvider,
    org_id: &str,
    connection_type: &str,
    scopes: Option<Value>,
) -> anyhow::Result<String> {
    let mut oidc = json!({
        "discovery_endpoint": provider.discovery_url(),
        "client_id": OP_CLIENT_ID,
        "client_secret": OP_CLIENT_SECRET,
    });
    if let Some(s) = scopes {
        oidc["scopes"] = s;
    }
    let resp = server
        .post("/connections")
        .json(&json!({
            "organization_id": org_id,
            "connection_type": connection_type,
            "name": format!("oidc-provider {connection_type}"),
            "oidc_options": oidc,
        }))
        .send()
        .await?;
    let conn = json_ok(resp, "POST /connections", 201).await?;
    anyhow::ensure!(
        !conn.to_string().contains(OP_CLIENT_SECRET),
        "the client secret came back from POST /connections"
    );
    id_of(&conn)
}

/// `None` when the provider is missing and `IDBRIDGE_SKIP_PEERS=1`; fails when it is missing
/// otherwise (naming scripts/test-deps.sh).
async fn setup() -> anyhow::Result<Option<Setup>> {
    if !OidcProvider::installed()? {
        return Ok(None);
    }
    let server = TestServer::builder()
        .env("IDBRIDGE_SSO_REDIRECT_URIS", CALLBACK)
        .start()
        .await?;
    let mut opts = OidcProviderOptions::new(
        OP_CLIENT_ID,
        OP_CLIENT_SECRET,
        &server.endpoint("/sso/oidc/callback"),
    );
    // `grace` keeps the provider's defaults (Grace Hopper, groups navy + cobol).
    opts.users = json!({
        "ada": {"given_name": "Ada", "family_name": "Lovelace", "groups": ["analysts", "staff"]},
    });
    let provider = OidcProvider::start(&opts).await?;

    // Org A, multiple-roles mode: navy → admiral, cobol → engineer, default member.
    let org_a = organization(
        &server,
        "OIDC SDK A",
        json!([
            {"slug": "admiral", "priority": 0},
            {"slug": "engineer", "priority": 1},
            {"slug": "member", "priority": 10, "default": true},
        ]),
        "multiple",
        json!([
            {"idp_group": "navy", "role_slug": "admiral"},
            {"idp_group": "cobol", "role_slug": "engineer"},
        ]),
    )
    .await?;
    // Org B, single-role mode: navy → lead, analysts → analyst, default member.
    let org_b = organization(
        &server,
        "OIDC SDK B",
        json!([
            {"slug": "lead", "priority": 0},
            {"slug": "analyst", "priority": 1},
            {"slug": "member", "priority": 10, "default": true},
        ]),
        "single",
        json!([
            {"idp_group": "navy", "role_slug": "lead"},
            {"idp_group": "analysts", "role_slug": "analyst"},
        ]),
    )
    .await?;
    // GenericOIDC does not ask for `groups` by default; oidc-provider releases the claim only
    // for that scope.
    let conn_a = connection(
        &server,
        &provider,
        &org_a,
        "GenericOIDC",
        Some(json!(["openid", "profile", "email", "groups"])),
    )
    .await?;
    // OktaOIDC asks for `groups` itself.
    let conn_b = connection(&server, &provider, &org_b, "OktaOIDC", None).await?;
    // Org C: no roles, a GenericOIDC connection with the default scopes (no `groups`): the app
    // asks for groups with `provider_scopes`.
    let org_c = json_ok(
        server
            .post("/organizations")
            .json(&json!({ "name": "OIDC SDK C" }))
            .send()
            .await?,
        "POST /organizations",
        201,
    )
    .await?;
    let org_c = id_of(&org_c)?;
    let conn_c = connection(&server, &provider, &org_c, "GenericOIDC", None).await?;

    let mut env = server.peer_env();
    for (k, v) in [
        ("IDBRIDGE_SSO_CALLBACK", CALLBACK.to_string()),
        ("IDBRIDGE_OIDC_ISSUER", provider.issuer.clone()),
        ("IDBRIDGE_OIDC_ORG_A", org_a),
        ("IDBRIDGE_OIDC_CONN_A", conn_a),
        ("IDBRIDGE_OIDC_ORG_B", org_b),
        ("IDBRIDGE_OIDC_CONN_B", conn_b),
        ("IDBRIDGE_OIDC_ORG_C", org_c),
        ("IDBRIDGE_OIDC_CONN_C", conn_c),
    ] {
        env.push((k.to_string(), v));
    }
    Ok(Some(Setup {
        server,
        _provider: provider,
        env,
    }))
}

/// After the SDK run: the client secret is in no log line of the server.
fn assert_no_secret_in_logs(server: &TestServer) {
    assert!(
        !server.stderr().contains(OP_CLIENT_SECRET),
        "the server logs leak the OIDC client secret"
    );
}

#[tokio::test]
async fn node_sdk_oidc_with_oidc_provider() -> anyhow::Result<()> {
    let Some(s) = setup().await? else {
        return Ok(());
    };
    let report = run_node_test("sso_oidc.test.mjs", s.env.clone()).await?;
    if report.ran() {
        assert!(
            report.passed >= NODE_TESTS && report.failed == 0 && report.skipped == 0,
            "expected {NODE_TESTS} node tests to pass (none skipped); {} passed, {} failed, {} skipped:\n{}",
            report.passed,
            report.failed,
            report.skipped,
            report.output
        );
    }
    assert_no_secret_in_logs(&s.server);
    Ok(())
}

#[tokio::test]
async fn python_sdk_oidc_with_oidc_provider() -> anyhow::Result<()> {
    let Some(s) = setup().await? else {
        return Ok(());
    };
    let report = run_python_test("test_sso_oidc.py", s.env.clone()).await?;
    if report.ran() {
        assert!(
            report.passed >= PYTHON_TESTS && report.failed == 0 && report.skipped == 0,
            "expected {PYTHON_TESTS} python tests to pass (none skipped); {} passed, {} failed, {} skipped:\n{}",
            report.passed,
            report.failed,
            report.skipped,
            report.output
        );
    }
    assert_no_secret_in_logs(&s.server);
    Ok(())
}
