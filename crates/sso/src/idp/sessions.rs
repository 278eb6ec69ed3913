//! idbridge's own sign-in session ("remember this browser") and its single logout; the one
//! owner of [`BROWSER_SESSIONS`] and [`SESSION_INDEXES`].
//!
//! - A directory-mode login whose user ticks "remember this browser" (offered only while the
//!   IdP setting `remember_browser_ttl_secs` is above zero) creates a browser session in the
//!   same commit that finishes the login. The browser holds an opaque secret in a cookie; the
//!   store holds only its digest, the organization, the directory and the user's idp_id.
//! - A later SP-initiated login of the same organization and directory, from that browser,
//!   needs no password: the user is looked up again in idbridge's synced copy of the directory
//!   on every use, so a disabled or removed user's session stops working at once (and is
//!   deleted).
//! - Each assertion issued under a browser session gets a SessionIndex recorded for its SP
//!   alone. A LogoutRequest (SAML single logout) from a registered SP must verify with that
//!   SP's signing certificate (an SP without one cannot use single logout), must name a
//!   SessionIndex idbridge issued to THAT SP, and is single use; it ends the browser session
//!   and is answered with a signed LogoutResponse to the SP's registered SLO URL (never a URL
//!   from the request). `POST /idp/{org}/logout` ends the session of the browser itself.

use std::time::Duration;

use chrono::Utc;
use idbridge_saml::slo::{logout_response_xml, signed_redirect, STATUS_SUCCESS};
use idbridge_saml::xml::{self, Limits, NS_ASSERTION};
use idbridge_saml::{verify_slo_post, verify_slo_redirect, SloContext, SloMessage};
use idbridge_secrets::{random_token, sha256_hex};
use idbridge_store::ChangeSet;
use openssl::x509::X509;
use serde::{Deserialize, Serialize};

use super::service_providers::ServiceProvider;
use super::source::AuthenticatedSubject;
use crate::db::{self, now_ms, ttl_ms};
use crate::login::Logins;
use crate::SsoService;

/// Expiring: `<sha256 hex of the browser secret>` → [`BrowserSession`].
pub const BROWSER_SESSIONS: &str = "idp_browser_sessions";
/// Expiring: `<sp id>/<sha256 hex of a SessionIndex>` → the browser session's digest: which
/// session an SP's LogoutRequest may end.
pub const SESSION_INDEXES: &str = "idp_browser_session_indexes";

/// `urn:oasis:names:tc:SAML:2.0:status:Requester`: the LogoutRequest named no session idbridge
/// gave that SP (nothing was ended).
const STATUS_REQUESTER: &str = "urn:oasis:names:tc:SAML:2.0:status:Requester";
/// How far a LogoutRequest's IssueInstant may be off.
const SLO_CLOCK_SKEW: Duration = Duration::from_secs(180);
/// How old a LogoutRequest may be (beyond the skew); also its replay-cache lifetime.
const SLO_MAX_AGE: Duration = Duration::from_secs(600);

/// A remembered sign-in of one browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrowserSession {
    pub organization_id: String,
    /// The directory the password was checked against; the session serves only SPs that
    /// authenticate with this directory.
    pub directory_id: String,
    /// The user's stable id in that directory (objectGUID / entryUUID).
    pub idp_id: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// The browser session a login is finished under: a new one (created in the login's commit)
/// or one the browser already had.
#[derive(Debug, Clone)]
pub struct BrowserLink {
    digest: String,
    expires_at_ms: i64,
    /// Set for a new session: the cookie value and the record to store.
    new: Option<(String, BrowserSession)>,
}

/// A new browser session's cookie, for the HTTP layer to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RememberCookie {
    pub secret: String,
    pub ttl: Duration,
}

impl BrowserLink {
    /// A new session for a user who proved their password against `directory_id`.
    pub(crate) fn create(org_id: &str, directory_id: &str, idp_id: &str, ttl: Duration) -> Self {
        let secret = random_token(32);
        let now = now_ms();
        let record = BrowserSession {
            organization_id: org_id.to_owned(),
            directory_id: directory_id.to_owned(),
            idp_id: idp_id.to_owned(),
            created_at_ms: now,
            expires_at_ms: now + ttl_ms(ttl),
        };
        BrowserLink {
            digest: sha256_hex(&secret),
            expires_at_ms: record.expires_at_ms,
            new: Some((secret, record)),
        }
    }

