//! The test IdP signer: builds Responses and Assertions from free-form specs (any field can be
//! wrong on purpose), signs them with xmlsec (RSA-SHA256, exc-c14n, enveloped) and encrypts
//! assertions. The test suites use it to produce valid and hostile responses for the SP side;
//! production responses come from [`super::response`], which writes canonical XML and signs it
//! without xmlsec.

use super::encrypt::{DataEnc, KeyEnc};
use crate::error::SamlError;
use crate::gate::{ENVELOPED, EXC_C14N, RSA_SHA256, SHA256};
use crate::model::{CM_BEARER, STATUS_SUCCESS};
use crate::settings::{IdpSettings, SpKeyPair};
use crate::xml::{escape, NS_ASSERTION, NS_DSIG, NS_PROTOCOL};
use base64::Engine as _;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use samael::crypto::{Crypto, CryptoProvider};

fn build_err(e: impl std::fmt::Display) -> SamlError {
    SamlError::Build(e.to_string())
}

/// xs:dateTime in UTC with milliseconds.
pub fn saml_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Base64 for the HTTP-POST binding.
pub fn b64(xml: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(xml.as_bytes())
}

/// An empty enveloped-signature template referencing `#id`.
pub fn signature_template(
    id: &str,
    cert: &X509,
    sig_alg: &str,
    digest_alg: &str,
) -> Result<String, SamlError> {
    let der = cert.to_der().map_err(build_err)?;
    Ok(format!(
        "<ds:Signature xmlns:ds=\"{NS_DSIG}\"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm=\"{EXC_C14N}\"/><ds:SignatureMethod Algorithm=\"{sig_alg}\"/><ds:Reference URI=\"#{id}\"><ds:Transforms><ds:Transform Algorithm=\"{ENVELOPED}\"/><ds:Transform Algorithm=\"{EXC_C14N}\"/></ds:Transforms><ds:DigestMethod Algorithm=\"{digest_alg}\"/><ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue></ds:SignatureValue><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>",
        base64::engine::general_purpose::STANDARD.encode(der)
    ))
}

/// The assertion to issue.
#[derive(Debug, Clone)]
pub struct AssertionSpec {
    pub id: String,
    pub issuer: String,
    pub issue_instant: DateTime<Utc>,
    pub name_id: String,
    pub name_id_format: String,
    pub confirmation_method: String,
    pub recipient: Option<String>,
    pub in_response_to: Option<String>,
    pub confirmation_not_on_or_after: Option<DateTime<Utc>>,
    pub confirmation_not_before: Option<DateTime<Utc>>,
    /// `None` omits the Conditions element.
    pub conditions: Option<ConditionsSpec>,
    pub session_index: Option<String>,
    pub attributes: Vec<(String, Vec<String>)>,
}

/// Conditions of an assertion.
#[derive(Debug, Clone)]
pub struct ConditionsSpec {
    pub not_before: Option<DateTime<Utc>>,
    pub not_on_or_after: Option<DateTime<Utc>>,
    /// One inner Vec per AudienceRestriction.
    pub audiences: Vec<Vec<String>>,
}

