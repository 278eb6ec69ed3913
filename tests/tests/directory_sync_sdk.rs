//! The official WorkOS SDKs (Node 11, Python 10) read Directory Sync and the Events API from a
//! real `idbridge serve` that the test files feed through SCIM, exactly as an IdP would (the
//! admin API creates each directory and hands out its SCIM endpoint and token). Each SDK gets
//! its own fresh server, so the expectations in the test files see only what they created.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use idbridge_tests::{run_node_test, run_python_test, TestServer};

/// At least this many tests must pass in each file, so a file that silently lost its tests
/// fails here instead of looking green.
const NODE_TESTS: u32 = 7;
const PYTHON_TESTS: u32 = 4;

#[tokio::test]
async fn node_sdk_directory_sync() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let report = run_node_test("directory_sync.test.mjs", server.peer_env()).await?;
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
async fn python_sdk_directory_sync() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let report = run_python_test("test_directory_sync.py", server.peer_env()).await?;
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
