//! Every policy rule at its exact boundary (skew 120 s, max response age 180 s by default).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use chrono::{DateTime, Duration, Utc};
use common::*;
use idbridge_saml::testkit::{b64, AssertionSpec, ResponseSpec, SignMode};
use idbridge_saml::{
    relay_state_redirect, verify_post_blocking, GateViolation, MemoryReplayCache, PolicyViolation,
    ReplayCache, ResponseContext, SamlError, SpSettings,
};
use std::sync::Mutex;

const SKEW: i64 = 120;
const MAX_AGE: i64 = 180;

fn run(
    r: &ResponseSpec,
    a: &AssertionSpec,
    mode: SignMode,
    now: DateTime<Utc>,
) -> Result<(), SamlError> {
    let xml = idp().response(r, a, mode).unwrap();
    verify(&xml, now).map(|_| ())
}

fn policy(e: Result<(), SamlError>) -> PolicyViolation {
    match e {
        Err(SamlError::Policy(p)) => p,
        other => panic!("expected a policy violation, got {other:?}"),
    }
}

fn secs(n: i64) -> Duration {
    Duration::seconds(n)
}

#[test]
fn defaults_match_the_constants_used_here() {
    let sp = SpSettings::new("a", "b");
    assert_eq!(sp.clock_skew.as_secs() as i64, SKEW);
    assert_eq!(sp.max_response_age.as_secs() as i64, MAX_AGE);
}

#[test]
fn not_before_at_skew_boundary() {
    let t = now();
    let r = rspec(t);
    let mut a = aspec(t);
    a.conditions.as_mut().unwrap().not_before = Some(t + secs(SKEW));
    run(&r, &a, SignMode::Response, t).unwrap();
    a.conditions.as_mut().unwrap().not_before = Some(t + secs(SKEW + 1));
    assert_eq!(
        policy(run(&r, &a, SignMode::Response, t)),
        PolicyViolation::NotYetValid
    );
}

#[test]
fn not_before_follows_configured_skew() {
    let t = now();
    let r = rspec(t);
    let mut a = aspec(t);
    a.conditions.as_mut().unwrap().not_before = Some(t + secs(61));
    let xml = idp().response(&r, &a, SignMode::Response).unwrap();
    let mut sp = sp();
    sp.clock_skew = std::time::Duration::from_secs(60);
    assert_eq!(
        verify_with(&xml, &ctx(t), &sp, &idp_settings()),
        Err(SamlError::Policy(PolicyViolation::NotYetValid))
    );
    sp.clock_skew = std::time::Duration::from_secs(61);
    verify_with(&xml, &ctx(t), &sp, &idp_settings()).unwrap();
    sp.clock_skew = std::time::Duration::from_secs(601);
    assert!(matches!(
        verify_with(&xml, &ctx(t), &sp, &idp_settings()),
        Err(SamlError::Config(_))
    ));
}

#[test]
fn conditions_not_on_or_after_boundary() {
    let t = now();
    let r = rspec(t);
    let mut a = aspec(t);
    a.conditions.as_mut().unwrap().not_on_or_after = Some(t - secs(SKEW));
    assert_eq!(
        policy(run(&r, &a, SignMode::Response, t)),
        PolicyViolation::Expired
    );
    a.conditions.as_mut().unwrap().not_on_or_after = Some(t - secs(SKEW - 1));
    run(&r, &a, SignMode::Response, t).unwrap();
}

#[test]
fn subject_confirmation_not_on_or_after_boundary() {
    let t = now();
    let r = rspec(t);
    let mut a = aspec(t);
    a.confirmation_not_on_or_after = Some(t - secs(SKEW));
    assert_eq!(
        policy(run(&r, &a, SignMode::Response, t)),
        PolicyViolation::ConfirmationExpired
    );
    a.confirmation_not_on_or_after = Some(t - secs(SKEW - 1));
    run(&r, &a, SignMode::Response, t).unwrap();
    a.confirmation_not_on_or_after = None;
    assert_eq!(
        policy(run(&r, &a, SignMode::Response, t)),
        PolicyViolation::MissingConfirmationExpiry
    );
}

