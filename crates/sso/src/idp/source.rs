//! Where an IdP login's user comes from, and the one shape every source ends in.
//!
//! A login through idbridge's IdP has two halves: a *source* proves who the user is, and a
//! *protocol* answers the pending request (a SAML Response today; an OIDC authorization code
//! from `idp::oidc*`). The seam between them is [`AuthenticatedSubject`]: every source
//! (the directory password check in [`super::login`], the upstream SSO login in
//! [`super::broker`]) produces one, and every protocol renders its answer from it, so the
//! protocols never look at where the user came from.

use std::collections::BTreeMap;

use idbridge_model::{DirectoryUser, Profile};
use serde_json::{Map, Value};

/// The plain user fields a custom attribute can be taken from; besides these,
/// `custom_attributes.<key>` and `raw_attributes.<key>` (e.g. any LDAP attribute read).
pub const USER_FIELDS: [&str; 7] = [
    "idp_id",
    "email",
    "first_name",
    "last_name",
    "name",
    "username",
    "job_title",
];

/// Whether `field` names a user field a custom attribute can be taken from.
pub fn valid_user_field(field: &str) -> bool {
    if USER_FIELDS.contains(&field) {
        return true;
    }
    ["custom_attributes.", "raw_attributes."].iter().any(|p| {
        field
            .strip_prefix(p)
            .is_some_and(|k| !k.is_empty() && k.len() <= 256)
    })
}

/// A JSON value as attribute values: strings as they are, numbers and booleans as text,
/// arrays flattened one level; null and objects give nothing.
fn values_of(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Number(n) => vec![n.to_string()],
        Value::Bool(b) => vec![b.to_string()],
        Value::Array(a) => a
            .iter()
            .flat_map(|x| match x {
                Value::Array(_) => Vec::new(),
                other => values_of(other),
            })
            .collect(),
        Value::Null | Value::Object(_) => Vec::new(),
    }
}

/// The user's fields by [`valid_user_field`] name (empty values left out).
fn user_fields(
    plain: &[(&str, Option<&str>)],
    custom: &Map<String, Value>,
    raw: &Map<String, Value>,
) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for (k, v) in plain {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            out.insert((*k).to_owned(), vec![v.to_owned()]);
        }
    }
    for (prefix, map) in [("custom_attributes", custom), ("raw_attributes", raw)] {
        for (k, v) in map {
            let values = values_of(v);
            if !values.is_empty() {
                out.insert(format!("{prefix}.{k}"), values);
            }
        }
    }
    out
}

/// A user the IdP has authenticated, with what may be released about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedSubject {
    /// The organization whose IdP authenticated the user (always the pending request's).
    pub organization_id: String,
    /// The stable id released as `id` / `sub` (directory: objectGUID/entryUUID; broker: the
    /// upstream IdP's idp_id).
    pub idp_id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub groups: Vec<String>,
    /// How the user was authenticated (for events and logs).
    pub source: SubjectSource,
    /// The user's fields by [`valid_user_field`] name: what configured custom attributes
    /// (per SP / OIDC client) are taken from.
    pub fields: BTreeMap<String, Vec<String>>,
}

/// How the subject was authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectSource {
    /// A password bound against this LDAP/AD directory; the synced directory user.
    Directory {
        directory_id: String,
        directory_user_id: String,
    },
    /// An upstream SSO login through this connection; the profile it produced.
    Broker {
        connection_id: String,
        profile_id: String,
    },
}

impl AuthenticatedSubject {
    /// A directory user who proved their password, with their group names.
    pub fn from_directory_user(
        organization_id: &str,
        directory_id: &str,
        user: &DirectoryUser,
        groups: Vec<String>,
    ) -> Self {
        AuthenticatedSubject {
            organization_id: organization_id.to_owned(),
            idp_id: user.idp_id.clone(),
            email: user.email.clone(),
            first_name: user.first_name.clone(),
            last_name: user.last_name.clone(),
            groups,
            fields: user_fields(
                &[
                    ("idp_id", Some(&user.idp_id)),
                    ("email", user.email.as_deref()),
                    ("first_name", user.first_name.as_deref()),
                    ("last_name", user.last_name.as_deref()),
                    ("name", user.name.as_deref()),
                    ("username", user.username.as_deref()),
                    ("job_title", user.job_title.as_deref()),
                ],
                &user.custom_attributes,
                &user.raw_attributes,
            ),
            source: SubjectSource::Directory {
                directory_id: directory_id.to_owned(),
                directory_user_id: user.id.clone(),
            },
        }
    }

    /// The verified profile of an upstream login (broker mode).
    pub fn from_profile(organization_id: &str, profile: &Profile) -> Self {
        AuthenticatedSubject {
            organization_id: organization_id.to_owned(),
            idp_id: profile.idp_id.clone(),
            email: Some(profile.email.clone()).filter(|e| !e.is_empty()),
            first_name: profile.first_name.clone(),
            last_name: profile.last_name.clone(),
            groups: profile.groups.clone(),
            fields: user_fields(
                &[
                    ("idp_id", Some(&profile.idp_id)),
                    ("email", Some(&profile.email)),
                    ("first_name", profile.first_name.as_deref()),
                    ("last_name", profile.last_name.as_deref()),
                ],
                &profile.custom_attributes,
                &profile.raw_attributes,
            ),
            source: SubjectSource::Broker {
                connection_id: profile.connection_id.clone(),
                profile_id: profile.id.clone(),
            },
        }
    }

    /// The configured custom attributes (name → field) this user has values for, in name order.
    pub fn custom_attributes<'a>(
        &'a self,
        map: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = (&'a str, &'a [String])> + 'a {
        map.iter().filter_map(|(name, field)| {
            self.fields
                .get(field)
                .map(|v| (name.as_str(), v.as_slice()))
        })
    }

    /// The `data` fields of `idp.login_succeeded` that say who and how.
    pub fn event_fields(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "idp_id": self.idp_id,
            "email": self.email,
        });
        if let Some(o) = v.as_object_mut() {
            match &self.source {
                SubjectSource::Directory {
                    directory_id,
                    directory_user_id,
                } => {
                    o.insert("source".into(), "directory".into());
                    o.insert("directory_id".into(), directory_id.clone().into());
                    o.insert("directory_user_id".into(), directory_user_id.clone().into());
                }
                SubjectSource::Broker {
                    connection_id,
                    profile_id,
                } => {
                    o.insert("source".into(), "broker".into());
                    o.insert("connection_id".into(), connection_id.clone().into());
                    o.insert("profile_id".into(), profile_id.clone().into());
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_fields_are_named_and_flattened() {
        assert!(valid_user_field("username"));
        assert!(valid_user_field("raw_attributes.cn"));
        assert!(valid_user_field("custom_attributes.department"));
        assert!(!valid_user_field("raw_attributes."));
        assert!(!valid_user_field("password"));
        assert!(!valid_user_field("raw_attributes"));
        let raw: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "cn": ["Alice Archer"], "uidNumber": 1001, "empty": [], "nested": {"a": 1}
        }))
        .unwrap();
        let f = user_fields(
            &[("username", Some("alice")), ("job_title", None)],
            &Map::new(),
            &raw,
        );
        assert_eq!(f["username"], ["alice"]);
        assert_eq!(f["raw_attributes.cn"], ["Alice Archer"]);
        assert_eq!(f["raw_attributes.uidNumber"], ["1001"]);
        assert!(!f.contains_key("job_title"));
        assert!(!f.contains_key("raw_attributes.empty"));
        assert!(!f.contains_key("raw_attributes.nested"));
    }
}
