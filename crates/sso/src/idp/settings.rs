//! The IdP settings' one wire form ([`IdpSettings`]): the config file's `[idp]` section and
//! `GET|PATCH /admin/idp/settings` both read and write it, and [`IdpSettings::to_config`]
//! checks every value (naming the field) before anything is put in force.
//!
//! Also the trusted-proxy rule for the per-address attempt limit: `X-Forwarded-For` is only
//! believed when the socket peer is a trusted proxy, and then the client is the right-most
//! address in it that is not itself a trusted proxy (a client can prepend anything, but not
//! what the proxies append).

use std::net::IpAddr;
use std::time::Duration;

use idbridge_limits::FailureLimit;
use serde::{Deserialize, Serialize};

use super::service_providers::MAX_ASSERTION_VALIDITY_SECS;
use super::IdpConfig;
use crate::error::{FieldIssue, SsoError, SsoResult};

/// Longest IdP login session (AuthnRequest to password, or to the upstream's answer).
pub const MAX_LOGIN_SESSION_TTL_SECS: u64 = 24 * 3600;
/// Longest failure delay (longer ones would just hold connections).
pub const MAX_FAILURE_DELAY_MS: u64 = 10_000;
/// Longest attempt-limit window.
pub const MAX_WINDOW_SECS: u64 = 7 * 24 * 3600;
const MAX_TRUSTED_PROXIES: usize = 64;
/// Longest OIDC authorization code (RFC 6749 §4.1.2 recommends at most 10 minutes).
pub const MAX_OIDC_CODE_TTL_SECS: u64 = 600;
/// Longest OIDC access or ID token.
pub const MAX_OIDC_TOKEN_TTL_SECS: u64 = 24 * 3600;
/// Longest "remember this browser" session (30 days).
pub const MAX_REMEMBER_BROWSER_TTL_SECS: u64 = 30 * 24 * 3600;

/// The IdP settings as the config file and the admin API spell them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdpSettings {
    /// How long a browser may take from the AuthnRequest to finishing the login.
    pub login_session_ttl_secs: u64,
    /// Failed passwords per account (organization + login name) in the window; 0 = no limit.
    pub account_max_failures: u32,
    pub account_window_secs: u64,
    /// Failed passwords per client address in the window; 0 = no limit.
    pub address_max_failures: u32,
    pub address_window_secs: u64,
    /// Every refused password takes at least this long.
    pub failure_delay_ms: u64,
    /// The assertion lifetime new service providers get (each SP can change its own).
    pub default_assertion_validity_secs: u64,
    /// Addresses or CIDR ranges of reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<String>,
    /// The OpenID Provider's authorization-code lifetime.
    pub oidc_code_ttl_secs: u64,
    /// The OpenID Provider's access-token lifetime (`expires_in`).
    pub oidc_access_token_ttl_secs: u64,
    /// The OpenID Provider's ID-token lifetime (`exp - iat`).
    pub oidc_id_token_ttl_secs: u64,
    /// How long a "remember this browser" session of idbridge lasts (a later login from the
    /// same browser needs no password); 0 = off (the login page offers no checkbox).
    pub remember_browser_ttl_secs: u64,
}

impl IdpSettings {
    /// The field names (an unknown one in a PATCH is a 422 naming it).
    pub const FIELDS: [&'static str; 12] = [
        "login_session_ttl_secs",
        "account_max_failures",
        "account_window_secs",
        "address_max_failures",
        "address_window_secs",
        "failure_delay_ms",
        "default_assertion_validity_secs",
        "trusted_proxies",
        "oidc_code_ttl_secs",
        "oidc_access_token_ttl_secs",
        "oidc_id_token_ttl_secs",
        "remember_browser_ttl_secs",
    ];

    /// The settings in force, in wire form.
    pub fn from_config(c: &IdpConfig) -> Self {
        IdpSettings {
            login_session_ttl_secs: c.login_ttl.as_secs(),
            account_max_failures: c.account_failures.max_failures,
            account_window_secs: c.account_failures.window_secs,
            address_max_failures: c.address_failures.max_failures,
            address_window_secs: c.address_failures.window_secs,
            failure_delay_ms: u64::try_from(c.failure_floor.as_millis()).unwrap_or(u64::MAX),
            default_assertion_validity_secs: c.default_assertion_validity_secs,
            trusted_proxies: c.trusted_proxies.to_strings(),
            oidc_code_ttl_secs: c.oidc_code_ttl_secs.unsigned_abs(),
            oidc_access_token_ttl_secs: c.oidc_access_token_ttl_secs.unsigned_abs(),
            oidc_id_token_ttl_secs: c.oidc_id_token_ttl_secs.unsigned_abs(),
            remember_browser_ttl_secs: c.remember_browser_ttl.as_secs(),
        }
    }

