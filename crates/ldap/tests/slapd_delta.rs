//! OpenLDAP deltas against a real slapd: the delta's changes and its cursor are one store
//! commit (issue 18), the run record counts what happened, and a change inside a nested group
//! reaches its parents in the same delta (issue 19).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::{people_ldif, person, run_delta, Fx, Slapd, SlapdSettings, SyncProv, PEOPLE, SUFFIX};
use idbridge_ldap::{ChangeTracking, NoProgress, SyncKind, Syncer};
use idbridge_store::Store;

/// alice, bob, ... jack; `outer` holds alice and the group `inner`, which holds bob; `devs`
/// holds bob and carol.
fn seeded(mode: SyncProv, tracking: ChangeTracking) -> (Slapd, Fx, idbridge_ldap::LdapSource) {
    let slapd = Slapd::start_with(None, mode).expect("slapd");
    let mut ldif = people_ldif(&PEOPLE);
    ldif.push_str(&format!(
        "dn: cn=inner,ou=Groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: inner\n\
         member: uid=bob,ou=People,{SUFFIX}\n\n\
         dn: cn=outer,ou=Groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: outer\n\
         member: uid=alice,ou=People,{SUFFIX}\nmember: cn=inner,ou=Groups,{SUFFIX}\n\n\
         dn: cn=devs,ou=Groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: devs\n\
         member: uid=bob,ou=People,{SUFFIX}\nmember: uid=carol,ou=People,{SUFFIX}\n\n"
    ));
    slapd.add(&ldif).expect("ldapmodify");
    let fx = Fx::new();
    let mut settings = slapd.settings();
    settings.max_delete_ratio = 0.3;
    settings.change_tracking = Some(tracking);
    let src = fx.ldap_dir(settings);
    (slapd, fx, src)
}

/// One user created (kim, who joins `inner`), one updated (alice's title), one deleted (jack)
/// and three memberships changed (kim into `inner` and so into `outer`; bob out of `devs`).
fn change(slapd: &Slapd, with_delete: bool) {
    slapd
        .add(&person("kim", "Kim", "King"))
        .expect("ldapmodify");
    let mut ldif = format!(
        "dn: uid=alice,ou=People,{SUFFIX}\nchangetype: modify\nreplace: title\ntitle: Lead\n\n\
         dn: cn=inner,ou=Groups,{SUFFIX}\nchangetype: modify\nadd: member\nmember: uid=kim,ou=People,{SUFFIX}\n\n\
         dn: cn=devs,ou=Groups,{SUFFIX}\nchangetype: modify\ndelete: member\nmember: uid=bob,ou=People,{SUFFIX}\n\n"
    );
    if with_delete {
        ldif.push_str(&format!(
            "dn: uid=jack,ou=People,{SUFFIX}\nchangetype: delete\n\n"
        ));
    }
    slapd.modify(&ldif, false).expect("ldapmodify");
}

async fn delta_is_one_commit_counted_and_refreshes_parents(
    mode: SyncProv,
    tracking: ChangeTracking,
) {
    let (slapd, fx, src) = seeded(mode, tracking);
    let dir = src.directory_id.clone();
    let syncer = Syncer::new(fx.engine.clone());
    syncer
        .run(&src, SyncKind::Full, Arc::new(NoProgress))
        .await
        .expect("full");
    assert_eq!(fx.members(&dir, "outer"), ["alice", "bob"]);
    let cursor_before = syncer.state(&dir).unwrap().cursor;

    // Timestamp tracking cannot see deletions (they wait for the full sync).
    let sees_deletes = tracking != ChangeTracking::Timestamp;
    // entryCSN has microsecond resolution, but make sure the changes are strictly newer.
    std::thread::sleep(std::time::Duration::from_millis(20));
    change(&slapd, sees_deletes);
    let commits = fx.store.stats().commits;
    let rec = run_delta(&syncer, &src).await;
    let state = syncer.state(&dir).unwrap();
    assert_ne!(state.cursor, cursor_before, "the cursor moved");
    assert_eq!(
        fx.store.stats().commits - commits,
        2,
        "one commit for the changes and their cursor, one for the run record"
    );

    assert_eq!(
        (rec.created, rec.updated, rec.deleted),
        (1, 1, u64::from(sees_deletes)),
        "{rec:?}"
    );
    assert_eq!(rec.memberships_changed, 3, "{rec:?}");
    assert_eq!(rec.groups_changed, 0, "{rec:?}");
    assert_eq!(state.last_delta.as_ref(), Some(&rec));

    // The parent shows kim now, not after the next full sync.
    assert_eq!(fx.members(&dir, "inner"), ["bob", "kim"]);
    assert_eq!(fx.members(&dir, "outer"), ["alice", "bob", "kim"]);
    assert_eq!(fx.members(&dir, "devs"), ["carol"]);

    // The next full sync finds the memberships as the delta left them.
    let seq = fx.last_seq();
    let rec = syncer
        .run(&src, SyncKind::Full, Arc::new(NoProgress))
        .await
        .expect("full after delta");
    let kinds = fx.kinds_after(seq);
    assert!(
        !kinds.iter().any(|k| k.starts_with("dsync.group.user_")),
        "{kinds:?}"
    );
    assert_eq!(rec.memberships_changed, 0, "{rec:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc4533_delta_is_one_commit_counted_and_refreshes_parents() {
    delta_is_one_commit_counted_and_refreshes_parents(SyncProv::SessionLog, ChangeTracking::Auto)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_delta_is_one_commit_counted_and_refreshes_parents() {
    delta_is_one_commit_counted_and_refreshes_parents(SyncProv::Off, ChangeTracking::Timestamp)
        .await;
}
