//! The real SCIM router over the directory engine (ephemeral SQLite store), driven in-process:
//! the Okta and Entra ID request sequences from tests/fixtures, tenancy between directories,
//! and bad input (each with the right SCIM error and nothing written).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod http_support;

use http_support::{fixture, Env, Resp};
use idbridge_directory::{Deactivation, DirectorySettings};
use idbridge_model::{Role, RoleMapping, Timestamp, UserState};
use serde_json::{json, Value};

const SCIM_CT: &str = "application/scim+json";

fn keep_inactive() -> DirectorySettings {
    DirectorySettings {
        deactivation: Deactivation::KeepInactive,
        ..DirectorySettings::default()
    }
}

fn base(dir: &str) -> String {
    format!("/scim/v2/{dir}")
}

fn id_of(r: &Resp) -> String {
    r.body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {}", r.body))
        .to_owned()
}

async fn create_user(env: &Env, dir: &str, token: &str, user_name: &str, ext: &str) -> String {
    let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name, "externalId": ext, "active": true,
        "emails": [{"value": user_name, "type": "work", "primary": true}]});
    let r = env
        .send(
            "POST",
            &format!("{}/Users", base(dir)),
            Some(token),
            Some(&body.to_string()),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    id_of(&r)
}

fn member_ids(env: &Env, group: &str) -> Vec<String> {
    let mut m = env.engine.group_members(group).unwrap_or_default();
    m.sort();
    m
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn discovery_auth_and_tenancy() {
    let env = Env::new();
    let (a, ta) = env.dir(DirectorySettings::default());
    let (b, tb) = env.dir(DirectorySettings::default());

    let r = env
        .send(
            "GET",
            &format!("{}/ServiceProviderConfig", base(&a)),
            Some(&ta),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(SCIM_CT));
    assert!(r.body["patch"]["supported"].as_bool().unwrap_or(false));
    for p in ["Schemas", "ResourceTypes"] {
        let r = env
            .send("GET", &format!("{}/{p}", base(&a)), Some(&ta), None, &[])
            .await;
        assert_eq!(r.status, 200, "{p}");
        assert!(
            r.body["totalResults"].as_u64().unwrap_or(0) >= 2,
            "{p}: {}",
            r.body
        );
    }

    // No token, a malformed header, a wrong token: 401 SCIM errors with a challenge.
    for auth in [None, Some("garbage")] {
        let mut extra = Vec::new();
        if let Some(h) = auth {
            extra.push(("authorization", h));
        }
        let r = env
            .send("GET", &format!("{}/Users", base(&a)), None, None, &extra)
            .await;
        assert_eq!(r.status, 401);
        assert_eq!(r.body["status"], "401");
        assert!(r.header("www-authenticate").is_some());
    }
    let r = env
        .send(
            "GET",
            &format!("{}/Users", base(&a)),
            Some("not-the-token"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 401);

    // A's user, B's group.
    let ua = create_user(&env, &a, &ta, "ann@a.test", "ext-ann").await;
    let ub = create_user(&env, &b, &tb, "bob@b.test", "ext-bob").await;
    let seq = env.last_seq();
    let dump = env.dump();
    // Token of A on B and token of B on A: reads and writes refused, both ways.
    for (dir, tok, other_user) in [(&b, &ta, &ub), (&a, &tb, &ua)] {
        for (m, path, body) in [
            ("GET", format!("{}/Users", base(dir)), None),
            ("GET", format!("{}/Users/{other_user}", base(dir)), None),
            ("POST", format!("{}/Users", base(dir)), Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "evil"}).to_string())),
            ("DELETE", format!("{}/Users/{other_user}", base(dir)), None),
        ] {
            let r = env.send(m, &path, Some(tok), body.as_deref(), &[]).await;
            assert_eq!(r.status, 401, "{m} {path}");
        }
    }
    // A's token with A's path cannot address B's user either (404, not B's data).
    let r = env
        .send(
            "GET",
            &format!("{}/Users/{ub}", base(&a)),
            Some(&ta),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 404);
    let r = env
        .send(
            "DELETE",
            &format!("{}/Users/{ub}", base(&a)),
            Some(&ta),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(env.last_seq(), seq);
    assert_eq!(env.dump(), dump);

    // Rotation: the old token stops working at once.
    let new_token = env
        .engine
        .rotate_scim_token(&a)
        .unwrap_or_else(|e| panic!("{e}"));
    let r = env
        .send("GET", &format!("{}/Users", base(&a)), Some(&ta), None, &[])
        .await;
    assert_eq!(r.status, 401);
    let r = env
        .send(
            "GET",
            &format!("{}/Users", base(&a)),
            Some(&new_token),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["totalResults"], 1);
}

