//! Password checks against a directory (issue 16's directory mode: the IdP login page binds as
//! the user): find the user's entry with the directory's service account, then bind as that DN
//! with the password on a separate connection.
//!
//! - An empty password is refused before any network traffic: an LDAP simple bind with a DN
//!   and an empty password is an *unauthenticated* bind, which servers answer with success.
//! - The login is matched against `sAMAccountName`, `userPrincipalName` and `mail` (AD; a
//!   `DOMAIN\user` login is matched by its user part) or `uid` and `mail` (OpenLDAP), or a
//!   configured list or filter template; the value is escaped (RFC 4515), so `*` is a literal.
//! - LDAPS or StartTLS is required unless the directory's settings explicitly allow plain LDAP.
//! - Failures are typed: Active Directory's diagnostic `data` sub-codes of result 49 become bad
//!   password, no such user, logon hours, workstation, password expired, account disabled,
//!   account expired, must change password, locked. [`BindAuthError::is_user_failure`] tells a
//!   refusal of these credentials from a directory outage. The login page shows one message
//!   for every refusal (and should equalize timing: an unknown user costs one search, a known
//!   one a search and a bind).
//! - The password is never logged and is redacted in `Debug`.

use crate::client::{Client, Entry};
use crate::error::{ConfigError, LdapError};
use crate::mapping::Mapper;
use crate::settings::{Flavor, LdapSettings};

