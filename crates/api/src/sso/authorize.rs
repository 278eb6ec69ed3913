//! `GET /sso/authorize` (workos-api.md §1.1): vet the client and redirect URI, pick the
//! connection, bind a login session to the browser and send it to the IdP.
//!
//! Until `client_id` and `redirect_uri` are vetted, failures are answered here (400) and never
//! redirected: an unvetted URI would make this endpoint an open redirector.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use idbridge_model::{parse_id, ConnectionState, IdPrefix, Organization};

use super::connections::{self, ConnectionRecord, ProtocolSettings};
use super::{
    auth_event_data, client_info, emit, error_page, error_redirect, found, random_token,
    redirect_uri, session_cookie, sha256_hex, ttl_ms, LoginSession,
};
use crate::body::Query;
use crate::{auth, tables, AppState};

/// The longest `state` we carry (it is echoed into URLs).
const MAX_STATE_LEN: usize = 2048;
const MAX_HINT_LEN: usize = 320;

/// A vetted request: from here on, errors go back to the app as redirects.
struct Vetted {
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
}

#[tracing::instrument(name = "sso.authorize", skip_all)]
pub async fn authorize(State(state): State<AppState>, headers: HeaderMap, q: Query) -> Response {
    let vetted = match vet(&state, &q) {
        Ok(v) => v,
        Err((status, code, message)) => return error_page(status, code, message),
    };
    let st = vetted.state.as_deref();
    let fail = |code: &str, desc: &str| error_redirect(&vetted.redirect_uri, code, desc, st);

    if q.get("response_type") != Some("code") {
        return fail("invalid_request", "response_type must be `code`.");
    }
    let code_challenge = q.get("code_challenge").map(str::to_string);
    match (q.get("code_challenge_method"), &code_challenge) {
        (Some("S256"), Some(_)) | (None, None) => {}
        (None, Some(_)) => {}
        (Some("S256"), None) => return fail("invalid_request", "code_challenge is missing."),
        (Some(_), _) => {
            return fail(
                "invalid_request",
                "Only the S256 code_challenge_method is supported.",
            )
        }
    }
    if code_challenge.as_deref().is_some_and(|c| {
        !(43..=128).contains(&c.len())
            || !c
                .chars()
                .all(|x| x.is_ascii_alphanumeric() || "-._~".contains(x))
    }) {
        return fail("invalid_request", "code_challenge is malformed.");
    }
    let login_hint = q.get("login_hint").filter(|h| h.len() <= MAX_HINT_LEN);
    let force_authn = q.get("prompt") == Some("login");

    let record = match select_connection(&state, &q) {
        Ok(r) => r,
        Err((code, desc)) => return fail(code, &desc),
    };
    if matches!(
        record.connection.state,
        ConnectionState::Inactive | ConnectionState::Deleting
    ) {
        return fail("connection_unlinked", "The connection is not active.");
    }
    let conn_id = record.connection.id.clone();
    let org_id = record.connection.organization_id.clone();
    let (ip, ua) = client_info(&headers);
    let mut session = LoginSession {
        connection_id: conn_id.clone(),
        organization_id: org_id.clone(),
        client_id: vetted.client_id.clone(),
        redirect_uri: vetted.redirect_uri.clone(),
        state: vetted.state.clone(),
        code_challenge,
        saml_request_id: None,
        relay_key: random_token(16),
        oidc_state: None,
        oidc_nonce: None,
        oidc_verifier_sealed: None,
        ip_address: ip.clone(),
        user_agent: ua.clone(),
    };
    let idp_url = match &record.protocol {
        ProtocolSettings::Saml(saml) => {
            match begin_saml(&state, &record, saml, &session.relay_key, force_authn) {
                Ok((request_id, url)) => {
                    session.saml_request_id = Some(request_id);
                    url
                }
                Err(e) => {
                    tracing::error!(connection_id = %conn_id, error = %e, "cannot build AuthnRequest");
                    return fail("server_error", "The SSO request could not be started.");
                }
            }
        }
        ProtocolSettings::Oidc(_) => {
            // Node sends `provider_scopes` repeated, Python comma-joined: get_list reads both.
            let extra_scopes = q.get_list("provider_scopes");
            let opts = idbridge_oidc::BeginOptions {
                login_hint,
                extra_scopes: &extra_scopes,
                force_login: force_authn,
            };
            match super::oidc_callback::begin(&state, &record, &opts).await {
                Ok((begin, sealed_verifier)) => {
                    // The cookie is named after the state the IdP echoes, so the callback can
                    // find this session without a RelayState.
                    session.relay_key = super::oidc_callback::relay_key_for_state(&begin.state);
                    session.oidc_state = Some(begin.state);
                    session.oidc_nonce = Some(begin.nonce);
                    session.oidc_verifier_sealed = Some(sealed_verifier);
                    begin.url.to_string()
                }
                Err(e) => {
                    tracing::error!(connection_id = %conn_id, error = %e, "cannot start OIDC login");
                    return fail("server_error", "The SSO request could not be started.");
                }
            }
        }
    };
    let session_id = random_token(32);
    let ttl = state.sso.config.login_ttl;
    let value = match serde_json::to_vec(&session) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode login session");
            return fail("server_error", "The SSO request could not be started.");
        }
    };
    let store = state.db.store().clone();
    let key = sha256_hex(&session_id);
    let expires = super::now_ms() + ttl_ms(ttl);
    let put = tokio::task::spawn_blocking(move || {
        store.put_expiring(tables::SSO_LOGIN_SESSIONS, &key, value, expires)
    })
    .await;
    if !matches!(put, Ok(Ok(()))) {
        tracing::error!("cannot store login session");
        return fail("server_error", "The SSO request could not be started.");
    }
    emit(
        &state,
        "authentication.sso_started",
        auth_event_data(
            "started",
            None,
            org_id.as_deref(),
            &conn_id,
            ip.as_deref(),
            ua.as_deref(),
            None,
        ),
        org_id.as_deref(),
    )
    .await;
    tracing::info!(connection_id = %conn_id, "SSO login started");
    let cookie = session_cookie(&state, &session.relay_key, &session_id, ttl);
    found(&idp_url, Some(&cookie))
}

