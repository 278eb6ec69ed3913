//! Per-connection settings: what we trust about the IdP and who we are as the SP.

use crate::error::SamlError;
use crate::xml::{self, Element, Limits, NS_DSIG, NS_METADATA};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509NameBuilder, X509};
use std::time::Duration;

/// HTTP-Redirect binding URI.
pub const BINDING_REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
/// HTTP-POST binding URI.
pub const BINDING_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";

/// Default allowed clock skew (the spec asks for 60–180 s).
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(120);
/// Largest clock skew we accept from configuration; more would make replay windows meaningless.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(600);
/// Default maximum age of a Response/Assertion IssueInstant (beyond the skew).
pub const DEFAULT_MAX_RESPONSE_AGE: Duration = Duration::from_secs(180);

/// What we trust about the identity provider.
#[derive(Debug, Clone)]
pub struct IdpSettings {
    /// The IdP's entity id; both the Response and the Assertion Issuer must equal it.
    pub entity_id: String,
    /// HTTP-Redirect SingleSignOnService location (needed for SP-initiated login).
    pub sso_url: Option<String>,
    /// Trusted signing certificates: one, or two during a rollover. Never empty at verify time.
    pub signing_certs: Vec<X509>,
    /// Accept rsa-sha1/sha1 signatures (off unless an admin turns it on).
    pub allow_sha1: bool,
    /// The IdP metadata says `WantAuthnRequestsSigned="true"`.
    pub wants_signed_requests: bool,
}

impl IdpSettings {
    /// Settings from explicit values; each certificate may be PEM or DER.
    pub fn new(
        entity_id: impl Into<String>,
        sso_url: Option<String>,
        certs: &[&[u8]],
    ) -> Result<Self, SamlError> {
        let signing_certs = certs
            .iter()
            .map(|c| parse_cert(c))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            entity_id: entity_id.into(),
            sso_url,
            signing_certs,
            allow_sha1: false,
            wants_signed_requests: false,
        })
    }

    /// Parse IdP metadata (an `EntityDescriptor`, or an `EntitiesDescriptor` holding exactly one
    /// IdP) through the same hostile-XML gate as messages. Takes the entity id, the
    /// HTTP-Redirect SSO location and every signing certificate (`use="signing"` or no `use`).
    pub fn from_metadata_xml(metadata: &str) -> Result<Self, SamlError> {
        let root = xml::parse(metadata, &Limits::METADATA)?;
        let entity = idp_entity(&root)?;
        Self::from_entity(entity)
    }

    /// The IdP's HTTP-Redirect SingleLogoutService location in its metadata, if it offers one
    /// (single logout is only started towards an IdP that has it).
    pub fn slo_url_from_metadata_xml(metadata: &str) -> Result<Option<String>, SamlError> {
        let root = xml::parse(metadata, &Limits::METADATA)?;
        let entity = idp_entity(&root)?;
        Ok(entity
            .child(NS_METADATA, "IDPSSODescriptor")
            .and_then(|idp| {
                idp.children_named(NS_METADATA, "SingleLogoutService")
                    .find(|s| s.attr("Binding") == Some(BINDING_REDIRECT))
            })
            .and_then(|s| s.attr("Location"))
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty()))
    }

    fn from_entity(entity: &Element) -> Result<Self, SamlError> {
        let entity_id = entity
            .attr("entityID")
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| SamlError::Config("metadata has no entityID".into()))?
            .trim()
            .to_owned();
        let idp = entity
            .child(NS_METADATA, "IDPSSODescriptor")
            .ok_or_else(|| SamlError::Config("metadata has no IDPSSODescriptor".into()))?;
        let sso_url = idp
            .children_named(NS_METADATA, "SingleSignOnService")
            .find(|s| s.attr("Binding") == Some(BINDING_REDIRECT))
            .and_then(|s| s.attr("Location"))
            .map(|s| s.trim().to_owned());
        let mut signing_certs = Vec::new();
        for kd in idp.children_named(NS_METADATA, "KeyDescriptor") {
            if !matches!(kd.attr("use"), None | Some("signing")) {
                continue;
            }
            let Some(ki) = kd.child(NS_DSIG, "KeyInfo") else {
                continue;
            };
            for x509 in ki.children_named(NS_DSIG, "X509Data") {
                for c in x509.children_named(NS_DSIG, "X509Certificate") {
                    let der = xml::decode_base64_lenient(&c.text()).map_err(|_| {
                        SamlError::Config("metadata certificate is not base64".into())
                    })?;
                    let cert = parse_cert(&der)?;
                    if !signing_certs
                        .iter()
                        .any(|c: &X509| c.to_der().ok() == Some(der.clone()))
                    {
                        signing_certs.push(cert);
                    }
                }
            }
        }
        if signing_certs.is_empty() {
            return Err(SamlError::Config(
                "metadata has no IdP signing certificate".into(),
            ));
        }
        Ok(Self {
            entity_id,
            sso_url,
            signing_certs,
            allow_sha1: false,
            wants_signed_requests: idp.attr("WantAuthnRequestsSigned") == Some("true"),
        })
    }
}

