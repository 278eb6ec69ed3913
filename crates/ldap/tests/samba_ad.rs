//! Active Directory flavor against a real Samba AD DC (provisioned into a temp dir, LDAP only,
//! on 127.0.0.1:389). One test function: provisioning costs ~20 s, so every AD case shares
//! the domain: objectGUID ids, userAccountControl, nested groups, a 1,600-member group (ranged
//! retrieval), uSNChanged deltas, and a stopped server.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{require, Fx};
use idbridge_ldap::{Flavor, LdapSettings, NoProgress, SyncError, SyncKind, Syncer};

const BASE: &str = "DC=example,DC=test";
const ADMIN: &str = "Administrator@example.test";
const PW: &str = "Passw0rd!Idb-Test1";
const BULK: usize = 1600;

struct SambaDc {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl SambaDc {
    /// Provisions a domain, loads `ldif` offline with `ldbadd` (an LDAP add of 1,600 users
    /// through the running DC took 130 s here; ldbadd through the same dsdb modules ~10 s),
    /// then starts the DC.
    fn start(ldif: &str) -> SambaDc {
        let samba = require("samba");
        let ldbadd = require("ldbadd");
        let tool = require("samba-tool");
        require("ldapmodify");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", 389)).is_err(),
            "127.0.0.1:389 is busy: Samba AD needs it (stop the other LDAP server)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
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
                &format!("--adminpass={PW}"),
                "--option=interfaces = lo",
                "--option=bind interfaces only = yes",
            ])
            .output()
            .expect("samba-tool");
        assert!(
            out.status.success(),
            "samba-tool domain provision failed (is samba-ad-provision installed? scripts/test-deps.sh): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("samba provisioned in {:?}", t0.elapsed());
        let conf = d.join("prov/etc/smb.conf");
        let text = std::fs::read_to_string(&conf).expect("smb.conf");
        let run = d.join("prov/run");
        std::fs::create_dir_all(&run).expect("run dir");
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
            }
        }
        std::fs::write(&conf, patched).expect("write smb.conf");
        let t1 = Instant::now();
        let ldif_path = d.join("seed.ldif");
        std::fs::write(&ldif_path, ldif).expect("seed ldif");
        let out = Command::new(ldbadd)
            .arg("-H")
            .arg(d.join("prov/private/sam.ldb"))
            .arg(&ldif_path)
            .output()
            .expect("ldbadd");
        assert!(
            out.status.success(),
            "ldbadd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("seed loaded offline in {:?}", t1.elapsed());
        let log = std::fs::File::create(d.join("samba.out")).expect("log");
        let child = Command::new(samba)
            .arg("-i")
            .arg("-s")
            .arg(&conf)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn samba");
        let dc = SambaDc {
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let ok = Command::new("ldapsearch")
                .args([
                    "-x",
                    "-H",
                    "ldap://127.0.0.1:389",
                    "-D",
                    ADMIN,
                    "-w",
                    PW,
                    "-b",
                    BASE,
                    "-s",
                    "base",
                    "dn",
                ])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "samba did not answer LDAP in time; log: {}",
                std::fs::read_to_string(dc.dir.path().join("samba.out")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        eprintln!("samba ready after {:?}", t0.elapsed());
        dc
    }

    fn modify(&self, ldif: &str, add: bool) {
        let mut cmd = Command::new("ldapmodify");
        cmd.args(["-x", "-H", "ldap://127.0.0.1:389", "-D", ADMIN, "-w", PW]);
        if add {
            cmd.arg("-a");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ldapmodify");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(ldif.as_bytes())
            .expect("ldif");
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "ldapmodify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: SIGTERM to the samba master we spawned; it stops its workers.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
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

    fn settings(&self) -> LdapSettings {
        let mut s = LdapSettings::new(
            "ldap://127.0.0.1:389",
            Flavor::ActiveDirectory,
            format!("OU=Corp,{BASE}"),
        );
        s.allow_plain = true;
        s.bind_dn = Some(ADMIN.into());
        let pw = self.dir.path().join("bind.pw");
        std::fs::write(&pw, PW).expect("pw");
        s.bind_password_file = Some(pw);
        s.timeouts.operation_secs = 20;
        s.max_delete_ratio = 0.5;
        s
    }
}

impl Drop for SambaDc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn user_ldif(cn: &str, ou: &str, uac: u32) -> String {
    format!(
        "dn: CN={cn},{ou}\nobjectClass: user\nsAMAccountName: {cn}\nuserPrincipalName: {cn}@example.test\n\
         givenName: {cn}\nsn: Tester\nmail: {cn}@example.test\nuserAccountControl: {uac}\n\n"
    )
}

fn count(kinds: &[String], k: &str) -> usize {
    kinds.iter().filter(|x| x.as_str() == k).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_directory_on_samba() {
    let corp = format!("OU=Corp,{BASE}");
    let bulk = format!("OU=Bulk,{corp}");
    let mut ldif = format!(
        "dn: {corp}\nobjectClass: organizationalUnit\nou: Corp\n\n\
         dn: {bulk}\nobjectClass: organizationalUnit\nou: Bulk\n\n\
         dn: OU=Former,{BASE}\nobjectClass: organizationalUnit\nou: Former\n\n"
    );
    // 544 = NORMAL_ACCOUNT | PASSWD_NOTREQD (enabled, no password needed for the test);
    // 546 adds ACCOUNTDISABLE.
    for cn in ["alice", "bob", "carol"] {
        ldif.push_str(&user_ldif(cn, &corp, 544));
    }
    ldif.push_str(&user_ldif("dave", &corp, 546));
    for i in 0..BULK {
        ldif.push_str(&user_ldif(&format!("b{i:04}"), &bulk, 544));
    }
    ldif.push_str(&format!(
        "dn: CN=eng,{corp}\nobjectClass: group\nsAMAccountName: eng\nmember: CN=alice,{corp}\n\n\
         dn: CN=staff,{corp}\nobjectClass: group\nsAMAccountName: staff\nmember: CN=eng,{corp}\nmember: CN=bob,{corp}\n\n"
    ));
    ldif.push_str(&format!(
        "dn: CN=big,{corp}\nobjectClass: group\nsAMAccountName: big\n"
    ));
    for i in 0..BULK {
        ldif.push_str(&format!("member: CN=b{i:04},{bulk}\n"));
    }
    ldif.push('\n');
    let mut dc = SambaDc::start(&ldif);

    let fx = Fx::new();
    let src = fx.ldap_dir(dc.settings());
    let dir = src.directory_id.clone();
    let syncer = Syncer::new(fx.engine.clone());

    // Full sync.
    let seq = fx.last_seq();
    let rec = syncer
        .run(&src, SyncKind::Full, Arc::new(NoProgress))
        .await
        .expect("full sync");
    assert_eq!(rec.users_read, (BULK + 4) as u64);
    let names = fx.usernames(&dir);
    assert_eq!(names.len(), BULK + 3, "disabled dave is not created");
    assert!(!names.contains(&"dave".to_string()));
    let alice = fx
        .users(&dir)
        .into_iter()
        .find(|u| u.user.username.as_deref() == Some("alice"))
        .expect("alice");
    let guid = &alice.user.idp_id;
    assert!(
        guid.len() == 36 && guid.chars().filter(|c| *c == '-').count() == 4,
        "objectGUID as canonical GUID: {guid}"
    );
    assert_eq!(alice.user.email.as_deref(), Some("alice@example.test"));
    assert_eq!(fx.members(&dir, "eng"), ["alice"]);
    assert_eq!(
        fx.members(&dir, "staff"),
        ["alice", "bob"],
        "nested eng resolved"
    );
    let big = fx.members(&dir, "big");
    assert_eq!(
        big.len(),
        BULK,
        "all members of a >1500-member group (ranged retrieval)"
    );
    let kinds = fx.kinds_after(seq);
    assert_eq!(count(&kinds, "dsync.user.created"), BULK + 3);
    assert_eq!(count(&kinds, "dsync.group.created"), 3);

    // The GUID matches what the server reports for alice (as a filter on the binary value).
    let raw = idbridge_ldap::ad::guid_to_bytes(guid).expect("guid bytes");
    let esc: String = raw.iter().map(|b| format!("\\{b:02x}")).collect();
    let out = Command::new("ldapsearch")
        .args([
            "-LLL",
            "-x",
            "-H",
            "ldap://127.0.0.1:389",
            "-D",
            ADMIN,
            "-w",
            PW,
            "-b",
            BASE,
            &format!("(objectGUID={esc})"),
            "sAMAccountName",
        ])
        .output()
        .expect("ldapsearch");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("sAMAccountName: alice"),
        "objectGUID round trip: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Delta via uSNChanged: disable bob, add erin, rename carol, add carol to eng (nested
    // into staff: the ancestor is refreshed too).
    dc.modify(
        &format!(
            "dn: CN=bob,{corp}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 546\n\n\
             dn: CN=carol,{corp}\nchangetype: modrdn\nnewrdn: CN=caroline\ndeleteoldrdn: 1\n\n\
             dn: CN=caroline,{corp}\nchangetype: modify\nreplace: givenName\ngivenName: Caroline\n\n\
             dn: CN=eng,{corp}\nchangetype: modify\nadd: member\nmember: CN=caroline,{corp}\n\n"
        ),
        false,
    );
    dc.modify(&user_ldif("erin", &corp, 544), true);
    let carol_before = fx
        .users(&dir)
        .into_iter()
        .find(|u| u.user.username.as_deref() == Some("carol"))
        .expect("carol");
    let seq = fx.last_seq();
    let t = Instant::now();
    let rec = syncer
        .run(&src, SyncKind::Delta, Arc::new(NoProgress))
        .await
        .expect("delta");
    eprintln!("AD delta: {rec:?} in {:?}", t.elapsed());
    assert_eq!(rec.kind, Some(SyncKind::Delta));
    assert!(
        rec.users_read <= 5,
        "delta reads only changed users: {rec:?}"
    );
    let kinds = fx.kinds_after(seq);
    assert_eq!(count(&kinds, "dsync.user.created"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "dsync.user.deleted"), 1, "{kinds:?}");
    let caroline = fx
        .users(&dir)
        .into_iter()
        .find(|u| u.user.first_name.as_deref() == Some("Caroline"))
        .expect("renamed carol");
    assert_eq!(
        caroline.user.id, carol_before.user.id,
        "rename keeps the user"
    );
    assert_eq!(fx.members(&dir, "eng"), ["alice", "carol"]);
    assert_eq!(
        fx.members(&dir, "staff"),
        ["alice", "carol"],
        "bob gone, carol via eng"
    );
    assert!(fx.usernames(&dir).contains(&"erin".to_string()));

    // Full sync: a deleted user and a user moved out of the base DN.
    dc.modify(
        &format!(
            "dn: CN=alice,{corp}\nchangetype: delete\n\n\
             dn: CN=erin,{corp}\nchangetype: modrdn\nnewrdn: CN=erin\ndeleteoldrdn: 1\nnewsuperior: OU=Former,{BASE}\n\n"
        ),
        false,
    );
    let seq = fx.last_seq();
    let rec = syncer
        .run(&src, SyncKind::Full, Arc::new(NoProgress))
        .await
        .expect("full 2");
    assert_eq!(rec.deleted, 2, "{rec:?}");
    assert_eq!(count(&fx.kinds_after(seq), "dsync.user.deleted"), 2);
    assert_eq!(fx.members(&dir, "staff"), ["carol"]);

    // Server stopped: runs fail and change nothing.
    dc.stop();
    let before = fx.rows();
    for kind in [SyncKind::Full, SyncKind::Delta] {
        let err = syncer
            .run(&src, kind, Arc::new(NoProgress))
            .await
            .expect_err("server stopped");
        assert!(matches!(err, SyncError::Ldap(_)), "{err:?}");
    }
    assert_eq!(fx.rows(), before);
}
