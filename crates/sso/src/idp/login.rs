//! The IdP login, in two steps; the one owner of [`IDP_SESSIONS`].
//!
//! 1. [`SsoService::idp_sso`]: an AuthnRequest arrives (HTTP-Redirect or HTTP-POST). Its
//!    unverified Issuer only picks the organization's registered SP; the part-1 intake then
//!    verifies it with that SP's certificates and checks every rule (ACS registered, IssueInstant
//!    window, Destination, signed when required) and the request id goes into the replay cache
//!    in the same commit that stores the IdP login session. The browser gets the login page,
//!    a session cookie (the session secret; only its digest is stored) and a CSRF token bound
//!    to the session.
//! 2. [`SsoService::idp_password_login`]: the login form. The session named by the cookie must
//!    be live and of this organization, the CSRF token must match, the account and the client
//!    address must be under their attempt limits; the password is checked by binding as the user
//!    against the SP's directory, the user must exist and be active in idbridge's synced copy of
//!    that directory. Every refusal of the credentials shows one message and takes at least
//!    [`super::IdpConfig::failure_floor`]. Success takes the session (single use: one commit)
//!    and answers a signed assertion in an auto-submitting form to the REGISTERED ACS.
//!
//! Failures before the SP and its ACS are trusted end on our own error page; never on a URL or
//! RelayState from the request (RelayState is only echoed to the registered ACS).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use idbridge_ldap::{BindAuthError, LdapSettings, LoginLookup, Password};
use idbridge_model::{Event, EventKind, UserState};
use idbridge_saml::idp::response::name_id_format;
use idbridge_saml::idp::{
    build_login_response, build_status_response, post_form, status, AcceptedRequest,
    AssertionEncryption, IdpError, LoginResponse, NameId, PostField, PostForm, ReceivedRequest,
    RequestContext, ResponseOptions, SamlAttribute, SpErrorResponse, UserAttributes,
};
use idbridge_secrets::{random_token, sha256_hex};
use idbridge_store::{ChangeSet, ConflictKind, StoreError};
use openssl::x509::X509;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::service_providers::{AuthSource, ServiceProvider};
use super::sessions::{BrowserLink, RememberCookie};
use super::source::AuthenticatedSubject;
use crate::db::{self, now_ms, ttl_ms};
use crate::login::saml::StagedReplay;
use crate::login::{ClientInfo, Logins};
use crate::SsoService;

/// Expiring: `<sha256 hex of the session secret>` → [`IdpLoginSession`].
pub const IDP_SESSIONS: &str = "idp_login_sessions";

/// The one message for every refused password, unknown user or disabled account.
pub const BAD_CREDENTIALS: &str = "The username or password is incorrect.";

/// A SAML login waiting for its user: whom the assertion goes to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SamlPending {
    pub service_provider_id: String,
    /// The AuthnRequest id (InResponseTo); `None` for an IdP-initiated (unsolicited) login.
    pub request_id: Option<String>,
    /// The registered ACS the answer goes to.
    pub acs_url: String,
    pub relay_state: Option<String>,
}

/// The protocol request a login session waits with; each protocol renders its answer from
/// the [`AuthenticatedSubject`] the login ends in.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "protocol", rename_all = "snake_case")]
pub enum PendingRequest {
    /// A verified AuthnRequest (or an IdP-initiated start) of a registered SP.
    Saml(SamlPending),
    /// A validated OIDC authorization request of a registered client.
    Oidc(super::oidc::PendingAuthorization),
}

/// The party a login is for (an SP or an OIDC client), as the login page needs it.
#[derive(Debug, Clone)]
pub struct RelyingParty {
    pub id: String,
    pub organization_id: String,
    /// Shown on the login page.
    pub name: String,
    pub auth_source: Option<AuthSource>,
}

/// A finished login's answer.
#[derive(Debug, Clone)]
pub enum Finished {
    /// SAML: the signed Response in an auto-submitting form to the registered ACS.
    Assertion(PostForm),
    /// OIDC: the redirect to the registered redirect URI with the code.
    Redirect(String),
}

/// What the SSO endpoint leaves for the login form, bound to one browser.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdpLoginSession {
    pub organization_id: String,
    pub request: PendingRequest,
    /// SHA-256 hex of the CSRF token of the login form.
    pub csrf_digest: String,
    /// The cookie's name suffix (parallel logins in one browser do not collide).
    pub key: String,
    /// Broker mode: the upstream connection this login was sent to (the only one whose
    /// profile may finish it).
    #[serde(default)]
    pub broker_connection_id: Option<String>,
}

impl PendingRequest {
    /// `saml` or `oidc`: the `protocol` of events and of the login metrics.
    pub fn protocol(&self) -> &'static str {
        match self {
            PendingRequest::Saml(_) => "saml",
            PendingRequest::Oidc(_) => "oidc",
        }
    }
}

