//! SP-initiated single logout messages: the LogoutRequest we send over HTTP-Redirect is signed
//! over the query string as sent, carries NameID, SessionIndex, Issuer and Destination, and the
//! SingleLogoutService shows up in both metadata directions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use base64::Engine as _;
use common::*;
use idbridge_saml::xml::{self, Limits, NS_ASSERTION, NS_PROTOCOL};
use idbridge_saml::{
    build_logout_request, decode_redirect_binding, sp_metadata_xml, IdpSettings, LogoutSubject,
    SamlError, SpKeyPair,
};
use openssl::hash::MessageDigest;
use openssl::sign::Verifier;

const SLO: &str = "https://idp.example.test/slo?tenant=7";
const FORMAT: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";

fn signing_key() -> &'static SpKeyPair {
    static K: std::sync::OnceLock<SpKeyPair> = std::sync::OnceLock::new();
    K.get_or_init(|| SpKeyPair::generate("sp-sign", 30).unwrap())
}

fn signing_sp() -> idbridge_saml::SpSettings {
    let mut sp = sp();
    sp.signing_keys = vec![signing_key().clone()];
    sp
}

fn subject() -> LogoutSubject<'static> {
    LogoutSubject {
        name_id: "alice@example.com",
        name_id_format: Some(FORMAT),
        session_index: Some("_sess<&>1"),
    }
}

/// `(signed octets, signature)` of a Redirect-binding URL, split the way an IdP does: the raw
/// query up to `&Signature=`.
fn split_signed(url: &str) -> (String, Vec<u8>) {
    let query = url.split_once('?').unwrap().1;
    let (signed, sig) = query.rsplit_once("&Signature=").unwrap();
    let sig: String = url::form_urlencoded::parse(format!("s={sig}").as_bytes())
        .next()
        .unwrap()
        .1
        .into_owned();
    (
        signed.to_string(),
        base64::engine::general_purpose::STANDARD
            .decode(sig)
            .unwrap(),
    )
}

fn verifies(cert: &openssl::x509::X509, signed: &str, sig: &[u8]) -> bool {
    let key = cert.public_key().unwrap();
    let mut v = Verifier::new(MessageDigest::sha256(), &key).unwrap();
    v.update(signed.as_bytes()).unwrap();
    v.verify(sig).unwrap_or(false)
}

#[test]
fn logout_request_is_signed_and_names_the_session() {
    let sp = signing_sp();
    let out = build_logout_request(&sp, SLO, &subject(), Some("relay-9")).unwrap();
    assert!(out
        .url
        .starts_with("https://idp.example.test/slo?tenant=7&SAMLRequest="));
    let (signed, sig) = split_signed(&out.url);
    assert!(signed.starts_with("tenant=7&SAMLRequest="));
    // The IdP verifies over the SAMLRequest/RelayState/SigAlg octets.
    let ours = signed.trim_start_matches("tenant=7&");
    assert!(verifies(&signing_key().cert, ours, &sig));
    // Another key does not verify it; a changed byte does not verify.
    assert!(!verifies(&sp_key().cert, ours, &sig));
    assert!(!verifies(
        &signing_key().cert,
        &ours.replace("relay-9", "relay-8"),
        &sig
    ));

    let url = url::Url::parse(&out.url).unwrap();
    let param = |n: &str| {
        url.query_pairs()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.into_owned())
    };
    assert_eq!(param("RelayState").as_deref(), Some("relay-9"));
    assert_eq!(
        param("SigAlg").as_deref(),
        Some("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256")
    );
    let xml_text = decode_redirect_binding(&param("SAMLRequest").unwrap()).unwrap();
    let root = xml::parse(&xml_text, &Limits::MESSAGE).unwrap();
    assert!(root.is(NS_PROTOCOL, "LogoutRequest"));
    assert_eq!(root.attr("ID"), Some(out.request_id.as_str()));
    assert_eq!(root.attr("Destination"), Some(SLO));
    assert_eq!(root.attr("Version"), Some("2.0"));
    assert_eq!(
        root.child(NS_ASSERTION, "Issuer").unwrap().text(),
        SP_ENTITY
    );
    let name_id = root.child(NS_ASSERTION, "NameID").unwrap();
    assert_eq!(name_id.text(), "alice@example.com");
    assert_eq!(name_id.attr("Format"), Some(FORMAT));
    assert_eq!(
        root.child(NS_PROTOCOL, "SessionIndex").unwrap().text(),
        "_sess<&>1"
    );
    // Fresh ids.
    let again = build_logout_request(&sp, SLO, &subject(), None).unwrap();
    assert_ne!(again.request_id, out.request_id);
    assert!(!again.url.contains("RelayState"));
}

