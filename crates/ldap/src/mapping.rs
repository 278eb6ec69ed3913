//! LDAP entries → the engine's source-agnostic inputs, per flavor.
//!
//! The `source` / `raw_attributes` of a record hold every attribute read except the change
//! tracker (`modifyTimestamp` / `uSNChanged`), so a membership change that only bumps the
//! tracker does not produce a spurious `dsync.user.updated`. Keys are sorted so the same entry
//! always maps to the same input.

use std::collections::BTreeMap;

use idbridge_directory::{GroupInput, UserInput};
use idbridge_model::{join_name, DirectoryUserEmail};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::ad::{guid_to_string, uac_disabled};
use crate::client::Entry;
use crate::settings::{Flavor, Resolved};

/// Unique-key index holding each record's normalized DN (lets a delta resolve `member` DNs
/// through the engine without reading the whole tree).
pub const DN_KEY: &str = "ldap.dn";

/// A user as read.
#[derive(Debug, Clone)]
pub struct UserRead {
    /// The engine input.
    pub input: UserInput,
    /// Normalized DN.
    pub dn: String,
    /// Lower-cased value of the `uid` attribute (for `memberUid`).
    pub uid: Option<String>,
    /// Change tracker value.
    pub changed: Option<String>,
}

/// A group as read.
#[derive(Debug, Clone)]
pub struct GroupRead {
    /// The engine input.
    pub input: GroupInput,
    /// Normalized DN.
    pub dn: String,
    /// Normalized member DNs (users or nested groups).
    pub member_dns: Vec<String>,
    /// Lower-cased `memberUid` values.
    pub member_uids: Vec<String>,
    /// Change tracker value.
    pub changed: Option<String>,
}

/// Lower-cases a DN and drops blanks around separators, so `CN=Jane Doe, OU=People` and
/// `cn=jane doe,ou=people` compare equal. (Escaped separators are left as they are.)
pub fn normalize_dn(dn: &str) -> String {
    let dn = dn.trim();
    // The common case, an ASCII DN without blanks around separators or escapes, is a plain
    // lower-casing (a full sync normalizes every user's and member's DN).
    if dn.is_ascii() {
        let b = dn.as_bytes();
        let blank_at_separator = b.windows(2).any(|w| {
            matches!(
                (w[0], w[1]),
                (b' ', b',' | b'=' | b'+') | (b',' | b'=' | b'+', b' ')
            )
        });
        if !blank_at_separator && !b.contains(&b'\\') {
            return dn.to_ascii_lowercase();
        }
    }
    let mut out = String::with_capacity(dn.len());
    let mut chars = dn.chars().peekable();
    let mut escaped = false;
    while let Some(c) = chars.next() {
        if escaped {
            out.extend(c.to_lowercase());
            escaped = false;
            continue;
        }
        match c {
            '\\' => {
                out.push(c);
                escaped = true;
            }
            ',' | '=' | '+' => {
                while out.ends_with(' ') {
                    out.pop();
                }
                out.push(c);
                while chars.peek() == Some(&' ') {
                    chars.next();
                }
            }
            _ => out.extend(c.to_lowercase()),
        }
    }
    out
}

fn values<'a>(e: &'a Entry, name: &str) -> Option<&'a Vec<String>> {
    e.values(name).filter(|v| !v.is_empty())
}

fn first(e: &Entry, name: &str) -> Option<String> {
    values(e, name)
        .and_then(|v| v.first())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn bin_first<'a>(e: &'a Entry, name: &str) -> Option<&'a [u8]> {
    e.bin_values(name)
        .and_then(|v| v.first())
        .map(|v| v.as_slice())
}

/// What a full sync needs of a user entry before the engine has decided whether the user
/// changed; the input itself is built only for users whose [`Mapper::user_digest`] differs.
#[derive(Debug, Clone)]
pub struct UserHead {
    /// The stable id.
    pub idp_id: String,
    /// Whether the entry maps to an active user.
    pub active: bool,
    /// Normalized DN.
    pub dn: String,
    /// Lower-cased value of the `uid` attribute (for `memberUid`).
    pub uid: Option<String>,
    /// Change tracker value.
    pub changed: Option<String>,
}

