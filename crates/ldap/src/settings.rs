//! Per-directory LDAP settings (the `[[ldap_directories]]` TOML section) and the attribute
//! names each flavor reads, resolved once so the mapping code never guesses.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// Which kind of server: decides the default filters, attributes and change tracking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flavor {
    /// Microsoft Active Directory or Samba AD: `objectGUID`, `userAccountControl`,
    /// nested groups, ranged `member`, `uSNChanged`.
    ActiveDirectory,
    /// OpenLDAP: `entryUUID`, `inetOrgPerson`, `groupOfNames` / `groupOfUniqueNames` /
    /// `posixGroup`, changes by `entryCSN` (389-DS: use `generic`, which tracks
    /// `modifyTimestamp`).
    #[default]
    Openldap,
    /// Everything from the settings (defaults as for OpenLDAP).
    Generic,
}

/// Attribute names; every field overrides the flavor's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttributeNames {
    /// Stable id (becomes `idp_id`).
    pub id: Option<String>,
    /// Login name.
    pub username: Option<String>,
    /// Primary email.
    pub email: Option<String>,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Job title.
    pub job_title: Option<String>,
    /// Group display name.
    pub group_name: Option<String>,
    /// Group attributes holding member DNs.
    pub member_dn: Option<Vec<String>>,
    /// Group attribute holding member login names (`posixGroup`'s `memberUid`).
    pub member_uid: Option<String>,
    /// User attribute that `member_uid` values refer to.
    pub uid: Option<String>,
    /// Change tracking attribute (`entryCSN`, `modifyTimestamp` or `uSNChanged`).
    pub changed: Option<String>,
    /// Generic flavor: a user attribute that marks a disabled account ...
    pub disabled: Option<String>,
    /// ... when it holds one of these values (case-insensitive; any value if empty).
    pub disabled_values: Option<Vec<String>>,
}

/// Timeouts: every LDAP operation is bounded, so a hung server fails a run instead of
/// stalling the scheduler forever.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// TCP + TLS connect.
    pub connect_secs: u64,
    /// Bind, and each page / entry of a search.
    pub operation_secs: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_secs: 10,
            operation_secs: 30,
        }
    }
}

/// How deltas find changes on OpenLDAP and generic servers (AD always uses `uSNChanged`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeTracking {
    /// RFC 4533 when the root DSE lists the Sync Request control and the id attribute is
    /// `entryUUID` (the sync protocol names entries only by their UUID), else `timestamp`.
    Auto,
    /// RFC 4533 refreshOnly with cookies: deltas also see deletions and entries that left the
    /// search scope. A server without it fails the run.
    Sync,
    /// A cursor on the change attribute (`entryCSN` / `modifyTimestamp`): adds and updates
    /// only; deletions wait for the next full sync.
    Timestamp,
}

/// The RFC 4533 Sync Request control (listed in `supportedControl` by syncprov).
pub const SYNC_REQUEST_OID: &str = "1.3.6.1.4.1.4203.1.9.1.1";

fn default_page_size() -> u32 {
    500
}
fn default_range_step() -> u32 {
    1500
}
fn default_ratio() -> f64 {
    0.10
}

/// How to reach and read one LDAP directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapSettings {
    /// `ldaps://host:636` or `ldap://host:389` (the latter needs `starttls` or `allow_plain`).
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS.
    #[serde(default)]
    pub starttls: bool,
    /// PEM CA bundle that signs the server certificate (system roots when absent).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Allow an unencrypted `ldap://` connection (lab setups only).
    #[serde(default)]
    pub allow_plain: bool,
    /// Skip server certificate verification (tests against self-signed lab servers only).
    #[serde(default)]
    pub danger_skip_tls_verify: bool,
    /// Simple-bind DN (anonymous when absent).
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// File holding the bind password (trailing newline ignored).
    #[serde(default)]
    pub bind_password_file: Option<PathBuf>,
    /// Environment variable holding the bind password.
    #[serde(default)]
    pub bind_password_env: Option<String>,
    /// The bind password itself, for directories configured through the admin API (stored
    /// sealed, opened by the server when it starts the directory's runner). Never serialized.
    #[serde(skip)]
    pub bind_password_value: Option<SecretValue>,
    /// Server kind.
    #[serde(default)]
    pub flavor: Flavor,
    /// Where users live (subtree searches).
    pub user_base_dns: Vec<String>,
    /// User filter (flavor default when absent).
    #[serde(default)]
    pub user_filter: Option<String>,
    /// Where groups live (the user bases when empty).
    #[serde(default)]
    pub group_base_dns: Vec<String>,
    /// Group filter (flavor default when absent).
    #[serde(default)]
    pub group_filter: Option<String>,
    /// Attribute name overrides.
    #[serde(default)]
    pub attributes: AttributeNames,
    /// More user attributes to read (for the directory's custom attribute map).
    #[serde(default)]
    pub extra_attributes: Vec<String>,
    /// Paged-results page size (0 = no paging control).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// AD ranged retrieval window for `member` (AD's MaxValRange is 1500).
    #[serde(default = "default_range_step")]
    pub range_step: u32,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Largest share of users a run (full, or a delta that saw deletions) may delete
    /// without an admin's confirmation.
    #[serde(default = "default_ratio")]
    pub max_delete_ratio: f64,
    /// Change tracking for deltas (OpenLDAP default `auto`, generic default `timestamp`;
    /// ignored for AD, which uses `uSNChanged`).
    #[serde(default)]
    pub change_tracking: Option<ChangeTracking>,
}

