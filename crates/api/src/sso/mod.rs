//! The SSO endpoints: connections (`/connections`, workos-api.md §2.1), `/sso/authorize`, the
//! SAML ACS and SP metadata, the OIDC callback, `/sso/token` and `/sso/profile` (§1).
//!
//! HTTP only: [`connections`] parses bodies into `idbridge_sso`'s typed inputs and [`flow`]
//! turns requests into the login flow's inputs and its replies into redirects, pages and
//! cookies. The flow itself (sessions, verification, profiles, codes, tokens) is
//! `idbridge_sso::login`. Browser-facing routes are public; the connection API needs an API key.

pub mod certificates;
pub mod connection_update;
pub mod connections;
pub mod flow;
pub mod logout;

#[cfg(test)]
mod tests;

use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use idbridge_sso::login::{ClientInfo, LoginReply, PageStatus};

use crate::AppState;

/// Routes that need an API key.
pub fn protected_routes() -> Router<AppState> {
    connections::routes()
        .merge(connection_update::routes())
        .merge(certificates::routes())
        .merge(logout::routes())
}

/// Browser- and token-facing routes (no API key).
pub fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/sso/authorize", get(flow::authorize))
        .route("/sso/saml/acs/{conn_id}", post(flow::acs))
        .route(
            "/sso/saml/metadata/{conn_id}",
            get(connections::sp_metadata),
        )
        .route("/sso/oidc/callback", get(flow::oidc_callback))
        .route("/sso/token", post(flow::token))
        .route("/sso/profile", get(flow::profile))
        .route("/sso/logout", get(logout::logout))
        .route(
            "/sso/saml/slo/{conn_id}",
            get(logout::saml_slo).post(logout::saml_slo_post),
        )
}

/// Prefix of the per-login cookie; the suffix is the login's relay key, so parallel logins in
/// one browser do not overwrite each other.
pub(crate) const COOKIE_PREFIX: &str = "idbridge_sso_";

fn cookie_attrs(state: &AppState) -> &'static str {
    // Over https the cookie is `SameSite=None; Secure` so the IdP's cross-site POST to the ACS
    // carries it; over plain http (loopback development) browsers refuse `SameSite=None`
    // without `Secure`, so it is `Lax` (same-site IdPs on 127.0.0.1 still work, since ports
    // do not make a different site).
    if state.config.public_url.starts_with("https://") {
        "SameSite=None; Secure"
    } else {
        "SameSite=Lax"
    }
}

/// `Set-Cookie` for a login session.
pub(crate) fn session_cookie(
    state: &AppState,
    relay_key: &str,
    session_id: &str,
    max_age: Duration,
) -> String {
    format!(
        "{COOKIE_PREFIX}{relay_key}={session_id}; Path=/sso; HttpOnly; Max-Age={}; {}",
        max_age.as_secs(),
        cookie_attrs(state)
    )
}

/// `Set-Cookie` that clears a login session's cookie.
pub(crate) fn clear_cookie(state: &AppState, relay_key: &str) -> String {
    format!(
        "{COOKIE_PREFIX}{relay_key}=; Path=/sso; HttpOnly; Max-Age=0; {}",
        cookie_attrs(state)
    )
}

/// The value of cookie `name` from the request.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The session cookie of the login with this relay key.
pub(crate) fn session_cookie_value(headers: &HeaderMap, relay_key: &str) -> Option<String> {
    cookie(headers, &format!("{COOKIE_PREFIX}{relay_key}"))
}

/// A 302 to `location`, optionally setting a cookie.
pub(crate) fn found(location: &str, set_cookie: Option<&str>) -> Response {
    let mut resp = StatusCode::FOUND.into_response();
    match HeaderValue::from_str(location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "invalid_redirect",
                "The redirect target is invalid.",
            )
        }
    }
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(c).ok()) {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Where no vetted redirect URI exists: a JSON error (never a redirect).
pub(crate) fn error_page(status: StatusCode, code: &str, message: &str) -> Response {
    let mut resp = (
        status,
        axum::Json(serde_json::json!({"error": code, "error_description": message})),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A login flow reply as an HTTP response.
pub(crate) fn render(reply: LoginReply) -> Response {
    match reply {
        LoginReply::Redirect(location) => found(&location, None),
        LoginReply::Page {
            status,
            code,
            message,
        } => {
            let status = match status {
                PageStatus::BadRequest => StatusCode::BAD_REQUEST,
                PageStatus::NotFound => StatusCode::NOT_FOUND,
                PageStatus::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            };
            error_page(status, code, message)
        }
    }
}

/// Client IP (first `X-Forwarded-For` hop) and user agent, for authentication events.
pub(crate) fn client_info(headers: &HeaderMap) -> ClientInfo {
    let ip_address = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|s| s.trim().chars().take(64).collect::<String>())
        .filter(|s| !s.is_empty());
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(512).collect());
    ClientInfo {
        ip_address,
        user_agent,
    }
}
