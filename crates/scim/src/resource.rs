//! Reading the common fields of a SCIM User or Group, and stamping `meta`.
//!
//! The directory engine maps SCIM resources onto directory users and groups; these accessors
//! put the IdP conventions (primary email choice, string booleans) in one place.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::etag::etag;
use crate::filter::get_ci;
use crate::validate::parse_bool;

/// A read-only view of a SCIM resource.
#[derive(Debug, Clone, Copy)]
pub struct Resource<'a>(pub &'a Value);

impl<'a> Resource<'a> {
    fn str_at(&self, name: &str) -> Option<&'a str> {
        get_ci(self.0, name).and_then(Value::as_str)
    }

    /// `id`.
    pub fn id(&self) -> Option<&'a str> {
        self.str_at("id")
    }

    /// `userName`.
    pub fn user_name(&self) -> Option<&'a str> {
        self.str_at("userName")
    }

    /// `externalId` (Entra: the object id; Okta: the Okta user/group id).
    pub fn external_id(&self) -> Option<&'a str> {
        self.str_at("externalId")
    }

    /// `displayName`.
    pub fn display_name(&self) -> Option<&'a str> {
        self.str_at("displayName")
    }

    /// `active`; absent means active (RFC 7643 gives no default; every IdP treats a user it
    /// created without `active` as active). `"False"` strings count as false.
    pub fn active(&self) -> bool {
        match get_ci(self.0, "active") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => parse_bool(s).unwrap_or(true),
            _ => true,
        }
    }

    /// `name.givenName`.
    pub fn given_name(&self) -> Option<&'a str> {
        get_ci(self.0, "name")
            .and_then(|n| get_ci(n, "givenName"))
            .and_then(Value::as_str)
    }

    /// `name.familyName`.
    pub fn family_name(&self) -> Option<&'a str> {
        get_ci(self.0, "name")
            .and_then(|n| get_ci(n, "familyName"))
            .and_then(Value::as_str)
    }

    /// The email WorkOS would pick: `primary: true`, else the first `work`, else the first
    /// `home`, else the first non-blank one.
    pub fn primary_email(&self) -> Option<&'a str> {
        let emails: Vec<&Value> = get_ci(self.0, "emails")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let value = |e: &&'a Value| {
            get_ci(e, "value")
                .and_then(Value::as_str)
                .filter(|v| !v.trim().is_empty())
        };
        let is_type = |e: &&Value, t: &str| {
            get_ci(e, "type")
                .and_then(Value::as_str)
                .is_some_and(|x| x.eq_ignore_ascii_case(t))
        };
        let primary = |e: &&Value| match get_ci(e, "primary") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => parse_bool(s).unwrap_or(false),
            _ => false,
        };
        emails
            .iter()
            .filter(|e| primary(e))
            .find_map(value)
            .or_else(|| emails.iter().filter(|e| is_type(e, "work")).find_map(value))
            .or_else(|| emails.iter().filter(|e| is_type(e, "home")).find_map(value))
            .or_else(|| emails.iter().find_map(value))
    }

    /// `members[].value`, in order, without duplicates.
    pub fn member_values(&self) -> Vec<&'a str> {
        let mut out: Vec<&'a str> = Vec::new();
        let members = get_ci(self.0, "members").and_then(Value::as_array);
        for v in members
            .into_iter()
            .flatten()
            .filter_map(|m| get_ci(m, "value").and_then(Value::as_str))
        {
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out
    }

    /// An attribute of an extension, e.g. the enterprise `department`.
    pub fn extension_attr(&self, urn: &str, name: &str) -> Option<&'a Value> {
        get_ci(self.0, urn).and_then(|e| get_ci(e, name))
    }
}

/// What the server knows about a stored resource, stamped into `meta` on every response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta<'a> {
    /// `User` or `Group`.
    pub resource_type: &'a str,
    /// When created.
    pub created: DateTime<Utc>,
    /// When last changed.
    pub last_modified: DateTime<Utc>,
    /// Absolute URL of the resource.
    pub location: String,
    /// Store version; becomes the weak ETag in `meta.version`.
    pub version: &'a str,
}

/// Sets `id` and `meta` on a resource (replacing whatever was there).
pub fn stamp(resource: &mut Value, id: &str, meta: &Meta<'_>) {
    let ts = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    if let Some(obj) = resource.as_object_mut() {
        obj.insert("id".into(), Value::String(id.into()));
        obj.insert(
            "meta".into(),
            json!({
                "resourceType": meta.resource_type,
                "created": ts(&meta.created),
                "lastModified": ts(&meta.last_modified),
                "location": meta.location,
                "version": etag(meta.version),
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_common_fields() {
        let u = json!({"id": "1", "UserName": "a@b", "externalId": "x", "active": "False",
                       "name": {"givenName": "G", "familyName": "F"}, "displayName": "D",
                       "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Eng"}});
        let r = Resource(&u);
        assert_eq!(
            (r.id(), r.user_name(), r.external_id(), r.display_name()),
            (Some("1"), Some("a@b"), Some("x"), Some("D"))
        );
        assert!(!r.active());
        assert_eq!((r.given_name(), r.family_name()), (Some("G"), Some("F")));
        assert_eq!(
            r.extension_attr(
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
                "DEPARTMENT"
            ),
            Some(&json!("Eng"))
        );
        assert!(Resource(&json!({})).active());
        assert!(Resource(&json!({"active": true})).active());
        assert!(!Resource(&json!({"active": false})).active());
    }

    #[test]
    fn picks_primary_email_like_workos() {
        let pick = |emails: Value| {
            Resource(&json!({"emails": emails}))
                .primary_email()
                .map(str::to_string)
        };
        assert_eq!(
            pick(json!([{"value": "h@x", "type": "home"}, {"value": "p@x", "primary": "true"}])),
            Some("p@x".into())
        );
        assert_eq!(
            pick(json!([{"value": "h@x", "type": "home"}, {"value": "w@x", "type": "Work"}])),
            Some("w@x".into())
        );
        assert_eq!(
            pick(json!([{"value": "o@x", "type": "other"}, {"value": "h@x", "type": "home"}])),
            Some("h@x".into())
        );
        assert_eq!(
            pick(json!([{"value": " ", "primary": true}, {"value": "o@x"}])),
            Some("o@x".into())
        );
        assert_eq!(pick(json!([])), None);
    }

    #[test]
    fn member_values_dedupe() {
        let g =
            json!({"members": [{"value": "a"}, {"value": "b"}, {"value": "a"}, {"display": "x"}]});
        assert_eq!(Resource(&g).member_values(), vec!["a", "b"]);
    }

    #[test]
    fn stamps_meta() {
        let mut u = json!({"userName": "x", "id": "client"});
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        stamp(
            &mut u,
            "srv-1",
            &Meta {
                resource_type: "User",
                created: t,
                last_modified: t,
                location: "https://h/Users/srv-1".into(),
                version: "4",
            },
        );
        assert_eq!(u["id"], "srv-1");
        assert_eq!(u["meta"]["created"], "2026-01-02T03:04:05.678Z");
        assert_eq!(u["meta"]["version"], "W/\"4\"");
        assert_eq!(u["meta"]["location"], "https://h/Users/srv-1");
    }
}
