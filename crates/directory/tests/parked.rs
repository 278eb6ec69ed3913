//! SCIM deactivation under the default `DeleteUser` setting: the user leaves the directory
//! (events, counts, reads) but its SCIM resource is parked; reactivation brings the same id back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{group, user, Fx};
use idbridge_directory::{
    ChangeKind, Constraint, Counts, Deactivation, DirectorySettings, EngineError, PageRequest,
    UserInput,
};
use idbridge_model::{new_id, IdPrefix, UserState};

fn inactive(mut u: UserInput) -> UserInput {
    u.active = false;
    u.raw_attributes
        .insert("active".into(), serde_json::Value::Bool(false));
    u
}

fn listed(fx: &Fx, dir: &str) -> Vec<String> {
    fx.engine
        .list_users(
            dir,
            None,
            &PageRequest {
                limit: 100,
                ..Default::default()
            },
        )
        .unwrap()
        .data
        .into_iter()
        .map(|u| u.user.id)
        .collect()
}

/// (dir, user id, group id): an active user in a group.
fn setup(fx: &Fx, settings: DirectorySettings) -> (String, String, String) {
    let (dir, _) = fx.scim_dir(settings);
    let uid = new_id(IdPrefix::DirectoryUser);
    fx.engine
        .create_scim_user(&dir, &uid, user("ext-1", "jane@foo-corp.com", "Jane"))
        .unwrap();
    let g = fx
        .engine
        .upsert_group(&dir, None, group("g-1", "Engineering"), None)
        .unwrap();
    fx.engine
        .set_group_members(&dir, &g.group.group.id, vec![uid.clone()])
        .unwrap();
    (dir, uid, g.group.group.id)
}

#[test]
fn deactivation_parks_the_user_in_one_commit() {
    let fx = Fx::new();
    let (dir, uid, gid) = setup(&fx, DirectorySettings::default());
    let before = fx.engine.get_scim_user(&dir, &uid).unwrap();
    let seq = fx.last_seq();
    let change = fx
        .engine
        .update_scim_user(
            &dir,
            &uid,
            inactive(user("ext-1", "jane@foo-corp.com", "Jane")),
            Some(before.version),
        )
        .unwrap();
    assert_eq!(change.kind, ChangeKind::Parked);
    assert!(change.parked);
    // Only dsync.user.deleted: no user_removed for the membership it loses.
    let events = fx.events_after(seq);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["dsync.user.deleted"]);
    assert_eq!(events[0]["data"]["id"], uid.as_str());
    assert_eq!(events[0]["data"]["state"], "inactive");
    assert_eq!(events[0]["data"]["email"], "jane@foo-corp.com");
    assert!(events[0]["data"].get("previous_attributes").is_none());

    // Gone from every WorkOS read and counter.
    assert_eq!(
        fx.engine.counts(&dir).unwrap(),
        Counts {
            active: 0,
            inactive: 0,
            groups: 1
        }
    );
    assert!(listed(&fx, &dir).is_empty());
    assert!(matches!(
        fx.engine.get_user(None, &uid),
        Err(EngineError::NotFound { .. })
    ));
    assert!(matches!(
        fx.engine.get_user(Some(&dir), &uid),
        Err(EngineError::NotFound { .. })
    ));
    assert!(matches!(
        fx.engine.get_user_with_groups(&uid),
        Err(EngineError::NotFound { .. })
    ));
    assert!(fx.engine.group_members(&gid).unwrap().is_empty());
    assert!(fx
        .engine
        .find_user_by_idp_id(&dir, "ext-1")
        .unwrap()
        .is_none());

    // Still a SCIM resource: by id, by userName, by externalId, in the SCIM list.
    let parked = fx.engine.get_scim_user(&dir, &uid).unwrap();
    assert_eq!(parked.user.state, UserState::Inactive);
    assert_eq!(parked.version, before.version + 1);
    assert!(fx.engine.is_parked(&dir, &uid).unwrap());
    let by_name = fx
        .engine
        .find_scim_user_by_key(&dir, "scim.userName", "jane@foo-corp.com")
        .unwrap()
        .unwrap();
    assert_eq!(by_name.user.id, uid);
    let by_idp = fx
        .engine
        .find_scim_user_by_idp_id(&dir, "ext-1")
        .unwrap()
        .unwrap();
    assert_eq!(by_idp.user.id, uid);
    let all: Vec<String> = fx
        .engine
        .scim_users(&dir)
        .unwrap()
        .into_iter()
        .map(|u| u.user.id)
        .collect();
    assert_eq!(all, vec![uid.clone()]);
}

