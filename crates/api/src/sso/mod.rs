//! The SSO flow: connections, `/sso/authorize`, the SAML ACS, the OIDC callback,
//! `/sso/token` and `/sso/profile` (workos-api.md §1, §2.1; issues 5 and 6).
//!
//! Browser-facing routes are public; the connection API needs an API key. Every step keeps its
//! state in the store's expiring tables: the login session (bound to the browser by an HttpOnly
//! cookie), the single-use code and the access token (both stored only as SHA-256 digests).

pub mod acs;
pub mod authorize;
pub mod connections;
pub mod oidc_callback;
pub mod profile;
pub mod redirect_uri;
/// Sealing of connection secrets lives in its own crate (also used for SCIM push tokens).
pub use idbridge_secrets as secrets;
pub mod token;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AppState;
pub use secrets::{SecretBox, SecretError};

/// The `[sso]` part of the configuration, as the API needs it.
#[derive(Debug, Clone)]
pub struct SsoConfig {
    /// Allowed redirect URIs (exact or wildcard patterns, see [`redirect_uri`]).
    pub redirect_uris: Vec<String>,
    /// Where IdP-initiated logins go when RelayState names no allowed URI; defaults to the
    /// first exact entry of `redirect_uris`.
    pub default_redirect_uri: Option<String>,
    /// Lifetime of an authorization code.
    pub code_ttl: Duration,
    /// Lifetime of an access token (`expires_in`).
    pub access_token_ttl: Duration,
    /// Lifetime of a browser's login session (authorize → IdP → ACS/callback).
    pub login_ttl: Duration,
}

impl Default for SsoConfig {
    fn default() -> Self {
        SsoConfig {
            redirect_uris: Vec::new(),
            default_redirect_uri: None,
            code_ttl: Duration::from_secs(600),
            access_token_ttl: Duration::from_secs(600),
            login_ttl: Duration::from_secs(900),
        }
    }
}

impl SsoConfig {
    /// The default redirect URI for IdP-initiated logins, if one is known.
    pub fn default_redirect(&self) -> Option<String> {
        self.default_redirect_uri
            .clone()
            .or_else(|| {
                self.redirect_uris
                    .iter()
                    .find(|u| !u.contains('*'))
                    .cloned()
            })
            .filter(|u| redirect_uri::is_allowed(&self.redirect_uris, u))
    }
}

/// Everything the SSO routes share besides the store.
pub struct SsoRuntime {
    pub config: SsoConfig,
    /// Seals connection secrets; `None` refuses to create connections that need one.
    pub secrets: Option<SecretBox>,
    /// OIDC clients (they hold discovery/JWKS caches), keyed by connection id and version.
    oidc_clients: Mutex<HashMap<String, (i64, Arc<idbridge_oidc::OidcClient>)>>,
    /// HTTP client for IdP metadata and OIDC providers (redirects off, timeouts on).
    pub http: Option<reqwest::Client>,
}

impl std::fmt::Debug for SsoRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoRuntime")
            .field("config", &self.config)
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

impl Default for SsoRuntime {
    fn default() -> Self {
        SsoRuntime::new(SsoConfig::default(), None)
    }
}

impl SsoRuntime {
    pub fn new(config: SsoConfig, secrets: Option<SecretBox>) -> Self {
        let http = match idbridge_oidc::default_http_client() {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "no HTTP client for IdP requests");
                None
            }
        };
        SsoRuntime {
            config,
            secrets,
            oidc_clients: Mutex::new(HashMap::new()),
            http,
        }
    }

    pub fn secrets(&self) -> Result<&SecretBox, SecretError> {
        self.secrets.as_ref().ok_or(SecretError::NoKey)
    }

    /// A cached OIDC client for this connection version, or a fresh one.
    pub(crate) fn oidc_client(
        &self,
        conn_id: &str,
        version: i64,
        build: impl FnOnce() -> Result<idbridge_oidc::OidcClient, idbridge_oidc::OidcError>,
    ) -> Result<Arc<idbridge_oidc::OidcClient>, idbridge_oidc::OidcError> {
        if let Ok(map) = self.oidc_clients.lock() {
            if let Some((v, c)) = map.get(conn_id) {
                if *v == version {
                    return Ok(c.clone());
                }
            }
        }
        let client = Arc::new(build()?);
        if let Ok(mut map) = self.oidc_clients.lock() {
            map.insert(conn_id.to_string(), (version, client.clone()));
        }
        Ok(client)
    }

    pub(crate) fn forget_oidc_client(&self, conn_id: &str) {
        if let Ok(mut map) = self.oidc_clients.lock() {
            map.remove(conn_id);
        }
    }
}

/// Routes that need an API key.
pub fn protected_routes() -> Router<AppState> {
    connections::routes()
}

/// Browser- and token-facing routes (no API key).
pub fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/sso/authorize", get(authorize::authorize))
        .route("/sso/saml/acs/{conn_id}", post(acs::acs))
        .route(
            "/sso/saml/metadata/{conn_id}",
            get(connections::sp_metadata),
        )
        .route("/sso/oidc/callback", get(oidc_callback::callback))
        .route("/sso/token", post(token::token))
        .route("/sso/profile", get(profile::get_profile))
}

