//! Creating a connection from a typed input: the organization must exist, an external id is
//! idempotent within its organization, SAML IdP settings come from inline metadata, a metadata
//! URL or explicit values, SP keys are generated and sealed, OIDC client secrets sealed. The
//! record and its indexes are one commit.

use idbridge_model::tag::ConnectionTag;
use idbridge_model::{new_id, Connection, ConnectionState, IdPrefix};
use idbridge_oidc::ClaimMap;
use idbridge_saml::{AttributeMap, IdpSettings, SamlConnectionType};
use idbridge_store::{ChangeSet, StoreError};

use super::keys::{generate_sp_pairs, seal_client_secret};
use super::metadata::certs_to_pem;
use super::{
    saml_type_name, with_domains, ConnectionRecord, Connections, OidcConnection, ProtocolSettings,
    SamlConnection,
};
use crate::db::{self, created_at_of};
use crate::error::{FieldIssue, SsoError, SsoResult};
use crate::SsoService;

/// `POST /connections` (and `idbridge connection create`), typed.
#[derive(Debug, Clone)]
pub struct NewConnection {
    pub organization_id: String,
    /// Defaults to the organization's name.
    pub name: Option<String>,
    /// Unique; creating again with the same one in the same organization returns the existing
    /// connection (py10's documented behaviour).
    pub external_id: Option<String>,
    pub protocol: NewProtocol,
}

/// The protocol half of a new connection.
#[derive(Debug, Clone)]
pub enum NewProtocol {
    Saml(NewSaml),
    Oidc(NewOidc),
}

/// SAML options. IdP settings come from `idp_metadata_xml`, else `idp_metadata_url`, else the
/// explicit entity id, SSO URL and signing certificates (all three then required).
#[derive(Debug, Clone)]
pub struct NewSaml {
    pub connection_type: SamlConnectionType,
    pub attribute_map: AttributeMap,
    pub idp_metadata_xml: Option<String>,
    pub idp_metadata_url: Option<String>,
    pub idp_entity_id: Option<String>,
    /// Overrides the metadata's SSO URL when given.
    pub idp_sso_url: Option<String>,
    /// Overrides the metadata's HTTP-Redirect SingleLogoutService when given.
    pub idp_slo_url: Option<String>,
    /// PEM certificates.
    pub idp_signing_certs: Vec<String>,
    /// Defaults to `<public_url>/sso/saml/<connection id>`.
    pub sp_entity_id: Option<String>,
    /// Must be the connection's own ACS URL if given (the route is fixed by this server).
    pub acs_url: Option<String>,
    pub sign_requests: bool,
    pub allow_idp_initiated: bool,
    pub clock_skew_secs: u64,
}

/// Where an OIDC client secret comes from.
#[derive(Clone)]
pub enum OidcSecretInput {
    /// The secret itself (sealed before it is stored).
    Value(String),
    /// The name of an environment variable holding it.
    Env(String),
}

impl std::fmt::Debug for OidcSecretInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OidcSecretInput::Value(_) => f.write_str("Value([redacted])"),
            OidcSecretInput::Env(var) => f.debug_tuple("Env").field(var).finish(),
        }
    }
}

/// OIDC options (already checked for shape: an issuer or discovery URL, a client id).
#[derive(Debug, Clone)]
pub struct NewOidc {
    pub connection_type: idbridge_oidc::ConnectionType,
    /// Defaults to the discovery URL without `/.well-known/openid-configuration`.
    pub issuer: Option<String>,
    pub discovery_url: Option<String>,
    pub client_id: String,
    pub client_secret: OidcSecretInput,
    pub scopes: Vec<String>,
    pub claim_map: ClaimMap,
}

