//! Directory engine throughput: sequential user upserts (each one durable commit) and a
//! 100k-user snapshot (create, idempotent re-apply, 10% update).
//!
//! `CARGO_TARGET_DIR=/work/targets/directory cargo bench -p idbridge-directory`
//! `IDBRIDGE_BENCH_USERS` changes the snapshot size (default 100000), `IDBRIDGE_BENCH_SECS` the
//! time spent on sequential upserts (default 3). The store lives under the target directory
//! (a real disk, so fdatasync costs what it costs in production); set `IDBRIDGE_BENCH_DIR` to
//! put it elsewhere (e.g. /dev/shm to measure the engine alone).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use idbridge_directory::{DirectoryEngine, DirectorySettings, Snapshot, SnapshotPolicy, UserInput};
use idbridge_model::tag::OrganizationTag;
use idbridge_model::{new_id, IdPrefix, Organization, Timestamp};
use idbridge_store::SqliteStore;
use serde_json::json;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("{what}: {e}");
    std::process::exit(1)
}

/// A CSV-row-sized user: what an SFTP or LDAP feed typically carries.
fn input(i: u64, tag: &str) -> UserInput {
    let email = format!("user{i}@example.com");
    let source = json!({
        "user_id": format!("emp-{i}"), "first_name": format!("First{i}"),
        "last_name": "Last", "email": email, "department_name": tag,
        "job_title": "Engineer", "manager_email": "boss@example.com",
    });
    UserInput {
        idp_id: format!("emp-{i}"),
        email: Some(email.clone()),
        first_name: Some(format!("First{i}")),
        last_name: Some("Last".into()),
        name: None,
        emails: Vec::new(),
        username: None,
        job_title: Some("Engineer".into()),
        active: true,
        raw_attributes: source.as_object().cloned().unwrap_or_default(),
        source,
        unique_keys: vec![("email".into(), email)],
    }
}

fn main() {
    let base = std::env::var("IDBRIDGE_BENCH_DIR")
        .unwrap_or_else(|_| std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()));
    let _ = std::fs::create_dir_all(&base);
    let dir = tempfile::tempdir_in(&base).unwrap_or_else(|e| fail("tempdir", e));
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap_or_else(|e| fail("open", e)));
    let org_id = new_id(IdPrefix::Organization);
    let now = Timestamp::now();
    let org = Organization {
        object: OrganizationTag,
        id: org_id.clone(),
        name: "Bench".into(),
        domains: Vec::new(),
        metadata: Default::default(),
        external_id: None,
        stripe_customer_id: None,
        allow_profiles_outside_organization: false,
        created_at: now,
        updated_at: now,
    };
    let orgs = Arc::new(idbridge_directory::FixedOrganizations::new([org]));
    let engine = DirectoryEngine::new(store.clone(), orgs);
    println!("store: {}", dir.path().display());

    // Sequential upserts: one durable commit each (create, then alternating updates).
    let scim = engine
        .create_directory(
            &org_id,
            "scim",
            "generic scim v2.0",
            DirectorySettings::default(),
        )
        .unwrap_or_else(|e| fail("directory", e))
        .0
        .directory
        .id;
    let secs = env_num("IDBRIDGE_BENCH_SECS", 3);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        engine
            .upsert_user(&scim, None, input(n, "a"), None)
            .unwrap_or_else(|e| fail("upsert", e));
        n += 1;
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "sequential user creates: {n} in {el:.2} s = {:.0}/s",
        n as f64 / el
    );

    // Snapshot.
    let users = env_num("IDBRIDGE_BENCH_USERS", 100_000);
    let sftp = engine
        .create_directory(&org_id, "sftp", "sftp", DirectorySettings::default())
        .unwrap_or_else(|e| fail("directory", e))
        .0
        .directory
        .id;
    let snap = |tag: &str, changed: u64| Snapshot {
        users: (0..users)
            .map(|i| input(i, if i < changed { tag } else { "a" }))
            .collect(),
        ..Default::default()
    };
    for (label, s) in [
        ("create", snap("a", 0)),
        ("re-apply (no change)", snap("a", 0)),
        ("update 10%", snap("b", users / 10)),
    ] {
        let start = Instant::now();
        let out = engine
            .apply_snapshot(&sftp, s, SnapshotPolicy::default())
            .unwrap_or_else(|e| fail("snapshot", e));
        println!(
            "snapshot {users} users, {label}: {:.2} s (created {}, updated {}, events {}, commits {})",
            start.elapsed().as_secs_f64(),
            out.created,
            out.updated,
            out.events,
            out.commits
        );
    }
}