#[test]
fn logout_request_needs_an_rsa_signing_key() {
    // No key: never an unsigned LogoutRequest.
    let err = build_logout_request(&sp(), SLO, &subject(), None).unwrap_err();
    assert!(matches!(err, SamlError::Config(_)), "{err:?}");
    let ec = openssl::ec::EcKey::generate(
        &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
    )
    .unwrap();
    let mut sp = sp();
    sp.signing_keys =
        vec![
            SpKeyPair::self_signed(openssl::pkey::PKey::from_ec_key(ec).unwrap(), "ec", 1).unwrap(),
        ];
    assert!(build_logout_request(&sp, SLO, &subject(), None).is_err());
    assert!(build_logout_request(&signing_sp(), "not a url", &subject(), None).is_err());
}

#[test]
fn metadata_single_logout_service_both_ways() {
    let mut sp = signing_sp();
    let plain = sp_metadata_xml(&sp).unwrap();
    assert!(!plain.contains("SingleLogoutService"));
    sp.slo_url = Some("https://sp.idbridge.test/sso/saml/slo/conn_1".into());
    let md = sp_metadata_xml(&sp).unwrap();
    assert!(md.contains("<md:SingleLogoutService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" Location=\"https://sp.idbridge.test/sso/saml/slo/conn_1\"/>"), "{md}");
    assert!(md.contains("<md:SingleLogoutService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\" Location=\"https://sp.idbridge.test/sso/saml/slo/conn_1\"/>"), "{md}");
    assert!(md.contains("<md:KeyDescriptor use=\"signing\">"));
    // Schema order: SingleLogoutService before NameIDFormat and the ACS.
    assert!(md.find("SingleLogoutService") < md.find("NameIDFormat"));

    let cert = base64::engine::general_purpose::STANDARD.encode(idp().keys.cert.to_der().unwrap());
    let idp_md = |slo: &str| {
        format!(
            "<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" entityID=\"{IDP_ENTITY}\"><md:IDPSSODescriptor protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\"><md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>{slo}<md:SingleSignOnService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" Location=\"https://idp.example.test/sso\"/></md:IDPSSODescriptor></md:EntityDescriptor>"
        )
    };
    let with = idp_md("<md:SingleLogoutService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\" Location=\"https://idp.example.test/slo-post\"/><md:SingleLogoutService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" Location=\" https://idp.example.test/slo \"/>");
    assert_eq!(
        IdpSettings::slo_url_from_metadata_xml(&with)
            .unwrap()
            .as_deref(),
        Some("https://idp.example.test/slo")
    );
    // Still a full IdP parse.
    assert_eq!(
        IdpSettings::from_metadata_xml(&with).unwrap().entity_id,
        IDP_ENTITY
    );
    let post_only = idp_md("<md:SingleLogoutService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\" Location=\"https://idp.example.test/slo-post\"/>");
    assert_eq!(
        IdpSettings::slo_url_from_metadata_xml(&post_only).unwrap(),
        None
    );
    assert_eq!(
        IdpSettings::slo_url_from_metadata_xml(&idp_md("")).unwrap(),
        None
    );
    assert!(IdpSettings::slo_url_from_metadata_xml("<x/>").is_err());
}
