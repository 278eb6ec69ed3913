//! Profiles (workos-api.md §1.4): identity → Profile with a stable id and roles, the
//! single-use code handed to the app, and `GET /sso/profile`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use idbridge_model::tag::ProfileTag;
use idbridge_model::{new_id, Profile, RoleRef};
use idbridge_store::{ChangeSet, StoreError};
use serde_json::Value;

use super::connections::{self, ConnectionRecord};
use super::{
    auth_event_data, emit, found, random_token, sha256_hex, ttl_ms, with_params, CodeRecord,
    TokenRecord,
};
use crate::error::{ApiError, ApiResult};
use crate::{tables, AppState};

/// What a protocol produced, before ids and roles.
#[derive(Debug, Clone)]
pub struct Identity {
    pub idp_id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub name: Option<String>,
    pub groups: Vec<String>,
    pub custom_attributes: serde_json::Map<String, Value>,
}

/// The stable `prof_…` id of (connection, idp_id), created on first sight.
async fn profile_id(state: &AppState, conn_id: &str, idp_id: &str) -> ApiResult<String> {
    let key = format!("{conn_id}/{}", sha256_hex(idp_id));
    if let Some(id) = state.db.get_raw(tables::SSO_PROFILE_IDS, &key)? {
        return String::from_utf8(id).map_err(ApiError::internal);
    }
    let id = new_id(idbridge_model::IdPrefix::Profile);
    let mut cs = ChangeSet::default();
    cs.require_absent(tables::SSO_PROFILE_IDS, &key);
    cs.put(tables::SSO_PROFILE_IDS, &key, id.as_bytes().to_vec());
    match state.db.commit(cs).await? {
        Ok(_) => Ok(id),
        // A parallel first login won: use its id.
        Err(StoreError::Conflict(_)) => state
            .db
            .get_raw(tables::SSO_PROFILE_IDS, &key)?
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| ApiError::internal("profile id vanished")),
        Err(e) => Err(e.into()),
    }
}

/// The organization's roles for these IdP groups, from the directory engine's role settings
/// (`dsync.roles`, `dsync.role_mappings`, `dsync.role_modes`: the same ones directory users get
/// their roles from): `(role, roles)` in the wire form, both `None` when no roles exist.
pub fn roles_for(
    state: &AppState,
    org_id: Option<&str>,
    groups: &[String],
) -> ApiResult<(Option<RoleRef>, Option<Vec<RoleRef>>)> {
    let Some(org_id) = org_id else {
        return Ok((None, None));
    };
    let (role, roles) = state
        .directory
        .resolve_org_roles(org_id, groups)
        .map_err(ApiError::internal)?;
    Ok((role, roles.filter(|r| !r.is_empty())))
}

const OUTSIDE_ORG: &str = "profile_not_allowed_outside_organization";

/// An organization with domains and `allow_profiles_outside_organization: false` only admits
/// emails in its verified domains (workos-api.md §1.1). Organizations without domains admit all.
fn check_domain(state: &AppState, org_id: Option<&str>, email: &str) -> ApiResult<()> {
    let Some(org_id) = org_id else {
        return Ok(());
    };
    let Some(org) = state
        .db
        .get_json::<idbridge_model::Organization>(tables::ORGANIZATIONS, org_id)?
    else {
        return Ok(());
    };
    let verified: Vec<&str> = org
        .domains
        .iter()
        .filter(|d| d.state == idbridge_model::DomainState::Verified)
        .map(|d| d.domain.as_str())
        .collect();
    if org.allow_profiles_outside_organization || verified.is_empty() {
        return Ok(());
    }
    let domain = email
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
        .unwrap_or_default();
    if verified.iter().any(|d| *d == domain) {
        Ok(())
    } else {
        Err(ApiError::BadRequest {
            code: OUTSIDE_ORG,
            message: "The email domain is not one of the organization's domains.".into(),
        })
    }
}

/// Builds the Profile for an identity on a connection.
pub async fn build_profile(
    state: &AppState,
    record: &ConnectionRecord,
    id: Identity,
) -> ApiResult<Profile> {
    let email = id
        .email
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| ApiError::BadRequest {
            code: "email_missing",
            message: "The identity provider sent no email address.".into(),
        })?;
    let org_id = record.connection.organization_id.clone();
    check_domain(state, org_id.as_deref(), &email)?;
    let (role, roles) = roles_for(state, org_id.as_deref(), &id.groups)?;
    let name = id.name.or_else(|| match (&id.first_name, &id.last_name) {
        (Some(f), Some(l)) => Some(format!("{f} {l}")),
        (Some(f), None) => Some(f.clone()),
        (None, Some(l)) => Some(l.clone()),
        (None, None) => None,
    });
    Ok(Profile {
        object: ProfileTag,
        id: profile_id(state, record.id(), &id.idp_id).await?,
        idp_id: id.idp_id,
        organization_id: org_id,
        connection_id: record.connection.id.clone(),
        connection_type: record.connection.connection_type.clone(),
        email,
        first_name: id.first_name,
        last_name: id.last_name,
        name,
        role,
        roles,
        groups: id.groups,
        custom_attributes: id.custom_attributes,
        raw_attributes: serde_json::Map::new(),
    })
}

/// Converts optional custom values to JSON (`null` for attributes the IdP did not send).
pub fn custom_json(m: BTreeMap<String, Option<String>>) -> serde_json::Map<String, Value> {
    m.into_iter()
        .map(|(k, v)| (k, v.map(Value::String).unwrap_or(Value::Null)))
        .collect()
}

