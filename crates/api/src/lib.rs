//! idbridge's HTTP surface: the WorkOS-compatible REST API, the SSO endpoints, the admin API,
//! health and metrics. HTTP only: handlers parse requests into the services' typed inputs
//! (`idbridge_sso::SsoService`, the directory engine) and map their errors to WorkOS status
//! codes and bodies; this crate owns no store table.
//!
//! The router is built from an [`AppState`], so the whole API can be driven in tests without a
//! socket (`tower::ServiceExt::oneshot`).

#![forbid(unsafe_code)]

pub mod auth;
pub mod backup_admin;
pub mod body;
pub mod deletions_admin;
pub mod directories_admin;
pub mod directory_state;
pub mod directory_sync;
pub mod error;
pub mod events_api;
pub mod feeds_admin;
pub mod forward_admin;
pub mod idempotency;
pub mod idp;
pub mod ldap_admin;
pub mod middleware;
pub mod organization_domains;
pub mod organizations;
pub mod pagination;
pub mod portal;
pub mod roles_api;
pub mod settings_admin;
pub mod sftp_admin;
pub mod sso;
pub mod tls_admin;
#[cfg(test)]
mod unknown_fields_tests;
pub mod webhook_endpoints;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use idbridge_sso::organizations::Organizations;
use idbridge_sso::{SsoService, SsoSettings};
use idbridge_store::Store;

pub use error::{ApiError, ApiResult};

/// Largest request body accepted anywhere (SCIM bulk-ish group PUTs stay well under this).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Default time for a whole request body to arrive (1 MiB at ~70 KB/s).
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Renders the metrics exposition text (installed by the binary, which owns the recorder).
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

#[derive(Clone)]
pub struct ApiConfig {
    /// Base for every external URL (SCIM endpoints, ACS, redirects); no trailing slash.
    pub public_url: String,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    /// A request body must arrive whole within this time of its head (408 otherwise), so a
    /// client that stalls mid-body holds nothing for long and never causes a 5xx.
    pub body_read_timeout: Duration,
    /// Abuse limits of the API keys and SCIM tokens (off by default; the server's config
    /// turns them on).
    pub limits: AbuseLimits,
}

/// Request-rate and failed-authentication limits of the REST API and SCIM.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AbuseLimits {
    /// Requests per API key.
    pub api_rate: idbridge_limits::RateLimit,
    /// Requests per SCIM directory (its token).
    pub scim_rate: idbridge_limits::RateLimit,
    /// Failed authentications per client address, for API keys and for SCIM tokens each.
    pub failed_auth: idbridge_limits::FailureLimit,
    /// Members one SCIM group PATCH may change.
    pub scim_max_patch_members: usize,
}

impl Default for AbuseLimits {
    fn default() -> Self {
        let off = idbridge_limits::RateLimit {
            per_second: 0.0,
            burst: 0,
        };
        AbuseLimits {
            api_rate: off,
            scim_rate: off,
            failed_auth: idbridge_limits::FailureLimit {
                max_failures: 0,
                window_secs: 60,
            },
            scim_max_patch_members: idbridge_scim::router::DEFAULT_MAX_PATCH_MEMBERS,
        }
    }
}

/// The limiters of the API-key check.
#[derive(Debug)]
pub struct ApiLimiters {
    pub rate: idbridge_limits::RateLimiter,
    pub failed_auth: idbridge_limits::FailureLimiter,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            public_url: "http://127.0.0.1:8080".into(),
            request_timeout: Duration::from_secs(30),
            max_body_bytes: MAX_BODY_BYTES,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            limits: AbuseLimits::default(),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    /// The store, for what has no owning service: the event log (`/events`) and readiness.
    pub store: Arc<dyn Store>,
    pub config: Arc<ApiConfig>,
    pub ready: Arc<AtomicBool>,
    pub metrics: Option<MetricsRender>,
    /// SSO and organizations, API keys, webhook endpoints.
    pub sso: Arc<SsoService>,
    /// The one directory engine of the process: its per-directory write locks only serialize
    /// writers that share it, so every feed (SCIM, LDAP, SFTP) and the REST API use this one.
    pub directory: Arc<idbridge_directory::DirectoryEngine>,
    /// The LDAP sources the binary runs (for `POST /admin/directories/{id}/sync`).
    pub ldap: Arc<ldap_admin::LdapRunners>,
    /// LDAP/SFTP feed configurations and the runtime that applies them (`feeds_admin`). The
    /// binary replaces it with one holding the secret key and installs its runtime.
    pub feeds: Arc<feeds_admin::Feeds>,
    /// SCIM push forwarding: the admin service and the forwarders (`forward_admin`). The
    /// binary replaces it with one holding the secret key and starts its scheduler.
    pub forward: Arc<idbridge_forward::scim_push::ScimPush>,
    /// Request-rate and failed-authentication limits of API keys.
    pub api_limiters: Arc<ApiLimiters>,
    /// The SCIM endpoint's limiters (changed live through `/admin/settings/limits`).
    pub scim_limiters: idbridge_scim::router::ScimLimiters,
    /// Body size and timeouts every request reads when it starts (changed live through
    /// `/admin/settings/server`).
    pub http_limits: Arc<middleware::LiveHttp>,
    /// Runtime settings (`/admin/settings`): the binary installs the runtime that owns them.
    pub settings: Arc<settings_admin::Settings>,
    /// Set when a shutdown began: `/readyz` answers 503 `draining` while requests finish.
    pub draining: Arc<AtomicBool>,
    /// The HTTPS certificate reloader (`POST /admin/tls/reload`); `None` without TLS.
    pub tls: Option<tls_admin::SharedTlsReloader>,
}

