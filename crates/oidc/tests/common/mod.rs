//! A tiny OpenID Provider for tests: discovery, JWKS, authorize, token, userinfo on 127.0.0.1:0.
//!
//! Keys are generated at run time with openssl. Each behaviour the RP must refuse can be switched
//! on through [`Tweaks`], so every negative test drives a real HTTP code flow.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use idbridge_oidc::{
    AuthMethod, BeginAuth, ConnectionType, FinishParams, Identity, OidcClient, OidcError,
    OidcSettings, Secret,
};
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Signer};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};
use url::Url;

pub const CLIENT_ID: &str = "idbridge-test-client";
pub const CLIENT_SECRET: &str = "sekrit-CLIENT-secret-0123456789";
pub const REDIRECT_URI: &str = "https://app.example.com/sso/callback";

/// A signing key with its JOSE algorithm.
#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    pub alg: &'static str,
    pub pkey: PKey<Private>,
}

impl TestKey {
    pub fn rsa(kid: &str, alg: &'static str) -> Self {
        let rsa = Rsa::generate(2048).unwrap();
        Self {
            kid: kid.into(),
            alg,
            pkey: PKey::from_rsa(rsa).unwrap(),
        }
    }

    pub fn ec(kid: &str) -> Self {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let ec = EcKey::generate(&group).unwrap();
        Self {
            kid: kid.into(),
            alg: "ES256",
            pkey: PKey::from_ec_key(ec).unwrap(),
        }
    }

    /// The public JWK (what the provider publishes).
    pub fn jwk(&self) -> Value {
        if let Ok(rsa) = self.pkey.rsa() {
            json!({"kty":"RSA","kid":self.kid,"use":"sig","alg":self.alg,
                "n":b64(&rsa.n().to_vec()),"e":b64(&rsa.e().to_vec())})
        } else {
            let ec = self.pkey.ec_key().unwrap();
            let mut ctx = BigNumContext::new().unwrap();
            let mut x = openssl::bn::BigNum::new().unwrap();
            let mut y = openssl::bn::BigNum::new().unwrap();
            ec.public_key()
                .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
                .unwrap();
            json!({"kty":"EC","kid":self.kid,"use":"sig","alg":"ES256","crv":"P-256",
                "x":b64(&x.to_vec_padded(32).unwrap()),"y":b64(&y.to_vec_padded(32).unwrap())})
        }
    }

    /// The public key as PEM: the bytes an attacker would use as an HMAC key.
    pub fn public_pem(&self) -> Vec<u8> {
        self.pkey.public_key_to_pem().unwrap()
    }

    pub fn sign(&self, input: &[u8]) -> Vec<u8> {
        let md = digest_for(self.alg);
        let mut signer = Signer::new(md, &self.pkey).unwrap();
        if self.alg.starts_with("PS") {
            signer.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
            signer
                .set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
                .unwrap();
            signer.set_rsa_mgf1_md(md).unwrap();
        }
        signer.update(input).unwrap();
        let sig = signer.sign_to_vec().unwrap();
        if self.alg.starts_with("ES") {
            let sig = EcdsaSig::from_der(&sig).unwrap();
            let mut raw = sig.r().to_vec_padded(32).unwrap();
            raw.extend(sig.s().to_vec_padded(32).unwrap());
            raw
        } else {
            sig
        }
    }
}

