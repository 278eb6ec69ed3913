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
