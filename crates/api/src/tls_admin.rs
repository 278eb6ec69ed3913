//! `POST /admin/tls/reload` (behind the API key; `docs/admin-openapi.yaml`): the same as
//! sending the server `SIGHUP` — re-read the configured HTTPS certificate and key files and
//! present the new pair to the next handshake; open connections keep theirs.
//!
//! No body, or `{}`; a field is a 422 naming it. A pair that does not load is a 409
//! `tls_reload_refused` saying why, and the previous certificate stays in use. A server
//! without `[server.tls]` answers 409 `tls_not_configured`. The handler only maps: the
//! binary installs the reloader ([`AppState::tls`](crate::AppState)).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::body::JsonObject;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::AppState;

/// Re-reads the HTTPS certificate: `Ok(sha256 fingerprint)` of the pair now presented, or why
/// the files were refused (the previous pair is kept).
pub trait TlsReloader: Send + Sync {
    fn reload(&self) -> Result<String, String>;
}

/// The reloader the binary installs when it serves HTTPS.
pub type SharedTlsReloader = Arc<dyn TlsReloader>;

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/tls/reload", post(reload))
}

async fn reload(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    if !body.is_empty() {
        return Err(ApiError::Validation(
            body.keys()
                .map(|k| FieldError::new(k.clone(), "unknown_field"))
                .collect(),
        ));
    }
    let reloader = state.tls.clone().ok_or_else(|| ApiError::Conflict {
        code: "tls_not_configured",
        message: "this server does not serve HTTPS ([server.tls] is not set): there is no \
                  certificate to reload"
            .to_owned(),
    })?;
    let fingerprint = tokio::task::spawn_blocking(move || reloader.reload())
        .await
        .map_err(ApiError::internal)?
        .map_err(|message| ApiError::Conflict {
            code: "tls_reload_refused",
            message: format!("{message}; the previous certificate is still in use"),
        })?;
    Ok(Json(json!({
        "object": "tls_certificate",
        "fingerprint_sha256": fingerprint,
    })))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use idbridge_store::{SqliteStore, Store};
    use tower::ServiceExt;

    use super::*;

    /// Accepts while `ok` is set, else refuses the way a mismatched key is refused.
    struct Fake {
        ok: std::sync::atomic::AtomicBool,
    }

    impl TlsReloader for Fake {
        fn reload(&self) -> Result<String, String> {
            if self.ok.load(Ordering::Relaxed) {
                Ok("ab".repeat(32))
            } else {
                Err("the TLS key k.pem does not fit the certificate c.pem".to_owned())
            }
        }
    }

    async fn call(
        app: &Router,
        key: &str,
        method: &str,
        uri: &str,
        body: &str,
    ) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap_or_else(|e| panic!("{e}"));
        let resp = app
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn reload_maps_success_refusal_absence_and_unknown_fields() {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open_ephemeral().unwrap_or_else(|e| panic!("{e}")));
        let key = idbridge_sso::api_keys::bootstrap(store.as_ref())
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("fresh store"))
            .api_key;
        let plain = crate::router(AppState::new(store.clone(), crate::ApiConfig::default()));
        let (s, v) = call(&plain, &key, "POST", "/admin/tls/reload", "").await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::CONFLICT, Some("tls_not_configured")),
            "{v}"
        );
        let (s, _) = call(&plain, "wrong", "POST", "/admin/tls/reload", "").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);

        let fake = Arc::new(Fake {
            ok: std::sync::atomic::AtomicBool::new(true),
        });
        let mut state = AppState::new(store, crate::ApiConfig::default());
        state.tls = Some(fake.clone());
        let draining = state.draining.clone();
        let app = crate::router(state);
        let (s, v) = call(&app, &key, "POST", "/admin/tls/reload", "{}").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["fingerprint_sha256"], "ab".repeat(32));
        let (s, v) = call(&app, &key, "POST", "/admin/tls/reload", r#"{"cert":"x"}"#).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["errors"][0]["field"], "cert");
        assert_eq!(v["errors"][0]["code"], "unknown_field");
        fake.ok.store(false, Ordering::Relaxed);
        let (s, v) = call(&app, &key, "POST", "/admin/tls/reload", "").await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::CONFLICT, Some("tls_reload_refused")),
            "{v}"
        );
        assert!(
            v["message"].as_str().unwrap_or("").contains("does not fit"),
            "{v}"
        );

        // Readiness: 200 until a shutdown begins, then 503 `draining`.
        let (s, _) = call(&app, &key, "GET", "/readyz", "").await;
        assert_eq!(s, StatusCode::OK);
        draining.store(true, Ordering::Relaxed);
        let (s, v) = call(&app, &key, "GET", "/readyz", "").await;
        assert_eq!(
            (s, v["status"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("draining"))
        );
    }
}
