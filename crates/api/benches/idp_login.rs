//! SP-initiated logins/s through idbridge's IdP in directory mode against a real slapd: each
//! login is an AuthnRequest (HTTP-POST binding) → the login page (session commit with the
//! request's replay entry) → the login form (LDAP search + bind as the user, the directory user
//! read, the session taken with its event in one commit, the assertion signed with RSA-2048) →
//! the auto-submitting page. Driven in-process through the router (no sockets on our side);
//! printed beside `openssl speed rsa2048` sign/s on the same machine (the signing floor: one
//! RSA signature per login).
//!
//! `cargo bench -p idbridge-api --bench idp_login` (IDP_BENCH_LOGINS, IDP_BENCH_CONCURRENCY;
//! IDP_BENCH_STORE_DIR: the durable store's parent directory, default the system temp dir, on
//! disk here, so each acknowledged commit waits for its group fdatasync as in production;
//! IDP_BENCH_STORE=tmpfs for the throwaway store on /dev/shm; IDP_BENCH_POLIS_LOGINS, default
//! 300, for Ory Polis's own SSO flow rate printed beside ours, same run, `scripts/bench-deps.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/polis.rs"]
mod polis;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, Request};
use axum::Router;
use base64::Engine as _;
use http_body_util::BodyExt;
use idbridge_api::{router, ApiConfig, AppState};
use idbridge_ldap::{
    BindAuthenticator, Flavor, LdapSettings, LdapSource, LoginLookup, Password, Syncer,
};
use idbridge_sso::api_keys as auth;
use idbridge_sso::{SecretBox, SsoConfig};
use idbridge_store::{SqliteStore, Store};
use idbridge_testkit::slapd::{ldap_group, Slapd, LDAP_ADMIN_DN, LDAP_SUFFIX};
use serde_json::{json, Value};

const SP_ENTITY: &str = "https://sp.bench.test/saml";
const SP_ACS: &str = "https://sp.bench.test/acs";
const USERS: usize = 50;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn send(app: &Router, req: Request<Body>) -> (u16, Vec<String>, String) {
    use tower::ServiceExt as _;
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let cookies = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, cookies, String::from_utf8_lossy(&body).into_owned())
}

async fn api(app: &Router, key: &str, method: &str, uri: &str, body: Value) -> Value {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, _, text) = send(app, req).await;
    assert!(status < 300, "{method} {uri}: {status}: {text}");
    serde_json::from_str(&text).unwrap()
}

fn form(uri: &str, pairs: &[(&str, &str)], cookie: Option<&str>) -> Request<Body> {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let mut req = Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    req.body(Body::from(body)).unwrap()
}

fn hidden(text: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = text.find(&marker).expect("hidden field") + marker.len();
    text[at..].split('"').next().unwrap().to_owned()
}

/// Microseconds spent in each of the two requests of a login, summed over all logins.
static PAGE_MICROS: AtomicU64 = AtomicU64::new(0);
static PASSWORD_MICROS: AtomicU64 = AtomicU64::new(0);

/// One full login; panics on anything but a posted assertion.
async fn login(app: &Router, org: &str, user: usize) {
    let t0 = Instant::now();
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    let id = format!("_{}", ulid::Ulid::new());
    let xml = format!(
        "<samlp:AuthnRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{now}\" Destination=\"http://127.0.0.1:8080/idp/{org}/saml/sso\" AssertionConsumerServiceURL=\"{SP_ACS}\" ProtocolBinding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\"><saml:Issuer>{SP_ENTITY}</saml:Issuer></samlp:AuthnRequest>"
    );
    let req = base64::engine::general_purpose::STANDARD.encode(xml);
    let (status, cookies, page) = send(
        app,
        form(
            &format!("/idp/{org}/saml/sso"),
            &[("SAMLRequest", &req)],
            None,
        ),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    PAGE_MICROS.fetch_add(t0.elapsed().as_micros() as u64, Relaxed);
    let t1 = Instant::now();
    let cookie = cookies
        .iter()
        .find(|c| c.starts_with("idbridge_idp_"))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let (k, csrf) = (hidden(&page, "k"), hidden(&page, "csrf"));
    let (uid, pw) = (format!("user{user}"), format!("pw-{user}"));
    let (status, _, done) = send(
        app,
        form(
            &format!("/idp/{org}/login"),
            &[
                ("k", &k),
                ("csrf", &csrf),
                ("login", &uid),
                ("password", &pw),
            ],
            Some(&cookie),
        ),
    )
    .await;
    assert!(
        status == 200 && done.contains("SAMLResponse"),
        "{status}: {done}"
    );
    PASSWORD_MICROS.fetch_add(t1.elapsed().as_micros() as u64, Relaxed);
}

/// Mean microseconds of `n` sequential runs of `f`.
async fn mean_micros<F: std::future::Future<Output = ()>>(
    n: usize,
    mut f: impl FnMut(usize) -> F,
) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        f(i).await;
    }
    t.elapsed().as_micros() as f64 / n as f64
}

