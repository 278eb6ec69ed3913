//! Admin API for how LDAP/AD and SFTP directories are fed, while the server runs (behind the
//! API key; documented in `docs/admin-openapi.yaml`):
//!
//! - `GET /admin/directories/{id}/feed`: the settings, where they came from (`origin`:
//!   `config` or `api`) and which secrets are set (`{"set": true}`, never the value).
//! - `PUT /admin/directories/{id}/feed`: sets the whole feed (an `ldap` directory: the schedule
//!   and the `ldap` connection settings; an `sftp` directory: a push account or a `pull`).
//! - `PATCH /admin/directories/{id}/feed`: changes the fields given (JSON merge patch: `null`
//!   removes a field).
//! - `DELETE /admin/directories/{id}/feed`: stops feeding the directory (its data stays).
//!
//! Secrets are write-only: `ldap.bind_password` and `pull.private_key` are sealed with the
//! server's secret key; a write that leaves them out keeps the stored one, `null` removes it.
//! Every write is applied live by the [`FeedRuntime`] the binary installs (LDAP schedulers
//! restarted or stopped, SFTP accounts and keys replaced in the running server, pull jobs
//! rescheduled), before the answer. The table belongs to `idbridge_directory::feeds`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use idbridge_directory::feeds::{
    FeedError, FeedKind, FeedOrigin, FeedRecord, FeedStore, SecretChange,
};
use idbridge_ldap::feed::{LdapFeed, BIND_PASSWORD_SECRET};
use idbridge_model::{parse_id, IdPrefix};
use idbridge_sftp::settings::{SftpFeed, PRIVATE_KEY_SECRET};
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};
use tracing::Instrument;

use crate::body::JsonObject;
use crate::directories_admin::engine_error;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::AppState;

/// Directory types fed by SFTP deliveries.
pub const SFTP_TYPES: &[&str] = &["sftp", "sftp workday"];

/// Applies the stored feeds to what runs (installed by the binary).
pub trait FeedRuntime: Send + Sync {
    /// Brings the running schedulers, accounts and pull jobs in line with the feed table.
    fn apply(self: Arc<Self>) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
}

/// The feed table and the runtime that applies it.
pub struct Feeds {
    /// The table (with the secret key when the binary installed one).
    pub store: FeedStore,
    runtime: RwLock<Option<Arc<dyn FeedRuntime>>>,
}

impl std::fmt::Debug for Feeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feeds")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Feeds {
    /// The table without a runtime (a bare [`AppState`]: writes are stored, nothing runs).
    pub fn new(store: FeedStore) -> Self {
        Feeds {
            store,
            runtime: RwLock::new(None),
        }
    }

    /// Installs the runtime that applies writes.
    pub fn install(&self, runtime: Arc<dyn FeedRuntime>) {
        if let Ok(mut slot) = self.runtime.write() {
            *slot = Some(runtime);
        }
    }

    /// Applies the table now; `None` when no runtime is installed.
    pub async fn apply(&self) -> Option<Result<(), String>> {
        let rt = self.runtime.read().ok()?.clone()?;
        Some(rt.apply().await)
    }
}

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/admin/directories/{id}/feed",
        get(get_feed)
            .put(put_feed)
            .patch(patch_feed)
            .delete(delete_feed),
    )
}

fn feed_error(e: FeedError) -> ApiError {
    match e {
        FeedError::Conflict(_) => ApiError::Conflict {
            code: "concurrent_update",
            message: e.to_string(),
        },
        FeedError::NoKey => ApiError::Conflict {
            code: "no_secret_key",
            message: e.to_string(),
        },
        FeedError::UsernameTaken { .. } => ApiError::Conflict {
            code: "username_taken",
            message: e.to_string(),
        },
        other => ApiError::internal(other),
    }
}

/// The feed kind of a directory, or why it has none.
fn kind_of(state: &AppState, id: &str) -> ApiResult<FeedKind> {
    parse_id(IdPrefix::Directory, id).map_err(|_| ApiError::not_found("Directory", id))?;
    let rec = state.directory.get_directory(id).map_err(engine_error)?;
    let t = rec.directory.directory_type.as_str();
    if t == idbridge_ldap::DIRECTORY_TYPE {
        Ok(FeedKind::Ldap)
    } else if SFTP_TYPES.contains(&t) {
        Ok(FeedKind::Sftp)
    } else {
        Err(ApiError::Conflict {
            code: "feed_not_supported",
            message: format!(
                "a directory of type {t:?} has no feed to configure here (ldap and sftp \
                 directories do; SCIM directories are fed by their IdP)"
            ),
        })
    }
}

