//! Online backup of a running server (`idbridge backup FILE` and `POST /admin/backup`) taken
//! while a client keeps writing, then restored: a server started on the backup has every
//! write acknowledged before the backup started, and a contiguous event log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idbridge_store::{SqliteStore, Store, SQLITE_FILE_NAME};
use serde_json::Value;

struct Server {
    child: Child,
    port: u16,
    config: PathBuf,
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

fn serve(dir: &Path, data: &Path) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    let port = free_port();
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
    let child = Command::new(env!("CARGO_BIN_EXE_idbridge"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        port,
        config,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if request(server.port, "GET", "/readyz", None, None).0 == 200 {
            return server;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "server did not become ready: {}",
        std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
    );
}

/// One HTTP/1.1 request; (status, JSON body or Null).
fn request(
    port: u16,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, Value::Null);
    };
    let auth = bearer
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let body = body.unwrap_or("");
    conn.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let mut text = String::new();
    let _ = conn.read_to_string(&mut text);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

/// The server's store restored from `backup` into a new data dir: every org in `acked` is
/// there (through the API of a server started on it), and the event log is contiguous.
fn check_restored(work: &Path, name: &str, backup: &Path, key: &str, acked: &[String]) {
    let data = work.join(format!("{name}-data"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(backup, data.join(SQLITE_FILE_NAME)).unwrap();
    {
        let store = SqliteStore::open(&data).unwrap();
        let last = store.last_event_seq().unwrap();
        let seqs: Vec<u64> = store
            .events_after(0, usize::MAX)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert!(last as usize >= acked.len(), "{name}: {last} events");
        assert_eq!(
            seqs,
            (1..=last).collect::<Vec<_>>(),
            "{name}: log not contiguous"
        );
    }
    let server = serve(&work.join(name), &data);
    let (status, _) = request(
        server.port,
        "GET",
        "/organizations/org_01HZZZZZZZZZZZZZZZZZZZZZZZ",
        Some(key),
        None,
    );
    assert_eq!(
        status, 404,
        "{name}: an unknown organization must not be found"
    );
    for id in acked {
        let (status, body) = request(
            server.port,
            "GET",
            &format!("/organizations/{id}"),
            Some(key),
            None,
        );
        assert_eq!(
            status, 200,
            "{name}: organization {id} acknowledged before the backup: {body}"
        );
    }
}

#[test]
fn backups_of_a_running_server_restore_every_acknowledged_write() {
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let data = work.path().join("data");
    let key = {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&data).unwrap());
        idbridge_sso::api_keys::create_api_key(store.as_ref(), "backup test")
            .unwrap()
            .plaintext
    };
    let server = serve(&work.path().join("live"), &data);

    // A client creating organizations until told to stop; each id is recorded once its
    // request answered 201 (= acknowledged).
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, key, port) = (acked.clone(), stop.clone(), key.clone(), server.port);
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = request(
                    port,
                    "POST",
                    "/organizations",
                    Some(&key),
                    Some(&format!("{{\"name\": \"Org {n}\"}}")),
                );
                assert_eq!(status, 201, "{body}");
                acked
                    .lock()
                    .unwrap()
                    .push(body["id"].as_str().unwrap().to_owned());
                n += 1;
            }
        })
    };
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while acked.lock().unwrap().len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(20);

    // 1. The CLI, from another process, while the server runs.
    let before_cli = acked.lock().unwrap().clone();
    assert!(before_cli.len() >= 20, "the client made no progress");
    let cli_file = work.path().join("cli-backup.sqlite3");
    let out = Command::new(env!("CARGO_BIN_EXE_idbridge"))
        .args(["backup", "--config"])
        .arg(&server.config)
        .arg(&cli_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "idbridge backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("backup written to"));
    // Never overwrites.
    let again = Command::new(env!("CARGO_BIN_EXE_idbridge"))
        .args(["backup", "--config"])
        .arg(&server.config)
        .arg(&cli_file)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    // 2. The admin endpoint.
    wait_for(before_cli.len() + 20);
    let before_api = acked.lock().unwrap().clone();
    assert!(
        before_api.len() >= before_cli.len() + 20,
        "the client stalled"
    );
    let (status, body) = request(server.port, "POST", "/admin/backup", Some(&key), None);
    assert_eq!(status, 201, "{body}");
    let api_file = PathBuf::from(body["path"].as_str().unwrap());
    assert!(api_file.starts_with(data.join("backups")), "{body}");
    assert_eq!(
        std::fs::metadata(&api_file).unwrap().len(),
        body["bytes"].as_u64().unwrap()
    );
    let (status, body) = request(
        server.port,
        "POST",
        "/admin/backup",
        Some(&key),
        Some("{\"path\": \"/etc/x\"}"),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "path", "{body}");
    assert_eq!(body["errors"][0]["code"], "unknown_field", "{body}");
    let (status, _) = request(server.port, "POST", "/admin/backup", None, None);
    assert_eq!(status, 401);
    let (status, list) = request(server.port, "GET", "/admin/backups", Some(&key), None);
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["data"][0]["path"], api_file.display().to_string());

    // Writes went on during and after both backups.
    wait_for(before_api.len() + 10);
    stop.store(true, Ordering::Relaxed);
    println!(
        "{} organizations acknowledged before the CLI backup, {} before the API backup, {} in all",
        before_cli.len(),
        before_api.len(),
        acked.lock().unwrap().len()
    );
    writer.join().unwrap();
    drop(server);

    check_restored(work.path(), "from-cli", &cli_file, &key, &before_cli);
    check_restored(work.path(), "from-api", &api_file, &key, &before_api);
}