/// A secret held in memory; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(pub String);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Transport after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `ldaps://`.
    Ldaps,
    /// `ldap://` + StartTLS.
    StartTls,
    /// `ldap://` in clear (explicitly allowed).
    Plain,
}

impl LdapSettings {
    /// Minimal settings for a URL and one user base; the rest default.
    pub fn new(url: impl Into<String>, flavor: Flavor, user_base_dn: impl Into<String>) -> Self {
        LdapSettings {
            url: url.into(),
            starttls: false,
            ca_file: None,
            allow_plain: false,
            danger_skip_tls_verify: false,
            bind_dn: None,
            bind_password_file: None,
            bind_password_env: None,
            bind_password_value: None,
            flavor,
            user_base_dns: vec![user_base_dn.into()],
            user_filter: None,
            group_base_dns: Vec::new(),
            group_filter: None,
            attributes: AttributeNames::default(),
            extra_attributes: Vec::new(),
            page_size: default_page_size(),
            range_step: default_range_step(),
            timeouts: Timeouts::default(),
            max_delete_ratio: default_ratio(),
            change_tracking: None,
        }
    }

    /// The change tracking in effect: AD always `timestamp` (its `uSNChanged` cursor); generic
    /// defaults to `timestamp` because its entries need not carry `entryUUID`.
    pub fn change_tracking(&self) -> ChangeTracking {
        match (self.flavor, self.change_tracking) {
            (Flavor::ActiveDirectory, _) => ChangeTracking::Timestamp,
            (_, Some(t)) => t,
            (Flavor::Openldap, None) => ChangeTracking::Auto,
            (Flavor::Generic, None) => ChangeTracking::Timestamp,
        }
    }

    /// Checks the combination and returns the transport; refuses clear text unless allowed.
    pub fn validate(&self) -> Result<Transport, ConfigError> {
        let lower = self.url.to_ascii_lowercase();
        let t = if lower.starts_with("ldaps://") {
            if self.starttls {
                return Err(ConfigError::Invalid(
                    "starttls is for ldap:// URLs, not ldaps://".into(),
                ));
            }
            Transport::Ldaps
        } else if lower.starts_with("ldap://") {
            if self.starttls {
                Transport::StartTls
            } else if self.allow_plain {
                Transport::Plain
            } else {
                return Err(ConfigError::Invalid(format!(
                    "{} is unencrypted: use ldaps://, starttls = true, or allow_plain = true",
                    self.url
                )));
            }
        } else {
            return Err(ConfigError::Invalid(format!(
                "url {:?} must start with ldap:// or ldaps://",
                self.url
            )));
        };
        if self.user_base_dns.iter().all(|b| b.trim().is_empty()) {
            return Err(ConfigError::Invalid("user_base_dns is empty".into()));
        }
        if !(0.0..=1.0).contains(&self.max_delete_ratio) {
            return Err(ConfigError::Invalid(
                "max_delete_ratio must be between 0.0 and 1.0".into(),
            ));
        }
        if self.flavor == Flavor::ActiveDirectory
            && self.change_tracking == Some(ChangeTracking::Sync)
        {
            return Err(ConfigError::Invalid(
                "change_tracking = \"sync\" is for OpenLDAP / generic servers; AD uses uSNChanged"
                    .into(),
            ));
        }
        if self.change_tracking == Some(ChangeTracking::Sync)
            && !self.resolved().id.eq_ignore_ascii_case("entryUUID")
        {
            return Err(ConfigError::Invalid(
                "change_tracking = \"sync\" needs attributes.id = \"entryUUID\" (RFC 4533 names entries by UUID)"
                    .into(),
            ));
        }
        if self.range_step == 0 {
            return Err(ConfigError::Invalid("range_step must be > 0".into()));
        }
        if self.bind_dn.is_some()
            && self.bind_password_file.is_none()
            && self.bind_password_env.is_none()
            && self.bind_password_value.is_none()
        {
            return Err(ConfigError::Invalid(
                "bind_dn needs a bind password: bind_password_file or bind_password_env (or \
                 bind_password through the admin API)"
                    .into(),
            ));
        }
        if [
            self.bind_password_file.is_some(),
            self.bind_password_env.is_some(),
            self.bind_password_value.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count()
            > 1
        {
            return Err(ConfigError::Invalid(
                "set one of bind_password_file, bind_password_env and bind_password".into(),
            ));
        }
        Ok(t)
    }

    /// The bind password, read at connect time so rotations need no restart.
    pub fn bind_password(&self) -> Result<Option<String>, ConfigError> {
        if let Some(v) = &self.bind_password_value {
            return Ok(Some(v.0.clone()));
        }
        if let Some(path) = &self.bind_password_file {
            let raw = std::fs::read_to_string(path).map_err(|e| ConfigError::Secret {
                source_name: path.display().to_string(),
                detail: e.to_string(),
            })?;
            return Ok(Some(raw.trim_end_matches(['\r', '\n']).to_owned()));
        }
        if let Some(var) = &self.bind_password_env {
            let v = std::env::var(var).map_err(|e| ConfigError::Secret {
                source_name: format!("${var}"),
                detail: e.to_string(),
            })?;
            return Ok(Some(v));
        }
        Ok(None)
    }

    /// Connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.timeouts.connect_secs.max(1))
    }