    /// The cookie to set, for a new session.
    pub fn cookie(&self) -> Option<RememberCookie> {
        self.new.as_ref().map(|(secret, r)| RememberCookie {
            secret: secret.clone(),
            ttl: Duration::from_millis(
                u64::try_from((r.expires_at_ms - r.created_at_ms).max(0)).unwrap_or(0),
            ),
        })
    }

    /// Stages the new session (if any) and, for a SAML assertion, the SessionIndex the SP
    /// `sp_id` may later name in a LogoutRequest.
    pub(crate) fn stage(
        &self,
        cs: &mut ChangeSet,
        session_index: Option<(&str, &str)>,
    ) -> crate::SsoResult<()> {
        if let Some((_, record)) = &self.new {
            cs.put_expiring(
                BROWSER_SESSIONS,
                self.digest.clone(),
                db::to_json(record)?,
                self.expires_at_ms,
            );
        }
        if let Some((sp_id, index)) = session_index {
            cs.put_expiring(
                SESSION_INDEXES,
                index_key(sp_id, index),
                self.digest.as_bytes().to_vec(),
                self.expires_at_ms,
            );
        }
        Ok(())
    }
}

fn index_key(sp_id: &str, session_index: &str) -> String {
    format!("{sp_id}/{}", sha256_hex(session_index))
}

/// How a LogoutRequest arrived at `/idp/{org}/saml/slo`.
#[derive(Debug, Clone)]
pub enum SloBinding {
    /// The raw query string (still URL-encoded: the signature covers it).
    Redirect { raw_query: String },
    /// The form's `SAMLRequest` and `RelayState`.
    Post {
        saml_request: Option<String>,
        relay_state: Option<String>,
    },
}

/// What the SLO endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SloOutcome {
    /// Redirect the browser to the SP's registered SLO URL with the signed LogoutResponse;
    /// `ended`: a session was ended (clear the browser's session cookie).
    Respond { location: String, ended: bool },
    /// Our own error page: the request is not one to answer.
    Error { status: u16, message: String },
}

fn slo_error(status: u16, message: impl Into<String>) -> SloOutcome {
    SloOutcome::Error {
        status,
        message: message.into(),
    }
}

/// The unverified Issuer of a logout message (it only picks whose certificates verify it).
fn peek_issuer(binding: &SloBinding) -> Option<String> {
    let xml_text = match binding {
        SloBinding::Redirect { raw_query } => {
            let b64 = url::form_urlencoded::parse(raw_query.as_bytes())
                .find(|(k, _)| k == "SAMLRequest")
                .map(|(_, v)| v.into_owned())?;
            idbridge_saml::sp::decode_redirect_binding(&b64).ok()?
        }
        SloBinding::Post {
            saml_request: Some(b64),
            ..
        } => idbridge_saml::verify::decode_post_binding(b64).ok()?,
        SloBinding::Post { .. } => return None,
    };
    let root = xml::parse(&xml_text, &Limits::MESSAGE).ok()?;
    root.child(NS_ASSERTION, "Issuer")
        .map(|e| e.text().trim().to_owned())
        .filter(|s| !s.is_empty())
}

