//! SCIM push into a second idbridge's real SCIM endpoint (the product's router over its own
//! durable store), in process: lifecycle, WorkOS rules, adoption instead of twins, a target
//! that is down at start, and every bad remote behaviour through a fault-injecting proxy in
//! front of the real target. Each test ends with the target's directory equal to the source's
//! (users field by field, groups, memberships, roles) and no duplicate remote object.
//! The end-to-end tests with real processes (SIGKILL, restarts, the WorkOS SDKs) are in
//! tests/tests/forward_e2e.rs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use axum::http::Method;
use idbridge_directory::{Deactivation, DirectorySettings, GroupInput, UserInput};
use idbridge_forward::scim_push::{Deprovision, CUSTOM_ATTRIBUTES_SCHEMA, FORWARD_FAILED_EVENT};
use idbridge_model::{DirectoryUserEmail, Role, RoleMapping, Timestamp};
use idbridge_secrets::SecretBox;
use serde_json::{json, Value};
use support::{
    eventually, same_directory, test_options, Fault, FaultProxy, Forwarder, Rule, Side, Target,
};

const WAIT: Duration = Duration::from_secs(30);

fn source_settings(deactivation: Deactivation) -> DirectorySettings {
    DirectorySettings {
        deactivation,
        attribute_map: [("license_tier".to_owned(), "license_tier".to_owned())]
            .into_iter()
            .collect(),
        ..DirectorySettings::default()
    }
}

fn target_settings(deactivation: Deactivation) -> DirectorySettings {
    DirectorySettings {
        deactivation,
        attribute_map: [(
            "license_tier".to_owned(),
            format!("{CUSTOM_ATTRIBUTES_SCHEMA}.license_tier"),
        )]
        .into_iter()
        .collect(),
        ..DirectorySettings::default()
    }
}

/// A user; without a username its email is the username (a user without one reaches the
/// target with its email as `userName`, which SCIM requires, so the target would show it).
fn person(idp: &str, given: &str, family: &str, username: Option<&str>) -> UserInput {
    let email = format!("{}@example.com", given.to_lowercase());
    let username = Some(username.unwrap_or(&email).to_owned());
    UserInput {
        idp_id: idp.into(),
        email: Some(email.clone()),
        first_name: Some(given.into()),
        last_name: Some(family.into()),
        name: Some(format!("{given} {family}")),
        emails: vec![DirectoryUserEmail {
            primary: true,
            email_type: Some("work".into()),
            value: Some(email),
        }],
        username,
        job_title: Some("Engineer".into()),
        active: true,
        raw_attributes: Default::default(),
        source: json!({"department": "R&D", "license_tier": "gold", "costCenter": "ignored"}),
        unique_keys: Vec::new(),
    }
}

fn group(idp: &str, name: &str) -> GroupInput {
    GroupInput {
        idp_id: idp.into(),
        name: name.into(),
        ..GroupInput::default()
    }
}

fn add_user(s: &Side, input: UserInput) -> String {
    s.engine
        .upsert_user(&s.dir, None, input, None)
        .expect("user")
        .user
        .user
        .id
}

fn add_group(s: &Side, input: GroupInput, members: &[&str]) -> String {
    let id = s
        .engine
        .upsert_group(&s.dir, None, input, None)
        .expect("group")
        .group
        .group
        .id;
    if !members.is_empty() {
        s.engine
            .add_group_members(
                &s.dir,
                &id,
                members.iter().map(|m| (*m).to_owned()).collect(),
            )
            .expect("members");
    }
    id
}

fn set_roles(s: &Side, admin_group: &str) {
    let now = Timestamp::now();
    let role = |slug: &str, priority: u32, default: bool| Role {
        slug: slug.into(),
        name: slug.into(),
        description: None,
        priority,
        is_default: default,
        created_at: now,
        updated_at: now,
    };
    s.engine
        .set_roles(
            &s.org,
            vec![role("member", 1, true), role("admin", 10, false)],
        )
        .expect("roles");
    s.engine
        .set_role_mappings(
            &s.org,
            vec![RoleMapping {
                organization_id: s.org.clone(),
                idp_group: admin_group.into(),
                role_slug: "admin".into(),
            }],
        )
        .expect("mappings");
}

