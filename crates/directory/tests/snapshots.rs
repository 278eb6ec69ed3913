//! Pull-source snapshots: diff, guard, idempotence, chunking, custom attributes; LDAP deltas.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::{group, user, Fx};
use idbridge_directory::{
    Deactivation, DeltaChange, DirectoryEngine, DirectorySettings, EngineError, GuardError,
    Snapshot, SnapshotOutcome, SnapshotPolicy, UserInput,
};
use idbridge_model::UserState;
use serde_json::json;

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(g, u)| (g.to_string(), u.to_string()))
        .collect()
}

fn users(n: usize) -> Vec<UserInput> {
    (0..n)
        .map(|i| {
            user(
                &format!("u-{i}"),
                &format!("u{i}@foo-corp.com"),
                &format!("U{i}"),
            )
        })
        .collect()
}

fn count_kinds(kinds: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for k in kinds {
        *m.entry(k.clone()).or_insert(0) += 1;
    }
    m
}

fn confirmed() -> SnapshotPolicy {
    SnapshotPolicy {
        confirmed: true,
        ..Default::default()
    }
}

#[test]
fn snapshot_diff_creates_updates_deletes_and_moves_memberships() {
    let fx = Fx::new();
    let dir = fx.sftp_dir(DirectorySettings::default());
    let snap1 = Snapshot {
        users: vec![
            user("a", "a@foo-corp.com", "A"),
            user("b", "b@foo-corp.com", "B"),
            user("c", "c@foo-corp.com", "C"),
        ],
        groups: vec![group("g1", "Eng"), group("g2", "Ops")],
        memberships: pairs(&[("g1", "a"), ("g1", "b"), ("g2", "c")]),
    };
    let seq = fx.last_seq();
    let out = fx
        .engine
        .apply_snapshot(&dir, snap1, SnapshotPolicy::default())
        .unwrap();
    assert_eq!(
        out,
        SnapshotOutcome {
            created: 3,
            groups_created: 2,
            memberships_added: 3,
            events: 9,
            commits: 1,
            ..Default::default()
        }
    );
    let kinds = fx.kinds_after(seq);
    assert_eq!(kinds.len(), 9);
    assert_eq!(kinds[0], "dsync.activated");
    let counts = count_kinds(&kinds);
    assert_eq!(counts["dsync.user.created"], 3);
    assert_eq!(counts["dsync.group.created"], 2);
    assert_eq!(counts["dsync.group.user_added"], 3);

    let a_before = fx.engine.find_user_by_idp_id(&dir, "a").unwrap().unwrap();
    let snap2 = Snapshot {
        users: vec![
            user("a", "a@foo-corp.com", "Alice"),
            user("c", "c@foo-corp.com", "C"),
            user("d", "d@foo-corp.com", "D"),
        ],
        groups: vec![group("g1", "Eng"), group("g3", "Sales")],
        memberships: pairs(&[("g1", "a"), ("g1", "c"), ("g3", "d")]),
    };
    let seq = fx.last_seq();
    let out = fx
        .engine
        .apply_snapshot(&dir, snap2.clone(), confirmed())
        .unwrap();
    assert_eq!(
        out,
        SnapshotOutcome {
            created: 1,
            updated: 1,
            deleted: 1,
            groups_created: 1,
            groups_deleted: 1,
            memberships_added: 2,
            events: 7,
            commits: 1,
            ..Default::default()
        }
    );
    let events = fx.events_after(seq);
    let kinds: Vec<String> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    let counts = count_kinds(&kinds);
    assert_eq!(counts["dsync.user.created"], 1);
    assert_eq!(counts["dsync.user.updated"], 1);
    assert_eq!(counts["dsync.user.deleted"], 1);
    assert_eq!(counts["dsync.group.created"], 1);
    assert_eq!(counts["dsync.group.deleted"], 1);
    assert_eq!(counts["dsync.group.user_added"], 2);
    assert!(
        !counts.contains_key("dsync.group.user_removed"),
        "removals are implied by deletions"
    );
    let upd = events
        .iter()
        .find(|e| e["event"] == "dsync.user.updated")
        .unwrap();
    assert_eq!(upd["data"]["id"], a_before.user.id.as_str());
    assert_eq!(
        upd["data"]["previous_attributes"],
        json!({"first_name": "A", "name": "A Doe"})
    );
    let deleted = events
        .iter()
        .find(|e| e["event"] == "dsync.user.deleted")
        .unwrap();
    assert_eq!(deleted["data"]["idp_id"], "b");

    let g1 = fx.engine.find_group_by_idp_id(&dir, "g1").unwrap().unwrap();
    let mut members = fx.engine.group_members(&g1.group.id).unwrap();
    members.sort();
    let mut want: Vec<String> = ["a", "c"]
        .iter()
        .map(|i| {
            fx.engine
                .find_user_by_idp_id(&dir, i)
                .unwrap()
                .unwrap()
                .user
                .id
        })
        .collect();
    want.sort();
    assert_eq!(members, want);
    let c = fx.engine.find_user_by_idp_id(&dir, "c").unwrap().unwrap();
    let c_groups: Vec<String> = fx
        .engine
        .user_groups(&c.user.id)
        .unwrap()
        .into_iter()
        .map(|g| g.group.idp_id)
        .collect();
    assert_eq!(c_groups, ["g1"]);
    assert!(fx
        .engine
        .find_group_by_idp_id(&dir, "g2")
        .unwrap()
        .is_none());
    let counts = fx.engine.counts(&dir).unwrap();
    assert_eq!((counts.active, counts.inactive, counts.groups), (3, 0, 2));

    // The same snapshot again: nothing to do, no events.
    let seq = fx.last_seq();
    let rows = fx.rows();
    let out = fx
        .engine
        .apply_snapshot(&dir, snap2, SnapshotPolicy::default())
        .unwrap();
    assert_eq!(out, SnapshotOutcome::default());
    assert_eq!(fx.last_seq(), seq);
    assert_eq!(fx.rows(), rows);
}