#[test]
fn a_parked_user_keeps_its_user_name_and_external_id() {
    let fx = Fx::new();
    let (dir, uid, _) = setup(&fx, DirectorySettings::default());
    fx.engine
        .update_scim_user(
            &dir,
            &uid,
            inactive(user("ext-1", "jane@foo-corp.com", "Jane")),
            None,
        )
        .unwrap();
    let rows = fx.rows();
    let other = new_id(IdPrefix::DirectoryUser);
    let err = fx
        .engine
        .create_scim_user(&dir, &other, user("ext-2", "JANE@foo-corp.com", "J2"))
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Conflict { constraint: Constraint::UniqueKey(k), .. } if k == "scim.userName"),
        "{err:?}"
    );
    let err = fx
        .engine
        .create_scim_user(&dir, &other, user("ext-1", "other@foo-corp.com", "O"))
        .unwrap_err();
    assert!(
        matches!(
            &err,
            EngineError::Conflict {
                constraint: Constraint::IdpId,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(fx.rows(), rows, "refused creates change nothing");
}

#[test]
fn updating_a_parked_user_changes_only_the_kept_resource() {
    let fx = Fx::new();
    let (dir, uid, _) = setup(&fx, DirectorySettings::default());
    fx.engine
        .update_scim_user(
            &dir,
            &uid,
            inactive(user("ext-1", "jane@foo-corp.com", "Jane")),
            None,
        )
        .unwrap();
    let seq = fx.last_seq();
    // Same content: nothing written.
    let same = fx
        .engine
        .update_scim_user(
            &dir,
            &uid,
            inactive(user("ext-1", "jane@foo-corp.com", "Jane")),
            None,
        )
        .unwrap();
    assert_eq!(same.kind, ChangeKind::Unchanged);
    // A rename while parked (the userName slot moves), no event.
    let v = fx.engine.get_scim_user(&dir, &uid).unwrap().version;
    let upd = fx
        .engine
        .update_scim_user(
            &dir,
            &uid,
            inactive(user("ext-1", "jane.doe@foo-corp.com", "Janet")),
            Some(v),
        )
        .unwrap();
    assert_eq!(upd.kind, ChangeKind::Updated);
    assert!(upd.parked && upd.events.is_empty());
    assert!(fx.kinds_after(seq).is_empty());
    assert_eq!(upd.user.version, v + 1);
    assert_eq!(upd.user.user.first_name.as_deref(), Some("Janet"));
    assert!(fx
        .engine
        .find_scim_user_by_key(&dir, "scim.userName", "jane@foo-corp.com")
        .unwrap()
        .is_none());
    // A stale version is refused.
    let err = fx
        .engine
        .update_scim_user(
            &dir,
            &uid,
            inactive(user("ext-1", "x@foo-corp.com", "X")),
            Some(v),
        )
        .unwrap_err();
    assert!(matches!(
        &err,
        EngineError::Conflict {
            constraint: Constraint::Version,
            ..
        }
    ));
    assert!(listed(&fx, &dir).is_empty());
    assert_eq!(fx.engine.counts(&dir).unwrap().active, 0);
}

#[test]
fn reactivation_brings_back_the_same_id_as_a_new_user() {
    let fx = Fx::new();
    let (dir, uid, gid) = setup(&fx, DirectorySettings::default());
    fx.engine
        .update_scim_user(
            &dir,
            &uid,
            inactive(user("ext-1", "jane@foo-corp.com", "Jane")),
            None,
        )
        .unwrap();
    let seq = fx.last_seq();
    let back = fx
        .engine
        .update_scim_user(&dir, &uid, user("ext-1", "jane@foo-corp.com", "Jane"), None)
        .unwrap();
    assert_eq!(back.kind, ChangeKind::Created);
    assert!(!back.parked);
    let events = fx.events_after(seq);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["dsync.user.created"]);
    assert_eq!(events[0]["data"]["id"], uid.as_str());
    assert_eq!(events[0]["data"]["state"], "active");
    assert!(!fx.engine.is_parked(&dir, &uid).unwrap());
    assert_eq!(listed(&fx, &dir), vec![uid.clone()]);
    assert_eq!(fx.engine.get_user(None, &uid).unwrap().user.id, uid);
    assert_eq!(fx.engine.counts(&dir).unwrap().active, 1);
    // No memberships come back by themselves; the next group write decides.
    assert!(fx.engine.user_groups(&uid).unwrap().is_empty());
    let m = fx
        .engine
        .set_group_members(&dir, &gid, vec![uid.clone()])
        .unwrap();
    assert_eq!(m.added, vec![uid.clone()]);
    assert_eq!(fx.engine.group_members(&gid).unwrap(), vec![uid.clone()]);
}

#[test]
fn deleting_a_parked_user_removes_it_for_good_without_an_event() {
    let fx = Fx::new();
    let (dir, uid, _) = setup(&fx, DirectorySettings::default());
    fx.engine
        .update_scim_user(
            &dir,
            &uid,
            inactive(user("ext-1", "jane@foo-corp.com", "Jane")),
            None,
        )
        .unwrap();
    let seq = fx.last_seq();
    let del = fx.engine.delete_scim_user(&dir, &uid).unwrap();
    assert_eq!(del.kind, ChangeKind::Deleted);
    assert!(del.events.is_empty());
    assert!(fx.kinds_after(seq).is_empty());
    assert!(matches!(
        fx.engine.get_scim_user(&dir, &uid),
        Err(EngineError::NotFound { .. })
    ));
    assert!(matches!(
        fx.engine.delete_scim_user(&dir, &uid),
        Err(EngineError::NotFound { .. })
    ));
    // Its userName and externalId are free again.
    fx.engine
        .create_scim_user(
            &dir,
            &new_id(IdPrefix::DirectoryUser),
            user("ext-1", "jane@foo-corp.com", "Jane"),
        )
        .unwrap();
    // No parked rows or slots of the old id remain.
    assert!(fx
        .rows()
        .iter()
        .all(|((_, k), v)| !k.contains(uid.as_str()) && v.as_slice() != uid.as_bytes()));
}

#[test]
fn a_user_created_inactive_is_parked_not_discarded() {
    let fx = Fx::new();
    let (dir, _) = fx.scim_dir(DirectorySettings::default());
    let uid = new_id(IdPrefix::DirectoryUser);
    let seq = fx.last_seq();
    let c = fx
        .engine
        .create_scim_user(
            &dir,
            &uid,
            inactive(user("ext-9", "gone@foo-corp.com", "G")),
        )
        .unwrap();
    assert_eq!(c.kind, ChangeKind::Parked);
    // First contact activates the directory; no user event.
    assert_eq!(fx.kinds_after(seq), ["dsync.activated"]);
    assert_eq!(fx.engine.counts(&dir).unwrap(), Counts::default());
    assert!(listed(&fx, &dir).is_empty());
    assert_eq!(
        fx.engine.get_scim_user(&dir, &uid).unwrap().user.state,
        UserState::Inactive
    );
    let err = fx
        .engine
        .create_scim_user(
            &dir,
            &new_id(IdPrefix::DirectoryUser),
            user("ext-8", "gone@foo-corp.com", "G"),
        )
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Conflict { constraint: Constraint::UniqueKey(k), .. } if k == "scim.userName")
    );
}

