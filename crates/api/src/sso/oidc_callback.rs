//! OIDC connections: starting a login (from `/sso/authorize`) and `GET /sso/oidc/callback`.
//!
//! The provider's `state` names the browser's session cookie; `OidcClient::finish` compares it
//! with the stored one and checks nonce and PKCE. IdP error callbacks become WorkOS error
//! redirects through `map_idp_error`.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use idbridge_oidc::{
    map_idp_error, BeginAuth, BeginOptions, FinishParams, OidcClient, OidcSettings, Secret,
};

use super::connections::{self, ConnectionRecord, OidcConnection, ProtocolSettings};
use super::profile::{complete_login, fail_login, Destination, Identity};
use super::{
    clear_cookie, client_info, cookie, error_page, sha256_hex, LoginSession, COOKIE_PREFIX,
};
use crate::body::Query;
use crate::error::ApiError;
use crate::{tables, AppState};

/// The cookie suffix for an OIDC login: derived from the `state` the provider echoes.
pub fn relay_key_for_state(state: &str) -> String {
    sha256_hex(state)[..32].to_string()
}

pub fn callback_url(state: &AppState) -> String {
    format!("{}/sso/oidc/callback", state.config.public_url)
}

/// The client secret: unsealed from the record, or read from the named environment variable.
fn client_secret(state: &AppState, conn_id: &str, o: &OidcConnection) -> Result<Secret, ApiError> {
    if let Some(var) = &o.client_secret_env {
        return Secret::from_env(var).map_err(ApiError::internal);
    }
    let sealed = o
        .client_secret_sealed
        .as_deref()
        .ok_or_else(|| ApiError::internal("OIDC connection has no client secret"))?;
    let plain = state
        .sso
        .secrets()
        .and_then(|b| b.open(&format!("{conn_id}/oidc_client_secret"), sealed))
        .map_err(ApiError::internal)?;
    String::from_utf8(plain)
        .map(Secret::new)
        .map_err(ApiError::internal)
}

fn client_for(
    state: &AppState,
    record: &ConnectionRecord,
) -> Result<std::sync::Arc<OidcClient>, ApiError> {
    let ProtocolSettings::Oidc(o) = &record.protocol else {
        return Err(ApiError::internal("not an OIDC connection"));
    };
    let http = state
        .sso
        .http
        .clone()
        .ok_or_else(|| ApiError::internal("no HTTP client"))?;
    state
        .sso
        .oidc_client(record.id(), record.version(), || {
            let t = record
                .connection
                .connection_type
                .parse()
                .unwrap_or(idbridge_oidc::ConnectionType::GenericOidc);
            let secret = client_secret(state, record.id(), o)
                .map_err(|e| idbridge_oidc::OidcError::InvalidSettings(e.to_string()))?;
            let mut s = OidcSettings::new(t, o.issuer.clone(), o.client_id.clone(), secret);
            if let Some(d) = &o.discovery_url {
                s.discovery_url = url::Url::parse(d).ok();
            }
            s.scopes = o.scopes.clone();
            s.claim_map = o.claim_map.clone();
            OidcClient::new(s, http)
        })
        .map_err(ApiError::internal)
}

/// Starts an OIDC login; returns the provider URL parts and the sealed PKCE verifier.
pub async fn begin(
    state: &AppState,
    record: &ConnectionRecord,
    opts: &BeginOptions<'_>,
) -> Result<(BeginAuth, String), ApiError> {
    let client = client_for(state, record)?;
    let redirect = url::Url::parse(&callback_url(state)).map_err(ApiError::internal)?;
    let b = client
        .begin_with(&redirect, opts)
        .await
        .map_err(ApiError::internal)?;
    // The verifier is sealed even in the short-lived session: it is a credential.
    let sealed = state
        .sso
        .secrets()
        .and_then(|s| {
            s.seal(
                &format!("{}/pkce", record.id()),
                b.pkce_verifier.expose().as_bytes(),
            )
        })
        .map_err(ApiError::internal)?;
    Ok((b, sealed))
}

