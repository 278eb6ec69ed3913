//! The partial half of `PATCH /connections/{id}` (py10 `sso.update_connection`: "only the
//! provided fields are changed; fields that accept `null` are reset to their default"):
//! `attribute_maps` and `saml_options` / `oidc_options` merged over the stored declaration.
//! The rules are those of `PUT /admin/connections/{id}` ([`super::reconfigure`]): id,
//! organization, external id, state and SP keys are kept, the protocol cannot change, and the
//! merged SAML settings go through the same validation as a new connection's
//! (`saml_settings`). Nothing is written here: [`super::update`] commits the result with the
//! rest of the PATCH, so a refused field changes nothing.

use idbridge_oidc::ClaimMap;
use idbridge_saml::{AttributeMap, SamlConnectionType};

use super::create::{NewSaml, OidcSecretInput};
use super::keys::seal_client_secret;
use super::{saml_type, ConnectionRecord, OidcConnection, ProtocolSettings, SamlConnection};
use crate::error::{FieldIssue, SsoError, SsoResult};
use crate::SsoService;

/// One optional field of a partial update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Patch<T> {
    /// Not sent: left as it is.
    #[default]
    Keep,
    /// Sent as `null`: back to its default.
    Reset,
    /// Sent with a value.
    Set(T),
}

/// A standard profile field an attribute map feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StandardAttribute {
    IdpId,
    Email,
    FirstName,
    LastName,
    /// OIDC claim maps only (`oidc_options.claim_map.name`); a SAML profile's name is built
    /// from first and last name.
    Name,
    Groups,
}

/// `attribute_maps` (or `oidc_options.claim_map`) of a PATCH: only the named fields change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttributeMapsPatch {
    /// `None`: back to the connection type's default source.
    pub standard: Vec<(StandardAttribute, Option<String>)>,
    /// Custom attribute → source; `None` removes the mapping.
    pub custom: Vec<(String, Option<String>)>,
}

/// `saml_options` of a PATCH (py10 `PatchConnectionSAMLOptions` plus the fields idbridge's
/// `POST /connections` accepts). Setting `idp_metadata_url` or `idp_metadata_xml` re-imports the
/// IdP settings from that document (exclusive with the explicit IdP fields).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SamlOptionsPatch {
    /// `Reset` stops tracking the URL and keeps the IdP settings as they are.
    pub idp_metadata_url: Patch<String>,
    pub idp_metadata_xml: Option<String>,
    pub idp_entity_id: Option<String>,
    pub idp_sso_url: Option<String>,
    /// `Reset` turns single logout off.
    pub idp_slo_url: Patch<String>,
    /// Replaces the trusted IdP signing certificates (PEM).
    pub idp_signing_certs: Option<Vec<String>>,
    /// `Reset` goes back to `<public_url>/sso/saml/<connection id>`.
    pub sp_entity_id: Patch<String>,
    /// Only the connection's own ACS URL is accepted (the route is fixed by this server).
    pub acs_url: Option<String>,
    pub sign_requests: Option<bool>,
    pub allow_idp_initiated: Option<bool>,
    pub clock_skew_secs: Option<u64>,
}

/// `oidc_options` of a PATCH (py10 `PatchConnectionOIDCOptions`, shape-checked by the API).
#[derive(Debug, Clone, Default)]
pub struct OidcOptionsPatch {
    pub issuer: Option<String>,
    /// Also sets the issuer, when no issuer is given (as on create).
    pub discovery_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<OidcSecretInput>,
    /// `Reset` goes back to the type's default scopes.
    pub scopes: Patch<Vec<String>>,
    pub claim_map: Option<AttributeMapsPatch>,
}

/// The protocol options of a PATCH; the protocol itself cannot change.
#[derive(Debug, Clone)]
pub enum ProtocolPatch {
    Saml(SamlOptionsPatch),
    Oidc(OidcOptionsPatch),
}