    /// Checks every value; the problems name their fields.
    pub fn to_config(&self) -> SsoResult<IdpConfig> {
        let mut issues = Vec::new();
        let mut range = |field: &str, v: u64, min: u64, max: u64| {
            if v < min || v > max {
                issues.push(FieldIssue::new(field, format!("must_be_{min}_to_{max}")));
            }
        };
        range(
            "login_session_ttl_secs",
            self.login_session_ttl_secs,
            1,
            MAX_LOGIN_SESSION_TTL_SECS,
        );
        range(
            "account_window_secs",
            self.account_window_secs,
            1,
            MAX_WINDOW_SECS,
        );
        range(
            "address_window_secs",
            self.address_window_secs,
            1,
            MAX_WINDOW_SECS,
        );
        range(
            "failure_delay_ms",
            self.failure_delay_ms,
            0,
            MAX_FAILURE_DELAY_MS,
        );
        range(
            "default_assertion_validity_secs",
            self.default_assertion_validity_secs,
            1,
            MAX_ASSERTION_VALIDITY_SECS,
        );
        range(
            "oidc_code_ttl_secs",
            self.oidc_code_ttl_secs,
            1,
            MAX_OIDC_CODE_TTL_SECS,
        );
        range(
            "oidc_access_token_ttl_secs",
            self.oidc_access_token_ttl_secs,
            1,
            MAX_OIDC_TOKEN_TTL_SECS,
        );
        range(
            "oidc_id_token_ttl_secs",
            self.oidc_id_token_ttl_secs,
            1,
            MAX_OIDC_TOKEN_TTL_SECS,
        );
        range(
            "remember_browser_ttl_secs",
            self.remember_browser_ttl_secs,
            0,
            MAX_REMEMBER_BROWSER_TTL_SECS,
        );
        let proxies = match TrustedProxies::parse(&self.trusted_proxies) {
            Ok(p) => p,
            Err(i) => {
                issues.push(FieldIssue::new(
                    format!("trusted_proxies[{i}]"),
                    "not_an_ip_address_or_cidr_range",
                ));
                TrustedProxies::default()
            }
        };
        if self.trusted_proxies.len() > MAX_TRUSTED_PROXIES {
            issues.push(FieldIssue::new("trusted_proxies", "too_many"));
        }
        if !issues.is_empty() {
            return Err(SsoError::Invalid(issues));
        }
        Ok(IdpConfig {
            login_ttl: Duration::from_secs(self.login_session_ttl_secs),
            account_failures: FailureLimit {
                max_failures: self.account_max_failures,
                window_secs: self.account_window_secs,
            },
            address_failures: FailureLimit {
                max_failures: self.address_max_failures,
                window_secs: self.address_window_secs,
            },
            failure_floor: Duration::from_millis(self.failure_delay_ms),
            default_assertion_validity_secs: self.default_assertion_validity_secs,
            trusted_proxies: proxies,
            // In range above, so they fit.
            oidc_code_ttl_secs: i64::try_from(self.oidc_code_ttl_secs).unwrap_or(i64::MAX),
            oidc_access_token_ttl_secs: i64::try_from(self.oidc_access_token_ttl_secs)
                .unwrap_or(i64::MAX),
            oidc_id_token_ttl_secs: i64::try_from(self.oidc_id_token_ttl_secs).unwrap_or(i64::MAX),
            remember_browser_ttl: Duration::from_secs(self.remember_browser_ttl_secs),
        })
    }
}

impl Default for IdpSettings {
    fn default() -> Self {
        IdpSettings::from_config(&IdpConfig::default())
    }
}

/// Addresses and CIDR ranges of trusted reverse proxies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

fn parse_range(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = match s.trim().split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (s.trim(), None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        Some(b) => b.parse::<u8>().ok().filter(|b| *b <= max)?,
        None => max,
    };
    Some((ip, bits))
}

fn prefix_matches(range: IpAddr, bits: u8, ip: IpAddr) -> bool {
    let (a, b, width) = match (range, ip.to_canonical()) {
        (IpAddr::V4(r), IpAddr::V4(i)) => (u128::from(u32::from(r)), u128::from(u32::from(i)), 32),
        (IpAddr::V6(r), IpAddr::V6(i)) => (u128::from(r), u128::from(i), 128),
        _ => return false,
    };
    if bits == 0 {
        return true;
    }
    let shift = width - u32::from(bits);
    (a >> shift) == (b >> shift)
}