#[test]
fn subject_confirmation_not_before_boundary() {
    let t = now();
    let r = rspec(t);
    let mut a = aspec(t);
    a.confirmation_not_before = Some(t + secs(SKEW));
    run(&r, &a, SignMode::Response, t).unwrap();
    a.confirmation_not_before = Some(t + secs(SKEW + 1));
    assert_eq!(
        policy(run(&r, &a, SignMode::Response, t)),
        PolicyViolation::ConfirmationNotYetValid
    );
}

#[test]
fn malformed_times_and_versions_are_refused() {
    let t = now();
    let xml = idp()
        .response(&rspec(t), &aspec(t), SignMode::Assertion)
        .unwrap();
    let stamp = idbridge_saml::testkit::saml_time(t);
    // The Response is unsigned here, so its attributes can be edited without breaking anything.
    let zoneless = xml.replacen(
        &format!("IssueInstant=\"{stamp}\""),
        "IssueInstant=\"2026-01-01T00:00:00\"",
        1,
    );
    assert_eq!(
        verify(&zoneless, t),
        Err(SamlError::Policy(PolicyViolation::Invalid("IssueInstant")))
    );
    let v1 = xml.replacen("Version=\"2.0\"", "Version=\"1.1\"", 1);
    assert_eq!(
        verify(&v1, t),
        Err(SamlError::Policy(PolicyViolation::Invalid("Version")))
    );
}

#[test]
fn issue_instant_future_boundary() {
    let t = now();
    let r = rspec(t);
    let mut a = aspec(t);
    a.issue_instant = t + secs(SKEW);
    run(&r, &a, SignMode::Response, t).unwrap();
    a.issue_instant = t + secs(SKEW + 1);
    assert_eq!(
        policy(run(&r, &a, SignMode::Response, t)),
        PolicyViolation::IssueInstantInFuture
    );
    // Same rule on the Response.
    let a = aspec(t);
    let mut r = rspec(t);
    r.issue_instant = t + secs(SKEW + 1);
    assert_eq!(
        policy(run(&r, &a, SignMode::Response, t)),
        PolicyViolation::IssueInstantInFuture
    );
}

#[test]
fn issue_instant_age_boundary() {
    let t = now();
    let r = rspec(t);
    let mut a = aspec(t);
    a.issue_instant = t - secs(SKEW + MAX_AGE);
    run(&r, &a, SignMode::Response, t).unwrap();
    a.issue_instant = t - secs(SKEW + MAX_AGE + 1);
    assert_eq!(
        policy(run(&r, &a, SignMode::Response, t)),
        PolicyViolation::IssueInstantTooOld
    );
    let a = aspec(t);
    let mut r = rspec(t);
    r.issue_instant = t - secs(SKEW + MAX_AGE + 1);
    assert_eq!(
        policy(run(&r, &a, SignMode::Response, t)),
        PolicyViolation::IssueInstantTooOld
    );
}

#[test]
fn audience_rules() {
    let t = now();
    let r = rspec(t);
    let mut a = aspec(t);
    a.conditions.as_mut().unwrap().audiences = vec![vec!["https://other.test".into()]];
    assert_eq!(
        policy(run(&r, &a, SignMode::Response, t)),
        PolicyViolation::AudienceMismatch
    );
    // A prefix of our entity id is not our entity id.
    a.conditions.as_mut().unwrap().audiences = vec![vec![format!("{SP_ENTITY}/")]];
    assert_eq!(
        policy(run(&r, &a, SignMode::Response, t)),
        PolicyViolation::AudienceMismatch
    );
    // Any audience of one restriction may match...
    a.conditions.as_mut().unwrap().audiences =
        vec![vec!["https://other.test".into(), SP_ENTITY.into()]];
    run(&r, &a, SignMode::Response, t).unwrap();
    // ...but every restriction must hold.
    a.conditions.as_mut().unwrap().audiences =
        vec![vec![SP_ENTITY.into()], vec!["https://other.test".into()]];
    assert_eq!(
        policy(run(&r, &a, SignMode::Response, t)),
        PolicyViolation::AudienceMismatch
    );
    a.conditions.as_mut().unwrap().audiences = vec![];
    assert_eq!(
        policy(run(&r, &a, SignMode::Response, t)),
        PolicyViolation::MissingAudienceRestriction
    );
    a.conditions = None;
    assert_eq!(
        policy(run(&r, &a, SignMode::Response, t)),
        PolicyViolation::MissingAudienceRestriction
    );
}

