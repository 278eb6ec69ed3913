//! Login Responses from idbridge-as-IdP: written directly in canonical form
//! ([`super::c14n`]), the Assertion signed (RSA-SHA256, exc-c14n, enveloped) and optionally
//! encrypted for the SP, the Response optionally signed too. A signature costs one SHA-256 over
//! the bytes just written and one RSA operation — no parse, no canonicalization pass.
//!
//! Every value that can come from a user, a directory or an upstream IdP (NameID, attribute
//! names and values, RelayState, ids) goes through the writer's escaping; a character XML cannot
//! carry is an error, never a silently altered value.

use super::c14n::{CanonicalWriter, SAML, SAMLP};
use super::encrypt::{encrypt, write_encrypted_assertion, DataEnc, KeyEnc};
use super::error::{status, IdpError, SpErrorResponse};
use super::keys::IdpSigningKey;
use super::sign::sign_in_place;
use crate::model::CM_BEARER;
use crate::sp::new_id;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use openssl::x509::X509;
use std::time::Duration;

/// NameID formats (SAML core §8.3).
pub mod name_id_format {
    pub const UNSPECIFIED: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified";
    pub const EMAIL: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";
    pub const PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
    pub const TRANSIENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";
}

/// Attribute NameFormat `basic` (names are plain strings such as `email`).
pub const ATTRNAME_BASIC: &str = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic";
/// AuthnContext class of a password login over TLS (directory mode).
pub const AC_PASSWORD_PROTECTED_TRANSPORT: &str =
    "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport";
/// Default assertion lifetime (NotOnOrAfter - IssueInstant).
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(300);
/// Default backdating of NotBefore, for SPs whose clock runs behind ours.
pub const DEFAULT_NOT_BEFORE_SKEW: Duration = Duration::from_secs(60);
/// Longest assertion lifetime the builder accepts: a bearer assertion is a password for its
/// whole lifetime.
pub const MAX_VALIDITY: Duration = Duration::from_secs(3600);

/// xs:dateTime in UTC with milliseconds.
pub fn saml_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// One released attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamlAttribute {
    pub name: String,
    pub values: Vec<String>,
}

impl SamlAttribute {
    pub fn new(name: impl Into<String>, values: Vec<String>) -> Self {
        Self {
            name: name.into(),
            values,
        }
    }
}

/// The user as WorkOS's "Custom SAML" connection reads them (workos-api.md §8.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserAttributes {
    /// Stable id (WorkOS `idp_id`): attribute `id`.
    pub id: String,
    /// Attribute `email`.
    pub email: Option<String>,
    /// Attribute `firstName`.
    pub first_name: Option<String>,
    /// Attribute `lastName`.
    pub last_name: Option<String>,
    /// Attribute `groups` (multi-valued; WorkOS "IdP Group IDs").
    pub groups: Vec<String>,
    /// Configured custom attributes, in order.
    pub custom: Vec<SamlAttribute>,
}

/// Names the standard attributes use; a custom attribute may not reuse one.
pub const STANDARD_ATTRIBUTE_NAMES: [&str; 5] = ["id", "email", "firstName", "lastName", "groups"];

impl UserAttributes {
    /// The attribute statement: `id`, `email`, `firstName`, `lastName`, `groups`, then the
    /// custom ones. Absent values and empty lists are left out (an empty `<Attribute>` would
    /// read as "the IdP says: none" to some SPs). A custom attribute named like a standard one,
    /// or two custom attributes with one name, is a configuration error.
    pub fn to_saml(&self) -> Result<Vec<SamlAttribute>, IdpError> {
        let mut out = vec![SamlAttribute::new("id", vec![self.id.clone()])];
        for (name, v) in [
            ("email", &self.email),
            ("firstName", &self.first_name),
            ("lastName", &self.last_name),
        ] {
            if let Some(v) = v {
                out.push(SamlAttribute::new(name, vec![v.clone()]));
            }
        }
        if !self.groups.is_empty() {
            out.push(SamlAttribute::new("groups", self.groups.clone()));
        }
        for c in &self.custom {
            if c.name.trim().is_empty() {
                return Err(IdpError::Config(
                    "a custom attribute has an empty name".into(),
                ));
            }
            if out.iter().any(|a| a.name == c.name) {
                return Err(IdpError::Config(format!(
                    "custom attribute {:?} repeats the name of another attribute",
                    c.name
                )));
            }
            if !c.values.is_empty() {
                out.push(c.clone());
            }
        }
        Ok(out)
    }
}