/// Longest login name accepted.
pub const MAX_LOGIN_LEN: usize = 256;
/// Longest password accepted (AD allows 256 UTF-16 units).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// A password held for one bind. `Debug` prints `[redacted]`; there is no `Display` and no
/// serialization.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(p: impl Into<String>) -> Self {
        Self(p.into())
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How a login name finds its entry (per directory, next to its [`LdapSettings`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginLookup {
    /// Attributes compared with the login (OR); the flavor's default when empty.
    pub attributes: Vec<String>,
    /// A filter template with `{login}` (replaced by the escaped login), used instead of
    /// `attributes`; it is ANDed with the directory's user filter.
    pub filter: Option<String>,
}

impl LoginLookup {
    /// The search filter for `login` (already validated) under `settings`.
    pub fn filter(&self, settings: &LdapSettings, login: &str) -> Result<String, BindAuthError> {
        let r = settings.resolved();
        let login = if r.flavor == Flavor::ActiveDirectory {
            // `EXAMPLE\alice`: the user part is the sAMAccountName.
            login.rsplit_once('\\').map_or(login, |(_, user)| user)
        } else {
            login
        };
        let value = escape_filter_value(login);
        let clause = match &self.filter {
            Some(t) => {
                if !t.contains("{login}") {
                    return Err(BindAuthError::Config(ConfigError::Invalid(
                        "the login filter must contain {login}".into(),
                    )));
                }
                t.replace("{login}", &value)
            }
            None => {
                let attrs: Vec<String> = if self.attributes.is_empty() {
                    match r.flavor {
                        Flavor::ActiveDirectory => vec![
                            r.username.clone(),
                            "userPrincipalName".into(),
                            r.email.clone(),
                        ],
                        _ => vec![r.username.clone(), r.email.clone()],
                    }
                } else {
                    self.attributes.clone()
                };
                let mut c = String::from("(|");
                for a in attrs {
                    c.push_str(&format!("({a}={value})"));
                }
                c.push(')');
                c
            }
        };
        Ok(format!("(&{}{clause})", r.user_filter))
    }
}

/// RFC 4515 escaping of an assertion value: `*`, `(`, `)`, `\` and NUL.
pub fn escape_filter_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 8);
    for c in v.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// The user whose password was just verified.
#[derive(Debug, Clone)]
pub struct BoundUser {
    /// The entry's DN (as the server sent it).
    pub dn: String,
    /// The stable id the directory sync stores as the user's `idp_id` (AD `objectGUID` as a
    /// canonical GUID, `entryUUID` lower-cased, or the configured id attribute): find the
    /// directory user in idbridge's store by it.
    pub idp_id: String,
    /// The entry as read with the service account (the sync's user attributes).
    pub entry: Entry,
}

/// Why a password check failed.
#[derive(Debug, thiserror::Error)]
pub enum BindAuthError {
    /// Refused before any traffic: an empty password would be an unauthenticated bind.
    #[error("the password is empty")]
    EmptyPassword,
    /// Refused before any traffic: empty, too long, or control characters.
    #[error("the login name is {0}")]
    InvalidLogin(&'static str),
    /// The password is longer than any directory accepts.
    #[error("the password is too long")]
    PasswordTooLong,
    /// No entry matches the login (or AD said `data 525`).
    #[error("no user matches this login")]
    NoSuchUser,
    /// More than one entry matches: refused rather than guessing.
    #[error("{0} entries match this login; make the login attributes unique or narrow the filter")]
    Ambiguous(usize),
    /// Result 49 without a more precise reason (AD `data 52e`).
    #[error("wrong password")]
    InvalidCredentials,
    /// AD `data 530`.
    #[error("the account may not log on at this time")]
    LogonHoursRestricted,
    /// AD `data 531`.
    #[error("the account may not log on from this workstation")]
    WorkstationRestricted,
    /// AD `data 532`.
    #[error("the password has expired")]
    PasswordExpired,
    /// AD `data 533`, or the entry is marked disabled (`userAccountControl`, the generic
    /// flavor's disabled attribute).
    #[error("the account is disabled")]
    AccountDisabled,
    /// AD `data 701`.
    #[error("the account has expired")]
    AccountExpired,
    /// AD `data 773` (`pwdLastSet = 0`).
    #[error("the password must be changed before logging on")]
    MustChangePassword,
    /// AD `data 775`.
    #[error("the account is locked out")]
    AccountLocked,
    /// Another bind result code (e.g. 53 unwillingToPerform).
    #[error("the directory refused the bind: result code {rc} ({text})")]
    Refused { rc: u32, text: String },
    /// The entry has no stable id attribute (nothing to find the directory user by).
    #[error("the user's entry has no {0} attribute")]
    NoStableId(String),
    /// The directory could not be asked (connection, TLS, service account, search): not the
    /// user's fault.
    #[error("the directory is unavailable: {0}")]
    Directory(LdapError),
    /// The settings are unusable (plain LDAP not allowed, bad login filter...).
    #[error(transparent)]
    Config(ConfigError),
}

impl BindAuthError {
    /// A refusal of these credentials or this account (count it against the attempt limits and
    /// show the login page's one failure message); otherwise the directory or the settings
    /// failed (show "try again later", alert the operator).
    pub fn is_user_failure(&self) -> bool {
        !matches!(
            self,
            BindAuthError::Directory(_)
                | BindAuthError::Config(_)
                | BindAuthError::NoStableId(_)
                | BindAuthError::Ambiguous(_)
        )
    }

    /// A short stable reason for metrics and logs (`bad_password`, `locked`, ...).
    pub fn reason(&self) -> &'static str {
        match self {
            BindAuthError::EmptyPassword => "empty_password",
            BindAuthError::InvalidLogin(_) => "invalid_login",
            BindAuthError::PasswordTooLong => "password_too_long",
            BindAuthError::NoSuchUser => "no_such_user",
            BindAuthError::Ambiguous(_) => "ambiguous_login",
            BindAuthError::InvalidCredentials => "bad_password",
            BindAuthError::LogonHoursRestricted => "logon_hours",
            BindAuthError::WorkstationRestricted => "workstation",
            BindAuthError::PasswordExpired => "password_expired",
            BindAuthError::AccountDisabled => "disabled",
            BindAuthError::AccountExpired => "account_expired",
            BindAuthError::MustChangePassword => "must_change_password",
            BindAuthError::AccountLocked => "locked",
            BindAuthError::Refused { .. } => "refused",
            BindAuthError::NoStableId(_) => "no_stable_id",
            BindAuthError::Directory(_) => "directory_unavailable",
            BindAuthError::Config(_) => "config",
        }
    }
}

impl From<LdapError> for BindAuthError {
    fn from(e: LdapError) -> Self {
        match e {
            LdapError::Config(c) => BindAuthError::Config(c),
            other => BindAuthError::Directory(other),
        }
    }
}

/// Map a refused user bind: result 49 with AD's `data XXX` sub-code, or another result code.
pub fn bind_failure(rc: u32, text: &str) -> BindAuthError {
    if rc != 49 {
        return BindAuthError::Refused {
            rc,
            text: text.chars().take(200).collect(),
        };
    }
    match crate::error::ad_bind_subcode(text).as_deref() {
        Some("525") => BindAuthError::NoSuchUser,
        Some("530") => BindAuthError::LogonHoursRestricted,
        Some("531") => BindAuthError::WorkstationRestricted,
        Some("532") => BindAuthError::PasswordExpired,
        Some("533") => BindAuthError::AccountDisabled,
        Some("701") => BindAuthError::AccountExpired,
        Some("773") => BindAuthError::MustChangePassword,
        Some("775") => BindAuthError::AccountLocked,
        _ => BindAuthError::InvalidCredentials,
    }
}

fn check_login(login: &str) -> Result<&str, BindAuthError> {
    let login = login.trim();
    if login.is_empty() {
        return Err(BindAuthError::InvalidLogin("empty"));
    }
    if login.len() > MAX_LOGIN_LEN {
        return Err(BindAuthError::InvalidLogin("too long"));
    }
    if login.chars().any(char::is_control) {
        return Err(BindAuthError::InvalidLogin("not printable"));
    }
    Ok(login)
}

/// The entries matching `filter` under the user bases, read with the service account.
async fn search_user(
    service: &mut Client,
    settings: &LdapSettings,
    filter: &str,
    attrs: &[String],
) -> Result<Vec<Entry>, LdapError> {
    let mut found: Vec<Entry> = Vec::new();
    for base in settings
        .user_base_dns
        .iter()
        .filter(|b| !b.trim().is_empty())
    {
        service
            .search_each(base, filter, attrs, |e| {
                if !found.iter().any(|f| f.dn.eq_ignore_ascii_case(&e.dn)) {
                    found.push(e);
                }
                Ok(())
            })
            .await?;
    }
    Ok(found)
}

/// Find `login`'s entry with the service account (a pooled connection when `pool` is given).
async fn find_entry(
    settings: &LdapSettings,
    pool: Option<&BindAuthenticator>,
    lookup: &LoginLookup,
    login: &str,
) -> Result<Entry, BindAuthError> {
    let filter = lookup.filter(settings, login)?;
    let attrs = settings.resolved().user_attrs();
    let mut found = match pool {
        None => {
            let mut service = Client::connect(settings).await?;
            let result = search_user(&mut service, settings, &filter, &attrs).await;
            service.close().await;
            result?
        }
        Some(pool) => {
            let (filter, attrs) = (&filter, &attrs);
            pool.with_connection(&pool.service, true, |mut c| async move {
                let found = search_user(&mut c, settings, filter, attrs).await;
                (c, found)
            })
            .await?
        }
    };
    match found.len() {
        0 => Err(BindAuthError::NoSuchUser),
        1 => Ok(found.remove(0)),
        n => Err(BindAuthError::Ambiguous(n)),
    }
}

/// Idle connections kept per kind (service / user binds) and directory.
const MAX_IDLE_CONNECTIONS: usize = 8;

/// Password checks against one directory that reuse their LDAP connections: a login costs a
/// search on an idle connection bound as the service account and a bind on an idle connection
/// kept for user binds, instead of two new connections (two TLS handshakes with LDAPS or
/// StartTLS) and a service bind every time.
///
/// A user-bind connection only ever carries binds (each bind replaces the previous
/// identity; a refused bind leaves it anonymous), so reusing it never acts as an earlier
/// user. A connection that failed in any other way than a result code is dropped; a pooled
/// one the server closed while idle is retried once on a fresh connection.
pub struct BindAuthenticator {
    settings: LdapSettings,
    service: std::sync::Mutex<Vec<Client>>,
    binders: std::sync::Mutex<Vec<Client>>,
}

impl std::fmt::Debug for BindAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BindAuthenticator")
            .field("url", &self.settings.url)
            .finish_non_exhaustive()
    }
}

