//! Unauthenticated abuse must be cheap: each hostile input is rejected in under 50 ms of CPU
//! (thread CPU time via clock_gettime(CLOCK_THREAD_CPUTIME_ID) around the rejecting call only).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use flate2::write::DeflateEncoder;
use flate2::Compression;
use idbridge_saml::testkit::{b64, SignMode};
use idbridge_saml::{
    decode_redirect_binding, verify_post_blocking, GateViolation, MemoryReplayCache, SamlError,
};
use std::io::Write;

const BUDGET_MS: f64 = 50.0;

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let before = thread_cpu_ms();
    let out = f();
    let ms = thread_cpu_ms() - before;
    eprintln!("rejecting call: {ms:.2} ms CPU");
    (out, ms)
}

/// Verify with settings prepared before the clock starts (key generation is not the call).
fn verify_b64(b64_value: &str) -> (Result<idbridge_saml::VerifiedAssertion, SamlError>, f64) {
    let (c, s, i, cache) = (ctx(now()), sp(), idp_settings(), MemoryReplayCache::new());
    timed(|| verify_post_blocking(b64_value, None, &c, &s, &i, &cache))
}

#[test]
fn five_megabyte_post_is_cheap() {
    let body = "PHNhbWxwOlJlc3BvbnNl".repeat(5 * 1024 * 1024 / 20);
    assert!(body.len() >= 5 * 1024 * 1024 - 20);
    let (res, ms) = verify_b64(&body);
    assert!(
        matches!(res, Err(SamlError::Gate(GateViolation::TooLarge { .. }))),
        "{res:?}"
    );
    assert!(ms < BUDGET_MS, "5 MB POST took {ms:.1} ms CPU");
}

fn deflate(data: &[u8]) -> String {
    let mut enc = DeflateEncoder::new(Vec::new(), Compression::best());
    enc.write_all(data).unwrap();
    b64_bytes(&enc.finish().unwrap())
}

fn b64_bytes(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn deflate_bomb_on_redirect_binding_is_cheap() {
    for mib in [1usize, 8, 40] {
        let zeros = vec![b'<'; mib * 1024 * 1024];
        let bomb = deflate(&zeros);
        let (res, ms) = timed(|| decode_redirect_binding(&bomb));
        assert!(
            matches!(
                res,
                Err(GateViolation::InflateTooLarge { .. }) | Err(GateViolation::TooLarge { .. })
            ),
            "{mib} MiB: {res:?}"
        );
        assert!(ms < BUDGET_MS, "{mib} MiB bomb took {ms:.1} ms CPU");
    }
    // The 40 MiB bomb fits the input cap, so the inflate cap (not the input cap) stopped it.
    let bomb = deflate(&vec![b'<'; 40 * 1024 * 1024]);
    assert!(bomb.len() <= idbridge_saml::sp::MAX_REDIRECT_B64);
    assert!(matches!(
        decode_redirect_binding(&bomb),
        Err(GateViolation::InflateTooLarge { .. })
    ));
    // A normal message still decodes.
    let ok = deflate(b"<samlp:AuthnRequest/>");
    assert_eq!(
        decode_redirect_binding(&ok).unwrap(),
        "<samlp:AuthnRequest/>"
    );
}

/// A signed response with an XSLT transform whose stylesheet nests `depth` for-each loops
/// over every node (the GHSA-8mmq-f9vf-8fg2 shape: seconds of CPU if it ever runs).
fn xslt_message(depth: usize) -> String {
    let t = now();
    let xml = idp()
        .response(&rspec(t), &aspec(t), SignMode::Response)
        .unwrap();
    let mut inner = String::from("<xsl:value-of select=\"count(//node())\"/>");
    for _ in 0..depth {
        inner = format!("<xsl:for-each select=\"//node()\">{inner}</xsl:for-each>");
    }
    let xslt = format!(
        "<ds:Transform Algorithm=\"http://www.w3.org/TR/1999/REC-xslt-19991116\"><xsl:stylesheet xmlns:xsl=\"http://www.w3.org/1999/XSL/Transform\" version=\"1.0\"><xsl:template match=\"/\">{inner}</xsl:template></xsl:stylesheet></ds:Transform>"
    );
    xml.replacen(
        "<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>",
        &xslt,
        1,
    )
}

#[test]
fn xslt_transform_message_is_cheap() {
    let msg = b64(&xslt_message(12));
    let (res, ms) = verify_b64(&msg);
    assert!(
        matches!(res, Err(SamlError::Gate(GateViolation::Transform(_)))),
        "{res:?}"
    );
    assert!(ms < BUDGET_MS, "XSLT message took {ms:.1} ms CPU");
    let deep = b64(&xslt_message(40));
    let (res, ms) = verify_b64(&deep);
    assert!(
        matches!(res, Err(SamlError::Gate(GateViolation::TooDeep(_)))),
        "{res:?}"
    );
    assert!(ms < BUDGET_MS, "deep XSLT message took {ms:.1} ms CPU");
}

#[test]
fn billion_laughs_is_cheap() {
    let t = now();
    let xml = idp()
        .response(&rspec(t), &aspec(t), SignMode::Response)
        .unwrap();
    let mut dtd = String::from("<!DOCTYPE lolz [<!ENTITY lol \"lol\">");
    for i in 1..10 {
        let prev = if i == 1 {
            "lol".to_string()
        } else {
            format!("lol{}", i - 1)
        };
        dtd.push_str(&format!(
            "<!ENTITY lol{i} \"{}\">",
            format!("&{prev};").repeat(10)
        ));
    }
    dtd.push_str("]>");
    let bomb = format!("{dtd}{}", xml.replacen("Engineering", "&lol9;", 1));
    let msg = b64(&bomb);
    let (res, ms) = verify_b64(&msg);
    assert_eq!(res, Err(SamlError::Gate(GateViolation::Doctype)));
    assert!(ms < BUDGET_MS, "billion laughs took {ms:.1} ms CPU");
}

#[test]
fn element_flood_under_the_size_cap_is_cheap() {
    // Just under the byte cap, thousands of elements: refused by the element cap, cheaply.
    let t = now();
    let xml = idp()
        .response(&rspec(t), &aspec(t), SignMode::Response)
        .unwrap();
    let flood = "<x/>".repeat(20_000);
    let msg = b64(&xml.replacen(
        "<samlp:Status>",
        &format!("<samlp:Extensions>{flood}</samlp:Extensions><samlp:Status>"),
        1,
    ));
    let (res, ms) = verify_b64(&msg);
    assert!(
        matches!(res, Err(SamlError::Gate(GateViolation::TooManyElements(_)))),
        "{res:?}"
    );
    assert!(ms < BUDGET_MS, "element flood took {ms:.1} ms CPU");
}