/// Checks `client_id` and `redirect_uri`; failures are answered with a 400 (no redirect).
/// Why a request could not be vetted: answered as a page, never redirected.
type Rejection = (StatusCode, &'static str, &'static str);

fn vet(state: &AppState, q: &Query) -> Result<Vetted, Rejection> {
    let expected = match auth::client_id(state.db.store().as_ref()) {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Err((
                StatusCode::BAD_REQUEST,
                "invalid_client",
                "This environment has no client id yet.",
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, "store error reading the client id");
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "Try again later.",
            ));
        }
    };
    let client_id = q.get("client_id").unwrap_or("");
    if client_id != expected {
        return Err((
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "Invalid client ID.",
        ));
    }
    let Some(uri) = q.get("redirect_uri") else {
        return Err((
            StatusCode::BAD_REQUEST,
            "invalid_redirect_uri",
            "redirect_uri is required.",
        ));
    };
    if !redirect_uri::is_allowed(&state.sso.config.redirect_uris, uri) {
        return Err((
            StatusCode::BAD_REQUEST,
            "invalid_redirect_uri",
            "redirect_uri is not in the allow-list of this environment.",
        ));
    }
    let st = q.get("state");
    if st.is_some_and(|s| s.len() > MAX_STATE_LEN) {
        return Err((
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "state is too long.",
        ));
    }
    Ok(Vetted {
        client_id: client_id.to_string(),
        redirect_uri: uri.to_string(),
        state: st.map(str::to_string),
    })
}

/// Resolves `connection` / `organization` / `provider` / `domain` to one connection.
fn select_connection(
    state: &AppState,
    q: &Query,
) -> Result<ConnectionRecord, (&'static str, String)> {
    let server_error = |e: crate::ApiError| {
        tracing::error!(error = %e, "store error selecting a connection");
        (
            "server_error",
            "The SSO request could not be started.".to_string(),
        )
    };
    if q.get("domain").is_some() {
        return Err((
            "domain_connection_selector_not_allowed",
            "The domain parameter is deprecated; use connection or organization.".into(),
        ));
    }
    let conn = q.get("connection");
    let org = q.get("organization");
    let provider = q.get("provider");
    let given = [conn.is_some(), org.is_some(), provider.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if given != 1 {
        return Err((
            "invalid_connection_selector",
            "Exactly one of connection, organization or provider is required.".into(),
        ));
    }
    if let Some(p) = provider {
        return Err((
            "connection_strategy_invalid",
            format!("The OAuth provider {p:?} is not supported by this server."),
        ));
    }
    if let Some(id) = conn {
        return match connections::load(state, id) {
            Ok(r) => Ok(r),
            Err(crate::ApiError::NotFound { .. }) => Err((
                "connection_invalid",
                format!("No connection found with id {id}."),
            )),
            Err(e) => Err(server_error(e)),
        };
    }
    let org_id = org.unwrap_or_default();
    let exists = parse_id(IdPrefix::Organization, org_id).is_ok()
        && state
            .db
            .get_json::<Organization>(tables::ORGANIZATIONS, org_id)
            .map_err(server_error)?
            .is_some();
    if !exists {
        return Err((
            "organization_invalid",
            format!("No organization found with id {org_id}."),
        ));
    }
    let ids = connections::org_connection_ids(state, org_id).map_err(server_error)?;
    let mut usable = Vec::new();
    for id in ids {
        match connections::load(state, &id) {
            Ok(r)
                if !matches!(
                    r.connection.state,
                    ConnectionState::Inactive | ConnectionState::Deleting
                ) =>
            {
                usable.push(r)
            }
            Ok(_) | Err(crate::ApiError::NotFound { .. }) => {}
            Err(e) => return Err(server_error(e)),
        }
    }
    match usable.len() {
        0 => Err((
            "organization_invalid",
            "No connection associated with organization.".into(),
        )),
        1 => Ok(usable.remove(0)),
        _ => Err((
            "ambiguous_connection_selector",
            "The organization has more than one connection; select one with the connection parameter.".into(),
        )),
    }
}

/// Builds the AuthnRequest (signed when the connection or IdP asks); RelayState is our
/// per-login key.
fn begin_saml(
    state: &AppState,
    record: &ConnectionRecord,
    saml: &connections::SamlConnection,
    relay_key: &str,
    force_authn: bool,
) -> Result<(String, String), crate::ApiError> {
    let needs_keys = saml.sign_requests || saml.idp_wants_signed_requests;
    let sp = saml.sp_settings(
        record.id(),
        if needs_keys {
            state.sso.secrets.as_ref()
        } else {
            None
        },
    )?;
    let idp = saml.idp_settings()?;
    let r = idbridge_saml::build_authn_request(&sp, &idp, Some(relay_key), force_authn)
        .map_err(crate::ApiError::internal)?;
    Ok((r.request_id, r.url))
}
