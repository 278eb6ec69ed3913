//! Error types. A sync that returns any of these applied nothing from its own reads.

use idbridge_directory::{EngineError, GuardError};

/// Bad or incomplete settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The settings contradict each other or are missing something.
    #[error("ldap settings: {0}")]
    Invalid(String),
    /// The bind password could not be read (the secret itself is never shown).
    #[error("bind password from {source_name}: {detail}")]
    Secret {
        /// File path or `$VAR`.
        source_name: String,
        /// Why.
        detail: String,
    },
    /// The CA bundle could not be loaded.
    #[error("ca bundle {path}: {detail}")]
    CaBundle {
        /// Path.
        path: String,
        /// Why.
        detail: String,
    },
}

/// Talking to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    /// Settings problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Connect, TLS, bind or protocol failure.
    #[error("ldap {op}: {detail}{}", protocol_hint(detail))]
    Protocol {
        /// Which operation (connect, bind, search ...).
        op: &'static str,
        /// The library's or server's message.
        detail: String,
    },
    /// The server answered with a non-success result code. Shown by name, with the likely
    /// cause and what to do (e.g. `ldap bind failed: invalidCredentials (49) ...: check bind_dn
    /// and the bind password`).
    #[error("ldap {op} failed: {}", describe_result(op, *rc, text))]
    Result {
        /// Which operation.
        op: &'static str,
        /// LDAP result code.
        rc: u32,
        /// Diagnostic text.
        text: String,
    },
    /// An operation took longer than the configured timeout.
    #[error("ldap {op} timed out after {secs}s: the server did not answer in time; check that the host and port are reachable from this machine (a firewall that drops packets looks like this) or raise timeouts.{}", if *op == "connect" { "connect_secs" } else { "operation_secs" })]
    Timeout {
        /// Which operation.
        op: &'static str,
        /// Seconds.
        secs: u64,
    },
    /// The server refused an RFC 4533 cookie (e-syncRefreshRequired, or a cookie it cannot
    /// use): the cookies are dropped and the next run is a full sync, which re-seeds them.
    #[error("ldap sync cookie refused: result code {rc} ({text}); the next run is a full sync")]
    CookieRefused {
        /// LDAP result code (4096 = e-syncRefreshRequired).
        rc: u32,
        /// Diagnostic text.
        text: String,
    },
    /// `change_tracking = "sync"` against a server without RFC 4533.
    #[error("change_tracking = \"sync\" but the server does not offer RFC 4533 content synchronization (no 1.3.6.1.4.1.4203.1.9.1.1 in the root DSE's supportedControl; load the syncprov overlay, or use \"auto\" / \"timestamp\")")]
    SyncUnsupported,
    /// The reply could not be understood (or the parser panicked on it).
    #[error("malformed ldap reply: {0}")]
    Malformed(String),
}

/// The RFC 4511 name of an LDAP result code (and the common extensions), for messages.
pub fn result_code_name(rc: u32) -> &'static str {
    match rc {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        7 => "authMethodNotSupported",
        8 => "strongerAuthRequired",
        10 => "referral",
        11 => "adminLimitExceeded",
        12 => "unavailableCriticalExtension",
        13 => "confidentialityRequired",
        16 => "noSuchAttribute",
        17 => "undefinedAttributeType",
        18 => "inappropriateMatching",
        19 => "constraintViolation",
        21 => "invalidAttributeSyntax",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        54 => "loopDetect",
        64 => "namingViolation",
        80 => "other",
        4096 => "e-syncRefreshRequired",
        _ => "unknown result code",
    }
}

/// Active Directory's reason for an invalidCredentials (49) bind: the `data NNN` sub-code of
/// its diagnostic text ("80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext
/// error, data 52e, v4563"), lower-cased.
pub fn ad_bind_subcode(text: &str) -> Option<String> {
    text.split(',')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("data "))
        .map(|c| c.trim().to_ascii_lowercase())
}

/// What an AD bind sub-code means and what to do about it.
fn ad_subcode_advice(code: &str) -> Option<&'static str> {
    Some(match code {
        "52e" => "AD 52e: the account exists but the password is wrong; check the bind password",
        "525" => "AD 525: no such user; check bind_dn (a DN, or user@domain)",
        "530" => "AD 530: the account may not log on at this time (logon hours)",
        "531" => "AD 531: the account may not log on from this workstation",
        "532" => "AD 532: the account's password has expired; set a new one and update the bind password",
        "533" => "AD 533: the account is disabled; enable it in Active Directory",
        "701" => "AD 701: the account has expired; extend its expiry in Active Directory",
        "773" => "AD 773: the account must change its password before it can log on",
        "775" => "AD 775: the account is locked out; unlock it, and check nothing retries a wrong password",
        _ => return None,
    })
}

