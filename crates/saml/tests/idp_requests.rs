//! AuthnRequests received by idbridge-as-IdP: accepted from independent SPs (samael, samlify,
//! pysaml2 — Redirect and POST, signed and unsigned), and refused, each with its own error, for
//! every rule: unregistered issuer, ACS not registered, replayed id, IssueInstant out of its
//! window, unsigned where signing is required, wrong-key signatures, SHA-1 downgrades, tampered
//! query strings, DTD / entities / PIs, oversized input and deflate bombs, wrong roots, and the
//! binding rules.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod idp_fixtures;
use idp_fixtures::*;

use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use flate2::write::DeflateEncoder;
use flate2::Compression;
use idbridge_saml::idp::{
    name_id_format, status, AcsEndpoint, Binding, IdpError, ReceivedRequest, RegisteredSp,
    RequestContext, RequestViolation,
};
use idbridge_saml::testkit::{sign_with_key, signature_template};
use idbridge_saml::{
    build_authn_request, GateViolation, MemoryReplayCache, SignatureError, SpKeyPair, SpSettings,
};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use serde_json::{json, Value};
use std::io::Write;
use std::sync::OnceLock;

const ACS2: &str = "https://auth.workos.test/sso/saml/acs/conn_key1/second";
const SSO_POST: &str = "https://idbridge.test/saml/idp/org_01/sso/post";
const RSA_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#rsa-sha1";
const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
const SHA1: &str = "http://www.w3.org/2000/09/xmldsig#sha1";
const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";

fn sp_sign_key() -> &'static SpKeyPair {
    static K: OnceLock<SpKeyPair> = OnceLock::new();
    K.get_or_init(|| SpKeyPair::generate("sp-sign", 365).unwrap())
}

fn attacker_key() -> &'static SpKeyPair {
    static K: OnceLock<SpKeyPair> = OnceLock::new();
    K.get_or_init(|| SpKeyPair::generate("attacker", 365).unwrap())
}

fn registered() -> RegisteredSp {
    RegisteredSp {
        entity_id: SP_ENTITY.into(),
        acs: vec![
            AcsEndpoint::post(ACS, Some(0), true),
            AcsEndpoint::post(ACS2, Some(1), false),
        ],
        signing_certs: vec![sp_sign_key().cert.clone()],
        require_signed_requests: false,
        allow_sha1: false,
        name_id_format: name_id_format::EMAIL.into(),
    }
}

const SSO_URLS: [&str; 2] = [SSO_URL, SSO_POST];

fn ctx(now: DateTime<Utc>) -> RequestContext<'static> {
    RequestContext::new(&SSO_URLS, now)
}

/// An AuthnRequest with `attrs` spliced into the root start tag and `body` after the Issuer.
fn request_xml(id: &str, instant: DateTime<Utc>, attrs: &str, body: &str) -> String {
    format!(
        "<samlp:AuthnRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{}\"{attrs}><saml:Issuer>{SP_ENTITY}</saml:Issuer>{body}</samlp:AuthnRequest>",
        instant.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    )
}

fn plain_request(id: &str, instant: DateTime<Utc>) -> String {
    request_xml(
        id,
        instant,
        &format!(" Destination=\"{SSO_URL}\" AssertionConsumerServiceURL=\"{ACS}\" ProtocolBinding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\""),
        &format!("<samlp:NameIDPolicy Format=\"{}\" AllowCreate=\"true\"/>", name_id_format::EMAIL),
    )
}

