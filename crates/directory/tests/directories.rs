//! Directory lifecycle: listing, deletion (one event, nothing left behind).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{group, user, Fx};
use idbridge_directory::{Cursor, DirectorySettings, EngineError, Order, PageRequest};
use serde_json::json;

#[test]
fn delete_directory_emits_one_event_and_leaves_nothing() {
    let fx = Fx::new();
    let before = fx.rows();
    let (dir, token) = fx.scim_dir(DirectorySettings::default());
    let mut ids = Vec::new();
    for i in 0..5 {
        let u = fx
            .engine
            .upsert_user(
                &dir,
                None,
                user(&format!("u-{i}"), &format!("u{i}@foo-corp.com"), "U"),
                None,
            )
            .unwrap();
        ids.push(u.user.user.id);
    }
    let g = fx
        .engine
        .upsert_group(&dir, None, group("g-1", "Eng"), None)
        .unwrap();
    fx.engine
        .set_group_members(&dir, &g.group.group.id, ids.clone())
        .unwrap();
    // A second directory must survive untouched.
    let (other, _) = fx.scim_dir(DirectorySettings::default());
    fx.engine
        .upsert_user(&other, None, user("u-0", "u0@foo-corp.com", "U"), None)
        .unwrap();
    let other_rows: Vec<_> = fx
        .rows()
        .into_iter()
        .filter(|((_, k), _)| !k.contains(&dir))
        .filter(|((t, _), _)| {
            t != "dsync.user_dir" && t != "dsync.group_dir" && t != "directory_memberships"
        })
        .collect();

    let seq = fx.last_seq();
    let event = fx.engine.delete_directory(&dir).unwrap();
    let events = fx.events_after(seq);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"], "dsync.deleted");
    assert_eq!(events[0]["id"], event.id.as_str());
    let data = &events[0]["data"];
    assert_eq!(data["id"], dir.as_str());
    assert_eq!(data["state"], "active");
    assert!(data.get("domain").is_none() && data.get("domains").is_none());
    assert!(data.get("external_key").is_none());

    // Only the other directory's rows (and the organization) remain.
    let after = fx.rows();
    for (table, key) in after.keys() {
        assert!(!key.contains(&dir), "left behind: {table}/{key}");
        for id in &ids {
            assert!(!key.contains(id.as_str()), "left behind: {table}/{key}");
        }
        assert!(
            !key.contains(&g.group.group.id),
            "left behind: {table}/{key}"
        );
    }
    for (k, v) in &other_rows {
        assert_eq!(after.get(k), Some(v));
    }
    assert!(before.iter().all(|(k, v)| after.get(k) == Some(v)));
    assert!(matches!(
        fx.engine.get_directory(&dir),
        Err(EngineError::NotFound { .. })
    ));
    assert!(fx.engine.authenticate_scim(&dir, &token).unwrap().is_none());
    assert!(matches!(
        fx.engine
            .upsert_user(&dir, None, user("x", "x@foo-corp.com", "X"), None),
        Err(EngineError::NotFound { .. })
    ));
}

