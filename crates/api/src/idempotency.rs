//! `Idempotency-Key` on POST: the first response is stored for 24 hours and replayed for a
//! repeat of the same key (older WorkOS docs `reference/idempotency`; Python v10 sends a key on
//! every POST and Node 11 on every retried POST, reusing it across retries).
//!
//! Semantics:
//! - Keys are scoped by the API key (its SHA-256 digest) so two tenants' keys never collide.
//! - The request is fingerprinted (method, path, query, body). A key reused with a different
//!   fingerprint is a 400 `idempotency_key_reused` (the Stripe rule; replaying an unrelated
//!   response would be worse than refusing).
//! - A duplicate that arrives while the first is still running waits up to [`IN_FLIGHT_WAIT`]
//!   for it to finish and then replays; if it is still running, 409
//!   `idempotency_request_in_progress` (not retried by the SDKs, unlike 429/5xx).
//! - Only deterministic outcomes are stored: 2xx, 3xx and 4xx except 408/429. A 5xx, 408 or
//!   429 releases the key so a retry runs the request again. The in-flight marker expires
//!   after the request timeout (plus margin), so a crash mid-request does not block the key.
//! - `/sso/*` is skipped: `/sso/token` is not API-key authenticated and its codes are
//!   single-use anyway (Node sends `Idempotency-Key: retry-<uuid>` there).
//! - A replayed response carries `Idempotent-Replayed: true`.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use idbridge_sso::idempotency::{self, Claim, Idempotency, IdempotencyEntry};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::{auth, AppState};

pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// How long a stored response is replayed.
pub const RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a duplicate waits for the first request to finish.
pub const IN_FLIGHT_WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);
const MAX_KEY_LEN: usize = 255;
/// Largest response body buffered for replay (API answers are far smaller; a bigger one is an
/// internal error rather than an unbounded buffer).
const MAX_STORED_BODY: usize = 16 * 1024 * 1024;

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

fn fingerprint(method: &Method, path_and_query: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_str().as_bytes());
    h.update(b"\n");
    h.update(path_and_query.as_bytes());
    h.update(b"\n");
    h.update(body);
    hex::encode(h.finalize())
}

fn should_store(status: StatusCode) -> bool {
    !(status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS)
}

fn replay(
    entry_status: u16,
    content_type: Option<String>,
    location: Option<String>,
    bytes: Vec<u8>,
) -> Result<Response, ApiError> {
    let status = StatusCode::from_u16(entry_status)
        .map_err(|e| ApiError::Internal(format!("corrupt idempotency record: {e}")))?;
    let mut resp = (status, bytes).into_response();
    let headers = resp.headers_mut();
    if let Some(ct) = content_type.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(header::CONTENT_TYPE, ct);
    }
    if let Some(loc) = location.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(header::LOCATION, loc);
    }
    headers.insert(
        IDEMPOTENT_REPLAYED.clone(),
        HeaderValue::from_static("true"),
    );
    Ok(resp)
}

fn header_string(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A blocking call on the idempotency records (their writes are durable commits).
async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Idempotency) -> Result<T, idbridge_store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let records = state.sso.idempotency().clone();
    Ok(tokio::task::spawn_blocking(move || f(&records))
        .await
        .map_err(ApiError::internal)??)
}