#[tracing::instrument(name = "sso.oidc_callback", skip_all)]
pub async fn callback(State(state): State<AppState>, headers: HeaderMap, q: Query) -> Response {
    let Some(returned_state) = q.get("state").filter(|s| s.len() <= 512) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "state is missing.",
        );
    };
    let key = relay_key_for_state(returned_state);
    let Some(sid) = cookie(&headers, &format!("{COOKIE_PREFIX}{key}")) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "No login is in progress in this browser.",
        );
    };
    let store = state.db.store().clone();
    let hashed = sha256_hex(&sid);
    let now = super::now_ms();
    let taken = tokio::task::spawn_blocking(move || {
        store.take_expiring(tables::SSO_LOGIN_SESSIONS, &hashed, now)
    })
    .await;
    let Some(session) = taken
        .ok()
        .and_then(Result::ok)
        .flatten()
        .and_then(|b| serde_json::from_slice::<LoginSession>(&b).ok())
    else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The login expired or was already completed.",
        );
    };
    let clear = clear_cookie(&state, &key);
    let resp = finish(&state, &headers, &q, returned_state, session).await;
    let mut resp = resp;
    if let Ok(v) = HeaderValue::from_str(&clear) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

async fn finish(
    state: &AppState,
    headers: &HeaderMap,
    q: &Query,
    returned_state: &str,
    session: LoginSession,
) -> Response {
    let (ip, ua) = client_info(headers);
    let dest = Destination {
        client_id: session.client_id.clone(),
        redirect_uri: session.redirect_uri.clone(),
        state: session.state.clone(),
        code_challenge: session.code_challenge.clone(),
        ip,
        user_agent: ua,
    };
    let record = match connections::load(state, &session.connection_id) {
        Ok(r) => r,
        Err(_) => {
            return super::error_redirect(
                &dest.redirect_uri,
                "connection_invalid",
                "The connection no longer exists.",
                dest.state.as_deref(),
            )
        }
    };
    if let Some(err) = q.get("error") {
        let (code, desc) = map_idp_error(err, q.get("error_description"));
        return fail_login(state, &record, &dest, code, &desc, None).await;
    }
    let Some(code) = q.get("code") else {
        return fail_login(
            state,
            &record,
            &dest,
            "oauth_failed",
            "The identity provider returned no code.",
            None,
        )
        .await;
    };
    let verifier = match session.oidc_verifier_sealed.as_deref().map(|s| {
        state
            .sso
            .secrets()
            .and_then(|b| b.open(&format!("{}/pkce", record.id()), s))
    }) {
        Some(Ok(v)) => String::from_utf8(v).unwrap_or_default(),
        _ => String::new(),
    };
    let client = match client_for(state, &record) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build OIDC client");
            return fail_login(
                state,
                &record,
                &dest,
                "server_error",
                "The connection is misconfigured.",
                None,
            )
            .await;
        }
    };
    let redirect = match url::Url::parse(&callback_url(state)) {
        Ok(u) => u,
        Err(_) => {
            return fail_login(
                state,
                &record,
                &dest,
                "server_error",
                "Bad callback URL.",
                None,
            )
            .await
        }
    };
    let expected_state = session.oidc_state.clone().unwrap_or_default();
    let nonce = session.oidc_nonce.clone().unwrap_or_default();
    let code = code.to_string();
    let returned_state = returned_state.to_string();
    let returned_iss = q.get("iss").map(str::to_string);
    // `OidcClient::finish`'s future is not `Send` (idbridge-oidc holds a form serializer across
    // an await), so it runs to completion on a blocking-pool thread of this runtime.
    let handle = tokio::runtime::Handle::current();
    let joined = tokio::task::spawn_blocking(move || {
        handle.block_on(async move {
            client
                .finish(FinishParams {
                    code: &code,
                    returned_state: &returned_state,
                    expected_state: &expected_state,
                    returned_iss: returned_iss.as_deref(),
                    nonce: &nonce,
                    pkce_verifier: &verifier,
                    redirect_uri: &redirect,
                })
                .await
        })
    })
    .await;
    let result = match joined {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "OIDC finish task failed");
            return fail_login(
                state,
                &record,
                &dest,
                "server_error",
                "The login could not be completed.",
                None,
            )
            .await;
        }
    };
    let identity = match result {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "OIDC login rejected");
            let code = e.workos_error_code();
            return fail_login(
                state,
                &record,
                &dest,
                code,
                "The OpenID Connect login could not be verified.",
                None,
            )
            .await;
        }
    };
    let identity = Identity {
        idp_id: identity.idp_id,
        email: Some(identity.email),
        first_name: identity.first_name,
        last_name: identity.last_name,
        name: identity.name,
        groups: identity.groups,
        custom_attributes: identity.custom_attributes.into_iter().collect(),
    };
    complete_login(state, &record, identity, &dest).await
}