impl TrustedProxies {
    /// Parses addresses and CIDR ranges; `Err(i)` names the first bad entry.
    pub fn parse(list: &[String]) -> Result<Self, usize> {
        list.iter()
            .enumerate()
            .map(|(i, s)| parse_range(s).ok_or(i))
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(ip, bits)| {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                if *bits == max {
                    ip.to_string()
                } else {
                    format!("{ip}/{bits}")
                }
            })
            .collect()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|(r, b)| prefix_matches(*r, *b, ip))
    }

    /// The client's address: the socket peer, unless it is a trusted proxy; then the
    /// right-most `X-Forwarded-For` entry that is not a trusted proxy.
    pub fn client_address(
        &self,
        peer: Option<IpAddr>,
        forwarded_for: Option<&str>,
    ) -> Option<IpAddr> {
        let peer = peer?;
        if !self.contains(peer) {
            return Some(peer);
        }
        let mut client = peer;
        for hop in forwarded_for.unwrap_or("").rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !self.contains(ip) {
                        break;
                    }
                }
                // Garbage in the header: stop at the last address a trusted proxy vouched for.
                Err(_) => break,
            }
        }
        Some(client)
    }
}

impl crate::SsoService {
    /// The address the per-address attempt limit counts for a request.
    pub fn idp_client_address(
        &self,
        peer: Option<IpAddr>,
        forwarded_for: Option<&str>,
    ) -> Option<String> {
        self.idp_config()
            .trusted_proxies
            .client_address(peer, forwarded_for)
            .map(|ip| ip.to_canonical().to_string())
    }

    /// The IdP settings in force, in wire form.
    pub fn idp_settings(&self) -> IdpSettings {
        IdpSettings::from_config(&self.idp_config())
    }

    /// Checks and puts new IdP settings in force; answers them.
    pub fn update_idp_settings(&self, settings: &IdpSettings) -> SsoResult<IdpSettings> {
        let config = settings.to_config()?;
        self.set_idp_config(config);
        tracing::info!("IdP settings changed");
        Ok(self.idp_settings())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let t = TrustedProxies::parse(&["10.0.0.0/8".into(), "::1".into()]).unwrap();
        // Not a proxy: the header is ignored, whatever it says.
        assert_eq!(
            t.client_address(Some(ip("203.0.113.9")), Some("198.51.100.1")),
            Some(ip("203.0.113.9"))
        );
        // A proxy: the right-most untrusted hop; a client-prepended hop is not believed.
        assert_eq!(
            t.client_address(
                Some(ip("10.1.1.1")),
                Some("6.6.6.6, 198.51.100.7, 10.2.2.2")
            ),
            Some(ip("198.51.100.7"))
        );
        // A proxy without a header: the proxy itself.
        assert_eq!(t.client_address(Some(ip("::1")), None), Some(ip("::1")));
        // Garbage after a good hop stops at the last vouched-for address.
        assert_eq!(
            t.client_address(Some(ip("10.1.1.1")), Some("1.2.3.4, nonsense")),
            Some(ip("10.1.1.1"))
        );
        // IPv4-mapped IPv6 peers match IPv4 ranges.
        assert!(t.contains(ip("::ffff:10.9.9.9")));
        assert!(!t.contains(ip("11.0.0.1")));
        // Nothing trusted: never the header.
        assert_eq!(
            TrustedProxies::default().client_address(Some(ip("127.0.0.1")), Some("1.1.1.1")),
            Some(ip("127.0.0.1"))
        );
    }

    #[test]
    fn bad_values_name_their_fields() {
        let s = IdpSettings {
            login_session_ttl_secs: 0,
            failure_delay_ms: 60_000,
            default_assertion_validity_secs: 0,
            trusted_proxies: vec!["10.0.0.0/8".into(), "10.0.0.0/33".into()],
            oidc_code_ttl_secs: 601,
            oidc_access_token_ttl_secs: 0,
            oidc_id_token_ttl_secs: 86_401,
            remember_browser_ttl_secs: MAX_REMEMBER_BROWSER_TTL_SECS + 1,
            ..IdpSettings::default()
        };
        let Err(SsoError::Invalid(issues)) = s.to_config() else {
            panic!("expected invalid");
        };
        let fields: Vec<_> = issues.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "login_session_ttl_secs",
                "failure_delay_ms",
                "default_assertion_validity_secs",
                "oidc_code_ttl_secs",
                "oidc_access_token_ttl_secs",
                "oidc_id_token_ttl_secs",
                "remember_browser_ttl_secs",
                "trusted_proxies[1]"
            ]
        );
        let round = IdpSettings::default();
        assert_eq!(IdpSettings::from_config(&round.to_config().unwrap()), round);
    }
}
