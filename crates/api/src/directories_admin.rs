//! Admin API for directories and roles (behind the API key; documented in
//! `docs/admin-openapi.yaml`).
//!
//! - `POST /admin/directories` creates a directory; for SCIM types it answers the SCIM endpoint
//!   and bearer token, shown this once (the store keeps only its SHA-256).
//! - `GET /admin/directories`, `GET|DELETE /admin/directories/{id}`,
//!   `POST /admin/directories/{id}/scim_token` (rotate; the old token stops working at once).
//! - `GET|PUT /admin/organizations/{id}/roles` and `.../role_mappings`: stored through the
//!   directory engine (its `dsync.roles` / `dsync.role_mappings` tables are the single source
//!   for SSO profiles and directory users). A change recomputes every directory user's roles
//!   in the organization, emitting `dsync.user.updated` where a role changed.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use idbridge_directory::{
    Constraint, DirectoryEngine, DirectoryRecord, DirectorySettings, EngineError,
};
use idbridge_model::{parse_id, Directory, IdPrefix, Role, RoleMapping, RoleMode, Timestamp};
use serde_json::{json, Map, Value};
use tracing::Instrument;

use crate::body::{Fields, JsonObject, Query};
use crate::error::{ApiError, ApiResult};
use crate::pagination::page_request;
use crate::AppState;

/// Directory types accepted by `POST /admin/directories` (WorkOS's `Directory.type` values,
/// plus `ldap` for our LDAP/AD pull source).
pub const DIRECTORY_TYPES: &[&str] = &[
    "azure scim v2.0",
    "bamboohr",
    "breathe hr",
    "cezanne hr",
    "cyberark scim v2.0",
    "fourth hr",
    "generic scim v2.0",
    "gsuite directory",
    "hibob",
    "jump cloud scim v2.0",
    "okta scim v2.0",
    "onelogin scim v2.0",
    "people hr",
    "personio",
    "pingfederate scim v2.0",
    "rippling scim v2.0",
    "sailpoint scim v2.0",
    "s3",
    "sftp",
    "sftp workday",
    "workday",
    "ldap",
];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/admin/directories",
            post(create_directory).get(list_directories),
        )
        .route(
            "/admin/directories/{id}",
            get(get_directory)
                .patch(patch_directory)
                .delete(delete_directory),
        )
        .route("/admin/directories/{id}/scim_token", post(rotate_token))
        .route(
            "/admin/organizations/{id}/roles",
            get(get_roles).put(put_roles),
        )
        .route(
            "/admin/organizations/{id}/role_mappings",
            get(get_role_mappings).put(put_role_mappings),
        )
}

/// The engine's errors in WorkOS shapes.
pub fn engine_error(e: EngineError) -> ApiError {
    match e {
        EngineError::NotFound { what, id } => ApiError::not_found(
            match what {
                "directory" => "Directory",
                "organization" => "Organization",
                "directory_user" => "Directory User",
                "directory_group" => "Directory Group",
                _ => "Entity",
            },
            id,
        ),
        EngineError::Conflict { constraint, detail } => ApiError::Conflict {
            code: match constraint {
                Constraint::DirectoryDeleting => "directory_deleting",
                _ => "concurrent_update",
            },
            message: detail,
        },
        EngineError::Invalid(message) => ApiError::BadRequest {
            code: "invalid_request",
            message,
        },
        EngineError::Guard(g) => ApiError::Conflict {
            code: "guard_refused",
            message: g.to_string(),
        },
        EngineError::Store(s) => ApiError::Internal(s.to_string()),
        EngineError::Source(s) => ApiError::Internal(format!("snapshot source: {s}")),
    }
}

