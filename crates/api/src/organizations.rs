//! `/organizations`: WorkOS-compatible CRUD (workos-api.md §2.2).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use idbridge_model::tag::{OrganizationDomainTag, OrganizationTag};
use idbridge_model::{
    new_id, parse_id, DomainState, IdPrefix, List, Organization, OrganizationDomain, Timestamp,
    VerificationStrategy,
};
use idbridge_store::{ChangeSet, StoreError};
use serde_json::{Map, Value};

use crate::body::{Fields, JsonObject, Query};
use crate::db::to_json;
use crate::error::{ApiError, ApiResult};
use crate::pagination::{paginate, PageRequest};
use crate::{events, tables, AppState};

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

const MAX_METADATA_KEYS: usize = 50;
const MAX_METADATA_KEY_LEN: usize = 40;
const MAX_METADATA_VALUE_LEN: usize = 600;
const MAX_NAME_LEN: usize = 512;
const MAX_DOMAINS: usize = 100;

/// Validated `domain_data` entries (domain, state).
type DomainData = Vec<(String, DomainState)>;

fn parse_domain_data(f: &mut Fields<'_>) -> Option<DomainData> {
    // `domain_data` is current; `domains` (plain strings, verified) is the deprecated form.
    if let Some(items) = f.opt_array("domain_data") {
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let field = format!("domain_data[{i}]");
            let Some(obj) = item.as_object() else {
                f.error(&field, "must_be_object");
                continue;
            };
            let domain = match obj.get("domain") {
                Some(Value::String(d)) if valid_domain(d) => d.to_ascii_lowercase(),
                Some(Value::String(_)) => {
                    f.error(&format!("{field}.domain"), "invalid_domain");
                    continue;
                }
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
            out.push((domain, state));
        }
        if out.len() > MAX_DOMAINS {
            f.error("domain_data", "too_many_domains");
        }
        return Some(out);
    }
    if let Some(items) = f.opt_array("domains") {
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(d) if valid_domain(d) => {
                    out.push((d.to_ascii_lowercase(), DomainState::Verified))
                }
                _ => f.error(&format!("domains[{i}]"), "invalid_domain"),
            }
        }
        return Some(out);
    }
    None
}