#[tokio::test]
async fn okta_sequence() {
    let env = Env::new();
    let (dir, tok) = env.dir(DirectorySettings::default());
    let b = base(&dir);
    let t = Some(tok.as_str());

    // Okta looks the user up first, then creates it.
    let q = format!(
        "{b}/Users?filter=userName%20eq%20%22test.user%40okta.local%22&startIndex=1&count=100"
    );
    let r = env.send("GET", &q, t, None, &[]).await;
    assert_eq!((r.status, r.body["totalResults"].clone()), (200, json!(0)));
    let seq = env.last_seq();
    let r = env
        .send(
            "POST",
            &format!("{b}/Users"),
            t,
            Some(&fixture("okta/01_create_user.json")),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let u1 = id_of(&r);
    assert_eq!(
        r.header("location"),
        Some(format!("https://idbridge.test{b}/Users/{u1}").as_str())
    );
    assert_eq!(r.header("etag"), r.body["meta"]["version"].as_str());
    assert!(r.body.get("password").is_none());
    assert_eq!(
        env.kinds_after(seq),
        ["dsync.activated", "dsync.user.created"]
    );
    let created = &env.events_after(seq)[1].1;
    assert_eq!(created["idp_id"], "00ujl29u0le5T6Aj10h7");
    assert_eq!(created["email"], "test.user@okta.local");
    assert_eq!(
        (created["first_name"].clone(), created["last_name"].clone()),
        (json!("Test"), json!("User"))
    );
    // GET returns what was sent (plus id/meta).
    let got = env
        .send("GET", &format!("{b}/Users/{u1}"), t, None, &[])
        .await;
    assert_eq!(got.body["locale"], "en-US");
    assert_eq!(got.body["externalId"], "00ujl29u0le5T6Aj10h7");
    let r = env.send("GET", &q, t, None, &[]).await;
    assert_eq!(r.body["totalResults"], 1);
    assert_eq!(r.body["Resources"][0]["id"], u1.as_str());

    let u2 = create_user(&env, &dir, &tok, "second.user@okta.local", "00u2").await;
    let u3 = create_user(&env, &dir, &tok, "third.user@okta.local", "00u3").await;
    let subst = |s: String| {
        s.replace("6e9b5f0a-0f7e-4d6b-9b0e-2d1f3c4b5a61", &u1)
            .replace("0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f", &u2)
            .replace("9f8e7d6c-5b4a-4392-8a1b-0c9d8e7f6a5b", &u3)
    };

    // Profile update: PUT of the whole user.
    let seq = env.last_seq();
    let r = env
        .send(
            "PUT",
            &format!("{b}/Users/{u1}"),
            t,
            Some(&subst(fixture("okta/02_update_user_put.json"))),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["name"]["givenName"], "Another");
    let ev = env.events_after(seq);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].0, "dsync.user.updated");
    assert_eq!(ev[0].1["first_name"], "Another");
    assert_eq!(ev[0].1["previous_attributes"]["first_name"], "Test");

    // Group push: create (empty members), PUT members, rename, add, remove by filter, replace.
    let seq = env.last_seq();
    let r = env
        .send(
            "POST",
            &format!("{b}/Groups"),
            t,
            Some(&fixture("okta/04_create_group.json")),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let g = id_of(&r);
    assert_eq!(env.kinds_after(seq), ["dsync.group.created"]);
    let gsub = |s: String| subst(s).replace("abf4dd94-a4c0-4f67-89c9-76b03340cb9b", &g);
    let seq = env.last_seq();
    let r = env
        .send(
            "PUT",
            &format!("{b}/Groups/{g}"),
            t,
            Some(&gsub(fixture("okta/05_group_put_members.json"))),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["members"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        env.kinds_after(seq),
        ["dsync.group.user_added", "dsync.group.user_added"]
    );
    assert_eq!(member_ids(&env, &g), sorted(vec![u1.clone(), u2.clone()]));
    let etag_before = r.header("etag").map(str::to_owned);

    let seq = env.last_seq();
    let r = env
        .send(
            "PATCH",
            &format!("{b}/Groups/{g}"),
            t,
            Some(&gsub(fixture("okta/06_group_patch_rename.json"))),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["displayName"], "Test SCIMv2 Renamed");
    let ev = env.events_after(seq);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].0, "dsync.group.updated");
    assert_eq!(ev[0].1["previous_attributes"]["name"], "Test SCIMv2");

    let seq = env.last_seq();
    let r = env
        .send(
            "PATCH",
            &format!("{b}/Groups/{g}"),
            t,
            Some(&gsub(fixture("okta/07_group_patch_add_members.json"))),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ev = env.events_after(seq);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].0, "dsync.group.user_added");
    assert_eq!(ev[0].1["user"]["id"], u3.as_str());
    assert_eq!(ev[0].1["group"]["id"], g.as_str());
    assert_ne!(
        r.header("etag").map(str::to_owned),
        etag_before,
        "member changes change the ETag"
    );

    let seq = env.last_seq();
    let r = env
        .send(
            "PATCH",
            &format!("{b}/Groups/{g}"),
            t,
            Some(&gsub(fixture("okta/08_group_patch_remove_member.json"))),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ev = env.events_after(seq);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].0, "dsync.group.user_removed");
    assert_eq!(ev[0].1["user"]["id"], u1.as_str());
    assert_eq!(member_ids(&env, &g), sorted(vec![u2.clone(), u3.clone()]));

    let seq = env.last_seq();
    let r = env
        .send(
            "PATCH",
            &format!("{b}/Groups/{g}"),
            t,
            Some(&gsub(fixture("okta/09_group_patch_replace_members.json"))),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(env.kinds_after(seq), ["dsync.group.user_removed"]);
    assert_eq!(member_ids(&env, &g), vec![u2.clone()]);

    // The user's groups show up on the user.
    let r = env
        .send("GET", &format!("{b}/Users/{u2}"), t, None, &[])
        .await;
    assert_eq!(r.body["groups"][0]["value"], g.as_str());
    assert_eq!(r.body["groups"][0]["display"], "Test SCIMv2 Renamed");

    // Group lookup by displayName (index), renamed.
    let r = env
        .send(
            "GET",
            &format!("{b}/Groups?filter=displayName%20eq%20%22test%20scimv2%20renamed%22"),
            t,
            None,
            &[],
        )
        .await;
    assert_eq!(r.body["totalResults"], 1, "{}", r.body);

    // Deactivation: PATCH replace {"active": false} → deleted from the directory (WorkOS
    // default) in one commit, while the SCIM resource stays for Okta (parked).
    let seq = env.last_seq();
    let r = env
        .send(
            "PATCH",
            &format!("{b}/Users/{u2}"),
            t,
            Some(&fixture("okta/03_deactivate_user.json")),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["active"], false);
    let ev = env.events_after(seq);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].0, "dsync.user.deleted");
    assert_eq!(ev[0].1["id"], u2.as_str());
    assert_eq!(ev[0].1["state"], "inactive");
    assert!(env.user(&dir, &u2).is_none());
    assert!(member_ids(&env, &g).is_empty());
    assert!(env.engine.get_user_with_groups(&u2).is_err());
    let workos_ids = |env: &Env| -> Vec<String> {
        env.engine
            .list_users(&dir, None, &Default::default())
            .unwrap_or_else(|e| panic!("{e}"))
            .data
            .into_iter()
            .map(|u| u.user.id)
            .collect()
    };
    assert!(!workos_ids(&env).contains(&u2));
    // Okta reads it back, by id and by userName.
    let r = env
        .send("GET", &format!("{b}/Users/{u2}"), t, None, &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["active"], false);
    assert_eq!(r.body["userName"], "second.user@okta.local");
    let q2 = format!("{b}/Users?filter=userName%20eq%20%22second.user%40okta.local%22");
    let r = env.send("GET", &q2, t, None, &[]).await;
    assert_eq!(r.body["totalResults"], 1, "{}", r.body);
    assert_eq!(r.body["Resources"][0]["id"], u2.as_str());
    assert_eq!(r.body["Resources"][0]["active"], false);
    // Its userName is still taken.
    let dup = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "Second.User@okta.local", "active": true});
    let r = env
        .send(
            "POST",
            &format!("{b}/Users"),
            t,
            Some(&dup.to_string()),
            &[],
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body["scimType"], "uniqueness");
    // Okta PUTs the whole group, still listing the deactivated user: no error, and the parked
    // user is simply not a member.
    let seq = env.last_seq();
    let r = env
        .send(
            "PUT",
            &format!("{b}/Groups/{g}"),
            t,
            Some(&gsub(fixture("okta/05_group_put_members.json"))),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(member_ids(&env, &g), vec![u1.clone()]);
    assert!(env
        .kinds_after(seq)
        .iter()
        .all(|k| k == "dsync.group.user_added" || k == "dsync.group.updated"));
    // Reactivation: PATCH replace {"active": true} → the same directory user is back.
    let seq = env.last_seq();
    let r = env
        .send(
            "PATCH",
            &format!("{b}/Users/{u2}"),
            t,
            Some(&fixture("okta/10_reactivate_user.json")),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["active"], true);
    assert_eq!(r.body["id"], u2.as_str());
    let ev = env.events_after(seq);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].0, "dsync.user.created");
    assert_eq!(ev[0].1["id"], u2.as_str());
    assert_eq!(ev[0].1["state"], "active");
    assert!(workos_ids(&env).contains(&u2));
    let back = env
        .engine
        .get_user_with_groups(&u2)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back.user.state, UserState::Active);
    assert!(back.groups.is_empty());
    // Its memberships follow what the groups say from now on.
    let seq = env.last_seq();
    let r = env
        .send(
            "PUT",
            &format!("{b}/Groups/{g}"),
            t,
            Some(&gsub(fixture("okta/05_group_put_members.json"))),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(env.kinds_after(seq), ["dsync.group.user_added"]);
    assert_eq!(member_ids(&env, &g), sorted(vec![u1.clone(), u2.clone()]));

    // A deactivated user DELETEd: 204, gone for good, no second dsync.user.deleted.
    let r = env
        .send(
            "PATCH",
            &format!("{b}/Users/{u1}"),
            t,
            Some(&fixture("okta/03_deactivate_user.json")),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seq = env.last_seq();
    let r = env
        .send("DELETE", &format!("{b}/Users/{u1}"), t, None, &[])
        .await;
    assert_eq!(r.status, 204);
    assert!(env.kinds_after(seq).is_empty());
    let r = env
        .send("GET", &format!("{b}/Users/{u1}"), t, None, &[])
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["status"], "404");

    // DELETE group and user: 204, events.
    let seq = env.last_seq();
    let r = env
        .send("DELETE", &format!("{b}/Groups/{g}"), t, None, &[])
        .await;
    assert_eq!(r.status, 204);
    let r = env
        .send("DELETE", &format!("{b}/Users/{u3}"), t, None, &[])
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        env.kinds_after(seq),
        ["dsync.group.deleted", "dsync.user.deleted"]
    );
}

