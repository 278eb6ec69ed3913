//! idbridge as an OpenID Provider of an organization (issue 16's OIDC mode, for WorkOS "Generic
//! OIDC" connections and any RP): the endpoints' domain half over the protocol library
//! `idbridge_oidc::op`; the one owner of [`OIDC_CODES`] and [`OIDC_ACCESS_TOKENS`].
//!
//! - discovery and JWKS: the issuer is `{public_url}/idp/{org}/oidc`; ID tokens are signed with
//!   the organization's IdP key (the SAML IdP's), and the JWKS publishes every key of the set
//!   (two during a rollover);
//! - authorize: the client must be one of THIS organization's; the redirect URI must be one of
//!   its registered ones (exactly) before anything is sent back to it; otherwise our own error
//!   page. A valid request becomes a login session ([`PendingRequest::Oidc`]) and the same login
//!   page as SAML; the login ends in [`SsoService::complete_idp_login`], which stores the code
//!   (only its digest is the key) in the commit that takes the session;
//! - token: client authentication (basic/post/none), the code taken single-use in the commit
//!   that stores the access token, PKCE, redirect URI and expiry checked by the library;
//! - userinfo: the bearer access token's stored grant.

use chrono::Utc;
use idbridge_oidc::op::{
    bearer_token, client_credentials, discovery_document, issue_tokens, jwks_document,
    parse_authorization, redeem, secret_key, userinfo, AccessGrant, AuthorizationRequest,
    AuthorizeError, CodeGrant, ErrorCode, OAuthError, OpEndpoints, OpSigningKey, OpUser, Prompt,
    TokenRequest, TokenResponse,
};
use idbridge_store::{ChangeSet, ConflictKind, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use idbridge_secrets::{random_token, sha256_hex};

use super::login::{IdpLoginSession, IdpPage, PendingRequest, RelyingParty, SsoOutcome};
use super::oidc_clients::OidcClient;
use super::source::AuthenticatedSubject;
use crate::db::{self, now_ms};
use crate::login::ClientInfo;
use crate::{SsoError, SsoResult, SsoService};

/// Expiring: base64url(SHA-256(code)) → [`CodeGrant`].
pub const OIDC_CODES: &str = "idp_oidc_codes";
/// Expiring: base64url(SHA-256(access token)) → [`AccessGrant`].
pub const OIDC_ACCESS_TOKENS: &str = "idp_oidc_access_tokens";

/// The validated authorization request a login session waits with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAuthorization {
    pub client_id: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
}

impl PendingAuthorization {
    fn from_request(r: &AuthorizationRequest) -> Self {
        PendingAuthorization {
            client_id: r.client_id.clone(),
            redirect_uri: r.redirect_uri.clone(),
            scopes: r.scopes.clone(),
            state: r.state.clone(),
            nonce: r.nonce.clone(),
            code_challenge: r.code_challenge.clone(),
        }
    }

    fn request(&self) -> AuthorizationRequest {
        AuthorizationRequest {
            client_id: self.client_id.clone(),
            redirect_uri: self.redirect_uri.clone(),
            scopes: self.scopes.clone(),
            state: self.state.clone(),
            nonce: self.nonce.clone(),
            code_challenge: self.code_challenge.clone(),
            prompt: Vec::new(),
            max_age: None,
            login_hint: None,
        }
    }
}

/// An authorization request to the authorize endpoint.
#[derive(Debug, Clone)]
pub struct OidcAuthorize {
    pub organization_id: String,
    /// The raw query string (GET) or form body (POST).
    pub query: String,
    pub client: ClientInfo,
}

/// What the authorize endpoint answers.
#[derive(Debug, Clone)]
pub enum OidcAuthorizeOutcome {
    /// Show the login page and set the session cookie.
    Login {
        page: IdpPage,
        session: String,
        ttl: std::time::Duration,
    },
    /// Redirect to the client's REGISTERED redirect URI with an error (`state`, `iss`).
    Redirect(String),
    /// Our own error page: the client or its redirect URI cannot be trusted.
    Error { status: u16, message: String },
}

