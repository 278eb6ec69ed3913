//! The SAML certificate sub-resources of a connection (py10 `sso.*_connection_saml_*_cert*`):
//! IdP signing certificates (list, import a PEM ahead of an IdP rotation, delete — never the
//! last one), SP encryption certificates (list, generate another key pair, delete) and the SP
//! signing certificate (get, generate when there is none, delete — requests are then sent
//! unsigned).
//!
//! Certificates are not stored as objects of their own: the connection record keeps the PEMs
//! (and the sealed SP keys), so a certificate's id is derived from its SHA-256 fingerprint
//! (`cert_` + 26 hex digits) and stays the same across restarts and nodes.

use std::collections::BTreeMap;

use idbridge_model::Timestamp;
use idbridge_store::{ChangeSet, StoreError};
use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::x509::X509;
use serde::Serialize;

use super::keys::MAX_SP_KEYS;
use super::keys::{generate_sp_pair, SP_ENCRYPTION, SP_SIGNING};
use super::{ConnectionRecord, Connections, ProtocolSettings, SamlConnection};
use crate::db;
use crate::error::{SsoError, SsoResult};
use crate::SsoService;

/// Most IdP signing certificates a connection trusts at once (a rollover needs two or three).
pub const MAX_IDP_SIGNING_CERTS: usize = 5;
/// Longest PEM accepted for an IdP signing certificate.
pub const MAX_CERT_PEM_BYTES: usize = 16 * 1024;

/// Which certificate list of a SAML connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateKind {
    /// The IdP's certificates we verify responses with.
    IdpSigning,
    /// Our certificates the IdP may encrypt assertions to.
    SpEncryption,
    /// Our certificate the IdP verifies signed requests with.
    SpSigning,
}

impl CertificateKind {
    /// The wire `object` of one certificate.
    pub fn object(self) -> &'static str {
        match self {
            CertificateKind::IdpSigning => "saml_idp_signing_certificate",
            CertificateKind::SpEncryption => "saml_sp_encryption_certificate",
            CertificateKind::SpSigning => "saml_sp_signing_certificate",
        }
    }

    /// The entity named in a 404.
    fn entity(self) -> &'static str {
        match self {
            CertificateKind::IdpSigning => "SAML IdP signing certificate",
            CertificateKind::SpEncryption => "SAML SP encryption certificate",
            CertificateKind::SpSigning => "SAML SP signing certificate",
        }
    }
}

/// One certificate as the SDK reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SamlCertificate {
    pub object: &'static str,
    pub id: String,
    /// The PEM certificate (public).
    pub value: String,
    pub not_before: Option<Timestamp>,
    pub not_after: Option<Timestamp>,
    pub created_at: Timestamp,
}

/// The derived id of a certificate (`cert_` + the first 26 hex digits of its SHA-256
/// fingerprint); `None` when the PEM does not parse.
pub fn certificate_id(pem: &str) -> Option<String> {
    let cert = X509::from_pem(pem.as_bytes()).ok()?;
    let digest = cert.digest(openssl::hash::MessageDigest::sha256()).ok()?;
    let hex = hex::encode_upper(digest);
    Some(format!("cert_{}", &hex[..26]))
}

/// Seconds since the epoch of an ASN.1 time, as a wire timestamp.
fn asn1_to_timestamp(t: &Asn1TimeRef) -> Option<Timestamp> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    let secs = i64::from(d.days) * 86_400 + i64::from(d.secs);
    Some(Timestamp::from_millis(secs.checked_mul(1000)?))
}

fn describe(kind: CertificateKind, pem: &str, created_at: Timestamp) -> Option<SamlCertificate> {
    let cert = X509::from_pem(pem.as_bytes()).ok()?;
    Some(SamlCertificate {
        object: kind.object(),
        id: certificate_id(pem)?,
        value: pem.to_string(),
        not_before: asn1_to_timestamp(cert.not_before()),
        not_after: asn1_to_timestamp(cert.not_after()),
        created_at,
    })
}

/// The certificates of one kind, oldest first (IdP certificates without a recorded import
/// time count from the connection's creation).
fn certificates(
    record: &ConnectionRecord,
    saml: &SamlConnection,
    kind: CertificateKind,
) -> Vec<SamlCertificate> {
    let mut out: Vec<SamlCertificate> = match kind {
        CertificateKind::IdpSigning => saml
            .idp_signing_certs
            .iter()
            .filter_map(|pem| {
                let added = certificate_id(pem)
                    .and_then(|id| saml.idp_cert_added_at.get(&id).copied())
                    .unwrap_or(record.connection.created_at);
                describe(kind, pem, added)
            })
            .collect(),
        CertificateKind::SpEncryption | CertificateKind::SpSigning => {
            let keys = if kind == CertificateKind::SpSigning {
                &saml.sp_signing_keys
            } else {
                &saml.sp_encryption_keys
            };
            keys.iter()
                .filter_map(|k| describe(kind, &k.cert_pem, k.created_at))
                .collect()
        }
    };
    out.sort_by_key(|c| c.created_at);
    out
}