/// Engine calls block (store commits wait for fdatasync): run them on the blocking pool.
async fn blocking<T, F>(state: &AppState, f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(&DirectoryEngine) -> ApiResult<T> + Send + 'static,
{
    let engine = state.directory.clone();
    tokio::task::spawn_blocking(move || f(&engine))
        .await
        .map_err(ApiError::internal)?
}

fn check_id(prefix: IdPrefix, entity: &'static str, id: &str) -> ApiResult<()> {
    parse_id(prefix, id)
        .map(|_| ())
        .map_err(|_| ApiError::not_found(entity, id))
}

/// The SCIM base URL of a directory: `<public_url>/scim/v2/<directory_id>`.
pub fn scim_endpoint(state: &AppState, directory_id: &str) -> String {
    idbridge_scim::router::endpoint_url(&state.config.public_url, directory_id)
}

fn directory_out(engine: &DirectoryEngine, rec: DirectoryRecord) -> ApiResult<Directory> {
    let mut d = rec.directory;
    let c = engine.counts(&d.id).map_err(engine_error)?;
    d.metadata.users.active = c.active;
    d.metadata.users.inactive = c.inactive;
    d.metadata.groups = c.groups;
    Ok(d)
}

fn settings_view(rec: &DirectoryRecord) -> Value {
    serde_json::to_value(&rec.settings).unwrap_or(Value::Null)
}

/// Validates a `POST /admin/directories` body (also used by the CLI and the config file).
pub fn parse_create(
    body: &Map<String, Value>,
) -> ApiResult<(String, String, String, DirectorySettings)> {
    let mut f = Fields::new(body);
    let org = f.required_string("organization_id");
    let name = f.required_string("name");
    let ty = f.required_string("type");
    let settings = f.opt_object("settings").cloned();
    for key in body.keys() {
        if !["organization_id", "name", "type", "settings"].contains(&key.as_str()) {
            f.error(key, "unknown_field");
        }
    }
    let ty = ty.map(|t| t.trim().to_ascii_lowercase());
    if let Some(t) = &ty {
        if !DIRECTORY_TYPES.contains(&t.as_str()) {
            f.error("type", "unknown_directory_type");
        }
    }
    let settings = match settings {
        None => Some(DirectorySettings::default()),
        Some(s) => merge_settings(&mut f, DirectorySettings::default(), &s),
    };
    f.finish()?;
    match (org, name, ty, settings) {
        (Some(o), Some(n), Some(t), Some(s)) => Ok((o, n, t, s)),
        _ => Err(ApiError::internal("validated fields missing")),
    }
}

/// The keys of a directory's `settings` object (`DirectorySettings`).
const SETTINGS_FIELDS: [&str; 4] = [
    "deactivation",
    "attribute_map",
    "role_mode",
    "predefined_attributes",
];

/// `base` with the keys of `given` replaced; an unknown key or a value of the wrong shape is a
/// field error naming `settings.<key>` (never dropped).
fn merge_settings(
    f: &mut Fields<'_>,
    base: DirectorySettings,
    given: &Map<String, Value>,
) -> Option<DirectorySettings> {
    let mut merged = match serde_json::to_value(&base) {
        Ok(Value::Object(m)) => m,
        _ => {
            f.error("settings", "invalid_settings");
            return None;
        }
    };
    let mut ok = true;
    for (k, v) in given {
        if !SETTINGS_FIELDS.contains(&k.as_str()) {
            f.error(&format!("settings.{k}"), "unknown_field");
            ok = false;
            continue;
        }
        // Each key alone over the defaults, so the error names the key that is wrong.
        let mut probe = Map::new();
        probe.insert(k.clone(), v.clone());
        if serde_json::from_value::<DirectorySettings>(Value::Object(probe)).is_err() {
            f.error(&format!("settings.{k}"), "invalid_value");
            ok = false;
            continue;
        }
        merged.insert(k.clone(), v.clone());
    }
    if !ok {
        return None;
    }
    match serde_json::from_value::<DirectorySettings>(Value::Object(merged)) {
        Ok(s) => Some(s),
        Err(_) => {
            f.error("settings", "invalid_settings");
            None
        }
    }
}

/// A validated `PATCH /admin/directories/{id}` body.
pub struct DirectoryPatch {
    pub name: Option<String>,
    /// The keys given, checked; merged over the current settings when applied.
    pub settings: Option<Map<String, Value>>,
}

/// Validates a `PATCH /admin/directories/{id}` body: `name` and/or some `settings` keys.
pub fn parse_patch(body: &Map<String, Value>) -> ApiResult<DirectoryPatch> {
    let mut f = Fields::new(body);
    f.deny_unknown(&["name", "settings"]);
    let name = f.opt_string("name");
    if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        f.error("name", "must_not_be_blank");
    }
    let settings = f.opt_object("settings").cloned();
    if let Some(s) = &settings {
        merge_settings(&mut f, DirectorySettings::default(), s);
    }
    f.finish()?;
    Ok(DirectoryPatch { name, settings })
}

