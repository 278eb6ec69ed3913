//! The delivery worker against a real HTTP receiver on 127.0.0.1 and a real SQLite store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use idbridge_forward::{
    sign, spawn, DeliveryClient, DeliveryConfig, DeliveryError, DeliveryState, DeliveryStates,
};
use idbridge_model::Timestamp;
use idbridge_sso::webhooks::{
    EndpointStatus, NewWebhookEndpoint, WebhookEndpoint, WebhookEndpointChanges,
    WebhookEndpointTag, WebhookEndpoints,
};
use idbridge_store::{ChangeSet, NewEvent, SqliteStore, Store};

const SECRET: &str = "whsec_test_secret";

/// What the receiver saw: event ids in arrival order, and whether each signature verified.
#[derive(Default)]
struct Received {
    ids: Vec<String>,
    bad_signatures: u32,
    user_agents: Vec<String>,
}

#[derive(Clone)]
struct Receiver {
    received: Arc<Mutex<Received>>,
    /// While > 0, answer 503 and decrement.
    refuse: Arc<AtomicU32>,
    requests: Arc<AtomicU32>,
    /// The signing secret of the endpoint posting here (the owner generates one per endpoint).
    secret: Arc<Mutex<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Verifies like the Python SDK: split on ", ", strip "t=" / "v1=", recompute, compare.
fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(h) = headers
        .get("workos-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((t, v1)) = h.split_once(", ") else {
        return false;
    };
    let (Some(t), Some(v1)) = (t.strip_prefix("t="), v1.strip_prefix("v1=")) else {
        return false;
    };
    let Ok(t_ms) = t.parse::<i64>() else {
        return false;
    };
    let fresh = (chrono::Utc::now().timestamp_millis() - t_ms).abs() < 180_000;
    fresh && sign(secret, t_ms, body) == v1
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    r.requests.fetch_add(1, Ordering::SeqCst);
    let refusing = r
        .refuse
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if refusing {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let ct_ok = headers
        .get("content-type")
        .is_some_and(|v| v == "application/json");
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return StatusCode::BAD_REQUEST,
    };
    let secret = lock(&r.secret).clone();
    let mut rec = lock(&r.received);
    if !verify(&secret, &headers, &body) || !ct_ok {
        rec.bad_signatures += 1;
    }
    if let Some(ua) = headers.get("user-agent").and_then(|v| v.to_str().ok()) {
        rec.user_agents.push(ua.to_string());
    }
    if let Some(id) = value.get("id").and_then(|v| v.as_str()) {
        rec.ids.push(id.to_string());
    }
    StatusCode::OK
}

async fn redirect() -> impl IntoResponse {
    (StatusCode::FOUND, [("location", "/hook")])
}

async fn slow() -> impl IntoResponse {
    tokio::time::sleep(Duration::from_secs(3)).await;
    StatusCode::OK
}

/// Runs the receiver on its own thread and runtime so it outlives the worker's runtimes.
fn start_receiver() -> (SocketAddr, Receiver) {
    let r = Receiver {
        received: Arc::default(),
        refuse: Arc::new(AtomicU32::new(0)),
        requests: Arc::new(AtomicU32::new(0)),
        secret: Arc::new(Mutex::new(SECRET.to_string())),
    };
    let app = Router::new()
        .route("/hook", post(hook))
        .route("/redirect", post(redirect))
        .route("/slow", post(slow))
        .with_state(r.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            axum::serve(listener, app).await.expect("serve");
        });
    });
    (addr, r)
}

/// An endpoint as the delivery client sees it (not stored).
fn endpoint(id: &str, url: String, events: &[&str]) -> WebhookEndpoint {
    let now = Timestamp::now();
    WebhookEndpoint {
        object: WebhookEndpointTag,
        id: id.to_string(),
        endpoint_url: url,
        secret: SECRET.to_string(),
        status: EndpointStatus::Enabled,
        events: events.iter().map(|s| s.to_string()).collect(),
        created_at: now,
        updated_at: now,
    }
}

/// Creates an endpoint through its owner, its delivery cursor at `cursor` in the same commit
/// (as the API does), and tells the receiver its signing secret.
async fn create_endpoint(
    store: &Arc<dyn Store>,
    receiver: &Receiver,
    url: String,
    events: &[&str],
    cursor: u64,
) -> WebhookEndpoint {
    let ep = WebhookEndpoints::new(store.clone())
        .create(
            NewWebhookEndpoint {
                endpoint_url: url,
                events: events.iter().map(|s| s.to_string()).collect(),
            },
            Box::new(move |ep, cs| DeliveryStates::stage_start(cs, &ep.id, cursor)),
        )
        .await
        .expect("create endpoint");
    *lock(&receiver.secret) = ep.secret.clone();
    ep
}

