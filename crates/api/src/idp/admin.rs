//! `/admin/service_providers`: register, read, change and remove the service providers of an
//! organization's IdP, from SP metadata (XML or URL) or explicit fields; and
//! `POST /admin/organizations/{id}/idp/rotate_keys`. Unknown fields are a 422 naming them.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use idbridge_model::IdPrefix;
use idbridge_sso::idp::{
    AuthSource, IdpSettings, NewServiceProvider, ServiceProviderUpdate, SpOptions, SpSource,
};
use serde_json::{Map, Value};

use crate::body::{Fields, JsonObject, Query};
use crate::error::{ApiError, ApiResult};
use crate::pagination::page_request;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/service_providers", get(list).post(create))
        .route(
            "/admin/service_providers/{id}",
            get(get_one).put(update).delete(delete),
        )
        .route(
            "/admin/organizations/{id}/idp/rotate_keys",
            post(rotate_keys),
        )
        .route(
            "/admin/idp/settings",
            get(get_settings).patch(patch_settings),
        )
}

const SOURCE_FIELDS: [&str; 6] = [
    "metadata_xml",
    "metadata_url",
    "entity_id",
    "acs_urls",
    "signing_certs",
    "encryption_cert",
];
const OPTION_FIELDS: [&str; 12] = [
    "name",
    "name_id_format",
    "released_attributes",
    "sign_response",
    "encrypt_assertions",
    "require_signed_requests",
    "directory_id",
    "auth_source",
    "assertion_validity_secs",
    "allow_idp_initiated",
    "slo_url",
    "custom_attributes",
];

pub(super) fn string_list(f: &mut Fields<'_>, field: &str) -> Option<Vec<String>> {
    let arr = f.opt_array(field)?;
    let mut out = Vec::new();
    for (i, v) in arr.iter().enumerate() {
        match v.as_str() {
            Some(s) => out.push(s.to_owned()),
            None => f.error(&format!("{field}[{i}]"), "must_be_string"),
        }
    }
    Some(out)
}

/// The source, if the body gives one: exactly one of `metadata_xml`, `metadata_url` or the
/// explicit `entity_id` + `acs_urls` (+ certificates).
fn parse_source(f: &mut Fields<'_>, required: bool) -> Option<SpSource> {
    let xml = f.opt_string("metadata_xml");
    let url = f.opt_string("metadata_url");
    let entity = f.opt_string("entity_id");
    let acs = string_list(f, "acs_urls");
    let certs = string_list(f, "signing_certs");
    let enc = f.opt_string("encryption_cert");
    let given = [
        xml.is_some(),
        url.is_some(),
        entity.is_some() || acs.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given > 1 {
        f.error(
            "metadata_xml",
            "give_only_one_of_metadata_xml_metadata_url_entity_id",
        );
        return None;
    }
    if let Some(x) = xml {
        return Some(SpSource::MetadataXml(x));
    }
    if let Some(u) = url {
        return Some(SpSource::MetadataUrl(u));
    }
    match (entity, acs) {
        (Some(entity_id), Some(acs_urls)) => Some(SpSource::Explicit {
            entity_id,
            acs_urls,
            signing_certs: certs.unwrap_or_default(),
            encryption_cert: enc,
        }),
        (Some(_), None) => {
            f.error("acs_urls", "required");
            None
        }
        (None, Some(_)) => {
            f.error("entity_id", "required");
            None
        }
        (None, None) => {
            if required {
                f.error(
                    "metadata_url",
                    "one_of_metadata_xml_metadata_url_entity_id_required",
                );
            } else if certs.is_some() || enc.is_some() {
                f.error("entity_id", "required");
            }
            None
        }
    }
}

/// `auth_source`: `{"type":"directory","directory_id":…}`, `{"type":"broker",
/// "connection_id":…}` or `null` (no source).
fn parse_auth_source(f: &mut Fields<'_>) -> Option<Option<AuthSource>> {
    let obj = match f.raw("auth_source")? {
        Value::Null => return Some(None),
        Value::Object(o) => o,
        _ => {
            f.error("auth_source", "must_be_object_or_null");
            return None;
        }
    };
    let string = |f: &mut Fields<'_>, key: &str| match obj.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => {
            f.error(&format!("auth_source.{key}"), "must_be_string");
            None
        }
        None => {
            f.error(&format!("auth_source.{key}"), "required");
            None
        }
    };
    let (allowed, source) = match obj.get("type").and_then(Value::as_str) {
        Some("directory") => (
            "directory_id",
            string(f, "directory_id").map(|directory_id| AuthSource::Directory { directory_id }),
        ),
        Some("broker") => (
            "connection_id",
            string(f, "connection_id").map(|connection_id| AuthSource::Broker { connection_id }),
        ),
        _ => {
            f.error("auth_source.type", "must_be_directory_or_broker");
            return None;
        }
    };
    for k in obj.keys() {
        if k != "type" && k != allowed {
            f.error(&format!("auth_source.{k}"), "unknown_field");
        }
    }
    source.map(Some)
}

fn parse_options(f: &mut Fields<'_>) -> SpOptions {
    let directory_id = if f.present("directory_id") {
        Some(f.opt_string("directory_id"))
    } else {
        None
    };
    let validity = match f.raw("assertion_validity_secs") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) => Some(n),
            None => {
                f.error("assertion_validity_secs", "must_be_positive_integer");
                None
            }
        },
    };
    let slo_url = if f.present("slo_url") {
        Some(f.opt_string("slo_url"))
    } else {
        None
    };
    SpOptions {
        name: f.opt_string("name"),
        name_id_format: f.opt_string("name_id_format"),
        released_attributes: string_list(f, "released_attributes"),
        sign_response: f.opt_bool("sign_response"),
        encrypt_assertions: f.opt_bool("encrypt_assertions"),
        require_signed_requests: f.opt_bool("require_signed_requests"),
        directory_id,
        auth_source: parse_auth_source(f),
        assertion_validity_secs: validity,
        allow_idp_initiated: f.opt_bool("allow_idp_initiated"),
        slo_url,
        custom_attributes: custom_map(f, "custom_attributes"),
    }
}