impl SsoService {
    /// The live browser session named by a cookie, for a login of `org_id` whose SP
    /// authenticates with `directory_id`, and the user it stands for: looked up again in the
    /// synced directory, so a disabled or removed user is refused (and the session deleted).
    /// `None` when the browser has to sign in with a password.
    pub(crate) async fn resume_browser_session(
        &self,
        secret: &str,
        org_id: &str,
        directory_id: &str,
    ) -> Option<(BrowserLink, AuthenticatedSubject)> {
        if !super::login::valid_token(secret) {
            return None;
        }
        let digest = sha256_hex(secret);
        let record: BrowserSession =
            match self.store.get_expiring(BROWSER_SESSIONS, &digest, now_ms()) {
                Ok(Some(b)) => db::decode(BROWSER_SESSIONS, "session", &b).ok()?,
                Ok(None) => return None,
                Err(e) => {
                    tracing::error!(error = %e, "store read failed");
                    return None;
                }
            };
        // Another organization's (or another directory's) session proves nothing here.
        if record.organization_id != org_id || record.directory_id != directory_id {
            return None;
        }
        match self.directory_user(directory_id, &record.idp_id) {
            Ok((user, groups)) => Some((
                BrowserLink {
                    digest,
                    expires_at_ms: record.expires_at_ms,
                    new: None,
                },
                AuthenticatedSubject::from_directory_user(org_id, directory_id, &user, groups),
            )),
            Err(reason) => {
                tracing::info!(reason, "remembered browser session refused; ended");
                self.end_browser_session_digest(&digest).await;
                None
            }
        }
    }

    async fn end_browser_session_digest(&self, digest: &str) {
        let mut cs = ChangeSet::new();
        cs.delete_expiring(BROWSER_SESSIONS, digest);
        if let Err(e) = db::commit(&self.store, cs).await {
            tracing::error!(error = %e, "ending a browser session failed");
        }
    }

    /// `POST /idp/{org}/logout`: ends the browser's own session (if it is this
    /// organization's). Answers whether one was ended.
    pub async fn idp_logout(&self, org_id: &str, secret: Option<&str>) -> bool {
        let Some(secret) = secret.filter(|s| super::login::valid_token(s)) else {
            return false;
        };
        let digest = sha256_hex(secret);
        let live = match self.store.get_expiring(BROWSER_SESSIONS, &digest, now_ms()) {
            Ok(Some(b)) => db::decode::<BrowserSession>(BROWSER_SESSIONS, "session", &b)
                .ok()
                .filter(|r| r.organization_id == org_id),
            _ => None,
        };
        if live.is_none() {
            return false;
        }
        self.end_browser_session_digest(&digest).await;
        tracing::info!("idbridge browser session ended by its user");
        true
    }

