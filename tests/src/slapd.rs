//! A private OpenLDAP `slapd` on a loopback port for end-to-end tests: temp config and MDB
//! database, the `dc=example,dc=test` suffix with `ou=People` and `ou=Groups`, changed through
//! the real `ldapmodify`, stopped by PID on drop.
//!
//! The same setup as `crates/ldap/tests/common` (memberof + refint, so deleting a user removes
//! it from its groups as on a production server), reduced to what the binary-level tests need.
//! A missing `slapd` or `ldapmodify` is an error naming `scripts/test-deps.sh`, never a skip.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::HarnessError;
use crate::server::free_port;

/// The directory suffix.
pub const LDAP_SUFFIX: &str = "dc=example,dc=test";
/// The root DN (bind with [`LDAP_ADMIN_PW`]).
pub const LDAP_ADMIN_DN: &str = "cn=admin,dc=example,dc=test";
/// The root DN's password.
pub const LDAP_ADMIN_PW: &str = "secret";

const INSTALL_HINT: &str =
    "run `scripts/test-deps.sh` (snippet scripts/test-deps.d/ldap.sh installs the Debian packages slapd and ldap-utils)";

/// Finds a peer binary in the usual sbin/bin directories (slapd is not on a user's PATH).
fn require(bin: &str) -> Result<PathBuf, HarnessError> {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ] {
        let p = Path::new(dir).join(bin);
        if p.exists() {
            return Ok(p);
        }
    }
    // Not `PeerMissing`: its hint offers IDBRIDGE_SKIP_PEERS, and LDAP tests never skip.
    Err(HarnessError::Mismatch(format!(
        "`{bin}` not found in /usr/sbin, /usr/bin, /sbin, /bin or /usr/local: {INSTALL_HINT}"
    )))
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

/// A running private slapd.
pub struct Slapd {
    dir: TempDir,
    port: u16,
    url: String,
    pid: Option<i32>,
}

impl Slapd {
    /// Configures, starts and waits for slapd, then adds the suffix and the two OUs.
    pub fn start() -> Result<Slapd, HarnessError> {
        let slapd = require("slapd")?;
        require("ldapmodify")?;
        let dir = tempfile::tempdir().map_err(|e| HarnessError::io("creating slapd's dir", e))?;
        let d = dir.path();
        std::fs::create_dir_all(d.join("db"))
            .map_err(|e| HarnessError::io("creating slapd's db dir", e))?;
        let conf = format!(
            r#"include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
moduleload refint
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
database mdb
maxsize 268435456
suffix "{LDAP_SUFFIX}"
rootdn "{LDAP_ADMIN_DN}"
rootpw {LDAP_ADMIN_PW}
directory {dir}/db
dbnosync
index objectClass eq
index entryUUID,entryCSN eq
overlay memberof
overlay refint
refint_attributes member uniqueMember
"#,
            dir = d.display()
        );
        std::fs::write(d.join("slapd.conf"), conf)
            .map_err(|e| HarnessError::io("writing slapd.conf", e))?;
        let port = free_port()?;
        let url = format!("ldap://127.0.0.1:{port}");
        // slapd daemonizes: this returns once it forked (or failed to read its config).
        let out = Command::new(&slapd)
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .arg("-h")
            .arg(format!("{url}/"))
            .stdin(Stdio::null())
            .output()
            .map_err(|source| HarnessError::Spawn {
                what: "slapd".into(),
                source,
            })?;
        if !out.status.success() {
            return Err(HarnessError::PeerFailed {
                command: format!("slapd -f {}/slapd.conf -h {url}/", d.display()),
                status: out.status.to_string(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        let mut s = Slapd {
            dir,
            port,
            url,
            pid: None,
        };
        s.wait_ready()?;
        s.add(&format!(
            "dn: {LDAP_SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\n\
             o: Example\n\n\
             dn: ou=People,{LDAP_SUFFIX}\nobjectClass: organizationalUnit\nou: People\n\n\
             dn: ou=Groups,{LDAP_SUFFIX}\nobjectClass: organizationalUnit\nou: Groups\n\n"
        ))?;
        Ok(s)
    }

    fn wait_ready(&mut self) -> Result<(), HarnessError> {
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
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout {
                    what: format!("slapd on {}", self.url),
                    secs: 15,
                    stderr: String::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ldap://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The daemon's pid (from its pidfile).
    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// A file holding the admin password (for `bind_password_file`).
    pub fn password_file(&self) -> Result<PathBuf, HarnessError> {
        let p = self.dir.path().join("bind.pw");
        std::fs::write(&p, format!("{LDAP_ADMIN_PW}\n"))
            .map_err(|e| HarnessError::io("writing the bind password file", e))?;
        Ok(p)
    }

    /// Applies LDIF change records with `ldapmodify` as the admin (`add`: `-a`, plain entries
    /// are added).
    pub fn modify(&self, ldif: &str, add: bool) -> Result<(), HarnessError> {
        let mut cmd = Command::new(require("ldapmodify")?);
        cmd.args([
            "-x",
            "-H",
            &self.url,
            "-D",
            LDAP_ADMIN_DN,
            "-w",
            LDAP_ADMIN_PW,
        ]);
        if add {
            cmd.arg("-a");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| HarnessError::Spawn {
                what: "ldapmodify".into(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(ldif.as_bytes())
                .map_err(|e| HarnessError::io("writing LDIF to ldapmodify", e))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| HarnessError::io("waiting for ldapmodify", e))?;
        if !out.status.success() {
            return Err(HarnessError::PeerFailed {
                command: format!("ldapmodify -H {}{}", self.url, if add { " -a" } else { "" }),
                status: out.status.to_string(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: format!(
                    "{}\n--- ldif ---\n{ldif}",
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        Ok(())
    }

    /// Adds entries (`ldapmodify -a`).
    pub fn add(&self, ldif: &str) -> Result<(), HarnessError> {
        self.modify(ldif, true)
    }

    /// `ldapsearch` under `base` as the admin: each entry's attributes (values unwrapped,
    /// base64 values left as they are), in the server's order.
    pub fn search(
        &self,
        base: &str,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Vec<Vec<(String, String)>>, HarnessError> {
        let out = Command::new(require("ldapsearch")?)
            .args([
                "-LLL",
                "-x",
                "-o",
                "ldif-wrap=no",
                "-H",
                &self.url,
                "-D",
                LDAP_ADMIN_DN,
                "-w",
                LDAP_ADMIN_PW,
                "-b",
                base,
                filter,
            ])
            .args(attrs)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| HarnessError::Spawn {
                what: "ldapsearch".into(),
                source,
            })?;
        if !out.status.success() {
            return Err(HarnessError::PeerFailed {
                command: format!("ldapsearch -H {} -b {base} {filter}", self.url),
                status: out.status.to_string(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let entries = text
            .split("\n\n")
            .filter(|block| !block.trim().is_empty())
            .map(|block| {
                block
                    .lines()
                    .filter_map(|l| l.split_once(": "))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .collect();
        Ok(entries)
    }

    /// Stops the server (SIGTERM, then waits up to 10 s).
    pub fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            // SAFETY: plain kill(2) on the pid our own slapd wrote into its pidfile.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
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
