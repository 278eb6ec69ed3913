//! `POST /sso/saml/acs/{conn_id}`: the SAML Assertion Consumer Service (HTTP-POST binding).
//!
//! The response is verified by idbridge-saml off the async runtime, with the store as the replay
//! cache. InResponseTo must be the AuthnRequest id bound to this browser's login session; an
//! unsolicited response is accepted only when the connection allows IdP-initiated login, and
//! then goes to an allow-listed RelayState `redirect_uri=` or the default redirect URI.
//! Failures never reveal why verification failed (that would be an oracle) and never 500.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use idbridge_saml::{ReplayCache, ResponseContext};
use idbridge_store::Store;

use super::connections::{self, ProtocolSettings};
use super::profile::{complete_login, custom_json, fail_login, Destination, Identity};
use super::{
    clear_cookie, client_info, cookie, error_page, error_redirect_with, sha256_hex,
    valid_relay_key, LoginSession, COOKIE_PREFIX,
};
use crate::{auth, tables, AppState};

/// Time budget for one verification.
const VERIFY_BUDGET: Duration = Duration::from_secs(2);

/// The replay cache in the store's expiring table (shared by every process on the store).
struct StoreReplay(Arc<dyn Store>);

impl ReplayCache for StoreReplay {
    fn insert_if_absent(&self, key: &str, expires_at_ms: i64) -> Result<bool, String> {
        self.0
            .insert_expiring_if_absent(tables::SAML_REPLAY, key, Vec::new(), expires_at_ms)
            .map_err(|e| e.to_string())
    }
}

/// Takes (single use) the login session named by RelayState and the matching cookie.
async fn take_session(
    state: &AppState,
    headers: &HeaderMap,
    relay: Option<&str>,
) -> Option<(String, LoginSession)> {
    let key = relay.filter(|k| valid_relay_key(k))?;
    let sid = cookie(headers, &format!("{COOKIE_PREFIX}{key}"))?;
    let store = state.db.store().clone();
    let hashed = sha256_hex(&sid);
    let now = super::now_ms();
    let bytes = tokio::task::spawn_blocking(move || {
        store.take_expiring(tables::SSO_LOGIN_SESSIONS, &hashed, now)
    })
    .await
    .ok()?
    .ok()??;
    let s: LoginSession = serde_json::from_slice(&bytes).ok()?;
    (s.relay_key == key).then(|| (key.to_string(), s))
}

