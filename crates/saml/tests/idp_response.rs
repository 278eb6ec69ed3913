//! idbridge-as-IdP Responses (canonical writer + one RSA signature) verified by independent
//! XML-DSig implementations: Debian's xmlsec1 CLI and idbridge's own strict SP verifier (which
//! itself runs xmlsec through samael), in every signing and encryption layout, with user data
//! full of characters canonicalization escapes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod idp_fixtures;
use idp_fixtures::*;

use idbridge_saml::idp::{
    build_status_response, idp_metadata_xml, name_id_format, status, DataEnc, IdpError,
    IdpMetadata, KeyEnc, ResponseOptions, SamlAttribute, SpErrorResponse, UserAttributes,
};
use idbridge_saml::{IdpSettings, PolicyViolation, SamlError};

const BOTH_XPATH_ASSERTION: &str = "//*[local-name()='Assertion']/*[local-name()='Signature']";

fn expect_attributes(v: &idbridge_saml::VerifiedAssertion, user: &UserAttributes) {
    let a = &v.attributes;
    assert_eq!(a["id"], vec![user.id.clone()]);
    assert_eq!(a["email"], vec![user.email.clone().unwrap()]);
    assert_eq!(a["firstName"], vec![user.first_name.clone().unwrap()]);
    assert_eq!(a["lastName"], vec![user.last_name.clone().unwrap()]);
    assert_eq!(a["groups"], user.groups);
    assert_eq!(a["department"], user.custom[0].values);
    assert_eq!(v.name_id, user.email.clone().unwrap());
    assert_eq!(v.name_id_format.as_deref(), Some(name_id_format::EMAIL));
    assert_eq!(v.session_index.as_deref(), Some("_sess_0123"));
}

#[test]
fn signed_assertion_verifies_with_our_sp_and_xmlsec1() {
    let now = now();
    let user = tricky_user();
    let r = login(&user, Some(REQ_ID), &ResponseOptions::default(), now);
    assert!(!r.xml.contains('\r'), "CR must travel as &#xD;");
    let v = verify_ours(&r, Some(REQ_ID), now).unwrap();
    expect_attributes(&v, &user);
    assert!(v.assertion_signed && !v.response_signed && !v.encrypted);
    assert_eq!(v.assertion_id, r.assertion_id);
    assert_eq!(v.not_on_or_after, r.not_on_or_after);

    let (ok, err) = xmlsec1_verify(&r.xml, idp_key().cert(), ASSERTION_NODE);
    assert!(ok, "xmlsec1 refused our assertion signature: {err}");
    // xmlsec1 checks what it verifies: one changed byte in a signed value breaks it.
    let tampered = r.xml.replacen("R&amp;D", "R&amp;E", 1);
    assert_ne!(tampered, r.xml);
    assert!(!xmlsec1_verify(&tampered, idp_key().cert(), ASSERTION_NODE).0);
    assert!(verify_ours(
        &idbridge_saml::idp::SignedResponse {
            xml: tampered,
            ..r.clone()
        },
        Some(REQ_ID),
        now
    )
    .is_err());
}

#[test]
fn signed_response_and_assertion_verify() {
    let now = now();
    let user = tricky_user();
    let opts = ResponseOptions {
        sign_response: true,
        ..ResponseOptions::default()
    };
    let r = login(&user, Some(REQ_ID), &opts, now);
    let v = verify_ours(&r, Some(REQ_ID), now).unwrap();
    expect_attributes(&v, &user);
    assert!(v.assertion_signed && v.response_signed);
    let (ok, err) = xmlsec1_verify(&r.xml, idp_key().cert(), RESPONSE_NODE);
    assert!(ok, "xmlsec1 refused our response signature: {err}");
    let (ok, err) = xmlsec1_verify_node(
        &r.xml,
        idp_key().cert(),
        ASSERTION_NODE,
        Some(BOTH_XPATH_ASSERTION),
    );
    assert!(
        ok,
        "xmlsec1 refused the assertion signature inside a signed response: {err}"
    );
}

#[test]
fn response_only_signature_verifies() {
    let now = now();
    let user = tricky_user();
    let opts = ResponseOptions {
        sign_assertion: false,
        sign_response: true,
        ..ResponseOptions::default()
    };
    let r = login(&user, None, &opts, now);
    let v = verify_ours(&r, None, now).unwrap();
    expect_attributes(&v, &user);
    assert!(!v.assertion_signed && v.response_signed);
    assert!(xmlsec1_verify(&r.xml, idp_key().cert(), RESPONSE_NODE).0);
}