#[test]
fn mass_deletion_guard_at_and_above_the_threshold() {
    let fx = Fx::new();
    let dir = fx.sftp_dir(DirectorySettings::default());
    let all = users(100);
    fx.engine
        .apply_snapshot(
            &dir,
            Snapshot {
                users: all.clone(),
                ..Default::default()
            },
            SnapshotPolicy::default(),
        )
        .unwrap();
    let rows = fx.rows();
    let seq = fx.last_seq();

    // 11 of 100 gone (one by deactivation): refused, nothing changed.
    let mut above = all[11..].to_vec();
    above.push(all[0].clone());
    above.last_mut().unwrap().active = false;
    let err = fx
        .engine
        .apply_snapshot(
            &dir,
            Snapshot {
                users: above.clone(),
                ..Default::default()
            },
            SnapshotPolicy::default(),
        )
        .unwrap_err();
    match err {
        EngineError::Guard(GuardError::MassDeletion {
            would_delete,
            total,
            threshold,
            sample,
        }) => {
            assert_eq!(
                sample.len(),
                11,
                "every user it would remove, up to the sample size"
            );
            assert_eq!((would_delete, total), (11, 100));
            assert!((threshold - 0.10).abs() < 1e-12);
        }
        other => panic!("expected the guard, got {other}"),
    }
    assert_eq!(fx.rows(), rows);
    assert_eq!(fx.last_seq(), seq);

    // Exactly 10 of 100: allowed.
    let out = fx
        .engine
        .apply_snapshot(
            &dir,
            Snapshot {
                users: all[10..].to_vec(),
                ..Default::default()
            },
            SnapshotPolicy::default(),
        )
        .unwrap();
    assert_eq!(out.deleted, 10);
    assert_eq!(fx.engine.counts(&dir).unwrap().active, 90);

    // Way above, but confirmed.
    let out = fx
        .engine
        .apply_snapshot(
            &dir,
            Snapshot {
                users: all[60..].to_vec(),
                ..Default::default()
            },
            confirmed(),
        )
        .unwrap();
    assert_eq!(out.deleted, 50);
    assert_eq!(fx.engine.counts(&dir).unwrap().active, 40);
}

