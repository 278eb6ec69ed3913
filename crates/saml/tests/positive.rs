//! Responses that must be accepted, in every supported signing/encryption layout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use idbridge_saml::testkit::{DataEnc, KeyEnc, SignMode};
use idbridge_saml::{
    verify_post, IdpSettings, MemoryReplayCache, ReplayCache, ResponseContext, SamlError,
};
use std::sync::Arc;
use std::time::Duration;

fn assert_alice(v: &idbridge_saml::VerifiedAssertion, a: &idbridge_saml::testkit::AssertionSpec) {
    assert_eq!(v.name_id, USER);
    assert_eq!(v.issuer, IDP_ENTITY);
    assert_eq!(v.assertion_id, a.id);
    assert_eq!(v.in_response_to.as_deref(), Some(REQ_ID));
    assert_eq!(v.session_index.as_deref(), Some("_session1"));
    assert_eq!(
        v.attributes.get("groups").unwrap(),
        &vec!["Engineering".to_string(), "Admins".to_string()]
    );
    assert_eq!(Some(v.not_on_or_after), a.confirmation_not_on_or_after);
}

#[test]
fn signed_response_is_accepted() {
    let now = now();
    let a = aspec(now);
    let xml = idp().response(&rspec(now), &a, SignMode::Response).unwrap();
    let v = verify(&xml, now).unwrap();
    assert_alice(&v, &a);
    assert!(v.response_signed && !v.assertion_signed && !v.encrypted);
}

#[test]
fn signed_assertion_in_unsigned_response_is_accepted() {
    let now = now();
    let a = aspec(now);
    let xml = idp()
        .response(&rspec(now), &a, SignMode::Assertion)
        .unwrap();
    let v = verify(&xml, now).unwrap();
    assert_alice(&v, &a);
    assert!(!v.response_signed && v.assertion_signed);
}

#[test]
fn both_signed_is_accepted() {
    let now = now();
    let a = aspec(now);
    let xml = idp().response(&rspec(now), &a, SignMode::Both).unwrap();
    let v = verify(&xml, now).unwrap();
    assert_alice(&v, &a);
    assert!(v.response_signed && v.assertion_signed);
}

fn encrypted_case(data: DataEnc, key: KeyEnc, sign_assertion: bool, sign_response: bool) {
    let now = now();
    let a = aspec(now);
    let xml = idp()
        .encrypted_response(
            &rspec(now),
            &a,
            &sp_key().cert,
            data,
            key,
            sign_assertion,
            sign_response,
        )
        .unwrap();
    assert!(xml.contains("EncryptedAssertion") && !xml.contains(USER));
    let v = verify(&xml, now).unwrap_or_else(|e| panic!("{data:?}/{key:?}: {e}"));
    assert_alice(&v, &a);
    assert!(v.encrypted);
    assert_eq!(v.assertion_signed, sign_assertion);
}

#[test]
fn signed_then_encrypted_aes256_cbc_oaep_sha1() {
    encrypted_case(DataEnc::Aes256Cbc, KeyEnc::OaepSha1, true, false);
}

#[test]
fn signed_then_encrypted_aes128_gcm_oaep_sha256() {
    encrypted_case(DataEnc::Aes128Gcm, KeyEnc::OaepSha256, true, false);
}

#[test]
fn signed_then_encrypted_aes128_cbc_and_aes256_gcm() {
    encrypted_case(DataEnc::Aes128Cbc, KeyEnc::OaepSha256, true, false);
    encrypted_case(DataEnc::Aes256Gcm, KeyEnc::OaepSha1, true, false);
}

#[test]
fn encrypted_unsigned_assertion_in_signed_response() {
    encrypted_case(DataEnc::Aes256Gcm, KeyEnc::OaepSha1, false, true);
}

#[test]
fn encrypted_signed_assertion_in_signed_response() {
    encrypted_case(DataEnc::Aes256Cbc, KeyEnc::OaepSha1, true, true);
}

#[test]
fn decryption_key_rollover_accepts_either_key() {
    let now = now();
    let mut sp = sp();
    sp.decryption_keys = vec![sp_key().clone(), sp_key2().clone()];
    for recipient in [sp_key(), sp_key2()] {
        let xml = idp()
            .encrypted_response(
                &rspec(now),
                &aspec(now),
                &recipient.cert,
                DataEnc::Aes128Gcm,
                KeyEnc::OaepSha1,
                true,
                false,
            )
            .unwrap();
        verify_with(&xml, &ctx(now), &sp, &idp_settings()).unwrap();
    }
}

#[test]
fn idp_initiated_when_allowed() {
    let now = now();
    let mut a = aspec(now);
    a.in_response_to = None;
    let mut r = rspec(now);
    r.in_response_to = None;
    let xml = idp().response(&r, &a, SignMode::Both).unwrap();
    let mut sp = sp();
    sp.allow_idp_initiated = true;
    let ctx = ResponseContext {
        expected_in_response_to: None,
        now,
    };
    let v = verify_with(&xml, &ctx, &sp, &idp_settings()).unwrap();
    assert_eq!(v.in_response_to, None);
}

#[test]
fn two_trusted_certs_rollover() {
    let now = now();
    let both = IdpSettings {
        signing_certs: vec![idp().keys.cert.clone(), idp2().keys.cert.clone()],
        ..idp_settings()
    };
    for signer in [idp(), idp2()] {
        for mode in [SignMode::Response, SignMode::Assertion, SignMode::Both] {
            let xml = signer.response(&rspec(now), &aspec(now), mode).unwrap();
            verify_with(&xml, &ctx(now), &sp(), &both).unwrap();
        }
    }
    // And the old key alone no longer verifies the new key's responses.
    let xml = idp2()
        .response(&rspec(now), &aspec(now), SignMode::Response)
        .unwrap();
    assert!(matches!(verify(&xml, now), Err(SamlError::Signature(_))));
}

