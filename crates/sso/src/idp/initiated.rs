//! IdP-initiated login: `GET /idp/{org}/saml/start?sp=<entity id or sp_ id>&RelayState=…`.
//!
//! Only for SPs whose admin turned `allow_idp_initiated` on. There is no AuthnRequest, so the
//! answer is unsolicited (no InResponseTo) and goes to the SP's default REGISTERED ACS; the
//! RelayState follows the same rule as with a request (at most 1024 bytes, no control
//! characters) and is only ever echoed to that ACS, never redirected to. Then the login runs
//! exactly as an SP-initiated one: the login page (directory) or the upstream login (broker).

use idbridge_model::{parse_id, IdPrefix};
use idbridge_saml::verify::MAX_RELAY_STATE;
use idbridge_secrets::{random_token, sha256_hex};
use idbridge_store::StoreError;

use super::login::{error, IdpLoginSession, IdpPage, PendingRequest, SamlPending, SsoOutcome};
use super::service_providers::ServiceProvider;
use crate::login::ClientInfo;
use crate::SsoService;

/// A request to start an IdP-initiated login.
#[derive(Debug, Clone, Default)]
pub struct InitiatedStart {
    pub organization_id: String,
    /// The SP's entity id or its `sp_…` id.
    pub sp: Option<String>,
    pub relay_state: Option<String>,
    pub client: ClientInfo,
}

impl SsoService {
    /// The organization's SP named by its `sp_…` id or its entity id.
    fn find_sp(&self, org_id: &str, sp: &str) -> Result<Option<ServiceProvider>, StoreError> {
        let found = if parse_id(IdPrefix::ServiceProvider, sp).is_ok() {
            self.idp.service_providers.get(sp)?
        } else {
            self.idp.service_providers.by_entity_id(org_id, sp)?
        };
        Ok(found.filter(|r| r.organization_id == org_id))
    }

    /// Starts an IdP-initiated login (see the module doc).
    #[tracing::instrument(name = "idp.initiated_start", skip_all, fields(organization_id = %req.organization_id))]
    pub async fn idp_initiated_start(&self, req: InitiatedStart) -> SsoOutcome {
        let org_id = req.organization_id.as_str();
        if let Some(refused) = self.unknown_idp_organization(org_id) {
            return refused;
        }
        let Some(sp_name) = req
            .sp
            .as_deref()
            .filter(|s| !s.is_empty() && s.len() <= 1024)
        else {
            return error(
                400,
                "The sp parameter is missing: give the service provider's entity id or id.",
            );
        };
        let sp = match self.find_sp(org_id, sp_name) {
            Ok(Some(sp)) => sp,
            Ok(None) => {
                return error(
                    404,
                    "This service provider is not registered with this organization's identity provider.",
                )
            }
            Err(e) => {
                tracing::error!(error = %e, "store read failed");
                return error(503, "Try again later.");
            }
        };
        if !sp.allow_idp_initiated {
            tracing::info!(sp = %sp.id, "IdP-initiated login refused: not enabled for the SP");
            return error(
                403,
                "IdP-initiated login is not enabled for this service provider. Start the login from the application, or ask the administrator to enable allow_idp_initiated.",
            );
        }
        if req
            .relay_state
            .as_deref()
            .is_some_and(|r| r.len() > MAX_RELAY_STATE || r.chars().any(char::is_control))
        {
            return error(
                400,
                "RelayState is too long or has control characters (at most 1024 bytes).",
            );
        }
        let Some(acs) = sp
            .acs_urls
            .iter()
            .find(|a| a.is_default)
            .or_else(|| sp.acs_urls.first())
        else {
            return error(
                500,
                "The service provider has no registered ACS URL; re-import its metadata.",
            );
        };
        let broker_connection_id = match &sp.auth_source {
            None => {
                return error(
                    503,
                    "No authentication source is configured for this service provider. Ask its administrator.",
                )
            }
            Some(super::AuthSource::Directory { .. }) => None,
            Some(super::AuthSource::Broker { connection_id }) => {
                if let Err(code) = self.check_broker_connection(org_id, connection_id) {
                    tracing::warn!(sp = %sp.id, code, "broker connection unusable");
                    return error(
                        503,
                        "The service provider's upstream connection is not usable. Ask its administrator.",
                    );
                }
                Some(connection_id.clone())
            }
        };
        let secret = random_token(32);
        let csrf = random_token(32);
        let key = random_token(16);
        let session = IdpLoginSession {
            organization_id: org_id.to_owned(),
            request: PendingRequest::Saml(SamlPending {
                service_provider_id: sp.id.clone(),
                request_id: None,
                acs_url: acs.url.clone(),
                relay_state: req.relay_state.clone(),
            }),
            csrf_digest: sha256_hex(&csrf),
            key: key.clone(),
            broker_connection_id,
        };
        if let Err(outcome) = self.store_idp_session(&session, &secret, &[]).await {
            return outcome;
        }
        if session.broker_connection_id.is_some() {
            return self.start_broker(&session, key, secret, req.client).await;
        }
        SsoOutcome::Login {
            page: IdpPage {
                organization_id: org_id.to_owned(),
                service_provider: sp.name.clone(),
                key,
                csrf,
                message: None,
                login: None,
                offer_remember: !self.idp_config().remember_browser_ttl.is_zero(),
            },
            session: secret,
            ttl: self.idp_config().login_ttl,
        }
    }
}
