//! Users: create / update / deactivate / delete, events and payloads, uniqueness, versions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{user, Fx};
use idbridge_directory::{
    ChangeKind, Constraint, Deactivation, DirectorySettings, EngineError, StoredUser,
};
use idbridge_model::{DirectoryState, UserState};
use serde_json::{json, Value};

fn user_json(u: &StoredUser) -> Value {
    serde_json::to_value(&u.user).unwrap()
}

#[test]
fn create_emits_activation_then_created_with_the_stored_user() {
    let fx = Fx::new();
    let (dir, _) = fx.scim_dir(DirectorySettings::default());
    assert_eq!(
        fx.engine.get_directory(&dir).unwrap().directory.state,
        DirectoryState::Unlinked
    );
    let seq = fx.last_seq();
    let change = fx
        .engine
        .upsert_user(&dir, None, user("ext-1", "jane@foo-corp.com", "Jane"), None)
        .unwrap();
    assert_eq!(change.kind, ChangeKind::Created);
    assert_eq!(change.user.version, 1);

    let events = fx.events_after(seq);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["dsync.activated", "dsync.user.created"]);
    // The events returned are the ones in the log.
    let returned: Vec<&str> = change.events.iter().map(|e| e.id.as_str()).collect();
    let logged: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(returned, logged);

    let activated = &events[0]["data"];
    assert_eq!(activated["state"], "active");
    assert_eq!(activated["id"], dir.as_str());
    assert!(activated.get("domain").is_none());
    let dom = &fx.org.domains[0];
    assert_eq!(
        activated["domains"],
        json!([{"object": "organization_domain", "id": dom.id, "domain": dom.domain,
            "organization_id": fx.org.id}])
    );

    let created = &events[1]["data"];
    assert_eq!(created, &user_json(&change.user));
    assert!(created.get("groups").is_none());
    assert_eq!(created["state"], "active");
    assert_eq!(created["directory_id"], dir.as_str());
    assert_eq!(created["organization_id"], fx.org.id.as_str());
    // created_at comes from the id's ULID.
    let ulid = ulid_ms(&change.user.user.id);
    assert_eq!(change.user.user.created_at.as_millis(), ulid);

    let d = fx.engine.get_directory(&dir).unwrap();
    assert_eq!(d.directory.state, DirectoryState::Linked);
    assert_eq!(d.directory.metadata.users.active, 1);
    assert_eq!(d.directory.domain.as_deref(), Some("foo-corp.com"));

    // Second change: no second activation.
    let seq = fx.last_seq();
    fx.engine
        .upsert_user(&dir, None, user("ext-2", "joe@foo-corp.com", "Joe"), None)
        .unwrap();
    assert_eq!(fx.kinds_after(seq), ["dsync.user.created"]);
}

fn ulid_ms(id: &str) -> i64 {
    let u = id.rsplit('_').next().unwrap();
    ulid::Ulid::from_string(u).unwrap().timestamp_ms() as i64
}

