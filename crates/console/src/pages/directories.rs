//! Directories: list, and one directory's state, counters, last LDAP run, and its users and
//! groups in keyset pages (never the whole directory at once).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use idbridge_directory::EngineError;
use idbridge_model::PageRequest;
use maud::html;

use super::{page, pager, store_error, PageQuery};
use crate::login::Empty;
use crate::web::{self, CsrfForm};
use crate::{Console, Operator};

const PATH: &str = "/console/directories";

/// A directory-engine failure as a page.
pub(crate) fn engine_error(e: &EngineError) -> Response {
    match e {
        EngineError::NotFound { what, id } => web::bare_error(
            StatusCode::NOT_FOUND,
            "Not found",
            &format!("The {what} {id} does not exist (it may have been deleted)."),
        ),
        EngineError::Store(s) => store_error(s),
        other => {
            tracing::error!(error = %other, "console: directory engine error");
            web::bare_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Directory error",
                "The directory could not be read; the server's log says why.",
            )
        }
    }
}

pub(crate) async fn list(
    State(c): State<Arc<Console>>,
    Extension(op): Extension<Operator>,
    Query(q): Query<PageQuery>,
) -> Response {
    let dirs = match c
        .directory
        .list_directories(None, &q.request("directories"))
    {
        Ok(p) => p,
        Err(e) => return engine_error(&e),
    };
    page(
        &c,
        &op,
        PATH,
        "Directories",
        html! {
            div class="table-wrap" {
                table {
                    caption { "Directories, newest first" }
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Type" } th scope="col" { "State" } th scope="col" { "Users" } th scope="col" { "Groups" } th scope="col" { "Organization" } } }
                    tbody {
                        @for rec in &dirs.data {
                            @let d = &rec.directory;
                            tr {
                                td { a href=(c.url(&format!("{PATH}/{}", d.id))) { (d.name) } }
                                td { (d.directory_type) }
                                td { (d.state.event_name()) }
                                td { (d.metadata.users.active) " active, " (d.metadata.users.inactive) " inactive" }
                                td { (d.metadata.groups) }
                                td { a href=(c.url(&format!("/console/organizations/{}", d.organization_id))) { code { (d.organization_id) } } }
                            }
                        }
                        @if dirs.data.is_empty() { tr { td colspan="6" { "No directory yet." } } }
                    }
                }
            }
            (pager(&c, PATH, None, None, dirs.before.as_deref(), dirs.after.as_deref()))
        },
    )
}

fn contains(hay: Option<&str>, needle: &str) -> bool {
    hay.is_some_and(|h| h.to_lowercase().contains(needle))
}

/// Users one search request reads at most: no index serves a substring search, so a search
/// walks the directory in slices and one page view stays fast however big the directory is;
/// "Older →" goes on from where the slice stopped.
const SEARCH_SCAN: usize = 5_000;
const SEARCH_CHUNK: usize = 1_000;

/// One slice of a search: up to a page of matches among at most [`SEARCH_SCAN`] users after
/// the cursor, newest first; `after` is where the next slice starts. Also how many were read.
fn search_users(
    c: &Console,
    dir_id: &str,
    q: &PageQuery,
    needle: &str,
) -> Result<(idbridge_model::Page<idbridge_directory::StoredUser>, usize), EngineError> {
    let mut cursor = match q.request("users").cursor {
        after @ idbridge_model::Cursor::After(_) => after,
        _ => idbridge_model::Cursor::None,
    };
    let (mut found, mut scanned, mut last) = (Vec::new(), 0, None);
    let mut exhausted = false;
    'slices: while scanned < SEARCH_SCAN {
        let chunk = c.directory.list_users(
            dir_id,
            None,
            &PageRequest {
                limit: SEARCH_CHUNK,
                order: idbridge_model::Order::Desc,
                cursor: cursor.clone(),
            },
        )?;
        let more = chunk.after.clone();
        for su in chunk.data {
            scanned += 1;
            last = Some(su.user.id.clone());
            let u = &su.user;
            if contains(u.email.as_deref(), needle)
                || contains(u.first_name.as_deref(), needle)
                || contains(u.last_name.as_deref(), needle)
                || contains(Some(&u.idp_id), needle)
            {
                found.push(su);
                if found.len() == super::PAGE_SIZE {
                    break 'slices;
                }
            }
        }
        match more {
            Some(a) => cursor = idbridge_model::Cursor::After(a),
            None => {
                exhausted = true;
                break;
            }
        }
    }
    let page = idbridge_model::Page {
        data: found,
        before: None,
        after: if exhausted { None } else { last },
    };
    Ok((page, scanned))
}

