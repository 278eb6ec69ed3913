//! `/sso/authorize` (workos-api.md §1.1): vet the client and redirect URI, pick the
//! connection, bind a login session to the browser and send it to the IdP.
//!
//! Until `client_id` and `redirect_uri` are vetted, failures are answered on a page and never
//! redirected: an unvetted URI would make this endpoint an open redirector.

use std::time::Duration;

use idbridge_model::{Event, EventKind};
use idbridge_secrets::random_token;
use idbridge_store::ChangeSet;

use super::complete::auth_event_data;
use super::{error_redirect, ClientInfo, LoginReply, LoginSession, Logins};
use crate::connections::{ConnectionRecord, ProtocolSettings, SamlConnection};
use crate::db::{self, now_ms, ttl_ms};
use crate::error::SsoError;
use crate::{redirect_uri, SsoService};

/// The longest `state` we carry (it is echoed into URLs).
const MAX_STATE_LEN: usize = 2048;
const MAX_HINT_LEN: usize = 320;

/// The query of `/sso/authorize`, as sent.
#[derive(Debug, Clone, Default)]
pub struct AuthorizeRequest {
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub state: Option<String>,
    pub response_type: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub connection: Option<String>,
    pub organization: Option<String>,
    pub provider: Option<String>,
    /// Deprecated upstream; refused.
    pub domain: Option<String>,
    pub login_hint: Option<String>,
    /// With no connection, organization or provider: the organization that has verified
    /// this domain (by DNS or declared verified) is the selector.
    pub domain_hint: Option<String>,
    /// `login` forces the IdP to authenticate again.
    pub prompt: Option<String>,
    /// Extra OIDC scopes (Node sends them repeated, Python comma-joined).
    pub provider_scopes: Vec<String>,
    pub client: ClientInfo,
}

/// A started login: send the browser to `idp_url` with a session cookie named by
/// `relay_key` carrying `session_id`, for `ttl`.
#[derive(Clone)]
pub struct Authorization {
    pub idp_url: String,
    pub relay_key: String,
    pub session_id: String,
    pub ttl: Duration,
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorization")
            .field("idp_url", &self.idp_url)
            .field("relay_key", &self.relay_key)
            .finish_non_exhaustive()
    }
}

/// Why a login could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// The client or redirect URI is not vetted: answered on a page, never redirected.
    Rejected {
        /// The store could not be read (answer 503), rather than a bad request.
        unavailable: bool,
        code: &'static str,
        message: &'static str,
    },
    /// Vetted: the app gets an OAuth error redirect (or a page when even that is impossible).
    Reply(LoginReply),
}

/// What a started login carries to its end (the redirect URI gets the code).
pub(crate) struct LoginStart {
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub login_hint: Option<String>,
    pub force_authn: bool,
    pub provider_scopes: Vec<String>,
    pub client: ClientInfo,
}

struct Vetted {
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
}

fn rejected(code: &'static str, message: &'static str) -> AuthorizeError {
    AuthorizeError::Rejected {
        unavailable: false,
        code,
        message,
    }
}

impl SsoService {
    /// Starts a login: one commit stores the session and `authentication.sso_started`.
    #[tracing::instrument(name = "sso.authorize", skip_all)]
    pub async fn authorize(&self, req: AuthorizeRequest) -> Result<Authorization, AuthorizeError> {
        let vetted = self.vet(&req)?;
        let fail = |code: &'static str, desc: &str| {
            AuthorizeError::Reply(error_redirect(
                &vetted.redirect_uri,
                code,
                desc,
                vetted.state.as_deref(),
                &[],
            ))
        };
        if req.response_type.as_deref() != Some("code") {
            return Err(fail("invalid_request", "response_type must be `code`."));
        }
        let code_challenge = req.code_challenge.clone();
        match (req.code_challenge_method.as_deref(), &code_challenge) {
            (Some("S256"), Some(_)) | (None, _) => {}
            (Some("S256"), None) => {
                return Err(fail("invalid_request", "code_challenge is missing."))
            }
            (Some(_), _) => {
                return Err(fail(
                    "invalid_request",
                    "Only the S256 code_challenge_method is supported.",
                ))
            }
        }
        if code_challenge.as_deref().is_some_and(|c| {
            !(43..=128).contains(&c.len())
                || !c
                    .chars()
                    .all(|x| x.is_ascii_alphanumeric() || "-._~".contains(x))
        }) {
            return Err(fail("invalid_request", "code_challenge is malformed."));
        }
        let login_hint = req
            .login_hint
            .as_deref()
            .filter(|h| h.len() <= MAX_HINT_LEN);
        let force_authn = req.prompt.as_deref() == Some("login");

