//! An LDAP delta and the cursor that covers it are ONE store commit (issue 18), and the run's
//! outcome counts what happened (issue 19).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{group, user, Fx};
use idbridge_directory::{DeltaChange, DirectorySettings, EngineError};
use idbridge_store::{ChangeSet, Store, StoreError};

const CURSOR_TABLE: &str = "test.cursor";

fn seed(fx: &Fx, dir: &str) {
    fx.engine
        .apply_delta(
            dir,
            vec![
                DeltaChange::UpsertUser(user("a", "a@foo-corp.com", "A")),
                DeltaChange::UpsertUser(user("b", "b@foo-corp.com", "B")),
                DeltaChange::UpsertGroup(group("g", "G")),
                DeltaChange::SetMembers {
                    group_idp_id: "g".into(),
                    user_idp_ids: vec!["a".into()],
                },
            ],
        )
        .unwrap();
}

/// Users: c and d created, a updated, b deleted; groups: g updated, h created; members of g:
/// [a] -> [c, d] (two added, one removed).
fn mixed_delta() -> Vec<DeltaChange> {
    vec![
        DeltaChange::RemoveUser { idp_id: "b".into() },
        DeltaChange::UpsertUser(user("c", "c@foo-corp.com", "C")),
        DeltaChange::UpsertUser(user("a", "a@foo-corp.com", "Alice")),
        DeltaChange::UpsertUser(user("d", "d@foo-corp.com", "D")),
        DeltaChange::UpsertGroup(group("g", "G renamed")),
        DeltaChange::UpsertGroup(group("h", "H")),
        DeltaChange::SetMembers {
            group_idp_id: "g".into(),
            user_idp_ids: vec!["c".into(), "d".into()],
        },
    ]
}

fn put_cursor(cs: &mut ChangeSet, value: &str) -> Result<(), StoreError> {
    cs.put(CURSOR_TABLE, "dir", value.as_bytes().to_vec());
    Ok(())
}

#[test]
fn a_delta_and_its_cursor_are_one_commit_and_the_outcome_counts_what_happened() {
    let fx = Fx::new();
    let dir = fx.sftp_dir(DirectorySettings::default());
    seed(&fx, &dir);
    let commits = fx.store.stats().commits;
    let seq = fx.last_seq();
    let out = fx
        .engine
        .apply_delta_with(&dir, mixed_delta(), |cs| put_cursor(cs, "usn-2"))
        .unwrap();
    assert_eq!(
        fx.store.stats().commits - commits,
        1,
        "the delta's changes and its cursor in one commit"
    );
    assert_eq!(out.commits, 1);
    assert_eq!(
        fx.store.get(CURSOR_TABLE, "dir").unwrap(),
        Some(b"usn-2".to_vec())
    );
    assert_eq!(
        (out.created, out.updated, out.deleted),
        (2, 1, 1),
        "{out:?}"
    );
    assert_eq!(
        (out.groups_created, out.groups_updated, out.groups_deleted),
        (1, 1, 0)
    );
    assert_eq!((out.memberships_added, out.memberships_removed), (2, 1));
    let kinds = fx.kinds_after(seq);
    assert_eq!(out.events, kinds.len() as u64, "{kinds:?}");
    for want in [
        "dsync.user.deleted",
        "dsync.user.created",
        "dsync.user.updated",
        "dsync.group.created",
        "dsync.group.updated",
        "dsync.group.user_added",
        "dsync.group.user_removed",
    ] {
        assert!(kinds.iter().any(|k| k == want), "{want} in {kinds:?}");
    }
    let g = fx.engine.find_group_by_idp_id(&dir, "g").unwrap().unwrap();
    assert_eq!(g.group.name, "G renamed");
    assert_eq!(fx.engine.group_members(&g.group.id).unwrap().len(), 2);
    assert!(fx.engine.find_user_by_idp_id(&dir, "b").unwrap().is_none());
    let counts = fx.engine.counts(&dir).unwrap();
    assert_eq!((counts.active, counts.groups), (3, 2));

    // The same delta again: nothing changes, the cursor still moves (one commit, no event).
    let seq = fx.last_seq();
    let commits = fx.store.stats().commits;
    let again = fx
        .engine
        .apply_delta_with(&dir, mixed_delta(), |cs| put_cursor(cs, "usn-3"))
        .unwrap();
    assert_eq!((again.applied, again.events), (0, 0), "{again:?}");
    assert_eq!(fx.last_seq(), seq);
    assert_eq!(fx.store.stats().commits - commits, 1);
    assert_eq!(
        fx.store.get(CURSOR_TABLE, "dir").unwrap(),
        Some(b"usn-3".to_vec())
    );
}

