//! Upgrades: `tests/fixtures/upgrade-sqlite/` is a data directory written by an earlier build
//! (see its README; `generate_upgrade_fixture` below remade it). Today's binary must open it,
//! run its schema migrations and serve every record through the API. A store whose schema
//! is newer than this binary knows is refused with a clear error and left untouched.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{self, call};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade-sqlite")
}

fn manifest() -> Value {
    let text = std::fs::read_to_string(fixture_dir().join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A copy of the fixture's data directory in `dir` (the key file private, as the server
/// requires).
fn copy_fixture(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for name in ["idbridge.sqlite3", "secret.key"] {
        std::fs::copy(fixture_dir().join("data").join(name), data.join(name)).unwrap();
    }
    std::fs::set_permissions(
        data.join("secret.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    data
}

fn schema_version(file: &Path) -> i64 {
    let conn = rusqlite::Connection::open(file).unwrap();
    conn.query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
        .unwrap()
}

fn ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list["data"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

#[test]
fn todays_binary_opens_the_fixture_migrates_it_and_serves_its_data() {
    let m = manifest();
    let dir = tempfile::tempdir().unwrap();
    let data = copy_fixture(dir.path());
    let file = data.join("idbridge.sqlite3");
    let written_at = schema_version(&file);
    assert_eq!(written_at, m["schema_version"].as_i64().unwrap());
    let current = idbridge_store::SqliteStore::current_schema_version();
    assert!(
        written_at <= current,
        "the fixture is newer than this build"
    );

    let mut server = harness::start(dir.path(), &data, "", None);
    assert!(
        !server.stdout.lock().unwrap().contains("IDBRIDGE_API_KEY="),
        "an existing store must not get a new first-start key"
    );
    let key = m["api_key"].as_str().unwrap();
    let get = |path: &str| {
        let (status, body) = call(&server, "GET", path, Some(key), None);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    };

    let org = m["organization_id"].as_str().unwrap();
    let got = get(&format!("/organizations/{org}"));
    assert_eq!(got["name"], m["organization_name"]);
    assert_eq!(ids(&get("/organizations")), vec![org.to_owned()]);
    let conns = get(&format!("/connections?organization_id={org}"));
    assert_eq!(
        ids(&conns),
        vec![m["connection_id"].as_str().unwrap().to_owned()]
    );
    let directory = m["directory_id"].as_str().unwrap();
    assert_eq!(
        ids(&get(&format!("/directories?organization_id={org}"))),
        vec![directory.to_owned()]
    );
    let users = get(&format!("/directory_users?directory={directory}"));
    assert_eq!(ids(&users), sorted(&m["user_ids"]));
    let groups = get(&format!("/directory_groups?directory={directory}"));
    assert_eq!(ids(&groups), sorted(&m["group_ids"]));
    let members = get(&format!(
        "/directory_users?group={}",
        m["group_ids"][0].as_str().unwrap()
    ));
    assert_eq!(ids(&members), sorted(&m["user_ids"]));
    let events = get(&format!("/events?{}", m["events_query"].as_str().unwrap()));
    assert_eq!(ids(&events), sorted(&m["event_ids"]));
    // The SCIM token handed out before the upgrade still authenticates; a wrong one does not.
    let scim = m["scim_path"].as_str().unwrap();
    let token = m["scim_token"].as_str().unwrap();
    let (status, listed) = call(&server, "GET", &format!("{scim}/Users"), Some(token), None);
    assert_eq!(
        (status, &listed["totalResults"]),
        (200, &json!(m["user_ids"].as_array().unwrap().len())),
        "{listed}"
    );
    let (status, _) = call(
        &server,
        "GET",
        &format!("{scim}/Users"),
        Some("wrong-token-xxxxxxxxxxxxxxxx"),
        None,
    );
    assert_eq!(status, 401);

    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(15)).success());
    assert_eq!(
        schema_version(&file),
        current,
        "migrated to this build's schema"
    );
}

#[test]
fn a_store_with_a_newer_schema_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let data = copy_fixture(dir.path());
    let file = data.join("idbridge.sqlite3");
    let newer = idbridge_store::SqliteStore::current_schema_version() + 1;
    {
        let conn = rusqlite::Connection::open(&file).unwrap();
        conn.execute(
            "INSERT INTO schema_version (version, description, applied_at_ms) VALUES (?1, 'from a future release', 0)",
            [newer],
        )
        .unwrap();
    }
    let before = std::fs::read(&file).unwrap();
    let mut server = harness::spawn(dir.path(), &data, "", None);
    let exit = server.wait_exit(Duration::from_secs(30));
    assert!(
        !exit.success(),
        "a newer store was opened: {}",
        server.logs()
    );
    let logs = server.logs();
    let expected = format!(
        "the store's schema is version {newer} but this idbridge knows only up to {}",
        newer - 1
    );
    assert!(logs.contains(&expected), "{logs}");
    assert!(
        logs.contains("run the idbridge release that wrote it"),
        "{logs}"
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "the refused store was changed"
    );
    assert_eq!(schema_version(&file), newer);
}

/// Remakes the fixture with this build (run by hand, then commit the result):
/// `cargo test -p idbridge --test lifecycle -- --ignored generate_upgrade_fixture`.
/// It drives a real server through the API, the way users write data, then stops it with
/// SIGTERM so the store file is closed cleanly (no WAL beside it).
#[test]
#[ignore = "writes tests/fixtures/upgrade-sqlite; run by hand to remake the fixture"]
fn generate_upgrade_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = harness::start(dir.path(), &data, "", None);
    let key = server.api_key();
    let post = |path: &str, bearer: &str, body: Value| {
        let (status, out) = call(&server, "POST", path, Some(bearer), Some(&body.to_string()));
        assert_eq!(status, 201, "POST {path}: {out}");
        out
    };
    let org = post(
        "/organizations",
        &key,
        json!({"name": "Upgrade Fixture Inc", "domain_data": [{"domain": "fixture.example.com", "state": "verified"}]}),
    );
    let org_id = org["id"].as_str().unwrap().to_owned();
    let idp = rcgen::generate_simple_self_signed(vec!["idp.fixture.example.com".into()]).unwrap();
    let conn = post(
        "/connections",
        &key,
        json!({
            "organization_id": org_id,
            "name": "Fixture SAML",
            "connection_type": "OktaSAML",
            "saml_options": {
                "idp_entity_id": "https://idp.fixture.example.com/entity",
                "idp_sso_url": "https://idp.fixture.example.com/sso",
                "idp_signing_certs": [idp.cert.pem()],
            },
        }),
    );
    let dir_out = post(
        "/admin/directories",
        &key,
        json!({"organization_id": org_id, "name": "Fixture SCIM", "type": "generic scim v2.0"}),
    );
    let directory_id = dir_out["directory"]["id"].as_str().unwrap().to_owned();
    let endpoint = dir_out["scim"]["endpoint"].as_str().unwrap();
    let scim_path = format!(
        "/{}",
        endpoint
            .splitn(4, '/')
            .nth(3)
            .unwrap()
            .trim_end_matches('/')
    );
    let token = dir_out["scim"]["bearer_token"].as_str().unwrap().to_owned();
    let mut scim_ids = Vec::new();
    for (given, family) in [("Ada", "Lovelace"), ("Grace", "Hopper")] {
        let email = format!("{}@fixture.example.com", given.to_lowercase());
        let user = post(
            &format!("{scim_path}/Users"),
            &token,
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": email,
                "name": {"givenName": given, "familyName": family},
                "emails": [{"primary": true, "value": email, "type": "work"}],
                "active": true,
            }),
        );
        scim_ids.push(user["id"].as_str().unwrap().to_owned());
    }
    post(
        &format!("{scim_path}/Groups"),
        &token,
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "Engineering",
            "members": scim_ids.iter().map(|id| json!({"value": id})).collect::<Vec<_>>(),
        }),
    );
    let get = |path: &str| {
        let (status, body) = call(&server, "GET", path, Some(&key), None);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    };
    let user_ids = ids(&get(&format!("/directory_users?directory={directory_id}")));
    let group_ids = ids(&get(&format!("/directory_groups?directory={directory_id}")));
    let events_query = "events=organization.created,connection.activated,connection.deactivated,dsync.activated,dsync.user.created,dsync.group.created,dsync.group.user_added&limit=100";
    let event_ids = ids(&get(&format!("/events?{events_query}")));
    assert!(!event_ids.is_empty(), "the fixture should hold events");

    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(15)).success());
    let file = data.join("idbridge.sqlite3");
    assert!(
        !data.join("idbridge.sqlite3-wal").exists(),
        "not closed cleanly"
    );
    let out = fixture_dir();
    std::fs::create_dir_all(out.join("data")).unwrap();
    for name in ["idbridge.sqlite3", "secret.key"] {
        std::fs::copy(data.join(name), out.join("data").join(name)).unwrap();
    }
    let manifest = json!({
        "written_by": format!("idbridge {} (this test, generate_upgrade_fixture)", env!("CARGO_PKG_VERSION")),
        "schema_version": schema_version(&file),
        "api_key": key,
        "organization_id": org_id,
        "organization_name": org["name"],
        "connection_id": conn["id"],
        "directory_id": directory_id,
        "scim_path": scim_path,
        "scim_token": token,
        "user_ids": user_ids,
        "group_ids": group_ids,
        "events_query": events_query,
        "event_ids": event_ids,
    });
    std::fs::write(
        out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap() + "\n",
    )
    .unwrap();
}
