//! Groups, memberships (PUT diff), roles from group mappings.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{group, role, user, Fx};
use idbridge_directory::{ChangeKind, DirectorySettings, EngineError, Order, PageRequest};
use idbridge_model::{RoleMapping, RoleMode, RoleRef};
use serde_json::{json, Value};

fn slugs(r: &Option<Vec<RoleRef>>) -> Vec<String> {
    r.iter().flatten().map(|r| r.slug.clone()).collect()
}

#[test]
fn group_create_update_delete_events() {
    let fx = Fx::new();
    let (dir, _) = fx.scim_dir(DirectorySettings::default());
    let g = fx
        .engine
        .upsert_group(&dir, None, group("g-1", "Engineering"), None)
        .unwrap();
    assert_eq!(g.kind, ChangeKind::Created);
    let seq = fx.last_seq();
    let upd = fx
        .engine
        .upsert_group(&dir, Some(&g.group.group.id), group("g-1", "Eng"), Some(1))
        .unwrap();
    assert_eq!(upd.kind, ChangeKind::Updated);
    let events = fx.events_after(seq);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"], "dsync.group.updated");
    assert_eq!(events[0]["data"]["name"], "Eng");
    assert_eq!(
        events[0]["data"]["previous_attributes"],
        json!({"name": "Engineering"})
    );
    assert_eq!(fx.engine.counts(&dir).unwrap().groups, 1);

    // Deleting a group with members: only dsync.group.deleted.
    let a = fx
        .engine
        .upsert_user(&dir, None, user("u-a", "a@foo-corp.com", "A"), None)
        .unwrap();
    fx.engine
        .add_group_members(&dir, &g.group.group.id, vec![a.user.user.id.clone()])
        .unwrap();
    let seq = fx.last_seq();
    fx.engine.delete_group(&dir, &g.group.group.id).unwrap();
    assert_eq!(fx.kinds_after(seq), ["dsync.group.deleted"]);
    assert!(fx.engine.user_groups(&a.user.user.id).unwrap().is_empty());
    assert_eq!(fx.engine.counts(&dir).unwrap().groups, 0);
    assert!(fx
        .engine
        .find_group_by_key(&dir, "scim.displayName", "eng")
        .unwrap()
        .is_none());
}

#[test]
fn membership_put_emits_the_diff() {
    let fx = Fx::new();
    let (dir, _) = fx.scim_dir(DirectorySettings::default());
    let ids: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            fx.engine
                .upsert_user(
                    &dir,
                    None,
                    user(&format!("u-{n}"), &format!("{n}@foo-corp.com"), n),
                    None,
                )
                .unwrap()
                .user
                .user
                .id
        })
        .collect();
    let g = fx
        .engine
        .upsert_group(&dir, None, group("g-1", "Engineering"), None)
        .unwrap()
        .group;
    let gid = g.group.id.clone();

    let seq = fx.last_seq();
    let r = fx
        .engine
        .set_group_members(&dir, &gid, vec![ids[0].clone(), ids[1].clone()])
        .unwrap();
    assert_eq!(r.added.len(), 2);
    assert_eq!(
        fx.kinds_after(seq),
        ["dsync.group.user_added", "dsync.group.user_added"]
    );

    let seq = fx.last_seq();
    let r = fx
        .engine
        .set_group_members(&dir, &gid, vec![ids[1].clone(), ids[2].clone()])
        .unwrap();
    assert_eq!(r.added, vec![ids[2].clone()]);
    assert_eq!(r.removed, vec![ids[0].clone()]);
    let events = fx.events_after(seq);
    let mut got: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["data"]["user"]["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("dsync.group.user_added".to_owned(), ids[2].clone()),
            ("dsync.group.user_removed".to_owned(), ids[0].clone()),
        ]
    );
    let data = &events[0]["data"];
    let keys: Vec<&str> = data
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["directory_id", "user", "group"]);
    assert_eq!(data["directory_id"], dir.as_str());
    assert!(data["user"].get("groups").is_none());
    assert_eq!(data["group"], serde_json::to_value(&g.group).unwrap());

    // Same PUT again: nothing.
    let seq = fx.last_seq();
    fx.engine
        .set_group_members(&dir, &gid, vec![ids[2].clone(), ids[1].clone()])
        .unwrap();
    assert_eq!(fx.last_seq(), seq);

    let mut members = fx.engine.group_members(&gid).unwrap();
    members.sort();
    let mut want = vec![ids[1].clone(), ids[2].clone()];
    want.sort();
    assert_eq!(members, want);
    let with = fx.engine.get_user_with_groups(&ids[1]).unwrap();
    assert_eq!(with.groups.len(), 1);
    let page = fx
        .engine
        .list_users(
            &dir,
            Some(&gid),
            &PageRequest {
                limit: 10,
                order: Order::Asc,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        page.data
            .iter()
            .map(|u| u.user.id.clone())
            .collect::<Vec<_>>(),
        want
    );

    // Unknown members are refused without writing.
    let seq = fx.last_seq();
    let err = fx
        .engine
        .add_group_members(&dir, &gid, vec!["directory_user_nope".into()])
        .unwrap_err();
    assert!(matches!(err, EngineError::Invalid(_)));
    assert_eq!(fx.last_seq(), seq);

    // remove: only actual members count.
    let r = fx
        .engine
        .remove_group_members(&dir, &gid, vec![ids[0].clone(), ids[1].clone()])
        .unwrap();
    assert_eq!(r.removed, vec![ids[1].clone()]);
}