fn digest_for(alg: &str) -> MessageDigest {
    match &alg[2..] {
        "384" => MessageDigest::sha384(),
        "512" => MessageDigest::sha512(),
        _ => MessageDigest::sha256(),
    }
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `at_hash` computed independently of the crate (OIDC Core §3.1.3.6).
pub fn at_hash(token: &str, alg: &str) -> String {
    let d: Vec<u8> = match &alg[2..] {
        "384" => Sha384::digest(token).to_vec(),
        "512" => Sha512::digest(token).to_vec(),
        _ => Sha256::digest(token).to_vec(),
    };
    b64(&d[..d.len() / 2])
}

/// How the next ID token is signed.
#[derive(Clone)]
pub enum SignWith {
    /// The current signing key.
    Current,
    /// A specific key (may be unpublished).
    Key(TestKey),
    /// A specific key but a header `kid` naming another one.
    KeyWithKid(TestKey, String),
    /// `alg: none`, empty signature.
    None,
    /// HS256 with these key bytes and this `kid`.
    Hmac(Vec<u8>, String),
}

/// Knobs for the next tokens the provider issues.
#[derive(Clone)]
pub struct Tweaks {
    /// Merged over the default ID token claims; `null` removes a claim.
    pub claims: Map<String, Value>,
    pub sign_with: SignWith,
    /// Replace `at_hash` with a wrong value.
    pub wrong_at_hash: bool,
    /// Merged over the default userinfo; `null` removes a claim.
    pub userinfo: Map<String, Value>,
    /// Discovery `issuer` override.
    pub discovery_issuer: Option<String>,
    /// Expected client authentication at the token endpoint.
    pub auth_method: AuthMethod,
    /// Discovery points the token endpoint at a URL that 307-redirects to the real one.
    pub token_redirect: bool,
    /// Userinfo answers with `application/jwt` (a signed userinfo response).
    pub userinfo_as_jwt: bool,
    /// Userinfo streams its body in chunks without a Content-Length.
    pub userinfo_chunked: bool,
    /// Discovery advertises RFC 9207 `authorization_response_iss_parameter_supported`.
    pub advertise_iss_param: bool,
}

impl Default for Tweaks {
    fn default() -> Self {
        Self {
            claims: Map::new(),
            sign_with: SignWith::Current,
            wrong_at_hash: false,
            userinfo: Map::new(),
            discovery_issuer: None,
            auth_method: AuthMethod::ClientSecretBasic,
            token_redirect: false,
            userinfo_as_jwt: false,
            userinfo_chunked: false,
            advertise_iss_param: false,
        }
    }
}

struct CodeGrant {
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    used: bool,
}

#[derive(Default)]
pub struct Counters {
    pub discovery: usize,
    pub jwks: usize,
    pub token: usize,
    pub userinfo: usize,
}

struct OpState {
    issuer: String,
    signing: TestKey,
    published: Vec<TestKey>,
    tweaks: Tweaks,
    codes: HashMap<String, CodeGrant>,
    access_tokens: HashMap<String, String>,
    counters: Counters,
    seq: u64,
}

/// A running provider; dropped with the test's runtime.
#[derive(Clone)]
pub struct MockOp {
    pub issuer: String,
    state: Arc<Mutex<OpState>>,
}

impl MockOp {
    pub async fn start(signing: TestKey) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let issuer = format!("http://127.0.0.1:{}", addr.port());
        let state = Arc::new(Mutex::new(OpState {
            issuer: issuer.clone(),
            published: vec![signing.clone()],
            signing,
            tweaks: Tweaks::default(),
            codes: HashMap::new(),
            access_tokens: HashMap::new(),
            counters: Counters::default(),
            seq: 0,
        }));
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route(
                "/redirect-token",
                post(|| async { Redirect::temporary("/token") }),
            )
            .route("/userinfo", get(userinfo))
            .with_state(state.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { issuer, state }
    }

    pub fn tweak(&self, f: impl FnOnce(&mut Tweaks)) {
        f(&mut self.state.lock().unwrap().tweaks);
    }

    /// Sets one ID token claim for the next tokens (`Value::Null` removes it).
    pub fn claim(&self, name: &str, value: Value) {
        self.tweak(|t| {
            t.claims.insert(name.into(), value);
        });
    }

    /// Key rotation: `new` signs from now on and is the only published key.
    pub fn rotate_to(&self, new: TestKey) {
        let mut st = self.state.lock().unwrap();
        st.published = vec![new.clone()];
        st.signing = new;
    }

    /// Publishes `key` next to the current ones (no change of signer).
    pub fn publish(&self, key: TestKey) {
        self.state.lock().unwrap().published.push(key);
    }

    pub fn signing_key(&self) -> TestKey {
        self.state.lock().unwrap().signing.clone()
    }

    pub fn counters(&self) -> (usize, usize, usize, usize) {
        let st = self.state.lock().unwrap();
        let c = &st.counters;
        (c.discovery, c.jwks, c.token, c.userinfo)
    }

    pub fn jwks_hits(&self) -> usize {
        self.counters().1
    }

    pub fn token_hits(&self) -> usize {
        self.counters().2
    }

    /// Settings for an RP talking to this provider.
    pub fn settings(&self) -> OidcSettings {
        let mut s = OidcSettings::new(
            ConnectionType::GenericOidc,
            self.issuer.clone(),
            CLIENT_ID,
            Secret::new(CLIENT_SECRET),
        );
        s.auth_method = self.state.lock().unwrap().tweaks.auth_method;
        s
    }

    pub fn client(&self) -> OidcClient {
        self.client_with(|_| {})
    }

    pub fn client_with(&self, f: impl FnOnce(&mut OidcSettings)) -> OidcClient {
        let mut s = self.settings();
        f(&mut s);
        OidcClient::new(s, idbridge_oidc::default_http_client().unwrap()).unwrap()
    }
}

/// A browser: follows the authorization URL to the provider and reads the callback redirect.
pub async fn browse(begin: &BeginAuth) -> (String, String, Option<String>) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = http.get(begin.url.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 303, "authorize should redirect");
    let loc = resp.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    let loc = Url::parse(&loc).unwrap();
    assert!(loc.as_str().starts_with(REDIRECT_URI));
    let q: HashMap<String, String> = loc.query_pairs().into_owned().collect();
    (q["code"].clone(), q["state"].clone(), q.get("iss").cloned())
}

