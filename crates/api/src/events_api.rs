//! `GET /events`: HTTP for the event feed that [`idbridge_sso::events`] reads (workos-api.md
//! §4.1). This module parses the query, maps errors and renders the page; the walk, its
//! filters and its paging rules live in the domain crate.
//!
//! The stored event bodies are the canonical compact JSON (the same bytes webhooks sign), so
//! the page is assembled from them verbatim instead of being re-serialized.
//!
//! HTTP choices where WorkOS is silent:
//! - only `order=asc` (the default) is served; the feed is a cursor walk, not a sorted list;
//! - an unknown or compacted `after` cursor is a 400 with code `invalid_cursor`;
//! - `organization_id` must look like an organization id (400 otherwise, as WorkOS does for an
//!   unknown organization); events of a deleted organization stay listable;
//! - `list_metadata.after` is the page's next cursor, or null once caught up.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use idbridge_model::{parse_id, IdPrefix, Timestamp};
use idbridge_sso::events::{read_page, EventsError, EventsPage, EventsQuery};

use crate::body::Query;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::pagination::{DEFAULT_LIMIT, MAX_LIMIT};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/events", get(list))
}

/// At most this many event types in one filter.
const MAX_EVENT_TYPES: usize = 100;

/// ISO-8601 UTC with a `Z` suffix only: the Python SDK documents that offsets are rejected,
/// and accepting them would make the same query mean different instants to different tools.
fn parse_utc(raw: &str) -> Option<i64> {
    if !raw.ends_with('Z') {
        return None;
    }
    Timestamp::parse(raw).map(Timestamp::as_millis)
}

