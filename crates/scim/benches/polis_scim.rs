//! SCIM throughput of idbridge beside Ory Polis, in the same run, on the same workload.
//!
//!   scripts/bench-deps.sh   # node + @boxyhq/saml-jackson under crates/saml/benches/polis
//!   cargo bench -p idbridge-scim --bench polis_scim
//!
//! idbridge: the product's SCIM router over the directory engine on a real on-disk `SqliteStore`
//! (a temp dir under the target dir, so on disk, not tmpfs): every write is acknowledged only
//! after its fdatasync (the store's group commit). Polis: `@boxyhq/saml-jackson` with its `mem`
//! engine (nothing durable) behind the node:http wrapper `polis_scim.mjs`. Both on loopback
//! with keep-alive HTTP/1.1 clients (reqwest), one connection per client task.
//!
//! Phases, identical for both servers: 1,000 user creates (POST /Users, distinct users) with
//! 1 client; 1,000 more with 8 concurrent clients; the directory filled up to 10,000 users
//! (not timed); then `GET /Users?filter=userName eq "..."` lookups by 8 clients. Every answer
//! is checked (201 with an id; exactly the one user found), so a broken call cannot look fast.
//!
//! Environment: POLIS_SCIM_CREATES (default 1000), POLIS_SCIM_USERS (10000),
//! POLIS_SCIM_LOOKUPS (8000).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idbridge_directory::{DirectoryEngine, DirectorySettings};
use idbridge_model::tag::OrganizationTag;
use idbridge_model::{new_id, IdPrefix, Organization, Timestamp};
use idbridge_scim::router::{router, ScimConfig};
use idbridge_store::{SqliteStore, Store};
use serde_json::{json, Value};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, BoxError>;

/// One SCIM server under test: where its `/Users` is and how to authenticate.
#[derive(Clone)]
struct Target {
    name: &'static str,
    users_url: String,
    token: String,
}

/// Kills the Polis node process when the bench ends, however it ends.
struct Polis(Child);

impl Drop for Polis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// idbridge's SCIM router on a loopback port, over a durable on-disk store; returns the
/// target and the temp dir (kept alive by the caller).
fn start_idbridge() -> Res<(Target, tempfile::TempDir)> {
    let base = target_dir();
    std::fs::create_dir_all(&base)?;
    let dir = tempfile::Builder::new()
        .prefix("polis-scim-bench-")
        .tempdir_in(&base)?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path())?);
    let org = new_id(IdPrefix::Organization);
    let now = Timestamp::now();
    let record = Organization {
        object: OrganizationTag,
        id: org.clone(),
        name: "Bench".into(),
        domains: Vec::new(),
        metadata: Default::default(),
        external_id: None,
        stripe_customer_id: None,
        allow_profiles_outside_organization: false,
        created_at: now,
        updated_at: now,
    };
    let orgs = Arc::new(idbridge_directory::FixedOrganizations::new([record]));
    let engine = Arc::new(DirectoryEngine::new(store.clone(), orgs));
    let (rec, token) =
        engine.create_directory(&org, "Okta", "okta scim v2.0", DirectorySettings::default())?;
    let token = token.ok_or("a SCIM directory without a token")?;

    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let public_url = format!("http://{addr}");
    let app: axum::Router = router(
        engine,
        ScimConfig {
            public_url: public_url.clone(),
            ..ScimConfig::default()
        },
    );
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        rt.block_on(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => {
                    if let Err(e) = axum::serve(l, app).await {
                        eprintln!("idbridge server stopped: {e}");
                    }
                }
                Err(e) => eprintln!("idbridge listener: {e}"),
            }
        });
    });
    let target = Target {
        name: "idbridge",
        users_url: format!("{public_url}/scim/v2/{}/Users", rec.directory.id),
        token,
    };
    Ok((target, dir))
}

/// Polis's SCIM endpoint: the node wrapper next to this file, started and read until ready.
fn start_polis() -> Res<(Target, Polis, String)> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/polis_scim.mjs");
    let mut child = Command::new("node")
        .arg(&script)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting node (run scripts/bench-deps.sh): {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout from node")?;
    let polis = Polis(child);
    let mut line = String::new();
    let mut reader = BufReader::new(stdout);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err("the Polis wrapper exited before it was ready (see its stderr; run scripts/bench-deps.sh)".into());
        }
        if let Some(rest) = line.strip_prefix("POLIS_READY ") {
            let ready: Value = serde_json::from_str(rest.trim())?;
            let port = ready["port"].as_u64().ok_or("POLIS_READY without a port")?;
            let dir = ready["directory_id"]
                .as_str()
                .ok_or("POLIS_READY without a directory id")?;
            let secret = ready["secret"]
                .as_str()
                .ok_or("POLIS_READY without a secret")?;
            let version = ready["version"].as_str().unwrap_or("?").to_owned();
            let target = Target {
                name: "Ory Polis",
                users_url: format!("http://127.0.0.1:{port}/api/scim/v2.0/{dir}/Users"),
                token: secret.to_owned(),
            };
            // Keep draining its stdout so the node process never blocks on a full pipe.
            std::thread::spawn(move || for _ in reader.lines() {});
            return Ok((target, polis, version));
        }
    }
}

fn user_name(run: &str, n: usize) -> String {
    format!("user{n:06}.{run}@bench.test")
}

fn user_body(run: &str, n: usize) -> Value {
    let name = user_name(run, n);
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "externalId": format!("00u{run}{n:06}"),
        "name": {"givenName": format!("Given{n}"), "familyName": "Bench"},
        "displayName": format!("Given{n} Bench"),
        "emails": [{"value": name, "type": "work", "primary": true}],
        "locale": "en-US",
        "active": true,
    })
}

