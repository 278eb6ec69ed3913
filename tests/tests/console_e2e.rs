//! The operator console and the Admin Portal against a real `idbridge serve`: headless
//! Chromium (tests/js/console_browser.test.mjs, playwright-core on Debian's chromium) signs in
//! with the first-start operator credential, creates an organization and a SAML connection
//! from a samlify IdP's metadata, and completes an Admin Portal SSO setup from a link made
//! by the Node SDK; the Python SDK's `admin_portal.generate_link` (tests/py/test_portal.py)
//! makes links the server honours once. Screenshots of every page at desktop and phone
//! widths are kept in target/console-screenshots/.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::{ensure, Context};
use idbridge_tests::{run_node_test, run_python_test, TestServer};

#[tokio::test]
async fn console_and_portal_in_chromium() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (user, password) = server
        .console_credentials()
        .context("the first start prints IDBRIDGE_CONSOLE_USER= / IDBRIDGE_CONSOLE_PASSWORD=")?;
    ensure!(
        user == "admin" && password.len() >= 12,
        "first-start operator: {user}"
    );
    let artifacts = idbridge_tests::repo_root()
        .join("target")
        .join("console-screenshots");
    let mut env = server.peer_env();
    env.extend([
        ("IDBRIDGE_CONSOLE_USER".to_owned(), user),
        ("IDBRIDGE_CONSOLE_PASSWORD".to_owned(), password),
        (
            "IDBRIDGE_ARTIFACTS".to_owned(),
            artifacts.display().to_string(),
        ),
    ]);
    let report = run_node_test("console_browser.test.mjs", env).await?;
    eprintln!("{}", report.output);
    if report.ran() && std::path::Path::new("/usr/bin/chromium").exists() {
        ensure!(
            report.passed >= 3 && report.failed == 0,
            "chromium: {} passed, {} failed:\n{}",
            report.passed,
            report.failed,
            report.output
        );
        for shot in [
            "console-organizations-desktop",
            "console-connection-phone",
            "portal-connection-phone",
            "console-test-sign-in-desktop",
            "console-test-sign-in-phone",
        ] {
            ensure!(
                artifacts.join(format!("{shot}.png")).is_file(),
                "{shot}.png missing"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn python_sdk_admin_portal() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let report = run_python_test("test_portal.py", server.peer_env()).await?;
    if report.ran() {
        ensure!(
            report.passed >= 3 && report.failed == 0,
            "python: {} passed, {} failed:\n{}",
            report.passed,
            report.failed,
            report.output
        );
    }
    Ok(())
}
