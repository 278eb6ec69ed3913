//! Runtime settings through the real binary: `/admin/settings/{section}` changes a setting
//! while the server runs (the effect is visible at once), keeps it across a restart, and the
//! config file wins again for a key it changes. Bad PATCHes are 422s naming the key and
//! change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use idbridge_tests::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn write_config(path: &Path, max_body_bytes: usize) {
    std::fs::write(
        path,
        format!(
            r#"
[server]
max_body_bytes = {max_body_bytes}

[log]
format = "json"
level = "info"

[limits]
api_requests_per_second = 1000.0
api_burst = 1000
"#
        ),
    )
    .unwrap();
}

async fn patch(
    server: &TestServer,
    path: &str,
    body: Value,
) -> anyhow::Result<(StatusCode, Value)> {
    let resp = server
        .request(Method::PATCH, path)
        .json(&body)
        .send()
        .await?;
    let status = resp.status();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

async fn section(server: &TestServer, name: &str) -> anyhow::Result<Value> {
    let resp = server
        .get(&format!("/admin/settings/{name}"))
        .send()
        .await?;
    anyhow::ensure!(
        resp.status() == StatusCode::OK,
        "GET {name}: {}",
        resp.status()
    );
    Ok(resp.json().await?)
}

/// POSTs a body of `size` bytes: 413 over the limit, 422 (the padding is an unknown field)
/// under it.
async fn post_sized(server: &TestServer, size: usize) -> anyhow::Result<StatusCode> {
    let padding = "x".repeat(size.saturating_sub(40));
    let body = json!({"domain": "big.example.com", "padding": padding}).to_string();
    Ok(server
        .post("/organization_domains")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?
        .status())
}

fn error_fields(body: &Value) -> Vec<(String, String)> {
    body["errors"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap_or_default().to_string(),
                e["code"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// DEBUG lines, in JSON (`"level":"DEBUG"`) or text (` DEBUG `) format.
fn debug_lines(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.contains("\"level\":\"DEBUG\"") || l.contains(" DEBUG "))
        .count()
}

#[tokio::test]
async fn settings_change_live_survive_a_restart_and_yield_to_a_changed_file() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("idbridge.toml");
    write_config(&config, 65_536);
    let mut server = TestServer::builder().config_file(&config).start().await?;

    // Every section, with each value's source.
    let all: Value = server.get("/admin/settings").send().await?.json().await?;
    let sections = all["sections"].as_object().cloned().unwrap_or_default();
    for name in [
        "server", "log", "limits", "events", "webhooks", "sso", "dns", "idp",
    ] {
        assert!(sections.contains_key(name), "{name} missing: {all}");
    }
    let s = section(&server, "server").await?;
    assert_eq!(s["values"]["max_body_bytes"], 65_536);
    assert_eq!(s["sources"]["max_body_bytes"], "file");
    assert_eq!(s["sources"]["request_timeout_secs"], "default");
    assert_eq!(
        post_sized(&server, 20_000).await?,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // Bad PATCHes: each problem named, and nothing changes (the valid key in the same body
    // included).
    let (status, body) = patch(
        &server,
        "/admin/settings/server",
        json!({"max_body_bytes": 16_384, "max_body_byts": 1, "data_dir": "/tmp/elsewhere", "request_timeout_secs": 0}),
    )
    .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fields = error_fields(&body);
    for expected in [
        ("max_body_byts", "unknown_field"),
        ("data_dir", "file_only"),
        ("request_timeout_secs", "out_of_range"),
    ] {
        assert!(
            fields.contains(&(expected.0.to_string(), expected.1.to_string())),
            "{expected:?} not in {body}"
        );
    }
    assert!(body.to_string().contains("from 1 to 3600"), "{body}");
    let (status, body) = patch(
        &server,
        "/admin/settings/server",
        json!({"max_body_bytes": "big"}),
    )
    .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_fields(&body)[0].0, "max_body_bytes");
    let (status, _) = patch(&server, "/admin/settings/nosuch", json!({})).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        section(&server, "server").await?["values"]["max_body_bytes"],
        65_536
    );
    assert_eq!(
        post_sized(&server, 20_000).await?,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // max_body_bytes: 413 at the new limit at once.
    let (status, body) = patch(
        &server,
        "/admin/settings/server",
        json!({"max_body_bytes": 16_384}),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["values"]["max_body_bytes"], 16_384);
    assert_eq!(body["sources"]["max_body_bytes"], "runtime");
    assert_eq!(
        post_sized(&server, 20_000).await?,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        post_sized(&server, 10_000).await?,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // Log level: debug lines appear only after the change.
    assert_eq!(debug_lines(&server.stderr()), 0);
    let (status, body) = patch(
        &server,
        "/admin/settings/log",
        json!({"level": "not a=filter=x"}),
    )
    .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_fields(&body)[0].0, "level");
    // The output format switches at once: the lines after the change are text.
    let before_switch = server.stderr().len();
    let (status, body) = patch(&server, "/admin/settings/log", json!({"format": "text"})).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["values"]["format"], "text", "{body}");
    server.get("/organizations").send().await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_switch = server.stderr()[before_switch..].to_string();
    let text_lines: Vec<&str> = after_switch
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(
        !text_lines.is_empty() && text_lines.iter().all(|l| !l.trim_start().starts_with('{')),
        "expected text lines after the switch: {after_switch}"
    );
    // A key read only at start: stored, pending until the next start; the running server
    // keeps its value.
    let (status, body) = patch(
        &server,
        "/admin/settings/server",
        json!({"keep_alive_idle_secs": 7}),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_ne!(body["values"]["keep_alive_idle_secs"], 7, "{body}");
    assert_eq!(body["pending_restart"]["keep_alive_idle_secs"], 7, "{body}");
    assert_ne!(body["sources"]["keep_alive_idle_secs"], "runtime", "{body}");
    let (status, body) = patch(&server, "/admin/settings/log", json!({"format": "yaml"})).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_fields(&body)[0].0, "format");
    let (status, body) = patch(&server, "/admin/settings/log", json!({"level": "debug"})).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.get("/organizations").send().await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        debug_lines(&server.stderr()) > 0,
        "no debug line after level=debug"
    );

    // Limits: 429 under the new API rate at once; back up after.
    let (status, body) = patch(
        &server,
        "/admin/settings/limits",
        json!({"api_requests_per_second": 0.5, "api_burst": 2}),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(server.get("/organizations").send().await?.status());
    }
    assert!(codes.contains(&StatusCode::TOO_MANY_REQUESTS), "{codes:?}");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (status, body) = patch(
        &server,
        "/admin/settings/limits",
        json!({"api_requests_per_second": 1000.0, "api_burst": 1000}),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A bucket keeps its (near-empty) tokens under a new limit and refills at the new rate:
    // give it the second it needs to hold the full burst again, or the quick requests below
    // could still find it empty.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // The old paths of the dns and idp sections write through the same settings.
    let resp = server
        .put("/admin/dns")
        .json(&json!({"timeout_ms": 1234}))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = server
        .request(Method::PATCH, "/admin/idp/settings")
        .json(&json!({"account_max_failures": 7}))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let dns = section(&server, "dns").await?;
    assert_eq!(dns["values"]["timeout_ms"], 1234);
    assert_eq!(dns["sources"]["timeout_ms"], "runtime");
    assert_eq!(
        section(&server, "idp").await?["values"]["account_max_failures"],
        7
    );
    // SSO: a bad redirect pattern is named; a good one is in force.
    let (status, body) = patch(
        &server,
        "/admin/settings/sso",
        json!({"redirect_uris": ["https://*.com/cb"]}),
    )
    .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_fields(&body)[0].0, "redirect_uris[0]");
    let (status, body) = patch(
        &server,
        "/admin/settings/sso",
        json!({"redirect_uris": ["https://app.example.com/cb"], "code_ttl_secs": 120}),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Restart: every runtime value is kept, and in force (the log format: text lines from the
    // first; the pending key now in force).
    server.restart().await?;
    let log = section(&server, "log").await?;
    assert_eq!(log["values"]["format"], "text", "{log}");
    assert_eq!(log["sources"]["format"], "runtime", "{log}");
    let stderr = server.stderr();
    let since_restart = stderr
        .rsplit("----- harness: starting")
        .next()
        .unwrap_or_default();
    let lines: Vec<&str> = since_restart
        .lines()
        .skip(1)
        .filter(|l| l.contains("/readyz"))
        .collect();
    assert!(
        !lines.is_empty() && lines.iter().all(|l| !l.trim_start().starts_with('{')),
        "expected text log lines after the restart: {since_restart}"
    );
    let s = section(&server, "server").await?;
    assert_eq!(s["values"]["keep_alive_idle_secs"], 7, "{s}");
    assert_eq!(s["sources"]["keep_alive_idle_secs"], "runtime", "{s}");
    assert_eq!(s["pending_restart"], json!({}), "{s}");
    let s = section(&server, "server").await?;
    assert_eq!(s["values"]["max_body_bytes"], 16_384);
    assert_eq!(s["sources"]["max_body_bytes"], "runtime");
    assert_eq!(
        post_sized(&server, 20_000).await?,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(section(&server, "log").await?["values"]["level"], "debug");
    assert_eq!(section(&server, "dns").await?["values"]["timeout_ms"], 1234);
    let dns: Value = server.get("/admin/dns").send().await?.json().await?;
    assert_eq!(dns["timeout_ms"], 1234);
    let idp: Value = server
        .get("/admin/idp/settings")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(idp["account_max_failures"], 7);
    let sso = section(&server, "sso").await?;
    assert_eq!(sso["values"]["code_ttl_secs"], 120);
    assert_eq!(
        sso["values"]["redirect_uris"],
        json!(["https://app.example.com/cb"])
    );

    // The file changes max_body_bytes: the file wins for that key; the rest stays runtime.
    write_config(&config, 32_768);
    server.restart().await?;
    let s = section(&server, "server").await?;
    assert_eq!(s["values"]["max_body_bytes"], 32_768);
    assert_eq!(s["sources"]["max_body_bytes"], "file");
    assert_eq!(
        post_sized(&server, 20_000).await?,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        post_sized(&server, 40_000).await?,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(section(&server, "dns").await?["values"]["timeout_ms"], 1234);
    Ok(())
}