impl AttributeMapsPatch {
    /// Applies the patch to one connection's candidate lists; `defaults` are the type's.
    fn apply(
        &self,
        lists: [(&mut Vec<String>, &[String]); 6],
        custom: &mut std::collections::BTreeMap<String, String>,
    ) {
        let mut slots = lists;
        for (field, source) in &self.standard {
            let i = match field {
                StandardAttribute::IdpId => 0,
                StandardAttribute::Email => 1,
                StandardAttribute::FirstName => 2,
                StandardAttribute::LastName => 3,
                StandardAttribute::Name => 4,
                StandardAttribute::Groups => 5,
            };
            let (list, default) = &mut slots[i];
            // As on create: the named source first, the type's defaults after it.
            **list = default.to_vec();
            if let Some(src) = source {
                list.retain(|s| s != src);
                list.insert(0, src.clone());
            }
        }
        for (key, source) in &self.custom {
            match source {
                Some(src) => {
                    custom.insert(key.clone(), src.clone());
                }
                None => {
                    custom.remove(key);
                }
            }
        }
    }

    /// Applies the patch to a SAML attribute map (`Name` has no SAML source: ignored).
    pub fn apply_to_saml(&self, map: &mut AttributeMap, kind: SamlConnectionType) {
        let d = AttributeMap::preset(kind);
        let mut unused_name = Vec::new();
        self.apply(
            [
                (&mut map.idp_id, &d.idp_id),
                (&mut map.email, &d.email),
                (&mut map.first_name, &d.first_name),
                (&mut map.last_name, &d.last_name),
                (&mut unused_name, &[]),
                (&mut map.groups, &d.groups),
            ],
            &mut map.custom,
        );
    }

    /// Applies the patch to an OIDC claim map; `defaults` are the connection type's.
    pub fn apply_to_claims(&self, map: &mut ClaimMap, defaults: &ClaimMap) {
        self.apply(
            [
                (&mut map.idp_id, &defaults.idp_id),
                (&mut map.email, &defaults.email),
                (&mut map.first_name, &defaults.first_name),
                (&mut map.last_name, &defaults.last_name),
                (&mut map.name, &defaults.name),
                (&mut map.groups, &defaults.groups),
            ],
            &mut map.custom,
        );
    }
}

impl SsoService {
    /// The connection's protocol settings with the patch merged in, validated as on create;
    /// every refused field in one [`SsoError::Invalid`].
    pub(super) async fn patched_settings(
        &self,
        old: &ConnectionRecord,
        protocol: Option<ProtocolPatch>,
        attribute_maps: Option<AttributeMapsPatch>,
    ) -> SsoResult<ProtocolSettings> {
        let id = old.id();
        match (&old.protocol, protocol) {
            (ProtocolSettings::Saml(_), Some(ProtocolPatch::Oidc(_))) => Err(SsoError::invalid(
                "oidc_options",
                "protocol_cannot_change_this_is_a_saml_connection",
            )),
            (ProtocolSettings::Oidc(_), Some(ProtocolPatch::Saml(_))) => Err(SsoError::invalid(
                "saml_options",
                "protocol_cannot_change_this_is_an_oidc_connection",
            )),
            (ProtocolSettings::Saml(cur), p) => {
                let p = match p {
                    Some(ProtocolPatch::Saml(p)) => p,
                    _ => SamlOptionsPatch::default(),
                };
                let kind = saml_type(&old.connection.connection_type)
                    .unwrap_or(SamlConnectionType::GenericSAML);
                self.patched_saml(id, cur, kind, p, attribute_maps).await
            }
            (ProtocolSettings::Oidc(cur), p) => {
                let p = match p {
                    Some(ProtocolPatch::Oidc(p)) => p,
                    _ => OidcOptionsPatch::default(),
                };
                let kind: idbridge_oidc::ConnectionType = old
                    .connection
                    .connection_type
                    .parse()
                    .unwrap_or(idbridge_oidc::ConnectionType::GenericOidc);
                self.patched_oidc(id, cur, kind, p, attribute_maps)
            }
        }
    }

