//! A group's attributes and members written as ONE commit (SCIM POST/PUT/PATCH of a group):
//! all of it or nothing, roles recomputed once per user.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{eng_roles, group, user, Fx};
use idbridge_directory::{Constraint, DirectorySettings, EngineError, MemberEdit};
use serde_json::Value;

fn role_of(fx: &Fx, user_id: &str) -> String {
    let u = fx.engine.get_user(None, user_id).unwrap();
    u.user.role.map(|r| r.slug).unwrap_or_default()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// A new user `<n>@foo-corp.com` in `dir`; its id.
fn new_user(fx: &Fx, dir: &str, n: &str) -> String {
    fx.engine
        .upsert_user(dir, None, user(n, &format!("{n}@foo-corp.com"), n), None)
        .unwrap()
        .user
        .user
        .id
}

fn new_group_id() -> String {
    idbridge_model::new_id(idbridge_model::IdPrefix::DirectoryGroup)
}

#[test]
fn create_with_members_is_one_commit() {
    let fx = Fx::new();
    let (dir, _) = fx.scim_dir(DirectorySettings::default());
    let a = new_user(&fx, &dir, "a");
    let seq = fx.last_seq();
    let id = new_group_id();
    let w = fx
        .engine
        .create_group_with_members(&dir, &id, group("g-staff", "Staff"), vec![a.clone()])
        .unwrap();
    assert_eq!(w.group.group.id, id);
    assert_eq!(w.added, vec![a.clone()]);
    let kinds: Vec<&str> = w.events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds, ["dsync.group.created", "dsync.group.user_added"]);
    assert_eq!(
        fx.kinds_after(seq),
        ["dsync.group.created", "dsync.group.user_added"]
    );
    assert_eq!(fx.engine.group_members(&id).unwrap(), vec![a]);
}

#[test]
fn a_failing_member_leaves_the_attributes_unwritten() {
    let fx = Fx::new();
    let (dir, _) = fx.scim_dir(DirectorySettings::default());
    let a = new_user(&fx, &dir, "a");
    let id = new_group_id();
    fx.engine
        .create_group_with_members(&dir, &id, group("g-staff", "Staff"), vec![a.clone()])
        .unwrap();
    let rows = fx.rows();
    let seq = fx.last_seq();
    // A rename together with a member that is not a user of the directory: nothing happens,
    // not even the rename (two commits would have renamed, then failed).
    let unknown = idbridge_model::new_id(idbridge_model::IdPrefix::DirectoryUser);
    let err = fx
        .engine
        .update_group(
            &dir,
            &id,
            Some(group("g-staff", "Renamed")),
            Some(MemberEdit::Set(vec![a.clone(), unknown])),
            None,
        )
        .unwrap_err();
    assert!(matches!(err, EngineError::Invalid(_)), "{err:?}");
    assert_eq!(fx.rows(), rows, "the store changed");
    assert!(fx.kinds_after(seq).is_empty());
    assert_eq!(
        fx.engine.get_group(Some(&dir), &id).unwrap().group.name,
        "Staff"
    );
}

