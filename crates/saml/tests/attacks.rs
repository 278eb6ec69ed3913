//! The attack suite of saml-security.md. Every test fails if the hostile response is accepted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use idbridge_saml::testkit::{encrypt_assertion, DataEnc, KeyEnc, SignMode};
use idbridge_saml::{DecryptError, GateViolation, IdpSettings, SamlError, SignatureError};

const EVIL: &str = "admin@example.com";

/// An unsigned assertion for the attacker's chosen user, with a fresh ID.
fn evil_assertion(now: chrono::DateTime<chrono::Utc>) -> (String, String) {
    let mut a = aspec(now);
    a.name_id = EVIL.into();
    (a.id.clone(), a.to_xml(""))
}

/// An unsigned Response carrying `assertion` encrypted to our key (RSA-OAEP-SHA1).
fn unsigned_with_encrypted(assertion: &str, data: DataEnc) -> String {
    let enc = encrypt_assertion(assertion, &sp_key().cert, data, KeyEnc::OaepSha1).unwrap();
    rspec(now()).to_xml("", &enc)
}

fn rejected(xml: &str) -> SamlError {
    match verify(xml, now()) {
        Ok(v) => panic!("hostile response accepted as {:?}", v.name_id),
        Err(e) => e,
    }
}

fn is_gate(e: &SamlError) -> bool {
    matches!(e, SamlError::Gate(_))
}

// ---- XML signature wrapping (XSW1-8) -------------------------------------------------------

#[test]
fn xsw1_signed_response_moved_into_signature_object() {
    let now = now();
    let r = rspec(now);
    let orig = idp().response(&r, &aspec(now), SignMode::Response).unwrap();
    let sig = signature_of(&orig);
    let (_, evil) = evil_assertion(now);
    let mut er = rspec(now);
    er.id = "_evilresp".into();
    let sig_with_obj = sig.replace(
        "</ds:Signature>",
        &format!("<ds:Object>{orig}</ds:Object></ds:Signature>"),
    );
    let xml = er.to_xml(&sig_with_obj, &evil);
    assert!(is_gate(&rejected(&xml)));
}

#[test]
fn xsw2_signed_response_detached_before_signature() {
    let now = now();
    let orig = idp()
        .response(&rspec(now), &aspec(now), SignMode::Response)
        .unwrap();
    let sig = signature_of(&orig);
    let (_, evil) = evil_assertion(now);
    let mut er = rspec(now);
    er.id = "_evilresp".into();
    let xml = er.to_xml(&format!("{orig}{sig}"), &evil);
    assert!(is_gate(&rejected(&xml)));
}

#[test]
fn xsw2b_same_response_id_reused() {
    // The evil envelope reuses the signed Response's ID: duplicate IDs are refused.
    let now = now();
    let r = rspec(now);
    let orig = idp().response(&r, &aspec(now), SignMode::Response).unwrap();
    let sig = signature_of(&orig);
    let (_, evil) = evil_assertion(now);
    let xml = r.to_xml(
        &sig.replace(
            "</ds:Signature>",
            &format!("<ds:Object>{orig}</ds:Object></ds:Signature>"),
        ),
        &evil,
    );
    assert!(is_gate(&rejected(&xml)));
}

#[test]
fn xsw3_evil_assertion_before_signed_one() {
    let now = now();
    let signed = idp().signed_assertion(&aspec(now)).unwrap();
    let (_, evil) = evil_assertion(now);
    let xml = rspec(now).to_xml("", &format!("{evil}{signed}"));
    assert_eq!(
        rejected(&xml),
        SamlError::Gate(GateViolation::AssertionCount(2))
    );
}

#[test]
fn xsw4_signed_assertion_inside_evil_assertion() {
    let now = now();
    let signed = idp().signed_assertion(&aspec(now)).unwrap();
    let (_, evil) = evil_assertion(now);
    let evil = evil.replace("</saml:Assertion>", &format!("{signed}</saml:Assertion>"));
    let xml = rspec(now).to_xml("", &evil);
    assert_eq!(
        rejected(&xml),
        SamlError::Gate(GateViolation::NestedAssertion)
    );
}

