//! Webhooks end to end against the real `idbridge serve`: the WorkOS SDKs verify every
//! delivery (Node `workos.webhooks.constructEvent`, Python `webhooks.verify_event`), and an
//! outage with SIGKILLs of the server loses nothing.
//!
//! Needs the server to run the delivery worker (`idbridge_forward::spawn`), with the
//! `IDBRIDGE_WEBHOOKS_*` environment overrides applied (`DeliveryConfig::apply_env`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use idbridge_tests::{repo_root, run_node_test, run_python_test, TestServer};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const NODE_TESTS: u32 = 7;
const PYTHON_TESTS: u32 = 1;
const ORG_EVENTS: [&str; 3] = [
    "organization.created",
    "organization.updated",
    "organization.deleted",
];

/// Fast retries so the outage test recovers in seconds, not minutes.
async fn start_server() -> anyhow::Result<TestServer> {
    Ok(TestServer::builder()
        .env("IDBRIDGE_WEBHOOKS_POLL_INTERVAL_MS", "50")
        .env("IDBRIDGE_WEBHOOKS_INITIAL_BACKOFF_MS", "100")
        .env("IDBRIDGE_WEBHOOKS_MAX_BACKOFF_MS", "800")
        .start()
        .await?)
}

/// Fails fast, naming the cause, when the server does not run the delivery worker: a
/// throwaway endpoint must show up in the worker's lag gauge on `/metrics`. (A server without a
/// metrics exposition cannot be asked; the tests' own waits then time out instead.)
async fn require_delivery_worker(server: &TestServer) -> anyhow::Result<()> {
    let metrics = server.get("/metrics").send().await?;
    if metrics.status() == 404 {
        return Ok(());
    }
    let created: Value = server
        .post("/webhook_endpoints")
        .json(&json!({"endpoint_url": "http://127.0.0.1:9/preflight", "events": ["organization.created"]}))
        .send()
        .await?
        .json()
        .await?;
    let id = created["id"]
        .as_str()
        .context("preflight endpoint id")?
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut running = false;
    while Instant::now() < deadline && !running {
        let text = server.get("/metrics").send().await?.text().await?;
        running = text
            .lines()
            .any(|l| l.starts_with("idbridge_webhook_lag_events") && l.contains(&id));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server
        .delete(&format!("/webhook_endpoints/{id}"))
        .send()
        .await?;
    ensure!(
        running,
        "idbridge serve does not run the webhook delivery worker: \
         idbridge_forward::spawn is not wired in crates/server/src/serve.rs"
    );
    Ok(())
}

#[tokio::test]
async fn node_sdk_webhooks_events_idempotency() -> anyhow::Result<()> {
    let server = start_server().await?;
    require_delivery_worker(&server).await?;
    let report = run_node_test("webhooks.test.mjs", server.peer_env()).await?;
    if report.ran() {
        ensure!(
            report.passed >= NODE_TESTS,
            "expected {NODE_TESTS} node tests to pass, {} did:\n{}",
            report.passed,
            report.output
        );
    }
    Ok(())
}

#[tokio::test]
async fn python_sdk_verifies_deliveries() -> anyhow::Result<()> {
    let server = start_server().await?;
    require_delivery_worker(&server).await?;
    let report = run_python_test("test_webhooks.py", server.peer_env()).await?;
    if report.ran() {
        ensure!(
            report.passed >= PYTHON_TESTS,
            "expected {PYTHON_TESTS} python tests to pass, {} did:\n{}",
            report.passed,
            report.output
        );
    }
    Ok(())
}

/// The Node receiver as a separate process (it must outlive server restarts).
struct NodeReceiver {
    _child: Child,
    control: String,
    hook: String,
    http: reqwest::Client,
}

impl NodeReceiver {
    async fn start() -> anyhow::Result<NodeReceiver> {
        let js = repo_root().join("tests").join("js");
        let node = std::env::var_os("IDBRIDGE_NODE").unwrap_or_else(|| "node".into());
        let mut child = Command::new(node)
            .arg("webhooks_receiver.mjs")
            .current_dir(&js)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting node tests/js/webhooks_receiver.mjs (run scripts/test-deps.sh)")?;
        let stdout = child.stdout.take().context("receiver stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("receiver did not start in 30 s")??
            .context("receiver exited before listening")?;
        let port: u16 = line
            .strip_prefix("LISTENING ")
            .and_then(|p| p.trim().parse().ok())
            .with_context(|| format!("unexpected receiver output {line:?}"))?;
        let http = reqwest::Client::builder().no_proxy().build()?;
        Ok(NodeReceiver {
            _child: child,
            control: format!("http://127.0.0.1:{port}"),
            hook: format!("http://127.0.0.1:{port}/hook"),
            http,
        })
    }

    async fn control(&self, cmd: Value) -> anyhow::Result<()> {
        let r = self
            .http
            .post(format!("{}/control", self.control))
            .json(&cmd)
            .send()
            .await?;
        ensure!(r.status().is_success(), "control {cmd}: {}", r.status());
        Ok(())
    }

    async fn deliveries(&self) -> anyhow::Result<(Vec<Value>, u64)> {
        let v: Value = self
            .http
            .get(format!("{}/deliveries", self.control))
            .send()
            .await?
            .json()
            .await?;
        let list = v["deliveries"].as_array().cloned().unwrap_or_default();
        Ok((list, v["refused"].as_u64().unwrap_or(0)))
    }
}

async fn create_orgs(server: &TestServer, prefix: &str, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        let r = server
            .post("/organizations")
            .json(&json!({"name": format!("{prefix} {i}")}))
            .send()
            .await?;
        ensure!(r.status() == 201, "create org: {}", r.status());
    }
    Ok(())
}

async fn delivery_state(server: &TestServer, id: &str) -> anyhow::Result<Value> {
    let r = server
        .get(&format!("/admin/webhook_endpoints/{id}/delivery"))
        .send()
        .await?;
    ensure!(r.status() == 200, "delivery state: {}", r.status());
    Ok(r.json().await?)
}

async fn created_event_ids(server: &TestServer) -> anyhow::Result<Vec<String>> {
    let v: Value = server
        .get("/events?events=organization.created&limit=100")
        .send()
        .await?
        .json()
        .await?;
    Ok(v["data"]
        .as_array()
        .context("events data")?
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .collect())
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn outage_and_sigkill_lose_nothing() -> anyhow::Result<()> {
    let mut server = start_server().await?;
    require_delivery_worker(&server).await?;
    let receiver = NodeReceiver::start().await?;
    let created: Value = server
        .post("/webhook_endpoints")
        .json(&json!({"endpoint_url": receiver.hook, "events": ORG_EVENTS}))
        .send()
        .await?
        .json()
        .await?;
    let endpoint_id = created["id"].as_str().context("endpoint id")?.to_string();
    let secret = created["secret"].as_str().context("secret")?.to_string();
    receiver
        .control(json!({"secret": secret, "refuse": true}))
        .await?;

    // Events during the outage; the worker keeps failing and backing off.
    create_orgs(&server, "outage-a", 5).await?;
    {
        let (srv, id) = (&server, endpoint_id.as_str());
        wait_until("failed attempts", Duration::from_secs(30), || async move {
            Ok(delivery_state(srv, id).await?["consecutive_failures"].as_u64() >= Some(2))
        })
        .await?;
    }

    // SIGKILL mid-outage, restart, more events, still refusing.
    server.kill9()?;
    server.restart().await?;
    create_orgs(&server, "outage-b", 5).await?;
    let rx = &receiver;
    wait_until(
        "retries after the restart",
        Duration::from_secs(30),
        || async move { Ok(rx.deliveries().await?.1 >= 4) },
    )
    .await?;
    ensure!(
        receiver.deliveries().await?.0.is_empty(),
        "nothing was accepted yet"
    );

    // Recovery; SIGKILL again while the backlog drains.
    receiver.control(json!({"refuse": false})).await?;
    wait_until("first deliveries", Duration::from_secs(30), || async move {
        Ok(!rx.deliveries().await?.0.is_empty())
    })
    .await?;
    server.kill9()?;
    server.restart().await?;

    let expected = created_event_ids(&server).await?;
    ensure!(
        expected.len() == 10,
        "10 organization.created events, got {}",
        expected.len()
    );
    let exp = &expected;
    wait_until(
        "every event delivered",
        Duration::from_secs(60),
        || async move {
            let (got, _) = rx.deliveries().await?;
            Ok(exp
                .iter()
                .all(|id| got.iter().any(|d| d["id"].as_str() == Some(id))))
        },
    )
    .await?;

    let (got, refused) = receiver.deliveries().await?;
    ensure!(refused >= 4, "the receiver refused {refused} times");
    for d in &got {
        ensure!(
            d["verified"] == json!(true),
            "constructEvent rejected a delivery: {} {}",
            d["error"],
            d["body"]
        );
    }
    // Log order per endpoint: positions never go back (a crash may repeat, never reorder).
    let all_events: Value = server.get("/events?limit=100").send().await?.json().await?;
    let log: Vec<&str> = all_events["data"]
        .as_array()
        .context("events")?
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    let positions: Vec<usize> = got
        .iter()
        .filter_map(|d| d["id"].as_str())
        .map(|id| {
            log.iter()
                .position(|l| *l == id)
                .context("delivered id not in the log")
        })
        .collect::<anyhow::Result<_>>()?;
    ensure!(
        positions.windows(2).all(|w| w[0] <= w[1]),
        "deliveries out of log order: {positions:?}"
    );
    let state = delivery_state(&server, &endpoint_id).await?;
    ensure!(state["lag"] == json!(0), "lag after recovery: {state}");

    // The Python SDK verifies the same captured deliveries.
    let capture = tempfile::NamedTempFile::new()?;
    let captured: Vec<Value> = got
        .iter()
        .map(|d| json!({"body": d["body"], "sigHeader": d["sigHeader"]}))
        .collect();
    std::fs::write(capture.path(), serde_json::to_vec(&captured)?)?;
    let mut env = server.peer_env();
    env.push((
        "IDBRIDGE_WEBHOOK_CAPTURE".into(),
        capture.path().display().to_string(),
    ));
    env.push(("IDBRIDGE_WEBHOOK_SECRET".into(), secret));
    let report = run_python_test("test_webhooks.py", env).await?;
    if report.ran() {
        ensure!(
            report.passed >= 2,
            "the captured deliveries did not verify with the Python SDK:\n{}",
            report.output
        );
    }
    Ok(())
}
