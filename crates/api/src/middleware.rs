//! Cross-cutting layers: request ids, tracing spans, metrics, body limit, timeout, panics.

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::ApiConfig;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn apply(app: Router, config: &ApiConfig) -> Router {
    let timeout = config.request_timeout;
    // Layers run bottom-up on the way in: request id first, so every span and error has it.
    app.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| deadline(timeout, req, next),
    ))
    .layer(axum::middleware::from_fn(record_metrics))
    .layer(DefaultBodyLimit::max(config.max_body_bytes))
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
