//! `POST /portal/generate_link`: WorkOS's Admin Portal link (`{link}`, 201), for one
//! organization and one intent. The link itself, its single use and the portal pages are
//! `idbridge_console`'s; this handler parses the body and maps errors to WorkOS's shapes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use idbridge_console::portal::{self, Intent};
use serde_json::{json, Value};

use crate::body::{Fields, JsonObject};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/portal/generate_link", post(generate_link))
}

/// Every field the Node (`generateLink`) and Python (`admin_portal.generate_link`) SDKs send.
const KNOWN: &[&str] = &[
    "organization",
    "intent",
    "return_url",
    "success_url",
    "intent_options",
    "admin_emails",
    "it_contact_emails",
    "external_user_id",
];

async fn generate_link(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let mut f = Fields::new(&body);
    crate::organization_domains::deny_unknown(&mut f, &body, KNOWN);
    let organization = f.required_string("organization");
    // Optional in WorkOS's spec; the portal then opens on SSO setup.
    let intent = match f.opt_string("intent") {
        None => Some(Intent::Sso),
        Some(s) => match Intent::parse(&s) {
            Some(i) => Some(i),
            None => {
                f.error(
                    "intent",
                    "must_be_one_of_sso_dsync_domain_verification_certificate_renewal",
                );
                None
            }
        },
    };
    let mut urls = [None, None];
    for (slot, key) in urls.iter_mut().zip(["return_url", "success_url"]) {
        if let Some(u) = f.opt_string(key) {
            if crate::sso::connections::valid_http_url(&u) {
                *slot = Some(u);
            } else {
                f.error(key, "invalid_url");
            }
        }
    }
    // Emails to IT contacts and SDK-side intent options are WorkOS-hosted features idbridge
    // does not have: refused when given rather than silently dropped.
    for key in ["admin_emails", "it_contact_emails"] {
        if f.opt_array(key).is_some_and(|a| !a.is_empty()) {
            f.error(key, "not_supported_idbridge_sends_no_email");
        }
    }
    if f.opt_object("intent_options")
        .is_some_and(|o| !o.is_empty())
    {
        f.error("intent_options", "not_supported");
    }
    let external_user_id = f.opt_string("external_user_id");
    f.finish()?;
    let (Some(organization), Some(intent)) = (organization, intent) else {
        return Err(ApiError::Internal("checked fields missing".into()));
    };
    let org = state
        .sso
        .organizations()
        .get(&organization)?
        .ok_or_else(|| ApiError::not_found("Organization", organization.clone()))?;
    let [return_url, success_url] = urls;
    let store = state.store.clone();
    let org_id = org.id.clone();
    let token = tokio::task::spawn_blocking(move || {
        portal::create_link(
            store.as_ref(),
            &org_id,
            intent,
            return_url,
            success_url,
            external_user_id,
            idbridge_model::Timestamp::now().as_millis(),
        )
    })
    .await
    .map_err(|e| ApiError::Internal(format!("portal link task failed: {e}")))??;
    let link = format!("{}/portal/launch?token={token}", state.config.public_url);
    tracing::info!(organization = %org.id, intent = intent.as_str(), "admin portal link generated");
    Ok((StatusCode::CREATED, Json(json!({ "link": link }))))
}
