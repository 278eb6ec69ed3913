//! IdP metadata: fetching it from a URL (size-capped, no redirects, short timeout) and the
//! background refresh that picks up new IdP signing certificates
//! (`connection.saml_certificate_renewed`) and announces certificates close to expiry
//! (`connection.saml_certificate_renewal_required`, once per certificate).

use std::sync::Arc;

use idbridge_model::{Event, EventKind, Timestamp};
use idbridge_saml::IdpSettings;
use idbridge_store::{ChangeSet, StoreError};
use openssl::x509::X509;
use serde_json::Value;

use super::{ConnectionRecord, Connections, ProtocolSettings};
use crate::db;
use crate::error::{SsoError, SsoResult};
use crate::SsoService;

/// Largest IdP metadata document fetched from a URL.
pub const MAX_METADATA_BYTES: usize = 1024 * 1024;
/// Certificates expiring within this many days are announced as needing renewal.
pub const RENEWAL_WARNING_DAYS: i32 = 30;

/// What one refresh pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RefreshReport {
    pub checked: usize,
    pub renewed: usize,
    pub renewal_required: usize,
    pub failed: usize,
}

/// The signing certificates of parsed IdP metadata, as PEM.
pub(crate) fn certs_to_pem(idp: &IdpSettings) -> SsoResult<Vec<String>> {
    idp.signing_certs
        .iter()
        .map(|c| {
            c.to_pem()
                .map_err(SsoError::internal)
                .and_then(|p| String::from_utf8(p).map_err(SsoError::internal))
        })
        .collect()
}

fn fingerprint(pem: &str) -> Option<String> {
    let cert = X509::from_pem(pem.as_bytes()).ok()?;
    let d = cert.digest(openssl::hash::MessageDigest::sha256()).ok()?;
    Some(hex::encode(d))
}

/// Days until the certificate expires (negative once expired) and its expiry date.
pub fn expiry(pem: &str) -> Option<(i32, String)> {
    let cert = X509::from_pem(pem.as_bytes()).ok()?;
    let now = openssl::asn1::Asn1Time::days_from_now(0).ok()?;
    let diff = now.diff(cert.not_after()).ok()?;
    Some((diff.days, cert.not_after().to_string()))
}

/// When the certificate expires, as a WorkOS timestamp (whole seconds).
fn not_after(pem: &str) -> Option<idbridge_model::Timestamp> {
    let cert = X509::from_pem(pem.as_bytes()).ok()?;
    let now = idbridge_model::Timestamp::now();
    let diff = openssl::asn1::Asn1Time::from_unix(now.as_millis() / 1000)
        .ok()?
        .diff(cert.not_after())
        .ok()?;
    let secs = i64::from(diff.days) * 86_400 + i64::from(diff.secs);
    Some(idbridge_model::Timestamp::from_millis(
        (now.as_millis() / 1000 + secs) * 1000,
    ))
}

/// The data of `connection.saml_certificate_renewed` (`renewal_required: false`) or
/// `connection.saml_certificate_renewal_required`, shaped as the spec's EventSchema has them.
fn cert_event(
    record: &ConnectionRecord,
    certificate_type: &str,
    pem: &str,
    renewal_required: bool,
) -> Value {
    let days = expiry(pem).map_or(0, |(d, _)| d);
    let connection = serde_json::json!({
        "id": record.connection.id,
        "organization_id": record.connection.organization_id,
    });
    let expiry_date = not_after(pem);
    if renewal_required {
        serde_json::json!({
            "connection": connection,
            "certificate": {
                "certificate_type": certificate_type,
                "expiry_date": expiry_date,
                "is_expired": days < 0,
            },
            "days_until_expiry": days,
        })
    } else {
        serde_json::json!({
            "connection": connection,
            "certificate": {
                "certificate_type": certificate_type,
                "expiry_date": expiry_date,
            },
            "renewed_at": idbridge_model::Timestamp::now(),
        })
    }
}