/// Applies a validated patch through the engine; a changed `role_mode` recomputes the roles
/// of the directory's users (as `PUT .../roles` does). A new `attribute_map` or
/// `deactivation` applies to the changes the source delivers from then on (an LDAP or SFTP full
/// run refreshes every user). Returns the record after it.
pub fn apply_patch(
    engine: &DirectoryEngine,
    id: &str,
    patch: DirectoryPatch,
) -> ApiResult<DirectoryRecord> {
    let current = engine.get_directory(id).map_err(engine_error)?;
    let settings = match &patch.settings {
        None => None,
        Some(given) => {
            let body = Map::new();
            let mut f = Fields::new(&body);
            let merged = merge_settings(&mut f, current.settings.clone(), given);
            f.finish()?;
            merged
        }
    };
    let role_mode_before = current.settings.role_mode;
    let (rec, changed) = engine
        .update_directory(id, patch.name.as_deref(), settings)
        .map_err(engine_error)?;
    if changed && rec.settings.role_mode != role_mode_before {
        engine.recompute_roles(id).map_err(engine_error)?;
    }
    Ok(rec)
}

async fn patch_directory(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    check_id(IdPrefix::Directory, "Directory", &id)?;
    let patch = parse_patch(&body)?;
    let span = tracing::info_span!("admin.patch_directory", directory_id = %id);
    let st = state.clone();
    blocking(&state, move |engine| {
        let rec = apply_patch(engine, &id, patch)?;
        Ok(Json(admin_view(&st, engine, rec)?))
    })
    .instrument(span)
    .await
}

async fn create_directory(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let (org, name, ty, settings) = parse_create(&body)?;
    let span = tracing::info_span!("admin.create_directory", organization_id = %org);
    check_id(IdPrefix::Organization, "Organization", &org)?;
    let st = state.clone();
    blocking(&state, move |engine| {
        let (rec, token) = engine
            .create_directory(&org, &name, &ty, settings)
            .map_err(engine_error)?;
        let id = rec.directory.id.clone();
        let settings = settings_view(&rec);
        let directory = directory_out(engine, rec)?;
        let scim = token.map(|t| json!({"endpoint": scim_endpoint(&st, &id), "bearer_token": t}));
        Ok((
            StatusCode::CREATED,
            Json(json!({"directory": directory, "scim": scim, "settings": settings})),
        ))
    })
    .instrument(span)
    .await
}

async fn list_directories(State(state): State<AppState>, q: Query) -> ApiResult<Json<Value>> {
    let page = page_request(&q, IdPrefix::Directory)?;
    let org = q.get("organization_id").map(str::to_owned);
    let st = state.clone();
    blocking(&state, move |engine| {
        let p = engine
            .list_directories(org.as_deref(), &page)
            .map_err(engine_error)?;
        let data: Vec<Value> = p
            .data
            .into_iter()
            .map(|rec| admin_view(&st, engine, rec))
            .collect::<ApiResult<_>>()?;
        Ok(Json(json!({
            "object": "list",
            "data": data,
            "list_metadata": {"before": p.before, "after": p.after},
        })))
    })
    .await
}

