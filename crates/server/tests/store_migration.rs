//! A data directory written by the sled build is migrated to SQLite when `idbridge serve`
//! starts (and by `idbridge migrate`), with the data intact and the sled files kept aside;
//! an empty data directory starts on SQLite.
//!
//! The fixture is the data directory the last sled release wrote through its API
//! (crates/store/tests/fixtures/sled-0.34, see its README), with the export taken from it
//! before any migration.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use idbridge_store::{SqliteStore, Store};

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(dir: &Path, data: &Path, port: u16) -> PathBuf {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n\
             [log]\nformat = \"text\"\nlevel = \"info\"\n",
            data.display()
        ),
    )
    .unwrap();
    config
}

fn serve(dir: &Path, data: &Path) -> Server {
    let port = free_port();
    let config = write_config(dir, data, port);
    let child = Command::new(env!("CARGO_BIN_EXE_idbridge"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let server = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if get(&server, "/readyz", None).starts_with("HTTP/1.1 200") {
            return server;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "server did not become ready: {}",
        std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
    );
}

fn get(server: &Server, path: &str, bearer: Option<&str>) -> String {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", server.port)) else {
        return String::new();
    };
    let auth = bearer
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut text = String::new();
    let _ = conn.read_to_string(&mut text);
    text
}

/// The sled data directory the last sled release wrote (crates/store/tests/fixtures/sled-0.34:
/// an organization with a domain, SAML and OIDC connections, a SCIM directory with 50 users
/// and 5 groups, roles and role mappings, a webhook endpoint, API keys, their events), unpacked
/// into `data`. Returns the fixture's API key.
fn sled_fixture(data: &Path) -> String {
    std::fs::create_dir_all(data).unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(fixture_dir().join("data.tar.gz"))
        .arg("-C")
        .arg(data)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read_to_string(fixture_dir().join("api-key.txt"))
        .unwrap()
        .trim()
        .to_owned()
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../store/tests/fixtures/sled-0.34")
}

/// The export taken from the fixture before any migration.
fn fixture_export() -> Vec<String> {
    std::fs::read_to_string(fixture_dir().join("export.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn export(store: &dyn Store) -> Vec<String> {
    let mut lines = Vec::new();
    store
        .export(&mut |r| {
            lines.push(serde_json::to_string(&r).unwrap());
            Ok(())
        })
        .unwrap();
    lines
}

fn sled_backup(data: &Path) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("sled-backup-"))
        })
        .collect();
    assert_eq!(found.len(), 1, "one sled backup in {}", data.display());
    found.remove(0)
}

/// The store opened the way `idbridge serve` opens it at start (`open_store`: migrate, then
/// open) holds every record of the fixture, byte for byte, in the same order.
#[test]
fn opening_the_store_at_start_migrates_the_release_fixture_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    sled_fixture(&data);
    let config = idbridge::config::Config::from_file(&write_config(dir.path(), &data, 1)).unwrap();
    let store = idbridge::open_store(&config).unwrap();
    let after = export(store.as_ref());
    drop(store);
    let expected = fixture_export();
    for (n, (e, a)) in expected.iter().zip(&after).enumerate() {
        assert_eq!(e, a, "record {n} changed in migration");
    }
    assert_eq!(after.len(), expected.len(), "records lost or added");
    assert!(data.join("idbridge.sqlite3").is_file());
    let backup = sled_backup(&data);
    assert!(backup.join("db").is_file() && backup.join("conf").is_file());
}

#[test]
fn serve_migrates_a_sled_data_dir_at_start_and_keeps_the_old_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = sled_fixture(&data);

    let server = serve(dir.path(), &data);
    let orgs = get(&server, "/organizations", Some(&key));
    assert!(orgs.starts_with("HTTP/1.1 200"), "{orgs}");
    assert!(orgs.contains("Fixture Corp"), "{orgs}");
    let conns = get(&server, "/connections", Some(&key));
    assert!(
        conns.contains("Fixture SAML") && conns.contains("Fixture OIDC"),
        "{conns}"
    );
    let dirs = get(&server, "/directories", Some(&key));
    let dir_id = dirs
        .split("\"id\":\"")
        .filter_map(|s| s.split('"').next())
        .find(|id| {
            id.starts_with("directory_")
                && !id.starts_with("directory_user")
                && !id.starts_with("directory_group")
        })
        .unwrap_or_else(|| panic!("no directory: {dirs}"))
        .to_owned();
    let users = get(
        &server,
        &format!("/directory_users?directory={dir_id}&limit=100"),
        Some(&key),
    );
    assert!(users.starts_with("HTTP/1.1 200"), "{users}");
    // 50 users, two of them deactivated (parked: not listed by the Directory Sync API).
    assert_eq!(
        users.matches("\"object\":\"directory_user\"").count(),
        48,
        "{users}"
    );
    let groups = get(
        &server,
        &format!("/directory_groups?directory={dir_id}&limit=100"),
        Some(&key),
    );
    assert_eq!(
        groups.matches("\"object\":\"directory_group\"").count(),
        5,
        "{groups}"
    );
    drop(server);

    assert!(data.join("idbridge.sqlite3").is_file());
    assert!(!data.join("db").exists() && !data.join("conf").exists());
    let backup = sled_backup(&data);
    assert!(backup.join("db").is_file() && backup.join("conf").is_file());
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(
        log.contains("migrated the sled store to SQLite") && log.contains("remove"),
        "the migration is logged with what to remove: {log}"
    );
    // Every entry of the fixture is in SQLite. Not compared here (the test above compares
    // everything, before the server runs): events, which retention drops once they are older
    // than 30 days, and the webhook delivery cursor, which the running delivery worker moves.
    // Memberships moved to rows at start: compared as facts.
    let after = facts(&export(&SqliteStore::open(&data).unwrap()));
    for fact in facts(&fixture_export())
        .iter()
        .filter(|l| !l.starts_with("{\"event\":") && !l.contains("\"table\":\"webhook_delivery\""))
    {
        assert!(after.contains(fact), "lost in migration: {fact}");
    }
}

