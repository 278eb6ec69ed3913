//! Shared fixtures: one IdP key, a second IdP key (rollover / attacker), SP decryption keys.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use idbridge_saml::testkit::{b64, AssertionSpec, ResponseSpec};
use idbridge_saml::{
    verify_post_blocking, IdpSettings, IdpSigner, MemoryReplayCache, ResponseContext, SamlError,
    SpKeyPair, SpSettings, VerifiedAssertion,
};
use std::sync::OnceLock;

pub const SP_ENTITY: &str = "https://sp.idbridge.test/saml/conn_1";
pub const ACS: &str = "https://sp.idbridge.test/saml/conn_1/acs";
pub const IDP_ENTITY: &str = "https://idp.example.test/metadata";
pub const REQ_ID: &str = "_req0123456789abcdef";
pub const USER: &str = "alice@example.com";

pub fn idp() -> &'static IdpSigner {
    static K: OnceLock<IdpSigner> = OnceLock::new();
    K.get_or_init(|| IdpSigner::generate(IDP_ENTITY).unwrap())
}

/// Same entity id, different key: the "next" key in a rollover, or an attacker's key.
pub fn idp2() -> &'static IdpSigner {
    static K: OnceLock<IdpSigner> = OnceLock::new();
    K.get_or_init(|| IdpSigner::generate(IDP_ENTITY).unwrap())
}

pub fn sp_key() -> &'static SpKeyPair {
    static K: OnceLock<SpKeyPair> = OnceLock::new();
    K.get_or_init(|| SpKeyPair::generate("sp-enc-1", 365).unwrap())
}

pub fn sp_key2() -> &'static SpKeyPair {
    static K: OnceLock<SpKeyPair> = OnceLock::new();
    K.get_or_init(|| SpKeyPair::generate("sp-enc-2", 365).unwrap())
}

pub fn sp() -> SpSettings {
    let mut sp = SpSettings::new(SP_ENTITY, ACS);
    sp.decryption_keys = vec![sp_key().clone()];
    sp
}

pub fn idp_settings() -> IdpSettings {
    idp().settings(Some("https://idp.example.test/sso"))
}

/// Now, on a whole second so that millisecond timestamps compare exactly.
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap()
}

pub fn ctx(now: DateTime<Utc>) -> ResponseContext {
    ResponseContext {
        expected_in_response_to: Some(REQ_ID.into()),
        now,
    }
}

pub fn aspec(now: DateTime<Utc>) -> AssertionSpec {
    let mut a = AssertionSpec::new(IDP_ENTITY, SP_ENTITY, ACS, USER, Some(REQ_ID), now).unwrap();
    a.attributes = vec![
        ("email".into(), vec![USER.into()]),
        ("groups".into(), vec!["Engineering".into(), "Admins".into()]),
    ];
    a
}

pub fn rspec(now: DateTime<Utc>) -> ResponseSpec {
    ResponseSpec::new(IDP_ENTITY, ACS, Some(REQ_ID), now).unwrap()
}

/// Verify XML with a fresh replay cache.
pub fn verify_with(
    xml: &str,
    ctx: &ResponseContext,
    sp: &SpSettings,
    idp: &IdpSettings,
) -> Result<VerifiedAssertion, SamlError> {
    verify_post_blocking(&b64(xml), None, ctx, sp, idp, &MemoryReplayCache::new())
}

pub fn verify(xml: &str, now: DateTime<Utc>) -> Result<VerifiedAssertion, SamlError> {
    verify_with(xml, &ctx(now), &sp(), &idp_settings())
}

/// The first `<ds:Signature ...>...</ds:Signature>` substring.
pub fn signature_of(xml: &str) -> String {
    let start = xml.find("<ds:Signature").unwrap();
    let end = xml[start..].find("</ds:Signature>").unwrap() + start + "</ds:Signature>".len();
    xml[start..end].to_owned()
}

/// CPU time consumed by the current thread, in milliseconds (CLOCK_THREAD_CPUTIME_ID:
/// nanosecond resolution, unlike tick-based getrusage).
#[allow(unsafe_code)] // clock_gettime
pub fn thread_cpu_ms() -> f64 {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: clock_gettime writes into the provided, properly sized struct.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

/// Run a peer IdP script: JSON config on stdin, base64 SAMLResponse on stdout.
pub fn run_peer(cmd: std::process::Command, name: &str, cfg: &serde_json::Value) -> String {
    try_run_peer(cmd, name, cfg).unwrap_or_else(|e| panic!("{name} failed: {e}"))
}

/// Run a peer script with a JSON config on stdin: its trimmed stdout, or its stderr when it
/// exits with an error (a refusal, for negative tests).
pub fn try_run_peer(
    mut cmd: std::process::Command,
    name: &str,
    cfg: &serde_json::Value,
) -> Result<String, String> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{name} did not start ({e}): run scripts/test-deps.d/saml.sh"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(cfg.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap().trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Where scripts/test-deps.d/saml.sh installs peer IdPs.
pub fn peers_dir() -> String {
    std::env::var("IDBRIDGE_PEERS_DIR").unwrap_or_else(|_| "/var/cache/idbridge-peers".into())
}

/// Verify a base64 response from a peer with the fixture settings and a fresh cache.
pub fn verify_peer_b64(b64: &str) -> Result<VerifiedAssertion, SamlError> {
    verify_post_blocking(
        b64,
        None,
        &ctx(Utc::now()),
        &sp(),
        &idp_settings(),
        &MemoryReplayCache::new(),
    )
}
