//! Single logout messages from the IdP on our SingleLogoutService (HTTP-Redirect and HTTP-POST
//! bindings): a LogoutResponse answering our LogoutRequest, or an IdP-initiated LogoutRequest.
//!
//! Accepted only when signed with one of the connection's IdP signing certificates — never a
//! key from the message — under the same algorithm allow-list as everything else
//! (saml-security.md): on the Redirect binding the query signature (SigAlg + Signature over
//! the octets as received), on the POST binding an enveloped XML signature on the root
//! ([`verify_slo_post`]: same gate and xmlsec verification as SAML responses, fields read from
//! the verified bytes only). A LogoutRequest past its NotOnOrAfter is refused. Then: Issuer is the IdP, Destination is our SLO URL, IssueInstant is in
//! the window, a LogoutResponse has an InResponseTo (the caller checks it is a request we sent,
//! single use) and a status; a LogoutRequest has an ID (the caller puts it in the replay cache)
//! and a NameID. Outgoing messages are signed the same way ([`signed_redirect`]).

use base64::Engine as _;
use chrono::{DateTime, Utc};
use openssl::pkey::{Id, PKey, Private};
use std::time::Duration;
use thiserror::Error;

use crate::error::{GateViolation, SamlError};
use crate::idp::request::{decode_param, ecdsa_der, query_alg, verify_with};
use crate::idp::RequestViolation;
use crate::model::parse_time;
use crate::settings::IdpSettings;
use crate::xml::{self, escape, Element, Limits, NS_ASSERTION, NS_PROTOCOL};

/// Largest raw query string accepted on the SLO endpoint.
pub const MAX_SLO_QUERY: usize = 96 * 1024;
/// `urn:oasis:names:tc:SAML:2.0:status:Success`.
pub const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";

/// Why a logout message was refused; each rule its own variant so tests and logs tell them
/// apart. The browser never sees these (that would be an oracle).
#[derive(Debug, Error)]
pub enum SloViolation {
    #[error("the query string is larger than {MAX_SLO_QUERY} bytes")]
    TooLarge,
    #[error("exactly one of SAMLRequest and SAMLResponse must be present")]
    NoMessage,
    #[error("query parameter {0} appears more than once")]
    DuplicateParameter(&'static str),
    #[error("the logout message is not signed: SigAlg and Signature are required")]
    Unsigned,
    #[error(transparent)]
    Parameter(#[from] RequestViolation),
    #[error(transparent)]
    Gate(#[from] GateViolation),
    #[error("the signature does not verify with the connection's IdP signing certificate(s)")]
    BadSignature,
    #[error("the root element is not a {0}")]
    WrongRoot(&'static str),
    #[error("the Issuer is not the connection's identity provider")]
    WrongIssuer,
    #[error("Destination is missing or is not this connection's SingleLogoutService")]
    WrongDestination,
    #[error("IssueInstant is missing, in the future or too old")]
    IssueInstant,
    #[error("Version must be 2.0")]
    Version,
    #[error("the LogoutRequest's NotOnOrAfter is unreadable or has passed")]
    Expired,
    #[error("required {0} is missing")]
    Missing(&'static str),
}

/// A verified logout message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SloMessage {
    /// The IdP's answer to our LogoutRequest.
    Response {
        id: String,
        in_response_to: String,
        status: String,
        relay_state: Option<String>,
    },
    /// The IdP asks us to end a session.
    Request {
        id: String,
        name_id: String,
        session_indexes: Vec<String>,
        relay_state: Option<String>,
    },
}

/// What a logout message is checked against.
#[derive(Debug, Clone)]
pub struct SloContext<'a> {
    pub idp: &'a IdpSettings,
    /// Our SingleLogoutService URL (Destination must equal it).
    pub slo_url: &'a str,
    pub now: DateTime<Utc>,
    pub clock_skew: Duration,
    /// How old IssueInstant may be, beyond the skew.
    pub max_age: Duration,
}

#[derive(Default)]
struct SloParams<'a> {
    request: Option<&'a str>,
    response: Option<&'a str>,
    relay_state: Option<&'a str>,
    sig_alg: Option<&'a str>,
    signature: Option<&'a str>,
}

fn split(raw: &str) -> Result<SloParams<'_>, SloViolation> {
    let mut p = SloParams::default();
    for pair in raw.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (slot, name) = match k {
            "SAMLRequest" => (&mut p.request, "SAMLRequest"),
            "SAMLResponse" => (&mut p.response, "SAMLResponse"),
            "RelayState" => (&mut p.relay_state, "RelayState"),
            "SigAlg" => (&mut p.sig_alg, "SigAlg"),
            "Signature" => (&mut p.signature, "Signature"),
            _ => continue,
        };
        if slot.replace(v).is_some() {
            return Err(SloViolation::DuplicateParameter(name));
        }
    }
    Ok(p)
}

