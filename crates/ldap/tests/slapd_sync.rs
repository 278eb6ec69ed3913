//! RFC 4533 refreshOnly deltas against a real OpenLDAP slapd with the syncprov overlay (and one
//! without it): deltas see deletions and moves out of the base DN, pass the mass-deletion
//! guard, and recover from a refused cookie through the next full sync.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::{
    count, people_after_full_sync, people_ldif, person, run_delta, Fx, Slapd, SlapdSettings,
    SyncProv, PEOPLE, SUFFIX,
};
use idbridge_directory::{Deactivation, DirectorySettings};
use idbridge_ldap::{
    ChangeTracking, DeltaCursor, LdapError, NoProgress, StateStore, SyncError, SyncKind, Syncer,
};
use idbridge_model::UserState;

fn seed(slapd: &Slapd) {
    let mut ldif = people_ldif(&PEOPLE);
    ldif.push_str(&format!(
        "dn: cn=devs,ou=Groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: devs\n\
         member: uid=alice,ou=People,{SUFFIX}\nmember: uid=bob,ou=People,{SUFFIX}\n\
         member: uid=frank,ou=People,{SUFFIX}\n\n\
         dn: cn=ops,ou=Groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: ops\n\
         member: uid=dave,ou=People,{SUFFIX}\nmember: uid=carol,ou=People,{SUFFIX}\n\n\
         dn: cn=temp,ou=Groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: temp\n\
         member: uid=erin,ou=People,{SUFFIX}\n\n"
    ));
    slapd.add(&ldif).expect("ldapmodify");
}

/// A seeded slapd in `mode` and a fresh engine with its directory (deletions up to 30%
/// allowed), before any sync.
fn seeded(mode: SyncProv) -> (Slapd, Fx, idbridge_ldap::LdapSource, Syncer) {
    seeded_with(mode, DirectorySettings::default())
}

/// [`seeded`] with the directory's own settings.
fn seeded_with(
    mode: SyncProv,
    dir: DirectorySettings,
) -> (Slapd, Fx, idbridge_ldap::LdapSource, Syncer) {
    let slapd = Slapd::start_with(None, mode).expect("slapd");
    seed(&slapd);
    let fx = Fx::new();
    let mut settings = slapd.settings();
    settings.max_delete_ratio = 0.3;
    let src = fx.ldap_dir_with(settings, dir);
    let syncer = Syncer::new(fx.engine.clone());
    (slapd, fx, src, syncer)
}

fn is_sync(c: &Option<DeltaCursor>) -> bool {
    matches!(c, Some(DeltaCursor::Sync(_)))
}