async fn set_status(store: &Arc<dyn Store>, id: &str, status: EndpointStatus) {
    WebhookEndpoints::new(store.clone())
        .update(
            id,
            WebhookEndpointChanges {
                status: Some(status),
                ..WebhookEndpointChanges::default()
            },
        )
        .await
        .expect("update endpoint");
}

/// Appends one event per kind; returns their ids in log order.
fn append(store: &dyn Store, kinds: &[&str]) -> Vec<String> {
    let mut ids = Vec::new();
    for kind in kinds {
        let id = idbridge_model::new_id(idbridge_model::IdPrefix::Event);
        let body = serde_json::to_vec(&serde_json::json!({
            "object": "event", "id": id, "event": kind, "data": {"name": "Zoë / x"},
            "created_at": "2026-01-01T00:00:00.000Z"
        }))
        .expect("json");
        let mut cs = ChangeSet::new();
        cs.event(NewEvent {
            id: id.clone(),
            kind: kind.to_string(),
            organization_id: None,
            created_at_ms: chrono::Utc::now().timestamp_millis(),
            body,
        });
        store.commit(cs).expect("commit event");
        ids.push(id);
    }
    ids
}

fn fast_config() -> DeliveryConfig {
    DeliveryConfig {
        poll_interval_ms: 20,
        initial_backoff_ms: 20,
        max_backoff_ms: 100,
        connect_timeout_ms: 1_000,
        request_timeout_ms: 2_000,
        batch_size: 3,
        ..DeliveryConfig::default()
    }
}

fn state_of(store: &Arc<dyn Store>, id: &str) -> DeliveryState {
    DeliveryStates::new(store.clone())
        .get(id)
        .expect("get")
        .unwrap_or_default()
}

async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_in_order_signed_skipping_unsubscribed_and_retries_through_an_outage() {
    let (addr, receiver) = start_receiver();
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("open"));
    // Events before the endpoint existed are not delivered (cursor = end of log).
    append(store.as_ref(), &["organization.created"]);
    let start = store.last_event_seq().expect("seq");
    let ep = create_endpoint(
        &store,
        &receiver,
        format!("http://{addr}/hook"),
        &["organization.created", "organization.updated"],
        start,
    )
    .await;
    // The receiver refuses the first 4 attempts: the first event must be retried, not lost,
    // and the later ones must wait behind it.
    receiver.refuse.store(4, Ordering::SeqCst);
    let ids = append(
        store.as_ref(),
        &[
            "organization.created",
            "dsync.user.created",
            "organization.updated",
            "organization.deleted",
            "organization.updated",
        ],
    );
    let expected: Vec<String> = vec![ids[0].clone(), ids[2].clone(), ids[4].clone()];
    let worker = spawn(store.clone(), fast_config()).expect("spawn");
    wait_for("3 deliveries", Duration::from_secs(20), || {
        lock(&receiver.received).ids.len() >= 3
    })
    .await;
    // And the cursor is durably past the last event (skipped tail included).
    let last = store.last_event_seq().expect("seq");
    wait_for("cursor at the end", Duration::from_secs(10), || {
        state_of(&store, &ep.id).cursor == last
    })
    .await;
    worker.abort();
    let rec = lock(&receiver.received);
    assert_eq!(
        rec.ids, expected,
        "every subscribed event once, in log order"
    );
    assert_eq!(rec.bad_signatures, 0);
    assert!(rec
        .user_agents
        .iter()
        .all(|ua| ua.starts_with("idbridge-webhooks/")));
    assert!(
        receiver.requests.load(Ordering::SeqCst) >= 7,
        "4 refusals + 3 deliveries"
    );
    let state = state_of(&store, &ep.id);
    assert_eq!(state.consecutive_failures, 0);
    assert_eq!(state.delivered_total, 3);
    assert!(state.last_failure_at.is_some(), "the outage was recorded");
    assert!(state.last_success_at.is_some());
}

