//! idbridge's operator console (`/console`) and WorkOS-compatible Admin Portal pages
//! (`/portal`): server-rendered HTML (maud templates, checked at compile time), plain forms,
//! no script.
//!
//! The pages drive the same services the admin API uses (`idbridge_sso`, the directory
//! engine); this crate owns only its own tables: operators ([`operators`]), their sessions
//! ([`sessions`]) and portal links and sessions ([`portal`]). `POST /portal/generate_link`
//! (an API-key request in WorkOS's format) lives in crates/api and calls [`portal`].
//!
//! Every page carries a strict CSP and no-sniff / no-referrer / no-framing headers; every
//! form carries the session's CSRF token ([`web::CsrfForm`]); session cookies are HttpOnly,
//! SameSite=Strict, Secure when `public_url` is https, and scoped to the console's path.

#![forbid(unsafe_code)]

pub mod operators;
pub mod portal;
pub mod sessions;
pub mod web;

mod login;
mod pages;
mod portal_pages;
mod test_sign_in;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use idbridge_directory::DirectoryEngine;
use idbridge_limits::{FailureLimit, FailureLimiter};
use idbridge_sso::SsoService;
use idbridge_store::Store;

pub use sessions::SessionPolicy;

/// The console's session cookie (path `/console`).
pub const SESSION_COOKIE: &str = "idbridge_console";
/// The portal's session cookie (path `/portal`).
pub const PORTAL_COOKIE: &str = "idbridge_portal";

const CSS: &str = include_str!("../assets/console.css");

/// The console's settings.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// The server's public URL; its path is the prefix of every link and cookie path, its
    /// scheme decides the cookies' `Secure` flag.
    pub public_url: String,
    pub sessions: SessionPolicy,
    /// Failed sign-ins per operator account, then per client address (the IdP login page's
    /// defaults: 5 and 50 per 15 minutes).
    pub account_failures: FailureLimit,
    pub address_failures: FailureLimit,
}

impl ConsoleSettings {
    pub fn new(public_url: &str) -> Self {
        ConsoleSettings {
            public_url: public_url.trim_end_matches('/').to_string(),
            sessions: SessionPolicy::default(),
            account_failures: FailureLimit {
                max_failures: 5,
                window_secs: 900,
            },
            address_failures: FailureLimit {
                max_failures: 50,
                window_secs: 900,
            },
        }
    }
}

/// Live progress of an LDAP sync run the console started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncProgress {
    /// `users`, `groups` or `apply` (empty before the first phase).
    pub phase: String,
    pub done: u64,
    pub total: Option<u64>,
}

/// The server's LDAP schedulers as the console drives them; crates/api implements it over the
/// same runners `POST /admin/directories/{id}/sync` uses, so a console run and a scheduled one
/// of a directory never overlap.
pub trait LdapSyncs: Send + Sync {
    /// Starts one full run in the background; `Err` says why it cannot start and what to do.
    fn start(&self, directory_id: &str) -> Result<(), String>;
    /// The progress of the run the console started, while it runs.
    fn progress(&self, directory_id: &str) -> Option<SyncProgress>;
}

/// The console's services and state.
pub struct Console {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) sso: Arc<SsoService>,
    pub(crate) directory: Arc<DirectoryEngine>,
    /// The LDAP schedulers ("sync now"); `None` when the server runs none.
    pub(crate) ldap: Option<Arc<dyn LdapSyncs>>,
    pub(crate) settings: ConsoleSettings,
    /// The path of `public_url` (`""` or `/prefix`), put before every link.
    pub(crate) base_path: String,
    pub(crate) secure_cookies: bool,
    pub(crate) account_limiter: FailureLimiter,
    pub(crate) address_limiter: FailureLimiter,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Console {
    pub fn new(
        store: Arc<dyn Store>,
        sso: Arc<SsoService>,
        directory: Arc<DirectoryEngine>,
        settings: ConsoleSettings,
    ) -> Self {
        let (base_path, secure_cookies) = match url::Url::parse(&settings.public_url) {
            Ok(u) => (
                u.path().trim_end_matches('/').to_string(),
                u.scheme() == "https",
            ),
            Err(_) => (String::new(), false),
        };
        Console {
            store,
            sso,
            directory,
            ldap: None,
            account_limiter: FailureLimiter::new(settings.account_failures),
            address_limiter: FailureLimiter::new(settings.address_failures),
            settings,
            base_path,
            secure_cookies,
        }
    }

    /// With the server's LDAP schedulers, for "sync now".
    pub fn with_ldap(mut self, ldap: Arc<dyn LdapSyncs>) -> Self {
        self.ldap = Some(ldap);
        self
    }

    /// `path` of this server as the browser must ask for it (behind `public_url`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_path)
    }

    /// The full URL of a path (links handed to other systems).
    pub fn absolute_url(&self, path: &str) -> String {
        format!("{}{path}", self.settings.public_url)
    }
}

/// Runs a blocking store call off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, idbridge_store::StoreError> + Send + 'static,
) -> Result<T, idbridge_store::StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| idbridge_store::StoreError::Backend(format!("store task failed: {e}")))?
}

pub(crate) fn now_ms() -> i64 {
    idbridge_model::Timestamp::now().as_millis()
}

/// The signed-in operator (request extension set by [`require_operator`]).
#[derive(Debug, Clone)]
pub(crate) struct Operator {
    pub(crate) username: String,
    pub(crate) csrf: String,
}

/// Lets a request through only with a live operator session; a page request without one is
/// sent to the sign-in page.
async fn require_operator(State(c): State<Arc<Console>>, mut req: Request, next: Next) -> Response {
    let Some(id) = web::cookie(req.headers(), SESSION_COOKIE) else {
        return web::redirect(&c, "/console/login");
    };
    let (store, policy) = (c.store.clone(), c.settings.sessions);
    match blocking(move || sessions::resume(store.as_ref(), &id, policy, now_ms())).await {
        Ok(Some(record)) => {
            req.extensions_mut()
                .insert(web::CsrfToken(record.csrf.clone()));
            req.extensions_mut().insert(Operator {
                username: record.operator,
                csrf: record.csrf,
            });
            next.run(req).await
        }
        Ok(None) => web::redirect(&c, "/console/login"),
        Err(e) => pages::store_error(&e),
    }
}

/// The console and the portal pages, with their own state; merged into the server's router
/// by crates/api.
pub fn router(console: Arc<Console>) -> Router {
    let operator = pages::routes().route_layer(axum::middleware::from_fn_with_state(
        console.clone(),
        require_operator,
    ));
    let portal = portal_pages::routes(console.clone());
    let open = Router::new()
        .route("/console/login", get(login::form).post(login::submit))
        // The IdP's redirect chain carries no console cookie; the callback checks its state.
        .route(
            idbridge_sso::login::CONSOLE_TEST_CALLBACK_PATH,
            get(test_sign_in::callback),
        )
        .route("/console/static/console.css", get(css))
        .route("/console/static/favicon.svg", get(favicon));
    Router::new()
        .merge(operator)
        .merge(portal)
        .merge(open)
        .layer(axum::middleware::map_response(web::security_headers))
        .with_state(console)
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

async fn favicon() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\"><rect width=\"16\" height=\"16\" rx=\"3\" fill=\"#2456c8\"/></svg>",
    )
        .into_response()
}
