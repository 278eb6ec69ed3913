//! Directory Sync read API: `/directories`, `/directory_users`, `/directory_groups`
//! (workos-api.md §3), over the directory engine that the feeds (SCIM, LDAP, SFTP) write.
//!
//! Lists use WorkOS pagination ([`crate::pagination::PageRequest`]) in id order; ids are ULIDs and `created_at` is
//! taken from them, so id order is "created_at, then id". Unknown ids, in the path or in a
//! filter, are 404 `entity_not_found`; a missing required filter is 422.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use idbridge_directory::{DirectoryEngine, StoredUser};
use idbridge_model::{
    parse_id, Directory, DirectoryGroup, DirectoryUserWithGroups, IdPrefix, List,
};

use crate::body::Query;
use crate::directories_admin::engine_error;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::pagination::page_request;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/directories", get(list_directories))
        .route(
            "/directories/{id}",
            get(get_directory).delete(delete_directory),
        )
        .route("/directory_users", get(list_users))
        .route("/directory_users/{id}", get(get_user))
        .route("/directory_groups", get(list_groups))
        .route("/directory_groups/{id}", get(get_group))
}

/// Runs engine work on the blocking pool: the engine and the store block, and a filtered list
/// may scan a whole directory.
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

/// A path or filter id that cannot be one of ours is simply not found (never 500, never a hint
/// about which ids exist).
fn check_id(prefix: IdPrefix, entity: &'static str, id: &str) -> ApiResult<()> {
    parse_id(prefix, id)
        .map(|_| ())
        .map_err(|_| ApiError::not_found(entity, id))
}

async fn list_directories(
    State(state): State<AppState>,
    q: Query,
) -> ApiResult<Json<List<Directory>>> {
    let page = page_request(&q, IdPrefix::Directory)?;
    let org = q.get("organization_id").map(str::to_owned);
    let search = q.get("search").map(str::to_lowercase);
    let domain = q.get("domain").map(str::to_ascii_lowercase);
    blocking(&state, move |engine| {
        let result = engine
            .list_directories_where(&page, |d| {
                org.as_ref().is_none_or(|o| &d.organization_id == o)
                    && search
                        .as_ref()
                        .is_none_or(|s| d.name.to_lowercase().contains(s))
                    && domain.as_ref().is_none_or(|want| {
                        d.domain
                            .as_ref()
                            .is_some_and(|have| have.eq_ignore_ascii_case(want))
                    })
            })
            .map_err(engine_error)?;
        let data = result.data.into_iter().map(|rec| rec.directory).collect();
        Ok(Json(List::new(data, result.before, result.after)))
    })
    .await
}