/// The likely cause of a result code for operation `op`, and what to do.
fn result_advice(op: &str, rc: u32, text: &str) -> String {
    let bind = op == "bind";
    match rc {
        49 => {
            let sub = ad_bind_subcode(text).and_then(|c| ad_subcode_advice(&c));
            match sub {
                Some(s) => format!("the server refused the bind DN and password ({s})"),
                None => "the server refused the bind DN and password; check bind_dn and the bind password (file or environment variable)".into(),
            }
        }
        4 => "the server returns at most a fixed number of entries to this account; give the service account a higher limit (OpenLDAP `limits` on its DN, AD MaxPageSize) or set page_size so the read is paged".into(),
        3 => "the server's time limit for one search ran out; raise the account's time limit on the server or narrow the base DN or filter".into(),
        11 => "the server's administrative limit was hit (AD MaxPageSize / MaxResultSetSize); lower page_size or raise the limit on the server".into(),
        32 if bind => "the bind DN does not exist; check bind_dn".into(),
        32 => "the base DN does not exist on this server; check user_base_dns / group_base_dns (typos, the wrong naming context)".into(),
        34 => "a DN in the settings is not a valid DN; check bind_dn and the base DNs".into(),
        50 => "the service account may not read this; grant it read access (OpenLDAP ACL, AD delegation) to the base DNs and the mapped attributes".into(),
        48 | 7 => "the server does not accept this kind of bind for this account; check bind_dn (anonymous and simple binds may be disabled)".into(),
        8 | 13 => "the server requires an encrypted connection; use ldaps:// or StartTLS instead of plain LDAP".into(),
        53 if bind => "the server refuses this bind; most often a simple bind without TLS (use ldaps:// or StartTLS) or an empty password".into(),
        53 => "the server refuses the operation; check the server's log for the reason (paging or sync controls disabled, restrictions on the account)".into(),
        51 | 52 => "the server is busy or unavailable; the run is retried on schedule, check the server if it persists".into(),
        12 => "the server does not support a control idbridge requires (paged results or content sync); check change_tracking and page_size".into(),
        _ => "see the server's diagnostic text and log".into(),
    }
}

/// `invalidCredentials (49) [diagnostic]: cause and fix`.
fn describe_result(op: &str, rc: u32, text: &str) -> String {
    let text = text.trim();
    let shown = if text.is_empty() {
        String::new()
    } else {
        format!(" \"{}\"", text.chars().take(200).collect::<String>())
    };
    format!(
        "{} ({rc}){shown}: {}",
        result_code_name(rc),
        result_advice(op, rc, text)
    )
}

/// What a connect or TLS failure most likely means, from the library's message.
fn protocol_hint(detail: &str) -> &'static str {
    let d = detail.to_ascii_lowercase();
    if d.contains("unknownissuer") || d.contains("unknown issuer") {
        " (the server's certificate is not signed by a CA we trust: set ca_file to the CA bundle that issued it)"
    } else if d.contains("notvalidforname") || d.contains("not valid for name") {
        " (the server's certificate does not name this host: connect with the host name in its certificate, or reissue the certificate with this name as a subject alternative name)"
    } else if d.contains("expired") {
        " (the server's certificate has expired, or the clock of this machine is wrong: renew the certificate)"
    } else if d.contains("notvalidyet") || d.contains("not valid yet") {
        " (the server's certificate is not valid yet: check the clock of this machine and of the server)"
    } else if d.contains("revoked") {
        " (the server's certificate was revoked: install a new one)"
    } else if d.contains("badsignature") || d.contains("bad signature") {
        " (the server's certificate does not verify against the CA in ca_file — a CA of the same name but another key, or a broken chain: set ca_file to the CA bundle that issued it)"
    } else if d.contains("invalidcertificate") || d.contains("invalid peer certificate") {
        " (the server's TLS certificate was refused: check ca_file and the certificate the server presents)"
    } else if d.contains("connection refused") {
        " (nothing listens on that host and port: check the URL's port, that the server runs, and that ldaps:// uses 636 and ldap:// 389)"
    } else if d.contains("no route to host") || d.contains("network is unreachable") {
        " (the host cannot be reached from this machine: check the address and the network / firewall)"
    } else if d.contains("failed to lookup")
        || d.contains("name or service not known")
        || d.contains("name resolution")
    {
        " (the host name does not resolve: check the URL's host name and DNS)"
    } else if d.contains("handshake")
        || d.contains("corrupt message")
        || d.contains("invalidcontenttype")
    {
        " (the TLS handshake failed: the port may not speak TLS — ldaps:// needs the LDAPS port, usually 636; use StartTLS on 389)"
    } else {
        ""
    }
}

