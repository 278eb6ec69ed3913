//! In-process end-to-end tests: a real HTTP code flow against the mock provider in `common`.
//! Every negative case must produce the specific error, so a check that silently stops working
//! makes its test fail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use idbridge_oidc::{AuthMethod, FinishParams, OidcError, SigningAlg};
use serde_json::{json, Value};
use url::Url;

async fn op() -> MockOp {
    MockOp::start(TestKey::rsa("rsa-1", "RS256")).await
}

/// Logs in with one ID token claim changed (`null` removes it); the login must be refused.
async fn refused_with_claim(op: &MockOp, name: &str, value: Value) -> OidcError {
    op.claim(name, value);
    login(&op.client())
        .await
        .expect_err("a login with this claim must be refused")
}

#[tokio::test]
async fn happy_path_maps_claims_and_merges_userinfo() {
    let op = op().await;
    let client = op.client_with(|s| {
        s.claim_map
            .custom
            .insert("department".into(), "department".into());
    });
    let id = login(&client).await.unwrap();
    assert_eq!(id.idp_id, "user-1");
    assert_eq!(id.email.as_deref(), Some("ada@example.com"));
    assert_eq!(id.first_name.as_deref(), Some("Ada"));
    assert_eq!(id.last_name.as_deref(), Some("Lovelace"));
    assert_eq!(id.name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(id.groups, vec!["engineering", "admins"]);
    // Only userinfo has `department`: proves the merge happened.
    assert_eq!(
        id.custom_attributes.get("department"),
        Some(&json!("Analytical Engines"))
    );
    assert_eq!(id.raw_attributes.get("iss"), Some(&json!(op.issuer)));
    let (_, _, token, userinfo) = op.counters();
    assert_eq!((token, userinfo), (1, 1));
}

#[tokio::test]
async fn authorization_url_carries_pkce_state_nonce_and_hint() {
    let op = op().await;
    let client = op.client();
    let redirect = Url::parse(REDIRECT_URI).unwrap();
    let b = client
        .begin(&redirect, Some("ada@example.com"))
        .await
        .unwrap();
    let q: std::collections::HashMap<_, _> = b.url.query_pairs().into_owned().collect();
    assert_eq!(q["state"], b.state);
    assert_eq!(q["nonce"], b.nonce);
    assert_eq!(q["code_challenge_method"], "S256");
    use sha2::Digest as _;
    let expected = b64(&sha2::Sha256::digest(b.pkce_verifier.expose().as_bytes()));
    assert_eq!(q["code_challenge"], expected);
    assert_eq!(q["login_hint"], "ada@example.com");
    assert_eq!(q["scope"], "openid profile email");
    assert!(!b.url.as_str().contains(CLIENT_SECRET));
    // Two logins never share state, nonce or verifier.
    let b2 = client.begin(&redirect, None).await.unwrap();
    assert_ne!(b.state, b2.state);
    assert_ne!(b.nonce, b2.nonce);
    assert_ne!(b.pkce_verifier.expose(), b2.pkce_verifier.expose());
    assert!(!b2.url.as_str().contains("login_hint"));
}

#[tokio::test]
async fn client_secret_post_works_and_basic_is_not_sent_with_it() {
    let op = op().await;
    op.tweak(|t| t.auth_method = AuthMethod::ClientSecretPost);
    assert!(login(&op.client()).await.is_ok());
    // An RP configured for basic fails against a provider that requires post.
    let err = login(&op.client_with(|s| s.auth_method = AuthMethod::ClientSecretBasic))
        .await
        .unwrap_err();
    assert!(
        matches!(err, OidcError::TokenEndpoint { ref error, .. } if error == "invalid_client"),
        "{err}"
    );
}

#[tokio::test]
async fn wrong_state_is_rejected_before_the_code_is_spent() {
    let op = op().await;
    let client = op.client();
    let f = Flow::start(&client).await.unwrap();
    let forged = FinishParams {
        returned_state: "attacker-state",
        ..f.params()
    };
    let err = client.finish(forged).await.unwrap_err();
    assert!(matches!(err, OidcError::StateMismatch), "{err}");
    assert_eq!(err.workos_error_code(), "oauth_failed");
    assert_eq!(op.token_hits(), 0);
    // An empty expected state (nothing bound to the browser) never matches an empty return.
    let unbound = FinishParams {
        returned_state: "",
        expected_state: "",
        ..f.params()
    };
    let err = client.finish(unbound).await.unwrap_err();
    assert!(matches!(err, OidcError::MissingBinding("state")), "{err}");
    // The code was not spent: the honest callback still completes.
    assert!(client.finish(f.params()).await.is_ok());
}

#[tokio::test]
async fn callback_iss_naming_another_provider_is_rejected() {
    let op = op().await;
    let client = op.client();
    let f = Flow::start(&client).await.unwrap();
    assert_eq!(f.iss.as_deref(), Some(op.issuer.as_str()));
    let forged = FinishParams {
        returned_iss: Some("https://mix-up.example.com"),
        ..f.params()
    };
    let err = client.finish(forged).await.unwrap_err();
    assert!(matches!(err, OidcError::InvalidIssuer(_)), "{err}");
    // A provider that promises iss on callbacks (RFC 9207) must not be answered without one.
    op.tweak(|t| t.advertise_iss_param = true);
    let client = op.client();
    let f = Flow::start(&client).await.unwrap();
    let stripped = FinishParams {
        returned_iss: None,
        ..f.params()
    };
    let err = client.finish(stripped).await.unwrap_err();
    assert!(matches!(err, OidcError::InvalidIssuer(_)), "{err}");
    assert_eq!(op.token_hits(), 0);
    assert!(client.finish(f.params()).await.is_ok());
}

#[tokio::test]
async fn replayed_code_is_rejected() {
    let op = op().await;
    let client = op.client();
    let f = Flow::start(&client).await.unwrap();
    assert!(client.finish(f.params()).await.is_ok());
    let err = client.finish(f.params()).await.unwrap_err();
    assert!(
        matches!(err, OidcError::TokenEndpoint { ref error, .. } if error == "invalid_grant"),
        "{err}"
    );
}

#[tokio::test]
async fn wrong_pkce_verifier_is_rejected_by_the_provider() {
    let op = op().await;
    let client = op.client();
    let f = Flow::start(&client).await.unwrap();
    let other = Flow::start(&client).await.unwrap();
    let forged = FinishParams {
        pkce_verifier: other.begin.pkce_verifier.expose(),
        ..f.params()
    };
    let err = client.finish(forged).await.unwrap_err();
    assert!(
        matches!(err, OidcError::TokenEndpoint { ref error, .. } if error == "invalid_grant"),
        "{err}"
    );
}

#[tokio::test]
async fn wrong_nonce_is_rejected() {
    let op = op().await;
    let err = refused_with_claim(&op, "nonce", json!("nonce-from-another-login")).await;
    assert!(matches!(err, OidcError::InvalidNonce(_)), "{err}");
}

#[tokio::test]
async fn missing_nonce_is_rejected() {
    let op = op().await;
    let err = refused_with_claim(&op, "nonce", Value::Null).await;
    assert!(matches!(err, OidcError::InvalidNonce(_)), "{err}");
}

#[tokio::test]
async fn wrong_issuer_is_rejected() {
    let op = op().await;
    let err = refused_with_claim(&op, "iss", json!("https://evil.example.com")).await;
    assert!(matches!(err, OidcError::InvalidIssuer(_)), "{err}");
    // A trailing slash is a different issuer: the comparison is exact.
    let err = refused_with_claim(&op, "iss", json!(format!("{}/", op.issuer))).await;
    assert!(matches!(err, OidcError::InvalidIssuer(_)), "{err}");
}

#[tokio::test]
async fn discovery_naming_another_issuer_is_rejected() {
    let op = op().await;
    op.tweak(|t| t.discovery_issuer = Some("https://other.example.com".into()));
    let err = login(&op.client()).await.unwrap_err();
    assert!(matches!(err, OidcError::Discovery(_)), "{err}");
    assert_eq!(err.workos_error_code(), "server_error");
}

#[tokio::test]
async fn wrong_audience_is_rejected() {
    let op = op().await;
    let err = refused_with_claim(&op, "aud", json!("some-other-client")).await;
    assert!(matches!(err, OidcError::InvalidAudience(_)), "{err}");
}

#[tokio::test]
async fn extra_untrusted_audience_is_rejected() {
    let op = op().await;
    let err = refused_with_claim(&op, "aud", json!([CLIENT_ID, "some-other-client"])).await;
    assert!(matches!(err, OidcError::InvalidAudience(_)), "{err}");
}

#[tokio::test]
async fn foreign_azp_is_rejected() {
    let op = op().await;
    let err = refused_with_claim(&op, "azp", json!("some-other-client")).await;
    assert!(matches!(err, OidcError::InvalidAudience(_)), "{err}");
    op.claim("azp", json!(CLIENT_ID));
    assert!(login(&op.client()).await.is_ok());
}

#[tokio::test]
async fn expired_token_is_rejected_but_skew_is_tolerated() {
    let op = op().await;
    let now = chrono::Utc::now().timestamp();
    op.claim("iat", json!(now - 200));
    let err = refused_with_claim(&op, "exp", json!(now - 120)).await;
    assert!(matches!(err, OidcError::Expired(_)), "{err}");
    // 20 s past expiry is inside the default 60 s skew.
    op.claim("exp", json!(now - 20));
    assert!(login(&op.client()).await.is_ok());
    // ... but not with a zero skew.
    let err = login(&op.client_with(|s| s.clock_skew = Duration::ZERO))
        .await
        .unwrap_err();
    assert!(matches!(err, OidcError::Expired(_)), "{err}");
}

#[tokio::test]
async fn missing_exp_is_rejected() {
    let op = op().await;
    let err = refused_with_claim(&op, "exp", Value::Null).await;
    assert!(matches!(err, OidcError::MalformedIdToken(_)), "{err}");
}

#[tokio::test]
async fn iat_in_the_future_beyond_skew_is_rejected() {
    let op = op().await;
    let now = chrono::Utc::now().timestamp();
    op.claim("iat", json!(now + 600));
    let err = refused_with_claim(&op, "exp", json!(now + 900)).await;
    assert!(matches!(err, OidcError::InvalidIssuedAt(_)), "{err}");
    op.claim("iat", json!(now + 20));
    assert!(login(&op.client()).await.is_ok());
}

#[tokio::test]
async fn iat_too_old_and_nbf_in_future_are_rejected() {
    let op = op().await;
    let now = chrono::Utc::now().timestamp();
    let err = refused_with_claim(&op, "iat", json!(now - 3600)).await;
    assert!(matches!(err, OidcError::InvalidIssuedAt(_)), "{err}");
    let err = refused_with_claim(&op, "iat", Value::Null).await;
    assert!(
        matches!(err, OidcError::MalformedIdToken(_)),
        "missing iat: {err}"
    );
    op.claim("iat", json!(now));
    let err = refused_with_claim(&op, "nbf", json!(now + 600)).await;
    assert!(matches!(err, OidcError::InvalidIssuedAt(_)), "{err}");
}

#[tokio::test]
async fn alg_none_is_rejected() {
    let op = op().await;
    op.tweak(|t| t.sign_with = SignWith::None);
    let err = login(&op.client()).await.unwrap_err();
    assert!(
        matches!(err, OidcError::AlgorithmNotAllowed(ref a) if a == "none"),
        "{err}"
    );
}

#[tokio::test]
async fn hmac_keyed_with_the_providers_public_key_is_rejected() {
    let op = op().await;
    let key = op.signing_key();
    // Both common encodings of "the public key" an attacker could use as the HMAC secret.
    for secret in [
        key.public_pem(),
        key.jwk()["n"].as_str().unwrap().as_bytes().to_vec(),
    ] {
        op.tweak(|t| t.sign_with = SignWith::Hmac(secret.clone(), key.kid.clone()));
        let err = login(&op.client()).await.unwrap_err();
        assert!(
            matches!(err, OidcError::AlgorithmNotAllowed(ref a) if a == "HS256"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn hs256_with_the_client_secret_is_rejected() {
    // OIDC allows HS256 keyed with the client secret; idbridge does not (the secret is not a
    // signing key we want to trust, and a leaked secret must not mint identities).
    let op = op().await;
    op.tweak(|t| t.sign_with = SignWith::Hmac(CLIENT_SECRET.as_bytes().to_vec(), "k".into()));
    let err = login(&op.client()).await.unwrap_err();
    assert!(
        matches!(err, OidcError::AlgorithmNotAllowed(ref a) if a == "HS256"),
        "{err}"
    );
}

#[tokio::test]
async fn token_signed_by_an_unknown_key_is_rejected() {
    let op = op().await;
    op.tweak(|t| t.sign_with = SignWith::Key(TestKey::rsa("rogue", "RS256")));
    let err = login(&op.client()).await.unwrap_err();
    assert!(
        matches!(err, OidcError::UnknownSigningKey { ref kid, .. } if kid.as_deref() == Some("rogue")),
        "{err}"
    );
}

#[tokio::test]
async fn token_signed_by_an_unknown_key_under_a_known_kid_is_rejected() {
    let op = op().await;
    let kid = op.signing_key().kid;
    op.tweak(|t| t.sign_with = SignWith::KeyWithKid(TestKey::rsa("rogue", "RS256"), kid));
    let err = login(&op.client()).await.unwrap_err();
    assert!(matches!(err, OidcError::InvalidSignature(_)), "{err}");
}

#[tokio::test]
async fn tampered_payload_is_rejected() {
    let op = op().await;
    let client = op.client();
    // Get genuine claims through the flow, then sign them ourselves and swap the payload.
    let ok = login(&client).await.unwrap();
    let mut claims = ok.raw_attributes.clone();
    claims.insert("sub".into(), json!("admin"));
    // Rebuild a token with the original header and signature of a fresh one.
    let key = op.signing_key();
    let header = b64(json!({"alg":"RS256","kid":key.kid}).to_string().as_bytes());
    let good_payload = b64(Value::Object(ok.raw_attributes.clone())
        .to_string()
        .as_bytes());
    let sig = b64(&key.sign(format!("{header}.{good_payload}").as_bytes()));
    let good = format!("{header}.{good_payload}.{sig}");
    let nonce = ok.raw_attributes["nonce"].as_str().unwrap();
    assert!(client.verify_id_token(&good, nonce, None).await.is_ok());
    let bad_payload = b64(Value::Object(claims).to_string().as_bytes());
    let bad = format!("{header}.{bad_payload}.{sig}");
    let err = client.verify_id_token(&bad, nonce, None).await.unwrap_err();
    assert!(matches!(err, OidcError::InvalidSignature(_)), "{err}");
}

#[tokio::test]
async fn wrong_at_hash_is_rejected_and_absent_at_hash_is_accepted() {
    let op = op().await;
    op.tweak(|t| t.wrong_at_hash = true);
    let err = login(&op.client()).await.unwrap_err();
    assert!(matches!(err, OidcError::AtHashMismatch), "{err}");
    op.tweak(|t| t.wrong_at_hash = false);
    op.claim("at_hash", Value::Null);
    assert!(login(&op.client()).await.is_ok());
}

#[tokio::test]
async fn userinfo_subject_mismatch_is_rejected() {
    let op = op().await;
    op.tweak(|t| {
        t.userinfo.insert("sub".into(), json!("someone-else"));
    });
    let err = login(&op.client()).await.unwrap_err();
    assert!(matches!(err, OidcError::UserinfoSubjectMismatch), "{err}");
    // With userinfo off the same provider logs in (and userinfo is not called).
    let before = op.counters().3;
    assert!(login(&op.client_with(|s| s.fetch_userinfo = false))
        .await
        .is_ok());
    assert_eq!(op.counters().3, before);
}

#[tokio::test]
async fn signed_userinfo_is_refused_not_half_trusted() {
    let op = op().await;
    op.tweak(|t| t.userinfo_as_jwt = true);
    let err = login(&op.client()).await.unwrap_err();
    assert!(matches!(err, OidcError::Userinfo(_)), "{err}");
}

#[tokio::test]
async fn oversized_userinfo_is_refused() {
    let op = op().await;
    op.tweak(|t| {
        t.userinfo
            .insert("padding".into(), json!("x".repeat(2 * 1024 * 1024)));
    });
    // Announced by Content-Length, then streamed without one.
    for chunked in [false, true] {
        op.tweak(|t| t.userinfo_chunked = chunked);
        let err = login(&op.client()).await.unwrap_err();
        assert!(
            matches!(
                err,
                OidcError::ResponseTooLarge {
                    endpoint: "userinfo",
                    ..
                }
            ),
            "chunked={chunked}: {err}"
        );
    }
}

#[tokio::test]
async fn token_endpoint_redirects_are_not_followed() {
    // Following it would replay the code and client credentials to wherever it points.
    let op = op().await;
    op.tweak(|t| t.token_redirect = true);
    let err = login(&op.client()).await.unwrap_err();
    assert!(
        matches!(
            err,
            OidcError::HttpStatus {
                endpoint: "token",
                status: 307
            }
        ),
        "{err}"
    );
    assert_eq!(op.token_hits(), 0);
}

#[tokio::test]
async fn es256_and_ps256_are_accepted() {
    let op = MockOp::start(TestKey::ec("ec-1")).await;
    let id = login(&op.client()).await.unwrap();
    assert_eq!(id.idp_id, "user-1");
    let op = MockOp::start(TestKey::rsa("ps-1", "PS256")).await;
    assert!(login(&op.client()).await.is_ok());
}

#[tokio::test]
async fn algorithms_off_the_allow_list_are_rejected() {
    let op = MockOp::start(TestKey::rsa("rs384", "RS384")).await;
    let err = login(&op.client()).await.unwrap_err();
    assert!(
        matches!(err, OidcError::AlgorithmNotAllowed(ref a) if a == "RS384"),
        "{err}"
    );
    // Allowed when configured (and at_hash is then checked with SHA-384).
    let client = op.client_with(|s| s.allowed_algs.push(SigningAlg::RS384));
    assert!(login(&client).await.is_ok());
    op.tweak(|t| t.wrong_at_hash = true);
    assert!(matches!(
        login(&client).await,
        Err(OidcError::AtHashMismatch)
    ));
    // An RS256-only connection refuses a PS256 token.
    let op = MockOp::start(TestKey::rsa("ps-1", "PS256")).await;
    let client = op.client_with(|s| s.allowed_algs = vec![SigningAlg::RS256]);
    let err = login(&client).await.unwrap_err();
    assert!(
        matches!(err, OidcError::AlgorithmNotAllowed(ref a) if a == "PS256"),
        "{err}"
    );
}

#[tokio::test]
async fn key_rotation_is_followed_without_a_new_client() {
    let op = op().await;
    let client = op.client_with(|s| s.jwks_refetch_min_interval = Duration::from_millis(200));
    assert!(login(&client).await.is_ok());
    assert_eq!(op.jwks_hits(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    op.rotate_to(TestKey::ec("ec-rotated"));
    let id = login(&client).await.unwrap();
    assert_eq!(id.idp_id, "user-1");
    assert_eq!(op.jwks_hits(), 2, "exactly one re-fetch for the new kid");
    // Further logins use the cached new key.
    assert!(login(&client).await.is_ok());
    assert_eq!(op.jwks_hits(), 2);
}

#[tokio::test]
async fn jwks_refetch_is_rate_limited() {
    let op = op().await;
    // The default interval (30 s) is far longer than this test, however loaded the machine.
    let client = op.client();
    assert!(login(&client).await.is_ok());
    assert_eq!(op.jwks_hits(), 1);
    // A burst of tokens with unknown kids: no re-fetch while the interval runs.
    op.tweak(|t| t.sign_with = SignWith::Key(TestKey::rsa("rogue", "RS256")));
    for _ in 0..5 {
        let err = login(&client).await.unwrap_err();
        assert!(
            matches!(
                err,
                OidcError::UnknownSigningKey {
                    rate_limited: true,
                    ..
                }
            ),
            "{err}"
        );
    }
    assert_eq!(op.jwks_hits(), 1);
    // Even a genuine rotation waits for the interval.
    op.tweak(|t| t.sign_with = SignWith::Current);
    op.rotate_to(TestKey::rsa("rsa-2", "RS256"));
    let err = login(&client).await.unwrap_err();
    assert!(
        matches!(
            err,
            OidcError::UnknownSigningKey {
                rate_limited: true,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(op.jwks_hits(), 1);
}

#[tokio::test]
async fn jwks_refetch_resumes_after_the_interval() {
    let op = op().await;
    let interval = Duration::from_millis(300);
    let pause = interval + Duration::from_millis(100);
    let client = op.client_with(|s| s.jwks_refetch_min_interval = interval);
    assert!(login(&client).await.is_ok());
    tokio::time::sleep(pause).await;
    // Unknown kid after the interval: one re-fetch, which does not help a rogue key.
    op.tweak(|t| t.sign_with = SignWith::Key(TestKey::rsa("rogue", "RS256")));
    let err = login(&client).await.unwrap_err();
    assert!(
        matches!(
            err,
            OidcError::UnknownSigningKey {
                rate_limited: false,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(op.jwks_hits(), 2);
    tokio::time::sleep(pause).await;
    op.tweak(|t| t.sign_with = SignWith::Current);
    op.rotate_to(TestKey::rsa("rsa-2", "RS256"));
    assert!(login(&client).await.is_ok());
    assert_eq!(op.jwks_hits(), 3);
}

#[tokio::test]
async fn discovery_is_cached_and_refreshed_after_ttl() {
    let op = op().await;
    let client = op.client();
    assert!(login(&client).await.is_ok());
    assert!(login(&client).await.is_ok());
    assert_eq!(op.counters().0, 1, "discovery fetched once within the TTL");
    let client = op.client_with(|s| s.discovery_ttl = Duration::ZERO);
    assert!(login(&client).await.is_ok());
    assert!(login(&client).await.is_ok());
    // begin and finish each consult discovery: 2 logins x 2 fetches, plus the first client.
    assert_eq!(
        op.counters().0,
        1 + 4,
        "discovery re-fetched on every use with TTL 0"
    );
}