/// What `/sso/authorize` leaves for the ACS or callback, bound to one browser.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LoginSession {
    pub connection_id: String,
    pub organization_id: Option<String>,
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    /// SAML: the AuthnRequest id, checked against InResponseTo.
    pub saml_request_id: Option<String>,
    /// SAML: the RelayState we sent (also names the cookie).
    pub relay_key: String,
    /// OIDC: state, nonce and PKCE verifier (sealed) for `OidcClient::finish`.
    pub oidc_state: Option<String>,
    pub oidc_nonce: Option<String>,
    pub oidc_verifier_sealed: Option<String>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
}

/// A minted authorization code (stored under the digest of the code).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CodeRecord {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: Option<String>,
    pub profile: idbridge_model::Profile,
}

/// An issued access token (stored under the digest of the token).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TokenRecord {
    pub profile: idbridge_model::Profile,
}

/// A URL-safe random token with `bytes` bytes of entropy.
pub(crate) fn random_token(bytes: usize) -> String {
    use base64::Engine as _;
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

pub(crate) fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(crate) fn ttl_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

/// Prefix of the per-login cookie; the suffix is the login's relay key, so parallel logins in
/// one browser do not overwrite each other.
pub(crate) const COOKIE_PREFIX: &str = "idbridge_sso_";

/// Relay keys are ours: 22 URL-safe characters. Anything else is not a key.
pub(crate) fn valid_relay_key(k: &str) -> bool {
    (16..=64).contains(&k.len())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `Set-Cookie` for a login session. Over https it is `SameSite=None; Secure` so the IdP's
/// cross-site POST to the ACS carries it; over plain http (loopback development) browsers
/// refuse `SameSite=None` without `Secure`, so it is `Lax` (same-site IdPs on 127.0.0.1 still
/// work, since ports do not make a different site).
pub(crate) fn session_cookie(
    state: &AppState,
    relay_key: &str,
    session_id: &str,
    max_age: Duration,
) -> String {
    let secure = state.config.public_url.starts_with("https://");
    let attrs = if secure {
        "SameSite=None; Secure"
    } else {
        "SameSite=Lax"
    };
    format!(
        "{COOKIE_PREFIX}{relay_key}={session_id}; Path=/sso; HttpOnly; Max-Age={}; {attrs}",
        max_age.as_secs()
    )
}

pub(crate) fn clear_cookie(state: &AppState, relay_key: &str) -> String {
    let secure = state.config.public_url.starts_with("https://");
    let attrs = if secure {
        "SameSite=None; Secure"
    } else {
        "SameSite=Lax"
    };
    format!("{COOKIE_PREFIX}{relay_key}=; Path=/sso; HttpOnly; Max-Age=0; {attrs}")
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

/// `redirect_uri` with extra query parameters (existing ones are kept).
pub(crate) fn with_params(redirect_uri: &str, params: &[(&str, Option<&str>)]) -> Option<String> {
    let mut url = url::Url::parse(redirect_uri).ok()?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
    }
    Some(url.to_string())
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

/// An OAuth error redirect to a vetted URI (workos-api.md §1.1).
pub(crate) fn error_redirect(
    redirect_uri: &str,
    error: &str,
    description: &str,
    state: Option<&str>,
) -> Response {
    error_redirect_with(redirect_uri, error, description, state, &[])
}

pub(crate) fn error_redirect_with(
    redirect_uri: &str,
    error: &str,
    description: &str,
    state: Option<&str>,
    extra: &[(&str, Option<&str>)],
) -> Response {
    let mut params: Vec<(&str, Option<&str>)> = vec![
        ("error", Some(error)),
        ("error_description", Some(description)),
    ];
    params.extend_from_slice(extra);
    params.push(("state", state));
    match with_params(redirect_uri, &params) {
        Some(loc) => found(&loc, None),
        None => error_page(StatusCode::BAD_REQUEST, error, description),
    }
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

/// Client IP (first `X-Forwarded-For` hop) and user agent, for authentication events.
pub(crate) fn client_info(headers: &HeaderMap) -> (Option<String>, Option<String>) {
    let ip = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|s| s.trim().chars().take(64).collect::<String>())
        .filter(|s| !s.is_empty());
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(512).collect());
    (ip, ua)
}

/// The `data` of an `authentication.sso_*` event (workos-api.md §4.3).
pub(crate) fn auth_event_data(
    status: &str,
    email: Option<&str>,
    organization_id: Option<&str>,
    connection_id: &str,
    ip: Option<&str>,
    ua: Option<&str>,
    error: Option<(&str, &str)>,
) -> serde_json::Value {
    let mut data = serde_json::json!({
        "type": "sso",
        "status": status,
        "ip_address": ip,
        "user_agent": ua,
        "user_id": null,
        "email": email,
        "sso": {
            "organization_id": organization_id,
            "connection_id": connection_id,
            "session_id": null,
        },
    });
    if let (Some((code, message)), Some(obj)) = (error, data.as_object_mut()) {
        obj.insert(
            "error".into(),
            serde_json::json!({"code": code, "message": message}),
        );
    }
    data
}

/// Appends one event in its own commit (authentication events have no other write).
pub(crate) async fn emit(state: &AppState, kind: &str, data: serde_json::Value, org: Option<&str>) {
    let mut cs = idbridge_store::ChangeSet::default();
    crate::events::append(&mut cs, kind, data, org);
    if let Err(e) = state.db.commit_ok(cs).await {
        tracing::error!(error = %e, event = kind, "could not record event");
    }
}
