//! The Admin Portal's pages, for an IT admin holding a link from `POST /portal/generate_link`.
//!
//! Opening the link (`/portal/launch?token=…`) uses it up and starts a portal session (cookie
//! on `/portal`). Every page below reads the organization and intent from that session only:
//! nothing in a URL or form can reach another organization.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use idbridge_model::Organization;
use maud::{html, Markup};
use serde::Deserialize;

use crate::pages::connections::{self, SamlForm};
use crate::pages::{sso_message, store_error};
use crate::portal::{self, Intent, PortalGrant};
use crate::web::{self, CsrfForm, CsrfToken};
use crate::{blocking, now_ms, Console, PORTAL_COOKIE};

pub(crate) fn routes(console: Arc<Console>) -> Router<Arc<Console>> {
    let session = Router::new()
        .route("/portal", get(home))
        .route("/portal/sso/connections", post(create_connection))
        .route("/portal/sso/connections/{id}", get(connection))
        .route_layer(axum::middleware::from_fn_with_state(
            console,
            require_portal,
        ));
    Router::new()
        .route("/portal/launch", get(launch))
        .merge(session)
}

fn ended() -> Response {
    web::bare_error(
        StatusCode::UNAUTHORIZED,
        "This Admin Portal session has ended",
        "Portal sessions last one hour. Ask the application that sent you here for a new link.",
    )
}

async fn require_portal(State(c): State<Arc<Console>>, mut req: Request, next: Next) -> Response {
    let Some(id) = web::cookie(req.headers(), PORTAL_COOKIE) else {
        return ended();
    };
    let store = c.store.clone();
    match blocking(move || portal::session(store.as_ref(), &id, now_ms())).await {
        Ok(Some(grant)) => {
            req.extensions_mut().insert(CsrfToken(grant.csrf.clone()));
            req.extensions_mut().insert(grant);
            next.run(req).await
        }
        Ok(None) => ended(),
        Err(e) => store_error(&e),
    }
}

#[derive(Deserialize)]
struct LaunchQuery {
    token: Option<String>,
}

async fn launch(State(c): State<Arc<Console>>, Query(q): Query<LaunchQuery>) -> Response {
    let token = q.token.unwrap_or_default();
    let store = c.store.clone();
    match blocking(move || portal::redeem(store.as_ref(), &token, now_ms())).await {
        Ok(Some((session, grant))) => {
            tracing::info!(organization = %grant.organization_id, intent = grant.intent.as_str(), "admin portal link opened");
            let cookie = web::set_cookie(
                &c,
                PORTAL_COOKIE,
                &session,
                "/portal",
                Some(portal::SESSION_TTL.as_secs()),
            );
            let mut res = web::redirect(&c, "/portal");
            res.headers_mut().append(header::SET_COOKIE, cookie);
            res
        }
        Ok(None) => web::bare_error(
            StatusCode::GONE,
            "This link cannot be used",
            "Admin Portal links work once and for five minutes: this one was already used or has \
             expired. Ask the application that sent it for a new link.",
        ),
        Err(e) => store_error(&e),
    }
}

fn portal_page(
    c: &Console,
    grant: &PortalGrant,
    org: &Organization,
    title: &str,
    content: Markup,
) -> Response {
    let header = html! {
        header class="top" {
            a class="skip" href="#main" { "Skip to content" }
            span class="brand" { "Admin Portal · " (org.name) }
            @if let Some(back) = &grant.return_url { nav aria-label="Back" { a href=(back) { "Back to the application" } } }
        }
    };
    web::layout(c, title, header, content).into_response()
}

/// The session's organization, or the page that says why it cannot be shown (boxed: a
/// `Response` is large).
fn load_org(c: &Console, grant: &PortalGrant) -> Result<Organization, Box<Response>> {
    match c.sso.organizations().get(&grant.organization_id) {
        Ok(Some(org)) => Ok(org),
        Ok(None) => Err(Box::new(web::bare_error(
            StatusCode::NOT_FOUND,
            "Organization deleted",
            "The organization this link was made for no longer exists.",
        ))),
        Err(e) => Err(Box::new(store_error(&e))),
    }
}

fn finish(grant: &PortalGrant) -> Markup {
    html! {
        @if let Some(done) = &grant.success_url {
            p { a class="button" href=(done) { "Finish and return to the application" } }
        }
    }
}

async fn home(State(c): State<Arc<Console>>, Extension(grant): Extension<PortalGrant>) -> Response {
    let org = match load_org(&c, &grant) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    match grant.intent {
        Intent::Sso => sso_home(&c, &grant, &org, None),
        Intent::Dsync => dsync_home(&c, &grant, &org),
        Intent::DomainVerification => domains_home(&c, &grant, &org),
        Intent::CertificateRenewal => certificates_home(&c, &grant, &org),
    }
}

