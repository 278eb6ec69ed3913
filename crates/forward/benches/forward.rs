//! SCIM push throughput and lag, beside the target's own ceiling, in one run.
//!
//!   cargo bench -p idbridge-forward --bench forward
//!
//! Targets: a second idbridge's SCIM endpoint (the product's router over its directory engine
//! and a durable on-disk SQLite store, every create acknowledged after its COMMIT synced) on a
//! loopback port, served by its own 2-thread runtime. Source: a directory of FORWARD_BENCH_USERS
//! (default 100,000) users and FORWARD_BENCH_GROUPS (1,000) groups of 100 members, loaded with
//! one snapshot into its own durable store.
//!
//! 1. Ceiling: the same SCIM creates the forwarder sends (the user resources it builds, so
//!    the same bodies), POSTed straight to the target by FORWARD_BENCH_CONCURRENCY (8) clients
//!    into a fresh directory: users/s.
//! 2. Backfill: the forwarder (the same concurrency) pushes the whole directory into another
//!    fresh target (so both phases write into stores of the same size): users/s of the users
//!    phase (goal: >= 80% of the ceiling), and the whole backfill with the groups and their
//!    members.
//! 3. Steady state: 4 writers change users at FORWARD_BENCH_RATE (500) changes/s for
//!    FORWARD_BENCH_SECS (20) s; the lag of each change is the time from its local commit to
//!    the forwarder's durable cursor passing it (sampled every 5 ms): p50 / p99 / max
//!    (goal: p99 < 1 s).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idbridge_directory::{
    Cursor, DirectoryEngine, DirectorySettings, GroupInput, Order, PageRequest, Snapshot,
    SnapshotPolicy, StoredUser, UserInput,
};
use idbridge_forward::scim_push::resource::user_body;
use idbridge_forward::scim_push::{PushState, ScimPush, TargetInput, TargetOptions, STATE_TABLE};
use idbridge_model::tag::OrganizationTag;
use idbridge_model::{new_id, DirectoryUserEmail, IdPrefix, Organization, Timestamp};
use idbridge_secrets::SecretBox;
use idbridge_store::{SqliteOptions, SqliteStore, Store};
use serde_json::Value;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target")
        })
}

/// A store with an organization, in a temp dir on disk (under target/, not tmpfs).
/// A store, its engine, an organization id, and the temp dir holding the store.
type Side = (
    Arc<dyn Store>,
    Arc<DirectoryEngine>,
    String,
    tempfile::TempDir,
);

fn side(prefix: &str) -> Res<Side> {
    std::fs::create_dir_all(target_dir())?;
    let tmp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(target_dir())?;
    // FORWARD_BENCH_CHECKPOINT_MS: the stores' WAL checkpoint interval (default: the store's).
    let mut options = SqliteOptions::default();
    if let Ok(ms) = std::env::var("FORWARD_BENCH_CHECKPOINT_MS") {
        options.checkpoint_interval = Duration::from_millis(ms.parse()?);
    }
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_with(tmp.path(), options)?);
    let org = new_id(IdPrefix::Organization);
    let now = Timestamp::now();
    let rec = Organization {
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
    // Organizations belong to the SSO service; the engine only reads them.
    let orgs = Arc::new(idbridge_directory::FixedOrganizations::new([rec]));
    let engine = Arc::new(DirectoryEngine::new(store.clone(), orgs));
    Ok((store, engine, org, tmp))
}

fn person(n: usize, title: &str) -> UserInput {
    let email = format!("user{n:06}@bench.test");
    UserInput {
        idp_id: format!("00u{n:06}"),
        email: Some(email.clone()),
        first_name: Some(format!("Given{n}")),
        last_name: Some("Bench".into()),
        name: Some(format!("Given{n} Bench")),
        emails: vec![DirectoryUserEmail {
            primary: true,
            email_type: Some("work".into()),
            value: Some(email.clone()),
        }],
        username: Some(email),
        job_title: Some(title.into()),
        active: true,
        raw_attributes: Default::default(),
        source: serde_json::json!({"department": "R&D"}),
        unique_keys: Vec::new(),
    }
}