#[test]
fn keep_inactive_snapshot_deactivates_missing_users_once() {
    let fx = Fx::new();
    let settings = DirectorySettings {
        deactivation: Deactivation::KeepInactive,
        ..Default::default()
    };
    let dir = fx.sftp_dir(settings);
    let all = users(3);
    fx.engine
        .apply_snapshot(
            &dir,
            Snapshot {
                users: all.clone(),
                ..Default::default()
            },
            SnapshotPolicy::default(),
        )
        .unwrap();
    let snap = Snapshot {
        users: all[..2].to_vec(),
        ..Default::default()
    };
    let seq = fx.last_seq();
    let out = fx
        .engine
        .apply_snapshot(&dir, snap.clone(), confirmed())
        .unwrap();
    assert_eq!((out.updated, out.deleted), (1, 0));
    let events = fx.events_after(seq);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"], "dsync.user.updated");
    assert_eq!(events[0]["data"]["state"], "inactive");
    assert_eq!(
        events[0]["data"]["previous_attributes"],
        json!({"state": "active"})
    );
    let u = fx.engine.find_user_by_idp_id(&dir, "u-2").unwrap().unwrap();
    assert_eq!(u.user.state, UserState::Inactive);
    let c = fx.engine.counts(&dir).unwrap();
    assert_eq!((c.active, c.inactive), (2, 1));
    // Already inactive: the guard does not count it again, and nothing is emitted.
    let seq = fx.last_seq();
    let out = fx
        .engine
        .apply_snapshot(&dir, snap, SnapshotPolicy::default())
        .unwrap();
    assert_eq!(out, SnapshotOutcome::default());
    assert_eq!(fx.last_seq(), seq);
}

#[test]
fn chunked_snapshot_matches_and_is_idempotent() {
    let fx = Fx::new();
    let small = DirectoryEngine::new(fx.store.clone(), fx.orgs.clone()).with_commit_limit(25);
    let dir = fx.sftp_dir(DirectorySettings::default());
    let all = users(40);
    let memberships: Vec<(String, String)> = (0..40)
        .map(|i| (format!("g{}", i % 3), format!("u-{i}")))
        .collect();
    let snap = Snapshot {
        users: all,
        groups: vec![group("g0", "Zero"), group("g1", "One"), group("g2", "Two")],
        memberships,
    };
    let seq = fx.last_seq();
    let out = small
        .apply_snapshot(&dir, snap.clone(), SnapshotPolicy::default())
        .unwrap();
    assert!(out.commits > 1, "expected several commits, got {out:?}");
    assert_eq!(
        (out.created, out.groups_created, out.memberships_added),
        (40, 3, 40)
    );
    assert_eq!(out.events, fx.last_seq() - seq);
    assert_eq!(
        fx.kinds_after(seq)
            .iter()
            .filter(|k| *k == "dsync.activated")
            .count(),
        1
    );
    let c = fx.engine.counts(&dir).unwrap();
    assert_eq!((c.active, c.groups), (40, 3));
    let g0 = fx.engine.find_group_by_idp_id(&dir, "g0").unwrap().unwrap();
    assert_eq!(fx.engine.group_members(&g0.group.id).unwrap().len(), 14);
    let seq = fx.last_seq();
    let again = small
        .apply_snapshot(&dir, snap, SnapshotPolicy::default())
        .unwrap();
    assert_eq!(again, SnapshotOutcome::default());
    assert_eq!(fx.last_seq(), seq);

    // A chunked directory delete still emits exactly one event and leaves nothing behind.
    let seq = fx.last_seq();
    small.delete_directory(&dir).unwrap();
    assert_eq!(fx.kinds_after(seq), ["dsync.deleted"]);
    assert!(fx.rows().keys().all(|(t, k)| !k.contains(&dir)
        && t != "directory_memberships"
        && !t.starts_with("dsync.user")
        && !t.starts_with("dsync.group")));
}

