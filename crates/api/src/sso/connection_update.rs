//! `PATCH /connections/{id}` (py10 `sso.update_connection`, and `{"state": "active" |
//! "inactive"}`) over `idbridge_sso::connections::update`. Only the fields sent change;
//! `attribute_maps`, `saml_options` and `oidc_options` are partial too, and a `null` puts a
//! field back to its default (the SDK's documented semantics). Values are checked as on
//! `POST /connections`; every unknown key, nested ones included, is a 422 naming it.

use axum::extract::{Path, State};
use axum::routing::patch;
use axum::{Json, Router};
use idbridge_model::Connection;
use idbridge_sso::connections::patch::{OidcOptionsPatch, Patch, ProtocolPatch, SamlOptionsPatch};
use idbridge_sso::connections::update::{ConnectionChanges, RequestedState};
use serde_json::{Map, Value};

use super::connections::{
    check_urls, opt_str, parse_clock_skew, parse_idp_certs, parse_scopes, read_attribute_maps,
    read_claim_map, read_client_secret, refuse_sp_key_pairs, refuse_unknown,
    refuse_unsupported_oidc_options, SAML_OPTION_FIELDS,
};
use crate::body::{Fields, JsonObject};
use crate::error::ApiResult;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/connections/{id}", patch(update))
}

const PATCH_FIELDS: [&str; 7] = [
    "name",
    "external_id",
    "state",
    "connection_type",
    "attribute_maps",
    "saml_options",
    "oidc_options",
];

/// Parses a PATCH body against the connection's current type (`connection_type` may be sent,
/// but only unchanged, as the py10 SDK documents); `callback_url` is the OIDC redirect URI.
pub fn parse_changes(
    body: &Map<String, Value>,
    current_type: &str,
    callback_url: &str,
) -> ApiResult<ConnectionChanges> {
    let mut f = Fields::new(body);
    refuse_unknown(&mut f, body, "", &PATCH_FIELDS);
    let name = f.opt_string("name");
    let external_id = f
        .present("external_id")
        .then(|| f.opt_string("external_id"));
    let state = match body.get("state") {
        None => None,
        Some(Value::String(s)) if s == "active" => Some(RequestedState::Active),
        Some(Value::String(s)) if s == "inactive" => Some(RequestedState::Inactive),
        Some(_) => {
            f.error("state", "must_be_active_or_inactive");
            None
        }
    };
    if let Some(t) = f.opt_string("connection_type") {
        if t != current_type {
            f.error("connection_type", "immutable");
        }
    }
    let attribute_maps = read_attribute_maps(&mut f, true);
    let saml = f.opt_object("saml_options").map(|o| parse_saml(&mut f, o));
    let oidc = f
        .opt_object("oidc_options")
        .map(|o| parse_oidc(&mut f, o, callback_url));
    let protocol = match (saml, oidc) {
        (Some(_), Some(_)) => {
            f.error("oidc_options", "exclusive_with_saml_options");
            None
        }
        (Some(s), None) => Some(ProtocolPatch::Saml(s)),
        (None, Some(o)) => Some(ProtocolPatch::Oidc(o)),
        (None, None) => None,
    };
    f.finish()?;
    Ok(ConnectionChanges {
        name,
        external_id,
        state,
        attribute_maps,
        protocol,
    })
}

/// Absent: keep; `null` or blank: reset; a string: set.
fn patch_str(f: &mut Fields<'_>, o: &Map<String, Value>, prefix: &str, key: &str) -> Patch<String> {
    match o.get(key) {
        None => Patch::Keep,
        Some(Value::Null) => Patch::Reset,
        Some(Value::String(s)) if s.trim().is_empty() => Patch::Reset,
        Some(Value::String(s)) => Patch::Set(s.trim().to_string()),
        Some(_) => {
            f.error(&format!("{prefix}.{key}"), "must_be_string");
            Patch::Keep
        }
    }
}

/// Absent: keep; `null`: the default (`false`); a boolean: set.
fn patch_bool(f: &mut Fields<'_>, o: &Map<String, Value>, key: &str) -> Option<bool> {
    match o.get(key) {
        None => None,
        Some(Value::Null) => Some(false),
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            f.error(&format!("saml_options.{key}"), "must_be_boolean");
            None
        }
    }
}