/// How an SP wants its responses (per registered service provider).
#[derive(Debug, Clone)]
pub struct ResponseOptions {
    /// Sign the Assertion (WorkOS requires it; turn off only when the Response is signed).
    pub sign_assertion: bool,
    /// Sign the Response envelope too.
    pub sign_response: bool,
    /// Encrypt the (signed) assertion for the SP.
    pub encryption: Option<AssertionEncryption>,
    /// NotOnOrAfter of the assertion and of the bearer confirmation, from now.
    pub validity: Duration,
    /// NotBefore is set this far in the past.
    pub not_before_skew: Duration,
    /// AuthnContextClassRef of the AuthnStatement.
    pub authn_context_class: String,
    /// NameFormat of every Attribute.
    pub attribute_name_format: String,
}

impl Default for ResponseOptions {
    fn default() -> Self {
        Self {
            sign_assertion: true,
            sign_response: false,
            encryption: None,
            validity: DEFAULT_VALIDITY,
            not_before_skew: DEFAULT_NOT_BEFORE_SKEW,
            authn_context_class: AC_PASSWORD_PROTECTED_TRANSPORT.into(),
            attribute_name_format: ATTRNAME_BASIC.into(),
        }
    }
}

/// Assertion encryption with the SP's certificate.
#[derive(Debug, Clone)]
pub struct AssertionEncryption {
    pub cert: X509,
    pub data: DataEnc,
    pub key: KeyEnc,
}

impl AssertionEncryption {
    /// AES-256-GCM content encryption, RSA-OAEP (SHA-1 MGF, understood everywhere) key transport.
    pub fn aes256_gcm(cert: X509) -> Self {
        Self {
            cert,
            data: DataEnc::Aes256Gcm,
            key: KeyEnc::OaepSha1,
        }
    }
}

/// The NameID to put in the Subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameId {
    pub value: String,
    pub format: String,
}

/// One login's response.
#[derive(Debug, Clone)]
pub struct LoginResponse<'a> {
    /// Our IdP entity id (Issuer).
    pub idp_entity_id: &'a str,
    /// The SP's entity id (the only Audience).
    pub sp_entity_id: &'a str,
    /// The registered ACS URL the Response is POSTed to (Destination and Recipient).
    pub acs_url: &'a str,
    /// The AuthnRequest ID (`None` for an IdP-initiated login).
    pub in_response_to: Option<&'a str>,
    pub name_id: &'a NameId,
    /// The IdP session's index (single logout refers to it).
    pub session_index: &'a str,
    /// When the user authenticated (earlier than `now` for a remembered session).
    pub authn_instant: DateTime<Utc>,
    pub attributes: &'a [SamlAttribute],
    pub now: DateTime<Utc>,
    pub options: &'a ResponseOptions,
}

/// A finished Response.
#[derive(Debug, Clone)]
pub struct SignedResponse {
    /// The Response XML (no XML declaration).
    pub xml: String,
    pub response_id: String,
    pub assertion_id: String,
    /// The assertion's NotOnOrAfter.
    pub not_on_or_after: DateTime<Utc>,
}

impl SignedResponse {
    /// The `SAMLResponse` form value of the HTTP-POST binding.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.xml.as_bytes())
    }
}

fn require_nonempty(what: &'static str, v: &str) -> Result<(), IdpError> {
    if v.trim().is_empty() {
        return Err(IdpError::Config(format!("{what} is empty")));
    }
    Ok(())
}