/// A directory as the admin sees it: the WorkOS object, its settings and (SCIM) its endpoint.
/// Never the token.
fn admin_view(
    state: &AppState,
    engine: &DirectoryEngine,
    rec: DirectoryRecord,
) -> ApiResult<Value> {
    let settings = settings_view(&rec);
    let scim = rec
        .scim_token_digest
        .is_some()
        .then(|| json!({"endpoint": scim_endpoint(state, &rec.directory.id)}));
    let mut v = serde_json::to_value(directory_out(engine, rec)?).map_err(ApiError::internal)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("settings".into(), settings);
        o.insert("scim".into(), scim.unwrap_or(Value::Null));
    }
    Ok(v)
}

async fn get_directory(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    check_id(IdPrefix::Directory, "Directory", &id)?;
    let st = state.clone();
    blocking(&state, move |engine| {
        let rec = engine.get_directory(&id).map_err(engine_error)?;
        Ok(Json(admin_view(&st, engine, rec)?))
    })
    .await
}

/// 202 with an empty body (as `DELETE /directories/{id}`); exactly one `dsync.deleted`.
async fn delete_directory(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    check_id(IdPrefix::Directory, "Directory", &id)?;
    let span = tracing::info_span!("admin.delete_directory", directory_id = %id);
    let forward = state.forward.clone();
    let feeds = state.feeds.clone();
    blocking(&state, move |engine| {
        engine.delete_directory(&id).map_err(engine_error)?;
        // Its feed goes with it (the runtime stops its scheduler or account below).
        if let Err(e) = feeds.store.delete(&id) {
            tracing::warn!(directory_id = %id, error = %e, "removing the deleted directory's feed failed");
        }
        // Its SCIM push target goes with it (the remote objects stay).
        match forward.delete_target(&id) {
            Ok(()) | Err(idbridge_forward::scim_push::AdminError::NotFound { .. }) => {}
            Err(e) => tracing::warn!(directory_id = %id, error = %e, "removing the deleted directory's forward target failed"),
        }
        Ok(StatusCode::ACCEPTED)
    })
    .instrument(span)
    .await?;
    if let Some(Err(e)) = state.feeds.apply().await {
        tracing::error!(error = %e, "applying the directory feeds failed");
    }
    Ok(StatusCode::ACCEPTED)
}

async fn rotate_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    let mut f = Fields::new(&body);
    f.deny_unknown(&[]);
    f.finish()?;
    check_id(IdPrefix::Directory, "Directory", &id)?;
    let span = tracing::info_span!("admin.rotate_scim_token", directory_id = %id);
    let endpoint = scim_endpoint(&state, &id);
    blocking(&state, move |engine| {
        let token = engine.rotate_scim_token(&id).map_err(engine_error)?;
        Ok(Json(json!({
            "directory_id": id,
            "scim": {"endpoint": endpoint, "bearer_token": token},
        })))
    })
    .instrument(span)
    .await
}

// ---- roles ----

fn require_org(state: &AppState, org: &str) -> ApiResult<()> {
    state.sso.organizations().load(org)?;
    Ok(())
}

fn roles_body(engine: &DirectoryEngine, org: &str) -> ApiResult<Value> {
    let roles = engine.roles(org).map_err(engine_error)?;
    let mode = engine.role_mode(org).map_err(engine_error)?;
    Ok(json!({
        "object": "list",
        "organization_id": org,
        "mode": mode,
        "data": roles,
    }))
}

async fn get_roles(
    State(state): State<AppState>,
    Path(org): Path<String>,
) -> ApiResult<Json<Value>> {
    require_org(&state, &org)?;
    blocking(&state, move |engine| Ok(Json(roles_body(engine, &org)?))).await
}

