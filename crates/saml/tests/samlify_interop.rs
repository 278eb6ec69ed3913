//! Interop with an independent IdP implementation: samlify (Node, xml-crypto) signs and
//! encrypts login responses that we must accept. Installed by scripts/test-deps.d/saml.sh into
//! `$IDBRIDGE_PEERS_DIR/samlify` (default /var/cache/idbridge-peers/samlify).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use idbridge_saml::{verify_post_blocking, MemoryReplayCache, VerifiedAssertion};
use std::process::Command;

fn node_path() -> String {
    let base = peers_dir();
    format!("{base}/samlify/node_modules")
}

fn samlify_response(encrypt: bool, sign_assertion: bool, sign_message: bool) -> String {
    let modules = node_path();
    assert!(
        std::path::Path::new(&modules).join("samlify").exists(),
        "samlify not installed in {modules}: run scripts/test-deps.d/saml.sh"
    );
    let cfg = serde_json::json!({
        "idp": IDP_ENTITY, "sp": SP_ENTITY, "acs": ACS, "reqId": REQ_ID, "user": USER,
        "idpKey": String::from_utf8(idp().keys.key.private_key_to_pem_pkcs8().unwrap()).unwrap(),
        "idpCert": String::from_utf8(idp().keys.cert.to_pem().unwrap()).unwrap(),
        "spCert": String::from_utf8(sp_key().cert.to_pem().unwrap()).unwrap(),
        "encrypt": encrypt, "signAssertion": sign_assertion, "signMessage": sign_message,
        "attributes": {"email": [USER], "groups": ["Engineering", "Admins"]},
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/samlify_idp.js");
    let mut cmd = Command::new("node");
    cmd.arg(script).env("NODE_PATH", &modules);
    run_peer(cmd, "samlify", &cfg)
}

fn check(v: &VerifiedAssertion) {
    assert_eq!(v.name_id, USER);
    assert_eq!(v.session_index.as_deref(), Some("_samlify_session"));
    assert_eq!(
        v.attributes["groups"],
        vec!["Engineering".to_string(), "Admins".to_string()]
    );
}

#[test]
fn samlify_signed_assertion() {
    let v = verify_peer_b64(&samlify_response(false, true, false)).unwrap();
    check(&v);
    assert!(v.assertion_signed && !v.response_signed);
}

#[test]
fn samlify_signed_message_and_assertion() {
    let v = verify_peer_b64(&samlify_response(false, true, true)).unwrap();
    check(&v);
    assert!(v.assertion_signed && v.response_signed);
}

#[test]
fn samlify_signed_then_encrypted_aes256_cbc_rsa_oaep() {
    let v = verify_peer_b64(&samlify_response(true, true, false)).unwrap();
    check(&v);
    assert!(v.encrypted && v.assertion_signed);
}

#[test]
fn samlify_response_with_another_key_is_refused() {
    let b64 = samlify_response(false, true, false);
    let other = idbridge_saml::IdpSettings {
        signing_certs: vec![idp2().keys.cert.clone()],
        ..idp_settings()
    };
    assert!(verify_post_blocking(
        &b64,
        None,
        &ctx(chrono::Utc::now()),
        &sp(),
        &other,
        &MemoryReplayCache::new()
    )
    .is_err());
}