/// A failure anywhere in the run — a change the engine refuses, or the cursor's own part —
/// leaves neither the changes nor the cursor: the store is exactly as before.
#[test]
fn a_failed_delta_writes_neither_its_changes_nor_its_cursor() {
    let fx = Fx::new();
    let dir = fx.sftp_dir(DirectorySettings::default());
    seed(&fx, &dir);
    let rows = fx.rows();
    let seq = fx.last_seq();

    let mut bad = mixed_delta();
    bad.push(DeltaChange::SetMembers {
        group_idp_id: "no-such-group".into(),
        user_idp_ids: vec!["a".into()],
    });
    let err = fx
        .engine
        .apply_delta_with(&dir, bad, |cs| put_cursor(cs, "usn-2"))
        .unwrap_err();
    assert!(matches!(err, EngineError::NotFound { .. }), "{err:?}");
    assert_eq!(fx.rows(), rows, "nothing of the failed delta was written");
    assert_eq!(fx.last_seq(), seq, "no event of the failed delta");

    let err = fx
        .engine
        .apply_delta_with(&dir, mixed_delta(), |_| {
            Err(StoreError::Backend("cursor refused".into()))
        })
        .unwrap_err();
    assert!(err.to_string().contains("cursor refused"), "{err}");
    assert_eq!(fx.rows(), rows);
    assert_eq!(fx.last_seq(), seq);
}

/// A write from outside the run between its reads and its commit (another process on the same
/// store) makes the commit a conflict, not a lost update.
#[test]
fn a_delta_over_a_directory_changed_underneath_conflicts() {
    let fx = Fx::new();
    let dir = fx.sftp_dir(DirectorySettings::default());
    seed(&fx, &dir);
    let other = idbridge_directory::DirectoryEngine::new(fx.store.clone(), fx.orgs.clone());
    let err = fx
        .engine
        .apply_delta_with(&dir, mixed_delta(), |cs| {
            // Runs after the changes were staged, before the real commit.
            other
                .apply_delta(
                    &dir,
                    vec![DeltaChange::UpsertUser(user("z", "z@foo-corp.com", "Z"))],
                )
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            put_cursor(cs, "usn-2")
        })
        .unwrap_err();
    assert!(
        err.to_string().contains("conflict") || matches!(err, EngineError::Store(_)),
        "{err}"
    );
    assert!(fx.store.get(CURSOR_TABLE, "dir").unwrap().is_none());
    assert!(fx.engine.find_user_by_idp_id(&dir, "c").unwrap().is_none());
}

/// A delta bigger than the commit limit is committed in chunks as it goes; the cursor joins
/// the last, and re-running the whole delta after a crash between chunks is a no-op for the
/// chunks already applied.
#[test]
fn an_oversized_delta_is_chunked_and_the_cursor_joins_the_last_chunk() {
    let fx = Fx::new();
    let engine = idbridge_directory::DirectoryEngine::new(fx.store.clone(), fx.orgs.clone())
        .with_commit_limit(20);
    let dir = fx.sftp_dir(DirectorySettings::default());
    let changes: Vec<DeltaChange> = (0..30)
        .map(|i| {
            DeltaChange::UpsertUser(user(&format!("u{i}"), &format!("u{i}@foo-corp.com"), "U"))
        })
        .collect();
    let out = engine
        .apply_delta_with(&dir, changes.clone(), |cs| put_cursor(cs, "c1"))
        .unwrap();
    assert!(out.commits > 1, "{out:?}");
    assert_eq!(out.created, 30);
    assert_eq!(
        fx.store.get(CURSOR_TABLE, "dir").unwrap(),
        Some(b"c1".to_vec())
    );
    let seq = fx.last_seq();
    let again = engine
        .apply_delta_with(&dir, changes, |cs| put_cursor(cs, "c1"))
        .unwrap();
    assert_eq!((again.created, again.events), (0, 0));
    assert_eq!(fx.last_seq(), seq);
}
