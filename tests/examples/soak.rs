//! Soak test (not in CI; `scripts/soak.sh [minutes]`): a real `idbridge serve` under mixed load
//! from real peers for a given time, sampled every minute, failing when memory, open files or
//! latency keep growing instead of levelling off.
//!
//! Load (each loop bounded by the deadline, loopback only):
//! - 3 SCIM clients: create, PATCH, group membership, delete (a bounded population each);
//! - 2 API readers: organizations, directory users and groups, events;
//! - SAML logins: authorize → a response signed by the test IdP → ACS → /sso/token;
//! - LDAP: a real slapd (idbridge-testkit) whose entries change every 30 s, pulled by the
//!   server's own delta scheduler;
//! - SFTP: OpenSSH `sftp` uploads a changed users.csv every 90 s;
//! - webhooks: every event goes to a local receiver that fails one delivery in five.
//!
//! Every minute: RSS and open descriptors of the server, store size, requests, 5xx count and
//! p50/p99 latency of that minute. At the end the run fails when any 5xx was seen, or when
//! RSS, descriptors or p99 grew over the second half of the run by more than the tolerances
//! below (growth that does not level off).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use idbridge_saml::testkit::{b64, AssertionSpec, IdpSigner, ResponseSpec, SignMode};
use idbridge_tests::{ldap_person, Slapd, TestServer, LDAP_ADMIN_DN, LDAP_SUFFIX};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IDP_ENTITY: &str = "https://idp.soak.test/metadata";
const IDP_SSO: &str = "https://idp.soak.test/sso";
const APP_CB: &str = "https://app.soak.test/callback";
const SCIM_TOKEN: &str = "soak-scim-token-0123456789abcdef";
/// Allowed growth over the second half of the run (last sample vs the middle one).
const RSS_TOLERANCE: f64 = 0.15;
const FD_TOLERANCE: f64 = 0.15;
const P99_TOLERANCE: f64 = 1.0;

#[derive(Default)]
struct Stats {
    /// (kind, latency, status) of each request since the last sample.
    calls: Mutex<Vec<(&'static str, Duration, u16)>>,
    server_errors: AtomicU64,
    transport_errors: AtomicU64,
    logins: AtomicU64,
    sftp_uploads: AtomicU64,
    ldap_changes: AtomicU64,
    webhook_hits: AtomicU64,
}

impl Stats {
    fn record(&self, kind: &'static str, took: Duration, status: u16) {
        if status >= 500 {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("5xx from {kind}: {status}");
        }
        if let Ok(mut calls) = self.calls.lock() {
            calls.push((kind, took, status));
        }
    }
}

struct Ctx {
    server: TestServer,
    http: reqwest::Client,
    stats: Arc<Stats>,
    deadline: Instant,
    scim_dir: String,
    org: String,
    conn: String,
    idp: IdpSigner,
}

impl Ctx {
    /// One timed request; returns (status, JSON body or Null).
    async fn call(
        &self,
        kind: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Option<(u16, Value, reqwest::header::HeaderMap)> {
        let started = Instant::now();
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                let body = resp.bytes().await.unwrap_or_default();
                self.stats.record(kind, started.elapsed(), status);
                Some((
                    status,
                    serde_json::from_slice(&body).unwrap_or(Value::Null),
                    headers,
                ))
            }
            Err(e) => {
                self.stats.transport_errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("{kind}: {e}");
                None
            }
        }
    }

    fn scim(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(
                method,
                format!("{}/scim/v2/{}{path}", self.server.url(), self.scim_dir),
            )
            .bearer_auth(SCIM_TOKEN)
            .header("content-type", "application/scim+json")
    }

    fn api(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.server.endpoint(path))
            .bearer_auth(self.server.api_key())
    }

    fn running(&self) -> bool {
        Instant::now() < self.deadline
    }
}