fn deflate_b64(xml: &str) -> String {
    let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
    e.write_all(xml.as_bytes()).unwrap();
    base64::engine::general_purpose::STANDARD.encode(e.finish().unwrap())
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn sign_query(octets: &str, key: &PKey<Private>, alg: &str) -> String {
    let md = if alg == RSA_SHA1 {
        MessageDigest::sha1()
    } else {
        MessageDigest::sha256()
    };
    let mut s = openssl::sign::Signer::new(md, key).unwrap();
    s.update(octets.as_bytes()).unwrap();
    base64::engine::general_purpose::STANDARD.encode(s.sign_to_vec().unwrap())
}

/// The Redirect binding's query string, signed with `sign` (key, SigAlg) when given.
fn redirect_query(xml: &str, relay: Option<&str>, sign: Option<(&PKey<Private>, &str)>) -> String {
    let mut q = format!("SAMLRequest={}", enc(&deflate_b64(xml)));
    if let Some(r) = relay {
        q.push_str(&format!("&RelayState={}", enc(r)));
    }
    if let Some((key, alg)) = sign {
        q.push_str(&format!("&SigAlg={}", enc(alg)));
        let sig = sign_query(&q, key, alg);
        q.push_str(&format!("&Signature={}", enc(&sig)));
    }
    q
}

/// The POST binding's SAMLRequest, with an enveloped signature by `key` (xmlsec).
fn signed_post(xml: &str, id: &str, key: &SpKeyPair, sig_alg: &str, digest: &str) -> String {
    let template = signature_template(id, &key.cert, sig_alg, digest).unwrap();
    let with_template = xml.replacen(
        &format!("<saml:Issuer>{SP_ENTITY}</saml:Issuer>"),
        &format!("<saml:Issuer>{SP_ENTITY}</saml:Issuer>{template}"),
        1,
    );
    let signed = sign_with_key(&with_template, &key.key).unwrap();
    base64::engine::general_purpose::STANDARD.encode(signed)
}

fn b64(xml: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(xml)
}

fn accept_redirect(
    query: &str,
    sp: &RegisteredSp,
    now: DateTime<Utc>,
) -> Result<idbridge_saml::idp::AcceptedRequest, IdpError> {
    ReceivedRequest::from_redirect_query(query)?.accept(sp, &ctx(now), &MemoryReplayCache::new())
}

fn accept_post(
    value: &str,
    sp: &RegisteredSp,
    now: DateTime<Utc>,
) -> Result<idbridge_saml::idp::AcceptedRequest, IdpError> {
    ReceivedRequest::from_post(value, Some("rs"))?.accept(sp, &ctx(now), &MemoryReplayCache::new())
}

fn violation(r: Result<idbridge_saml::idp::AcceptedRequest, IdpError>) -> IdpError {
    match r {
        Ok(a) => panic!("request accepted: {a:?}"),
        Err(e) => e,
    }
}

// ---- accepted --------------------------------------------------------------------------------

#[test]
fn unsigned_redirect_request_is_accepted_with_the_registered_acs() {
    let now = now();
    let q = redirect_query(&plain_request("_r1", now), Some("state 1&2"), None);
    let received = ReceivedRequest::from_redirect_query(&q).unwrap();
    assert_eq!(received.issuer(), Some(SP_ENTITY));
    assert!(!received.is_signed());
    let a = received
        .accept(&registered(), &ctx(now), &MemoryReplayCache::new())
        .unwrap();
    assert_eq!(a.id, "_r1");
    assert_eq!(a.issuer, SP_ENTITY);
    assert_eq!(a.acs.location, ACS);
    assert_eq!(a.binding, Binding::Redirect);
    assert!(!a.signed && !a.force_authn && !a.is_passive);
    assert_eq!(a.relay_state.as_deref(), Some("state 1&2"));
    assert_eq!(a.name_id_format, name_id_format::EMAIL);
    assert_eq!(a.destination.as_deref(), Some(SSO_URL));
}

#[test]
fn signed_redirect_request_verifies_over_the_octets_as_received() {
    let now = now();
    let q = redirect_query(
        &plain_request("_r2", now),
        Some("rs"),
        Some((&sp_sign_key().key, RSA_SHA256)),
    );
    let mut sp = registered();
    sp.require_signed_requests = true;
    let a = accept_redirect(&q, &sp, now).unwrap();
    assert!(a.signed);
    // Another registered key (rollover) still verifies.
    sp.signing_certs.insert(0, attacker_key().cert.clone());
    assert!(accept_redirect(&q, &sp, now).is_ok());
}

#[test]
fn samael_requests_are_accepted_signed_and_unsigned() {
    // idbridge's own SP side builds requests with samael: WorkOS-like Redirect requests.
    let mut sp_settings = SpSettings::new(SP_ENTITY, ACS);
    let (_, idp) = sp_side();
    for signed in [false, true] {
        sp_settings.want_signed_requests = signed;
        sp_settings.signing_keys = vec![sp_sign_key().clone()];
        let r = build_authn_request(&sp_settings, &idp, Some("relay-x"), true).unwrap();
        let query = r.url.split_once('?').unwrap().1;
        let mut sp = registered();
        sp.require_signed_requests = signed;
        let a = accept_redirect(query, &sp, Utc::now()).unwrap_or_else(|e| panic!("{signed}: {e}"));
        assert_eq!(a.id, r.request_id);
        assert_eq!(a.signed, signed);
        assert!(a.force_authn);
        assert_eq!(a.relay_state.as_deref(), Some("relay-x"));
    }
}

#[test]
fn post_request_with_enveloped_signature_is_accepted() {
    let now = now();
    let xml = plain_request("_p1", now).replace(SSO_URL, SSO_POST);
    let value = signed_post(&xml, "_p1", sp_sign_key(), RSA_SHA256, SHA256);
    let mut sp = registered();
    sp.require_signed_requests = true;
    let a = accept_post(&value, &sp, now).unwrap();
    assert!(a.signed);
    assert_eq!(a.binding, Binding::Post);
    assert_eq!(a.relay_state.as_deref(), Some("rs"));
}

fn peer_cfg(binding: &str, signed: bool) -> Value {
    json!({
        "command": "request",
        "binding": binding,
        "idp": IDP_ENTITY,
        "sp": SP_ENTITY,
        "acs": ACS,
        "idpMetadata": idp_metadata(&[idp_key().cert()], signed),
        "signRequests": signed,
        "spSignKey": String::from_utf8(sp_sign_key().key.private_key_to_pem_pkcs8().unwrap()).unwrap(),
        "spSignCert": String::from_utf8(sp_sign_key().cert.to_pem().unwrap()).unwrap(),
        "relayState": "peer-relay",
    })
}

fn samlify_request(binding: &str, signed: bool) -> Value {
    samlify_sp(&peer_cfg(binding, signed)).unwrap_or_else(|e| panic!("samlify: {e}"))
}

fn pysaml2_request(binding: &str, signed: bool) -> Value {
    pysaml2_sp(&peer_cfg(binding, signed)).unwrap_or_else(|e| panic!("pysaml2: {e}"))
}

#[test]
fn samlify_requests_are_accepted() {
    for signed in [false, true] {
        let r = samlify_request("redirect", signed);
        let url = r["context"].as_str().unwrap();
        assert!(url.starts_with(SSO_URL), "{url}");
        let query = url.split_once('?').unwrap().1;
        let mut sp = registered();
        sp.require_signed_requests = signed;
        let a = accept_redirect(query, &sp, Utc::now())
            .unwrap_or_else(|e| panic!("samlify redirect signed={signed}: {e}"));
        assert_eq!(a.id, r["id"].as_str().unwrap());
        assert_eq!(a.signed, signed);
        assert_eq!(a.relay_state.as_deref(), Some("peer-relay"));
        assert_eq!(a.acs.location, ACS);
    }
    let r = samlify_request("post", true);
    let mut sp = registered();
    sp.require_signed_requests = true;
    let a = ReceivedRequest::from_post(r["context"].as_str().unwrap(), r["relayState"].as_str())
        .unwrap()
        .accept(&sp, &ctx(Utc::now()), &MemoryReplayCache::new())
        .unwrap_or_else(|e| panic!("samlify post: {e}"));
    assert!(a.signed && a.binding == Binding::Post);
}

#[test]
fn pysaml2_requests_are_accepted() {
    for signed in [false, true] {
        let r = pysaml2_request("redirect", signed);
        let location = r["location"].as_str().unwrap();
        let query = location.split_once('?').unwrap().1;
        let mut sp = registered();
        sp.require_signed_requests = signed;
        let a = accept_redirect(query, &sp, Utc::now())
            .unwrap_or_else(|e| panic!("pysaml2 redirect signed={signed}: {e}"));
        assert_eq!(a.id, r["id"].as_str().unwrap());
        assert_eq!(a.signed, signed);
        assert_eq!(a.relay_state.as_deref(), Some("peer-relay"));
    }
    let r = pysaml2_request("post", true);
    let mut sp = registered();
    sp.require_signed_requests = true;
    let a =
        ReceivedRequest::from_post(r["SAMLRequest"].as_str().unwrap(), r["RelayState"].as_str())
            .unwrap()
            .accept(&sp, &ctx(Utc::now()), &MemoryReplayCache::new())
            .unwrap_or_else(|e| panic!("pysaml2 post: {e}"));
    assert!(a.signed && a.binding == Binding::Post);
    assert_eq!(a.id, r["id"].as_str().unwrap());
}

// ---- refused: registry rules ----------------------------------------------------------------

#[test]
fn unregistered_issuer_is_refused() {
    let now = now();
    let q = redirect_query(
        &plain_request("_u1", now).replace(SP_ENTITY, "https://evil.test/sp"),
        None,
        None,
    );
    let received = ReceivedRequest::from_redirect_query(&q).unwrap();
    // The registry lookup by this issuer finds nothing; accepting it as another SP fails too.
    assert_eq!(received.issuer(), Some("https://evil.test/sp"));
    assert_eq!(
        violation(received.accept(&registered(), &ctx(now), &MemoryReplayCache::new())),
        IdpError::Request(RequestViolation::UnknownServiceProvider)
    );
    let no_issuer =
        plain_request("_u2", now).replace(&format!("<saml:Issuer>{SP_ENTITY}</saml:Issuer>"), "");
    assert_eq!(
        violation(accept_redirect(
            &redirect_query(&no_issuer, None, None),
            &registered(),
            now
        )),
        IdpError::Request(RequestViolation::MissingIssuer)
    );
}

#[test]
fn acs_must_be_registered() {
    let now = now();
    let evil = plain_request("_a1", now).replace(ACS, "https://evil.test/acs");
    assert_eq!(
        violation(accept_redirect(
            &redirect_query(&evil, None, None),
            &registered(),
            now
        )),
        IdpError::Request(RequestViolation::AcsNotRegistered)
    );
    // A prefix or a case change of a registered URL is another URL.
    let prefix = plain_request("_a2", now).replace(ACS, &format!("{ACS}/../x"));
    assert_eq!(
        violation(accept_redirect(
            &redirect_query(&prefix, None, None),
            &registered(),
            now
        )),
        IdpError::Request(RequestViolation::AcsNotRegistered)
    );
    let by_index = request_xml("_a3", now, " AssertionConsumerServiceIndex=\"1\"", "");
    assert_eq!(
        accept_redirect(&redirect_query(&by_index, None, None), &registered(), now)
            .unwrap()
            .acs
            .location,
        ACS2
    );
    let bad_index = request_xml("_a4", now, " AssertionConsumerServiceIndex=\"7\"", "");
    assert_eq!(
        violation(accept_redirect(
            &redirect_query(&bad_index, None, None),
            &registered(),
            now
        )),
        IdpError::Request(RequestViolation::AcsIndexNotRegistered(7))
    );
    let both = request_xml(
        "_a5",
        now,
        &format!(" AssertionConsumerServiceIndex=\"0\" AssertionConsumerServiceURL=\"{ACS}\""),
        "",
    );
    assert_eq!(
        violation(accept_redirect(
            &redirect_query(&both, None, None),
            &registered(),
            now
        )),
        IdpError::Request(RequestViolation::AcsUrlAndIndex)
    );
    // No ACS named: the registered default.
    let none = request_xml("_a6", now, "", "");
    assert_eq!(
        accept_redirect(&redirect_query(&none, None, None), &registered(), now)
            .unwrap()
            .acs
            .location,
        ACS
    );
    let mut no_acs = registered();
    no_acs.acs.clear();
    assert_eq!(
        violation(accept_redirect(
            &redirect_query(&request_xml("_a7", now, "", ""), None, None),
            &no_acs,
            now
        )),
        IdpError::Request(RequestViolation::NoAcs)
    );
}

#[test]
fn replayed_request_id_is_refused() {
    let now = now();
    let q = redirect_query(&plain_request("_once", now), None, None);
    let cache = MemoryReplayCache::new();
    let first =
        ReceivedRequest::from_redirect_query(&q)
            .unwrap()
            .accept(&registered(), &ctx(now), &cache);
    assert!(first.is_ok());
    let again =
        ReceivedRequest::from_redirect_query(&q)
            .unwrap()
            .accept(&registered(), &ctx(now), &cache);
    assert_eq!(violation(again), IdpError::Replay);
    // A refused request does not burn its id.
    let cache = MemoryReplayCache::new();
    let bad = plain_request("_kept", now).replace(ACS, "https://evil.test/acs");
    assert!(
        ReceivedRequest::from_redirect_query(&redirect_query(&bad, None, None))
            .unwrap()
            .accept(&registered(), &ctx(now), &cache)
            .is_err()
    );
    assert!(cache.is_empty());
}

#[test]
fn issue_instant_window_is_enforced_at_its_boundaries() {
    let now = now();
    let c = ctx(now);
    let skew = Duration::from_std(c.clock_skew).unwrap();
    let age = Duration::from_std(c.max_age).unwrap();
    let at = |id: &str, t: DateTime<Utc>| {
        accept_redirect(
            &redirect_query(&plain_request(id, t), None, None),
            &registered(),
            now,
        )
    };
    assert!(at("_t1", now + skew).is_ok());
    assert_eq!(
        violation(at("_t2", now + skew + Duration::seconds(1))),
        IdpError::Request(RequestViolation::IssueInstantInFuture)
    );
    assert!(at("_t3", now - skew - age).is_ok());
    assert_eq!(
        violation(at("_t4", now - skew - age - Duration::seconds(1))),
        IdpError::Request(RequestViolation::IssueInstantTooOld)
    );
    let zoneless = plain_request("_t5", now).replace("Z\"", "\"");
    assert_eq!(
        violation(accept_redirect(
            &redirect_query(&zoneless, None, None),
            &registered(),
            now
        )),
        IdpError::Request(RequestViolation::Invalid("IssueInstant"))
    );
}

// ---- refused: signatures --------------------------------------------------------------------

#[test]
fn unsigned_request_is_refused_when_signing_is_required() {
    let now = now();
    let mut sp = registered();
    sp.require_signed_requests = true;
    assert_eq!(
        violation(accept_redirect(
            &redirect_query(&plain_request("_s1", now), None, None),
            &sp,
            now
        )),
        IdpError::Request(RequestViolation::Unsigned)
    );
    assert_eq!(
        violation(accept_post(&b64(&plain_request("_s2", now)), &sp, now)),
        IdpError::Request(RequestViolation::Unsigned)
    );
}

#[test]
fn wrong_key_signatures_are_refused_even_when_not_required() {
    let now = now();
    let q = redirect_query(
        &plain_request("_w1", now),
        Some("rs"),
        Some((&attacker_key().key, RSA_SHA256)),
    );
    assert!(matches!(
        violation(accept_redirect(&q, &registered(), now)),
        IdpError::Signature(SignatureError::Invalid(_))
    ));
    let post = signed_post(
        &plain_request("_w2", now),
        "_w2",
        attacker_key(),
        RSA_SHA256,
        SHA256,
    );
    assert!(matches!(
        violation(accept_post(&post, &registered(), now)),
        IdpError::Signature(SignatureError::Invalid(_))
    ));
    // No registered certificate at all: nothing can verify.
    let mut none = registered();
    none.signing_certs.clear();
    let q = redirect_query(
        &plain_request("_w3", now),
        None,
        Some((&sp_sign_key().key, RSA_SHA256)),
    );
    assert_eq!(
        violation(accept_redirect(&q, &none, now)),
        IdpError::Request(RequestViolation::SignedWithoutCertificate)
    );
}

#[test]
fn tampered_signed_queries_are_refused() {
    let now = now();
    let q = redirect_query(
        &plain_request("_q1", now),
        Some("original"),
        Some((&sp_sign_key().key, RSA_SHA256)),
    );
    assert!(accept_redirect(&q, &registered(), now).is_ok());
    for tampered in [
        q.replace("RelayState=original", "RelayState=changed"),
        // Dropping RelayState changes the signed octets.
        q.replace("&RelayState=original", ""),
        // Another request under the same signature.
        {
            let other = redirect_query(&plain_request("_q2", now), None, None);
            let sig = q.split_once("&RelayState").unwrap().1;
            format!("{other}&RelayState{sig}")
        },
    ] {
        assert!(
            matches!(
                violation(accept_redirect(&tampered, &registered(), now)),
                IdpError::Signature(SignatureError::Invalid(_))
            ),
            "{tampered}"
        );
    }
}

#[test]
fn sha1_downgrades_are_refused_unless_enabled() {
    let now = now();
    let q = redirect_query(
        &plain_request("_d1", now),
        None,
        Some((&sp_sign_key().key, RSA_SHA1)),
    );
    assert_eq!(
        violation(accept_redirect(&q, &registered(), now)),
        IdpError::Request(RequestViolation::SignatureAlgorithm(RSA_SHA1.into()))
    );
    let mut legacy = registered();
    legacy.allow_sha1 = true;
    assert!(accept_redirect(&q, &legacy, now).unwrap().signed);
    // HMAC or an unknown algorithm never.
    let hmac = "http://www.w3.org/2000/09/xmldsig#hmac-sha1";
    let q = redirect_query(
        &plain_request("_d2", now),
        None,
        Some((&sp_sign_key().key, RSA_SHA256)),
    )
    .replace(&enc(RSA_SHA256), &enc(hmac));
    assert_eq!(
        violation(accept_redirect(&q, &legacy, now)),
        IdpError::Request(RequestViolation::SignatureAlgorithm(hmac.into()))
    );
    // POST: an rsa-sha1 XML signature is refused by the algorithm gate.
    let post = signed_post(
        &plain_request("_d3", now),
        "_d3",
        sp_sign_key(),
        RSA_SHA1,
        SHA1,
    );
    assert!(matches!(
        violation(accept_post(&post, &registered(), now)),
        IdpError::Gate(GateViolation::Algorithm(_))
    ));
    assert!(accept_post(&post, &legacy, now).unwrap().signed);
}

#[test]
fn signature_parameters_must_be_complete_and_single() {
    let now = now();
    let q = redirect_query(
        &plain_request("_c1", now),
        None,
        Some((&sp_sign_key().key, RSA_SHA256)),
    );
    let no_sig = q.split("&Signature=").next().unwrap().to_owned();
    assert_eq!(
        violation(accept_redirect(&no_sig, &registered(), now)),
        IdpError::Request(RequestViolation::IncompleteSignatureParameters)
    );
    let twice = format!("{q}&SAMLRequest=x");
    assert_eq!(
        violation(accept_redirect(&twice, &registered(), now)),
        IdpError::Request(RequestViolation::DuplicateParameter("SAMLRequest"))
    );
    assert_eq!(
        violation(accept_redirect("RelayState=x", &registered(), now)),
        IdpError::Request(RequestViolation::MissingParameter("SAMLRequest"))
    );
    assert_eq!(
        violation(accept_redirect("SAMLRequest=%zz", &registered(), now)),
        IdpError::Request(RequestViolation::BadParameterEncoding("SAMLRequest"))
    );
}

#[test]
fn xml_signature_inside_a_redirect_request_is_verified() {
    // The Redirect binding says to remove it (§3.4.4.1), but SPs such as Ory Polis keep it:
    // verified like the POST binding's, with the registered certificates only.
    let now = now();
    let embedded = |key: &SpKeyPair, id: &str| {
        let signed = base64::engine::general_purpose::STANDARD
            .decode(signed_post(
                &plain_request(id, now),
                id,
                key,
                RSA_SHA256,
                SHA256,
            ))
            .unwrap();
        redirect_query(std::str::from_utf8(&signed).unwrap(), None, None)
    };
    let mut sp = registered();
    sp.require_signed_requests = true;
    assert!(
        accept_redirect(&embedded(sp_sign_key(), "_e1"), &sp, now)
            .unwrap()
            .signed
    );
    assert!(matches!(
        violation(accept_redirect(&embedded(attacker_key(), "_e2"), &sp, now)),
        IdpError::Signature(SignatureError::Invalid(_))
    ));
    sp.signing_certs.clear();
    sp.require_signed_requests = false;
    assert_eq!(
        violation(accept_redirect(&embedded(sp_sign_key(), "_e3"), &sp, now)),
        IdpError::Request(RequestViolation::SignedWithoutCertificate)
    );
}

#[test]
fn signed_requests_need_a_destination_and_it_must_be_ours() {
    let now = now();
    let elsewhere = plain_request("_x1", now).replace(SSO_URL, "https://other-idp.test/sso");
    assert_eq!(
        violation(accept_redirect(
            &redirect_query(&elsewhere, None, None),
            &registered(),
            now
        )),
        IdpError::Request(RequestViolation::DestinationMismatch)
    );
    let no_dest = plain_request("_x2", now).replace(&format!(" Destination=\"{SSO_URL}\""), "");
    assert!(accept_redirect(&redirect_query(&no_dest, None, None), &registered(), now).is_ok());
    let q = redirect_query(
        &plain_request("_x3", now).replace(&format!(" Destination=\"{SSO_URL}\""), ""),
        None,
        Some((&sp_sign_key().key, RSA_SHA256)),
    );
    assert_eq!(
        violation(accept_redirect(&q, &registered(), now)),
        IdpError::Request(RequestViolation::MissingDestination)
    );
}

// ---- refused: protocol rules ----------------------------------------------------------------

#[test]
fn binding_version_and_unknown_elements() {
    let now = now();
    let artifact =
        plain_request("_b1", now).replace("bindings:HTTP-POST", "bindings:HTTP-Artifact");
    assert!(matches!(
        violation(accept_redirect(
            &redirect_query(&artifact, None, None),
            &registered(),
            now
        )),
        IdpError::Request(RequestViolation::UnsupportedBinding(_))
    ));
    let v1 = plain_request("_b2", now).replace("Version=\"2.0\"", "Version=\"1.1\"");
    assert_eq!(
        violation(accept_redirect(
            &redirect_query(&v1, None, None),
            &registered(),
            now
        )),
        IdpError::Request(RequestViolation::Version)
    );
    let odd = request_xml("_b3", now, "", "<samlp:Frobnicate/>");
    assert_eq!(
        violation(accept_redirect(
            &redirect_query(&odd, None, None),
            &registered(),
            now
        )),
        IdpError::Request(RequestViolation::UnexpectedElement("Frobnicate".into()))
    );
    let bad_bool = request_xml("_b4", now, " ForceAuthn=\"yes\"", "");
    assert_eq!(
        violation(accept_redirect(
            &redirect_query(&bad_bool, None, None),
            &registered(),
            now
        )),
        IdpError::Request(RequestViolation::Invalid("ForceAuthn"))
    );
    let issuer_format = plain_request("_b5", now).replace(
        "<saml:Issuer>",
        "<saml:Issuer Format=\"urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress\">",
    );
    assert!(matches!(
        ReceivedRequest::from_redirect_query(&redirect_query(&issuer_format, None, None)),
        Err(IdpError::Request(RequestViolation::IssuerFormat))
    ));
}

#[test]
fn unavailable_name_id_format_goes_back_to_the_sp() {
    let now = now();
    let persistent =
        plain_request("_n1", now).replace(name_id_format::EMAIL, name_id_format::PERSISTENT);
    match violation(accept_redirect(
        &redirect_query(&persistent, Some("rs-n"), None),
        &registered(),
        now,
    )) {
        IdpError::RespondToSp(e) => {
            assert_eq!(e.acs_url, ACS, "the registered ACS");
            assert_eq!(e.in_response_to, "_n1");
            assert_eq!(e.status, status::REQUESTER);
            assert_eq!(e.sub_status, Some(status::INVALID_NAME_ID_POLICY));
            assert_eq!(e.relay_state.as_deref(), Some("rs-n"));
        }
        other => panic!("{other}"),
    }
    let unspecified =
        plain_request("_n2", now).replace(name_id_format::EMAIL, name_id_format::UNSPECIFIED);
    assert!(accept_redirect(
        &redirect_query(&unspecified, None, None),
        &registered(),
        now
    )
    .is_ok());
}

#[test]
fn requested_context_passive_and_subject_are_reported() {
    let now = now();
    let xml = request_xml(
        "_rc1",
        now,
        " IsPassive=\"true\" ProviderName=\"WorkOS\"",
        "<saml:Subject><saml:NameID>alice@example.com</saml:NameID></saml:Subject><samlp:RequestedAuthnContext Comparison=\"minimum\"><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></samlp:RequestedAuthnContext>",
    );
    let a = accept_redirect(&redirect_query(&xml, None, None), &registered(), now).unwrap();
    assert!(a.is_passive);
    assert_eq!(a.subject_hint.as_deref(), Some("alice@example.com"));
    assert_eq!(a.provider_name.as_deref(), Some("WorkOS"));
    let rac = a.requested_authn_context.clone().unwrap();
    assert!(rac.satisfied_by(idbridge_saml::idp::response::AC_PASSWORD_PROTECTED_TRANSPORT));
    assert!(!rac.satisfied_by("urn:oasis:names:tc:SAML:2.0:ac:classes:X509"));
    let e = a.error_response(status::RESPONDER, Some(status::NO_PASSIVE), "no session");
    assert_eq!(
        (e.acs_url.as_str(), e.in_response_to.as_str()),
        (ACS, "_rc1")
    );
}

// ---- refused: hostile XML -------------------------------------------------------------------

#[test]
fn dtd_entities_and_pis_are_refused() {
    let now = now();
    let base = plain_request("_h1", now);
    for (hostile, expected) in [
        (
            format!("<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>{base}"),
            GateViolation::Doctype,
        ),
        (
            base.replace(
                "<saml:Issuer>",
                "<?xml-stylesheet href=\"x\"?><saml:Issuer>",
            ),
            GateViolation::ProcessingInstruction,
        ),
        (
            base.replace(SP_ENTITY, "&e;"),
            GateViolation::Entity("e".into()),
        ),
    ] {
        for r in [
            ReceivedRequest::from_redirect_query(&redirect_query(&hostile, None, None)),
            ReceivedRequest::from_post(&b64(&hostile), None),
        ] {
            assert_eq!(r.unwrap_err(), IdpError::Gate(expected.clone()));
        }
    }
}

#[test]
fn oversized_deep_and_deflate_bombs_are_refused_cheaply() {
    let now = now();
    let huge = "A".repeat(idbridge_saml::idp::request::MAX_REDIRECT_QUERY + 1);
    assert!(matches!(
        ReceivedRequest::from_redirect_query(&format!("SAMLRequest={huge}")),
        Err(IdpError::Gate(GateViolation::TooLarge { .. }))
    ));
    assert!(matches!(
        ReceivedRequest::from_post(&huge, None),
        Err(IdpError::Gate(GateViolation::TooLarge { .. }))
    ));
    // 16 MiB of spaces deflates to a few KiB: stopped at the inflate cap.
    let bomb = {
        let mut e = DeflateEncoder::new(Vec::new(), Compression::best());
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..16 {
            e.write_all(&chunk).unwrap();
        }
        base64::engine::general_purpose::STANDARD.encode(e.finish().unwrap())
    };
    let t = std::time::Instant::now();
    let r = ReceivedRequest::from_redirect_query(&format!("SAMLRequest={}", enc(&bomb)));
    assert!(
        matches!(
            r,
            Err(IdpError::Gate(GateViolation::InflateTooLarge { .. }))
        ),
        "{r:?}"
    );
    assert!(t.elapsed() < std::time::Duration::from_millis(500));
    let deep = request_xml("_deep", now, "", &"<samlp:Extensions>".repeat(20)).replace(
        "</samlp:AuthnRequest>",
        &format!("{}</samlp:AuthnRequest>", "</samlp:Extensions>".repeat(20)),
    );
    assert!(matches!(
        ReceivedRequest::from_post(&b64(&deep), None),
        Err(IdpError::Gate(GateViolation::TooDeep(_)))
    ));
    let long_relay = "r".repeat(2000);
    assert!(matches!(
        ReceivedRequest::from_post(&b64(&plain_request("_rl", now)), Some(&long_relay)),
        Err(IdpError::Request(RequestViolation::RelayState(_)))
    ));
    assert!(matches!(
        ReceivedRequest::from_post("not base64!", None),
        Err(IdpError::Gate(GateViolation::Base64))
    ));
}

#[test]
fn wrong_roots_decoys_and_duplicate_ids_are_refused() {
    let now = now();
    let response = "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" ID=\"_r\" Version=\"2.0\"/>";
    assert!(matches!(
        ReceivedRequest::from_post(&b64(response), None),
        Err(IdpError::Gate(GateViolation::WrongRoot { .. }))
    ));
    let evil_ns = plain_request("_ns", now).replace(
        "xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\"",
        "xmlns:samlp=\"urn:evil\"",
    );
    assert!(matches!(
        ReceivedRequest::from_post(&b64(&evil_ns), None),
        Err(IdpError::Gate(GateViolation::WrongRoot { .. }))
    ));
    let decoy = request_xml(
        "_dc",
        now,
        "",
        "<samlp:Extensions><saml:Assertion ID=\"_x\"/></samlp:Extensions>",
    );
    assert!(matches!(
        ReceivedRequest::from_post(&b64(&decoy), None),
        Err(IdpError::Gate(GateViolation::NestedAssertion))
    ));
    let dup = request_xml(
        "_dup",
        now,
        "",
        "<samlp:Extensions><x:y xmlns:x=\"urn:x\" ID=\"_dup\"/></samlp:Extensions>",
    );
    assert!(matches!(
        ReceivedRequest::from_post(&b64(&dup), None),
        Err(IdpError::Gate(GateViolation::DuplicateId(_)))
    ));
    // A signature anywhere but as a direct child of the root.
    let signed = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(signed_post(
                &plain_request("_mv", now),
                "_mv",
                sp_sign_key(),
                RSA_SHA256,
                SHA256,
            ))
            .unwrap(),
    )
    .unwrap();
    let s0 = signed.find("<ds:Signature").unwrap();
    let s1 = signed.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
    let moved = format!("{}{}", &signed[..s0], &signed[s1..]).replace(
        "</samlp:AuthnRequest>",
        &format!(
            "<samlp:Extensions>{}</samlp:Extensions></samlp:AuthnRequest>",
            &signed[s0..s1]
        ),
    );
    assert!(matches!(
        ReceivedRequest::from_post(&b64(&moved), None),
        Err(IdpError::Gate(GateViolation::MisplacedSignature))
    ));
}

#[test]
fn signed_post_request_data_is_read_from_the_verified_bytes() {
    let now = now();
    let value = signed_post(
        &plain_request("_v1", now),
        "_v1",
        sp_sign_key(),
        RSA_SHA256,
        SHA256,
    );
    let xml = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(&value)
            .unwrap(),
    )
    .unwrap();
    // Changing a signed attribute after signing breaks the signature: refused, never read.
    let swapped = xml.replace(ACS, ACS2);
    assert!(matches!(
        violation(accept_post(&b64(&swapped), &registered(), now)),
        IdpError::Signature(_)
    ));
}
