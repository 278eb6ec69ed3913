//! `/admin/settings`: every section of the config file that can change while the server
//! runs, read and changed through the admin API.
//!
//! - `GET /admin/settings`: every section, each with its values, where each value comes from
//!   (`default|file|env|runtime`) and which keys only a restart can change.
//! - `GET /admin/settings/{section}`, `PATCH /admin/settings/{section}` (a partial object:
//!   the keys given change, the others stay). An unknown key, a key only a restart can change,
//!   or a bad value is a 422 naming it (with the allowed range), and nothing changes.
//!
//! The settings table and what applies a change belong to the binary (`idbridge::settings`),
//! which installs a [`SettingsRuntime`]; these handlers parse and map. `/admin/dns` and
//! `/admin/idp/settings` are older names of the `dns` and `idp` sections and write through
//! the same runtime when one is installed.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value};

use crate::body::JsonObject;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// Upper bound of `server.max_body_bytes` (64 MiB): the SCIM router's own check sits here.
pub const MAX_BODY_BYTES_SETTABLE: usize = 64 * 1024 * 1024;

/// What reads, validates, applies and stores the settings (the binary's).
pub trait SettingsRuntime: Send + Sync {
    /// Every section: `{"sections": {name: view}}`.
    fn all(&self) -> ApiResult<Value>;
    /// One section's view: `{section, values, sources, restart_required}`.
    fn section(&self, name: &str) -> ApiResult<Value>;
    /// Validates `patch` whole, stores it and applies it; returns the section's new view.
    fn patch(
        self: Arc<Self>,
        name: String,
        patch: Map<String, Value>,
    ) -> Pin<Box<dyn Future<Output = ApiResult<Value>> + Send>>;
}

/// The installed runtime, if any (a bare [`AppState`] in tests has none).
#[derive(Default)]
pub struct Settings {
    runtime: RwLock<Option<Arc<dyn SettingsRuntime>>>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("installed", &self.runtime().is_some())
            .finish()
    }
}

impl Settings {
    /// Installs the binary's runtime.
    pub fn install(&self, runtime: Arc<dyn SettingsRuntime>) {
        if let Ok(mut slot) = self.runtime.write() {
            *slot = Some(runtime);
        }
    }

    /// The runtime, when one is installed.
    pub fn runtime(&self) -> Option<Arc<dyn SettingsRuntime>> {
        self.runtime.read().ok()?.clone()
    }

    fn require(&self) -> ApiResult<Arc<dyn SettingsRuntime>> {
        self.runtime().ok_or_else(|| ApiError::Unavailable {
            code: "settings_unavailable",
            message: "Runtime settings are not available in this process (no settings runtime \
                      is installed); run `idbridge serve`."
                .into(),
        })
    }
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/settings", get(get_all)).route(
        "/admin/settings/{section}",
        get(get_section).patch(patch_section),
    )
}

async fn get_all(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(Json(state.settings.require()?.all()?))
}

async fn get_section(
    State(state): State<AppState>,
    Path(section): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.settings.require()?.section(&section)?))
}

async fn patch_section(
    State(state): State<AppState>,
    Path(section): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    let runtime = state.settings.require()?;
    Ok(Json(runtime.patch(section, body).await?))
}