async fn scim_writer(ctx: Arc<Ctx>, w: usize) {
    use reqwest::Method;
    let mut ids: HashMap<usize, String> = HashMap::new();
    let group = ctx
        .call(
            "scim_group",
            ctx.scim(Method::POST, "/Groups").json(&json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": format!("soak-group-{w}")})),
        )
        .await
        .and_then(|(_, v, _)| v["id"].as_str().map(str::to_owned));
    let mut i = 0usize;
    while ctx.running() {
        let slot = i % 60;
        i += 1;
        match ids.get(&slot).cloned() {
            None => {
                let name = format!("w{w}-u{slot}@soak.test");
                let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": name, "active": true, "externalId": format!("ext-{w}-{slot}"),
                    "name": {"givenName": "Soak", "familyName": format!("User{slot}")},
                    "emails": [{"value": name, "primary": true, "type": "work"}]});
                if let Some((201, v, _)) = ctx
                    .call("scim_create", ctx.scim(Method::POST, "/Users").json(&body))
                    .await
                {
                    if let Some(id) = v["id"].as_str() {
                        ids.insert(slot, id.to_owned());
                        if let Some(g) = &group {
                            let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                                "Operations": [{"op": "add", "path": "members", "value": [{"value": id}]}]});
                            ctx.call(
                                "scim_group_patch",
                                ctx.scim(Method::PATCH, &format!("/Groups/{g}"))
                                    .json(&patch),
                            )
                            .await;
                        }
                    }
                }
            }
            Some(id) if i % 5 == 0 => {
                ctx.call(
                    "scim_delete",
                    ctx.scim(Method::DELETE, &format!("/Users/{id}")),
                )
                .await;
                ids.remove(&slot);
            }
            Some(id) => {
                let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "replace", "path": "name.givenName", "value": format!("Soak{i}")}]});
                ctx.call(
                    "scim_patch",
                    ctx.scim(Method::PATCH, &format!("/Users/{id}"))
                        .json(&patch),
                )
                .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn api_reader(ctx: Arc<Ctx>, r: usize) {
    use reqwest::Method;
    let paths = [
        "/organizations?limit=10".to_owned(),
        format!("/directory_users?directory={}&limit=50", ctx.scim_dir),
        format!("/directory_groups?directory={}", ctx.scim_dir),
        "/events?events=dsync.user.created&limit=20".to_owned(),
        format!("/organizations/{}", ctx.org),
        "/directories".to_owned(),
    ];
    let mut i = r;
    while ctx.running() {
        let path = &paths[i % paths.len()];
        i += 1;
        ctx.call("api_read", ctx.api(Method::GET, path)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let found = parsed
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned());
    found
}

/// One SAML login end to end; returns whether a profile came back.
async fn saml_login(ctx: &Ctx, n: u64) -> anyhow::Result<bool> {
    use reqwest::Method;
    let authorize = format!(
        "/sso/authorize?client_id={}&redirect_uri={}&response_type=code&connection={}&state=s{n}",
        ctx.server.client_id(),
        urlencode(APP_CB),
        ctx.conn
    );
    let Some((302, _, h)) = ctx
        .call(
            "sso_authorize",
            ctx.http.get(ctx.server.endpoint(&authorize)),
        )
        .await
    else {
        bail!("authorize did not redirect");
    };
    let location = h
        .get("location")
        .and_then(|v| v.to_str().ok())
        .context("no location")?;
    let cookie = h
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .context("no cookie")?
        .to_owned();
    let request = query_param(location, "SAMLRequest").context("no SAMLRequest")?;
    let relay = query_param(location, "RelayState").context("no RelayState")?;
    let xml = idbridge_saml::decode_redirect_binding(&request)?;
    let id = xml
        .split("ID=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .context("no request ID")?;
    let acs = ctx.server.endpoint(&format!("/sso/saml/acs/{}", ctx.conn));
    let sp_entity = ctx.server.endpoint(&format!("/sso/saml/{}", ctx.conn));
    let now = chrono::Utc::now();
    let email = format!("login{}@soak.test", n % 50);
    let mut a = AssertionSpec::new(IDP_ENTITY, &sp_entity, &acs, &email, Some(id), now)?;
    a.attributes = vec![
        ("id".into(), vec![format!("idp-{email}")]),
        ("email".into(), vec![email.clone()]),
        ("firstName".into(), vec!["Soak".into()]),
        ("lastName".into(), vec!["Login".into()]),
    ];
    let r = ResponseSpec::new(IDP_ENTITY, &acs, Some(id), now)?;
    let saml = b64(&ctx.idp.response(&r, &a, SignMode::Assertion)?);
    let form = format!(
        "SAMLResponse={}&RelayState={}",
        urlencode(&saml),
        urlencode(&relay)
    );
    let Some((302, _, h)) = ctx
        .call(
            "sso_acs",
            ctx.http
                .post(&acs)
                .header("cookie", cookie)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form),
        )
        .await
    else {
        bail!("ACS did not redirect");
    };
    let back = h
        .get("location")
        .and_then(|v| v.to_str().ok())
        .context("no redirect")?;
    let code = query_param(back, "code").context("no code")?;
    let token = json!({"client_id": ctx.server.client_id(), "client_secret": ctx.server.api_key(),
        "grant_type": "authorization_code", "code": code});
    let ok = matches!(
        ctx.call("sso_token", ctx.http.request(Method::POST, ctx.server.endpoint("/sso/token")).json(&token)).await,
        Some((200, v, _)) if v["profile"]["email"] == email.as_str()
    );
    Ok(ok)
}

async fn saml_logins(ctx: Arc<Ctx>) {
    let mut n = 0u64;
    while ctx.running() {
        n += 1;
        match saml_login(&ctx, n).await {
            Ok(true) => {
                ctx.stats.logins.fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => eprintln!("SAML login {n}: no profile"),
            Err(e) => eprintln!("SAML login {n}: {e:#}"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn ldap_changes(ctx: Arc<Ctx>, slapd: Arc<Slapd>) {
    let mut n = 0u64;
    while ctx.running() {
        tokio::time::sleep(Duration::from_secs(30)).await;
        n += 1;
        let uid = format!("person{}", n % 40);
        let ldif = format!(
            "dn: uid={uid},ou=People,{LDAP_SUFFIX}\nchangetype: modify\nreplace: title\ntitle: Title {n}\n\n"
        );
        let slapd = slapd.clone();
        match tokio::task::spawn_blocking(move || slapd.modify(&ldif, false)).await {
            Ok(Ok(())) => {
                ctx.stats.ldap_changes.fetch_add(1, Ordering::Relaxed);
            }
            other => eprintln!("ldap modify: {other:?}"),
        }
    }
}

fn sftp_upload(work: &Path, key: &Path, port: u16, n: u64) -> anyhow::Result<()> {
    let mut csv = String::from("user_id,first_name,last_name,email,job_title\n");
    for i in 0..80 {
        csv.push_str(&format!(
            "hr{i},Hr,Person{i},hr{i}@soak.test,Title {}\n",
            (n + i) % 7
        ));
    }
    std::fs::write(work.join("users.csv"), csv)?;
    let out = Command::new("sftp")
        .current_dir(work)
        .args(["-b", "-", "-i"])
        .arg(key)
        .args([
            "-P",
            &port.to_string(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
            "soak-hr@127.0.0.1",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(b"put users.csv\n")?;
            }
            child.wait_with_output()
        })?;
    ensure!(
        out.status.success(),
        "sftp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

async fn sftp_deliveries(ctx: Arc<Ctx>, work: PathBuf, key: PathBuf, port: u16) {
    let mut n = 0u64;
    while ctx.running() {
        n += 1;
        let (w, k) = (work.clone(), key.clone());
        match tokio::task::spawn_blocking(move || sftp_upload(&w, &k, port, n)).await {
            Ok(Ok(())) => {
                ctx.stats.sftp_uploads.fetch_add(1, Ordering::Relaxed);
            }
            other => eprintln!("sftp upload {n}: {other:?}"),
        }
        tokio::time::sleep(Duration::from_secs(90)).await;
    }
}

/// A webhook receiver that fails one delivery in five (500), so retries are part of the load.
async fn webhook_receiver(listener: tokio::net::TcpListener, stats: Arc<Stats>, deadline: Instant) {
    let mut n = 0u64;
    while Instant::now() < deadline + Duration::from_secs(5) {
        let Ok(Ok((mut sock, _))) =
            tokio::time::timeout(Duration::from_secs(1), listener.accept()).await
        else {
            continue;
        };
        n += 1;
        let fail = n % 5 == 0;
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                let Ok(Ok(k)) =
                    tokio::time::timeout(Duration::from_secs(5), sock.read(&mut chunk)).await
                else {
                    return;
                };
                if k == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..k]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            stats.webhook_hits.fetch_add(1, Ordering::Relaxed);
            let status = if fail {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = sock
                .write_all(
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await;
        });
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn proc_value(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

fn dir_bytes(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_bytes(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    minute: u64,
    rss_kb: u64,
    fds: u64,
    store_bytes: u64,
    requests: usize,
    p50_ms: f64,
    p99_ms: f64,
    errors_5xx: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn sample(ctx: &Ctx, minute: u64) -> Sample {
    let pid = ctx.server.pid().unwrap_or(0);
    let calls: Vec<_> = ctx
        .stats
        .calls
        .lock()
        .map(|mut c| std::mem::take(&mut *c))
        .unwrap_or_default();
    let mut lat: Vec<Duration> = calls.iter().map(|c| c.1).collect();
    lat.sort();
    Sample {
        minute,
        rss_kb: proc_value(pid, "VmRSS:"),
        fds: open_fds(pid),
        store_bytes: dir_bytes(ctx.server.data_dir()),
        requests: calls.len(),
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        errors_5xx: ctx.stats.server_errors.load(Ordering::Relaxed),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let minutes: u64 = std::env::args()
        .nth(1)
        .map(|m| m.parse().context("minutes must be a number"))
        .transpose()?
        .unwrap_or(60);
    let work = tempfile::tempdir()?;

    // Peers: slapd with 40 people, a webhook receiver, an SSH key for the HR uploader.
    let slapd = Arc::new(Slapd::start()?);
    let mut tree = String::new();
    for i in 0..40 {
        tree.push_str(&ldap_person(
            &format!("person{i}"),
            "Ldap",
            &format!("Person{i}"),
        ));
    }
    slapd.add(&tree)?;
    let pw = slapd.password_file()?;
    let hook_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_url = format!("http://{}/hook", hook_listener.local_addr()?);
    let key = work.path().join("hr_ed25519");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", "ed25519", "-f"])
        .arg(&key)
        .output()?;
    ensure!(out.status.success(), "ssh-keygen failed");
    let public = std::fs::read_to_string(key.with_extension("pub"))
        .or_else(|_| std::fs::read_to_string(format!("{}.pub", key.display())))?;
    let sftp_port = idbridge_tests::free_port()?;
    std::fs::write(work.path().join("scim_token"), SCIM_TOKEN)?;

    let config = format!(
        r#"
[sso]
redirect_uris = ["{APP_CB}"]

[[organizations]]
external_id = "soak"
name = "Soak Corp"
domains = ["soak.test"]

[[directories]]
key = "soak-scim"
organization = "soak"
name = "Soak SCIM"
type = "okta scim v2.0"
scim_token_file = "{token}"

[[directories]]
key = "soak-ldap"
organization = "soak"
name = "Soak LDAP"
type = "ldap"

[[directories]]
key = "soak-hr"
organization = "soak"
name = "Soak HR"
type = "sftp"

[[ldap_directories]]
directory = "soak-ldap"
full_sync_interval_secs = 600
delta_sync_interval_secs = 30
[ldap_directories.ldap]
url = "{ldap}"
allow_plain = true
flavor = "openldap"
bind_dn = "{LDAP_ADMIN_DN}"
bind_password_file = "{pw}"
user_base_dns = ["ou=People,{LDAP_SUFFIX}"]
group_base_dns = ["ou=Groups,{LDAP_SUFFIX}"]

[sftp_server]
listen = "127.0.0.1:{sftp_port}"
debounce_ms = 500

[[sftp_directories]]
directory = "soak-hr"
username = "soak-hr"
authorized_keys = ["{public}"]
"#,
        token = work.path().join("scim_token").display(),
        ldap = slapd.url(),
        pw = pw.display(),
        public = public.trim(),
    );
    let server = TestServer::builder().config_toml(config).start().await?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?;
    let key_header = format!("Bearer {}", server.api_key());
    let get = |path: &str| {
        http.get(server.endpoint(path))
            .header("authorization", key_header.clone())
    };
    let dirs: Value = get("/directories?limit=100").send().await?.json().await?;
    let dir_id = |name: &str| {
        dirs["data"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["name"] == name))
            .and_then(|d| d["id"].as_str())
            .map(str::to_owned)
            .with_context(|| format!("directory {name}: {dirs}"))
    };
    let scim_dir = dir_id("Soak SCIM")?;
    let org = dirs["data"][0]["organization_id"]
        .as_str()
        .context("organization")?
        .to_owned();
    // The webhook endpoint and the SAML connection.
    let resp = http
        .post(server.endpoint("/webhook_endpoints"))
        .header("authorization", key_header.clone())
        .json(&json!({"endpoint_url": hook_url, "events": [
            "dsync.user.created", "dsync.user.updated", "dsync.user.deleted",
            "dsync.group.user_added", "dsync.group.user_removed", "connection.activated"]}))
        .send()
        .await?;
    ensure!(
        resp.status().is_success(),
        "webhook endpoint: {}",
        resp.text().await?
    );
    let idp = IdpSigner::generate(IDP_ENTITY)?;
    let cert = String::from_utf8(idp.keys.cert.to_pem()?)?;
    let conn: Value = http
        .post(server.endpoint("/connections"))
        .header("authorization", key_header.clone())
        .json(
            &json!({"organization_id": org, "name": "Soak SAML", "connection_type": "OktaSAML",
            "saml_options": {"idp_entity_id": IDP_ENTITY, "idp_sso_url": IDP_SSO,
                             "idp_signing_certs": [cert]}}),
        )
        .send()
        .await?
        .json()
        .await?;
    let conn = conn["id"].as_str().context("connection id")?.to_owned();

    let started = Instant::now();
    let deadline = started + Duration::from_secs(minutes * 60);
    let stats = Arc::new(Stats::default());
    let ctx = Arc::new(Ctx {
        server,
        http,
        stats: stats.clone(),
        deadline,
        scim_dir,
        org,
        conn,
        idp,
    });
    let sftp_work = work.path().join("sftp");
    std::fs::create_dir_all(&sftp_work)?;
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(webhook_receiver(
        hook_listener,
        stats.clone(),
        deadline,
    )));
    for w in 0..3 {
        tasks.push(tokio::spawn(scim_writer(ctx.clone(), w)));
    }
    for r in 0..2 {
        tasks.push(tokio::spawn(api_reader(ctx.clone(), r)));
    }
    tasks.push(tokio::spawn(saml_logins(ctx.clone())));
    tasks.push(tokio::spawn(ldap_changes(ctx.clone(), slapd.clone())));
    tasks.push(tokio::spawn(sftp_deliveries(
        ctx.clone(),
        sftp_work,
        key,
        sftp_port,
    )));

    println!(
        "{:>4} {:>9} {:>5} {:>12} {:>8} {:>8} {:>8} {:>5} {:>7} {:>5} {:>5} {:>7}",
        "min",
        "rss_kb",
        "fds",
        "store_bytes",
        "requests",
        "p50_ms",
        "p99_ms",
        "5xx",
        "logins",
        "sftp",
        "ldap",
        "hooks"
    );
    let mut samples = Vec::new();
    for minute in 1..=minutes {
        let at = started + Duration::from_secs(minute * 60);
        tokio::time::sleep_until(at.into()).await;
        let s = sample(&ctx, minute);
        println!(
            "{:>4} {:>9} {:>5} {:>12} {:>8} {:>8.1} {:>8.1} {:>5} {:>7} {:>5} {:>5} {:>7}",
            s.minute,
            s.rss_kb,
            s.fds,
            s.store_bytes,
            s.requests,
            s.p50_ms,
            s.p99_ms,
            s.errors_5xx,
            stats.logins.load(Ordering::Relaxed),
            stats.sftp_uploads.load(Ordering::Relaxed),
            stats.ldap_changes.load(Ordering::Relaxed),
            stats.webhook_hits.load(Ordering::Relaxed),
        );
        let _ = std::io::stdout().flush();
        samples.push(s);
    }
    for t in tasks {
        let _ = t.await;
    }
    verdict(&samples, &stats)
}

/// Fails on any 5xx, or on growth over the second half of the run that exceeds the tolerance.
fn verdict(samples: &[Sample], stats: &Stats) -> anyhow::Result<()> {
    let errors = stats.server_errors.load(Ordering::Relaxed);
    ensure!(errors == 0, "{errors} responses were 5xx");
    ensure!(
        samples.len() >= 4,
        "too short to judge growth (at least 4 minutes)"
    );
    let mid = samples[samples.len() / 2];
    let last = samples[samples.len() - 1];
    // p99 of the second half's first and last quarters, to be robust to one slow minute.
    let q = samples.len() / 4;
    let p99 = |s: &[Sample]| {
        let mut v: Vec<f64> = s.iter().map(|s| s.p99_ms).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let p99_mid = p99(&samples[samples.len() / 2..samples.len() / 2 + q.max(1)]);
    let p99_end = p99(&samples[samples.len() - q.max(1)..]);
    let growth = |a: u64, b: u64| (b as f64 - a as f64) / (a.max(1) as f64);
    println!(
        "second half: rss {:+.1}%, fds {:+.1}%, p99 {:.1} -> {:.1} ms, store {:+.1}%",
        growth(mid.rss_kb, last.rss_kb) * 100.0,
        growth(mid.fds, last.fds) * 100.0,
        p99_mid,
        p99_end,
        growth(mid.store_bytes, last.store_bytes) * 100.0
    );
    let mut failed = Vec::new();
    if growth(mid.rss_kb, last.rss_kb) > RSS_TOLERANCE {
        failed.push("RSS kept growing");
    }
    if growth(mid.fds, last.fds) > FD_TOLERANCE {
        failed.push("open descriptors kept growing");
    }
    if p99_end > p99_mid * (1.0 + P99_TOLERANCE) && p99_end > 50.0 {
        failed.push("p99 latency kept growing");
    }
    if !failed.is_empty() {
        bail!("soak failed: {}", failed.join(", "));
    }
    println!("soak passed");
    Ok(())
}