fn form_field(body: &Bytes, name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[tracing::instrument(name = "sso.saml_acs", skip_all, fields(connection_id = %conn_id))]
pub async fn acs(
    State(state): State<AppState>,
    Path(conn_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(saml_response) = form_field(&body, "SAMLResponse") else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "SAMLResponse is missing.",
        );
    };
    let relay_state = form_field(&body, "RelayState");
    let record = match connections::load(&state, &conn_id) {
        Ok(r) => r,
        Err(_) => {
            return error_page(
                StatusCode::NOT_FOUND,
                "connection_invalid",
                "Unknown connection.",
            )
        }
    };
    let ProtocolSettings::Saml(saml) = &record.protocol else {
        return error_page(
            StatusCode::NOT_FOUND,
            "connection_invalid",
            "Not a SAML connection.",
        );
    };
    let (ip, ua) = client_info(&headers);
    let session = take_session(&state, &headers, relay_state.as_deref()).await;
    let clear = session.as_ref().map(|(k, _)| clear_cookie(&state, k));

    let dest = match &session {
        Some((_, s)) if s.connection_id == conn_id => Destination {
            client_id: s.client_id.clone(),
            redirect_uri: s.redirect_uri.clone(),
            state: s.state.clone(),
            code_challenge: s.code_challenge.clone(),
            ip: ip.clone(),
            user_agent: ua.clone(),
        },
        Some((_, s)) => {
            // A session for another connection: the response is not the one this browser asked for.
            let d = Destination {
                client_id: s.client_id.clone(),
                redirect_uri: s.redirect_uri.clone(),
                state: s.state.clone(),
                code_challenge: None,
                ip,
                user_agent: ua,
            };
            return with_cookie(
                fail_login(
                    &state,
                    &record,
                    &d,
                    "server_error",
                    "The SAML response does not match the login.",
                    None,
                )
                .await,
                clear,
            );
        }
        None => {
            // Unsolicited (IdP-initiated).
            let default = state.sso.config.default_redirect();
            let allowed: Vec<&str> = state
                .sso
                .config
                .redirect_uris
                .iter()
                .filter(|u| !u.contains('*'))
                .map(String::as_str)
                .collect();
            let target = relay_state
                .as_deref()
                .and_then(|rs| idbridge_saml::relay_state_redirect(rs, &allowed))
                .or(default);
            let Some(target) = target else {
                return error_page(
                    StatusCode::BAD_REQUEST,
                    "idp_initiated_sso_disabled",
                    "No login is in progress in this browser and no default redirect URI is configured.",
                );
            };
            if !saml.allow_idp_initiated {
                let org = record.connection.organization_id.clone();
                return error_redirect_with(
                    &target,
                    "idp_initiated_sso_disabled",
                    "IdP-initiated SSO is disabled for this connection.",
                    None,
                    &[
                        ("connection", Some(&conn_id)),
                        ("organization", org.as_deref()),
                    ],
                );
            }
            let client_id = match auth::client_id(state.db.store().as_ref()) {
                Ok(Some(c)) => c,
                _ => {
                    return error_page(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "server_error",
                        "Try again later.",
                    )
                }
            };
            Destination {
                client_id,
                redirect_uri: target,
                state: None,
                code_challenge: None,
                ip,
                user_agent: ua,
            }
        }
    };
    let expected = session
        .as_ref()
        .and_then(|(_, s)| s.saml_request_id.clone());

    let sp = match saml.sp_settings(&conn_id, state.sso.secrets.as_ref()) {
        Ok(sp) => sp,
        Err(e) => {
            tracing::error!(error = %e, "cannot load SP keys");
            return with_cookie(
                fail_login(
                    &state,
                    &record,
                    &dest,
                    "server_error",
                    "The connection is misconfigured.",
                    None,
                )
                .await,
                clear,
            );
        }
    };
    let idp = match saml.idp_settings() {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "cannot load IdP settings");
            return with_cookie(
                fail_login(
                    &state,
                    &record,
                    &dest,
                    "server_error",
                    "The connection is misconfigured.",
                    None,
                )
                .await,
                clear,
            );
        }
    };
    let ctx = ResponseContext {
        expected_in_response_to: expected,
        now: chrono::Utc::now(),
    };
    let replay: Arc<dyn ReplayCache> = Arc::new(StoreReplay(state.db.store().clone()));
    let verified = idbridge_saml::verify_post(
        saml_response,
        relay_state,
        ctx,
        Arc::new(sp),
        Arc::new(idp),
        replay,
        VERIFY_BUDGET,
    )
    .await;
    let assertion = match verified {
        Ok(a) => a,
        Err(e) => {
            // Details stay in the log: the browser learns only that the login failed.
            tracing::warn!(error = %e, "SAML response rejected");
            return with_cookie(
                fail_login(
                    &state,
                    &record,
                    &dest,
                    "server_error",
                    "The SAML response could not be verified.",
                    None,
                )
                .await,
                clear,
            );
        }
    };
    let mapped = idbridge_saml::map_profile(&assertion, &saml.attribute_map);
    let identity = Identity {
        idp_id: mapped.idp_id,
        email: mapped.email,
        first_name: mapped.first_name,
        last_name: mapped.last_name,
        name: None,
        groups: mapped.groups,
        custom_attributes: custom_json(mapped.custom_attributes),
    };
    with_cookie(
        complete_login(&state, &record, identity, &dest).await,
        clear,
    )
}

fn with_cookie(mut resp: Response, cookie: Option<String>) -> Response {
    if let Some(v) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}