#[test]
fn a_group_write_listing_a_parked_member_skips_it() {
    let fx = Fx::new();
    let (dir, uid, gid) = setup(&fx, DirectorySettings::default());
    let other = new_id(IdPrefix::DirectoryUser);
    fx.engine
        .create_scim_user(&dir, &other, user("ext-2", "joe@foo-corp.com", "Joe"))
        .unwrap();
    fx.engine
        .update_scim_user(
            &dir,
            &uid,
            inactive(user("ext-1", "jane@foo-corp.com", "Jane")),
            None,
        )
        .unwrap();
    let seq = fx.last_seq();
    let m = fx
        .engine
        .set_group_members(&dir, &gid, vec![uid.clone(), other.clone()])
        .unwrap();
    assert_eq!(m.added, vec![other.clone()]);
    assert_eq!(fx.kinds_after(seq), ["dsync.group.user_added"]);
    assert_eq!(fx.engine.group_members(&gid).unwrap(), vec![other.clone()]);
    let m = fx
        .engine
        .add_group_members(&dir, &gid, vec![uid.clone()])
        .unwrap();
    assert!(m.added.is_empty() && m.events.is_empty());
    // An id that is no user at all is still refused.
    assert!(matches!(
        fx.engine
            .add_group_members(&dir, &gid, vec![new_id(IdPrefix::DirectoryUser)]),
        Err(EngineError::Invalid(_))
    ));
}

