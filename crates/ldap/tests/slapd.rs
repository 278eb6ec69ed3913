//! Full and delta syncs against a real OpenLDAP slapd (started on loopback per test).
//! Results are checked through the engine's list calls and the `dsync.*` event log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// libc calls on peer processes and C buffers of the test.
#![allow(unsafe_code)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::{
    count, people_after_full_sync, people_ldif, person, Fx, Slapd, SlapdSettings, PEOPLE, SUFFIX,
};
use idbridge_ldap::{LdapError, NoProgress, Progress, SyncError, SyncKind, Syncer};

fn groups_ldif() -> String {
    format!(
        "dn: cn=devs,ou=Groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: devs\n\
         member: uid=alice,ou=People,{SUFFIX}\nmember: uid=bob,ou=People,{SUFFIX}\n\n\
         dn: cn=ops,ou=Groups,{SUFFIX}\nobjectClass: posixGroup\ncn: ops\ngidNumber: 5000\n\
         memberUid: carol\n\n\
         dn: cn=all,ou=Groups,{SUFFIX}\nobjectClass: groupOfUniqueNames\ncn: all\n\
         uniqueMember: cn=devs,ou=Groups,{SUFFIX}\nuniqueMember: uid=dave,ou=People,{SUFFIX}\n\n"
    )
}

