//! Replays every fuzz target's corpus (`fuzz/corpus/<target>/`, seeds and regression inputs
//! from fuzzing) through the same target functions the fuzzers run, so every finding stays
//! fixed. Set `IDBRIDGE_WRITE_SEEDS=1` to (re)write the generated seeds (signed SAML
//! responses) into the corpus.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use idbridge_fuzz_targets::{saml, saml_idp, TARGETS};

fn corpus_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

#[test]
fn every_corpus_replays_without_a_finding() {
    let mut replayed = 0;
    for (name, target) in TARGETS {
        let dir = corpus_root().join(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus of {name} ({}): {e}", dir.display()));
        let mut count = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(
                outcome.is_ok(),
                "{name}: {} is a finding again",
                path.display()
            );
            count += 1;
        }
        assert!(count > 0, "the corpus of {name} is empty");
        replayed += count;
    }
    eprintln!("replayed {replayed} corpus inputs");
}

/// The signed seeds verify: the `saml_verify` property is not vacuous, and the fixed keys and
/// clock still produce a valid login.
#[test]
fn signed_seeds_verify_and_are_in_the_corpus() {
    let dir = corpus_root().join("saml_verify");
    for (name, xml) in saml::seeds() {
        assert!(saml::verifies(&xml), "seed {name} does not verify");
        let path = dir.join(format!("seed-{name}.xml"));
        if std::env::var_os("IDBRIDGE_WRITE_SEEDS").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &xml).unwrap();
            std::fs::write(
                corpus_root()
                    .join("saml_gate")
                    .join(format!("seed-{name}.xml")),
                &xml,
            )
            .unwrap();
        }
        let stored = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (IDBRIDGE_WRITE_SEEDS=1 writes it)", path.display())
        });
        assert!(
            saml::verifies(&stored),
            "stored seed {name} does not verify"
        );
    }
}

/// A tampered signed seed is refused (the property's negative side).
#[test]
fn a_tampered_seed_yields_no_profile() {
    let (_, xml) = saml::seeds().remove(0);
    let forged = xml.replace("alice@example.com", "mallory@example.com");
    assert!(!saml::verifies(&forged));
}

/// The signed AuthnRequest seeds are accepted (the `saml_authn_request` property is not
/// vacuous) and are in the corpus; a tampered one is refused.
#[test]
fn signed_authn_request_seeds_are_accepted_and_in_the_corpus() {
    let dir = corpus_root().join("saml_authn_request");
    for (name, input) in saml_idp::authn_request_seeds() {
        assert!(
            saml_idp::authn_request_accepted(&input),
            "seed {name} is refused"
        );
        let path = dir.join(format!("seed-{name}"));
        if std::env::var_os("IDBRIDGE_WRITE_SEEDS").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &input).unwrap();
        }
        let stored = std::fs::read(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (IDBRIDGE_WRITE_SEEDS=1 writes it)", path.display())
        });
        assert!(
            saml_idp::authn_request_accepted(&stored),
            "stored seed {name} is refused"
        );
        // The same request with another ACS (the POST seed's XML is signed; the Redirect
        // seed's query signature covers the deflated bytes, so any change breaks it).
        let forged = String::from_utf8(input)
            .unwrap()
            .replace("conn_fuzz\"", "conn_evil\"")
            .replace("SAMLRequest=", "SAMLRequest=A");
        assert!(
            !saml_idp::authn_request_accepted(forged.as_bytes()),
            "a tampered {name} was accepted"
        );
    }
}

/// `forward_response` tells answers from errors the way the forwarder needs.
#[test]
fn forward_response_classifies_known_answers() {
    use idbridge_forward::scim_push::{classify_answer, CallError};
    let created = classify_answer("POST /Users", 201, None, "", br#"{"id":"u1"}"#).unwrap();
    assert_eq!(created.id(), Some("u1"));
    assert!(matches!(
        classify_answer("POST /Users", 200, None, "", b"<html>"),
        Err(CallError::BadResponse { .. })
    ));
    assert!(matches!(
        classify_answer("POST /Users", 302, None, "https://x.test/", b""),
        Err(CallError::Redirect { .. })
    ));
    assert!(matches!(
        classify_answer(
            "POST /Users",
            503,
            Some(std::time::Duration::from_secs(3)),
            "",
            b""
        ),
        Err(CallError::Busy {
            retry_after: Some(_),
            ..
        })
    ));
    assert!(matches!(
        classify_answer("POST /Users", 1000, None, "", b""),
        Err(CallError::BadResponse { .. })
    ));
}
