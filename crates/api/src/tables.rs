//! Table names and key layouts in the store.
//!
//! Records are JSON. Entity tables are keyed by id; since ids are ULIDs and `created_at` is
//! taken from the ULID's own timestamp, key order is the WorkOS list order (created_at, id).

pub const ORGANIZATIONS: &str = "organizations";
/// `<external_id>` → organization id (unique).
pub const ORG_BY_EXTERNAL_ID: &str = "org_by_external_id";
/// `<domain>/<organization id>` → organization id (a domain may be claimed by several orgs).
pub const ORG_BY_DOMAIN: &str = "org_by_domain";

/// `<sha256 hex of the key>` → [`crate::auth::ApiKeyRecord`].
pub const API_KEYS: &str = "api_keys";
/// Environment singletons, e.g. `client_id`.
pub const ENVIRONMENT: &str = "environment";

/// `Idempotency-Key` replays (expiring table).
pub const IDEMPOTENCY: &str = "idempotency";

pub fn org_domain_key(domain: &str, org_id: &str) -> String {
    format!("{domain}/{org_id}")
}

/// Webhook endpoints by id; the value is the WorkOS `webhook_endpoint` object. The name is
/// shared with `idbridge_forward::ENDPOINTS_TABLE`, which reads these records.
pub const WEBHOOK_ENDPOINTS: &str = "webhook_endpoints";
/// `<normalized endpoint_url>` → endpoint id (unique: WorkOS answers 409 `duplicate_endpoint`).
pub const WEBHOOK_ENDPOINT_BY_URL: &str = "webhook_endpoint_by_url";
/// Delivery state (cursor seq, failures) by endpoint id; shared with
/// `idbridge_forward::DELIVERY_TABLE`, which advances it.
pub const WEBHOOK_DELIVERY: &str = "webhook_delivery";

// --- SSO (crates/api/src/sso) ---

/// `conn_…` → [`crate::sso::connections::ConnectionRecord`] (wire object + sealed settings).
pub const CONNECTIONS: &str = "connections";
/// `<organization id>/<connection id>` → connection id.
pub const CONNECTIONS_BY_ORG: &str = "connections_by_org";
/// `<external_id>` → connection id (unique).
pub const CONNECTION_BY_EXTERNAL_ID: &str = "connection_by_external_id";
/// `<connection id>/<sha256 hex of idp_id>` → `prof_…`: the stable profile id.
pub const SSO_PROFILE_IDS: &str = "sso_profile_ids";
/// Expiring: `<sha256 hex of session id>` → login session (authorize → ACS/callback).
pub const SSO_LOGIN_SESSIONS: &str = "sso_login_sessions";
/// Expiring: `<sha256 hex of code>` → code record (single use).
pub const SSO_CODES: &str = "sso_codes";
/// Expiring: `<sha256 hex of access token>` → token record with the profile.
pub const SSO_ACCESS_TOKENS: &str = "sso_access_tokens";
/// Expiring: SAML assertion/request ids already consumed (replay cache).
pub const SAML_REPLAY: &str = "saml_replay";

// Roles, role mappings and role modes live in the directory engine's tables
// (`idbridge_directory::layout::{ROLES, ROLE_MAPPINGS, ROLE_MODES}`), shared by SSO and directories.

pub fn org_connection_key(org_id: &str, conn_id: &str) -> String {
    format!("{org_id}/{conn_id}")
}