impl SsoService {
    /// Fetches IdP metadata from a URL (size-capped, no redirects, short timeout); the error
    /// says why it could not be read.
    pub async fn fetch_metadata(&self, url: &str) -> Result<String, String> {
        let http = self.http().map_err(|e| e.to_string())?;
        let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
        if !matches!(parsed.scheme(), "https" | "http") {
            return Err("not an http(s) URL".into());
        }
        let mut resp = http
            .get(parsed)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_METADATA_BYTES {
                return Err("metadata too large".into());
            }
            body.extend_from_slice(&chunk);
        }
        String::from_utf8(body).map_err(|_| "metadata is not UTF-8".to_string())
    }

    /// One refresh pass over every SAML connection: re-reads its IdP metadata URL and checks
    /// its certificates' expiry. Each changed connection is one commit with its events.
    #[tracing::instrument(name = "connections.refresh_metadata", skip_all)]
    pub async fn refresh_metadata(&self) -> SsoResult<RefreshReport> {
        let mut report = RefreshReport::default();
        let (records, unreadable) = self.connections.all()?;
        for (id, e) in unreadable {
            tracing::warn!(connection_id = %id, error = %e, "unreadable connection record");
        }
        for old in records {
            let ProtocolSettings::Saml(saml) = &old.protocol else {
                continue;
            };
            report.checked += 1;
            let mut next = saml.clone();
            let mut events: Vec<(EventKind, Value)> = Vec::new();
            if let Some(url) = &saml.idp_metadata_url {
                let parsed = match self.fetch_metadata(url).await {
                    Ok(xml) => super::create::idp_from_metadata(&xml),
                    Err(e) => Err(e),
                };
                match parsed.and_then(|(idp, slo)| {
                    certs_to_pem(&idp)
                        .map(|c| (idp, slo, c))
                        .map_err(|e| e.to_string())
                }) {
                    Ok((idp, slo, certs)) => {
                        if slo.is_some() {
                            next.idp_slo_url = slo;
                        }
                        let mut a: Vec<_> = certs.iter().filter_map(|c| fingerprint(c)).collect();
                        // Certificates imported through the API are not the metadata's:
                        // they neither count as a change nor are dropped by one.
                        let imported = |c: &String| {
                            super::certificates::certificate_id(c)
                                .is_some_and(|id| saml.idp_cert_added_at.contains_key(&id))
                        };
                        let mut b: Vec<_> = saml
                            .idp_signing_certs
                            .iter()
                            .filter(|c| !imported(c))
                            .filter_map(|c| fingerprint(c))
                            .collect();
                        a.sort();
                        b.sort();
                        if a != b && !certs.is_empty() {
                            next.idp_entity_id = idp.entity_id.clone();
                            if idp.sso_url.is_some() {
                                next.idp_sso_url = idp.sso_url.clone();
                            }
                            next.idp_wants_signed_requests = idp.wants_signed_requests;
                            next.idp_signing_certs = certs.clone();
                            for c in saml.idp_signing_certs.iter().filter(|c| imported(c)) {
                                if !a.contains(&fingerprint(c).unwrap_or_default()) {
                                    next.idp_signing_certs.push(c.clone());
                                }
                            }
                            if let Some(first) = certs.first() {
                                events.push((
                                    EventKind::ConnectionSamlCertificateRenewed,
                                    cert_event(&old, "ResponseSigning", first, false),
                                ));
                            }
                            report.renewed += 1;
                        }
                    }
                    Err(e) => {
                        report.failed += 1;
                        tracing::warn!(connection_id = %old.id(), error = %e, "IdP metadata refresh failed");
                    }
                }
            }
            let candidates = next
                .idp_signing_certs
                .iter()
                .map(|c| ("ResponseSigning", c.clone()))
                .chain(
                    next.sp_signing_keys
                        .first()
                        .map(|k| ("RequestSigning", k.cert_pem.clone())),
                )
                .chain(
                    next.sp_encryption_keys
                        .first()
                        .map(|k| ("ResponseEncryption", k.cert_pem.clone())),
                )
                .collect::<Vec<_>>();
            for (kind, pem) in candidates {
                let (Some(fp), Some((days, _))) = (fingerprint(&pem), expiry(&pem)) else {
                    continue;
                };
                if days <= RENEWAL_WARNING_DAYS && !next.renewal_notified.contains(&fp) {
                    events.push((
                        EventKind::ConnectionSamlCertificateRenewalRequired,
                        cert_event(&old, kind, &pem, true),
                    ));
                    next.renewal_notified.push(fp);
                    report.renewal_required += 1;
                }
            }
            if events.is_empty() {
                continue;
            }
            let mut record = old.clone();
            record.protocol = ProtocolSettings::Saml(next);
            record.connection.updated_at = Timestamp::now();
            let mut cs = ChangeSet::new();
            Connections::stage_replace(&mut cs, &old, &record)?;
            for (kind, data) in events {
                cs.append_event(&Event::new(kind, data), record.organization_id());
            }
            match db::commit(&self.store, cs).await {
                Ok(_) => {
                    self.forget_oidc_client(old.id());
                    tracing::info!(connection_id = %old.id(), "connection certificates updated");
                }
                // Changed meanwhile (login activation, rotation): the next pass retries.
                Err(StoreError::Conflict { .. }) => report.failed += 1,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(report)
    }
}

/// Runs [`SsoService::refresh_metadata`] every `every` (the first pass after one interval).
pub fn spawn_metadata_refresh(sso: Arc<SsoService>, every: std::time::Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            match sso.refresh_metadata().await {
                Ok(r) if r.renewed + r.renewal_required + r.failed > 0 => {
                    tracing::info!(?r, "IdP metadata refresh")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "IdP metadata refresh failed"),
            }
        }
    });
}
