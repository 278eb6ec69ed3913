//! The API-key check of the REST API: every route but health and the browser-facing SSO ones
//! needs `Authorization: Bearer sk_…`. Keys themselves live in `idbridge_sso::api_keys`.

use axum::extract::{Request, State};
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
    let Some(token) = bearer(&req) else {
        return Err(ApiError::Unauthorized);
    };
    match state.sso.verify_api_key(token)? {
        Some(_) => Ok(next.run(req).await),
        None => Err(ApiError::Unauthorized),
    }
}