/// Where a kind keeps its one secret inside the settings: (object path, field, secret name).
fn secret_slot(kind: FeedKind) -> (&'static str, &'static str, &'static str) {
    match kind {
        FeedKind::Ldap => ("ldap", "bind_password", BIND_PASSWORD_SECRET),
        FeedKind::Sftp => ("pull", "private_key", PRIVATE_KEY_SECRET),
    }
}

/// The admin's view of a record: settings with `{"set": true}` where a secret is stored.
pub fn view(rec: &FeedRecord) -> Value {
    let mut settings = rec.settings.clone();
    let (obj, field, name) = secret_slot(rec.kind);
    if let Some(o) = settings.get_mut(obj).and_then(Value::as_object_mut) {
        o.insert(field.into(), json!({"set": rec.secrets.contains_key(name)}));
    }
    json!({
        "object": "directory_feed",
        "directory_id": rec.directory_id,
        "kind": rec.kind,
        "origin": rec.origin,
        "updated_at": rec.updated_at,
        "settings": settings,
    })
}

/// Deserializes `value` into `T`; an unknown field is a 422 naming it, a wrong value a 422
/// naming its path with serde's reason.
pub fn parse_typed<T: DeserializeOwned>(value: Value) -> ApiResult<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let at = |f: &str| {
            if path == "." || path.is_empty() {
                f.to_owned()
            } else {
                format!("{path}.{f}")
            }
        };
        let err = match message
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            // The path already ends at the unknown key.
            Some(field) if path.ends_with(field) => {
                FieldError::new(path.clone(), "unknown_field").with_message(message)
            }
            Some(field) => FieldError::new(at(field), "unknown_field").with_message(message),
            None => match message
                .strip_prefix("missing field `")
                .and_then(|r| r.split('`').next())
            {
                Some(field) => FieldError::new(at(field), "required").with_message(message),
                None => FieldError::new(path, "invalid").with_message(message),
            },
        };
        ApiError::Validation(vec![err])
    })
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::Validation(vec![FieldError::new(field, "invalid").with_message(message)])
}

/// Takes the write-only secret out of a body: absent or `{"set": ...}` (a GET echoed back)
/// keeps it, a string sets it, `null` removes it.
fn take_secret(kind: FeedKind, body: &mut Map<String, Value>) -> ApiResult<SecretChange> {
    let (obj, field, _) = secret_slot(kind);
    let Some(Value::Object(o)) = body.get_mut(obj) else {
        return Ok(SecretChange::Keep);
    };
    match o.remove(field) {
        None | Some(Value::Object(_)) => Ok(SecretChange::Keep),
        Some(Value::Null) => Ok(SecretChange::Remove),
        Some(Value::String(s)) if !s.is_empty() => Ok(SecretChange::Set(s)),
        Some(_) => Err(invalid(
            format!("{obj}.{field}"),
            "must be a non-empty string (write-only), or null to remove it",
        )),
    }
}