/// An export as comparable facts: a membership is `member <group> <user>` whether the
/// key-value layout (two `dsync.members` keys) or a `directory_memberships` row holds it; the
/// row-table bookkeeping records (DDL, owner migrations) are left out; every other record is
/// its line. Sorted and deduplicated.
fn facts(lines: &[String]) -> Vec<String> {
    let mut out: Vec<String> = lines
        .iter()
        .filter_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v.get("row_table").is_some() || v.get("owner_migration").is_some() {
                return None;
            }
            if let Some(row) = v
                .get("row")
                .filter(|r| r["table"] == "directory_memberships")
            {
                let vals = row["values"].as_array().unwrap();
                return Some(format!(
                    "member {} {}",
                    vals[0].as_str().unwrap(),
                    vals[1].as_str().unwrap()
                ));
            }
            let entry = v.get("entry").filter(|e| e["table"] == "dsync.members");
            if let Some(key) = entry.and_then(|e| e["key"].as_str()) {
                let (dir, rest) = key.split_at(2);
                let (a, b) = rest.split_once('/').unwrap();
                return Some(match dir {
                    "g/" => format!("member {a} {b}"),
                    _ => format!("member {b} {a}"),
                });
            }
            Some(line.clone())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Moves memberships of the store in `data` to rows as the server does at start, and checks
/// the move against full exports before and after, and an export/import round trip.
/// Returns the number of memberships.
fn memberships_move_with_nothing_lost(data: &Path) -> usize {
    let config =
        idbridge::config::Config::from_file(&write_config(data.parent().unwrap(), data, 1))
            .unwrap();
    let store = idbridge::open_store(&config).unwrap();
    let before = export(store.as_ref());
    let legacy = before
        .iter()
        .filter(|l| l.contains("\"table\":\"dsync.members\""))
        .count();
    assert!(legacy > 0, "the fixture holds memberships");
    idbridge::migrate_directory_tables(&store).unwrap();
    let after = export(store.as_ref());
    assert!(
        !after
            .iter()
            .any(|l| l.contains("\"table\":\"dsync.members\"")),
        "no key-value membership is left"
    );
    let rows = after
        .iter()
        .filter(|l| l.starts_with("{\"row\":") && l.contains("directory_memberships"))
        .count();
    assert_eq!(rows * 2, legacy, "one row per pair of keys");
    assert_eq!(
        facts(&before),
        facts(&after),
        "the export changed beyond the layout"
    );
    // A second start has nothing to move and changes nothing.
    idbridge::migrate_directory_tables(&store).unwrap();
    assert_eq!(export(store.as_ref()), after);
    // Export/import still round-trip the new layout.
    let copy = SqliteStore::open_ephemeral().unwrap();
    let mut records = after
        .iter()
        .map(|l| Ok(serde_json::from_str::<idbridge_store::ExportRecord>(l).unwrap()));
    copy.import(&mut records).unwrap();
    assert_eq!(export(&copy), after);
    rows
}

#[test]
fn the_sled_fixture_memberships_move_to_rows_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    sled_fixture(&data);
    assert!(memberships_move_with_nothing_lost(&data) > 0);
}

#[test]
fn the_sqlite_upgrade_fixture_memberships_move_to_rows_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade-sqlite/data");
    std::fs::copy(
        fixture.join("idbridge.sqlite3"),
        data.join("idbridge.sqlite3"),
    )
    .unwrap();
    assert!(memberships_move_with_nothing_lost(&data) > 0);
}

#[test]
fn migrate_command_converts_on_demand_and_then_has_nothing_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    sled_fixture(&data);
    let expected = fixture_export();
    let config = write_config(dir.path(), &data, free_port());
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_idbridge"))
            .args(["migrate", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = run();
    assert!(
        first.contains(&format!("migrated {} records", expected.len())),
        "{first}"
    );
    assert_eq!(export(&SqliteStore::open(&data).unwrap()), expected);
    let second = run();
    assert!(second.contains("nothing to migrate"), "{second}");
    assert!(sled_backup(&data).join("db").is_file());
}

#[test]
fn an_empty_data_dir_starts_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = serve(dir.path(), &data);
    assert!(get(&server, "/healthz", None).starts_with("HTTP/1.1 200"));
    drop(server);
    assert!(data.join("idbridge.sqlite3").is_file());
    assert!(!data.join("db").exists() && !data.join("conf").exists());
    assert!(std::fs::read_dir(&data).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("sled-backup-")));
}