/// The IdP's `EntityDescriptor`: the root, or the one IdP of an `EntitiesDescriptor`.
fn idp_entity(root: &Element) -> Result<&Element, SamlError> {
    if root.is(NS_METADATA, "EntityDescriptor") {
        return Ok(root);
    }
    if !root.is(NS_METADATA, "EntitiesDescriptor") {
        return Err(SamlError::Config(
            "metadata root is not an EntityDescriptor".into(),
        ));
    }
    let idps: Vec<&Element> = root
        .children_named(NS_METADATA, "EntityDescriptor")
        .filter(|e| e.child(NS_METADATA, "IDPSSODescriptor").is_some())
        .collect();
    match idps.as_slice() {
        [one] => Ok(*one),
        _ => Err(SamlError::Config(format!(
            "metadata holds {} IdP entities, expected one",
            idps.len()
        ))),
    }
}

/// Parse one X.509 certificate from PEM or DER.
pub fn parse_cert(bytes: &[u8]) -> Result<X509, SamlError> {
    let trimmed = bytes.trim_ascii_start();
    let parsed = if trimmed.starts_with(b"-----BEGIN") {
        X509::from_pem(trimmed)
    } else {
        X509::from_der(bytes)
    };
    parsed.map_err(|e| SamlError::Config(format!("invalid certificate: {e}")))
}

/// An SP key and its self-signed certificate (signing or decryption).
#[derive(Clone)]
pub struct SpKeyPair {
    pub key: PKey<Private>,
    pub cert: X509,
}

impl std::fmt::Debug for SpKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print private key material.
        f.debug_struct("SpKeyPair")
            .field("cert_subject", &self.cert.subject_name())
            .finish_non_exhaustive()
    }
}

impl SpKeyPair {
    /// Generate an RSA-2048 key and a self-signed certificate valid for `days` (SAML peers pin
    /// the certificate, so a CA is not needed).
    pub fn generate(common_name: &str, days: u32) -> Result<Self, SamlError> {
        let err = |e: openssl::error::ErrorStack| SamlError::Build(format!("key generation: {e}"));
        let rsa = Rsa::generate(2048).map_err(err)?;
        Self::self_signed(PKey::from_rsa(rsa).map_err(err)?, common_name, days)
    }

    /// Wrap an existing key (RSA or EC) in a fresh self-signed SHA-256 certificate.
    pub fn self_signed(
        key: PKey<Private>,
        common_name: &str,
        days: u32,
    ) -> Result<Self, SamlError> {
        let err = |e: openssl::error::ErrorStack| SamlError::Build(format!("certificate: {e}"));
        let mut name = X509NameBuilder::new().map_err(err)?;
        name.append_entry_by_text("CN", common_name).map_err(err)?;
        let name = name.build();
        let mut b = X509::builder().map_err(err)?;
        b.set_version(2).map_err(err)?;
        let mut serial = BigNum::new().map_err(err)?;
        serial
            .rand(127, MsbOption::MAYBE_ZERO, false)
            .map_err(err)?;
        let serial = serial.to_asn1_integer().map_err(err)?;
        b.set_serial_number(&serial).map_err(err)?;
        b.set_subject_name(&name).map_err(err)?;
        b.set_issuer_name(&name).map_err(err)?;
        b.set_pubkey(&key).map_err(err)?;
        let not_before = Asn1Time::days_from_now(0).map_err(err)?;
        b.set_not_before(&not_before).map_err(err)?;
        let not_after = Asn1Time::days_from_now(days).map_err(err)?;
        b.set_not_after(&not_after).map_err(err)?;
        b.sign(&key, MessageDigest::sha256()).map_err(err)?;
        Ok(Self {
            key,
            cert: b.build(),
        })
    }

    /// Load from PEM private key and PEM/DER certificate.
    pub fn from_pem(key_pem: &[u8], cert: &[u8]) -> Result<Self, SamlError> {
        let key = PKey::private_key_from_pem(key_pem)
            .map_err(|e| SamlError::Config(format!("invalid private key: {e}")))?;
        Ok(Self {
            key,
            cert: parse_cert(cert)?,
        })
    }
}

/// Who we are for one connection.
#[derive(Debug, Clone)]
pub struct SpSettings {
    /// Our SP entity id (must appear in the AudienceRestriction).
    pub entity_id: String,
    /// Our Assertion Consumer Service URL (Destination and Recipient must equal it).
    pub acs_url: String,
    /// Signing keys for AuthnRequests: the first signs, all are published (rollover).
    pub signing_keys: Vec<SpKeyPair>,
    /// Decryption keys: every one is tried, all are published (two during a rollover).
    pub decryption_keys: Vec<SpKeyPair>,
    /// Accept unsolicited (IdP-initiated) responses.
    pub allow_idp_initiated: bool,
    /// Allowed clock skew for every time check (at most [`MAX_CLOCK_SKEW`]).
    pub clock_skew: Duration,
    /// How old an IssueInstant may be, on top of the skew.
    pub max_response_age: Duration,
    /// Sign AuthnRequests (SigAlg/Signature on the Redirect binding).
    pub want_signed_requests: bool,
    /// Our SingleLogoutService (HTTP-Redirect) URL, published in the SP metadata when set.
    pub slo_url: Option<String>,
}

impl SpSettings {
    /// Settings with safe defaults: SP-initiated only, 120 s skew, no keys.
    pub fn new(entity_id: impl Into<String>, acs_url: impl Into<String>) -> Self {
        Self {
            entity_id: entity_id.into(),
            acs_url: acs_url.into(),
            signing_keys: Vec::new(),
            decryption_keys: Vec::new(),
            allow_idp_initiated: false,
            clock_skew: DEFAULT_CLOCK_SKEW,
            max_response_age: DEFAULT_MAX_RESPONSE_AGE,
            want_signed_requests: false,
            slo_url: None,
        }
    }
}
