//! `dsync.activated` / `dsync.deactivated` around a SCIM directory's link state, read through
//! the official Node SDK against a real `idbridge serve`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use idbridge_tests::{run_node_test, TestServer};

#[tokio::test]
async fn node_sdk_directory_activation_events() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let report = run_node_test("dsync_state.test.mjs", server.peer_env()).await?;
    if report.ran() {
        assert!(
            report.passed >= 1 && report.failed == 0,
            "expected the node test to pass:\n{}",
            report.output
        );
    }
    Ok(())
}
