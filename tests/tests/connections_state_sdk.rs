//! Connection PATCH (rename, partial `attribute_maps` / `saml_options`, `state` active/inactive), `/sso/authorize?domain_hint=`, deletion
//! and the `connection.*` events, and the SAML certificate sub-resources (Python only: neither the
//! Node SDK nor the OpenAPI spec has them),
//! through the official WorkOS SDKs (Node 11, Python 10.8) against a real `idbridge serve`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use idbridge_tests::{run_node_test, run_python_test, TestServer};

/// The app's callback: allow-listed, never contacted (the tests stop at the redirect).
const CALLBACK: &str = "http://127.0.0.1:9/callback";
const NODE_TESTS: u32 = 8;
const PYTHON_TESTS: u32 = 2;
const PYTHON_CERT_TESTS: u32 = 1;

async fn server() -> anyhow::Result<(TestServer, Vec<(String, String)>)> {
    let server = TestServer::builder()
        .env("IDBRIDGE_SSO_REDIRECT_URIS", CALLBACK)
        .start()
        .await?;
    let mut env = server.peer_env();
    env.push(("IDBRIDGE_SSO_CALLBACK".into(), CALLBACK.into()));
    Ok((server, env))
}

#[tokio::test]
async fn node_sdk_connection_state() -> anyhow::Result<()> {
    let (_server, env) = server().await?;
    let report = run_node_test("connections_state.test.mjs", env).await?;
    if report.ran() {
        assert!(
            report.passed >= NODE_TESTS && report.failed == 0,
            "expected {NODE_TESTS} node tests to pass, {} did:\n{}",
            report.passed,
            report.output
        );
    }
    Ok(())
}

#[tokio::test]
async fn python_sdk_connection_state() -> anyhow::Result<()> {
    let (_server, env) = server().await?;
    let report = run_python_test("test_connections_state.py", env).await?;
    if report.ran() {
        assert!(
            report.passed >= PYTHON_TESTS && report.failed == 0,
            "expected {PYTHON_TESTS} python tests to pass, {} did:\n{}",
            report.passed,
            report.output
        );
    }
    Ok(())
}

#[tokio::test]
async fn python_sdk_connection_certificates() -> anyhow::Result<()> {
    let (_server, env) = server().await?;
    let report = run_python_test("test_connection_certificates.py", env).await?;
    if report.ran() {
        assert!(
            report.passed >= PYTHON_CERT_TESTS && report.failed == 0,
            "expected {PYTHON_CERT_TESTS} python tests to pass, {} did:\n{}",
            report.passed,
            report.output
        );
    }
    Ok(())
}

/// `authentication.sso_timed_out` (and `sso_failed`) with logins that live 2 seconds.
#[tokio::test]
async fn node_sdk_sso_timed_out() -> anyhow::Result<()> {
    let server = TestServer::builder()
        .env("IDBRIDGE_SSO_REDIRECT_URIS", CALLBACK)
        .config_toml("[sso]\nlogin_ttl_secs = 2\n")
        .start()
        .await?;
    let mut env = server.peer_env();
    env.push(("IDBRIDGE_SSO_CALLBACK".into(), CALLBACK.into()));
    let report = run_node_test("sso_timeout.test.mjs", env).await?;
    if report.ran() {
        assert!(
            report.passed >= 1 && report.failed == 0,
            "expected the node test to pass:\n{}",
            report.output
        );
    }
    Ok(())
}
