//! The login flow (workos-api.md §1): `/sso/authorize` → the IdP → the SAML ACS or the OIDC
//! callback → a single-use code → `/sso/token` → `/sso/profile`. The one owner of the
//! [`SESSIONS`], [`CODES`], [`TOKENS`], [`SAML_REPLAY`] (expiring) and [`PROFILE_IDS`] tables.
//!
//! Every step is one store commit: authorize stores the login session with its
//! `authentication.sso_started` event; a finished login takes the session and writes the SAML
//! replay entries, the stable profile id, the code, the `authentication.sso_succeeded` event
//! and the connection's activation together (a failed one takes the session with its
//! `authentication.sso_failed` event); a login that does neither before its session expires is
//! announced by [`timeout`]'s sweeper (`authentication.sso_timed_out`); the token exchange takes the code and stores the token.
//! Codes, tokens and sessions are stored only as SHA-256 digests.
//!
//! HTTP belongs to the caller: this module decides where the browser goes ([`LoginReply`]) and
//! what the session cookie carries; idbridge-api renders redirects, pages and cookies.

mod authorize;
mod complete;
pub mod logout;
mod oidc;
pub(crate) mod saml;
pub mod timeout;
mod token;

pub(crate) use authorize::LoginStart;
pub use authorize::{Authorization, AuthorizeError, AuthorizeRequest};
pub use logout::{LogoutAuthorization, LogoutError, SamlSubject, SloBinding, SloOutcome};
pub use oidc::OidcCallback;
pub use saml::AcsRequest;
pub use token::{pkce_challenge, pkce_matches, TokenGrant, TokenRequest};

use std::sync::Arc;

use idbridge_model::Profile;
use idbridge_secrets::sha256_hex;
use idbridge_store::{ChangeSet, ConflictKind, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::db::{self, to_json};
use crate::error::SsoResult;

/// Expiring: `<sha256 hex of session id>` → [`LoginSession`] (authorize → ACS/callback).
pub const SESSIONS: &str = "sso_login_sessions";
/// Expiring: `<sha256 hex of code>` → [`CodeRecord`] (single use).
pub const CODES: &str = "sso_codes";
/// Expiring: `<sha256 hex of access token>` → [`TokenRecord`].
pub const TOKENS: &str = "sso_access_tokens";
/// Expiring: SAML assertion and request ids already consumed (the replay cache).
pub const SAML_REPLAY: &str = "saml_replay";
/// `<connection id>/<sha256 hex of idp_id>` → `prof_…`: the stable profile id.
pub const PROFILE_IDS: &str = "sso_profile_ids";

/// The operator console's "test sign-in" callback, under `public_url`. It is an allowed
/// redirect URI without being in the allow-list, so an operator can try a connection before
/// any app is set up; a login to it must carry a PKCE `code_challenge`, and only the console
/// (which holds the verifier) can exchange the code.
pub const CONSOLE_TEST_CALLBACK_PATH: &str = "/console/test-sign-in/callback";

/// The client's address and user agent, for authentication events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
}

/// Where a finished (or failed) login sends the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginReply {
    /// A redirect: to the app (with a code or an OAuth error), or to the IdP.
    Redirect(String),
    /// No vetted redirect URI exists: an error page (JSON `{error, error_description}`).
    Page {
        status: PageStatus,
        code: &'static str,
        message: &'static str,
    },
}

/// The status of an error page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageStatus {
    BadRequest,
    NotFound,
    Unavailable,
}

impl LoginReply {
    fn page(status: PageStatus, code: &'static str, message: &'static str) -> Self {
        LoginReply::Page {
            status,
            code,
            message,
        }
    }
}

/// A login's reply and the session cookie to clear (named by its relay key), if one was used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginOutcome {
    pub reply: LoginReply,
    pub clear_cookie: Option<String>,
}