/// PUT `active: false`, a POST that creates an inactive user, and writes to a parked user under
/// the default setting: the SCIM resource lives on, the app sees a deletion (or nothing).
#[tokio::test]
async fn deactivation_by_put_and_inactive_create_park_the_resource() {
    let env = Env::new();
    let (dir, tok) = env.dir(DirectorySettings::default());
    let b = base(&dir);
    let t = Some(tok.as_str());
    let user = |name: &str, active: bool, title: &str| {
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": name, "active": active, "title": title,
            "emails": [{"value": name, "type": "work", "primary": true}]})
        .to_string()
    };

    // Created inactive: 201 with the resource, nothing for the app, userName taken.
    let seq = env.last_seq();
    let r = env
        .send(
            "POST",
            &format!("{b}/Users"),
            t,
            Some(&user("ina@x.test", false, "A")),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["active"], false);
    let ina = id_of(&r);
    assert_eq!(env.kinds_after(seq), ["dsync.activated"]);
    assert!(env.user(&dir, &ina).is_none());
    let r = env
        .send("GET", &format!("{b}/Users/{ina}"), t, None, &[])
        .await;
    assert_eq!((r.status, r.body["active"].clone()), (200, json!(false)));
    let r = env
        .send(
            "POST",
            &format!("{b}/Users"),
            t,
            Some(&user("INA@x.test", true, "A")),
            &[],
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    // The unfiltered list shows it too (SCIM view), the engine's directory view does not.
    let r = env.send("GET", &format!("{b}/Users"), t, None, &[]).await;
    assert_eq!(r.body["totalResults"], 1, "{}", r.body);
    assert_eq!(env.engine.counts(&dir).unwrap_or_default().active, 0);

    // PUT active:false of an active user parks it: dsync.user.deleted only.
    let r = env
        .send(
            "POST",
            &format!("{b}/Users"),
            t,
            Some(&user("put@x.test", true, "A")),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let put = id_of(&r);
    let seq = env.last_seq();
    let r = env
        .send(
            "PUT",
            &format!("{b}/Users/{put}"),
            t,
            Some(&user("put@x.test", false, "B")),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["active"], false);
    let ev = env.events_after(seq);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].0, "dsync.user.deleted");
    assert_eq!(ev[0].1["job_title"], "B");
    assert!(env.user(&dir, &put).is_none());

    // PUT on the parked user: only the kept resource changes (new ETag), no event.
    let etag = r.header("etag").map(str::to_owned);
    let seq = env.last_seq();
    let r = env
        .send(
            "PUT",
            &format!("{b}/Users/{put}"),
            t,
            Some(&user("put@x.test", false, "C")),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["title"], "C");
    assert_ne!(r.header("etag").map(str::to_owned), etag);
    assert!(env.kinds_after(seq).is_empty());
    // A stale If-Match on the parked user is refused.
    let stale = etag.unwrap_or_default();
    let r = env
        .send(
            "PATCH",
            &format!("{b}/Users/{put}"),
            t,
            Some(&fixture("okta/10_reactivate_user.json")),
            &[("if-match", stale.as_str())],
        )
        .await;
    assert_eq!(r.status, 412, "{}", r.body);
    assert!(env.user(&dir, &put).is_none());

    // DELETE of parked users: 204, no event, gone from SCIM too.
    let seq = env.last_seq();
    for id in [&ina, &put] {
        let r = env
            .send("DELETE", &format!("{b}/Users/{id}"), t, None, &[])
            .await;
        assert_eq!(r.status, 204);
        let r = env
            .send("GET", &format!("{b}/Users/{id}"), t, None, &[])
            .await;
        assert_eq!(r.status, 404);
    }
    assert!(env.kinds_after(seq).is_empty());
    let r = env.send("GET", &format!("{b}/Users"), t, None, &[]).await;
    assert_eq!(r.body["totalResults"], 0, "{}", r.body);
}