#[test]
fn xsw5_copied_signature_on_evil_assertion_original_appended() {
    let now = now();
    let a = aspec(now);
    let signed = idp().signed_assertion(&a).unwrap();
    let sig = signature_of(&signed);
    let mut e = aspec(now);
    e.name_id = EVIL.into();
    let evil = e.to_xml(&sig);
    let xml = rspec(now).to_xml(
        "",
        &format!("{evil}<samlp:Extensions>{signed}</samlp:Extensions>"),
    );
    assert!(is_gate(&rejected(&xml)));
    // Alone (original dropped), the copied signature points at the wrong ID.
    let xml = rspec(now).to_xml("", &evil);
    assert!(matches!(
        rejected(&xml),
        SamlError::Gate(GateViolation::ReferenceUri { .. })
    ));
}

#[test]
fn xsw5b_evil_assertion_takes_the_signed_id() {
    let now = now();
    let a = aspec(now);
    let signed = idp().signed_assertion(&a).unwrap();
    let sig = signature_of(&signed);
    let mut e = aspec(now);
    e.id = a.id.clone();
    e.name_id = EVIL.into();
    let evil = e.to_xml(&sig);
    let xml = rspec(now).to_xml("", &evil);
    assert!(matches!(
        rejected(&xml),
        SamlError::Signature(SignatureError::Invalid(_))
    ));
}

#[test]
fn xsw6_original_inside_copied_signature_of_evil_assertion() {
    let now = now();
    let a = aspec(now);
    let signed = idp().signed_assertion(&a).unwrap();
    let sig = signature_of(&signed);
    let mut e = aspec(now);
    e.id = a.id.clone();
    e.name_id = EVIL.into();
    let sig_obj = sig.replace(
        "</ds:Signature>",
        &format!("<ds:Object>{signed}</ds:Object></ds:Signature>"),
    );
    let xml = rspec(now).to_xml("", &e.to_xml(&sig_obj));
    assert!(is_gate(&rejected(&xml)));
}

#[test]
fn xsw7_original_in_extensions_evil_as_child() {
    let now = now();
    let signed = idp().signed_assertion(&aspec(now)).unwrap();
    let (_, evil) = evil_assertion(now);
    let xml = rspec(now).to_xml(
        "",
        &format!("<samlp:Extensions>{signed}</samlp:Extensions>{evil}"),
    );
    assert_eq!(
        rejected(&xml),
        SamlError::Gate(GateViolation::NestedAssertion)
    );
}

#[test]
fn xsw8_original_without_signature_in_object_of_evil() {
    let now = now();
    let a = aspec(now);
    let signed = idp().signed_assertion(&a).unwrap();
    let sig = signature_of(&signed);
    let unsigned_orig = signed.replace(&sig, "");
    let mut e = aspec(now);
    e.id = a.id.clone();
    e.name_id = EVIL.into();
    let sig_obj = sig.replace(
        "</ds:Signature>",
        &format!("<ds:Object>{unsigned_orig}</ds:Object></ds:Signature>"),
    );
    let xml = rspec(now).to_xml("", &e.to_xml(&sig_obj));
    assert!(is_gate(&rejected(&xml)));
}

#[test]
fn copy_in_advice_is_refused() {
    let now = now();
    let signed = idp().signed_assertion(&aspec(now)).unwrap();
    let (_, evil) = evil_assertion(now);
    let evil = evil.replace(
        "<saml:Subject>",
        &format!("<saml:Advice>{signed}</saml:Advice><saml:Subject>"),
    );
    let xml = rspec(now).to_xml("", &evil);
    assert_eq!(
        rejected(&xml),
        SamlError::Gate(GateViolation::NestedAssertion)
    );
}

#[test]
fn multiple_signed_assertions_are_refused() {
    let now = now();
    let s1 = idp().signed_assertion(&aspec(now)).unwrap();
    let s2 = idp().signed_assertion(&aspec(now)).unwrap();
    let xml = rspec(now).to_xml("", &format!("{s1}{s2}"));
    assert_eq!(
        rejected(&xml),
        SamlError::Gate(GateViolation::AssertionCount(2))
    );
}