    /// Per-operation timeout.
    pub fn op_timeout(&self) -> Duration {
        Duration::from_secs(self.timeouts.operation_secs.max(1))
    }

    /// Group bases (user bases when none are set).
    pub fn group_bases(&self) -> &[String] {
        if self.group_base_dns.is_empty() {
            &self.user_base_dns
        } else {
            &self.group_base_dns
        }
    }

    /// The attribute names and filters in effect for this flavor.
    pub fn resolved(&self) -> Resolved {
        let a = &self.attributes;
        let ad = self.flavor == Flavor::ActiveDirectory;
        let pick = |v: &Option<String>, ad_default: &str, ldap_default: &str| -> String {
            v.clone().unwrap_or_else(|| {
                if ad {
                    ad_default.to_owned()
                } else {
                    ldap_default.to_owned()
                }
            })
        };
        Resolved {
            flavor: self.flavor,
            user_filter: self.user_filter.clone().unwrap_or_else(|| {
                if ad {
                    "(&(objectCategory=person)(objectClass=user))".into()
                } else {
                    "(objectClass=inetOrgPerson)".into()
                }
            }),
            group_filter: self.group_filter.clone().unwrap_or_else(|| {
                if ad {
                    "(objectClass=group)".into()
                } else {
                    "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=posixGroup))"
                        .into()
                }
            }),
            id: pick(&a.id, "objectGUID", "entryUUID"),
            username: pick(&a.username, "sAMAccountName", "uid"),
            email: pick(&a.email, "mail", "mail"),
            first_name: pick(&a.first_name, "givenName", "givenName"),
            last_name: pick(&a.last_name, "sn", "sn"),
            display_name: pick(&a.display_name, "displayName", "cn"),
            job_title: pick(&a.job_title, "title", "title"),
            group_name: pick(&a.group_name, "cn", "cn"),
            member_dn: a.member_dn.clone().unwrap_or_else(|| {
                if ad {
                    vec!["member".into()]
                } else {
                    vec!["member".into(), "uniqueMember".into()]
                }
            }),
            member_uid: a
                .member_uid
                .clone()
                .or_else(|| (!ad).then(|| "memberUid".to_owned())),
            uid: pick(&a.uid, "sAMAccountName", "uid"),
            changed: a.changed.clone().unwrap_or_else(|| {
                match self.flavor {
                    Flavor::ActiveDirectory => "uSNChanged",
                    Flavor::Openldap => "entryCSN",
                    Flavor::Generic => "modifyTimestamp",
                }
                .to_owned()
            }),
            disabled: a.disabled.clone(),
            disabled_values: a.disabled_values.clone().unwrap_or_default(),
            extra: self.extra_attributes.clone(),
            range_step: self.range_step,
        }
    }
}

/// Attribute names and filters after flavor defaults were applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Flavor.
    pub flavor: Flavor,
    /// User filter.
    pub user_filter: String,
    /// Group filter.
    pub group_filter: String,
    /// Stable id attribute.
    pub id: String,
    /// Login name.
    pub username: String,
    /// Email.
    pub email: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Display name.
    pub display_name: String,
    /// Title.
    pub job_title: String,
    /// Group name.
    pub group_name: String,
    /// Member DN attributes.
    pub member_dn: Vec<String>,
    /// Member login-name attribute.
    pub member_uid: Option<String>,
    /// The user attribute `member_uid` refers to.
    pub uid: String,
    /// Change tracking attribute.
    pub changed: String,
    /// Disabled marker (generic).
    pub disabled: Option<String>,
    /// Disabled marker values.
    pub disabled_values: Vec<String>,
    /// Extra user attributes.
    pub extra: Vec<String>,
    /// Ranged retrieval window.
    pub range_step: u32,
}

