//! Broker mode: the user of an IdP login signs in through one of the organization's own SSO
//! connections (an upstream SAML or OIDC IdP) and the verified profile becomes the answer to
//! the pending request.
//!
//! The upstream half is an ordinary SSO login ([`SsoService::begin_login`]; the same ACS and
//! OIDC callback code verifies the upstream answer, with its replay cache and events). Its
//! redirect URI is the IdP's own `/idp/{org}/broker/return`, so a verified login ends there
//! with a single-use code, exactly as an app would get one. The two halves are bound:
//!
//! - the upstream login carries a PKCE challenge whose verifier is derived from the IdP login
//!   session's secret, which only the browser's IdP cookie holds (the store keeps its digest);
//!   a code from any other login (another browser, another organization's connection, another
//!   pending request) fails the check;
//! - the code must be for this organization's return URI and its profile must come from the
//!   connection the pending login was sent to;
//! - one commit takes both the code and the IdP login session (single use), and both expire.
//!
//! Failures after the SP and its ACS are trusted (the upstream refused, the code does not fit)
//! are answered with a signed SAML error Response at the registered ACS.

use idbridge_secrets::sha256_hex;
use idbridge_store::{ChangeSet, StoreError};

use super::login::{error, valid_token, IdpLoginSession, SsoOutcome};
use super::service_providers::AuthSource;
use super::source::AuthenticatedSubject;
use crate::db::now_ms;
use crate::login::{pkce_matches, ClientInfo, LoginStart, Logins};
use crate::SsoService;

/// The browser's return from the upstream login: `GET /idp/{org}/broker/return`.
#[derive(Debug, Clone, Default)]
pub struct BrokerReturn {
    pub organization_id: String,
    /// The `state` query parameter: the IdP login's key (names its cookie).
    pub state: Option<String>,
    /// The value of the IdP login cookie the key names.
    pub session: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub client: ClientInfo,
}

/// The PKCE verifier binding the upstream login to the IdP login session: derived from the
/// session's secret (only the browser's cookie has it), 64 characters.
fn verifier_for(secret: &str) -> String {
    sha256_hex(&format!("idbridge idp broker pkce verifier/{secret}"))
}

fn challenge_for(verifier: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
}

impl SsoService {
    /// Where upstream logins of an organization's IdP end.
    pub fn broker_return_url(&self, org_id: &str) -> String {
        format!("{}/idp/{org_id}/broker/return", self.public_url())
    }