fn server_error(e: impl std::fmt::Display) -> OAuthError {
    tracing::error!(error = %e, "OIDC provider failure");
    OAuthError::new(
        ErrorCode::ServerError,
        "the provider failed; try again later",
    )
}

fn invalid_client() -> OAuthError {
    OAuthError::new(ErrorCode::InvalidClient, "client authentication failed")
}

impl SsoService {
    fn oidc_endpoints(&self, org_id: &str) -> SsoResult<OpEndpoints> {
        OpEndpoints::under_issuer(&self.oidc_issuer(org_id)).map_err(SsoError::internal)
    }

    fn known_org(&self, org_id: &str) -> SsoResult<()> {
        match self.organizations().get(org_id)? {
            Some(_) => Ok(()),
            None => Err(SsoError::not_found("Organization", org_id)),
        }
    }

    /// The discovery document of an organization's provider.
    pub fn idp_oidc_discovery(&self, org_id: &str) -> SsoResult<Value> {
        self.known_org(org_id)?;
        Ok(discovery_document(&self.oidc_endpoints(org_id)?))
    }

    /// Every key of the organization's IdP key set (current first), for ID tokens.
    async fn oidc_keys(&self, org_id: &str) -> SsoResult<Vec<OpSigningKey>> {
        let set = self.idp_key_set(org_id).await?;
        self.open_idp_keys(org_id, &set)?
            .iter()
            .map(|k| {
                let pem = k.private_key_pem().map_err(SsoError::internal)?;
                OpSigningKey::from_pem(&pem).map_err(SsoError::internal)
            })
            .collect()
    }

    /// The JWKS: every key of the set (two during a rollover).
    pub async fn idp_oidc_jwks(&self, org_id: &str) -> SsoResult<Value> {
        self.known_org(org_id)?;
        let keys = self.oidc_keys(org_id).await?;
        Ok(jwks_document(&keys.iter().collect::<Vec<_>>()))
    }

    /// The client of a pending OIDC request as the login page needs it.
    pub(crate) fn oidc_relying_party(
        &self,
        client_id: &str,
    ) -> Result<Option<RelyingParty>, StoreError> {
        Ok(self.idp.oidc_clients.get(client_id)?.map(|c| RelyingParty {
            id: c.id,
            organization_id: c.organization_id,
            name: c.name,
            auth_source: c.auth_source,
        }))
    }

