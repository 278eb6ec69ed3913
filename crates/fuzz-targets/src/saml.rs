//! SAML targets on one fixed connection: a fixed IdP signing key and SP decryption key
//! (`fixtures/`, test-only keys) and a fixed clock, so the signed seeds stay valid forever and
//! the property can be checked exactly: the only assertions that can verify are the ones
//! [`seeds`] signed, so a verified profile must be one of them, field for field.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use idbridge_saml::gate;
use idbridge_saml::testkit::{b64, AssertionSpec, DataEnc, KeyEnc, ResponseSpec, SignMode};
use idbridge_saml::xml::{self, Limits};
use idbridge_saml::{
    verify_post_blocking, IdpSettings, IdpSigner, MemoryReplayCache, ResponseContext, SpKeyPair,
    SpSettings,
};

pub const SP_ENTITY: &str = "https://sp.idbridge.test/saml/conn_fuzz";
pub const ACS: &str = "https://sp.idbridge.test/saml/conn_fuzz/acs";
pub const IDP_ENTITY: &str = "https://idp.example.test/metadata";
pub const REQ_ID: &str = "_fuzzrequest0123456789";
pub const USER: &str = "alice@example.com";
/// The assertion ids [`seeds`] signs; a verified assertion has one of them.
pub const SIGNED_ASSERTION_IDS: &[&str] = &[
    "_fuzzassertion_signed",
    "_fuzzassertion_in_signed_response",
    "_fuzzassertion_both",
    "_fuzzassertion_encrypted",
];

struct Fixture {
    signer: IdpSigner,
    sp: SpSettings,
    idp: IdpSettings,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let keys = |key: &[u8], cert: &[u8]| {
            SpKeyPair::from_pem(key, cert).unwrap_or_else(|e| panic!("fixture key: {e}"))
        };
        let signer = IdpSigner {
            entity_id: IDP_ENTITY.into(),
            keys: keys(
                include_bytes!("../fixtures/idp.key.pem"),
                include_bytes!("../fixtures/idp.crt.pem"),
            ),
        };
        let mut sp = SpSettings::new(SP_ENTITY, ACS);
        sp.decryption_keys = vec![keys(
            include_bytes!("../fixtures/sp.key.pem"),
            include_bytes!("../fixtures/sp.crt.pem"),
        )];
        let idp = signer.settings(Some("https://idp.example.test/sso"));
        Fixture { signer, sp, idp }
    })
}

/// The fixed clock: every seed is issued at this instant and verified at it.
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default() // 2026-01-01T00:00:00Z
}

fn attributes() -> Vec<(String, Vec<String>)> {
    vec![
        ("email".into(), vec![USER.into()]),
        ("groups".into(), vec!["Engineering".into(), "Admins".into()]),
    ]
}

/// The pre-gate on raw bytes: the namespace-aware parse with its limits, then the shape rules
/// (with and without SHA-1 allowed). Property: no panic.
pub fn saml_gate(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(root) = xml::parse(text, &Limits::MESSAGE) {
        let _ = gate::check_response(&root, false);
        let _ = gate::check_response(&root, true);
    }
}

/// The whole HTTP-POST verify path (base64 is applied here, as a browser would) on the fixed
/// connection. Property: whatever verifies is one of the assertions [`seeds`] signed.
pub fn saml_verify(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let f = fixture();
    let ctx = ResponseContext {
        expected_in_response_to: Some(REQ_ID.into()),
        now: now(),
    };
    let replay = MemoryReplayCache::new();
    if let Ok(v) = verify_post_blocking(&b64(text), None, &ctx, &f.sp, &f.idp, &replay) {
        let expected: std::collections::BTreeMap<String, Vec<String>> =
            attributes().into_iter().collect();
        assert!(
            SIGNED_ASSERTION_IDS.contains(&v.assertion_id.as_str())
                && v.issuer == IDP_ENTITY
                && v.name_id == USER
                && v.attributes == expected
                && v.in_response_to.as_deref() == Some(REQ_ID),
            "a profile that the fixed IdP key never signed was accepted: {v:?}"
        );
    }
}

/// Valid signed responses for the fixed connection, by name: the positive seeds of
/// `saml_verify` (and of `saml_gate`). Each must verify (the corpus test checks it).
pub fn seeds() -> Vec<(String, String)> {
    let f = fixture();
    let spec = |id: &str| {
        let mut a = AssertionSpec::new(IDP_ENTITY, SP_ENTITY, ACS, USER, Some(REQ_ID), now())
            .unwrap_or_else(|e| panic!("assertion spec: {e}"));
        a.id = id.into();
        a.attributes = attributes();
        a
    };
    let response = |id: &str| {
        let mut r = ResponseSpec::new(IDP_ENTITY, ACS, Some(REQ_ID), now())
            .unwrap_or_else(|e| panic!("response spec: {e}"));
        r.id = id.into();
        r
    };
    let sign = |name: &str, aid: &str, mode: SignMode| {
        let xml = f
            .signer
            .response(
                &response(&format!("_fuzzresponse_{name}")),
                &spec(aid),
                mode,
            )
            .unwrap_or_else(|e| panic!("signing {name}: {e}"));
        (name.to_owned(), xml)
    };
    let encrypted = f
        .signer
        .encrypted_response(
            &response("_fuzzresponse_encrypted"),
            &spec("_fuzzassertion_encrypted"),
            &f.sp.decryption_keys[0].cert,
            DataEnc::Aes128Gcm,
            KeyEnc::OaepSha256,
            true,
            false,
        )
        .unwrap_or_else(|e| panic!("encrypting: {e}"));
    vec![
        sign(
            "assertion_signed",
            "_fuzzassertion_signed",
            SignMode::Assertion,
        ),
        sign(
            "response_signed",
            "_fuzzassertion_in_signed_response",
            SignMode::Response,
        ),
        sign("both_signed", "_fuzzassertion_both", SignMode::Both),
        ("encrypted".to_owned(), encrypted),
    ]
}

/// Verifies `xml` on the fixed connection (for the corpus test's positive control).
pub fn verifies(xml: &str) -> bool {
    let f = fixture();
    let ctx = ResponseContext {
        expected_in_response_to: Some(REQ_ID.into()),
        now: now(),
    };
    verify_post_blocking(
        &b64(xml),
        None,
        &ctx,
        &f.sp,
        &f.idp,
        &MemoryReplayCache::new(),
    )
    .is_ok()
}
