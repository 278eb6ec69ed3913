//! LDAPS and StartTLS against a real slapd with a CA generated for the test (rcgen): the
//! configured CA bundle is trusted, another CA is not, and clear text needs `allow_plain`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::{person, slapd_with_tls, Fx, SlapdSettings, SyncProv};
use idbridge_ldap::{ConfigError, LdapError, NoProgress, SyncError, SyncKind, Syncer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldaps_and_starttls_with_a_ca_bundle() {
    let (slapd, ca_path, other_path) = slapd_with_tls(SyncProv::On);
    slapd
        .add(&person("alice", "Alice", "Archer"))
        .expect("ldapmodify");

    let fx = Fx::new();
    let syncer = Syncer::new(fx.engine.clone());

    // ldaps:// with the right CA.
    let mut s = slapd.settings();
    s.allow_plain = false;
    s.url = slapd.ldaps_url();
    s.ca_file = Some(ca_path.clone());
    let src = fx.ldap_dir(s.clone());
    let rec = syncer
        .run(&src, SyncKind::Full, Arc::new(NoProgress))
        .await
        .expect("ldaps sync");
    assert_eq!(rec.created, 1);

    // ldap:// + StartTLS with the right CA.
    let mut st = slapd.settings();
    st.allow_plain = false;
    st.starttls = true;
    st.ca_file = Some(ca_path);
    let src2 = fx.ldap_dir(st.clone());
    let rec = syncer
        .run(&src2, SyncKind::Full, Arc::new(NoProgress))
        .await
        .expect("starttls sync");
    assert_eq!(rec.created, 1);

    // A CA that did not sign the server certificate: refused, nothing applied.
    let before = fx.rows();
    for mut bad in [s, st] {
        bad.ca_file = Some(other_path.clone());
        let src3 = fx.ldap_dir(bad);
        let err = syncer
            .run(&src3, SyncKind::Full, Arc::new(NoProgress))
            .await
            .expect_err("untrusted certificate");
        assert!(
            matches!(err, SyncError::Ldap(LdapError::Protocol { .. })),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("set ca_file to the CA bundle that issued it"),
            "{err}"
        );
        assert!(fx.users(&src3.directory_id).is_empty());
    }
    // (the three new, empty directories are the only difference)
    assert_eq!(
        fx.rows().keys().filter(|(t, _)| t == "dsync.users").count(),
        before.keys().filter(|(t, _)| t == "dsync.users").count()
    );

    // Clear text without allow_plain is a configuration error before any connection.
    let mut plain = slapd.settings();
    plain.allow_plain = false;
    let src4 = fx.ldap_dir(plain);
    let err = syncer
        .run(&src4, SyncKind::Full, Arc::new(NoProgress))
        .await
        .expect_err("plain refused");
    assert!(
        matches!(
            err,
            SyncError::Ldap(LdapError::Config(ConfigError::Invalid(_)))
        ),
        "{err:?}"
    );
}

/// A slapd serving a certificate made from `leaf` by a fresh test CA, and the CA's PEM path.
fn slapd_with_leaf(leaf: rcgen::CertificateParams) -> (common::Slapd, std::path::PathBuf) {
    let (ca_pem, cert_pem, key_pem) = common::pki_with(leaf);
    let slapd = common::Slapd::start_with(
        Some(&common::SlapdTls {
            ca_pem: ca_pem.clone(),
            cert_pem,
            key_pem,
        }),
        SyncProv::Off,
    )
    .expect("slapd");
    let ca_path = slapd.dir().join("client-ca.pem");
    std::fs::write(&ca_path, ca_pem).expect("ca file");
    (slapd, ca_path)
}

/// A refused certificate's error names the problem: a certificate for another host name, and
/// an expired one (an untrusted issuer is checked above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_errors_name_the_certificate_problem() {
    let fx = Fx::new();
    let syncer = Syncer::new(fx.engine.clone());
    let other_host =
        rcgen::CertificateParams::new(vec!["ldap.example.invalid".to_string()]).expect("params");
    let mut expired = common::loopback_leaf();
    expired.not_before = rcgen::date_time_ymd(2020, 1, 1);
    expired.not_after = rcgen::date_time_ymd(2021, 1, 1);
    for (leaf, says) in [
        (other_host, "does not name this host"),
        (expired, "has expired"),
    ] {
        let (slapd, ca_path) = slapd_with_leaf(leaf);
        let mut s = slapd.settings();
        s.allow_plain = false;
        s.url = slapd.ldaps_url();
        s.ca_file = Some(ca_path);
        let src = fx.ldap_dir(s);
        let err = syncer
            .run(&src, SyncKind::Full, Arc::new(NoProgress))
            .await
            .expect_err("refused certificate");
        assert!(err.to_string().contains(says), "{says}: {err}");
    }
}
