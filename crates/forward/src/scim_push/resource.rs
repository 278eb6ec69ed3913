//! Directory users and groups as the SCIM resources a WorkOS "Custom SCIM v2.0" directory
//! accepts, and WorkOS's rules checked before anything is sent (workos-api.md §8.1).
//!
//! The user resource is built so that a SCIM server with WorkOS's directory semantics (a second
//! idbridge reads it with `idbridge_scim::router::user_input`) shows the same directory user:
//!
//! | directory user | SCIM |
//! |---|---|
//! | `idp_id` | `externalId` |
//! | `username` (else `email`) | `userName` |
//! | `first_name`, `last_name` | `name.givenName`, `name.familyName` |
//! | `name` | `displayName` |
//! | `emails` (`email` marked primary) | `emails` |
//! | `job_title` | `title` |
//! | `state` | `active` (a JSON boolean) |
//! | `custom_attributes.department_name`, `cost_center_name`, `division_name`, `employee_number`, `organization` | the enterprise extension's `department`, `costCenter`, `division`, `employeeNumber`, `organization` |
//! | `custom_attributes.employee_type` | `userType` |
//! | every other custom attribute | `<custom_attributes_schema>.<name>` (see [`super::TargetOptions`]) |
//!
//! Roles are not sent: WorkOS computes them from group memberships and the target's own role
//! mappings, and groups keep their `externalId` (= idp_id) and `displayName`, which is what role
//! mappings name. `raw_attributes` are not sent (deprecated; WorkOS returns `{}`).

use idbridge_directory::{StoredGroup, StoredUser};
use idbridge_model::UserState;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// Core User schema.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// Core Group schema.
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// Enterprise User extension.
pub const ENTERPRISE_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// PATCH message schema.
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// WorkOS refuses bodies above 2,000 KB (413).
pub const MAX_BODY_BYTES: usize = 2_000 * 1024;

/// WorkOS predefined custom attributes that travel in the enterprise extension.
const ENTERPRISE_FIELDS: &[(&str, &str)] = &[
    ("department_name", "department"),
    ("cost_center_name", "costCenter"),
    ("division_name", "division"),
    ("employee_number", "employeeNumber"),
    ("organization", "organization"),
];

/// Custom attributes carried by core fields (`emails`, `userName`, `title`, `userType`), so
/// they are not repeated in the custom-attributes object.
const CORE_CARRIED: &[&str] = &["emails", "username", "job_title", "employee_type"];

/// A WorkOS rule the object breaks: it is reported, not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuleViolation(pub String);

/// A user resource ready to send, with the values the forwarder keeps about it.
#[derive(Debug, Clone, PartialEq)]
pub struct UserBody {
    /// The resource (without `id`).
    pub resource: Value,
    /// The `userName`, case-folded.
    pub user_name_folded: String,
    /// Fingerprint of the resource.
    pub fingerprint: String,
}

fn non_blank(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// Whether `s` looks like an email address (WorkOS accepts a user without emails when its
/// `userName` is one).
pub fn looks_like_email(s: &str) -> bool {
    let s = s.trim();
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !s.chars().any(char::is_whitespace)
                && !domain.contains('@')
        }
        None => false,
    }
}

/// The `userName` sent for a user: its username, else its email.
pub fn user_name_of(u: &StoredUser) -> Option<&str> {
    non_blank(u.user.username.as_deref()).or_else(|| non_blank(u.user.email.as_deref()))
}

/// The SCIM `emails`: the user's emails with `email` marked primary (only it), or `email`
/// alone when the list is empty.
fn emails_of(u: &StoredUser) -> Vec<Value> {
    let primary = non_blank(u.user.email.as_deref());
    let mut out: Vec<Value> = Vec::with_capacity(u.user.emails.len().max(1));
    let mut primary_seen = false;
    for e in &u.user.emails {
        let Some(v) = non_blank(e.value.as_deref()) else {
            continue;
        };
        let is_primary = match primary {
            Some(p) => !primary_seen && v.eq_ignore_ascii_case(p),
            None => e.primary,
        };
        primary_seen |= is_primary;
        let mut m = Map::new();
        m.insert("value".into(), Value::String(v.to_owned()));
        if let Some(t) = &e.email_type {
            m.insert("type".into(), Value::String(t.clone()));
        }
        m.insert("primary".into(), Value::Bool(is_primary));
        out.push(Value::Object(m));
    }
    if let (Some(p), false) = (primary, primary_seen) {
        out.insert(0, json!({"value": p, "type": "work", "primary": true}));
    }
    out
}

