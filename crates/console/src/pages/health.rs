//! Health: version, the store's answer and counters, the event log's position.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use maud::html;

use super::page;
use crate::{blocking, Console, Operator};

pub(crate) async fn page_handler(c: Arc<Console>, op: Operator) -> Response {
    let store = c.store.clone();
    let started = std::time::Instant::now();
    let probe = blocking(move || {
        let last = store.last_event_seq()?;
        Ok((last, store.stats()))
    })
    .await;
    let took = started.elapsed();
    page(
        &c,
        &op,
        "/console/health",
        "Health",
        html! {
            dl class="facts" {
                dt { "Version" } dd { "idbridge " (env!("CARGO_PKG_VERSION")) }
                dt { "Public URL" } dd { (c.settings.public_url) }
                @match &probe {
                    Ok((last, stats)) => {
                        dt { "Store" } dd { "answering (" (took.as_millis()) " ms)" }
                        dt { "Events appended" } dd { (last) }
                        dt { "Commits" } dd { (stats.commits) " (" (stats.conflicts) " refused by a condition)" }
                        dt { "Durable writes" } dd { (stats.durable_writes) }
                        dt { "Group-commit rounds" } dd { (stats.sync_groups) }
                    }
                    Err(e) => {
                        dt { "Store" } dd class="error" { "not answering: " (e.to_string()) }
                    }
                }
            }
            p { "Readiness for load balancers: " code { "/readyz" } "; metrics: " code { "/metrics" } "." }
        },
    )
}

pub(crate) async fn show(
    State(c): State<Arc<Console>>,
    Extension(op): Extension<Operator>,
) -> Response {
    page_handler(c, op).await
}
