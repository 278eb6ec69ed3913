//! The IdP side's AuthnRequest intake on one fixed service provider: a fixed SP signing key
//! (`fixtures/sp.*.pem`, test-only), signed requests required, and a fixed clock, so the only
//! requests that can be accepted are the ones [`authn_request_seeds`] signed. Property: no
//! panic, and whatever is accepted is one of those, with the registered ACS.

use std::io::Write as _;
use std::sync::OnceLock;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use flate2::write::DeflateEncoder;
use flate2::Compression;
use idbridge_saml::idp::{
    name_id_format, AcceptedRequest, AcsEndpoint, IdpError, ReceivedRequest, RegisteredSp,
    RequestContext,
};
use idbridge_saml::testkit::{sign_with_key, signature_template};
use idbridge_saml::{MemoryReplayCache, SpKeyPair};
use openssl::hash::MessageDigest;

pub const IDP_SSO_URL: &str = "https://idbridge.fuzz.test/saml/idp/org_fuzz/sso";
pub const SP_ENTITY: &str = "https://auth.workos.fuzz.test/sso/saml/conn_fuzz";
pub const SP_ACS: &str = "https://auth.workos.fuzz.test/sso/saml/acs/conn_fuzz";
/// The request ids [`authn_request_seeds`] signs; an accepted request has one of them.
pub const SIGNED_REQUEST_IDS: &[&str] = &["_fuzzauthn_redirect", "_fuzzauthn_post"];

const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";

fn sp_key() -> &'static SpKeyPair {
    static K: OnceLock<SpKeyPair> = OnceLock::new();
    K.get_or_init(|| {
        SpKeyPair::from_pem(
            include_bytes!("../fixtures/sp.key.pem"),
            include_bytes!("../fixtures/sp.crt.pem"),
        )
        .unwrap_or_else(|e| panic!("fixture key: {e}"))
    })
}

fn registered() -> RegisteredSp {
    RegisteredSp {
        entity_id: SP_ENTITY.into(),
        acs: vec![AcsEndpoint::post(SP_ACS, Some(0), true)],
        signing_certs: vec![sp_key().cert.clone()],
        require_signed_requests: true,
        allow_sha1: false,
        name_id_format: name_id_format::EMAIL.into(),
    }
}

/// The fixed clock (the SAML response targets' instant).
fn now() -> DateTime<Utc> {
    crate::saml::now()
}

/// First byte even: the rest is the Redirect binding's raw query string; odd: the rest is the
/// XML of a POST binding's `SAMLRequest` (base64 applied here, as the browser's form would).
fn receive(data: &[u8]) -> Option<Result<ReceivedRequest, IdpError>> {
    let (&selector, rest) = data.split_first()?;
    let text = std::str::from_utf8(rest).ok()?;
    Some(if selector % 2 == 0 {
        ReceivedRequest::from_redirect_query(text)
    } else {
        let value = base64::engine::general_purpose::STANDARD.encode(text);
        ReceivedRequest::from_post(&value, Some("relay"))
    })
}

fn accept(received: ReceivedRequest) -> Result<AcceptedRequest, IdpError> {
    let sso_urls = [IDP_SSO_URL];
    let ctx = RequestContext::new(&sso_urls, now());
    received.accept(&registered(), &ctx, &MemoryReplayCache::new())
}

/// The whole intake (binding decode, gate, signature, policy) on the fixed SP.
pub fn saml_authn_request(data: &[u8]) {
    let Some(Ok(received)) = receive(data) else {
        return;
    };
    // The unverified accessors a handler uses to find the SP must not panic either.
    let _ = (received.issuer(), received.id(), received.is_signed());
    if let Ok(a) = accept(received) {
        assert!(
            a.signed && SIGNED_REQUEST_IDS.contains(&a.id.as_str()) && a.issuer == SP_ENTITY,
            "an AuthnRequest the fixed SP key never signed was accepted: {a:?}"
        );
        assert_eq!(a.acs.location, SP_ACS, "an ACS that is not registered");
    }
}

fn request_xml(id: &str) -> String {
    format!(
        "<samlp:AuthnRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{}\" Destination=\"{IDP_SSO_URL}\" AssertionConsumerServiceURL=\"{SP_ACS}\" ProtocolBinding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\"><saml:Issuer>{SP_ENTITY}</saml:Issuer><samlp:NameIDPolicy Format=\"{}\" AllowCreate=\"true\"/></samlp:AuthnRequest>",
        now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        name_id_format::EMAIL,
    )
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Signed requests for the fixed SP (both bindings), as fuzz inputs (selector byte first).
/// Each must be accepted (the corpus test checks it).
pub fn authn_request_seeds() -> Vec<(String, Vec<u8>)> {
    let key = sp_key();
    // Redirect: deflate + base64 + URL-encode, then RSA-SHA256 over the octets as sent.
    let mut deflater = DeflateEncoder::new(Vec::new(), Compression::default());
    let xml = request_xml(SIGNED_REQUEST_IDS[0]);
    let deflated = deflater
        .write_all(xml.as_bytes())
        .and_then(|()| deflater.finish())
        .unwrap_or_else(|e| panic!("deflate: {e}"));
    let mut query = format!(
        "SAMLRequest={}&RelayState={}&SigAlg={}",
        url_encode(&base64::engine::general_purpose::STANDARD.encode(deflated)),
        url_encode("relay state"),
        url_encode(RSA_SHA256)
    );
    let signature = openssl::sign::Signer::new(MessageDigest::sha256(), &key.key)
        .and_then(|mut s| {
            s.update(query.as_bytes())?;
            s.sign_to_vec()
        })
        .unwrap_or_else(|e| panic!("signing the query: {e}"));
    query.push_str(&format!(
        "&Signature={}",
        url_encode(&base64::engine::general_purpose::STANDARD.encode(signature))
    ));
    let mut redirect = vec![0u8];
    redirect.extend_from_slice(query.as_bytes());

    // POST: an enveloped signature after the Issuer.
    let id = SIGNED_REQUEST_IDS[1];
    let template = signature_template(id, &key.cert, RSA_SHA256, SHA256)
        .unwrap_or_else(|e| panic!("template: {e}"));
    let issuer = format!("<saml:Issuer>{SP_ENTITY}</saml:Issuer>");
    let with_template = request_xml(id).replacen(&issuer, &format!("{issuer}{template}"), 1);
    let signed = sign_with_key(&with_template, &key.key).unwrap_or_else(|e| panic!("sign: {e}"));
    let mut post = vec![1u8];
    post.extend_from_slice(signed.as_bytes());

    vec![
        ("redirect_signed".to_owned(), redirect),
        ("post_signed".to_owned(), post),
    ]
}

/// Whether `input` (a fuzz input) is accepted on the fixed SP.
pub fn authn_request_accepted(input: &[u8]) -> bool {
    receive(input).is_some_and(|r| r.and_then(accept).is_ok())
}