/// Builds the user resource and checks WorkOS's rules. `custom_schema` is where custom
/// attributes without a standard field go (`None`: not sent).
pub fn user_body(u: &StoredUser, custom_schema: Option<&str>) -> Result<UserBody, RuleViolation> {
    let user = &u.user;
    let user_name = user_name_of(u).ok_or_else(|| {
        RuleViolation(
            "the user has neither a username nor an email, and WorkOS requires a non-empty \
             userName: give the user a username or an email in the source"
                .into(),
        )
    })?;
    let emails = emails_of(u);
    if emails.is_empty() && !looks_like_email(user_name) {
        return Err(RuleViolation(format!(
            "the user has no email and its userName {user_name:?} is not an email address; \
             WorkOS requires an email unless userName is one (it would answer 400 \
             \"Required attributes missing: emails\"): add an email in the source"
        )));
    }
    let mut r = Map::new();
    let mut schemas = vec![Value::String(USER_SCHEMA.into())];
    r.insert("externalId".into(), Value::String(user.idp_id.clone()));
    r.insert("userName".into(), Value::String(user_name.to_owned()));
    let mut name = Map::new();
    if let Some(g) = &user.first_name {
        name.insert("givenName".into(), Value::String(g.clone()));
    }
    if let Some(f) = &user.last_name {
        name.insert("familyName".into(), Value::String(f.clone()));
    }
    if let Some(n) = &user.name {
        name.insert("formatted".into(), Value::String(n.clone()));
        r.insert("displayName".into(), Value::String(n.clone()));
    }
    if !name.is_empty() {
        r.insert("name".into(), Value::Object(name));
    }
    if let Some(t) = &user.job_title {
        r.insert("title".into(), Value::String(t.clone()));
    }
    r.insert(
        "active".into(),
        Value::Bool(user.state == UserState::Active),
    );
    if !emails.is_empty() {
        r.insert("emails".into(), Value::Array(emails));
    }
    let custom = &user.custom_attributes;
    if let Some(Value::String(t)) = custom.get("employee_type") {
        r.insert("userType".into(), Value::String(t.clone()));
    }
    let mut enterprise = Map::new();
    for (name, field) in ENTERPRISE_FIELDS {
        match custom.get(*name) {
            None | Some(Value::Null) => {}
            Some(v) => {
                enterprise.insert((*field).to_owned(), scalar_text(v));
            }
        }
    }
    let mut extra = Map::new();
    if let Some(schema) = custom_schema {
        for (name, v) in custom {
            if v.is_null()
                || CORE_CARRIED.contains(&name.as_str())
                || ENTERPRISE_FIELDS.iter().any(|(n, _)| n == name)
            {
                continue;
            }
            extra.insert(name.clone(), v.clone());
        }
        if !extra.is_empty() && schema.eq_ignore_ascii_case(ENTERPRISE_SCHEMA) {
            for (k, v) in std::mem::take(&mut extra) {
                enterprise.entry(k).or_insert(v);
            }
        }
        if !extra.is_empty() {
            schemas.push(Value::String(schema.to_owned()));
            r.insert(schema.to_owned(), Value::Object(extra));
        }
    }
    if !enterprise.is_empty() {
        schemas.insert(1, Value::String(ENTERPRISE_SCHEMA.into()));
        r.insert(ENTERPRISE_SCHEMA.into(), Value::Object(enterprise));
    }
    r.insert("schemas".into(), Value::Array(schemas));
    let resource = Value::Object(r);
    let fingerprint = fingerprint(&resource)?;
    Ok(UserBody {
        user_name_folded: user_name.to_lowercase(),
        resource,
        fingerprint,
    })
}

/// Enterprise attributes are strings; a number or boolean from an LDAP/CSV source is sent as
/// its text.
fn scalar_text(v: &Value) -> Value {
    match v {
        Value::String(_) => v.clone(),
        Value::Number(n) => Value::String(n.to_string()),
        Value::Bool(b) => Value::String(b.to_string()),
        other => other.clone(),
    }
}

