//! The WorkOS organization roles endpoints the SDKs call (Node 11 `authorization.*OrganizationRole`,
//! py10 `authorization.*_organization_role`), served from the role settings
//! `/admin/organizations/{id}/roles` manages (the directory engine's): list and get, and
//! create / update / delete of one role, each committed with its `organization_role.*` event.
//! Environment roles and permissions are not served (docs/sdk-coverage.md says why).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use idbridge_model::{Event, EventKind, List, OrganizationRoleEvent, Role, RoleObject, Timestamp};
use serde_json::{Map, Value};

use crate::body::{Fields, JsonObject};
use crate::directories_admin::{engine_error, recompute_org};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/authorization/organizations/{org}/roles",
            get(list).post(create),
        )
        .route(
            "/authorization/organizations/{org}/roles/{slug}",
            get(get_one).patch(update).delete(delete),
        )
}

/// WorkOS limits (OpenAPI `CreateOrganizationRoleDto`).
const MAX_SLUG_LEN: usize = 48;
const MAX_NAME_LEN: usize = 48;
const MAX_DESCRIPTION_LEN: usize = 150;
/// Custom roles' slugs start with this (WorkOS's rule; environment roles have none).
const SLUG_PREFIX: &str = "org-";

fn sorted(org: &str, mut roles: Vec<Role>) -> Vec<RoleObject> {
    roles.sort_by(|a, b| a.priority.cmp(&b.priority).then(a.slug.cmp(&b.slug)));
    roles.iter().map(|r| RoleObject::of(org, r)).collect()
}

/// Runs `f` on the directory engine after checking the organization exists (an unknown one is
/// a 404, not an empty list).
async fn with_engine<T, F>(state: &AppState, org: &str, f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(&idbridge_directory::DirectoryEngine) -> ApiResult<T> + Send + 'static,
{
    state.sso.organizations().load(org)?;
    let engine = state.directory.clone();
    tokio::task::spawn_blocking(move || f(&engine))
        .await
        .map_err(ApiError::internal)?
}

async fn list(
    State(state): State<AppState>,
    Path(org): Path<String>,
) -> ApiResult<Json<List<RoleObject>>> {
    let o = org.clone();
    let roles = with_engine(&state, &org, move |e| e.roles(&o).map_err(engine_error)).await?;
    Ok(Json(List::new(sorted(&org, roles), None, None)))
}

fn role_not_found(slug: &str) -> ApiError {
    ApiError::not_found("Role", slug.to_owned())
}

async fn get_one(
    State(state): State<AppState>,
    Path((org, slug)): Path<(String, String)>,
) -> ApiResult<Json<RoleObject>> {
    let o = org.clone();
    let roles = with_engine(&state, &org, move |e| e.roles(&o).map_err(engine_error)).await?;
    sorted(&org, roles)
        .into_iter()
        .find(|r| r.slug == slug)
        .map(Json)
        .ok_or_else(|| role_not_found(&slug))
}

/// A name: required on create, non-blank, at most 48 characters.
fn read_name(f: &mut Fields<'_>, required: bool) -> Option<String> {
    let name = if required {
        f.required_string("name")
    } else {
        match f.raw("name") {
            Some(Value::Null) => {
                f.error("name", "cannot_be_null");
                None
            }
            _ => f.opt_string("name"),
        }
    };
    let name = name.map(|n| n.trim().to_owned());
    match name {
        Some(n) if n.is_empty() => {
            f.error("name", "must_not_be_blank");
            None
        }
        Some(n) if n.chars().count() > MAX_NAME_LEN => {
            f.error("name", "too_long_max_48");
            None
        }
        n => n,
    }
}

/// `description`: absent → `None`; `null` → `Some(None)`; at most 150 characters.
fn read_description(f: &mut Fields<'_>) -> Option<Option<String>> {
    if !f.present("description") {
        return None;
    }
    let d = f.opt_string("description");
    if d.as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_LEN)
    {
        f.error("description", "too_long_max_150");
    }
    Some(d.filter(|d| !d.trim().is_empty()))
}

