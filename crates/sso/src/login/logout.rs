//! Logout as WorkOS defines it (workos-api.md §1): `POST /sso/logout/authorize {profile_id}`
//! mints a short-lived, single-use logout token; `GET /sso/logout?token=` sends the browser to
//! the identity provider's sign-out. For a SAML connection whose IdP has an HTTP-Redirect
//! SingleLogoutService that is an SP-initiated LogoutRequest, signed with the connection's SP
//! signing key, naming the NameID and SessionIndex of the profile's last login.
//!
//! The one owner of [`LOGOUT_SESSIONS`] (written by a login's commit), [`LOGOUT_TOKENS`] and
//! [`LOGOUT_REQUESTS`]. Tokens are stored only as SHA-256 digests.

use idbridge_secrets::random_token;
use idbridge_store::{ChangeSet, ConflictKind, StoreError};
use serde::{Deserialize, Serialize};

use super::{key_of, Logins};
use crate::connections::ProtocolSettings;
use crate::db::{self, now_ms, to_json};
use crate::error::{SsoError, SsoResult};
use crate::SsoService;

/// Expiring: `<profile id>` → [`LogoutSession`]: the profile's last login, for single logout.
pub const LOGOUT_SESSIONS: &str = "sso_logout_sessions";
/// Expiring: `<sha256 hex of logout token>` → [`LogoutToken`] (single use).
pub const LOGOUT_TOKENS: &str = "sso_logout_tokens";
/// Expiring: `<LogoutRequest id>` → [`SentLogout`]: what a LogoutResponse must answer.
pub const LOGOUT_REQUESTS: &str = "sso_logout_requests";

/// How long a login can be logged out of (a browser session at the IdP rarely lasts longer).
const LOGOUT_SESSION_TTL_MS: i64 = 24 * 3600 * 1000;
/// A logout token is for an immediate redirect.
const LOGOUT_TOKEN_TTL_MS: i64 = 5 * 60 * 1000;
/// How long we wait for the IdP's LogoutResponse.
const LOGOUT_REQUEST_TTL_MS: i64 = 10 * 60 * 1000;

/// Who the IdP logged in: the assertion's NameID and SessionIndex, kept for its LogoutRequest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamlSubject {
    pub name_id: String,
    pub name_id_format: Option<String>,
    pub session_index: Option<String>,
}

/// A profile's last login on a connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LogoutSession {
    pub connection_id: String,
    /// SAML logins only.
    pub saml: Option<SamlSubject>,
}

/// A minted logout token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LogoutToken {
    profile_id: String,
}

/// A LogoutRequest we sent and have not seen answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SentLogout {
    connection_id: String,
    profile_id: String,
}

/// `POST /sso/logout/authorize`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogoutAuthorization {
    pub logout_url: String,
    pub logout_token: String,
}

/// Why `GET /sso/logout` cannot continue.
#[derive(Debug, thiserror::Error)]
pub enum LogoutError {
    #[error("The logout token is unknown, expired or already used: ask the app to start the logout again.")]
    TokenInvalid,
    #[error("The profile's login session has ended or its connection changed: there is nothing to log out of.")]
    SessionGone,
    #[error(transparent)]
    Sso(#[from] SsoError),
}

impl From<StoreError> for LogoutError {
    fn from(e: StoreError) -> Self {
        LogoutError::Sso(e.into())
    }
}

impl Logins {
    /// Stages the profile's logout session (its latest login wins).
    pub(crate) fn stage_logout_session(
        cs: &mut ChangeSet,
        profile_id: &str,
        session: &LogoutSession,
        now: i64,
    ) -> SsoResult<()> {
        cs.put_expiring(
            LOGOUT_SESSIONS,
            profile_id,
            to_json(session)?,
            now + LOGOUT_SESSION_TTL_MS,
        );
        Ok(())
    }
}

fn connection_invalid(description: &str) -> SsoError {
    SsoError::OAuth {
        error: "connection_invalid",
        description: description.to_string(),
    }
}

const NO_SLO: &str = "Single Logout needs a SAML connection whose identity provider has an HTTP-Redirect SingleLogoutService (set saml_options.idp_slo_url or use IdP metadata that has one).";

impl SsoService {
    /// `POST /sso/logout/authorize`: a logout token for the profile's last login.
    #[tracing::instrument(name = "sso.logout_authorize", skip(self))]
    pub async fn authorize_logout(&self, profile_id: &str) -> SsoResult<LogoutAuthorization> {
        let now = now_ms();
        let session: LogoutSession = self
            .logins
            .live(LOGOUT_SESSIONS, profile_id, now)?
            .ok_or_else(|| SsoError::NotFound {
                entity: "Profile",
                id: profile_id.to_string(),
            })?;
        let record = self
            .connections
            .get(&session.connection_id)?
            .ok_or_else(|| connection_invalid("The profile's connection no longer exists."))?;
        match &record.protocol {
            ProtocolSettings::Saml(s) if s.idp_slo_url.is_some() && session.saml.is_some() => {}
            _ => return Err(connection_invalid(NO_SLO)),
        }
        let token = random_token(32);
        let mut cs = ChangeSet::new();
        cs.put_expiring(
            LOGOUT_TOKENS,
            key_of(&token),
            to_json(&LogoutToken {
                profile_id: profile_id.to_string(),
            })?,
            now + LOGOUT_TOKEN_TTL_MS,
        );
        db::commit(&self.store, cs).await?;
        let logout_url = super::with_params(
            &format!("{}/sso/logout", self.public_url()),
            &[("token", Some(&token))],
        )
        .ok_or_else(|| SsoError::internal("the public URL is not an absolute URL"))?;
        Ok(LogoutAuthorization {
            logout_url,
            logout_token: token,
        })
    }