/// A group resource without members (`displayName`, `externalId`), and its fingerprint.
pub fn group_body(g: &StoredGroup) -> Result<(Value, String), RuleViolation> {
    let name = non_blank(Some(g.group.name.as_str())).ok_or_else(|| {
        RuleViolation(
            "the group has no name and WorkOS requires a displayName: name the group in the \
             source"
                .into(),
        )
    })?;
    let resource = json!({
        "schemas": [GROUP_SCHEMA],
        "externalId": g.group.idp_id,
        "displayName": name,
    });
    let fp = fingerprint(&resource)?;
    Ok((resource, fp))
}

/// The group resource with `members` (remote user ids).
pub fn group_with_members(base: &Value, member_remote_ids: &[String]) -> Value {
    let mut r = base.clone();
    if let Some(o) = r.as_object_mut() {
        o.insert(
            "members".into(),
            Value::Array(
                member_remote_ids
                    .iter()
                    .map(|id| json!({"value": id}))
                    .collect(),
            ),
        );
    }
    r
}

/// A PATCH body.
pub fn patch_body(operations: Vec<Value>) -> Value {
    json!({"schemas": [PATCH_SCHEMA], "Operations": operations})
}

/// `PATCH active:false`.
pub fn deactivate_patch() -> Value {
    patch_body(vec![json!({"op": "replace", "value": {"active": false}})])
}

/// Replaces a group's own attributes (members untouched).
pub fn group_attributes_patch(base: &Value) -> Value {
    patch_body(vec![json!({"op": "replace", "value": {
        "displayName": base["displayName"],
        "externalId": base["externalId"],
    }})])
}

/// Adds members by remote id.
pub fn add_members_patch(remote_ids: &[String]) -> Value {
    patch_body(vec![json!({
        "op": "add",
        "path": "members",
        "value": remote_ids.iter().map(|id| json!({"value": id})).collect::<Vec<_>>(),
    })])
}

/// Removes one member by remote id.
pub fn remove_member_patch(remote_id: &str) -> Value {
    let escaped = remote_id.replace('\\', "\\\\").replace('"', "\\\"");
    patch_body(vec![json!({
        "op": "remove",
        "path": format!("members[value eq \"{escaped}\"]"),
    })])
}

/// Serializes and checks the 2,000 KB limit.
pub fn encode(body: &Value) -> Result<Vec<u8>, RuleViolation> {
    let bytes = serde_json::to_vec(body)
        .map_err(|e| RuleViolation(format!("the resource does not serialize: {e}")))?;
    if bytes.len() > MAX_BODY_BYTES {
        return Err(RuleViolation(format!(
            "the SCIM body is {} KB, above WorkOS's 2,000 KB limit (it would answer 413): \
             shorten the object's attributes",
            bytes.len() / 1024
        )));
    }
    Ok(bytes)
}

fn fingerprint(resource: &Value) -> Result<String, RuleViolation> {
    let bytes = encode(resource)?;
    Ok(hex::encode(&Sha256::digest(&bytes)[..16]))
}

/// A SCIM filter `attr eq "value"` (quotes and backslashes escaped).
pub fn eq_filter(attr: &str, value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("{attr} eq \"{escaped}\"")
}

