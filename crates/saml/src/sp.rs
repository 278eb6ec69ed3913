//! Outgoing SP messages: AuthnRequest over HTTP-Redirect (samael builds and signs it), our SP
//! metadata, and bounded decoding of Redirect-binding payloads (deflate-bomb safe).

use crate::error::{GateViolation, SamlError};
use crate::settings::{IdpSettings, SpSettings, BINDING_POST, BINDING_REDIRECT};
use crate::xml::escape;
use base64::Engine as _;
use chrono::Utc;
use flate2::read::DeflateDecoder;
use samael::schema::{AuthnRequest, Issuer};
use std::io::Read;

/// Largest base64 payload accepted on the Redirect binding.
pub const MAX_REDIRECT_B64: usize = 64 * 1024;
/// Largest inflated Redirect payload.
pub const MAX_INFLATED: usize = 256 * 1024;
/// Largest inflate ratio (output / compressed input) we accept; real messages compress ~3-10×.
pub const MAX_INFLATE_RATIO: usize = 100;

/// An AuthnRequest ready to send: redirect the browser to `url`, remember `request_id` in the
/// browser's session to check InResponseTo later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthnRedirect {
    pub request_id: String,
    pub url: String,
}

/// A fresh, unguessable SAML ID (xs:ID: starts with a letter or underscore).
pub fn new_id() -> Result<String, SamlError> {
    let mut bytes = [0u8; 20];
    openssl::rand::rand_bytes(&mut bytes).map_err(|e| SamlError::Build(e.to_string()))?;
    let mut id = String::from("_");
    for b in bytes {
        id.push_str(&format!("{b:02x}"));
    }
    Ok(id)
}

/// Build an AuthnRequest for the HTTP-Redirect binding (deflate + base64 + query), signed with
/// SigAlg/Signature when the SP or the IdP asks for signed requests.
#[tracing::instrument(skip_all, fields(idp = %idp.entity_id))]
pub fn build_authn_request(
    sp: &SpSettings,
    idp: &IdpSettings,
    relay_state: Option<&str>,
    force_authn: bool,
) -> Result<AuthnRedirect, SamlError> {
    let sso_url = idp
        .sso_url
        .clone()
        .ok_or_else(|| SamlError::Config("IdP has no HTTP-Redirect SSO URL".into()))?;
    let request_id = new_id()?;
    let req = AuthnRequest {
        id: request_id.clone(),
        version: "2.0".into(),
        issue_instant: Utc::now(),
        destination: Some(sso_url),
        issuer: Some(Issuer {
            value: Some(sp.entity_id.clone()),
            ..Issuer::default()
        }),
        assertion_consumer_service_url: Some(sp.acs_url.clone()),
        protocol_binding: Some(BINDING_POST.into()),
        force_authn: force_authn.then_some(true),
        ..AuthnRequest::default()
    };
    let rs = relay_state.unwrap_or("");
    let url = if sp.want_signed_requests || idp.wants_signed_requests {
        let key = sp
            .signing_keys
            .first()
            .ok_or_else(|| SamlError::Config("signed requests need an SP signing key".into()))?;
        req.signed_redirect(rs, &key.key)
            .map_err(|e| SamlError::Build(e.to_string()))?
    } else {
        req.redirect(rs)
            .map_err(|e| SamlError::Build(e.to_string()))?
    };
    let url = url.ok_or_else(|| SamlError::Build("AuthnRequest has no destination".into()))?;
    Ok(AuthnRedirect {
        request_id,
        url: url.to_string(),
    })
}

/// A LogoutRequest ready to send: redirect the browser to `url`, remember `request_id` to check
/// the LogoutResponse's InResponseTo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRedirect {
    pub request_id: String,
    pub url: String,
}

/// Whom to log out: the NameID and SessionIndex of the login's assertion, as the IdP sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutSubject<'a> {
    pub name_id: &'a str,
    pub name_id_format: Option<&'a str>,
    pub session_index: Option<&'a str>,
}

