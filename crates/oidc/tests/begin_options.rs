//! The app's per-login extras on the provider's authorization URL: `provider_scopes` become
//! extra scopes (well-formed ones only, bounded), `prompt=login` forces a new sign-in.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use idbridge_oidc::{BeginOptions, MAX_EXTRA_SCOPES};
use url::Url;

fn query(url: &Url) -> std::collections::HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

#[tokio::test]
async fn extra_scopes_and_prompt_login_reach_the_provider() {
    let op = MockOp::start(TestKey::rsa("rsa-1", "RS256")).await;
    let client = op.client();
    let redirect = Url::parse(REDIRECT_URI).unwrap();
    let extra: Vec<String> = [
        "groups",
        "email",
        "offline_access",
        "bad scope",
        "quo\"te",
        "",
    ]
    .map(String::from)
    .to_vec();
    let b = client
        .begin_with(
            &redirect,
            &BeginOptions {
                login_hint: Some("ada@example.com"),
                extra_scopes: &extra,
                force_login: true,
            },
        )
        .await
        .unwrap();
    let q = query(&b.url);
    // Connection scopes first, then the new extras once each; malformed tokens are dropped.
    assert_eq!(q["scope"], "openid profile email groups offline_access");
    assert_eq!(q["prompt"], "login");
    assert_eq!(q["login_hint"], "ada@example.com");

    // Without extras: the connection's scopes and no prompt, exactly as `begin`.
    let plain = client
        .begin_with(&redirect, &BeginOptions::default())
        .await
        .unwrap();
    let q = query(&plain.url);
    assert_eq!(q["scope"], "openid profile email");
    assert!(!q.contains_key("prompt"));
    assert!(!q.contains_key("login_hint"));
}

#[tokio::test]
async fn extra_scopes_are_bounded() {
    let op = MockOp::start(TestKey::rsa("rsa-1", "RS256")).await;
    let client = op.client();
    let redirect = Url::parse(REDIRECT_URI).unwrap();
    let many: Vec<String> = (0..100).map(|i| format!("s{i}")).collect();
    let long = vec!["x".repeat(129)];
    let b = client
        .begin_with(
            &redirect,
            &BeginOptions {
                extra_scopes: &many,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let scopes = query(&b.url)["scope"].split(' ').count();
    assert_eq!(scopes, 3 + MAX_EXTRA_SCOPES);
    let b = client
        .begin_with(
            &redirect,
            &BeginOptions {
                extra_scopes: &long,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(query(&b.url)["scope"], "openid profile email");
}