pub(crate) async fn detail(
    State(c): State<Arc<Console>>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    render_detail(&c, &op, &id, &q, None)
}

/// `POST /console/directories/{id}/scim-token`: a new SCIM bearer token (the old one stops
/// working at once), shown on this one answer only; the store keeps only its digest.
pub(crate) async fn rotate_scim_token(
    State(c): State<Arc<Console>>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
    CsrfForm(Empty {}): CsrfForm<Empty>,
) -> Response {
    let directory = c.directory.clone();
    let dir_id = id.clone();
    let rotated = tokio::task::spawn_blocking(move || directory.rotate_scim_token(&dir_id)).await;
    match rotated {
        Ok(Ok(token)) => {
            tracing::info!(operator = %op.username, directory = %id, "console: SCIM token rotated");
            render_detail(&c, &op, &id, &PageQuery::default(), Some(&token))
        }
        Ok(Err(EngineError::NotFound { .. })) => {
            super::not_found(&c, &op, &format!("Directory {id}"))
        }
        Ok(Err(e)) => engine_error(&e),
        Err(e) => {
            tracing::error!(error = %e, "console: SCIM token rotation task failed");
            web::bare_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Directory error",
                "The token could not be rotated; the server's log says why.",
            )
        }
    }
}

/// `POST /console/directories/{id}/sync`: starts a full LDAP sync in the background; the page
/// then reloads itself with the progress until the run is done.
pub(crate) async fn sync_now(
    State(c): State<Arc<Console>>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
    CsrfForm(Empty {}): CsrfForm<Empty>,
) -> Response {
    let is_ldap = match c.directory.get_directory(&id) {
        Ok(rec) => rec.directory.directory_type == idbridge_ldap::DIRECTORY_TYPE,
        Err(EngineError::NotFound { .. }) => false,
        Err(e) => return engine_error(&e),
    };
    if !is_ldap {
        return super::not_found(&c, &op, &format!("LDAP directory {id}"));
    }
    let started = match &c.ldap {
        Some(ldap) => ldap.start(&id),
        None => Err("This server runs no LDAP scheduler.".to_string()),
    };
    match started {
        Ok(()) => {
            tracing::info!(operator = %op.username, directory = %id, "console: ldap sync started");
            web::redirect(&c, &format!("{PATH}/{id}"))
        }
        Err(why) => with_message(&c, &op, &id, &why),
    }
}

/// The directory's page with an error message above it (409: the action could not run).
fn with_message(c: &Console, op: &Operator, id: &str, message: &str) -> Response {
    let mut res = render_detail_with(c, op, id, &PageQuery::default(), None, Some(message));
    if res.status() == StatusCode::OK {
        *res.status_mut() = StatusCode::CONFLICT;
    }
    res
}

/// `POST /console/directories/{id}/sync/confirm`: the operator confirms the deletion the
/// mass-deletion guard stopped; the next full run applies it.
pub(crate) async fn confirm_deletion(
    State(c): State<Arc<Console>>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
    CsrfForm(Empty {}): CsrfForm<Empty>,
) -> Response {
    match c.directory.get_directory(&id) {
        Ok(rec) if rec.directory.directory_type == idbridge_ldap::DIRECTORY_TYPE => {}
        Ok(_) | Err(EngineError::NotFound { .. }) => {
            return super::not_found(&c, &op, &format!("LDAP directory {id}"))
        }
        Err(e) => return engine_error(&e),
    }
    let states = idbridge_ldap::state::StateStore::new(c.store.clone());
    let dir_id = id.clone();
    let confirmed = tokio::task::spawn_blocking(move || states.confirm_deletion(&dir_id)).await;
    match confirmed {
        Ok(Ok(Some(st))) => {
            tracing::warn!(operator = %op.username, directory = %id, pending = ?st.pending_guard, "console: guarded ldap deletion confirmed");
            web::redirect(&c, &format!("{PATH}/{id}"))
        }
        Ok(Ok(None)) => with_message(
            &c,
            &op,
            &id,
            "No sync of this directory is waiting for a deletion confirmation.",
        ),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "console: cannot confirm the ldap deletion");
            with_message(
                &c,
                &op,
                &id,
                "The confirmation could not be stored; try again.",
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "console: confirmation task failed");
            with_message(
                &c,
                &op,
                &id,
                "The confirmation could not be stored; try again.",
            )
        }
    }
}

