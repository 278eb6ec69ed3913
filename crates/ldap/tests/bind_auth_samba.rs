//! Password checks (`idbridge_ldap::bind_auth`) against a real Samba AD DC (one DC for every
//! case: provisioning costs ~20 s): the right password by sAMAccountName, userPrincipalName,
//! mail and `DOMAIN\user`, with the objectGUID as idp_id; a wrong password; an unknown user; and
//! AD's own refusals read from the bind diagnostic — disabled (533), must change password
//! (773), account expired (701), locked out after the domain's lockout threshold (775).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::check_password;
use idbridge_ldap::bind_auth::BindAuthError;
use idbridge_ldap::{Flavor, LdapSettings};
use idbridge_testkit::samba::{AD_ADMIN, AD_BASE as BASE, AD_URL};
use idbridge_testkit::SambaDc;

const PW: &str = "Passw0rd!Bind-Test9";

/// An AD user with the test password.
fn user(cn: &str, ou: &str, uac: u32, extra: &str) -> String {
    common::ad_user_with_password(cn, ou, uac, PW, extra)
}

fn settings(dc: &SambaDc, ou: &str) -> LdapSettings {
    let mut s = LdapSettings::new(AD_URL, Flavor::ActiveDirectory, ou);
    s.allow_plain = true;
    s.bind_dn = Some(AD_ADMIN.into());
    s.bind_password_file = Some(dc.password_file().expect("password file"));
    s.timeouts.operation_secs = 20;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_directory_refusals_are_typed() {
    let corp = format!("OU=Corp,{BASE}");
    let mut ldif = format!("dn: {corp}\nobjectClass: organizationalUnit\nou: Corp\n\n");
    // 512 NORMAL_ACCOUNT; 514 adds ACCOUNTDISABLE.
    ldif.push_str(&user("alice", &corp, 512, ""));
    ldif.push_str(&user("dave", &corp, 514, ""));
    ldif.push_str(&user("erin", &corp, 512, "pwdLastSet: 0\n"));
    // accountExpires: a FILETIME in 2001.
    ldif.push_str(&user(
        "frank",
        &corp,
        512,
        "accountExpires: 126000000000000000\n",
    ));
    ldif.push_str(&user("gina", &corp, 512, ""));
    let dc = SambaDc::start(&ldif).expect("samba AD DC");
    let s = settings(&dc, &corp);

    // The right password, by every login form.
    let by_sam = check_password(&s, "alice", PW).await.unwrap();
    assert_eq!(
        by_sam.dn.to_lowercase(),
        format!("cn=alice,{corp}").to_lowercase()
    );
    for login in [
        "alice@example.test",
        "alice.mail@example.test",
        "EXAMPLE\\alice",
    ] {
        let u = check_password(&s, login, PW)
            .await
            .unwrap_or_else(|e| panic!("{login}: {e}"));
        assert_eq!(u.idp_id, by_sam.idp_id, "{login}");
    }
    // idp_id is the objectGUID (canonical form): the server finds alice by it.
    let raw = idbridge_ldap::ad::guid_to_bytes(&by_sam.idp_id).expect("a canonical GUID");
    let esc: String = raw.iter().map(|b| format!("\\{b:02x}")).collect();
    let found = dc
        .search(
            BASE,
            "sub",
            &format!("(objectGUID={esc})"),
            &["sAMAccountName"],
        )
        .expect("ldapsearch");
    assert!(found.contains("sAMAccountName: alice"), "{found}");

    // Wrong password and unknown user.
    let e = check_password(&s, "alice", "Passw0rd!Wrong")
        .await
        .unwrap_err();
    assert!(matches!(e, BindAuthError::InvalidCredentials), "{e}");
    assert!(matches!(
        check_password(&s, "nobody", PW).await,
        Err(BindAuthError::NoSuchUser)
    ));

    // AD's own account states, with the right password.
    let e = check_password(&s, "dave", PW).await.unwrap_err();
    assert!(matches!(e, BindAuthError::AccountDisabled), "disabled: {e}");
    let e = check_password(&s, "erin", PW).await.unwrap_err();
    assert!(
        matches!(e, BindAuthError::MustChangePassword),
        "pwdLastSet=0: {e}"
    );
    let e = check_password(&s, "frank", PW).await.unwrap_err();
    assert!(
        matches!(e, BindAuthError::AccountExpired),
        "accountExpires: {e}"
    );
    for e in [
        check_password(&s, "dave", "wrong").await.unwrap_err(),
        check_password(&s, "erin", "wrong").await.unwrap_err(),
    ] {
        assert!(e.is_user_failure(), "{e}");
    }

    // Lockout: the domain locks an account after 3 bad passwords; then even the right one fails.
    dc.modify(
        &format!(
            "dn: {BASE}\nchangetype: modify\nreplace: lockoutThreshold\nlockoutThreshold: 3\n\n"
        ),
        false,
    )
    .expect("set lockoutThreshold");
    assert!(check_password(&s, "gina", PW).await.is_ok());
    for _ in 0..3 {
        let e = check_password(&s, "gina", "Passw0rd!Wrong")
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                BindAuthError::InvalidCredentials | BindAuthError::AccountLocked
            ),
            "{e}"
        );
    }
    let e = check_password(&s, "gina", PW).await.unwrap_err();
    assert!(matches!(e, BindAuthError::AccountLocked), "locked: {e}");
    // Another account is not affected.
    assert!(check_password(&s, "alice", PW).await.is_ok());
}