/// Parses `{"roles": [{"slug", "name"?, "description"?, "priority"?, "default"?}], "mode"?}`; `created_at` of a
/// slug that already existed is kept.
pub fn parse_roles(
    body: &Map<String, Value>,
    existing: &[Role],
) -> ApiResult<(Vec<Role>, Option<RoleMode>)> {
    let mut f = Fields::new(body);
    f.deny_unknown(&["roles", "mode"]);
    let list = match f.raw("roles") {
        Some(Value::Array(a)) => Some(a.clone()),
        Some(_) => {
            f.error("roles", "must_be_array");
            None
        }
        None => {
            f.error("roles", "required");
            None
        }
    };
    let mode = match f.opt_string("mode").as_deref() {
        None => None,
        Some("single") => Some(RoleMode::Single),
        Some("multiple") => Some(RoleMode::Multiple),
        Some(_) => {
            f.error("mode", "must_be_single_or_multiple");
            None
        }
    };
    let now = Timestamp::now();
    let mut roles = Vec::new();
    for (i, item) in list.iter().flatten().enumerate() {
        let Some(obj) = item.as_object() else {
            f.error(&format!("roles[{i}]"), "must_be_object");
            continue;
        };
        for k in obj.keys() {
            if ![
                "slug",
                "name",
                "description",
                "priority",
                "default",
                "is_default",
            ]
            .contains(&k.as_str())
            {
                f.error(&format!("roles[{i}].{k}"), "unknown_field");
            }
        }
        let slug = obj.get("slug").and_then(Value::as_str).map(str::trim);
        let Some(slug) = slug.filter(|s| !s.is_empty()) else {
            f.error(&format!("roles[{i}].slug"), "required");
            continue;
        };
        let name = match obj.get("name") {
            None | Some(Value::Null) => slug.to_owned(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                f.error(&format!("roles[{i}].name"), "must_be_string");
                continue;
            }
        };
        let priority = match obj.get("priority") {
            None | Some(Value::Null) => u32::try_from(i).unwrap_or(u32::MAX),
            Some(v) => match v.as_u64().and_then(|p| u32::try_from(p).ok()) {
                Some(p) => p,
                None => {
                    f.error(
                        &format!("roles[{i}].priority"),
                        "must_be_non_negative_integer",
                    );
                    continue;
                }
            },
        };
        let default = match obj.get("default").or_else(|| obj.get("is_default")) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                f.error(&format!("roles[{i}].default"), "must_be_boolean");
                continue;
            }
        };
        let before = existing.iter().find(|r| r.slug == slug);
        let created_at = before.map_or(now, |r| r.created_at);
        // Kept unless given: the WorkOS roles API sets it too.
        let description = match obj.get("description") {
            None => before.and_then(|r| r.description.clone()),
            Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                f.error(&format!("roles[{i}].description"), "must_be_string");
                continue;
            }
        };
        roles.push(Role {
            slug: slug.to_owned(),
            name,
            description,
            priority,
            is_default: default,
            created_at,
            updated_at: now,
        });
    }
    f.finish()?;
    Ok((roles, mode))
}

/// Recomputes the roles of every user in the organization's directories; returns how many
/// users changed (each with its `dsync.user.updated`).
pub fn recompute_org(engine: &DirectoryEngine, org: &str) -> ApiResult<u64> {
    let mut updated = 0;
    let mut cursor = idbridge_directory::Cursor::None;
    loop {
        let page = engine
            .list_directories(
                Some(org),
                &idbridge_directory::PageRequest {
                    limit: 100,
                    order: idbridge_directory::Order::Asc,
                    cursor,
                },
            )
            .map_err(engine_error)?;
        for rec in &page.data {
            match engine.recompute_roles(&rec.directory.id) {
                Ok(n) => updated += n,
                // A directory being deleted has no users left to update.
                Err(EngineError::Conflict { .. }) => {}
                Err(e) => return Err(engine_error(e)),
            }
        }
        match page.after {
            Some(a) => cursor = idbridge_directory::Cursor::After(a),
            None => return Ok(updated),
        }
    }
}

