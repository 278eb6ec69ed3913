//! Interop with an independent XML-DSig implementation: Debian's `xmlsec1` CLI signs fixtures we
//! must accept (and verifies what our IdP signer produces). Install: scripts/test-deps.d/saml.sh.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use idbridge_saml::testkit::SignMode;
use std::path::Path;
use std::process::Command;

const ASSERTION_ID_ATTR: &str = "urn:oasis:names:tc:SAML:2.0:assertion:Assertion";
const RESPONSE_ID_ATTR: &str = "urn:oasis:names:tc:SAML:2.0:protocol:Response";

fn xmlsec1(args: &[&str]) -> std::process::Output {
    Command::new("xmlsec1")
        .args(args)
        .output()
        .expect("xmlsec1 not installed: run scripts/test-deps.d/saml.sh")
}

fn write_keys(dir: &Path) -> (String, String) {
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    std::fs::write(&key, idp().keys.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    std::fs::write(&cert, idp().keys.cert.to_pem().unwrap()).unwrap();
    (key.display().to_string(), cert.display().to_string())
}

fn sign_with_xmlsec1(template: &str, id_attr: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = write_keys(dir.path());
    let input = dir.path().join("in.xml");
    let output = dir.path().join("out.xml");
    std::fs::write(&input, template).unwrap();
    let out = xmlsec1(&[
        "--sign",
        "--privkey-pem",
        &format!("{key},{cert}"),
        "--id-attr:ID",
        id_attr,
        "--output",
        &output.display().to_string(),
        &input.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "xmlsec1 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(output).unwrap()
}

#[test]
fn xmlsec1_signed_assertion_is_accepted() {
    let t = now();
    let a = aspec(t);
    let template = rspec(t).to_xml("", &a.to_xml(&idp().template(&a.id).unwrap()));
    let signed = sign_with_xmlsec1(&template, ASSERTION_ID_ATTR);
    assert!(!signed.contains("<ds:DigestValue></ds:DigestValue>"));
    let v = verify(&signed, t).unwrap();
    assert_eq!(v.name_id, USER);
    assert!(v.assertion_signed && !v.response_signed);
    // And a tampered copy is not.
    assert!(verify(&signed.replace("Engineering", "Admins2"), t).is_err());
}

#[test]
fn xmlsec1_signed_response_is_accepted() {
    let t = now();
    let r = rspec(t);
    let template = r.to_xml(&idp().template(&r.id).unwrap(), &aspec(t).to_xml(""));
    let signed = sign_with_xmlsec1(&template, RESPONSE_ID_ATTR);
    let v = verify(&signed, t).unwrap();
    assert!(v.response_signed);
}

#[test]
fn our_signatures_verify_with_xmlsec1() {
    let t = now();
    let xml = idp()
        .response(&rspec(t), &aspec(t), SignMode::Response)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_, cert) = write_keys(dir.path());
    let input = dir.path().join("resp.xml");
    let verifies = |doc: &str| {
        std::fs::write(&input, doc).unwrap();
        xmlsec1(&[
            "--verify",
            "--pubkey-cert-pem",
            &cert,
            "--id-attr:ID",
            RESPONSE_ID_ATTR,
            &input.display().to_string(),
        ])
    };
    let ok = verifies(&xml);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(!verifies(&xml.replace(USER, "mallory@example.com"))
        .status
        .success());
}