impl BindAuthenticator {
    pub fn new(settings: LdapSettings) -> Self {
        BindAuthenticator {
            settings,
            service: std::sync::Mutex::default(),
            binders: std::sync::Mutex::default(),
        }
    }

    /// The directory settings these connections were made with (a change needs a new one).
    pub fn settings(&self) -> &LdapSettings {
        &self.settings
    }

    /// [`authenticate`] on reused connections.
    #[tracing::instrument(skip_all, fields(url = %self.settings.url))]
    pub async fn authenticate(
        &self,
        lookup: &LoginLookup,
        login: &str,
        password: &Password,
    ) -> Result<BoundUser, BindAuthError> {
        let result = authenticate_inner(&self.settings, Some(self), lookup, login, password).await;
        log_outcome(&result);
        result
    }

    fn take(pool: &std::sync::Mutex<Vec<Client>>) -> Option<Client> {
        pool.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn put_back(pool: &std::sync::Mutex<Vec<Client>>, c: Client) {
        let mut idle = pool.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_CONNECTIONS {
            idle.push(c);
        }
    }

    /// Runs `op` on an idle connection of `pool` (or a new one: bound as the service account
    /// when `service`), and keeps the connection unless it failed below the LDAP result level.
    async fn with_connection<T, F>(
        &self,
        pool: &std::sync::Mutex<Vec<Client>>,
        service: bool,
        op: impl Fn(Client) -> F,
    ) -> Result<T, LdapError>
    where
        F: std::future::Future<Output = (Client, Result<T, LdapError>)>,
    {
        if let Some(c) = Self::take(pool) {
            let (c, result) = op(c).await;
            match result {
                Ok(v) => {
                    Self::put_back(pool, c);
                    return Ok(v);
                }
                Err(e @ LdapError::Result { .. }) => {
                    Self::put_back(pool, c);
                    return Err(e);
                }
                // Closed by the server while idle, or broken: a fresh connection below.
                Err(e) => {
                    tracing::debug!(error = %e, "a reused LDAP connection failed; reconnecting")
                }
            }
        }
        let c = if service {
            Client::connect(&self.settings).await?
        } else {
            Client::open(&self.settings).await?
        };
        let (c, result) = op(c).await;
        if matches!(result, Ok(_) | Err(LdapError::Result { .. })) {
            Self::put_back(pool, c);
        }
        result
    }
}

/// Check `login` + `password` against the directory described by `settings`.
#[tracing::instrument(skip_all, fields(url = %settings.url))]
pub async fn authenticate(
    settings: &LdapSettings,
    lookup: &LoginLookup,
    login: &str,
    password: &Password,
) -> Result<BoundUser, BindAuthError> {
    let result = authenticate_inner(settings, None, lookup, login, password).await;
    log_outcome(&result);
    result
}

fn log_outcome(result: &Result<BoundUser, BindAuthError>) {
    match result {
        Ok(u) => tracing::info!(dn = %u.dn, "directory password accepted"),
        Err(e) => tracing::info!(reason = e.reason(), "directory password refused"),
    }
}

async fn authenticate_inner(
    settings: &LdapSettings,
    pool: Option<&BindAuthenticator>,
    lookup: &LoginLookup,
    login: &str,
    password: &Password,
) -> Result<BoundUser, BindAuthError> {
    // Before any traffic: these would bind anonymously or carry garbage to the server.
    if password.0.is_empty() {
        return Err(BindAuthError::EmptyPassword);
    }
    if password.0.len() > MAX_PASSWORD_LEN {
        return Err(BindAuthError::PasswordTooLong);
    }
    let login = check_login(login)?;
    settings.validate().map_err(BindAuthError::Config)?;

    let entry = find_entry(settings, pool, lookup, login).await?;
    let mapper = Mapper::new(settings.resolved());
    let idp_id = mapper
        .id_of(&entry)
        .ok_or_else(|| BindAuthError::NoStableId(mapper.resolved().id.clone()))?;

    let bound = match pool {
        None => {
            let mut user_conn = Client::open(settings).await?;
            let bound = user_conn.simple_bind(&entry.dn, &password.0).await;
            user_conn.close().await;
            bound
        }
        Some(pool) => {
            let (dn, pw) = (entry.dn.as_str(), password.0.as_str());
            pool.with_connection(&pool.binders, false, |mut c| async move {
                let bound = c.simple_bind(dn, pw).await;
                (c, bound)
            })
            .await
        }
    };
    match bound {
        Ok(()) => {}
        Err(LdapError::Result { rc, text, .. }) => return Err(bind_failure(rc, &text)),
        Err(e) => return Err(e.into()),
    }
    // The password is right; the account must still be enabled in the directory's terms.
    if !mapper.active(&entry) {
        return Err(BindAuthError::AccountDisabled);
    }
    Ok(BoundUser {
        dn: entry.dn.clone(),
        idp_id,
        entry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ad_sub_codes_map_to_reasons() {
        let t = |code: &str| {
            bind_failure(
                49,
                &format!("80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data {code}, v4563"),
            )
        };
        assert!(matches!(t("52e"), BindAuthError::InvalidCredentials));
        assert!(matches!(t("525"), BindAuthError::NoSuchUser));
        assert!(matches!(t("530"), BindAuthError::LogonHoursRestricted));
        assert!(matches!(t("531"), BindAuthError::WorkstationRestricted));
        assert!(matches!(t("532"), BindAuthError::PasswordExpired));
        assert!(matches!(t("533"), BindAuthError::AccountDisabled));
        assert!(matches!(t("701"), BindAuthError::AccountExpired));
        assert!(matches!(t("773"), BindAuthError::MustChangePassword));
        assert!(matches!(t("775"), BindAuthError::AccountLocked));
        assert!(matches!(
            bind_failure(49, ""),
            BindAuthError::InvalidCredentials
        ));
        assert!(matches!(
            bind_failure(53, "unwilling"),
            BindAuthError::Refused { rc: 53, .. }
        ));
        assert!(t("775").is_user_failure());
        assert!(!BindAuthError::Ambiguous(2).is_user_failure());
    }

    #[test]
    fn filters_escape_the_login() {
        assert_eq!(
            escape_filter_value("a*b(c)d\\e\0"),
            "a\\2ab\\28c\\29d\\5ce\\00"
        );
        let s = LdapSettings::new("ldaps://h", Flavor::Openldap, "dc=x");
        assert_eq!(
            LoginLookup::default().filter(&s, "al*ice").unwrap(),
            "(&(objectClass=inetOrgPerson)(|(uid=al\\2aice)(mail=al\\2aice)))"
        );
        let ad = LdapSettings::new("ldaps://h", Flavor::ActiveDirectory, "dc=x");
        assert_eq!(
            LoginLookup::default().filter(&ad, "EXAMPLE\\bob").unwrap(),
            "(&(&(objectCategory=person)(objectClass=user))(|(sAMAccountName=bob)(userPrincipalName=bob)(mail=bob)))"
        );
        let custom = LoginLookup {
            attributes: Vec::new(),
            filter: Some("(employeeNumber={login})".into()),
        };
        assert_eq!(
            custom.filter(&s, "1)(uid=*").unwrap(),
            "(&(objectClass=inetOrgPerson)(employeeNumber=1\\29\\28uid=\\2a))"
        );
        let broken = LoginLookup {
            attributes: Vec::new(),
            filter: Some("(uid=admin)".into()),
        };
        assert!(matches!(
            broken.filter(&s, "x"),
            Err(BindAuthError::Config(_))
        ));
    }

    #[test]
    fn passwords_never_print() {
        assert_eq!(format!("{:?}", Password::new("hunter2")), "[redacted]");
    }
}