fn setup_roles(fx: &Fx) {
    fx.engine
        .set_roles(
            &fx.org.id,
            vec![
                role("member", 100, true),
                role("admin", 1, false),
                role("eng", 10, false),
            ],
        )
        .unwrap();
    fx.engine
        .set_role_mappings(
            &fx.org.id,
            vec![
                RoleMapping {
                    organization_id: fx.org.id.clone(),
                    idp_group: "g-admins".into(),
                    role_slug: "admin".into(),
                },
                // Mapped by group name rather than idp id.
                RoleMapping {
                    organization_id: fx.org.id.clone(),
                    idp_group: "Engineering".into(),
                    role_slug: "eng".into(),
                },
            ],
        )
        .unwrap();
}

#[test]
fn roles_follow_memberships_single_mode() {
    let fx = Fx::new();
    setup_roles(&fx);
    let (dir, _) = fx.scim_dir(DirectorySettings::default());
    let u = fx
        .engine
        .upsert_user(&dir, None, user("u-a", "a@foo-corp.com", "A"), None)
        .unwrap()
        .user;
    // No mapped group: the default role.
    assert_eq!(
        u.user.role.as_ref().map(|r| r.slug.as_str()),
        Some("member")
    );
    assert_eq!(slugs(&u.user.roles), ["member"]);
    let eng = fx
        .engine
        .upsert_group(&dir, None, group("g-eng", "Engineering"), None)
        .unwrap()
        .group;
    let adm = fx
        .engine
        .upsert_group(&dir, None, group("g-admins", "Admins"), None)
        .unwrap()
        .group;

    let seq = fx.last_seq();
    fx.engine
        .add_group_members(&dir, &eng.group.id, vec![u.user.id.clone()])
        .unwrap();
    let events = fx.events_after(seq);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["dsync.group.user_added", "dsync.user.updated"]);
    assert_eq!(events[1]["data"]["role"], json!({"slug": "eng"}));
    assert_eq!(
        events[1]["data"]["previous_attributes"],
        json!({"role": {"slug": "member"}, "roles": [{"slug": "member"}]})
    );

    // Admin outranks eng in single mode.
    fx.engine
        .add_group_members(&dir, &adm.group.id, vec![u.user.id.clone()])
        .unwrap();
    let now = fx.engine.get_user(None, &u.user.id).unwrap();
    assert_eq!(slugs(&now.user.roles), ["admin"]);

    // Leaving the eng group changes nothing visible: no user.updated.
    let seq = fx.last_seq();
    fx.engine
        .remove_group_members(&dir, &eng.group.id, vec![u.user.id.clone()])
        .unwrap();
    assert_eq!(fx.kinds_after(seq), ["dsync.group.user_removed"]);

    // Deleting the admin group falls back to the default role, with an event.
    let seq = fx.last_seq();
    fx.engine.delete_group(&dir, &adm.group.id).unwrap();
    let events = fx.events_after(seq);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["dsync.group.deleted", "dsync.user.updated"]);
    assert_eq!(events[1]["data"]["role"], json!({"slug": "member"}));
}

