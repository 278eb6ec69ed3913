//! `GET /directory_users?directory=...&limit=100` throughput over real loopback HTTP, for a
//! directory of 10,000 users in 20 groups (each user in one group, so every item carries a
//! `groups` array). Each client walks the whole directory page by page with `after`, the way
//! SDK auto-pagination does. Not run by `cargo test`:
//! `cargo bench -p idbridge-api --bench directory_users` (env `USERS`, `CLIENTS`, `SECS`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use idbridge_api::{router, ApiConfig, AppState};
use idbridge_directory::{DirectorySettings, GroupInput, Snapshot, SnapshotPolicy, UserInput};
use idbridge_sso::api_keys as auth;
use idbridge_store::{SqliteStore, Store};
use serde_json::{json, Value};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn user(i: usize) -> UserInput {
    let email = format!("user{i:05}@bench.example.com");
    let source = json!({"externalId": format!("u{i}"), "userName": email, "active": true,
        "name": {"givenName": format!("Given{i}"), "familyName": "Bench"}});
    UserInput {
        idp_id: format!("u{i}"),
        email: Some(email.clone()),
        first_name: Some(format!("Given{i}")),
        last_name: Some("Bench".into()),
        name: Some(format!("Given{i} Bench")),
        emails: vec![idbridge_model::DirectoryUserEmail {
            primary: true,
            email_type: Some("work".into()),
            value: Some(email.clone()),
        }],
        username: Some(email.clone()),
        job_title: Some("Engineer".into()),
        active: true,
        raw_attributes: source.as_object().cloned().unwrap_or_default(),
        source,
        unique_keys: vec![("scim.userName".into(), email)],
    }
}

fn group(g: usize) -> GroupInput {
    let source = json!({"externalId": format!("g{g}"), "displayName": format!("Group {g}")});
    GroupInput {
        idp_id: format!("g{g}"),
        name: format!("Group {g}"),
        raw_attributes: source.as_object().cloned().unwrap_or_default(),
        source,
        unique_keys: vec![("scim.displayName".into(), format!("group {g}"))],
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let users = env_or("USERS", 10_000);
    let clients = env_or("CLIENTS", 4);
    let secs = env_or("SECS", 10) as u64;

    let dir = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir())?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path())?);
    let key = auth::bootstrap(store.as_ref())?
        .ok_or("store already bootstrapped")?
        .api_key;
    let state = AppState::new(store.clone(), ApiConfig::default());
    let engine = state.directory.clone();
    let app = router(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::builder().no_proxy().build()?;

    let org: Value = http
        .post(format!("{base}/organizations"))
        .bearer_auth(&key)
        .json(&json!({"name": "Bench", "domain_data": [{"domain": "bench.example.com"}]}))
        .send()
        .await?
        .json()
        .await?;
    let org_id = org["id"].as_str().ok_or("no organization id")?.to_string();

    let started = Instant::now();
    let dir_id = tokio::task::spawn_blocking(move || -> Result<String, String> {
        let (rec, _) = engine
            .create_directory(
                &org_id,
                "Bench",
                "generic scim v2.0",
                DirectorySettings::default(),
            )
            .map_err(|e| e.to_string())?;
        let id = rec.directory.id;
        let snap = Snapshot {
            users: (0..users).map(user).collect(),
            groups: (0..20).map(group).collect(),
            memberships: (0..users)
                .map(|i| (format!("g{}", i % 20), format!("u{i}")))
                .collect(),
        };
        engine
            .apply_snapshot(&id, snap, SnapshotPolicy::default())
            .map_err(|e| e.to_string())?;
        Ok(id)
    })
    .await??;
    println!(
        "loaded {users} users in 20 groups in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, base, key, dir_id) = (http.clone(), base.clone(), key.clone(), dir_id.clone());
        tasks.push(tokio::spawn(async move {
            let mut requests = 0u64;
            let mut items = 0u64;
            let mut after: Option<String> = None;
            while Instant::now() < deadline {
                let mut url = format!("{base}/directory_users?directory={dir_id}&limit=100");
                if let Some(a) = &after {
                    url.push_str(&format!("&after={a}"));
                }
                let resp = http.get(&url).bearer_auth(&key).send().await?;
                if !resp.status().is_success() {
                    return Err(format!("{url}: {}", resp.status()).into());
                }
                let page: Value = resp.json().await?;
                requests += 1;
                items += page["data"].as_array().map_or(0, |d| d.len() as u64);
                after = page["list_metadata"]["after"].as_str().map(str::to_string);
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((requests, items))
        }));
    }
    let t0 = Instant::now();
    let (mut requests, mut items) = (0u64, 0u64);
    for t in tasks {
        let (r, i) = t.await?.map_err(|e| e.to_string())?;
        requests += r;
        items += i;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    println!(
        "GET /directory_users?limit=100 ({users} users, {clients} clients): {:.0} requests/s, {:.0} users/s",
        requests as f64 / elapsed,
        items as f64 / elapsed
    );
    Ok(())
}
