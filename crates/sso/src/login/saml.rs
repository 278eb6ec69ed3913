//! The SAML Assertion Consumer Service (HTTP-POST binding).
//!
//! The response is verified by idbridge-saml off the async runtime. InResponseTo must be the
//! AuthnRequest id bound to this browser's login session; an unsolicited response is accepted
//! only when the connection allows IdP-initiated login, and then goes to an allow-listed
//! RelayState `redirect_uri=` or the default redirect URI. Failures never reveal why
//! verification failed (that would be an oracle).
//!
//! The replay cache is checked during verification but written by the login's one commit
//! ([`StagedReplay`]): a response that fails later leaves no entry, and two concurrent uses of
//! one assertion cannot both commit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use idbridge_saml::{ReplayCache, ResponseContext};

use super::complete::Destination;
use super::{
    error_redirect, ClientInfo, LoginOutcome, LoginReply, LoginSession, Logins, PageStatus,
};
use crate::connections::ProtocolSettings;
use crate::db::now_ms;
use crate::SsoService;

/// Time budget for one verification.
const VERIFY_BUDGET: Duration = Duration::from_secs(2);

/// A `POST /sso/saml/acs/{connection}`.
#[derive(Debug, Clone, Default)]
pub struct AcsRequest {
    pub connection_id: String,
    /// The form's `SAMLResponse` (base64).
    pub saml_response: Option<String>,
    pub relay_state: Option<String>,
    /// The value of the session cookie the RelayState names, if the browser sent one.
    pub session_id: Option<String>,
    pub client: ClientInfo,
}

/// The replay cache as verification (an SP's SAML response, or an AuthnRequest to our IdP)
/// sees it: keys live in the store are replays; new keys are collected for the login's commit,
/// which inserts them on the condition that they are still vacant, so a refused message leaves
/// no entry.
pub(crate) struct StagedReplay {
    logins: Logins,
    now: i64,
    staged: Mutex<Vec<(String, i64)>>,
}

impl StagedReplay {
    pub(crate) fn new(logins: Logins) -> Self {
        StagedReplay {
            logins,
            now: now_ms(),
            staged: Mutex::new(Vec::new()),
        }
    }

    /// The keys collected so far, with their expiry (ms), for the commit to insert.
    pub(crate) fn staged(&self) -> Option<Vec<(String, i64)>> {
        self.staged.lock().map(|s| s.clone()).ok()
    }
}

impl ReplayCache for StagedReplay {
    fn insert_if_absent(&self, key: &str, expires_at_ms: i64) -> Result<bool, String> {
        if self
            .logins
            .replay_seen(key, self.now)
            .map_err(|e| e.to_string())?
        {
            return Ok(false);
        }
        let mut staged = self
            .staged
            .lock()
            .map_err(|_| "replay cache poisoned".to_owned())?;
        if staged.iter().any(|(k, _)| k == key) {
            return Ok(false);
        }
        staged.push((key.to_owned(), expires_at_ms));
        Ok(true)
    }
}

impl SsoService {
    /// The browser's login session, when the RelayState is one of our relay keys and the
    /// cookie it names holds a live session started for it.
    fn saml_session(
        &self,
        relay: Option<&str>,
        session_id: Option<&str>,
    ) -> Option<(String, LoginSession)> {
        let key = relay.filter(|k| super::valid_relay_key(k))?;
        let sid = session_id?;
        let session = self.logins.session(sid, now_ms()).ok()??;
        (session.relay_key == key).then(|| (sid.to_owned(), session))
    }