        let record = self
            .select_connection(&req)
            .map_err(|(code, desc)| fail(code, &desc))?;
        if !record.usable() {
            return Err(fail("connection_unlinked", "The connection is not active."));
        }
        let start = LoginStart {
            client_id: vetted.client_id.clone(),
            redirect_uri: vetted.redirect_uri.clone(),
            state: vetted.state.clone(),
            code_challenge,
            login_hint: login_hint.map(str::to_owned),
            force_authn,
            provider_scopes: req.provider_scopes.clone(),
            client: req.client.clone(),
        };
        self.begin_login(&record, start)
            .await
            .map_err(|_| fail("server_error", "The SSO request could not be started."))
    }

    /// Starts a login on a vetted connection: builds the IdP request (SAML AuthnRequest or
    /// OIDC authorization URL) and stores the session with `authentication.sso_started` in one
    /// commit. `/sso/authorize` and the IdP's broker mode (`crate::idp::broker`) both start
    /// upstream logins here, so both are verified by the same ACS and callback code.
    pub(crate) async fn begin_login(
        &self,
        record: &ConnectionRecord,
        start: LoginStart,
    ) -> Result<Authorization, SsoError> {
        let conn_id = record.id().to_string();
        let org_id = record.connection.organization_id.clone();
        let mut session = LoginSession {
            connection_id: conn_id.clone(),
            organization_id: org_id.clone(),
            client_id: start.client_id,
            redirect_uri: start.redirect_uri,
            state: start.state,
            code_challenge: start.code_challenge,
            saml_request_id: None,
            relay_key: random_token(16),
            oidc_state: None,
            oidc_nonce: None,
            oidc_verifier_sealed: None,
            ip_address: start.client.ip_address.clone(),
            user_agent: start.client.user_agent.clone(),
        };
        let idp_url = match &record.protocol {
            ProtocolSettings::Saml(saml) => {
                match self.begin_saml(record, saml, &session.relay_key, start.force_authn) {
                    Ok((request_id, url)) => {
                        session.saml_request_id = Some(request_id);
                        url
                    }
                    Err(e) => {
                        tracing::error!(connection_id = %conn_id, error = %e, "cannot build AuthnRequest");
                        return Err(e);
                    }
                }
            }
            ProtocolSettings::Oidc(_) => {
                let opts = idbridge_oidc::BeginOptions {
                    login_hint: start.login_hint.as_deref(),
                    extra_scopes: &start.provider_scopes,
                    force_login: start.force_authn,
                };
                match self.begin_oidc(record, &opts).await {
                    Ok((begin, sealed_verifier)) => {
                        // The cookie is named after the state the IdP echoes, so the callback
                        // can find this session without a RelayState.
                        session.relay_key = super::relay_key_for_state(&begin.state);
                        session.oidc_state = Some(begin.state);
                        session.oidc_nonce = Some(begin.nonce);
                        session.oidc_verifier_sealed = Some(sealed_verifier);
                        begin.url.to_string()
                    }
                    Err(e) => {
                        tracing::error!(connection_id = %conn_id, error = %e, "cannot start OIDC login");
                        return Err(e);
                    }
                }
            }
        };
        let session_id = random_token(32);
        let ttl = self.config().login_ttl;
        let mut cs = ChangeSet::new();
        let expires_at_ms = now_ms() + ttl_ms(ttl);
        Logins::stage_session(&mut cs, &session_id, &session, expires_at_ms)?;
        super::timeout::stage_deadline(
            &mut cs,
            &session_id,
            &super::timeout::LoginDeadline {
                expires_at_ms,
                connection_id: conn_id.clone(),
                organization_id: org_id.clone(),
                ip_address: start.client.ip_address.clone(),
                user_agent: start.client.user_agent.clone(),
            },
        )?;
        let event = Event::new(
            EventKind::AuthenticationSsoStarted,
            auth_event_data(
                "started",
                None,
                org_id.as_deref(),
                &conn_id,
                &start.client,
                None,
            ),
        );
        cs.append_event(&event, org_id.as_deref());
        if let Err(e) = db::commit(&self.store, cs).await {
            tracing::error!(error = %e, "cannot store login session");
            return Err(e.into());
        }
        tracing::info!(connection_id = %conn_id, "SSO login started");
        Ok(Authorization {
            idp_url,
            relay_key: session.relay_key,
            session_id,
            ttl,
        })
    }

    /// Checks `client_id` and `redirect_uri`; failures are answered on a page.
    fn vet(&self, req: &AuthorizeRequest) -> Result<Vetted, AuthorizeError> {
        let expected = match self.client_id() {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Err(rejected(
                    "invalid_client",
                    "This environment has no client id yet.",
                ))
            }
            Err(e) => {
                tracing::error!(error = %e, "store error reading the client id");
                return Err(AuthorizeError::Rejected {
                    unavailable: true,
                    code: "server_error",
                    message: "Try again later.",
                });
            }
        };
        let client_id = req.client_id.as_deref().unwrap_or("");
        if client_id != expected {
            return Err(rejected("invalid_client", "Invalid client ID."));
        }
        let Some(uri) = req.redirect_uri.as_deref() else {
            return Err(rejected(
                "invalid_redirect_uri",
                "redirect_uri is required.",
            ));
        };
        let console_test = uri
            == format!(
                "{}{}",
                self.settings.public_url,
                super::CONSOLE_TEST_CALLBACK_PATH
            );
        if console_test && req.code_challenge.is_none() {
            return Err(rejected(
                "invalid_request",
                "A login to the console's test callback needs a code_challenge.",
            ));
        }
        if !console_test && !redirect_uri::is_allowed(&self.config().redirect_uris, uri) {
            return Err(rejected(
                "invalid_redirect_uri",
                "redirect_uri is not in the allow-list of this environment.",
            ));
        }
        if req.state.as_ref().is_some_and(|s| s.len() > MAX_STATE_LEN) {
            return Err(rejected("invalid_request", "state is too long."));
        }
        Ok(Vetted {
            client_id: client_id.to_string(),
            redirect_uri: uri.to_string(),
            state: req.state.clone(),
        })
    }

    /// Resolves `connection` / `organization` / `provider` / `domain` to one connection.
    fn select_connection(
        &self,
        req: &AuthorizeRequest,
    ) -> Result<ConnectionRecord, (&'static str, String)> {
        let server_error = |e: SsoError| {
            tracing::error!(error = %e, "store error selecting a connection");
            (
                "server_error",
                "The SSO request could not be started.".to_string(),
            )
        };
        if req.domain.is_some() {
            return Err((
                "domain_connection_selector_not_allowed",
                "The domain parameter is deprecated; use connection or organization.".into(),
            ));
        }
        let given = [
            req.connection.is_some(),
            req.organization.is_some(),
            req.provider.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        let hinted = match (&req.domain_hint, given) {
            (Some(hint), 0) => match self
                .organizations
                .verified_owner(&hint.trim().to_ascii_lowercase())
            {
                Ok(Some(org)) => Some(org.id),
                Ok(None) => {
                    return Err((
                        "connection_domain_invalid",
                        format!("No organization has verified the domain {hint:?}."),
                    ))
                }
                Err(e) => return Err(server_error(e.into())),
            },
            _ => None,
        };
        if given != 1 && hinted.is_none() {
            return Err((
                "invalid_connection_selector",
                "Exactly one of connection, organization or provider is required.".into(),
            ));
        }
        if let Some(p) = &req.provider {
            return Err((
                "connection_strategy_invalid",
                format!("The OAuth provider {p:?} is not supported by this server."),
            ));
        }
        if let Some(id) = &req.connection {
            return match self.connections.get(id) {
                Ok(Some(r)) => Ok(r),
                Ok(None) => Err((
                    "connection_invalid",
                    format!("No connection found with id {id}."),
                )),
                Err(e) => Err(server_error(e.into())),
            };
        }
        let org_id = hinted
            .as_deref()
            .or(req.organization.as_deref())
            .unwrap_or_default();
        let exists = self
            .organizations
            .get(org_id)
            .map_err(|e| server_error(e.into()))?
            .is_some();
        if !exists {
            return Err((
                "organization_invalid",
                format!("No organization found with id {org_id}."),
            ));
        }
        let mut usable: Vec<ConnectionRecord> = self
            .connections
            .of_organization(org_id)
            .map_err(|e| server_error(e.into()))?
            .into_iter()
            .filter(ConnectionRecord::usable)
            .collect();
        match usable.len() {
            0 => Err((
                "organization_invalid",
                "No connection associated with organization.".into(),
            )),
            1 => Ok(usable.remove(0)),
            _ => Err((
                "ambiguous_connection_selector",
                "The organization has more than one connection; select one with the connection parameter.".into(),
            )),
        }
    }

    /// Builds the AuthnRequest (signed when the connection or IdP asks); RelayState is the
    /// login's relay key.
    fn begin_saml(
        &self,
        record: &ConnectionRecord,
        saml: &SamlConnection,
        relay_key: &str,
        force_authn: bool,
    ) -> Result<(String, String), SsoError> {
        let needs_keys = saml.sign_requests || saml.idp_wants_signed_requests;
        let secrets = if needs_keys {
            self.settings.secrets.as_ref()
        } else {
            None
        };
        let sp = saml.sp_settings(record.id(), secrets)?;
        let idp = saml.idp_settings()?;
        let r = idbridge_saml::build_authn_request(&sp, &idp, Some(relay_key), force_authn)
            .map_err(SsoError::internal)?;
        Ok((r.request_id, r.url))
    }
}
