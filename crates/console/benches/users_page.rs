//! `GET /console/directories/{id}` (the users and groups tables, 25 rows each) for a
//! directory of 100,000 users, through the console's router with a signed-in session: the
//! first page, a page deep inside the directory (`after=`), and a search matching one user.
//! Beside it, the floor: the engine's own `list_users` page read alone. Not run by
//! `cargo test`: `cargo bench -p idbridge-console --bench users_page` (env `USERS`, `ROUNDS`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use idbridge_console::{operators, sessions, Console, ConsoleSettings};
use idbridge_directory::{DirectorySettings, GroupInput, Snapshot, SnapshotPolicy, UserInput};
use idbridge_model::{Cursor, Order, PageRequest};
use idbridge_store::{SqliteStore, Store};
use serde_json::json;
use tower::ServiceExt;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn user(i: usize) -> UserInput {
    let email = format!("user{i:06}@bench.example.com");
    let source = json!({"externalId": format!("u{i}"), "userName": email, "active": true});
    UserInput {
        idp_id: format!("u{i}"),
        email: Some(email.clone()),
        first_name: Some(format!("Given{i}")),
        last_name: Some("Bench".into()),
        name: Some(format!("Given{i} Bench")),
        emails: Vec::new(),
        username: Some(email.clone()),
        job_title: None,
        active: true,
        raw_attributes: Default::default(),
        source,
        unique_keys: vec![("scim.userName".into(), email)],
    }
}

fn group(g: usize) -> GroupInput {
    GroupInput {
        idp_id: format!("g{g}"),
        name: format!("Group {g}"),
        raw_attributes: Default::default(),
        source: json!({"displayName": format!("Group {g}")}),
        unique_keys: vec![("scim.displayName".into(), format!("group {g}"))],
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(name: &str, mut times: Vec<Duration>) {
    times.sort();
    println!(
        "{name:<44} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  ({} requests)",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        percentile(&times, 1.0),
        times.len()
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let users = env_or("USERS", 100_000);
    let rounds = env_or("ROUNDS", 50);
    let dir = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir())?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path())?);
    let orgs = Arc::new(idbridge_sso::organizations::Organizations::new(
        store.clone(),
    ));
    let engine = Arc::new(idbridge_directory::DirectoryEngine::new(
        store.clone(),
        orgs,
    ));
    let sso = Arc::new(idbridge_sso::SsoService::new(
        store.clone(),
        engine.clone(),
        idbridge_sso::SsoSettings::default(),
    ));
    let org = sso
        .organizations()
        .create(idbridge_sso::organizations::NewOrganization {
            name: "Bench".into(),
            domains: Vec::new(),
            external_id: None,
            metadata: Default::default(),
            allow_profiles_outside_organization: false,
        })
        .await?;
    let started = Instant::now();
    let (e2, org_id) = (engine.clone(), org.id.clone());
    let dir_id = tokio::task::spawn_blocking(move || -> Result<String, String> {
        let (rec, _) = e2
            .create_directory(
                &org_id,
                "Bench",
                "generic scim v2.0",
                DirectorySettings::default(),
            )
            .map_err(|e| e.to_string())?;
        let snap = Snapshot {
            users: (0..users).map(user).collect(),
            groups: (0..20).map(group).collect(),
            memberships: (0..users)
                .map(|i| (format!("g{}", i % 20), format!("u{i}")))
                .collect(),
        };
        e2.apply_snapshot(&rec.directory.id, snap, SnapshotPolicy::default())
            .map_err(|e| e.to_string())?;
        Ok(rec.directory.id)
    })
    .await??;
    println!(
        "loaded {users} users in 20 groups in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    operators::add(store.as_ref(), "bench", "bench password 1234")?;
    let now = idbridge_model::Timestamp::now().as_millis();
    let (session, _) = sessions::start(
        store.as_ref(),
        "bench",
        sessions::SessionPolicy::default(),
        now,
    )?;
    let console = Arc::new(Console::new(
        store.clone(),
        sso,
        engine.clone(),
        ConsoleSettings::new("http://127.0.0.1:8080"),
    ));
    let app = idbridge_console::router(console);

    // A cursor halfway through the directory.
    let mid = engine
        .list_users(
            &dir_id,
            None,
            &PageRequest {
                limit: users / 2,
                order: Order::Desc,
                cursor: Cursor::None,
            },
        )?
        .data
        .last()
        .map(|u| u.user.id.clone())
        .ok_or("empty directory")?;
    let cases = [
        ("first page", format!("/console/directories/{dir_id}")),
        (
            "page at the middle (after=)",
            format!("/console/directories/{dir_id}?table=users&after={mid}"),
        ),
        (
            "search matching 1 user (newest)",
            format!(
                "/console/directories/{dir_id}?table=users&search=user{:06}%40",
                users - 1
            ),
        ),
        // A search reads at most one slice (5,000 users) per view; the oldest user is found
        // by following "Older →" through the slices.
        (
            "search, one slice without a match",
            format!("/console/directories/{dir_id}?table=users&search=user000000%40"),
        ),
    ];
    for (name, uri) in &cases {
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let req = Request::builder()
                .uri(uri)
                .header("cookie", format!("idbridge_console={session}"))
                .body(Body::empty())?;
            let t = Instant::now();
            let resp = app.clone().oneshot(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            times.push(t.elapsed());
            assert_eq!(status, StatusCode::OK, "{uri}");
            assert!(body.len() > 1000);
        }
        report(&format!("console {name}"), times);
    }
    // The floor: the engine's page read alone, no HTML.
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let page = engine.list_users(
            &dir_id,
            None,
            &PageRequest {
                limit: 25,
                order: Order::Desc,
                cursor: Cursor::After(mid.clone()),
            },
        )?;
        times.push(t.elapsed());
        assert_eq!(page.data.len(), 25);
    }
    report("engine list_users page (no HTML), after=", times);
    Ok(())
}