#[test]
fn unsigned_assertion_swapped_into_signed_response() {
    let now = now();
    let a = aspec(now);
    let xml = idp().response(&rspec(now), &a, SignMode::Response).unwrap();
    let hacked = xml.replace(
        &format!(">{USER}</saml:NameID>"),
        &format!(">{EVIL}</saml:NameID>"),
    );
    assert_ne!(hacked, xml);
    assert!(matches!(
        rejected(&hacked),
        SamlError::Signature(SignatureError::Invalid(_))
    ));
}

#[test]
fn unsigned_response_and_assertion_refused() {
    let now = now();
    let xml = idp()
        .response(&rspec(now), &aspec(now), SignMode::None)
        .unwrap();
    assert_eq!(rejected(&xml), SamlError::Gate(GateViolation::Unsigned));
}

#[test]
fn tampered_signed_assertion_refused() {
    let now = now();
    let xml = idp()
        .response(&rspec(now), &aspec(now), SignMode::Assertion)
        .unwrap();
    let hacked = xml.replace("Engineering", "Domain Admins");
    assert!(matches!(
        rejected(&hacked),
        SamlError::Signature(SignatureError::Invalid(_))
    ));
}

// ---- IDs and references --------------------------------------------------------------------

#[test]
fn duplicate_ids_refused() {
    let now = now();
    let a = aspec(now);
    let xml = idp()
        .response(&rspec(now), &a, SignMode::Assertion)
        .unwrap();
    let hacked = xml.replace(
        "<samlp:Status>",
        &format!(
            "<samlp:Extensions><x ID=\"{}\"/></samlp:Extensions><samlp:Status>",
            a.id
        ),
    );
    assert!(matches!(
        rejected(&hacked),
        SamlError::Gate(GateViolation::DuplicateId(_))
    ));
}

#[test]
fn changed_id_after_signing_refused() {
    let now = now();
    let a = aspec(now);
    let xml = idp()
        .response(&rspec(now), &a, SignMode::Assertion)
        .unwrap();
    let hacked = xml.replacen(&format!("ID=\"{}\"", a.id), "ID=\"_other\"", 1);
    assert!(matches!(
        rejected(&hacked),
        SamlError::Gate(GateViolation::ReferenceUri { .. })
    ));
}

#[test]
fn odd_reference_uris_refused() {
    let now = now();
    let a = aspec(now);
    let xml = idp()
        .response(&rspec(now), &a, SignMode::Assertion)
        .unwrap();
    let uri = format!("URI=\"#{}\"", a.id);
    for bad in [
        "URI=\"\"".to_string(),
        "URI=\"#xpointer(/)\"".into(),
        format!("URI=\"#xpointer(id('{}'))\"", a.id),
        String::new(),
    ] {
        let hacked = xml.replace(&uri, &bad);
        assert!(
            matches!(
                rejected(&hacked),
                SamlError::Gate(GateViolation::ReferenceUri { .. })
            ),
            "{bad}"
        );
    }
}

/// The signed response with the first `<ds:{tag}>...</ds:{tag}>` of the signature doubled.
fn with_doubled(tag: &str) -> String {
    let now = now();
    let xml = idp()
        .response(&rspec(now), &aspec(now), SignMode::Assertion)
        .unwrap();
    let sig = signature_of(&xml);
    let start = sig.find(&format!("<ds:{tag}")).unwrap();
    let close = format!("</ds:{tag}>");
    let end = sig.find(&close).unwrap() + close.len();
    let part = &sig[start..end];
    xml.replace(part, &format!("{part}{part}"))
}

#[test]
fn two_references_refused() {
    assert!(matches!(
        rejected(&with_doubled("Reference")),
        SamlError::Gate(GateViolation::SignatureStructure(_))
    ));
}

#[test]
fn two_signed_infos_refused() {
    assert!(matches!(
        rejected(&with_doubled("SignedInfo")),
        SamlError::Gate(GateViolation::SignatureStructure(_))
    ));
}

#[test]
fn two_signatures_on_one_element_refused() {
    let now = now();
    let xml = idp()
        .response(&rspec(now), &aspec(now), SignMode::Assertion)
        .unwrap();
    let sig = signature_of(&xml);
    let hacked = xml.replace(&sig, &format!("{sig}{sig}"));
    assert_eq!(
        rejected(&hacked),
        SamlError::Gate(GateViolation::DuplicateSignature)
    );
}

