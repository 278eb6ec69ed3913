//! Webhook deliveries per second to a local receiver on loopback.
//!
//! `cargo bench -p idbridge-forward --bench deliver` — appends N events to a real (durable) SQLite
//! store, registers endpoints whose cursors start before them, and times until the receiver has
//! acknowledged every event. Each delivery is a signed POST plus a durable cursor commit, so the
//! figure is what an outage backlog drains at. Printed for one endpoint (strictly in order, one
//! request at a time) and for several endpoints draining in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use idbridge_forward::{spawn, DeliveryConfig, DeliveryStates};
use idbridge_sso::webhooks::{NewWebhookEndpoint, WebhookEndpoints};
use idbridge_store::{ChangeSet, NewEvent, SqliteStore, Store};

const EVENTS: u64 = 3_000;

fn append_events(store: &dyn Store, n: u64) {
    // Batches of 100 per commit: the bench measures delivery, not appends.
    for chunk in 0..n.div_ceil(100) {
        let mut cs = ChangeSet::new();
        for _ in 0..100.min(n - chunk * 100) {
            let id = idbridge_model::new_id(idbridge_model::IdPrefix::Event);
            let body = serde_json::to_vec(&serde_json::json!({
                "object": "event", "id": id, "event": "dsync.user.created",
                "data": {"id": "directory_user_01", "email": "a@example.com", "state": "active"},
                "created_at": "2026-01-01T00:00:00.000Z"
            }))
            .expect("json");
            cs.event(NewEvent {
                id,
                kind: "dsync.user.created".into(),
                organization_id: None,
                created_at_ms: chrono::Utc::now().timestamp_millis(),
                body,
            });
        }
        store.commit(cs).expect("append");
    }
}

fn run(endpoints: u64) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("open store"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        let app = Router::new().route(
            "/hook",
            post(move || {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::Relaxed);
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });

        let start_seq = store.last_event_seq().expect("seq");
        append_events(store.as_ref(), EVENTS);
        for i in 0..endpoints {
            // Endpoint URLs are unique: each gets its own query string.
            WebhookEndpoints::new(store.clone())
                .create(
                    NewWebhookEndpoint {
                        endpoint_url: format!("http://{addr}/hook?endpoint={i}"),
                        events: vec!["dsync.user.created".into()],
                    },
                    Box::new(move |ep, cs| DeliveryStates::stage_start(cs, &ep.id, start_seq)),
                )
                .await
                .expect("endpoint");
        }
        let config = DeliveryConfig {
            poll_interval_ms: 10,
            ..DeliveryConfig::default()
        };
        let started = Instant::now();
        let worker = spawn(store.clone(), config).expect("worker");
        let total = EVENTS * endpoints;
        while received.load(Ordering::Relaxed) < total {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "deliveries stalled"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        worker.abort();
        total as f64 / secs
    })
}

fn main() {
    println!(
        "webhook deliveries/s to a loopback receiver ({EVENTS} events per endpoint, durable cursors):"
    );
    for endpoints in [1, 4] {
        let rate = run(endpoints);
        println!("  {endpoints} endpoint(s): {rate:>8.0} deliveries/s in total");
    }
}