fn client() -> Res<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()?)
}

async fn create_one(c: &reqwest::Client, t: &Target, run: &str, n: usize) -> Res<()> {
    let resp = c
        .post(&t.users_url)
        .bearer_auth(&t.token)
        .header("content-type", "application/scim+json")
        .body(user_body(run, n).to_string())
        .send()
        .await?;
    let status = resp.status().as_u16();
    let body: Value = serde_json::from_slice(&resp.bytes().await?)?;
    if status != 201 || !body["id"].is_string() {
        return Err(format!("{}: create {n}: {status} {body}", t.name).into());
    }
    Ok(())
}

async fn lookup_one(c: &reqwest::Client, t: &Target, run: &str, n: usize) -> Res<()> {
    let name = user_name(run, n);
    let resp = c
        .get(&t.users_url)
        .bearer_auth(&t.token)
        .query(&[("filter", format!("userName eq \"{name}\""))])
        .send()
        .await?;
    let status = resp.status().as_u16();
    let body: Value = serde_json::from_slice(&resp.bytes().await?)?;
    let found = body["Resources"][0]["userName"].as_str();
    if status != 200 || body["totalResults"] != json!(1) || found != Some(name.as_str()) {
        return Err(format!("{}: lookup {name}: {status} {body}", t.name).into());
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Op {
    Create,
    Lookup,
}

/// Runs `ops` (user numbers) split over `clients` concurrent tasks, each on its own
/// keep-alive connection; returns the operations per second.
async fn run(t: &Target, run_id: &str, op: Op, ops: Vec<usize>, clients: usize) -> Res<f64> {
    let total = ops.len();
    let mut shares: Vec<Vec<usize>> = vec![Vec::new(); clients.max(1)];
    for (i, n) in ops.into_iter().enumerate() {
        shares[i % clients.max(1)].push(n);
    }
    // One client (= one pooled connection) per task, warmed up so connect time is not timed.
    let mut conns = Vec::with_capacity(shares.len());
    for _ in 0..shares.len() {
        let c = client()?;
        c.get(&t.users_url)
            .bearer_auth(&t.token)
            .query(&[("count", "1")])
            .send()
            .await?
            .bytes()
            .await?;
        conns.push(c);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (share, c) in shares.into_iter().zip(conns) {
        let t = t.clone();
        let run_id = run_id.to_owned();
        tasks.push(tokio::spawn(async move {
            for n in share {
                match op {
                    Op::Create => create_one(&c, &t, &run_id, n).await?,
                    Op::Lookup => lookup_one(&c, &t, &run_id, n).await?,
                }
            }
            Ok::<(), BoxError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

struct Numbers {
    create_1: f64,
    create_8: f64,
    lookup_8: f64,
}

async fn measure(t: &Target, creates: usize, users: usize, lookups: usize) -> Res<Numbers> {
    let run_id = format!("{:x}", std::process::id());
    eprintln!("{}: {creates} creates, 1 client", t.name);
    let create_1 = run(t, &run_id, Op::Create, (0..creates).collect(), 1).await?;
    eprintln!("{}: {creates} creates, 8 clients", t.name);
    let create_8 = run(t, &run_id, Op::Create, (creates..2 * creates).collect(), 8).await?;
    let have = 2 * creates;
    if users > have {
        eprintln!("{}: filling up to {users} users (not timed)", t.name);
        run(t, &run_id, Op::Create, (have..users).collect(), 8).await?;
    }
    let present = users.max(have);
    // A fixed pseudo-random spread over every user present.
    let picks: Vec<usize> = (0..lookups).map(|i| (i * 7919 + 13) % present).collect();
    eprintln!("{}: {lookups} userName lookups, 8 clients", t.name);
    let lookup_8 = run(t, &run_id, Op::Lookup, picks, 8).await?;
    Ok(Numbers {
        create_1,
        create_8,
        lookup_8,
    })
}

fn main() -> Res<()> {
    let creates = env_usize("POLIS_SCIM_CREATES", 1000);
    let users = env_usize("POLIS_SCIM_USERS", 10_000);
    let lookups = env_usize("POLIS_SCIM_LOOKUPS", 8000);
    let (idb, _dir) = start_idbridge()?;
    let (polis, _polis_proc, polis_version) = start_polis()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (a, b) = rt.block_on(async {
        let a = measure(&idb, creates, users, lookups).await?;
        let b = measure(&polis, creates, users, lookups).await?;
        Ok::<_, BoxError>((a, b))
    })?;
    println!();
    println!(
        "SCIM throughput, same run, same workload ({} cores; idbridge: on-disk SQLite, every write synced before its answer; Polis {polis_version}: mem engine, nothing durable)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!(
        "{:<44} {:>12} {:>12} {:>10}",
        "operation", "idbridge/s", "Polis/s", "ratio"
    );
    let rows = [
        (
            format!("POST /Users, 1 client ({creates} users)"),
            a.create_1,
            b.create_1,
        ),
        (
            format!("POST /Users, 8 clients ({creates} users)"),
            a.create_8,
            b.create_8,
        ),
        (
            format!(
                "GET filter=userName eq, 8 clients ({} users)",
                users.max(2 * creates)
            ),
            a.lookup_8,
            b.lookup_8,
        ),
    ];
    for (name, x, y) in rows {
        println!("{name:<44} {x:>12.0} {y:>12.0} {:>9.1}x", x / y);
    }
    Ok(())
}
