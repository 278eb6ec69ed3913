//! The IdP's directory-mode password check (`idbridge_ldap::bind_auth`, what the login page
//! calls) against a real Samba AD DC over TLS, with a server certificate from a CA made for the
//! test (rcgen, valid for 127.0.0.1): the right password over LDAPS and over StartTLS; the
//! wrong password still the user's failure over TLS; clear text refused unless `allow_plain`;
//! a CA that did not issue the DC's certificate a clear directory error (never a user failure),
//! saying to set `ca_file`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{check_password, pki};
use idbridge_ldap::bind_auth::BindAuthError;
use idbridge_ldap::{Flavor, LdapSettings};
use idbridge_testkit::samba::{AD_ADMIN, AD_BASE as BASE, AD_LDAPS_URL, AD_URL};
use idbridge_testkit::{SambaDc, SlapdTls};

const PW: &str = "Passw0rd!Tls-Test7";

fn user(cn: &str, ou: &str) -> String {
    common::ad_user_with_password(cn, ou, 512, PW, "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_checks_over_ldaps_and_starttls() {
    let corp = format!("OU=Corp,{BASE}");
    let mut ldif = format!("dn: {corp}\nobjectClass: organizationalUnit\nou: Corp\n\n");
    ldif.push_str(&user("alice", &corp));
    let (ca, cert, key) = pki();
    let dc = SambaDc::start_with_tls(
        &ldif,
        Some(&SlapdTls {
            ca_pem: ca.clone(),
            cert_pem: cert,
            key_pem: key,
        }),
    )
    .expect("samba AD DC with TLS");
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca).unwrap();
    let (other_ca, _, _) = pki();
    let other_path = dir.path().join("other-ca.pem");
    std::fs::write(&other_path, other_ca).unwrap();

    let base = |url: &str| {
        let mut s = LdapSettings::new(url, Flavor::ActiveDirectory, &corp);
        s.allow_plain = false;
        s.bind_dn = Some(AD_ADMIN.into());
        s.bind_password_file = Some(dc.password_file().expect("password file"));
        s.ca_file = Some(ca_path.clone());
        s.timeouts.operation_secs = 20;
        s
    };
    let ldaps = base(AD_LDAPS_URL);
    let mut starttls = base(AD_URL);
    starttls.starttls = true;

    for (how, s) in [("ldaps", &ldaps), ("starttls", &starttls)] {
        let u = check_password(s, "alice", PW)
            .await
            .unwrap_or_else(|e| panic!("{how}: {e}"));
        assert!(!u.idp_id.is_empty(), "{how}");
        let e = check_password(s, "alice", "not-the-password")
            .await
            .expect_err("wrong password");
        assert!(e.is_user_failure(), "{how}: {e:?}");
    }

    // Clear text without allow_plain: refused before any bind (a configuration error).
    let plain = base(AD_URL);
    let e = check_password(&plain, "alice", PW)
        .await
        .expect_err("plain refused");
    assert!(matches!(e, BindAuthError::Config(_)), "{e:?}");
    // ...and accepted only when explicitly allowed.
    let mut allowed = base(AD_URL);
    allowed.allow_plain = true;
    allowed.ca_file = None;
    check_password(&allowed, "alice", PW)
        .await
        .expect("allow_plain");

    // A CA that did not issue the DC's certificate: a directory error saying what to do.
    for mut s in [ldaps, starttls] {
        s.ca_file = Some(other_path.clone());
        let e = check_password(&s, "alice", PW)
            .await
            .expect_err("untrusted certificate");
        assert!(!e.is_user_failure(), "{e:?}");
        assert!(e.to_string().contains("ca_file"), "{e}");
    }
}
