//! DNS TXT checks for organization domain verification (hickory-resolver).
//!
//! A domain proves ownership with a TXT record whose value is `verification_token=<token>`, on
//! the domain itself or (as older WorkOS docs say) on `_acme-challenge.<domain>`. The resolver
//! is the system's (`/etc/resolv.conf`) unless `dns.resolver = "host:port"` names one; the
//! settings can be changed while the server runs ([`DnsVerifier::set_settings`]).

use std::net::SocketAddr;
use std::sync::RwLock;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;

/// The `[dns]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// The DNS server to ask (UDP, then TCP); `None` = the system's resolvers.
    pub resolver: Option<SocketAddr>,
    /// How long one query may take before the check fails (the whole check is bounded by a
    /// few of these).
    pub timeout: Duration,
    /// How often pending domains are checked again in the background.
    pub recheck_interval: Duration,
    /// How long a domain may stay pending before it fails with
    /// `domain_verification_period_expired`.
    pub verification_period: Duration,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            resolver: None,
            timeout: Duration::from_secs(5),
            recheck_interval: Duration::from_secs(300),
            verification_period: Duration::from_secs(7 * 86_400),
        }
    }
}

/// What the domain's TXT records say about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxtCheck {
    /// A record carries `verification_token=<token>`.
    Verified,
    /// A `verification_token=` record is there, but with another value.
    WrongToken {
        /// The name the wrong record is on.
        name: String,
    },
    /// No verification record (yet).
    Absent,
}

/// The resolver could not answer: nothing can be concluded about the domain.
#[derive(Debug, thiserror::Error)]
#[error("DNS lookup of {name} via {resolver} failed: {message}")]
pub struct DnsError {
    /// The name that was looked up.
    pub name: String,
    /// `host:port` of the resolver, or "the system resolver".
    pub resolver: String,
    /// What the resolver library said.
    pub message: String,
}

/// The TXT record value that proves a domain.
pub fn expected_record(token: &str) -> String {
    format!("verification_token={token}")
}

/// Checks domains against the current [`DnsSettings`].
#[derive(Debug, Default)]
pub struct DnsVerifier {
    settings: RwLock<DnsSettings>,
}

impl DnsVerifier {
    /// A verifier with these settings.
    pub fn new(settings: DnsSettings) -> Self {
        DnsVerifier {
            settings: RwLock::new(settings),
        }
    }

    /// The current settings.
    pub fn settings(&self) -> DnsSettings {
        match self.settings.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the settings; the next check uses them.
    pub fn set_settings(&self, settings: DnsSettings) {
        match self.settings.write() {
            Ok(mut s) => *s = settings,
            Err(poisoned) => *poisoned.into_inner() = settings,
        }
    }

    fn resolver(&self, settings: &DnsSettings) -> Result<TokioResolver, DnsError> {
        let mut builder = match settings.resolver {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![server]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio().map_err(|e| DnsError {
                name: String::new(),
                resolver: describe_resolver(settings),
                message: format!("reading the system resolver configuration: {e}"),
            })?,
        };
        let opts = builder.options_mut();
        opts.timeout = settings.timeout;
        opts.attempts = 1;
        // Each check asks afresh: a record just added must count on the next try.
        opts.cache_size = 0;
        builder.build().map_err(|e| DnsError {
            name: String::new(),
            resolver: describe_resolver(settings),
            message: e.to_string(),
        })
    }

    /// Looks for `verification_token=<token>` on `domain` and `_acme-challenge.<domain>`.
    #[tracing::instrument(name = "dns.check_domain", skip(self, token))]
    pub async fn check(&self, domain: &str, token: &str) -> Result<TxtCheck, DnsError> {
        let settings = self.settings();
        let resolver = self.resolver(&settings)?;
        let expected = expected_record(token);
        let mut wrong = None;
        for name in [format!("{domain}."), format!("_acme-challenge.{domain}.")] {
            let values = txt_values(&resolver, &settings, &name).await?;
            if values.iter().any(|v| v.trim() == expected) {
                return Ok(TxtCheck::Verified);
            }
            if wrong.is_none() && values.iter().any(|v| v.starts_with("verification_token=")) {
                wrong = Some(name.trim_end_matches('.').to_string());
            }
        }
        Ok(match wrong {
            Some(name) => TxtCheck::WrongToken { name },
            None => TxtCheck::Absent,
        })
    }
}

fn describe_resolver(settings: &DnsSettings) -> String {
    settings
        .resolver
        .map(|a| a.to_string())
        .unwrap_or_else(|| "the system resolver".into())
}

/// The TXT strings at `name` (each record's character-strings joined); none when the name or
/// the record type does not exist.
async fn txt_values(
    resolver: &TokioResolver,
    settings: &DnsSettings,
    name: &str,
) -> Result<Vec<String>, DnsError> {
    let fail = |message: String| DnsError {
        name: name.trim_end_matches('.').to_string(),
        resolver: describe_resolver(settings),
        message,
    };
    // The library's own timeout covers one query; this bounds UDP + TCP fallbacks together.
    let bound = settings.timeout.saturating_mul(3);
    let answer = match tokio::time::timeout(bound, resolver.txt_lookup(name)).await {
        Err(_) => return Err(fail(format!("no answer within {} ms", bound.as_millis()))),
        Ok(r) => r,
    };
    match answer {
        Ok(lookup) => Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|part| String::from_utf8_lossy(part))
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect()),
        Err(e) if absent(&e) => Ok(Vec::new()),
        Err(e) => Err(fail(e.to_string())),
    }
}

fn absent(e: &NetError) -> bool {
    e.is_no_records_found() || e.is_nx_domain()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dead_resolver_is_an_error_not_an_absence() {
        // A UDP port nobody listens on: ICMP refusals or silence, never an answer.
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        drop(sock);
        let v = DnsVerifier::new(DnsSettings {
            resolver: Some(addr),
            timeout: Duration::from_millis(300),
            ..DnsSettings::default()
        });
        let err = v.check("example.test", "tok").await.unwrap_err();
        assert_eq!(err.resolver, addr.to_string());
        assert!(err.to_string().contains("example.test"), "{err}");
    }

    #[test]
    fn the_expected_record_names_the_token() {
        assert_eq!(expected_record("abc"), "verification_token=abc");
    }
}