#[test]
fn snapshot_rejects_duplicate_idp_ids() {
    let fx = Fx::new();
    let dir = fx.sftp_dir(DirectorySettings::default());
    let mut u = users(2);
    u[1].idp_id = u[0].idp_id.clone();
    let err = fx
        .engine
        .apply_snapshot(
            &dir,
            Snapshot {
                users: u,
                ..Default::default()
            },
            SnapshotPolicy::default(),
        )
        .unwrap_err();
    assert!(matches!(err, EngineError::Invalid(_)));
    assert_eq!(fx.engine.counts(&dir).unwrap().active, 0);
}

#[test]
fn attribute_map_reads_csv_ldap_and_scim_urn_paths() {
    let fx = Fx::new();
    let mut settings = DirectorySettings::default();
    settings
        .attribute_map
        .insert("cost".into(), "cost_center_name".into());
    settings.attribute_map.insert(
        "dept".into(),
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department".into(),
    );
    settings
        .attribute_map
        .insert("title".into(), "title".into());
    settings
        .attribute_map
        .insert("missing".into(), "nope.nothing".into());
    let dir = fx.sftp_dir(settings);
    let mut csv = user("csv-1", "c@foo-corp.com", "C");
    csv.source =
        json!({"user_id": "csv-1", "cost_center_name": "CC-7", "department_name": "Finance"});
    let mut ldap = user("ldap-1", "l@foo-corp.com", "L");
    ldap.source = json!({"title": ["Engineer"], "department": ["R&D"]});
    let mut scim = user("scim-1", "s@foo-corp.com", "S");
    scim.source = json!({"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":
        {"department": "Sales", "employeeNumber": "42"}});
    fx.engine
        .apply_snapshot(
            &dir,
            Snapshot {
                users: vec![csv, ldap, scim],
                ..Default::default()
            },
            SnapshotPolicy::default(),
        )
        .unwrap();
    let get = |idp: &str| {
        fx.engine
            .find_user_by_idp_id(&dir, idp)
            .unwrap()
            .unwrap()
            .user
            .custom_attributes
    };
    let c = get("csv-1");
    assert_eq!(c["cost"], "CC-7");
    assert_eq!(c["cost_center_name"], "CC-7");
    assert_eq!(c["department_name"], "Finance");
    assert_eq!(c["missing"], serde_json::Value::Null);
    let l = get("ldap-1");
    assert_eq!(l["title"], "Engineer");
    assert_eq!(l["department_name"], "R&D");
    let s = get("scim-1");
    assert_eq!(s["dept"], "Sales");
    assert_eq!(s["employee_number"], "42");
    assert_eq!(s["username"], "s@foo-corp.com");
}

#[test]
fn delta_changes_apply_by_idp_id() {
    let fx = Fx::new();
    let dir = fx.sftp_dir(DirectorySettings::default());
    let changes = vec![
        DeltaChange::UpsertUser(user("a", "a@foo-corp.com", "A")),
        DeltaChange::UpsertUser(user("b", "b@foo-corp.com", "B")),
        DeltaChange::UpsertGroup(group("g", "G")),
        DeltaChange::SetMembers {
            group_idp_id: "g".into(),
            user_idp_ids: vec!["a".into(), "b".into(), "ghost".into()],
        },
    ];
    let seq = fx.last_seq();
    let out = fx.engine.apply_delta(&dir, changes.clone()).unwrap();
    assert_eq!(out.applied, 4);
    assert_eq!(out.events, fx.last_seq() - seq);
    // Same batch again: all no-ops.
    let again = fx.engine.apply_delta(&dir, changes).unwrap();
    assert_eq!((again.applied, again.unchanged, again.events), (0, 4, 0));
    let out = fx
        .engine
        .apply_delta(
            &dir,
            vec![
                DeltaChange::RemoveUser { idp_id: "a".into() },
                DeltaChange::DeleteGroup {
                    idp_id: "nope".into(),
                },
            ],
        )
        .unwrap();
    assert_eq!((out.applied, out.unchanged), (1, 1));
    let g = fx.engine.find_group_by_idp_id(&dir, "g").unwrap().unwrap();
    assert_eq!(fx.engine.group_members(&g.group.id).unwrap().len(), 1);
}

