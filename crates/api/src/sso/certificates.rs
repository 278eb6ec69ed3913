//! The SAML certificate sub-resources of a connection (py10 `sso.list|create|delete_connection_
//! saml_idp_signing_cert(s)`, `..._sp_encryption_cert(s)`, `..._sp_signing_cert`) over
//! `idbridge_sso::connections::certificates`. Neither `@workos/openapi-spec` nor the Node SDK
//! has them; shapes follow the Python SDK's models.
//!
//! - `GET|POST /connections/{id}/saml_idp_signing_certs` (`{value: PEM}`: 422 when it is not a
//!   PEM certificate, is expired or has an unusable key; 409 when already trusted),
//!   `DELETE .../{cert_id}` (400 `last_certificate` for the only one).
//! - `GET|POST /connections/{id}/saml_sp_encryption_certs` (no body: a new key pair),
//!   `DELETE .../{cert_id}`.
//! - `GET|POST /connections/{id}/saml_sp_signing_cert` (404 / 409 when there is none / one),
//!   `DELETE .../{cert_id}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use idbridge_sso::connections::certificates::{
    check_idp_certificate, explain_certificate_problem, CertificateKind, SamlCertificate,
};
use serde_json::{json, Value};

use crate::body::{Fields, JsonObject};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/connections/{id}/saml_idp_signing_certs",
            get(list_idp).post(create_idp),
        )
        .route(
            "/connections/{id}/saml_idp_signing_certs/{cert_id}",
            delete(delete_idp),
        )
        .route(
            "/connections/{id}/saml_sp_encryption_certs",
            get(list_encryption).post(create_encryption),
        )
        .route(
            "/connections/{id}/saml_sp_encryption_certs/{cert_id}",
            delete(delete_encryption),
        )
        .route(
            "/connections/{id}/saml_sp_signing_cert",
            get(get_signing).post(create_signing),
        )
        .route(
            "/connections/{id}/saml_sp_signing_cert/{cert_id}",
            delete(delete_signing),
        )
}

fn list(state: &AppState, id: &str, kind: CertificateKind) -> ApiResult<Json<Value>> {
    let data = state.sso.saml_certificates(id, kind)?;
    Ok(Json(json!({"object": "list", "data": data})))
}

async fn list_idp(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    list(&state, &id, CertificateKind::IdpSigning)
}

async fn list_encryption(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    list(&state, &id, CertificateKind::SpEncryption)
}

async fn get_signing(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<SamlCertificate>> {
    Ok(Json(state.sso.sp_signing_certificate(&id)?))
}

async fn create_idp(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<(StatusCode, Json<SamlCertificate>)> {
    // An unknown connection is 404 before the body is judged.
    state.sso.connection(&id)?;
    let mut f = Fields::new(&body);
    f.deny_unknown(&["value"]);
    let value = f.required_string("value");
    f.finish()?;
    let value = value.unwrap_or_default();
    if let Err(code) = check_idp_certificate(&value) {
        return Err(ApiError::Validation(vec![
            FieldError::new("value", code).with_message(explain_certificate_problem(code))
        ]));
    }
    let cert = state.sso.add_idp_signing_certificate(&id, &value).await?;
    Ok((StatusCode::CREATED, Json(cert)))
}

/// The SP certificates take no body: anything in it is a 422 naming it.
async fn create_sp(
    state: &AppState,
    id: &str,
    body: &serde_json::Map<String, Value>,
    kind: CertificateKind,
) -> ApiResult<(StatusCode, Json<SamlCertificate>)> {
    state.sso.connection(id)?;
    let mut f = Fields::new(body);
    f.deny_unknown(&[]);
    f.finish()?;
    let cert = state.sso.generate_sp_certificate(id, kind).await?;
    Ok((StatusCode::CREATED, Json(cert)))
}

async fn create_encryption(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<(StatusCode, Json<SamlCertificate>)> {
    create_sp(&state, &id, &body, CertificateKind::SpEncryption).await
}

async fn create_signing(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<(StatusCode, Json<SamlCertificate>)> {
    create_sp(&state, &id, &body, CertificateKind::SpSigning).await
}

async fn delete_kind(
    state: &AppState,
    id: &str,
    cert_id: &str,
    kind: CertificateKind,
) -> ApiResult<StatusCode> {
    state.sso.delete_saml_certificate(id, kind, cert_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_idp(
    State(state): State<AppState>,
    Path((id, cert_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    delete_kind(&state, &id, &cert_id, CertificateKind::IdpSigning).await
}

async fn delete_encryption(
    State(state): State<AppState>,
    Path((id, cert_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    delete_kind(&state, &id, &cert_id, CertificateKind::SpEncryption).await
}

async fn delete_signing(
    State(state): State<AppState>,
    Path((id, cert_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    delete_kind(&state, &id, &cert_id, CertificateKind::SpSigning).await
}
