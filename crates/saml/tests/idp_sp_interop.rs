//! idbridge-as-IdP with independent service providers: samlify (Node, xml-crypto) and pysaml2
//! (Python, xmlsec1 + XSD validation) import our IdP metadata and accept our login Responses —
//! signed assertion, signed response, encrypted — including user data that canonicalization
//! escapes. A tampered Response and another key are refused by both.
//!
//! Two peer quirks shape the expectations: samlify verifies `doc.toString()` of its xmldom tree,
//! which writes a CR in text back as a raw CR that the re-parse turns into LF, so any signed
//! value holding a CR fails there (xmlsec1, libxml2, pysaml2 and our SP verify it): its user has
//! no CR. pysaml2 trims attribute values, and its decryption (xmlsec1 output re-parsed) turns
//! CR LF into LF, so its encrypted case uses the same user.
//! Installed by scripts/test-deps.d/saml.sh into `$IDBRIDGE_PEERS_DIR`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod idp_fixtures;
use idp_fixtures::*;

use idbridge_saml::idp::{
    name_id_format, DataEnc, KeyEnc, ResponseOptions, SignedResponse, UserAttributes,
};
use serde_json::{json, Value};

fn pem(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap()
}

fn base_cfg(command: &str, certs: &[&openssl::x509::X509]) -> Value {
    json!({
        "command": command,
        "idp": IDP_ENTITY,
        "sp": SP_ENTITY,
        "acs": ACS,
        "idpMetadata": idp_metadata(certs, false),
        "spEncKey": pem(sp_enc_key().key.private_key_to_pem_pkcs8().unwrap()),
        "spEncCert": pem(sp_enc_key().cert.to_pem().unwrap()),
    })
}

/// [`tricky_user`] without CR characters (see the module comment).
fn user_without_cr() -> UserAttributes {
    let mut u = tricky_user();
    let strip = |s: &mut String| *s = s.replace('\r', "");
    u.last_name.as_mut().map(strip);
    u.groups.iter_mut().for_each(strip);
    u
}

fn response(opts: &ResponseOptions) -> (UserAttributes, SignedResponse) {
    response_for(tricky_user(), opts)
}

fn response_for(user: UserAttributes, opts: &ResponseOptions) -> (UserAttributes, SignedResponse) {
    let r = login(&user, Some(REQ_ID), opts, chrono::Utc::now());
    (user, r)
}

fn check_samlify(extract: &Value, user: &UserAttributes) {
    assert_eq!(extract["nameID"], json!(user.email.clone().unwrap()));
    assert_eq!(extract["issuer"], json!(IDP_ENTITY));
    assert_eq!(extract["audience"], json!(SP_ENTITY));
    assert_eq!(extract["response"]["inResponseTo"], json!(REQ_ID));
    assert_eq!(extract["response"]["destination"], json!(ACS));
    let a = &extract["attributes"];
    assert_eq!(a["id"], json!(user.id));
    assert_eq!(a["email"], json!(user.email.clone().unwrap()));
    assert_eq!(a["firstName"], json!(user.first_name.clone().unwrap()));
    assert_eq!(a["lastName"], json!(user.last_name.clone().unwrap()));
    assert_eq!(a["groups"], json!(user.groups));
    assert_eq!(a["department"], json!(user.custom[0].values[0]));
    assert_eq!(extract["sessionIndex"]["sessionIndex"], json!("_sess_0123"));
}

fn check_pysaml2(out: &Value, user: &UserAttributes) {
    assert_eq!(out["issuer"], json!(IDP_ENTITY));
    assert_eq!(out["nameId"], json!(user.email.clone().unwrap()));
    assert_eq!(out["nameIdFormat"], json!(name_id_format::EMAIL));
    assert_eq!(out["inResponseTo"], json!(REQ_ID));
    assert_eq!(out["sessionIndex"], json!("_sess_0123"));
    assert_eq!(out["audience"], json!([SP_ENTITY]));
    let ava = &out["ava"];
    let trimmed = |v: &str| json!([v.trim()]);
    assert_eq!(ava["id"], trimmed(&user.id));
    assert_eq!(ava["email"], trimmed(user.email.as_deref().unwrap()));
    assert_eq!(
        ava["firstName"],
        trimmed(user.first_name.as_deref().unwrap())
    );
    assert_eq!(ava["lastName"], trimmed(user.last_name.as_deref().unwrap()));
    let groups: Vec<&str> = user.groups.iter().map(|g| g.trim()).collect();
    assert_eq!(ava["groups"], json!(groups));
    assert_eq!(ava["department"], trimmed(&user.custom[0].values[0]));
}

#[test]
fn samlify_accepts_signed_assertions() {
    let (user, r) = response_for(user_without_cr(), &ResponseOptions::default());
    let mut cfg = base_cfg("parse", &[idp_key().cert()]);
    cfg["samlResponse"] = json!(r.to_base64());
    let extract = samlify_sp(&cfg).unwrap_or_else(|e| panic!("samlify refused: {e}"));
    check_samlify(&extract, &user);
}

