//! Outgoing SP messages, metadata in both directions, attribute mapping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use base64::Engine as _;
use common::*;
use idbridge_saml::testkit::SignMode;
use idbridge_saml::xml::{self, Limits, NS_ASSERTION, NS_DSIG, NS_METADATA, NS_PROTOCOL};
use idbridge_saml::{
    build_authn_request, decode_redirect_binding, map_profile, sp_metadata_xml, AttributeMap,
    GateViolation, IdpSettings, SamlConnectionType, SamlError, SpKeyPair,
};
use openssl::hash::MessageDigest;
use openssl::sign::Verifier;

fn query_param(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[test]
fn authn_request_unsigned_redirect() {
    let sp = sp();
    let idp = idp_settings();
    let req = build_authn_request(&sp, &idp, Some("relay-1"), true).unwrap();
    assert!(req
        .url
        .starts_with("https://idp.example.test/sso?SAMLRequest="));
    let url = url::Url::parse(&req.url).unwrap();
    assert_eq!(query_param(&url, "RelayState").as_deref(), Some("relay-1"));
    assert_eq!(query_param(&url, "Signature"), None);
    let xml_text = decode_redirect_binding(&query_param(&url, "SAMLRequest").unwrap()).unwrap();
    let root = xml::parse(&xml_text, &Limits::MESSAGE).unwrap();
    assert!(root.is(NS_PROTOCOL, "AuthnRequest"));
    assert_eq!(root.attr("ID"), Some(req.request_id.as_str()));
    assert_eq!(
        root.attr("Destination"),
        Some("https://idp.example.test/sso")
    );
    assert_eq!(root.attr("AssertionConsumerServiceURL"), Some(ACS));
    assert_eq!(root.attr("ForceAuthn"), Some("true"));
    assert_eq!(
        root.child(NS_ASSERTION, "Issuer").unwrap().text(),
        SP_ENTITY
    );
    // Request ids are unguessable and distinct.
    let other = build_authn_request(&sp, &idp, None, false).unwrap();
    assert_ne!(other.request_id, req.request_id);
    assert!(req.request_id.len() >= 33);
}

#[test]
fn authn_request_signed_redirect_verifies_with_sp_cert() {
    let mut sp = sp();
    sp.want_signed_requests = true;
    assert!(matches!(
        build_authn_request(&sp, &idp_settings(), None, false),
        Err(SamlError::Config(_))
    ));
    sp.signing_keys = vec![sp_key2().clone()];
    let req = build_authn_request(&sp, &idp_settings(), Some("rs"), false).unwrap();
    let url = url::Url::parse(&req.url).unwrap();
    assert_eq!(
        query_param(&url, "SigAlg").as_deref(),
        Some("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256")
    );
    let query = url.query().unwrap();
    let (signed_part, sig_part) = query.split_once("&Signature=").unwrap();
    let sig = base64::engine::general_purpose::STANDARD
        .decode(query_param(&url, "Signature").unwrap())
        .unwrap();
    assert!(!sig_part.is_empty());
    let pubkey = sp_key2().cert.public_key().unwrap();
    let verify = |data: &str| {
        let mut v = Verifier::new(MessageDigest::sha256(), &pubkey).unwrap();
        v.update(data.as_bytes()).unwrap();
        v.verify(&sig).unwrap()
    };
    assert!(verify(signed_part));
    assert!(!verify(
        &signed_part.replace("RelayState=rs", "RelayState=evil")
    ));
    // The IdP asking for signed requests is enough.
    let mut sp2 = self::sp();
    sp2.signing_keys = vec![sp_key2().clone()];
    let mut idp = idp_settings();
    idp.wants_signed_requests = true;
    let req = build_authn_request(&sp2, &idp, None, false).unwrap();
    assert!(req.url.contains("&Signature="));
}

#[test]
fn authn_request_needs_sso_url() {
    let mut idp = idp_settings();
    idp.sso_url = None;
    assert!(matches!(
        build_authn_request(&sp(), &idp, None, false),
        Err(SamlError::Config(_))
    ));
}

#[test]
fn sp_metadata_lists_every_key_for_rollover() {
    let mut sp = sp();
    sp.decryption_keys = vec![sp_key().clone(), sp_key2().clone()];
    sp.signing_keys = vec![sp_key2().clone()];
    sp.want_signed_requests = true;
    let md = sp_metadata_xml(&sp).unwrap();
    assert_eq!(md, sp_metadata_xml(&sp).unwrap(), "metadata must be stable");
    let root = xml::parse(&md, &Limits::METADATA).unwrap();
    assert!(root.is(NS_METADATA, "EntityDescriptor"));
    assert_eq!(root.attr("entityID"), Some(SP_ENTITY));
    let spd = root.child(NS_METADATA, "SPSSODescriptor").unwrap();
    assert_eq!(spd.attr("AuthnRequestsSigned"), Some("true"));
    let acs = spd.child(NS_METADATA, "AssertionConsumerService").unwrap();
    assert_eq!(acs.attr("Location"), Some(ACS));
    let certs = |usage: &str| -> Vec<Vec<u8>> {
        spd.children_named(NS_METADATA, "KeyDescriptor")
            .filter(|k| k.attr("use") == Some(usage))
            .map(|k| {
                let c = k
                    .child(NS_DSIG, "KeyInfo")
                    .unwrap()
                    .child(NS_DSIG, "X509Data")
                    .unwrap()
                    .child(NS_DSIG, "X509Certificate")
                    .unwrap()
                    .text();
                base64::engine::general_purpose::STANDARD.decode(c).unwrap()
            })
            .collect()
    };
    assert_eq!(
        certs("encryption"),
        vec![
            sp_key().cert.to_der().unwrap(),
            sp_key2().cert.to_der().unwrap()
        ]
    );
    assert_eq!(certs("signing"), vec![sp_key2().cert.to_der().unwrap()]);
}

fn idp_metadata(certs: &[(&str, &SpKeyPair)]) -> String {
    let mut kd = String::new();
    for (usage, k) in certs {
        let use_attr = if usage.is_empty() {
            String::new()
        } else {
            format!(" use=\"{usage}\"")
        };
        kd.push_str(&format!(
            "<md:KeyDescriptor{use_attr}><ds:KeyInfo><ds:X509Data><ds:X509Certificate>\n{}\n</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>",
            base64::engine::general_purpose::STANDARD.encode(k.cert.to_der().unwrap())
        ));
    }
    format!(
        "<?xml version=\"1.0\"?><md:EntityDescriptor xmlns:md=\"{NS_METADATA}\" xmlns:ds=\"{NS_DSIG}\" entityID=\"{IDP_ENTITY}\"><md:IDPSSODescriptor WantAuthnRequestsSigned=\"true\" protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">{kd}<md:SingleSignOnService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\" Location=\"https://idp.example.test/post\"/><md:SingleSignOnService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" Location=\"https://idp.example.test/redirect\"/></md:IDPSSODescriptor></md:EntityDescriptor>"
    )
}

#[test]
fn idp_metadata_is_parsed_and_verifies_responses() {
    let md = idp_metadata(&[
        ("signing", &idp().keys),
        ("", &idp2().keys),
        ("encryption", sp_key()),
    ]);
    let s = IdpSettings::from_metadata_xml(&md).unwrap();
    assert_eq!(s.entity_id, IDP_ENTITY);
    assert_eq!(
        s.sso_url.as_deref(),
        Some("https://idp.example.test/redirect")
    );
    assert!(s.wants_signed_requests && !s.allow_sha1);
    let ders: Vec<_> = s
        .signing_certs
        .iter()
        .map(|c| c.to_der().unwrap())
        .collect();
    assert_eq!(
        ders,
        vec![
            idp().keys.cert.to_der().unwrap(),
            idp2().keys.cert.to_der().unwrap()
        ]
    );
    let t = now();
    let xml = idp2()
        .response(&rspec(t), &aspec(t), SignMode::Response)
        .unwrap();
    verify_with(&xml, &ctx(t), &sp(), &s).unwrap();
}

#[test]
fn hostile_or_incomplete_idp_metadata_is_refused() {
    let md = idp_metadata(&[("signing", &idp().keys)]);
    assert!(matches!(
        IdpSettings::from_metadata_xml(&format!(
            "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>{}",
            md.replace("<?xml version=\"1.0\"?>", "")
        )),
        Err(SamlError::Gate(GateViolation::Doctype))
    ));
    let only_enc = idp_metadata(&[("encryption", &idp().keys)]);
    assert!(matches!(
        IdpSettings::from_metadata_xml(&only_enc),
        Err(SamlError::Config(_))
    ));
    let no_certs = idp_metadata(&[]);
    assert!(matches!(
        IdpSettings::from_metadata_xml(&no_certs),
        Err(SamlError::Config(_))
    ));
    let bad_b64 = md.replacen("<ds:X509Certificate>\n", "<ds:X509Certificate>\n***", 1);
    assert!(matches!(
        IdpSettings::from_metadata_xml(&bad_b64),
        Err(SamlError::Config(_))
    ));
    let wrong_root = md.replace("md:EntityDescriptor", "md:Other");
    assert!(matches!(
        IdpSettings::from_metadata_xml(&wrong_root),
        Err(SamlError::Config(_))
    ));
}

#[test]
fn idp_settings_accept_pem_and_der() {
    let pem = idp().keys.cert.to_pem().unwrap();
    let der = idp().keys.cert.to_der().unwrap();
    let s = IdpSettings::new(IDP_ENTITY, None, &[&pem, &der]).unwrap();
    assert_eq!(s.signing_certs.len(), 2);
    assert_eq!(s.signing_certs[0].to_der().unwrap(), der);
    assert!(matches!(
        IdpSettings::new(IDP_ENTITY, None, &[b"junk"]),
        Err(SamlError::Config(_))
    ));
}

#[test]
fn presets_name_the_standard_attributes() {
    let entra = AttributeMap::preset(SamlConnectionType::AzureSAML);
    assert!(entra.email.contains(
        &"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress".to_string()
    ));
    assert!(entra
        .groups
        .contains(&"http://schemas.microsoft.com/ws/2008/06/identity/claims/groups".to_string()));
    let generic = AttributeMap::preset(SamlConnectionType::GenericSAML);
    assert_eq!(
        (
            generic.idp_id.as_slice(),
            &generic.email[..1],
            &generic.first_name[..1],
            &generic.last_name[..1],
            &generic.groups[..1]
        ),
        (
            &["id".to_string()][..],
            &["email".to_string()][..],
            &["firstName".to_string()][..],
            &["lastName".to_string()][..],
            &["groups".to_string()][..]
        )
    );
    // Then the common URN / claim names every type knows (issue 19).
    assert!(generic
        .email
        .contains(&"urn:oid:0.9.2342.19200300.100.1.3".to_string()));
    assert!(generic.first_name.contains(&"urn:oid:2.5.4.42".to_string()));
    assert!(generic.last_name.contains(&"urn:oid:2.5.4.4".to_string()));
    // Every preset maps every field, and the WorkOS-guide names always come first.
    for kind in SamlConnectionType::ALL {
        let m = AttributeMap::preset(kind);
        for (field, first) in [
            (&m.idp_id, "id"),
            (&m.email, "email"),
            (&m.first_name, "firstName"),
            (&m.last_name, "lastName"),
            (&m.groups, "groups"),
        ] {
            assert_eq!(field.first().map(String::as_str), Some(first), "{kind:?}");
        }
    }
}

#[test]
fn map_profile_from_an_entra_style_assertion() {
    let t = now();
    let mut a = aspec(t);
    a.name_id = "opaque-subject-123".into();
    a.name_id_format = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent".into();
    a.attributes = vec![
        (
            "http://schemas.microsoft.com/identity/claims/objectidentifier".into(),
            vec!["oid-1".into()],
        ),
        (
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress".into(),
            vec!["todd@example.com".into()],
        ),
        (
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname".into(),
            vec!["Todd".into()],
        ),
        (
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname".into(),
            vec!["Rundgren".into()],
        ),
        (
            "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups".into(),
            vec!["g2".into(), "g1".into()],
        ),
        ("department".into(), vec!["Sales".into()]),
    ];
    let xml = idp().response(&rspec(t), &a, SignMode::Response).unwrap();
    let v = verify(&xml, t).unwrap();
    let mut map = AttributeMap::preset(SamlConnectionType::AzureSAML);
    map.custom.insert("dept".into(), "department".into());
    map.custom.insert("cost_center".into(), "costCenter".into());
    let p = map_profile(&v, &map);
    assert_eq!(p.idp_id, "oid-1");
    assert_eq!(p.email.as_deref(), Some("todd@example.com"));
    assert_eq!(p.first_name.as_deref(), Some("Todd"));
    assert_eq!(p.last_name.as_deref(), Some("Rundgren"));
    assert_eq!(
        p.groups,
        vec!["g2".to_string(), "g1".to_string()],
        "values keep the order received"
    );
    assert_eq!(p.name.as_deref(), Some("Todd Rundgren"));
    assert_eq!(
        p.custom_attributes.get("dept"),
        Some(&serde_json::json!("Sales"))
    );
    assert_eq!(
        p.custom_attributes.get("cost_center"),
        Some(&serde_json::Value::Null)
    );
    assert_eq!(p.raw_attributes.len(), 6);

    // With no mapped attributes: idp_id falls back to the NameID; email only for emailAddress.
    let generic = AttributeMap::preset(SamlConnectionType::GenericSAML);
    let p = map_profile(&v, &generic);
    assert_eq!(p.idp_id, "opaque-subject-123");
    // The Microsoft claim URIs are known by default to every connection type (issue 19).
    assert_eq!(p.email.as_deref(), Some("todd@example.com"));
    assert_eq!(p.first_name.as_deref(), Some("Todd"));
    let mut a = aspec(t);
    a.attributes.clear();
    let xml = idp().response(&rspec(t), &a, SignMode::Response).unwrap();
    let p = map_profile(&verify(&xml, t).unwrap(), &generic);
    assert_eq!(p.email.as_deref(), Some(USER));
    assert!(p.groups.is_empty());
}

#[test]
fn entities_descriptor_with_one_idp_is_accepted() {
    let one = idp_metadata(&[("signing", &idp().keys)]).replace("<?xml version=\"1.0\"?>", "");
    let sp_entity = format!("<md:EntityDescriptor xmlns:md=\"{NS_METADATA}\" entityID=\"https://some.sp\"><md:SPSSODescriptor protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\"/></md:EntityDescriptor>");
    let wrap = |inner: &str| {
        format!("<md:EntitiesDescriptor xmlns:md=\"{NS_METADATA}\">{inner}</md:EntitiesDescriptor>")
    };
    let s = IdpSettings::from_metadata_xml(&wrap(&format!("{sp_entity}{one}"))).unwrap();
    assert_eq!(s.entity_id, IDP_ENTITY);
    // Two IdPs: ambiguous, refused.
    assert!(matches!(
        IdpSettings::from_metadata_xml(&wrap(&format!("{one}{one}"))),
        Err(SamlError::Config(_))
    ));
}
