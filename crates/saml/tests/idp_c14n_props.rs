//! The IdP writes Responses directly in exclusive-canonical form and signs its own bytes. This
//! property test holds it to libxml2's exc-c14n (the implementation xmlsec uses), on arbitrary
//! user data full of characters canonicalization escapes or passes through:
//! - every produced document is a fixed point of libxml2's exc-c14n (byte for byte);
//! - the assertion's DigestValue equals SHA-256 of libxml2's exc-c14n of the assertion with its
//!   Signature removed (what a verifier's enveloped-signature + exc-c14n transforms compute).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// libc calls on peer processes and C buffers of the test.
#![allow(unsafe_code)]

mod idp_fixtures;
use idp_fixtures::*;

use base64::Engine as _;
use idbridge_saml::idp::{
    build_login_response, idp_metadata_xml, name_id_format, IdpMetadata, LoginResponse, NameId,
    ResponseOptions, SamlAttribute, UserAttributes,
};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

/// libxml2's exclusive c14n 1.0 (no comments) of a whole document.
fn libxml_exc_c14n(xml: &str) -> String {
    let doc = libxml::parser::Parser::default()
        .parse_string(xml)
        .unwrap_or_else(|e| panic!("libxml2 cannot parse our output ({e:?}):\n{xml}"));
    let mut out: *mut u8 = std::ptr::null_mut();
    // SAFETY: a valid parsed document, no node set (whole document), mode 1 = exclusive 1.0,
    // no inclusive prefixes, no comments; libxml2 allocates `out`, freed below with free(3)
    // (libxml2's default xmlFree).
    let len = unsafe {
        libxml::bindings::xmlC14NDocDumpMemory(
            doc.doc_ptr(),
            std::ptr::null_mut(),
            1,
            std::ptr::null_mut(),
            0,
            &mut out,
        )
    };
    assert!(len >= 0 && !out.is_null(), "libxml2 c14n failed");
    // SAFETY: libxml2 wrote `len` bytes at `out`.
    let bytes = unsafe { std::slice::from_raw_parts(out, len as usize) }.to_vec();
    // SAFETY: `out` was allocated by libxml2 with malloc and is not used afterwards.
    unsafe { libc::free(out.cast()) };
    String::from_utf8(bytes).unwrap()
}

/// Characters c14n treats specially, plus ordinary and multi-byte ones.
fn xml_text() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        '&', '<', '>', '"', '\'', '\r', '\n', '\t', ' ', 'é', 'ß', '日', '😀', '\u{7f}', '\u{85}',
        '\u{2028}', '\u{FFFD}', '\u{E000}', '=', ';', '#', 'x', 'D', 'A',
    ]);
    let plain = prop::char::range('!', '~');
    prop::collection::vec(prop_oneof![special, plain], 1..24).prop_map(|v| v.into_iter().collect())
}

fn user() -> impl Strategy<Value = UserAttributes> {
    (
        xml_text(),
        prop::option::of(xml_text()),
        prop::option::of(xml_text()),
        prop::option::of(xml_text()),
        prop::collection::vec(xml_text(), 0..5),
        prop::collection::vec(xml_text(), 0..3),
    )
        .prop_map(|(id, email, first, last, groups, custom)| UserAttributes {
            id,
            email,
            first_name: first,
            last_name: last,
            groups,
            custom: custom
                .into_iter()
                .enumerate()
                .map(|(i, v)| SamlAttribute::new(format!("custom{i}&\"<x>"), vec![v]))
                .collect(),
        })
}

fn digest_value_of_assertion(xml: &str) -> String {
    let a0 = xml.find("<saml:Assertion").unwrap();
    let a1 = xml.find("</saml:Assertion>").unwrap() + "</saml:Assertion>".len();
    let assertion = &xml[a0..a1];
    let s0 = assertion.find("<ds:Signature").unwrap();
    let s1 = assertion.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
    let sig = &assertion[s0..s1];
    let d0 = sig.find("<ds:DigestValue>").unwrap() + "<ds:DigestValue>".len();
    let d1 = sig.find("</ds:DigestValue>").unwrap();
    let unsigned = format!("{}{}", &assertion[..s0], &assertion[s1..]);
    let canonical = libxml_exc_c14n(&unsigned);
    assert_eq!(
        canonical, unsigned,
        "the unsigned assertion is canonical on its own"
    );
    let ours = &sig[d0..d1];
    let theirs = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&canonical));
    assert_eq!(ours, theirs, "DigestValue differs from libxml2's");
    theirs
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn responses_are_canonical_and_digests_match_libxml2(
        u in user(),
        name_id in xml_text(),
        session in xml_text(),
        audience in xml_text(),
        acs_tail in xml_text(),
        relay in prop::option::of(xml_text()),
        sign_response in any::<bool>(),
    ) {
        let now = now();
        let acs = format!("https://sp.test/acs?x={acs_tail}");
        let attrs = u.to_saml();
        prop_assume!(attrs.is_ok());
        let attrs = attrs.unwrap();
        let opts = ResponseOptions { sign_response, ..ResponseOptions::default() };
        let r = build_login_response(
            &LoginResponse {
                idp_entity_id: IDP_ENTITY,
                sp_entity_id: &audience,
                acs_url: &acs,
                in_response_to: relay.as_deref(),
                name_id: &NameId { value: name_id.clone(), format: name_id_format::UNSPECIFIED.into() },
                session_index: &session,
                authn_instant: now,
                attributes: &attrs,
                now,
                options: &opts,
            },
            idp_key(),
        );
        // Blank required values are refused at build time, not emitted.
        if [name_id.as_str(), session.as_str(), audience.as_str()].iter().any(|s| s.trim().is_empty()) {
            prop_assert!(r.is_err());
            return Ok(());
        }
        let r = r.unwrap();
        prop_assert_eq!(libxml_exc_c14n(&r.xml), r.xml.clone());
        digest_value_of_assertion(&r.xml);
    }

    #[test]
    fn metadata_is_canonical(entity in xml_text(), sso in xml_text()) {
        prop_assume!(!entity.trim().is_empty());
        let certs = [idp_key().cert()];
        let m = IdpMetadata {
            entity_id: &entity,
            sso_redirect_url: &sso,
            sso_post_url: &sso,
            slo_url: Some(&sso),
            signing_certs: &certs,
            name_id_formats: &[name_id_format::EMAIL],
            want_authn_requests_signed: true,
        };
        for signed in [None, Some(idp_key())] {
            let xml = idp_metadata_xml(&m, signed).unwrap();
            let body = xml.split_once('\n').unwrap().1.trim_end();
            prop_assert_eq!(libxml_exc_c14n(&xml), body.to_owned());
        }
    }
}