/// A delta's departed user is treated as a full sync treats an absent one: deleted, or kept
/// inactive (once) and out of its groups, per the directory's setting.
#[test]
fn delta_removals_follow_the_deactivation_setting() {
    let fx = Fx::new();
    let keep = fx.sftp_dir(DirectorySettings {
        deactivation: Deactivation::KeepInactive,
        ..Default::default()
    });
    let delete = fx.sftp_dir(DirectorySettings::default());
    let seed = vec![
        DeltaChange::UpsertUser(user("a", "a@foo-corp.com", "A")),
        DeltaChange::UpsertGroup(group("g", "G")),
        DeltaChange::SetMembers {
            group_idp_id: "g".into(),
            user_idp_ids: vec!["a".into()],
        },
    ];
    for dir in [&keep, &delete] {
        fx.engine.apply_delta(dir, seed.clone()).unwrap();
    }
    let remove = || vec![DeltaChange::RemoveUser { idp_id: "a".into() }];

    let seq = fx.last_seq();
    let out = fx.engine.apply_delta(&keep, remove()).unwrap();
    assert_eq!((out.applied, out.unchanged), (1, 0));
    let events = fx.events_after(seq);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["event"], "dsync.user.updated");
    assert_eq!(events[0]["data"]["state"], "inactive");
    assert_eq!(events[1]["event"], "dsync.group.user_removed");
    assert_eq!(out.events, 2);
    let a = fx.engine.find_user_by_idp_id(&keep, "a").unwrap().unwrap();
    assert_eq!(a.user.state, UserState::Inactive);
    let g = fx.engine.find_group_by_idp_id(&keep, "g").unwrap().unwrap();
    assert!(fx.engine.group_members(&g.group.id).unwrap().is_empty());
    // Already inactive: nothing to write, no event.
    let seq = fx.last_seq();
    let out = fx.engine.apply_delta(&keep, remove()).unwrap();
    assert_eq!((out.applied, out.unchanged, out.events), (0, 1, 0));
    assert_eq!(fx.last_seq(), seq);

    let seq = fx.last_seq();
    let out = fx.engine.apply_delta(&delete, remove()).unwrap();
    assert_eq!((out.applied, out.unchanged), (1, 0));
    let kinds = fx.kinds_after(seq);
    assert!(
        kinds.contains(&"dsync.user.deleted".to_owned()),
        "{kinds:?}"
    );
    assert!(fx
        .engine
        .find_user_by_idp_id(&delete, "a")
        .unwrap()
        .is_none());
}

#[test]
fn empty_first_snapshot_still_activates_once() {
    let fx = Fx::new();
    let dir = fx.sftp_dir(DirectorySettings::default());
    let seq = fx.last_seq();
    let out = fx
        .engine
        .apply_snapshot(&dir, Snapshot::default(), SnapshotPolicy::default())
        .unwrap();
    assert_eq!(out.events, 1);
    assert_eq!(fx.kinds_after(seq), ["dsync.activated"]);
    assert_eq!(
        fx.engine.get_directory(&dir).unwrap().directory.state,
        idbridge_model::DirectoryState::Linked
    );
    let seq = fx.last_seq();
    let out = fx
        .engine
        .apply_snapshot(&dir, Snapshot::default(), SnapshotPolicy::default())
        .unwrap();
    assert_eq!(out, SnapshotOutcome::default());
    assert_eq!(fx.last_seq(), seq);
}