/// Write the assertion (signed when asked) into a string of its own.
fn write_assertion(
    r: &LoginResponse<'_>,
    key: &IdpSigningKey,
    assertion_id: &str,
    not_on_or_after: &str,
    issue_instant: &str,
) -> Result<String, IdpError> {
    let o = r.options;
    let not_before = saml_time(r.now - chrono_dur(o.not_before_skew));
    let authn_instant = saml_time(r.authn_instant);
    let value_bytes: usize = r
        .attributes
        .iter()
        .map(|a| a.name.len() + 120 + a.values.iter().map(|v| v.len() + 48).sum::<usize>())
        .sum();
    let mut w = CanonicalWriter::with_capacity(2048 + value_bytes);
    w.start(
        SAML,
        "Assertion",
        &[
            ("ID", assertion_id),
            ("IssueInstant", issue_instant),
            ("Version", "2.0"),
        ],
    )?;
    w.leaf(SAML, "Issuer", &[], r.idp_entity_id)?;
    let signature_at = w.len();
    let scope_at_signature = w.in_scope().to_vec();

    w.start(SAML, "Subject", &[])?;
    w.leaf(
        SAML,
        "NameID",
        &[("Format", &r.name_id.format)],
        &r.name_id.value,
    )?;
    w.start(SAML, "SubjectConfirmation", &[("Method", CM_BEARER)])?;
    match r.in_response_to {
        Some(req) => w.empty(
            SAML,
            "SubjectConfirmationData",
            &[
                ("InResponseTo", req),
                ("NotOnOrAfter", not_on_or_after),
                ("Recipient", r.acs_url),
            ],
        )?,
        None => w.empty(
            SAML,
            "SubjectConfirmationData",
            &[("NotOnOrAfter", not_on_or_after), ("Recipient", r.acs_url)],
        )?,
    }
    w.end(); // SubjectConfirmation
    w.end(); // Subject
    w.start(
        SAML,
        "Conditions",
        &[
            ("NotBefore", &not_before),
            ("NotOnOrAfter", not_on_or_after),
        ],
    )?;
    w.start(SAML, "AudienceRestriction", &[])?;
    w.leaf(SAML, "Audience", &[], r.sp_entity_id)?;
    w.end();
    w.end();
    w.start(
        SAML,
        "AuthnStatement",
        &[
            ("AuthnInstant", &authn_instant),
            ("SessionIndex", r.session_index),
        ],
    )?;
    w.start(SAML, "AuthnContext", &[])?;
    w.leaf(SAML, "AuthnContextClassRef", &[], &o.authn_context_class)?;
    w.end();
    w.end();
    if !r.attributes.is_empty() {
        w.start(SAML, "AttributeStatement", &[])?;
        for a in r.attributes {
            w.start(
                SAML,
                "Attribute",
                &[("Name", &a.name), ("NameFormat", &o.attribute_name_format)],
            )?;
            for v in &a.values {
                w.leaf(SAML, "AttributeValue", &[], v)?;
            }
            w.end();
        }
        w.end();
    }
    w.end(); // Assertion

    if o.sign_assertion {
        sign_in_place(&mut w, key, assertion_id, signature_at, &scope_at_signature)?;
    }
    Ok(w.finish())
}

/// Build and sign a login Response for the HTTP-POST binding.
#[tracing::instrument(skip_all, fields(sp = %r.sp_entity_id))]
pub fn build_login_response(
    r: &LoginResponse<'_>,
    key: &IdpSigningKey,
) -> Result<SignedResponse, IdpError> {
    let o = r.options;
    require_nonempty("the IdP entity id", r.idp_entity_id)?;
    require_nonempty("the SP entity id", r.sp_entity_id)?;
    require_nonempty("the ACS URL", r.acs_url)?;
    require_nonempty("the NameID", &r.name_id.value)?;
    require_nonempty("the SessionIndex", r.session_index)?;
    if !o.sign_assertion && !o.sign_response {
        return Err(IdpError::Config(
            "an unsigned assertion in an unsigned response proves nothing: sign one of them".into(),
        ));
    }
    if o.validity.is_zero() || o.validity > MAX_VALIDITY {
        return Err(IdpError::Config(format!(
            "assertion validity must be between 1 s and {} s",
            MAX_VALIDITY.as_secs()
        )));
    }
    let response_id = new_id().map_err(|e| IdpError::Build(e.to_string()))?;
    let assertion_id = new_id().map_err(|e| IdpError::Build(e.to_string()))?;
    let issue_instant = saml_time(r.now);
    let not_on_or_after_t = r.now + chrono_dur(o.validity);
    let not_on_or_after = saml_time(not_on_or_after_t);

    let assertion = write_assertion(r, key, &assertion_id, &not_on_or_after, &issue_instant)?;
    let encrypted = match &o.encryption {
        Some(e) => Some(encrypt(assertion.as_bytes(), &e.cert, e.data, e.key)?),
        None => None,
    };

    let mut w = CanonicalWriter::with_capacity(assertion.len() * 4 / 3 + 4096);
    write_response_head(
        &mut w,
        &response_id,
        r.acs_url,
        r.in_response_to,
        &issue_instant,
    )?;
    w.leaf(SAML, "Issuer", &[], r.idp_entity_id)?;
    let signature_at = w.len();
    let scope_at_signature = w.in_scope().to_vec();
    w.start(SAMLP, "Status", &[])?;
    w.empty(SAMLP, "StatusCode", &[("Value", status::SUCCESS)])?;
    w.end();
    match &encrypted {
        // The assertion declares its own namespaces, and no ancestor in the Response renders
        // one it uses, so its canonical bytes are canonical here too.
        None => w.raw(&assertion),
        Some(e) => write_encrypted_assertion(&mut w, e)?,
    }
    w.end(); // Response
    if o.sign_response {
        sign_in_place(&mut w, key, &response_id, signature_at, &scope_at_signature)?;
    }
    Ok(SignedResponse {
        xml: w.finish(),
        response_id,
        assertion_id,
        not_on_or_after: not_on_or_after_t,
    })
}

