//! Full SP-initiated SAML logins per second: `GET /sso/authorize` → the IdP signs a response to
//! the AuthnRequest → `POST /sso/saml/acs/{conn}` → `POST /sso/token` → `GET /sso/profile`,
//! over real loopback HTTP against a durable store on disk, beside Ory Polis's SSO flow
//! (authorize → samlResponse → token → userInfo, in process, mem engine) on the same machine.
//!
//! Run: `cargo bench -p idbridge-api --bench full_login` (env `LOGINS`, default 300; `CLIENTS`,
//! default 8, for the concurrent figure; `STORE_DIR` for the store's parent directory, default
//! the system temp dir, which is on disk here). Polis runs from `benches/polis_login.mjs` with
//! the install of `scripts/bench-deps.sh`.
//!
//! The 1-client figures time only the service provider's four requests (the IdP's RSA signature
//! is the IdP's work and is left out on both sides). The concurrent figure is wall-clock with
//! the IdP signing inside each client's loop, so it is a lower bound for the SP. Every login
//! must end with the expected profile, and a tampered response must be refused, on both sides.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use idbridge_api::{router, ApiConfig, AppState};
use idbridge_saml::idp::{b64, AssertionSpec, IdpSigner, ResponseSpec, SignMode};
use idbridge_sso::api_keys as auth;
use idbridge_sso::{SecretBox, SsoConfig};
use idbridge_store::{SqliteStore, Store};
use serde_json::{json, Value};

