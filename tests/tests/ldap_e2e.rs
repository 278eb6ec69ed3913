//! LDAP pull sync end to end (issue 7): a real `slapd` on loopback, the real `idbridge` binary
//! configured from the file alone (a declared organization, a `[[directories]]` entry of type
//! `ldap`, an `[[ldap_directories]]` entry naming it by key), and every result checked the way
//! a customer's application sees it: the WorkOS API (`/directories`, `/directory_users`,
//! `/directory_groups`) and the Events API, and at the end through the official Node SDK
//! (tests/js/ldap_directory.test.mjs). Runs are triggered with
//! `POST /admin/directories/{id}/sync`; the intervals are long so no scheduled run interferes
//! after the start-up one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use anyhow::{ensure, Context};
use idbridge_tests::api::capture;
use idbridge_tests::directory_api::{
    all_pages, count, emails_of, events, get, member_emails, sync, users_by_email,
};
use idbridge_tests::{
    ldap_group, ldap_person, run_node_test, Slapd, TestServer, LDAP_ADMIN_DN, LDAP_SUFFIX,
};
use serde_json::json;

/// Tests in tests/js/ldap_directory.test.mjs that must pass (a file that lost its tests fails).
const NODE_TESTS: u32 = 4;

#[tokio::test]
async fn ldap_directory_through_the_workos_api() -> anyhow::Result<()> {
    let slapd = Slapd::start()?;
    let mut tree = String::new();
    for (uid, given, sn) in [
        ("alice", "Alice", "Archer"),
        ("bob", "Bob", "Baker"),
        ("carol", "Carol", "Cook"),
        ("dave", "Dave", "Dyer"),
    ] {
        tree.push_str(&ldap_person(uid, given, sn));
    }
    tree.push_str(&ldap_group("engineering", &["alice", "bob", "dave"]));
    tree.push_str(&ldap_group("admins", &["alice", "carol"]));
    slapd.add(&tree)?;
    let uuids: BTreeMap<String, String> = slapd
        .search(
            &format!("ou=People,{LDAP_SUFFIX}"),
            "(objectClass=inetOrgPerson)",
            &["uid", "entryUUID"],
        )?
        .into_iter()
        .filter_map(|attrs| {
            let get = |k: &str| attrs.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
            Some((format!("{}@example.test", get("uid")?), get("entryUUID")?))
        })
        .collect();
    ensure!(uuids.len() == 4, "entryUUIDs from ldapsearch: {uuids:?}");

    let pw = slapd.password_file()?;
    let config = format!(
        r#"
[[organizations]]
external_id = "acme"
name = "Acme"
domains = ["example.test"]

[[directories]]
key = "corp-ldap"
organization = "acme"
name = "Corp LDAP"
type = "ldap"

[[ldap_directories]]
directory = "corp-ldap"
full_sync_interval_secs = 3600
delta_sync_interval_secs = 3600
[ldap_directories.ldap]
url = "{url}"
allow_plain = true
flavor = "openldap"
bind_dn = "{LDAP_ADMIN_DN}"
bind_password_file = "{pw}"
user_base_dns = ["ou=People,{LDAP_SUFFIX}"]
group_base_dns = ["ou=Groups,{LDAP_SUFFIX}"]
[ldap_directories.ldap.timeouts]
connect_secs = 3
operation_secs = 5
"#,
        url = slapd.url(),
        pw = pw.display()
    );
    let server = TestServer::builder().config_toml(config).start().await?;

    // The declared directory exists, named by the config file alone.
    let dirs = all_pages(&server, "/directories").await?;
    let dir = dirs
        .iter()
        .find(|d| d["name"] == "Corp LDAP")
        .with_context(|| format!("declared directory missing: {dirs:?}"))?;
    let dir_id = dir["id"].as_str().context("directory id")?.to_owned();
    ensure!(dir["type"] == "ldap", "directory type: {dir}");

    // Initial sync (the start-up run, or this one when it comes first: same end state).
    let rec = sync(&server, &dir_id, "full").await?;
    ensure!(rec["ok"] == true, "full sync failed: {rec}");
    ensure!(rec["users_read"] == 4 && rec["groups_read"] == 2, "{rec}");

    let dir = get(&server, &format!("/directories/{dir_id}")).await?;
    ensure!(
        dir["state"] == "linked",
        "directory not linked after a sync: {dir}"
    );

    let users = users_by_email(&server, &format!("directory={dir_id}")).await?;
    ensure!(
        users.keys().cloned().collect::<Vec<_>>()
            == [
                "alice@example.test",
                "bob@example.test",
                "carol@example.test",
                "dave@example.test"
            ],
        "users: {users:?}"
    );
    for (email, u) in &users {
        ensure!(
            u["object"] == "directory_user" && u["directory_id"] == dir_id.as_str(),
            "{u}"
        );
        ensure!(u["state"] == "active", "{email} not active: {u}");
        ensure!(
            u["idp_id"].as_str() == uuids.get(email).map(String::as_str),
            "{email}: idp_id {} is not the entryUUID {:?}",
            u["idp_id"],
            uuids.get(email)
        );
        ensure!(
            u["organization_id"]
                .as_str()
                .is_some_and(|o| o.starts_with("org_")),
            "{u}"
        );
    }
    let bob = &users["bob@example.test"];
    ensure!(
        bob["first_name"] == "Bob" && bob["last_name"] == "Baker",
        "{bob}"
    );

    let groups = all_pages(&server, &format!("/directory_groups?directory={dir_id}")).await?;
    let group_id = |name: &str| -> anyhow::Result<String> {
        groups
            .iter()
            .find(|g| g["name"] == name)
            .and_then(|g| g["id"].as_str())
            .map(str::to_owned)
            .with_context(|| format!("group {name} missing: {groups:?}"))
    };
    ensure!(groups.len() == 2, "groups: {groups:?}");
    let eng = group_id("engineering")?;
    let admins = group_id("admins")?;
    ensure!(
        member_emails(&server, &eng).await?
            == [
                "alice@example.test",
                "bob@example.test",
                "dave@example.test"
            ]
    );
    ensure!(member_emails(&server, &admins).await? == ["alice@example.test", "carol@example.test"]);
    // The other direction: a user's groups.
    let alice_id = users["alice@example.test"]["id"].as_str().context("id")?;
    let alice_groups = all_pages(&server, &format!("/directory_groups?user={alice_id}")).await?;
    ensure!(alice_groups.len() == 2, "alice's groups: {alice_groups:?}");

    let initial = events(
        &server,
        "dsync.activated,dsync.user.created,dsync.group.created,dsync.group.user_added",
    )
    .await?;
    ensure!(count(&initial, "dsync.activated") == 1, "{initial:?}");
    ensure!(
        emails_of(&initial, "dsync.user.created")
            == [
                "alice@example.test",
                "bob@example.test",
                "carol@example.test",
                "dave@example.test"
            ],
        "{initial:?}"
    );
    ensure!(count(&initial, "dsync.group.created") == 2, "{initial:?}");
    ensure!(
        count(&initial, "dsync.group.user_added") == 5,
        "{initial:?}"
    );
    let added = initial
        .iter()
        .find(|e| e["event"] == "dsync.group.user_added")
        .context("user_added")?;
    ensure!(
        added["data"]["directory_id"] == dir_id.as_str()
            && added["data"]["user"]["object"] == "directory_user"
            && added["data"]["group"]["object"] == "directory_group",
        "{added}"
    );

    // A rename through a delta run.
    slapd.modify(
        &format!(
            "dn: uid=bob,ou=People,{LDAP_SUFFIX}\nchangetype: modify\nreplace: givenName\n\
             givenName: Robert\n-\n"
        ),
        false,
    )?;
    let rec = sync(&server, &dir_id, "delta").await?;
    ensure!(
        rec["ok"] == true && rec["kind"] == "delta",
        "delta sync: {rec}"
    );
    let bob = &users_by_email(&server, &format!("directory={dir_id}")).await?["bob@example.test"];
    ensure!(bob["first_name"] == "Robert", "rename not applied: {bob}");
    let updated = events(&server, "dsync.user.updated").await?;
    let bob_update = updated
        .iter()
        .find(|e| e["data"]["email"] == "bob@example.test")
        .with_context(|| format!("no dsync.user.updated for bob: {updated:?}"))?;
    ensure!(
        bob_update["data"]["first_name"] == "Robert"
            && bob_update["data"]["previous_attributes"]["first_name"] == "Bob",
        "{bob_update}"
    );

    // A deletion and a membership removal: one of four users is above the default 10% guard,
    // so the full run applies nothing until an admin confirms.
    slapd.modify(
        &format!(
            "dn: uid=dave,ou=People,{LDAP_SUFFIX}\nchangetype: delete\n\n\
             dn: cn=admins,ou=Groups,{LDAP_SUFFIX}\nchangetype: modify\ndelete: member\n\
             member: uid=carol,ou=People,{LDAP_SUFFIX}\n-\n"
        ),
        false,
    )?;
    let refused = sync(&server, &dir_id, "full").await?;
    ensure!(
        refused["ok"] == false
            && refused["error"]
                .as_str()
                .is_some_and(|e| e.contains("confirm")),
        "expected the mass-deletion guard to stop the run: {refused}"
    );
    ensure!(
        users_by_email(&server, &format!("directory={dir_id}"))
            .await?
            .contains_key("dave@example.test"),
        "a refused run deleted a user"
    );
    ensure!(
        member_emails(&server, &admins).await? == ["alice@example.test", "carol@example.test"],
        "a refused run changed a membership"
    );
    let state = get(&server, &format!("/admin/directories/{dir_id}/sync")).await?;
    ensure!(state["pending_guard"]["would_delete"] == 1, "{state}");
    let resp = capture(server.post(&format!("/admin/directories/{dir_id}/sync/confirm"))).await?;
    resp.expect_json(200)?;
    let rec = sync(&server, &dir_id, "full").await?;
    ensure!(rec["ok"] == true, "confirmed full sync failed: {rec}");

    let users = users_by_email(&server, &format!("directory={dir_id}")).await?;
    ensure!(
        users.keys().cloned().collect::<Vec<_>>()
            == [
                "alice@example.test",
                "bob@example.test",
                "carol@example.test"
            ],
        "after the deletion: {users:?}"
    );
    ensure!(member_emails(&server, &admins).await? == ["alice@example.test"]);
    ensure!(member_emails(&server, &eng).await? == ["alice@example.test", "bob@example.test"]);
    let later = events(&server, "dsync.user.deleted,dsync.group.user_removed").await?;
    ensure!(
        emails_of(&later, "dsync.user.deleted") == ["dave@example.test"],
        "{later:?}"
    );
    let removed: Vec<(&str, &str)> = later
        .iter()
        .filter(|e| e["event"] == "dsync.group.user_removed")
        .filter_map(|e| {
            Some((
                e["data"]["group"]["name"].as_str()?,
                e["data"]["user"]["email"].as_str()?,
            ))
        })
        .collect();
    ensure!(
        removed.contains(&("admins", "carol@example.test")),
        "no dsync.group.user_removed for carol in admins: {later:?}"
    );
    ensure!(
        !removed
            .iter()
            .any(|(_, u)| *u != "carol@example.test" && *u != "dave@example.test"),
        "unexpected removals: {removed:?}"
    );
    // Still exactly one activation.
    ensure!(
        count(
            &events(&server, "dsync.activated").await?,
            "dsync.activated"
        ) == 1
    );

    // The same end state through the official Node SDK.
    let mut remaining = uuids.clone();
    remaining.remove("dave@example.test");
    let mut env = server.peer_env();
    env.push(("IDBRIDGE_LDAP_DIRECTORY_ID".into(), dir_id.clone()));
    env.push((
        "IDBRIDGE_LDAP_UUIDS".into(),
        serde_json::to_string(&remaining)?,
    ));
    let report = run_node_test("ldap_directory.test.mjs", env).await?;
    if report.ran() {
        ensure!(
            report.passed >= NODE_TESTS,
            "expected {NODE_TESTS} node tests to pass, {} did:\n{}",
            report.passed,
            report.output
        );
    }
    Ok(())
}