/// A plausible DNS name: labels of letters, digits and hyphens, at least one dot.
fn valid_domain(d: &str) -> bool {
    let d = d.trim_end_matches('.');
    d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Metadata: string values; on update, `null` removes a key.
fn parse_metadata(
    f: &mut Fields<'_>,
    current: &BTreeMap<String, String>,
) -> Option<BTreeMap<String, String>> {
    let obj = f.opt_object("metadata")?;
    let mut out = current.clone();
    for (k, v) in obj {
        if k.is_empty() || k.len() > MAX_METADATA_KEY_LEN {
            f.error(&format!("metadata.{k}"), "invalid_metadata_key");
            continue;
        }
        match v {
            Value::Null => {
                out.remove(k);
            }
            Value::String(s) if s.len() <= MAX_METADATA_VALUE_LEN => {
                out.insert(k.clone(), s.clone());
            }
            Value::String(_) => f.error(&format!("metadata.{k}"), "value_too_long"),
            _ => f.error(&format!("metadata.{k}"), "must_be_string"),
        }
    }
    if out.len() > MAX_METADATA_KEYS {
        f.error("metadata", "too_many_keys");
    }
    Some(out)
}

fn build_domains(
    org_id: &str,
    data: &DomainData,
    existing: &[OrganizationDomain],
    now: Timestamp,
) -> Vec<OrganizationDomain> {
    let mut out: Vec<OrganizationDomain> = Vec::new();
    for (domain, state) in data {
        if out.iter().any(|d| &d.domain == domain) {
            continue;
        }
        // Keep the id and creation time of a domain that stays.
        match existing.iter().find(|d| &d.domain == domain) {
            Some(old) => {
                let mut d = old.clone();
                if d.state != *state {
                    d.state = *state;
                    d.updated_at = now;
                }
                out.push(d);
            }
            None => out.push(OrganizationDomain {
                object: OrganizationDomainTag,
                id: new_id(IdPrefix::OrganizationDomain),
                organization_id: org_id.to_string(),
                domain: domain.clone(),
                state: *state,
                verification_strategy: VerificationStrategy::Manual,
                verification_token: None,
                verification_prefix: None,
                created_at: now,
                updated_at: now,
            }),
        }
    }
    out
}

/// `created_at` comes from the id's ULID so that key order is list order.
fn created_at_of(id: &str) -> Timestamp {
    parse_id(IdPrefix::Organization, id)
        .map(|u| Timestamp::from_millis(u.timestamp_ms() as i64))
        .unwrap_or_else(|_| Timestamp::now())
}

async fn create(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    let org = create_org(&state, &body).await?;
    Ok((StatusCode::CREATED, Json(org)))
}

/// Validates a create body and durably creates the organization with its event.
pub async fn create_org(state: &AppState, body: &Map<String, Value>) -> ApiResult<Organization> {
    let mut f = Fields::new(body);
    let name = f.required_string("name");
    if name.as_ref().is_some_and(|n| n.len() > MAX_NAME_LEN) {
        f.error("name", "too_long");
    }
    let domains = parse_domain_data(&mut f).unwrap_or_default();
    let external_id = f.opt_string("external_id");
    let metadata = parse_metadata(&mut f, &BTreeMap::new()).unwrap_or_default();
    let allow_outside = f
        .opt_bool("allow_profiles_outside_organization")
        .unwrap_or(false);
    f.finish()?;
    let name = name.unwrap_or_default();

    let id = new_id(IdPrefix::Organization);
    let now = created_at_of(&id);
    let org = Organization {
        object: OrganizationTag,
        domains: build_domains(&id, &domains, &[], now),
        id,
        name,
        metadata,
        external_id,
        stripe_customer_id: None,
        allow_profiles_outside_organization: allow_outside,
        created_at: now,
        updated_at: now,
    };
    let mut cs = ChangeSet::default();
    write_org(&mut cs, &org, None)?;
    events::append(
        &mut cs,
        "organization.created",
        serde_json::to_value(&org).map_err(ApiError::internal)?,
        Some(&org.id),
    );
    commit_org_change(state, cs, org.external_id.as_deref()).await?;
    Ok(org)
}

/// Stages the organization record and its indexes, removing the old record's stale index
/// entries. The external id must be free (checked inside the transaction).
fn write_org(cs: &mut ChangeSet, org: &Organization, old: Option<&Organization>) -> ApiResult<()> {
    cs.put(tables::ORGANIZATIONS, &org.id, to_json(org)?);
    if let Some(old) = old {
        for d in old.domain_names() {
            cs.delete(tables::ORG_BY_DOMAIN, tables::org_domain_key(d, &old.id));
        }
        if let Some(ext) = &old.external_id {
            if org.external_id.as_ref() != Some(ext) {
                cs.delete(tables::ORG_BY_EXTERNAL_ID, ext);
            }
        }
    }
    for d in org.domain_names() {
        cs.put(
            tables::ORG_BY_DOMAIN,
            tables::org_domain_key(d, &org.id),
            org.id.as_bytes().to_vec(),
        );
    }
    if let Some(ext) = &org.external_id {
        if old.and_then(|o| o.external_id.as_ref()) != Some(ext) {
            cs.require_absent(tables::ORG_BY_EXTERNAL_ID, ext);
            cs.put(tables::ORG_BY_EXTERNAL_ID, ext, org.id.as_bytes().to_vec());
        }
    }
    Ok(())
}

async fn commit_org_change(
    state: &AppState,
    cs: ChangeSet,
    external_id: Option<&str>,
) -> ApiResult<()> {
    match state.db.commit(cs).await? {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict(detail)) if detail.starts_with(tables::ORG_BY_EXTERNAL_ID) => {
            Err(ApiError::BadRequest {
                code: "external_id_already_used",
                message: format!(
                    "An organization with external_id '{}' already exists.",
                    external_id.unwrap_or_default()
                ),
            })
        }
        Err(StoreError::Conflict(_)) => Err(ApiError::Conflict {
            code: "concurrent_update",
            message: "The organization was changed concurrently; retry.".into(),
        }),
        Err(e) => Err(e.into()),
    }
}

fn load(state: &AppState, id: &str) -> ApiResult<Organization> {
    if parse_id(IdPrefix::Organization, id).is_err() {
        return Err(ApiError::not_found("Organization", id));
    }
    state
        .db
        .get_json(tables::ORGANIZATIONS, id)?
        .ok_or_else(|| ApiError::not_found("Organization", id))
}

async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Organization>> {
    Ok(Json(load(&state, &id)?))
}

async fn get_by_external_id(
    State(state): State<AppState>,
    Path(external_id): Path<String>,
) -> ApiResult<Json<Organization>> {
    let id = state
        .db
        .get_raw(tables::ORG_BY_EXTERNAL_ID, &external_id)?
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ApiError::not_found("Organization", external_id.clone()))?;
    Ok(Json(load(&state, &id)?))
}

async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Organization>> {
    Ok(Json(update_org(&state, &id, &body).await?))
}

