//! The operator's pages: organizations (with domains and SSO connections), directories (with
//! users and groups), the events feed and health.

pub(crate) mod connections;
pub(crate) mod directories;
mod events;
mod health;
mod organizations;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use idbridge_model::{Cursor, Order, PageRequest};
use idbridge_sso::SsoError;
use idbridge_store::StoreError;
use maud::{html, Markup};
use serde::Deserialize;

use crate::web;
use crate::{Console, Operator};

/// Rows per table page.
pub(crate) const PAGE_SIZE: usize = 25;

pub(crate) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route(
            "/console",
            get(|| async { axum::response::Redirect::to("console/organizations") }),
        )
        .route(
            "/console/organizations",
            get(organizations::list).post(organizations::create),
        )
        .route("/console/organizations/{id}", get(organizations::detail))
        .route(
            "/console/organizations/{id}/domains",
            post(organizations::add_domain),
        )
        .route(
            "/console/organizations/{id}/connections",
            post(connections::create),
        )
        .route("/console/connections/{id}", get(connections::detail))
        .route(
            "/console/connections/{id}/test-sign-in",
            post(crate::test_sign_in::start),
        )
        .route(
            "/console/test-sign-in/results/{id}",
            get(crate::test_sign_in::result),
        )
        .route("/console/directories", get(directories::list))
        .route("/console/directories/{id}", get(directories::detail))
        .route(
            "/console/directories/{id}/sync",
            post(directories::sync_now),
        )
        .route(
            "/console/directories/{id}/sync/confirm",
            post(directories::confirm_deletion),
        )
        .route(
            "/console/directories/{id}/scim-token",
            post(directories::rotate_scim_token),
        )
        .route("/console/events", get(events::list))
        .route("/console/health", get(health::show))
        .route("/console/logout", post(crate::login::logout))
}

/// The console's header: navigation and the sign-out form.
pub(crate) fn nav(c: &Console, op: &Operator, current: &str) -> Markup {
    let items = [
        ("Organizations", "/console/organizations"),
        ("Directories", "/console/directories"),
        ("Events", "/console/events"),
        ("Health", "/console/health"),
    ];
    html! {
        header class="top" {
            a class="skip" href="#main" { "Skip to content" }
            span class="brand" { "idbridge console" }
            nav aria-label="Main" {
                @for (label, path) in items {
                    @if path == current {
                        a href=(c.url(path)) aria-current="page" { (label) }
                    } @else {
                        a href=(c.url(path)) { (label) }
                    }
                }
            }
            form method="post" action=(c.url("/console/logout")) class="logout" {
                (web::csrf_input(&op.csrf))
                button type="submit" class="link" { "Sign out " (op.username) }
            }
        }
    }
}

/// A console page for the signed-in operator.
pub(crate) fn page(
    c: &Console,
    op: &Operator,
    current: &str,
    title: &str,
    content: Markup,
) -> Response {
    web::layout(c, title, nav(c, op, current), content).into_response()
}

/// A store failure: 503, nothing changed, retry later.
pub(crate) fn store_error(e: &StoreError) -> Response {
    tracing::error!(error = %e, "console: store error");
    web::bare_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "The store did not answer",
        "Nothing was changed. Try again in a moment; if this goes on, look at the server's log.",
    )
}

/// An SSO service error as a message for the page, and its status.
pub(crate) fn sso_message(e: &SsoError) -> (StatusCode, String) {
    match e {
        SsoError::Invalid(issues) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            issues
                .iter()
                .map(|i| format!("{}: {}", i.field, i.code.replace('_', " ")))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        SsoError::NotFound { .. } => (StatusCode::NOT_FOUND, e.to_string()),
        SsoError::Refused { .. } => (StatusCode::BAD_REQUEST, e.to_string()),
        SsoError::Conflict { .. } => (StatusCode::CONFLICT, e.to_string()),
        _ => {
            tracing::error!(error = %e, "console: service error");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server could not do this; nothing was changed. The server's log says why."
                    .to_string(),
            )
        }
    }
}

/// A page that says what was not found.
pub(crate) fn not_found(c: &Console, op: &Operator, what: &str) -> Response {
    let mut res = page(
        c,
        op,
        "",
        "Not found",
        html! { p { (what) " does not exist (it may have been deleted)." } },
    );
    *res.status_mut() = StatusCode::NOT_FOUND;
    res
}

/// `?after=` / `?before=` keyset cursors and an optional search.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PageQuery {
    pub(crate) after: Option<String>,
    pub(crate) before: Option<String>,
    pub(crate) search: Option<String>,
    /// Which table of a page with two (`users` / `groups`) the cursor belongs to.
    pub(crate) table: Option<String>,
}

impl PageQuery {
    /// The page request of the table named `table` (the other tables start at their top).
    pub(crate) fn request(&self, table: &str) -> PageRequest {
        let mine = self.table.as_deref().is_none_or(|t| t == table);
        let cursor = match (mine, &self.after, &self.before) {
            (true, Some(a), _) if !a.is_empty() => Cursor::After(a.clone()),
            (true, _, Some(b)) if !b.is_empty() => Cursor::Before(b.clone()),
            _ => Cursor::None,
        };
        PageRequest {
            limit: PAGE_SIZE,
            order: Order::Desc,
            cursor,
        }
    }

    pub(crate) fn search(&self) -> Option<String> {
        self.search
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_lowercase)
    }
}

/// "Newer / older" links of a keyset page.
pub(crate) fn pager(
    c: &Console,
    path: &str,
    table: Option<&str>,
    search: Option<&str>,
    before: Option<&str>,
    after: Option<&str>,
) -> Markup {
    let link = |dir: &str, id: &str| {
        let mut q: Vec<(&str, &str)> = vec![(dir, id)];
        if let Some(t) = table {
            q.push(("table", t));
        }
        if let Some(s) = search {
            q.push(("search", s));
        }
        format!(
            "{}?{}",
            c.url(path),
            serde_urlencoded::to_string(&q).unwrap_or_default()
        )
    };
    html! {
        nav class="pager" aria-label="Pages" {
            @if let Some(b) = before { a href=(link("before", b)) rel="prev" { "← Newer" } }
            @if let Some(a) = after { a href=(link("after", a)) rel="next" { "Older →" } }
        }
    }
}

/// An optional, trimmed, non-empty form value.
pub(crate) fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}
