//! The IdP's signing key: RSA (2048 or 3072 bits) with a self-signed certificate that SPs pin
//! (the same pattern as [`crate::SpKeyPair`]). Everything a signature needs besides the RSA
//! operation is computed once here (the certificate's base64 DER for KeyInfo).

use super::error::IdpError;
use crate::settings::{parse_cert, SpKeyPair};
use base64::Engine as _;
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use openssl::x509::X509;

/// RSA modulus size of a generated IdP key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RsaBits {
    /// RSA-2048: what every SP accepts, and the fastest to sign with.
    #[default]
    Rsa2048,
    /// RSA-3072: for policies that require 128-bit strength (≈3× the signing cost).
    Rsa3072,
}

impl RsaBits {
    fn bits(self) -> u32 {
        match self {
            RsaBits::Rsa2048 => 2048,
            RsaBits::Rsa3072 => 3072,
        }
    }
}

/// An IdP signing key and its certificate.
#[derive(Clone)]
pub struct IdpSigningKey {
    key: PKey<Private>,
    cert: X509,
    cert_b64: String,
}

impl std::fmt::Debug for IdpSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print private key material.
        f.debug_struct("IdpSigningKey")
            .field("cert_subject", &self.cert.subject_name())
            .finish_non_exhaustive()
    }
}

impl IdpSigningKey {
    /// A fresh RSA key with a self-signed SHA-256 certificate for `common_name`, valid `days`.
    pub fn generate(common_name: &str, bits: RsaBits, days: u32) -> Result<Self, IdpError> {
        let rsa = Rsa::generate(bits.bits()).map_err(IdpError::build)?;
        let key = PKey::from_rsa(rsa).map_err(IdpError::build)?;
        let pair = SpKeyPair::self_signed(key, common_name, days)
            .map_err(|e| IdpError::Build(e.to_string()))?;
        Self::new(pair.key, pair.cert)
    }

    /// Wrap a key and its certificate; refuses a non-RSA key or a certificate of another key.
    pub fn new(key: PKey<Private>, cert: X509) -> Result<Self, IdpError> {
        if key.id() != Id::RSA {
            return Err(IdpError::Config(
                "the IdP signing key must be RSA (responses are signed with RSA-SHA256)".into(),
            ));
        }
        let cert_key = cert.public_key().map_err(IdpError::build)?;
        if !key.public_eq(&cert_key) {
            return Err(IdpError::Config(
                "the IdP certificate does not belong to the signing key".into(),
            ));
        }
        let der = cert.to_der().map_err(IdpError::build)?;
        Ok(Self {
            key,
            cert,
            cert_b64: base64::engine::general_purpose::STANDARD.encode(der),
        })
    }

    /// Load from a PEM private key (PKCS#8 or PKCS#1) and a PEM or DER certificate.
    pub fn from_pem(key_pem: &[u8], cert: &[u8]) -> Result<Self, IdpError> {
        let key = PKey::private_key_from_pem(key_pem)
            .map_err(|e| IdpError::Config(format!("invalid IdP private key: {e}")))?;
        let cert = parse_cert(cert).map_err(|e| IdpError::Config(e.to_string()))?;
        Self::new(key, cert)
    }

    /// The private key as PKCS#8 PEM (to seal it before it reaches the store).
    pub fn private_key_pem(&self) -> Result<Vec<u8>, IdpError> {
        self.key.private_key_to_pem_pkcs8().map_err(IdpError::build)
    }

    /// The certificate as PEM.
    pub fn cert_pem(&self) -> Result<Vec<u8>, IdpError> {
        self.cert.to_pem().map_err(IdpError::build)
    }

    /// The certificate.
    pub fn cert(&self) -> &X509 {
        &self.cert
    }

    /// The certificate's DER in base64 (what metadata and KeyInfo carry).
    pub fn cert_der_b64(&self) -> &str {
        &self.cert_b64
    }

    /// The private key (for callers that need openssl directly, e.g. tests).
    pub fn key(&self) -> &PKey<Private> {
        &self.key
    }

    /// RSA PKCS#1 v1.5 signature with SHA-256 over `data`.
    pub(crate) fn sign_rsa_sha256(&self, data: &[u8]) -> Result<Vec<u8>, IdpError> {
        let mut s = Signer::new(MessageDigest::sha256(), &self.key).map_err(IdpError::build)?;
        s.update(data).map_err(IdpError::build)?;
        s.sign_to_vec().map_err(IdpError::build)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_through_pem() {
        let k = IdpSigningKey::generate("idp.example.test", RsaBits::Rsa2048, 30).unwrap();
        let again =
            IdpSigningKey::from_pem(&k.private_key_pem().unwrap(), &k.cert_pem().unwrap()).unwrap();
        assert_eq!(again.cert_der_b64(), k.cert_der_b64());
        assert_eq!(k.key().bits(), 2048);
        assert!(!format!("{k:?}").contains("PRIVATE"));
    }

    #[test]
    fn a_certificate_of_another_key_is_refused() {
        let a = IdpSigningKey::generate("a", RsaBits::Rsa2048, 1).unwrap();
        let b = IdpSigningKey::generate("b", RsaBits::Rsa2048, 1).unwrap();
        let err = IdpSigningKey::new(a.key().clone(), b.cert().clone()).unwrap_err();
        assert!(matches!(err, IdpError::Config(_)), "{err}");
    }

    #[test]
    fn ec_keys_are_refused() {
        let group =
            openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
        let ec = PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap();
        let pair = SpKeyPair::self_signed(ec, "ec", 1).unwrap();
        assert!(matches!(
            IdpSigningKey::new(pair.key, pair.cert),
            Err(IdpError::Config(_))
        ));
    }
}