#[test]
fn destination_rules() {
    let t = now();
    let a = aspec(t);
    let mut r = rspec(t);
    r.destination = Some(format!("{ACS}x"));
    assert_eq!(
        policy(run(&r, &a, SignMode::Response, t)),
        PolicyViolation::DestinationMismatch
    );
    // Even unsigned, a wrong Destination rejects.
    assert_eq!(
        policy(run(&r, &a, SignMode::Assertion, t)),
        PolicyViolation::DestinationMismatch
    );
    r.destination = None;
    assert_eq!(
        policy(run(&r, &a, SignMode::Response, t)),
        PolicyViolation::MissingDestination
    );
    // Absent Destination on an unsigned Response is allowed (the assertion carries Recipient).
    run(&r, &a, SignMode::Assertion, t).unwrap();
}

#[test]
fn recipient_rules() {
    let t = now();
    let r = rspec(t);
    let mut a = aspec(t);
    a.recipient = Some("https://evil.test/acs".into());
    assert_eq!(
        policy(run(&r, &a, SignMode::Response, t)),
        PolicyViolation::RecipientMismatch
    );
    a.recipient = None;
    assert_eq!(
        policy(run(&r, &a, SignMode::Response, t)),
        PolicyViolation::RecipientMismatch
    );
}

#[test]
fn bearer_confirmation_required() {
    let t = now();
    let r = rspec(t);
    let mut a = aspec(t);
    a.confirmation_method = "urn:oasis:names:tc:SAML:2.0:cm:holder-of-key".into();
    assert_eq!(
        policy(run(&r, &a, SignMode::Response, t)),
        PolicyViolation::NoBearerConfirmation
    );
}

#[test]
fn in_response_to_rules() {
    let t = now();
    let r = rspec(t);
    let mut a = aspec(t);
    a.in_response_to = Some("_other".into());
    assert_eq!(
        policy(run(&r, &a, SignMode::Response, t)),
        PolicyViolation::InResponseToMismatch
    );
    a.in_response_to = None;
    assert_eq!(
        policy(run(&r, &a, SignMode::Response, t)),
        PolicyViolation::MissingInResponseTo
    );
    let a = aspec(t);
    let mut r2 = rspec(t);
    r2.in_response_to = Some("_other".into());
    assert_eq!(
        policy(run(&r2, &a, SignMode::Response, t)),
        PolicyViolation::InResponseToMismatch
    );
}

#[test]
fn idp_initiated_rules() {
    let t = now();
    let unsolicited = ResponseContext {
        expected_in_response_to: None,
        now: t,
    };
    let mut a = aspec(t);
    a.in_response_to = None;
    let mut r = rspec(t);
    r.in_response_to = None;
    let xml = idp().response(&r, &a, SignMode::Response).unwrap();
    assert_eq!(
        verify_with(&xml, &unsolicited, &sp(), &idp_settings()),
        Err(SamlError::Policy(PolicyViolation::IdpInitiatedDisabled))
    );
    let mut sp = sp();
    sp.allow_idp_initiated = true;
    verify_with(&xml, &unsolicited, &sp, &idp_settings()).unwrap();
    // A response to somebody else's request is not an unsolicited response.
    let xml = idp()
        .response(&rspec(t), &aspec(t), SignMode::Response)
        .unwrap();
    assert_eq!(
        verify_with(&xml, &unsolicited, &sp, &idp_settings()),
        Err(SamlError::Policy(PolicyViolation::UnexpectedInResponseTo))
    );
    let mut r = rspec(t);
    r.in_response_to = None;
    let xml = idp().response(&r, &aspec(t), SignMode::Response).unwrap();
    assert_eq!(
        verify_with(&xml, &unsolicited, &sp, &idp_settings()),
        Err(SamlError::Policy(PolicyViolation::UnexpectedInResponseTo))
    );
}

