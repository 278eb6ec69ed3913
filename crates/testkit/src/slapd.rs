//! A private OpenLDAP `slapd` on free loopback ports: temp config and MDB database under the
//! `dc=example,dc=test` suffix (with `ou=People`, `ou=Groups`, `ou=Former`, `ou=Empty`), the
//! memberof and refint overlays (deleting a user removes it from its groups, as on a production
//! server), optionally syncprov (RFC 4533) and ldaps. Changed through the real `ldapmodify`,
//! stopped by PID on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{find_bin, ldapmodify, PeerError};

/// The directory suffix.
pub const LDAP_SUFFIX: &str = "dc=example,dc=test";
/// The root DN (bind with [`LDAP_ADMIN_PW`]).
pub const LDAP_ADMIN_DN: &str = "cn=admin,dc=example,dc=test";
/// The root DN's password.
pub const LDAP_ADMIN_PW: &str = "secret";

const HINT: &str = "install the LDAP test peers with scripts/test-deps.sh \
     (snippet scripts/test-deps.d/ldap.sh: apt slapd ldap-utils)";

fn bin(name: &str) -> Result<PathBuf, PeerError> {
    find_bin(name, HINT)
}

/// A TCP port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> Result<u16, PeerError> {
    let l =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(PeerError::io("bind 127.0.0.1:0"))?;
    Ok(l.local_addr().map_err(PeerError::io("local addr"))?.port())
}

/// The suffix entry and the OUs every test uses.
pub fn ldap_base_ldif() -> String {
    format!(
        "dn: {LDAP_SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
         dn: ou=People,{LDAP_SUFFIX}\nobjectClass: organizationalUnit\nou: People\n\n\
         dn: ou=Groups,{LDAP_SUFFIX}\nobjectClass: organizationalUnit\nou: Groups\n\n\
         dn: ou=Former,{LDAP_SUFFIX}\nobjectClass: organizationalUnit\nou: Former\n\n\
         dn: ou=Empty,{LDAP_SUFFIX}\nobjectClass: organizationalUnit\nou: Empty\n\n"
    )
}

/// An `inetOrgPerson` under `ou=People` (mail `<uid>@example.test`).
pub fn ldap_person(uid: &str, given: &str, sn: &str) -> String {
    format!(
        "dn: uid={uid},ou=People,{LDAP_SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\n\
         cn: {given} {sn}\ngivenName: {given}\nsn: {sn}\nmail: {uid}@example.test\n\
         title: Engineer\n\n"
    )
}

/// A `groupOfNames` under `ou=Groups` with these member uids (from `ou=People`).
pub fn ldap_group(cn: &str, member_uids: &[&str]) -> String {
    let mut s =
        format!("dn: cn={cn},ou=Groups,{LDAP_SUFFIX}\nobjectClass: groupOfNames\ncn: {cn}\n");
    for uid in member_uids {
        s.push_str(&format!("member: uid={uid},ou=People,{LDAP_SUFFIX}\n"));
    }
    s.push('\n');
    s
}

/// TLS material for an ldaps:// listener.
pub struct SlapdTls {
    /// CA certificate (PEM).
    pub ca_pem: String,
    /// Server certificate (PEM).
    pub cert_pem: String,
    /// Server key (PEM).
    pub key_pem: String,
}

/// How the test database offers RFC 4533 (the syncprov overlay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncProv {
    /// The module is not even loaded: the root DSE does not list the Sync Request control.
    Unloaded,
    /// The module is loaded (the root DSE lists the control) but the database has no overlay.
    Off,
    /// syncprov without a session log: a refresh with a cookie answers with a present phase.
    On,
    /// syncprov with a session log: recent deletions come as a delete phase.
    SessionLog,
}

/// A running private slapd.
pub struct Slapd {
    dir: tempfile::TempDir,
    port: u16,
    url: String,
    ldaps_port: u16,
    pid: Option<i32>,
}

