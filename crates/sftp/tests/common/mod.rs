//! Shared fixtures: a real SqliteStore (the default backend) in a temp dir, an organization, an SFTP directory, key
//! generation with OpenSSH's ssh-keygen, and helpers that fail loudly when a peer is missing.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use idbridge_directory::{DirectoryEngine, DirectorySettings, PageRequest, StoredUser};
use idbridge_model::tag::OrganizationTag;
use idbridge_model::{new_id, IdPrefix, Organization, Timestamp};
use idbridge_sftp::{DeliveryRecord, Processor};
use idbridge_store::{ChangeSet, SqliteStore, Store, StoredEvent};

pub const INSTALL_HINT: &str =
    "run scripts/test-deps.sh (the SFTP snippet is scripts/test-deps.d/sftp.sh)";

pub struct Fx {
    pub tmp: tempfile::TempDir,
    pub store: Arc<SqliteStore>,
    pub engine: Arc<DirectoryEngine>,
    pub processor: Processor,
    pub org_id: String,
}

impl Fx {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("tempdir");
        let store = Arc::new(SqliteStore::open(&tmp.path().join("store")).expect("open store"));
        let org_id = new_id(IdPrefix::Organization);
        let now = Timestamp::now();
        let org = Organization {
            object: OrganizationTag,
            id: org_id.clone(),
            name: "Foo Corp".into(),
            domains: vec![],
            metadata: BTreeMap::new(),
            external_id: None,
            stripe_customer_id: None,
            allow_profiles_outside_organization: false,
            created_at: now,
            updated_at: now,
        };
        let orgs = Arc::new(idbridge_directory::FixedOrganizations::new([org]));
        let engine = Arc::new(DirectoryEngine::new(store.clone(), orgs));
        let processor = Processor::new(engine.clone());
        Fx {
            tmp,
            store,
            engine,
            processor,
            org_id,
        }
    }

    pub fn directory(&self, name: &str) -> String {
        self.engine
            .create_directory(&self.org_id, name, "sftp", DirectorySettings::default())
            .expect("create directory")
            .0
            .directory
            .id
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// All users of a directory (small test directories).
    pub fn users(&self, dir: &str) -> Vec<StoredUser> {
        let page = PageRequest {
            limit: 1000,
            ..PageRequest::default()
        };
        let mut v = self.engine.list_users(dir, None, &page).expect("list").data;
        v.sort_by(|a, b| a.user.idp_id.cmp(&b.user.idp_id));
        v
    }

    pub fn user_ids(&self, dir: &str) -> Vec<String> {
        self.users(dir).into_iter().map(|u| u.user.idp_id).collect()
    }

    pub fn group_names(&self, dir: &str) -> Vec<String> {
        let page = PageRequest {
            limit: 1000,
            ..PageRequest::default()
        };
        let mut v: Vec<String> = self
            .engine
            .list_groups(dir, None, &page)
            .expect("groups")
            .data
            .into_iter()
            .map(|g| g.group.name)
            .collect();
        v.sort();
        v
    }

    pub fn events(&self) -> Vec<StoredEvent> {
        self.store.events_after(0, 100_000).expect("events")
    }

    pub fn event_kinds_after(&self, seq: u64) -> Vec<String> {
        self.store
            .events_after(seq, 100_000)
            .expect("events")
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    pub fn last_seq(&self) -> u64 {
        self.store.last_event_seq().expect("seq")
    }

    pub fn deliveries(&self, dir: &str) -> Vec<DeliveryRecord> {
        idbridge_sftp::list_deliveries(self.store.as_ref(), dir, None, 100).expect("deliveries")
    }

    /// Waits until `dir` has `n` deliveries recorded.
    pub fn wait_deliveries(&self, dir: &str, n: usize) -> Vec<DeliveryRecord> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let d = self.deliveries(dir);
            if d.len() >= n {
                // A record is readable once applied, its events only once durable: a durable
                // commit of our own is a barrier after which both are visible.
                let mut barrier = ChangeSet::new();
                barrier.put("test.barrier", "wait_deliveries", Vec::new());
                self.store.commit(barrier).expect("barrier commit");
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for delivery {n} of {dir}: have {}",
                d.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Fails (never skips) when a peer binary is missing.
pub fn require(bin: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!("`{bin}` is not installed: {INSTALL_HINT}");
}

/// Generates a key pair with ssh-keygen; returns the private key path.
pub fn keygen(dir: &Path, name: &str, kind: &str, bits: Option<u32>) -> PathBuf {
    let path = dir.join(name);
    let mut cmd = Command::new(require("ssh-keygen"));
    cmd.args(["-q", "-N", "", "-C", name, "-t", kind, "-f"])
        .arg(&path);
    if let Some(b) = bits {
        cmd.args(["-b", &b.to_string()]);
    }
    let out = cmd.output().expect("ssh-keygen");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
    path
}

pub fn public_line(private: &Path) -> String {
    std::fs::read_to_string(private.with_extension("pub"))
        .or_else(|_| std::fs::read_to_string(format!("{}.pub", private.display())))
        .expect("public key")
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
}

pub const USERS_V1: &str = "user_id,first_name,last_name,email,department_name,job_title,badge\n\
u1,Ada,Lovelace,ada@foo-corp.com,Engineering,Engineer,B-1\n\
u2,Alan,Turing,alan@foo-corp.com,Research,Scientist,B-2\n\
u3,Grace,Hopper,grace@foo-corp.com,Engineering,Admiral,B-3\n";
pub const GROUPS_V1: &str = "group_name,description\nEngineering,Builders\nResearch,Thinkers\n";
pub const USER_GROUPS_V1: &str =
    "group_name,user_id\nEngineering,u1\nEngineering,u3\nResearch,u2\n";