    /// `GET /sso/logout?token=`: takes the token (single use) and the profile's logout session
    /// in one commit, remembers the LogoutRequest's id, and returns where the browser goes: the
    /// IdP's SingleLogoutService with our signed LogoutRequest.
    #[tracing::instrument(name = "sso.logout", skip_all)]
    pub async fn logout(&self, token: &str) -> Result<String, LogoutError> {
        let now = now_ms();
        let Some(minted) = self
            .logins
            .live::<LogoutToken>(LOGOUT_TOKENS, &key_of(token), now)?
        else {
            return Err(LogoutError::TokenInvalid);
        };
        let session: LogoutSession = self
            .logins
            .live(LOGOUT_SESSIONS, &minted.profile_id, now)?
            .ok_or(LogoutError::SessionGone)?;
        let record = self
            .connections
            .get(&session.connection_id)?
            .ok_or(LogoutError::SessionGone)?;
        let (ProtocolSettings::Saml(saml), Some(subject)) = (&record.protocol, &session.saml)
        else {
            return Err(LogoutError::SessionGone);
        };
        let Some(slo_url) = &saml.idp_slo_url else {
            return Err(LogoutError::SessionGone);
        };
        let sp = saml.sp_settings(record.id(), self.settings.secrets.as_ref())?;
        let sent = idbridge_saml::build_logout_request(
            &sp,
            slo_url,
            &idbridge_saml::LogoutSubject {
                name_id: &subject.name_id,
                name_id_format: subject.name_id_format.as_deref(),
                session_index: subject.session_index.as_deref(),
            },
            None,
        )
        .map_err(SsoError::internal)?;
        let mut cs = ChangeSet::new();
        cs.take_expiring(LOGOUT_TOKENS, key_of(token), now);
        cs.delete_expiring(LOGOUT_SESSIONS, minted.profile_id.clone());
        cs.put_expiring(
            LOGOUT_REQUESTS,
            sent.request_id.clone(),
            to_json(&SentLogout {
                connection_id: record.id().to_string(),
                profile_id: minted.profile_id.clone(),
            })?,
            now + LOGOUT_REQUEST_TTL_MS,
        );
        match db::commit(&self.store, cs).await {
            Ok(_) => {}
            // Used by a parallel request meanwhile: single use.
            Err(StoreError::Conflict {
                table,
                kind: ConflictKind::NotLive,
                ..
            }) if table == LOGOUT_TOKENS => return Err(LogoutError::TokenInvalid),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(connection_id = %record.id(), profile_id = %minted.profile_id, "SAML single logout started");
        Ok(sent.url)
    }
}

/// How old an IdP's logout message may be (beyond the clock skew): a browser round trip.
const SLO_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(300);

/// What our SingleLogoutService does with a message from the IdP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SloOutcome {
    /// Our logout finished: to the default redirect URI (`[sso] default_redirect_uri`).
    Redirect(String),
    /// Our logout finished and no default redirect URI is configured.
    SignedOut,
    /// The IdP's LogoutRequest was honoured: our signed LogoutResponse, to the IdP.
    RespondToIdp(String),
    /// Unknown connection, or a message that does not verify, was replayed, or answers no
    /// request of ours. The reason is logged, never shown (an oracle).
    Refused,
}

/// A logout message as it arrived on our SingleLogoutService.
#[derive(Debug, Clone, Copy)]
pub enum SloBinding<'a> {
    /// HTTP-Redirect: the raw query string (after `?`, still URL-encoded).
    Redirect(&'a str),
    /// HTTP-POST: the form field name (`SAMLRequest` / `SAMLResponse`), its value and the
    /// RelayState, if any.
    Post {
        param: &'a str,
        message: &'a str,
        relay_state: Option<&'a str>,
    },
}

impl SsoService {
    /// `GET /sso/saml/slo/{connection}`: a LogoutResponse to our LogoutRequest, or an
    /// IdP-initiated LogoutRequest, both only when signed by the connection's IdP.
    #[tracing::instrument(name = "sso.saml_slo", skip(self, raw_query))]
    pub async fn saml_slo(&self, conn_id: &str, raw_query: &str) -> SloOutcome {
        self.saml_slo_message(conn_id, SloBinding::Redirect(raw_query))
            .await
    }