impl Slapd {
    /// syncprov on, no TLS, the base entries added.
    pub fn start() -> Result<Slapd, PeerError> {
        Self::start_with(None, SyncProv::On)
    }

    /// With optional ldaps and a chosen syncprov setup; the base entries added.
    pub fn start_with(tls: Option<&SlapdTls>, sync: SyncProv) -> Result<Slapd, PeerError> {
        let dir = Self::configure(tls, sync)?;
        let s = Self::launch(dir, tls.is_some())?;
        s.add(&ldap_base_ldif())?;
        Ok(s)
    }

    /// Loads `ldif` (which must include [`ldap_base_ldif`]) offline with `slapadd -q` — far
    /// faster than LDAP adds for large trees — then starts.
    pub fn start_loaded(ldif: &Path, sync: SyncProv) -> Result<Slapd, PeerError> {
        let dir = Self::configure(None, sync)?;
        let out = Command::new(bin("slapadd")?)
            .arg("-q")
            .arg("-f")
            .arg(dir.path().join("slapd.conf"))
            .arg("-l")
            .arg(ldif)
            .output()
            .map_err(PeerError::io("slapadd"))?;
        if !out.status.success() {
            return Err(PeerError::Failed(format!(
                "slapadd failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Self::launch(dir, false)
    }

    fn configure(tls: Option<&SlapdTls>, sync: SyncProv) -> Result<tempfile::TempDir, PeerError> {
        bin("slapd")?;
        bin("ldapmodify")?;
        let dir = tempfile::tempdir().map_err(PeerError::io("temp dir"))?;
        let d = dir.path();
        std::fs::create_dir_all(d.join("db")).map_err(PeerError::io("db dir"))?;
        let mut tls_conf = String::new();
        if let Some(t) = tls {
            for (file, pem) in [
                ("ca.pem", &t.ca_pem),
                ("cert.pem", &t.cert_pem),
                ("key.pem", &t.key_pem),
            ] {
                std::fs::write(d.join(file), pem).map_err(PeerError::io(file))?;
            }
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
{moduleload}
moduleload refint
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
sizelimit unlimited
{tls_conf}
database mdb
maxsize 4294967296
suffix "{LDAP_SUFFIX}"
rootdn "{LDAP_ADMIN_DN}"
rootpw {LDAP_ADMIN_PW}
directory {dir}/db
dbnosync
index objectClass eq
index entryUUID,entryCSN eq
index uid eq
index member,uniqueMember eq
limits dn.exact="{LDAP_ADMIN_DN}" size=unlimited time=unlimited
overlay memberof
overlay refint
refint_attributes member uniqueMember
{syncprov}
"#,
            dir = d.display(),
            moduleload = if sync == SyncProv::Unloaded {
                ""
            } else {
                "moduleload syncprov"
            },
            syncprov = match sync {
                SyncProv::Unloaded | SyncProv::Off => "",
                SyncProv::On => "overlay syncprov",
                SyncProv::SessionLog => "overlay syncprov\nsyncprov-sessionlog 1000",
            }
        );
        std::fs::write(d.join("slapd.conf"), conf).map_err(PeerError::io("slapd.conf"))?;
        Ok(dir)
    }

    /// Starts slapd on free loopback ports. A port found free can be taken by another test
    /// before slapd binds it (slapd then exits at once), so a failed start is retried on new
    /// ports a few times.
    fn launch(dir: tempfile::TempDir, tls: bool) -> Result<Slapd, PeerError> {
        let d = dir.path();
        let mut attempt = 0;
        let (port, ldaps_port, url) = loop {
            attempt += 1;
            let (port, ldaps_port) = (free_port()?, free_port()?);
            let url = format!("ldap://127.0.0.1:{port}");
            let out = Command::new(bin("slapd")?)
                .arg("-f")
                .arg(d.join("slapd.conf"))
                .arg("-h")
                .arg(if tls {
                    format!("{url}/ ldaps://127.0.0.1:{ldaps_port}/")
                } else {
                    format!("{url}/")
                })
                .output()
                .map_err(PeerError::io("run slapd"))?;
            if out.status.success() && port != ldaps_port {
                break (port, ldaps_port, url);
            }
            if attempt >= 4 {
                return Err(PeerError::Failed(format!(
                    "slapd failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
        };
        let mut s = Slapd {
            dir,
            port,
            url,
            ldaps_port,
            pid: None,
        };
        s.wait_ready()?;
        Ok(s)
    }

    fn wait_ready(&mut self) -> Result<(), PeerError> {
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
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(PeerError::Failed(format!(
                    "slapd did not come up on {}",
                    self.url
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ldap://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `ldaps://` URL (served only when started with TLS material).
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    /// The server's temp dir (config, database; a place for test files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's pid (from its pidfile).
    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// A file holding the root DN's password (for `bind_password_file`).
    pub fn password_file(&self) -> Result<PathBuf, PeerError> {
        let p = self.dir.path().join("bind.pw");
        std::fs::write(&p, format!("{LDAP_ADMIN_PW}\n")).map_err(PeerError::io("password file"))?;
        Ok(p)
    }

    /// Applies LDIF with `ldapmodify` (`-a` adds entries without a changetype).
    pub fn modify(&self, ldif: &str, add: bool) -> Result<(), PeerError> {
        let tool = bin("ldapmodify")?;
        ldapmodify(&tool, &self.url, LDAP_ADMIN_DN, LDAP_ADMIN_PW, ldif, add)
    }

    /// Adds entries (`ldapmodify -a`).
    pub fn add(&self, ldif: &str) -> Result<(), PeerError> {
        self.modify(ldif, true)
    }

    /// `ldapsearch` under `base` as the root DN: each entry's attributes (values unwrapped,
    /// base64 values left as they are), in the server's order.
    pub fn search(
        &self,
        base: &str,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Vec<Vec<(String, String)>>, PeerError> {
        let out = Command::new(bin("ldapsearch")?)
            .args(["-LLL", "-x", "-o", "ldif-wrap=no", "-H", &self.url])
            .args(["-D", LDAP_ADMIN_DN, "-w", LDAP_ADMIN_PW, "-b", base, filter])
            .args(attrs)
            .stdin(Stdio::null())
            .output()
            .map_err(PeerError::io("ldapsearch"))?;
        if !out.status.success() {
            return Err(PeerError::Failed(format!(
                "ldapsearch -H {} -b {base} {filter}: {}",
                self.url,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .split("\n\n")
            .filter(|block| !block.trim().is_empty())
            .map(|block| {
                block
                    .lines()
                    .filter_map(|l| l.split_once(": "))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .collect())
    }

    /// Stops the server (SIGTERM) and starts it again on the same port(s) and data: every
    /// open connection is closed (the reconnect case).
    pub fn restart(&mut self) -> Result<(), PeerError> {
        self.stop();
        let d = self.dir.path();
        let _ = std::fs::remove_file(d.join("slapd.pid"));
        let tls = d.join("cert.pem").exists();
        let listen = if tls {
            format!("{}/ {}/", self.url, self.ldaps_url())
        } else {
            format!("{}/", self.url)
        };
        let out = Command::new(bin("slapd")?)
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .arg("-h")
            .arg(listen)
            .output()
            .map_err(PeerError::io("run slapd"))?;
        if !out.status.success() {
            return Err(PeerError::Failed(format!(
                "slapd restart failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        self.wait_ready()
    }

    /// Hard-stops the server (SIGKILL): the "server died" case.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
    }

    /// Stops the server (SIGTERM, then waits up to 10 s).
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
    }

    #[allow(unsafe_code)] // kill(2) on our own slapd
    fn signal(&mut self, sig: i32) {
        if let Some(pid) = self.pid.take() {
            // SAFETY: plain kill(2) on the pid our own slapd wrote into its pidfile.
            unsafe {
                libc::kill(pid, sig);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            // SAFETY: signal 0 only probes whether the process still exists.
            while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
