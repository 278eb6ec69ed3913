//! Active Directory flavor against a real Samba AD DC (provisioned into a temp dir, LDAP only,
//! on 127.0.0.1:389). One test function: provisioning costs ~20 s, so every AD case shares
//! the domain: objectGUID ids, userAccountControl, nested groups, a 1,600-member group (ranged
//! retrieval), uSNChanged deltas (deletions through tombstones, moves out of the base DN), and
//! a stopped server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::{count, run_delta, Fx};
use idbridge_ldap::{Flavor, LdapSettings, NoProgress, SyncError, SyncKind, Syncer};
use idbridge_testkit::samba::{ad_user_ldif as user_ldif, AD_ADMIN, AD_BASE as BASE, AD_URL};
use idbridge_testkit::SambaDc;

const BULK: usize = 1600;

fn settings(dc: &SambaDc) -> LdapSettings {
    let mut s = LdapSettings::new(AD_URL, Flavor::ActiveDirectory, format!("OU=Corp,{BASE}"));
    s.allow_plain = true;
    s.bind_dn = Some(AD_ADMIN.into());
    s.bind_password_file = Some(dc.password_file().expect("password file"));
    s.timeouts.operation_secs = 20;
    s.max_delete_ratio = 0.5;
    s
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
         dn: CN=staff,{corp}\nobjectClass: group\nsAMAccountName: staff\nmember: CN=eng,{corp}\nmember: CN=bob,{corp}\n\n\
         dn: CN=temp,{corp}\nobjectClass: group\nsAMAccountName: temp\n\n"
    ));
    ldif.push_str(&format!(
        "dn: CN=big,{corp}\nobjectClass: group\nsAMAccountName: big\n"
    ));
    for i in 0..BULK {
        ldif.push_str(&format!("member: CN=b{i:04},{bulk}\n"));
    }
    ldif.push('\n');
    let mut dc = SambaDc::start(&ldif).expect("samba AD DC");

    let fx = Fx::new();
    let src = fx.ldap_dir(settings(&dc));
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
    let alice = fx.user_named(&dir, "alice");
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
    assert_eq!(count(&kinds, "dsync.group.created"), 4);

    // The GUID matches what the server reports for alice (as a filter on the binary value).
    let found = dc
        .search(BASE, "sub", &common::guid_filter(guid), &["sAMAccountName"])
        .expect("ldapsearch");
    assert!(
        found.contains("sAMAccountName: alice"),
        "objectGUID round trip: {found}"
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
    )
    .expect("ldapmodify");
    dc.modify(&user_ldif("erin", &corp, 544), true)
        .expect("ldapmodify");
    let carol_before = fx.user_named(&dir, "carol");
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

    // Delta: a deleted user and a deleted group, seen through their tombstones (Show Deleted;
    // the bind account is an administrator, who may list Deleted Objects).
    let alice = fx.user_named(&dir, "alice");
    dc.modify(
        &format!(
            "dn: CN=alice,{corp}\nchangetype: delete\n\n\
             dn: CN=temp,{corp}\nchangetype: delete\n\n"
        ),
        false,
    )
    .expect("ldapmodify");
    let seq = fx.last_seq();
    let rec = run_delta(&syncer, &src).await;
    assert_eq!(rec.deleted, 1, "{rec:?}");
    assert_eq!(fx.deleted_user_ids(seq), [alice.user.id]);
    assert_eq!(count(&fx.kinds_after(seq), "dsync.group.deleted"), 1);
    assert!(fx.groups(&dir).iter().all(|g| g.group.name != "temp"));
    assert_eq!(fx.members(&dir, "staff"), ["carol"]);

    // Delta: a user moved out of the base DN (it changed in the window, somewhere the delta's
    // own read did not find it) leaves; a bulk user's unrelated change does not.
    let erin = fx.user_named(&dir, "erin");
    dc.modify(
        &format!(
            "dn: CN=erin,{corp}\nchangetype: modrdn\nnewrdn: CN=erin\ndeleteoldrdn: 1\nnewsuperior: OU=Former,{BASE}\n\n\
             dn: CN=b0001,{bulk}\nchangetype: modify\nreplace: givenName\ngivenName: Bea\n\n"
        ),
        false,
    )
    .expect("ldapmodify");
    let seq = fx.last_seq();
    let rec = run_delta(&syncer, &src).await;
    assert_eq!((rec.deleted, rec.updated), (1, 1), "{rec:?}");
    assert_eq!(fx.deleted_user_ids(seq), [erin.user.id]);

    // Full sync: a deletion no delta ran for; nothing applied twice.
    let b0 = fx.user_named(&dir, "b0000");
    dc.modify(
        &format!("dn: CN=b0000,{bulk}\nchangetype: delete\n\n"),
        false,
    )
    .expect("ldapmodify");
    let seq = fx.last_seq();
    let rec = syncer
        .run(&src, SyncKind::Full, Arc::new(NoProgress))
        .await
        .expect("full 2");
    assert_eq!((rec.deleted, rec.updated), (1, 0), "{rec:?}");
    assert_eq!(fx.deleted_user_ids(seq), [b0.user.id]);
    assert_eq!(fx.members(&dir, "staff"), ["carol"]);
    assert_eq!(fx.members(&dir, "big").len(), BULK - 1);

    // A wrong service-account password: AD's sub-code is named, the directory goes
    // `invalid_credentials`, and the next good run makes it `linked` again.
    let pw_dir = tempfile::tempdir().unwrap();
    let wrong_pw = pw_dir.path().join("wrong.pw");
    std::fs::write(&wrong_pw, "not-the-password\n").unwrap();
    let mut bad = src.clone();
    bad.settings.bind_password_file = Some(wrong_pw);
    let err = syncer
        .run(&bad, SyncKind::Delta, Arc::new(NoProgress))
        .await
        .expect_err("wrong password");
    let text = err.to_string();
    assert!(
        text.contains("invalidCredentials (49)") && text.contains("AD 52e: "),
        "{text}"
    );
    let state = |fx: &Fx| fx.engine.get_directory(&dir).unwrap().directory.state;
    assert_eq!(
        state(&fx),
        idbridge_model::DirectoryState::InvalidCredentials
    );
    run_delta(&syncer, &src).await;
    assert_eq!(state(&fx), idbridge_model::DirectoryState::Linked);

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
