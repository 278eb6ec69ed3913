//! Organization domain verification by DNS: the `POST /organization_domains/{id}/verify`
//! check and the background re-check of pending domains. The records themselves belong to
//! [`crate::organizations`]; this module only decides what a DNS answer means for them.

use std::sync::Arc;
use std::time::Duration;

use idbridge_model::{DomainState, OrganizationDomain, Timestamp};

use crate::dns::{DnsVerifier, TxtCheck};
use crate::error::{SsoError, SsoResult};
use crate::organizations::{DomainCheckOutcome, DomainFailure};
use crate::SsoService;

/// What one background pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecheckReport {
    /// Pending domains looked at.
    pub checked: usize,
    /// Now verified.
    pub verified: usize,
    /// Now failed (wrong token, period expired, or verified elsewhere).
    pub failed: usize,
    /// Lookups the resolver could not answer (the domain was left as it was).
    pub dns_errors: usize,
}

impl SsoService {
    /// The DNS verifier (its settings can be read and changed while the server runs).
    pub fn dns(&self) -> &DnsVerifier {
        &self.dns
    }

    /// Checks the domain's TXT records now and records the outcome: verified when the token
    /// is there, failed when a different token is, still pending when none is. A resolver
    /// that does not answer changes nothing and is reported as such.
    #[tracing::instrument(name = "domains.verify", skip(self))]
    pub async fn verify_domain(&self, domain_id: &str) -> SsoResult<OrganizationDomain> {
        let d = self.organizations().load_domain(domain_id)?;
        if d.state == DomainState::Verified {
            return Err(SsoError::Refused {
                code: "domain_already_verified",
                message: "Domain is already verified.".into(),
            });
        }
        let Some(token) = d.verification_token.clone() else {
            return Err(SsoError::Refused {
                code: "domain_verification_not_available",
                message: format!(
                    "Domain '{}' was added with the organization's domain_data (manual \
                     verification) and has no DNS token; delete it and add it with \
                     POST /organization_domains to verify it by DNS.",
                    d.domain
                ),
            });
        };
        let outcome = match self.dns.check(&d.domain, &token).await {
            Ok(TxtCheck::Verified) => DomainCheckOutcome::Verified,
            Ok(TxtCheck::WrongToken { .. }) => DomainCheckOutcome::WrongToken,
            Ok(TxtCheck::Absent) => DomainCheckOutcome::Absent {
                restart: d.state != DomainState::Pending,
            },
            Err(e) => {
                return Err(SsoError::Unavailable {
                    code: "dns_lookup_failed",
                    message: format!(
                        "{e}. The domain was not changed; check that the resolver \
                         (dns.resolver) answers, then verify again."
                    ),
                })
            }
        };
        self.organizations().apply_domain_check(&d, outcome).await
    }

    /// One pass over the pending DNS domains: verified when the record is there, failed when
    /// a wrong token is there or the verification period has run out.
    #[tracing::instrument(name = "domains.recheck", skip(self))]
    pub async fn recheck_pending_domains(&self) -> SsoResult<RecheckReport> {
        let settings = self.dns.settings();
        let pending = {
            let orgs = self.organizations().clone();
            tokio::task::spawn_blocking(move || orgs.pending_dns_domains())
                .await
                .map_err(SsoError::internal)??
        };
        let mut report = RecheckReport::default();
        let period_ms = i64::try_from(settings.verification_period.as_millis()).unwrap_or(i64::MAX);
        for d in pending {
            report.checked += 1;
            let Some(token) = d.verification_token.as_deref() else {
                continue;
            };
            let expired = Timestamp::now().as_millis() - d.updated_at.as_millis() > period_ms;
            let outcome = match self.dns.check(&d.domain, token).await {
                Ok(TxtCheck::Verified) => DomainCheckOutcome::Verified,
                Ok(TxtCheck::WrongToken { .. }) => DomainCheckOutcome::WrongToken,
                Ok(TxtCheck::Absent) if expired => {
                    DomainCheckOutcome::Failed(DomainFailure::PeriodExpired)
                }
                Ok(TxtCheck::Absent) => continue,
                Err(e) => {
                    report.dns_errors += 1;
                    tracing::warn!(domain = %d.domain, error = %e, "pending domain not re-checked");
                    continue;
                }
            };
            match self.organizations().apply_domain_check(&d, outcome).await {
                Ok(after) if after.state == DomainState::Verified => report.verified += 1,
                Ok(after) if after.state == DomainState::Failed => report.failed += 1,
                Ok(_) => {}
                // Changed meanwhile (deleted, verified by a call): the next pass sees it anew.
                Err(e) => tracing::info!(domain_id = %d.id, error = %e, "domain re-check skipped"),
            }
        }
        Ok(report)
    }
}

/// Re-checks pending domains every `dns.recheck_interval`. The interval is read afresh each
/// second, so a change through `/admin/dns` applies without waiting out the old interval.
pub fn spawn_domain_recheck(sso: Arc<SsoService>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if last.elapsed() < sso.dns.settings().recheck_interval {
                continue;
            }
            match sso.recheck_pending_domains().await {
                Ok(r) if r.checked > 0 => tracing::info!(
                    checked = r.checked,
                    verified = r.verified,
                    failed = r.failed,
                    dns_errors = r.dns_errors,
                    "pending domains re-checked"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pending domain re-check failed"),
            }
            last = tokio::time::Instant::now();
        }
    })
}
