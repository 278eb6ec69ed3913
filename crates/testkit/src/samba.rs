//! A Samba AD DC provisioned into a temp dir, serving LDAP only on 127.0.0.1:389.
//!
//! Samba's LDAP server listens on 389 (not configurable per instance), so one DC runs at a
//! time on a machine; cargo runs test binaries one after another, and each binary that needs
//! AD starts one DC for all its cases (provisioning costs ~20 s).

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::{find_bin, ldapmodify, PeerError};

/// The domain's base DN.
pub const AD_BASE: &str = "DC=example,DC=test";
/// The administrator's bind name (userPrincipalName form).
pub const AD_ADMIN: &str = "Administrator@example.test";
/// The administrator's password.
pub const AD_PASSWORD: &str = "Passw0rd!Idb-Test1";
/// Where the DC listens.
pub const AD_URL: &str = "ldap://127.0.0.1:389";
/// The DC's LDAPS URL (served when started with [`SambaDc::start_with_tls`]).
pub const AD_LDAPS_URL: &str = "ldaps://127.0.0.1:636";

const HINT: &str = "install the Samba AD test peer with scripts/test-deps.sh \
     (snippet scripts/test-deps.d/ldap.sh: samba samba-ad-dc samba-ad-provision ldb-tools ldap-utils)";

/// A running DC; stopped on drop.
pub struct SambaDc {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl SambaDc {
    /// Provisions a domain, loads `ldif` offline with `ldbadd` (an LDAP add of 1,600 users
    /// through the running DC took 130 s here; ldbadd through the same dsdb modules ~10 s),
    /// then starts the DC and waits until it answers an LDAP bind.
    pub fn start(ldif: &str) -> Result<SambaDc, PeerError> {
        Self::start_with_tls(ldif, None)
    }