#[test]
fn samlify_accepts_signed_response_and_encrypted_assertions() {
    for (sign_response, enc) in [
        (true, None),
        (false, Some(DataEnc::Aes256Cbc)),
        (true, Some(DataEnc::Aes256Gcm)),
    ] {
        let opts = match enc {
            Some(data) => encrypted(data, KeyEnc::OaepSha1, sign_response),
            None => ResponseOptions {
                sign_response,
                ..ResponseOptions::default()
            },
        };
        let (user, r) = response_for(user_without_cr(), &opts);
        let mut cfg = base_cfg("parse", &[idp_key().cert()]);
        cfg["samlResponse"] = json!(r.to_base64());
        cfg["wantMessageSigned"] = json!(sign_response);
        cfg["encrypted"] = json!(enc.is_some());
        let extract = samlify_sp(&cfg)
            .unwrap_or_else(|e| panic!("samlify refused {sign_response}/{enc:?}: {e}"));
        check_samlify(&extract, &user);
    }
}

#[test]
fn samlify_refuses_tampering_and_other_keys() {
    let (_, r) = response_for(user_without_cr(), &ResponseOptions::default());
    let mut cfg = base_cfg("parse", &[idp_key2().cert()]);
    cfg["samlResponse"] = json!(r.to_base64());
    assert!(
        samlify_sp(&cfg).is_err(),
        "samlify accepted a response signed by another key"
    );
    let tampered = SignedResponse {
        xml: r.xml.replacen("R&amp;D", "R&amp;E", 1),
        ..r
    };
    let mut cfg = base_cfg("parse", &[idp_key().cert()]);
    cfg["samlResponse"] = json!(tampered.to_base64());
    assert!(
        samlify_sp(&cfg).is_err(),
        "samlify accepted a tampered response"
    );
}

#[test]
fn samlify_accepts_the_rollover_pair() {
    let (user, r) = response_for(user_without_cr(), &ResponseOptions::default());
    let mut cfg = base_cfg("parse", &[idp_key2().cert(), idp_key().cert()]);
    cfg["samlResponse"] = json!(r.to_base64());
    let extract = samlify_sp(&cfg).unwrap_or_else(|e| panic!("samlify refused: {e}"));
    check_samlify(&extract, &user);
}

#[test]
fn pysaml2_accepts_signed_assertions_and_responses() {
    for sign_response in [false, true] {
        let opts = ResponseOptions {
            sign_response,
            ..ResponseOptions::default()
        };
        let (user, r) = response(&opts);
        let mut cfg = base_cfg("parse", &[idp_key().cert()]);
        cfg["samlResponse"] = json!(r.to_base64());
        cfg["reqId"] = json!(REQ_ID);
        cfg["wantResponseSigned"] = json!(sign_response);
        let out = pysaml2_sp(&cfg)
            .unwrap_or_else(|e| panic!("pysaml2 refused (signed response {sign_response}): {e}"));
        check_pysaml2(&out, &user);
    }
}

#[test]
fn pysaml2_decrypts_our_encrypted_assertions() {
    for data in [DataEnc::Aes256Cbc, DataEnc::Aes256Gcm] {
        let opts = encrypted(data, KeyEnc::OaepSha1, false);
        let (user, r) = response_for(user_without_cr(), &opts);
        let mut cfg = base_cfg("parse", &[idp_key().cert()]);
        cfg["samlResponse"] = json!(r.to_base64());
        cfg["reqId"] = json!(REQ_ID);
        let out = pysaml2_sp(&cfg).unwrap_or_else(|e| panic!("pysaml2 refused {data:?}: {e}"));
        check_pysaml2(&out, &user);
    }
}

#[test]
fn pysaml2_refuses_tampering_other_keys_and_other_requests() {
    let (_, r) = response(&ResponseOptions::default());
    let mut cfg = base_cfg("parse", &[idp_key2().cert()]);
    cfg["samlResponse"] = json!(r.to_base64());
    cfg["reqId"] = json!(REQ_ID);
    assert!(pysaml2_sp(&cfg).is_err(), "pysaml2 accepted another key");
    let tampered = SignedResponse {
        xml: r.xml.replacen("R&amp;D", "R&amp;E", 1),
        ..r.clone()
    };
    let mut cfg = base_cfg("parse", &[idp_key().cert()]);
    cfg["samlResponse"] = json!(tampered.to_base64());
    cfg["reqId"] = json!(REQ_ID);
    assert!(
        pysaml2_sp(&cfg).is_err(),
        "pysaml2 accepted a tampered response"
    );
    let mut cfg = base_cfg("parse", &[idp_key().cert()]);
    cfg["samlResponse"] = json!(r.to_base64());
    cfg["reqId"] = json!("_not_the_request");
    assert!(
        pysaml2_sp(&cfg).is_err(),
        "pysaml2 accepted an unsolicited response"
    );
}
