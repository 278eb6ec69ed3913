//! The API-key check of the REST API: every route but health and the browser-facing SSO ones
//! needs `Authorization: Bearer sk_…`. Keys themselves live in `idbridge_sso::api_keys`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ApiError;
use crate::AppState;

/// The bearer token of a request, if any.
pub fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Middleware: refuses requests without a valid API key.
pub async fn require_api_key(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let limiters = &state.api_limiters;
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".to_owned());
    if let Err(wait) = limiters.failed_auth.check(&client) {
        return Err(ApiError::RateLimited {
            message: "Too many failed authentications from this address",
            retry_after_secs: wait.secs(),
        });
    }
    let record = match bearer(&req) {
        Some(token) => state.sso.verify_api_key(token)?,
        None => None,
    };
    let Some(record) = record else {
        limiters.failed_auth.failed(&client);
        return Err(ApiError::Unauthorized);
    };
    if let Err(wait) = limiters.rate.check(&record.id) {
        return Err(ApiError::RateLimited {
            message: "Too many requests for this API key",
            retry_after_secs: wait.secs(),
        });
    }
    Ok(next.run(req).await)
}
