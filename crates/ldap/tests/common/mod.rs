//! Test peers and fixtures: a private OpenLDAP `slapd` on a loopback port (temp config and
//! database, stopped by PID on drop) and a directory engine over a real sled store.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idbridge_directory::{
    DirectoryEngine, DirectorySettings, PageRequest, StoredGroup, StoredUser,
};
use idbridge_ldap::{Flavor, LdapSettings, LdapSource};
use idbridge_model::tag::{OrganizationDomainTag, OrganizationTag};
use idbridge_model::{
    new_id, DomainState, IdPrefix, Organization, OrganizationDomain, Timestamp,
    VerificationStrategy,
};
use idbridge_store::{ChangeSet, ExportRecord, SledStore, Store};

pub const SUFFIX: &str = "dc=example,dc=test";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=test";
pub const ADMIN_PW: &str = "secret";
const INSTALL_HINT: &str =
    "install the LDAP test peers with scripts/test-deps.sh (snippet scripts/test-deps.d/ldap.sh: apt slapd ldap-utils)";

/// Fails (never skips) when a peer binary is missing.
pub fn require(bin: &str) -> PathBuf {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/bin",
        "/usr/local/sbin",
    ] {
        let p = Path::new(dir).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!("`{bin}` not found: {INSTALL_HINT}");
}

/// The suffix entry and the OUs every test uses.
pub fn base_ldif() -> String {
    format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
         dn: ou=People,{SUFFIX}\nobjectClass: organizationalUnit\nou: People\n\n\
         dn: ou=Groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: Groups\n\n\
         dn: ou=Former,{SUFFIX}\nobjectClass: organizationalUnit\nou: Former\n\n\
         dn: ou=Empty,{SUFFIX}\nobjectClass: organizationalUnit\nou: Empty\n\n"
    )
}

/// A second port for ldaps:// next to the plain one (free_port's neighbour is free enough on
/// loopback in tests; slapd fails loudly if not).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("addr").port()
}

/// Optional TLS material for slapd.
pub struct SlapdTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A private slapd.
pub struct Slapd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub url: String,
    ldaps_port: u16,
    pid: Option<i32>,
}

impl Slapd {
    pub fn start() -> Slapd {
        Self::start_with(None)
    }

    pub fn start_with(tls: Option<&SlapdTls>) -> Slapd {
        let dir = Self::configure(tls);
        let s = Self::launch(dir, tls.is_some());
        s.add(&base_ldif());
        s
    }

    /// Loads `ldif` (which must include [`base_ldif`]) offline with `slapadd -q`, then starts.
    pub fn start_loaded(ldif: &Path) -> Slapd {
        let dir = Self::configure(None);
        let out = Command::new(require("slapadd"))
            .arg("-q")
            .arg("-f")
            .arg(dir.path().join("slapd.conf"))
            .arg("-l")
            .arg(ldif)
            .output()
            .expect("slapadd");
        assert!(
            out.status.success(),
            "slapadd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self::launch(dir, false)
    }

    fn configure(tls: Option<&SlapdTls>) -> tempfile::TempDir {
        require("slapd");
        require("ldapmodify");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("db")).expect("db dir");
        let mut tls_conf = String::new();
        if let Some(t) = tls {
            std::fs::write(d.join("ca.pem"), &t.ca_pem).expect("ca");
            std::fs::write(d.join("cert.pem"), &t.cert_pem).expect("cert");
            std::fs::write(d.join("key.pem"), &t.key_pem).expect("key");
            tls_conf = format!(
                "TLSCACertificateFile {0}/ca.pem\nTLSCertificateFile {0}/cert.pem\nTLSCertificateKeyFile {0}/key.pem\n",
                d.display()
            );
        }
        let conf = format!(
            r#"include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
moduleload syncprov
moduleload refint
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
sizelimit unlimited
{tls_conf}
database mdb
maxsize 4294967296
suffix "{SUFFIX}"
rootdn "{ADMIN_DN}"
rootpw {ADMIN_PW}
directory {dir}/db
dbnosync
index objectClass eq
index entryUUID,entryCSN eq
index uid eq
index member,uniqueMember eq
limits dn.exact="{ADMIN_DN}" size=unlimited time=unlimited
overlay memberof
overlay refint
refint_attributes member uniqueMember
overlay syncprov
"#,
            dir = d.display()
        );
        std::fs::write(d.join("slapd.conf"), conf).expect("conf");
        dir
    }