    /// The SAML SingleLogoutService of an organization's IdP: a registered SP's signed
    /// LogoutRequest ends the browser session it names, answered with a signed LogoutResponse
    /// to the SP's registered SLO URL.
    #[tracing::instrument(name = "idp.slo", skip_all, fields(organization_id = %org_id))]
    pub async fn idp_single_logout(&self, org_id: &str, binding: SloBinding) -> SloOutcome {
        if let Some(super::login::SsoOutcome::Error { status, message }) =
            self.unknown_idp_organization(org_id)
        {
            return slo_error(status, message);
        }
        let Some(issuer) = peek_issuer(&binding) else {
            return slo_error(400, "This endpoint takes a SAML LogoutRequest (SAMLRequest) from a registered service provider; none was readable.");
        };
        let sp = match self.idp.service_providers.by_entity_id(org_id, &issuer) {
            Ok(Some(sp)) => sp,
            Ok(None) => {
                return slo_error(
                    400,
                    format!("The service provider {issuer:?} is not registered with this organization's identity provider."),
                )
            }
            Err(e) => {
                tracing::error!(error = %e, "store read failed");
                return slo_error(503, "Try again later.");
            }
        };
        let Some(slo_url) = sp.slo_url.clone() else {
            return slo_error(400, "This service provider has no single logout URL registered (slo_url); its administrator must add one before it can log users out.");
        };
        let message = match self.verify_logout_request(org_id, &sp, &binding) {
            Ok(m) => m,
            Err(outcome) => return outcome,
        };
        let SloMessage::Request {
            id,
            session_indexes,
            relay_state,
            ..
        } = message
        else {
            return slo_error(400, "Only a LogoutRequest is accepted here.");
        };
        let now = now_ms();
        let mut cs = ChangeSet::new();
        Logins::stage_replay(
            &mut cs,
            &format!("idp-slo/{}/{id}", sp.id),
            now + ttl_ms(SLO_MAX_AGE + SLO_CLOCK_SKEW),
            now,
        );
        let mut ended = false;
        for index in &session_indexes {
            let key = index_key(&sp.id, index);
            match self.store.get_expiring(SESSION_INDEXES, &key, now) {
                Ok(Some(digest)) => {
                    let digest = String::from_utf8_lossy(&digest).into_owned();
                    cs.delete_expiring(SESSION_INDEXES, key);
                    cs.delete_expiring(BROWSER_SESSIONS, digest);
                    ended = true;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "store read failed");
                    return slo_error(503, "Try again later.");
                }
            }
        }
        match db::commit(&self.store, cs).await {
            Ok(_) => {}
            Err(e) if Logins::is_replay(&e) => {
                return slo_error(400, "This LogoutRequest was already used.")
            }
            Err(e) => {
                tracing::error!(error = %e, "ending the browser session failed");
                return slo_error(503, "Try again later.");
            }
        }
        tracing::info!(sp = %sp.id, ended, "IdP single logout");
        metrics::counter!("idbridge_idp_logouts_total", "ended" => if ended { "true" } else { "false" })
            .increment(1);
        let status = if ended {
            STATUS_SUCCESS
        } else {
            STATUS_REQUESTER
        };
        match self
            .signed_logout_response(org_id, &slo_url, &id, status, relay_state.as_deref())
            .await
        {
            Ok(location) => SloOutcome::Respond { location, ended },
            Err(e) => {
                tracing::error!(error = %e, "building the LogoutResponse failed");
                slo_error(
                    500,
                    "The answer to the service provider could not be built.",
                )
            }
        }
    }

    /// Verifies a LogoutRequest with the SP's registered signing certificates only.
    fn verify_logout_request(
        &self,
        org_id: &str,
        sp: &ServiceProvider,
        binding: &SloBinding,
    ) -> Result<SloMessage, SloOutcome> {
        let certs = sp
            .signing_certs
            .iter()
            .map(|p| X509::from_pem(p.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                slo_error(
                    500,
                    "The service provider's registration is unusable; re-import its metadata.",
                )
            })?;
        if certs.is_empty() {
            return Err(slo_error(400, "This service provider has no signing certificate registered, so its LogoutRequest cannot be verified. Register its certificate (signing_certs or its metadata)."));
        }
        // The SP is the peer here: its entity id is the expected Issuer, its certificates
        // the only keys.
        let peer = idbridge_saml::IdpSettings {
            entity_id: sp.entity_id.clone(),
            sso_url: None,
            signing_certs: certs,
            allow_sha1: false,
            wants_signed_requests: true,
        };
        let our_slo = self.idp_urls(org_id).slo_url;
        let ctx = SloContext {
            idp: &peer,
            slo_url: &our_slo,
            now: Utc::now(),
            clock_skew: SLO_CLOCK_SKEW,
            max_age: SLO_MAX_AGE,
        };
        let verified = match binding {
            SloBinding::Redirect { raw_query } => verify_slo_redirect(raw_query, &ctx),
            SloBinding::Post {
                saml_request,
                relay_state,
            } => verify_slo_post(
                "SAMLRequest",
                saml_request.as_deref().unwrap_or_default(),
                relay_state.as_deref(),
                &ctx,
            ),
        };
        verified.map_err(|e| {
            tracing::warn!(sp = %sp.id, error = %e, "LogoutRequest refused");
            slo_error(
                400,
                format!("The LogoutRequest was refused: {e}. Nothing was logged out."),
            )
        })
    }

    async fn signed_logout_response(
        &self,
        org_id: &str,
        slo_url: &str,
        in_response_to: &str,
        status: &str,
        relay_state: Option<&str>,
    ) -> crate::SsoResult<String> {
        let key = self.idp_signing_key(org_id).await?;
        let entity = self.idp_urls(org_id).entity_id;
        let (_, xml) = logout_response_xml(&entity, slo_url, in_response_to, status)
            .map_err(crate::SsoError::internal)?;
        signed_redirect(slo_url, "SAMLResponse", &xml, relay_state, key.key())
            .map_err(crate::SsoError::internal)
    }
}
