//! Streamed snapshots (`apply_snapshot_from`): the source is read twice and never held, a
//! source that changes between passes is refused, and the fingerprints that let an unchanged
//! user be skipped never hide a change.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::cell::Cell;

use common::{eng_roles, group, user, Fx};
use idbridge_directory::{
    DirectoryEngine, DirectorySettings, EngineError, GroupInput, Snapshot, SnapshotPolicy,
    SnapshotSource, UserInput,
};
use serde_json::Value;

/// A source that makes its users on the fly (as a CSV reader does) and counts the passes.
struct Generated {
    users: usize,
    first_name: &'static str,
    user_passes: Cell<u32>,
    /// On the second users pass, also yield a user the first pass did not have.
    grow_on_second_pass: bool,
}

impl Generated {
    fn new(users: usize, first_name: &'static str) -> Self {
        Generated {
            users,
            first_name,
            user_passes: Cell::new(0),
            grow_on_second_pass: false,
        }
    }
}

impl SnapshotSource for Generated {
    fn for_each_user(
        &self,
        f: &mut dyn FnMut(&UserInput) -> idbridge_directory::Result<()>,
    ) -> idbridge_directory::Result<()> {
        self.user_passes.set(self.user_passes.get() + 1);
        let extra = usize::from(self.grow_on_second_pass && self.user_passes.get() == 2);
        for i in 0..self.users + extra {
            f(&user(
                &format!("u-{i}"),
                &format!("u{i}@foo-corp.com"),
                self.first_name,
            ))?;
        }
        Ok(())
    }

    fn groups(&self) -> idbridge_directory::Result<Vec<GroupInput>> {
        Ok(vec![group("g-eng", "Engineering"), group("g-ops", "Ops")])
    }

    fn for_each_membership(
        &self,
        f: &mut dyn FnMut(&str, &str) -> idbridge_directory::Result<()>,
    ) -> idbridge_directory::Result<()> {
        for i in 0..self.users {
            let g = if i % 2 == 0 { "g-eng" } else { "g-ops" };
            f(g, &format!("u-{i}"))?;
        }
        // Unknown group and user: ignored, not an error.
        f("g-nowhere", "u-0")?;
        f("g-eng", "u-nobody")
    }
}

fn in_memory(source: &Generated) -> Snapshot {
    let mut snap = Snapshot {
        groups: source.groups().unwrap(),
        ..Snapshot::default()
    };
    source
        .for_each_user(&mut |u| {
            snap.users.push(u.clone());
            Ok(())
        })
        .unwrap();
    source
        .for_each_membership(&mut |g, u| {
            snap.memberships.push((g.into(), u.into()));
            Ok(())
        })
        .unwrap();
    snap
}