/// Validates an update body and applies it; unchanged organizations are not rewritten.
pub async fn update_org(
    state: &AppState,
    id: &str,
    body: &Map<String, Value>,
) -> ApiResult<Organization> {
    let old = load(state, id)?;
    let mut f = Fields::new(body);
    let name = f.opt_string("name");
    if let Some(n) = &name {
        if n.trim().is_empty() {
            f.error("name", "must_not_be_blank");
        } else if n.len() > MAX_NAME_LEN {
            f.error("name", "too_long");
        }
    }
    let domains = parse_domain_data(&mut f);
    // `external_id: null` clears it; absent leaves it.
    let external_id = if f.present("external_id") {
        Some(f.opt_string("external_id"))
    } else {
        None
    };
    let stripe = if f.present("stripe_customer_id") {
        Some(f.opt_string("stripe_customer_id"))
    } else {
        None
    };
    let metadata = parse_metadata(&mut f, &old.metadata);
    let allow_outside = f.opt_bool("allow_profiles_outside_organization");
    f.finish()?;

    let mut org = old.clone();
    let now = Timestamp::now();
    if let Some(n) = name {
        org.name = n;
    }
    if let Some(d) = domains {
        org.domains = build_domains(&org.id, &d, &old.domains, now);
    }
    if let Some(ext) = external_id {
        org.external_id = ext;
    }
    if let Some(s) = stripe {
        org.stripe_customer_id = s;
    }
    if let Some(m) = metadata {
        org.metadata = m;
    }
    if let Some(a) = allow_outside {
        org.allow_profiles_outside_organization = a;
    }
    if org == old {
        return Ok(org);
    }
    org.updated_at = now;
    let mut cs = ChangeSet::default();
    // Optimistic concurrency: the record must still be what we read.
    cs.require_equals(tables::ORGANIZATIONS, &org.id, Some(to_json(&old)?));
    write_org(&mut cs, &org, Some(&old))?;
    events::append(
        &mut cs,
        "organization.updated",
        serde_json::to_value(&org).map_err(ApiError::internal)?,
        Some(&org.id),
    );
    commit_org_change(state, cs, org.external_id.as_deref()).await?;
    Ok(org)
}

async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let org = load(&state, &id)?;
    let mut cs = ChangeSet::default();
    cs.require_present(tables::ORGANIZATIONS, &org.id);
    cs.delete(tables::ORGANIZATIONS, &org.id);
    for d in org.domain_names() {
        cs.delete(tables::ORG_BY_DOMAIN, tables::org_domain_key(d, &org.id));
    }
    if let Some(ext) = &org.external_id {
        cs.delete(tables::ORG_BY_EXTERNAL_ID, ext);
    }
    events::append(
        &mut cs,
        "organization.deleted",
        serde_json::to_value(&org).map_err(ApiError::internal)?,
        Some(&org.id),
    );
    match state.db.commit(cs).await? {
        // 202 with an empty body: one of the statuses the OpenAPI spec documents (200, 202).
        Ok(_) => Ok(StatusCode::ACCEPTED),
        Err(StoreError::Conflict(_)) => Err(ApiError::not_found("Organization", id)),
        Err(e) => Err(e.into()),
    }
}

async fn list(State(state): State<AppState>, q: Query) -> ApiResult<Json<List<Organization>>> {
    let page = PageRequest::from_query(&q, IdPrefix::Organization)?;
    let domains: Vec<String> = q
        .get_list("domains")
        .into_iter()
        .map(|d| d.to_ascii_lowercase())
        .collect();
    let search = q.get("search").map(|s| s.to_lowercase());
    let result = paginate(
        &state.db,
        tables::ORGANIZATIONS,
        "",
        &page,
        |org: &Organization| {
            (domains.is_empty() || org.domain_names().any(|d| domains.iter().any(|w| w == d)))
                && search
                    .as_ref()
                    .is_none_or(|s| org.name.to_lowercase().contains(s))
        },
        |org| org.id.clone(),
    )?;
    Ok(Json(List::new(result.data, result.before, result.after)))
}

/// Used by config-declared organizations: applies `name`/`domains`/`metadata` idempotently,
/// keyed by `external_id`. Returns the organization and whether anything changed.
pub async fn upsert_declared(
    state: &AppState,
    external_id: &str,
    name: &str,
    domains: &[String],
    metadata: &BTreeMap<String, String>,
) -> ApiResult<(Organization, bool)> {
    let mut body = Map::new();
    body.insert("name".into(), Value::String(name.into()));
    body.insert(
        "domain_data".into(),
        Value::Array(
            domains
                .iter()
                .map(|d| serde_json::json!({"domain": d, "state": "verified"}))
                .collect(),
        ),
    );
    let meta: Map<String, Value> = metadata
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    body.insert("metadata".into(), Value::Object(meta));
    let existing = state
        .db
        .get_raw(tables::ORG_BY_EXTERNAL_ID, external_id)?
        .and_then(|b| String::from_utf8(b).ok());
    match existing {
        Some(id) => {
            let before = load(state, &id)?;
            // Declared metadata replaces, so clear keys that are no longer declared.
            if let Some(Value::Object(meta)) = body.get_mut("metadata") {
                for k in before.metadata.keys() {
                    meta.entry(k.clone()).or_insert(Value::Null);
                }
            }
            let after = update_org(state, &id, &body).await?;
            let changed = after != before;
            Ok((after, changed))
        }
        None => {
            body.insert("external_id".into(), Value::String(external_id.into()));
            Ok((create_org(state, &body).await?, true))
        }
    }
}