#[test]
fn signature_in_wrong_place_refused() {
    let now = now();
    let xml = idp()
        .response(&rspec(now), &aspec(now), SignMode::Assertion)
        .unwrap();
    let sig = signature_of(&xml);
    let moved = xml
        .replace(&sig, "")
        .replace("</saml:Subject>", &format!("{sig}</saml:Subject>"));
    assert_eq!(
        rejected(&moved),
        SamlError::Gate(GateViolation::MisplacedSignature)
    );
}

#[test]
fn signature_object_element_refused() {
    let now = now();
    let xml = idp()
        .response(&rspec(now), &aspec(now), SignMode::Response)
        .unwrap();
    let hacked = xml.replacen(
        "</ds:Signature>",
        "<ds:Object>x</ds:Object></ds:Signature>",
        1,
    );
    assert!(matches!(
        rejected(&hacked),
        SamlError::Gate(GateViolation::SignatureStructure(_))
    ));
}

// ---- keys ----------------------------------------------------------------------------------

#[test]
fn attacker_key_info_is_ignored() {
    // Signed by a key we do not trust, with that key's certificate in KeyInfo.
    let now = now();
    for mode in [SignMode::Response, SignMode::Assertion, SignMode::Both] {
        let xml = idp2().response(&rspec(now), &aspec(now), mode).unwrap();
        assert!(xml.contains("X509Certificate"));
        assert!(matches!(
            rejected(&xml),
            SamlError::Signature(SignatureError::Invalid(_))
        ));
    }
}

#[test]
fn no_trusted_certificate_refuses_to_run() {
    let now = now();
    let xml = idp()
        .response(&rspec(now), &aspec(now), SignMode::Response)
        .unwrap();
    let empty = IdpSettings {
        signing_certs: vec![],
        ..idp_settings()
    };
    assert_eq!(
        verify_with(&xml, &ctx(now), &sp(), &empty),
        Err(SamlError::Signature(SignatureError::NoTrustedCertificate))
    );
}

// ---- comments and namespaces ---------------------------------------------------------------

#[test]
fn comment_in_digest_or_signature_value_refused() {
    let now = now();
    let xml = idp()
        .response(&rspec(now), &aspec(now), SignMode::Response)
        .unwrap();
    for tag in ["<ds:DigestValue>", "<ds:SignatureValue>"] {
        let hacked = xml.replacen(tag, &format!("{tag}<!--x-->"), 1);
        assert_eq!(
            rejected(&hacked),
            SamlError::Gate(GateViolation::CommentInSignature),
            "{tag}"
        );
    }
}

#[test]
fn namespace_rebinding_refused() {
    let now = now();
    let signed = idp().signed_assertion(&aspec(now)).unwrap();
    // The assertion's prefix rebound to a look-alike namespace: not an Assertion to us...
    let rebound = signed.replacen(
        "xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\"",
        "xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion:evil\"",
        1,
    );
    let xml = rspec(now).to_xml("", &rebound);
    assert!(is_gate(&rejected(&xml)));
    // ...and an `evil:Assertion` decoy next to the real one is refused too.
    let (_, evil) = evil_assertion(now);
    let decoy = evil.replace("saml:Assertion", "evil:Assertion").replacen(
        "<evil:Assertion ",
        "<evil:Assertion xmlns:evil=\"urn:evil\" ",
        1,
    );
    let xml = rspec(now).to_xml("", &format!("{decoy}{signed}"));
    assert_eq!(
        rejected(&xml),
        SamlError::Gate(GateViolation::NestedAssertion)
    );
}

// ---- DTDs, entities, processing instructions -----------------------------------------------

#[test]
fn doctype_xxe_attlist_billion_laughs_refused() {
    let now = now();
    let xml = idp()
        .response(&rspec(now), &aspec(now), SignMode::Response)
        .unwrap();
    let prologs = [
        "<!DOCTYPE r [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>",
        "<!DOCTYPE samlp:Response [<!ATTLIST saml:Assertion ID ID #IMPLIED>]>",
        "<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;\">]>",
    ];
    for p in prologs {
        assert_eq!(
            rejected(&format!("{p}{xml}")),
            SamlError::Gate(GateViolation::Doctype),
            "{p}"
        );
    }
    let ent = xml.replacen("Engineering", "&xxe;", 1);
    assert!(matches!(
        rejected(&ent),
        SamlError::Gate(GateViolation::Entity(_))
    ));
    let pi = xml.replacen(
        "<samlp:Status>",
        "<?xml-stylesheet href=\"x\"?><samlp:Status>",
        1,
    );
    assert_eq!(
        rejected(&pi),
        SamlError::Gate(GateViolation::ProcessingInstruction)
    );
    assert_eq!(
        rejected(&format!("{xml}<x/>")),
        SamlError::Gate(GateViolation::ContentOutsideRoot)
    );
}

