//! Active Directory pull sync end to end (issue 7): a real Samba AD DC on loopback, the real
//! `idbridge` binary configured from the file alone (an `[[ldap_directories]]` entry of the
//! `active_directory` flavor), and every result checked through the WorkOS API and the Events
//! API: objectGUID ids, disabled accounts, nested groups, a 1,600-member group (ranged
//! retrieval of `member`), a uSNChanged delta (disable, add, rename) and a stopped server
//! (the run fails, nothing changes). crates/ldap/tests/samba_ad.rs checks the same domain
//! through the engine; this test checks what an application sees.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::{ensure, Context};
use idbridge_testkit::samba::{ad_user_ldif, AD_ADMIN, AD_BASE, AD_URL};
use idbridge_testkit::SambaDc;
use idbridge_tests::directory_api::{
    all_pages, count, emails_of, events, member_emails, sync, users_by_email,
};
use idbridge_tests::TestServer;

const BULK: usize = 1600;

fn seed() -> String {
    let corp = format!("OU=Corp,{AD_BASE}");
    let bulk = format!("OU=Bulk,{corp}");
    let mut ldif = format!(
        "dn: {corp}\nobjectClass: organizationalUnit\nou: Corp\n\n\
         dn: {bulk}\nobjectClass: organizationalUnit\nou: Bulk\n\n"
    );
    for cn in ["alice", "bob", "carol"] {
        ldif.push_str(&ad_user_ldif(cn, &corp, 544));
    }
    ldif.push_str(&ad_user_ldif("dave", &corp, 546));
    for i in 0..BULK {
        ldif.push_str(&ad_user_ldif(&format!("b{i:04}"), &bulk, 544));
    }
    ldif.push_str(&format!(
        "dn: CN=eng,{corp}\nobjectClass: group\nsAMAccountName: eng\nmember: CN=alice,{corp}\n\n\
         dn: CN=staff,{corp}\nobjectClass: group\nsAMAccountName: staff\n\
         member: CN=eng,{corp}\nmember: CN=bob,{corp}\n\n\
         dn: CN=big,{corp}\nobjectClass: group\nsAMAccountName: big\n"
    ));
    for i in 0..BULK {
        ldif.push_str(&format!("member: CN=b{i:04},{bulk}\n"));
    }
    ldif.push('\n');
    ldif
}