/// `custom_attributes` / `custom_claims`: an object of name → user field (strings); `null` =
/// none.
pub(super) fn custom_map(
    f: &mut Fields<'_>,
    field: &str,
) -> Option<std::collections::BTreeMap<String, String>> {
    match f.raw(field)? {
        Value::Null => Some(Default::default()),
        Value::Object(o) => {
            let mut out = std::collections::BTreeMap::new();
            for (k, v) in o {
                match v.as_str() {
                    Some(s) => {
                        out.insert(k.clone(), s.to_owned());
                    }
                    None => f.error(&format!("{field}.{k}"), "must_be_string"),
                }
            }
            Some(out)
        }
        _ => {
            f.error(field, "must_be_object");
            None
        }
    }
}

fn unknown_fields(f: &mut Fields<'_>, body: &Map<String, Value>, extra: &[&str]) {
    for k in body.keys() {
        if !SOURCE_FIELDS.contains(&k.as_str())
            && !OPTION_FIELDS.contains(&k.as_str())
            && !extra.contains(&k.as_str())
        {
            f.error(k, "unknown_field");
        }
    }
}

/// Parses a create body (every problem in one 422).
pub fn parse_new(body: &Map<String, Value>) -> ApiResult<NewServiceProvider> {
    let mut f = Fields::new(body);
    unknown_fields(&mut f, body, &["organization_id"]);
    let org = f.required_string("organization_id");
    let source = parse_source(&mut f, true);
    let options = parse_options(&mut f);
    f.finish()?;
    match (org, source) {
        (Some(organization_id), Some(source)) => Ok(NewServiceProvider {
            organization_id,
            source,
            options,
        }),
        _ => Err(ApiError::invalid("metadata_url", "required")),
    }
}

/// Parses an update body: only the given fields change.
pub fn parse_update(body: &Map<String, Value>) -> ApiResult<ServiceProviderUpdate> {
    let mut f = Fields::new(body);
    unknown_fields(&mut f, body, &[]);
    let source = parse_source(&mut f, false);
    let options = parse_options(&mut f);
    f.finish()?;
    Ok(ServiceProviderUpdate { source, options })
}

async fn create(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    let input = parse_new(&body)?;
    let sp = state.sso.create_service_provider(input).await?;
    Ok((StatusCode::CREATED, Json(sp)))
}

async fn get_one(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(state.sso.service_provider(&id)?))
}

async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    let update = parse_update(&body)?;
    Ok(Json(state.sso.update_service_provider(&id, update).await?))
}

async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    state.sso.delete_service_provider(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /admin/service_providers[?organization_id=]`, paged like every list (`limit`,
/// `order`, `before`, `after`; `list_metadata` holds the cursors).
async fn list(State(state): State<AppState>, q: Query) -> ApiResult<Json<Value>> {
    let page = page_request(&q, IdPrefix::ServiceProvider)?;
    let page = state
        .sso
        .list_service_providers(q.get("organization_id"), &page)?;
    Ok(Json(
        serde_json::to_value(page.into_list()).map_err(ApiError::internal)?,
    ))
}

/// `GET /admin/idp/settings`: the IdP settings in force.
async fn get_settings(State(state): State<AppState>) -> Json<IdpSettings> {
    Json(state.sso.idp_settings())
}

/// `PATCH /admin/idp/settings`: changes the given settings now (the `idp` section of
/// `/admin/settings`: kept across restarts when the binary's settings runtime is installed). Unknown fields and bad values are
/// a 422 naming them; nothing changes then.
async fn patch_settings(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<IdpSettings>> {
    let mut f = Fields::new(&body);
    for k in body.keys() {
        if !IdpSettings::FIELDS.contains(&k.as_str()) {
            f.error(k, "unknown_field");
        }
    }
    let mut merged = match serde_json::to_value(state.sso.idp_settings()) {
        Ok(Value::Object(m)) => m,
        _ => return Err(ApiError::internal("settings encoding")),
    };
    for (k, v) in &body {
        if IdpSettings::FIELDS.contains(&k.as_str()) {
            let mut one = merged.clone();
            one.insert(k.clone(), v.clone());
            if serde_json::from_value::<IdpSettings>(Value::Object(one)).is_err() {
                let code = if k == "trusted_proxies" {
                    "must_be_array_of_strings"
                } else {
                    "must_be_non_negative_integer"
                };
                f.error(k, code);
            } else {
                merged.insert(k.clone(), v.clone());
            }
        }
    }
    f.finish()?;
    let settings: IdpSettings =
        serde_json::from_value(Value::Object(merged)).map_err(ApiError::internal)?;
    // The `idp` section of `/admin/settings`: stored (kept across restarts) and applied there.
    if let Some(runtime) = state.settings.runtime() {
        settings.to_config()?;
        runtime.patch("idp".into(), body).await?;
        return Ok(Json(state.sso.idp_settings()));
    }
    Ok(Json(state.sso.update_idp_settings(&settings)?))
}

async fn rotate_keys(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let certs = state.sso.rotate_idp_keys(&id).await?;
    Ok(Json(serde_json::json!({"signing_certs": certs})))
}