/// The `/events` query string as a feed query (422 naming each bad field).
fn parse_query(q: &Query) -> ApiResult<EventsQuery> {
    let mut errors = Vec::new();
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                errors.push(FieldError::new("limit", "limit_must_be_between_1_and_100"));
                DEFAULT_LIMIT
            }
        },
    };
    match q.get("order") {
        None | Some("asc") => {}
        Some(_) => errors.push(FieldError::new("order", "order_must_be_asc")),
    }
    let mut time = |field: &str| -> Option<i64> {
        let raw = q.get(field)?;
        let parsed = parse_utc(raw);
        if parsed.is_none() {
            errors.push(FieldError::new(field, "must_be_iso8601_utc_with_z"));
        }
        parsed
    };
    let range_start_ms = time("range_start");
    let range_end_ms = time("range_end");
    if let (Some(s), Some(e)) = (range_start_ms, range_end_ms) {
        if s > e {
            errors.push(FieldError::new("range_end", "range_end_before_range_start"));
        }
    }
    let after = q.get("after").map(str::to_string);
    if let Some(a) = &after {
        if parse_id(IdPrefix::Event, a).is_err() {
            errors.push(FieldError::new("after", "invalid_cursor"));
        }
        if q.get("range_start").is_some() {
            errors.push(FieldError::new(
                "range_start",
                "range_start_and_after_are_exclusive",
            ));
        }
    }
    let events = q.get_list("events");
    if events.len() > MAX_EVENT_TYPES {
        errors.push(FieldError::new("events", "too_many_event_types"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let organization_id = q.get("organization_id").map(str::to_string);
    if let Some(org) = &organization_id {
        if parse_id(IdPrefix::Organization, org).is_err() {
            return Err(ApiError::BadRequest {
                code: "organization_not_found",
                message: format!("Organization not found: '{org}'."),
            });
        }
    }
    Ok(EventsQuery {
        events,
        organization_id,
        range_start_ms,
        range_end_ms,
        after,
        limit,
    })
}

/// `{"object":"list","data":[…],"list_metadata":{"after":…}}` with each event's stored bytes.
pub fn render_page(page: &EventsPage) -> ApiResult<Vec<u8>> {
    let mut body =
        Vec::with_capacity(64 + page.events.iter().map(|e| e.body.len() + 1).sum::<usize>());
    body.extend_from_slice(br#"{"object":"list","data":["#);
    for (i, e) in page.events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&e.body);
    }
    body.extend_from_slice(br#"],"list_metadata":{"after":"#);
    let after = serde_json::to_vec(&page.after).map_err(ApiError::internal)?;
    body.extend_from_slice(&after);
    body.extend_from_slice(b"}}");
    Ok(body)
}

async fn list(State(state): State<AppState>, q: Query) -> ApiResult<Response> {
    let query = parse_query(&q)?;
    let store = state.store.clone();
    // A filtered walk can read many entries: keep it off the async workers.
    let page = tokio::task::spawn_blocking(move || read_page(store.as_ref(), &query))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match e {
            EventsError::UnknownCursor(_) => ApiError::BadRequest {
                code: "invalid_cursor",
                message: e.to_string(),
            },
            EventsError::Store(e) => e.into(),
        })?;
    let body = render_page(&page)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

/// In-process helpers shared by the tests of this crate's event, webhook and idempotency
/// modules: a router over an ephemeral store and a key, and a request runner.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use idbridge_store::{SqliteStore, Store};
    use serde_json::Value;
    use tower::ServiceExt;

    use crate::{ApiConfig, AppState};

    pub struct Harness {
        pub store: Arc<dyn Store>,
        pub app: axum::Router,
        pub key: String,
    }

    pub struct Reply {
        pub status: StatusCode,
        pub headers: axum::http::HeaderMap,
        pub bytes: Vec<u8>,
    }

    impl Reply {
        pub fn json(&self) -> Value {
            serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
        }
    }

    pub fn harness() -> Harness {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open_ephemeral().expect("ephemeral store"));
        let key = idbridge_sso::api_keys::create_api_key(store.as_ref(), "test")
            .expect("key")
            .plaintext;
        let app = crate::router(AppState::new(store.clone(), ApiConfig::default()));
        Harness { store, app, key }
    }

    impl Harness {
        pub async fn call(
            &self,
            method: &str,
            uri: &str,
            body: Option<Value>,
            headers: &[(&str, &str)],
        ) -> Reply {
            self.call_as(&self.key.clone(), method, uri, body, headers)
                .await
        }

        pub async fn call_as(
            &self,
            key: &str,
            method: &str,
            uri: &str,
            body: Option<Value>,
            headers: &[(&str, &str)],
        ) -> Reply {
            let mut req = Request::builder()
                .method(method)
                .uri(uri)
                .header("authorization", format!("Bearer {key}"));
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let req = match body {
                Some(b) => req
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&b).expect("json"))),
                None => req.body(Body::empty()),
            }
            .expect("request");
            let resp = self.app.clone().oneshot(req).await.expect("infallible");
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .expect("body")
                .to_vec();
            Reply {
                status,
                headers,
                bytes,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::harness;
    use axum::http::StatusCode;
    use idbridge_model::{Event, EventKind};
    use idbridge_store::{ChangeSet, Store};
    use serde_json::json;

    /// Appends events with explicit times and orgs straight to the log; returns them.
    fn seed(store: &dyn Store, items: &[(&str, Option<&str>, i64)]) -> Vec<Event> {
        let mut out = Vec::new();
        for (kind, org, at) in items {
            let kind = EventKind::parse(kind).expect("an event kind idbridge emits");
            let event = Event::at(
                kind,
                json!({"n": out.len(), "s": "é/ü"}),
                idbridge_model::Timestamp::from_millis(*at),
            );
            let mut cs = ChangeSet::new();
            cs.append_event(&event, *org);
            store.commit(cs).expect("commit");
            out.push(event);
        }
        out
    }

    const ORG_A: &str = "org_01ARZ3NDEKTSV4RRFFQ69G5FAV";
    const ORG_B: &str = "org_01BX5ZZKBKACTAV9WEVGEMMVRZ";
    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00.000Z

    fn ids(v: &serde_json::Value) -> Vec<String> {
        v["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn idbridge_own_event_types_are_listed_only_when_named() {
        let h = harness();
        let ev = seed(
            h.store.as_ref(),
            &[
                ("dsync.user.created", Some(ORG_A), T0),
                ("dsync.delivery_rejected", Some(ORG_A), T0 + 1_000),
            ],
        );
        let all = h.call("GET", "/events", None, &[]).await;
        assert_eq!(ids(&all.json()), vec![ev[0].id.clone()]);
        let named = h
            .call("GET", "/events?events=dsync.delivery_rejected", None, &[])
            .await;
        assert_eq!(named.status, StatusCode::OK);
        assert_eq!(ids(&named.json()), vec![ev[1].id.clone()]);
    }

    #[tokio::test]
    async fn lists_oldest_first_with_every_filter() {
        let h = harness();
        let ev = seed(
            h.store.as_ref(),
            &[
                ("dsync.user.created", Some(ORG_A), T0),
                ("dsync.user.updated", Some(ORG_B), T0 + 1_000),
                ("organization.created", Some(ORG_A), T0 + 2_000),
                ("dsync.user.created", None, T0 + 3_000),
            ],
        );
        let all = h.call("GET", "/events", None, &[]).await;
        assert_eq!(all.status, StatusCode::OK);
        let expect: Vec<String> = ev.iter().map(|e| e.id.clone()).collect();
        assert_eq!(ids(&all.json()), expect);
        assert_eq!(all.json()["list_metadata"]["after"], json!(null));
        // The stored bytes are served verbatim.
        let first = serde_json::to_vec(&all.json()["data"][0]).expect("json");
        assert_eq!(first, ev[0].to_compact_json());

        let users = [ev[0].id.clone(), ev[1].id.clone(), ev[3].id.clone()];
        for q in [
            "/events?events=dsync.user.created,dsync.user.updated",
            "/events?events=dsync.user.created&events=dsync.user.updated",
            "/events?events%5B%5D=dsync.user.created&events%5B%5D=dsync.user.updated",
        ] {
            assert_eq!(ids(&h.call("GET", q, None, &[]).await.json()), users, "{q}");
        }
        let by_org = h
            .call(
                "GET",
                &format!("/events?organization_id={ORG_A}"),
                None,
                &[],
            )
            .await;
        assert_eq!(ids(&by_org.json()), [ev[0].id.clone(), ev[2].id.clone()]);

        let range = h
            .call(
                "GET",
                "/events?range_start=2026-01-01T00:00:01.000Z&range_end=2026-01-01T00:00:02.000Z",
                None,
                &[],
            )
            .await;
        assert_eq!(ids(&range.json()), [ev[1].id.clone(), ev[2].id.clone()]);

        // Paging: limit 1 then `after`, until list_metadata.after is null.
        let mut walked = Vec::new();
        let mut uri = "/events?limit=1".to_string();
        loop {
            let page = h.call("GET", &uri, None, &[]).await.json();
            walked.extend(ids(&page));
            match page["list_metadata"]["after"].as_str() {
                Some(a) => uri = format!("/events?limit=1&after={a}"),
                None => break,
            }
            assert!(walked.len() <= 4, "pagination does not terminate");
        }
        assert_eq!(walked, expect);
    }

    #[tokio::test]
    async fn rejects_bad_parameters_in_the_workos_shape() {
        let h = harness();
        let ev = seed(
            h.store.as_ref(),
            &[
                ("dsync.user.created", None, T0),
                ("dsync.user.created", None, T0 + 10),
            ],
        );
        for (q, field) in [
            ("limit=0", "limit"),
            ("limit=101", "limit"),
            ("limit=abc", "limit"),
            ("range_start=2026-01-01T00:00:00%2B00:00", "range_start"),
            ("range_end=2026-13-01T00:00:00Z", "range_end"),
            (
                "range_start=2026-01-02T00:00:00Z&range_end=2026-01-01T00:00:00Z",
                "range_end",
            ),
            ("after=org_01ARZ3NDEKTSV4RRFFQ69G5FAV", "after"),
            ("order=desc", "order"),
        ] {
            let r = h.call("GET", &format!("/events?{q}"), None, &[]).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{q}");
            let fields: Vec<_> = r.json()["errors"].as_array().cloned().unwrap_or_default();
            assert!(
                fields.iter().any(|e| e["field"] == field),
                "{q}: {}",
                r.json()
            );
            assert_eq!(r.json()["message"], "Validation failed.");
        }
        let both = h
            .call(
                "GET",
                &format!(
                    "/events?range_start=2026-01-01T00:00:00Z&after={}",
                    ev[0].id
                ),
                None,
                &[],
            )
            .await;
        assert_eq!(both.status, StatusCode::UNPROCESSABLE_ENTITY);

        let unknown = h
            .call(
                "GET",
                "/events?after=event_01ARZ3NDEKTSV4RRFFQ69G5FAV",
                None,
                &[],
            )
            .await;
        assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
        assert!(unknown.json()["message"].is_string());
        // A cursor compacted away by retention is refused, not silently restarted.
        assert_eq!(h.store.compact_events_before(T0 + 5).expect("compact"), 1);
        let compacted = h
            .call("GET", &format!("/events?after={}", ev[0].id), None, &[])
            .await;
        assert_eq!(compacted.status, StatusCode::BAD_REQUEST);
        let bad_org = h
            .call("GET", "/events?organization_id=nope", None, &[])
            .await;
        assert_eq!(bad_org.status, StatusCode::BAD_REQUEST);
        let no_key = h.call_as("sk_wrong", "GET", "/events", None, &[]).await;
        assert_eq!(no_key.status, StatusCode::UNAUTHORIZED);
    }
}