#[test]
fn update_carries_previous_attributes_and_no_op_writes_nothing() {
    let fx = Fx::new();
    let mut settings = DirectorySettings::default();
    settings.attribute_map.insert(
        "department".into(),
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User.department".into(),
    );
    let (dir, _) = fx.scim_dir(settings);
    let first = fx
        .engine
        .upsert_user(&dir, None, user("ext-1", "jane@foo-corp.com", "Jane"), None)
        .unwrap();
    assert_eq!(first.user.user.custom_attributes["department"], Value::Null);

    let mut input = user("ext-1", "jane@foo-corp.com", "Janet");
    input.source["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"] =
        json!({"department": "Engineering"});
    let seq = fx.last_seq();
    let upd = fx
        .engine
        .upsert_user(&dir, Some(&first.user.user.id), input.clone(), None)
        .unwrap();
    assert_eq!(upd.kind, ChangeKind::Updated);
    assert_eq!(upd.user.version, 2);
    assert_eq!(upd.user.user.custom_attributes["department"], "Engineering");
    assert_eq!(
        upd.user.user.custom_attributes["department_name"],
        "Engineering"
    );
    let events = fx.events_after(seq);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"], "dsync.user.updated");
    let data = &events[0]["data"];
    assert_eq!(
        data["previous_attributes"],
        json!({"first_name": "Jane", "name": "Jane Doe",
            "custom_attributes": {"department": null, "department_name": null}})
    );
    assert_eq!(data["first_name"], "Janet");
    assert!(data.get("groups").is_none());
    // The rest of the payload is the stored user.
    let mut without_prev = data.clone();
    without_prev
        .as_object_mut()
        .unwrap()
        .remove("previous_attributes");
    assert_eq!(without_prev, user_json(&upd.user));

    // Same input again: nothing written, no event, same version.
    let seq = fx.last_seq();
    let same = fx
        .engine
        .upsert_user(&dir, Some(&first.user.user.id), input, None)
        .unwrap();
    assert_eq!(same.kind, ChangeKind::Unchanged);
    assert!(same.events.is_empty());
    assert_eq!(fx.last_seq(), seq);
    assert_eq!(
        fx.engine
            .get_user(Some(&dir), &first.user.user.id)
            .unwrap()
            .version,
        2
    );
}

#[test]
fn deactivation_deletes_by_default() {
    let fx = Fx::new();
    let (dir, _) = fx.scim_dir(DirectorySettings::default());
    let u = fx
        .engine
        .upsert_user(&dir, None, user("ext-1", "jane@foo-corp.com", "Jane"), None)
        .unwrap();
    let mut input = user("ext-1", "jane@foo-corp.com", "Jane");
    input.active = false;
    let seq = fx.last_seq();
    let r = fx
        .engine
        .upsert_user(&dir, Some(&u.user.user.id), input, None)
        .unwrap();
    assert_eq!(r.kind, ChangeKind::Deleted);
    let events = fx.events_after(seq);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"], "dsync.user.deleted");
    assert_eq!(events[0]["data"]["id"], u.user.user.id.as_str());
    assert!(matches!(
        fx.engine.get_user(None, &u.user.user.id),
        Err(EngineError::NotFound { .. })
    ));
    let c = fx.engine.counts(&dir).unwrap();
    assert_eq!((c.active, c.inactive), (0, 0));
    // Its unique slots are free again.
    assert!(fx
        .engine
        .find_user_by_key(&dir, "scim.userName", "jane@foo-corp.com")
        .unwrap()
        .is_none());
}

#[test]
fn deactivation_keeps_inactive_when_configured() {
    let fx = Fx::new();
    let settings = DirectorySettings {
        deactivation: Deactivation::KeepInactive,
        ..DirectorySettings::default()
    };
    let (dir, _) = fx.scim_dir(settings);
    let u = fx
        .engine
        .upsert_user(&dir, None, user("ext-1", "jane@foo-corp.com", "Jane"), None)
        .unwrap();
    let mut input = user("ext-1", "jane@foo-corp.com", "Jane");
    input.active = false;
    let seq = fx.last_seq();
    let r = fx
        .engine
        .upsert_user(&dir, Some(&u.user.user.id), input, None)
        .unwrap();
    assert_eq!(r.kind, ChangeKind::Updated);
    assert_eq!(r.user.user.state, UserState::Inactive);
    let events = fx.events_after(seq);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"], "dsync.user.updated");
    assert_eq!(events[0]["data"]["state"], "inactive");
    assert_eq!(
        events[0]["data"]["previous_attributes"],
        json!({"state": "active"})
    );
    let c = fx.engine.counts(&dir).unwrap();
    assert_eq!((c.active, c.inactive), (0, 1));
    let d = fx.engine.get_directory(&dir).unwrap();
    assert_eq!(d.directory.metadata.users.inactive, 1);
}