/// The middleware; mount it inside the API-key check so the scope is an authenticated key.
pub async fn idempotency(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match handle(state, req, next).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn handle(state: AppState, req: Request, next: Next) -> Result<Response, ApiError> {
    if req.method() != Method::POST || req.uri().path().starts_with("/sso/") {
        return Ok(next.run(req).await);
    }
    let Some(raw_key) = req.headers().get(&IDEMPOTENCY_KEY) else {
        return Ok(next.run(req).await);
    };
    let key = raw_key
        .to_str()
        .ok()
        .filter(|k| valid_key(k))
        .ok_or_else(|| ApiError::BadRequest {
            code: "invalid_idempotency_key",
            message: format!(
                "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters."
            ),
        })?;
    let Some(api_key) = auth::bearer(&req) else {
        return Ok(next.run(req).await);
    };
    let slot = idempotency::slot(api_key, key);
    let (parts, body) = req.into_parts();
    let max_body_bytes = state.http_limits.max_body_bytes();
    let bytes: Bytes = axum::body::to_bytes(body, max_body_bytes)
        .await
        .map_err(|_| ApiError::PayloadTooLarge {
            limit: max_body_bytes,
        })?;
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let print = fingerprint(&parts.method, &path, &bytes);
    let in_flight_ttl = millis(state.http_limits.request_timeout()) + 5_000;

    let waited_since = tokio::time::Instant::now();
    loop {
        let (s, p) = (slot.clone(), print.clone());
        let entry = match blocking(&state, move |r| r.claim(&s, &p, in_flight_ttl)).await? {
            Claim::Claimed => break,
            // Expired between looking and claiming: try to claim it again.
            Claim::Vanished => continue,
            Claim::Taken(entry) => entry,
        };
        if entry.fingerprint() != print {
            return Err(ApiError::BadRequest {
                code: "idempotency_key_reused",
                message: "This Idempotency-Key was already used with a different request.".into(),
            });
        }
        match entry {
            IdempotencyEntry::Done {
                status,
                content_type,
                location,
                body,
                ..
            } => return replay(status, content_type, location, body),
            IdempotencyEntry::InFlight { .. } if waited_since.elapsed() < IN_FLIGHT_WAIT => {
                tokio::time::sleep(POLL).await;
            }
            IdempotencyEntry::InFlight { .. } => {
                return Err(ApiError::Conflict {
                    code: "idempotency_request_in_progress",
                    message:
                        "A request with this Idempotency-Key is still in progress; retry later."
                            .into(),
                })
            }
        }
    }

    let req = Request::from_parts(parts, Body::from(bytes));
    let resp = next.run(req).await;
    let (rparts, rbody) = resp.into_parts();
    let body = match axum::body::to_bytes(rbody, MAX_STORED_BODY).await {
        Ok(b) => b,
        Err(e) => {
            release(&state, slot).await;
            return Err(ApiError::Internal(format!(
                "reading the response for the idempotency cache: {e}"
            )));
        }
    };
    if should_store(rparts.status) {
        let entry = IdempotencyEntry::Done {
            fingerprint: print,
            status: rparts.status.as_u16(),
            content_type: header_string(&rparts.headers, &header::CONTENT_TYPE),
            location: header_string(&rparts.headers, &header::LOCATION),
            body: body.to_vec(),
        };
        let s = slot.clone();
        let stored = blocking(&state, move |r| r.finish(&s, &entry, millis(RETENTION))).await;
        if let Err(e) = stored {
            // The request itself succeeded; a repeat will find the marker expire and rerun.
            tracing::warn!(error = %e, "storing the idempotent response failed");
        }
    } else {
        release(&state, slot).await;
    }
    Ok(Response::from_parts(rparts, Body::from(body)))
}

/// Frees the key after a transient failure so a retry runs the request again.
async fn release(state: &AppState, slot: String) {
    if let Err(e) = blocking(state, move |r| r.release(&slot)).await {
        tracing::warn!(error = %e, "releasing an idempotency key failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events_api::test_support::harness;
    use serde_json::json;

    #[test]
    fn keys_are_checked() {
        assert!(valid_key("retry-6f1c1c1e-0c8a-4d5e-9f1b-2f3c4d5e6f70"));
        assert!(!valid_key(""));
        assert!(!valid_key("has space"));
        assert!(!valid_key(&"k".repeat(MAX_KEY_LEN + 1)));
        assert!(
            should_store(StatusCode::CREATED) && should_store(StatusCode::UNPROCESSABLE_ENTITY)
        );
        assert!(
            !should_store(StatusCode::SERVICE_UNAVAILABLE)
                && !should_store(StatusCode::TOO_MANY_REQUESTS)
        );
    }

    #[tokio::test]
    async fn repeats_replay_and_reuse_with_another_body_is_refused() {
        let h = harness();
        let body = json!({"name": "Idem Co"});
        let first = h
            .call(
                "POST",
                "/organizations",
                Some(body.clone()),
                &[("idempotency-key", "k1")],
            )
            .await;
        let again = h
            .call(
                "POST",
                "/organizations",
                Some(body.clone()),
                &[("idempotency-key", "k1")],
            )
            .await;
        assert_eq!(first.status, StatusCode::CREATED);
        assert_eq!(again.status, StatusCode::CREATED);
        assert_eq!(
            again.bytes, first.bytes,
            "the stored response, byte for byte"
        );
        assert_eq!(
            again
                .headers
                .get("idempotent-replayed")
                .map(|v| v.as_bytes()),
            Some(&b"true"[..])
        );
        assert!(first.headers.get("idempotent-replayed").is_none());
        assert!(again
            .headers
            .get("content-type")
            .is_some_and(|v| v == "application/json"));

        let other = h
            .call(
                "POST",
                "/organizations",
                Some(json!({"name": "Else"})),
                &[("idempotency-key", "k1")],
            )
            .await;
        assert_eq!(other.status, StatusCode::BAD_REQUEST);
        assert_eq!(other.json()["code"], "idempotency_key_reused");

        // Another API key has its own key space.
        let key2 = idbridge_sso::api_keys::create_api_key(h.store.as_ref(), "second")
            .expect("key")
            .plaintext;
        let scoped = h
            .call_as(
                &key2,
                "POST",
                "/organizations",
                Some(body.clone()),
                &[("idempotency-key", "k1")],
            )
            .await;
        assert_eq!(scoped.status, StatusCode::CREATED);
        assert_ne!(scoped.json()["id"], first.json()["id"]);

        // Without a key, two POSTs are two organizations.
        let a = h
            .call("POST", "/organizations", Some(body.clone()), &[])
            .await;
        let b = h
            .call("POST", "/organizations", Some(body.clone()), &[])
            .await;
        assert_ne!(a.json()["id"], b.json()["id"]);

        // Validation failures are deterministic, so they are replayed too.
        let bad1 = h
            .call(
                "POST",
                "/organizations",
                Some(json!({})),
                &[("idempotency-key", "k2")],
            )
            .await;
        let bad2 = h
            .call(
                "POST",
                "/organizations",
                Some(json!({})),
                &[("idempotency-key", "k2")],
            )
            .await;
        assert_eq!(bad1.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            bad2.headers
                .get("idempotent-replayed")
                .map(|v| v.as_bytes()),
            Some(&b"true"[..])
        );

        let invalid = h
            .call(
                "POST",
                "/organizations",
                Some(body),
                &[("idempotency-key", "bad key")],
            )
            .await;
        assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn concurrent_duplicates_create_one_resource() {
        let h = std::sync::Arc::new(harness());
        let body = json!({"name": "Race Co"});
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let h = h.clone();
            let body = body.clone();
            tasks.push(tokio::spawn(async move {
                h.call(
                    "POST",
                    "/organizations",
                    Some(body),
                    &[("idempotency-key", "race")],
                )
                .await
            }));
        }
        let mut ids = std::collections::HashSet::new();
        for t in tasks {
            let r = t.await.expect("task");
            assert_eq!(r.status, StatusCode::CREATED);
            ids.insert(r.json()["id"].as_str().map(str::to_string));
        }
        assert_eq!(
            ids.len(),
            1,
            "one organization for four concurrent duplicates"
        );
        let list = h
            .call("GET", "/organizations?limit=100", None, &[])
            .await
            .json();
        assert_eq!(list["data"].as_array().map(Vec::len), Some(1));
    }
}