    /// Handles a SAML response: verifies it, and finishes or fails the login.
    #[tracing::instrument(name = "sso.saml_acs", skip_all, fields(connection_id = %req.connection_id))]
    pub async fn saml_acs(&self, req: AcsRequest) -> LoginOutcome {
        let page = |status, code, message| LoginOutcome {
            reply: LoginReply::page(status, code, message),
            clear_cookie: None,
        };
        let Some(saml_response) = req.saml_response else {
            return page(
                PageStatus::BadRequest,
                "invalid_request",
                "SAMLResponse is missing.",
            );
        };
        let conn_id = req.connection_id;
        let record = match self.connections.get(&conn_id) {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => {
                return page(
                    PageStatus::NotFound,
                    "connection_invalid",
                    "Unknown connection.",
                )
            }
        };
        let ProtocolSettings::Saml(saml) = &record.protocol else {
            return page(
                PageStatus::NotFound,
                "connection_invalid",
                "Not a SAML connection.",
            );
        };
        let session = self.saml_session(req.relay_state.as_deref(), req.session_id.as_deref());
        let clear_cookie = session.as_ref().map(|(_, s)| s.relay_key.clone());
        let with_cookie = |reply| LoginOutcome {
            reply,
            clear_cookie: clear_cookie.clone(),
        };

        let mut dest = match &session {
            Some((sid, s)) => Destination {
                client_id: s.client_id.clone(),
                redirect_uri: s.redirect_uri.clone(),
                state: s.state.clone(),
                code_challenge: s.code_challenge.clone(),
                client: req.client.clone(),
                session_id: Some(sid.clone()),
                replay: Vec::new(),
                saml_subject: None,
            },
            None => {
                // Unsolicited (IdP-initiated).
                let config = self.config();
                let allowed: Vec<&str> = config
                    .redirect_uris
                    .iter()
                    .filter(|u| !u.contains('*'))
                    .map(String::as_str)
                    .collect();
                let target = req
                    .relay_state
                    .as_deref()
                    .and_then(|rs| idbridge_saml::relay_state_redirect(rs, &allowed))
                    .or_else(|| config.default_redirect());
                let Some(target) = target else {
                    return page(
                        PageStatus::BadRequest,
                        "idp_initiated_sso_disabled",
                        "No login is in progress in this browser and no default redirect URI is configured.",
                    );
                };
                if !saml.allow_idp_initiated {
                    let org = record.connection.organization_id.clone();
                    return with_cookie(error_redirect(
                        &target,
                        "idp_initiated_sso_disabled",
                        "IdP-initiated SSO is disabled for this connection.",
                        None,
                        &[
                            ("connection", Some(&conn_id)),
                            ("organization", org.as_deref()),
                        ],
                    ));
                }
                let client_id = match self.client_id() {
                    Ok(Some(c)) => c,
                    _ => return page(PageStatus::Unavailable, "server_error", "Try again later."),
                };
                Destination {
                    client_id,
                    redirect_uri: target,
                    state: None,
                    code_challenge: None,
                    client: req.client.clone(),
                    session_id: None,
                    replay: Vec::new(),
                    saml_subject: None,
                }
            }
        };
        if let Some((_, s)) = &session {
            if s.connection_id != conn_id {
                // A session for another connection: not the response this browser asked for.
                dest.code_challenge = None;
                let reply = self
                    .fail_login(
                        &record,
                        &dest,
                        "server_error",
                        "The SAML response does not match the login.",
                        None,
                    )
                    .await;
                return with_cookie(reply);
            }
        }
        let expected = session
            .as_ref()
            .and_then(|(_, s)| s.saml_request_id.clone());
        let settings = saml
            .sp_settings(&conn_id, self.settings.secrets.as_ref())
            .and_then(|sp| Ok((sp, saml.idp_settings()?)));
        let (sp, idp) = match settings {
            Ok(both) => both,
            Err(e) => {
                tracing::error!(error = %e, "cannot load the connection's SAML settings");
                let reply = self
                    .fail_login(
                        &record,
                        &dest,
                        "server_error",
                        "The connection is misconfigured.",
                        None,
                    )
                    .await;
                return with_cookie(reply);
            }
        };
        let ctx = ResponseContext {
            expected_in_response_to: expected,
            now: chrono::Utc::now(),
        };
        let replay = Arc::new(StagedReplay::new(self.logins.clone()));
        let verified = idbridge_saml::verify_post(
            saml_response,
            req.relay_state,
            ctx,
            Arc::new(sp),
            Arc::new(idp),
            replay.clone(),
            VERIFY_BUDGET,
        )
        .await;
        let assertion = match verified {
            Ok(a) => a,
            Err(e) => {
                // Details stay in the log: the browser learns only that the login failed.
                tracing::warn!(error = %e, "SAML response rejected");
                let reply = self
                    .fail_login(
                        &record,
                        &dest,
                        "server_error",
                        "The SAML response could not be verified.",
                        None,
                    )
                    .await;
                return with_cookie(reply);
            }
        };
        let staged = replay.staged();
        dest.replay = match staged {
            Some(staged) => staged,
            None => {
                let reply = self
                    .fail_login(
                        &record,
                        &dest,
                        "server_error",
                        "The login could not be completed.",
                        None,
                    )
                    .await;
                return with_cookie(reply);
            }
        };
        dest.saml_subject = Some(super::SamlSubject {
            name_id: assertion.name_id.clone(),
            name_id_format: assertion.name_id_format.clone(),
            session_index: assertion.session_index.clone(),
        });
        let identity = idbridge_saml::map_profile(&assertion, &saml.attribute_map);
        let reply = self.complete_login(&record, identity, &dest).await;
        with_cookie(reply)
    }
}
