//! Abuse limits of the embedded SFTP server against raw sockets and OpenSSH's `sftp`:
//! connections over the total and per-address limits are closed before the SSH banner, and an
//! account that refused too many keys refuses every key (even the right one) until its window
//! passes, while other accounts are unaffected.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{keygen, public_line, require, Fx};
use idbridge_limits::FailureLimit;
use idbridge_sftp::server::{parse_authorized_key, ServerConfig, SftpAccount};

/// Connects from `local` (a 127.x address) and reads the server's first line: `Some(banner)`
/// when admitted, `None` when the server closed the connection at once.
fn banner_from(port: u16, local: Ipv4Addr) -> Option<String> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::new(IpAddr::V4(local), 0).into())
        .unwrap();
    socket
        .connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut line = String::new();
    match BufReader::new(stream.try_clone().unwrap()).read_line(&mut line) {
        Ok(n) if n > 0 => {
            // Keep the connection open: leak the stream into the caller's scope via a thread
            // that holds it until the test ends.
            std::thread::spawn(move || {
                let _held = stream;
                std::thread::sleep(Duration::from_secs(30));
            });
            Some(line)
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limits_are_closed_before_the_banner() {
    let fx = Fx::new();
    let dir = fx.directory("Workday");
    let keys = fx.path("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let key = keygen(&keys, "a", "ed25519", None);
    let mut cfg = ServerConfig::new(&fx.path("data"));
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.max_connections = 3;
    cfg.max_connections_per_ip = 2;
    cfg.accounts = vec![SftpAccount {
        username: "acme".into(),
        directory_id: dir,
        keys: vec![parse_authorized_key(&public_line(&key)).unwrap()],
        policy: None,
    }];
    let server = idbridge_sftp::server::start(cfg, fx.processor.clone())
        .await
        .unwrap();
    let port = server.local_addr.port();
    let results = tokio::task::spawn_blocking(move || {
        let ip = |last| Ipv4Addr::new(127, 0, 0, last);
        vec![
            banner_from(port, ip(1)),
            banner_from(port, ip(1)),
            banner_from(port, ip(1)), // over the per-address limit
            banner_from(port, ip(2)),
            banner_from(port, ip(3)), // over the total
        ]
    })
    .await
    .unwrap();
    let admitted: Vec<bool> = results.iter().map(Option::is_some).collect();
    assert_eq!(admitted, [true, true, false, true, false], "{results:?}");
    assert!(results[0].as_deref().unwrap_or("").starts_with("SSH-2.0-"));
    server.shutdown().await;
}

fn sftp_ls(key: &Path, user: &str, port: u16) -> bool {
    Command::new(require("sftp"))
        .args(["-b", "-", "-i"])
        .arg(key)
        .args([
            "-P",
            &port.to_string(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("{user}@127.0.0.1"))
        .stdin(std::process::Stdio::null())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_with_too_many_refused_keys_is_locked_for_its_window() {
    let fx = Fx::new();
    let dir_a = fx.directory("Workday");
    let dir_b = fx.directory("Bamboo");
    let keys = fx.path("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let right_a = keygen(&keys, "right_a", "ed25519", None);
    let right_b = keygen(&keys, "right_b", "ed25519", None);
    let wrong = keygen(&keys, "wrong", "ed25519", None);
    let mut cfg = ServerConfig::new(&fx.path("data"));
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    const WINDOW: u64 = 4;
    cfg.failed_auth_limit = FailureLimit {
        max_failures: 2,
        window_secs: WINDOW,
    };
    cfg.accounts = vec![
        SftpAccount {
            username: "acme-a".into(),
            directory_id: dir_a,
            keys: vec![parse_authorized_key(&public_line(&right_a)).unwrap()],
            policy: None,
        },
        SftpAccount {
            username: "acme-b".into(),
            directory_id: dir_b,
            keys: vec![parse_authorized_key(&public_line(&right_b)).unwrap()],
            policy: None,
        },
    ];
    let server = idbridge_sftp::server::start(cfg, fx.processor.clone())
        .await
        .unwrap();
    let port = server.local_addr.port();
    tokio::task::spawn_blocking(move || {
        assert!(
            sftp_ls(&right_a, "acme-a", port),
            "the right key before any failure"
        );
        let started = Instant::now();
        assert!(!sftp_ls(&wrong, "acme-a", port));
        assert!(!sftp_ls(&wrong, "acme-a", port));
        // Locked: even the right key is refused...
        assert!(
            !sftp_ls(&right_a, "acme-a", port),
            "right key served while locked"
        );
        // ...but only for this account.
        assert!(
            sftp_ls(&right_b, "acme-b", port),
            "another account was locked too"
        );
        // After the window the right key works again.
        let wait = Duration::from_secs(WINDOW + 1).saturating_sub(started.elapsed());
        std::thread::sleep(wait);
        assert!(
            sftp_ls(&right_a, "acme-a", port),
            "still locked after the window"
        );
    })
    .await
    .unwrap();
    server.shutdown().await;
}
