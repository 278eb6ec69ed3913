//! The embedded SFTP server driven by OpenSSH's real `sftp` client in batch mode: deliveries
//! (first, update, removal, rejected with a readable report), key policy, password refusal,
//! and isolation between two directories' accounts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use idbridge_sftp::{parse_authorized_key, DeliveryStatus, ServerConfig, SftpAccount};

struct Client {
    key: PathBuf,
    user: String,
    port: u16,
    work: PathBuf,
}

impl Client {
    /// Runs a batch; returns the output (check `status`).
    fn batch(&self, lines: &str) -> Output {
        let batch = self.work.join("batch.txt");
        std::fs::write(&batch, lines).unwrap();
        Command::new(require("sftp"))
            .current_dir(&self.work)
            .args(["-b"])
            .arg(&batch)
            .arg("-i")
            .arg(&self.key)
            .args([
                "-P",
                &self.port.to_string(),
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
            .arg(format!("{}@127.0.0.1", self.user))
            .output()
            .expect("run sftp")
    }

    fn ok(&self, lines: &str) -> String {
        let out = self.batch(lines);
        assert!(
            out.status.success(),
            "sftp batch failed: {lines}\n{}",
            text(&out)
        );
        text(&out)
    }

    fn fails(&self, lines: &str) -> String {
        let out = self.batch(lines);
        assert!(
            !out.status.success(),
            "sftp batch should fail: {lines}\n{}",
            text(&out)
        );
        text(&out)
    }

    fn put(&self, name: &str, content: &str) {
        std::fs::write(self.work.join(name), content).unwrap();
        self.ok(&format!("put {name}\n"));
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn users_csv(n: u32, title: &str) -> String {
    let mut s = String::from("user_id,first_name,last_name,email,job_title\n");
    for i in 1..=n {
        s.push_str(&format!("e{i},F{i},L{i},e{i}@foo-corp.com,{title}\n"));
    }
    s
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

fn client(work_root: &Path, name: &str, key: PathBuf, user: &str, port: u16) -> Client {
    let work = work_root.join(name);
    std::fs::create_dir_all(&work).unwrap();
    Client {
        key,
        user: user.to_owned(),
        port,
        work,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_sftp_push_deliveries_and_isolation() {
    require("sftp");
    let fx = Fx::new();
    let dir_a = fx.directory("Workday");
    let dir_b = fx.directory("BambooHR");
    let keys = fx.path("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let key_a = keygen(&keys, "a_ed25519", "ed25519", None);
    let key_b = keygen(&keys, "b_ecdsa", "ecdsa", Some(256));
    let key_b2 = keygen(&keys, "b_rsa", "rsa", Some(3072));
    let weak = keygen(&keys, "weak_rsa", "rsa", Some(1024));
    assert!(
        parse_authorized_key(&public_line(&weak)).is_err(),
        "RSA-1024 accepted"
    );

    let mut cfg = ServerConfig::new(&fx.path("data"));
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.debounce = Duration::from_millis(300);
    cfg.max_files = 5;
    cfg.max_file_bytes = 64 * 1024;
    cfg.accounts = vec![
        SftpAccount {
            username: "acme-workday".into(),
            directory_id: dir_a.clone(),
            keys: vec![parse_authorized_key(&public_line(&key_a)).unwrap()],
            policy: None,
        },
        SftpAccount {
            username: "acme-bamboo".into(),
            directory_id: dir_b.clone(),
            keys: vec![
                parse_authorized_key(&public_line(&key_b)).unwrap(),
                parse_authorized_key(&public_line(&key_b2)).unwrap(),
            ],
            policy: None,
        },
    ];
    let inbox_root = cfg.inbox_root.clone();
    let host_key_path = cfg.host_key_path.clone();
    let server = idbridge_sftp::server::start(cfg, fx.processor.clone())
        .await
        .expect("start");
    let port = server.local_addr.port();
    let work = fx.path("work");
    let a = client(&work, "a", key_a.clone(), "acme-workday", port);
    let b = client(&work, "b", key_b.clone(), "acme-bamboo", port);
    let b_rsa = client(&work, "b2", key_b2.clone(), "acme-bamboo", port);

    // First delivery: three files uploaded together → one snapshot.
    let fx = std::sync::Arc::new(fx);
    {
        let a = a.clone_for_thread();
        blocking(move || {
            std::fs::write(a.work.join("users.csv"), users_csv(12, "Engineer")).unwrap();
            std::fs::write(a.work.join("groups.csv"), "group_name\nStaff\n").unwrap();
            std::fs::write(
                a.work.join("user_groups.csv"),
                "group_name,user_id\nStaff,e1\nStaff,e2\n",
            )
            .unwrap();
            a.ok("put users.csv\nput groups.csv\nput user_groups.csv\nls -l\n");
        })
        .await;
    }
    let f = fx.clone();
    let (d, ids) = blocking({
        let dir_a = dir_a.clone();
        move || (f.wait_deliveries(&dir_a, 1), f.user_ids(&dir_a))
    })
    .await;
    assert_eq!(d.len(), 1, "one snapshot for three files: {d:?}");
    assert_eq!(d[0].status, DeliveryStatus::Applied, "{:?}", d[0]);
    assert_eq!(d[0].files.len(), 3);
    assert_eq!(ids.len(), 12);
    assert_eq!(fx.group_names(&dir_a), vec!["Staff"]);

    // Update (overwrite own file) and a removal (1 of 12 < 10%... 8.3%).
    let seq = fx.last_seq();
    {
        let a = a.clone_for_thread();
        blocking(move || {
            let mut v2 = users_csv(11, "Engineer");
            v2 = v2.replace(
                "e3,F3,L3,e3@foo-corp.com,Engineer",
                "e3,F3,L3,e3@foo-corp.com,Manager",
            );
            a.put("users.csv", &v2);
        })
        .await;
    }
    let f = fx.clone();
    let dir = dir_a.clone();
    let d = blocking(move || f.wait_deliveries(&dir, 2)).await;
    assert_eq!(d[0].status, DeliveryStatus::Applied, "{:?}", d[0]);
    let c = d[0].changes.unwrap();
    assert_eq!(
        (c.users_updated, c.users_deleted, c.groups_deleted),
        (1, 1, 1),
        "{c:?}"
    );
    let kinds = fx.event_kinds_after(seq);
    assert!(
        kinds.contains(&"dsync.user.updated".into())
            && kinds.contains(&"dsync.user.deleted".into()),
        "{kinds:?}"
    );
    let e3 = fx
        .users(&dir_a)
        .into_iter()
        .find(|u| u.user.idp_id == "e3")
        .unwrap();
    assert_eq!(e3.user.job_title.as_deref(), Some("Manager"));

    // A rejected file: nothing changes, the uploader reads the report over SFTP.
    let before = fx.users(&dir_a);
    let seq = fx.last_seq();
    {
        let a = a.clone_for_thread();
        blocking(move || {
            a.put(
                "users.csv",
                &format!(
                    "{}e2,Dup,Licate,dup@foo-corp.com,X\n",
                    users_csv(11, "Engineer")
                ),
            );
        })
        .await;
    }
    let f = fx.clone();
    let dir = dir_a.clone();
    let d = blocking(move || f.wait_deliveries(&dir, 3)).await;
    assert_eq!(d[0].status, DeliveryStatus::Rejected, "{:?}", d[0]);
    assert_eq!(fx.users(&dir_a), before);
    assert_eq!(fx.event_kinds_after(seq), vec!["dsync.delivery_rejected"]);
    let report_rel = d[0].report.clone().unwrap();
    {
        let a = a.clone_for_thread();
        let rel = report_rel.clone();
        blocking(move || {
            let listing = a.ok("ls rejected\n");
            assert!(
                listing.contains(rel.trim_start_matches("rejected/")),
                "{listing}"
            );
            a.ok(&format!("get {rel} report.txt\n"));
            let report = std::fs::read_to_string(a.work.join("report.txt")).unwrap();
            assert!(
                report.contains("users.csv:13: duplicate user_id \"e2\""),
                "{report}"
            );
            // Reports and archives are read-only for the uploader.
            a.fails(&format!("rm {rel}\n"));
            a.fails("put report.txt rejected/mine.txt\n");
        })
        .await;
    }

    // Directory B (two key types) delivers independently.
    {
        let (b, b_rsa) = (b.clone_for_thread(), b_rsa.clone_for_thread());
        blocking(move || {
            b.put("notes.txt", "secret of B\n");
            b_rsa.put(
                "users.csv",
                "user_id,first_name,last_name,email\nb1,Bo,B,bo@b.com\n",
            );
        })
        .await;
    }
    let f = fx.clone();
    let dir = dir_b.clone();
    let d = blocking(move || f.wait_deliveries(&dir, 1)).await;
    assert_eq!(d[0].status, DeliveryStatus::Applied, "{:?}", d[0]);
    assert_eq!(fx.user_ids(&dir_b), vec!["b1"]);
    assert_eq!(fx.user_ids(&dir_a).len(), 11, "B's delivery touched A");

    // Isolation: A cannot read, list or write B's files, nor escape.
    {
        let a = a.clone_for_thread();
        let inbox_root = inbox_root.clone();
        let host_key_path = host_key_path.clone();
        blocking(move || {
            std::fs::write(a.work.join("evil.csv"), "x\n").unwrap();
            for cmd in [
                "get ../acme-bamboo/notes.txt stolen.txt",
                "get /../acme-bamboo/notes.txt stolen.txt",
                "ls ../acme-bamboo",
                "ls ..",
                "cd ..",
                "put evil.csv ../acme-bamboo/users.csv",
                "put evil.csv /../acme-bamboo/users.csv",
                "get /etc/passwd stolen.txt",
                &format!("get {} stolen.txt", host_key_path.display()),
                "put evil.csv /etc/evil.csv",
                "ln -s /etc/passwd link.txt",
                "ln -s ../acme-bamboo/notes.txt link.txt",
                "mkdir sub",
                "rename archive stolen",
            ] {
                let out = a.fails(&format!("{cmd}\n"));
                assert!(!out.contains("secret of B"), "{cmd}: {out}");
            }
            assert!(!a.work.join("stolen.txt").exists());
            assert!(!inbox_root.join("acme-bamboo").join("users.csv").exists());
            assert!(!inbox_root.join("acme-workday").join("link.txt").exists());
            // `ls /` shows only A's own inbox.
            let listing = a.ok("ls /\n");
            assert!(
                !listing.contains("notes.txt") && !listing.contains("acme-bamboo"),
                "{listing}"
            );
            // A symlink planted on disk (by anyone) is never followed.
            std::os::unix::fs::symlink(
                inbox_root.join("acme-bamboo").join("notes.txt"),
                inbox_root.join("acme-workday").join("planted.txt"),
            )
            .unwrap();
            let out = a.fails("get planted.txt stolen.txt\n");
            assert!(!out.contains("secret of B"), "{out}");
            assert!(!a.work.join("stolen.txt").exists());
            a.fails("put evil.csv planted.txt\n");
            assert_eq!(
                std::fs::read_to_string(inbox_root.join("acme-bamboo").join("notes.txt")).unwrap(),
                "secret of B\n"
            );
            std::fs::remove_file(inbox_root.join("acme-workday").join("planted.txt")).unwrap();
        })
        .await;
    }

    // Wrong user for a key, passwords, quotas.
    {
        let (a, b) = (a.clone_for_thread(), b.clone_for_thread());
        blocking(move || {
            let mut wrong = a.clone_for_thread();
            wrong.user = "acme-bamboo".into();
            wrong.fails("ls\n");
            let _ = b;
            let out = Command::new(require("sftp"))
                .args(["-b", "/dev/null", "-P", &a.port.to_string()])
                .args([
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                ])
                .args([
                    "-o",
                    "PreferredAuthentications=password,keyboard-interactive",
                    "-o",
                    "BatchMode=yes",
                ])
                .arg("acme-workday@127.0.0.1")
                .output()
                .unwrap();
            assert!(!out.status.success(), "password login: {}", text(&out));
            // Size quota (64 KiB).
            std::fs::write(a.work.join("big.bin"), vec![b'x'; 100 * 1024]).unwrap();
            a.fails("put big.bin\n");
            // File-count quota (5 files at the root).
            for i in 0..6 {
                std::fs::write(a.work.join(format!("f{i}.txt")), "x").unwrap();
            }
            let out =
                a.fails("put f0.txt\nput f1.txt\nput f2.txt\nput f3.txt\nput f4.txt\nput f5.txt\n");
            assert!(
                out.to_lowercase().contains("failure") || out.contains("quota"),
                "{out}"
            );
        })
        .await;
    }

    // The host key persists across restarts.
    let first = server.host_key.clone();
    server.shutdown().await;
    let again = idbridge_sftp::load_or_create_host_key(&host_key_path).unwrap();
    assert_eq!(again.public_key().key_data(), first.key_data());
}

impl Client {
    fn clone_for_thread(&self) -> Client {
        Client {
            key: self.key.clone(),
            user: self.user.clone(),
            port: self.port,
            work: self.work.clone(),
        }
    }
}