impl AssertionSpec {
    /// A valid assertion for `sp_entity_id`/`acs_url` issued at `now` (5 minute windows).
    pub fn new(
        issuer: &str,
        sp_entity_id: &str,
        acs_url: &str,
        name_id: &str,
        in_response_to: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Self, SamlError> {
        Ok(Self {
            id: crate::sp::new_id()?,
            issuer: issuer.to_owned(),
            issue_instant: now,
            name_id: name_id.to_owned(),
            name_id_format: "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress".into(),
            confirmation_method: CM_BEARER.into(),
            recipient: Some(acs_url.to_owned()),
            in_response_to: in_response_to.map(str::to_owned),
            confirmation_not_on_or_after: Some(now + Duration::minutes(5)),
            confirmation_not_before: None,
            conditions: Some(ConditionsSpec {
                not_before: Some(now - Duration::seconds(5)),
                not_on_or_after: Some(now + Duration::minutes(5)),
                audiences: vec![vec![sp_entity_id.to_owned()]],
            }),
            session_index: Some("_session1".into()),
            attributes: Vec::new(),
        })
    }

    /// The assertion XML (self-contained namespaces), with `signature` inserted after Issuer.
    pub fn to_xml(&self, signature: &str) -> String {
        let mut s = format!(
            "<saml:Assertion xmlns:saml=\"{NS_ASSERTION}\" xmlns:xs=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" ID=\"{}\" Version=\"2.0\" IssueInstant=\"{}\"><saml:Issuer>{}</saml:Issuer>{signature}<saml:Subject><saml:NameID Format=\"{}\">{}</saml:NameID><saml:SubjectConfirmation Method=\"{}\"><saml:SubjectConfirmationData",
            escape(&self.id),
            saml_time(self.issue_instant),
            escape(&self.issuer),
            escape(&self.name_id_format),
            escape(&self.name_id),
            escape(&self.confirmation_method),
        );
        if let Some(r) = &self.in_response_to {
            s.push_str(&format!(" InResponseTo=\"{}\"", escape(r)));
        }
        if let Some(t) = self.confirmation_not_before {
            s.push_str(&format!(" NotBefore=\"{}\"", saml_time(t)));
        }
        if let Some(t) = self.confirmation_not_on_or_after {
            s.push_str(&format!(" NotOnOrAfter=\"{}\"", saml_time(t)));
        }
        if let Some(r) = &self.recipient {
            s.push_str(&format!(" Recipient=\"{}\"", escape(r)));
        }
        s.push_str("/></saml:SubjectConfirmation></saml:Subject>");
        if let Some(c) = &self.conditions {
            s.push_str("<saml:Conditions");
            if let Some(t) = c.not_before {
                s.push_str(&format!(" NotBefore=\"{}\"", saml_time(t)));
            }
            if let Some(t) = c.not_on_or_after {
                s.push_str(&format!(" NotOnOrAfter=\"{}\"", saml_time(t)));
            }
            s.push('>');
            for ar in &c.audiences {
                s.push_str("<saml:AudienceRestriction>");
                for a in ar {
                    s.push_str(&format!("<saml:Audience>{}</saml:Audience>", escape(a)));
                }
                s.push_str("</saml:AudienceRestriction>");
            }
            s.push_str("</saml:Conditions>");
        }
        s.push_str(&format!(
            "<saml:AuthnStatement AuthnInstant=\"{}\"",
            saml_time(self.issue_instant)
        ));
        if let Some(si) = &self.session_index {
            s.push_str(&format!(" SessionIndex=\"{}\"", escape(si)));
        }
        s.push_str("><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>");
        if !self.attributes.is_empty() {
            s.push_str("<saml:AttributeStatement>");
            for (name, values) in &self.attributes {
                s.push_str(&format!(
                    "<saml:Attribute Name=\"{}\" NameFormat=\"urn:oasis:names:tc:SAML:2.0:attrname-format:basic\">",
                    escape(name)
                ));
                for v in values {
                    s.push_str(&format!(
                        "<saml:AttributeValue xsi:type=\"xs:string\">{}</saml:AttributeValue>",
                        escape(v)
                    ));
                }
                s.push_str("</saml:Attribute>");
            }
            s.push_str("</saml:AttributeStatement>");
        }
        s.push_str("</saml:Assertion>");
        s
    }
}

/// The Response envelope to issue.
#[derive(Debug, Clone)]
pub struct ResponseSpec {
    pub id: String,
    pub issuer: Option<String>,
    pub issue_instant: DateTime<Utc>,
    pub destination: Option<String>,
    pub in_response_to: Option<String>,
    pub status: String,
}

impl ResponseSpec {
    /// A successful Response to `acs_url`.
    pub fn new(
        issuer: &str,
        acs_url: &str,
        in_response_to: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Self, SamlError> {
        Ok(Self {
            id: crate::sp::new_id()?,
            issuer: Some(issuer.to_owned()),
            issue_instant: now,
            destination: Some(acs_url.to_owned()),
            in_response_to: in_response_to.map(str::to_owned),
            status: STATUS_SUCCESS.into(),
        })
    }

    /// The Response XML with `signature` after Issuer and `body` (assertion XML) after Status.
    pub fn to_xml(&self, signature: &str, body: &str) -> String {
        let mut s = format!(
            "<samlp:Response xmlns:samlp=\"{NS_PROTOCOL}\" xmlns:saml=\"{NS_ASSERTION}\" ID=\"{}\" Version=\"2.0\" IssueInstant=\"{}\"",
            escape(&self.id),
            saml_time(self.issue_instant)
        );
        if let Some(d) = &self.destination {
            s.push_str(&format!(" Destination=\"{}\"", escape(d)));
        }
        if let Some(r) = &self.in_response_to {
            s.push_str(&format!(" InResponseTo=\"{}\"", escape(r)));
        }
        s.push('>');
        if let Some(i) = &self.issuer {
            s.push_str(&format!("<saml:Issuer>{}</saml:Issuer>", escape(i)));
        }
        s.push_str(signature);
        s.push_str(&format!(
            "<samlp:Status><samlp:StatusCode Value=\"{}\"/></samlp:Status>{body}</samlp:Response>",
            escape(&self.status)
        ));
        s
    }
}

/// Which elements to sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignMode {
    Response,
    Assertion,
    Both,
    None,
}

/// Strip a leading `<?xml ...?>` declaration.
fn strip_decl(xml: &str) -> &str {
    let t = xml.trim_start();
    if t.starts_with("<?xml") {
        if let Some(end) = t.find("?>") {
            return t[end + 2..].trim_start();
        }
    }
    t
}

/// An IdP identity: entity id plus signing key and certificate.
#[derive(Debug, Clone)]
pub struct IdpSigner {
    pub entity_id: String,
    pub keys: SpKeyPair,
}

impl IdpSigner {
    /// A signer with a freshly generated RSA-2048 key.
    pub fn generate(entity_id: &str) -> Result<Self, SamlError> {
        Ok(Self {
            entity_id: entity_id.to_owned(),
            keys: SpKeyPair::generate(entity_id, 365)?,
        })
    }