#[test]
fn list_directories_pages_by_id() {
    let fx = Fx::new();
    let ids: Vec<String> = (0..5)
        .map(|_| fx.scim_dir(DirectorySettings::default()).0)
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    let asc = |cursor| PageRequest {
        limit: 2,
        order: Order::Asc,
        cursor,
    };
    let p1 = fx
        .engine
        .list_directories(Some(&fx.org.id), &asc(Cursor::None))
        .unwrap();
    let got: Vec<String> = p1.data.iter().map(|d| d.directory.id.clone()).collect();
    assert_eq!(got, sorted[..2]);
    assert_eq!(p1.before, None);
    assert_eq!(p1.after.as_deref(), Some(sorted[1].as_str()));
    let p2 = fx
        .engine
        .list_directories(Some(&fx.org.id), &asc(Cursor::After(sorted[1].clone())))
        .unwrap();
    let got: Vec<String> = p2.data.iter().map(|d| d.directory.id.clone()).collect();
    assert_eq!(got, sorted[2..4]);
    assert_eq!(p2.before.as_deref(), Some(sorted[2].as_str()));
    // Back from the third item.
    let back = fx
        .engine
        .list_directories(Some(&fx.org.id), &asc(Cursor::Before(sorted[2].clone())))
        .unwrap();
    let got: Vec<String> = back.data.iter().map(|d| d.directory.id.clone()).collect();
    assert_eq!(got, sorted[..2]);
    // Desc (the WorkOS default) starts from the newest.
    let desc = fx
        .engine
        .list_directories(
            None,
            &PageRequest {
                limit: 10,
                ..Default::default()
            },
        )
        .unwrap();
    let got: Vec<String> = desc.data.iter().map(|d| d.directory.id.clone()).collect();
    let mut rev = sorted.clone();
    rev.reverse();
    assert_eq!(got, rev);
    assert_eq!(desc.after, None);
    // Directory JSON is the WorkOS shape.
    let v = serde_json::to_value(&desc.data[0].directory).unwrap();
    assert_eq!(
        v["metadata"],
        json!({"users": {"active": 0, "inactive": 0}, "groups": 0})
    );
    assert_eq!(v["state"], "unlinked");
    assert_eq!(v["type"], "okta scim v2.0");
}

#[test]
fn create_directory_needs_an_organization() {
    let fx = Fx::new();
    let err = fx
        .engine
        .create_directory(
            "org_01HZZZZZZZZZZZZZZZZZZZZZZZ",
            "x",
            "sftp",
            DirectorySettings::default(),
        )
        .unwrap_err();
    assert!(matches!(
        err,
        EngineError::NotFound {
            what: "organization",
            ..
        }
    ));
}

#[test]
fn a_deactivated_directory_refuses_its_token_and_every_change_until_activated() {
    use idbridge_directory::ScimAuth;
    let fx = Fx::new();
    let (dir, token) = fx.scim_dir(DirectorySettings::default());
    fx.engine
        .upsert_user(&dir, None, user("u-0", "u0@foo-corp.com", "U"), None)
        .unwrap();
    assert!(matches!(
        fx.engine.scim_auth(&dir, &token).unwrap(),
        ScimAuth::Accepted(_)
    ));

    let seq = fx.last_seq();
    assert!(fx.engine.deactivate_directory(&dir).unwrap().is_some());
    let rows = fx.rows();
    assert_eq!(
        fx.engine.scim_auth(&dir, &token).unwrap(),
        ScimAuth::Deactivated
    );
    assert!(fx.engine.authenticate_scim(&dir, &token).unwrap().is_none());
    assert_eq!(
        fx.engine.scim_auth(&dir, "wrong").unwrap(),
        ScimAuth::Refused,
        "a wrong token learns nothing"
    );
    // A change that got past the token check before the deactivation writes nothing.
    assert!(matches!(
        fx.engine
            .upsert_user(&dir, None, user("u-1", "u1@foo-corp.com", "U"), None),
        Err(EngineError::Invalid(_))
    ));
    assert_eq!(fx.rows(), rows, "nothing written");
    assert!(fx.engine.deactivate_directory(&dir).unwrap().is_none());

    assert!(fx.engine.activate_directory(&dir).unwrap());
    assert!(!fx.engine.activate_directory(&dir).unwrap());
    assert!(matches!(
        fx.engine.scim_auth(&dir, &token).unwrap(),
        ScimAuth::Accepted(_)
    ));
    fx.engine
        .upsert_user(&dir, None, user("u-1", "u1@foo-corp.com", "U"), None)
        .unwrap();
    let kinds: Vec<String> = fx
        .events_after(seq)
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        ["dsync.deactivated", "dsync.activated", "dsync.user.created"]
    );
}