/// Where a finished login goes.
pub struct Destination {
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// Completes a verified login: profile, single-use code, events, 302 to the app.
pub async fn complete_login(
    state: &AppState,
    record: &ConnectionRecord,
    identity: Identity,
    dest: &Destination,
) -> Response {
    let conn_id = record.id().to_string();
    let org_id = record.connection.organization_id.clone();
    let profile = match build_profile(state, record, identity).await {
        Ok(p) => p,
        Err(e) => {
            let (code, msg) = match &e {
                ApiError::BadRequest {
                    code: OUTSIDE_ORG,
                    message,
                } => (OUTSIDE_ORG, message.clone()),
                ApiError::BadRequest { message, .. } => ("server_error", message.clone()),
                _ => (
                    "server_error",
                    "The profile could not be built.".to_string(),
                ),
            };
            tracing::warn!(connection_id = %conn_id, error = %e, "login failed after verification");
            return fail_login(state, record, dest, code, &msg, None).await;
        }
    };
    let code = random_token(32);
    let rec = CodeRecord {
        client_id: dest.client_id.clone(),
        redirect_uri: dest.redirect_uri.clone(),
        code_challenge: dest.code_challenge.clone(),
        profile: profile.clone(),
    };
    let stored = match serde_json::to_vec(&rec) {
        Ok(v) => {
            let store = state.db.store().clone();
            let key = sha256_hex(&code);
            let exp = super::now_ms() + ttl_ms(state.sso.config.code_ttl);
            matches!(
                tokio::task::spawn_blocking(move || store.put_expiring(
                    tables::SSO_CODES,
                    &key,
                    v,
                    exp
                ))
                .await,
                Ok(Ok(()))
            )
        }
        Err(_) => false,
    };
    if !stored {
        return fail_login(
            state,
            record,
            dest,
            "server_error",
            "The login could not be completed.",
            Some(&profile.email),
        )
        .await;
    }
    let mut cs = ChangeSet::default();
    crate::events::append(
        &mut cs,
        "authentication.sso_succeeded",
        auth_event_data(
            "succeeded",
            Some(&profile.email),
            org_id.as_deref(),
            &conn_id,
            dest.ip.as_deref(),
            dest.user_agent.as_deref(),
            None,
        ),
        org_id.as_deref(),
    );
    if let Err(e) = state.db.commit_ok(cs).await {
        tracing::error!(error = %e, "could not record sso_succeeded");
    }
    activate_if_first(state, record).await;
    tracing::info!(connection_id = %conn_id, profile_id = %profile.id, "SSO login succeeded");
    match with_params(
        &dest.redirect_uri,
        &[("code", Some(&code)), ("state", dest.state.as_deref())],
    ) {
        Some(loc) => found(&loc, None),
        None => super::error_page(
            StatusCode::BAD_REQUEST,
            "server_error",
            "Invalid redirect URI.",
        ),
    }
}

/// Emits `connection.activated` once, on the first successful login. A concurrent first
/// login may win the race; then there is nothing left to do.
async fn activate_if_first(state: &AppState, record: &ConnectionRecord) {
    // Re-read: the record may have been activated since the login started.
    let Ok(current) = connections::load(state, record.id()) else {
        return;
    };
    let mut cs = ChangeSet::default();
    match connections::stage_activation(&mut cs, state, &current) {
        Ok(true) => match state.db.commit(cs).await {
            Ok(Ok(_)) => tracing::info!(connection_id = %record.id(), "connection activated"),
            Ok(Err(StoreError::Conflict(_))) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "could not activate connection"),
            Err(e) => tracing::error!(error = %e, "could not activate connection"),
        },
        Ok(false) => {}
        Err(e) => tracing::error!(error = %e, "could not activate connection"),
    }
}

/// Records `authentication.sso_failed` and redirects the app with the error.
pub async fn fail_login(
    state: &AppState,
    record: &ConnectionRecord,
    dest: &Destination,
    code: &str,
    message: &str,
    email: Option<&str>,
) -> Response {
    let org_id = record.connection.organization_id.as_deref();
    emit(
        state,
        "authentication.sso_failed",
        auth_event_data(
            "failed",
            email,
            org_id,
            record.id(),
            dest.ip.as_deref(),
            dest.user_agent.as_deref(),
            Some((code, message)),
        ),
        org_id,
    )
    .await;
    super::error_redirect(&dest.redirect_uri, code, message, dest.state.as_deref())
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({"error": "Unauthorized"})),
    )
        .into_response()
}

/// `GET /sso/profile` with `Authorization: Bearer <access token>`.
#[tracing::instrument(name = "sso.profile", skip_all)]
pub async fn get_profile(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string())
        .filter(|t| !t.is_empty() && t.len() <= 256)
    else {
        return unauthorized();
    };
    let store = state.db.store().clone();
    let key = sha256_hex(&token);
    let now = super::now_ms();
    let found = tokio::task::spawn_blocking(move || {
        store.get_expiring(tables::SSO_ACCESS_TOKENS, &key, now)
    })
    .await;
    match found {
        Ok(Ok(Some(bytes))) => match serde_json::from_slice::<TokenRecord>(&bytes) {
            Ok(rec) => Json(rec.profile).into_response(),
            Err(e) => ApiError::internal(format!("corrupt token record: {e}")).into_response(),
        },
        Ok(Ok(None)) => unauthorized(),
        Ok(Err(e)) => ApiError::from(e).into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}
