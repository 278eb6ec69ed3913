//! Interop with an independent IdP implementation: pysaml2 (Python; signs through xmlsec1).
//! Installed by scripts/test-deps.d/saml.sh into `$IDBRIDGE_PEERS_DIR/pysaml2-venv`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use idbridge_saml::{sp_metadata_xml, VerifiedAssertion};
use std::process::Command;

fn python() -> String {
    let base = peers_dir();
    format!("{base}/pysaml2-venv/bin/python")
}

fn pysaml2_response(encrypt: bool, sign_assertion: bool, sign_message: bool) -> String {
    pysaml2_response_with(
        encrypt,
        sign_assertion,
        sign_message,
        "http://www.w3.org/2001/04/xmlenc#aes256-cbc",
    )
}

fn pysaml2_response_with(
    encrypt: bool,
    sign_assertion: bool,
    sign_message: bool,
    data_alg: &str,
) -> String {
    let py = python();
    assert!(
        std::path::Path::new(&py).exists(),
        "pysaml2 not installed ({py}): run scripts/test-deps.d/saml.sh"
    );
    let cfg = serde_json::json!({
        "idp": IDP_ENTITY, "sp": SP_ENTITY, "acs": ACS, "reqId": REQ_ID, "user": USER,
        "idpKey": String::from_utf8(idp().keys.key.private_key_to_pem_pkcs8().unwrap()).unwrap(),
        "idpCert": String::from_utf8(idp().keys.cert.to_pem().unwrap()).unwrap(),
        "spCert": String::from_utf8(sp_key().cert.to_pem().unwrap()).unwrap(),
        "spMetadata": sp_metadata_xml(&sp()).unwrap(),
        "encrypt": encrypt, "signAssertion": sign_assertion, "signMessage": sign_message,
        "attributes": {"email": [USER], "groups": ["Engineering", "Admins"]},
        "dataAlg": data_alg,
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/pysaml2_idp.py");
    let mut cmd = Command::new(&py);
    cmd.arg(script);
    run_peer(cmd, "pysaml2", &cfg)
}

fn check(v: &VerifiedAssertion) {
    assert_eq!(v.name_id, USER);
    assert_eq!(
        v.attributes["groups"],
        vec!["Engineering".to_string(), "Admins".to_string()]
    );
    assert_eq!(v.in_response_to.as_deref(), Some(REQ_ID));
}

#[test]
fn pysaml2_signed_response() {
    let v = verify_peer_b64(&pysaml2_response(false, false, true)).unwrap();
    check(&v);
    assert!(v.response_signed && !v.assertion_signed);
}

#[test]
fn pysaml2_signed_assertion() {
    let v = verify_peer_b64(&pysaml2_response(false, true, false)).unwrap();
    check(&v);
    assert!(v.assertion_signed && !v.response_signed);
}

#[test]
fn pysaml2_signed_then_encrypted() {
    let v = verify_peer_b64(&pysaml2_response(true, true, false)).unwrap();
    check(&v);
    assert!(v.encrypted && v.assertion_signed);
}

#[test]
fn pysaml2_default_tripledes_is_refused() {
    let b64 = pysaml2_response_with(
        true,
        true,
        false,
        "http://www.w3.org/2001/04/xmlenc#tripledes-cbc",
    );
    assert_eq!(
        verify_peer_b64(&b64),
        Err(idbridge_saml::SamlError::Decrypt(
            idbridge_saml::DecryptError::DataAlgorithm(
                "http://www.w3.org/2001/04/xmlenc#tripledes-cbc".into()
            )
        ))
    );
}