/// The delta scenario the issue asks for, against syncprov with a present phase (`On`) or a
/// delete phase (`SessionLog`).
async fn delta_sees_everything(mode: SyncProv) {
    let (slapd, fx, src, syncer) = seeded(mode);
    let dir = src.directory_id.clone();

    let rec = syncer
        .run(&src, SyncKind::Full, Arc::new(NoProgress))
        .await
        .expect("full");
    assert_eq!((rec.users_read, rec.groups_read), (10, 3));
    assert!(
        is_sync(&syncer.state(&dir).expect("state").cursor),
        "auto + syncprov keeps RFC 4533 cookies"
    );

    // Nothing changed: a delta changes nothing (no present-phase "everyone left").
    let seq = fx.last_seq();
    let rec = syncer
        .run(&src, SyncKind::Delta, Arc::new(NoProgress))
        .await
        .expect("empty delta");
    assert_eq!(rec.kind, Some(SyncKind::Delta));
    assert_eq!(fx.kinds_after(seq), Vec::<String>::new());

    let frank = fx.user_named(&dir, "frank");
    let dave = fx.user_named(&dir, "dave");
    slapd
        .add(&person("kim", "Kim", "King"))
        .expect("ldapmodify");
    slapd.modify(
        &format!(
            "dn: uid=alice,ou=People,{SUFFIX}\nchangetype: modify\nreplace: title\ntitle: Lead\n\n\
             dn: uid=frank,ou=People,{SUFFIX}\nchangetype: delete\n\n\
             dn: uid=dave,ou=People,{SUFFIX}\nchangetype: modrdn\nnewrdn: uid=dave\ndeleteoldrdn: 1\nnewsuperior: ou=Former,{SUFFIX}\n\n\
             dn: cn=devs,ou=Groups,{SUFFIX}\nchangetype: modify\ndelete: member\nmember: uid=bob,ou=People,{SUFFIX}\n\n\
             dn: cn=temp,ou=Groups,{SUFFIX}\nchangetype: delete\n\n"
        ),
        false,
    ).expect("ldapmodify");
    let seq = fx.last_seq();
    let rec = syncer
        .run(&src, SyncKind::Delta, Arc::new(NoProgress))
        .await
        .expect("delta");
    assert_eq!(rec.kind, Some(SyncKind::Delta));
    assert_eq!(rec.deleted, 2, "{rec:?}");
    let kinds = fx.kinds_after(seq);
    assert_eq!(count(&kinds, "dsync.user.created"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "dsync.user.deleted"), 2, "{kinds:?}");
    assert_eq!(count(&kinds, "dsync.user.updated"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "dsync.group.deleted"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "dsync.group.user_removed"), 1, "{kinds:?}");
    let mut want = vec![frank.user.id.clone(), dave.user.id.clone()];
    want.sort();
    assert_eq!(
        fx.deleted_user_ids(seq),
        want,
        "the deleted user and the user moved out"
    );
    assert_eq!(
        fx.usernames(&dir),
        ["alice", "bob", "carol", "erin", "gina", "hank", "ivy", "jack", "kim"]
    );
    let alice = fx.user_named(&dir, "alice");
    assert_eq!(alice.user.job_title.as_deref(), Some("Lead"));
    // Bob removed from devs; frank left devs with his deletion, dave left ops with his move.
    assert_eq!(fx.members(&dir, "devs"), ["alice"]);
    assert_eq!(fx.members(&dir, "ops"), ["carol"]);
    assert!(fx.groups(&dir).iter().all(|g| g.group.name != "temp"));

    // The next full sync finds nothing left to do.
    let seq = fx.last_seq();
    let rec = syncer
        .run(&src, SyncKind::Full, Arc::new(NoProgress))
        .await
        .expect("full after delta");
    assert_eq!(rec.deleted, 0);
    assert_eq!(fx.kinds_after(seq), Vec::<String>::new());
}