fn sso_home(
    c: &Console,
    grant: &PortalGrant,
    org: &Organization,
    error: Option<(StatusCode, String)>,
) -> Response {
    let connections = match c.sso.connections().of_organization(&org.id) {
        Ok(list) => list,
        Err(e) => return store_error(&e),
    };
    let mut res = portal_page(
        c,
        grant,
        org,
        "Set up single sign-on",
        html! {
            @if let Some((_, m)) = &error { p class="error" role="alert" { (m) } }
            ol class="steps" {
                li { "In your identity provider (Okta, Entra ID, Google Workspace, AD FS, …) create a SAML 2.0 application for " (org.name) "." }
                li { "Give idbridge the IdP's metadata below: its metadata URL, or the XML file pasted whole." }
                li { "idbridge then shows the values to paste into the IdP application (entity id, ACS URL, metadata URL)." }
            }
            @if !connections.is_empty() {
                section class="card" aria-labelledby="existing" {
                    h2 id="existing" { "Connections of " (org.name) }
                    ul {
                        @for conn in &connections {
                            li { a href=(c.url(&format!("/portal/sso/connections/{}", conn.id()))) { (c.sso.wire(conn).map(|w| w.name).unwrap_or_else(|_| conn.id().to_string())) } }
                        }
                    }
                }
            }
            section class="card" {
                (connections::create_form(c, &grant.csrf, &c.url("/portal/sso/connections")))
            }
            (finish(grant))
        },
    );
    if let Some((status, _)) = error {
        *res.status_mut() = status;
    }
    res
}

async fn create_connection(
    State(c): State<Arc<Console>>,
    Extension(grant): Extension<PortalGrant>,
    CsrfForm(f): CsrfForm<SamlForm>,
) -> Response {
    let org = match load_org(&c, &grant) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    if grant.intent != Intent::Sso {
        return web::bare_error(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "This Admin Portal link is not for setting up single sign-on.",
        );
    }
    // The organization is the session's: the form has no say in it.
    let created = match connections::new_saml(&org.id, &f) {
        Ok(input) => c.sso.create_connection(input).await,
        Err(e) => Err(e),
    };
    match created {
        Ok(conn) => {
            tracing::info!(organization = %org.id, connection = %conn.id, "admin portal: connection created");
            web::redirect(&c, &format!("/portal/sso/connections/{}", conn.id))
        }
        Err(e) => sso_home(&c, &grant, &org, Some(sso_message(&e))),
    }
}

async fn connection(
    State(c): State<Arc<Console>>,
    Extension(grant): Extension<PortalGrant>,
    Path(id): Path<String>,
) -> Response {
    let org = match load_org(&c, &grant) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let record = match c.sso.connections().get(&id) {
        Ok(Some(r)) if r.organization_id() == Some(org.id.as_str()) => r,
        Ok(_) => {
            return web::bare_error(
                StatusCode::NOT_FOUND,
                "Not found",
                "This organization has no such connection.",
            )
        }
        Err(e) => return store_error(&e),
    };
    let view = match c.sso.admin_view(&record) {
        Ok(v) => v,
        Err(e) => {
            let (status, m) = sso_message(&e);
            return web::bare_error(status, "Connection", &m);
        }
    };
    portal_page(
        &c,
        &grant,
        &org,
        "Finish in your identity provider",
        html! {
            p { "The connection is created. Paste the values below into your IdP's SAML application, assign the people who should sign in, and you are done." }
            (connections::settings_view(&view))
            p { a href=(c.url("/portal")) { "Back to the connections of " (org.name) } }
            (finish(&grant))
        },
    )
}

fn dsync_home(c: &Console, grant: &PortalGrant, org: &Organization) -> Response {
    let dirs = match c.directory.list_directories(
        Some(&org.id),
        &idbridge_model::PageRequest {
            limit: 100,
            ..Default::default()
        },
    ) {
        Ok(p) => p.data,
        Err(e) => return crate::pages::directories::engine_error(&e),
    };
    portal_page(
        c,
        grant,
        org,
        "Directory sync",
        html! {
            p { "Directories of " (org.name) " and their state. Setting up a new directory from the portal is not available yet: ask the application's operator." }
            ul {
                @for d in &dirs { li { (d.directory.name) " (" (d.directory.directory_type) "): " (d.directory.state.event_name()) ", " (d.directory.metadata.users.active) " active users" } }
                @if dirs.is_empty() { li { "No directory yet." } }
            }
            (finish(grant))
        },
    )
}

fn domains_home(c: &Console, grant: &PortalGrant, org: &Organization) -> Response {
    portal_page(
        c,
        grant,
        org,
        "Verify your domains",
        html! {
            p { "Add a DNS TXT record for each pending domain; idbridge re-checks pending domains regularly." }
            div class="table-wrap" {
                table {
                    thead { tr { th scope="col" { "Domain" } th scope="col" { "State" } th scope="col" { "TXT record" } } }
                    tbody {
                        @for d in &org.domains {
                            tr {
                                td { (d.domain) }
                                td { (format!("{:?}", d.state).to_lowercase()) }
                                td { @if let (Some(p), Some(t)) = (&d.verification_prefix, &d.verification_token) { code { (p) "." (d.domain) " = " (t) } } }
                            }
                        }
                        @if org.domains.is_empty() { tr { td colspan="3" { "No domain." } } }
                    }
                }
            }
            (finish(grant))
        },
    )
}

fn certificates_home(c: &Console, grant: &PortalGrant, org: &Organization) -> Response {
    let connections = match c.sso.connections().of_organization(&org.id) {
        Ok(list) => list,
        Err(e) => return store_error(&e),
    };
    portal_page(
        c,
        grant,
        org,
        "SAML certificates",
        html! {
            p { "Each connection's IdP signing certificates and when they expire. A connection with an IdP metadata URL picks up a renewed certificate by itself." }
            @for conn in &connections {
                @if let Ok(view) = c.sso.admin_view(conn) {
                    h2 { (view["connection"]["name"].as_str().unwrap_or("")) }
                    (connections::settings_view(&view))
                }
            }
            @if connections.is_empty() { p { "No connection yet." } }
            (finish(grant))
        },
    )
}