#[path = "common/polis.rs"]
mod polis;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const APP_CB: &str = "https://app.bench.test/callback";
const IDP_ENTITY: &str = "https://idp.bench.test";
const IDP_SSO: &str = "https://idp.bench.test/sso";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Target {
    base: String,
    client_id: String,
    conn_id: String,
    key: String,
    idp: Arc<IdpSigner>,
    http: reqwest::Client,
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn query_param(location: &str, name: &str) -> Option<String> {
    let url = url::Url::parse(location).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn location(resp: &reqwest::Response) -> Res<String> {
    Ok(resp
        .headers()
        .get(reqwest::header::LOCATION)
        .ok_or_else(|| format!("no Location (HTTP {})", resp.status()))?
        .to_str()?
        .to_owned())
}

/// What the SP answered to authorize: the AuthnRequest id, RelayState and the session cookie.
struct Started {
    request_id: String,
    relay: String,
    cookie: String,
}

impl Target {
    async fn authorize(&self, i: usize) -> Res<Started> {
        let url = format!(
            "{}/sso/authorize?client_id={}&redirect_uri={}&response_type=code&connection={}&state=st-{i}",
            self.base,
            self.client_id,
            urlencode(APP_CB),
            self.conn_id
        );
        let r = self.http.get(url).send().await?;
        if r.status() != reqwest::StatusCode::FOUND {
            return Err(format!("authorize: HTTP {}: {}", r.status(), r.text().await?).into());
        }
        let loc = location(&r)?;
        let cookie = r
            .headers()
            .get(reqwest::header::SET_COOKIE)
            .ok_or("authorize set no cookie")?
            .to_str()?
            .split(';')
            .next()
            .unwrap_or_default()
            .to_owned();
        let req = query_param(&loc, "SAMLRequest").ok_or("no SAMLRequest")?;
        let relay = query_param(&loc, "RelayState").ok_or("no RelayState")?;
        let xml = idbridge_saml::decode_redirect_binding(&req)?;
        let request_id = xml
            .split(" ID=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .ok_or("no ID in the AuthnRequest")?
            .to_owned();
        Ok(Started {
            request_id,
            relay,
            cookie,
        })
    }

    /// The IdP's signed response (not the SP's work: never timed).
    fn idp_response(&self, request_id: &str, email: &str) -> Res<String> {
        let acs = format!("{}/sso/saml/acs/{}", self.base, self.conn_id);
        let sp_entity = format!("{}/sso/saml/{}", self.base, self.conn_id);
        let now = chrono::Utc::now();
        let mut a = AssertionSpec::new(IDP_ENTITY, &sp_entity, &acs, email, Some(request_id), now)?;
        a.attributes = vec![
            ("id".into(), vec![format!("idp-{email}")]),
            ("email".into(), vec![email.into()]),
            ("firstName".into(), vec!["Bench".into()]),
            ("lastName".into(), vec!["User".into()]),
            ("groups".into(), vec!["Engineering".into()]),
        ];
        let r = ResponseSpec::new(IDP_ENTITY, &acs, Some(request_id), now)?;
        Ok(b64(&self.idp.response(&r, &a, SignMode::Response)?))
    }

    /// ACS: returns the code from the redirect to the app.
    async fn acs(&self, started: &Started, saml: &str) -> Res<String> {
        let body = format!(
            "SAMLResponse={}&RelayState={}",
            urlencode(saml),
            urlencode(&started.relay)
        );
        let r = self
            .http
            .post(format!("{}/sso/saml/acs/{}", self.base, self.conn_id))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", &started.cookie)
            .body(body)
            .send()
            .await?;
        let loc = location(&r)?;
        query_param(&loc, "code").ok_or_else(|| format!("no code in {loc}").into())
    }

    async fn token_and_profile(&self, code: &str) -> Res<Value> {
        let t: Value = self
            .http
            .post(format!("{}/sso/token", self.base))
            .form(&[
                ("grant_type", "authorization_code"),
                ("client_id", &self.client_id),
                ("client_secret", &self.key),
                ("code", code),
            ])
            .send()
            .await?
            .json()
            .await?;
        let token = t["access_token"]
            .as_str()
            .ok_or_else(|| format!("token: {t}"))?;
        Ok(self
            .http
            .get(format!("{}/sso/profile", self.base))
            .bearer_auth(token)
            .send()
            .await?
            .json()
            .await?)
    }

    /// One login; returns the time spent in the SP's four requests.
    async fn login(&self, i: usize) -> Res<Duration> {
        let email = format!("user{i}@bench.test");
        let t0 = Instant::now();
        let started = self.authorize(i).await?;
        let mut sp = t0.elapsed();
        let saml = self.idp_response(&started.request_id, &email)?;
        let t1 = Instant::now();
        let code = self.acs(&started, &saml).await?;
        let profile = self.token_and_profile(&code).await?;
        sp += t1.elapsed();
        if profile["email"] != json!(email) {
            return Err(format!("login {i}: expected {email}, got {profile}").into());
        }
        Ok(sp)
    }
}

async fn start_idbridge(store: Arc<dyn Store>) -> Res<Target> {
    let boot = auth::bootstrap(store.as_ref())?.ok_or("store already bootstrapped")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let state = AppState::new(
        store.clone(),
        ApiConfig {
            public_url: base.clone(),
            ..ApiConfig::default()
        },
    )
    .with_sso(
        SsoConfig {
            redirect_uris: vec![APP_CB.into()],
            ..SsoConfig::default()
        },
        Some(SecretBox::generate()?),
    );
    let app = router(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(64)
        .build()?;
    let idp = Arc::new(IdpSigner::generate(IDP_ENTITY)?);
    let org: Value = http
        .post(format!("{base}/organizations"))
        .bearer_auth(&boot.api_key)
        .json(&json!({"name": "Bench", "domain_data": [{"domain": "bench.test", "state": "verified"}]}))
        .send()
        .await?
        .json()
        .await?;
    let cert = String::from_utf8(idp.keys.cert.to_pem()?)?;
    let conn: Value = http
        .post(format!("{base}/connections"))
        .bearer_auth(&boot.api_key)
        .json(&json!({
            "organization_id": org["id"],
            "connection_type": "GenericSAML",
            "saml_options": {
                "idp_entity_id": IDP_ENTITY,
                "idp_sso_url": IDP_SSO,
                "idp_signing_certs": [cert],
            },
        }))
        .send()
        .await?
        .json()
        .await?;
    let conn_id = conn["id"]
        .as_str()
        .ok_or_else(|| format!("creating the connection: {conn}"))?
        .to_owned();
    Ok(Target {
        base,
        client_id: boot.client_id,
        conn_id,
        key: boot.api_key,
        idp,
        http,
    })
}

/// A response whose subject was changed after signing must not produce a code.
async fn tampered_is_refused(t: &Target) -> Res<()> {
    let started = t.authorize(usize::MAX).await?;
    let saml = t.idp_response(&started.request_id, "victim@bench.test")?;
    let xml = String::from_utf8(base64_decode(&saml)?)?;
    let bad = xml.replace("victim@bench.test", "attacker@evil.test");
    match t.acs(&started, &b64(&bad)).await {
        Ok(code) => Err(format!("a tampered response got code {code}").into()),
        Err(_) => Ok(()),
    }
}

fn base64_decode(s: &str) -> Res<Vec<u8>> {
    use base64::Engine as _;
    Ok(base64::engine::general_purpose::STANDARD.decode(s)?)
}

fn run_polis(logins: usize, idp: &IdpSigner) -> Res<Value> {
    Ok(polis::run_polis(
        logins,
        &idp.keys.key.private_key_to_pem_pkcs8()?,
        &idp.keys.cert.to_pem()?,
        IDP_ENTITY,
    )?)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Res<()> {
    let logins = env_or("LOGINS", 300);
    let clients = env_or("CLIENTS", 8).max(1);
    let parent = std::env::var_os("STORE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&parent)?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path())?);
    let t = Arc::new(start_idbridge(store.clone()).await?);
    tampered_is_refused(&t).await?;
    for i in 0..5 {
        t.login(1_000_000 + i).await?;
    }

    // 1 client, SP time only.
    let before = store.stats();
    let mut sp = Duration::ZERO;
    for i in 0..logins {
        sp += t.login(i).await?;
    }
    let after = store.stats();
    let per_login = |a: u64, b: u64| (a - b) as f64 / logins as f64;
    let ours_1 = logins as f64 / sp.as_secs_f64();
    println!(
        "idbridge, 1 client: {ours_1:.0} logins/s (SP time only; {:.2} ms per login; store: {:.1} commits, {:.1} durable writes, {:.1} fdatasyncs per login; store in {})",
        sp.as_secs_f64() * 1000.0 / logins as f64,
        per_login(after.commits, before.commits),
        per_login(after.durable_writes, before.durable_writes),
        per_login(after.fdatasyncs, before.fdatasyncs),
        parent.display()
    );

    // Concurrent clients, wall clock with the IdP signing in the loop.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let t = t.clone();
        let n = logins / clients;
        tasks.push(tokio::spawn(async move {
            for i in 0..n {
                t.login(10_000_000 + c * 1_000_000 + i).await?;
            }
            Ok::<usize, Box<dyn std::error::Error + Send + Sync>>(n)
        }));
    }
    let mut done = 0;
    for task in tasks {
        done += task.await??;
    }
    let wall = start.elapsed().as_secs_f64();
    println!(
        "idbridge, {clients} clients: {:.0} logins/s (wall clock incl. the IdP's signing; {done} logins)",
        done as f64 / wall
    );
    std::io::stdout().flush()?;

    match run_polis(logins, &t.idp) {
        Ok(p) => {
            let polis = p["logins_per_sec"].as_f64().unwrap_or(0.0);
            println!(
                "Ory Polis {} (mem engine, in process, nothing durable), 1 client: {polis:.0} logins/s (SP time only)",
                p["version"].as_str().unwrap_or("?")
            );
            println!(
                "summary: idbridge {ours_1:.0} logins/s vs Ory Polis {polis:.0} logins/s (1 client) = {:.1}x",
                ours_1 / polis
            );
        }
        Err(e) => println!("Ory Polis: not measured: {e}"),
    }
    Ok(())
}