/// Relay keys are ours: 16–64 URL-safe characters. Anything else is not a key (and names no
/// cookie).
pub fn valid_relay_key(k: &str) -> bool {
    (16..=64).contains(&k.len())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The relay key of an OIDC login: derived from the `state` the provider echoes, so the
/// callback finds the browser's session cookie without a RelayState.
pub fn relay_key_for_state(state: &str) -> String {
    sha256_hex(state)[..32].to_string()
}

/// `redirect_uri` with extra query parameters (existing ones are kept); `None` when it is not
/// an absolute URL.
pub fn with_params(redirect_uri: &str, params: &[(&str, Option<&str>)]) -> Option<String> {
    let mut url = url::Url::parse(redirect_uri).ok()?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
    }
    Some(url.to_string())
}

/// An OAuth error redirect to a vetted URI (workos-api.md §1.1), with extra parameters.
fn error_redirect(
    redirect_uri: &str,
    error: &'static str,
    description: &str,
    state: Option<&str>,
    extra: &[(&str, Option<&str>)],
) -> LoginReply {
    let mut params: Vec<(&str, Option<&str>)> = vec![
        ("error", Some(error)),
        ("error_description", Some(description)),
    ];
    params.extend_from_slice(extra);
    params.push(("state", state));
    match with_params(redirect_uri, &params) {
        Some(loc) => LoginReply::Redirect(loc),
        None => LoginReply::page(
            PageStatus::BadRequest,
            "invalid_redirect",
            "The redirect target is invalid.",
        ),
    }
}

/// What `/sso/authorize` leaves for the ACS or callback, bound to one browser.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginSession {
    pub connection_id: String,
    pub organization_id: Option<String>,
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    /// SAML: the AuthnRequest id, checked against InResponseTo.
    pub saml_request_id: Option<String>,
    /// SAML: the RelayState we sent (also names the cookie).
    pub relay_key: String,
    /// OIDC: state, nonce and PKCE verifier (sealed) for `OidcClient::finish`.
    pub oidc_state: Option<String>,
    pub oidc_nonce: Option<String>,
    pub oidc_verifier_sealed: Option<String>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
}

/// A minted authorization code (stored under the digest of the code).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CodeRecord {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: Option<String>,
    pub profile: Profile,
}

/// An issued access token (stored under the digest of the token).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TokenRecord {
    pub profile: Profile,
}

/// The owner of the login tables: reads, and staging into a login's one change set.
#[derive(Clone)]
pub(crate) struct Logins {
    store: Arc<dyn Store>,
}

/// Digest of a bearer secret (session id, code, token): the key it is stored under.
fn key_of(secret: &str) -> String {
    sha256_hex(secret)
}

