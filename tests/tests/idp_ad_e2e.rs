//! idbridge as an IdP in directory mode against a real **Samba AD DC** (issue 16): the DC on
//! loopback (idbridge-testkit's `SambaDc`, as in ad_e2e.rs), idbridge syncing it as an
//! `active_directory` `[[ldap_directories]]` source, and a service provider registered by
//! entity id and ACS that allows IdP-initiated logins. The login page binds as the user against
//! the DC:
//! - the right password (by sAMAccountName, by userPrincipalName, and as `EXAMPLE\user`) gives
//!   a signed assertion whose `id` is the user's objectGUID and whose `groups` are the user's
//!   AD groups (nested membership resolved);
//! - a wrong password, a disabled account (userAccountControl 546, with the right password)
//!   and an unknown user are refused with one message and no assertion;
//! - five failures trip the account's attempt limit (429 even for the right password).
//!
//! The DC speaks plain LDAP on loopback here (`allow_plain`); LDAPS/StartTLS to AD are covered
//! by crates/ldap's own tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::{ensure, Context};
use base64::Engine as _;
use idbridge_testkit::samba::{ad_user_ldif, AD_ADMIN, AD_BASE, AD_URL};
use idbridge_testkit::SambaDc;
use idbridge_tests::directory_api::{all_pages, events, sync, users_by_email};
use idbridge_tests::login_page::{form_action, input, log_in_through_page};
use idbridge_tests::TestServer;
use serde_json::{json, Value};

const BAD_CREDENTIALS: &str = "The username or password is incorrect.";
const SP_ENTITY: &str = "https://app.example.test/saml";
const SP_ACS: &str = "https://app.example.test/saml/acs";

/// An AD user with a password (`unicodePwd`: the quoted password in UTF-16LE, loaded offline).
fn user_with_password(cn: &str, ou: &str, uac: u32, password: &str) -> String {
    let quoted: Vec<u8> = format!("\"{password}\"")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let mut ldif = ad_user_ldif(cn, ou, uac);
    ldif.truncate(ldif.trim_end().len());
    ldif.push_str(&format!(
        "\nunicodePwd:: {}\n\n",
        base64::engine::general_purpose::STANDARD.encode(quoted)
    ));
    ldif
}

fn password(cn: &str) -> String {
    format!("{cn}-Pw-2026!")
}

/// Starts an IdP-initiated login at `sp` and posts `login`/`password` on the login page:
/// (status, page).
async fn log_in(
    a: &TestServer,
    org: &str,
    sp: &str,
    login: &str,
    pw: &str,
) -> anyhow::Result<(u16, String)> {
    let start = format!("{}/idp/{org}/saml/start?sp={sp}&RelayState=rs-1", a.url());
    let r = log_in_through_page(a.url(), &start, login, pw).await?;
    Ok((r.status().as_u16(), r.text().await?))
}

/// The values of the assertion attribute `name` in a (signed, unencrypted) Response.
fn attribute_values(xml: &str, name: &str) -> Vec<String> {
    let marker = format!("Name=\"{name}\"");
    let Some(at) = xml.find(&marker) else {
        return Vec::new();
    };
    let rest = &xml[at..];
    let end = rest.find("Attribute>").unwrap_or(rest.len());
    rest[..end]
        .split("<saml:AttributeValue")
        .skip(1)
        .filter_map(|part| {
            let (_, value) = part.split_once('>')?;
            Some(value.split("</saml:AttributeValue>").next()?.to_owned())
        })
        .collect()
}