/// Why an IdP signing certificate is not acceptable (the 422 code), or the parsed certificate.
pub fn check_idp_certificate(pem: &str) -> Result<X509, &'static str> {
    if pem.len() > MAX_CERT_PEM_BYTES {
        return Err("certificate_too_large");
    }
    let trimmed = pem.trim();
    if !trimmed.starts_with("-----BEGIN CERTIFICATE-----") {
        return Err("not_a_pem_certificate");
    }
    let cert = X509::from_pem(trimmed.as_bytes()).map_err(|_| "invalid_certificate")?;
    let now = Asn1Time::days_from_now(0).map_err(|_| "invalid_certificate")?;
    if cert.not_after() <= now {
        return Err("certificate_expired");
    }
    // A key SAML signatures can be verified with: RSA of at least 2048 bits, or EC.
    let key = cert.public_key().map_err(|_| "invalid_certificate")?;
    let usable = match key.id() {
        openssl::pkey::Id::RSA => key.bits() >= 2048,
        openssl::pkey::Id::EC => true,
        _ => false,
    };
    if !usable {
        return Err("unsupported_certificate_key");
    }
    Ok(cert)
}

/// What a [`check_idp_certificate`] code means and what to do.
pub fn explain_certificate_problem(code: &str) -> &'static str {
    match code {
        "certificate_too_large" => {
            "The certificate is larger than 16 KiB; send one PEM certificate."
        }
        "not_a_pem_certificate" => {
            "`value` must be one PEM certificate starting with -----BEGIN CERTIFICATE-----."
        }
        "certificate_expired" => "The certificate has expired; send the IdP's current certificate.",
        "unsupported_certificate_key" => {
            "The certificate's key cannot verify SAML signatures (RSA of 2048 bits or more, or EC)."
        }
        _ => "The PEM does not hold a valid X.509 certificate.",
    }
}

impl SsoService {
    fn saml_record(&self, conn_id: &str) -> SsoResult<(ConnectionRecord, SamlConnection)> {
        let record = self.connections.load(conn_id)?;
        let ProtocolSettings::Saml(saml) = &record.protocol else {
            return Err(SsoError::Refused {
                code: "not_a_saml_connection",
                message: "Only SAML connections have SAML certificates.".into(),
            });
        };
        let saml = saml.clone();
        Ok((record, saml))
    }