// ---- algorithm downgrades ------------------------------------------------------------------

fn swap_alg(from: &str, to: &str) -> SamlError {
    let now = now();
    let xml = idp()
        .response(&rspec(now), &aspec(now), SignMode::Response)
        .unwrap();
    let hacked = xml.replacen(from, to, 1);
    assert_ne!(hacked, xml);
    rejected(&hacked)
}

#[test]
fn sha1_hmac_and_with_comments_refused() {
    use idbridge_saml::gate::{RSA_SHA1, RSA_SHA256, SHA1, SHA256};
    assert!(matches!(
        swap_alg(RSA_SHA256, RSA_SHA1),
        SamlError::Gate(GateViolation::Algorithm(_))
    ));
    assert!(matches!(
        swap_alg(SHA256, SHA1),
        SamlError::Gate(GateViolation::Algorithm(_))
    ));
    assert!(matches!(
        swap_alg(
            RSA_SHA256,
            "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256"
        ),
        SamlError::Gate(GateViolation::Algorithm(_))
    ));
    assert!(matches!(
        swap_alg(
            "CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"",
            "CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#WithComments\""
        ),
        SamlError::Gate(GateViolation::Algorithm(_))
    ));
    assert!(matches!(
        swap_alg(
            "Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"",
            "Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#WithComments\""
        ),
        SamlError::Gate(GateViolation::Transform(_))
    ));
    assert!(matches!(
        swap_alg(
            "CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"",
            "CanonicalizationMethod Algorithm=\"http://www.w3.org/TR/2001/REC-xml-c14n-20010315\""
        ),
        SamlError::Gate(GateViolation::Algorithm(_))
    ));
}

#[test]
fn hmac_output_length_refused() {
    let e = swap_alg(
        "rsa-sha256\"/>",
        "rsa-sha256\"><ds:HMACOutputLength>0</ds:HMACOutputLength></ds:SignatureMethod>",
    );
    assert!(matches!(
        e,
        SamlError::Gate(GateViolation::SignatureStructure(_))
    ));
}

#[test]
fn xpath_and_xslt_transforms_refused() {
    let xpath = "<ds:Transform Algorithm=\"http://www.w3.org/TR/1999/REC-xpath-19991116\"><ds:XPath>not(self::node())</ds:XPath></ds:Transform>";
    let xslt = "<ds:Transform Algorithm=\"http://www.w3.org/TR/1999/REC-xslt-19991116\"><xsl:stylesheet xmlns:xsl=\"http://www.w3.org/1999/XSL/Transform\" version=\"1.0\"><xsl:template match=\"/\"/></xsl:stylesheet></ds:Transform>";
    for t in [xpath, xslt] {
        let e = swap_alg("<ds:Transforms>", &format!("<ds:Transforms>{t}"));
        // Either the extra transform (3 > 2 allowed) or its algorithm trips the gate.
        assert!(
            matches!(
                e,
                SamlError::Gate(GateViolation::Transform(_))
                    | SamlError::Gate(GateViolation::SignatureStructure(_))
            ),
            "{e:?}"
        );
        let replaced = swap_alg(
            "<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>",
            t,
        );
        assert!(
            matches!(replaced, SamlError::Gate(GateViolation::Transform(_))),
            "{replaced:?}"
        );
    }
}

