//! The events feed, newest first, in keyset pages by sequence number.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use axum::Extension;
use maud::html;
use serde::Deserialize;

use super::{page, store_error, PAGE_SIZE};
use crate::{blocking, Console, Operator};

const PATH: &str = "/console/events";

#[derive(Debug, Default, Deserialize)]
pub(crate) struct EventsQuery {
    /// Show events with a sequence number below this one (older).
    before: Option<u64>,
}

pub(crate) async fn list(
    State(c): State<Arc<Console>>,
    Extension(op): Extension<Operator>,
    Query(q): Query<EventsQuery>,
) -> Response {
    let store = c.store.clone();
    let read = blocking(move || {
        let last = store.last_event_seq()?;
        let end = q.before.map_or(last, |b| b.saturating_sub(1).min(last));
        let start = end.saturating_sub(PAGE_SIZE as u64);
        let mut events: Vec<_> = store
            .events_after(start, PAGE_SIZE)?
            .into_iter()
            .filter(|e| e.seq <= end)
            .collect();
        events.reverse();
        Ok((events, last))
    })
    .await;
    let (events, last) = match read {
        Ok(r) => r,
        Err(e) => return store_error(&e),
    };
    let oldest = events.last().map(|e| e.seq);
    page(
        &c,
        &op,
        PATH,
        "Events",
        html! {
            p { (last) " events appended so far (older ones may have been compacted away by retention)." }
            div class="table-wrap" {
                table {
                    caption { "Events, newest first" }
                    thead { tr { th scope="col" { "#" } th scope="col" { "Type" } th scope="col" { "Organization" } th scope="col" { "Time" } th scope="col" { "Id" } } }
                    tbody {
                        @for e in &events {
                            tr {
                                td { (e.seq) }
                                td { (e.kind) }
                                td { (e.organization_id.as_deref().unwrap_or("—")) }
                                td { (chrono::DateTime::from_timestamp_millis(e.created_at_ms).map_or(String::new(), |t| t.to_rfc3339())) }
                                td { code { (e.id) } }
                            }
                        }
                        @if events.is_empty() { tr { td colspan="5" { "No event." } } }
                    }
                }
            }
            nav class="pager" aria-label="Pages" {
                @if q.before.is_some() { a href=(c.url(PATH)) { "← Newest" } }
                @if let Some(o) = oldest.filter(|o| *o > 1) {
                    a href=(format!("{}?before={o}", c.url(PATH))) rel="next" { "Older →" }
                }
            }
        },
    )
}
