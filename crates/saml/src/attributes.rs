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

const OID_IS_MEMBER_OF: &str = "urn:oid:1.3.6.1.4.1.5923.1.5.1.1";
const OID_DISPLAY_NAME: &str = "urn:oid:2.16.840.1.113730.3.1.241";

/// Names every connection type also knows, after its own: eduPerson / inetOrgPerson URNs
/// (pysaml2's and Shibboleth's defaults), their LDAP names, and the Microsoft claim URIs.
/// (A map may name an attribute by Name or by FriendlyName.)
const COMMON_EMAIL: &[&str] = &[
    OID_MAIL,
    OID_EMAIL_PKCS9,
    EMAIL_CLAIM,
    "mail",
    "emailAddress",
];
const COMMON_GIVEN: &[&str] = &[OID_GIVEN, GIVEN_CLAIM, "givenName"];
const COMMON_SURNAME: &[&str] = &[OID_SN, SURNAME_CLAIM, "sn", "surname"];
const COMMON_GROUPS: &[&str] = &[
    OID_IS_MEMBER_OF,
    MS_GROUPS_CLAIM,
    ADFS_GROUP_CLAIM,
    "isMemberOf",
    "memberOf",
];

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
        let with_common = |own: &[&str], common: &[&str]| {
            let mut out = v(own);
            for c in common {
                if !out.iter().any(|o| o == c) {
                    out.push((*c).to_owned());
                }
            }
            out
        };
        Self {
            idp_id: v(idp_id),
            email: with_common(email, COMMON_EMAIL),
            first_name: with_common(first, COMMON_GIVEN),
            last_name: with_common(last, COMMON_SURNAME),
            groups: with_common(groups, COMMON_GROUPS),
            custom: BTreeMap::new(),
        }
    }
}

const NAMEID_EMAIL: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";

/// The values of the attribute a map names: by its Name, else by its FriendlyName.
fn values<'a>(a: &'a VerifiedAssertion, name: &str) -> Option<&'a Vec<String>> {
    a.attributes.get(name).or_else(|| {
        a.friendly_names
            .get(name)
            .and_then(|full| a.attributes.get(full))
    })
}

fn first_value(a: &VerifiedAssertion, names: &[String]) -> Option<String> {
    names.iter().find_map(|n| {
        values(a, n)
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
        .find_map(|n| values(a, n).filter(|v| !v.is_empty()))
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
        name: join_name(first_name.as_deref(), last_name.as_deref())
            .or_else(|| first_value(a, &[OID_DISPLAY_NAME.to_owned(), "displayName".to_owned()])),
        first_name,
        last_name,
        groups,
        custom_attributes,
        raw_attributes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assertion(attrs: &[(&str, Option<&str>, &str)]) -> VerifiedAssertion {
        let mut attributes = BTreeMap::new();
        let mut friendly_names = BTreeMap::new();
        for (name, friendly, value) in attrs {
            attributes.insert((*name).to_owned(), vec![(*value).to_owned()]);
            if let Some(f) = friendly {
                friendly_names.insert((*f).to_owned(), (*name).to_owned());
            }
        }
        VerifiedAssertion {
            issuer: "https://idp.test".into(),
            name_id: "nameid@example.test".into(),
            name_id_format: Some(NAMEID_EMAIL.into()),
            session_index: None,
            attributes,
            friendly_names,
            in_response_to: None,
            assertion_id: "_a".into(),
            not_on_or_after: chrono::Utc::now(),
            relay_state: None,
            response_signed: true,
            assertion_signed: true,
            encrypted: false,
        }
    }

    #[test]
    fn urn_names_are_known_by_default_and_maps_may_use_friendly_names() {
        // pysaml2's / Shibboleth's defaults: urn:oid Names with FriendlyNames.
        let a = assertion(&[
            (OID_MAIL, Some("mail"), "ada@example.test"),
            (OID_GIVEN, Some("givenName"), "Ada"),
            (OID_SN, Some("sn"), "Lovelace"),
            (OID_IS_MEMBER_OF, Some("isMemberOf"), "analysts"),
            ("urn:oid:2.5.4.11", Some("ou"), "Engines"),
        ]);
        for kind in [
            SamlConnectionType::GenericSAML,
            SamlConnectionType::OktaSAML,
        ] {
            let p = map_profile(&a, &AttributeMap::preset(kind));
            assert_eq!(
                p.email.as_deref(),
                Some("ada@example.test"),
                "not the NameID"
            );
            assert_eq!(p.first_name.as_deref(), Some("Ada"));
            assert_eq!(p.last_name.as_deref(), Some("Lovelace"));
            assert_eq!(p.groups, vec!["analysts".to_string()]);
        }
        // A map naming the FriendlyName finds the attribute sent under its URN Name.
        let mut map = AttributeMap::preset(SamlConnectionType::GenericSAML);
        map.custom.insert("department".into(), "ou".into());
        map.email = vec!["mail".into()];
        let p = map_profile(&a, &map);
        assert_eq!(p.email.as_deref(), Some("ada@example.test"));
        assert_eq!(
            p.custom_attributes.get("department"),
            Some(&Value::String("Engines".into()))
        );
        // A FriendlyName never shadows an attribute whose Name it is.
        let b = assertion(&[
            ("mail", None, "direct@example.test"),
            (OID_MAIL, Some("mail"), "urn@example.test"),
        ]);
        assert_eq!(
            map_profile(&b, &map).email.as_deref(),
            Some("direct@example.test")
        );
        // displayName fills `name` when there are no first and last names.
        let c = assertion(&[(OID_DISPLAY_NAME, Some("displayName"), "Ada L.")]);
        let p = map_profile(&c, &AttributeMap::preset(SamlConnectionType::GenericSAML));
        assert_eq!(p.name.as_deref(), Some("Ada L."));
        assert_eq!(
            p.email.as_deref(),
            Some("nameid@example.test"),
            "NameID fallback"
        );
    }
}