    /// Starts slapd on free loopback ports. A port found free can be taken by another test
    /// before slapd binds it (slapd then exits at once), so a failed start is retried on new
    /// ports a few times.
    fn launch(dir: tempfile::TempDir, tls: bool) -> Slapd {
        let d = dir.path();
        let mut attempt = 0;
        let (port, ldaps_port, url) = loop {
            attempt += 1;
            let (port, ldaps_port) = (free_port(), free_port());
            let url = format!("ldap://127.0.0.1:{port}");
            let out = Command::new(require("slapd"))
                .arg("-f")
                .arg(d.join("slapd.conf"))
                .arg("-h")
                .arg(if tls {
                    format!("{url}/ ldaps://127.0.0.1:{ldaps_port}/")
                } else {
                    format!("{url}/")
                })
                .output()
                .expect("run slapd");
            if out.status.success() && port != ldaps_port {
                break (port, ldaps_port, url);
            }
            assert!(
                attempt < 4,
                "slapd failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let mut s = Slapd {
            dir,
            port,
            url,
            ldaps_port,
            pid: None,
        };
        s.wait_ready();
        s
    }

    /// The `ldaps://` URL (served only when started with TLS material).
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let pidfile = self.dir.path().join("slapd.pid");
        loop {
            if self.pid.is_none() {
                if let Ok(p) = std::fs::read_to_string(&pidfile) {
                    self.pid = p.trim().parse().ok();
                }
            }
            if self.pid.is_some() && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "slapd did not come up on {}",
                self.url
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Applies LDIF with `ldapmodify` (`-a` adds entries without a changetype).
    pub fn modify(&self, ldif: &str, add: bool) {
        let mut cmd = Command::new(require("ldapmodify"));
        cmd.args(["-x", "-H", &self.url, "-D", ADMIN_DN, "-w", ADMIN_PW]);
        if add {
            cmd.arg("-a");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ldapmodify");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(ldif.as_bytes())
            .expect("write ldif");
        let out = child.wait_with_output().expect("ldapmodify wait");
        assert!(
            out.status.success(),
            "ldapmodify failed: {}\n{ldif}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn add(&self, ldif: &str) {
        self.modify(ldif, true);
    }

    /// The daemon's pid (from its pidfile).
    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// Hard-stops the server (SIGKILL): the "server died" case.
    pub fn kill(&mut self) {
        if let Some(pid) = self.pid.take() {
            // SAFETY: plain kill(2) on the pid our own slapd wrote.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            // SAFETY: signal 0 only probes for existence.
            while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            // SAFETY: as above.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            // SAFETY: signal 0 only probes for existence.
            while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn settings(&self) -> LdapSettings {
        let mut s = LdapSettings::new(
            self.url.clone(),
            Flavor::Openldap,
            format!("ou=People,{SUFFIX}"),
        );
        s.allow_plain = true;
        s.bind_dn = Some(ADMIN_DN.into());
        let pw = self.dir.path().join("bind.pw");
        std::fs::write(&pw, format!("{ADMIN_PW}\n")).expect("pw file");
        s.bind_password_file = Some(pw);
        s.group_base_dns = vec![format!("ou=Groups,{SUFFIX}")];
        s.timeouts.connect_secs = 3;
        s.timeouts.operation_secs = 5;
        s
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn person(uid: &str, given: &str, sn: &str) -> String {
    format!(
        "dn: uid={uid},ou=People,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {given} {sn}\n\
         givenName: {given}\nsn: {sn}\nmail: {uid}@example.test\ntitle: Engineer\n\n"
    )
}

/// Engine + store fixture.
pub struct Fx {
    _dir: tempfile::TempDir,
    pub store: Arc<SledStore>,
    pub engine: Arc<DirectoryEngine>,
    pub org: Organization,
}

impl Fx {
    pub fn new() -> Fx {
        let dir = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("tempdir");
        let store = Arc::new(SledStore::open(dir.path()).expect("open store"));
        let engine = Arc::new(DirectoryEngine::new(store.clone()));
        let org_id = new_id(IdPrefix::Organization);
        let now = Timestamp::now();
        let org = Organization {
            object: OrganizationTag,
            id: org_id.clone(),
            name: "Example".into(),
            domains: vec![OrganizationDomain {
                object: OrganizationDomainTag,
                id: new_id(IdPrefix::OrganizationDomain),
                organization_id: org_id.clone(),
                domain: "example.test".into(),
                state: DomainState::Verified,
                verification_strategy: VerificationStrategy::Manual,
                verification_token: None,
                verification_prefix: None,
                created_at: now,
                updated_at: now,
            }],
            metadata: BTreeMap::new(),
            external_id: None,
            stripe_customer_id: None,
            allow_profiles_outside_organization: false,
            created_at: now,
            updated_at: now,
        };
        let mut cs = ChangeSet::new();
        cs.put_json("organizations", org_id, &org).expect("json");
        store.commit(cs).expect("commit org");
        Fx {
            _dir: dir,
            store,
            engine,
            org,
        }
    }

    pub fn ldap_dir(&self, settings: LdapSettings) -> LdapSource {
        let (rec, _) = self
            .engine
            .create_directory(
                &self.org.id,
                "Corp LDAP",
                idbridge_ldap::DIRECTORY_TYPE,
                DirectorySettings::default(),
            )
            .expect("create directory");
        LdapSource {
            directory_id: rec.directory.id,
            settings,
        }
    }

    pub fn last_seq(&self) -> u64 {
        self.store.last_event_seq().expect("seq")
    }

    /// Event names after `seq`.
    pub fn kinds_after(&self, seq: u64) -> Vec<String> {
        self.store
            .events_after(seq, 10_000_000)
            .expect("events")
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    pub fn events_after(&self, seq: u64) -> Vec<serde_json::Value> {
        self.store
            .events_after(seq, 10_000_000)
            .expect("events")
            .into_iter()
            .map(|e| serde_json::from_slice(&e.body).expect("event json"))
            .collect()
    }

    pub fn users(&self, dir: &str) -> Vec<StoredUser> {
        let mut out = Vec::new();
        let mut page = PageRequest {
            limit: 100,
            order: idbridge_directory::Order::Asc,
            cursor: idbridge_directory::Cursor::None,
        };
        loop {
            let p = self
                .engine
                .list_users(dir, None, &page)
                .expect("list users");
            out.extend(p.data);
            match p.after {
                Some(a) => page.cursor = idbridge_directory::Cursor::After(a),
                None => return out,
            }
        }
    }

    pub fn groups(&self, dir: &str) -> Vec<StoredGroup> {
        self.engine
            .list_groups(
                dir,
                None,
                &PageRequest {
                    limit: 1000,
                    order: idbridge_directory::Order::Asc,
                    cursor: idbridge_directory::Cursor::None,
                },
            )
            .expect("list groups")
            .data
    }

    /// Usernames of a group's members, sorted (all pages).
    pub fn members(&self, dir: &str, group_name: &str) -> Vec<String> {
        let g = self
            .groups(dir)
            .into_iter()
            .find(|g| g.group.name == group_name)
            .unwrap_or_else(|| panic!("group {group_name} missing"));
        let mut names: Vec<String> = Vec::new();
        let mut page = PageRequest {
            limit: 100,
            order: idbridge_directory::Order::Asc,
            cursor: idbridge_directory::Cursor::None,
        };
        loop {
            let p = self
                .engine
                .list_users(dir, Some(&g.group.id), &page)
                .expect("members");
            names.extend(p.data.into_iter().filter_map(|u| u.user.username));
            match p.after {
                Some(a) => page.cursor = idbridge_directory::Cursor::After(a),
                None => break,
            }
        }
        names.sort();
        names
    }

    pub fn usernames(&self, dir: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .users(dir)
            .into_iter()
            .filter_map(|u| u.user.username)
            .collect();
        v.sort();
        v
    }

    /// Every engine row (sync state excluded), for "nothing changed" checks.
    pub fn rows(&self) -> BTreeMap<(String, String), Vec<u8>> {
        let mut out = BTreeMap::new();
        self.store
            .export(&mut |r| {
                if let ExportRecord::Entry { table, key, value } = r {
                    if table != idbridge_ldap::state::STATE_TABLE {
                        out.insert((table, key), value);
                    }
                }
                Ok(())
            })
            .expect("export");
        out
    }
}