fn valid_slug(s: &str) -> bool {
    s.len() <= MAX_SLUG_LEN
        && s.len() > SLUG_PREFIX.len()
        && s.starts_with(SLUG_PREFIX)
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// `org-<name as a slug>-<6 random hex digits>`, as WorkOS generates one when none is given.
fn slug_from_name(name: &str) -> String {
    let mut base = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            base.push(c);
        } else if !base.ends_with('-') && !base.is_empty() {
            base.push('-');
        }
    }
    let base: String = base.trim_end_matches('-').chars().take(30).collect();
    let suffix = format!("{:06x}", rand::random::<u32>() & 0x00ff_ffff);
    if base.is_empty() {
        format!("{SLUG_PREFIX}{suffix}")
    } else {
        format!("{SLUG_PREFIX}{base}-{suffix}")
    }
}

struct NewRole {
    slug: String,
    name: String,
    description: Option<String>,
}

fn parse_create(body: &Map<String, Value>) -> ApiResult<NewRole> {
    let mut f = Fields::new(body);
    f.deny_unknown(&["slug", "name", "description", "resource_type_slug"]);
    let name = read_name(&mut f, true);
    let description = read_description(&mut f).flatten();
    let slug = f.opt_string("slug");
    if slug.as_deref().is_some_and(|s| !valid_slug(s)) {
        f.error(
            "slug",
            "must_start_with_org_and_use_a_to_z_0_to_9_hyphen_underscore_max_48",
        );
    }
    if f.opt_string("resource_type_slug")
        .is_some_and(|r| r != "organization")
    {
        // idbridge's roles are organization roles; there are no other resource types.
        f.error("resource_type_slug", "only_organization_is_supported");
    }
    f.finish()?;
    let name = name.ok_or_else(|| ApiError::invalid("name", "required"))?;
    Ok(NewRole {
        slug: slug.unwrap_or_else(|| slug_from_name(&name)),
        name,
        description,
    })
}

fn event(kind: EventKind, org: &str, role: &Role) -> Event<OrganizationRoleEvent> {
    Event::new(kind, OrganizationRoleEvent::of(org, role))
}

async fn create(
    State(state): State<AppState>,
    Path(org): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    state.sso.organizations().load(&org)?;
    let new = parse_create(&body)?;
    let o = org.clone();
    let role = with_engine(&state, &org, move |engine| {
        engine
            .edit_roles(&o, |roles| {
                if roles.iter().any(|r| r.slug == new.slug) {
                    return Err(ApiError::Conflict {
                        code: "organization_role_slug_conflict",
                        message: format!(
                            "The organization already has a role with slug '{}'; choose another slug.",
                            new.slug
                        ),
                    });
                }
                let now = Timestamp::now();
                // A new role comes last in priority and is not the default.
                let priority = roles
                    .iter()
                    .map(|r| r.priority.saturating_add(1))
                    .max()
                    .unwrap_or(0);
                let role = Role {
                    slug: new.slug,
                    name: new.name,
                    description: new.description,
                    priority,
                    is_default: false,
                    created_at: now,
                    updated_at: now,
                };
                roles.push(role.clone());
                let e = event(EventKind::OrganizationRoleCreated, &o, &role);
                Ok((role, e))
            })
            .map_err(engine_error)?
    })
    .await?;
    tracing::info!(organization_id = %org, slug = %role.slug, "organization role created");
    Ok((StatusCode::CREATED, Json(RoleObject::of(&org, &role))))
}

