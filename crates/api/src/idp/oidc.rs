//! The OpenID Provider endpoints of an organization (issuer `{public_url}/idp/{org}/oidc`):
//!
//! - `GET {issuer}/.well-known/openid-configuration` and `GET {issuer}/jwks`;
//! - `GET|POST {issuer}/authorize`: the login page (the same as the SAML IdP's, posting to
//!   `/idp/{org}/login`), an error redirect to the client's REGISTERED redirect URI, or our own
//!   error page when the client or its redirect URI cannot be trusted;
//! - `POST {issuer}/token`: OAuth's JSON (`no-store`), errors as `{error, error_description}`
//!   with 400/401 and `WWW-Authenticate` on 401;
//! - `GET|POST {issuer}/userinfo`: bearer access token.
//!
//! The domain (clients, codes, tokens, keys) is `idbridge_sso::idp::oidc`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use idbridge_oidc::op::OAuthError;
use idbridge_sso::idp::{OidcAuthorize, OidcAuthorizeOutcome};
use serde_json::Value;

use super::saml::{cookie, error_page, login_page, redirect};
use crate::error::ApiError;
use crate::sso::client_info;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/idp/{org_id}/oidc/.well-known/openid-configuration",
            get(discovery),
        )
        .route("/idp/{org_id}/oidc/jwks", get(jwks))
        .route(
            "/idp/{org_id}/oidc/authorize",
            get(authorize_get).post(authorize_post),
        )
        .route("/idp/{org_id}/oidc/token", axum::routing::post(token))
        .route("/idp/{org_id}/oidc/userinfo", get(userinfo).post(userinfo))
}

/// A JSON answer that no cache keeps (tokens, userinfo).
fn no_store(status: StatusCode, body: Value) -> Response {
    let mut resp = (status, Json(body)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// An OAuth error in OAuth's own shape; `scheme` names the `WWW-Authenticate` challenge of a 401.
fn oauth_error(e: &OAuthError, scheme: &str) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = no_store(status, e.to_json());
    if let Some(v) = e
        .www_authenticate(scheme)
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

async fn discovery(State(state): State<AppState>, Path(org_id): Path<String>) -> Response {
    match state.sso.idp_oidc_discovery(&org_id) {
        Ok(doc) => Json(doc).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn jwks(State(state): State<AppState>, Path(org_id): Path<String>) -> Response {
    match state.sso.idp_oidc_jwks(&org_id).await {
        Ok(doc) => Json(doc).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn authorize(state: AppState, req: OidcAuthorize) -> Response {
    let org_id = req.organization_id.clone();
    match state.sso.idp_oidc_authorize(req).await {
        OidcAuthorizeOutcome::Login { page, session, ttl } => {
            let mut resp = login_page(StatusCode::OK, &page);
            if let Ok(v) =
                HeaderValue::from_str(&cookie(&state, &org_id, &page.key, &session, ttl.as_secs()))
            {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
            resp
        }
        OidcAuthorizeOutcome::Redirect(location) => redirect(&location),
        OidcAuthorizeOutcome::Error { status, message } => error_page(status, &message),
    }
}

async fn authorize_get(
    State(state): State<AppState>,
    Path(organization_id): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let req = OidcAuthorize {
        organization_id,
        query: q.unwrap_or_default(),
        client: client_info(&headers),
    };
    authorize(state, req).await
}

async fn authorize_post(
    State(state): State<AppState>,
    Path(organization_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = OidcAuthorize {
        organization_id,
        query: String::from_utf8_lossy(&body).into_owned(),
        client: client_info(&headers),
    };
    authorize(state, req).await
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

async fn token(
    State(state): State<AppState>,
    Path(org_id): Path<String>,
    req: axum::extract::Request,
) -> Response {
    let headers = req.headers().clone();
    let body = match crate::body::read_body(req, &state).await {
        Ok(b) => b,
        Err(_) => {
            return oauth_error(
                &OAuthError::invalid_request("the request body could not be read"),
                "Basic",
            )
        }
    };
    match state
        .sso
        .idp_oidc_token(&org_id, authorization(&headers), &body)
        .await
    {
        Ok(tokens) => no_store(
            StatusCode::OK,
            serde_json::to_value(tokens).unwrap_or(Value::Null),
        ),
        Err(e) => oauth_error(&e, "Basic"),
    }
}

async fn userinfo(
    State(state): State<AppState>,
    Path(org_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match state
        .sso
        .idp_oidc_userinfo(&org_id, authorization(&headers))
    {
        Ok(claims) => no_store(StatusCode::OK, claims),
        Err(e) => oauth_error(&e, "Bearer"),
    }
}
