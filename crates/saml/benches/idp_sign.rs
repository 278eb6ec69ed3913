//! IdP-side signing per CPU-second on one core: login Responses for distinct users (signed
//! RSA-2048/SHA-256 assertion, the WorkOS layout), the complete HTTP-POST page around them, and
//! the other layouts — next to `openssl speed -seconds 3 rsa2048` sign/s (the floor: a signed
//! assertion cannot cost less than one RSA signature), an in-process RSA-2048 sign loop through
//! the same openssl crate, and the xmlsec-based signer the tests use (what signing costs when
//! the document is parsed and canonicalized again before the RSA operation).
//!
//! Issue 16's goal is for a whole SP-initiated login (request parse, LDAP bind, signing, POST
//! page) to reach 50% of the floor per core; this bench shows how much of that budget signing
//! takes. Run: `cargo bench -p idbridge-saml --bench idp_sign` (env BENCH_SIGNS=N, default 2000).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::Utc;
use idbridge_saml::idp::{
    build_login_response, name_id_format, post_form, AssertionEncryption, IdpSigningKey,
    LoginResponse, NameId, PostField, ReceivedRequest, RegisteredSp, RequestContext,
    ResponseOptions, RsaBits, UserAttributes,
};
use idbridge_saml::testkit::{AssertionSpec, ResponseSpec, SignMode};
use idbridge_saml::{build_authn_request, IdpSettings, IdpSigner, MemoryReplayCache, SpSettings};
use openssl::hash::MessageDigest;
use openssl::sign::Signer;

mod util;
use util::{openssl_rsa2048, thread_cpu_secs};

const IDP: &str = "https://idbridge.bench.test/saml/idp/org_1";
const SSO: &str = "https://idbridge.bench.test/saml/idp/org_1/sso";
const SP: &str = "https://auth.workos.bench.test/conn_1";
const ACS: &str = "https://auth.workos.bench.test/sso/saml/acs/conn_1";

fn user(i: usize) -> UserAttributes {
    UserAttributes {
        id: format!("5c0b7d1e-0000-4000-8000-{i:012}"),
        email: Some(format!("user{i}@example.com")),
        first_name: Some("Bench".into()),
        last_name: Some(format!("User {i}")),
        groups: vec!["Engineering".into(), "Everyone".into()],
        custom: Vec::new(),
    }
}

/// Per-CPU-second rate of `f` run on inputs `0..n`, after 20 warm-up calls on `n..n + 20`.
fn rate(n: usize, mut f: impl FnMut(usize)) -> f64 {
    for i in n..n + 20 {
        f(i);
    }
    let cpu0 = thread_cpu_secs();
    for i in 0..n {
        f(i);
    }
    n as f64 / (thread_cpu_secs() - cpu0)
}