#[test]
fn malformed_canonicalization_input_refused() {
    // Junk inside the c14n method, an empty digest, and non-base64 signature data.
    assert!(matches!(
        swap_alg(
            "<ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>",
            "<ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"><junk/></ds:CanonicalizationMethod>"
        ),
        SamlError::Gate(GateViolation::SignatureStructure(_))
    ));
    let now = now();
    let xml = idp()
        .response(&rspec(now), &aspec(now), SignMode::Response)
        .unwrap();
    let ds = xml.find("<ds:DigestValue>").unwrap() + "<ds:DigestValue>".len();
    let de = xml.find("</ds:DigestValue>").unwrap();
    let emptied = format!("{}{}", &xml[..ds], &xml[de..]);
    assert!(matches!(
        rejected(&emptied),
        SamlError::Gate(GateViolation::SignatureStructure(_))
    ));
    let junk = format!("{}*not base64*{}", &xml[..ds], &xml[de..]);
    assert!(matches!(
        rejected(&junk),
        SamlError::Gate(GateViolation::SignatureStructure(_))
    ));
    // Unbalanced markup never reaches xmlsec.
    assert!(matches!(
        rejected(&xml.replacen("</samlp:Status>", "", 1)),
        SamlError::Gate(GateViolation::Malformed(_))
    ));
}

// ---- encryption ----------------------------------------------------------------------------

fn enc(
    now: chrono::DateTime<chrono::Utc>,
    data: DataEnc,
    key: KeyEnc,
    sign_assertion: bool,
    recipient: &openssl::x509::X509,
) -> String {
    idp()
        .encrypted_response(
            &rspec(now),
            &aspec(now),
            recipient,
            data,
            key,
            sign_assertion,
            false,
        )
        .unwrap()
}

#[test]
fn rsa_1_5_refused() {
    let now = now();
    let xml = enc(now, DataEnc::Aes128Cbc, KeyEnc::Rsa15, true, &sp_key().cert);
    assert!(matches!(
        rejected(&xml),
        SamlError::Decrypt(DecryptError::KeyTransport(_))
    ));
}

#[test]
fn short_ciphertext_refused_without_panic() {
    let now = now();
    for (data, expect_short) in [(DataEnc::Aes256Cbc, true), (DataEnc::Aes128Gcm, true)] {
        let xml = enc(now, data, KeyEnc::OaepSha1, true, &sp_key().cert);
        // Replace the last CipherValue (the content) with 10 bytes.
        let start = xml.rfind("<xenc:CipherValue>").unwrap() + "<xenc:CipherValue>".len();
        let end = xml.rfind("</xenc:CipherValue>").unwrap();
        let short = format!("{}AAAAAAAAAAAAAA=={}", &xml[..start], &xml[end..]);
        let e = rejected(&short);
        assert_eq!(
            e == SamlError::Decrypt(DecryptError::ShortCiphertext),
            expect_short,
            "{e:?}"
        );
        // And an empty one.
        let empty = format!("{}{}", &xml[..start], &xml[end..]);
        assert!(matches!(rejected(&empty), SamlError::Decrypt(_)));
    }
}

#[test]
fn wrong_key_refused() {
    let now = now();
    let xml = enc(
        now,
        DataEnc::Aes256Gcm,
        KeyEnc::OaepSha1,
        true,
        &sp_key2().cert,
    );
    assert_eq!(rejected(&xml), SamlError::Decrypt(DecryptError::KeyUnwrap));
    let mut no_keys = sp();
    no_keys.decryption_keys.clear();
    assert_eq!(
        verify_with(&xml, &ctx(now), &no_keys, &idp_settings()),
        Err(SamlError::Decrypt(DecryptError::NoDecryptionKey))
    );
}

#[test]
fn attacker_encrypted_assertion_refused() {
    // Anyone can encrypt to our public certificate.
    let now = now();
    let mut a = aspec(now);
    a.name_id = EVIL.into();
    let xml = unsigned_with_encrypted(&a.to_xml(""), DataEnc::Aes256Gcm);
    assert_eq!(
        rejected(&xml),
        SamlError::Signature(SignatureError::UnsignedEncryptedAssertion)
    );
    // Signed by the attacker's own key.
    let by_attacker = idp2().signed_assertion(&a).unwrap();
    let xml = unsigned_with_encrypted(&by_attacker, DataEnc::Aes256Gcm);
    assert!(matches!(
        rejected(&xml),
        SamlError::Signature(SignatureError::Invalid(_))
    ));
}