#[test]
fn issuer_rules() {
    let t = now();
    let mut r = rspec(t);
    let a = aspec(t);
    r.issuer = Some("https://idp.other.test".into());
    assert_eq!(
        policy(run(&r, &a, SignMode::Response, t)),
        PolicyViolation::IssuerMismatch
    );
    r.issuer = None; // optional on the Response
    run(&r, &a, SignMode::Response, t).unwrap();
    let r = rspec(t);
    let mut a = aspec(t);
    a.issuer = format!("{IDP_ENTITY} ");
    run(&r, &a, SignMode::Response, t).unwrap(); // surrounding whitespace is not significant
    a.issuer = "https://idp.other.test".into();
    assert_eq!(
        policy(run(&r, &a, SignMode::Response, t)),
        PolicyViolation::IssuerMismatch
    );
    let mut empty = aspec(t);
    empty.issuer = String::new();
    assert_eq!(
        policy(run(&r, &empty, SignMode::Both, t)),
        PolicyViolation::IssuerMismatch
    );
    // An assertion without any Issuer, properly signed by the IdP, is still refused.
    let a = aspec(t);
    let unsigned = a.to_xml(&idp().template(&a.id).unwrap());
    let stripped = unsigned.replacen(&format!("<saml:Issuer>{IDP_ENTITY}</saml:Issuer>"), "", 1);
    assert_ne!(stripped, unsigned);
    let signed = idp().sign_template(&stripped).unwrap();
    let xml = idp().response_with_body(&r, &signed, true).unwrap();
    assert_eq!(
        verify(&xml, t),
        Err(SamlError::Policy(PolicyViolation::MissingIssuer))
    );
}

#[test]
fn status_must_be_success() {
    let t = now();
    let mut r = rspec(t);
    r.status = "urn:oasis:names:tc:SAML:2.0:status:Requester".into();
    let a = aspec(t);
    for mode in [SignMode::Response, SignMode::Assertion] {
        assert_eq!(
            policy(run(&r, &a, mode, t)),
            PolicyViolation::Status("urn:oasis:names:tc:SAML:2.0:status:Requester".into())
        );
    }
}

#[test]
fn replay_is_refused_and_request_is_single_use() {
    let t = now();
    let cache = MemoryReplayCache::new();
    let xml = idp()
        .response(&rspec(t), &aspec(t), SignMode::Response)
        .unwrap();
    let go =
        |xml: &str| verify_post_blocking(&b64(xml), None, &ctx(t), &sp(), &idp_settings(), &cache);
    go(&xml).unwrap();
    assert_eq!(go(&xml), Err(SamlError::Replay));
    // A second, distinct assertion answering the same request is refused too.
    let other = idp()
        .response(&rspec(t), &aspec(t), SignMode::Response)
        .unwrap();
    assert_eq!(go(&other), Err(SamlError::Replay));
    // A rejected response does not consume its assertion id.
    let cache2 = MemoryReplayCache::new();
    let mut bad = aspec(t);
    bad.recipient = None;
    let bad_xml = idp().response(&rspec(t), &bad, SignMode::Response).unwrap();
    assert!(verify_post_blocking(
        &b64(&bad_xml),
        None,
        &ctx(t),
        &sp(),
        &idp_settings(),
        &cache2
    )
    .is_err());
    assert!(cache2.is_empty());
}

struct Recording(Mutex<Vec<(String, i64)>>, bool);
impl ReplayCache for Recording {
    fn insert_if_absent(&self, key: &str, expires_at_ms: i64) -> Result<bool, String> {
        if self.1 {
            return Err("store down".into());
        }
        self.0.lock().unwrap().push((key.to_owned(), expires_at_ms));
        Ok(true)
    }
}

