//! `idbridge serve` on PostgreSQL (`[store] backend = "postgres"`, the connection string from
//! an environment variable): an organization made through the API and users pushed through
//! SCIM are read back after a restart; the admin API shows the store settings without the
//! password.

use std::time::Duration;

use idbridge_testkit::Postgres;
use serde_json::Value;

use crate::harness::{self, call};

const STORE_KEYS: &str = "[store]\nbackend = \"postgres\"\nurl_env = \"IDBRIDGE_TEST_STORE_URL\"\npool_size = 6\n\
    [[organizations]]\nexternal_id = \"acme\"\nname = \"Acme\"\n\
    [[directories]]\nkey = \"hr\"\norganization = \"acme\"\nname = \"HR\"\ntype = \"azure scim v2.0\"\n\
    scim_token_env = \"IDBRIDGE_TEST_SCIM_TOKEN\"\n";
const SCIM_TOKEN: &str = "scim-token-for-the-postgres-lifecycle-test-0123456789";

#[test]
fn serve_on_postgres_keeps_organizations_and_scim_users_across_a_restart() {
    let pg = Postgres::shared().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let url = pg.database_for(dir.path()).unwrap();
    // The password never reaches the file; a wrong one in the env would fail the start.
    let url = format!("{url} password=not-shown-anywhere");
    let env = [
        ("IDBRIDGE_TEST_STORE_URL", url.as_str()),
        ("IDBRIDGE_TEST_SCIM_TOKEN", SCIM_TOKEN),
    ];
    let server = harness::start_env(dir.path(), &data, STORE_KEYS, None, &env);
    let key = server.api_key();
    let (status, org) = call(
        &server,
        "POST",
        "/organizations",
        Some(&key),
        Some(r#"{"name":"Globex"}"#),
    );
    assert_eq!(status, 201, "{org}");
    let org_id = org["id"].as_str().unwrap().to_owned();
    let (status, dirs) = call(&server, "GET", "/directories", Some(&key), None);
    assert_eq!(status, 200, "{dirs}");
    let directory = dirs["data"][0]["id"].as_str().unwrap().to_owned();
    for n in 0..3 {
        let user = format!(
            r#"{{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"u{n}@acme.test","name":{{"givenName":"U{n}","familyName":"Test"}},"emails":[{{"value":"u{n}@acme.test","primary":true}}],"active":true}}"#
        );
        let (status, body) = call(
            &server,
            "POST",
            &format!("/scim/v2/{directory}/Users"),
            Some(SCIM_TOKEN),
            Some(&user),
        );
        assert_eq!(status, 201, "{body}");
    }
    // The store settings through the admin API: restart-only, the url keys file-only.
    let (status, settings) = call(&server, "GET", "/admin/settings/store", Some(&key), None);
    assert_eq!(status, 200, "{settings}");
    let text = settings.to_string();
    assert!(text.contains("postgres"), "{text}");
    assert!(!text.contains("not-shown-anywhere"), "{text}");
    let (status, body) = call(
        &server,
        "PATCH",
        "/admin/settings/store",
        Some(&key),
        Some(r#"{"url":"host=elsewhere"}"#),
    );
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("file_only"), "{body}");
    let (status, body) = call(
        &server,
        "PATCH",
        "/admin/settings/store",
        Some(&key),
        Some(r#"{"pool_size":4}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.to_string().contains("pending_restart"), "{body}");
    drop(server);

    // Nothing of it is in the data directory: the data is in PostgreSQL.
    assert!(!data.join(idbridge_store::SQLITE_FILE_NAME).exists());
    let server = harness::start_env(dir.path(), &data, STORE_KEYS, None, &env);
    let (status, org) = call(
        &server,
        "GET",
        &format!("/organizations/{org_id}"),
        Some(&key),
        None,
    );
    assert_eq!(status, 200, "{org}");
    assert_eq!(org["name"], "Globex");
    let (status, users) = call(
        &server,
        "GET",
        &format!("/directory_users?directory={directory}&limit=10"),
        Some(&key),
        None,
    );
    assert_eq!(status, 200, "{users}");
    let mut emails: Vec<String> = users["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap_or_default().to_owned())
        .collect();
    emails.sort();
    assert_eq!(emails, ["u0@acme.test", "u1@acme.test", "u2@acme.test"]);
    let (_, settings) = call(&server, "GET", "/admin/settings/store", Some(&key), None);
    assert_eq!(
        settings["values"]["pool_size"],
        Value::from(4),
        "{settings}"
    );
    std::thread::sleep(Duration::from_millis(10));
}

/// `idbridge export` of a SQLite data dir, `idbridge import` into PostgreSQL (a server then
/// serves the data from there), and back: PostgreSQL's export imports into a new SQLite dir.
#[test]
fn export_and_import_move_a_store_between_sqlite_and_postgres() {
    let pg = Postgres::shared().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = harness::start(dir.path(), &data, "", None);
    let key = server.api_key();
    let (status, org) = call(
        &server,
        "POST",
        "/organizations",
        Some(&key),
        Some(r#"{"name":"Initech"}"#),
    );
    assert_eq!(status, 201, "{org}");
    let org_id = org["id"].as_str().unwrap().to_owned();
    drop(server);

    let cli = |config: &std::path::Path, args: &[&str], env: &[(&str, &str)]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_idbridge"))
            .arg("--config")
            .arg(config)
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let sqlite_config = harness::write_config(dir.path(), &data, harness::free_port(), "", None);
    let dump = dir.path().join("dump.jsonl");
    cli(
        &sqlite_config,
        &["export", "--output", dump.to_str().unwrap()],
        &[],
    );

    let pg_dir = dir.path().join("pg");
    std::fs::create_dir_all(&pg_dir).unwrap();
    let url = pg.database_for(&pg_dir).unwrap();
    let env = [("IDBRIDGE_TEST_STORE_URL", url.as_str())];
    let pg_keys = "[store]\nbackend = \"postgres\"\nurl_env = \"IDBRIDGE_TEST_STORE_URL\"\n";
    let pg_data = pg_dir.join("data");
    let pg_config = harness::write_config(&pg_dir, &pg_data, harness::free_port(), pg_keys, None);
    cli(&pg_config, &["import", dump.to_str().unwrap()], &env);
    // The same secret key file: the API key hash and sealed secrets move with the data.
    std::fs::create_dir_all(&pg_data).unwrap();
    std::fs::copy(data.join("secret.key"), pg_data.join("secret.key")).unwrap();
    let server = harness::start_env(&pg_dir, &pg_data, pg_keys, None, &env);
    let (status, org) = call(
        &server,
        "GET",
        &format!("/organizations/{org_id}"),
        Some(&key),
        None,
    );
    assert_eq!(status, 200, "{org}");
    assert_eq!(org["name"], "Initech");
    drop(server);

    let back = dir.path().join("back.jsonl");
    cli(
        &pg_config,
        &["export", "--output", back.to_str().unwrap()],
        &env,
    );
    let sqlite2 = dir.path().join("sqlite2");
    std::fs::create_dir_all(&sqlite2).unwrap();
    let config2 = harness::write_config(
        &sqlite2,
        &sqlite2.join("data"),
        harness::free_port(),
        "",
        None,
    );
    cli(&config2, &["import", back.to_str().unwrap()], &[]);
    let mut a: Vec<String> = std::fs::read_to_string(&dump)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let mut b: Vec<String> = std::fs::read_to_string(&back)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    // The server that ran on PostgreSQL re-seeded its own settings (its listen, data_dir,
    // store section): everything else is what SQLite exported.
    let mine = |l: &String| !l.contains(r#""table":"server.settings""#);
    a.retain(mine);
    b.retain(mine);
    a.sort();
    b.sort();
    assert!(a.len() > 4, "{a:?}");
    assert_eq!(a, b, "PostgreSQL's export is SQLite's, record for record");
}