fn main() {
    let n: usize = std::env::var("BENCH_SIGNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let key = IdpSigningKey::generate("bench IdP", RsaBits::Rsa2048, 30).expect("key");
    let users: Vec<UserAttributes> = (0..n + 20).map(user).collect();
    let attrs: Vec<_> = users.iter().map(|u| u.to_saml().expect("attrs")).collect();
    let name_ids: Vec<NameId> = users
        .iter()
        .map(|u| NameId {
            value: u.email.clone().unwrap_or_default(),
            format: name_id_format::EMAIL.into(),
        })
        .collect();
    let now = Utc::now();
    let sign = |i: usize, opts: &ResponseOptions| {
        build_login_response(
            &LoginResponse {
                idp_entity_id: IDP,
                sp_entity_id: SP,
                acs_url: ACS,
                in_response_to: Some("_req0123456789"),
                name_id: &name_ids[i],
                session_index: "_sess_0123456789",
                authn_instant: now,
                attributes: &attrs[i],
                now,
                options: opts,
            },
            &key,
        )
        .expect("sign")
    };

    let default = ResponseOptions::default();
    let sample = sign(0, &default);
    println!(
        "response: {} bytes XML, {} bytes base64",
        sample.xml.len(),
        sample.to_base64().len()
    );

    // The raw RSA operation through the same library, in-process (the floor without openssl's
    // own benchmark harness).
    let digest_input = vec![0x5au8; 700];
    let raw_rsa = rate(n, |_| {
        let mut s = Signer::new(MessageDigest::sha256(), key.key()).expect("signer");
        s.update(&digest_input).expect("update");
        std::hint::black_box(s.sign_to_vec().expect("sign"));
    });
    let signed_assertion = rate(n, |i| {
        std::hint::black_box(sign(i, &default));
    });
    let with_post_page = rate(n, |i| {
        let r = sign(i, &default);
        std::hint::black_box(post_form(
            ACS,
            PostField::SamlResponse,
            &r.to_base64(),
            Some("rs"),
        ));
    });
    let both = ResponseOptions {
        sign_response: true,
        ..ResponseOptions::default()
    };
    let signed_both = rate(n / 2, |i| {
        std::hint::black_box(sign(i, &both));
    });
    let enc_key = IdpSigningKey::generate("bench SP enc", RsaBits::Rsa2048, 30).expect("sp key");
    let encrypted = ResponseOptions {
        encryption: Some(AssertionEncryption::aes256_gcm(enc_key.cert().clone())),
        ..ResponseOptions::default()
    };
    let signed_encrypted = rate(n, |i| {
        std::hint::black_box(sign(i, &encrypted));
    });

    // Parsing the SP's AuthnRequest (Redirect binding, unsigned as WorkOS sends it by default).
    let sp_settings = SpSettings::new(SP, ACS);
    let idp_settings = IdpSettings {
        entity_id: IDP.into(),
        sso_url: Some(SSO.into()),
        signing_certs: vec![key.cert().clone()],
        allow_sha1: false,
        wants_signed_requests: false,
    };
    let queries: Vec<String> = (0..n + 20)
        .map(|_| {
            let r = build_authn_request(&sp_settings, &idp_settings, Some("relay"), false)
                .expect("request");
            r.url.split_once('?').expect("query").1.to_owned()
        })
        .collect();
    let registered = RegisteredSp {
        entity_id: SP.into(),
        acs: vec![idbridge_saml::idp::AcsEndpoint::post(ACS, Some(0), true)],
        signing_certs: Vec::new(),
        require_signed_requests: false,
        allow_sha1: false,
        name_id_format: name_id_format::EMAIL.into(),
    };
    let replay = MemoryReplayCache::new();
    let sso_urls = [SSO];
    let request_parse = rate(n, |i| {
        let ctx = RequestContext::new(&sso_urls, Utc::now());
        let r = ReceivedRequest::from_redirect_query(&queries[i]).expect("parse");
        std::hint::black_box(r.accept(&registered, &ctx, &replay).expect("accept"));
    });

    // The xmlsec path: the same assertion layout signed by samael/xmlsec (parse + c14n + RSA).
    let xmlsec_signer = IdpSigner {
        entity_id: IDP.into(),
        keys: idbridge_saml::SpKeyPair {
            key: key.key().clone(),
            cert: key.cert().clone(),
        },
    };
    let specs: Vec<(ResponseSpec, AssertionSpec)> = (0..n / 4 + 20)
        .map(|i| {
            let mut a = AssertionSpec::new(IDP, SP, ACS, &name_ids[i].value, Some("_req"), now)
                .expect("spec");
            a.attributes = attrs[i]
                .iter()
                .map(|x| (x.name.clone(), x.values.clone()))
                .collect();
            (
                ResponseSpec::new(IDP, ACS, Some("_req"), now).expect("spec"),
                a,
            )
        })
        .collect();
    let xmlsec = rate(n / 4, |i| {
        let (r, a) = &specs[i];
        std::hint::black_box(
            xmlsec_signer
                .response(r, a, SignMode::Assertion)
                .expect("xmlsec sign"),
        );
    });

    let floor = openssl_rsa2048().map(|(sign, _)| sign);
    println!("per CPU-second, one core, RSA-2048 (distinct users):");
    println!("  in-process RSA-2048 SHA-256 sign (openssl crate):  {raw_rsa:>7.0}/s");
    println!("  signed assertion (WorkOS layout):                  {signed_assertion:>7.0}/s");
    println!("  signed assertion + base64 + POST page:             {with_post_page:>7.0}/s");
    println!("  signed assertion + signed response (2 RSA):        {signed_both:>7.0}/s");
    println!("  signed + AES-256-GCM/RSA-OAEP encrypted assertion:  {signed_encrypted:>7.0}/s");
    println!("  AuthnRequest parse + accept (Redirect, unsigned):  {request_parse:>7.0}/s");
    println!("  xmlsec signer, same layout (parse + c14n + RSA):   {xmlsec:>7.0}/s");
    match floor {
        Some(f) => {
            println!("  openssl speed -seconds 3 rsa2048:                  {f:>7.0} sign/s");
            println!(
                "signed assertion = {:.0}% of the openssl floor ({:.0}% of the in-process RSA sign); with the POST page {:.0}%; xmlsec path {:.0}%; ours/xmlsec = {:.1}x",
                100.0 * signed_assertion / f,
                100.0 * signed_assertion / raw_rsa,
                100.0 * with_post_page / f,
                100.0 * xmlsec / f,
                signed_assertion / xmlsec
            );
            let per_login_us = 1e6 / with_post_page + 1e6 / request_parse;
            println!(
                "request parse + signing + POST page = {per_login_us:.0} µs CPU per login: {:.0}% of the floor before the LDAP bind",
                100.0 * (1e6 / per_login_us) / f
            );
        }
        None => println!("openssl speed rsa2048: not available"),
    }
}
