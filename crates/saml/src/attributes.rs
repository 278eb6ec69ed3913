//! Attribute mapping: which SAML attribute names feed the WorkOS profile fields, with presets
//! per IdP type. Every field lists candidates, tried in order, because admins follow either the
//! WorkOS setup guides (`id`, `email`, `firstName`, ...) or their IdP's defaults (claim URIs).

use crate::verify::VerifiedAssertion;
use idbridge_model::{join_name, Identity};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// SAML connection types (WorkOS `connection_type` spelling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SamlConnectionType {
    OktaSAML,
    AzureSAML,
    ADFSSAML,
    GoogleSAML,
    KeycloakSAML,
    OneLoginSAML,
    PingFederateSAML,
    GenericSAML,
}

impl SamlConnectionType {
    /// Every SAML connection type with a preset.
    pub const ALL: [SamlConnectionType; 8] = [
        Self::OktaSAML,
        Self::AzureSAML,
        Self::ADFSSAML,
        Self::GoogleSAML,
        Self::KeycloakSAML,
        Self::OneLoginSAML,
        Self::PingFederateSAML,
        Self::GenericSAML,
    ];
}

/// Source attribute names for each profile field (first present, non-empty candidate wins).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AttributeMap {
    pub idp_id: Vec<String>,
    pub email: Vec<String>,
    pub first_name: Vec<String>,
    pub last_name: Vec<String>,
    pub groups: Vec<String>,
    /// Custom profile key → source attribute name.
    pub custom: BTreeMap<String, String>,
}

const EMAIL_CLAIM: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress";
const GIVEN_CLAIM: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname";
const SURNAME_CLAIM: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname";
const UPN_CLAIM: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn";
const NAME_CLAIM: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name";
const OBJECTID_CLAIM: &str = "http://schemas.microsoft.com/identity/claims/objectidentifier";
const MS_GROUPS_CLAIM: &str = "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups";
const ADFS_GROUP_CLAIM: &str = "http://schemas.xmlsoap.org/claims/Group";
const OID_MAIL: &str = "urn:oid:0.9.2342.19200300.100.1.3";
const OID_GIVEN: &str = "urn:oid:2.5.4.42";
const OID_SN: &str = "urn:oid:2.5.4.4";
const OID_UID: &str = "urn:oid:0.9.2342.19200300.100.1.1";
const OID_EMAIL_PKCS9: &str = "urn:oid:1.2.840.113549.1.9.1";

/// Candidate lists for (idp_id, email, first_name, last_name, groups).
type Candidates = (
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

fn v(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

impl AttributeMap {
    /// The standard source names for a connection type.
    pub fn preset(kind: SamlConnectionType) -> Self {
        use SamlConnectionType::*;
        let (idp_id, email, first, last, groups): Candidates = match kind {
            GenericSAML | OktaSAML | GoogleSAML => (
                &["id"],
                &["email"],
                &["firstName"],
                &["lastName"],
                &["groups"],
            ),
            AzureSAML => (
                &["id", OBJECTID_CLAIM],
                &["email", EMAIL_CLAIM, NAME_CLAIM],
                &["firstName", GIVEN_CLAIM],
                &["lastName", SURNAME_CLAIM],
                &["groups", MS_GROUPS_CLAIM],
            ),
            ADFSSAML => (
                &["id", OBJECTID_CLAIM],
                &["email", EMAIL_CLAIM, UPN_CLAIM],
                &["firstName", GIVEN_CLAIM],
                &["lastName", SURNAME_CLAIM],
                &["groups", ADFS_GROUP_CLAIM, MS_GROUPS_CLAIM],
            ),
            KeycloakSAML => (
                &["id", OID_UID],
                &["email", OID_EMAIL_PKCS9, OID_MAIL],
                &["firstName", OID_GIVEN],
                &["lastName", OID_SN],
                &["groups", "Role"],
            ),
            OneLoginSAML => (
                &["id", "User.id"],
                &["email", "User.email"],
                &["firstName", "User.FirstName"],
                &["lastName", "User.LastName"],
                &["groups", "memberOf"],
            ),
            PingFederateSAML => (
                &["id", "uid", "subject"],
                &["email", "mail"],
                &["firstName", "givenName"],
                &["lastName", "sn"],
                &["groups", "memberOf"],
            ),
        };
        Self {
            idp_id: v(idp_id),
            email: v(email),
            first_name: v(first),
            last_name: v(last),
            groups: v(groups),
            custom: BTreeMap::new(),
        }
    }
}

const NAMEID_EMAIL: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";

fn first_value(a: &VerifiedAssertion, names: &[String]) -> Option<String> {
    names.iter().find_map(|n| {
        a.attributes
            .get(n)
            .and_then(|vals| vals.iter().map(|s| s.trim()).find(|s| !s.is_empty()))
            .map(str::to_owned)
    })
}

/// Maps a verified assertion to the identity every login protocol produces: the mapped id
/// attribute (else the NameID), the mapped email (else the NameID when its format is
/// emailAddress), names (the display name joined from them), groups, custom attributes
/// (`null` when the IdP did not send one) and every attribute as received.
pub fn map_profile(a: &VerifiedAssertion, map: &AttributeMap) -> Identity {
    let email = first_value(a, &map.email)
        .or_else(|| (a.name_id_format.as_deref() == Some(NAMEID_EMAIL)).then(|| a.name_id.clone()));
    let groups = map
        .groups
        .iter()
        .find_map(|n| a.attributes.get(n).filter(|v| !v.is_empty()))
        .map(|vals| {
            vals.iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let custom_attributes = map
        .custom
        .iter()
        .map(|(k, src)| {
            let value = first_value(a, std::slice::from_ref(src));
            (k.clone(), value.map_or(Value::Null, Value::String))
        })
        .collect();
    let raw_attributes = a
        .attributes
        .iter()
        .map(|(k, vals)| {
            let vals = vals.iter().cloned().map(Value::String).collect();
            (k.clone(), Value::Array(vals))
        })
        .collect();
    let first_name = first_value(a, &map.first_name);
    let last_name = first_value(a, &map.last_name);
    Identity {
        idp_id: first_value(a, &map.idp_id).unwrap_or_else(|| a.name_id.clone()),
        email,
        name: join_name(first_name.as_deref(), last_name.as_deref()),
        first_name,
        last_name,
        groups,
        custom_attributes,
        raw_attributes,
    }
}