impl SsoService {
    /// Creates a connection (draft until its first login), or returns the existing one of
    /// the same organization with the same external id.
    #[tracing::instrument(name = "connections.create", skip_all)]
    pub async fn create_connection(&self, input: NewConnection) -> SsoResult<Connection> {
        let mut issues = Vec::new();
        let org = self.organizations.get(&input.organization_id)?;
        if org.is_none() {
            issues.push(FieldIssue::new("organization_id", "organization_not_found"));
        }
        if let (Some(ext), Some(o)) = (&input.external_id, &org) {
            if let Some(existing) = self.connections.by_external_id(ext)? {
                if existing.organization_id() == Some(o.id.as_str()) {
                    return self.wire(&existing);
                }
                issues.push(FieldIssue::new(
                    "external_id",
                    "already_used_by_another_organization",
                ));
            }
        }
        let conn_id = new_id(IdPrefix::Connection);
        let (protocol, type_name) = match input.protocol {
            NewProtocol::Saml(saml) => {
                let name = saml_type_name(saml.connection_type).to_owned();
                let settings = self
                    .saml_settings(&conn_id, saml, None, &mut issues)
                    .await?;
                (settings, name)
            }
            NewProtocol::Oidc(oidc) => {
                let name = oidc.connection_type.as_str().to_owned();
                (self.oidc_settings(&conn_id, oidc)?, name)
            }
        };
        if !issues.is_empty() {
            return Err(SsoError::Invalid(issues));
        }
        let (Some(org), Some(protocol)) = (org, protocol) else {
            return Err(SsoError::internal(
                "connection settings missing without a reason",
            ));
        };
        let now = created_at_of(IdPrefix::Connection, &conn_id);
        let record = ConnectionRecord {
            connection: Connection {
                object: ConnectionTag,
                id: conn_id.clone(),
                organization_id: Some(org.id.clone()),
                connection_type: type_name,
                name: input.name.unwrap_or_else(|| org.name.clone()),
                state: ConnectionState::Draft,
                status: ConnectionState::Draft.status(),
                domains: Vec::new(),
                options: serde_json::json!({"signing_cert": null}),
                created_at: now,
                updated_at: now,
            },
            external_id: input.external_id,
            activated_at: None,
            protocol,
        };
        let mut cs = ChangeSet::new();
        Connections::stage_create(&mut cs, &record)?;
        // `connection.created` is not in the WorkOS event catalogue (workos-api.md §4.3): the
        // first event of a connection is `connection.activated`, on its first successful login.
        match db::commit(&self.store, cs).await {
            Ok(_) => {}
            Err(e @ StoreError::Conflict { .. }) if Connections::is_external_id_conflict(&e) => {
                return Err(SsoError::Refused {
                    code: "external_id_already_used",
                    message: "A connection with this external_id already exists.".into(),
                })
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(connection_id = %conn_id, organization_id = %org.id, "connection created");
        Ok(with_domains(record.connection, Some(&org)))
    }

    /// SAML settings of a connection; `None` (with `issues`) when the IdP settings are
    /// unusable. `existing` is a reconfigured connection's settings, whose SP keys (what the
    /// IdP trusts) and renewal notices are kept; a new connection gets new keys.
    pub(super) async fn saml_settings(
        &self,
        conn_id: &str,
        input: NewSaml,
        existing: Option<&SamlConnection>,
        issues: &mut Vec<FieldIssue>,
    ) -> SsoResult<Option<ProtocolSettings>> {
        let public_url = self.public_url();
        let acs_url = format!("{public_url}/sso/saml/acs/{conn_id}");
        if input.acs_url.as_deref().is_some_and(|a| a != acs_url) {
            // The ACS route is fixed by this server; pretending otherwise would break logins.
            issues.push(FieldIssue::new(
                "saml_options.acs_url",
                "must_be_the_default_acs_url",
            ));
        }
        // Where the IdP settings come from: inline XML, a URL, or explicit values.
        let from_metadata = match (&input.idp_metadata_xml, &input.idp_metadata_url) {
            (Some(xml), _) => Some(idp_from_metadata(xml).map_err(|e| ("idp_metadata_xml", e))),
            (None, Some(url)) => Some(match self.fetch_metadata(url).await {
                Ok(xml) => idp_from_metadata(&xml).map_err(|e| ("idp_metadata_url", e)),
                Err(e) => Err(("idp_metadata_url", e)),
            }),
            (None, None) => None,
        };
        let mut slo_url = input.idp_slo_url.clone();
        let (entity_id, sso_url, certs, wants_signed) = match from_metadata {
            Some(Ok((idp, metadata_slo))) => {
                slo_url = slo_url.or(metadata_slo);
                (
                    idp.entity_id.clone(),
                    input.idp_sso_url.clone().or(idp.sso_url.clone()),
                    certs_to_pem(&idp)?,
                    idp.wants_signed_requests,
                )
            }
            Some(Err((field, why))) => {
                tracing::info!(reason = %why, "IdP metadata rejected");
                issues.push(FieldIssue::new(
                    format!("saml_options.{field}"),
                    "invalid_metadata",
                ));
                return Ok(None);
            }
            None => {
                let mut missing = false;
                for (field, absent) in [
                    ("idp_entity_id", input.idp_entity_id.is_none()),
                    ("idp_sso_url", input.idp_sso_url.is_none()),
                    // Never run a connection without a trusted IdP signing certificate.
                    ("idp_signing_certs", input.idp_signing_certs.is_empty()),
                ] {
                    if absent {
                        issues.push(FieldIssue::new(format!("saml_options.{field}"), "required"));
                        missing = true;
                    }
                }
                if missing {
                    return Ok(None);
                }
                (
                    input.idp_entity_id.clone().unwrap_or_default(),
                    input.idp_sso_url.clone(),
                    input.idp_signing_certs.clone(),
                    false,
                )
            }
        };
        if !issues.is_empty() {
            return Ok(None);
        }
        let (signing, encryption, renewal_notified) = match existing {
            Some(e) => (
                e.sp_signing_keys.clone(),
                e.sp_encryption_keys.clone(),
                e.renewal_notified.clone(),
            ),
            None => {
                let (s, e) = generate_sp_pairs(self.secrets()?, conn_id).await?;
                (vec![s], vec![e], Vec::new())
            }
        };
        Ok(Some(ProtocolSettings::Saml(SamlConnection {
            idp_metadata_url: input.idp_metadata_url,
            idp_entity_id: entity_id,
            idp_sso_url: sso_url,
            idp_slo_url: slo_url,
            idp_signing_certs: certs,
            idp_wants_signed_requests: wants_signed,
            sp_entity_id: input
                .sp_entity_id
                .unwrap_or_else(|| format!("{public_url}/sso/saml/{conn_id}")),
            acs_url,
            sp_signing_keys: signing,
            sp_encryption_keys: encryption,
            sign_requests: input.sign_requests,
            allow_idp_initiated: input.allow_idp_initiated,
            clock_skew_secs: input.clock_skew_secs,
            attribute_map: input.attribute_map,
            renewal_notified,
        })))
    }

    pub(super) fn oidc_settings(
        &self,
        conn_id: &str,
        input: NewOidc,
    ) -> SsoResult<Option<ProtocolSettings>> {
        let (sealed, env) = match input.client_secret {
            OidcSecretInput::Value(s) => (
                Some(seal_client_secret(self.secrets()?, conn_id, &s)?),
                None,
            ),
            OidcSecretInput::Env(var) => (None, Some(var)),
        };
        let issuer = input
            .issuer
            .or_else(|| {
                input.discovery_url.as_deref().map(|d| {
                    d.trim_end_matches("/.well-known/openid-configuration")
                        .to_string()
                })
            })
            .unwrap_or_default();
        Ok(Some(ProtocolSettings::Oidc(OidcConnection {
            issuer,
            discovery_url: input.discovery_url,
            client_id: input.client_id,
            client_secret_sealed: sealed,
            client_secret_env: env,
            scopes: input.scopes,
            claim_map: input.claim_map,
        })))
    }
}

/// The IdP settings and its HTTP-Redirect SingleLogoutService from metadata XML.
pub(crate) fn idp_from_metadata(xml: &str) -> Result<(IdpSettings, Option<String>), String> {
    let idp = IdpSettings::from_metadata_xml(xml).map_err(|e| e.to_string())?;
    let slo = IdpSettings::slo_url_from_metadata_xml(xml).map_err(|e| e.to_string())?;
    Ok((idp, slo))
}