    /// Replaces the SAML settings of `old` in one commit (the record must be unchanged).
    pub(crate) async fn replace_saml(
        &self,
        old: &ConnectionRecord,
        saml: SamlConnection,
    ) -> SsoResult<ConnectionRecord> {
        let mut record = old.clone();
        record.protocol = ProtocolSettings::Saml(saml);
        record.connection.updated_at = Timestamp::now();
        let mut cs = ChangeSet::new();
        Connections::stage_replace(&mut cs, old, &record)?;
        match db::commit(&self.store, cs).await {
            Ok(_) => Ok(record),
            Err(e @ StoreError::Conflict { .. }) if Connections::is_record_conflict(&e) => {
                Err(SsoError::concurrent("connection"))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every certificate of `kind` on a SAML connection, oldest first (expired ones too).
    pub fn saml_certificates(
        &self,
        conn_id: &str,
        kind: CertificateKind,
    ) -> SsoResult<Vec<SamlCertificate>> {
        let (record, saml) = self.saml_record(conn_id)?;
        Ok(certificates(&record, &saml, kind))
    }

    /// The SP signing certificate that signs requests now; 404 when there is none.
    pub fn sp_signing_certificate(&self, conn_id: &str) -> SsoResult<SamlCertificate> {
        let (record, saml) = self.saml_record(conn_id)?;
        saml.sp_signing_keys
            .first()
            .and_then(|k| describe(CertificateKind::SpSigning, &k.cert_pem, k.created_at))
            .ok_or_else(|| SsoError::not_found(CertificateKind::SpSigning.entity(), record.id()))
    }

    /// Imports an IdP signing certificate (PEM): parsed, not expired, a usable key, not already
    /// trusted; responses signed with its key verify from the next login on.
    #[tracing::instrument(name = "connections.add_idp_cert", skip(self, pem))]
    pub async fn add_idp_signing_certificate(
        &self,
        conn_id: &str,
        pem: &str,
    ) -> SsoResult<SamlCertificate> {
        let (record, mut saml) = self.saml_record(conn_id)?;
        check_idp_certificate(pem).map_err(|code| SsoError::invalid("value", code))?;
        let pem = pem.trim().to_string() + "\n";
        let id = certificate_id(&pem)
            .ok_or_else(|| SsoError::invalid("value", "invalid_certificate"))?;
        if saml
            .idp_signing_certs
            .iter()
            .any(|c| certificate_id(c).as_deref() == Some(id.as_str()))
        {
            return Err(SsoError::Conflict {
                code: "certificate_already_exists",
                message: format!("The connection already trusts this certificate ({id})."),
            });
        }
        if saml.idp_signing_certs.len() >= MAX_IDP_SIGNING_CERTS {
            return Err(SsoError::Conflict {
                code: "too_many_certificates",
                message: format!(
                    "A connection trusts at most {MAX_IDP_SIGNING_CERTS} IdP signing certificates; delete one first."
                ),
            });
        }
        let now = Timestamp::now();
        saml.idp_signing_certs.push(pem.clone());
        saml.idp_cert_added_at.insert(id, now);
        self.replace_saml(&record, saml).await?;
        describe(CertificateKind::IdpSigning, &pem, now)
            .ok_or_else(|| SsoError::internal("certificate stopped parsing"))
    }

    /// Generates a new SP key pair of `kind` (not IdP) and returns its certificate. An
    /// encryption pair is added beside the others (at most [`MAX_SP_KEYS`]); a signing pair
    /// only when there is none, and requests are signed again.
    #[tracing::instrument(name = "connections.add_sp_cert", skip(self))]
    pub async fn generate_sp_certificate(
        &self,
        conn_id: &str,
        kind: CertificateKind,
    ) -> SsoResult<SamlCertificate> {
        let (record, mut saml) = self.saml_record(conn_id)?;
        let (list, purpose) = match kind {
            CertificateKind::SpEncryption => (&mut saml.sp_encryption_keys, SP_ENCRYPTION),
            CertificateKind::SpSigning => (&mut saml.sp_signing_keys, SP_SIGNING),
            CertificateKind::IdpSigning => {
                return Err(SsoError::internal(
                    "IdP certificates are imported, not generated",
                ))
            }
        };
        let limit = if kind == CertificateKind::SpSigning {
            1
        } else {
            MAX_SP_KEYS
        };
        if list.len() >= limit {
            return Err(SsoError::Conflict {
                code: "certificate_limit_reached",
                message: format!(
                    "The connection already has {} {} certificate(s); delete one before creating another.",
                    list.len(),
                    if kind == CertificateKind::SpSigning { "SP signing" } else { "SP encryption" }
                ),
            });
        }
        let pair = generate_sp_pair(self.secrets()?, conn_id, purpose).await?;
        let created = describe(kind, &pair.cert_pem, pair.created_at)
            .ok_or_else(|| SsoError::internal("generated certificate does not parse"))?;
        list.push(pair);
        if kind == CertificateKind::SpSigning {
            saml.sign_requests = true;
        }
        self.replace_saml(&record, saml).await?;
        Ok(created)
    }

    /// Deletes one certificate by id. The last IdP signing certificate stays (a connection
    /// never runs without a trusted IdP key); deleting the SP signing certificate makes
    /// requests unsigned.
    #[tracing::instrument(name = "connections.delete_cert", skip(self))]
    pub async fn delete_saml_certificate(
        &self,
        conn_id: &str,
        kind: CertificateKind,
        cert_id: &str,
    ) -> SsoResult<()> {
        let (record, mut saml) = self.saml_record(conn_id)?;
        let not_found = || SsoError::not_found(kind.entity(), cert_id);
        match kind {
            CertificateKind::IdpSigning => {
                let pos = saml
                    .idp_signing_certs
                    .iter()
                    .position(|c| certificate_id(c).as_deref() == Some(cert_id))
                    .ok_or_else(not_found)?;
                if saml.idp_signing_certs.len() == 1 {
                    return Err(SsoError::Refused {
                        code: "last_certificate",
                        message: "This is the connection's only IdP signing certificate; add its replacement before deleting it.".into(),
                    });
                }
                saml.idp_signing_certs.remove(pos);
                saml.idp_cert_added_at.remove(cert_id);
            }
            CertificateKind::SpEncryption | CertificateKind::SpSigning => {
                let list = if kind == CertificateKind::SpSigning {
                    &mut saml.sp_signing_keys
                } else {
                    &mut saml.sp_encryption_keys
                };
                let pos = list
                    .iter()
                    .position(|k| certificate_id(&k.cert_pem).as_deref() == Some(cert_id))
                    .ok_or_else(not_found)?;
                list.remove(pos);
                if kind == CertificateKind::SpSigning && saml.sp_signing_keys.is_empty() {
                    saml.sign_requests = false;
                }
            }
        }
        self.replace_saml(&record, saml).await?;
        tracing::info!(connection_id = %conn_id, certificate_id = %cert_id, ?kind, "certificate deleted");
        Ok(())
    }
}

/// Import times of IdP signing certificates added through the API, by certificate id.
pub type ImportTimes = BTreeMap<String, Timestamp>;