#[test]
fn tampered_gcm_ciphertext_refused() {
    let now = now();
    let xml = enc(
        now,
        DataEnc::Aes128Gcm,
        KeyEnc::OaepSha1,
        true,
        &sp_key().cert,
    );
    let start = xml.rfind("<xenc:CipherValue>").unwrap() + "<xenc:CipherValue>".len();
    let mut bytes = xml.into_bytes();
    bytes[start + 30] = if bytes[start + 30] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let xml = String::from_utf8(bytes).unwrap();
    assert_eq!(rejected(&xml), SamlError::Decrypt(DecryptError::Content));
}

#[test]
fn unsupported_data_algorithm_refused() {
    let now = now();
    let xml = enc(
        now,
        DataEnc::Aes128Cbc,
        KeyEnc::OaepSha1,
        true,
        &sp_key().cert,
    );
    let hacked = xml.replace("xmlenc#aes128-cbc", "xmlenc#tripledes-cbc");
    assert!(matches!(
        rejected(&hacked),
        SamlError::Decrypt(DecryptError::DataAlgorithm(_))
    ));
}

#[test]
fn signed_then_encrypted_with_tampered_inner_assertion_refused() {
    // The inner signature is really checked: re-encrypt a modified signed assertion.
    let now = now();
    let signed = idp().signed_assertion(&aspec(now)).unwrap();
    let tampered = signed.replace(USER, EVIL);
    let xml = unsigned_with_encrypted(&tampered, DataEnc::Aes256Cbc);
    assert!(matches!(
        rejected(&xml),
        SamlError::Signature(SignatureError::Invalid(_))
    ));
}

#[test]
fn signature_on_encrypted_assertion_element_refused() {
    let now = now();
    let xml = enc(
        now,
        DataEnc::Aes128Cbc,
        KeyEnc::OaepSha1,
        true,
        &sp_key().cert,
    );
    let sig = signature_of(
        &idp()
            .response(&rspec(now), &aspec(now), SignMode::Assertion)
            .unwrap(),
    );
    let hacked = xml.replacen(
        "<xenc:EncryptedData",
        &format!("{sig}<xenc:EncryptedData"),
        1,
    );
    assert!(is_gate(&rejected(&hacked)));
}

#[test]
fn qualified_id_attributes_refused() {
    // libxml registers xml:id as an ID, and xmlGetProp ignores namespaces (e:ID): both refused.
    let now = now();
    let a = aspec(now);
    let xml = idp()
        .response(&rspec(now), &a, SignMode::Assertion)
        .unwrap();
    for attr in [
        format!("xml:id=\"{}\"", a.id),
        format!("xmlns:e=\"urn:e\" e:ID=\"{}\"", a.id),
        "xml:id=\"_fresh\"".to_string(),
    ] {
        let hacked = xml.replacen("<samlp:Status>", &format!("<samlp:Status {attr}>"), 1);
        assert_eq!(
            rejected(&hacked),
            SamlError::Gate(GateViolation::BadId("qualified ID attribute")),
            "{attr}"
        );
    }
}

/// The verifier caches each parsed IdP certificate (third_party/samael/PATCHES.md). A key cached
/// for one certificate must never verify a response against another, in either order.
#[test]
fn cached_certificate_keys_never_cross() {
    let now = now();
    let only = |signer: &idbridge_saml::IdpSigner| IdpSettings {
        signing_certs: vec![signer.keys.cert.clone()],
        ..idp_settings()
    };
    let signed_by = |signer: &idbridge_saml::IdpSigner| {
        signer
            .response(&rspec(now), &aspec(now), SignMode::Response)
            .unwrap()
    };
    for _ in 0..2 {
        // Each certificate accepts its own key's responses (and so is in the cache)...
        verify_with(&signed_by(idp()), &ctx(now), &sp(), &only(idp())).unwrap();
        verify_with(&signed_by(idp2()), &ctx(now), &sp(), &only(idp2())).unwrap();
        // ...and refuses the other's, cached or not.
        assert!(matches!(
            verify_with(&signed_by(idp2()), &ctx(now), &sp(), &only(idp())),
            Err(SamlError::Signature(_))
        ));
        assert!(matches!(
            verify_with(&signed_by(idp()), &ctx(now), &sp(), &only(idp2())),
            Err(SamlError::Signature(_))
        ));
    }
}