impl Resolved {
    /// Attributes requested for users.
    pub fn user_attrs(&self) -> Vec<String> {
        let mut v = vec![
            self.id.clone(),
            self.username.clone(),
            self.email.clone(),
            self.first_name.clone(),
            self.last_name.clone(),
            self.display_name.clone(),
            self.job_title.clone(),
            self.uid.clone(),
            self.changed.clone(),
        ];
        if self.flavor == Flavor::ActiveDirectory {
            v.push("userPrincipalName".into());
            v.push("userAccountControl".into());
        }
        if let Some(d) = &self.disabled {
            v.push(d.clone());
        }
        v.extend(self.extra.iter().cloned());
        dedup_ci(v)
    }

    /// Attributes requested for groups (AD asks for `member` in explicit ranges).
    pub fn group_attrs(&self) -> Vec<String> {
        let mut v = vec![
            self.id.clone(),
            self.group_name.clone(),
            self.changed.clone(),
        ];
        for m in &self.member_dn {
            if self.flavor == Flavor::ActiveDirectory {
                v.push(format!("{m};range=0-{}", self.range_step.saturating_sub(1)));
            } else {
                v.push(m.clone());
            }
        }
        if let Some(m) = &self.member_uid {
            v.push(m.clone());
        }
        dedup_ci(v)
    }
}

fn dedup_ci(v: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(v.len());
    for s in v {
        if !out.iter().any(|o| o.eq_ignore_ascii_case(&s)) {
            out.push(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ldap_needs_explicit_permission() {
        let mut s = LdapSettings::new("ldap://127.0.0.1:389", Flavor::Openldap, "dc=x");
        assert!(s.validate().is_err());
        s.starttls = true;
        assert_eq!(s.validate().ok(), Some(Transport::StartTls));
        s.starttls = false;
        s.allow_plain = true;
        assert_eq!(s.validate().ok(), Some(Transport::Plain));
        let s = LdapSettings::new("ldaps://h", Flavor::Openldap, "dc=x");
        assert_eq!(s.validate().ok(), Some(Transport::Ldaps));
        let s = LdapSettings::new("http://h", Flavor::Openldap, "dc=x");
        assert!(s.validate().is_err());
    }

    #[test]
    fn ad_defaults_ask_member_in_ranges() {
        let mut s = LdapSettings::new("ldaps://h", Flavor::ActiveDirectory, "dc=x");
        s.range_step = 100;
        let r = s.resolved();
        assert_eq!(r.id, "objectGUID");
        assert!(r.group_attrs().contains(&"member;range=0-99".to_string()));
        assert!(r.user_attrs().contains(&"userAccountControl".to_string()));
        let o = LdapSettings::new("ldaps://h", Flavor::Openldap, "dc=x").resolved();
        assert_eq!(o.id, "entryUUID");
        assert_eq!(o.member_uid.as_deref(), Some("memberUid"));
    }

    #[test]
    fn change_tracking_defaults_and_checks() {
        let s: LdapSettings = serde_json::from_value(serde_json::json!({
            "url": "ldaps://h", "user_base_dns": ["dc=x"], "change_tracking": "sync"
        }))
        .expect("settings");
        assert_eq!(s.change_tracking(), ChangeTracking::Sync);
        assert!(s.validate().is_ok());
        let mut s = LdapSettings::new("ldaps://h", Flavor::Openldap, "dc=x");
        assert_eq!(s.change_tracking(), ChangeTracking::Auto);
        s.flavor = Flavor::Generic;
        assert_eq!(s.change_tracking(), ChangeTracking::Timestamp);
        s.change_tracking = Some(ChangeTracking::Sync);
        s.attributes.id = Some("nsUniqueId".into());
        assert!(s.validate().is_err(), "sync names entries by entryUUID");
        s.flavor = Flavor::ActiveDirectory;
        s.attributes.id = None;
        assert!(s.validate().is_err());
        s.change_tracking = None;
        assert_eq!(s.change_tracking(), ChangeTracking::Timestamp);
    }

    #[test]
    fn password_from_file_and_env() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").expect("write");
        let mut s = LdapSettings::new("ldaps://h", Flavor::Openldap, "dc=x");
        s.bind_dn = Some("cn=admin".into());
        assert!(s.validate().is_err());
        s.bind_password_file = Some(p);
        assert_eq!(s.bind_password().ok().flatten().as_deref(), Some("s3cret"));
        s.bind_password_file = None;
        s.bind_password_env = Some("IDBRIDGE_TEST_LDAP_PW_UNSET_VAR".into());
        assert!(s.bind_password().is_err());
    }
}
