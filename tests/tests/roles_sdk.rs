//! The WorkOS roles endpoints of an organization (list, get by slug, create, update, delete, and
//! their `organization_role.*` events) through the official SDKs (Node 11, Python 10.8) against a
//! real `idbridge serve`, served from the admin role settings.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use idbridge_tests::{run_node_test, run_python_test, TestServer};

/// At least this many tests must pass in each file (a file that silently lost its tests fails).
const NODE_TESTS: u32 = 2;
const PYTHON_TESTS: u32 = 2;

#[tokio::test]
async fn node_sdk_organization_roles() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let report = run_node_test("roles.test.mjs", server.peer_env()).await?;
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
async fn python_sdk_organization_roles() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let report = run_python_test("test_roles.py", server.peer_env()).await?;
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
