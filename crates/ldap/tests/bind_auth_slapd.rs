//! Password checks (`idbridge_ldap::bind_auth`) against a real OpenLDAP slapd: right password by
//! uid and by mail, wrong password, unknown user, empty password (refused before any traffic),
//! filter injection, ambiguous logins, a disabled entry, ldaps and StartTLS with a CA, plain LDAP
//! refused unless allowed, a failing service account and a stopped server (directory errors, not
//! user failures), and no password in the logs even at TRACE level.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use common::{check_password, slapd_with_tls, Slapd, SlapdSettings, SyncProv, SUFFIX};
use idbridge_ldap::bind_auth::{authenticate, BindAuthError, LoginLookup, Password};
use idbridge_ldap::LdapSettings;

fn user(uid: &str, mail: &str, password: Option<&str>, extra: &str) -> String {
    let mut s = format!(
        "dn: uid={uid},ou=People,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: Tester\nmail: {mail}\n{extra}"
    );
    if let Some(p) = password {
        s.push_str(&format!("userPassword: {p}\n"));
    }
    s.push('\n');
    s
}

const ALICE_PW: &str = "Alice-pw-1 with spaces & símbolos";

fn seed() -> String {
    [
        user("alice", "alice@example.test", Some(ALICE_PW), ""),
        user("bob", "bob@example.test", Some("bob-pw"), ""),
        user("carol", "carol@example.test", None, ""),
        user("dup1", "shared@example.test", Some("dup-pw"), ""),
        user("dup2", "shared@example.test", Some("dup-pw"), ""),
        user(
            "dave",
            "dave@example.test",
            Some("dave-pw"),
            "employeeType: disabled\n",
        ),
    ]
    .concat()
}

fn entry_uuid(slapd: &Slapd, uid: &str) -> String {
    let rows = slapd
        .search(
            &format!("ou=People,{SUFFIX}"),
            &format!("(uid={uid})"),
            &["entryUUID"],
        )
        .unwrap();
    rows[0]
        .iter()
        .find(|(k, _)| k == "entryUUID")
        .unwrap()
        .1
        .to_lowercase()
}

/// Everything logged by this test binary, at TRACE level, including ldap3's own records.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || BufWriter(writer.clone()))
            .try_init();
        buf
    })
    .clone()
}

struct BufWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_are_checked_by_binding_as_the_user() {
    let logs = captured_logs();
    let slapd = Slapd::start().expect("slapd");
    slapd.add(&seed()).expect("seed");
    let mut s = slapd.settings();

    let by_uid = check_password(&s, "alice", ALICE_PW).await.unwrap();
    assert_eq!(by_uid.dn, format!("uid=alice,ou=People,{SUFFIX}"));
    assert_eq!(
        by_uid.idp_id,
        entry_uuid(&slapd, "alice"),
        "idp_id is entryUUID"
    );
    let by_mail = check_password(&s, "  alice@example.test ", ALICE_PW)
        .await
        .unwrap();
    assert_eq!(by_mail.idp_id, by_uid.idp_id);
    assert_eq!(
        by_mail.entry.values("mail").unwrap()[0],
        "alice@example.test"
    );

    let wrong = check_password(&s, "alice", "Alice-pw-2").await.unwrap_err();
    assert!(
        matches!(wrong, BindAuthError::InvalidCredentials),
        "{wrong}"
    );
    assert!(wrong.is_user_failure());
    assert!(matches!(
        check_password(&s, "mallory", "x").await,
        Err(BindAuthError::NoSuchUser)
    ));
    // An entry without a password cannot be bound to.
    assert!(matches!(
        check_password(&s, "carol", "anything").await,
        Err(BindAuthError::InvalidCredentials)
    ));

    // Escaped: a wildcard or an injected clause is a literal that matches nobody.
    for login in ["*", "a*", "alice)(uid=*", "*)(|(uid=*"] {
        assert!(
            matches!(
                check_password(&s, login, ALICE_PW).await,
                Err(BindAuthError::NoSuchUser)
            ),
            "{login}"
        );
    }
    assert!(matches!(
        check_password(&s, "shared@example.test", "dup-pw").await,
        Err(BindAuthError::Ambiguous(2))
    ));

    // The generic flavor's disabled marker: refused after the right password only.
    s.flavor = idbridge_ldap::Flavor::Generic;
    s.attributes.id = Some("entryUUID".into());
    s.attributes.disabled = Some("employeeType".into());
    s.attributes.disabled_values = Some(vec!["disabled".into()]);
    assert!(matches!(
        check_password(&s, "dave", "dave-pw").await,
        Err(BindAuthError::AccountDisabled)
    ));
    assert!(matches!(
        check_password(&s, "dave", "nope").await,
        Err(BindAuthError::InvalidCredentials)
    ));
    assert!(check_password(&s, "bob", "bob-pw").await.is_ok());