/// A value that has no default cannot be `null` or blank in a PATCH.
fn no_reset(f: &mut Fields<'_>, o: &Map<String, Value>, prefix: &str, keys: &[&str]) {
    for k in keys {
        let blank = match o.get(*k) {
            Some(Value::Null) => true,
            Some(Value::String(s)) => s.trim().is_empty(),
            _ => false,
        };
        if blank {
            f.error(&format!("{prefix}.{k}"), "cannot_be_null_or_blank");
        }
    }
}

fn parse_saml(f: &mut Fields<'_>, o: &Map<String, Value>) -> SamlOptionsPatch {
    let p = "saml_options";
    refuse_unknown(f, o, p, &SAML_OPTION_FIELDS);
    refuse_sp_key_pairs(f, o);
    no_reset(
        f,
        o,
        p,
        &[
            "idp_entity_id",
            "idp_sso_url",
            "idp_metadata_xml",
            "idp_signing_certs",
        ],
    );
    let out = SamlOptionsPatch {
        idp_metadata_url: patch_str(f, o, p, "idp_metadata_url"),
        idp_metadata_xml: opt_str(f, o, p, "idp_metadata_xml"),
        idp_entity_id: opt_str(f, o, p, "idp_entity_id"),
        idp_sso_url: opt_str(f, o, p, "idp_sso_url"),
        idp_slo_url: patch_str(f, o, p, "idp_slo_url"),
        idp_signing_certs: o
            .get("idp_signing_certs")
            .and_then(|v| parse_idp_certs(f, v)),
        sp_entity_id: patch_str(f, o, p, "sp_entity_id"),
        // `null` is the default ACS URL: the only one there is.
        acs_url: match patch_str(f, o, p, "acs_url") {
            Patch::Set(a) => Some(a),
            _ => None,
        },
        sign_requests: patch_bool(f, o, "sign_requests"),
        allow_idp_initiated: patch_bool(f, o, "allow_idp_initiated"),
        clock_skew_secs: o.get("clock_skew_secs").map(|v| parse_clock_skew(f, v)),
    };
    let set = |x: &Patch<String>| match x {
        Patch::Set(u) => Some(u.clone()),
        _ => None,
    };
    check_urls(
        f,
        p,
        &[
            ("idp_sso_url", out.idp_sso_url.as_deref()),
            ("idp_slo_url", set(&out.idp_slo_url).as_deref()),
            ("idp_metadata_url", set(&out.idp_metadata_url).as_deref()),
        ],
    );
    if out.idp_metadata_xml.is_some() && matches!(out.idp_metadata_url, Patch::Set(_)) {
        f.error(
            "saml_options.idp_metadata_xml",
            "exclusive_with_idp_metadata_url",
        );
    }
    out
}

fn parse_oidc(f: &mut Fields<'_>, o: &Map<String, Value>, callback_url: &str) -> OidcOptionsPatch {
    let p = "oidc_options";
    refuse_unsupported_oidc_options(f, o);
    no_reset(
        f,
        o,
        p,
        &[
            "issuer",
            "discovery_endpoint",
            "discovery_url",
            "client_id",
            "client_secret",
            "client_secret_env",
        ],
    );
    let issuer = opt_str(f, o, p, "issuer");
    // py10 sends `discovery_endpoint`; `discovery_url` is accepted too.
    let discovery_url =
        opt_str(f, o, p, "discovery_endpoint").or(opt_str(f, o, p, "discovery_url"));
    check_urls(
        f,
        p,
        &[
            ("issuer", issuer.as_deref()),
            ("discovery_endpoint", discovery_url.as_deref()),
        ],
    );
    // py10 always sends `redirect_uri` (`null`: the default). Ours is fixed.
    if opt_str(f, o, p, "redirect_uri").is_some_and(|r| r != callback_url) {
        f.error(
            "oidc_options.redirect_uri",
            "must_be_the_default_redirect_uri",
        );
    }
    let client_secret = read_client_secret(f, o).flatten();
    OidcOptionsPatch {
        issuer,
        discovery_url,
        client_id: opt_str(f, o, p, "client_id"),
        client_secret,
        scopes: match o.get("scopes") {
            None => Patch::Keep,
            Some(Value::Null) => Patch::Reset,
            Some(v) => parse_scopes(f, v).map_or(Patch::Keep, Patch::Set),
        },
        claim_map: read_claim_map(f, o, true),
    }
}

async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Connection>> {
    // An unknown connection is 404 before any field is judged.
    let current = state.sso.connection(&id)?;
    let changes = parse_changes(
        &body,
        &current.connection_type,
        &state.sso.oidc_callback_url(),
    )?;
    Ok(Json(state.sso.update_connection(&id, changes).await?))
}
