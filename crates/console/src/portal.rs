//! Admin Portal links and portal sessions: the one owner of the expiring [`LINKS`] and
//! [`PORTAL_SESSIONS`] tables.
//!
//! `POST /portal/generate_link` (crates/api) mints a link for one organization and one
//! intent. The link's token works once, within [`LINK_TTL`]: opening it takes the token out
//! of the store (durably, before the page answers) and starts a portal session whose cookie
//! carries the organization and intent from then on. Nothing in a portal request can name
//! another organization: every portal page reads the organization from the session.

use std::time::Duration;

use idbridge_secrets::{random_token, sha256_hex};
use idbridge_store::{ChangeSet, Store, StoreError};
use serde::{Deserialize, Serialize};

/// `<sha256 hex of the link token>` → [`PortalGrant`] (expiring, single use).
pub const LINKS: &str = "portal_links";
/// `<sha256 hex of the portal session id>` → [`PortalGrant`] (expiring).
pub const PORTAL_SESSIONS: &str = "portal_sessions";

/// How long a generated link can be opened (WorkOS: five minutes).
pub const LINK_TTL: Duration = Duration::from_secs(5 * 60);
/// How long the IT admin's portal session lasts after opening the link.
pub const SESSION_TTL: Duration = Duration::from_secs(60 * 60);

/// What an Admin Portal link is for (WorkOS's `intent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    Sso,
    Dsync,
    DomainVerification,
    CertificateRenewal,
}

impl Intent {
    /// The intents this portal serves; WorkOS's other intents (`audit_logs`, `log_streams`,
    /// `bring_your_own_key`) are products idbridge does not have.
    pub const ALL: [Intent; 4] = [
        Intent::Sso,
        Intent::Dsync,
        Intent::DomainVerification,
        Intent::CertificateRenewal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Intent::Sso => "sso",
            Intent::Dsync => "dsync",
            Intent::DomainVerification => "domain_verification",
            Intent::CertificateRenewal => "certificate_renewal",
        }
    }

    pub fn parse(s: &str) -> Option<Intent> {
        Intent::ALL.into_iter().find(|i| i.as_str() == s)
    }
}

/// What a link (and then its session) grants: one organization, one intent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalGrant {
    pub organization_id: String,
    pub intent: Intent,
    pub return_url: Option<String>,
    pub success_url: Option<String>,
    /// The app's id of the admin the link was made for (kept for a later `revoke_link`).
    #[serde(default)]
    pub external_user_id: Option<String>,
    /// The per-session token every portal form must carry.
    pub csrf: String,
}

fn encode(grant: &PortalGrant) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(grant).map_err(|e| StoreError::Backend(e.to_string()))
}

fn decode(table: &str, bytes: &[u8]) -> Result<PortalGrant, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::corrupt(table, e.to_string()))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Stores a new link's grant; returns the token to put in the link.
pub fn create_link(
    store: &dyn Store,
    organization_id: &str,
    intent: Intent,
    return_url: Option<String>,
    success_url: Option<String>,
    external_user_id: Option<String>,
    now_ms: i64,
) -> Result<String, StoreError> {
    let token = random_token(32);
    let grant = PortalGrant {
        organization_id: organization_id.to_string(),
        intent,
        return_url,
        success_url,
        external_user_id,
        csrf: random_token(32),
    };
    let mut cs = ChangeSet::new();
    cs.put_expiring(
        LINKS,
        sha256_hex(&token),
        encode(&grant)?,
        now_ms + ms(LINK_TTL),
    );
    store.commit(cs)?;
    Ok(token)
}

/// Opens a link: takes its token (so a second use finds nothing) and starts a portal
/// session. Returns the session cookie value and the grant; `None` for a used, expired or
/// unknown token.
pub fn redeem(
    store: &dyn Store,
    token: &str,
    now_ms: i64,
) -> Result<Option<(String, PortalGrant)>, StoreError> {
    if token.is_empty() || token.len() > 128 {
        return Ok(None);
    }
    let Some(bytes) = store.take_expiring(LINKS, &sha256_hex(token), now_ms)? else {
        return Ok(None);
    };
    let grant = decode(LINKS, &bytes)?;
    let session = random_token(32);
    let mut cs = ChangeSet::new();
    cs.put_expiring(
        PORTAL_SESSIONS,
        sha256_hex(&session),
        encode(&grant)?,
        now_ms + ms(SESSION_TTL),
    );
    store.commit(cs)?;
    Ok(Some((session, grant)))
}

/// The grant of a live portal session.
pub fn session(
    store: &dyn Store,
    id: &str,
    now_ms: i64,
) -> Result<Option<PortalGrant>, StoreError> {
    if id.is_empty() || id.len() > 128 {
        return Ok(None);
    }
    match store.get_expiring(PORTAL_SESSIONS, &sha256_hex(id), now_ms)? {
        Some(bytes) => decode(PORTAL_SESSIONS, &bytes).map(Some),
        None => Ok(None),
    }
}