#[tokio::test]
async fn okta_deactivation_kept_inactive_by_setting() {
    let env = Env::new();
    let (dir, tok) = env.dir(keep_inactive());
    let b = base(&dir);
    let r = env
        .send(
            "POST",
            &format!("{b}/Users"),
            Some(&tok),
            Some(&fixture("okta/01_create_user.json")),
            &[],
        )
        .await;
    let u = id_of(&r);
    let seq = env.last_seq();
    let r = env
        .send(
            "PATCH",
            &format!("{b}/Users/{u}"),
            Some(&tok),
            Some(&fixture("okta/03_deactivate_user.json")),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    let ev = env.events_after(seq);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].0, "dsync.user.updated");
    assert_eq!(ev[0].1["state"], "inactive");
    assert_eq!(ev[0].1["previous_attributes"]["state"], "active");
    let stored = env.user(&dir, &u).unwrap_or_else(|| panic!("kept"));
    assert_eq!(stored.user.state, UserState::Inactive);
    let r = env
        .send("GET", &format!("{b}/Users/{u}"), Some(&tok), None, &[])
        .await;
    assert_eq!(r.body["active"], false);
}

#[tokio::test]
async fn entra_sequence() {
    let env = Env::new();
    let (dir, tok) = env.dir(keep_inactive());
    let b = base(&dir);
    let t = Some(tok.as_str());

    // Entra looks up by userName and externalId, then creates; then updates in a second call.
    let seq = env.last_seq();
    let r = env
        .send(
            "POST",
            &format!("{b}/Users"),
            t,
            Some(&fixture("entra/01_create_user.json")),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let u = id_of(&r);
    let ev = env.events_after(seq);
    assert_eq!(
        ev.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        ["dsync.activated", "dsync.user.created"]
    );
    assert_eq!(ev[1].1["idp_id"], "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef");
    assert_eq!(
        ev[1].1["custom_attributes"]["department_name"],
        "Engineering"
    );
    for f in serde_json::from_str::<Vec<Value>>(&fixture("entra/filters.json")).unwrap_or_default()
    {
        if f["resource"] != "Users" {
            continue;
        }
        let filter = f["filter"].as_str().unwrap_or_default();
        let uri = format!("{b}/Users?filter={}", urlencode(filter));
        let r = env.send("GET", &uri, t, None, &[]).await;
        assert_eq!(r.body["totalResults"], 1, "{filter}: {}", r.body);
        assert_eq!(r.body["Resources"][0]["id"], u.as_str());
    }

    let seq = env.last_seq();
    let r = env
        .send(
            "PATCH",
            &format!("{b}/Users/{u}"),
            t,
            Some(&fixture("entra/02_update_user_multi.json")),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ev = env.events_after(seq);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].0, "dsync.user.updated");
    assert_eq!(ev[0].1["email"], "updatedEmail@microsoft.com");
    assert_eq!(ev[0].1["last_name"], "updatedFamilyName");
    assert_eq!(ev[0].1["custom_attributes"]["department_name"], "Research");
    assert_eq!(ev[0].1["previous_attributes"]["last_name"], "familyName");
    let ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    assert_eq!(
        r.body[ent]["manager"]["value"],
        "1e3b0d2c-7a4f-4c9e-9a51-2c6b7d8e9f01"
    );

    let r = env
        .send(
            "PATCH",
            &format!("{b}/Users/{u}"),
            t,
            Some(&fixture("entra/03_update_user_no_path.json")),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        env.user(&dir, &u).and_then(|s| s.user.first_name),
        Some("updatedGivenName".into())
    );

    // Booleans as strings: "False" deactivates.
    let seq = env.last_seq();
    let r = env
        .send(
            "PATCH",
            &format!("{b}/Users/{u}"),
            t,
            Some(&fixture("entra/04_disable_user.json")),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["active"], false);
    let ev = env.events_after(seq);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].1["state"], "inactive");

    // Groups: members in the POST body; add; remove with a value list; remove by filter; rename.
    let m1 = u.clone();
    let m2 = create_user(&env, &dir, &tok, "m2@contoso.test", "oid-m2").await;
    let m3 = create_user(&env, &dir, &tok, "m3@contoso.test", "oid-m3").await;
    let subst = |s: String| {
        s.replace("5d48a0a8-e3ab-4f6c-9c5e-6a0d2b3f4e01", &m1)
            .replace("f648f8d5-ea4e-4cd3-8e9c-0a1b2c3d4e5f", &m2)
            .replace("7c2e9a41-55b3-4d0e-a7f8-3b1c6d9e2f70", &m3)
    };
    let seq = env.last_seq();
    let r = env
        .send(
            "POST",
            &format!("{b}/Groups"),
            t,
            Some(&subst(fixture("entra/05_create_group.json"))),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let g = id_of(&r);
    let ev = env.events_after(seq);
    assert_eq!(
        ev.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        ["dsync.group.created", "dsync.group.user_added"]
    );
    assert_eq!(ev[0].1["idp_id"], "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159");
    assert_eq!(ev[0].1["name"], "Sales Team");
    assert_eq!(ev[1].1["user"]["id"], m1.as_str());

    for f in serde_json::from_str::<Vec<Value>>(&fixture("entra/filters.json")).unwrap_or_default()
    {
        if f["resource"] != "Groups" {
            continue;
        }
        let filter = f["filter"].as_str().unwrap_or_default();
        let uri = format!(
            "{b}/Groups?filter={}&excludedAttributes=members",
            urlencode(filter)
        );
        let r = env.send("GET", &uri, t, None, &[]).await;
        assert_eq!(r.body["totalResults"], 1, "{filter}: {}", r.body);
        assert!(
            r.body["Resources"][0].get("members").is_none(),
            "{}",
            r.body
        );
        assert_eq!(r.body["Resources"][0]["displayName"], "Sales Team");
    }

    let seq = env.last_seq();
    let r = env
        .send(
            "PATCH",
            &format!("{b}/Groups/{g}"),
            t,
            Some(&subst(fixture("entra/06_group_add_members.json"))),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        env.kinds_after(seq),
        ["dsync.group.user_added", "dsync.group.user_added"]
    );
    assert_eq!(
        member_ids(&env, &g),
        sorted(vec![m1.clone(), m2.clone(), m3.clone()])
    );

    let seq = env.last_seq();
    let r = env
        .send(
            "PATCH",
            &format!("{b}/Groups/{g}"),
            t,
            Some(&subst(fixture("entra/07_group_remove_members.json"))),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ev = env.events_after(seq);
    assert_eq!(ev.len(), 1);
    assert_eq!(
        (ev[0].0.as_str(), ev[0].1["user"]["id"].clone()),
        ("dsync.group.user_removed", json!(m2))
    );

    let seq = env.last_seq();
    let r = env
        .send(
            "PATCH",
            &format!("{b}/Groups/{g}"),
            t,
            Some(&subst(fixture("entra/08_group_remove_member_filter.json"))),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ev = env.events_after(seq);
    assert_eq!(ev.len(), 1);
    assert_eq!(
        (ev[0].0.as_str(), ev[0].1["user"]["id"].clone()),
        ("dsync.group.user_removed", json!(m1))
    );
    assert_eq!(member_ids(&env, &g), vec![m3.clone()]);
    // Removing a member that is already gone is a no-op, not an error (Entra retries).
    let r = env
        .send(
            "PATCH",
            &format!("{b}/Groups/{g}"),
            t,
            Some(&subst(fixture("entra/08_group_remove_member_filter.json"))),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let seq = env.last_seq();
    let r = env
        .send(
            "PATCH",
            &format!("{b}/Groups/{g}"),
            t,
            Some(&fixture("entra/09_group_rename.json")),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ev = env.events_after(seq);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].0, "dsync.group.updated");
    assert_eq!(ev[0].1["name"], "Sales Team EMEA");
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn bad_input_gets_scim_errors_and_changes_nothing() {
    let env = Env::new();
    let (dir, tok) = env.dir(DirectorySettings::default());
    let b = base(&dir);
    let t = Some(tok.as_str());
    let u = create_user(&env, &dir, &tok, "ann@a.test", "ext-ann").await;
    let _other = create_user(&env, &dir, &tok, "bob@a.test", "ext-bob").await;
    let user = |name: Value| {
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name})
            .to_string()
    };
    let big = format!("{{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:User\"],\"userName\":\"x\",\"title\":\"{}\"}}", "a".repeat(70 * 1024));
    let patch_ok = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "title", "value": "CEO"}]})
    .to_string();
    type Case<'a> = (
        &'a str,
        String,
        Option<String>,
        Vec<(&'a str, &'a str)>,
        u16,
        Option<&'a str>,
    );
    let cases: Vec<Case> = vec![
        ("POST", format!("{b}/Users"), Some("{not json".into()), vec![], 400, Some("invalidSyntax")),
        ("POST", format!("{b}/Users"), Some("[1,2]".into()), vec![], 400, Some("invalidSyntax")),
        ("POST", format!("{b}/Users"), Some(json!({"schemas": ["urn:example:bogus"], "userName": "z"}).to_string()), vec![], 400, None),
        ("POST", format!("{b}/Users"), Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"]}).to_string()), vec![], 400, None),
        ("POST", format!("{b}/Users"), Some(user(json!(123))), vec![], 400, Some("invalidValue")),
        ("POST", format!("{b}/Users"), Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "z", "active": "maybe"}).to_string()), vec![], 400, Some("invalidValue")),
        ("POST", format!("{b}/Users"), Some(user(json!("ANN@a.test"))), vec![], 409, Some("uniqueness")),
        ("POST", format!("{b}/Users"), Some(big), vec![], 413, None),
        ("GET", format!("{b}/Users?filter=userName%20eq"), None, vec![], 400, Some("invalidFilter")),
        ("GET", format!("{b}/Users?filter=bogus%20xx%20%22a%22"), None, vec![], 400, Some("invalidFilter")),
        ("GET", format!("{b}/Users?count=abc"), None, vec![], 400, Some("invalidValue")),
        ("PATCH", format!("{b}/Users/{u}"), Some(patch_ok.clone()), vec![("if-match", "W/\"999\"")], 412, None),
        ("PUT", format!("{b}/Users/{u}"), Some(user(json!("ann@a.test"))), vec![("if-match", "W/\"999\"")], 412, None),
        ("DELETE", format!("{b}/Users/{u}"), None, vec![("if-match", "W/\"999\"")], 412, None),
        ("PUT", format!("{b}/Users/{u}"), Some(user(json!("bob@a.test"))), vec![], 409, Some("uniqueness")),
        ("PATCH", format!("{b}/Users/{u}"), Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "title", "value": "x"}, {"op": "jump"}]}).to_string()), vec![], 400, None),
        ("PATCH", format!("{b}/Users/{u}"), Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "bogus[[", "value": "x"}]}).to_string()), vec![], 400, Some("invalidPath")),
        ("PATCH", format!("{b}/Users/{u}"), Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "userName", "value": "bob@a.test"}]}).to_string()), vec![], 409, Some("uniqueness")),
        ("PATCH", format!("{b}/Users/{u}"), Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "remove", "path": "userName"}]}).to_string()), vec![], 400, None),
        ("POST", format!("{b}/Groups"), Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "G", "members": [{"value": "directory_user_01J0000000000000000000000X"}]}).to_string()), vec![], 400, Some("invalidValue")),
        ("GET", format!("{b}/Users/directory_user_nope"), None, vec![], 404, None),
        ("DELETE", format!("{b}/Users"), None, vec![], 405, None),
        ("PUT", format!("{b}/Schemas"), Some("{}".into()), vec![], 405, None),
        ("GET", format!("{b}/Nope"), None, vec![], 404, None),
        ("GET", b.clone(), None, vec![], 404, None),
    ];
    let seq = env.last_seq();
    let dump = env.dump();
    for (m, path, body, extra, status, scim_type) in cases {
        let r = env.send(m, &path, t, body.as_deref(), &extra).await;
        assert_eq!(r.status, status, "{m} {path}: {}", r.body);
        assert_eq!(r.header("content-type"), Some(SCIM_CT), "{m} {path}");
        assert_eq!(
            r.body["status"],
            status.to_string(),
            "{m} {path}: {}",
            r.body
        );
        assert_eq!(
            r.body["schemas"][0],
            "urn:ietf:params:scim:api:messages:2.0:Error"
        );
        if let Some(st) = scim_type {
            assert_eq!(r.body["scimType"], st, "{m} {path}: {}", r.body);
        }
        assert!(r.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
        assert_eq!(env.last_seq(), seq, "{m} {path} appended events");
        assert_eq!(env.dump(), dump, "{m} {path} changed the store");
    }
    // And a matching If-Match goes through.
    let r = env
        .send("GET", &format!("{b}/Users/{u}"), t, None, &[])
        .await;
    let tag = r.header("etag").unwrap_or_default().to_owned();
    let r = env
        .send(
            "PATCH",
            &format!("{b}/Users/{u}"),
            t,
            Some(&patch_ok),
            &[("if-match", &tag)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_ne!(r.header("etag"), Some(tag.as_str()));
}

#[tokio::test]
async fn lists_page_project_and_search() {
    let env = Env::new();
    let (dir, tok) = env.dir(DirectorySettings::default());
    let b = base(&dir);
    let t = Some(tok.as_str());
    for i in 0..5 {
        create_user(
            &env,
            &dir,
            &tok,
            &format!("user{i}@x.test"),
            &format!("e{i}"),
        )
        .await;
    }
    let r = env
        .send(
            "GET",
            &format!("{b}/Users?startIndex=2&count=2&attributes=userName"),
            t,
            None,
            &[],
        )
        .await;
    assert_eq!(
        (
            r.body["totalResults"].clone(),
            r.body["itemsPerPage"].clone(),
            r.body["startIndex"].clone()
        ),
        (json!(5), json!(2), json!(2))
    );
    let first = &r.body["Resources"][0];
    assert!(
        first.get("userName").is_some() && first.get("emails").is_none(),
        "{first}"
    );
    let r = env
        .send(
            "GET",
            &format!(
                "{b}/Users?filter=userName%20sw%20%22user1%22%20or%20externalId%20eq%20%22e3%22"
            ),
            t,
            None,
            &[],
        )
        .await;
    assert_eq!(r.body["totalResults"], 2, "{}", r.body);
    let search = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": "emails[type eq \"work\" and value ew \"x.test\"]", "count": 3});
    let r = env
        .send(
            "POST",
            &format!("{b}/Users/.search"),
            t,
            Some(&search.to_string()),
            &[],
        )
        .await;
    assert_eq!(
        (
            r.status,
            r.body["totalResults"].clone(),
            r.body["itemsPerPage"].clone()
        ),
        (200, json!(5), json!(3)),
        "{}",
        r.body
    );
    let r = env
        .send(
            "POST",
            &format!("{b}/.search"),
            t,
            Some(
                &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]})
                    .to_string(),
            ),
            &[],
        )
        .await;
    assert_eq!(r.body["totalResults"], 5, "{}", r.body);
}