#[tokio::test]
async fn active_directory_through_the_workos_api() -> anyhow::Result<()> {
    let corp = format!("OU=Corp,{AD_BASE}");
    let mut dc = SambaDc::start(&seed())?;
    let pw = dc.password_file()?;
    let config = format!(
        r#"
[[organizations]]
external_id = "acme"
name = "Acme"
domains = ["example.test"]

[[directories]]
key = "corp-ad"
organization = "acme"
name = "Corp AD"
type = "ldap"

[[ldap_directories]]
directory = "corp-ad"
full_sync_interval_secs = 3600
delta_sync_interval_secs = 3600
[ldap_directories.ldap]
url = "{AD_URL}"
allow_plain = true
flavor = "active_directory"
bind_dn = "{AD_ADMIN}"
bind_password_file = "{pw}"
user_base_dns = ["{corp}"]
group_base_dns = ["{corp}"]
[ldap_directories.ldap.timeouts]
connect_secs = 3
operation_secs = 20
"#,
        pw = pw.display()
    );
    let server = TestServer::builder().config_toml(config).start().await?;
    let dirs = all_pages(&server, "/directories").await?;
    let dir_id = dirs
        .iter()
        .find(|d| d["name"] == "Corp AD")
        .and_then(|d| d["id"].as_str())
        .with_context(|| format!("declared directory missing: {dirs:?}"))?
        .to_owned();

    let rec = sync(&server, &dir_id, "full").await?;
    ensure!(rec["ok"] == true, "full sync failed: {rec}");
    ensure!(rec["users_read"] == BULK as u64 + 4, "{rec}");

    // Users: the disabled account is not a directory user; ids are objectGUIDs.
    let users = users_by_email(&server, &format!("directory={dir_id}")).await?;
    ensure!(users.len() == BULK + 3, "{} users", users.len());
    ensure!(
        !users.contains_key("dave@example.test"),
        "disabled dave listed"
    );
    let alice = &users["alice@example.test"];
    ensure!(
        alice["first_name"] == "alice"
            && alice["last_name"] == "Tester"
            && alice["state"] == "active",
        "{alice}"
    );
    let guid = alice["idp_id"].as_str().context("idp_id")?;
    ensure!(
        guid.len() == 36 && guid.chars().filter(|c| *c == '-').count() == 4,
        "objectGUID as a canonical GUID: {guid}"
    );
    let found = dc.search(AD_BASE, "sub", "(sAMAccountName=alice)", &["objectGUID"])?;
    ensure!(
        found.contains("objectGUID::"),
        "ldapsearch shows alice's objectGUID: {found}"
    );

    // Groups: nested membership resolved, and every member of the ranged group.
    let groups = all_pages(&server, &format!("/directory_groups?directory={dir_id}")).await?;
    ensure!(groups.len() == 3, "groups: {groups:?}");
    let group_id = |name: &str| -> anyhow::Result<String> {
        groups
            .iter()
            .find(|g| g["name"] == name)
            .and_then(|g| g["id"].as_str())
            .map(str::to_owned)
            .with_context(|| format!("group {name} missing: {groups:?}"))
    };
    let (eng, staff, big) = (group_id("eng")?, group_id("staff")?, group_id("big")?);
    ensure!(member_emails(&server, &eng).await? == ["alice@example.test"]);
    ensure!(
        member_emails(&server, &staff).await? == ["alice@example.test", "bob@example.test"],
        "staff holds eng (nested) and bob"
    );
    let big_members = member_emails(&server, &big).await?;
    ensure!(
        big_members.len() == BULK,
        "a >1,500-member group read whole (ranged retrieval): {}",
        big_members.len()
    );

    let initial = events(&server, "dsync.user.created,dsync.group.created").await?;
    ensure!(count(&initial, "dsync.user.created") == BULK + 3);
    ensure!(count(&initial, "dsync.group.created") == 3);

    // A delta (uSNChanged): bob disabled, erin added, carol's given name changed.
    dc.modify(
        &format!(
            "dn: CN=bob,{corp}\nchangetype: modify\nreplace: userAccountControl\n\
             userAccountControl: 546\n\n\
             dn: CN=carol,{corp}\nchangetype: modify\nreplace: givenName\ngivenName: Caroline\n\n"
        ),
        false,
    )?;
    dc.modify(&ad_user_ldif("erin", &corp, 544), true)?;
    let rec = sync(&server, &dir_id, "delta").await?;
    ensure!(rec["ok"] == true && rec["kind"] == "delta", "delta: {rec}");
    ensure!(
        rec["users_read"].as_u64().is_some_and(|n| n <= 5),
        "a delta reads the changed users only: {rec}"
    );
    let users = users_by_email(&server, &format!("directory={dir_id}")).await?;
    ensure!(
        !users.contains_key("bob@example.test"),
        "disabled bob still listed"
    );
    ensure!(users.contains_key("erin@example.test"), "erin missing");
    ensure!(users["carol@example.test"]["first_name"] == "Caroline");
    ensure!(member_emails(&server, &staff).await? == ["alice@example.test"]);
    let later = events(
        &server,
        "dsync.user.deleted,dsync.user.updated,dsync.user.created",
    )
    .await?;
    ensure!(
        emails_of(&later, "dsync.user.deleted") == ["bob@example.test"],
        "{later:?}"
    );
    let carol = later
        .iter()
        .find(|e| e["event"] == "dsync.user.updated" && e["data"]["email"] == "carol@example.test")
        .with_context(|| format!("no dsync.user.updated for carol: {later:?}"))?;
    ensure!(
        carol["data"]["previous_attributes"]["first_name"] == "carol",
        "{carol}"
    );
    ensure!(emails_of(&later, "dsync.user.created").contains(&"erin@example.test".to_owned()));

    // The DC goes away: runs fail, say so, and change nothing.
    let before = users_by_email(&server, &format!("directory={dir_id}")).await?;
    let events_before = events(&server, "dsync.user.deleted,dsync.group.deleted").await?;
    dc.stop();
    for kind in ["full", "delta"] {
        let rec = sync(&server, &dir_id, kind).await?;
        ensure!(
            rec["ok"] == false && rec["error"].as_str().is_some_and(|e| !e.is_empty()),
            "a run against a stopped server must fail: {rec}"
        );
    }
    let after = users_by_email(&server, &format!("directory={dir_id}")).await?;
    ensure!(
        after.keys().eq(before.keys()),
        "users changed while the server was down"
    );
    let events_after = events(&server, "dsync.user.deleted,dsync.group.deleted").await?;
    ensure!(
        events_after.len() == events_before.len(),
        "deletions while the server was down"
    );
    Ok(())
}