#[test]
fn roles_multiple_mode_takes_the_union() {
    let fx = Fx::new();
    setup_roles(&fx);
    let settings = DirectorySettings {
        role_mode: RoleMode::Multiple,
        ..Default::default()
    };
    let (dir, _) = fx.scim_dir(settings);
    let u = fx
        .engine
        .upsert_user(&dir, None, user("u-a", "a@foo-corp.com", "A"), None)
        .unwrap()
        .user;
    let eng = fx
        .engine
        .upsert_group(&dir, None, group("g-eng", "Engineering"), None)
        .unwrap()
        .group;
    let adm = fx
        .engine
        .upsert_group(&dir, None, group("g-admins", "Admins"), None)
        .unwrap()
        .group;
    fx.engine
        .add_group_members(&dir, &eng.group.id, vec![u.user.id.clone()])
        .unwrap();
    fx.engine
        .add_group_members(&dir, &adm.group.id, vec![u.user.id.clone()])
        .unwrap();
    let now = fx.engine.get_user(None, &u.user.id).unwrap();
    assert_eq!(slugs(&now.user.roles), ["admin", "eng"]);
    assert_eq!(
        now.user.role.as_ref().map(|r| r.slug.as_str()),
        Some("admin")
    );
    // Renaming a group away from its mapping drops that role.
    let seq = fx.last_seq();
    fx.engine
        .upsert_group(&dir, Some(&eng.group.id), group("g-eng", "R&D"), None)
        .unwrap();
    let events = fx.events_after(seq);
    assert_eq!(events.last().unwrap()["event"], "dsync.user.updated");
    assert_eq!(
        events.last().unwrap()["data"]["roles"],
        json!([{"slug": "admin"}])
    );
}

#[test]
fn no_roles_configured_means_no_role_and_mappings_are_validated() {
    let fx = Fx::new();
    let (dir, _) = fx.scim_dir(DirectorySettings::default());
    let u = fx
        .engine
        .upsert_user(&dir, None, user("u-a", "a@foo-corp.com", "A"), None)
        .unwrap()
        .user;
    assert!(u.user.role.is_none() && u.user.roles.is_none());
    let v: Value = serde_json::to_value(&u.user).unwrap();
    // The model omits `role`/`roles` without roles (the OpenAPI types them as non-nullable).
    assert!(v.get("role").is_none() && v.get("roles").is_none());
    let err = fx
        .engine
        .set_role_mappings(
            &fx.org.id,
            vec![RoleMapping {
                organization_id: fx.org.id.clone(),
                idp_group: "x".into(),
                role_slug: "ghost".into(),
            }],
        )
        .unwrap_err();
    assert!(matches!(err, EngineError::Invalid(_)));
    // recompute after configuring roles assigns the default.
    setup_roles(&fx);
    assert_eq!(fx.engine.recompute_roles(&dir).unwrap(), 1);
    let now = fx.engine.get_user(None, &u.user.id).unwrap();
    assert_eq!(slugs(&now.user.roles), ["member"]);
    assert_eq!(fx.engine.recompute_roles(&dir).unwrap(), 0);
}