async fn get_directory(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Directory>> {
    check_id(IdPrefix::Directory, "Directory", &id)?;
    blocking(&state, move |engine| {
        let rec = engine.get_directory(&id).map_err(engine_error)?;
        Ok(Json(rec.directory))
    })
    .await
}

/// 202 with an empty body, as WorkOS answers (workos-api.md §3.1); the engine appends exactly
/// one `dsync.deleted` and no per-user or per-group events.
async fn delete_directory(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    check_id(IdPrefix::Directory, "Directory", &id)?;
    blocking(&state, move |engine| {
        engine.delete_directory(&id).map_err(engine_error)?;
        Ok(StatusCode::ACCEPTED)
    })
    .await
}

/// `directory` / `group` filters of `/directory_users`, validated.
struct UserFilters {
    directory: Option<String>,
    group: Option<String>,
    idp_id: Option<String>,
    email: Option<String>,
}

impl UserFilters {
    fn from_query(q: &Query) -> ApiResult<Self> {
        let f = UserFilters {
            directory: q.get("directory").map(str::to_owned),
            group: q.get("group").map(str::to_owned),
            idp_id: q.get("idp_id").map(str::to_owned),
            email: q.get("email").map(str::to_owned),
        };
        let mut errors = Vec::new();
        if f.directory.is_none() && f.group.is_none() {
            errors.push(FieldError::new("directory", "directory_or_group_required"));
        }
        if f.directory.is_none() {
            if f.idp_id.is_some() {
                errors.push(FieldError::new("idp_id", "requires_directory"));
            }
            if f.email.is_some() {
                errors.push(FieldError::new("email", "requires_directory"));
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        if let Some(d) = &f.directory {
            check_id(IdPrefix::Directory, "Directory", d)?;
        }
        if let Some(g) = &f.group {
            check_id(IdPrefix::DirectoryGroup, "Directory Group", g)?;
        }
        Ok(f)
    }
}

async fn list_users(
    State(state): State<AppState>,
    q: Query,
) -> ApiResult<Json<List<DirectoryUserWithGroups>>> {
    let page = page_request(&q, IdPrefix::DirectoryUser)?;
    let f = UserFilters::from_query(&q)?;
    blocking(&state, move |engine| {
        let dir_id = match (&f.directory, &f.group) {
            (Some(d), _) => d.clone(),
            (None, Some(g)) => {
                engine
                    .get_group(None, g)
                    .map_err(engine_error)?
                    .group
                    .directory_id
            }
            (None, None) => return Err(ApiError::invalid("directory", "required")),
        };
        let (users, before, after) = if f.idp_id.is_none() && f.email.is_none() {
            let p = engine
                .list_users(&dir_id, f.group.as_deref(), &page)
                .map_err(engine_error)?;
            (p.data, p.before, p.after)
        } else {
            // The directory and group must exist even when nothing matches.
            engine.get_directory(&dir_id).map_err(engine_error)?;
            if let Some(g) = &f.group {
                engine.get_group(Some(&dir_id), g).map_err(engine_error)?;
            }
            let email = f.email.as_deref().map(str::to_lowercase);
            let email_ok = |u: &StoredUser| {
                email.as_ref().is_none_or(|want| {
                    u.user
                        .email
                        .as_ref()
                        .is_some_and(|have| have.to_lowercase() == *want)
                })
            };
            match &f.idp_id {
                // idp_id is unique per directory: an index lookup, at most one result.
                Some(idp) => {
                    let found = engine
                        .find_user_by_idp_id(&dir_id, idp)
                        .map_err(engine_error)?;
                    let mut data = Vec::new();
                    if let Some(u) = found {
                        let member = match &f.group {
                            None => true,
                            Some(g) => engine.is_member(g, &u.user.id).map_err(engine_error)?,
                        };
                        if member && email_ok(&u) && page.admits(&u.user.id) {
                            data.push(u);
                        }
                    }
                    (data, None, None)
                }
                // Email is not indexed (feeds choose their unique keys): a filtered scan.
                None => {
                    let result = engine
                        .list_users_where(&dir_id, f.group.as_deref(), &page, email_ok)
                        .map_err(engine_error)?;
                    (result.data, result.before, result.after)
                }
            }
        };
        let data = engine.with_groups(users).map_err(engine_error)?;
        Ok(Json(List::new(data, before, after)))
    })
    .await
}

async fn get_user(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<DirectoryUserWithGroups>> {
    check_id(IdPrefix::DirectoryUser, "Directory User", &id)?;
    blocking(&state, move |engine| {
        Ok(Json(
            engine.get_user_with_groups(&id).map_err(engine_error)?,
        ))
    })
    .await
}

async fn list_groups(
    State(state): State<AppState>,
    q: Query,
) -> ApiResult<Json<List<DirectoryGroup>>> {
    let page = page_request(&q, IdPrefix::DirectoryGroup)?;
    let directory = q.get("directory").map(str::to_owned);
    let user = q.get("user").map(str::to_owned);
    if directory.is_none() && user.is_none() {
        return Err(ApiError::invalid("directory", "directory_or_user_required"));
    }
    if let Some(d) = &directory {
        check_id(IdPrefix::Directory, "Directory", d)?;
    }
    if let Some(u) = &user {
        check_id(IdPrefix::DirectoryUser, "Directory User", u)?;
    }
    blocking(&state, move |engine| {
        let dir_id = match (directory, &user) {
            (Some(d), _) => d,
            (None, Some(u)) => {
                engine
                    .get_user(None, u)
                    .map_err(engine_error)?
                    .user
                    .directory_id
            }
            (None, None) => return Err(ApiError::invalid("directory", "required")),
        };
        let p = engine
            .list_groups(&dir_id, user.as_deref(), &page)
            .map_err(engine_error)?;
        let data = p.data.into_iter().map(|g| g.group).collect();
        Ok(Json(List::new(data, p.before, p.after)))
    })
    .await
}

async fn get_group(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<DirectoryGroup>> {
    check_id(IdPrefix::DirectoryGroup, "Directory Group", &id)?;
    blocking(&state, move |engine| {
        Ok(Json(
            engine.get_group(None, &id).map_err(engine_error)?.group,
        ))
    })
    .await
}
