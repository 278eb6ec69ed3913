//! The browser- and token-facing SSO routes: each parses the request into the login flow's
//! input (`idbridge_sso::login`) and renders its reply.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use idbridge_sso::login::{
    valid_relay_key, AcsRequest, AuthorizeError, AuthorizeRequest, LoginOutcome, OidcCallback,
    TokenRequest,
};

use super::{
    clear_cookie, client_info, error_page, found, render, session_cookie, session_cookie_value,
};
use crate::body::Query;
use crate::error::ApiError;
use crate::AppState;

/// `GET /sso/authorize` (workos-api.md §1.1).
pub async fn authorize(State(state): State<AppState>, headers: HeaderMap, q: Query) -> Response {
    let owned = |name: &str| q.get(name).map(str::to_owned);
    let req = AuthorizeRequest {
        client_id: owned("client_id"),
        redirect_uri: owned("redirect_uri"),
        state: owned("state"),
        response_type: owned("response_type"),
        code_challenge: owned("code_challenge"),
        code_challenge_method: owned("code_challenge_method"),
        connection: owned("connection"),
        organization: owned("organization"),
        provider: owned("provider"),
        domain: owned("domain"),
        login_hint: owned("login_hint"),
        domain_hint: owned("domain_hint"),
        prompt: owned("prompt"),
        // Node sends `provider_scopes` repeated, Python comma-joined: get_list reads both.
        provider_scopes: q.get_list("provider_scopes"),
        client: client_info(&headers),
    };
    match state.sso.authorize(req).await {
        Ok(a) => {
            let cookie = session_cookie(&state, &a.relay_key, &a.session_id, a.ttl);
            found(&a.idp_url, Some(&cookie))
        }
        Err(AuthorizeError::Rejected {
            unavailable,
            code,
            message,
        }) => {
            let status = if unavailable {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::BAD_REQUEST
            };
            error_page(status, code, message)
        }
        Err(AuthorizeError::Reply(reply)) => render(reply),
    }
}

fn with_clear_cookie(state: &AppState, outcome: LoginOutcome) -> Response {
    let mut resp = render(outcome.reply);
    if let Some(v) = outcome
        .clear_cookie
        .map(|key| clear_cookie(state, &key))
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

pub(crate) fn form_field(body: &Bytes, name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `POST /sso/saml/acs/{conn_id}` (HTTP-POST binding).
pub async fn acs(
    State(state): State<AppState>,
    Path(conn_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let relay_state = form_field(&body, "RelayState");
    // The RelayState is the login's relay key: it names the session cookie.
    let session_id = relay_state
        .as_deref()
        .filter(|k| valid_relay_key(k))
        .and_then(|k| session_cookie_value(&headers, k));
    let req = AcsRequest {
        connection_id: conn_id,
        saml_response: form_field(&body, "SAMLResponse"),
        relay_state,
        session_id,
        client: client_info(&headers),
    };
    let outcome = state.sso.saml_acs(req).await;
    with_clear_cookie(&state, outcome)
}

/// `GET /sso/oidc/callback`.
pub async fn oidc_callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Query,
) -> Response {
    let owned = |name: &str| q.get(name).map(str::to_owned);
    // The state the provider echoes names the session cookie.
    let session_id = q
        .get("state")
        .filter(|s| s.len() <= 512)
        .map(idbridge_sso::login::relay_key_for_state)
        .and_then(|key| session_cookie_value(&headers, &key));
    let cb = OidcCallback {
        state: owned("state"),
        session_id,
        code: owned("code"),
        error: owned("error"),
        error_description: owned("error_description"),
        iss: owned("iss"),
        client: client_info(&headers),
    };
    let outcome = state.sso.oidc_callback(cb).await;
    with_clear_cookie(&state, outcome)
}

/// Parameters from the query, then the body (form or JSON); body values win.
fn token_params(
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Vec<(String, String)>, ApiError> {
    let oauth = |description: &str| ApiError::OAuth {
        error: "invalid_request",
        description: description.to_string(),
    };
    let mut out = q.0.clone();
    if body.is_empty() {
        return Ok(out);
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let looks_json = ct.contains("json") || (!ct.contains("form") && body.first() == Some(&b'{'));
    if looks_json {
        let v: serde_json::Value = serde_json::from_slice(body)
            .map_err(|_| oauth("The request body is not valid JSON."))?;
        let obj = v
            .as_object()
            .ok_or_else(|| oauth("The request body must be a JSON object."))?;
        for (k, v) in obj {
            match v {
                serde_json::Value::String(s) => out.push((k.clone(), s.clone())),
                serde_json::Value::Null => {}
                other => out.push((k.clone(), other.to_string())),
            }
        }
    } else {
        out.extend(
            url::form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())),
        );
    }
    Ok(out)
}

/// `POST /sso/token` (workos-api.md §1.2): code → `{token_type, access_token, expires_in,
/// profile}`.
pub async fn token(
    State(state): State<AppState>,
    q: Query,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let exchanged = async {
        let p = token_params(&q, &headers, &body)?;
        // The last non-empty value of a parameter.
        let get = |name: &str| {
            p.iter()
                .rev()
                .find(|(k, v)| k == name && !v.is_empty())
                .map(|(_, v)| v.clone())
        };
        let req = TokenRequest {
            grant_type: get("grant_type"),
            client_id: get("client_id"),
            client_secret: get("client_secret"),
            code: get("code"),
            code_verifier: get("code_verifier"),
            redirect_uri: get("redirect_uri"),
        };
        Ok::<_, ApiError>(state.sso.exchange_code(req).await?)
    };
    match exchanged.await {
        Ok(grant) => {
            let mut resp = Json(serde_json::json!({
                "token_type": "Bearer",
                "access_token": grant.access_token,
                "expires_in": grant.expires_in,
                "profile": grant.profile,
            }))
            .into_response();
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(e) => e.into_response(),
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({"error": "Unauthorized"})),
    )
        .into_response()
}

/// `GET /sso/profile` with `Authorization: Bearer <access token>` (workos-api.md §1.4).
pub async fn profile(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string())
    else {
        return unauthorized();
    };
    match state.sso.profile_for_token(&token) {
        Ok(Some(profile)) => Json(profile).into_response(),
        Ok(None) => unauthorized(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