async fn put_roles(
    State(state): State<AppState>,
    Path(org): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    require_org(&state, &org)?;
    let span = tracing::info_span!("admin.put_roles", organization_id = %org);
    blocking(&state, move |engine| {
        let existing = engine.roles(&org).map_err(engine_error)?;
        let (roles, mode) = parse_roles(&body, &existing)?;
        // One commit: the roles, the mode, mappings of removed roles dropped, and an
        // organization_role.* event per role created, changed or removed.
        engine
            .replace_roles(&org, roles, mode)
            .map_err(engine_error)?;
        let updated = recompute_org(engine, &org)?;
        let mut out = roles_body(engine, &org)?;
        if let Some(o) = out.as_object_mut() {
            o.insert("users_updated".into(), json!(updated));
        }
        Ok(Json(out))
    })
    .instrument(span)
    .await
}

fn mappings_body(engine: &DirectoryEngine, org: &str) -> ApiResult<Value> {
    let mappings = engine.role_mappings(org).map_err(engine_error)?;
    Ok(json!({"object": "list", "organization_id": org, "data": mappings}))
}

async fn get_role_mappings(
    State(state): State<AppState>,
    Path(org): Path<String>,
) -> ApiResult<Json<Value>> {
    require_org(&state, &org)?;
    blocking(&state, move |engine| Ok(Json(mappings_body(engine, &org)?))).await
}

/// Parses `{"role_mappings": [{"idp_group", "role_slug"}]}` (`idp_group`: an IdP group id or
/// name, as directory groups and SSO `groups` carry them).
pub fn parse_role_mappings(body: &Map<String, Value>, org: &str) -> ApiResult<Vec<RoleMapping>> {
    let mut f = Fields::new(body);
    f.deny_unknown(&["role_mappings"]);
    let list = match f.raw("role_mappings") {
        Some(Value::Array(a)) => a.clone(),
        Some(_) => {
            f.error("role_mappings", "must_be_array");
            Vec::new()
        }
        None => {
            f.error("role_mappings", "required");
            Vec::new()
        }
    };
    let mut out = Vec::new();
    for (i, item) in list.iter().enumerate() {
        match item.as_object() {
            Some(obj) => {
                for k in obj.keys() {
                    if !["idp_group", "role_slug"].contains(&k.as_str()) {
                        f.error(&format!("role_mappings[{i}].{k}"), "unknown_field");
                    }
                }
            }
            None => {
                f.error(&format!("role_mappings[{i}]"), "must_be_object");
                continue;
            }
        }
        let get = |k: &str| {
            item.get(k)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        match (get("idp_group"), get("role_slug")) {
            (Some(g), Some(r)) => out.push(RoleMapping {
                organization_id: org.to_owned(),
                idp_group: g.to_owned(),
                role_slug: r.to_owned(),
            }),
            (None, _) => f.error(&format!("role_mappings[{i}].idp_group"), "required"),
            (_, None) => f.error(&format!("role_mappings[{i}].role_slug"), "required"),
        }
    }
    f.finish()?;
    Ok(out)
}

async fn put_role_mappings(
    State(state): State<AppState>,
    Path(org): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    require_org(&state, &org)?;
    let span = tracing::info_span!("admin.put_role_mappings", organization_id = %org);
    let mappings = parse_role_mappings(&body, &org)?;
    blocking(&state, move |engine| {
        let roles = engine.roles(&org).map_err(engine_error)?;
        for (i, m) in mappings.iter().enumerate() {
            if !roles.iter().any(|r| r.slug == m.role_slug) {
                return Err(ApiError::invalid(
                    format!("role_mappings[{i}].role_slug"),
                    "unknown_role",
                ));
            }
        }
        engine
            .set_role_mappings(&org, mappings)
            .map_err(engine_error)?;
        let updated = recompute_org(engine, &org)?;
        let mut out = mappings_body(engine, &org)?;
        if let Some(o) = out.as_object_mut() {
            o.insert("users_updated".into(), json!(updated));
        }
        Ok(Json(out))
    })
    .instrument(span)
    .await
}