#[test]
fn uniqueness_conflicts_leave_the_store_unchanged() {
    let fx = Fx::new();
    let (dir, _) = fx.scim_dir(DirectorySettings::default());
    fx.engine
        .upsert_user(&dir, None, user("ext-1", "jane@foo-corp.com", "Jane"), None)
        .unwrap();
    let joe = fx
        .engine
        .upsert_user(&dir, None, user("ext-2", "joe@foo-corp.com", "Joe"), None)
        .unwrap();
    let rows = fx.rows();
    let seq = fx.last_seq();

    // Same userName, other idp_id.
    let err = fx
        .engine
        .upsert_user(&dir, None, user("ext-3", "jane@foo-corp.com", "Jane"), None)
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Conflict { constraint: Constraint::UniqueKey(k), .. } if k == "scim.userName"),
        "{err}"
    );
    // Same idp_id.
    let err = fx
        .engine
        .upsert_user(&dir, None, user("ext-1", "other@foo-corp.com", "X"), None)
        .unwrap_err();
    assert!(
        matches!(
            &err,
            EngineError::Conflict {
                constraint: Constraint::IdpId,
                ..
            }
        ),
        "{err}"
    );
    // An update that takes someone else's userName.
    let err = fx
        .engine
        .upsert_user(
            &dir,
            Some(&joe.user.user.id),
            user("ext-2", "jane@foo-corp.com", "Joe"),
            None,
        )
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Conflict { constraint: Constraint::UniqueKey(k), .. } if k == "scim.userName")
    );

    assert_eq!(fx.rows(), rows);
    assert_eq!(fx.last_seq(), seq);

    // Another directory has its own key space.
    let (dir2, _) = fx.scim_dir(DirectorySettings::default());
    fx.engine
        .upsert_user(
            &dir2,
            None,
            user("ext-1", "jane@foo-corp.com", "Jane"),
            None,
        )
        .unwrap();
}

#[test]
fn changing_a_unique_key_moves_the_slot() {
    let fx = Fx::new();
    let (dir, _) = fx.scim_dir(DirectorySettings::default());
    let jane = fx
        .engine
        .upsert_user(&dir, None, user("ext-1", "jane@foo-corp.com", "Jane"), None)
        .unwrap();
    fx.engine
        .upsert_user(
            &dir,
            Some(&jane.user.user.id),
            user("ext-1", "jane.doe@foo-corp.com", "Jane"),
            None,
        )
        .unwrap();
    let by_new = fx
        .engine
        .find_user_by_key(&dir, "scim.userName", "jane.doe@foo-corp.com")
        .unwrap()
        .unwrap();
    assert_eq!(by_new.user.id, jane.user.user.id);
    assert!(fx
        .engine
        .find_user_by_key(&dir, "scim.userName", "jane@foo-corp.com")
        .unwrap()
        .is_none());
    // The old value is free for someone else.
    fx.engine
        .upsert_user(
            &dir,
            None,
            user("ext-9", "jane@foo-corp.com", "Other"),
            None,
        )
        .unwrap();
}

#[test]
fn expected_version_is_optimistic_concurrency() {
    let fx = Fx::new();
    let (dir, _) = fx.scim_dir(DirectorySettings::default());
    let u = fx
        .engine
        .upsert_user(&dir, None, user("ext-1", "jane@foo-corp.com", "Jane"), None)
        .unwrap();
    let id = u.user.user.id.clone();
    let err = fx
        .engine
        .upsert_user(
            &dir,
            Some(&id),
            user("ext-1", "jane@foo-corp.com", "J2"),
            Some(7),
        )
        .unwrap_err();
    assert!(matches!(
        &err,
        EngineError::Conflict {
            constraint: Constraint::Version,
            ..
        }
    ));
    assert_eq!(
        fx.engine
            .get_user(None, &id)
            .unwrap()
            .user
            .first_name
            .as_deref(),
        Some("Jane")
    );
    let ok = fx
        .engine
        .upsert_user(
            &dir,
            Some(&id),
            user("ext-1", "jane@foo-corp.com", "J2"),
            Some(1),
        )
        .unwrap();
    assert_eq!(ok.user.version, 2);
    // The version just used is now stale.
    let err = fx
        .engine
        .upsert_user(
            &dir,
            Some(&id),
            user("ext-1", "jane@foo-corp.com", "J3"),
            Some(1),
        )
        .unwrap_err();
    assert!(matches!(err, EngineError::Conflict { .. }));
}