fn first_names(fx: &Fx, dir: &str) -> Vec<String> {
    (0..10)
        .map(|i| {
            fx.engine
                .find_user_by_idp_id(dir, &format!("u-{i}"))
                .unwrap()
                .unwrap()
                .user
                .first_name
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn a_streamed_source_is_read_twice_and_gives_what_the_in_memory_snapshot_gives() {
    let fx = Fx::new();
    let streamed_dir = fx.sftp_dir(DirectorySettings::default());
    let memory_dir = fx.sftp_dir(DirectorySettings::default());
    let src = Generated::new(30, "Ann");
    let streamed = fx
        .engine
        .apply_snapshot_from(&streamed_dir, &src, SnapshotPolicy::default())
        .unwrap();
    assert_eq!(src.user_passes.get(), 2, "index pass + apply pass");
    let memory = fx
        .engine
        .apply_snapshot(&memory_dir, in_memory(&src), SnapshotPolicy::default())
        .unwrap();
    assert_eq!(streamed, memory);
    assert_eq!(
        (
            streamed.created,
            streamed.groups_created,
            streamed.memberships_added
        ),
        (30, 2, 30)
    );
    let eng = fx
        .engine
        .find_group_by_idp_id(&streamed_dir, "g-eng")
        .unwrap()
        .unwrap();
    assert_eq!(fx.engine.group_members(&eng.group.id).unwrap().len(), 15);
}

#[test]
fn a_source_that_changes_between_passes_is_refused() {
    let fx = Fx::new();
    let dir = fx.sftp_dir(DirectorySettings::default());
    let mut src = Generated::new(5, "Ann");
    src.grow_on_second_pass = true;
    let err = fx
        .engine
        .apply_snapshot_from(&dir, &src, SnapshotPolicy::default())
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Source(m) if m.contains("u-5")),
        "{err:?}"
    );
}

#[test]
fn unchanged_users_are_skipped_but_a_write_outside_the_snapshot_is_repaired() {
    let fx = Fx::new();
    let dir = fx.sftp_dir(DirectorySettings::default());
    let src = Generated::new(10, "Ann");
    fx.engine
        .apply_snapshot_from(&dir, &src, SnapshotPolicy::default())
        .unwrap();
    let seq = fx.last_seq();
    let again = fx
        .engine
        .apply_snapshot_from(&dir, &src, SnapshotPolicy::default())
        .unwrap();
    assert_eq!((again.updated, again.events, again.commits), (0, 0, 0));
    assert_eq!(fx.last_seq(), seq);

    // Someone else (a delta sync, an admin tool) changes u-3: the next full snapshot must put
    // it back even though the snapshot's input for u-3 did not change.
    let u3 = fx.engine.find_user_by_idp_id(&dir, "u-3").unwrap().unwrap();
    fx.engine
        .upsert_user(
            &dir,
            Some(&u3.user.id),
            user("u-3", "u3@foo-corp.com", "Changed"),
            None,
        )
        .unwrap();
    assert_eq!(first_names(&fx, &dir)[3], "Changed");
    let repaired = fx
        .engine
        .apply_snapshot_from(&dir, &src, SnapshotPolicy::default())
        .unwrap();
    assert_eq!(repaired.updated, 1, "{repaired:?}");
    assert!(first_names(&fx, &dir).iter().all(|n| n == "Ann"));

    // A real change in the source is applied, of course.
    let renamed = fx
        .engine
        .apply_snapshot_from(&dir, &Generated::new(10, "Bea"), SnapshotPolicy::default())
        .unwrap();
    assert_eq!(renamed.updated, 10);
    assert!(first_names(&fx, &dir).iter().all(|n| n == "Bea"));
}

#[test]
fn a_new_role_mapping_reaches_users_whose_input_did_not_change() {
    let fx = Fx::new();
    let dir = fx.sftp_dir(DirectorySettings::default());
    let src = Generated::new(4, "Ann");
    fx.engine
        .apply_snapshot_from(&dir, &src, SnapshotPolicy::default())
        .unwrap();
    // Roles written straight to the engine's tables, without recompute_roles: only the next
    // snapshot can bring users up to date, and the fingerprint must not stop it.
    eng_roles(&fx);
    fx.engine
        .apply_snapshot_from(&dir, &src, SnapshotPolicy::default())
        .unwrap();
    let role_of = |idp: &str| {
        fx.engine
            .find_user_by_idp_id(&dir, idp)
            .unwrap()
            .unwrap()
            .user
            .role
            .map(|r| r.slug)
    };
    assert_eq!(role_of("u-0").as_deref(), Some("eng"));
    assert_eq!(role_of("u-1").as_deref(), Some("member"));
}

#[test]
fn membership_events_carry_the_user_as_written_in_the_same_run() {
    let fx = Fx::new();
    let small = DirectoryEngine::new(fx.store.clone(), fx.orgs.clone()).with_commit_limit(7);
    let dir = fx.sftp_dir(DirectorySettings::default());
    // First run: users only, no memberships.
    let users_only = Snapshot {
        users: (0..6)
            .map(|i| user(&format!("u-{i}"), &format!("u{i}@foo-corp.com"), "Ann"))
            .collect(),
        ..Snapshot::default()
    };
    small
        .apply_snapshot(&dir, users_only, SnapshotPolicy::default())
        .unwrap();
    // Second run: every user renamed AND added to a group, across several small commits.
    let seq = fx.last_seq();
    let src = Generated::new(6, "Bea");
    let out = small
        .apply_snapshot_from(&dir, &src, SnapshotPolicy::default())
        .unwrap();
    assert!(out.commits > 1, "{out:?}");
    assert_eq!((out.updated, out.memberships_added), (6, 6));
    let added: Vec<Value> = fx
        .events_after(seq)
        .into_iter()
        .filter(|e| e["event"] == "dsync.group.user_added")
        .collect();
    assert_eq!(added.len(), 6);
    for e in added {
        assert_eq!(e["data"]["user"]["first_name"], "Bea", "{e}");
    }
}