fn write_response_head(
    w: &mut CanonicalWriter,
    response_id: &str,
    destination: &str,
    in_response_to: Option<&str>,
    issue_instant: &str,
) -> Result<(), IdpError> {
    match in_response_to {
        Some(req) => w.start(
            SAMLP,
            "Response",
            &[
                ("Destination", destination),
                ("ID", response_id),
                ("InResponseTo", req),
                ("IssueInstant", issue_instant),
                ("Version", "2.0"),
            ],
        )?,
        None => w.start(
            SAMLP,
            "Response",
            &[
                ("Destination", destination),
                ("ID", response_id),
                ("IssueInstant", issue_instant),
                ("Version", "2.0"),
            ],
        )?,
    }
    Ok(())
}

/// Longest StatusMessage we send.
const MAX_STATUS_MESSAGE: usize = 256;

/// A Response carrying an error status (no assertion) for a request whose SP and ACS are
/// trusted ([`IdpError::RespondToSp`]), or for a login that failed after the request was
/// accepted (status [`status::RESPONDER`] / [`status::AUTHN_FAILED`]). Signed when `sign`.
pub fn build_status_response(
    e: &SpErrorResponse,
    idp_entity_id: &str,
    key: &IdpSigningKey,
    now: DateTime<Utc>,
    sign: bool,
) -> Result<SignedResponse, IdpError> {
    require_nonempty("the IdP entity id", idp_entity_id)?;
    require_nonempty("the ACS URL", &e.acs_url)?;
    let response_id = new_id().map_err(|e| IdpError::Build(e.to_string()))?;
    let issue_instant = saml_time(now);
    let mut w = CanonicalWriter::with_capacity(4096);
    write_response_head(
        &mut w,
        &response_id,
        &e.acs_url,
        Some(e.in_response_to.as_str()).filter(|id| !id.is_empty()),
        &issue_instant,
    )?;
    w.leaf(SAML, "Issuer", &[], idp_entity_id)?;
    let signature_at = w.len();
    let scope_at_signature = w.in_scope().to_vec();
    w.start(SAMLP, "Status", &[])?;
    w.start(SAMLP, "StatusCode", &[("Value", e.status)])?;
    if let Some(sub) = e.sub_status {
        w.empty(SAMLP, "StatusCode", &[("Value", sub)])?;
    }
    w.end();
    if !e.message.is_empty() {
        let message: String = e
            .message
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_STATUS_MESSAGE)
            .collect();
        w.leaf(SAMLP, "StatusMessage", &[], &message)?;
    }
    w.end(); // Status
    w.end(); // Response
    if sign {
        sign_in_place(&mut w, key, &response_id, signature_at, &scope_at_signature)?;
    }
    Ok(SignedResponse {
        xml: w.finish(),
        response_id,
        assertion_id: String::new(),
        not_on_or_after: now,
    })
}