async fn converged(fwd: &Forwarder, source: &Side, target: &Side) {
    eventually(WAIT, || async {
        let st = fwd.status(source);
        if st.lag_events > 0 || st.backfill.as_ref().is_some_and(|b| b.state == "running") {
            return Err(format!("lag {} state {}", st.lag_events, st.state));
        }
        same_directory(source, target)
    })
    .await;
}

/// No two remote users share an externalId, no two remote groups share one.
async fn no_twins(target: &Target) {
    for list in [target.scim_users().await, target.scim_groups().await] {
        let mut ext: Vec<String> = list
            .iter()
            .filter_map(|r| r["externalId"].as_str().map(str::to_owned))
            .collect();
        let n = ext.len();
        ext.sort();
        ext.dedup();
        assert_eq!(ext.len(), n, "duplicate remote objects: {list:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_reaches_a_second_idbridge() {
    let source = Side::new(source_settings(Deactivation::KeepInactive));
    let target = Target::start(target_settings(Deactivation::KeepInactive)).await;
    for s in [&source, &target.side] {
        set_roles(s, "g-admins");
    }
    // An existing directory: the backfill pushes it.
    let alice = add_user(&source, person("u-alice", "Alice", "Archer", Some("alice")));
    let bob = add_user(&source, person("u-bob", "Bob", "Baker", None));
    let carol = add_user(&source, person("u-carol", "Carol", "Cook", Some("carol")));
    let eng = add_group(&source, group("g-eng", "Engineering"), &[&alice, &bob]);
    let admins = add_group(&source, group("g-admins", "Admins"), &[&alice]);
    let secrets = SecretBox::generate().expect("key");
    let fwd = Forwarder::start(&source, &secrets);
    // Both sides keep deactivated users; users that leave the directory are deleted remotely.
    let mut opts = test_options();
    opts.deprovision = Deprovision::Delete;
    fwd.set(&source, &target.endpoint, &target.side.token, opts);
    converged(&fwd, &source, &target.side).await;
    let st = fwd.status(&source);
    assert_eq!(st.backfill.as_ref().map(|b| b.state), Some("done"));
    assert_eq!(st.forwarded, 5, "{st:?}");
    // Roles travel through the groups' idp_ids.
    let a = target
        .side
        .engine
        .find_user_by_idp_id(&target.side.dir, "u-alice")
        .expect("read")
        .expect("alice");
    assert_eq!(a.user.role.as_ref().map(|r| r.slug.as_str()), Some("admin"));

    // Updates, renames, a new user, membership changes, deactivation, group rename.
    let mut b2 = person("u-bob", "Robert", "Baker", None);
    b2.job_title = Some("Staff Engineer".into());
    source
        .engine
        .upsert_user(&source.dir, Some(&bob), b2, None)
        .expect("bob");
    source
        .engine
        .upsert_user(
            &source.dir,
            Some(&carol),
            person("u-carol", "Carol", "Cook", Some("ccook")),
            None,
        )
        .expect("carol");
    let dave = add_user(&source, person("u-dave", "Dave", "Dyer", Some("dave")));
    source
        .engine
        .add_group_members(&source.dir, &eng, vec![dave.clone()])
        .expect("add");
    source
        .engine
        .remove_group_members(&source.dir, &eng, vec![bob.clone()])
        .expect("remove");
    let mut off = person("u-carol", "Carol", "Cook", Some("ccook"));
    off.active = false;
    source
        .engine
        .upsert_user(&source.dir, Some(&carol), off, None)
        .expect("deactivate");
    source
        .engine
        .upsert_group(
            &source.dir,
            Some(&eng),
            group("g-eng", "Engineering Team"),
            None,
        )
        .expect("rename");
    let ops = add_group(&source, group("g-ops", "Ops"), &[&dave, &bob]);
    // Role-relevant: dave joins admins, alice leaves it.
    source
        .engine
        .add_group_members(&source.dir, &admins, vec![dave.clone()])
        .expect("admin");
    source
        .engine
        .remove_group_members(&source.dir, &admins, vec![alice.clone()])
        .expect("unadmin");
    converged(&fwd, &source, &target.side).await;
    let c = target
        .side
        .engine
        .find_user_by_idp_id(&target.side.dir, "u-carol")
        .expect("read")
        .expect("carol kept inactive");
    assert_eq!(c.user.state, idbridge_model::UserState::Inactive);

    // Reactivate, delete a user, delete groups.
    source
        .engine
        .upsert_user(
            &source.dir,
            Some(&carol),
            person("u-carol", "Carol", "Cook", Some("ccook")),
            None,
        )
        .expect("reactivate");
    source
        .engine
        .delete_user(&source.dir, &dave)
        .expect("delete dave");
    source
        .engine
        .delete_group(&source.dir, &ops)
        .expect("delete ops");
    source
        .engine
        .delete_group(&source.dir, &admins)
        .expect("delete admins");
    converged(&fwd, &source, &target.side).await;
    // Dave is deleted remotely (deprovision = delete).
    let users = target.scim_users().await;
    assert!(
        users.iter().all(|u| u["externalId"] != "u-dave"),
        "{users:?}"
    );
    assert_eq!(target.scim_groups().await.len(), 1);
    no_twins(&target).await;
    let st = fwd.status(&source);
    assert_eq!(st.parked, 0, "{st:?}");
    assert!(st.sent > 10, "{st:?}");
}

/// WorkOS's default flow on both sides: a deactivated user leaves the directory; the
/// forwarder deactivates it remotely (PATCH active:false), which the target (deleting
/// deactivated users) turns into a deletion. Created again by a pull source with the same IdP
/// id (a new local id), the user takes the remote user over and reactivates it: no twin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivation_follows_workos_default_flow() {
    let source = Side::new(source_settings(Deactivation::DeleteUser));
    let target = Target::start(target_settings(Deactivation::DeleteUser)).await;
    let secrets = SecretBox::generate().expect("key");
    let fwd = Forwarder::start(&source, &secrets);
    fwd.set(
        &source,
        &target.endpoint,
        &target.side.token,
        test_options(),
    );
    let a = add_user(&source, person("u-a", "Ann", "A", Some("ann")));
    let b = add_user(&source, person("u-b", "Ben", "B", Some("ben")));
    add_group(&source, group("g", "G"), &[&a, &b]);
    converged(&fwd, &source, &target.side).await;
    let mut off = person("u-b", "Ben", "B", Some("ben"));
    off.active = false;
    source
        .engine
        .upsert_user(&source.dir, Some(&b), off, None)
        .expect("deactivate");
    source.engine.delete_user(&source.dir, &a).expect("delete");
    converged(&fwd, &source, &target.side).await;
    // Kept as inactive SCIM resources by the target, gone from its directory.
    let remote = target.scim_users().await;
    assert_eq!(remote.len(), 2, "{remote:?}");
    assert!(remote.iter().all(|u| u["active"] == false), "{remote:?}");
    // Back, under a new local id, same IdP id.
    add_user(&source, person("u-a", "Ann", "A", Some("ann")));
    converged(&fwd, &source, &target.side).await;
    assert_eq!(target.scim_users().await.len(), 2);
    no_twins(&target).await;
    assert_eq!(fwd.status(&source).parked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workos_rules_report_the_user_and_do_not_block_the_others() {
    let source = Side::new(source_settings(Deactivation::KeepInactive));
    let target = Target::start(target_settings(Deactivation::KeepInactive)).await;
    let secrets = SecretBox::generate().expect("key");
    let fwd = Forwarder::start(&source, &secrets);
    fwd.set(
        &source,
        &target.endpoint,
        &target.side.token,
        test_options(),
    );
    let seq0 = source.store.last_event_seq().expect("seq");
    // No email and a userName that is not an email: WorkOS would refuse it.
    let mut bad = person("u-bad", "Bad", "User", Some("baduser"));
    bad.email = None;
    bad.username = Some("baduser".into());
    bad.emails.clear();
    let bad_id = add_user(&source, bad);
    for i in 0..20 {
        add_user(
            &source,
            person(&format!("u-{i}"), &format!("P{i}"), "Q", None),
        );
    }
    eventually(WAIT, || async {
        let st = fwd.status(&source);
        if st.forwarded == 20 && st.parked == 1 && st.lag_events == 0 {
            Ok(())
        } else {
            Err(format!("{st:?}"))
        }
    })
    .await;
    let st = fwd.status(&source);
    let p = &st.parked_objects[0];
    assert_eq!(p.id, bad_id);
    assert_eq!(p.code, "workos_rule");
    assert!(p.reason.contains("no email"), "{}", p.reason);
    // Nothing was sent for it.
    assert!(target
        .scim_users()
        .await
        .iter()
        .all(|u| u["externalId"] != "u-bad"));
    // Reported once as idbridge's own opt-in event.
    let events = source.store.events_after(seq0, 10_000).expect("events");
    let failed: Vec<Value> = events
        .iter()
        .filter(|e| e.kind == FORWARD_FAILED_EVENT)
        .map(|e| serde_json::from_slice(&e.body).expect("json"))
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["data"]["object_id"], bad_id.as_str());
    assert_eq!(failed[0]["data"]["code"], "workos_rule");
    // Fixed in the source: retried, sent, unparked.
    let mut fixed = person("u-bad", "Bad", "User", Some("baduser"));
    fixed.email = Some("bad@example.com".into());
    source
        .engine
        .upsert_user(&source.dir, Some(&bad_id), fixed, None)
        .expect("fix");
    converged(&fwd, &source, &target.side).await;
    assert_eq!(fwd.status(&source).parked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_remote_user_is_adopted_not_duplicated() {
    let source = Side::new(source_settings(Deactivation::KeepInactive));
    let target = Target::start(target_settings(Deactivation::KeepInactive)).await;
    // The remote already has Alice (same userName, another first name) and the group.
    let (s, _) = target
        .scim(
            Method::POST,
            "Users",
            Some(
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "alice", "externalId": "u-alice", "name": {"givenName": "Old"},
                "emails": [{"value": "alice@example.com", "primary": true}]}),
            ),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = target
        .scim(
            Method::POST,
            "Groups",
            Some(
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "Engineering", "externalId": "g-eng"}),
            ),
        )
        .await;
    assert_eq!(s, 201);
    let alice = add_user(&source, person("u-alice", "Alice", "Archer", Some("alice")));
    add_group(&source, group("g-eng", "Engineering"), &[&alice]);
    let secrets = SecretBox::generate().expect("key");
    let fwd = Forwarder::start(&source, &secrets);
    fwd.set(
        &source,
        &target.endpoint,
        &target.side.token,
        test_options(),
    );
    converged(&fwd, &source, &target.side).await;
    assert_eq!(target.scim_users().await.len(), 1);
    assert_eq!(target.scim_groups().await.len(), 1);
    no_twins(&target).await;
    // Another IdP object holding the same userName: reported, not adopted.
    let (s, _) = target
        .scim(
            Method::POST,
            "Users",
            Some(
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "zed", "externalId": "someone-else",
                "emails": [{"value": "z@example.com"}]}),
            ),
        )
        .await;
    assert_eq!(s, 201);
    let z = add_user(&source, person("u-zed", "Zed", "Z", Some("zed")));
    eventually(WAIT, || async {
        let st = fwd.status(&source);
        match st.parked_objects.first() {
            Some(p) if p.id == z && p.code == "conflict" => Ok(()),
            _ => Err(format!("{st:?}")),
        }
    })
    .await;
    assert_eq!(target.scim_users().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_down_at_start_gets_everything_once_it_is_up() {
    let source = Side::new(source_settings(Deactivation::KeepInactive));
    let a = add_user(&source, person("u-a", "Ann", "A", Some("ann")));
    add_group(&source, group("g", "G"), &[&a]);
    // Reserve a port, then serve nothing on it yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let side = Side::new(target_settings(Deactivation::KeepInactive));
    let endpoint = format!("http://127.0.0.1:{port}/scim/v2/{}", side.dir);
    let secrets = SecretBox::generate().expect("key");
    let fwd = Forwarder::start(&source, &secrets);
    fwd.set(&source, &endpoint, &side.token, test_options());
    eventually(WAIT, || async {
        let st = fwd.status(&source);
        match &st.last_error {
            Some(e) if e.contains("cannot reach the target") => Ok(()),
            _ => Err(format!("{st:?}")),
        }
    })
    .await;
    add_user(&source, person("u-b", "Ben", "B", Some("ben")));
    let target = Target::start_on(side, Some(port)).await;
    converged(&fwd, &source, &target.side).await;
    no_twins(&target).await;
}

/// The faults of the issue, each through the proxy in front of the real target, each ending
/// with remote == local and no twin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_through_a_proxy_end_with_remote_equal_to_local() {
    let source = Side::new(source_settings(Deactivation::KeepInactive));
    let target = Target::start(target_settings(Deactivation::KeepInactive)).await;
    let proxy = FaultProxy::start(&target.base).await;
    let secrets = SecretBox::generate().expect("key");
    let fwd = Forwarder::start(&source, &secrets);
    let mut opts = test_options();
    opts.request_timeout_ms = 1_000;
    fwd.set(
        &source,
        &proxy.endpoint_for(&target),
        &target.side.token,
        opts,
    );
    let seed = add_user(&source, person("u-seed", "Seed", "S", Some("seed")));
    converged(&fwd, &source, &target.side).await;

    // A run of 503s, then 429 with Retry-After: retried, nothing parked.
    proxy.add(Rule {
        method: None,
        path: "/Users",
        fault: Fault::Status {
            code: 503,
            retry_after: None,
        },
        count: 5,
    });
    proxy.add(Rule {
        method: None,
        path: "/Users",
        fault: Fault::Status {
            code: 429,
            retry_after: Some(1),
        },
        count: 2,
    });
    let t0 = std::time::Instant::now();
    add_user(&source, person("u-1", "One", "O", Some("one")));
    converged(&fwd, &source, &target.side).await;
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "Retry-After honoured"
    );
    assert_eq!(proxy.rules_left(), 0);
    assert_eq!(fwd.status(&source).parked, 0);

    // Each bad answer is an error for that object only; the users after it go through.
    for (n, fault) in [
        Fault::MalformedJson,
        Fault::NoId,
        Fault::Redirect,
        Fault::Hang(Duration::from_secs(30)),
    ]
    .into_iter()
    .enumerate()
    {
        let hang = matches!(fault, Fault::Hang(_));
        proxy.add(Rule {
            method: Some(Method::POST),
            path: "/Users",
            fault,
            // A hang must outlast the forwarder's retries of a timed-out request.
            count: if hang { 3 } else { 1 },
        });
        let victim = add_user(
            &source,
            person(&format!("u-v{n}"), &format!("V{n}"), "X", None),
        );
        eventually(WAIT, || async {
            let st = fwd.status(&source);
            match st.parked_objects.iter().find(|p| p.id == victim) {
                Some(p) if !p.reason.is_empty() => Ok(()),
                _ => Err(format!("{st:?}")),
            }
        })
        .await;
        // The forwarder goes on: the next user is forwarded.
        add_user(
            &source,
            person(&format!("u-w{n}"), &format!("W{n}"), "Y", None),
        );
        eventually(WAIT, || async {
            let forwarded = target
                .side
                .engine
                .find_user_by_idp_id(&target.side.dir, &format!("u-w{n}"))
                .ok()
                .flatten()
                .is_some();
            forwarded.then_some(()).ok_or_else(|| "not yet".to_owned())
        })
        .await;
        // The object changes: retried (a create that may have happened is looked up first).
        let mut again = person(&format!("u-v{n}"), &format!("V{n}"), "X", None);
        again.job_title = Some("Changed".into());
        source
            .engine
            .upsert_user(&source.dir, Some(&victim), again, None)
            .expect("change");
        converged(&fwd, &source, &target.side).await;
        no_twins(&target).await;
    }
    let _ = seed;
    assert_eq!(fwd.status(&source).parked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_forwarder_resumes_without_twins() {
    let source = Side::new(source_settings(Deactivation::KeepInactive));
    let target = Target::start(target_settings(Deactivation::KeepInactive)).await;
    let secrets = SecretBox::generate().expect("key");
    let mut ids = Vec::new();
    for i in 0..300 {
        ids.push(add_user(
            &source,
            person(&format!("u-{i}"), &format!("N{i}"), "R", None),
        ));
    }
    let g = add_group(&source, group("g", "All"), &[]);
    source
        .engine
        .add_group_members(&source.dir, &g, ids.clone())
        .expect("members");
    {
        let fwd = Forwarder::start(&source, &secrets);
        fwd.set(
            &source,
            &target.endpoint,
            &target.side.token,
            test_options(),
        );
        // Stop it in the middle of the backfill.
        eventually(WAIT, || async {
            let st = fwd.status(&source);
            if st.forwarded >= 50 {
                Ok(())
            } else {
                Err(format!("{st:?}"))
            }
        })
        .await;
    }
    // A new process: resumes from the durable cursor; steady changes meanwhile.
    let fwd = Forwarder::start(&source, &secrets);
    for i in 300..320 {
        add_user(
            &source,
            person(&format!("u-{i}"), &format!("N{i}"), "R", None),
        );
    }
    converged(&fwd, &source, &target.side).await;
    no_twins(&target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reports_and_repairs_drift() {
    let source = Side::new(source_settings(Deactivation::KeepInactive));
    let target = Target::start(target_settings(Deactivation::KeepInactive)).await;
    let a = add_user(&source, person("u-a", "Ann", "A", Some("ann")));
    let b = add_user(&source, person("u-b", "Ben", "B", Some("ben")));
    add_user(&source, person("u-c", "Cid", "C", Some("cid")));
    add_group(&source, group("g", "G"), &[&a, &b]);
    let secrets = SecretBox::generate().expect("key");
    let fwd = Forwarder::start(&source, &secrets);
    let mut opts = test_options();
    opts.deprovision = Deprovision::Delete;
    fwd.set(&source, &target.endpoint, &target.side.token, opts);
    converged(&fwd, &source, &target.side).await;
    // Drift made on the target behind the forwarder's back.
    let users = target.scim_users().await;
    let rid = |ext: &str| -> String {
        users
            .iter()
            .find(|u| u["externalId"] == ext)
            .and_then(|u| u["id"].as_str())
            .expect("remote user")
            .to_owned()
    };
    let (s, _) = target
        .scim(Method::DELETE, &format!("Users/{}", rid("u-c")), None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = target
        .scim(
            Method::PATCH,
            &format!("Users/{}", rid("u-a")),
            Some(
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "name.givenName", "value": "Mallory"}]}),
            ),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = target
        .scim(
            Method::POST,
            "Users",
            Some(
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "intruder@example.com", "externalId": "nobody"}),
            ),
        )
        .await;
    assert_eq!(s, 201);
    let gid = target.scim_groups().await[0]["id"]
        .as_str()
        .expect("gid")
        .to_owned();
    let (s, _) = target
        .scim(
            Method::PATCH,
            &format!("Groups/{gid}"),
            Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "remove", "path": format!("members[value eq \"{}\"]", rid("u-b"))}]})),
        )
        .await;
    assert_eq!(s, 200);
    assert!(same_directory(&source, &target.side).is_err());

    let report = |dry: bool| {
        let fwd = &fwd;
        let source = &source;
        async move {
            fwd.push
                .start_reconcile(&source.dir, dry)
                .expect("reconcile");
            let mut out = None;
            eventually(WAIT, || {
                let st = fwd.status(source);
                let done = st
                    .reconcile
                    .as_ref()
                    .filter(|r| r.state == "done")
                    .and_then(|r| r.report.clone());
                out = done.clone();
                async move { done.map(|_| ()).ok_or_else(|| format!("{st:?}")) }
            })
            .await;
            out.expect("report")
        }
    };
    let dry = report(true).await;
    assert!(dry.ok, "{dry:?}");
    assert_eq!(dry.users.missing, 1, "{dry:?}");
    assert_eq!(dry.users.changed, 1, "{dry:?}");
    assert_eq!(dry.users.extra, 1, "{dry:?}");
    assert_eq!(dry.memberships.missing, 1, "{dry:?}");
    assert_eq!(dry.repaired, 0);
    // A dry run changed nothing.
    assert!(same_directory(&source, &target.side).is_err());
    let fixed = report(false).await;
    assert_eq!(fixed.drift(), 4, "{fixed:?}");
    assert_eq!(fixed.repaired, 4, "{fixed:?}");
    same_directory(&source, &target.side).expect("repaired");
    // The extra user is deleted (deprovision = delete).
    assert!(target
        .scim_users()
        .await
        .iter()
        .all(|u| u["externalId"] != "nobody"));
    let again = report(true).await;
    assert_eq!(again.drift(), 0, "{again:?}");
    no_twins(&target).await;
}

