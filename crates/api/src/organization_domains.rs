//! `/organization_domains` (WorkOS-compatible, `@workos/openapi-spec` operations
//! `OrganizationDomainsController_*`) and `/admin/dns` (the DNS verification settings), over
//! `idbridge_sso::organizations` and `idbridge_sso::domains`.
//!
//! - `POST /organization_domains` `{organization_id, domain}` → 201, a `pending` domain with
//!   `verification_strategy: "dns"` and a `verification_token`; 409 `domain_already_exists`.
//! - `GET /organization_domains/{id}` → 200; `DELETE` → 204.
//! - `POST /organization_domains/{id}/verify` → 201 with the domain after a DNS check
//!   (verified / failed / still pending); 400 `domain_already_verified`; 503
//!   `dns_lookup_failed` when the resolver does not answer (nothing changed).
//! - `GET /admin/dns`, `PUT /admin/dns` `{resolver, timeout_ms, recheck_interval_secs,
//!   verification_period_secs}`: the `[dns]` config section, changed while the server runs.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use idbridge_model::OrganizationDomain;
use idbridge_sso::dns::DnsSettings;
use serde_json::{json, Map, Value};

use crate::body::{Fields, JsonObject};
use crate::error::ApiResult;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/organization_domains", post(create))
        .route("/organization_domains/{id}", get(get_one).delete(delete))
        .route("/organization_domains/{id}/verify", post(verify))
        .route("/admin/dns", get(get_dns).put(put_dns))
}

/// Reports every key not in `known` as `unknown_field`.
pub(crate) fn deny_unknown(f: &mut Fields<'_>, body: &Map<String, Value>, known: &[&str]) {
    for key in body.keys() {
        if !known.contains(&key.as_str()) {
            f.error(key, "unknown_field");
        }
    }
}

async fn create(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> ApiResult<(StatusCode, Json<OrganizationDomain>)> {
    let mut f = Fields::new(&body);
    deny_unknown(&mut f, &body, &["organization_id", "domain"]);
    let org_id = f.required_string("organization_id");
    let domain = f.required_string("domain");
    if let Some(d) = &domain {
        if !idbridge_sso::organizations::valid_domain(d.trim()) {
            f.error("domain", "invalid_domain");
        }
    }
    f.finish()?;
    let (org_id, domain) = (org_id.unwrap_or_default(), domain.unwrap_or_default());
    let d = state
        .sso
        .organizations()
        .add_domain(&org_id, &domain)
        .await?;
    Ok((StatusCode::CREATED, Json(d)))
}

async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<OrganizationDomain>> {
    Ok(Json(state.sso.organizations().load_domain(&id)?))
}

async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    state.sso.organizations().delete_domain(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn verify(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<(StatusCode, Json<OrganizationDomain>)> {
    let mut f = Fields::new(&body);
    deny_unknown(&mut f, &body, &[]);
    f.finish()?;
    let d = state.sso.verify_domain(&id).await?;
    Ok((StatusCode::CREATED, Json(d)))
}

fn dns_json(s: &DnsSettings) -> Value {
    json!({
        "resolver": s.resolver.map(|a| a.to_string()),
        "timeout_ms": u64::try_from(s.timeout.as_millis()).unwrap_or(u64::MAX),
        "recheck_interval_secs": s.recheck_interval.as_secs(),
        "verification_period_secs": s.verification_period.as_secs(),
    })
}

async fn get_dns(State(state): State<AppState>) -> Json<Value> {
    Json(dns_json(&state.sso.dns().settings()))
}

/// Parses a `PUT /admin/dns` body over the current settings (absent fields stay; `resolver:
/// null` means the system's resolver). Every wrong field is reported at once.
pub fn parse_dns(body: &Map<String, Value>, current: DnsSettings) -> ApiResult<DnsSettings> {
    let mut f = Fields::new(body);
    deny_unknown(
        &mut f,
        body,
        &[
            "resolver",
            "timeout_ms",
            "recheck_interval_secs",
            "verification_period_secs",
        ],
    );
    let mut s = current;
    match body.get("resolver") {
        None => {}
        Some(Value::Null) => s.resolver = None,
        Some(Value::String(r)) => match r.parse::<SocketAddr>() {
            Ok(a) => s.resolver = Some(a),
            Err(_) => f.error("resolver", "must_be_ip_and_port"),
        },
        Some(_) => f.error("resolver", "must_be_ip_and_port"),
    }
    let mut positive = |field: &str, max: u64| -> Option<u64> {
        match body.get(field) {
            None => None,
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 && n <= max => Some(n),
                _ => {
                    f.error(field, "must_be_positive_integer_in_range");
                    None
                }
            },
        }
    };
    if let Some(ms) = positive("timeout_ms", 60_000) {
        s.timeout = Duration::from_millis(ms);
    }
    if let Some(secs) = positive("recheck_interval_secs", 86_400) {
        s.recheck_interval = Duration::from_secs(secs);
    }
    if let Some(secs) = positive("verification_period_secs", 366 * 86_400) {
        s.verification_period = Duration::from_secs(secs);
    }
    f.finish()?;
    Ok(s)
}

async fn put_dns(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    let s = parse_dns(&body, state.sso.dns().settings())?;
    // The `dns` section of `/admin/settings`: stored (kept across restarts) and applied there.
    match state.settings.runtime() {
        Some(runtime) => {
            runtime.patch("dns".into(), body).await?;
        }
        None => state.sso.dns().set_settings(s.clone()),
    }
    tracing::info!(resolver = ?s.resolver, "DNS verification settings changed");
    Ok(Json(dns_json(&s)))
}