/// A login up to the callback: what `begin` bound to the browser and what the callback carried.
pub struct Flow {
    pub begin: BeginAuth,
    pub code: String,
    pub state: String,
    pub iss: Option<String>,
    pub redirect: Url,
}

impl Flow {
    pub async fn start(client: &OidcClient) -> Result<Self, OidcError> {
        let redirect = Url::parse(REDIRECT_URI).unwrap();
        let begin = client.begin(&redirect, Some("ada@example.com")).await?;
        let (code, state, iss) = browse(&begin).await;
        Ok(Self {
            begin,
            code,
            state,
            iss,
            redirect,
        })
    }

    /// The honest callback parameters; tests override single fields to forge one.
    pub fn params(&self) -> FinishParams<'_> {
        FinishParams {
            code: &self.code,
            returned_state: &self.state,
            expected_state: &self.begin.state,
            returned_iss: self.iss.as_deref(),
            nonce: &self.begin.nonce,
            pkce_verifier: self.begin.pkce_verifier.expose(),
            redirect_uri: &self.redirect,
        }
    }
}

/// A whole login: begin, browser round trip, finish.
pub async fn login(client: &OidcClient) -> Result<Identity, OidcError> {
    let flow = Flow::start(client).await?;
    client.finish(flow.params()).await
}

type Shared = State<Arc<Mutex<OpState>>>;

async fn discovery(State(st): Shared) -> Json<Value> {
    let mut st = st.lock().unwrap();
    st.counters.discovery += 1;
    let base = st.issuer.clone();
    let issuer = st.tweaks.discovery_issuer.clone().unwrap_or(base.clone());
    let token_path = if st.tweaks.token_redirect {
        "redirect-token"
    } else {
        "token"
    };
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/{token_path}"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        // An algorithm openidconnect's enums do not know must not break discovery.
        "id_token_signing_alg_values_supported": ["RS256","PS256","ES256","Ed25519"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": st.tweaks.advertise_iss_param,
        "token_endpoint_auth_methods_supported": ["client_secret_basic","client_secret_post"]
    }))
}

async fn jwks(State(st): Shared) -> Json<Value> {
    let mut st = st.lock().unwrap();
    st.counters.jwks += 1;
    let mut keys: Vec<Value> = st.published.iter().map(TestKey::jwk).collect();
    // Keys an RP must skip without failing.
    keys.push(json!({"kty":"OKP","crv":"X25519","kid":"enc-x25519","use":"enc","x":"AAAA"}));
    Json(json!({ "keys": keys }))
}

async fn authorize(State(st): Shared, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut st = st.lock().unwrap();
    assert_eq!(q.get("response_type").map(String::as_str), Some("code"));
    assert_eq!(q.get("client_id").map(String::as_str), Some(CLIENT_ID));
    assert_eq!(
        q.get("code_challenge_method").map(String::as_str),
        Some("S256")
    );
    assert!(q["scope"].split(' ').any(|s| s == "openid"));
    st.seq += 1;
    let code = format!("code-{}-{}", st.seq, b64(&rand_bytes()));
    st.codes.insert(
        code.clone(),
        CodeGrant {
            redirect_uri: q["redirect_uri"].clone(),
            challenge: q["code_challenge"].clone(),
            nonce: q.get("nonce").cloned(),
            used: false,
        },
    );
    let mut cb = Url::parse(&q["redirect_uri"]).unwrap();
    cb.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &q["state"])
        .append_pair("iss", &st.issuer);
    Redirect::to(cb.as_str()).into_response()
}

fn rand_bytes() -> [u8; 16] {
    let mut b = [0u8; 16];
    openssl::rand::rand_bytes(&mut b).unwrap();
    b
}

fn oauth_error(status: StatusCode, error: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": format!("mock: {error}")})),
    )
        .into_response()
}