/// `openssl speed rsa2048` sign/s (one core), if openssl runs here.
fn openssl_rsa2048_sign_per_sec() -> Option<f64> {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", "3", "rsa2048"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("rsa 2048 bits"))?;
    let nums: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    // "... sign verify sign/s verify/s": the second-to-last number.
    nums.get(nums.len().checked_sub(2)?).copied()
}

fn main() {
    let logins = env_or("IDP_BENCH_LOGINS", 400);
    let concurrency = env_or("IDP_BENCH_CONCURRENCY", 4);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let slapd = Slapd::start().expect("slapd (scripts/test-deps.sh installs it)");
    let mut ldif = String::new();
    let mut members = Vec::new();
    for i in 0..USERS {
        ldif.push_str(&format!(
            "dn: uid=user{i},ou=People,{LDAP_SUFFIX}\nobjectClass: inetOrgPerson\nuid: user{i}\ncn: User {i}\ngivenName: User\nsn: N{i}\nmail: user{i}@bench.test\nuserPassword: pw-{i}\n\n"
        ));
        members.push(format!("user{i}"));
    }
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    ldif.push_str(&ldap_group("staff", &refs));
    slapd.add(&ldif).unwrap();
    let pw_file = slapd.password_file().unwrap();
    let store_dir = tempfile::Builder::new()
        .prefix("idp-login-bench-")
        .tempdir_in(
            std::env::var_os("IDP_BENCH_STORE_DIR").map_or_else(std::env::temp_dir, Into::into),
        )
        .unwrap();
    let tmpfs = std::env::var("IDP_BENCH_STORE").is_ok_and(|v| v == "tmpfs");
    let store = if tmpfs {
        SqliteStore::open_ephemeral().unwrap()
    } else {
        SqliteStore::open(store_dir.path()).unwrap()
    };
    let store_kind = if tmpfs {
        "throwaway store on tmpfs (syncs cost nothing)".to_owned()
    } else {
        format!(
            "durable store in {} (group fdatasync per commit batch)",
            store_dir.path().display()
        )
    };
    println!("uptime before: {}", uptime());

    let (app, org, ldap_settings) = rt.block_on(async {
        let store: Arc<dyn Store> = Arc::new(store);
        let boot = auth::bootstrap(store.as_ref()).unwrap().unwrap();
        let state = AppState::new(store, ApiConfig::default())
            .with_sso(SsoConfig::default(), Some(SecretBox::generate().unwrap()));
        let app = router(state.clone());
        let key = boot.api_key;
        let org = api(&app, &key, "POST", "/organizations", json!({"name": "Bench"})).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let dir = api(
            &app,
            &key,
            "POST",
            "/admin/directories",
            json!({"organization_id": org, "name": "LDAP", "type": "ldap"}),
        )
        .await["directory"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut settings = LdapSettings::new(
            slapd.url(),
            Flavor::Openldap,
            format!("ou=People,{LDAP_SUFFIX}"),
        );
        settings.allow_plain = true;
        settings.bind_dn = Some(LDAP_ADMIN_DN.into());
        settings.bind_password_file = Some(pw_file);
        settings.group_base_dns = vec![format!("ou=Groups,{LDAP_SUFFIX}")];
        let source = LdapSource {
            directory_id: dir.clone(),
            settings: settings.clone(),
        };
        state
            .ldap
            .install(Arc::new(Syncer::new(state.directory.clone())), [source]);
        let run = api(
            &app,
            &key,
            "POST",
            &format!("/admin/directories/{dir}/sync"),
            json!({"kind": "full"}),
        )
        .await;
        assert_eq!(run["ok"], true, "{run}");
        api(
            &app,
            &key,
            "POST",
            "/admin/service_providers",
            json!({"organization_id": org, "entity_id": SP_ENTITY, "acs_urls": [SP_ACS], "directory_id": dir}),
        )
        .await;
        // Warm-up: the IdP key is generated on first use.
        login(&app, &org, 0).await;
        (app, org, settings)
    });
    PAGE_MICROS.store(0, Relaxed);
    PASSWORD_MICROS.store(0, Relaxed);

    let cpu_before = (
        cpu_secs("self"),
        slapd.pid().map(|p| cpu_secs(&p.to_string())),
    );
    let started = Instant::now();
    rt.block_on(async {
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (app, org, next) = (app.clone(), org.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= logins {
                        break;
                    }
                    login(&app, &org, i % USERS).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let cpu_ours = cpu_secs("self") - cpu_before.0;
    let cpu_slapd = match (slapd.pid(), cpu_before.1) {
        (Some(p), Some(b)) => cpu_secs(&p.to_string()) - b,
        _ => 0.0,
    };
    let rate = logins as f64 / secs;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "idp_login: {logins} SP-initiated logins (directory mode, slapd, {store_kind}) in {secs:.2} s with {concurrency} concurrent browsers: {rate:.1} logins/s ({:.1} per core on {cores} cores)",
        rate / cores as f64
    );
    println!("uptime after: {}", uptime());
    // CPU time per login (this process: router, store writer, signing; plus slapd): what the
    // logins cost whatever else the machine runs. One core gives 1 s of CPU per second.
    let per_login_us = 1e6 * (cpu_ours + cpu_slapd) / logins as f64;
    println!(
        "  CPU per login: {:.0} us in idbridge + {:.0} us in slapd = {per_login_us:.0} us -> {:.0} logins per core-second",
        1e6 * cpu_ours / logins as f64,
        1e6 * cpu_slapd / logins as f64,
        1e6 / per_login_us
    );
    match openssl_rsa2048_sign_per_sec() {
        Some(floor) => println!(
            "openssl speed rsa2048: {floor:.1} sign/s on one core; idbridge per core = {:.1}% of the signing floor by wall clock, {:.1}% by CPU time (goal >= 50%)",
            100.0 * rate / cores as f64 / floor,
            100.0 * 1e6 / per_login_us / floor
        ),
        None => println!("openssl speed rsa2048: not available"),
    }
    // Where a login's time goes: each request's mean latency at this concurrency, and the
    // password check alone, one at a time, on new connections (as before connection reuse)
    // and on reused ones (what the login page does now).
    let n = logins as f64;
    println!(
        "  stage: AuthnRequest -> login page (parse, checks, session + replay commit, page): {:.0} us mean",
        PAGE_MICROS.load(Relaxed) as f64 / n
    );
    println!(
        "  stage: password -> signed assertion page (LDAP search + bind, user + groups, session-take + event commit, RSA signature, page): {:.0} us mean",
        PASSWORD_MICROS.load(Relaxed) as f64 / n
    );
    let checks = 200.min(logins).max(1);
    let (fresh, reused, sign) = rt.block_on(async {
        let lookup = LoginLookup::default();
        let fresh = mean_micros(checks, |i| {
            let (s, lookup) = (&ldap_settings, &lookup);
            async move {
                let pw = Password::new(format!("pw-{}", i % USERS));
                idbridge_ldap::authenticate(s, lookup, &format!("user{}", i % USERS), &pw)
                    .await
                    .unwrap();
            }
        })
        .await;
        let pool = BindAuthenticator::new(ldap_settings.clone());
        let reused = mean_micros(checks, |i| {
            let (pool, lookup) = (&pool, &lookup);
            async move {
                let pw = Password::new(format!("pw-{}", i % USERS));
                pool.authenticate(lookup, &format!("user{}", i % USERS), &pw)
                    .await
                    .unwrap();
            }
        })
        .await;
        let key = idbridge_saml::idp::IdpSigningKey::generate(
            "bench",
            idbridge_saml::idp::RsaBits::Rsa2048,
            1,
        )
        .unwrap();
        let sign = mean_micros(checks, |_| {
            let key = &key;
            async move {
                let mut signer =
                    openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), key.key())
                        .unwrap();
                signer.update(&[b'x'; 600]).unwrap();
                signer.sign_to_vec().unwrap();
            }
        })
        .await;
        (fresh, reused, sign)
    });
    println!("  stage: LDAP password check alone, new connections each time: {fresh:.0} us");
    println!("  stage: LDAP password check alone, reused connections: {reused:.0} us");
    println!("  stage: one RSA-2048 signature alone: {sign:.0} us");
    // Ory Polis's own SSO flow on the same machine, same run: authorize -> samlResponse ->
    // token -> userInfo (SP side; its IdP's signature is untimed), one client, mem engine.
    let polis_logins = env_or("IDP_BENCH_POLIS_LOGINS", 300);
    let idp = idbridge_saml::idp::IdpSigningKey::generate(
        "polis-bench-idp",
        idbridge_saml::idp::RsaBits::Rsa2048,
        1,
    )
    .unwrap();
    match polis::run_polis(
        polis_logins,
        &idp.private_key_pem().unwrap(),
        &idp.cert_pem().unwrap(),
        "https://idp.bench.test",
    ) {
        Ok(p) => {
            let polis = p["logins_per_sec"].as_f64().unwrap_or(0.0);
            println!(
                "Ory Polis {} own SSO flow (authorize -> samlResponse -> token -> userInfo, mem engine, in process, nothing durable, 1 client, SP time only): {polis:.1} logins/s over {polis_logins} logins; idbridge IdP logins/s = {:.2}x Polis's",
                p["version"].as_str().unwrap_or("?"),
                rate / polis
            );
        }
        Err(e) => println!("Ory Polis's own SSO flow: not measured: {e}"),
    }
    println!("uptime at the end: {}", uptime());
}

/// CPU seconds (user + system) used so far by `/proc/<pid>` (`self` for this process).
fn cpu_secs(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesized command name: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

/// The load average (other builds share the cores: say so beside every figure).
fn uptime() -> String {
    Command::new("uptime")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|e| format!("uptime unavailable: {e}"))
}