    /// The settings an SP needs to trust this IdP.
    pub fn settings(&self, sso_url: Option<&str>) -> IdpSettings {
        IdpSettings {
            entity_id: self.entity_id.clone(),
            sso_url: sso_url.map(str::to_owned),
            signing_certs: vec![self.keys.cert.clone()],
            allow_sha1: false,
            wants_signed_requests: false,
        }
    }

    /// Sign the first (empty) ds:Signature template in `xml` with xmlsec.
    pub fn sign_template(&self, xml: &str) -> Result<String, SamlError> {
        sign_with_key(xml, &self.keys.key)
    }

    /// An RSA-SHA256 signature template for element `id`.
    pub fn template(&self, id: &str) -> Result<String, SamlError> {
        signature_template(id, &self.keys.cert, RSA_SHA256, SHA256)
    }

    /// The signed assertion XML (no XML declaration).
    pub fn signed_assertion(&self, a: &AssertionSpec) -> Result<String, SamlError> {
        self.sign_template(&a.to_xml(&self.template(&a.id)?))
    }

    /// A Response carrying `body` (assertion or encrypted assertion XML), signed when asked.
    pub fn response_with_body(
        &self,
        r: &ResponseSpec,
        body: &str,
        sign: bool,
    ) -> Result<String, SamlError> {
        if sign {
            self.sign_template(&r.to_xml(&self.template(&r.id)?, body))
        } else {
            Ok(r.to_xml("", body))
        }
    }

    /// A complete Response XML.
    pub fn response(
        &self,
        r: &ResponseSpec,
        a: &AssertionSpec,
        mode: SignMode,
    ) -> Result<String, SamlError> {
        let assertion = match mode {
            SignMode::Assertion | SignMode::Both => self.signed_assertion(a)?,
            SignMode::Response | SignMode::None => a.to_xml(""),
        };
        self.response_with_body(
            r,
            &assertion,
            matches!(mode, SignMode::Response | SignMode::Both),
        )
    }

    /// A Response whose assertion is signed (when `sign_assertion`) and then encrypted to
    /// `recipient`; the Response itself is signed when `sign_response`.
    #[allow(clippy::too_many_arguments)]
    pub fn encrypted_response(
        &self,
        r: &ResponseSpec,
        a: &AssertionSpec,
        recipient: &X509,
        data: DataEnc,
        key: KeyEnc,
        sign_assertion: bool,
        sign_response: bool,
    ) -> Result<String, SamlError> {
        let assertion = if sign_assertion {
            self.signed_assertion(a)?
        } else {
            a.to_xml("")
        };
        let enc = encrypt_assertion(&assertion, recipient, data, key)?;
        self.response_with_body(r, &enc, sign_response)
    }
}

/// Sign the first empty signature template in `xml` with `key` (xmlsec via samael).
pub fn sign_with_key(xml: &str, key: &PKey<Private>) -> Result<String, SamlError> {
    let der = key.private_key_to_pkcs8().map_err(build_err)?;
    let signed = Crypto::sign_xml(xml, &der).map_err(build_err)?;
    Ok(strip_decl(&signed).trim_end().to_owned())
}

/// Encrypt an assertion for `recipient` as a `saml:EncryptedAssertion`.
pub fn encrypt_assertion(
    assertion: &str,
    recipient: &X509,
    data: DataEnc,
    key: KeyEnc,
) -> Result<String, SamlError> {
    let build = |e: super::IdpError| SamlError::Build(e.to_string());
    let enc = super::encrypt::encrypt(assertion.as_bytes(), recipient, data, key).map_err(build)?;
    let mut w = super::c14n::CanonicalWriter::with_capacity(enc.payload.len() * 4 / 3 + 1024);
    super::encrypt::write_encrypted_assertion(&mut w, &enc).map_err(build)?;
    Ok(w.finish())
}