impl IdpLoginSession {
    /// The SAML request this session waits with, if it is a SAML login.
    pub fn saml(&self) -> Option<&SamlPending> {
        match &self.request {
            PendingRequest::Saml(p) => Some(p),
            PendingRequest::Oidc(_) => None,
        }
    }
}

impl SamlPending {
    /// The signed SAML error answer (`Responder` / `AuthnFailed`) to this login's pending
    /// request, for its registered ACS: the user could not be authenticated.
    pub(crate) fn authn_failed(&self, sp_entity_id: &str, message: &str) -> SpErrorResponse {
        SpErrorResponse {
            sp_entity_id: sp_entity_id.to_owned(),
            acs_url: self.acs_url.clone(),
            in_response_to: self.request_id.clone().unwrap_or_default(),
            status: status::RESPONDER,
            sub_status: Some(status::AUTHN_FAILED),
            message: message.to_owned(),
            relay_state: self.relay_state.clone(),
        }
    }
}

/// How the AuthnRequest arrived.
#[derive(Debug, Clone)]
pub enum SsoBinding {
    /// The raw query string (after `?`, still URL-encoded: the signature covers it).
    Redirect { raw_query: String },
    /// The form's `SAMLRequest` and `RelayState`.
    Post {
        saml_request: Option<String>,
        relay_state: Option<String>,
    },
}

/// A request to the SSO endpoint.
#[derive(Debug, Clone)]
pub struct SsoRequest {
    pub organization_id: String,
    pub binding: SsoBinding,
    pub client: ClientInfo,
    /// The browser's idbridge session cookie ("remember this browser"), if it sent one.
    pub browser_session: Option<String>,
}

/// The login page to show (HTML belongs to the HTTP crate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpPage {
    pub organization_id: String,
    /// The SP's display name.
    pub service_provider: String,
    /// The session's cookie name suffix, also a hidden form field.
    pub key: String,
    /// The CSRF token (hidden form field).
    pub csrf: String,
    /// A message to show (refusals, limits).
    pub message: Option<String>,
    /// A login name to fill in again.
    pub login: Option<String>,
    /// Show the "remember this browser" checkbox (the IdP setting is above zero).
    pub offer_remember: bool,
}

/// What the SSO endpoint answers.
#[derive(Debug, Clone)]
pub enum SsoOutcome {
    /// Show the login page and set the session cookie (`key`, `session`, lifetime).
    Login {
        page: IdpPage,
        session: String,
        ttl: Duration,
    },
    /// A SAML error Response to the SP's registered ACS (auto-submitting form).
    Post(PostForm),
    /// Broker mode: send the browser to the upstream IdP, setting the IdP login session's
    /// cookie (`key`, `session`) and the upstream login's cookie (`upstream`).
    Upstream {
        key: String,
        session: String,
        ttl: Duration,
        upstream: crate::login::Authorization,
    },
    /// Our own error page: the request cannot be trusted enough to answer the SP.
    Error { status: u16, message: String },
}

/// The login form, posted.
#[derive(Debug, Clone)]
pub struct PasswordLogin {
    pub organization_id: String,
    /// The `key` form field (names the cookie).
    pub key: Option<String>,
    /// The cookie's value.
    pub session: Option<String>,
    pub csrf: Option<String>,
    pub login: String,
    pub password: Password,
    pub client: ClientInfo,
    /// The "remember this browser" checkbox was ticked.
    pub remember: bool,
}

/// Why an IdP login could not be finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishError {
    /// The login session expired or another request finished it first.
    SessionGone,
    /// Our own error page.
    Failed { status: u16, message: &'static str },
}

/// What the login form's POST answers.
#[derive(Debug, Clone)]
pub enum PasswordOutcome {
    /// The signed assertion, posted to the registered ACS; clear the cookie named by `key`
    /// (and set `remember`'s browser-session cookie, when the user asked for one).
    Assertion {
        form: PostForm,
        key: String,
        remember: Option<RememberCookie>,
    },
    /// Redirect the browser (an OIDC authorization response); clear the cookie named by `key`.
    Redirect {
        location: String,
        key: String,
        remember: Option<RememberCookie>,
    },
    /// Show the page again with a message (`status`: 401 refused, 429 limited).
    Retry { status: u16, page: IdpPage },
    /// Our own error page (no live session, CSRF mismatch, ...).
    Error { status: u16, message: String },
}

pub(crate) fn error(status: u16, message: impl Into<String>) -> SsoOutcome {
    SsoOutcome::Error {
        status,
        message: message.into(),
    }
}

fn login_error(status: u16, message: impl Into<String>) -> PasswordOutcome {
    PasswordOutcome::Error {
        status,
        message: message.into(),
    }
}