/// Turns entries into inputs for one directory's settings.
#[derive(Debug, Clone)]
pub struct Mapper {
    r: Resolved,
    /// Hash of everything besides the entry that [`Mapper::user`] reads (the resolved names),
    /// the start of every [`Mapper::user_digest`].
    settings_digest: [u8; 32],
}

/// Bumped when [`Mapper::user`] changes how it builds a user from the same entry.
const USER_DIGEST_VERSION: &[u8] = b"idbridge-ldap-user-v1";

impl Mapper {
    /// A mapper for these resolved names.
    pub fn new(r: Resolved) -> Self {
        let mut h = Sha256::new();
        h.update(USER_DIGEST_VERSION);
        // Every field of the resolved names: a change of any of them (or of how they print)
        // changes every digest, which costs one rebuild of each user and is never missed.
        h.update(format!("{r:?}").as_bytes());
        Mapper {
            r,
            settings_digest: h.finalize().into(),
        }
    }

    /// The resolved names.
    pub fn resolved(&self) -> &Resolved {
        &self.r
    }

    /// The stable id: AD's binary `objectGUID` as a canonical GUID; otherwise the attribute's
    /// text (`entryUUID`). `None` when the entry has none (it is then skipped, not invented).
    pub fn id_of(&self, e: &Entry) -> Option<String> {
        if self.r.flavor == Flavor::ActiveDirectory && self.r.id.eq_ignore_ascii_case("objectGUID")
        {
            let raw = bin_first(e, &self.r.id)
                .map(<[u8]>::to_vec)
                .or_else(|| first(e, &self.r.id).map(String::into_bytes))?;
            return guid_to_string(&raw);
        }
        first(e, &self.r.id).map(|s| s.to_ascii_lowercase())
    }

    fn source(&self, e: &Entry, skip: &[&str]) -> Map<String, Value> {
        let mut sorted: BTreeMap<String, Value> = BTreeMap::new();
        sorted.insert("dn".into(), Value::String(e.dn.clone()));
        for (k, v) in &e.attrs {
            if k.eq_ignore_ascii_case(&self.r.changed)
                || skip.iter().any(|s| k.eq_ignore_ascii_case(s))
            {
                continue;
            }
            let val = match v.as_slice() {
                [one] => Value::String(one.clone()),
                many => Value::Array(many.iter().cloned().map(Value::String).collect()),
            };
            sorted.insert(k.clone(), val);
        }
        if let Some(id) = self.id_of(e) {
            sorted.insert(self.r.id.clone(), Value::String(id));
        }
        sorted.into_iter().collect()
    }

    /// Whether the entry is an active (not disabled) user: AD's `userAccountControl`, or the
    /// generic flavor's disabled attribute.
    pub fn active(&self, e: &Entry) -> bool {
        if self.r.flavor == Flavor::ActiveDirectory {
            if let Some(uac) = first(e, "userAccountControl") {
                return !uac_disabled(&uac).unwrap_or(false);
            }
        }
        if let Some(attr) = &self.r.disabled {
            if let Some(vals) = values(e, attr) {
                if self.r.disabled_values.is_empty() {
                    return false;
                }
                return !vals.iter().any(|v| {
                    self.r
                        .disabled_values
                        .iter()
                        .any(|d| d.eq_ignore_ascii_case(v.trim()))
                });
            }
        }
        true
    }

    /// The parts of a user entry a full sync keeps up front; `None` (with a warning) when the
    /// entry has no stable id.
    pub fn user_head(&self, e: &Entry) -> Option<UserHead> {
        let Some(idp_id) = self.id_of(e) else {
            tracing::warn!(dn = %e.dn, attr = %self.r.id, "user entry without a stable id; skipped");
            return None;
        };
        Some(UserHead {
            idp_id,
            active: self.active(e),
            dn: normalize_dn(&e.dn),
            uid: first(e, &self.r.uid).map(|s| s.to_lowercase()),
            changed: first(e, &self.r.changed),
        })
    }

