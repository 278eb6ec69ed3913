//! The official WorkOS SDKs (Node 11, Python 10) drive organizations CRUD and pagination
//! against a real `idbridge serve`. Each SDK gets its own fresh server, so the list
//! expectations in the test files see only what they created.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use idbridge_tests::{run_node_test, run_python_test, TestServer};

/// At least this many tests must pass in each file, so a file that silently lost its tests
/// (a bad rename, a skipped block) fails here instead of looking green.
const NODE_TESTS: u32 = 9;
const PYTHON_TESTS: u32 = 4;

#[tokio::test]
async fn node_sdk_organizations() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let report = run_node_test("organizations.test.mjs", server.peer_env()).await?;
    if report.ran() {
        assert!(
            report.passed >= NODE_TESTS,
            "expected {NODE_TESTS} node tests to pass, {} did:\n{}",
            report.passed,
            report.output
        );
    }
    Ok(())
}

#[tokio::test]
async fn python_sdk_organizations() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let report = run_python_test("test_organizations.py", server.peer_env()).await?;
    if report.ran() {
        assert!(
            report.passed >= PYTHON_TESTS,
            "expected {PYTHON_TESTS} python tests to pass, {} did:\n{}",
            report.passed,
            report.output
        );
    }
    Ok(())
}
