//! `/organizations`: WorkOS-compatible CRUD (workos-api.md §2.2) over
//! `idbridge_sso::organizations`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use idbridge_model::{DomainState, IdPrefix, List, Organization};
use idbridge_sso::organizations::{
    DomainInput, NewOrganization, OrganizationChanges, OrganizationFilter,
};
use serde_json::{Map, Value};

use crate::body::{Fields, JsonObject, Query};
use crate::error::{ApiError, ApiResult};
use crate::pagination::page_request;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/organizations", get(list).post(create))
        .route(
            "/organizations/{id}",
            get(get_one).put(update).delete(delete),
        )
        .route(
            "/organizations/external_id/{external_id}",
            get(get_by_external_id),
        )
}

/// `domain_data` (current: objects with `domain` and `state`) or `domains` (deprecated: plain
/// strings, verified). Syntax is the service's rule ([`NewOrganization::issues`]).
fn parse_domain_data(f: &mut Fields<'_>) -> Option<Vec<DomainInput>> {
    if let Some(items) = f.opt_array("domain_data") {
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let field = format!("domain_data[{i}]");
            let Some(obj) = item.as_object() else {
                f.error(&field, "must_be_object");
                continue;
            };
            let domain = match obj.get("domain") {
                Some(Value::String(d)) => d,
                _ => {
                    f.error(&format!("{field}.domain"), "required");
                    continue;
                }
            };
            let state = match obj.get("state") {
                None | Some(Value::Null) => DomainState::Verified,
                Some(Value::String(s)) if s == "verified" => DomainState::Verified,
                Some(Value::String(s)) if s == "pending" => DomainState::Pending,
                Some(_) => {
                    f.error(&format!("{field}.state"), "must_be_pending_or_verified");
                    continue;
                }
            };
            out.push(DomainInput::new(domain, state));
        }
        return Some(out);
    }
    if let Some(items) = f.opt_array("domains") {
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(d) if idbridge_sso::organizations::valid_domain(d) => {
                    out.push(DomainInput::new(d, DomainState::Verified))
                }
                _ => f.error(&format!("domains[{i}]"), "invalid_domain"),
            }
        }
        return Some(out);
    }
    None
}

/// Metadata: string values; `null` removes a key (on update).
fn parse_metadata(f: &mut Fields<'_>) -> Option<BTreeMap<String, Option<String>>> {
    let obj = f.opt_object("metadata")?;
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        match v {
            Value::Null => {
                out.insert(k.clone(), None);
            }
            Value::String(s) => {
                out.insert(k.clone(), Some(s.clone()));
            }
            _ => f.error(&format!("metadata.{k}"), "must_be_string"),
        }
    }
    Some(out)
}

/// A `POST /organizations` body as the service's input (every problem in one 422).
/// The fields `POST /organizations` takes (the WorkOS SDKs' `createOrganization`).
const CREATE_FIELDS: &[&str] = &[
    "name",
    "domain_data",
    "domains",
    "external_id",
    "metadata",
    "allow_profiles_outside_organization",
];

/// The fields `PUT /organizations/{id}` takes (the WorkOS SDKs' `updateOrganization`).
const UPDATE_FIELDS: &[&str] = &[
    "name",
    "domain_data",
    "domains",
    "external_id",
    "stripe_customer_id",
    "metadata",
    "allow_profiles_outside_organization",
];

pub fn parse_new(body: &Map<String, Value>) -> ApiResult<NewOrganization> {
    let mut f = Fields::new(body);
    f.deny_unknown(CREATE_FIELDS);
    let name = f.required_string("name");
    let domains = parse_domain_data(&mut f).unwrap_or_default();
    let external_id = f.opt_string("external_id");
    let metadata = parse_metadata(&mut f)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    let allow_outside = f
        .opt_bool("allow_profiles_outside_organization")
        .unwrap_or(false);
    let input = NewOrganization {
        name: name.unwrap_or_default(),
        domains,
        external_id,
        metadata,
        allow_profiles_outside_organization: allow_outside,
    };
    f.issues(input.issues());
    f.finish()?;
    Ok(input)
}

/// A `PUT /organizations/{id}` body as the service's input.
pub fn parse_changes(body: &Map<String, Value>) -> ApiResult<OrganizationChanges> {
    let mut f = Fields::new(body);
    f.deny_unknown(UPDATE_FIELDS);
    let name = f.opt_string("name");
    let domains = parse_domain_data(&mut f);
    // `external_id: null` clears it; absent leaves it.
    let external_id = f
        .present("external_id")
        .then(|| f.opt_string("external_id"));
    let stripe_customer_id = f
        .present("stripe_customer_id")
        .then(|| f.opt_string("stripe_customer_id"));
    let metadata = parse_metadata(&mut f);
    let allow_outside = f.opt_bool("allow_profiles_outside_organization");
    let changes = OrganizationChanges {
        name,
        domains,
        external_id,
        stripe_customer_id,
        metadata,
        allow_profiles_outside_organization: allow_outside,
    };
    f.issues(changes.issues());
    f.finish()?;
    Ok(changes)
}

async fn create(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    let input = parse_new(&body)?;
    let org = state.sso.organizations().create(input).await?;
    Ok((StatusCode::CREATED, Json(org)))
}

async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Organization>> {
    Ok(Json(state.sso.organizations().load(&id)?))
}

async fn get_by_external_id(
    State(state): State<AppState>,
    Path(external_id): Path<String>,
) -> ApiResult<Json<Organization>> {
    state
        .sso
        .organizations()
        .by_external_id(&external_id)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("Organization", external_id))
}

async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Organization>> {
    // An unknown organization is 404 before any field is judged.
    state.sso.organizations().load(&id)?;
    let changes = parse_changes(&body)?;
    Ok(Json(state.sso.organizations().update(&id, changes).await?))
}

async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    state.sso.organizations().delete(&id).await?;
    // 202 with an empty body: one of the statuses the OpenAPI spec documents (200, 202).
    Ok(StatusCode::ACCEPTED)
}

async fn list(State(state): State<AppState>, q: Query) -> ApiResult<Json<List<Organization>>> {
    let page = page_request(&q, IdPrefix::Organization)?;
    let filter = OrganizationFilter {
        domains: q
            .get_list("domains")
            .into_iter()
            .map(|d| d.to_ascii_lowercase())
            .collect(),
        search: q.get("search").map(str::to_owned),
    };
    let page = state.sso.organizations().list(&filter, &page)?;
    Ok(Json(page.into_list()))
}
