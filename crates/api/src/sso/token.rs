//! `POST /sso/token` (workos-api.md §1.2): code → `{token_type, access_token, expires_in,
//! profile}`. Accepts form, JSON and query parameters (the SDKs use all three).
//!
//! Client authentication is checked before the code is consumed, so a caller without the API
//! key cannot burn someone else's code; the code itself is taken atomically (single use).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{random_token, sha256_hex, ttl_ms, CodeRecord, TokenRecord};
use crate::body::Query;
use crate::error::ApiError;
use crate::{auth, tables, AppState};

fn oauth(error: &'static str, description: &str) -> ApiError {
    ApiError::OAuth {
        error,
        description: description.to_string(),
    }
}

/// Parameters from the query, then the body (form or JSON); body values win.
fn params(q: &Query, headers: &HeaderMap, body: &Bytes) -> Result<Vec<(String, String)>, ApiError> {
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
            .map_err(|_| oauth("invalid_request", "The request body is not valid JSON."))?;
        let obj = v
            .as_object()
            .ok_or_else(|| oauth("invalid_request", "The request body must be a JSON object."))?;
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

fn get<'a>(p: &'a [(String, String)], name: &str) -> Option<&'a str> {
    p.iter()
        .rev()
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

/// PKCE S256: `BASE64URL(SHA256(verifier)) == challenge`, compared in constant time.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    if !(43..=128).contains(&verifier.len()) {
        return false;
    }
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

#[tracing::instrument(name = "sso.token", skip_all)]
pub async fn token(
    State(state): State<AppState>,
    q: Query,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match exchange(&state, &q, &headers, &body).await {
        Ok(v) => {
            let mut resp = Json(v).into_response();
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            resp
        }
        Err(e) => e.into_response(),
    }
}

async fn exchange(
    state: &AppState,
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<serde_json::Value, ApiError> {
    let p = params(q, headers, body)?;
    match get(&p, "grant_type") {
        Some("authorization_code") => {}
        Some(_) => {
            return Err(oauth(
                "unsupported_grant_type",
                "Only authorization_code is supported.",
            ))
        }
        None => return Err(oauth("invalid_request", "grant_type is required.")),
    }
    let store = state.db.store().clone();
    let expected_client = auth::client_id(store.as_ref())?
        .ok_or_else(|| oauth("invalid_client", "Invalid client ID or secret."))?;
    let client_id = get(&p, "client_id").unwrap_or("");
    if !bool::from(client_id.as_bytes().ct_eq(expected_client.as_bytes())) {
        return Err(oauth("invalid_client", "Invalid client ID or secret."));
    }
    let secret_ok = match get(&p, "client_secret") {
        Some(secret) => {
            if auth::verify_api_key(store.as_ref(), secret)?.is_none() {
                return Err(oauth("invalid_client", "Invalid client ID or secret."));
            }
            true
        }
        None => false,
    };
    let verifier = get(&p, "code_verifier");
    if !secret_ok && verifier.is_none() {
        return Err(oauth(
            "invalid_client",
            "client_secret or code_verifier is required.",
        ));
    }
    let code = get(&p, "code").ok_or_else(|| oauth("invalid_request", "code is required."))?;
    if code.len() > 256 {
        return Err(oauth(
            "invalid_grant",
            "The code has expired or has already been used.",
        ));
    }
    let key = sha256_hex(code);
    let now = super::now_ms();
    let taken = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.take_expiring(tables::SSO_CODES, &key, now))
            .await
            .map_err(ApiError::internal)??
    };
    let Some(bytes) = taken else {
        return Err(oauth(
            "invalid_grant",
            "The code has expired or has already been used.",
        ));
    };
    let rec: CodeRecord = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
    if rec.client_id != client_id {
        return Err(oauth(
            "invalid_grant",
            "The code was issued to another client.",
        ));
    }
    if get(&p, "redirect_uri").is_some_and(|r| r != rec.redirect_uri) {
        return Err(oauth(
            "invalid_grant",
            "redirect_uri does not match the authorization request.",
        ));
    }
    match (&rec.code_challenge, verifier) {
        // A PKCE login needs its verifier even when the API key is also sent.
        (Some(challenge), Some(v)) if pkce_matches(v, challenge) => {}
        (Some(_), _) => {
            return Err(oauth(
                "invalid_grant",
                "The code_verifier does not match the code_challenge.",
            ))
        }
        (None, Some(_)) if !secret_ok => {
            return Err(oauth(
                "invalid_grant",
                "This code was not issued with a code_challenge.",
            ))
        }
        (None, _) => {}
    }
    let access_token = random_token(32);
    let ttl = state.sso.config.access_token_ttl;
    let tok = TokenRecord {
        profile: rec.profile.clone(),
    };
    let value = serde_json::to_vec(&tok).map_err(ApiError::internal)?;
    let tkey = sha256_hex(&access_token);
    let exp = now + ttl_ms(ttl);
    tokio::task::spawn_blocking(move || {
        store.put_expiring(tables::SSO_ACCESS_TOKENS, &tkey, value, exp)
    })
    .await
    .map_err(ApiError::internal)??;
    tracing::info!(profile_id = %rec.profile.id, "code exchanged");
    Ok(serde_json::json!({
        "token_type": "Bearer",
        "access_token": access_token,
        "expires_in": ttl.as_secs(),
        "profile": rec.profile,
    }))
}
