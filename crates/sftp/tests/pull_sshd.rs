//! Pull mode against a private OpenSSH sshd on loopback (own config, host keys, authorized
//! keys; inside `unshare -m` with a tmpfs /run for its privilege-separation folder): a pinned
//! key (and a pinned fingerprint) pulls a delivery; a different pinned key is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use idbridge_sftp::{pull_once, DeliveryStatus, HostKeyPin, PullConfig, PullError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_from_private_sshd_with_pinned_host_key() {
    let fx = Arc::new(Fx::new());
    let dir_id = fx.directory("Pulled HR");
    let base = fx.path("sshd");
    std::fs::create_dir_all(&base).unwrap();
    let host_key = keygen(&base, "ssh_host_ed25519_key", "ed25519", None);
    let other_host_key = keygen(&base, "other_host_key", "ed25519", None);
    let client_key = keygen(&base, "client_key", "ed25519", None);
    let authorized = base.join("authorized_keys");
    write(&authorized, &public_line(&client_key));
    let remote = base.join("outbox");
    std::fs::create_dir_all(&remote).unwrap();
    write(&remote.join("users.csv"), USERS_V1);
    write(&remote.join("groups.csv"), GROUPS_V1);
    write(&remote.join("user_groups.csv"), USER_GROUPS_V1);
    let sshd = idbridge_testkit::Sshd::start(&base, &host_key, &authorized).unwrap();
    let port = sshd.port;

    let cfg = PullConfig {
        directory_id: dir_id.clone(),
        host: "127.0.0.1".into(),
        port,
        username: "root".into(),
        private_key: Arc::new(idbridge_sftp::pull::load_private_key(&client_key).unwrap()),
        host_key: HostKeyPin::parse(&public_line(&host_key)).unwrap(),
        remote_dir: remote.display().to_string(),
        staging_dir: fx.path("staging"),
        max_file_bytes: 1 << 20,
        timeout: Duration::from_secs(20),
        remove_remote: false,
    };

    // A different pinned key: refused before authentication, nothing fetched or applied.
    let mut wrong = cfg.clone();
    wrong.host_key = HostKeyPin::parse(&public_line(&other_host_key)).unwrap();
    let err = pull_once(&wrong, &fx.processor).await.unwrap_err();
    assert!(matches!(err, PullError::HostKeyMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("host key mismatch"), "{err}");
    assert!(fx.deliveries(&dir_id).is_empty());
    assert!(!fx.path("staging").join("users.csv").exists());
    // A wrong fingerprint too.
    wrong.host_key =
        HostKeyPin::parse("SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
    assert!(matches!(
        pull_once(&wrong, &fx.processor).await.unwrap_err(),
        PullError::HostKeyMismatch { .. }
    ));

    // The right key: fetched and applied as one snapshot.
    let r = pull_once(&cfg, &fx.processor)
        .await
        .unwrap()
        .expect("a delivery");
    assert_eq!(r.status, DeliveryStatus::Applied, "{r:?}");
    assert_eq!(fx.user_ids(&dir_id), vec!["u1", "u2", "u3"]);
    assert_eq!(fx.group_names(&dir_id), vec!["Engineering", "Research"]);

    // Pinned by fingerprint, as `ssh-keygen -l -E sha256` prints it; an update is pulled.
    let out = Command::new(require("ssh-keygen"))
        .args(["-l", "-E", "sha256", "-f"])
        .arg(host_key.with_file_name("ssh_host_ed25519_key.pub"))
        .output()
        .unwrap();
    let fp = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    let mut by_fp = cfg.clone();
    by_fp.host_key = HostKeyPin::parse(&fp).unwrap();
    write(
        &remote.join("users.csv"),
        &USERS_V1.replace("Engineer,B-1", "Principal Engineer,B-1"),
    );
    let r = pull_once(&by_fp, &fx.processor).await.unwrap().unwrap();
    assert_eq!(r.status, DeliveryStatus::Applied, "{r:?}");
    assert_eq!(r.changes.unwrap().users_updated, 1);
    assert_eq!(fx.deliveries(&dir_id).len(), 2);
}