    // A custom lookup.
    let lookup = LoginLookup {
        attributes: vec!["cn".into()],
        filter: None,
    };
    assert!(
        authenticate(&slapd.settings(), &lookup, "bob", &Password::new("bob-pw"))
            .await
            .is_ok()
    );

    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(text.contains("directory password"), "logs were captured");
    for secret in [ALICE_PW, "Alice-pw-2", "bob-pw", "dave-pw"] {
        assert!(!text.contains(secret), "a password reached the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_or_invalid_input_is_refused_before_any_traffic() {
    // Nothing listens here: a refusal other than a directory error proves no connection was tried.
    let mut s = LdapSettings::new(
        "ldap://127.0.0.1:9",
        idbridge_ldap::Flavor::Openldap,
        format!("ou=People,{SUFFIX}"),
    );
    s.allow_plain = true;
    s.timeouts.connect_secs = 1;
    assert!(matches!(
        check_password(&s, "alice", "").await,
        Err(BindAuthError::EmptyPassword)
    ));
    assert!(matches!(
        check_password(&s, "", "pw").await,
        Err(BindAuthError::InvalidLogin(_))
    ));
    assert!(matches!(
        check_password(&s, "al\u{0}ice", "pw").await,
        Err(BindAuthError::InvalidLogin(_))
    ));
    assert!(matches!(
        check_password(&s, &"a".repeat(300), "pw").await,
        Err(BindAuthError::InvalidLogin(_))
    ));
    assert!(matches!(
        check_password(&s, "alice", &"p".repeat(2000)).await,
        Err(BindAuthError::PasswordTooLong)
    ));
    let down = check_password(&s, "alice", "pw").await.unwrap_err();
    assert!(matches!(down, BindAuthError::Directory(_)), "{down}");
    assert!(!down.is_user_failure());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_required_unless_plain_is_allowed() {
    let (slapd, ca_path, other_path) = slapd_with_tls(SyncProv::Off);
    slapd.add(&seed()).expect("seed");

    let mut plain = slapd.settings();
    plain.allow_plain = false;
    assert!(matches!(
        check_password(&plain, "alice", ALICE_PW).await,
        Err(BindAuthError::Config(_))
    ));

    let mut ldaps = plain.clone();
    ldaps.url = slapd.ldaps_url();
    ldaps.ca_file = Some(ca_path.clone());
    assert!(check_password(&ldaps, "alice", ALICE_PW).await.is_ok());
    assert!(matches!(
        check_password(&ldaps, "alice", "bad").await,
        Err(BindAuthError::InvalidCredentials)
    ));

    let mut starttls = plain.clone();
    starttls.starttls = true;
    starttls.ca_file = Some(ca_path);
    assert!(check_password(&starttls, "alice", ALICE_PW).await.is_ok());

    // A CA that did not sign the server: a directory error, never a password verdict.
    ldaps.ca_file = Some(other_path);
    let e = check_password(&ldaps, "alice", ALICE_PW).await.unwrap_err();
    assert!(matches!(e, BindAuthError::Directory(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_failures_and_outages_are_not_user_failures() {
    let mut slapd = Slapd::start().expect("slapd");
    slapd.add(&seed()).expect("seed");
    let mut s = slapd.settings();
    let bad_pw = slapd.dir().join("wrong.pw");
    std::fs::write(&bad_pw, "not-the-admin-password").unwrap();
    s.bind_password_file = Some(bad_pw);
    let e = check_password(&s, "alice", ALICE_PW).await.unwrap_err();
    assert!(matches!(e, BindAuthError::Directory(_)), "{e}");
    assert!(
        !e.is_user_failure(),
        "a broken service account is not the user's bad password"
    );

    let s = slapd.settings();
    slapd.stop();
    let e = check_password(&s, "alice", ALICE_PW).await.unwrap_err();
    assert!(matches!(e, BindAuthError::Directory(_)), "{e}");
}

/// The connection-reusing checker (`BindAuthenticator`, what the IdP login page uses) keeps
/// working when the server restarts between two logins: its pooled connections are dead, the
/// check is retried once on a fresh one, and the user sees a normal answer (not a directory
/// error). A wrong password after the restart is still the user's failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_connections_survive_a_server_restart() {
    let mut slapd = Slapd::start().expect("slapd");
    slapd.add(&seed()).expect("seed");
    let auth = idbridge_ldap::BindAuthenticator::new(slapd.settings());
    let lookup = LoginLookup::default();
    let uuid = entry_uuid(&slapd, "alice");
    for _ in 0..3 {
        let u = auth
            .authenticate(&lookup, "alice", &Password::new(ALICE_PW))
            .await
            .unwrap();
        assert_eq!(u.idp_id, uuid);
    }

    slapd.restart().expect("slapd restart");
    let u = auth
        .authenticate(&lookup, "alice", &Password::new(ALICE_PW))
        .await
        .expect("the first login after a restart must reconnect, not fail");
    assert_eq!(u.idp_id, uuid);
    let e = auth
        .authenticate(&lookup, "alice", &Password::new("wrong"))
        .await
        .unwrap_err();
    assert!(e.is_user_failure(), "{e}");

    // Down for good: a directory error, never a user failure.
    slapd.stop();
    let e = auth
        .authenticate(&lookup, "alice", &Password::new(ALICE_PW))
        .await
        .unwrap_err();
    assert!(!e.is_user_failure(), "{e}");
}