#[tokio::test]
async fn directory_mode_against_samba_ad() -> anyhow::Result<()> {
    let corp = format!("OU=Corp,{AD_BASE}");
    let mut seed = format!("dn: {corp}\nobjectClass: organizationalUnit\nou: Corp\n\n");
    for (cn, uac) in [("alice", 544), ("bob", 544), ("dave", 546)] {
        seed.push_str(&user_with_password(cn, &corp, uac, &password(cn)));
    }
    seed.push_str(&format!(
        "dn: CN=eng,{corp}\nobjectClass: group\nsAMAccountName: eng\nmember: CN=alice,{corp}\n\n\
         dn: CN=staff,{corp}\nobjectClass: group\nsAMAccountName: staff\n\
         member: CN=eng,{corp}\nmember: CN=bob,{corp}\n\n"
    ));
    let dc = SambaDc::start(&seed)?;
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
    let a = TestServer::builder().config_toml(config).start().await?;
    let dirs = all_pages(&a, "/directories").await?;
    let dir = dirs
        .iter()
        .find(|d| d["name"] == "Corp AD")
        .context("declared directory")?;
    let dir_id = dir["id"].as_str().unwrap().to_owned();
    let org = dir["organization_id"].as_str().unwrap().to_owned();
    let rec = sync(&a, &dir_id, "full").await?;
    ensure!(rec["ok"] == true, "sync: {rec}");
    let users = users_by_email(&a, &format!("directory={dir_id}")).await?;
    let guid = users["alice@example.test"]["idp_id"]
        .as_str()
        .context("alice's objectGUID")?
        .to_owned();
    ensure!(guid.len() == 36, "objectGUID as a GUID: {guid}");

    let r = a
        .post("/admin/service_providers")
        .json(
            &json!({"organization_id": org, "entity_id": SP_ENTITY, "acs_urls": [SP_ACS],
            "name": "App", "directory_id": dir_id, "allow_idp_initiated": true}),
        )
        .send()
        .await?;
    let status = r.status();
    let sp: Value = r.json().await?;
    ensure!(status == 201, "SP: {sp}");
    let sp_id = sp["id"].as_str().unwrap().to_owned();

    // Refused with one message and no assertion: a wrong password, the disabled account with
    // its right password, an unknown user.
    for (login, pw) in [
        ("alice", "wrong-Pw-1!".to_owned()),
        ("dave", password("dave")),
        ("nobody", "whatever-Pw-1!".to_owned()),
        ("nobody@example.test", password("alice")),
    ] {
        let (status, body) = log_in(&a, &org, &sp_id, login, &pw).await?;
        ensure!(status == 401, "{login}: {status}: {body}");
        ensure!(body.contains(BAD_CREDENTIALS), "{login}: {body}");
        ensure!(!body.contains("SAMLResponse"), "{login}: an assertion");
    }

    // The right password, by sAMAccountName, userPrincipalName and DOMAIN\user.
    for login in ["alice", "alice@example.test", "EXAMPLE\\alice"] {
        let (status, body) = log_in(&a, &org, &sp_id, login, &password("alice")).await?;
        ensure!(status == 200, "{login}: {status}: {body}");
        ensure!(form_action(&body).as_deref() == Some(SP_ACS), "{body}");
        let xml = base64::engine::general_purpose::STANDARD
            .decode(input(&body, "SAMLResponse").context("SAMLResponse")?)?;
        let xml = String::from_utf8(xml)?;
        ensure!(xml.contains("<ds:SignatureValue>"), "unsigned: {xml}");
        let id = attribute_values(&xml, "id");
        ensure!(
            id.len() == 1 && id[0].eq_ignore_ascii_case(&guid),
            "id {id:?} is not alice's objectGUID {guid}"
        );
        ensure!(
            attribute_values(&xml, "email") == ["alice@example.test"],
            "{xml}"
        );
        let mut groups = attribute_values(&xml, "groups");
        groups.sort();
        ensure!(groups == ["eng", "staff"], "AD groups: {groups:?}");
    }

    // The attempt limit: five failures for bob, then even his right password waits.
    for _ in 0..5 {
        let (status, _) = log_in(&a, &org, &sp_id, "bob", "nope-Pw-1!").await?;
        ensure!(status == 401);
    }
    let (status, body) = log_in(&a, &org, &sp_id, "bob", &password("bob")).await?;
    ensure!(status == 429, "{status}: {body}");
    ensure!(
        body.contains("Too many failed sign-in attempts") && !body.contains("SAMLResponse"),
        "{body}"
    );

    // The reasons are told apart in A's own events (never on the page).
    let evs = events(&a, "idp.login_failed").await?;
    let reasons: Vec<&str> = evs
        .iter()
        .filter_map(|e| e["data"]["reason"].as_str())
        .collect();
    for r in ["bad_password", "no_such_user", "disabled", "attempt_limit"] {
        ensure!(reasons.contains(&r), "no {r} in {reasons:?}");
    }
    drop(dc);
    Ok(())
}