/// Validates a full feed body for a directory of `kind` against what is stored; returns the
/// settings to store and the secret change.
fn parse_feed(
    kind: FeedKind,
    mut body: Map<String, Value>,
    old: Option<&FeedRecord>,
) -> ApiResult<(Value, SecretChange)> {
    let secret = take_secret(kind, &mut body)?;
    let (_, _, name) = secret_slot(kind);
    let will_have_secret = match &secret {
        SecretChange::Set(_) => true,
        SecretChange::Remove => false,
        SecretChange::Keep => old.is_some_and(|r| r.kind == kind && r.secrets.contains_key(name)),
    };
    match kind {
        FeedKind::Ldap => {
            let mut feed: LdapFeed = parse_typed(Value::Object(body))?;
            if will_have_secret {
                // Stands in for the sealed value: validation only asks whether one is set.
                feed.ldap.bind_password_value = Some(idbridge_ldap::SecretValue(String::new()));
            }
            feed.validate()
                .map_err(|e| invalid("ldap", e.to_string()))?;
            let settings = serde_json::to_value(&feed).map_err(ApiError::internal)?;
            Ok((settings, secret))
        }
        FeedKind::Sftp => {
            let feed: SftpFeed = parse_typed(Value::Object(body))?;
            feed.validate(will_have_secret)
                .map_err(|(field, message)| invalid(field, message))?;
            if let SecretChange::Set(pem) = &secret {
                idbridge_sftp::pull::parse_private_key(pem)
                    .map_err(|e| invalid("pull.private_key", e.to_string()))?;
            }
            // One username per account on the one server: the feed table refuses a taken
            // one in the write's own commit (`username_taken`).
            let settings = serde_json::to_value(&feed).map_err(ApiError::internal)?;
            Ok((settings, secret))
        }
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Some(t) = target.as_object_mut() {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

async fn get_feed(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        kind_of(&st, &id)?;
        match st.feeds.store.get(&id).map_err(feed_error)? {
            Some(rec) => Ok(Json(view(&rec))),
            None => Err(ApiError::not_found("Directory feed", id)),
        }
    })
    .await
    .map_err(ApiError::internal)?
}

async fn put_feed(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    write(state, id, body, false).await
}

async fn patch_feed(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    write(state, id, body, true).await
}

async fn write(
    state: AppState,
    id: String,
    body: Map<String, Value>,
    patch: bool,
) -> ApiResult<Json<Value>> {
    let span = tracing::info_span!("admin.set_feed", directory_id = %id, patch);
    async move {
        let st = state.clone();
        let rec = tokio::task::spawn_blocking(move || {
            let kind = kind_of(&st, &id)?;
            let old = st.feeds.store.get(&id).map_err(feed_error)?;
            let body = if patch {
                let Some(old) = old.as_ref().filter(|o| o.kind == kind) else {
                    return Err(ApiError::not_found("Directory feed", &id));
                };
                // The secret rides along untouched unless the patch names it.
                let (obj, field, _) = secret_slot(kind);
                let mut merged = old.settings.clone();
                merge_patch(&mut merged, &Value::Object(body.clone()));
                // `null` in a patch removes a field, so put the named secret back as given
                // (a string sets it, null removes it).
                let named = body
                    .get(obj)
                    .and_then(Value::as_object)
                    .and_then(|o| o.get(field))
                    .cloned();
                if let (Some(v), Some(o)) =
                    (named, merged.get_mut(obj).and_then(Value::as_object_mut))
                {
                    o.insert(field.into(), v);
                }
                match merged {
                    Value::Object(m) => m,
                    _ => Map::new(),
                }
            } else {
                body
            };
            let (settings, secret) = parse_feed(kind, body, old.as_ref())?;
            let (_, _, name) = secret_slot(kind);
            let secrets = BTreeMap::from([(name.to_owned(), secret)]);
            let (rec, changed) = st
                .feeds
                .store
                .put(&id, kind, settings, &secrets, FeedOrigin::Api)
                .map_err(feed_error)?;
            tracing::info!(directory_id = %id, kind = ?kind, changed, "directory feed set");
            Ok(rec)
        })
        .await
        .map_err(ApiError::internal)??;
        let mut out = view(&rec);
        out["runtime"] = runtime_view(state.feeds.apply().await);
        Ok(Json(out))
    }
    .instrument(span)
    .await
}

fn runtime_view(applied: Option<Result<(), String>>) -> Value {
    match applied {
        Some(Ok(())) => json!({"applied": true}),
        Some(Err(e)) => {
            tracing::error!(error = %e, "applying the directory feeds failed");
            json!({"applied": false, "error": e})
        }
        None => json!({"applied": false, "error": "no runtime in this process"}),
    }
}

async fn delete_feed(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let span = tracing::info_span!("admin.delete_feed", directory_id = %id);
    async move {
        let st = state.clone();
        tokio::task::spawn_blocking(move || {
            kind_of(&st, &id)?;
            if st.feeds.store.delete(&id).map_err(feed_error)? {
                tracing::info!(directory_id = %id, "directory feed deleted");
                Ok(())
            } else {
                Err(ApiError::not_found("Directory feed", id))
            }
        })
        .await
        .map_err(ApiError::internal)??;
        if let Some(Err(e)) = state.feeds.apply().await {
            tracing::error!(error = %e, "applying the directory feeds failed");
        }
        Ok(StatusCode::NO_CONTENT)
    }
    .instrument(span)
    .await
}