#[test]
fn keep_inactive_is_unchanged_and_pull_style_upsert_still_deletes() {
    let fx = Fx::new();
    let (dir, uid, gid) = setup(
        &fx,
        DirectorySettings {
            deactivation: Deactivation::KeepInactive,
            ..Default::default()
        },
    );
    let seq = fx.last_seq();
    let c = fx
        .engine
        .update_scim_user(
            &dir,
            &uid,
            inactive(user("ext-1", "jane@foo-corp.com", "Jane")),
            None,
        )
        .unwrap();
    assert_eq!(c.kind, ChangeKind::Updated);
    assert!(!c.parked);
    assert_eq!(fx.kinds_after(seq), ["dsync.user.updated"]);
    assert_eq!(fx.engine.counts(&dir).unwrap().inactive, 1);
    assert_eq!(fx.engine.group_members(&gid).unwrap(), vec![uid.clone()]);
    assert!(!fx.engine.is_parked(&dir, &uid).unwrap());

    // The generic upsert (pull sources) keeps deleting under DeleteUser.
    let fx = Fx::new();
    let (dir, uid, _) = setup(&fx, DirectorySettings::default());
    let r = fx
        .engine
        .upsert_user(
            &dir,
            Some(&uid),
            inactive(user("ext-1", "jane@foo-corp.com", "Jane")),
            None,
        )
        .unwrap();
    assert_eq!(r.kind, ChangeKind::Deleted);
    assert!(!fx.engine.is_parked(&dir, &uid).unwrap());
    assert!(fx.engine.get_scim_user(&dir, &uid).is_err());
}

#[test]
fn deleting_the_directory_removes_parked_users() {
    let fx = Fx::new();
    let (dir, uid, _) = setup(&fx, DirectorySettings::default());
    fx.engine
        .update_scim_user(
            &dir,
            &uid,
            inactive(user("ext-1", "jane@foo-corp.com", "Jane")),
            None,
        )
        .unwrap();
    fx.engine.delete_directory(&dir).unwrap();
    assert!(
        fx.rows().keys().all(|(t, k)| {
            let of_dir = k.starts_with(dir.as_str());
            let of_user = t.starts_with("dsync.") && k.contains(uid.as_str());
            !of_dir && !of_user
        }),
        "{:?}",
        fx.rows().keys().collect::<Vec<_>>()
    );
}