/// The trigger endpoint answers 404 for directories that are not LDAP ones, and needs the key.
#[tokio::test]
async fn sync_trigger_is_only_for_ldap_directories() -> anyhow::Result<()> {
    let server = TestServer::builder()
        .config_toml(
            "[[organizations]]\nexternal_id = \"acme\"\nname = \"Acme\"\n\n\
             [[directories]]\nkey = \"okta\"\norganization = \"acme\"\nname = \"Okta\"\n\
             type = \"okta scim v2.0\"\n",
        )
        .start()
        .await?;
    let dirs = all_pages(&server, "/directories").await?;
    let scim = dirs
        .iter()
        .find(|d| d["name"] == "Okta")
        .and_then(|d| d["id"].as_str())
        .with_context(|| format!("{dirs:?}"))?
        .to_owned();
    for path in [
        format!("/admin/directories/{scim}/sync"),
        "/admin/directories/directory_01HZZZZZZZZZZZZZZZZZZZZZZZ/sync".to_owned(),
    ] {
        let resp = capture(server.post(&path).json(&json!({"kind": "full"}))).await?;
        resp.expect_conventions()?;
        resp.expect_error(404, Some("entity_not_found"))?;
    }
    let resp = capture(
        server
            .http()
            .post(server.endpoint(&format!("/admin/directories/{scim}/sync")))
            .json(&json!({"kind": "full"})),
    )
    .await?;
    ensure!(resp.status == 401, "without the key: {}", resp.status);
    let resp = capture(
        server
            .post(&format!("/admin/directories/{scim}/sync"))
            .json(&json!({"kind": "sideways"})),
    )
    .await?;
    resp.expect_invalid_field("kind")?;
    Ok(())
}