    /// SHA-256 of everything [`Mapper::user`] builds a user from: the resolved names, the DN
    /// and every attribute and value but the change tracker (which [`Mapper::user`] leaves
    /// out too, so a bump of it alone is no change). Equal digests build equal users, which
    /// lets the engine skip an unchanged user without building it. Attribute names are
    /// sorted (the entry is a hash map); values keep the server's order, as `user` does.
    pub fn user_digest(&self, e: &Entry) -> [u8; 32] {
        fn field(h: &mut Sha256, bytes: &[u8]) {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        }
        fn attrs<V: AsRef<[u8]>>(h: &mut Sha256, list: &[(String, Vec<V>)], skip: &str) {
            let mut sorted: Vec<&(String, Vec<V>)> = list
                .iter()
                .filter(|(k, _)| !k.eq_ignore_ascii_case(skip))
                .collect();
            sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            h.update((sorted.len() as u64).to_le_bytes());
            for (name, values) in sorted {
                field(h, name.as_bytes());
                h.update((values.len() as u64).to_le_bytes());
                for v in values {
                    field(h, v.as_ref());
                }
            }
        }
        let mut h = Sha256::new();
        h.update(self.settings_digest);
        field(&mut h, e.dn.as_bytes());
        attrs(&mut h, &e.attrs, &self.r.changed);
        attrs(&mut h, &e.bin_attrs, &self.r.changed);
        h.finalize().into()
    }

