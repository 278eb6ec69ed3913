//! idbridge as an OpenID Provider (`idbridge_oidc::op`), served by the test wiring in
//! `op_server`, with independent relying parties completing logins and validating the tokens:
//! `openid-client` (npm, v6: oauth4webapi + jose) and idbridge's own RP (`openidconnect`
//! crate). Both client authentication methods, a key rollover, a tampered ID token, and the
//! token endpoint's refusals (wrong secret, replayed code, PKCE, redirect URI) over HTTP.
//! Install the npm peer with `scripts/test-deps.d/oidc.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod op_server;

use std::process::Stdio;

use idbridge_oidc::op::OpSigningKey;
use idbridge_oidc::{
    default_http_client, AuthMethod, ConnectionType, FinishParams, OidcClient, OidcSettings, Secret,
};
use op_server::*;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use url::Url;

fn peer_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peer")
}

/// Run openid-client's login (tests/peer/rp.mjs); its JSON, or its error output.
async fn openid_client(issuer: &str, auth: &str, secret: &str) -> Result<Value, String> {
    assert!(
        peer_dir()
            .join("node_modules/openid-client/package.json")
            .exists(),
        "openid-client is not installed: run scripts/test-deps.d/oidc.sh"
    );
    let cfg = json!({
        "issuer": issuer,
        "clientId": CLIENT_ID,
        "clientSecret": secret,
        "authMethod": auth,
        "redirectUri": REDIRECT_URI,
        "scope": "openid email profile",
    });
    let mut child = tokio::process::Command::new("node")
        .arg("rp.mjs")
        .current_dir(peer_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(cfg.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("openid-client timed out")
        .unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn check_claims(v: &Value, issuer: &str) {
    let u = test_user();
    let c = &v["claims"];
    assert_eq!(c["iss"], json!(issuer));
    assert_eq!(c["aud"], json!(CLIENT_ID));
    assert_eq!(c["sub"], json!(u.sub));
    assert_eq!(c["email"], json!(u.email));
    assert_eq!(c["email_verified"], json!(true));
    assert_eq!(c["given_name"], json!(u.given_name));
    assert_eq!(c["family_name"], json!(u.family_name));
    assert_eq!(c["name"], json!(u.name));
    // The client releases groups without the scope (WorkOS asks for openid profile email).
    assert_eq!(c["groups"], json!(u.groups));
    for k in ["nonce", "at_hash", "auth_time", "iat", "exp"] {
        assert!(c.get(k).is_some(), "{k} missing from {c}");
    }
    let info = &v["userinfo"];
    assert_eq!(info["sub"], json!(u.sub));
    assert_eq!(info["email"], json!(u.email));
    assert_eq!(info["groups"], json!(u.groups));
    assert_eq!(v["tokenType"], json!("bearer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openid_client_logs_in_with_basic_and_post() {
    let op = start(
        vec![OpSigningKey::generate(2048).unwrap()],
        Tweaks::default(),
    )
    .await;
    for auth in ["client_secret_basic", "client_secret_post"] {
        let v = openid_client(&op.issuer, auth, CLIENT_SECRET)
            .await
            .unwrap_or_else(|e| panic!("openid-client ({auth}) refused: {e}"));
        check_claims(&v, &op.issuer);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openid_client_follows_a_key_rollover() {
    // The next key signs; the previous one is still published beside it.
    let keys = vec![
        OpSigningKey::generate(2048).unwrap(),
        OpSigningKey::generate(3072).unwrap(),
    ];
    let op = start(keys, Tweaks::default()).await;
    let v = openid_client(&op.issuer, "client_secret_basic", CLIENT_SECRET)
        .await
        .unwrap();
    check_claims(&v, &op.issuer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openid_client_refuses_a_tampered_id_token_and_we_refuse_a_wrong_secret() {
    let op = start(
        vec![OpSigningKey::generate(2048).unwrap()],
        Tweaks {
            tamper_signature: true,
        },
    )
    .await;
    let e = openid_client(&op.issuer, "client_secret_basic", CLIENT_SECRET)
        .await
        .unwrap_err();
    assert!(e.to_lowercase().contains("signature"), "{e}");
    // Our own RP refuses it too.
    let rp = our_rp(
        &op.issuer,
        AuthMethod::ClientSecretBasic,
        &["openid", "email"],
    );
    let err = our_login(&rp, &op.issuer).await.unwrap_err();
    assert!(
        matches!(err, idbridge_oidc::OidcError::InvalidSignature(_)),
        "{err}"
    );
    let op = start(
        vec![OpSigningKey::generate(2048).unwrap()],
        Tweaks::default(),
    )
    .await;
    let e = openid_client(&op.issuer, "client_secret_post", "not-the-secret")
        .await
        .unwrap_err();
    assert!(e.contains("invalid_client"), "{e}");
}

fn our_rp(issuer: &str, auth: AuthMethod, scopes: &[&str]) -> OidcClient {
    let mut s = OidcSettings::new(
        ConnectionType::GenericOidc,
        issuer,
        CLIENT_ID,
        Secret::new(CLIENT_SECRET),
    );
    s.auth_method = auth;
    s.scopes = scopes.iter().map(|x| x.to_string()).collect();
    OidcClient::new(s, default_http_client().unwrap()).unwrap()
}

/// A whole login with idbridge's own RP: begin, follow the authorization URL, finish.
async fn our_login(
    rp: &OidcClient,
    issuer: &str,
) -> Result<idbridge_model::Identity, idbridge_oidc::OidcError> {
    let redirect = Url::parse(REDIRECT_URI).unwrap();
    let begin = rp.begin(&redirect, Some("zoe")).await.unwrap();
    let q = callback(&begin.url).await;
    assert_eq!(q["iss"], issuer, "RFC 9207 iss on the callback");
    rp.finish(FinishParams {
        code: &q["code"],
        returned_state: &q["state"],
        expected_state: &begin.state,
        returned_iss: q.get("iss").map(String::as_str),
        nonce: &begin.nonce,
        pkce_verifier: begin.pkce_verifier.expose(),
        redirect_uri: &redirect,
    })
    .await
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Follow the authorization URL; the callback's query.
async fn callback(url: &Url) -> std::collections::HashMap<String, String> {
    let r = no_redirects().get(url.clone()).send().await.unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    let loc = Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert!(loc.as_str().starts_with(REDIRECT_URI));
    loc.query_pairs().into_owned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idbridge_rp_logs_in_against_idbridge_op() {
    let op = start(
        vec![OpSigningKey::generate(2048).unwrap()],
        Tweaks::default(),
    )
    .await;
    for auth in [AuthMethod::ClientSecretBasic, AuthMethod::ClientSecretPost] {
        let rp = our_rp(&op.issuer, auth, &["openid", "email", "profile", "groups"]);
        let id = our_login(&rp, &op.issuer)
            .await
            .unwrap_or_else(|e| panic!("{auth:?}: {e}"));
        let u = test_user();
        assert_eq!(id.idp_id, u.sub);
        assert_eq!(id.email, u.email);
        assert_eq!(id.first_name, u.given_name);
        assert_eq!(id.last_name, u.family_name);
        assert_eq!(id.groups, u.groups);
    }
}

/// A code for the test user, obtained with `challenge` (S256) when given.
async fn code_for(op: &RunningOp, challenge: Option<&str>) -> String {
    let mut url = Url::parse(&format!("{}/authorize", op.issuer)).unwrap();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("client_id", CLIENT_ID)
            .append_pair("redirect_uri", REDIRECT_URI)
            .append_pair("response_type", "code")
            .append_pair("scope", "openid email")
            .append_pair("state", "st");
        if let Some(c) = challenge {
            q.append_pair("code_challenge", c)
                .append_pair("code_challenge_method", "S256");
        }
    }
    callback(&url).await.remove("code").unwrap()
}

async fn token_call(
    op: &RunningOp,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (u16, Value, Option<String>) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/token", op.issuer))
        .form(form);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let www = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, r.json().await.unwrap(), www)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_refusals_over_http() {
    let op = start(
        vec![OpSigningKey::generate(2048).unwrap()],
        Tweaks::default(),
    )
    .await;
    let basic = Some((CLIENT_ID, CLIENT_SECRET));

    // Wrong secret: 401 invalid_client with a Basic challenge.
    let code = code_for(&op, None).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
    ];
    let (status, body, www) = token_call(&op, &form, Some((CLIENT_ID, "wrong"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert!(www.unwrap().starts_with("Basic "));

    // The right secret works once; the same code again is invalid_grant.
    let code = code_for(&op, None).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
    ];
    let (status, body, _) = token_call(&op, &form, basic).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    let (status, body, _) = token_call(&op, &form, basic).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // Another redirect_uri than the authorization request's.
    let code = code_for(&op, None).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "https://auth.workos.test/other"),
    ];
    assert_eq!(
        token_call(&op, &form, basic).await.1["error"],
        "invalid_grant"
    );

    // PKCE: the right verifier works, a wrong or missing one does not, a verifier for a code
    // issued without a challenge does not either.
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"; // RFC 7636 appendix B
    for (v, ok) in [
        (Some(verifier), true),
        (Some("x".repeat(43).as_str()), false),
        (None, false),
    ] {
        let code = code_for(&op, Some(challenge)).await;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT_URI),
        ];
        let owned;
        if let Some(v) = v {
            owned = v.to_owned();
            form.push(("code_verifier", owned.as_str()));
        }
        let (status, body, _) = token_call(&op, &form, basic).await;
        assert_eq!(status == 200, ok, "{v:?}: {body}");
    }
    let code = code_for(&op, None).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", verifier),
    ];
    assert_eq!(
        token_call(&op, &form, basic).await.1["error"],
        "invalid_grant"
    );

    // Unsupported grant type and duplicated parameters.
    let form = [("grant_type", "password"), ("code", "x")];
    assert_eq!(
        token_call(&op, &form, basic).await.1["error"],
        "unsupported_grant_type"
    );
    let form = [
        ("grant_type", "authorization_code"),
        ("code", "a"),
        ("code", "b"),
    ];
    assert_eq!(
        token_call(&op, &form, basic).await.1["error"],
        "invalid_request"
    );

    // Userinfo without or with a bad token: 401 with a Bearer challenge.
    let r = reqwest::Client::new()
        .get(format!("{}/userinfo", op.issuer))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_endpoint_never_redirects_to_an_unregistered_uri() {
    let op = start(
        vec![OpSigningKey::generate(2048).unwrap()],
        Tweaks::default(),
    )
    .await;
    let get = |q: &str| {
        let url = format!("{}/authorize?{q}", op.issuer);
        async move { no_redirects().get(url).send().await.unwrap() }
    };
    let evil = url::form_urlencoded::byte_serialize(b"https://evil.test/cb").collect::<String>();
    let ours = url::form_urlencoded::byte_serialize(REDIRECT_URI.as_bytes()).collect::<String>();
    for q in [
        format!("client_id={CLIENT_ID}&redirect_uri={evil}&response_type=code&scope=openid"),
        format!("client_id={CLIENT_ID}&redirect_uri={ours}%2F&response_type=code&scope=openid"),
        format!("client_id=nobody&redirect_uri={ours}&response_type=code&scope=openid"),
        format!("client_id={CLIENT_ID}&client_id={CLIENT_ID}&redirect_uri={ours}&response_type=code&scope=openid"),
    ] {
        let r = get(&q).await;
        assert_eq!(r.status(), 400, "{q}");
        assert!(r.headers().get("location").is_none(), "{q}");
    }
    // After the redirect URI is verified, errors go back to the client with state and iss.
    let r = get(&format!(
        "client_id={CLIENT_ID}&redirect_uri={ours}&response_type=token&scope=openid&state=s1"
    ))
    .await;
    assert_eq!(r.status(), 302);
    let loc = Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let q: std::collections::HashMap<_, _> = loc.query_pairs().into_owned().collect();
    assert_eq!(q["error"], "unsupported_response_type");
    assert_eq!(q["state"], "s1");
    assert_eq!(q["iss"], op.issuer);
    let r = get(&format!(
        "client_id={CLIENT_ID}&redirect_uri={ours}&response_type=code&scope=email"
    ))
    .await;
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(loc.contains("error=invalid_scope"), "{loc}");
    let r = get(&format!("client_id={CLIENT_ID}&redirect_uri={ours}&response_type=code&scope=openid&code_challenge=abc&code_challenge_method=plain")).await;
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .contains("error=invalid_request"));
}
