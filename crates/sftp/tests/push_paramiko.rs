//! The embedded SFTP server driven by paramiko (tests/py/paramiko_push.py): a delivery uploaded
//! under a temporary name and renamed, overwrites, and isolation probes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use idbridge_sftp::{parse_authorized_key, DeliveryStatus, ServerConfig, SftpAccount};

fn venv_python() -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let py = repo.join(".venv/bin/python");
    assert!(py.exists(), "{} is missing: {INSTALL_HINT}", py.display());
    let ok = Command::new(&py)
        .args(["-c", "import paramiko"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "paramiko is not installed in the repo venv: {INSTALL_HINT}"
    );
    py
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paramiko_push_and_isolation() {
    let py = venv_python();
    let fx = std::sync::Arc::new(Fx::new());
    let dir_a = fx.directory("A");
    let dir_b = fx.directory("B");
    let keys = fx.path("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let key_a = keygen(&keys, "a", "ed25519", None);
    let key_b = keygen(&keys, "b", "ed25519", None);
    let mut cfg = ServerConfig::new(&fx.path("data"));
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.debounce = Duration::from_millis(300);
    cfg.accounts = vec![
        SftpAccount {
            username: "tenant-a".into(),
            directory_id: dir_a.clone(),
            keys: vec![parse_authorized_key(&public_line(&key_a)).unwrap()],
            policy: None,
        },
        SftpAccount {
            username: "tenant-b".into(),
            directory_id: dir_b.clone(),
            keys: vec![parse_authorized_key(&public_line(&key_b)).unwrap()],
            policy: None,
        },
    ];
    let server = idbridge_sftp::server::start(cfg, fx.processor.clone())
        .await
        .expect("start");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/paramiko_push.py");
    let port = server.local_addr.port();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py)
            .arg(script)
            .env("SFTP_PORT", port.to_string())
            .env("KEY_A", key_a)
            .env("USER_A", "tenant-a")
            .env("KEY_B", key_b)
            .env("USER_B", "tenant-b")
            .output()
            .expect("python")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "paramiko script failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let f = fx.clone();
    let dir = dir_a.clone();
    let d = tokio::task::spawn_blocking(move || f.wait_deliveries(&dir, 1))
        .await
        .unwrap();
    assert_eq!(d[0].status, DeliveryStatus::Applied, "{:?}", d[0]);
    assert_eq!(fx.user_ids(&dir_a), vec!["p1", "p2"]);
    assert!(fx.user_ids(&dir_b).is_empty());
    assert!(fx.deliveries(&dir_b).is_empty());
    server.shutdown().await;
}

/// An administrator removes the key of a session that is open, mid-upload: the session's next
/// request is refused (saying why), the half-written upload is removed and never becomes a
/// delivery, and the other account's key still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_key_ends_what_its_open_session_can_do() {
    use std::io::{BufRead, BufReader, Write};
    let py = venv_python();
    let fx = std::sync::Arc::new(Fx::new());
    let dir_a = fx.directory("A");
    let keys = fx.path("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let key_a = keygen(&keys, "a", "ed25519", None);
    let key_a2 = keygen(&keys, "a2", "ed25519", None);
    let account = |keys: Vec<&PathBuf>| SftpAccount {
        username: "tenant-a".into(),
        directory_id: dir_a.clone(),
        keys: keys
            .into_iter()
            .map(|k| parse_authorized_key(&public_line(k)).unwrap())
            .collect(),
        policy: None,
    };
    let mut cfg = ServerConfig::new(&fx.path("data"));
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.debounce = Duration::from_millis(200);
    cfg.accounts = vec![account(vec![&key_a, &key_a2])];
    let server = idbridge_sftp::server::start(cfg, fx.processor.clone())
        .await
        .expect("start");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/paramiko_revoked.py");
    let mut child = Command::new(py)
        .arg(script)
        .env("SFTP_PORT", server.local_addr.port().to_string())
        .env("KEY", &key_a)
        .env("USER", "tenant-a")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::task::block_in_place(|| lines.next());
    assert_eq!(first.and_then(Result::ok).as_deref(), Some("open"));
    let inbox_file = fx
        .path("data")
        .join("sftp")
        .join("inbox")
        .join("tenant-a")
        .join("users.csv");
    assert!(
        inbox_file.exists(),
        "the half-written upload is in the inbox"
    );

    // Key A removed while its session is open (A2 stays).
    server.set_accounts(vec![account(vec![&key_a2])]).unwrap();
    writeln!(stdin, "revoked").unwrap();
    let out = tokio::task::block_in_place(|| child.wait_with_output()).unwrap();
    let said: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        out.status.success() && said.iter().any(|l| l == "refused"),
        "paramiko script failed: {said:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The half-written upload is gone and never became a delivery.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !inbox_file.exists(),
        "{} is still there",
        inbox_file.display()
    );
    assert!(
        fx.deliveries(&dir_a).is_empty(),
        "{:?}",
        fx.deliveries(&dir_a)
    );
    // The key that stays still logs in.
    let py = venv_python();
    let ok = Command::new(py)
        .args([
            "-c",
            "import os,paramiko;k=paramiko.Ed25519Key.from_private_key_file(os.environ['KEY']);\
             t=paramiko.Transport(('127.0.0.1',int(os.environ['SFTP_PORT'])));\
             t.connect(username='tenant-a',pkey=k);paramiko.SFTPClient.from_transport(t).listdir('.')",
        ])
        .env("SFTP_PORT", server.local_addr.port().to_string())
        .env("KEY", &key_a2)
        .status()
        .unwrap();
    assert!(ok.success());
    server.shutdown().await;
}