/// Cookie keys and CSRF tokens are ours: URL-safe base64 of 16 or 32 random bytes.
pub(crate) fn valid_token(t: &str) -> bool {
    (16..=64).contains(&t.len())
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// What the intake's refusal says on our error page (what went wrong and what to do).
fn refusal_message(e: &IdpError) -> String {
    match e {
        IdpError::Signature(_) => "The AuthnRequest's signature does not verify with the service provider's registered certificate. Check the SP's signing key, or re-import its metadata.".into(),
        IdpError::Replay => "This AuthnRequest was already used. Start the login again from the application.".into(),
        IdpError::ReplayCache(_) => "The login cannot be checked right now. Try again later.".into(),
        other => format!("{other}. Start the login again from the application, or ask its administrator to check the service provider's registration."),
    }
}

impl SsoService {
    /// Stores a new IdP login session (with the request's replay-cache entries, in one
    /// commit); or the error page to show.
    ///
    /// The commit does not wait for its fdatasync (one sync wait less per login). Why the
    /// rules still hold: readers (the replay check of the next AuthnRequest, the login form)
    /// see the commit at once, so replays are refused as before while the server runs. A
    /// crash before the sync can lose the session and its replay entry; the browser then
    /// starts over, and a replayed request can start a new login, but at most one assertion
    /// (or code) is ever issued per request: every login ends in
    /// [`SsoService::finish_idp_login`], whose durable commit takes the session (single use)
    /// and, being later in the same write-ahead log, makes this commit durable before any
    /// answer is sent.
    pub(crate) async fn store_idp_session(
        &self,
        session: &IdpLoginSession,
        secret: &str,
        replay: &[(String, i64)],
    ) -> Result<(), SsoOutcome> {
        let ttl = self.idp_config().login_ttl;
        let now = now_ms();
        let mut cs = ChangeSet::new();
        let bytes = db::to_json(session).map_err(|e| {
            tracing::error!(error = %e, "session encoding failed");
            error(500, "The login could not be started.")
        })?;
        cs.put_expiring(IDP_SESSIONS, sha256_hex(secret), bytes, now + ttl_ms(ttl));
        for (k, exp) in replay {
            Logins::stage_replay(&mut cs, k, *exp, now);
        }
        match db::commit_unsynced(&self.store, cs).await {
            Ok(_) => Ok(()),
            Err(e) if Logins::is_replay(&e) => Err(error(400, refusal_message(&IdpError::Replay))),
            Err(e) => {
                tracing::error!(error = %e, "storing the IdP login session failed");
                Err(error(
                    503,
                    "The login could not be started. Try again later.",
                ))
            }
        }
    }

    pub(crate) fn idp_session(
        &self,
        secret: &str,
        now: i64,
    ) -> Result<Option<IdpLoginSession>, StoreError> {
        match self
            .store
            .get_expiring(IDP_SESSIONS, &sha256_hex(secret), now)?
        {
            Some(b) => db::decode(IDP_SESSIONS, "session", &b).map(Some),
            None => Ok(None),
        }
    }

    /// A signed SAML error Response to the registered ACS of an accepted request.
    pub(crate) async fn status_post(
        &self,
        org_id: &str,
        e: idbridge_saml::idp::SpErrorResponse,
    ) -> SsoOutcome {
        let key = match self.idp_signing_key(org_id).await {
            Ok(k) => k,
            Err(err) => {
                tracing::error!(error = %err, "IdP signing key unavailable");
                return error(
                    503,
                    "The identity provider cannot sign right now. Try again later.",
                );
            }
        };
        let entity = self.idp_urls(org_id).entity_id;
        match build_status_response(&e, &entity, &key, Utc::now(), true) {
            Ok(r) => SsoOutcome::Post(post_form(
                &e.acs_url,
                PostField::SamlResponse,
                &r.to_base64(),
                e.relay_state.as_deref(),
            )),
            Err(err) => {
                tracing::error!(error = %err, "building a SAML error response failed");
                error(
                    500,
                    "The answer to the service provider could not be built.",
                )
            }
        }
    }

    /// The password checker of a directory, reusing its LDAP connections while the
    /// directory's settings stay the same (a change starts over with new connections).
    fn idp_authenticator(
        &self,
        directory_id: &str,
        settings: LdapSettings,
    ) -> Arc<idbridge_ldap::BindAuthenticator> {
        let mut all = self
            .idp
            .authenticators
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match all.get(directory_id) {
            Some(a) if *a.settings() == settings => a.clone(),
            _ => {
                let a = Arc::new(idbridge_ldap::BindAuthenticator::new(settings));
                all.insert(directory_id.to_owned(), a.clone());
                a
            }
        }
    }

    pub(crate) async fn idp_signing_key(
        &self,
        org_id: &str,
    ) -> crate::SsoResult<idbridge_saml::idp::IdpSigningKey> {
        let set = self.idp_key_set(org_id).await?;
        let current = set
            .keys
            .first()
            .map(|k| k.key_sealed.clone())
            .unwrap_or_default();
        let cached = self
            .idp
            .signing_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(org_id)
            .filter(|(sealed, _)| *sealed == current)
            .map(|(_, key)| key.clone());
        if let Some(key) = cached {
            return Ok(key);
        }
        let key = self.open_idp_key(org_id, &set)?;
        self.idp
            .signing_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(org_id.to_owned(), (current, key.clone()));
        Ok(key)
    }

    /// The IdP metadata of an organization (generating its signing key on first use).
    pub async fn idp_metadata(&self, org_id: &str) -> crate::SsoResult<String> {
        if self.organizations().get(org_id)?.is_none() {
            return Err(crate::SsoError::not_found("Organization", org_id));
        }
        let set = self.idp_key_set(org_id).await?;
        let certs = set
            .keys
            .iter()
            .map(|k| X509::from_pem(k.cert_pem.as_bytes()).map_err(crate::SsoError::internal))
            .collect::<crate::SsoResult<Vec<_>>>()?;
        let refs: Vec<&X509> = certs.iter().collect();
        let urls = self.idp_urls(org_id);
        let m = idbridge_saml::idp::IdpMetadata {
            entity_id: &urls.entity_id,
            sso_redirect_url: &urls.sso_url,
            sso_post_url: &urls.sso_url,
            slo_url: Some(&urls.slo_url),
            signing_certs: &refs,
            name_id_formats: &[
                name_id_format::EMAIL,
                name_id_format::PERSISTENT,
                name_id_format::UNSPECIFIED,
            ],
            want_authn_requests_signed: false,
        };
        idbridge_saml::idp::idp_metadata_xml(&m, None).map_err(crate::SsoError::internal)
    }

    /// Our error page when `org_id` names no organization (or the store cannot tell).
    pub(crate) fn unknown_idp_organization(&self, org_id: &str) -> Option<SsoOutcome> {
        match self.organizations().get(org_id) {
            Ok(Some(_)) => None,
            Ok(None) => Some(error(
                404,
                "Unknown organization: this identity provider URL is not one of idbridge's.",
            )),
            Err(e) => {
                tracing::error!(error = %e, "store read failed");
                Some(error(503, "Try again later."))
            }
        }
    }

    /// The SSO endpoint: takes an AuthnRequest and answers the login page (or an error).
    #[tracing::instrument(name = "idp.sso", skip_all, fields(organization_id = %req.organization_id))]
    pub async fn idp_sso(&self, req: SsoRequest) -> SsoOutcome {
        let org_id = req.organization_id.as_str();
        if let Some(refused) = self.unknown_idp_organization(org_id) {
            return refused;
        }
        let received = match &req.binding {
            SsoBinding::Redirect { raw_query } => ReceivedRequest::from_redirect_query(raw_query),
            SsoBinding::Post {
                saml_request: Some(r),
                relay_state,
            } => ReceivedRequest::from_post(r, relay_state.as_deref()),
            SsoBinding::Post {
                saml_request: None, ..
            } => return error(400, "SAMLRequest is missing: this endpoint takes a SAML AuthnRequest from a service provider."),
        };
        let received = match received {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(error = %e, "AuthnRequest refused at intake");
                return error(400, refusal_message(&e));
            }
        };
        let Some(issuer) = received.issuer().map(str::to_owned) else {
            return error(
                400,
                "The AuthnRequest has no Issuer, so its service provider cannot be identified.",
            );
        };
        let sp = match self.idp.service_providers.by_entity_id(org_id, &issuer) {
            Ok(Some(sp)) => sp,
            Ok(None) => {
                tracing::info!(%issuer, "AuthnRequest from an unregistered service provider");
                return error(
                    400,
                    format!("The service provider {issuer:?} is not registered with this organization's identity provider. Its administrator must register it (POST /admin/service_providers) before users can sign in."),
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "store read failed");
                return error(503, "Try again later.");
            }
        };
        let registered = match sp.registered() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, sp = %sp.id, "unusable SP registration");
                return error(
                    500,
                    "The service provider's registration is unusable; re-import its metadata.",
                );
            }
        };
        let urls = self.idp_urls(org_id);
        let sso_urls = [urls.sso_url.as_str()];
        let ctx = RequestContext::new(&sso_urls, Utc::now());
        let replay = StagedReplay::new(self.logins.clone());
        let accepted: AcceptedRequest = match received.accept(&registered, &ctx, &replay) {
            Ok(a) => a,
            Err(IdpError::RespondToSp(e)) => return self.status_post(org_id, *e).await,
            Err(e) => return error(400, refusal_message(&e)),
        };
        if sp.auth_source.is_none() {
            let e = accepted.error_response(
                status::RESPONDER,
                Some(status::REQUEST_DENIED),
                "No authentication source is configured for this service provider.",
            );
            return self.status_post(org_id, e).await;
        }
        if accepted.is_passive {
            let e = accepted.error_response(
                status::RESPONDER,
                Some(status::NO_PASSIVE),
                "idbridge has no session to answer a passive request with.",
            );
            return self.status_post(org_id, e).await;
        }
        let broker_connection_id = match &sp.auth_source {
            Some(AuthSource::Broker { connection_id }) => {
                if let Err(code) = self.check_broker_connection(org_id, connection_id) {
                    tracing::warn!(sp = %sp.id, %connection_id, code, "broker connection unusable");
                    let e = accepted.error_response(
                        status::RESPONDER,
                        Some(status::REQUEST_DENIED),
                        "The service provider's upstream connection is not usable.",
                    );
                    return self.status_post(org_id, e).await;
                }
                Some(connection_id.clone())
            }
            _ => None,
        };
        let secret = random_token(32);
        let csrf = random_token(32);
        let key = random_token(16);
        let session = IdpLoginSession {
            organization_id: org_id.to_owned(),
            request: PendingRequest::Saml(SamlPending {
                service_provider_id: sp.id.clone(),
                request_id: Some(accepted.id.clone()),
                acs_url: accepted.acs.location.clone(),
                relay_state: accepted.relay_state.clone(),
            }),
            csrf_digest: sha256_hex(&csrf),
            key: key.clone(),
            broker_connection_id,
        };
        let staged = replay.staged().unwrap_or_default();
        if let Err(outcome) = self.store_idp_session(&session, &secret, &staged).await {
            return outcome;
        }
        let config = self.idp_config();
        if session.broker_connection_id.is_some() {
            return self
                .start_broker(&session, key, secret, req.client.clone())
                .await;
        }
        if let (Some(cookie), Some(AuthSource::Directory { directory_id })) =
            (req.browser_session.as_deref(), &sp.auth_source)
        {
            if let Some(outcome) = self
                .answer_from_browser_session(&session, &secret, cookie, directory_id, &req.client)
                .await
            {
                return outcome;
            }
        }
        SsoOutcome::Login {
            page: IdpPage {
                organization_id: org_id.to_owned(),
                service_provider: sp.name.clone(),
                key,
                csrf,
                message: None,
                login: accepted.subject_hint.clone(),
                offer_remember: !config.remember_browser_ttl.is_zero(),
            },
            session: secret,
            ttl: config.login_ttl,
        }
    }

    /// A login answered without a password, from the browser's remembered session (see
    /// [`super::sessions`]); `None` when the browser has to sign in.
    async fn answer_from_browser_session(
        &self,
        session: &IdpLoginSession,
        secret: &str,
        cookie: &str,
        directory_id: &str,
        client: &ClientInfo,
    ) -> Option<SsoOutcome> {
        let (link, subject) = self
            .resume_browser_session(cookie, &session.organization_id, directory_id)
            .await?;
        match self
            .finish_idp_login(session, secret, &subject, client, None, Some(&link))
            .await
        {
            Ok(Finished::Assertion(form)) => Some(SsoOutcome::Post(form)),
            Ok(Finished::Redirect(_)) => {
                tracing::error!("a SAML login session finished as an OIDC one");
                Some(error(500, "The sign-in could not be completed."))
            }
            Err(FinishError::SessionGone) => Some(error(
                400,
                "This sign-in has expired or was already used. Start the login again from the application.",
            )),
            Err(FinishError::Failed { status, message }) => Some(error(status, message)),
        }
    }

    /// The login form: checks the password against the SP's directory and answers the signed
    /// assertion.
    #[tracing::instrument(name = "idp.password_login", skip_all, fields(organization_id = %req.organization_id))]
    pub async fn idp_password_login(
        &self,
        req: PasswordLogin,
        ldap_settings: &(dyn Fn(&str) -> Option<LdapSettings> + Sync),
    ) -> PasswordOutcome {
        let started = Instant::now();
        let org_id = req.organization_id.as_str();
        let expired = "This sign-in page has expired or was already used. Start the login again from the application.";
        let (Some(key), Some(secret)) = (
            req.key.as_deref().filter(|k| valid_token(k)),
            req.session.as_deref().filter(|s| valid_token(s)),
        ) else {
            return login_error(400, expired);
        };
        let now = now_ms();
        let session = match self.idp_session(secret, now) {
            Ok(Some(s)) => s,
            Ok(None) => return login_error(400, expired),
            Err(e) => {
                tracing::error!(error = %e, "store read failed");
                return login_error(503, "Try again later.");
            }
        };
        if session.organization_id != org_id || session.key != key {
            tracing::warn!("IdP login session used on another organization's login page");
            return login_error(400, expired);
        }
        let csrf_ok = req
            .csrf
            .as_deref()
            .map(sha256_hex)
            .is_some_and(|d| bool::from(d.as_bytes().ct_eq(session.csrf_digest.as_bytes())));
        if !csrf_ok {
            tracing::warn!("IdP login form without its CSRF token");
            return login_error(403, "The sign-in form is invalid (missing or wrong security token). Reload the application and sign in again.");
        }
        let sp = match self.idp_relying_party(&session.request) {
            Ok(Some(rp)) if rp.organization_id == org_id => rp,
            Ok(_) => return login_error(
                400,
                "The application was removed from this identity provider. Ask its administrator.",
            ),
            Err(e) => {
                tracing::error!(error = %e, "store read failed");
                return login_error(503, "Try again later.");
            }
        };
        let login = req.login.trim().to_owned();
        let offer_remember = !self.idp_config().remember_browser_ttl.is_zero();
        let page = |status: u16, message: &str| PasswordOutcome::Retry {
            status,
            page: IdpPage {
                organization_id: org_id.to_owned(),
                service_provider: sp.name.clone(),
                key: key.to_owned(),
                csrf: req.csrf.clone().unwrap_or_default(),
                message: Some(message.to_owned()),
                login: Some(login.clone()).filter(|l| !l.is_empty()),
                offer_remember,
            },
        };
        let account = format!("{org_id}/{}", login.to_lowercase());
        let address = req.client.ip_address.clone().unwrap_or_default();
        let live = self.idp.live();
        let limited = live
            .account_limiter
            .check(&account)
            .err()
            .or_else(|| live.address_limiter.check(&address).err());
        if let Some(retry) = limited {
            tracing::warn!("IdP login attempt limit reached");
            self.record_failure(org_id, &sp.id, &login, &req.client, "attempt_limit")
                .await;
            let minutes = retry.secs().div_ceil(60).max(1);
            return page(
                429,
                &format!("Too many failed sign-in attempts. Wait {minutes} minute(s) and try again, or ask your administrator to check your account."),
            );
        }
        let Some(AuthSource::Directory { directory_id }) = &sp.auth_source else {
            return login_error(
                400,
                "No authentication source is configured for this service provider.",
            );
        };
        let settings = match self.directory.get_directory(directory_id) {
            Ok(d) if d.directory.organization_id == org_id => ldap_settings(directory_id),
            _ => None,
        };
        let Some(settings) = settings else {
            tracing::error!(%directory_id, "the SP's directory has no LDAP settings on this server");
            return login_error(
                503,
                "The directory is not reachable from this server. Ask your administrator.",
            );
        };
        let checked = match self
            .idp_authenticator(directory_id, settings)
            .authenticate(&LoginLookup::default(), &login, &req.password)
            .await
        {
            Ok(bound) => self.directory_user(directory_id, &bound.idp_id),
            Err(e) if e.is_user_failure() || matches!(e, BindAuthError::NoStableId(_)) => {
                Err(e.reason())
            }
            Err(e) => {
                tracing::error!(reason = e.reason(), error = %e, "directory unavailable for a password check");
                metrics::counter!("idbridge_idp_logins_total", "result" => "failed", "reason" => "directory_unavailable", "protocol" => session.request.protocol()).increment(1);
                return login_error(
                    503,
                    "The directory cannot check passwords right now. Try again later.",
                );
            }
        };
        let (user, groups) = match checked {
            Ok(found) => found,
            Err(reason) => {
                live.account_limiter.failed(&account);
                live.address_limiter.failed(&address);
                self.record_failure(org_id, &sp.id, &login, &req.client, reason)
                    .await;
                if let Some(rest) = live.config.failure_floor.checked_sub(started.elapsed()) {
                    tokio::time::sleep(rest).await;
                }
                return page(401, BAD_CREDENTIALS);
            }
        };
        live.account_limiter.succeeded(&account);
        let subject =
            AuthenticatedSubject::from_directory_user(org_id, directory_id, &user, groups);
        let ttl = live.config.remember_browser_ttl;
        let link = (req.remember && !ttl.is_zero())
            .then(|| BrowserLink::create(org_id, directory_id, &user.idp_id, ttl));
        let remember = link.as_ref().and_then(BrowserLink::cookie);
        match self
            .finish_idp_login(&session, secret, &subject, &req.client, None, link.as_ref())
            .await
        {
            Ok(Finished::Assertion(form)) => PasswordOutcome::Assertion {
                form,
                key: key.to_owned(),
                remember,
            },
            Ok(Finished::Redirect(location)) => PasswordOutcome::Redirect {
                location,
                key: key.to_owned(),
                remember,
            },
            Err(FinishError::SessionGone) => login_error(400, expired),
            Err(FinishError::Failed { status, message }) => login_error(status, message),
        }
    }

    /// The end of every IdP login, whatever the source: one commit takes the login session
    /// (single use; with `also`'s staged changes, e.g. the broker's code) and appends
    /// `idp.login_succeeded`; then the pending request is answered from the subject. Under a
    /// browser session (`browser`: new, or remembered) the same commit stores a new session
    /// and the SessionIndex the SP may later name in a LogoutRequest.
    pub(crate) async fn finish_idp_login(
        &self,
        session: &IdpLoginSession,
        secret: &str,
        subject: &AuthenticatedSubject,
        client: &ClientInfo,
        also: Option<ChangeSet>,
        browser: Option<&BrowserLink>,
    ) -> Result<Finished, FinishError> {
        let org_id = subject.organization_id.as_str();
        let mut cs = also.unwrap_or_default();
        cs.take_expiring(IDP_SESSIONS, sha256_hex(secret), now_ms());
        let gone = |status: u16, message: &'static str| FinishError::Failed { status, message };
        let mut data = serde_json::json!({
            "organization_id": org_id,
            "ip_address": client.ip_address,
            "user_agent": client.user_agent,
        });
        // What the protocol answers with, decided before the commit (an OIDC code is stored
        // in it).
        let render = match &session.request {
            PendingRequest::Saml(pending) => {
                let sp = match self.idp.service_providers.get(&pending.service_provider_id) {
                    Ok(Some(sp)) if sp.organization_id == org_id => sp,
                    Ok(_) => return Err(FinishError::SessionGone),
                    Err(e) => {
                        tracing::error!(error = %e, "store read failed");
                        return Err(gone(503, "Try again later."));
                    }
                };
                data["protocol"] = "saml".into();
                data["service_provider_id"] = sp.id.as_str().into();
                data["service_provider_entity_id"] = sp.entity_id.as_str().into();
                Err((sp, pending))
            }
            PendingRequest::Oidc(pending) => {
                data["protocol"] = "oidc".into();
                data["client_id"] = pending.client_id.as_str().into();
                match self.stage_oidc_code(&mut cs, pending, subject) {
                    Ok(location) => Ok(location),
                    Err(e) => {
                        tracing::error!(error = %e, "issuing the authorization code failed");
                        return Err(gone(
                            500,
                            "The sign-in could not be completed. Ask your administrator.",
                        ));
                    }
                }
            }
        };
        if let (Some(o), serde_json::Value::Object(who)) =
            (data.as_object_mut(), subject.event_fields())
        {
            o.extend(who);
        }
        let session_index = format!("_{}", random_token(16));
        if let Some(link) = browser {
            let index = render
                .as_ref()
                .err()
                .map(|(sp, _)| (sp.id.as_str(), session_index.as_str()));
            if let Err(e) = link.stage(&mut cs, index) {
                tracing::error!(error = %e, "staging the browser session failed");
                return Err(gone(
                    500,
                    "The sign-in could not be completed. Ask your administrator.",
                ));
            }
            data["remembered_browser"] = true.into();
        }
        cs.append_event(
            &Event::new(EventKind::IdpLoginSucceeded, data),
            Some(org_id),
        );
        match db::commit(&self.store, cs).await {
            Ok(_) => {}
            Err(StoreError::Conflict {
                kind: ConflictKind::NotLive,
                ..
            }) => return Err(FinishError::SessionGone),
            Err(e) => {
                tracing::error!(error = %e, "taking the IdP login session failed");
                return Err(FinishError::Failed {
                    status: 503,
                    message: "Try again later.",
                });
            }
        }
        let (sp, pending) = match render {
            Ok(location) => {
                tracing::info!("IdP login succeeded (OIDC)");
                metrics::counter!("idbridge_idp_logins_total", "result" => "succeeded", "reason" => "", "protocol" => "oidc").increment(1);
                return Ok(Finished::Redirect(location));
            }
            Err(saml) => saml,
        };
        match self
            .issue_assertion(&sp, pending, subject, session_index)
            .await
        {
            Ok(form) => {
                tracing::info!(sp = %sp.id, "IdP login succeeded");
                metrics::counter!("idbridge_idp_logins_total", "result" => "succeeded", "reason" => "", "protocol" => "saml").increment(1);
                Ok(Finished::Assertion(form))
            }
            Err(e) => {
                tracing::error!(error = %e, "issuing the assertion failed");
                Err(FinishError::Failed {
                    status: 500,
                    message: "The sign-in could not be completed. Ask your administrator.",
                })
            }
        }
    }

    /// The SP or OIDC client a pending request is for.
    pub fn idp_relying_party(
        &self,
        request: &PendingRequest,
    ) -> Result<Option<RelyingParty>, StoreError> {
        match request {
            PendingRequest::Saml(p) => Ok(self
                .idp
                .service_providers
                .get(&p.service_provider_id)?
                .map(|sp| RelyingParty {
                    id: sp.id,
                    organization_id: sp.organization_id,
                    name: sp.name,
                    auth_source: sp.auth_source,
                })),
            PendingRequest::Oidc(p) => self.oidc_relying_party(&p.client_id),
        }
    }

    /// The active directory user with this idp_id, and their group names; or why not.
    pub(crate) fn directory_user(
        &self,
        directory_id: &str,
        idp_id: &str,
    ) -> Result<(idbridge_model::DirectoryUser, Vec<String>), &'static str> {
        let stored = match self.directory.find_user_by_idp_id(directory_id, idp_id) {
            Ok(Some(u)) => u,
            Ok(None) => return Err("user_not_synced"),
            Err(e) => {
                tracing::error!(error = %e, "directory user lookup failed");
                return Err("user_lookup_failed");
            }
        };
        if stored.user.state != UserState::Active {
            return Err("user_inactive");
        }
        let groups = match self.directory.user_groups(&stored.user.id) {
            Ok(g) => g.into_iter().map(|g| g.group.name).collect(),
            Err(e) => {
                tracing::error!(error = %e, "group lookup failed");
                return Err("user_lookup_failed");
            }
        };
        Ok((stored.user, groups))
    }

    /// A refused sign-in: the metric and the opt-in `idp.login_failed` event (its own commit;
    /// a failure to write it is logged, never shown).
    pub(crate) async fn record_failure(
        &self,
        org_id: &str,
        sp_id: &str,
        login: &str,
        client: &ClientInfo,
        reason: &'static str,
    ) {
        // `sp_id` is the relying party's id: an SP's (`sp_…`) or an OIDC client's.
        let oidc = sp_id.starts_with(idbridge_model::IdPrefix::OidcClient.as_str());
        let protocol = if oidc { "oidc" } else { "saml" };
        metrics::counter!("idbridge_idp_logins_total", "result" => "failed", "reason" => reason, "protocol" => protocol)
            .increment(1);
        let mut data = serde_json::json!({
            "organization_id": org_id,
            "login": login.chars().take(256).collect::<String>(),
            "reason": reason,
            "ip_address": client.ip_address,
            "user_agent": client.user_agent,
        });
        data["protocol"] = protocol.into();
        if oidc {
            data["client_id"] = sp_id.into();
        } else {
            data["service_provider_id"] = sp_id.into();
        }
        let event = Event::new(EventKind::IdpLoginFailed, data);
        let mut cs = ChangeSet::new();
        cs.append_event(&event, Some(org_id));
        if let Err(e) = db::commit(&self.store, cs).await {
            tracing::error!(error = %e, "recording a failed IdP login failed");
        }
    }

    /// The signed Response for a verified user, as the auto-submitting form.
    pub(crate) async fn issue_assertion(
        &self,
        sp: &ServiceProvider,
        session: &SamlPending,
        user: &AuthenticatedSubject,
        session_index: String,
    ) -> crate::SsoResult<PostForm> {
        let key = self.idp_signing_key(&sp.organization_id).await?;
        let attrs = UserAttributes {
            id: user.idp_id.clone(),
            email: user.email.clone().filter(|_| sp.releases("email")),
            first_name: user.first_name.clone().filter(|_| sp.releases("firstName")),
            last_name: user.last_name.clone().filter(|_| sp.releases("lastName")),
            groups: if sp.releases("groups") {
                user.groups.clone()
            } else {
                Vec::new()
            },
            custom: user
                .custom_attributes(&sp.custom_attributes)
                .map(|(name, values)| SamlAttribute::new(name, values.to_vec()))
                .collect(),
        };
        let mut attributes = attrs.to_saml().map_err(crate::SsoError::internal)?;
        if !sp.releases("id") {
            attributes.retain(|a| a.name != "id");
        }
        let name_id = NameId {
            value: match sp.name_id_format.as_str() {
                name_id_format::EMAIL => user.email.clone().unwrap_or_else(|| user.idp_id.clone()),
                name_id_format::TRANSIENT => format!("_{}", random_token(16)),
                _ => user.idp_id.clone(),
            },
            format: sp.name_id_format.clone(),
        };
        let encryption = match (&sp.encrypt_assertions, &sp.encryption_cert) {
            (true, Some(pem)) => Some(AssertionEncryption::aes256_gcm(
                X509::from_pem(pem.as_bytes()).map_err(crate::SsoError::internal)?,
            )),
            _ => None,
        };
        let options = ResponseOptions {
            sign_assertion: true,
            sign_response: sp.sign_response,
            encryption,
            validity: Duration::from_secs(sp.assertion_validity_secs),
            ..ResponseOptions::default()
        };
        let entity = self.idp_urls(&sp.organization_id).entity_id;
        let (sp_entity, acs, request_id, relay) = (
            sp.entity_id.clone(),
            session.acs_url.clone(),
            session.request_id.clone(),
            session.relay_state.clone(),
        );
        let signed = tokio::task::spawn_blocking(move || {
            let now = Utc::now();
            build_login_response(
                &LoginResponse {
                    idp_entity_id: &entity,
                    sp_entity_id: &sp_entity,
                    acs_url: &acs,
                    in_response_to: request_id.as_deref(),
                    name_id: &name_id,
                    session_index: &session_index,
                    authn_instant: now,
                    attributes: &attributes,
                    now,
                    options: &options,
                },
                &key,
            )
            .map(|r| (r.to_base64(), acs))
        })
        .await
        .map_err(crate::SsoError::internal)?
        .map_err(crate::SsoError::internal)?;
        let (b64, acs) = signed;
        Ok(post_form(
            &acs,
            PostField::SamlResponse,
            &b64,
            relay.as_deref(),
        ))
    }
}