    /// A user entry; `None` (with a warning) when it has no stable id.
    pub fn user(&self, e: &Entry) -> Option<UserRead> {
        let head = self.user_head(e)?;
        let email = first(e, &self.r.email);
        let source = self.source(e, &[]);
        let first_name = first(e, &self.r.first_name);
        let last_name = first(e, &self.r.last_name);
        let name = first(e, &self.r.display_name)
            .or_else(|| join_name(first_name.as_deref(), last_name.as_deref()));
        let emails = values(e, &self.r.email)
            .map(|v| {
                v.iter()
                    .enumerate()
                    .map(|(i, m)| DirectoryUserEmail {
                        primary: i == 0,
                        email_type: Some("work".into()),
                        value: Some(m.trim().to_owned()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let input = UserInput {
            idp_id: head.idp_id,
            email,
            first_name,
            last_name,
            name,
            emails,
            username: first(e, &self.r.username),
            job_title: first(e, &self.r.job_title),
            active: head.active,
            raw_attributes: source.clone(),
            source: Value::Object(source),
            unique_keys: vec![(DN_KEY.into(), head.dn.clone())],
        };
        Some(UserRead {
            input,
            dn: head.dn,
            uid: head.uid,
            changed: head.changed,
        })
    }

    /// A group entry (member lists already completed for AD ranges).
    pub fn group(&self, e: &Entry) -> Option<GroupRead> {
        let Some(idp_id) = self.id_of(e) else {
            tracing::warn!(dn = %e.dn, attr = %self.r.id, "group entry without a stable id; skipped");
            return None;
        };
        let dn = normalize_dn(&e.dn);
        let mut member_dns = Vec::new();
        for m in &self.r.member_dn {
            if let Some(v) = values(e, m) {
                member_dns.extend(v.iter().map(|d| normalize_dn(d)));
            }
        }
        let member_uids = self
            .r
            .member_uid
            .as_deref()
            .and_then(|m| values(e, m))
            .map(|v| v.iter().map(|u| u.trim().to_lowercase()).collect())
            .unwrap_or_default();
        let mut skip: Vec<&str> = self.r.member_dn.iter().map(String::as_str).collect();
        if let Some(m) = &self.r.member_uid {
            skip.push(m);
        }
        let source = self.source(e, &skip);
        let name = first(e, &self.r.group_name).unwrap_or_else(|| e.dn.clone());
        Some(GroupRead {
            input: GroupInput {
                idp_id,
                name,
                raw_attributes: source.clone(),
                source: Value::Object(source),
                unique_keys: vec![(DN_KEY.into(), dn.clone())],
            },
            dn,
            member_dns,
            member_uids,
            changed: first(e, &self.r.changed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::LdapSettings;

    fn entry(dn: &str, attrs: &[(&str, &[&str])]) -> Entry {
        Entry {
            dn: dn.into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            bin_attrs: Vec::new(),
        }
    }

    #[test]
    fn dn_normalization() {
        assert_eq!(
            normalize_dn(" CN=Jane Doe , OU=People,DC=Example,DC=Test"),
            "cn=jane doe,ou=people,dc=example,dc=test"
        );
        assert_eq!(normalize_dn("cn=a\\, b,dc=x"), "cn=a\\, b,dc=x");
        // The ASCII fast path and the general path agree.
        assert_eq!(normalize_dn("  UID=Plain,DC=X  "), "uid=plain,dc=x");
        assert_eq!(normalize_dn("UID=a b,DC=X"), "uid=a b,dc=x");
        assert_eq!(normalize_dn("CN=Ünal ,OU=X+CN=Y"), "cn=ünal,ou=x+cn=y");
        assert_eq!(normalize_dn("cn=a,  ou=b"), "cn=a,ou=b");
        assert_eq!(normalize_dn("CN=A\\2C B"), "cn=a\\2c b");
    }

    #[test]
    fn ad_user_from_binary_guid_and_uac() {
        let m =
            Mapper::new(LdapSettings::new("ldaps://h", Flavor::ActiveDirectory, "dc=x").resolved());
        let mut e = entry(
            "CN=Jane,CN=Users,DC=x",
            &[
                ("sAMAccountName", &["jane"]),
                ("userPrincipalName", &["jane@x.test"]),
                ("givenName", &["Jane"]),
                ("sn", &["Doe"]),
                ("userAccountControl", &["514"]),
                ("uSNChanged", &["4711"]),
            ],
        );
        e.bin_attrs
            .push(("objectGUID".into(), vec![(0u8..16).collect::<Vec<u8>>()]));
        let u = m.user(&e).expect("user");
        assert_eq!(u.input.idp_id, "03020100-0504-0706-0809-0a0b0c0d0e0f");
        assert!(!u.input.active, "uac 514 is disabled");
        assert_eq!(u.input.username.as_deref(), Some("jane"));
        assert_eq!(u.input.name.as_deref(), Some("Jane Doe"));
        assert_eq!(u.changed.as_deref(), Some("4711"));
        assert!(u.input.raw_attributes.get("uSNChanged").is_none());
        assert_eq!(
            u.input.raw_attributes.get("objectGUID"),
            Some(&Value::String(u.input.idp_id.clone()))
        );
        // No GUID: skipped, never invented.
        let e = entry("CN=x,DC=x", &[("sAMAccountName", &["x"])]);
        assert!(m.user(&e).is_none());
    }

    #[test]
    fn openldap_group_members() {
        let m = Mapper::new(LdapSettings::new("ldaps://h", Flavor::Openldap, "dc=x").resolved());
        let e = entry(
            "cn=devs,ou=Groups,dc=x",
            &[
                ("entryUUID", &["AAAA-1"]),
                ("cn", &["devs"]),
                ("member", &["uid=a, ou=People,dc=x"]),
                ("uniqueMember", &["uid=b,ou=People,dc=x"]),
                ("memberUid", &["C"]),
            ],
        );
        let g = m.group(&e).expect("group");
        assert_eq!(g.input.idp_id, "aaaa-1");
        assert_eq!(
            g.member_dns,
            vec!["uid=a,ou=people,dc=x", "uid=b,ou=people,dc=x"]
        );
        assert_eq!(g.member_uids, vec!["c"]);
        assert!(g.input.raw_attributes.get("member").is_none());
    }
}
