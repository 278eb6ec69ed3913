//! OIDC connections: starting a login (from `/sso/authorize`) and the callback.
//!
//! The provider's `state` names the browser's session cookie; `OidcClient::finish` compares it
//! with the stored one and checks nonce and PKCE. IdP error callbacks become WorkOS error
//! redirects through `map_idp_error`.

use std::sync::Arc;

use idbridge_oidc::{
    map_idp_error, BeginAuth, BeginOptions, FinishParams, OidcClient, OidcSettings,
};

use super::complete::Destination;
use super::{error_redirect, ClientInfo, LoginOutcome, LoginReply, PageStatus};
use crate::connections::keys::{client_secret, open_pkce, seal_pkce};
use crate::connections::{ConnectionRecord, ProtocolSettings};
use crate::db::now_ms;
use crate::error::SsoError;
use crate::SsoService;

/// A `GET /sso/oidc/callback`.
#[derive(Debug, Clone, Default)]
pub struct OidcCallback {
    pub state: Option<String>,
    /// The value of the session cookie the state names, if the browser sent one.
    pub session_id: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub iss: Option<String>,
    pub client: ClientInfo,
}

impl SsoService {
    fn oidc_client_for(&self, record: &ConnectionRecord) -> Result<Arc<OidcClient>, SsoError> {
        let ProtocolSettings::Oidc(o) = &record.protocol else {
            return Err(SsoError::internal("not an OIDC connection"));
        };
        let http = self.http()?.clone();
        self.oidc_client(record.id(), record.version(), || {
            let t = record
                .connection
                .connection_type
                .parse()
                .unwrap_or(idbridge_oidc::ConnectionType::GenericOidc);
            let secret = client_secret(self.settings.secrets.as_ref(), record.id(), o)?;
            let mut s = OidcSettings::new(t, o.issuer.clone(), o.client_id.clone(), secret);
            if let Some(d) = &o.discovery_url {
                s.discovery_url = url::Url::parse(d).ok();
            }
            s.scopes = o.scopes.clone();
            s.claim_map = o.claim_map.clone();
            OidcClient::new(s, http).map_err(SsoError::internal)
        })
    }

    /// Starts an OIDC login; returns the provider URL parts and the sealed PKCE verifier.
    pub(crate) async fn begin_oidc(
        &self,
        record: &ConnectionRecord,
        opts: &BeginOptions<'_>,
    ) -> Result<(BeginAuth, String), SsoError> {
        let client = self.oidc_client_for(record)?;
        let redirect = url::Url::parse(&self.oidc_callback_url()).map_err(SsoError::internal)?;
        let b = client
            .begin_with(&redirect, opts)
            .await
            .map_err(SsoError::internal)?;
        let sealed = seal_pkce(self.secrets()?, record.id(), b.pkce_verifier.expose())?;
        Ok((b, sealed))
    }

    /// Handles the provider's callback: finishes or fails the login.
    #[tracing::instrument(name = "sso.oidc_callback", skip_all)]
    pub async fn oidc_callback(&self, cb: OidcCallback) -> LoginOutcome {
        let page = |code, message| LoginOutcome {
            reply: LoginReply::page(PageStatus::BadRequest, code, message),
            clear_cookie: None,
        };
        let Some(returned_state) = cb.state.as_deref().filter(|s| s.len() <= 512) else {
            return page("invalid_request", "state is missing.");
        };
        let relay_key = super::relay_key_for_state(returned_state);
        let Some(session_id) = cb.session_id.as_deref() else {
            return page(
                "invalid_request",
                "No login is in progress in this browser.",
            );
        };
        let Some(session) = self.logins.session(session_id, now_ms()).ok().flatten() else {
            return page(
                "invalid_request",
                "The login expired or was already completed.",
            );
        };
        let dest = Destination {
            client_id: session.client_id.clone(),
            redirect_uri: session.redirect_uri.clone(),
            state: session.state.clone(),
            code_challenge: session.code_challenge.clone(),
            client: cb.client.clone(),
            session_id: Some(session_id.to_owned()),
            replay: Vec::new(),
            saml_subject: None,
        };
        let reply = self.finish_oidc(&cb, returned_state, &session, &dest).await;
        LoginOutcome {
            reply,
            clear_cookie: Some(relay_key),
        }
    }

    async fn finish_oidc(
        &self,
        cb: &OidcCallback,
        returned_state: &str,
        session: &super::LoginSession,
        dest: &Destination,
    ) -> LoginReply {
        let record = match self.connections.get(&session.connection_id) {
            Ok(Some(r)) => r,
            _ => {
                return error_redirect(
                    &dest.redirect_uri,
                    "connection_invalid",
                    "The connection no longer exists.",
                    dest.state.as_deref(),
                    &[],
                )
            }
        };
        if let Some(err) = &cb.error {
            let (code, desc) = map_idp_error(err, cb.error_description.as_deref());
            return self.fail_login(&record, dest, code, &desc, None).await;
        }
        let Some(code) = cb.code.clone() else {
            return self
                .fail_login(
                    &record,
                    dest,
                    "oauth_failed",
                    "The identity provider returned no code.",
                    None,
                )
                .await;
        };
        let verifier = session
            .oidc_verifier_sealed
            .as_deref()
            .map(|s| open_pkce(self.settings.secrets.as_ref(), record.id(), s))
            .unwrap_or_default();
        let client = match self.oidc_client_for(&record) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build OIDC client");
                return self
                    .fail_login(
                        &record,
                        dest,
                        "server_error",
                        "The connection is misconfigured.",
                        None,
                    )
                    .await;
            }
        };
        let redirect = match url::Url::parse(&self.oidc_callback_url()) {
            Ok(u) => u,
            Err(_) => {
                return self
                    .fail_login(&record, dest, "server_error", "Bad callback URL.", None)
                    .await
            }
        };
        let expected_state = session.oidc_state.clone().unwrap_or_default();
        let nonce = session.oidc_nonce.clone().unwrap_or_default();
        let returned_state = returned_state.to_string();
        let returned_iss = cb.iss.clone();
        // `OidcClient::finish`'s future is not `Send` (idbridge-oidc holds a form serializer
        // across an await), so it runs to completion on a blocking-pool thread of this runtime.
        let handle = tokio::runtime::Handle::current();
        let joined = tokio::task::spawn_blocking(move || {
            handle.block_on(async move {
                client
                    .finish(FinishParams {
                        code: &code,
                        returned_state: &returned_state,
                        expected_state: &expected_state,
                        returned_iss: returned_iss.as_deref(),
                        nonce: &nonce,
                        pkce_verifier: &verifier,
                        redirect_uri: &redirect,
                    })
                    .await
            })
        })
        .await;
        let result = match joined {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "OIDC finish task failed");
                return self
                    .fail_login(
                        &record,
                        dest,
                        "server_error",
                        "The login could not be completed.",
                        None,
                    )
                    .await;
            }
        };
        match result {
            Ok(identity) => self.complete_login(&record, identity, dest).await,
            Err(e) => {
                tracing::warn!(error = %e, "OIDC login rejected");
                let code = e.workos_error_code();
                self.fail_login(
                    &record,
                    dest,
                    code,
                    "The OpenID Connect login could not be verified.",
                    None,
                )
                .await
            }
        }
    }
}