/// The services of one store: the directory engine (reading organizations through the SSO
/// crate, their owner) and the SSO service (reading roles through the engine).
pub fn services(
    store: &Arc<dyn Store>,
    settings: SsoSettings,
) -> (Arc<idbridge_directory::DirectoryEngine>, Arc<SsoService>) {
    let orgs = Arc::new(Organizations::new(store.clone()));
    let directory = Arc::new(idbridge_directory::DirectoryEngine::new(
        store.clone(),
        orgs,
    ));
    let sso = Arc::new(SsoService::new(store.clone(), directory.clone(), settings));
    (directory, sso)
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: ApiConfig) -> Self {
        let settings = SsoSettings {
            public_url: config.public_url.clone(),
            ..SsoSettings::default()
        };
        let (directory, sso) = services(&store, settings);
        AppState {
            scim_limiters: idbridge_scim::router::ScimLimiters {
                rate: Arc::new(idbridge_limits::RateLimiter::new(config.limits.scim_rate)),
                failed_auth: Arc::new(idbridge_limits::FailureLimiter::new(
                    config.limits.failed_auth,
                )),
            },
            http_limits: Arc::new(middleware::LiveHttp::new(&config)),
            settings: Arc::default(),
            api_limiters: Arc::new(ApiLimiters {
                rate: idbridge_limits::RateLimiter::new(config.limits.api_rate),
                failed_auth: idbridge_limits::FailureLimiter::new(config.limits.failed_auth),
            }),
            config: Arc::new(config),
            ready: Arc::new(AtomicBool::new(true)),
            metrics: None,
            sso,
            forward: idbridge_forward::scim_push::ScimPush::new(
                store.clone(),
                directory.clone(),
                None,
            ),
            feeds: Arc::new(feeds_admin::Feeds::new(
                idbridge_directory::feeds::FeedStore::new(store.clone(), None),
            )),
            store,
            directory,
            ldap: Arc::default(),
            draining: Arc::default(),
            tls: None,
        }
    }

    /// Installs the SSO configuration and the key that seals connection secrets.
    pub fn with_sso(
        mut self,
        config: idbridge_sso::SsoConfig,
        secrets: Option<idbridge_sso::SecretBox>,
    ) -> Self {
        let settings = SsoSettings {
            public_url: self.config.public_url.clone(),
            config,
            secrets,
        };
        self.sso = Arc::new(SsoService::new(
            self.store.clone(),
            self.directory.clone(),
            settings,
        ));
        self
    }
}

/// The complete router with every cross-cutting layer applied.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .merge(organizations::routes())
        .merge(organization_domains::routes())
        .merge(roles_api::routes())
        .merge(directory_state::routes())
        .merge(directory_sync::routes())
        .merge(directories_admin::routes())
        .merge(ldap_admin::routes())
        .merge(sftp_admin::routes())
        .merge(feeds_admin::routes())
        .merge(deletions_admin::routes())
        .merge(events_api::routes())
        .merge(webhook_endpoints::routes())
        .merge(forward_admin::routes())
        .merge(backup_admin::routes())
        .merge(settings_admin::routes())
        .merge(tls_admin::routes())
        .merge(portal::routes())
        .merge(sso::protected_routes())
        .merge(idp::protected_routes())
        // Inside the key check: idempotency records are scoped by the authenticated key.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotency,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_key,
        ));
    let open = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(sso::public_routes())
        .merge(idp::public_routes())
        // SCIM: its own per-directory bearer auth, so outside the API-key layer; inside the
        // common middleware (request id, tracing, body limit, timeout).
        .merge(idbridge_scim::router::router(
            state.directory.clone(),
            idbridge_scim::router::ScimConfig {
                public_url: state.config.public_url.clone(),
                // The live limit is the middleware's (`http_limits`), which answers in SCIM's
                // format under /scim/; this bound only keeps SCIM's own check out of its way.
                max_body_bytes: settings_admin::MAX_BODY_BYTES_SETTABLE,
                rate_limit: state.config.limits.scim_rate,
                failed_auth_limit: state.config.limits.failed_auth,
                max_patch_members: state.config.limits.scim_max_patch_members,
                limiters: Some(state.scim_limiters.clone()),
                ..Default::default()
            },
        ));
    // The operator console and the Admin Portal pages: their own sessions, not API keys.
    let console = Arc::new(
        idbridge_console::Console::new(
            state.store.clone(),
            state.sso.clone(),
            state.directory.clone(),
            idbridge_console::ConsoleSettings::new(&state.config.public_url),
        )
        .with_ldap(Arc::new(ldap_admin::ConsoleSyncs::new(state.ldap.clone()))),
    );
    let app = Router::new()
        .merge(protected)
        .merge(open)
        .with_state(state.clone())
        .merge(idbridge_console::router(console))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed);
    middleware::apply(app, state.http_limits.clone())
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    // Ready means: started, and the store answers a read.
    if state.draining.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "draining"})),
        )
            .into_response();
    }
    let store_ok = state.sso.client_id().is_ok();
    if state.ready.load(Ordering::Relaxed) && store_ok {
        Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "starting"})),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(render) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            render(),
        )
            .into_response(),
        None => ApiError::RouteNotFound.into_response(),
    }
}

async fn fallback() -> ApiError {
    ApiError::RouteNotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