impl Logins {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        Logins { store }
    }

    pub(crate) fn live<T: serde::de::DeserializeOwned>(
        &self,
        table: &str,
        key: &str,
        now: i64,
    ) -> Result<Option<T>, StoreError> {
        match self.store.get_expiring(table, key, now)? {
            Some(bytes) => db::decode(table, key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The live session a browser's cookie names.
    pub(crate) fn session(
        &self,
        session_id: &str,
        now: i64,
    ) -> Result<Option<LoginSession>, StoreError> {
        self.live(SESSIONS, &key_of(session_id), now)
    }

    pub(crate) fn stage_session(
        cs: &mut ChangeSet,
        session_id: &str,
        session: &LoginSession,
        expires_at_ms: i64,
    ) -> SsoResult<()> {
        cs.put_expiring(
            SESSIONS,
            key_of(session_id),
            to_json(session)?,
            expires_at_ms,
        );
        Ok(())
    }

    /// Takes the session: the commit fails if another request took it first.
    pub(crate) fn stage_take_session(cs: &mut ChangeSet, session_id: &str, now: i64) {
        cs.take_expiring(SESSIONS, key_of(session_id), now);
    }

    pub(crate) fn is_session_gone(e: &StoreError) -> bool {
        matches!(e, StoreError::Conflict { table, kind: ConflictKind::NotLive, .. } if table == SESSIONS)
    }

    /// The live code, if any.
    pub(crate) fn code(&self, code: &str, now: i64) -> Result<Option<CodeRecord>, StoreError> {
        self.live(CODES, &key_of(code), now)
    }

    pub(crate) fn stage_code(
        cs: &mut ChangeSet,
        code: &str,
        record: &CodeRecord,
        expires_at_ms: i64,
    ) -> SsoResult<()> {
        cs.put_expiring(CODES, key_of(code), to_json(record)?, expires_at_ms);
        Ok(())
    }

    /// Takes the code (single use): the commit fails if it was used meanwhile.
    pub(crate) fn stage_take_code(cs: &mut ChangeSet, code: &str, now: i64) {
        cs.take_expiring(CODES, key_of(code), now);
    }

    pub(crate) fn stage_token(
        cs: &mut ChangeSet,
        token: &str,
        record: &TokenRecord,
        expires_at_ms: i64,
    ) -> SsoResult<()> {
        cs.put_expiring(TOKENS, key_of(token), to_json(record)?, expires_at_ms);
        Ok(())
    }

    /// The live token, if any.
    pub(crate) fn token(&self, token: &str, now: i64) -> Result<Option<TokenRecord>, StoreError> {
        self.live(TOKENS, &key_of(token), now)
    }

    fn profile_key(conn_id: &str, idp_id: &str) -> String {
        format!("{conn_id}/{}", sha256_hex(idp_id))
    }

    /// The stable profile id of (connection, idp_id), if one was given before.
    pub(crate) fn profile_id(
        &self,
        conn_id: &str,
        idp_id: &str,
    ) -> Result<Option<String>, StoreError> {
        db::get_string(
            self.store.as_ref(),
            PROFILE_IDS,
            &Self::profile_key(conn_id, idp_id),
        )
    }

    /// Stages a first profile id (the slot must be free: a parallel first login may win).
    pub(crate) fn stage_profile_id(cs: &mut ChangeSet, conn_id: &str, idp_id: &str, id: &str) {
        let key = Self::profile_key(conn_id, idp_id);
        cs.require_absent(PROFILE_IDS, &key);
        cs.put(PROFILE_IDS, key, id.as_bytes().to_vec());
    }

    pub(crate) fn is_profile_id_race(e: &StoreError) -> bool {
        matches!(e, StoreError::Conflict { table, kind: ConflictKind::Exists, .. } if table == PROFILE_IDS)
    }

    /// Whether a replay-cache key is live (a response already consumed).
    pub(crate) fn replay_seen(&self, key: &str, now: i64) -> Result<bool, StoreError> {
        Ok(self.store.get_expiring(SAML_REPLAY, key, now)?.is_some())
    }

    /// Stages a replay-cache entry; the commit fails if it is live by then.
    pub(crate) fn stage_replay(cs: &mut ChangeSet, key: &str, expires_at_ms: i64, now: i64) {
        cs.insert_expiring(SAML_REPLAY, key, Vec::new(), expires_at_ms, now);
    }

    pub(crate) fn is_replay(e: &StoreError) -> bool {
        matches!(e, StoreError::Conflict { table, kind: ConflictKind::Live, .. } if table == SAML_REPLAY)
    }
}

#[cfg(feature = "testkit")]
impl crate::SsoService {
    /// Stores a login session as `/sso/authorize` would (tests of the ACS and callback paths
    /// that cannot reach an IdP): live for `ttl`.
    pub fn put_login_session(
        &self,
        session_id: &str,
        session: &LoginSession,
        ttl: std::time::Duration,
    ) -> SsoResult<()> {
        let mut cs = ChangeSet::default();
        Logins::stage_session(&mut cs, session_id, session, db::now_ms() + db::ttl_ms(ttl))?;
        self.store.commit(cs)?;
        Ok(())
    }

    /// The key that seals connection secrets, if the service has one.
    pub fn secret_box(&self) -> Option<&crate::SecretBox> {
        self.settings.secrets.as_ref()
    }
}