/// The directory's page; `new_token` is a SCIM token just rotated, shown this once.
fn render_detail(
    c: &Console,
    op: &Operator,
    id: &str,
    q: &PageQuery,
    new_token: Option<&str>,
) -> Response {
    render_detail_with(c, op, id, q, new_token, None)
}

fn render_detail_with(
    c: &Console,
    op: &Operator,
    id: &str,
    q: &PageQuery,
    new_token: Option<&str>,
    message: Option<&str>,
) -> Response {
    let id = id.to_string();
    let rec = match c.directory.get_directory(&id) {
        Ok(r) => r,
        Err(EngineError::NotFound { .. }) => {
            return super::not_found(c, op, &format!("Directory {id}"))
        }
        Err(e) => return engine_error(&e),
    };
    let search = q.search();
    let (users, scanned) = match &search {
        None => (c.directory.list_users(&id, None, &q.request("users")), None),
        Some(s) => match search_users(c, &id, q, s) {
            Ok((page, scanned)) => (Ok(page), Some(scanned)),
            Err(e) => (Err(e), None),
        },
    };
    let users = match users {
        Ok(p) => p,
        Err(e) => return engine_error(&e),
    };
    let groups = match c.directory.list_groups(
        &id,
        None,
        &PageRequest {
            limit: super::PAGE_SIZE,
            ..q.request("groups")
        },
    ) {
        Ok(p) => p,
        Err(e) => return engine_error(&e),
    };
    let ldap_state = if rec.directory.directory_type.contains("ldap") {
        idbridge_ldap::state::StateStore::new(c.store.clone())
            .load(&id)
            .ok()
    } else {
        None
    };
    let last_run = ldap_state
        .as_ref()
        .and_then(|s| match (&s.last_full, &s.last_delta) {
            (Some(f), Some(d)) => Some(if d.started_at > f.started_at { d } else { f }),
            (Some(r), None) | (None, Some(r)) => Some(r),
            (None, None) => None,
        })
        .cloned();
    let d = &rec.directory;
    let path = format!("{PATH}/{id}");
    let scim = rec.scim_token_digest.is_some();
    let running = match (&ldap_state, &c.ldap) {
        (Some(_), Some(l)) => l.progress(&id),
        _ => None,
    };
    let content = html! {
            @if let Some(m) = message { p class="error" role="alert" { (m) } }
            dl class="facts" {
                dt { "Id" } dd { code { (d.id) } }
                dt { "Type" } dd { (d.directory_type) }
                dt { "State" } dd { (d.state.event_name()) }
                dt { "Users" } dd { (d.metadata.users.active) " active, " (d.metadata.users.inactive) " inactive" }
                dt { "Groups" } dd { (d.metadata.groups) }
                dt { "Organization" } dd { a href=(c.url(&format!("/console/organizations/{}", d.organization_id))) { code { (d.organization_id) } } }
            }
            @if scim {
                section class="card" aria-labelledby="scim" {
                    h2 id="scim" { "SCIM" }
                    (web::copy_field("SCIM endpoint (base URL)", "scim_endpoint", &idbridge_scim::router::endpoint_url(&c.settings.public_url, &id)))
                    @if let Some(token) = new_token {
                        div class="secret" role="status" {
                            (web::copy_field("New bearer token", "scim_token", token))
                            p { "Copy it into your identity provider now: it is shown only this once. The old token no longer works." }
                        }
                    } @else {
                        p { "The bearer token is shown only when it is made. Rotate it to get a new one; the old token stops working at once." }
                    }
                    form method="post" action=(c.url(&format!("{path}/scim-token"))) {
                        (web::csrf_input(&op.csrf))
                        button type="submit" { "Rotate token" }
                    }
                }
            }
            @if let Some(st) = &ldap_state {
                section class="card" aria-labelledby="last-run" {
                    h2 id="last-run" { "Last sync" }
                    @if let Some(r) = &last_run {
                        dl class="facts" {
                            dt { "Kind" } dd { (r.kind.as_ref().map_or("—".to_string(), |k| format!("{k:?}").to_lowercase())) }
                            dt { "Started" } dd { (r.started_at.map_or("—".to_string(), |t| t.to_rfc3339())) }
                            dt { "Result" } dd { (if r.ok { "applied" } else { "failed" }) }
                            dt { "Took" } dd { (r.duration_ms) " ms" }
                            dt { "Read" } dd { (r.users_read) " users, " (r.groups_read) " groups" }
                            dt { "Users" } dd { (r.created) " created, " (r.updated) " updated, " (r.deleted) " deleted" }
                            dt { "Groups changed" } dd { (r.groups_changed) }
                        }
                    } @else { p { "No run yet." } }
                    @if let Some(err) = &st.last_error { p class="error" { "Last error: " (err) } }
                    p { (st.runs) " runs, " (st.failures) " failed." }
                    @if let Some(p) = &running {
                        p class="notice" role="status" id="sync-progress" {
                            "Sync running: "
                            @if p.phase.is_empty() { "connecting" } @else { (p.phase) " " (p.done) @if let Some(t) = p.total { " of " (t) } }
                            ". This page reloads itself until it is done."
                        }
                    } @else {
                        form method="post" action=(c.url(&format!("{path}/sync"))) {
                            (web::csrf_input(&op.csrf))
                            button type="submit" { "Sync now" }
                        }
                    }
                    @if let Some(g) = &st.pending_guard {
                        div class="secret" {
                            h3 { "Deletion waiting for confirmation" }
                            p {
                                "The last full sync would delete " (g.would_delete) " of " (g.total)
                                " users (more than the " (format!("{:.0}", g.threshold * 100.0)) " % allowed), so nothing was deleted."
                            }
                            @if !g.sample.is_empty() {
                                p { "Among them: " @for (i, u) in g.sample.iter().enumerate() { @if i > 0 { ", " } code { (u) } } }
                            }
                            @if st.deletion_confirmed {
                                p class="notice" { "Confirmed: the next full sync deletes them." }
                            } @else {
                                p { "If the directory really lost these users, confirm: the next full sync deletes them. Otherwise fix the LDAP settings (base DN, filter) first." }
                                form method="post" action=(c.url(&format!("{path}/sync/confirm"))) {
                                    (web::csrf_input(&op.csrf))
                                    button type="submit" { "Confirm the deletion" }
                                }
                            }
                        }
                    }
                }
            }
            section class="card" aria-labelledby="users" {
                h2 id="users" { "Users" }
                form method="get" action=(c.url(&path)) class="search" role="search" {
                    label for="search" { "Search users (email, name, IdP id)" }
                    input id="search" name="search" type="search" value=(q.search.clone().unwrap_or_default());
                    input type="hidden" name="table" value="users";
                    button type="submit" { "Search" }
                }
                div class="table-wrap" {
                    table {
                        thead { tr { th scope="col" { "Email" } th scope="col" { "Name" } th scope="col" { "State" } th scope="col" { "IdP id" } } }
                        tbody {
                            @for su in &users.data {
                                @let u = &su.user;
                                tr {
                                    td { (u.email.as_deref().unwrap_or("—")) }
                                    td { (u.first_name.as_deref().unwrap_or("")) " " (u.last_name.as_deref().unwrap_or("")) }
                                    td { (format!("{:?}", u.state).to_lowercase()) }
                                    td { code { (u.idp_id) } }
                                }
                            }
                            @if users.data.is_empty() { tr { td colspan="4" { "No user." @if users.after.is_some() { " (in this slice)" } } } }
                        }
                    }
                }
                @if let (Some(n), Some(_)) = (scanned, &users.after) {
                    p { "This search read " (n) " users; “Older →” searches on." }
                }
                (pager(c, &path, Some("users"), q.search.as_deref(), users.before.as_deref(), users.after.as_deref()))
            }
            section class="card" aria-labelledby="groups" {
                h2 id="groups" { "Groups" }
                div class="table-wrap" {
                    table {
                        thead { tr { th scope="col" { "Name" } th scope="col" { "IdP id" } } }
                        tbody {
                            @for sg in &groups.data {
                                tr { td { (sg.group.name) } td { code { (sg.group.idp_id) } } }
                            }
                            @if groups.data.is_empty() { tr { td colspan="2" { "No group." } } }
                        }
                    }
                }
                (pager(c, &path, Some("groups"), None, groups.before.as_deref(), groups.after.as_deref()))
            }
    };
    let refresh = running.as_ref().map(|_| "2");
    web::layout_refreshing(c, &d.name, super::nav(c, op, PATH), content, refresh).into_response()
}