    /// Our SingleLogoutService over either binding (`GET` Redirect, `POST` form).
    #[tracing::instrument(name = "sso.saml_slo_message", skip(self, binding))]
    pub async fn saml_slo_message(&self, conn_id: &str, binding: SloBinding<'_>) -> SloOutcome {
        match self.saml_slo_inner(conn_id, binding).await {
            Ok(outcome) => outcome,
            Err(why) => {
                tracing::warn!(reason = %why, "SAML logout message refused");
                SloOutcome::Refused
            }
        }
    }

    async fn saml_slo_inner(
        &self,
        conn_id: &str,
        binding: SloBinding<'_>,
    ) -> Result<SloOutcome, String> {
        let record = self
            .connections
            .get(conn_id)
            .map_err(|e| e.to_string())?
            .ok_or("unknown connection")?;
        let ProtocolSettings::Saml(saml) = &record.protocol else {
            return Err("not a SAML connection".into());
        };
        let (Some(idp_slo), Some(our_slo)) = (&saml.idp_slo_url, saml.sp_slo_url()) else {
            return Err("the connection has no single logout".into());
        };
        let idp = saml.idp_settings().map_err(|e| e.to_string())?;
        let ctx = idbridge_saml::SloContext {
            idp: &idp,
            slo_url: &our_slo,
            now: chrono::Utc::now(),
            clock_skew: std::time::Duration::from_secs(saml.clock_skew_secs),
            max_age: SLO_MAX_AGE,
        };
        let message = match binding {
            SloBinding::Redirect(raw_query) => idbridge_saml::verify_slo_redirect(raw_query, &ctx),
            SloBinding::Post {
                param,
                message,
                relay_state,
            } => idbridge_saml::verify_slo_post(param, message, relay_state, &ctx),
        }
        .map_err(|e| e.to_string())?;
        let now = now_ms();
        match message {
            idbridge_saml::SloMessage::Response {
                in_response_to,
                status,
                ..
            } => {
                let sent: SentLogout = self
                    .logins
                    .live(LOGOUT_REQUESTS, &in_response_to, now)
                    .map_err(|e| e.to_string())?
                    .ok_or("InResponseTo names no pending LogoutRequest of ours (or it was answered already)")?;
                if sent.connection_id != conn_id {
                    return Err("InResponseTo names a LogoutRequest of another connection".into());
                }
                let mut cs = ChangeSet::new();
                cs.take_expiring(LOGOUT_REQUESTS, in_response_to.clone(), now);
                db::commit(&self.store, cs)
                    .await
                    .map_err(|e| format!("LogoutResponse already consumed: {e}"))?;
                if status != idbridge_saml::slo::STATUS_SUCCESS {
                    tracing::warn!(profile_id = %sent.profile_id, status = %status, "the IdP did not complete the logout");
                }
                tracing::info!(profile_id = %sent.profile_id, "SAML single logout finished");
                Ok(match self.config().default_redirect() {
                    Some(uri) => SloOutcome::Redirect(uri),
                    None => SloOutcome::SignedOut,
                })
            }
            idbridge_saml::SloMessage::Request {
                id, relay_state, ..
            } => {
                // Single use: the request id goes into the replay cache in the commit.
                let mut cs = ChangeSet::new();
                let window = db::ttl_ms(ctx.clock_skew * 2 + SLO_MAX_AGE);
                Logins::stage_replay(&mut cs, &format!("slo:{conn_id}:{id}"), now + window, now);
                match db::commit(&self.store, cs).await {
                    Ok(_) => {}
                    Err(e) if Logins::is_replay(&e) => return Err("replayed LogoutRequest".into()),
                    Err(e) => return Err(e.to_string()),
                }
                let sp = saml
                    .sp_settings(conn_id, self.settings.secrets.as_ref())
                    .map_err(|e| e.to_string())?;
                let key = sp.signing_keys.first().ok_or("no SP signing key")?;
                let (_, xml) = idbridge_saml::slo::logout_response_xml(
                    &sp.entity_id,
                    idp_slo,
                    &id,
                    idbridge_saml::slo::STATUS_SUCCESS,
                )
                .map_err(|e| e.to_string())?;
                let url = idbridge_saml::slo::signed_redirect(
                    idp_slo,
                    "SAMLResponse",
                    &xml,
                    relay_state.as_deref(),
                    &key.key,
                )
                .map_err(|e| e.to_string())?;
                tracing::info!("IdP-initiated SAML logout answered");
                Ok(SloOutcome::RespondToIdp(url))
            }
        }
    }
}
