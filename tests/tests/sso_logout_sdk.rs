//! Logout (`POST /sso/logout/authorize`, `GET /sso/logout`) and SAML single logout end to end
//! with the official WorkOS SDKs (Node 11, Python 10.8) against a real `idbridge serve`:
//! samlify as the IdP in both directions (Node), pysaml2 signing the login (Python).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use idbridge_tests::{run_node_test, run_python_test, TestServer};

/// The app's callback: allow-listed (and so the default redirect after a logout), never
/// contacted.
const CALLBACK: &str = "http://127.0.0.1:9/callback";
/// At least this many tests must pass in each file (a file that silently lost tests fails).
const NODE_TESTS: u32 = 4;
const PYTHON_TESTS: u32 = 4;

async fn server() -> anyhow::Result<TestServer> {
    Ok(TestServer::builder()
        .env("IDBRIDGE_SSO_REDIRECT_URIS", CALLBACK)
        .start()
        .await?)
}

fn env(server: &TestServer) -> Vec<(String, String)> {
    let mut env = server.peer_env();
    env.push(("IDBRIDGE_SSO_CALLBACK".into(), CALLBACK.into()));
    env
}

#[tokio::test]
async fn node_sdk_logout_and_single_logout_with_samlify() -> anyhow::Result<()> {
    let server = server().await?;
    let report = run_node_test("sso_logout.test.mjs", env(&server)).await?;
    if report.ran() {
        assert!(
            report.passed >= NODE_TESTS && report.failed == 0,
            "expected {NODE_TESTS} node tests to pass, {} did, {} failed:\n{}",
            report.passed,
            report.failed,
            report.output
        );
    }
    Ok(())
}

#[tokio::test]
async fn python_sdk_logout_with_pysaml2() -> anyhow::Result<()> {
    let server = server().await?;
    let report = run_python_test("test_sso_logout.py", env(&server)).await?;
    if report.ran() {
        assert!(
            report.passed >= PYTHON_TESTS && report.failed == 0,
            "expected {PYTHON_TESTS} python tests to pass, {} did, {} failed:\n{}",
            report.passed,
            report.failed,
            report.output
        );
    }
    Ok(())
}
