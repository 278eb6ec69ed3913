//! LDAP/AD and SFTP directories configured through the admin API while the real `idbridge
//! serve` runs (issue 19), against real peers: OpenLDAP `slapd` and OpenSSH's `sftp` client.
//! Every change takes effect without a restart: a changed base DN is used by the next sync, a
//! removed SFTP key is refused at once, a new account logs in at once. Also: the same
//! directories declared in the config file work with `idbridge directory sync|import <key>`
//! before the first start, and each SFTP push directory keeps its own `max_delete_ratio`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use idbridge_tests::api::capture;
use idbridge_tests::directory_api::{sync, users_by_email};
use idbridge_tests::{
    free_port, ldap_person, Slapd, TestServer, LDAP_ADMIN_DN, LDAP_ADMIN_PW, LDAP_SUFFIX,
};
use serde_json::{json, Value};

async fn create_org(server: &TestServer) -> anyhow::Result<String> {
    let r = capture(server.post("/organizations").json(&json!({"name": "Acme"}))).await?;
    Ok(r.expect_json(201)?["id"]
        .as_str()
        .context("org id")?
        .to_owned())
}

async fn create_directory(server: &TestServer, org: &str, ty: &str) -> anyhow::Result<String> {
    let r = capture(server.post("/admin/directories").json(&json!({
        "organization_id": org, "name": format!("{ty} dir"), "type": ty,
    })))
    .await?;
    Ok(r.expect_json(201)?["directory"]["id"]
        .as_str()
        .context("directory id")?
        .to_owned())
}

fn bin(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("`{name}` is not installed (scripts/test-deps.d: openssh-client)");
}

fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = Command::new(bin("ssh-keygen"))
        .args(["-q", "-N", "", "-C", name, "-t", "ed25519", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh-keygen: {out:?}");
    let public = std::fs::read_to_string(format!("{}.pub", path.display())).unwrap();
    (path, public.trim().to_owned())
}

/// Runs an OpenSSH `sftp` batch as `user` with `key` from `work`.
fn sftp(port: u16, user: &str, key: &Path, work: &Path, batch: &str) -> Output {
    let file = work.join("batch.txt");
    std::fs::write(&file, batch).unwrap();
    Command::new(bin("sftp"))
        .current_dir(work)
        .arg("-b")
        .arg(&file)
        .arg("-i")
        .arg(key)
        .args(["-P", &port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("{user}@127.0.0.1"))
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn users_csv(n: u32) -> String {
    let mut s = String::from("user_id,first_name,last_name,email\n");
    for i in 1..=n {
        s.push_str(&format!("e{i},F{i},L{i},e{i}@foo-corp.com\n"));
    }
    s
}

/// Uploads users.csv and waits until the directory has one more delivery; returns it.
async fn deliver(
    server: &TestServer,
    dir: &str,
    port: u16,
    user: &str,
    key: &Path,
    work: &Path,
    csv: &str,
) -> anyhow::Result<Value> {
    let before = deliveries(server, dir).await?.len();
    std::fs::write(work.join("users.csv"), csv)?;
    let out = sftp(port, user, key, work, "put users.csv\n");
    ensure!(out.status.success(), "upload as {user}: {}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = deliveries(server, dir).await?;
        if list.len() > before {
            return Ok(list[0].clone());
        }
        if Instant::now() > deadline {
            bail!("no delivery recorded for {dir}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn deliveries(server: &TestServer, dir: &str) -> anyhow::Result<Vec<Value>> {
    let r = capture(server.get(&format!("/admin/directories/{dir}/deliveries?limit=100"))).await?;
    Ok(r.expect_json(200)?["data"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

#[tokio::test]
async fn ldap_directory_configured_live_through_the_admin_api() -> anyhow::Result<()> {
    let slapd = Slapd::start()?;
    let mut tree = String::new();
    for (uid, given, sn) in [("alice", "Alice", "A"), ("bob", "Bob", "B")] {
        tree.push_str(&ldap_person(uid, given, sn));
    }
    tree.push_str(&format!(
        "dn: uid=frank,ou=Former,{LDAP_SUFFIX}\nobjectClass: inetOrgPerson\nuid: frank\n\
         cn: Frank F\ngivenName: Frank\nsn: F\nmail: frank@example.test\n\n"
    ));
    slapd.add(&tree)?;
    let server = TestServer::start().await?;
    let org = create_org(&server).await?;
    let dir = create_directory(&server, &org, "ldap").await?;
    let feed = format!("/admin/directories/{dir}/feed");

    // No feed yet: a sync is refused with a pointer to the API.
    let r = capture(
        server
            .post(&format!("/admin/directories/{dir}/sync"))
            .json(&json!({})),
    )
    .await?;
    r.expect_error(409, Some("sync_not_configured"))?;

    // Unknown fields are named, at any depth; nothing is stored.
    let base = json!({
        "full_sync_interval_secs": 3600,
        "delta_sync_interval_secs": 3600,
        "ldap": {
            "url": slapd.url(),
            "allow_plain": true,
            "bind_dn": LDAP_ADMIN_DN,
            "bind_password": LDAP_ADMIN_PW,
            "user_base_dns": [format!("ou=People,{LDAP_SUFFIX}")],
            "group_base_dns": [format!("ou=Groups,{LDAP_SUFFIX}")],
            "max_delete_ratio": 1.0,
            "timeouts": {"connect_secs": 3, "operation_secs": 5},
        },
    });
    let mut typo = base.clone();
    typo["ldap"]["user_base_dn"] = json!("x");
    capture(server.put(&feed).json(&typo))
        .await?
        .expect_invalid_field("ldap.user_base_dn")?;
    let mut typo = base.clone();
    typo["shedule"] = json!(1);
    capture(server.put(&feed).json(&typo))
        .await?
        .expect_invalid_field("shedule")?;
    // A bad value says why (clear text refused).
    let mut plain = base.clone();
    plain["ldap"]["allow_plain"] = json!(false);
    capture(server.put(&feed).json(&plain))
        .await?
        .expect_invalid_field("ldap")?;
    capture(server.get(&feed)).await?.expect_error(404, None)?;

    // Create: the secret is sealed and never echoed.
    let r = capture(server.put(&feed).json(&base)).await?;
    let v = r.expect_json(200)?;
    ensure!(
        !r.text.contains(LDAP_ADMIN_PW),
        "password echoed: {}",
        r.text
    );
    ensure!(
        v["settings"]["ldap"]["bind_password"] == json!({"set": true}),
        "{v}"
    );
    ensure!(
        v["origin"] == "api" && v["runtime"]["applied"] == true,
        "{v}"
    );
    let got = capture(server.get(&feed)).await?;
    ensure!(
        !got.text.contains(LDAP_ADMIN_PW),
        "password in GET: {}",
        got.text
    );
    ensure!(got.expect_json(200)?["settings"]["ldap"]["bind_password"]["set"] == true);
    // Not in the clear at rest either.
    let db = std::fs::read(server.data_dir().join("idbridge.sqlite3")).unwrap_or_default();
    ensure!(
        !db.windows(LDAP_ADMIN_PW.len() + 2)
            .any(|w| w == format!("\"{LDAP_ADMIN_PW}\"").as_bytes()),
        "bind password stored in the clear"
    );

    // The runner uses it at once: a sync reads the People base.
    let rec = sync(&server, &dir, "full").await?;
    ensure!(rec["ok"] == true, "sync failed: {rec}");
    let users = users_by_email(&server, &format!("directory={dir}")).await?;
    ensure!(
        users.keys().cloned().collect::<Vec<_>>() == ["alice@example.test", "bob@example.test"],
        "{users:?}"
    );

    // Change the base DN live (PATCH keeps the password): the next sync reads the new base.
    let r = capture(server.request(reqwest::Method::PATCH, &feed).json(&json!({
        "ldap": {"user_base_dns": [format!("ou=Former,{LDAP_SUFFIX}")]},
    })))
    .await?;
    let v = r.expect_json(200)?;
    ensure!(v["settings"]["ldap"]["bind_password"]["set"] == true, "{v}");
    let rec = sync(&server, &dir, "full").await?;
    ensure!(rec["ok"] == true, "sync after the change failed: {rec}");
    let users = users_by_email(&server, &format!("directory={dir}")).await?;
    ensure!(
        users.keys().cloned().collect::<Vec<_>>() == ["frank@example.test"],
        "the new base DN was not used: {users:?}"
    );

    // Stored, not just running: after a restart the API's feed is back (origin api) and syncs.
    let mut server = server;
    server.restart().await?;
    let got = capture(server.get(&feed)).await?;
    let v = got.expect_json(200)?;
    ensure!(
        v["origin"] == "api"
            && v["settings"]["ldap"]["user_base_dns"][0] == format!("ou=Former,{LDAP_SUFFIX}"),
        "{v}"
    );
    let rec = sync(&server, &dir, "full").await?;
    ensure!(rec["ok"] == true, "sync after a restart failed: {rec}");

    // A base DN gone wrong with the default guard: the sync stops; the admin reviews the
    // pending deletion through the one confirmation API and confirms it.
    capture(server.request(reqwest::Method::PATCH, &feed).json(&json!({
        "ldap": {"user_base_dns": [format!("ou=Empty,{LDAP_SUFFIX}")], "max_delete_ratio": 0.1},
    })))
    .await?
    .expect_json(200)?;
    let rec = sync(&server, &dir, "full").await?;
    ensure!(rec["ok"] == false, "the guard did not stop the run: {rec}");
    let pending = format!("/admin/directories/{dir}/pending_deletion");
    let p = capture(server.get(&pending)).await?;
    let v = p.expect_json(200)?;
    ensure!(
        v["kind"] == "ldap" && v["would_delete"] == 1 && v["total"] == 1,
        "{v}"
    );
    ensure!(
        v["sample"][0]["email"] == "frank@example.test",
        "the pending deletion does not list frank: {v}"
    );
    let c = capture(server.post(&format!("{pending}/confirm"))).await?;
    ensure!(c.expect_json(200)?["kind"] == "ldap", "{}", c.text);
    let rec = sync(&server, &dir, "full").await?;
    ensure!(rec["ok"] == true, "the confirmed run failed: {rec}");
    let users = users_by_email(&server, &format!("directory={dir}")).await?;
    ensure!(
        users.is_empty(),
        "confirmed deletion not applied: {users:?}"
    );
    capture(server.get(&pending))
        .await?
        .expect_error(404, None)?;
    capture(server.post(&format!("{pending}/confirm")))
        .await?
        .expect_error(409, Some("nothing_to_confirm"))?;
    capture(server.request(reqwest::Method::PATCH, &feed).json(&json!({
        "ldap": {"user_base_dns": [format!("ou=Former,{LDAP_SUFFIX}")], "max_delete_ratio": 1.0},
    })))
    .await?
    .expect_json(200)?;
    let rec = sync(&server, &dir, "full").await?;
    ensure!(rec["ok"] == true, "{rec}");

    // A wrong password through the API: the next sync fails (so it really is the one used).
    capture(server.request(reqwest::Method::PATCH, &feed).json(&json!({
        "ldap": {"bind_password": "wrong"},
    })))
    .await?
    .expect_json(200)?;
    let rec = sync(&server, &dir, "full").await?;
    ensure!(
        rec["ok"] == false,
        "a wrong bind password still synced: {rec}"
    );

    // Delete: the scheduler stops and a sync is refused again; the data stays.
    let r = capture(server.delete(&feed)).await?;
    ensure!(r.status == 204, "delete: {} {}", r.status, r.text);
    let r = capture(
        server
            .post(&format!("/admin/directories/{dir}/sync"))
            .json(&json!({})),
    )
    .await?;
    r.expect_error(409, Some("sync_not_configured"))?;
    let users = users_by_email(&server, &format!("directory={dir}")).await?;
    ensure!(users.len() == 1, "{users:?}");

    // A SCIM directory has no feed to configure.
    let scim = create_directory(&server, &org, "okta scim v2.0").await?;
    capture(
        server
            .put(&format!("/admin/directories/{scim}/feed"))
            .json(&base),
    )
    .await?
    .expect_error(409, Some("feed_not_supported"))?;
    Ok(())
}

#[tokio::test]
async fn sftp_accounts_and_keys_change_live_through_the_admin_api() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (key_a, pub_a) = keygen(tmp.path(), "a");
    let (key_b, pub_b) = keygen(tmp.path(), "b");
    let (key_c, pub_c) = keygen(tmp.path(), "c");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work)?;
    let port = free_port()?;
    let server = TestServer::builder()
        .config_toml(format!(
            "[sftp_server]\nlisten = \"127.0.0.1:{port}\"\ndebounce_ms = 200\n"
        ))
        .start()
        .await?;
    let org = create_org(&server).await?;
    let hr = create_directory(&server, &org, "sftp").await?;
    let feed = format!("/admin/directories/{hr}/feed");

    // A bad key is named; a password-less pull without a key too.
    capture(
        server
            .put(&feed)
            .json(&json!({"username": "acme-hr", "authorized_keys": ["ssh-rsa AAAA"]})),
    )
    .await?
    .expect_invalid_field("authorized_keys[0]")?;
    capture(
        server
            .put(&feed)
            .json(&json!({"username": "acme-hr", "authorized_keys": [pub_a], "max_delete": 1})),
    )
    .await?
    .expect_invalid_field("max_delete")?;

    // Created while the server runs: the account logs in at once (the SFTP server starts
    // with its first account).
    let r = capture(server.put(&feed).json(&json!({
        "username": "acme-hr", "authorized_keys": [pub_a], "max_delete_ratio": 1.0,
    })))
    .await?;
    let v = r.expect_json(200)?;
    ensure!(v["runtime"]["applied"] == true, "{v}");
    let d = deliver(&server, &hr, port, "acme-hr", &key_a, &work, &users_csv(3)).await?;
    ensure!(d["status"] == "applied", "{d}");

    // Key A replaced by key B: A is refused at once, B works.
    capture(
        server
            .request(reqwest::Method::PATCH, &feed)
            .json(&json!({"authorized_keys": [pub_b]})),
    )
    .await?
    .expect_json(200)?;
    let out = sftp(port, "acme-hr", &key_a, &work, "ls\n");
    ensure!(
        !out.status.success(),
        "removed key still logs in: {}",
        text(&out)
    );
    let d = deliver(&server, &hr, port, "acme-hr", &key_b, &work, &users_csv(1)).await?;
    // The directory's own ratio (1.0) lets 2 of 3 users go.
    ensure!(d["status"] == "applied", "{d}");

    // A second directory's account, added live, logs in at once; its username is its own.
    let payroll = create_directory(&server, &org, "sftp").await?;
    capture(
        server
            .put(&format!("/admin/directories/{payroll}/feed"))
            .json(&json!({
                "username": "acme-hr", "authorized_keys": [pub_c],
            })),
    )
    .await?
    .expect_error(409, Some("username_taken"))?;
    capture(
        server
            .put(&format!("/admin/directories/{payroll}/feed"))
            .json(&json!({
                "username": "acme-payroll", "authorized_keys": [pub_c],
            })),
    )
    .await?
    .expect_json(200)?;
    let d = deliver(
        &server,
        &payroll,
        port,
        "acme-payroll",
        &key_c,
        &work,
        &users_csv(2),
    )
    .await?;
    ensure!(d["status"] == "applied", "{d}");
    // Tenancy: key C does not open the HR account.
    let out = sftp(port, "acme-hr", &key_c, &work, "ls\n");
    ensure!(
        !out.status.success(),
        "key C opened acme-hr: {}",
        text(&out)
    );

    // Deleted: the account is refused at once; the other one still works.
    let r = capture(server.delete(&feed)).await?;
    ensure!(r.status == 204, "delete: {} {}", r.status, r.text);
    let out = sftp(port, "acme-hr", &key_b, &work, "ls\n");
    ensure!(
        !out.status.success(),
        "deleted account logs in: {}",
        text(&out)
    );
    let out = sftp(port, "acme-payroll", &key_c, &work, "ls\n");
    ensure!(out.status.success(), "{}", text(&out));
    // Deleting the directory takes its account with it.
    let r = capture(server.delete(&format!("/admin/directories/{payroll}"))).await?;
    ensure!(r.status == 202, "{} {}", r.status, r.text);
    let out = sftp(port, "acme-payroll", &key_c, &work, "ls\n");
    ensure!(
        !out.status.success(),
        "a deleted directory's account logs in: {}",
        text(&out)
    );
    Ok(())
}

/// Before the fix every push directory got the strictest ratio of all of them.
#[tokio::test]
async fn each_sftp_push_directory_keeps_its_own_max_delete_ratio() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (key_a, pub_a) = keygen(tmp.path(), "a");
    let (_key_b, pub_b) = keygen(tmp.path(), "b");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work)?;
    let port = free_port()?;
    let config = format!(
        r#"
[sftp_server]
listen = "127.0.0.1:{port}"
debounce_ms = 200

[[organizations]]
external_id = "acme"
name = "Acme"

[[directories]]
key = "lenient"
organization = "acme"
name = "Lenient"
type = "sftp"

[[directories]]
key = "strict"
organization = "acme"
name = "Strict"
type = "sftp"

[[sftp_directories]]
directory = "lenient"
username = "lenient"
authorized_keys = ["{pub_a}"]
max_delete_ratio = 1.0

[[sftp_directories]]
directory = "strict"
username = "strict"
authorized_keys = ["{pub_b}"]
max_delete_ratio = 0.05
"#
    );
    let server = TestServer::builder().config_toml(config).start().await?;
    let dirs = idbridge_tests::directory_api::all_pages(&server, "/directories").await?;
    let lenient = dirs
        .iter()
        .find(|d| d["name"] == "Lenient")
        .and_then(|d| d["id"].as_str())
        .context("lenient directory")?
        .to_owned();
    let d = deliver(
        &server,
        &lenient,
        port,
        "lenient",
        &key_a,
        &work,
        &users_csv(10),
    )
    .await?;
    ensure!(d["status"] == "applied", "{d}");
    let d = deliver(
        &server,
        &lenient,
        port,
        "lenient",
        &key_a,
        &work,
        &users_csv(1),
    )
    .await?;
    ensure!(
        d["status"] == "applied",
        "the lenient directory got another directory's ratio: {d}"
    );
    // The feed shows where it came from.
    let f = capture(server.get(&format!("/admin/directories/{lenient}/feed"))).await?;
    ensure!(f.expect_json(200)?["origin"] == "config", "{}", f.text);
    Ok(())
}

#[tokio::test]
async fn declared_directories_sync_and_import_before_the_first_start() -> anyhow::Result<()> {
    let slapd = Slapd::start()?;
    slapd.add(&ldap_person("alice", "Alice", "A"))?;
    let pw = slapd.password_file()?;
    let tmp = tempfile::tempdir()?;
    let (_key, public) = keygen(tmp.path(), "k");
    let data = tmp.path().join("data");
    let config = tmp.path().join("idbridge.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
data_dir = "{data}"

[[organizations]]
external_id = "acme"
name = "Acme"

[[directories]]
key = "corp-ldap"
organization = "acme"
name = "Corp LDAP"
type = "ldap"

[[directories]]
key = "hr"
organization = "acme"
name = "HR"
type = "sftp"

[[ldap_directories]]
directory = "corp-ldap"
[ldap_directories.ldap]
url = "{url}"
allow_plain = true
bind_dn = "{LDAP_ADMIN_DN}"
bind_password_file = "{pw}"
user_base_dns = ["ou=People,{LDAP_SUFFIX}"]

[[sftp_directories]]
directory = "hr"
username = "acme-hr"
authorized_keys = ["{public}"]
"#,
            data = data.display(),
            url = slapd.url(),
            pw = pw.display(),
        ),
    )?;
    // The binary the harness runs: IDBRIDGE_BIN, else target/<profile>/idbridge.
    let binary = match std::env::var_os("IDBRIDGE_BIN") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("target dir")?
            .join("idbridge"),
    };
    let run = |args: &[&str]| {
        Command::new(&binary)
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("IDBRIDGE_DATA_DIR")
            .output()
            .unwrap()
    };
    let out = run(&["directory", "sync", "corp-ldap"]);
    ensure!(
        out.status.success(),
        "sync before the first start: {}",
        text(&out)
    );
    ensure!(text(&out).contains("users +1"), "{}", text(&out));
    let csv = tmp.path().join("csv");
    std::fs::create_dir_all(&csv)?;
    std::fs::write(csv.join("users.csv"), users_csv(2))?;
    let out = run(&["directory", "import", "hr", csv.to_str().unwrap()]);
    ensure!(
        out.status.success(),
        "import before the first start: {}",
        text(&out)
    );
    ensure!(text(&out).contains("users +2"), "{}", text(&out));
    // Again: idempotent (no new directories), nothing to change.
    let out = run(&["directory", "sync", "corp-ldap"]);
    ensure!(out.status.success(), "{}", text(&out));
    let out = run(&["directory", "list"]);
    let listing = text(&out);
    ensure!(
        listing.lines().filter(|l| l.contains("directory_")).count() == 2,
        "{listing}"
    );
    Ok(())
}

#[tokio::test]
async fn sftp_mass_deletion_is_reviewed_and_confirmed_through_the_api_and_the_cli(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (key, public) = keygen(tmp.path(), "k");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work)?;
    let port = free_port()?;
    let mut server = TestServer::builder()
        .config_toml(format!(
            "[sftp_server]\nlisten = \"127.0.0.1:{port}\"\ndebounce_ms = 200\n"
        ))
        .start()
        .await?;
    let org = create_org(&server).await?;
    let dir = create_directory(&server, &org, "sftp").await?;
    capture(
        server
            .put(&format!("/admin/directories/{dir}/feed"))
            .json(&json!({
                "username": "acme-hr", "authorized_keys": [public],
            })),
    )
    .await?
    .expect_json(200)?;
    let pending = format!("/admin/directories/{dir}/pending_deletion");
    capture(server.get(&pending))
        .await?
        .expect_error(404, None)?;
    let d = deliver(&server, &dir, port, "acme-hr", &key, &work, &users_csv(30)).await?;
    ensure!(d["status"] == "applied", "{d}");
    // A truncated file: 25 of 30 would go; the default guard (10%) stops it.
    let d = deliver(&server, &dir, port, "acme-hr", &key, &work, &users_csv(5)).await?;
    ensure!(
        d["status"] == "rejected" && d["guard"]["would_delete"] == 25,
        "{d}"
    );

    // Review: the count and the first N (here 10) users, by id and email.
    let p = capture(server.get(&format!("{pending}?limit=10"))).await?;
    let v = p.expect_json(200)?;
    ensure!(
        v["kind"] == "sftp" && v["would_delete"] == 25 && v["total"] == 30,
        "{v}"
    );
    let sample = v["sample"].as_array().context("sample")?;
    ensure!(sample.len() == 10, "{v}");
    ensure!(
        sample.iter().all(|u| {
            let e = u["email"].as_str().unwrap_or_default();
            e.starts_with('e')
                && !["e1@", "e2@", "e3@", "e4@", "e5@"]
                    .iter()
                    .any(|k| e.starts_with(k))
        }),
        "the sample lists a user who stays: {v}"
    );
    // Confirm while the server runs: applied now.
    let c = capture(server.post(&format!("{pending}/confirm"))).await?;
    let v = c.expect_json(200)?;
    ensure!(
        v["delivery"]["status"] == "applied" && v["delivery"]["changes"]["users_deleted"] == 25,
        "{v}"
    );
    let users = users_by_email(&server, &format!("directory={dir}")).await?;
    ensure!(users.len() == 5, "{users:?}");
    capture(server.get(&pending))
        .await?
        .expect_error(404, None)?;
    capture(server.post(&format!("{pending}/confirm")))
        .await?
        .expect_error(409, Some("nothing_to_confirm"))?;

    // The same flow from the CLI with the server stopped.
    let d = deliver(&server, &dir, port, "acme-hr", &key, &work, &users_csv(1)).await?;
    ensure!(d["status"] == "rejected", "{d}");
    server.stop()?;
    let cli = |args: &[&str]| {
        Command::new(server.binary())
            .args(["directory", "confirm-deletion", &dir])
            .args(args)
            .env("IDBRIDGE_DATA_DIR", server.data_dir())
            .output()
            .unwrap()
    };
    let out = cli(&[]);
    ensure!(out.status.success(), "{}", text(&out));
    let listing = text(&out);
    ensure!(
        listing.contains("would remove 4 of 5")
            && listing.contains("e2@foo-corp.com")
            && !listing.contains("e1@foo-corp.com"),
        "{listing}"
    );
    let out = cli(&["--yes"]);
    ensure!(out.status.success(), "{}", text(&out));
    ensure!(text(&out).contains("users +0 ~0 -4"), "{}", text(&out));
    let out = cli(&[]);
    ensure!(
        !out.status.success() && text(&out).contains("nothing to confirm"),
        "{}",
        text(&out)
    );
    Ok(())
}

/// `[sftp_server]` is live too (`PATCH /admin/settings/sftp_server`): moving the embedded
/// server to another port takes effect at once (the old port closes, the new one serves the
/// same accounts); a port that cannot be bound is refused with `not_applied`, and nothing
/// changes — neither the running server nor what a restart would use.
#[tokio::test]
async fn the_embedded_sftp_server_moves_ports_live_and_a_bad_port_changes_nothing(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (key_a, pub_a) = keygen(tmp.path(), "a");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work)?;
    let port = free_port()?;
    let mut server = TestServer::builder()
        .config_toml(format!(
            "[sftp_server]\nlisten = \"127.0.0.1:{port}\"\ndebounce_ms = 200\n"
        ))
        .start()
        .await?;
    let org = create_org(&server).await?;
    let hr = create_directory(&server, &org, "sftp").await?;
    capture(
        server
            .put(&format!("/admin/directories/{hr}/feed"))
            .json(&json!({"username": "acme-hr", "authorized_keys": [pub_a]})),
    )
    .await?
    .expect_json(200)?;
    let out = sftp(port, "acme-hr", &key_a, &work, "ls\n");
    ensure!(out.status.success(), "{}", text(&out));

    let section = "/admin/settings/sftp_server";
    let before = capture(server.get(section))
        .await?
        .expect_json(200)?
        .clone();
    ensure!(
        before["values"]["listen"] == format!("127.0.0.1:{port}").as_str()
            || before.to_string().contains(&format!("127.0.0.1:{port}")),
        "{before}"
    );

    // A taken port: refused, the server keeps serving on the old one, GET unchanged.
    let blocker = std::net::TcpListener::bind("127.0.0.1:0")?;
    let taken = blocker.local_addr()?.port();
    let r = capture(
        server
            .request(reqwest::Method::PATCH, section)
            .json(&json!({"listen": format!("127.0.0.1:{taken}")})),
    )
    .await?;
    ensure!(
        r.status == 400 && r.text.contains("not_applied"),
        "{} {}",
        r.status,
        r.text
    );
    let out = sftp(port, "acme-hr", &key_a, &work, "ls\n");
    ensure!(
        out.status.success(),
        "old port after a refused change: {}",
        text(&out)
    );
    let after = capture(server.get(section))
        .await?
        .expect_json(200)?
        .clone();
    ensure!(after == before, "{before}\n{after}");
    drop(blocker);

    // A free port: the server moves at once.
    let new_port = free_port()?;
    capture(
        server
            .request(reqwest::Method::PATCH, section)
            .json(&json!({"listen": format!("127.0.0.1:{new_port}"), "max_files": 5})),
    )
    .await?
    .expect_json(200)?;
    let out = sftp(new_port, "acme-hr", &key_a, &work, "ls\n");
    ensure!(out.status.success(), "new port: {}", text(&out));
    let out = sftp(port, "acme-hr", &key_a, &work, "ls\n");
    ensure!(
        !out.status.success(),
        "the old port still serves: {}",
        text(&out)
    );

    // Kept across a restart.
    server.restart().await?;
    let out = sftp(new_port, "acme-hr", &key_a, &work, "ls\n");
    ensure!(out.status.success(), "after restart: {}", text(&out));
    Ok(())
}

/// Waits until the directory has more than `before` deliveries; returns the newest.
async fn next_delivery(server: &TestServer, dir: &str, before: usize) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = deliveries(server, dir).await?;
        if list.len() > before {
            return Ok(list[0].clone());
        }
        if Instant::now() > deadline {
            bail!("no new delivery for {dir} (had {before})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An SFTP pull configured, changed and removed through the admin API while the server runs,
/// against a real OpenSSH sshd as the customer's server: the private key is write-only, the
/// host key is pinned (a wrong pin pulls nothing), a new remote folder is used by the next
/// pull, and a removed feed stops pulling.
#[tokio::test]
async fn sftp_pull_configured_live_through_the_admin_api() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let base = tmp.path().join("sshd");
    std::fs::create_dir_all(&base)?;
    let (host_key, host_pub) = keygen(&base, "ssh_host_ed25519_key");
    let (other_host, other_pub) = keygen(&base, "other_host_key");
    drop(other_host);
    let (client_key, client_pub) = keygen(tmp.path(), "client");
    let authorized = base.join("authorized_keys");
    std::fs::write(&authorized, format!("{client_pub}\n"))?;
    let outbox = tmp.path().join("outbox");
    let outbox2 = tmp.path().join("outbox2");
    for (dir, n) in [(&outbox, 3), (&outbox2, 2)] {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("users.csv"), users_csv(n))?;
    }
    let sshd = idbridge_testkit::Sshd::start(&base, &host_key, &authorized)?;
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let private_pem = std::fs::read_to_string(&client_key)?;

    let server = TestServer::builder().start().await?;
    let org = create_org(&server).await?;
    let hr = create_directory(&server, &org, "sftp").await?;
    let feed = format!("/admin/directories/{hr}/feed");
    let pull = |remote: &Path, pin: &str| {
        json!({"pull": {"host": "127.0.0.1", "port": sshd.port, "username": user,
            "private_key": private_pem, "host_key": pin,
            "remote_dir": remote.display().to_string(), "interval_secs": 1},
            "max_delete_ratio": 1.0})
    };

    // A wrong host key pin: stored, but nothing is pulled.
    capture(server.put(&feed).json(&pull(&outbox, &other_pub)))
        .await?
        .expect_json(200)?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ensure!(
        deliveries(&server, &hr).await?.is_empty(),
        "pulled through a wrong pin"
    );

    // The right pin: the next pull applies the outbox.
    capture(server.put(&feed).json(&pull(&outbox, &host_pub)))
        .await?
        .expect_json(200)?;
    let d = next_delivery(&server, &hr, 0).await?;
    ensure!(d["status"] == "applied", "{d}");
    let users = users_by_email(&server, &format!("directory={hr}")).await?;
    ensure!(users.len() == 3, "{users:?}");
    // The key is write-only.
    let r = capture(server.get(&feed)).await?;
    let v = r.expect_json(200)?;
    ensure!(
        v["settings"]["pull"]["private_key"]["set"] == true
            || v.to_string().contains("\"set\":true"),
        "{v}"
    );
    ensure!(
        !r.text.contains("PRIVATE KEY"),
        "the private key was shown: {}",
        r.text
    );

    // Another remote folder, changed live: the next pull uses it.
    let before = deliveries(&server, &hr).await?.len();
    capture(
        server
            .request(reqwest::Method::PATCH, &feed)
            .json(&json!({"pull": {"remote_dir": outbox2.display().to_string()}})),
    )
    .await?
    .expect_json(200)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let users = users_by_email(&server, &format!("directory={hr}")).await?;
        if users.len() == 2 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the new remote_dir was not pulled: {users:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(deliveries(&server, &hr).await?.len() > before);

    // Removed: no more pulls even when the outbox changes.
    let r = capture(server.delete(&feed)).await?;
    ensure!(r.status == 204, "{} {}", r.status, r.text);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settled = deliveries(&server, &hr).await?.len();
    std::fs::write(outbox2.join("users.csv"), users_csv(5))?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ensure!(
        deliveries(&server, &hr).await?.len() == settled,
        "pulled after the feed was removed"
    );
    Ok(())
}
