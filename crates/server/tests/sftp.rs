//! SFTP directories in the binary: the config sections are validated with the key named, and
//! `idbridge directory import <id> <dir>` applies local CSV files and prints a summary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::sync::Arc;

use idbridge_directory::{DirectorySettings, PageRequest};
use idbridge_sso::organizations::{NewOrganization, Organizations};
use idbridge_store::{SqliteStore, Store};

fn idbridge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_idbridge"))
}

#[test]
fn config_check_refuses_a_weak_sftp_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    // A 1024-bit RSA key (ssh-keygen -t rsa -b 1024).
    let weak = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQCwwkdAyVpetHkwG6NbMFcwBrYvXrS9GpD3tv6KoWAy4P2gc7xzCvZz+yCgT9dxyb+NMwUy3XkX3ao+bCaKcvyyWQT/pQT9EgeJ7GUtrh7tM5Coy4Tq3omlNG1fQIeBcy40P9PdawC7pOIEOiReknEQWp+80t0DSkSd70P2QwptAQ== weak";
    std::fs::write(
        &file,
        format!(
            "[[sftp_directories]]\ndirectory_id = \"directory_01H\"\nusername = \"acme\"\nauthorized_keys = [\"{weak}\"]\n"
        ),
    )
    .unwrap();
    let out = idbridge()
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "weak key accepted");
    assert!(
        stderr.contains("sftp_directories[0].authorized_keys[0]"),
        "{stderr}"
    );
}

#[test]
fn directory_import_applies_local_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir_id = {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&data).unwrap());
        let org = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(Organizations::new(store.clone()).create(NewOrganization {
                name: "Acme".into(),
                ..NewOrganization::default()
            }))
            .unwrap();
        let org_id = org.id;
        let engine = idbridge::directory_engine(store.clone());
        let (rec, _) = engine
            .create_directory(&org_id, "HR", "sftp", DirectorySettings::default())
            .unwrap();
        rec.directory.id
    };
    let csv = tmp.path().join("csv");
    std::fs::create_dir_all(&csv).unwrap();
    std::fs::write(
        csv.join("users.csv"),
        "user_id,first_name,last_name,email\nu1,A,B,a@x.com\nu2,C,D,c@x.com\n",
    )
    .unwrap();
    std::fs::write(
        csv.join("user_groups.csv"),
        "group_name,user_id\nStaff,u1\n",
    )
    .unwrap();
    let out = idbridge()
        .env("IDBRIDGE_DATA_DIR", &data)
        .args(["directory", "import", &dir_id])
        .arg(&csv)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("status:    Applied"), "{stdout}");
    assert!(stdout.contains("users +2"), "{stdout}");
    // The files are left in place.
    assert!(csv.join("users.csv").exists());

    // A bad file: non-zero exit, the report on stderr, nothing changed.
    std::fs::write(
        csv.join("users.csv"),
        "user_id,first_name,last_name,email\nu1,A,B,a@x.com\nu1,C,D,c@x.com\n",
    )
    .unwrap();
    let out = idbridge()
        .env("IDBRIDGE_DATA_DIR", &data)
        .args(["directory", "import", &dir_id])
        .arg(&csv)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("users.csv:3: duplicate user_id \"u1\""),
        "{stderr}"
    );
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&data).unwrap());
    let engine = idbridge::directory_engine(store);
    let page = PageRequest {
        limit: 10,
        ..PageRequest::default()
    };
    assert_eq!(
        engine.list_users(&dir_id, None, &page).unwrap().data.len(),
        2
    );
}