impl LdapError {
    /// The LDAP result code, when the server answered with one.
    pub fn result_code(&self) -> Option<u32> {
        match self {
            LdapError::Result { rc, .. } | LdapError::CookieRefused { rc, .. } => Some(*rc),
            _ => None,
        }
    }

    /// The service account's bind was refused as invalid credentials (49): the directory's
    /// state becomes `invalid_credentials` until a run succeeds.
    pub fn is_invalid_credentials(&self) -> bool {
        matches!(
            self,
            LdapError::Result {
                op: "bind",
                rc: 49,
                ..
            }
        )
    }

    pub(crate) fn proto(op: &'static str, e: impl std::fmt::Display) -> Self {
        LdapError::Protocol {
            op,
            detail: e.to_string(),
        }
    }
}

/// Why a sync run did not (fully) apply.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Reading from the server failed: nothing was applied.
    #[error(transparent)]
    Ldap(#[from] LdapError),
    /// The full sync would delete too many users: nothing was applied; an admin must confirm.
    #[error("{0}; confirm the deletion to apply it")]
    Guard(GuardError),
    /// The directory engine refused or failed.
    #[error("directory engine: {0}")]
    Engine(EngineError),
    /// The store failed while keeping sync state.
    #[error("sync state: {0}")]
    State(String),
    /// Another run of the same directory is in progress.
    #[error("a sync of directory {0} is already running")]
    Busy(String),
}

impl From<EngineError> for SyncError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Guard(g) => SyncError::Guard(g),
            other => SyncError::Engine(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(op: &'static str, rc: u32, text: &str) -> String {
        LdapError::Result {
            op,
            rc,
            text: text.into(),
        }
        .to_string()
    }

    #[test]
    fn result_codes_are_named_with_cause_and_fix() {
        let m = result("bind", 49, "");
        assert!(
            m.starts_with("ldap bind failed: invalidCredentials (49): "),
            "{m}"
        );
        assert!(m.contains("check bind_dn and the bind password"), "{m}");
        for (code, says) in [
            ("52e", "password is wrong"),
            ("525", "no such user"),
            ("530", "logon hours"),
            ("531", "workstation"),
            ("532", "password has expired"),
            ("533", "disabled"),
            ("701", "account has expired"),
            ("773", "must change its password"),
            ("775", "locked out"),
        ] {
            let m = result(
                "bind",
                49,
                &format!("80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data {code}, v4563"),
            );
            assert!(
                m.contains(&format!("AD {code}: ")) && m.contains(says),
                "{code}: {m}"
            );
        }
        let m = result("search", 4, "");
        assert!(
            m.contains("sizeLimitExceeded (4)") && m.contains("`limits`"),
            "{m}"
        );
        let m = result("search", 32, "");
        assert!(
            m.contains("noSuchObject (32)") && m.contains("base DN"),
            "{m}"
        );
        let m = result("bind", 32, "");
        assert!(m.contains("check bind_dn"), "{m}");
        let m = result("search", 50, "");
        assert!(
            m.contains("insufficientAccessRights (50)") && m.contains("read access"),
            "{m}"
        );
        let m = result(
            "bind",
            53,
            "unauthenticated bind (DN with no password) disallowed",
        );
        assert!(
            m.contains("unwillingToPerform (53) \"unauthenticated bind")
                && m.contains("without TLS"),
            "{m}"
        );
        let m = result("bind", 13, "");
        assert!(
            m.contains("confidentialityRequired (13)") && m.contains("ldaps://"),
            "{m}"
        );
        assert_eq!(result_code_name(12345), "unknown result code");
        // The diagnostic text is bounded.
        assert!(result("search", 80, &"x".repeat(10_000)).len() < 400);
    }

    #[test]
    fn connect_and_tls_failures_say_what_to_do() {
        let p = |detail: &str| LdapError::proto("connect", detail).to_string();
        assert!(p("I/O error: invalid peer certificate: UnknownIssuer").contains("set ca_file"));
        assert!(
            p("invalid peer certificate: certificate not valid for name \"h\"")
                .contains("does not name this host")
        );
        assert!(p("invalid peer certificate: certificate expired: verification time 1, but certificate is not valid after 0")
            .contains("has expired"));
        assert!(p("Connection refused (os error 111)").contains("nothing listens"));
        assert!(
            p("failed to lookup address information: Name or service not known")
                .contains("does not resolve")
        );
        assert_eq!(p("something else"), "ldap connect: something else");
        let t = LdapError::Timeout {
            op: "connect",
            secs: 3,
        }
        .to_string();
        assert!(
            t.contains("reachable") && t.contains("timeouts.connect_secs"),
            "{t}"
        );
    }
}