/// Reads a string attribute case-insensitively (SCIM names are case-insensitive).
pub fn get_ci<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    let o = v.as_object()?;
    o.get(name).or_else(|| {
        o.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// The differences between what would be sent (`desired`) and a remote resource, by path
/// (attributes the remote adds, `id`, `meta`, `schemas`, `members`, `groups` aside). Strings
/// compare case-sensitively except `userName`, emails and URNs' keys.
pub fn differences(desired: &Value, remote: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_into("", desired, remote, &mut out);
    out
}

fn diff_into(path: &str, desired: &Value, remote: &Value, out: &mut Vec<String>) {
    match desired {
        Value::Object(d) => {
            for (k, dv) in d {
                if path.is_empty()
                    && ["schemas", "id", "meta", "members", "groups"]
                        .iter()
                        .any(|s| k.eq_ignore_ascii_case(s))
                {
                    continue;
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match get_ci(remote, k) {
                    Some(rv) => diff_into(&p, dv, rv, out),
                    None if dv.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        Value::Array(d) => {
            // Multi-valued attributes: compare as sets of their `value`s (order is not kept by
            // every server), and primary flags.
            let key = |v: &Value| -> String {
                match get_ci(v, "value") {
                    Some(Value::String(s)) => s.to_lowercase(),
                    _ => v.to_string(),
                }
            };
            let mut dk: Vec<(String, bool)> = d.iter().map(|v| (key(v), primary(v))).collect();
            let mut rk: Vec<(String, bool)> = remote
                .as_array()
                .map(|a| a.iter().map(|v| (key(v), primary(v))).collect())
                .unwrap_or_default();
            dk.sort();
            rk.sort();
            if dk != rk {
                out.push(path.to_owned());
            }
        }
        Value::String(s) => {
            let same = match remote {
                Value::String(r) if path.eq_ignore_ascii_case("userName") => {
                    r.eq_ignore_ascii_case(s)
                }
                Value::String(r) => r == s,
                _ => false,
            };
            if !same {
                out.push(path.to_owned());
            }
        }
        other => {
            let same = match (other, remote) {
                (Value::Bool(a), Value::String(b)) => b.eq_ignore_ascii_case(&a.to_string()),
                (a, b) => a == b,
            };
            if !same {
                out.push(path.to_owned());
            }
        }
    }
}

fn primary(v: &Value) -> bool {
    match get_ci(v, "primary") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idbridge_model::tag::{DirectoryGroupTag, DirectoryUserTag};
    use idbridge_model::{DirectoryGroup, DirectoryUser, DirectoryUserEmail, Timestamp};

    pub(crate) fn user(username: Option<&str>, email: Option<&str>) -> StoredUser {
        StoredUser {
            user: DirectoryUser {
                object: DirectoryUserTag,
                id: "directory_user_01".into(),
                directory_id: "directory_01".into(),
                organization_id: "org_01".into(),
                idp_id: "idp-1".into(),
                email: email.map(str::to_owned),
                first_name: Some("Jane".into()),
                last_name: Some("Doe".into()),
                name: Some("Jane Doe".into()),
                emails: email
                    .map(|e| {
                        vec![DirectoryUserEmail {
                            primary: true,
                            email_type: Some("work".into()),
                            value: Some(e.into()),
                        }]
                    })
                    .unwrap_or_default(),
                username: username.map(str::to_owned),
                job_title: Some("Engineer".into()),
                state: UserState::Active,
                custom_attributes: Map::new(),
                raw_attributes: Map::new(),
                role: None,
                roles: None,
                created_at: Timestamp::from_millis(0),
                updated_at: Timestamp::from_millis(0),
            },
            version: 1,
            unique_keys: Vec::new(),
        }
    }

    #[test]
    fn workos_rules_refuse_what_workos_would_refuse() {
        // No username, no email.
        assert!(user_body(&user(None, None), None).is_err());
        // A username that is not an email and no email.
        let e = user_body(&user(Some("jdoe"), None), None).expect_err("no email");
        assert!(e.0.contains("no email"), "{e}");
        // A username that is an email: accepted without emails.
        assert!(user_body(&user(Some("jdoe@example.com"), None), None).is_ok());
        // Username not an email but an email present: accepted.
        let b = user_body(&user(Some("jdoe"), Some("j@example.com")), None).expect("ok");
        assert_eq!(b.resource["userName"], "jdoe");
        assert_eq!(b.resource["active"], Value::Bool(true));
        // No username: the email is the userName.
        let b = user_body(&user(None, Some("J@Example.com")), None).expect("ok");
        assert_eq!(b.resource["userName"], "J@Example.com");
        assert_eq!(b.user_name_folded, "j@example.com");
        // Blank username counts as none.
        let mut u = user(Some("  "), None);
        u.user.email = None;
        assert!(user_body(&u, None).is_err());
        // A group needs a displayName.
        let g = StoredGroup {
            group: DirectoryGroup {
                object: DirectoryGroupTag,
                id: "directory_group_01".into(),
                idp_id: "g1".into(),
                directory_id: "directory_01".into(),
                organization_id: "org_01".into(),
                name: " ".into(),
                raw_attributes: Map::new(),
                created_at: Timestamp::from_millis(0),
                updated_at: Timestamp::from_millis(0),
            },
            version: 1,
            unique_keys: Vec::new(),
        };
        assert!(group_body(&g).is_err());
        // Body size.
        let mut big = user(Some("a@example.com"), Some("a@example.com"));
        big.user
            .custom_attributes
            .insert("blob".into(), Value::String("x".repeat(MAX_BODY_BYTES)));
        let e =
            user_body(&big, Some(crate::scim_push::CUSTOM_ATTRIBUTES_SCHEMA)).expect_err("too big");
        assert!(e.0.contains("2,000 KB"), "{e}");
        // The same user without the custom schema fits.
        assert!(user_body(&big, None).is_ok());
    }

    #[test]
    fn primary_email_is_the_users_email() {
        let mut u = user(Some("j"), Some("b@example.com"));
        u.user.emails = vec![
            DirectoryUserEmail {
                primary: true,
                email_type: Some("home".into()),
                value: Some("a@example.com".into()),
            },
            DirectoryUserEmail {
                primary: false,
                email_type: Some("work".into()),
                value: Some("b@example.com".into()),
            },
        ];
        let b = user_body(&u, None).expect("ok");
        assert_eq!(
            b.resource["emails"],
            json!([{"value": "a@example.com", "type": "home", "primary": false},
                   {"value": "b@example.com", "type": "work", "primary": true}])
        );
    }

    #[test]
    fn custom_attributes_go_to_enterprise_or_the_custom_schema() {
        let mut u = user(Some("j@example.com"), Some("j@example.com"));
        let c = &mut u.user.custom_attributes;
        c.insert("department_name".into(), json!("Eng"));
        c.insert("employee_number".into(), json!(42));
        c.insert("employee_type".into(), json!("Contractor"));
        c.insert("license_tier".into(), json!("gold"));
        c.insert("unmapped".into(), Value::Null);
        c.insert("job_title".into(), json!("Engineer"));
        let b = user_body(&u, Some(crate::scim_push::CUSTOM_ATTRIBUTES_SCHEMA)).expect("ok");
        let r = &b.resource;
        assert_eq!(
            r[ENTERPRISE_SCHEMA],
            json!({"department": "Eng", "employeeNumber": "42"})
        );
        assert_eq!(r["userType"], "Contractor");
        assert_eq!(
            r[crate::scim_push::CUSTOM_ATTRIBUTES_SCHEMA],
            json!({"license_tier": "gold"})
        );
        assert_eq!(
            r["schemas"],
            json!([
                USER_SCHEMA,
                ENTERPRISE_SCHEMA,
                crate::scim_push::CUSTOM_ATTRIBUTES_SCHEMA
            ])
        );
        // Into the enterprise object instead.
        let b = user_body(&u, Some(ENTERPRISE_SCHEMA)).expect("ok");
        assert_eq!(b.resource[ENTERPRISE_SCHEMA]["license_tier"], "gold");
        assert_eq!(
            b.resource["schemas"],
            json!([USER_SCHEMA, ENTERPRISE_SCHEMA])
        );
        // Not at all.
        let b = user_body(&u, None).expect("ok");
        assert!(b
            .resource
            .get(crate::scim_push::CUSTOM_ATTRIBUTES_SCHEMA)
            .is_none());
    }

    #[test]
    fn differences_ignore_server_fields_and_order() {
        let desired = json!({"schemas": [USER_SCHEMA], "userName": "A@x.com", "active": true,
            "name": {"givenName": "A"}, "emails": [{"value": "a@x.com", "primary": true},
            {"value": "b@x.com", "primary": false}]});
        let remote = json!({"id": "1", "meta": {}, "userName": "a@x.com", "active": "True",
            "name": {"givenName": "A", "familyName": "B"},
            "emails": [{"value": "B@x.com", "primary": false}, {"value": "a@x.com", "primary": true}]});
        assert!(differences(&desired, &remote).is_empty());
        let remote2 = json!({"userName": "a@x.com", "active": false, "name": {"givenName": "Z"},
            "emails": []});
        assert_eq!(
            differences(&desired, &remote2),
            ["active", "name.givenName", "emails"]
        );
    }

    #[test]
    fn filters_and_patches_escape_values() {
        assert_eq!(eq_filter("userName", "a\"b"), "userName eq \"a\\\"b\"");
        assert_eq!(
            remove_member_patch("x\"y")["Operations"][0]["path"],
            "members[value eq \"x\\\"y\"]"
        );
        assert!(looks_like_email("a@b.co"));
        assert!(!looks_like_email("a@b"));
        assert!(!looks_like_email("jdoe"));
        assert!(!looks_like_email("a b@c.d"));
    }
}