    async fn patched_saml(
        &self,
        id: &str,
        cur: &SamlConnection,
        kind: SamlConnectionType,
        p: SamlOptionsPatch,
        attribute_maps: Option<AttributeMapsPatch>,
    ) -> SsoResult<ProtocolSettings> {
        let mut attribute_map = cur.attribute_map.clone();
        if let Some(a) = &attribute_maps {
            a.apply_to_saml(&mut attribute_map, kind);
        }
        let new_metadata_url = match &p.idp_metadata_url {
            Patch::Set(u) => Some(u.clone()),
            _ => None,
        };
        // A new metadata document replaces the IdP settings; otherwise the current ones are
        // the explicit values the patch edits (and nothing is fetched).
        let reimport = new_metadata_url.is_some() || p.idp_metadata_xml.is_some();
        let mut issues = Vec::new();
        if reimport {
            for (field, given) in [
                ("idp_entity_id", p.idp_entity_id.is_some()),
                ("idp_signing_certs", p.idp_signing_certs.is_some()),
            ] {
                if given {
                    issues.push(FieldIssue::new(
                        format!("saml_options.{field}"),
                        "exclusive_with_idp_metadata",
                    ));
                }
            }
        }
        if !issues.is_empty() {
            return Err(SsoError::Invalid(issues));
        }
        let certs_changed = p.idp_signing_certs.is_some();
        let input = NewSaml {
            connection_type: kind,
            attribute_map,
            idp_metadata_xml: p.idp_metadata_xml,
            idp_metadata_url: new_metadata_url,
            idp_entity_id: p
                .idp_entity_id
                .or_else(|| (!reimport).then(|| cur.idp_entity_id.clone())),
            idp_sso_url: p.idp_sso_url.or_else(|| {
                if reimport {
                    None
                } else {
                    cur.idp_sso_url.clone()
                }
            }),
            idp_slo_url: match p.idp_slo_url {
                Patch::Set(u) => Some(u),
                Patch::Reset => None,
                // A new metadata document brings its own SingleLogoutService.
                Patch::Keep if reimport => None,
                Patch::Keep => cur.idp_slo_url.clone(),
            },
            idp_signing_certs: p.idp_signing_certs.unwrap_or_else(|| {
                if reimport {
                    Vec::new()
                } else {
                    cur.idp_signing_certs.clone()
                }
            }),
            sp_entity_id: match p.sp_entity_id {
                Patch::Keep => Some(cur.sp_entity_id.clone()),
                Patch::Reset => None,
                Patch::Set(s) => Some(s),
            },
            acs_url: p.acs_url,
            sign_requests: p.sign_requests.unwrap_or(cur.sign_requests),
            allow_idp_initiated: p.allow_idp_initiated.unwrap_or(cur.allow_idp_initiated),
            clock_skew_secs: p.clock_skew_secs.unwrap_or(cur.clock_skew_secs),
        };
        let settings = self
            .saml_settings(id, input, Some(cur), &mut issues)
            .await?;
        let Some(ProtocolSettings::Saml(mut next)) = settings.filter(|_| issues.is_empty()) else {
            return Err(SsoError::Invalid(issues));
        };
        if !reimport {
            // Still the same IdP: what only metadata tells, and imported certificates' dates.
            next.idp_metadata_url = match p.idp_metadata_url {
                Patch::Reset => None,
                _ => cur.idp_metadata_url.clone(),
            };
            next.idp_wants_signed_requests = cur.idp_wants_signed_requests;
            if !certs_changed {
                next.idp_cert_added_at = cur.idp_cert_added_at.clone();
            }
        }
        Ok(ProtocolSettings::Saml(next))
    }

    fn patched_oidc(
        &self,
        id: &str,
        cur: &OidcConnection,
        kind: idbridge_oidc::ConnectionType,
        p: OidcOptionsPatch,
        attribute_maps: Option<AttributeMapsPatch>,
    ) -> SsoResult<ProtocolSettings> {
        let mut next = cur.clone();
        let defaults = kind.claim_map();
        if let Some(c) = &p.claim_map {
            c.apply_to_claims(&mut next.claim_map, &defaults);
        }
        if let Some(a) = &attribute_maps {
            a.apply_to_claims(&mut next.claim_map, &defaults);
        }
        if let Some(d) = p.discovery_url {
            if p.issuer.is_none() {
                next.issuer = d
                    .trim_end_matches("/.well-known/openid-configuration")
                    .to_string();
            }
            next.discovery_url = Some(d);
        }
        if let Some(i) = p.issuer {
            next.issuer = i;
        }
        if let Some(c) = p.client_id {
            next.client_id = c;
        }
        match p.client_secret {
            Some(OidcSecretInput::Value(s)) => {
                next.client_secret_sealed = Some(seal_client_secret(self.secrets()?, id, &s)?);
                next.client_secret_env = None;
            }
            Some(OidcSecretInput::Env(var)) => {
                next.client_secret_sealed = None;
                next.client_secret_env = Some(var);
            }
            None => {}
        }
        match p.scopes {
            Patch::Keep => {}
            Patch::Reset => next.scopes = kind.default_scopes(),
            Patch::Set(s) => next.scopes = s,
        }
        Ok(ProtocolSettings::Oidc(next))
    }
}
