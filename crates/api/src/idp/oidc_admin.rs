//! `/admin/oidc_clients`: register, read, change and remove the OIDC clients of an
//! organization's OpenID Provider. The client secret is generated, answered once (on create and
//! on `rotate_secret`) and never again. Unknown fields are a 422 naming them.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use idbridge_sso::idp::{IssuedClient, NewOidcClient, OidcClientOptions, OidcClientUpdate};
use serde_json::{Map, Value};

use super::admin::string_list;
use crate::body::{Fields, JsonObject, Query};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/oidc_clients", get(list).post(create))
        .route(
            "/admin/oidc_clients/{id}",
            get(get_one).put(update).delete(delete),
        )
}

const OPTION_FIELDS: [&str; 6] = [
    "name",
    "redirect_uris",
    "require_pkce",
    "groups_without_scope",
    "directory_id",
    "custom_claims",
];

fn unknown_fields(f: &mut Fields<'_>, body: &Map<String, Value>, extra: &[&str]) {
    for k in body.keys() {
        if !OPTION_FIELDS.contains(&k.as_str()) && !extra.contains(&k.as_str()) {
            f.error(k, "unknown_field");
        }
    }
}

fn parse_options(f: &mut Fields<'_>) -> OidcClientOptions {
    let directory_id = if f.present("directory_id") {
        Some(f.opt_string("directory_id"))
    } else {
        None
    };
    OidcClientOptions {
        name: f.opt_string("name"),
        redirect_uris: string_list(f, "redirect_uris"),
        require_pkce: f.opt_bool("require_pkce"),
        groups_without_scope: f.opt_bool("groups_without_scope"),
        directory_id,
        custom_claims: super::admin::custom_map(f, "custom_claims"),
    }
}

/// Parses a create body (every problem in one 422).
pub fn parse_new(body: &Map<String, Value>) -> ApiResult<NewOidcClient> {
    let mut f = Fields::new(body);
    unknown_fields(&mut f, body, &["organization_id", "public"]);
    let org = f.required_string("organization_id");
    let public = f.opt_bool("public").unwrap_or(false);
    let options = parse_options(&mut f);
    if options.redirect_uris.is_none() {
        f.error("redirect_uris", "required");
    }
    f.finish()?;
    match org {
        Some(organization_id) => Ok(NewOidcClient {
            organization_id,
            public,
            options,
        }),
        None => Err(ApiError::invalid("organization_id", "required")),
    }
}

/// Parses an update body: only the given fields change.
pub fn parse_update(body: &Map<String, Value>) -> ApiResult<OidcClientUpdate> {
    let mut f = Fields::new(body);
    unknown_fields(&mut f, body, &["rotate_secret"]);
    let rotate_secret = f.opt_bool("rotate_secret").unwrap_or(false);
    let options = parse_options(&mut f);
    f.finish()?;
    Ok(OidcClientUpdate {
        options,
        rotate_secret,
    })
}

/// The object, with `client_secret` when one was just generated.
fn issued(c: IssuedClient) -> Value {
    let mut v = c.object;
    if let (Some(o), Some(s)) = (v.as_object_mut(), c.client_secret) {
        o.insert("client_secret".into(), Value::String(s.expose().to_owned()));
    }
    v
}

async fn create(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    let input = parse_new(&body)?;
    let c = state.sso.create_oidc_client(input).await?;
    Ok((StatusCode::CREATED, Json(issued(c))))
}

async fn get_one(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(state.sso.idp_oidc_client(&id)?))
}

async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    let update = parse_update(&body)?;
    Ok(Json(issued(
        state.sso.update_oidc_client(&id, update).await?,
    )))
}

async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    state.sso.delete_oidc_client(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /admin/oidc_clients[?organization_id=]`: up to 100, oldest first.
async fn list(State(state): State<AppState>, q: Query) -> ApiResult<Json<Value>> {
    let data = state.sso.list_oidc_clients(q.get("organization_id"), 100)?;
    Ok(Json(serde_json::json!({"object": "list", "data": data})))
}
