//! Ory Polis (`@boxyhq/saml-jackson`, an independent SAML SP with its own OAuth layer) as the
//! service provider of idbridge's IdP: Polis imports our IdP metadata and we import its SP
//! metadata, it starts its OAuth flow with a signed AuthnRequest that our request parser verifies
//! and accepts, takes our signed Response at its ACS, and its token + userInfo endpoints return
//! the user's profile.
//! Polis is installed by scripts/test-deps.d/polis.sh (≈30 s: `npm ci --ignore-scripts` in
//! crates/saml/benches/polis, shared with the verify bench).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// libc calls on peer processes and C buffers of the test.
#![allow(unsafe_code)]

mod idp_fixtures;
use idp_fixtures::*;

use chrono::Utc;
use idbridge_saml::idp::{
    build_login_response, name_id_format, LoginResponse, NameId, ReceivedRequest, RegisteredSp,
    RequestContext, ResponseOptions, SpMetadata, UserAttributes,
};
use idbridge_saml::MemoryReplayCache;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

fn polis_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/polis")
}

#[test]
fn polis_logs_in_through_idbridge() {
    assert!(
        polis_dir()
            .join("node_modules/@boxyhq/saml-jackson/package.json")
            .exists(),
        "Ory Polis is not installed: run scripts/test-deps.d/polis.sh"
    );
    let mut child = Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/polis_sp.mjs"
        ))
        .env("POLIS_DIR", polis_dir())
        // No anonymous analytics calls from the test.
        .env("DO_NOT_TRACK", "1")
        .env("BOXYHQ_NO_ANALYTICS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node");
    // A peer that hangs must fail the test, not block it: kill it after two minutes.
    let pid = child.id() as i32;
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = finished.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(120));
        if !watchdog.load(std::sync::atomic::Ordering::SeqCst) {
            // SAFETY: kill(2) on the node process this test spawned and has not reaped yet.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut read = || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "the Polis script ended without an answer");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(v.get("error").is_none(), "Polis: {}", v["error"]);
        v
    };

    let metadata = idp_metadata(&[idp_key().cert()], false);
    writeln!(stdin, "{}", json!({ "idpMetadata": metadata })).unwrap();

    // Polis's AuthnRequest, on the Redirect binding, to our SSO URL.
    let start = read();
    let redirect = start["redirect_url"].as_str().unwrap();
    let (sso, query) = redirect.split_once('?').unwrap();
    assert_eq!(sso, SSO_URL);
    let received = ReceivedRequest::from_redirect_query(query).unwrap();
    // The SP registered from Polis's own metadata; Polis signs its requests (an enveloped XML
    // signature even on the Redirect binding), so they must verify with that certificate.
    let sp_metadata = SpMetadata::from_xml(start["spMetadata"].as_str().unwrap()).unwrap();
    let mut sp = RegisteredSp::from_metadata(&sp_metadata, name_id_format::EMAIL);
    sp.require_signed_requests = true;
    assert_eq!(received.issuer(), Some(sp.entity_id.as_str()));
    assert!(received.is_signed());
    let sso_urls = [SSO_URL];
    let accepted = received
        .accept(
            &sp,
            &RequestContext::new(&sso_urls, Utc::now()),
            &MemoryReplayCache::new(),
        )
        .unwrap();

    let user = UserAttributes {
        id: "7d0c2f34-9a41-4c1e-8b6e-1f2a3b4c5d6e".into(),
        email: Some("zoe.obrien@example.com".into()),
        first_name: Some("Zoë".into()),
        last_name: Some("O'Brien & Søn".into()),
        groups: vec!["R&D".into(), "Admins".into()],
        custom: Vec::new(),
    };
    let attrs = user.to_saml().unwrap();
    let now = Utc::now();
    let response = build_login_response(
        &LoginResponse {
            idp_entity_id: IDP_ENTITY,
            sp_entity_id: &sp.entity_id,
            acs_url: &accepted.acs.location,
            in_response_to: Some(&accepted.id),
            name_id: &NameId {
                value: user.email.clone().unwrap(),
                format: accepted.name_id_format.clone(),
            },
            session_index: "_sess_polis",
            authn_instant: now,
            attributes: &attrs,
            now,
            options: &ResponseOptions::default(),
        },
        idp_key(),
    )
    .unwrap();
    writeln!(
        stdin,
        "{}",
        json!({ "SAMLResponse": response.to_base64(), "RelayState": accepted.relay_state })
    )
    .unwrap();

    let profile = &read()["profile"];
    eprintln!("Polis profile: {profile}");
    assert_eq!(profile["email"], json!(user.email));
    assert_eq!(profile["firstName"], json!(user.first_name));
    assert_eq!(profile["lastName"], json!(user.last_name));
    assert_eq!(profile["raw"]["id"], json!(user.id));
    assert_eq!(profile["raw"]["groups"], json!(user.groups));
    drop(stdin);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the Polis script did not exit");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    finished.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(status.success());
}