#[test]
fn cursor_survives_a_store_reopen() {
    let (addr, receiver) = start_receiver();
    let dir = tempfile::tempdir().expect("tempdir");
    let first_ids;
    let ep;
    {
        let rt = tokio::runtime::Runtime::new().expect("rt");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("open"));
        ep = rt.block_on(create_endpoint(
            &store,
            &receiver,
            format!("http://{addr}/hook"),
            &["user.created"],
            0,
        ));
        first_ids = append(store.as_ref(), &["user.created", "user.created"]);
        rt.block_on(async {
            let worker = spawn(store.clone(), fast_config()).expect("spawn");
            wait_for("2 deliveries", Duration::from_secs(20), || {
                lock(&receiver.received).ids.len() >= 2
            })
            .await;
            let last = store.last_event_seq().expect("seq");
            wait_for("cursor persisted", Duration::from_secs(10), || {
                state_of(&store, &ep.id).cursor == last
            })
            .await;
            worker.abort();
        });
        // Dropping the runtime drops every task and with them the store handles.
        rt.shutdown_timeout(Duration::from_secs(5));
    }
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("reopen"));
    assert_eq!(
        state_of(&store, &ep.id).cursor,
        2,
        "cursor read back after reopen"
    );
    let more = append(store.as_ref(), &["user.created"]);
    rt.block_on(async {
        let worker = spawn(store.clone(), fast_config()).expect("spawn");
        wait_for("3rd delivery", Duration::from_secs(20), || {
            lock(&receiver.received).ids.len() >= 3
        })
        .await;
        // Give a wrongly reset cursor the chance to redeliver before checking.
        tokio::time::sleep(Duration::from_millis(300)).await;
        worker.abort();
    });
    let rec = lock(&receiver.received);
    let mut expected = first_ids.clone();
    expected.extend(more);
    assert_eq!(
        rec.ids, expected,
        "the restart resumed at the cursor: nothing lost or repeated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_picked_up_disabled_and_deleted_at_runtime() {
    let (addr, receiver) = start_receiver();
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("open"));
    let worker = spawn(store.clone(), fast_config()).expect("spawn");
    // Created after the worker started.
    let ep = create_endpoint(
        &store,
        &receiver,
        format!("http://{addr}/hook"),
        &["user.created"],
        0,
    )
    .await;
    let first = append(store.as_ref(), &["user.created"]);
    wait_for("first delivery", Duration::from_secs(10), || {
        lock(&receiver.received).ids.len() == 1
    })
    .await;
    // Disabled: nothing is sent, the cursor stays.
    set_status(&store, &ep.id, EndpointStatus::Disabled).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let while_disabled = append(store.as_ref(), &["user.created"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        lock(&receiver.received).ids,
        first,
        "a disabled endpoint gets nothing"
    );
    // Re-enabled: resumes from its cursor.
    set_status(&store, &ep.id, EndpointStatus::Enabled).await;
    wait_for("backlog after re-enable", Duration::from_secs(10), || {
        lock(&receiver.received).ids.len() == 2
    })
    .await;
    assert_eq!(lock(&receiver.received).ids[1], while_disabled[0]);
    // Deleted: stops, and does not resurrect a delivery record.
    WebhookEndpoints::new(store.clone())
        .delete(
            &ep.id,
            Box::new(|ep, cs| {
                DeliveryStates::stage_remove(cs, &ep.id);
                Ok(())
            }),
        )
        .await
        .expect("delete");
    tokio::time::sleep(Duration::from_millis(200)).await;
    append(store.as_ref(), &["user.created"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.abort();
    assert_eq!(lock(&receiver.received).ids.len(), 2);
    assert!(DeliveryStates::new(store.clone())
        .get(&ep.id)
        .expect("get")
        .is_none());
}

#[tokio::test]
async fn redirects_are_refused() {
    let (addr, receiver) = start_receiver();
    let client = DeliveryClient::new(&fast_config()).expect("client");
    let ep = endpoint("we_d", format!("http://{addr}/redirect"), &["user.created"]);
    let result = client.deliver(&ep, br#"{"id":"event_x"}"#).await;
    assert!(
        matches!(result, Err(DeliveryError::Status { status: 302 })),
        "{result:?}"
    );
    assert_eq!(
        receiver.requests.load(Ordering::SeqCst),
        0,
        "the redirect target was not called"
    );
}

#[tokio::test]
async fn slow_receivers_time_out() {
    let (addr, _receiver) = start_receiver();
    let config = DeliveryConfig {
        request_timeout_ms: 300,
        ..fast_config()
    };
    let client = DeliveryClient::new(&config).expect("client");
    let ep = endpoint("we_e", format!("http://{addr}/slow"), &["user.created"]);
    let started = Instant::now();
    let result = client.deliver(&ep, b"{}").await;
    assert!(
        matches!(result, Err(DeliveryError::Timeout(_))),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn refused_connections_are_transport_errors() {
    // Bind then drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let client = DeliveryClient::new(&fast_config()).expect("client");
    let ep = endpoint(
        "we_f",
        format!("http://127.0.0.1:{port}/hook"),
        &["user.created"],
    );
    let result = client.deliver(&ep, b"{}").await;
    assert!(
        matches!(result, Err(DeliveryError::Transport(_))),
        "{result:?}"
    );
}
