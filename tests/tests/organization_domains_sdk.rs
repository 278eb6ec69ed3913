//! Organization domains with DNS verification, driven through the official WorkOS SDKs (Node
//! 11, Python 10) against a real `idbridge serve`. Each SDK test starts its own dnsmasq on a
//! free loopback port (Debian's dnsmasq-base, installed by scripts/test-deps.d/dns.sh) and
//! points the server at it through `PUT /admin/dns`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use idbridge_tests::{run_node_test, run_python_test, TestServer};

/// At least this many tests must pass in each file (a file that silently lost its tests fails).
const NODE_TESTS: u32 = 11;
const PYTHON_TESTS: u32 = 1;

#[tokio::test]
async fn node_sdk_organization_domains() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let report = run_node_test("organization_domains.test.mjs", server.peer_env()).await?;
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
async fn python_sdk_organization_domains() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let report = run_python_test("test_organization_domains.py", server.peer_env()).await?;
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

/// `[dns] resolver` in the config file and `IDBRIDGE_DNS_RESOLVER` both reach `/admin/dns`; a
/// bad PUT changes nothing.
#[tokio::test]
async fn dns_resolver_from_config_and_environment() -> anyhow::Result<()> {
    let server = TestServer::builder()
        .config_toml("[dns]\nresolver = \"127.0.0.1:5399\"\ntimeout_ms = 700\n")
        .start()
        .await?;
    let got: serde_json::Value = server.get("/admin/dns").send().await?.json().await?;
    assert_eq!(got["resolver"], "127.0.0.1:5399");
    assert_eq!(got["timeout_ms"], 700);
    let server = TestServer::builder()
        .env("IDBRIDGE_DNS_RESOLVER", "127.0.0.1:5398")
        .start()
        .await?;
    let got: serde_json::Value = server.get("/admin/dns").send().await?.json().await?;
    assert_eq!(got["resolver"], "127.0.0.1:5398");
    // A bad PUT is a 422 naming each field, and changes nothing.
    let bad = server
        .put("/admin/dns")
        .json(&serde_json::json!({"resolver": "nowhere", "timeout_ms": 0, "colour": "red"}))
        .send()
        .await?;
    assert_eq!(bad.status(), 422);
    let body: serde_json::Value = bad.json().await?;
    let mut fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    fields.sort();
    assert_eq!(fields, ["colour", "resolver", "timeout_ms"]);
    let got: serde_json::Value = server.get("/admin/dns").send().await?.json().await?;
    assert_eq!(got["resolver"], "127.0.0.1:5398");
    Ok(())
}
