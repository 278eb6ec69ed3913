//! SP metadata import (WorkOS gives an SP metadata URL): metadata written by independent SPs
//! (samlify, pysaml2) and by idbridge's own SP side is read into the registry's settings; bad
//! metadata is refused with a reason, through the same hostile-XML gate as messages.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod idp_fixtures;
use idp_fixtures::*;

use idbridge_saml::idp::{name_id_format, IdpError, RegisteredSp, SpMetadata};
use idbridge_saml::settings::{BINDING_POST, BINDING_REDIRECT};
use idbridge_saml::{sp_metadata_xml, GateViolation, SpKeyPair, SpSettings};
use serde_json::json;

fn peer_metadata(which: &str) -> String {
    let key = SpKeyPair::generate("peer-sp", 30).unwrap();
    let pem = |b: Vec<u8>| String::from_utf8(b).unwrap();
    let cfg = json!({
        "command": "metadata",
        "idp": IDP_ENTITY,
        "sp": SP_ENTITY,
        "acs": ACS,
        "idpMetadata": idbridge_saml::idp::idp_metadata_xml(&idbridge_saml::idp::IdpMetadata {
            entity_id: IDP_ENTITY,
            sso_redirect_url: SSO_URL,
            sso_post_url: SSO_URL,
            slo_url: None,
            signing_certs: &[idp_key().cert()],
            name_id_formats: &[name_id_format::EMAIL],
            want_authn_requests_signed: true,
        }, None).unwrap(),
        "signRequests": true,
        "spSignKey": pem(key.key.private_key_to_pem_pkcs8().unwrap()),
        "spSignCert": pem(key.cert.to_pem().unwrap()),
        "spEncKey": pem(sp_enc_key().key.private_key_to_pem_pkcs8().unwrap()),
        "spEncCert": pem(sp_enc_key().cert.to_pem().unwrap()),
    });
    let out = match which {
        "samlify" => samlify_sp(&cfg),
        _ => pysaml2_sp(&cfg),
    }
    .unwrap_or_else(|e| panic!("{which}: {e}"));
    out["metadata"].as_str().unwrap().to_owned()
}

#[test]
fn samlify_and_pysaml2_metadata_are_imported() {
    for which in ["samlify", "pysaml2"] {
        let xml = peer_metadata(which);
        let m = SpMetadata::from_xml(&xml).unwrap_or_else(|e| panic!("{which}: {e}\n{xml}"));
        assert_eq!(m.entity_id, SP_ENTITY, "{which}");
        assert!(
            m.acs
                .iter()
                .any(|a| a.binding == BINDING_POST && a.location == ACS),
            "{which}: {:?}",
            m.acs
        );
        assert!(m.authn_requests_signed, "{which}");
        assert!(!m.signing_certs.is_empty(), "{which}");
        assert!(
            m.encryption_certs
                .iter()
                .any(|c| c.to_der().unwrap() == sp_enc_key().cert.to_der().unwrap()),
            "{which}: the encryption certificate"
        );
        let reg = RegisteredSp::from_metadata(&m, name_id_format::EMAIL);
        assert!(reg.require_signed_requests);
        assert_eq!(reg.default_acs().unwrap().location, ACS);
    }
}

#[test]
fn our_own_sp_metadata_is_imported() {
    let mut sp = SpSettings::new(SP_ENTITY, ACS);
    sp.signing_keys = vec![
        SpKeyPair::generate("s1", 30).unwrap(),
        SpKeyPair::generate("s2", 30).unwrap(),
    ];
    sp.decryption_keys = vec![sp_enc_key().clone()];
    sp.want_signed_requests = true;
    let m = SpMetadata::from_xml(&sp_metadata_xml(&sp).unwrap()).unwrap();
    assert_eq!(
        m.signing_certs.len(),
        2,
        "both rollover keys verify requests"
    );
    assert_eq!(m.encryption_certs.len(), 1);
    assert!(m
        .encryption_methods
        .iter()
        .any(|a| a.ends_with("aes256-gcm")));
    assert!(m.want_assertions_signed && m.authn_requests_signed);
    assert_eq!(m.acs.len(), 1);
    assert_eq!(m.acs[0].index, Some(0));
    assert!(m.acs[0].is_default);
}

fn md(body: &str) -> String {
    format!(
        "<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" entityID=\"{SP_ENTITY}\"><md:SPSSODescriptor protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">{body}</md:SPSSODescriptor></md:EntityDescriptor>"
    )
}

fn refused(xml: &str) -> IdpError {
    match SpMetadata::from_xml(xml) {
        Ok(m) => panic!("accepted: {m:?}"),
        Err(e) => e,
    }
}

#[test]
fn acs_endpoints_keep_binding_index_and_default() {
    let m = SpMetadata::from_xml(&md(&format!(
        "<md:AssertionConsumerService Binding=\"{BINDING_REDIRECT}\" Location=\"https://sp.test/r\" index=\"0\"/>\
         <md:AssertionConsumerService Binding=\"{BINDING_POST}\" Location=\"https://sp.test/a\" index=\"3\"/>\
         <md:AssertionConsumerService Binding=\"{BINDING_POST}\" Location=\"https://sp.test/b\" index=\"4\" isDefault=\"true\"/>"
    )))
    .unwrap();
    assert_eq!(m.acs.len(), 3);
    let reg = RegisteredSp::from_metadata(&m, name_id_format::EMAIL);
    assert_eq!(reg.default_acs().unwrap().location, "https://sp.test/b");
    assert!(!reg.require_signed_requests);
}

#[test]
fn bad_metadata_is_refused_with_a_reason() {
    let post = |loc: &str| {
        format!("<md:AssertionConsumerService Binding=\"{BINDING_POST}\" Location=\"{loc}\" index=\"0\"/>")
    };
    for (xml, what) in [
        (md(&format!("<md:AssertionConsumerService Binding=\"{BINDING_REDIRECT}\" Location=\"https://sp.test/r\"/>")), "HTTP-POST"),
        (md(&post("javascript:alert(1)")), "http(s)"),
        (md(&post("/relative/acs")), "http(s)"),
        (md(&format!("<md:AssertionConsumerService Binding=\"{BINDING_POST}\" Location=\"https://sp.test/a\" index=\"-1\"/>")), "index"),
        (md(&format!("<md:AssertionConsumerService Binding=\"{BINDING_POST}\" Location=\"https://sp.test/a\" isDefault=\"maybe\"/>")), "xs:boolean"),
        (md(&format!("<md:KeyDescriptor use=\"signing\"><ds:KeyInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:X509Data><ds:X509Certificate>bm90IGEgY2VydA==</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>{}", post("https://sp.test/a"))), "certificate"),
        ("<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" entityID=\"x\"><md:IDPSSODescriptor protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\"/></md:EntityDescriptor>".to_owned(), "SPSSODescriptor"),
        (md(&post("https://sp.test/a")).replace(&format!(" entityID=\"{SP_ENTITY}\""), ""), "entityID"),
    ] {
        match refused(&xml) {
            IdpError::Metadata(m) => assert!(m.contains(what), "{m} should mention {what}"),
            other => panic!("{what}: {other}"),
        }
    }
    assert_eq!(
        refused(&format!(
            "<!DOCTYPE md [<!ENTITY x \"y\">]>{}",
            md(&post("https://sp.test/a"))
        )),
        IdpError::Gate(GateViolation::Doctype)
    );
}