    /// The authorize endpoint: a valid request of a registered client of this organization
    /// gets the login page; a bad one an error redirect to the REGISTERED redirect URI, or our
    /// own error page when the client or the redirect URI cannot be trusted.
    #[tracing::instrument(name = "idp.oidc.authorize", skip_all, fields(organization_id = %req.organization_id))]
    pub async fn idp_oidc_authorize(&self, req: OidcAuthorize) -> OidcAuthorizeOutcome {
        let org_id = req.organization_id.as_str();
        let page_error =
            |status: u16, message: String| OidcAuthorizeOutcome::Error { status, message };
        match self.organizations().get(org_id) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return page_error(
                    404,
                    "Unknown organization: this identity provider URL is not one of idbridge's."
                        .into(),
                )
            }
            Err(e) => {
                tracing::error!(error = %e, "store read failed");
                return page_error(503, "Try again later.".into());
            }
        }
        let issuer = self.oidc_issuer(org_id);
        let refused = |e: AuthorizeError| match e.redirect_url(&issuer) {
            Some(u) => {
                tracing::info!(error = %e, "authorization request refused (redirected)");
                OidcAuthorizeOutcome::Redirect(u.to_string())
            }
            None => {
                tracing::info!(error = %e, "authorization request refused");
                OidcAuthorizeOutcome::Error {
                    status: 400,
                    message: format!(
                        "The application's sign-in request is invalid: {}. Ask the application's administrator to check its OIDC client registration.",
                        e.error().description
                    ),
                }
            }
        };
        let unchecked = match parse_authorization(&req.query) {
            Ok(u) => u,
            Err(e) => return refused(e),
        };
        let client = match self.idp.oidc_clients.get(unchecked.client_id()) {
            Ok(Some(c)) if c.organization_id == org_id => c,
            Ok(_) => {
                tracing::info!(client_id = %unchecked.client_id(), "authorization request for an unknown client");
                return page_error(
                    400,
                    format!("The application {:?} is not a registered OIDC client of this organization's identity provider. Its administrator must register it (POST /admin/oidc_clients).", unchecked.client_id().chars().take(64).collect::<String>()),
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "store read failed");
                return page_error(503, "Try again later.".into());
            }
        };
        let registered = match self.registered_oidc_client(&client) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "unusable OIDC client record");
                return page_error(
                    500,
                    "The application's registration is unusable. Ask its administrator.".into(),
                );
            }
        };
        let request = match unchecked.validate(&registered) {
            Ok(r) => r,
            Err(e) => return refused(e),
        };
        if client.auth_source.is_none() {
            return refused(request.error(
                ErrorCode::AccessDenied,
                "no authentication source is configured for this client (set directory_id)",
            ));
        }
        if request.prompt.contains(&Prompt::None) {
            return refused(request.error(
                ErrorCode::LoginRequired,
                "idbridge has no session to answer prompt=none with",
            ));
        }
        let secret = random_token(32);
        let csrf = random_token(32);
        let key = random_token(16);
        let session = IdpLoginSession {
            organization_id: org_id.to_owned(),
            request: PendingRequest::Oidc(PendingAuthorization::from_request(&request)),
            csrf_digest: sha256_hex(&csrf),
            key: key.clone(),
            broker_connection_id: None,
        };
        if let Err(outcome) = self.store_idp_session(&session, &secret, &[]).await {
            return match outcome {
                SsoOutcome::Error { status, message } => {
                    OidcAuthorizeOutcome::Error { status, message }
                }
                _ => page_error(
                    503,
                    "The login could not be started. Try again later.".into(),
                ),
            };
        }
        OidcAuthorizeOutcome::Login {
            page: IdpPage {
                organization_id: org_id.to_owned(),
                service_provider: client.name.clone(),
                key,
                csrf,
                message: None,
                login: request.login_hint.clone(),
                offer_remember: !self.idp_config().remember_browser_ttl.is_zero(),
            },
            session: secret,
            ttl: self.idp_config().login_ttl,
        }
    }

    /// Stages the code of a completed login in `cs` (the commit that takes the login session)
    /// and answers the success redirect.
    pub(crate) fn stage_oidc_code(
        &self,
        cs: &mut ChangeSet,
        pending: &PendingAuthorization,
        subject: &AuthenticatedSubject,
    ) -> SsoResult<String> {
        let client = self
            .idp
            .oidc_clients
            .get(&pending.client_id)?
            .filter(|c| c.organization_id == subject.organization_id)
            .ok_or_else(|| SsoError::not_found("OIDC Client", &pending.client_id))?;
        let name = match (&subject.first_name, &subject.last_name) {
            (Some(f), Some(l)) => Some(format!("{f} {l}")),
            (Some(n), None) | (None, Some(n)) => Some(n.clone()),
            (None, None) => None,
        };
        let user = OpUser {
            sub: subject.idp_id.clone(),
            email: subject.email.clone(),
            // The directory's email is set by its administrators, not by the user.
            email_verified: subject.email.as_ref().map(|_| true),
            given_name: subject.first_name.clone(),
            family_name: subject.last_name.clone(),
            name,
            groups: subject.groups.clone(),
            extra: subject
                .custom_attributes(&client.custom_claims)
                .map(|(k, v)| (k.to_owned(), v.to_vec()))
                .collect(),
        };
        let now = Utc::now();
        let request = pending.request();
        let ttl = self.idp_config().oidc_code_ttl_secs;
        let grant = CodeGrant::new(&request, user, now, now, ttl, client.groups_without_scope);
        let code = idbridge_oidc::op::new_secret().map_err(SsoError::internal)?;
        cs.insert_expiring(
            OIDC_CODES,
            secret_key(&code),
            db::to_json(&grant)?,
            grant.expires_at * 1000,
            now_ms(),
        );
        let url = request
            .success_redirect(&code, &self.oidc_issuer(&subject.organization_id))
            .map_err(SsoError::internal)?;
        Ok(url.to_string())
    }

    /// The token endpoint: authenticates the client, takes the code (single use), checks it
    /// and issues the ID token and the access token.
    #[tracing::instrument(name = "idp.oidc.token", skip_all, fields(organization_id = %org_id))]
    pub async fn idp_oidc_token(
        &self,
        org_id: &str,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Result<TokenResponse, OAuthError> {
        let req = TokenRequest::parse_form(body)?;
        let creds = client_credentials(
            authorization,
            req.client_id.as_deref(),
            req.client_secret.as_deref(),
        )?;
        let client: OidcClient = match self.idp.oidc_clients.get(&creds.client_id) {
            Ok(Some(c)) if c.organization_id == org_id => c,
            Ok(_) => return Err(invalid_client()),
            Err(e) => return Err(server_error(e)),
        };
        let registered = self.registered_oidc_client(&client).map_err(server_error)?;
        idbridge_oidc::op::authenticate_client(&creds, &registered)?;
        let code_key = req.code_key();
        let now = Utc::now();
        let grant: CodeGrant = match self
            .store
            .get_expiring(OIDC_CODES, &code_key, now_ms())
            .map_err(server_error)?
        {
            Some(b) => db::decode(OIDC_CODES, "code", &b).map_err(server_error)?,
            None => {
                return Err(OAuthError::new(
                    ErrorCode::InvalidGrant,
                    "the code is unknown, expired or already used; start the login again",
                ))
            }
        };
        redeem(&grant, &req, &client.id, now)?;
        let key = self
            .oidc_keys(org_id)
            .await
            .map_err(server_error)?
            .into_iter()
            .next()
            .ok_or_else(|| server_error("no signing key"))?;
        let live = self.idp_config();
        let (ttl, id_ttl) = (live.oidc_access_token_ttl_secs, live.oidc_id_token_ttl_secs);
        let issuer = self.oidc_issuer(org_id);
        let issued = tokio::task::spawn_blocking(move || {
            issue_tokens(&grant, &key, &issuer, now, ttl, id_ttl)
        })
        .await
        .map_err(server_error)??;
        let mut cs = ChangeSet::new();
        cs.take_expiring(OIDC_CODES, code_key, now_ms());
        cs.put_expiring(
            OIDC_ACCESS_TOKENS,
            issued.access_key.clone(),
            db::to_json(&issued.access_grant).map_err(server_error)?,
            issued.access_grant.expires_at * 1000,
        );
        match db::commit(&self.store, cs).await {
            Ok(_) => {}
            Err(StoreError::Conflict {
                kind: ConflictKind::NotLive,
                ..
            }) => {
                return Err(OAuthError::new(
                    ErrorCode::InvalidGrant,
                    "the code is unknown, expired or already used; start the login again",
                ))
            }
            Err(e) => return Err(server_error(e)),
        }
        metrics::counter!("idbridge_idp_oidc_tokens_total").increment(1);
        Ok(issued.response)
    }

    /// The userinfo endpoint: the claims of the bearer access token's grant, if the token was
    /// issued by this organization's provider and is live.
    #[tracing::instrument(name = "idp.oidc.userinfo", skip_all, fields(organization_id = %org_id))]
    pub fn idp_oidc_userinfo(
        &self,
        org_id: &str,
        authorization: Option<&str>,
    ) -> Result<Value, OAuthError> {
        let token = bearer_token(authorization)?;
        let denied = || OAuthError::new(ErrorCode::InvalidToken, "the access token is not valid");
        let grant: AccessGrant = match self
            .store
            .get_expiring(OIDC_ACCESS_TOKENS, &secret_key(token), now_ms())
            .map_err(server_error)?
        {
            Some(b) => db::decode(OIDC_ACCESS_TOKENS, "token", &b).map_err(server_error)?,
            None => return Err(denied()),
        };
        match self.idp.oidc_clients.get(&grant.client_id) {
            Ok(Some(c)) if c.organization_id == org_id => {}
            Ok(_) => return Err(denied()),
            Err(e) => return Err(server_error(e)),
        }
        userinfo(&grant, Utc::now())
    }
}
