//! `POST /sso/logout/authorize` (API key) and `GET /sso/logout?token=` (the browser), as WorkOS
//! defines them (workos-api.md §1); the flow is `idbridge_sso::login::logout`.

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use idbridge_sso::login::{LogoutAuthorization, LogoutError, SloBinding, SloOutcome};
use serde_json::json;

use crate::body::{Fields, JsonObject, Query};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// The API-key route.
pub fn routes() -> Router<AppState> {
    Router::new().route("/sso/logout/authorize", post(authorize))
}

async fn authorize(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<LogoutAuthorization>> {
    let mut f = Fields::new(&body);
    for key in body.keys().filter(|k| k.as_str() != "profile_id") {
        f.error(key, "unknown_field");
    }
    let profile_id = f.required_string("profile_id");
    f.finish()?;
    let profile_id = profile_id.unwrap_or_default();
    Ok(Json(state.sso.authorize_logout(&profile_id).await?))
}

/// The browser's redirect to the IdP's sign-out; a bad token is the spec's 404 `{message}`.
pub async fn logout(State(state): State<AppState>, query: Query) -> Response {
    let Some(token) = query.get("token") else {
        return not_found("token is missing: redirect to the logout_url that POST /sso/logout/authorize returned.");
    };
    match state.sso.logout(token).await {
        Ok(location) => super::found(&location, None),
        Err(e @ (LogoutError::TokenInvalid | LogoutError::SessionGone)) => {
            not_found(&e.to_string())
        }
        Err(LogoutError::Sso(e)) => {
            tracing::error!(error = %e, "single logout failed");
            ApiError::from(e).into_response()
        }
    }
}

fn not_found(message: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"message": message, "code": "logout_token_invalid"})),
    )
        .into_response()
}

/// `GET /sso/saml/slo/{conn_id}`: our SingleLogoutService (HTTP-Redirect). The query string is
/// passed on exactly as received: the IdP's signature covers those octets.
pub async fn saml_slo(
    State(state): State<AppState>,
    Path(conn_id): Path<String>,
    uri: Uri,
) -> Response {
    slo_reply(
        state
            .sso
            .saml_slo(&conn_id, uri.query().unwrap_or(""))
            .await,
    )
}

/// `POST /sso/saml/slo/{connection}`: the HTTP-POST binding (a form with `SAMLRequest` or
/// `SAMLResponse`, enveloped XML signature).
pub async fn saml_slo_post(
    State(state): State<AppState>,
    Path(conn_id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let request = super::flow::form_field(&body, "SAMLRequest");
    let response = super::flow::form_field(&body, "SAMLResponse");
    let relay_state = super::flow::form_field(&body, "RelayState");
    let (param, message) = match (&request, &response) {
        (Some(m), None) => ("SAMLRequest", m.as_str()),
        (None, Some(m)) => ("SAMLResponse", m.as_str()),
        // Neither or both: nothing that can be verified.
        _ => ("", ""),
    };
    let binding = SloBinding::Post {
        param,
        message,
        relay_state: relay_state.as_deref(),
    };
    slo_reply(state.sso.saml_slo_message(&conn_id, binding).await)
}

fn slo_reply(outcome: SloOutcome) -> Response {
    match outcome {
        SloOutcome::Redirect(location) | SloOutcome::RespondToIdp(location) => {
            super::found(&location, None)
        }
        SloOutcome::SignedOut => (
            StatusCode::OK,
            Json(json!({"message": "Signed out at the identity provider."})),
        )
            .into_response(),
        SloOutcome::Refused => super::error_page(
            StatusCode::BAD_REQUEST,
            "invalid_logout_message",
            "The logout message could not be verified.",
        ),
    }
}
