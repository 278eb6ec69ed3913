//! The WorkOS roles endpoints the SDKs call for an organization (Node 11
//! `authorization.listOrganizationRoles` / `getOrganizationRole`, py10
//! `authorization.list_organization_roles` / `get_organization_role`), served read-only from the
//! role settings `/admin/organizations/{id}/roles` manages (the directory engine's). Creating,
//! changing and deleting roles stays with the admin API; those WorkOS operations are not served.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use idbridge_model::{List, RoleObject};

use crate::directories_admin::engine_error;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/authorization/organizations/{org}/roles", get(list))
        .route(
            "/authorization/organizations/{org}/roles/{slug}",
            get(get_one),
        )
}

async fn roles_of(state: &AppState, org: String) -> ApiResult<Vec<RoleObject>> {
    // An unknown organization is a 404, not an empty list.
    state.sso.organizations().load(&org)?;
    let engine = state.directory.clone();
    tokio::task::spawn_blocking(move || {
        let mut roles = engine.roles(&org).map_err(engine_error)?;
        roles.sort_by(|a, b| a.priority.cmp(&b.priority).then(a.slug.cmp(&b.slug)));
        Ok(roles.iter().map(|r| RoleObject::of(&org, r)).collect())
    })
    .await
    .map_err(ApiError::internal)?
}

async fn list(
    State(state): State<AppState>,
    Path(org): Path<String>,
) -> ApiResult<Json<List<RoleObject>>> {
    let data = roles_of(&state, org).await?;
    Ok(Json(List::new(data, None, None)))
}

async fn get_one(
    State(state): State<AppState>,
    Path((org, slug)): Path<(String, String)>,
) -> ApiResult<Json<RoleObject>> {
    roles_of(&state, org)
        .await?
        .into_iter()
        .find(|r| r.slug == slug)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("Role", slug))
}