#[test]
fn unsigned_everything_is_refused_at_build_time() {
    let opts = ResponseOptions {
        sign_assertion: false,
        sign_response: false,
        ..ResponseOptions::default()
    };
    let attrs = tricky_user().to_saml().unwrap();
    let err = idbridge_saml::idp::build_login_response(
        &idbridge_saml::idp::LoginResponse {
            idp_entity_id: IDP_ENTITY,
            sp_entity_id: SP_ENTITY,
            acs_url: ACS,
            in_response_to: None,
            name_id: &email_name_id(&tricky_user()),
            session_index: "_s",
            authn_instant: now(),
            attributes: &attrs,
            now: now(),
            options: &opts,
        },
        idp_key(),
    )
    .unwrap_err();
    assert!(matches!(err, IdpError::Config(_)), "{err}");
}

#[test]
fn encrypted_assertions_decrypt_and_verify_in_every_layout() {
    let now = now();
    let user = tricky_user();
    for data in [DataEnc::Aes256Gcm, DataEnc::Aes256Cbc] {
        for key in [KeyEnc::OaepSha1, KeyEnc::OaepSha256] {
            for sign_response in [false, true] {
                let opts = encrypted(data, key, sign_response);
                let r = login(&user, Some(REQ_ID), &opts, now);
                assert!(r.xml.contains("EncryptedAssertion") && !r.xml.contains("R&amp;D"));
                let v = verify_ours(&r, Some(REQ_ID), now)
                    .unwrap_or_else(|e| panic!("{data:?}/{key:?}/{sign_response}: {e}"));
                expect_attributes(&v, &user);
                assert!(v.encrypted && v.assertion_signed);
                assert_eq!(v.response_signed, sign_response);
                if sign_response {
                    let (ok, err) = xmlsec1_verify(&r.xml, idp_key().cert(), RESPONSE_NODE);
                    assert!(ok, "{data:?}/{key:?}: xmlsec1: {err}");
                }
            }
        }
    }
}

#[test]
fn another_key_and_the_rollover_pair() {
    let now = now();
    let r = login(
        &tricky_user(),
        Some(REQ_ID),
        &ResponseOptions::default(),
        now,
    );
    let (sp, idp) = sp_side();
    let ctx = idbridge_saml::ResponseContext {
        expected_in_response_to: Some(REQ_ID.into()),
        now,
    };
    let verify = |certs: Vec<openssl::x509::X509>| {
        idbridge_saml::verify_post_blocking(
            &r.to_base64(),
            None,
            &ctx,
            &sp,
            &IdpSettings {
                signing_certs: certs,
                ..idp.clone()
            },
            &idbridge_saml::MemoryReplayCache::new(),
        )
    };
    assert!(verify(vec![idp_key2().cert().clone()]).is_err());
    assert!(verify(vec![idp_key2().cert().clone(), idp_key().cert().clone()]).is_ok());
    assert!(!xmlsec1_verify(&r.xml, idp_key2().cert(), ASSERTION_NODE).0);
}

#[test]
fn windows_audience_and_recipient_are_what_the_sp_checks() {
    let now = now();
    let opts = ResponseOptions {
        validity: std::time::Duration::from_secs(120),
        ..ResponseOptions::default()
    };
    let r = login(&tricky_user(), Some(REQ_ID), &opts, now);
    assert_eq!(r.not_on_or_after, now + chrono::Duration::seconds(120));
    // Our SP accepts it until NotOnOrAfter (+ its skew) and not after.
    assert!(verify_ours(&r, Some(REQ_ID), now + chrono::Duration::seconds(119)).is_ok());
    let late = verify_ours(&r, Some(REQ_ID), now + chrono::Duration::seconds(600));
    assert!(matches!(late, Err(SamlError::Policy(_))), "{late:?}");
    // Another request id is refused (InResponseTo is bound).
    let other = verify_ours(&r, Some("_another"), now);
    assert_eq!(
        other.unwrap_err(),
        SamlError::Policy(PolicyViolation::InResponseToMismatch)
    );
    assert!(r
        .xml
        .contains(&format!("<saml:Audience>{SP_ENTITY}</saml:Audience>")));
    assert!(r.xml.contains(&format!("Destination=\"{ACS}\"")));
    assert!(r.xml.contains(&format!("Recipient=\"{ACS}\"")));
}