    /// [`SambaDc::start`], serving LDAPS (636) and StartTLS (389) with `tls`'s server
    /// certificate and key (instead of the self-signed one Samba would make for its host
    /// name, which a client connecting to 127.0.0.1 cannot verify).
    pub fn start_with_tls(
        ldif: &str,
        tls: Option<&crate::slapd::SlapdTls>,
    ) -> Result<SambaDc, PeerError> {
        let samba = find_bin("samba", HINT)?;
        let ldbadd = find_bin("ldbadd", HINT)?;
        let tool = find_bin("samba-tool", HINT)?;
        find_bin("ldapmodify", HINT)?;
        if std::net::TcpStream::connect(("127.0.0.1", 389)).is_ok() {
            return Err(PeerError::Failed(
                "127.0.0.1:389 is busy: Samba AD needs it (stop the other LDAP server)".into(),
            ));
        }
        let dir = tempfile::tempdir().map_err(PeerError::io("temp dir"))?;
        let d = dir.path().to_owned();
        let t0 = Instant::now();
        let out = Command::new(tool)
            .args([
                "domain",
                "provision",
                &format!("--targetdir={}", d.join("prov").display()),
                "--realm=EXAMPLE.TEST",
                "--domain=EXAMPLE",
                "--server-role=dc",
                "--dns-backend=NONE",
                "--use-rfc2307",
                "--host-ip=127.0.0.1",
                &format!("--adminpass={AD_PASSWORD}"),
                "--option=interfaces = lo",
                "--option=bind interfaces only = yes",
            ])
            .output()
            .map_err(PeerError::io("samba-tool"))?;
        if !out.status.success() {
            return Err(PeerError::Failed(format!(
                "samba-tool domain provision failed ({HINT}): {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        eprintln!("samba provisioned in {:?}", t0.elapsed());
        let conf = d.join("prov/etc/smb.conf");
        let text = std::fs::read_to_string(&conf).map_err(PeerError::io("read smb.conf"))?;
        let run = d.join("prov/run");
        std::fs::create_dir_all(&run).map_err(PeerError::io("run dir"))?;
        let mut patched = String::new();
        for line in text.lines() {
            let t = line.trim_start();
            if t.starts_with("server services") || t.starts_with("log file") {
                continue;
            }
            patched.push_str(line);
            patched.push('\n');
            if t == "[global]" {
                patched.push_str(&format!(
                    "\tserver services = ldap\n\tldap server require strong auth = no\n\
                     \tpid directory = {}\n\tlog file = {}/log.%m\n",
                    run.display(),
                    d.display()
                ));
                if tls.is_some() {
                    let t = d.join("tls");
                    patched.push_str(&format!(
                        "\ttls enabled = yes\n\ttls keyfile = {}\n\ttls certfile = {}\n\
                         \ttls cafile = {}\n",
                        t.join("key.pem").display(),
                        t.join("cert.pem").display(),
                        t.join("ca.pem").display()
                    ));
                }
            }
        }
        std::fs::write(&conf, patched).map_err(PeerError::io("write smb.conf"))?;
        if let Some(t) = tls {
            let dir = d.join("tls");
            std::fs::create_dir_all(&dir).map_err(PeerError::io("tls dir"))?;
            for (file, pem) in [
                ("ca.pem", &t.ca_pem),
                ("cert.pem", &t.cert_pem),
                ("key.pem", &t.key_pem),
            ] {
                std::fs::write(dir.join(file), pem).map_err(PeerError::io("tls file"))?;
            }
            // Samba refuses a key file others can read.
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir.join("key.pem"), std::fs::Permissions::from_mode(0o600))
                .map_err(PeerError::io("tls key mode"))?;
        }
        let t1 = Instant::now();
        let ldif_path = d.join("seed.ldif");
        std::fs::write(&ldif_path, ldif).map_err(PeerError::io("seed ldif"))?;
        let out = Command::new(ldbadd)
            .arg("-H")
            .arg(d.join("prov/private/sam.ldb"))
            .arg(&ldif_path)
            .output()
            .map_err(PeerError::io("ldbadd"))?;
        if !out.status.success() {
            return Err(PeerError::Failed(format!(
                "ldbadd failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        eprintln!("seed loaded offline in {:?}", t1.elapsed());
        let log = std::fs::File::create(d.join("samba.out")).map_err(PeerError::io("log"))?;
        let log2 = log.try_clone().map_err(PeerError::io("log"))?;
        let child = Command::new(samba)
            .arg("-i")
            .arg("-s")
            .arg(&conf)
            .stdout(log2)
            .stderr(log)
            .spawn()
            .map_err(PeerError::io("spawn samba"))?;
        let dc = SambaDc {
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        while dc
            .search(AD_BASE, "base", "(objectClass=*)", &["dn"])
            .is_err()
        {
            if Instant::now() > deadline {
                return Err(PeerError::Failed(format!(
                    "samba did not answer LDAP in time; log: {}",
                    std::fs::read_to_string(d.join("samba.out")).unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        eprintln!("samba ready after {:?}", t0.elapsed());
        Ok(dc)
    }

    /// `ldapmodify` (with `-a` when `add`) as the administrator.
    pub fn modify(&self, ldif: &str, add: bool) -> Result<(), PeerError> {
        let tool = find_bin("ldapmodify", HINT)?;
        ldapmodify(&tool, AD_URL, AD_ADMIN, AD_PASSWORD, ldif, add)
    }

    /// `ldapsearch -LLL` as the administrator; the LDIF it prints.
    pub fn search(
        &self,
        base: &str,
        scope: &str,
        filter: &str,
        attrs: &[&str],
    ) -> Result<String, PeerError> {
        let out = Command::new("ldapsearch")
            .args([
                "-LLL",
                "-x",
                "-H",
                AD_URL,
                "-D",
                AD_ADMIN,
                "-w",
                AD_PASSWORD,
            ])
            .args(["-b", base, "-s", scope, filter])
            .args(attrs)
            .output()
            .map_err(PeerError::io("ldapsearch"))?;
        if !out.status.success() {
            return Err(PeerError::Failed(format!(
                "ldapsearch: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A file holding the administrator's password (for `bind_password_file`).
    pub fn password_file(&self) -> Result<PathBuf, PeerError> {
        let pw = self.dir.path().join("bind.pw");
        std::fs::write(&pw, AD_PASSWORD).map_err(PeerError::io("password file"))?;
        Ok(pw)
    }

    /// Stops the DC (SIGTERM, then SIGKILL after 15 s); later calls do nothing.
    #[allow(unsafe_code)] // kill(2) on the DC we spawned
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(pid) = i32::try_from(c.id()) {
                // SAFETY: SIGTERM to the samba master we spawned; it stops its workers.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for SambaDc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An enabled (`uac` 544 = NORMAL_ACCOUNT | PASSWD_NOTREQD) or disabled (546) AD user under
/// `ou`, as LDIF for [`SambaDc::start`] or an add.
pub fn ad_user_ldif(cn: &str, ou: &str, uac: u32) -> String {
    format!(
        "dn: CN={cn},{ou}\nobjectClass: user\nsAMAccountName: {cn}\nuserPrincipalName: {cn}@example.test\n\
         givenName: {cn}\nsn: Tester\nmail: {cn}@example.test\nuserAccountControl: {uac}\n\n"
    )
}
