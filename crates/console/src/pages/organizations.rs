//! Organizations: list (paged, searchable), create, detail with domains, connections and
//! directories.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Extension;
use idbridge_model::{DomainState, Organization};
use idbridge_sso::organizations::{DomainInput, NewOrganization, OrganizationFilter};
use maud::{html, Markup};
use serde::Deserialize;

use super::{non_empty, page, pager, sso_message, store_error, PageQuery};
use crate::web::{self, CsrfForm};
use crate::{Console, Operator};

const PATH: &str = "/console/organizations";

fn create_form(c: &Console, op: &Operator) -> Markup {
    html! {
        section class="card" aria-labelledby="new-org" {
            h2 id="new-org" { "New organization" }
            form method="post" action=(c.url(PATH)) {
                (web::csrf_input(&op.csrf))
                (web::field("Name", "name", "text", true, None))
                (web::field("Domains", "domains", "text", false, Some("Comma-separated, e.g. example.com, example.org (added as verified)")))
                (web::field("External id", "external_id", "text", false, Some("Optional: your application's id for it")))
                button type="submit" { "Create organization" }
            }
        }
    }
}

fn domains_text(org: &Organization) -> String {
    org.domains
        .iter()
        .map(|d| d.domain.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

async fn render_list(
    c: &Console,
    op: &Operator,
    q: &PageQuery,
    message: Option<(bool, String)>,
) -> Response {
    let filter = OrganizationFilter {
        domains: Vec::new(),
        search: q.search(),
    };
    let page_req = q.request("organizations");
    let orgs = match c.sso.organizations().list(&filter, &page_req) {
        Ok(p) => p,
        Err(e) => return store_error(&e),
    };
    let search = q.search.clone().unwrap_or_default();
    let mut res = page(
        c,
        op,
        PATH,
        "Organizations",
        html! {
            @if let Some((ok, m)) = &message {
                p class=(if *ok { "notice" } else { "error" }) role="alert" { (m) }
            }
            form method="get" action=(c.url(PATH)) class="search" role="search" {
                label for="search" { "Search by name" }
                input id="search" name="search" type="search" value=(search);
                button type="submit" { "Search" }
            }
            div class="table-wrap" {
                table {
                    caption { "Organizations, newest first" }
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Domains" } th scope="col" { "Id" } th scope="col" { "Created" } } }
                    tbody {
                        @for org in &orgs.data {
                            tr {
                                td { a href=(c.url(&format!("{PATH}/{}", org.id))) { (org.name) } }
                                td { (domains_text(org)) }
                                td { code { (org.id) } }
                                td { (org.created_at.to_string()) }
                            }
                        }
                        @if orgs.data.is_empty() { tr { td colspan="4" { "No organization yet." } } }
                    }
                }
            }
            (pager(c, PATH, None, q.search.as_deref(), orgs.before.as_deref(), orgs.after.as_deref()))
            (create_form(c, op))
        },
    );
    if let Some((false, _)) = message {
        *res.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    }
    res
}

pub(crate) async fn list(
    State(c): State<Arc<Console>>,
    Extension(op): Extension<Operator>,
    Query(q): Query<PageQuery>,
) -> Response {
    render_list(&c, &op, &q, None).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewOrgForm {
    name: String,
    #[serde(default)]
    domains: Option<String>,
    #[serde(default)]
    external_id: Option<String>,
}

pub(crate) async fn create(
    State(c): State<Arc<Console>>,
    Extension(op): Extension<Operator>,
    CsrfForm(f): CsrfForm<NewOrgForm>,
) -> Response {
    let domains = f
        .domains
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| DomainInput::new(&d.to_ascii_lowercase(), DomainState::Verified))
        .collect();
    let input = NewOrganization {
        name: f.name.trim().to_string(),
        domains,
        external_id: non_empty(&f.external_id),
        metadata: Default::default(),
        allow_profiles_outside_organization: false,
    };
    let issues = input.issues();
    if !issues.is_empty() {
        let e = idbridge_sso::SsoError::Invalid(issues);
        return render_list(
            &c,
            &op,
            &PageQuery::default(),
            Some((false, sso_message(&e).1)),
        )
        .await;
    }
    match c.sso.organizations().create(input).await {
        Ok(org) => {
            tracing::info!(operator = %op.username, organization = %org.id, "console: organization created");
            web::redirect(&c, &format!("{PATH}/{}", org.id))
        }
        Err(e) => {
            render_list(
                &c,
                &op,
                &PageQuery::default(),
                Some((false, sso_message(&e).1)),
            )
            .await
        }
    }
}

pub(crate) async fn detail(
    State(c): State<Arc<Console>>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
) -> Response {
    render_detail(&c, &op, &id, None).await
}

pub(crate) async fn render_detail(
    c: &Console,
    op: &Operator,
    id: &str,
    message: Option<(bool, String)>,
) -> Response {
    let org = match c.sso.organizations().get(id) {
        Ok(Some(org)) => org,
        Ok(None) => return super::not_found(c, op, &format!("Organization {id}")),
        Err(e) => return store_error(&e),
    };
    let connections = match c.sso.connections().of_organization(&org.id) {
        Ok(list) => list,
        Err(e) => return store_error(&e),
    };
    let directories = match c.directory.list_directories(
        Some(&org.id),
        &idbridge_model::PageRequest {
            limit: 100,
            ..Default::default()
        },
    ) {
        Ok(p) => p.data,
        Err(e) => return super::directories::engine_error(&e),
    };
    let mut res = page(
        c,
        op,
        PATH,
        &org.name,
        html! {
            @if let Some((ok, m)) = &message {
                p class=(if *ok { "notice" } else { "error" }) role="alert" { (m) }
            }
            dl class="facts" {
                dt { "Id" } dd { code { (org.id) } }
                dt { "External id" } dd { (org.external_id.as_deref().unwrap_or("—")) }
                dt { "Created" } dd { (org.created_at.to_string()) }
            }
            section class="card" aria-labelledby="domains" {
                h2 id="domains" { "Domains" }
                div class="table-wrap" {
                    table {
                        thead { tr { th scope="col" { "Domain" } th scope="col" { "State" } } }
                        tbody {
                            @for d in &org.domains { tr { td { (d.domain) } td { (format!("{:?}", d.state).to_lowercase()) } } }
                            @if org.domains.is_empty() { tr { td colspan="2" { "No domain." } } }
                        }
                    }
                }
                form method="post" action=(c.url(&format!("{PATH}/{}/domains", org.id))) class="inline" {
                    (web::csrf_input(&op.csrf))
                    (web::field("Add a domain", "domain", "text", true, Some("Added as pending: verify it with its DNS TXT record")))
                    button type="submit" { "Add domain" }
                }
            }
            section class="card" aria-labelledby="connections" {
                h2 id="connections" { "SSO connections" }
                div class="table-wrap" {
                    table {
                        thead { tr { th scope="col" { "Name" } th scope="col" { "Type" } th scope="col" { "State" } } }
                        tbody {
                            @for conn in &connections {
                                @let wire = c.sso.wire(conn).ok();
                                tr {
                                    td { a href=(c.url(&format!("/console/connections/{}", conn.id()))) {
                                        (wire.as_ref().map_or(conn.id(), |w| w.name.as_str()))
                                    } }
                                    td { (wire.as_ref().map_or("", |w| w.connection_type.as_str())) }
                                    td { (wire.as_ref().map_or(String::new(), |w| format!("{:?}", w.state).to_lowercase())) }
                                }
                            }
                            @if connections.is_empty() { tr { td colspan="3" { "No connection yet." } } }
                        }
                    }
                }
                (super::connections::create_form(c, &op.csrf, &c.url(&format!("{PATH}/{}/connections", org.id))))
            }
            section class="card" aria-labelledby="directories" {
                h2 id="directories" { "Directories" }
                ul {
                    @for d in &directories {
                        li { a href=(c.url(&format!("/console/directories/{}", d.directory.id))) { (d.directory.name) } " (" (d.directory.directory_type) ")" }
                    }
                    @if directories.is_empty() { li { "No directory." } }
                }
            }
        },
    );
    if let Some((false, _)) = message {
        *res.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    }
    res
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DomainForm {
    domain: String,
}

pub(crate) async fn add_domain(
    State(c): State<Arc<Console>>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
    CsrfForm(f): CsrfForm<DomainForm>,
) -> Response {
    let domain = f.domain.trim().to_ascii_lowercase();
    match c.sso.organizations().add_domain(&id, &domain).await {
        Ok(_) => web::redirect(&c, &format!("{PATH}/{id}")),
        Err(e) => render_detail(&c, &op, &id, Some((false, sso_message(&e).1))).await,
    }
}