fn all_users(engine: &DirectoryEngine, dir: &str) -> Res<Vec<StoredUser>> {
    let mut out = Vec::new();
    let mut cursor = Cursor::None;
    loop {
        let page = engine.list_users(
            dir,
            None,
            &PageRequest {
                limit: 1000,
                order: Order::Asc,
                cursor,
            },
        )?;
        out.extend(page.data);
        match page.after {
            Some(a) => cursor = Cursor::After(a),
            None => return Ok(out),
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A second idbridge's SCIM endpoint (its router over a fresh durable store) on a loopback
/// port, served by its own 2-thread runtime. Each measured phase gets a fresh one, so the
/// ceiling and the backfill write into stores of the same size.
struct Target {
    store: Arc<dyn Store>,
    engine: Arc<DirectoryEngine>,
    org: String,
    base: String,
    runtime: tokio::runtime::Runtime,
    _tmp: tempfile::TempDir,
}

impl Target {
    fn start(prefix: &str) -> Res<Target> {
        let (store, engine, org, tmp) = side(prefix)?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let base = format!("http://{}", listener.local_addr()?);
        listener.set_nonblocking(true)?;
        let app: axum::Router = idbridge_scim::router::router(
            engine.clone(),
            idbridge_scim::router::ScimConfig {
                public_url: base.clone(),
                ..Default::default()
            },
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.spawn(async move {
            if let Ok(l) = tokio::net::TcpListener::from_std(listener) {
                let _ = axum::serve(l, app).await;
            }
        });
        Ok(Target {
            store,
            engine,
            org,
            base,
            runtime,
            _tmp: tmp,
        })
    }

    fn stop(self) {
        self.runtime.shutdown_background();
    }

    /// A new directory: (id, SCIM endpoint, bearer token).
    fn directory(&self, name: &str) -> Res<(String, String, String)> {
        let (rec, token) = self.engine.create_directory(
            &self.org,
            name,
            "generic scim v2.0",
            DirectorySettings::default(),
        )?;
        let token = token.ok_or("no token")?;
        let endpoint = idbridge_scim::router::endpoint_url(&self.base, &rec.directory.id);
        Ok((rec.directory.id, endpoint, token))
    }
}

fn main() -> Res<()> {
    let users = env_usize("FORWARD_BENCH_USERS", 100_000);
    let groups = env_usize("FORWARD_BENCH_GROUPS", 1_000);
    let concurrency = env_usize("FORWARD_BENCH_CONCURRENCY", 8);
    let rate = env_usize("FORWARD_BENCH_RATE", 500);
    let secs = env_usize("FORWARD_BENCH_SECS", 20);
    println!("SCIM push bench: {users} users, {groups} groups, concurrency {concurrency}");

    // The source directory.
    let (s_store, s_engine, s_org, _s_tmp) = side("forward-bench-source-")?;
    let (s_dir, _) =
        s_engine.create_directory(&s_org, "Source", "ldap", DirectorySettings::default())?;
    let s_dir = s_dir.directory.id;
    let t0 = Instant::now();
    let snapshot = Snapshot {
        users: (0..users).map(|n| person(n, "Engineer")).collect(),
        groups: (0..groups)
            .map(|g| GroupInput {
                idp_id: format!("00g{g:05}"),
                name: format!("Team {g}"),
                ..GroupInput::default()
            })
            .collect(),
        memberships: (0..groups)
            .flat_map(|g| {
                (0..100).map(move |m| {
                    (
                        format!("00g{g:05}"),
                        format!("00u{:06}", (g * 100 + m) % users.max(1)),
                    )
                })
            })
            .collect(),
    };
    s_engine.apply_snapshot(&s_dir, snapshot, SnapshotPolicy::default())?;
    println!("source loaded in {:.1} s", t0.elapsed().as_secs_f64());
    let stored = all_users(&s_engine, &s_dir)?;
    let bodies: Vec<Vec<u8>> = stored
        .iter()
        .map(|u| {
            user_body(
                u,
                Some(idbridge_forward::scim_push::CUSTOM_ATTRIBUTES_SCHEMA),
            )
            .map(|b| serde_json::to_vec(&b.resource).unwrap_or_default())
            .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    // 1. The ceiling: the same creates, straight, into a fresh target.
    let ceiling_target = Target::start("forward-bench-ceiling-")?;
    let (_c_dir, c_endpoint, c_token) = ceiling_target.directory("Ceiling")?;
    let ceiling = client_rt.block_on(async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .tcp_nodelay(true)
            .no_proxy()
            .build()?;
        let bodies = Arc::new(bodies);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (http, bodies, next) = (http.clone(), bodies.clone(), next.clone());
            let (url, token) = (format!("{c_endpoint}/Users"), c_token.clone());
            set.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(b) = bodies.get(i) else {
                        return Ok::<_, String>(());
                    };
                    let resp = http
                        .post(&url)
                        .bearer_auth(&token)
                        .header("content-type", "application/scim+json")
                        .body(b.clone())
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    let status = resp.status().as_u16();
                    let v: Value = resp.json().await.map_err(|e| e.to_string())?;
                    if status != 201 || !v["id"].is_string() {
                        return Err(format!("create {i}: {status} {v}"));
                    }
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.map_err(|e| e.to_string())??;
        }
        Ok::<f64, Box<dyn std::error::Error + Send + Sync>>(
            users as f64 / start.elapsed().as_secs_f64(),
        )
    })?;
    println!("target ceiling (direct SCIM creates, {concurrency} clients): {ceiling:.0} users/s");

    ceiling_target.stop();

    // 2. The forwarder's backfill into another fresh target, like the ceiling's.
    let target = Target::start("forward-bench-target-")?;
    let (_f_dir, f_endpoint, f_token) = target.directory("Forwarded")?;
    let push = ScimPush::new(
        s_store.clone(),
        s_engine.clone(),
        Some(SecretBox::generate()?),
    );
    let (backfill_users_rate, backfill_total) = client_rt.block_on(async {
        let _scheduler = push.spawn();
        let start = Instant::now();
        push.set_target(
            &s_dir,
            TargetInput {
                endpoint: f_endpoint.clone(),
                bearer_token: f_token.clone(),
                options: TargetOptions {
                    concurrency: u16::try_from(concurrency).unwrap_or(8),
                    ..TargetOptions::default()
                },
                source: "api".into(),
            },
        )?;
        // Progress from the state record (one read; the status view also counts rows).
        let mut users_done_at = None;
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let st: PushState = match s_store.get(STATE_TABLE, &s_dir)? {
                Some(b) => serde_json::from_slice(&b)?,
                None => continue,
            };
            if users_done_at.is_none() {
                if let Some(b) = &st.backfill {
                    if b.phase == idbridge_forward::scim_push::records::BackfillPhase::Groups {
                        users_done_at = Some(start.elapsed());
                    }
                }
            }
            if st.backfill.is_none() && st.backfill_finished_at.is_some() {
                let total = start.elapsed();
                let u = users_done_at.unwrap_or(total);
                let status = push.status(&s_dir)?;
                if status.parked > 0 || status.forwarded as usize != users + groups {
                    return Err(format!("backfill incomplete: {status:?}").into());
                }
                return Ok::<_, Box<dyn std::error::Error + Send + Sync>>((
                    users as f64 / u.as_secs_f64(),
                    total,
                ));
            }
            if start.elapsed() > Duration::from_secs(1800) {
                return Err("backfill did not finish in 30 min".into());
            }
        }
    })?;
    println!(
        "forwarder backfill: {backfill_users_rate:.0} users/s ({:.0}% of the ceiling); whole backfill with {groups} groups and {} memberships: {:.1} s",
        backfill_users_rate / ceiling * 100.0,
        groups * 100,
        backfill_total.as_secs_f64()
    );

    // 3. Steady state at `rate` changes/s.
    let changes: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let samples: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (store, dir, samples, stop) = (
            s_store.clone(),
            s_dir.clone(),
            samples.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(Some(b)) = store.get(STATE_TABLE, &dir) {
                    if let Ok(st) = serde_json::from_slice::<PushState>(&b) {
                        if let Ok(mut s) = samples.lock() {
                            s.push((st.cursor, Instant::now()));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let writers = 4usize;
    let per_writer = rate / writers;
    let total_changes = rate * secs;
    let seq_lock = Arc::new(Mutex::new(()));
    let mut handles = Vec::new();
    for w in 0..writers {
        let (engine, store, dir, changes, stored_ids, seq_lock) = (
            s_engine.clone(),
            s_store.clone(),
            s_dir.clone(),
            changes.clone(),
            stored.iter().map(|u| u.user.id.clone()).collect::<Vec<_>>(),
            seq_lock.clone(),
        );
        handles.push(std::thread::spawn(move || -> Result<(), String> {
            let interval = Duration::from_secs_f64(1.0 / per_writer as f64);
            let start = Instant::now();
            for k in 0..(total_changes / writers) {
                let due = start + interval * k as u32;
                if let Some(d) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
                let n = (k * writers + w) % stored_ids.len();
                // The seq of this change: the log's end right after its commit (writers take
                // turns so no other change lands in between).
                let _g = seq_lock.lock().map_err(|e| e.to_string())?;
                engine
                    .upsert_user(
                        &dir,
                        Some(&stored_ids[n]),
                        person(n, &format!("T{k}")),
                        None,
                    )
                    .map_err(|e| e.to_string())?;
                let seq = store.last_event_seq().map_err(|e| e.to_string())?;
                let at = Instant::now();
                drop(_g);
                changes.lock().map_err(|e| e.to_string())?.push((seq, at));
            }
            Ok(())
        }));
    }
    let steady_start = Instant::now();
    for h in handles {
        h.join().map_err(|_| "writer panicked")??;
    }
    let achieved = total_changes as f64 / steady_start.elapsed().as_secs_f64();
    // Let the forwarder finish the last changes.
    let last_seq = s_store.last_event_seq()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let caught_up = samples
            .lock()
            .map(|s| s.last().is_some_and(|(c, _)| *c >= last_seq))
            .unwrap_or(false);
        if caught_up || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let samples = samples.lock().map_err(|e| e.to_string())?.clone();
    let changes = changes.lock().map_err(|e| e.to_string())?.clone();
    let mut lags: Vec<f64> = Vec::with_capacity(changes.len());
    let mut unfinished = 0;
    for (seq, at) in &changes {
        match samples.iter().find(|(c, t)| c >= seq && t >= at) {
            Some((_, t)) => lags.push(t.duration_since(*at).as_secs_f64()),
            None => unfinished += 1,
        }
    }
    lags.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    println!(
        "steady state: {achieved:.0} changes/s for {secs} s ({} changes): lag p50 {:.3} s, p99 {:.3} s, max {:.3} s{}",
        changes.len(),
        percentile(&lags, 0.50),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or(0.0),
        if unfinished > 0 {
            format!(" ({unfinished} not forwarded within 60 s)")
        } else {
            String::new()
        }
    );
    // Where the tail sits: seconds into the steady state with a change lagging > 250 ms, and
    // the stores' slowest sync round and WAL checkpoint (a stall on either shows here).
    let mut slow_seconds: Vec<u64> = Vec::new();
    for (seq, at) in &changes {
        let lag = samples
            .iter()
            .find(|(c, t)| c >= seq && t >= at)
            .map(|(_, t)| t.duration_since(*at).as_secs_f64());
        if lag.is_none_or(|l| l > 0.25) {
            slow_seconds.push(at.saturating_duration_since(steady_start).as_secs());
        }
    }
    slow_seconds.dedup();
    let (src, tgt) = (s_store.stats(), target.store.stats());
    println!(
        "  lag > 0.25 s in seconds {slow_seconds:?}; slowest sync round / checkpoint / writer batch: source {:.1} / {:.1} / {:.1} ms, target {:.1} / {:.1} / {:.1} ms",
        src.slowest_sync_micros as f64 / 1e3,
        src.slowest_checkpoint_micros as f64 / 1e3,
        src.slowest_batch_micros as f64 / 1e3,
        tgt.slowest_sync_micros as f64 / 1e3,
        tgt.slowest_checkpoint_micros as f64 / 1e3,
        tgt.slowest_batch_micros as f64 / 1e3,
    );
    drop(push);
    target.stop();
    client_rt.shutdown_background();
    Ok(())
}