fn seed(slapd: &Slapd) {
    let mut ldif = people_ldif(&PEOPLE[..6]);
    ldif.push_str(&groups_ldif());
    slapd.add(&ldif).expect("ldapmodify");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_and_delta_lifecycle() {
    let slapd = Slapd::start().expect("slapd");
    seed(&slapd);
    let fx = Fx::new();
    let mut settings = slapd.settings();
    settings.attributes.disabled = Some("employeeType".into());
    settings.attributes.disabled_values = Some(vec!["disabled".into()]);
    settings.max_delete_ratio = 0.5;
    let src = fx.ldap_dir(settings);
    let dir = src.directory_id.clone();
    let syncer = Syncer::new(fx.engine.clone());

    // Initial (full) sync: a delta without a cursor runs as full.
    let seq = fx.last_seq();
    let rec = syncer
        .run(&src, SyncKind::Delta, Arc::new(NoProgress))
        .await
        .expect("initial sync");
    assert_eq!(rec.kind, Some(SyncKind::Full));
    assert_eq!((rec.users_read, rec.groups_read, rec.created), (6, 3, 6));
    assert_eq!(
        fx.usernames(&dir),
        ["alice", "bob", "carol", "dave", "erin", "frank"]
    );
    assert_eq!(fx.members(&dir, "devs"), ["alice", "bob"]);
    assert_eq!(fx.members(&dir, "ops"), ["carol"]);
    // Nested: all = devs (alice, bob) + dave.
    assert_eq!(fx.members(&dir, "all"), ["alice", "bob", "dave"]);
    let kinds = fx.kinds_after(seq);
    assert_eq!(count(&kinds, "dsync.activated"), 1);
    assert_eq!(count(&kinds, "dsync.user.created"), 6);
    assert_eq!(count(&kinds, "dsync.group.created"), 3);
    assert_eq!(count(&kinds, "dsync.group.user_added"), 6);
    let alice = fx.user_named(&dir, "alice");
    assert_eq!(alice.user.email.as_deref(), Some("alice@example.test"));
    assert_eq!(alice.user.first_name.as_deref(), Some("Alice"));
    assert_eq!(alice.user.job_title.as_deref(), Some("Engineer"));
    assert_eq!(alice.user.idp_id.len(), 36, "entryUUID is the idp_id");
    let st = syncer.state(&dir).expect("state");
    assert!(st.cursor.is_some() && st.last_full.as_ref().is_some_and(|r| r.ok));

    // A second full run with no changes changes nothing.
    let seq = fx.last_seq();
    syncer
        .run(&src, SyncKind::Full, Arc::new(NoProgress))
        .await
        .expect("idempotent");
    assert_eq!(fx.kinds_after(seq), Vec::<String>::new());

    // Delta: a new user, a renamed user, a disabled user, a membership change.
    slapd
        .add(&person("grace", "Grace", "Green"))
        .expect("ldapmodify");
    slapd.modify(
        &format!(
            "dn: uid=bob,ou=People,{SUFFIX}\nchangetype: modrdn\nnewrdn: uid=robert\ndeleteoldrdn: 1\n\n\
             dn: uid=robert,ou=People,{SUFFIX}\nchangetype: modify\nreplace: givenName\ngivenName: Robert\n-\nreplace: cn\ncn: Robert Baker\n\n\
             dn: uid=erin,ou=People,{SUFFIX}\nchangetype: modify\nadd: employeeType\nemployeeType: disabled\n\n\
             dn: cn=devs,ou=Groups,{SUFFIX}\nchangetype: modify\nadd: member\nmember: uid=carol,ou=People,{SUFFIX}\n-\ndelete: member\nmember: uid=alice,ou=People,{SUFFIX}\n\n\
             dn: cn=ops,ou=Groups,{SUFFIX}\nchangetype: modify\nadd: memberUid\nmemberUid: grace\n\n"
        ),
        false,
    ).expect("ldapmodify");
    let bob_before = fx.user_named(&dir, "bob");
    let seq = fx.last_seq();
    let rec = syncer
        .run(&src, SyncKind::Delta, Arc::new(NoProgress))
        .await
        .expect("delta");
    assert_eq!(rec.kind, Some(SyncKind::Delta));
    let kinds = fx.kinds_after(seq);
    assert_eq!(count(&kinds, "dsync.user.created"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "dsync.user.deleted"), 1, "{kinds:?}");
    assert!(count(&kinds, "dsync.user.updated") >= 1, "{kinds:?}");
    assert!(count(&kinds, "dsync.group.user_added") >= 2, "{kinds:?}");
    // alice left devs, and so its parent "all" too (in this delta, not the next full sync).
    assert_eq!(count(&kinds, "dsync.group.user_removed"), 2, "{kinds:?}");
    assert_eq!(
        fx.usernames(&dir),
        ["alice", "carol", "dave", "frank", "grace", "robert"]
    );
    assert_eq!(fx.members(&dir, "all"), ["carol", "dave", "robert"]);
    let robert = fx.user_named(&dir, "robert");
    assert_eq!(
        robert.user.id, bob_before.user.id,
        "a rename keeps the user"
    );
    assert_eq!(robert.user.first_name.as_deref(), Some("Robert"));
    assert_eq!(
        fx.members(&dir, "devs"),
        ["carol", "robert"],
        "refint rewrote bob's member DN"
    );
    assert_eq!(fx.members(&dir, "ops"), ["carol", "grace"]);
    let updated = fx
        .events_after(seq)
        .into_iter()
        .find(|e| e["event"] == "dsync.user.updated" && e["data"]["id"] == robert.user.id.as_str())
        .expect("robert's update event");
    assert!(updated["data"]["previous_attributes"].is_object());

    // Full sync catches what deltas cannot: a deleted user and a user moved out of the base.
    slapd.modify(
        &format!(
            "dn: uid=frank,ou=People,{SUFFIX}\nchangetype: delete\n\n\
             dn: uid=dave,ou=People,{SUFFIX}\nchangetype: modrdn\nnewrdn: uid=dave\ndeleteoldrdn: 1\nnewsuperior: ou=Former,{SUFFIX}\n\n"
        ),
        false,
    ).expect("ldapmodify");
    let seq = fx.last_seq();
    let rec = syncer
        .run(&src, SyncKind::Full, Arc::new(NoProgress))
        .await
        .expect("full");
    assert_eq!(rec.deleted, 2);
    let kinds = fx.kinds_after(seq);
    assert_eq!(count(&kinds, "dsync.user.deleted"), 2, "{kinds:?}");
    assert_eq!(fx.usernames(&dir), ["alice", "carol", "grace", "robert"]);
    // "all" lost dave (moved out); devs is nested in it.
    assert_eq!(fx.members(&dir, "all"), ["carol", "robert"]);
    let st = syncer.state(&dir).expect("state");
    assert_eq!(st.runs, 4);
    assert_eq!(st.failures, 0);
}

/// Kills slapd after `after` entries were read.
struct KillAfter {
    pid: i32,
    after: u64,
    seen: AtomicU64,
}

impl Progress for KillAfter {
    fn phase(&self, _: &str, _: Option<u64>) {}
    fn inc(&self, n: u64) {
        if self.seen.fetch_add(n, Ordering::SeqCst) + n == self.after {
            // SAFETY: kill(2) on the slapd this test started.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stopped_mid_sync_changes_nothing() {
    let mut slapd = Slapd::start().expect("slapd");
    let mut ldif = String::new();
    for i in 0..60 {
        ldif.push_str(&person(&format!("user{i:03}"), "User", &format!("N{i}")));
    }
    slapd.add(&ldif).expect("ldapmodify");
    let fx = Fx::new();
    let mut settings = slapd.settings();
    settings.page_size = 5;
    let src = fx.ldap_dir(settings);
    let dir = src.directory_id.clone();
    let syncer = Syncer::new(fx.engine.clone());
    syncer
        .run(&src, SyncKind::Full, Arc::new(NoProgress))
        .await
        .expect("initial");
    assert_eq!(fx.users(&dir).len(), 60);

    // Changes on the server the interrupted run must not half-apply: 50 deletions, 1 add.
    let mut ldif = String::new();
    for i in 0..50 {
        ldif.push_str(&format!(
            "dn: uid=user{i:03},ou=People,{SUFFIX}\nchangetype: delete\n\n"
        ));
    }
    slapd.modify(&ldif, false).expect("ldapmodify");
    slapd
        .add(&person("newbie", "New", "Bie"))
        .expect("ldapmodify");

    let before = fx.rows();
    let seq = fx.last_seq();
    let pid = slapd.pid().expect("slapd pid");
    let killer = Arc::new(KillAfter {
        pid,
        after: 3,
        seen: AtomicU64::new(0),
    });
    let err = syncer
        .run(&src, SyncKind::Full, killer.clone())
        .await
        .expect_err("the server died mid-read");
    assert!(matches!(err, SyncError::Ldap(_)), "{err:?}");
    assert!(killer.seen.load(Ordering::SeqCst) >= 3);
    slapd.kill();
    assert_eq!(fx.rows(), before, "a failed run changes nothing");
    assert_eq!(fx.kinds_after(seq), Vec::<String>::new());
    let st = syncer.state(&dir).expect("state");
    assert_eq!(st.failures, 1);
    assert!(st.last_error.is_some());
    assert!(st.last_full.as_ref().is_some_and(|r| !r.ok));

    // An unreachable server is an error too, never "everyone was deleted".
    for kind in [SyncKind::Full, SyncKind::Delta] {
        let err = syncer
            .run(&src, kind, Arc::new(NoProgress))
            .await
            .expect_err("server is down");
        assert!(
            matches!(err, SyncError::Ldap(LdapError::Protocol { .. })),
            "{err:?}"
        );
        assert!(err.to_string().contains("nothing listens"), "{err}");
    }
    assert_eq!(fx.rows(), before);
    assert_eq!(fx.users(&dir).len(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mass_deletion_guard_waits_for_confirmation() {
    let (slapd, fx, src, syncer) = people_after_full_sync(20).await;
    let dir = src.directory_id.clone();
    assert_eq!(fx.users(&dir).len(), 20);

    // A base DN that does not exist is an LDAP error (noSuchObject), not an empty directory.
    let mut missing = src.clone();
    missing.settings.user_base_dns = vec![format!("ou=Nowhere,{SUFFIX}")];
    let before = fx.rows();
    let err = syncer
        .run(&missing, SyncKind::Full, Arc::new(NoProgress))
        .await
        .expect_err("missing base");
    assert!(
        matches!(err, SyncError::Ldap(LdapError::Result { rc: 32, .. })),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("noSuchObject (32)") && text.contains("check user_base_dns"),
        "{text}"
    );
    assert_eq!(fx.rows(), before);

    // Two deletions of 20 (10%) are allowed.
    slapd
        .modify(
            &format!(
                "dn: uid=u00,ou=People,{SUFFIX}\nchangetype: delete\n\n\
             dn: uid=u01,ou=People,{SUFFIX}\nchangetype: delete\n\n"
            ),
            false,
        )
        .expect("ldapmodify");
    let rec = syncer
        .run(&src, SyncKind::Full, Arc::new(NoProgress))
        .await
        .expect("10% is allowed");
    assert_eq!(rec.deleted, 2);

    // A base pointing at an empty OU would delete everyone: refused, nothing changes.
    let mut empty = src.clone();
    empty.settings.user_base_dns = vec![format!("ou=Empty,{SUFFIX}")];
    let before = fx.rows();
    let seq = fx.last_seq();
    let err = syncer
        .run(&empty, SyncKind::Full, Arc::new(NoProgress))
        .await
        .expect_err("guard");
    assert!(matches!(err, SyncError::Guard(_)), "{err:?}");
    assert_eq!(fx.rows(), before);
    assert_eq!(fx.kinds_after(seq), Vec::<String>::new());
    let st = syncer.state(&dir).expect("state");
    let pending = st.pending_guard.expect("pending guard recorded");
    assert_eq!((pending.would_delete, pending.total), (18, 18));
    assert!(!st.deletion_confirmed);

    // Retrying without confirmation still refuses.
    assert!(matches!(
        syncer
            .run(&empty, SyncKind::Full, Arc::new(NoProgress))
            .await,
        Err(SyncError::Guard(_))
    ));
    // The admin confirms: the next full run applies, and the confirmation is used up.
    assert!(syncer.confirm_deletion(&dir).expect("confirm").is_some());
    let rec = syncer
        .run(&empty, SyncKind::Full, Arc::new(NoProgress))
        .await
        .expect("confirmed");
    assert_eq!(rec.deleted, 18);
    assert_eq!(fx.users(&dir).len(), 0);
    assert_eq!(count(&fx.kinds_after(seq), "dsync.user.deleted"), 18);
    let st = syncer.state(&dir).expect("state");
    assert!(st.pending_guard.is_none() && !st.deletion_confirmed);
    assert!(syncer
        .confirm_deletion(&dir)
        .expect("nothing pending")
        .is_none());
}

/// A full sync skips a user whose entry digest matches the last run without building it, so
/// it must still see every change of an entry, and a change of the attribute mapping with no
/// entry changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_sees_entry_and_mapping_changes() {
    let (slapd, fx, src, syncer) = people_after_full_sync(20).await;
    let dir = src.directory_id.clone();
    let full = |s: &idbridge_ldap::LdapSource| {
        let s = s.clone();
        let syncer = &syncer;
        async move {
            syncer
                .run(&s, SyncKind::Full, Arc::new(NoProgress))
                .await
                .expect("full sync")
        }
    };
    let seq = fx.last_seq();
    assert_eq!(full(&src).await.updated, 0);
    assert_eq!(fx.kinds_after(seq), Vec::<String>::new());

    // One attribute of one user, another of another: exactly those two are updated.
    slapd
        .modify(
            &format!(
                "dn: uid=u03,ou=People,{SUFFIX}\nchangetype: modify\nreplace: title\ntitle: Staff Engineer\n\n\
                 dn: uid=u07,ou=People,{SUFFIX}\nchangetype: modify\nreplace: sn\nsn: Newname\n\n"
            ),
            false,
        )
        .expect("ldapmodify");
    let seq = fx.last_seq();
    assert_eq!(full(&src).await.updated, 2);
    let mut updated: Vec<String> = fx
        .events_after(seq)
        .into_iter()
        .filter(|e| e["event"] == "dsync.user.updated")
        .filter_map(|e| e["data"]["username"].as_str().map(str::to_owned))
        .collect();
    updated.sort();
    assert_eq!(updated, ["u03", "u07"]);
    assert_eq!(
        fx.user_named(&dir, "u03").user.job_title.as_deref(),
        Some("Staff Engineer")
    );
    assert_eq!(
        fx.user_named(&dir, "u07").user.last_name.as_deref(),
        Some("Newname")
    );

    // The mapping changes while no entry does: first and last name swap attributes, so the
    // same attributes are asked for and the entries come back byte for byte the same. Every
    // user is rebuilt and updated.
    let mut remapped = src.clone();
    remapped.settings.attributes.first_name = Some("sn".into());
    remapped.settings.attributes.last_name = Some("givenName".into());
    let seq = fx.last_seq();
    assert_eq!(full(&remapped).await.updated, 20);
    assert_eq!(count(&fx.kinds_after(seq), "dsync.user.updated"), 20);
    assert_eq!(
        fx.user_named(&dir, "u07").user.first_name.as_deref(),
        Some("Newname")
    );
    assert_eq!(
        fx.user_named(&dir, "u07").user.last_name.as_deref(),
        Some("U")
    );
}

/// A group entry far bigger than one socket read (4,000 members, about 160 KB of BER) arrives
/// whole: every member is resolved (the vendored ldap3 decoder waits for the whole message by
/// its length instead of re-parsing a partial one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_entry_spanning_many_reads_is_read_whole() {
    const N: usize = 4000;
    let slapd = Slapd::start().expect("slapd");
    let mut ldif = String::new();
    for i in 0..N {
        ldif.push_str(&person(&format!("m{i:05}"), "M", &format!("N{i}")));
    }
    ldif.push_str(&format!(
        "dn: cn=everyone,ou=Groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: everyone\n"
    ));
    for i in 0..N {
        ldif.push_str(&format!("member: uid=m{i:05},ou=People,{SUFFIX}\n"));
    }
    ldif.push('\n');
    slapd.add(&ldif).expect("ldapmodify");
    let fx = Fx::new();
    let src = fx.ldap_dir(slapd.settings());
    let dir = src.directory_id.clone();
    let rec = Syncer::new(fx.engine.clone())
        .run(&src, SyncKind::Full, Arc::new(NoProgress))
        .await
        .expect("full sync");
    assert_eq!((rec.users_read, rec.groups_read), (N as u64, 1));
    let members = fx.members(&dir, "everyone");
    assert_eq!(members.len(), N);
    assert_eq!(members.first().map(String::as_str), Some("m00000"));
    assert_eq!(members.last().map(String::as_str), Some("m03999"));
}

/// A service account whose bind is refused puts the directory in WorkOS's
/// `invalid_credentials` state with an error that says what to check; the next good run, full
/// or delta, makes it `linked` again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_bind_marks_the_directory_invalid_credentials_until_a_good_run() {
    use idbridge_model::DirectoryState;
    let (slapd, fx, src, syncer) = people_after_full_sync(3).await;
    let dir = src.directory_id.clone();
    let state = |fx: &Fx| fx.engine.get_directory(&dir).unwrap().directory.state;
    assert_eq!(state(&fx), DirectoryState::Linked);
    assert_eq!(
        serde_json::to_value(DirectoryState::InvalidCredentials).unwrap(),
        "invalid_credentials",
        "the WorkOS REST name"
    );

    let wrong_pw = slapd.dir().join("wrong.pw");
    std::fs::write(&wrong_pw, "not-the-password\n").unwrap();
    let mut bad = src.clone();
    bad.settings.bind_password_file = Some(wrong_pw);
    for (round, kind) in [SyncKind::Full, SyncKind::Delta].into_iter().enumerate() {
        let err = syncer
            .run(&bad, SyncKind::Full, Arc::new(NoProgress))
            .await
            .expect_err("wrong password");
        let text = err.to_string();
        assert!(
            text.contains("ldap bind failed: invalidCredentials (49)")
                && text.contains("check bind_dn and the bind password"),
            "{text}"
        );
        assert_eq!(
            syncer.state(&dir).unwrap().last_error.as_deref(),
            Some(text.as_str())
        );
        assert_eq!(state(&fx), DirectoryState::InvalidCredentials);

        let seq = fx.last_seq();
        let rec = syncer
            .run(&src, kind, Arc::new(NoProgress))
            .await
            .expect("good run");
        assert_eq!(rec.kind, Some(kind), "round {round}");
        assert_eq!(state(&fx), DirectoryState::Linked, "after a good {kind:?}");
        assert_eq!(fx.kinds_after(seq), ["dsync.activated"]);
    }
}