#[tokio::test]
async fn group_membership_drives_roles() {
    let env = Env::new();
    let (dir, tok) = env.dir(DirectorySettings::default());
    let b = base(&dir);
    let t = Some(tok.as_str());
    let now = Timestamp::now();
    let role = |slug: &str, priority: u32, is_default: bool| Role {
        slug: slug.into(),
        name: slug.into(),
        description: None,
        priority,
        is_default,
        created_at: now,
        updated_at: now,
    };
    env.engine
        .set_roles(
            &env.org,
            vec![role("member", 10, true), role("admin", 1, false)],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    env.engine
        .set_role_mappings(
            &env.org,
            vec![RoleMapping {
                organization_id: env.org.clone(),
                idp_group: "Admins".into(),
                role_slug: "admin".into(),
            }],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let u = create_user(&env, &dir, &tok, "ann@a.test", "ext-ann").await;
    assert_eq!(
        env.user(&dir, &u).and_then(|s| s.user.role).map(|r| r.slug),
        Some("member".into())
    );
    let group = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Admins",
        "members": [{"value": u}]});
    let seq = env.last_seq();
    let r = env
        .send(
            "POST",
            &format!("{b}/Groups"),
            t,
            Some(&group.to_string()),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let ev = env.events_after(seq);
    let kinds: Vec<&str> = ev.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "dsync.group.created",
            "dsync.group.user_added",
            "dsync.user.updated"
        ]
    );
    assert_eq!(ev[2].1["role"], json!({"slug": "admin"}));
    assert_eq!(
        ev[2].1["previous_attributes"]["role"],
        json!({"slug": "member"})
    );
}