async fn update(
    State(state): State<AppState>,
    Path((org, slug)): Path<(String, String)>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<RoleObject>> {
    state.sso.organizations().load(&org)?;
    let mut f = Fields::new(&body);
    f.deny_unknown(&["name", "description"]);
    let name = read_name(&mut f, false);
    let description = read_description(&mut f);
    f.finish()?;
    let o = org.clone();
    let role = with_engine(&state, &org, move |engine| {
        engine
            .edit_roles(&o, |roles| {
                let Some(role) = roles.iter_mut().find(|r| r.slug == slug) else {
                    return Err(role_not_found(&slug));
                };
                if let Some(n) = name {
                    role.name = n;
                }
                if let Some(d) = description {
                    role.description = d;
                }
                role.updated_at = Timestamp::now();
                let role = role.clone();
                let e = event(EventKind::OrganizationRoleUpdated, &o, &role);
                Ok((role, e))
            })
            .map_err(engine_error)?
    })
    .await?;
    Ok(Json(RoleObject::of(&org, &role)))
}

async fn delete(
    State(state): State<AppState>,
    Path((org, slug)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let o = org.clone();
    with_engine(&state, &org, move |engine| {
        engine
            .edit_roles(&o, |roles| {
                let Some(i) = roles.iter().position(|r| r.slug == slug) else {
                    return Err(role_not_found(&slug));
                };
                if roles[i].is_default {
                    return Err(ApiError::BadRequest {
                        code: "bad_request",
                        message: format!(
                            "'{slug}' is the organization's default role; make another role the default (PUT /admin/organizations/{o}/roles) before deleting it."
                        ),
                    });
                }
                let role = roles.remove(i);
                let e = event(EventKind::OrganizationRoleDeleted, &o, &role);
                Ok(((), e))
            })
            .map_err(engine_error)??;
        // Users who had the role get the default one (or lose it) now, as after PUT .../roles.
        recompute_org(engine, &o)?;
        Ok(())
    })
    .await?;
    tracing::info!(organization_id = %org, "organization role deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::events_api::test_support::harness;

    /// Create, update and delete of an organization role: each refused input is named and
    /// changes nothing; each change is one `organization_role.*` event with the role's data;
    /// a deleted role's mappings go with it; the default role cannot be deleted.
    #[tokio::test]
    async fn organization_roles_are_created_updated_and_deleted_with_their_events() {
        let h = harness();
        let org = h
            .call("POST", "/organizations", Some(json!({"name": "Acme"})), &[])
            .await
            .json()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let r = h
            .call(
                "PUT",
                &format!("/admin/organizations/{org}/roles"),
                Some(json!({"roles": [{"slug": "member", "default": true}]})),
                &[],
            )
            .await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.json());
        // The set-up PUT announced the role it added; what follows is counted from here.
        let set_up = h.store.last_event_seq().unwrap();
        let announced = h.store.events_after(0, 1000).unwrap();
        assert!(
            announced
                .iter()
                .any(|e| e.kind == "organization_role.created"),
            "the set-up PUT announced no role"
        );
        let base = format!("/authorization/organizations/{org}/roles");
        let events = |h: &crate::events_api::test_support::Harness| {
            h.store
                .events_after(set_up, 1000)
                .unwrap()
                .into_iter()
                .filter(|e| e.kind.starts_with("organization_role."))
                .map(|e| {
                    let body: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
                    (e.kind, body["data"].clone())
                })
                .collect::<Vec<_>>()
        };

        for (body, field) in [
            (json!({}), "name"),
            (json!({"name": "  "}), "name"),
            (json!({"name": "x".repeat(49)}), "name"),
            (json!({"name": "B", "slug": "billing"}), "slug"),
            (json!({"name": "B", "slug": "org-Billing"}), "slug"),
            (
                json!({"name": "B", "description": "d".repeat(151)}),
                "description",
            ),
            (
                json!({"name": "B", "resource_type_slug": "workspace"}),
                "resource_type_slug",
            ),
            (json!({"name": "B", "permissions": []}), "permissions"),
        ] {
            let r = h.call("POST", &base, Some(body.clone()), &[]).await;
            assert_eq!(r.status.as_u16(), 422, "{body}: {}", r.json());
            assert!(
                r.json()["errors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["field"] == field),
                "{body}: {}",
                r.json()
            );
        }
        assert!(events(&h).is_empty(), "refused: no event");

        let r = h
            .call(
                "POST",
                &base,
                Some(json!({"slug": "org-billing", "name": "Billing", "description": "Pays"})),
                &[],
            )
            .await;
        assert_eq!(r.status.as_u16(), 201, "{}", r.json());
        let created = r.json();
        assert_eq!(created["slug"], "org-billing");
        assert_eq!(created["description"], "Pays");
        assert_eq!(created["type"], "OrganizationRole");
        let dup = h
            .call(
                "POST",
                &base,
                Some(json!({"slug": "org-billing", "name": "Again"})),
                &[],
            )
            .await;
        assert_eq!(dup.status.as_u16(), 409);
        assert_eq!(dup.json()["code"], "organization_role_slug_conflict");
        let generated = h
            .call("POST", &base, Some(json!({"name": "Finance Team!"})), &[])
            .await;
        assert_eq!(generated.status.as_u16(), 201);
        let gslug = generated.json()["slug"].as_str().unwrap().to_string();
        assert!(gslug.starts_with("org-finance-team-"), "{gslug}");

        let r = h
            .call(
                "PATCH",
                &format!("{base}/org-billing"),
                Some(json!({"description": null, "name": "Billing admins"})),
                &[],
            )
            .await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.json());
        assert_eq!(r.json()["name"], "Billing admins");
        assert_eq!(r.json()["description"], serde_json::Value::Null);
        assert_eq!(r.json()["id"], created["id"], "the id does not change");
        let r = h
            .call(
                "PATCH",
                &format!("{base}/org-nobody"),
                Some(json!({"name": "N"})),
                &[],
            )
            .await;
        assert_eq!(r.status.as_u16(), 404);
        let r = h
            .call(
                "PATCH",
                &format!("{base}/org-billing"),
                Some(json!({"name": null})),
                &[],
            )
            .await;
        assert_eq!(r.status.as_u16(), 422);

        // A mapping to the role goes with it.
        let r = h
            .call(
                "PUT",
                &format!("/admin/organizations/{org}/role_mappings"),
                Some(json!({"role_mappings": [{"idp_group": "g-billing", "role_slug": "org-billing"}]})),
                &[],
            )
            .await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.json());
        let r = h.call("DELETE", &format!("{base}/member"), None, &[]).await;
        assert_eq!(r.status.as_u16(), 400, "the default role stays");
        let r = h
            .call("DELETE", &format!("{base}/org-billing"), None, &[])
            .await;
        assert_eq!(r.status.as_u16(), 204);
        let r = h
            .call("DELETE", &format!("{base}/org-billing"), None, &[])
            .await;
        assert_eq!(r.status.as_u16(), 404);
        let m = h
            .call(
                "GET",
                &format!("/admin/organizations/{org}/role_mappings"),
                None,
                &[],
            )
            .await;
        assert_eq!(m.json()["data"], json!([]));
        let listed = h.call("GET", &base, None, &[]).await.json();
        let slugs: Vec<&str> = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["slug"].as_str().unwrap())
            .collect();
        assert_eq!(slugs, ["member", gslug.as_str()]);

        let got = events(&h);
        let kinds: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "organization_role.created",
                "organization_role.created",
                "organization_role.updated",
                "organization_role.deleted"
            ]
        );
        let deleted = &got[3].1;
        assert_eq!(deleted["object"], "organization_role");
        assert_eq!(deleted["organization_id"], org.as_str());
        assert_eq!(deleted["slug"], "org-billing");
        assert_eq!(deleted["name"], "Billing admins");
        assert_eq!(deleted["permissions"], json!([]));
        let unknown = h
            .call(
                "POST",
                "/authorization/organizations/org_01ARZ3NDEKTSV4RRFFQ69G5FAV/roles",
                Some(json!({"name": "X"})),
                &[],
            )
            .await;
        assert_eq!(unknown.status.as_u16(), 404);
    }
}