#[test]
fn comment_in_name_id_does_not_truncate() {
    // CVE-2017-11427 class: the IdP signed "admin@example.com.evil.test"; a comment inserted
    // after signing must not make us read "admin@example.com".
    let now = now();
    let mut a = aspec(now);
    a.name_id = "admin@example.com.evil.test".into();
    let xml = idp()
        .response(&rspec(now), &a, SignMode::Assertion)
        .unwrap();
    let hacked = xml.replace(
        "admin@example.com.evil.test",
        "admin@example.com<!---->.evil.test",
    );
    assert_ne!(hacked, xml);
    let v = verify(&hacked, now).unwrap();
    assert_eq!(v.name_id, "admin@example.com.evil.test");
}

#[test]
fn sha1_accepted_only_when_enabled() {
    let now = now();
    let r = rspec(now);
    let a = aspec(now);
    let tpl = idbridge_saml::testkit::signature_template(
        &r.id,
        &idp().keys.cert,
        idbridge_saml::gate::RSA_SHA1,
        idbridge_saml::gate::SHA1,
    )
    .unwrap();
    let xml = idp().sign_template(&r.to_xml(&tpl, &a.to_xml(""))).unwrap();
    assert!(matches!(
        verify(&xml, now),
        Err(SamlError::Gate(idbridge_saml::GateViolation::Algorithm(_)))
    ));
    let mut idp_s = idp_settings();
    idp_s.allow_sha1 = true;
    verify_with(&xml, &ctx(now), &sp(), &idp_s).unwrap();
}

#[test]
fn relay_state_is_returned() {
    let now = now();
    let xml = idp()
        .response(&rspec(now), &aspec(now), SignMode::Response)
        .unwrap();
    let v = idbridge_saml::verify_post_blocking(
        &idbridge_saml::testkit::b64(&xml),
        Some("state-123"),
        &ctx(now),
        &sp(),
        &idp_settings(),
        &MemoryReplayCache::new(),
    )
    .unwrap();
    assert_eq!(v.relay_state.as_deref(), Some("state-123"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_wrapper_verifies_and_times_out() {
    let now = now();
    let xml = idp()
        .response(&rspec(now), &aspec(now), SignMode::Response)
        .unwrap();
    let cache: Arc<dyn ReplayCache> = Arc::new(MemoryReplayCache::new());
    let v = verify_post(
        idbridge_saml::testkit::b64(&xml),
        None,
        ctx(now),
        Arc::new(sp()),
        Arc::new(idp_settings()),
        cache.clone(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(v.name_id, USER);
    // A stalled dependency (here: a replay store that hangs) must not stall the caller.
    struct Stalled;
    impl ReplayCache for Stalled {
        fn insert_if_absent(&self, _: &str, _: i64) -> Result<bool, String> {
            std::thread::sleep(Duration::from_secs(2));
            Ok(true)
        }
    }
    let started = std::time::Instant::now();
    let late = verify_post(
        idbridge_saml::testkit::b64(&xml),
        None,
        ctx(now),
        Arc::new(sp()),
        Arc::new(idp_settings()),
        Arc::new(Stalled),
        Duration::from_millis(200),
    )
    .await;
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(late, Err(SamlError::Timeout));
}

#[test]
fn ecdsa_p256_signed_response_is_accepted() {
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = openssl::pkey::PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let signer = idbridge_saml::IdpSigner {
        entity_id: IDP_ENTITY.into(),
        keys: idbridge_saml::SpKeyPair::self_signed(key, "ec-idp", 30).unwrap(),
    };
    let now = now();
    let r = rspec(now);
    let tpl = idbridge_saml::testkit::signature_template(
        &r.id,
        &signer.keys.cert,
        idbridge_saml::gate::ECDSA_SHA256,
        idbridge_saml::gate::SHA256,
    )
    .unwrap();
    let xml = signer
        .sign_template(&r.to_xml(&tpl, &aspec(now).to_xml("")))
        .unwrap();
    let v = verify_with(&xml, &ctx(now), &sp(), &signer.settings(None)).unwrap();
    assert_eq!(v.name_id, USER);
    // The RSA IdP's certificate does not verify it.
    assert!(matches!(verify(&xml, now), Err(SamlError::Signature(_))));
}

#[test]
fn encrypted_assertion_relying_on_inherited_namespaces() {
    // Some IdPs serialize the assertion in context before encrypting it, so its `saml:` prefix
    // is declared only on the enclosing Response; XML Encryption allows that.
    use idbridge_saml::testkit::encrypt_assertion;
    let now = now();
    let signed = idp().signed_assertion(&aspec(now)).unwrap();
    let decl = "xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ";
    assert!(signed.starts_with(&format!("<saml:Assertion {decl}")));
    let bare = signed.replacen(decl, "", 1);
    let enc =
        encrypt_assertion(&bare, &sp_key().cert, DataEnc::Aes128Gcm, KeyEnc::OaepSha1).unwrap();
    // Drop the EncryptedAssertion's own declaration too: only the Response declares `saml`.
    let enc = enc.replacen(
        " xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\"",
        "",
        1,
    );
    let xml = rspec(now).to_xml("", &enc);
    let v = verify(&xml, now).unwrap();
    assert_eq!(v.name_id, USER);
    assert!(v.encrypted && v.assertion_signed);
}