/// A target that refuses one user for good (a SCIM 400 on every create of it): the forwarder
/// gives up on that user, reports it once as `dsync.forward_failed` with what the target said,
/// and goes on with the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_refusing_a_user_for_good_reports_dsync_forward_failed() {
    let source = Side::new(source_settings(Deactivation::KeepInactive));
    let target = Target::start(target_settings(Deactivation::KeepInactive)).await;
    let proxy = FaultProxy::start(&target.base).await;
    let secrets = SecretBox::generate().expect("key");
    let fwd = Forwarder::start(&source, &secrets);
    let endpoint = proxy.endpoint_for(&target);
    fwd.set(&source, &endpoint, &target.side.token, test_options());
    let seq0 = source.store.last_event_seq().expect("seq");
    proxy.add(Rule {
        method: Some(Method::POST),
        path: "/Users",
        fault: Fault::Status {
            code: 400,
            retry_after: None,
        },
        count: 1_000,
    });
    let victim = add_user(&source, person("u-refused", "Refused", "R", None));
    eventually(WAIT, || async {
        let st = fwd.status(&source);
        match st.parked_objects.iter().find(|p| p.id == victim) {
            Some(_) => Ok(()),
            None => Err(format!("{st:?}")),
        }
    })
    .await;
    let refused_calls = 1_000 - proxy.rules_left();
    assert!(refused_calls >= 1, "the target was asked");

    // The event joins the forwarder's next commit (the status shows the parking first).
    let forward_failed = || {
        source
            .store
            .events_after(seq0, 10_000)
            .expect("events")
            .iter()
            .filter(|e| e.kind == FORWARD_FAILED_EVENT)
            .map(|e| serde_json::from_slice(&e.body).expect("json"))
            .collect::<Vec<Value>>()
    };
    eventually(WAIT, || async {
        let n = forward_failed().len();
        (n > 0)
            .then_some(())
            .ok_or_else(|| "no event yet".to_owned())
    })
    .await;
    let failed = forward_failed();
    assert_eq!(failed.len(), 1, "{failed:?}");
    let e = &failed[0];
    assert_eq!(e["event"], "dsync.forward_failed");
    assert!(e["id"].as_str().unwrap().starts_with("event_"));
    let d = &e["data"];
    assert_eq!(d["object"], "directory_forward_failure");
    assert_eq!(d["directory_id"], source.dir.as_str());
    assert_eq!(d["endpoint"], endpoint.as_str());
    assert_eq!(d["object_type"], "directory_user");
    assert_eq!(d["object_id"], victim.as_str());
    assert_eq!(d["idp_id"], "u-refused");
    assert_eq!(d["status"], 400);
    assert!(d["code"].is_string() && d["code"] != "", "{d}");
    assert!(d["reason"].as_str().unwrap().contains("injected"), "{d}");
    assert!(d["organization_id"].is_string(), "{d}");

    // Parked, not hammered: at most a couple of backed-off retries in 2 s, and still one
    // event (one per new reason). Then the next user goes through (the proxy's rule still
    // refuses every POST, so it is lifted first).
    let left = proxy.rules_left();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        left - proxy.rules_left() <= 2,
        "retried in a loop: {}",
        left - proxy.rules_left()
    );
    assert_eq!(forward_failed().len(), 1, "one event per reason");
    proxy.clear();
    add_user(&source, person("u-next", "Next", "N", None));
    eventually(WAIT, || async {
        let forwarded = target
            .side
            .engine
            .find_user_by_idp_id(&target.side.dir, "u-next")
            .ok()
            .flatten()
            .is_some();
        forwarded.then_some(()).ok_or_else(|| "not yet".to_owned())
    })
    .await;
    assert_eq!(forward_failed().len(), 1, "reported once");
}