/// A full sync keeps the cookies the last delta confirmed instead of seeding new ones; a
/// delta from them after the full sync re-sends what the full sync already applied (no
/// events for it) and still sees what changed after it.
async fn full_sync_keeps_confirmed_cookies(mode: SyncProv) {
    let (slapd, fx, src, syncer) = seeded(mode);
    let dir = src.directory_id.clone();
    let run = |kind: SyncKind| {
        let (syncer, src) = (&syncer, &src);
        async move {
            syncer
                .run(src, kind, Arc::new(NoProgress))
                .await
                .expect("run")
        }
    };
    run(SyncKind::Full).await;
    run(SyncKind::Delta).await;
    let confirmed = syncer.state(&dir).expect("state").cursor;
    assert!(is_sync(&confirmed));

    // Changed before the full sync: applied by it.
    slapd
        .modify(
            &format!(
                "dn: uid=alice,ou=People,{SUFFIX}\nchangetype: delete\n\n\
                 dn: uid=bob,ou=People,{SUFFIX}\nchangetype: modify\nreplace: title\ntitle: Lead\n\n"
            ),
            false,
        )
        .expect("ldapmodify");
    let seq = fx.last_seq();
    let rec = run(SyncKind::Full).await;
    assert_eq!((rec.deleted, rec.updated), (1, 1));
    assert_eq!(
        syncer.state(&dir).expect("state").cursor,
        confirmed,
        "the full sync kept the confirmed cookies"
    );
    let after_full = fx.kinds_after(seq).len();

    // Changed after it: the delta from the kept cookies sees it, and re-sends alice's deletion
    // and bob's change without a second event for either.
    slapd
        .modify(
            &format!("dn: uid=carol,ou=People,{SUFFIX}\nchangetype: delete\n\n"),
            false,
        )
        .expect("ldapmodify");
    let seq = fx.last_seq();
    let rec = run(SyncKind::Delta).await;
    assert_eq!(rec.kind, Some(SyncKind::Delta));
    let kinds = fx.kinds_after(seq);
    assert_eq!(count(&kinds, "dsync.user.deleted"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "dsync.user.updated"), 0, "{kinds:?}");
    assert!(after_full > 0);
    let names = fx.usernames(&dir);
    assert!(
        !names.iter().any(|n| n == "alice" || n == "carol"),
        "{names:?}"
    );
    assert_ne!(
        syncer.state(&dir).expect("state").cursor,
        confirmed,
        "the delta moved the cookies on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_keeps_cookies_present_phase() {
    full_sync_keeps_confirmed_cookies(SyncProv::On).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_keeps_cookies_delete_phase() {
    full_sync_keeps_confirmed_cookies(SyncProv::SessionLog).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_delta_with_present_phase() {
    delta_sees_everything(SyncProv::On).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_delta_with_delete_phase() {
    delta_sees_everything(SyncProv::SessionLog).await;
}

/// Where the directory keeps departed users inactive, a delta deactivates a deleted entry and
/// takes it out of its groups (a terminated employee loses access at the delta, not at the
/// next full sync); the full sync after it agrees and changes nothing.
async fn delta_keeps_departed_users_inactive(mode: SyncProv) {
    let keep = DirectorySettings {
        deactivation: Deactivation::KeepInactive,
        ..Default::default()
    };
    let (slapd, fx, src, syncer) = seeded_with(mode, keep);
    let dir = src.directory_id.clone();
    syncer
        .run(&src, SyncKind::Full, Arc::new(NoProgress))
        .await
        .expect("full");
    assert!(is_sync(&syncer.state(&dir).expect("state").cursor));

    slapd
        .modify(
            &format!("dn: uid=frank,ou=People,{SUFFIX}\nchangetype: delete\n\n"),
            false,
        )
        .expect("ldapmodify");
    let seq = fx.last_seq();
    let rec = run_delta(&syncer, &src).await;
    assert_eq!((rec.deleted, rec.updated), (0, 1), "{rec:?}");
    let events = fx.events_after(seq);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["event"], "dsync.user.updated");
    assert_eq!(events[0]["data"]["username"], "frank");
    assert_eq!(events[0]["data"]["state"], "inactive");
    assert_eq!(events[1]["event"], "dsync.group.user_removed");
    assert_eq!(events[1]["data"]["user"]["username"], "frank");
    let frank = fx.user_named(&dir, "frank");
    assert_eq!(frank.user.state, UserState::Inactive);
    assert_eq!(fx.members(&dir, "devs"), ["alice", "bob"]);

    // The next delta and the next full sync find nothing left to do.
    for kind in [SyncKind::Delta, SyncKind::Full] {
        let seq = fx.last_seq();
        let rec = syncer
            .run(&src, kind, Arc::new(NoProgress))
            .await
            .expect("run after the delta");
        assert_eq!((rec.deleted, rec.updated), (0, 0), "{kind:?}: {rec:?}");
        assert_eq!(fx.kinds_after(seq), Vec::<String>::new(), "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_inactive_delta_with_present_phase() {
    delta_keeps_departed_users_inactive(SyncProv::On).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_inactive_delta_with_delete_phase() {
    delta_keeps_departed_users_inactive(SyncProv::SessionLog).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_deletions_pass_the_mass_deletion_guard() {
    let (slapd, fx, src, syncer) = people_after_full_sync(20).await;
    let dir = src.directory_id.clone();
    assert!(is_sync(&syncer.state(&dir).expect("state").cursor));

    // Five of twenty (25% > 10%), and an add that must not slip through either.
    let mut ldif = String::new();
    for i in 0..5 {
        ldif.push_str(&format!(
            "dn: uid=u{i:02},ou=People,{SUFFIX}\nchangetype: delete\n\n"
        ));
    }
    slapd.modify(&ldif, false).expect("ldapmodify");
    slapd
        .add(&person("newbie", "New", "Bie"))
        .expect("ldapmodify");
    let before = fx.rows();
    let seq = fx.last_seq();
    for _ in 0..2 {
        let err = syncer
            .run(&src, SyncKind::Delta, Arc::new(NoProgress))
            .await
            .expect_err("guard");
        assert!(matches!(err, SyncError::Guard(_)), "{err:?}");
        assert_eq!(fx.rows(), before, "a refused delta changes nothing");
        assert_eq!(fx.kinds_after(seq), Vec::<String>::new());
    }
    let st = syncer.state(&dir).expect("state");
    let pending = st.pending_guard.expect("pending guard");
    assert_eq!((pending.would_delete, pending.total), (5, 20));
    assert_eq!(st.last_delta.as_ref().map(|r| r.ok), Some(false));

    assert!(syncer.confirm_deletion(&dir).expect("confirm").is_some());
    let rec = syncer
        .run(&src, SyncKind::Delta, Arc::new(NoProgress))
        .await
        .expect("confirmed delta");
    assert_eq!(rec.kind, Some(SyncKind::Delta));
    assert_eq!(rec.deleted, 5);
    let kinds = fx.kinds_after(seq);
    assert_eq!(count(&kinds, "dsync.user.deleted"), 5, "{kinds:?}");
    assert_eq!(count(&kinds, "dsync.user.created"), 1, "{kinds:?}");
    assert_eq!(fx.users(&dir).len(), 16);
    let st = syncer.state(&dir).expect("state");
    assert!(st.pending_guard.is_none() && !st.deletion_confirmed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_cookie_fails_cleanly_and_full_sync_recovers() {
    let (slapd, fx, src, syncer) = seeded(SyncProv::On);
    let dir = src.directory_id.clone();
    syncer
        .run(&src, SyncKind::Full, Arc::new(NoProgress))
        .await
        .expect("initial");
    let states = StateStore::new(fx.store.clone());
    slapd
        .modify(
            &format!("dn: uid=jack,ou=People,{SUFFIX}\nchangetype: delete\n\n"),
            false,
        )
        .expect("ldapmodify");

    let poke = |bad: &[u8]| {
        let st = states
            .update(&dir, |st| {
                if let Some(DeltaCursor::Sync(c)) = &mut st.cursor {
                    for v in c.users.values_mut().chain(c.groups.values_mut()) {
                        *v = bad.iter().map(|b| format!("{b:02x}")).collect();
                    }
                }
            })
            .expect("poke cookie");
        assert!(is_sync(&st.cursor));
    };

    // A cookie naming a state the server never had (from the future): refused; the delta
    // fails, changes nothing and drops the cookies; the next run is a full sync.
    poke(b"rid=000,csn=29991231235959.999999Z#000000#000#000000");
    let before = fx.rows();
    let seq = fx.last_seq();
    let err = syncer
        .run(&src, SyncKind::Delta, Arc::new(NoProgress))
        .await
        .expect_err("the server refuses the cookie");
    assert!(
        matches!(err, SyncError::Ldap(LdapError::CookieRefused { .. })),
        "{err:?}"
    );
    assert_eq!(fx.rows(), before, "a refused delta changes nothing");
    assert_eq!(fx.kinds_after(seq), Vec::<String>::new());
    let st = syncer.state(&dir).expect("state");
    assert_eq!(st.cursor, None, "cookies dropped");
    assert_eq!(st.last_delta.as_ref().map(|r| r.ok), Some(false));
    let rec = syncer
        .run(&src, SyncKind::Delta, Arc::new(NoProgress))
        .await
        .expect("recovery");
    assert_eq!((rec.kind, rec.deleted), (Some(SyncKind::Full), 1));
    assert!(is_sync(&syncer.state(&dir).expect("state").cursor));

    // A cookie without a CSN: slapd reads it as none and sends its whole content. Nothing is
    // deleted on that (a deletion waits for the next full sync), and the reply's cookie
    // replaces the broken one.
    poke(b"garbage");
    slapd
        .modify(
            &format!("dn: uid=hank,ou=People,{SUFFIX}\nchangetype: delete\n\n"),
            false,
        )
        .expect("ldapmodify");
    let rec = syncer
        .run(&src, SyncKind::Delta, Arc::new(NoProgress))
        .await
        .expect("garbage cookie: a full refresh");
    assert_eq!(rec.kind, Some(SyncKind::Delta));
    assert!(fx.usernames(&dir).contains(&"hank".to_string()));
    let rec = syncer
        .run(&src, SyncKind::Full, Arc::new(NoProgress))
        .await
        .expect("full");
    assert_eq!(rec.deleted, 1);
    assert!(!fx.usernames(&dir).contains(&"jack".to_string()));
    // And the re-seeded cookies work: a deletion is seen by the next delta.
    slapd
        .modify(
            &format!("dn: uid=ivy,ou=People,{SUFFIX}\nchangetype: delete\n\n"),
            false,
        )
        .expect("ldapmodify");
    let rec = syncer
        .run(&src, SyncKind::Delta, Arc::new(NoProgress))
        .await
        .expect("delta");
    assert_eq!((rec.kind, rec.deleted), (Some(SyncKind::Delta), 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_syncprov_sync_fails_and_auto_falls_back() {
    // The module loaded without the overlay on the database (the root DSE still lists the
    // control: the sync search itself is refused), and the module not loaded at all.
    without_syncprov(SyncProv::Off).await;
    without_syncprov(SyncProv::Unloaded).await;
}

async fn without_syncprov(mode: SyncProv) {
    let slapd = Slapd::start_with(None, mode).expect("slapd");
    seed(&slapd);
    let fx = Fx::new();
    let mut required = slapd.settings();
    required.change_tracking = Some(ChangeTracking::Sync);
    let src = fx.ldap_dir(required);
    let dir = src.directory_id.clone();
    let syncer = Syncer::new(fx.engine.clone());
    let before = fx.rows();
    let err = syncer
        .run(&src, SyncKind::Full, Arc::new(NoProgress))
        .await
        .expect_err("sync required, server without it");
    assert!(
        matches!(err, SyncError::Ldap(LdapError::SyncUnsupported)),
        "{err:?}"
    );
    assert!(err.to_string().contains("syncprov"), "{err}");
    assert_eq!(fx.rows(), before);
    assert_eq!(syncer.state(&dir).expect("state").failures, 1);

    // auto: the timestamp cursor.
    let mut auto = src.clone();
    auto.settings.change_tracking = Some(ChangeTracking::Auto);
    syncer
        .run(&auto, SyncKind::Full, Arc::new(NoProgress))
        .await
        .expect("auto full");
    assert!(matches!(
        syncer.state(&dir).expect("state").cursor,
        Some(DeltaCursor::Stamp(_))
    ));
    assert_eq!(fx.users(&dir).len(), 10);
    slapd
        .add(&person("kim", "Kim", "King"))
        .expect("ldapmodify");
    let rec = syncer
        .run(&auto, SyncKind::Delta, Arc::new(NoProgress))
        .await
        .expect("auto delta");
    assert_eq!((rec.kind, rec.users_read), (Some(SyncKind::Delta), 1));
    assert_eq!(fx.users(&dir).len(), 11);
}