/// Build an SP-initiated LogoutRequest for the IdP's HTTP-Redirect SingleLogoutService at
/// `slo_url`, always signed (SigAlg/Signature over the query string, RSA-SHA256, with the SP's
/// first signing key): an IdP must be able to tell our logout from a forged one.
pub fn build_logout_request(
    sp: &SpSettings,
    slo_url: &str,
    subject: &LogoutSubject<'_>,
    relay_state: Option<&str>,
) -> Result<LogoutRedirect, SamlError> {
    let key = sp
        .signing_keys
        .first()
        .ok_or_else(|| SamlError::Config("a LogoutRequest needs an SP signing key".into()))?;
    let request_id = new_id()?;
    let instant = Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
    let format = subject
        .name_id_format
        .map(|f| format!(" Format=\"{}\"", escape(f)))
        .unwrap_or_default();
    let session = subject
        .session_index
        .map(|s| format!("<samlp:SessionIndex>{}</samlp:SessionIndex>", escape(s)))
        .unwrap_or_default();
    let xml = format!(
        "<samlp:LogoutRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{request_id}\" Version=\"2.0\" IssueInstant=\"{instant}\" Destination=\"{}\"><saml:Issuer>{}</saml:Issuer><saml:NameID{format}>{}</saml:NameID>{session}</samlp:LogoutRequest>",
        escape(slo_url),
        escape(&sp.entity_id),
        escape(subject.name_id),
    );
    let url = crate::slo::signed_redirect(slo_url, "SAMLRequest", &xml, relay_state, &key.key)?;
    Ok(LogoutRedirect { request_id, url })
}

fn cert_b64(cert: &openssl::x509::X509) -> Result<String, SamlError> {
    let der = cert.to_der().map_err(|e| SamlError::Build(e.to_string()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(der))
}

fn key_descriptor(
    out: &mut String,
    usage: &str,
    cert: &openssl::x509::X509,
) -> Result<(), SamlError> {
    out.push_str(&format!(
        "<md:KeyDescriptor use=\"{usage}\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>",
        cert_b64(cert)?
    ));
    if usage == "encryption" {
        for alg in [
            crate::decrypt::AES256_GCM,
            crate::decrypt::AES128_GCM,
            crate::decrypt::AES256_CBC,
            crate::decrypt::AES128_CBC,
            crate::decrypt::RSA_OAEP_MGF1P,
            crate::decrypt::RSA_OAEP_11,
        ] {
            out.push_str(&format!("<md:EncryptionMethod Algorithm=\"{alg}\"/>"));
        }
    }
    out.push_str("</md:KeyDescriptor>");
    Ok(())
}

/// Our SP metadata. Stable content (no validUntil, no generated ids) so it can be served at a
/// stable URL; all signing and decryption certificates are listed, so a rollover publishes the
/// next key before it is used.
pub fn sp_metadata_xml(sp: &SpSettings) -> Result<String, SamlError> {
    let signed = sp.want_signed_requests && !sp.signing_keys.is_empty();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" entityID=\"{}\"><md:SPSSODescriptor AuthnRequestsSigned=\"{signed}\" WantAssertionsSigned=\"true\" protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">",
        escape(&sp.entity_id)
    );
    for k in &sp.signing_keys {
        key_descriptor(&mut out, "signing", &k.cert)?;
    }
    for k in &sp.decryption_keys {
        key_descriptor(&mut out, "encryption", &k.cert)?;
    }
    if let Some(slo) = &sp.slo_url {
        // One endpoint takes both bindings: GET for HTTP-Redirect, POST for HTTP-POST.
        for binding in [BINDING_REDIRECT, BINDING_POST] {
            out.push_str(&format!(
                "<md:SingleLogoutService Binding=\"{binding}\" Location=\"{}\"/>",
                escape(slo)
            ));
        }
    }
    out.push_str(
        "<md:NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified</md:NameIDFormat>",
    );
    out.push_str(&format!(
        "<md:AssertionConsumerService Binding=\"{BINDING_POST}\" Location=\"{}\" index=\"0\" isDefault=\"true\"/>",
        escape(&sp.acs_url)
    ));
    out.push_str("</md:SPSSODescriptor></md:EntityDescriptor>\n");
    Ok(out)
}

/// Decode a Redirect-binding `SAMLRequest`/`SAMLResponse` value (already URL-decoded): base64,
/// then raw DEFLATE with a hard output cap and an inflate-ratio cap, stopping as soon as either
/// is crossed so a deflate bomb costs microseconds.
pub fn decode_redirect_binding(b64: &str) -> Result<String, GateViolation> {
    if b64.len() > MAX_REDIRECT_B64 {
        return Err(GateViolation::TooLarge {
            limit: MAX_REDIRECT_B64,
        });
    }
    let compressed = crate::xml::decode_base64_lenient(b64)?;
    let limit = MAX_INFLATED.min(compressed.len().saturating_mul(MAX_INFLATE_RATIO).max(4096));
    let mut out = Vec::new();
    DeflateDecoder::new(compressed.as_slice())
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| GateViolation::Deflate)?;
    if out.len() > limit {
        return Err(GateViolation::InflateTooLarge { limit });
    }
    String::from_utf8(out).map_err(|_| GateViolation::NotUtf8)
}