    /// Whether `connection_id` may be the broker source of an SP of `org_id`; or the reason
    /// (`not_found`, `not_of_the_organization`, `connection_inactive`).
    pub(crate) fn check_broker_connection(
        &self,
        org_id: &str,
        connection_id: &str,
    ) -> Result<(), &'static str> {
        match self.connections.get(connection_id) {
            Ok(Some(r)) if r.connection.organization_id.as_deref() != Some(org_id) => {
                Err("not_of_the_organization")
            }
            Ok(Some(r)) if !r.usable() => Err("connection_inactive"),
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("not_found"),
            Err(e) => {
                tracing::error!(error = %e, "store read failed");
                Err("unavailable")
            }
        }
    }

    /// Starts the upstream login of a stored broker-mode IdP login session.
    pub(crate) async fn start_broker(
        &self,
        session: &IdpLoginSession,
        key: String,
        secret: String,
        client: ClientInfo,
    ) -> SsoOutcome {
        let org_id = session.organization_id.as_str();
        let conn_id = session.broker_connection_id.clone().unwrap_or_default();
        // Broker mode answers SAML requests only.
        let Some(pending) = session.saml() else {
            return error(400, "This login cannot use an upstream connection.");
        };
        let fail = |message: &str| pending.authn_failed("", message);
        let record = match self.connections.get(&conn_id) {
            Ok(Some(r)) => r,
            _ => {
                return self
                    .status_post(org_id, fail("The upstream connection is gone."))
                    .await
            }
        };
        let client_id = match self.client_id() {
            Ok(Some(c)) => c,
            _ => return error(503, "This server has no client id yet. Try again later."),
        };
        let start = LoginStart {
            client_id,
            redirect_uri: self.broker_return_url(org_id),
            state: Some(key.clone()),
            code_challenge: Some(challenge_for(&verifier_for(&secret))),
            login_hint: None,
            force_authn: false,
            provider_scopes: Vec::new(),
            client,
        };
        match self.begin_login(&record, start).await {
            Ok(upstream) => {
                tracing::info!(connection_id = %conn_id, "IdP broker login sent upstream");
                SsoOutcome::Upstream {
                    key,
                    session: secret,
                    ttl: self.idp_config().login_ttl,
                    upstream,
                }
            }
            Err(e) => {
                tracing::error!(error = %e, connection_id = %conn_id, "cannot start the upstream login");
                self.status_post(org_id, fail("The upstream login could not be started."))
                    .await
            }
        }
    }

    /// The end of a broker login: checks the upstream code against the IdP login session and
    /// answers the SP. The second value names the IdP cookie to clear.
    #[tracing::instrument(name = "idp.broker_return", skip_all, fields(organization_id = %req.organization_id))]
    pub async fn idp_broker_return(&self, req: BrokerReturn) -> (SsoOutcome, Option<String>) {
        let org_id = req.organization_id.as_str();
        let expired = "This sign-in has expired or was already used. Start the login again from the application.";
        let (Some(key), Some(secret)) = (
            req.state.as_deref().filter(|k| valid_token(k)),
            req.session.as_deref().filter(|s| valid_token(s)),
        ) else {
            return (error(400, expired), None);
        };
        let now = now_ms();
        let session = match self.idp_session(secret, now) {
            Ok(Some(s)) => s,
            Ok(None) => return (error(400, expired), Some(key.to_owned())),
            Err(e) => {
                tracing::error!(error = %e, "store read failed");
                return (error(503, "Try again later."), None);
            }
        };
        let Some(conn_id) = session.broker_connection_id.clone() else {
            return (error(400, expired), None);
        };
        if session.organization_id != org_id || session.key != key {
            tracing::warn!("IdP broker return with another login's session");
            return (error(400, expired), None);
        }
        let clear = Some(key.to_owned());
        let Some(pending) = session.saml() else {
            return (error(400, expired), None);
        };
        let sp = match self.idp.service_providers.get(&pending.service_provider_id) {
            Ok(Some(sp)) if sp.organization_id == org_id => sp,
            _ => {
                return (
                    error(
                        400,
                        "The service provider was removed. Ask its administrator.",
                    ),
                    clear,
                )
            }
        };
        let refuse = |reason: &'static str, message: &str| {
            (reason, pending.authn_failed(&sp.entity_id, message))
        };
        let still_broker = matches!(&sp.auth_source, Some(AuthSource::Broker { connection_id }) if *connection_id == conn_id);
        let checked = if !still_broker {
            Err(refuse(
                "source_changed",
                "The service provider's authentication source changed during the login.",
            ))
        } else if let Some(err) = &req.error {
            tracing::info!(upstream_error = %err, "the upstream login failed");
            Err(refuse(
                "upstream_failed",
                "The upstream identity provider login failed.",
            ))
        } else {
            self.check_broker_code(org_id, &conn_id, secret, req.code.as_deref(), now)
                .map_err(|reason| refuse(reason, "The upstream login could not be verified."))
        };
        let (code, profile) = match checked {
            Ok(found) => found,
            Err((reason, e)) => {
                tracing::warn!(reason, "IdP broker login refused");
                // The session and the code are spent: the answer is final.
                let mut cs = ChangeSet::new();
                cs.take_expiring(super::IDP_SESSIONS, sha256_hex(secret), now);
                if let Some(c) = req.code.as_deref().filter(|c| c.len() <= 256) {
                    if self.logins.code(c, now).ok().flatten().is_some() {
                        Logins::stage_take_code(&mut cs, c, now);
                    }
                }
                match crate::db::commit(&self.store, cs).await {
                    Ok(_) => {}
                    Err(StoreError::Conflict { .. }) => return (error(400, expired), clear),
                    Err(e) => {
                        tracing::error!(error = %e, "taking the IdP login session failed");
                        return (error(503, "Try again later."), clear);
                    }
                }
                self.record_failure(org_id, &sp.id, "", &req.client, reason)
                    .await;
                return (self.status_post(org_id, e).await, clear);
            }
        };
        let subject = AuthenticatedSubject::from_profile(org_id, &profile);
        let mut also = ChangeSet::new();
        Logins::stage_take_code(&mut also, &code, now);
        match self
            .finish_idp_login(&session, secret, &subject, &req.client, Some(also), None)
            .await
        {
            Ok(super::login::Finished::Assertion(form)) => (SsoOutcome::Post(form), clear),
            Ok(super::login::Finished::Redirect(_)) => (error(400, expired), clear),
            Err(super::login::FinishError::SessionGone) => (error(400, expired), clear),
            Err(super::login::FinishError::Failed { status, message }) => {
                (error(status, message), clear)
            }
        }
    }

    /// The upstream code's profile, when the code belongs to this login: issued for this
    /// organization's return URI, bound to this session's PKCE verifier, from `conn_id`.
    fn check_broker_code(
        &self,
        org_id: &str,
        conn_id: &str,
        secret: &str,
        code: Option<&str>,
        now: i64,
    ) -> Result<(String, idbridge_model::Profile), &'static str> {
        let code = code
            .filter(|c| !c.is_empty() && c.len() <= 256)
            .ok_or("code_missing")?;
        let rec = match self.logins.code(code, now) {
            Ok(Some(r)) => r,
            Ok(None) => return Err("code_expired_or_used"),
            Err(e) => {
                tracing::error!(error = %e, "store read failed");
                return Err("code_lookup_failed");
            }
        };
        if rec.redirect_uri != self.broker_return_url(org_id) {
            return Err("code_for_another_redirect_uri");
        }
        let bound = rec
            .code_challenge
            .as_deref()
            .is_some_and(|c| pkce_matches(&verifier_for(secret), c));
        if !bound {
            return Err("code_of_another_login");
        }
        if rec.profile.connection_id != conn_id
            || rec.profile.organization_id.as_deref() != Some(org_id)
        {
            return Err("profile_of_another_connection");
        }
        Ok((code.to_owned(), rec.profile))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verifier_is_bound_to_the_session_secret() {
        let a = verifier_for("secret-a-0123456789abcdef");
        let b = verifier_for("secret-b-0123456789abcdef");
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(pkce_matches(&a, &challenge_for(&a)));
        assert!(!pkce_matches(&b, &challenge_for(&a)));
    }
}