#[test]
fn a_stale_version_changes_neither_attributes_nor_members() {
    let fx = Fx::new();
    let (dir, _) = fx.scim_dir(DirectorySettings::default());
    let a = new_user(&fx, &dir, "a");
    let id = new_group_id();
    let created = fx
        .engine
        .create_group_with_members(&dir, &id, group("g-staff", "Staff"), Vec::new())
        .unwrap();
    fx.engine
        .upsert_group(&dir, Some(&id), group("g-staff", "Staff 2"), None)
        .unwrap();
    let err = fx
        .engine
        .update_group(
            &dir,
            &id,
            Some(group("g-staff", "Staff 3")),
            Some(MemberEdit::Set(vec![a.clone()])),
            Some(created.group.version),
        )
        .unwrap_err();
    assert!(
        matches!(
            &err,
            EngineError::Conflict {
                constraint: Constraint::Version,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(fx.engine.group_members(&id).unwrap().is_empty());
    assert_eq!(
        fx.engine.get_group(Some(&dir), &id).unwrap().group.name,
        "Staff 2"
    );
}

#[test]
fn delta_keeps_members_named_in_neither_list() {
    let fx = Fx::new();
    let (dir, _) = fx.scim_dir(DirectorySettings::default());
    let ids: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| new_user(&fx, &dir, n))
        .collect();
    let id = new_group_id();
    fx.engine
        .create_group_with_members(&dir, &id, group("g", "G"), vec![ids[0].clone()])
        .unwrap();
    // Two PATCHes computed from the same read (Okta sends them concurrently): both land.
    for uid in &ids[1..] {
        let edit = MemberEdit::Delta {
            add: vec![uid.clone()],
            remove: Vec::new(),
        };
        fx.engine
            .update_group(&dir, &id, None, Some(edit), None)
            .unwrap();
    }
    assert_eq!(
        sorted(fx.engine.group_members(&id).unwrap()),
        sorted(ids.clone())
    );
    let edit = MemberEdit::Delta {
        add: vec![ids[0].clone()],
        remove: vec![ids[1].clone()],
    };
    let w = fx
        .engine
        .update_group(&dir, &id, None, Some(edit), None)
        .unwrap();
    assert!(w.added.is_empty(), "already a member: {:?}", w.added);
    assert_eq!(w.removed, vec![ids[1].clone()]);
    assert_eq!(
        sorted(fx.engine.group_members(&id).unwrap()),
        sorted(vec![ids[0].clone(), ids[2].clone()])
    );
}

#[test]
fn rename_with_member_changes_moves_each_role_once() {
    let fx = Fx::new();
    eng_roles(&fx);
    let (dir, _) = fx.scim_dir(DirectorySettings::default());
    let mk = |n: &str| new_user(&fx, &dir, n);
    let (stays, joins, leaves) = (mk("stays"), mk("joins"), mk("leaves"));
    let id = new_group_id();
    fx.engine
        .create_group_with_members(
            &dir,
            &id,
            group("g-1", "Staff"),
            vec![stays.clone(), leaves.clone()],
        )
        .unwrap();
    for u in [&stays, &joins, &leaves] {
        assert_eq!(role_of(&fx, u), "member");
    }
    let seq = fx.last_seq();
    // Renamed to the mapped name, one member in, one out: a PUT of the whole group.
    let w = fx
        .engine
        .update_group(
            &dir,
            &id,
            Some(group("g-1", "Engineering")),
            Some(MemberEdit::Set(vec![stays.clone(), joins.clone()])),
            None,
        )
        .unwrap();
    assert_eq!(w.added, vec![joins.clone()]);
    assert_eq!(w.removed, vec![leaves.clone()]);
    assert_eq!(role_of(&fx, &stays), "eng");
    assert_eq!(role_of(&fx, &joins), "eng");
    assert_eq!(role_of(&fx, &leaves), "member");
    let events = fx.events_after(seq);
    let updated: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "dsync.user.updated")
        .filter_map(|e| e["data"]["id"].as_str())
        .collect();
    assert_eq!(
        sorted(updated.iter().map(|s| s.to_string()).collect()),
        sorted(vec![stays.clone(), joins.clone()]),
        "one dsync.user.updated per user whose role moved: {events:#?}"
    );
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "dsync.group.updated")
            .count(),
        1
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "dsync.group.user_added")
            .count(),
        1
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "dsync.group.user_removed")
            .count(),
        1
    );
    // The membership events carry the group as renamed.
    for e in events.iter().filter(|e| {
        e["event"] == "dsync.group.user_added" || e["event"] == "dsync.group.user_removed"
    }) {
        assert_eq!(e["data"]["group"]["name"], Value::from("Engineering"));
    }
}