#[test]
fn replay_entry_lives_until_the_assertion_could_no_longer_be_accepted() {
    let t = now();
    let mut a = aspec(t);
    a.confirmation_not_on_or_after = Some(t + secs(250));
    a.conditions.as_mut().unwrap().not_on_or_after = Some(t + secs(200));
    let xml = idp().response(&rspec(t), &a, SignMode::Response).unwrap();
    let rec = Recording(Mutex::new(Vec::new()), false);
    verify_post_blocking(&b64(&xml), None, &ctx(t), &sp(), &idp_settings(), &rec).unwrap();
    let entries = rec.0.lock().unwrap().clone();
    assert_eq!(entries.len(), 2);
    let windows = [
        t + secs(250),
        t + secs(200),
        a.issue_instant + secs(MAX_AGE + SKEW),
    ];
    let expected = windows.iter().min().unwrap().timestamp_millis() + SKEW * 1000;
    assert!(
        entries.iter().all(|(_, exp)| *exp == expected),
        "{entries:?} vs {expected}"
    );
    assert!(entries[0].0.starts_with("saml-a:") && entries[1].0.starts_with("saml-r:"));
    // A failing cache fails closed.
    let down = Recording(Mutex::new(Vec::new()), true);
    let xml = idp()
        .response(&rspec(t), &aspec(t), SignMode::Response)
        .unwrap();
    assert!(matches!(
        verify_post_blocking(&b64(&xml), None, &ctx(t), &sp(), &idp_settings(), &down),
        Err(SamlError::ReplayCache(_))
    ));
}

#[test]
fn relay_state_is_bounded_and_never_an_open_redirect() {
    let t = now();
    let xml = idp()
        .response(&rspec(t), &aspec(t), SignMode::Response)
        .unwrap();
    let cache = MemoryReplayCache::new();
    let long = "a".repeat(1025);
    assert_eq!(
        verify_post_blocking(
            &b64(&xml),
            Some(&long),
            &ctx(t),
            &sp(),
            &idp_settings(),
            &cache
        ),
        Err(SamlError::Gate(GateViolation::RelayState))
    );
    assert_eq!(
        verify_post_blocking(
            &b64(&xml),
            Some("a\nb"),
            &ctx(t),
            &sp(),
            &idp_settings(),
            &cache
        ),
        Err(SamlError::Gate(GateViolation::RelayState))
    );
    verify_post_blocking(
        &b64(&xml),
        Some(&"a".repeat(1024)),
        &ctx(t),
        &sp(),
        &idp_settings(),
        &cache,
    )
    .unwrap();
    let allowed = ["https://app.example.com/callback"];
    assert_eq!(
        relay_state_redirect(
            "redirect_uri=https%3A%2F%2Fapp.example.com%2Fcallback",
            &allowed
        )
        .as_deref(),
        Some("https://app.example.com/callback")
    );
    for hostile in [
        "redirect_uri=https%3A%2F%2Fevil.test%2F",
        "redirect_uri=https%3A%2F%2Fapp.example.com%2Fcallback.evil.test",
        "redirect_uri=%2F%2Fevil.test",
        "https://app.example.com/callback",
        "",
    ] {
        assert_eq!(relay_state_redirect(hostile, &allowed), None, "{hostile}");
    }
}

#[test]
fn empty_identifiers_are_a_configuration_error() {
    let t = now();
    let xml = idp()
        .response(&rspec(t), &aspec(t), SignMode::Response)
        .unwrap();
    let mut s = sp();
    s.entity_id = " ".into();
    assert!(matches!(
        verify_with(&xml, &ctx(t), &s, &idp_settings()),
        Err(SamlError::Config(_))
    ));
    let mut s = sp();
    s.acs_url = String::new();
    assert!(matches!(
        verify_with(&xml, &ctx(t), &s, &idp_settings()),
        Err(SamlError::Config(_))
    ));
    let mut i = idp_settings();
    i.entity_id = String::new();
    assert!(matches!(
        verify_with(&xml, &ctx(t), &sp(), &i),
        Err(SamlError::Config(_))
    ));
    verify_with(&xml, &ctx(t), &sp(), &idp_settings()).unwrap();
}
