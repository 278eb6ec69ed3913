//! Cross-cutting layers: request ids, tracing spans, metrics, body limit and body-read
//! timeout, timeout, panics.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, HttpBody};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use idbridge_scim::{ScimError, SCIM_CONTENT_TYPE};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::ApiConfig;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request limits the admin API can change while the server runs
/// (`PATCH /admin/settings/server`): each request reads them when it starts.
#[derive(Debug)]
pub struct LiveHttp {
    max_body_bytes: AtomicUsize,
    request_timeout_ms: AtomicU64,
    body_read_timeout_ms: AtomicU64,
}

impl LiveHttp {
    pub fn new(config: &ApiConfig) -> Self {
        let live = LiveHttp {
            max_body_bytes: AtomicUsize::new(0),
            request_timeout_ms: AtomicU64::new(0),
            body_read_timeout_ms: AtomicU64::new(0),
        };
        live.set(
            config.max_body_bytes,
            config.request_timeout,
            config.body_read_timeout,
        );
        live
    }

    /// Puts new limits in force for the requests that start from now on.
    pub fn set(&self, max_body_bytes: usize, request_timeout: Duration, body_read: Duration) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        self.max_body_bytes.store(max_body_bytes, Ordering::Relaxed);
        self.request_timeout_ms
            .store(ms(request_timeout), Ordering::Relaxed);
        self.body_read_timeout_ms
            .store(ms(body_read), Ordering::Relaxed);
    }

    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes.load(Ordering::Relaxed)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.load(Ordering::Relaxed))
    }

    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms.load(Ordering::Relaxed))
    }
}

pub fn apply(app: Router, live: Arc<LiveHttp>) -> Router {
    let for_deadline = live.clone();
    // Layers run bottom-up on the way in: request id first, so every span and error has it.
    app.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| deadline(for_deadline.request_timeout(), req, next),
    ))
    // Outside the deadline: a slow client's body is the client's fault (408), not the
    // server's (503), and the handler's time starts once the body is here.
    .layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let body_limits = BodyLimits {
                max_bytes: live.max_body_bytes(),
                read_timeout: live.body_read_timeout(),
            };
            read_body(body_limits, req, next)
        },
    ))
    .layer(axum::middleware::from_fn(record_metrics))
    // The limit is `read_body`'s (live); extractors then read a body already in memory.
    .layer(DefaultBodyLimit::disable())
    .layer(CatchPanicLayer::custom(|_panic| {
        ApiError::Internal("handler panicked".into()).into_response()
    }))
    .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
        let request_id = req
            .headers()
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        tracing::info_span!(
            "request",
            method = %req.method(),
            path = %req.uri().path(),
            request_id = %request_id,
        )
    }))
    .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
    .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
}

#[derive(Clone, Copy)]
struct BodyLimits {
    max_bytes: usize,
    read_timeout: Duration,
}

/// Reads the whole request body before any handler runs: within `read_timeout` of the head
/// (408 and close otherwise) and up to `max_bytes` (413 and close otherwise), answered in the
/// error format of the protocol the path belongs to (SCIM's under `/scim/`, WorkOS's
/// elsewhere). Handlers then read a body that is already in memory, so a stalled client
/// never holds a handler, a store lock or the request deadline.
async fn read_body(limits: BodyLimits, req: Request, next: Next) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let scim = req.uri().path().starts_with("/scim/");
    let (parts, body) = req.into_parts();
    let collected = tokio::time::timeout(
        limits.read_timeout,
        Limited::new(body, limits.max_bytes).collect(),
    )
    .await;
    let refusal = match collected {
        Ok(Ok(bytes)) => {
            return next
                .run(Request::from_parts(parts, Body::from(bytes.to_bytes())))
                .await
        }
        Err(_elapsed) => BodyRefusal::Timeout,
        Ok(Err(e)) if e.is::<LengthLimitError>() => BodyRefusal::TooLarge,
        // The client's connection failed mid-body: nobody may be listening for the answer.
        Ok(Err(e)) => {
            tracing::info!(error = %e, "request body read failed");
            BodyRefusal::Broken
        }
    };
    tracing::info!(
        refusal = ?refusal,
        timeout_secs = limits.read_timeout.as_secs(),
        "request body refused"
    );
    refusal.response(scim, limits)
}

#[derive(Debug, Clone, Copy)]
enum BodyRefusal {
    Timeout,
    TooLarge,
    Broken,
}

impl BodyRefusal {
    fn response(self, scim: bool, limits: BodyLimits) -> Response {
        if scim {
            let error = match self {
                BodyRefusal::Timeout => ScimError::new(
                    408,
                    None,
                    format!(
                        "the request body did not arrive within {} seconds",
                        limits.read_timeout.as_secs()
                    ),
                ),
                BodyRefusal::TooLarge => ScimError::payload_too_large(format!(
                    "request body is larger than {} bytes",
                    limits.max_bytes
                )),
                BodyRefusal::Broken => {
                    ScimError::invalid_syntax("the request body could not be read")
                }
            };
            let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
            let mut resp = (status, axum::Json(error.to_json())).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(SCIM_CONTENT_TYPE),
            );
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
        match self {
            BodyRefusal::Timeout => ApiError::BodyTimeout {
                secs: limits.read_timeout.as_secs(),
            },
            BodyRefusal::TooLarge => ApiError::PayloadTooLarge {
                limit: limits.max_bytes,
            },
            BodyRefusal::Broken => ApiError::BadRequest {
                code: "invalid_body",
                message: "The request body could not be read.".into(),
            },
        }
        .into_response()
    }
}

async fn deadline(limit: std::time::Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

async fn record_metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let mut resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("idbridge_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("idbridge_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    // Every API answer is JSON unless a handler said otherwise.
    if !resp
        .headers()
        .contains_key(axum::http::header::CONTENT_TYPE)
    {
        resp.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    resp
}