async fn token(
    State(st): Shared,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let mut st = st.lock().unwrap();
    st.counters.token += 1;
    // Client authentication, exactly as configured.
    let authed = match st.tweaks.auth_method {
        AuthMethod::ClientSecretBasic => {
            let expected = format!(
                "Basic {}",
                STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
            );
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                == Some(expected.as_str())
                && !f.contains_key("client_secret")
        }
        AuthMethod::ClientSecretPost => {
            headers.get(header::AUTHORIZATION).is_none()
                && f.get("client_id").map(String::as_str) == Some(CLIENT_ID)
                && f.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
        }
    };
    if !authed {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    if f.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    let Some(grant) = f.get("code").and_then(|c| st.codes.get_mut(c)) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    };
    if grant.used {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    grant.used = true;
    let verifier = f.get("code_verifier").cloned().unwrap_or_default();
    if b64(&Sha256::digest(verifier.as_bytes())) != grant.challenge
        || f.get("redirect_uri") != Some(&grant.redirect_uri)
    {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let nonce = grant.nonce.clone();
    st.seq += 1;
    let access_token = format!("at-{}-{}", st.seq, b64(&rand_bytes()));
    let sub = "user-1".to_string();
    st.access_tokens.insert(access_token.clone(), sub.clone());
    let id_token = mint(&st, &sub, nonce.as_deref(), &access_token);
    Json(
        json!({"access_token": access_token, "token_type": "Bearer", "expires_in": 300,
        "id_token": id_token}),
    )
    .into_response()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn merge(base: &mut Map<String, Value>, over: &Map<String, Value>) {
    for (k, v) in over {
        if v.is_null() {
            base.remove(k);
        } else {
            base.insert(k.clone(), v.clone());
        }
    }
}

fn mint(st: &OpState, sub: &str, nonce: Option<&str>, access_token: &str) -> String {
    let t = &st.tweaks;
    let (alg, kid, key): (String, Option<String>, Option<TestKey>) = match &t.sign_with {
        SignWith::Current => (
            st.signing.alg.into(),
            Some(st.signing.kid.clone()),
            Some(st.signing.clone()),
        ),
        SignWith::Key(k) => (k.alg.into(), Some(k.kid.clone()), Some(k.clone())),
        SignWith::KeyWithKid(k, kid) => (k.alg.into(), Some(kid.clone()), Some(k.clone())),
        SignWith::None => ("none".into(), None, None),
        SignWith::Hmac(_, kid) => ("HS256".into(), Some(kid.clone()), None),
    };
    let hash_alg = if alg.len() == 5 {
        alg.clone()
    } else {
        "RS256".into()
    };
    let mut claims = json!({
        "iss": st.issuer, "aud": CLIENT_ID, "sub": sub,
        "iat": now(), "exp": now() + 300,
        "email": "ada@example.com", "given_name": "Ada", "family_name": "Lovelace",
        "groups": ["engineering", "admins"],
        "at_hash": if t.wrong_at_hash { at_hash("another-token", &hash_alg) } else { at_hash(access_token, &hash_alg) },
    })
    .as_object()
    .cloned()
    .unwrap();
    if let Some(n) = nonce {
        claims.insert("nonce".into(), n.into());
    }
    merge(&mut claims, &t.claims);
    let mut header = json!({"alg": alg, "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = kid.into();
    }
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(Value::Object(claims).to_string().as_bytes())
    );
    let sig = match (&t.sign_with, key) {
        (SignWith::None, _) => Vec::new(),
        (SignWith::Hmac(secret, _), _) => {
            let pkey = PKey::hmac(secret).unwrap();
            let mut s = Signer::new(MessageDigest::sha256(), &pkey).unwrap();
            s.update(input.as_bytes()).unwrap();
            s.sign_to_vec().unwrap()
        }
        (_, Some(k)) => k.sign(input.as_bytes()),
        (_, None) => unreachable!(),
    };
    format!("{input}.{}", b64(&sig))
}

async fn userinfo(State(st): Shared, headers: HeaderMap) -> Response {
    let mut st = st.lock().unwrap();
    st.counters.userinfo += 1;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let Some(sub) = st.access_tokens.get(token).cloned() else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let mut info = json!({"sub": sub, "email": "ada@example.com", "email_verified": true,
        "department": "Analytical Engines"})
    .as_object()
    .cloned()
    .unwrap();
    merge(&mut info, &st.tweaks.userinfo);
    if st.tweaks.userinfo_as_jwt {
        let body = format!(
            "e30.{}.sig",
            b64(Value::Object(info).to_string().as_bytes())
        );
        return ([(header::CONTENT_TYPE, "application/jwt")], body).into_response();
    }
    if st.tweaks.userinfo_chunked {
        let bytes = Value::Object(info).to_string().into_bytes();
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            bytes.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
        let body = axum::body::Body::from_stream(futures::stream::iter(chunks));
        return ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    }
    Json(Value::Object(info)).into_response()
}