#[test]
fn delete_user_emits_deleted_and_cleans_up() {
    let fx = Fx::new();
    let (dir, _) = fx.scim_dir(DirectorySettings::default());
    let u = fx
        .engine
        .upsert_user(&dir, None, user("ext-1", "jane@foo-corp.com", "Jane"), None)
        .unwrap();
    let seq = fx.last_seq();
    let r = fx.engine.delete_user(&dir, &u.user.user.id).unwrap();
    assert_eq!(r.kind, ChangeKind::Deleted);
    let events = fx.events_after(seq);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"], "dsync.user.deleted");
    assert_eq!(events[0]["data"], user_json(&u.user));
    assert!(fx
        .engine
        .find_user_by_idp_id(&dir, "ext-1")
        .unwrap()
        .is_none());
    assert!(matches!(
        fx.engine.delete_user(&dir, &u.user.user.id),
        Err(EngineError::NotFound { .. })
    ));
    // A user of another directory is not reachable through this one.
    let (dir2, _) = fx.scim_dir(DirectorySettings::default());
    let other = fx
        .engine
        .upsert_user(
            &dir2,
            None,
            user("ext-1", "jane@foo-corp.com", "Jane"),
            None,
        )
        .unwrap();
    assert!(matches!(
        fx.engine.get_user(Some(&dir), &other.user.user.id),
        Err(EngineError::NotFound { .. })
    ));
}

#[test]
fn scim_tokens_authenticate_and_rotate() {
    let fx = Fx::new();
    let (dir, token) = fx.scim_dir(DirectorySettings::default());
    assert!(fx.engine.authenticate_scim(&dir, &token).unwrap().is_some());
    assert!(fx
        .engine
        .authenticate_scim(&dir, "wrong")
        .unwrap()
        .is_none());
    let rec = fx.engine.get_directory(&dir).unwrap();
    assert_ne!(rec.scim_token_digest.as_deref(), Some(token.as_str()));
    let new = fx.engine.rotate_scim_token(&dir).unwrap();
    assert_ne!(new, token);
    assert!(fx.engine.authenticate_scim(&dir, &token).unwrap().is_none());
    assert!(fx.engine.authenticate_scim(&dir, &new).unwrap().is_some());
    // The token of one directory does not open another.
    let (dir2, _) = fx.scim_dir(DirectorySettings::default());
    assert!(fx.engine.authenticate_scim(&dir2, &new).unwrap().is_none());
    let sftp = fx.sftp_dir(DirectorySettings::default());
    assert!(matches!(
        fx.engine.rotate_scim_token(&sftp),
        Err(EngineError::Invalid(_))
    ));
}

#[test]
fn concurrent_writers_keep_counters_and_uniqueness() {
    let fx = Fx::new();
    let (dir, _) = fx.scim_dir(DirectorySettings::default());
    let results: Vec<Result<_, EngineError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (engine, dir) = (&fx.engine, &dir);
                s.spawn(move || {
                    let mut out = Vec::new();
                    for i in 0..10 {
                        let email = format!("t{t}-{i}@foo-corp.com");
                        out.push(engine.upsert_user(
                            dir,
                            None,
                            user(&format!("t{t}-{i}"), &email, "T"),
                            None,
                        ));
                    }
                    // Everyone also races for the same userName.
                    out.push(engine.upsert_user(
                        dir,
                        None,
                        user(&format!("race-{t}"), "race@foo-corp.com", "R"),
                        None,
                    ));
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 41, "40 distinct users + exactly one race winner");
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Err(EngineError::Conflict { constraint: Constraint::UniqueKey(k), .. }) if k == "scim.userName"))
        .count();
    assert_eq!(conflicts, 3);
    assert_eq!(fx.engine.counts(&dir).unwrap().active, 41);
    let page = fx
        .engine
        .list_users(
            &dir,
            None,
            &idbridge_directory::PageRequest {
                limit: 100,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(page.data.len(), 41);
    // Desc by default: newest first.
    let ids: Vec<&str> = page.data.iter().map(|u| u.user.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted);
}