#[test]
fn values_xml_cannot_carry_are_errors_not_silent_changes() {
    let mut user = tricky_user();
    user.first_name = Some("bell\u{7}".into());
    let attrs = user.to_saml().unwrap();
    let err = idbridge_saml::idp::build_login_response(
        &idbridge_saml::idp::LoginResponse {
            idp_entity_id: IDP_ENTITY,
            sp_entity_id: SP_ENTITY,
            acs_url: ACS,
            in_response_to: None,
            name_id: &email_name_id(&user),
            session_index: "_s",
            authn_instant: now(),
            attributes: &attrs,
            now: now(),
            options: &ResponseOptions::default(),
        },
        idp_key(),
    )
    .unwrap_err();
    assert!(
        matches!(err, IdpError::Build(ref m) if m.contains("U+0007")),
        "{err}"
    );
}

#[test]
fn custom_attributes_cannot_shadow_standard_ones() {
    let mut user = tricky_user();
    user.custom
        .push(SamlAttribute::new("email", vec!["x@evil".into()]));
    assert!(matches!(user.to_saml(), Err(IdpError::Config(_))));
    let mut user = tricky_user();
    user.custom
        .push(SamlAttribute::new("department", vec!["again".into()]));
    assert!(matches!(user.to_saml(), Err(IdpError::Config(_))));
    // Absent values are left out rather than sent empty.
    let sparse = UserAttributes {
        id: "u1".into(),
        ..UserAttributes::default()
    };
    let names: Vec<String> = sparse
        .to_saml()
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, vec!["id"]);
}

#[test]
fn status_responses_are_signed_and_carry_the_codes() {
    let now = now();
    let e = SpErrorResponse {
        sp_entity_id: SP_ENTITY.into(),
        acs_url: ACS.into(),
        in_response_to: REQ_ID.into(),
        status: status::RESPONDER,
        sub_status: Some(status::AUTHN_FAILED),
        message: "login failed <&>".into(),
        relay_state: None,
    };
    let r = build_status_response(&e, IDP_ENTITY, idp_key(), now, true).unwrap();
    let (ok, err) = xmlsec1_verify(&r.xml, idp_key().cert(), RESPONSE_NODE);
    assert!(ok, "{err}");
    assert!(r.xml.contains(&format!(
        "<samlp:StatusCode Value=\"{}\"><samlp:StatusCode Value=\"{}\"></samlp:StatusCode></samlp:StatusCode>",
        status::RESPONDER,
        status::AUTHN_FAILED
    )));
    assert!(r.xml.contains("login failed &lt;&amp;&gt;"));
    // Our SP reads it as a failed login, never as a success.
    let v = verify_ours(&r, Some(REQ_ID), now);
    assert!(v.is_err(), "{v:?}");
}

#[test]
fn idp_metadata_round_trips_and_signed_metadata_verifies() {
    let certs = [idp_key().cert(), idp_key2().cert()];
    let m = IdpMetadata {
        entity_id: IDP_ENTITY,
        sso_redirect_url: SSO_URL,
        sso_post_url: SSO_URL,
        slo_url: None,
        signing_certs: &certs,
        name_id_formats: &[name_id_format::EMAIL, name_id_format::PERSISTENT],
        want_authn_requests_signed: false,
    };
    let xml = idp_metadata_xml(&m, None).unwrap();
    assert_eq!(xml, idp_metadata_xml(&m, None).unwrap(), "stable bytes");
    let parsed = IdpSettings::from_metadata_xml(&xml).unwrap();
    assert_eq!(parsed.entity_id, IDP_ENTITY);
    assert_eq!(parsed.sso_url.as_deref(), Some(SSO_URL));
    assert_eq!(parsed.signing_certs.len(), 2, "both rollover certificates");
    assert!(!parsed.wants_signed_requests);

    let signed = idp_metadata_xml(&m, Some(idp_key())).unwrap();
    let (ok, err) = xmlsec1_verify(
        &signed,
        idp_key().cert(),
        "urn:oasis:names:tc:SAML:2.0:metadata:EntityDescriptor",
    );
    assert!(ok, "{err}");
    assert_eq!(
        IdpSettings::from_metadata_xml(&signed)
            .unwrap()
            .signing_certs
            .len(),
        2
    );
    assert!(matches!(
        idp_metadata_xml(
            &IdpMetadata {
                signing_certs: &[],
                ..m.clone()
            },
            None
        ),
        Err(IdpError::Config(_))
    ));
}