fn check_signature(
    signed_octets: &str,
    sig_alg: &str,
    signature: &[u8],
    idp: &IdpSettings,
) -> Result<(), SloViolation> {
    let (md, ecdsa) = query_alg(sig_alg, idp.allow_sha1)?;
    let data = signed_octets.as_bytes();
    let ok = idp.signing_certs.iter().any(|cert| {
        let Ok(key) = cert.public_key() else {
            return false;
        };
        match (ecdsa, key.id()) {
            (false, Id::RSA) => verify_with(&key, md, data, signature),
            (true, Id::EC) => {
                ecdsa_der(signature).is_some_and(|der| verify_with(&key, md, data, &der))
            }
            _ => false,
        }
    });
    if ok {
        Ok(())
    } else {
        Err(SloViolation::BadSignature)
    }
}

fn text_of(root: &Element, ns: &str, local: &str) -> Option<String> {
    root.child(ns, local)
        .map(|e| e.text().trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Verifies an HTTP-Redirect logout message; `raw_query` is the query string exactly as
/// received (after `?`, still URL-encoded).
pub fn verify_slo_redirect(
    raw_query: &str,
    ctx: &SloContext<'_>,
) -> Result<SloMessage, SloViolation> {
    if raw_query.len() > MAX_SLO_QUERY {
        return Err(SloViolation::TooLarge);
    }
    let p = split(raw_query)?;
    let (param, raw_msg, is_response) = match (p.request, p.response) {
        (Some(r), None) => ("SAMLRequest", r, false),
        (None, Some(r)) => ("SAMLResponse", r, true),
        _ => return Err(SloViolation::NoMessage),
    };
    let (Some(alg_raw), Some(sig_raw)) = (p.sig_alg, p.signature) else {
        return Err(SloViolation::Unsigned);
    };
    // Signature first: nothing of an unverified message is parsed beyond the binding.
    let mut signed = format!("{param}={raw_msg}");
    if let Some(rs) = p.relay_state {
        signed.push_str("&RelayState=");
        signed.push_str(rs);
    }
    signed.push_str("&SigAlg=");
    signed.push_str(alg_raw);
    let sig_alg = decode_param(alg_raw, "SigAlg")?;
    let signature = xml::decode_base64_lenient(&decode_param(sig_raw, "Signature")?)?;
    check_signature(&signed, &sig_alg, &signature, ctx.idp)?;

    let relay_state = p
        .relay_state
        .map(|r| decode_param(r, "RelayState"))
        .transpose()?;
    let msg_b64 = decode_param(
        raw_msg,
        if is_response {
            "SAMLResponse"
        } else {
            "SAMLRequest"
        },
    )?;
    let xml_text = crate::sp::decode_redirect_binding(&msg_b64)?;
    let root = xml::parse(&xml_text, &Limits::MESSAGE)?;
    check_message(&root, is_response, relay_state, ctx)
}

/// Verifies an HTTP-POST logout message: `param` is the form field it came in
/// (`SAMLRequest` / `SAMLResponse`), `b64` its value. The message must carry an enveloped XML
/// signature on its root, which passes the same structural gate and algorithm allow-list as a
/// SAML response and verifies (xmlsec) with the connection's IdP certificates only; every
/// field is then read from the verified bytes, under the same rules as the Redirect binding.
pub fn verify_slo_post(
    param: &str,
    b64: &str,
    relay_state: Option<&str>,
    ctx: &SloContext<'_>,
) -> Result<SloMessage, SloViolation> {
    if b64.len() > MAX_SLO_QUERY {
        return Err(SloViolation::TooLarge);
    }
    let (is_response, expected) = match param {
        "SAMLResponse" => (true, "LogoutResponse"),
        "SAMLRequest" => (false, "LogoutRequest"),
        _ => return Err(SloViolation::NoMessage),
    };
    let xml_text = crate::verify::decode_post_binding(b64)?;
    let tree = xml::parse(&xml_text, &Limits::MESSAGE)?;
    if !tree.is(NS_PROTOCOL, expected) {
        return Err(SloViolation::WrongRoot(expected));
    }
    let (id, signature) = crate::gate::check_logout_message(&tree, ctx.idp.allow_sha1)?;
    if signature.is_none() {
        return Err(SloViolation::Unsigned);
    }
    let certs = ctx
        .idp
        .signing_certs
        .iter()
        .map(|c| c.to_der().map(samael::crypto::CertificateDer::from))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| SloViolation::BadSignature)?;
    let predigest = crate::verify::verify_signatures(&xml_text, &certs, ctx.idp.allow_sha1)
        .map_err(|_| SloViolation::BadSignature)?;
    let verified = crate::verify::parse_verified(&predigest, NS_PROTOCOL, expected, &id)
        .map_err(|_| SloViolation::BadSignature)?;
    let relay_state = crate::verify::check_relay_state(relay_state)?;
    check_message(&verified, is_response, relay_state, ctx)
}

/// The rules both bindings apply to the (verified) message.
fn check_message(
    root: &Element,
    is_response: bool,
    relay_state: Option<String>,
    ctx: &SloContext<'_>,
) -> Result<SloMessage, SloViolation> {
    let expected = if is_response {
        "LogoutResponse"
    } else {
        "LogoutRequest"
    };
    if !root.is(NS_PROTOCOL, expected) {
        return Err(SloViolation::WrongRoot(expected));
    }
    if root.attr("Version") != Some("2.0") {
        return Err(SloViolation::Version);
    }
    if text_of(root, NS_ASSERTION, "Issuer").as_deref() != Some(ctx.idp.entity_id.as_str()) {
        return Err(SloViolation::WrongIssuer);
    }
    if root.attr("Destination").map(str::trim) != Some(ctx.slo_url) {
        return Err(SloViolation::WrongDestination);
    }
    let instant = root
        .attr("IssueInstant")
        .and_then(|t| parse_time(t.trim()))
        .ok_or(SloViolation::IssueInstant)?;
    let skew = chrono::Duration::from_std(ctx.clock_skew).unwrap_or_default();
    let age = chrono::Duration::from_std(ctx.max_age).unwrap_or_default();
    if instant > ctx.now + skew || instant < ctx.now - skew - age {
        return Err(SloViolation::IssueInstant);
    }
    let id = root
        .attr("ID")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(SloViolation::Missing("ID"))?
        .to_owned();
    if is_response {
        let in_response_to = root
            .attr("InResponseTo")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(SloViolation::Missing("InResponseTo"))?
            .to_owned();
        let status = root
            .child(NS_PROTOCOL, "Status")
            .and_then(|s| s.child(NS_PROTOCOL, "StatusCode"))
            .and_then(|c| c.attr("Value"))
            .map(|v| v.trim().to_owned())
            .ok_or(SloViolation::Missing("Status"))?;
        Ok(SloMessage::Response {
            id,
            in_response_to,
            status,
            relay_state,
        })
    } else {
        // SAML core 3.7.1: a LogoutRequest is void from NotOnOrAfter on (skew allowed).
        if let Some(raw) = root.attr("NotOnOrAfter") {
            let until = parse_time(raw.trim()).ok_or(SloViolation::Expired)?;
            if ctx.now - skew >= until {
                return Err(SloViolation::Expired);
            }
        }
        let name_id =
            text_of(root, NS_ASSERTION, "NameID").ok_or(SloViolation::Missing("NameID"))?;
        let session_indexes = root
            .children_named(NS_PROTOCOL, "SessionIndex")
            .map(|e| e.text().trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        Ok(SloMessage::Request {
            id,
            name_id,
            session_indexes,
            relay_state,
        })
    }
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `dest` with `param=<deflated, base64 xml>[&RelayState=..]&SigAlg=rsa-sha256&Signature=..`:
/// the HTTP-Redirect binding, signed with an RSA `key` over the query octets as sent.
pub fn signed_redirect(
    dest: &str,
    param: &str,
    xml: &str,
    relay_state: Option<&str>,
    key: &PKey<Private>,
) -> Result<String, SamlError> {
    if key.id() != Id::RSA {
        return Err(SamlError::Config(
            "logout messages are signed with RSA-SHA256: the signing key must be RSA".into(),
        ));
    }
    let mut url = url::Url::parse(dest)
        .map_err(|e| SamlError::Config(format!("SingleLogoutService URL: {e}")))?;
    let build = |e: std::io::Error| SamlError::Build(e.to_string());
    let mut deflater =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut deflater, xml.as_bytes()).map_err(build)?;
    let deflated = deflater.finish().map_err(build)?;
    let mut signed = format!(
        "{param}={}",
        url_encode(&base64::engine::general_purpose::STANDARD.encode(deflated))
    );
    if let Some(rs) = relay_state.filter(|r| !r.is_empty()) {
        signed.push_str(&format!("&RelayState={}", url_encode(rs)));
    }
    signed.push_str(&format!("&SigAlg={}", url_encode(crate::gate::RSA_SHA256)));
    let sign_err = |e: openssl::error::ErrorStack| SamlError::Build(format!("signing: {e}"));
    let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), key)
        .map_err(sign_err)?;
    signer.update(signed.as_bytes()).map_err(sign_err)?;
    let signature = signer.sign_to_vec().map_err(sign_err)?;
    let query = format!(
        "{signed}&Signature={}",
        url_encode(&base64::engine::general_purpose::STANDARD.encode(signature))
    );
    let full = match url.query() {
        Some(q) if !q.is_empty() => format!("{q}&{query}"),
        _ => query,
    };
    url.set_query(Some(&full));
    Ok(url.to_string())
}

/// A LogoutResponse to the IdP's LogoutRequest `in_response_to`, for its SingleLogoutService.
pub fn logout_response_xml(
    issuer: &str,
    destination: &str,
    in_response_to: &str,
    status: &str,
) -> Result<(String, String), SamlError> {
    let id = crate::sp::new_id()?;
    let instant = Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
    Ok((
        id.clone(),
        format!(
            "<samlp:LogoutResponse xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{instant}\" Destination=\"{}\" InResponseTo=\"{}\"><saml:Issuer>{}</saml:Issuer><samlp:Status><samlp:StatusCode Value=\"{}\"/></samlp:Status></samlp:LogoutResponse>",
            escape(destination),
            escape(in_response_to),
            escape(issuer),
            escape(status),
        ),
    ))
}
