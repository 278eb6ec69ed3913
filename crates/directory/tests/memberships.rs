//! Memberships as `directory_memberships` rows: pages over a group's members and a user's
//! groups in both orders, and the move of key-value pairs an earlier build wrote.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use idbridge_directory::{Cursor, DirectoryEngine, DirectorySettings, Order, PageRequest};
use idbridge_store::{ChangeSet, ExportRecord, Store};

/// A directory with `users` users and `groups` groups, every user in every group.
fn populated(fx: &Fx, users: usize, groups: usize) -> (String, Vec<String>, Vec<String>) {
    let (dir, _) = fx.scim_dir(DirectorySettings::default());
    let uids: Vec<String> = (0..users)
        .map(|i| {
            fx.engine
                .upsert_user(
                    &dir,
                    None,
                    user(&format!("u-{i}"), &format!("u{i}@foo-corp.com"), "U"),
                    None,
                )
                .unwrap()
                .user
                .user
                .id
        })
        .collect();
    let gids: Vec<String> = (0..groups)
        .map(|i| {
            let g = fx
                .engine
                .upsert_group(&dir, None, group(&format!("g-{i}"), &format!("G{i}")), None)
                .unwrap()
                .group
                .group
                .id;
            fx.engine.set_group_members(&dir, &g, uids.clone()).unwrap();
            g
        })
        .collect();
    (dir, uids, gids)
}

/// Every id `list` gives, walking pages of `limit` with `after` and then back with `before`.
fn walk(
    limit: usize,
    order: Order,
    list: impl Fn(&PageRequest) -> (Vec<String>, Option<String>, Option<String>),
) -> (Vec<String>, Vec<String>) {
    let mut forward = Vec::new();
    let mut req = PageRequest {
        limit,
        order,
        ..Default::default()
    };
    let mut last_before = None;
    loop {
        let (ids, before, after) = list(&req);
        forward.extend(ids);
        last_before = before.or(last_before);
        match after {
            Some(a) => req.cursor = Cursor::After(a),
            None => break,
        }
    }
    // Back from the last page's first item to the start.
    let mut backward = Vec::new();
    let mut cursor = last_before;
    while let Some(b) = cursor {
        let (ids, before, _) = list(&PageRequest {
            limit,
            order,
            cursor: Cursor::Before(b),
        });
        backward.splice(0..0, ids);
        cursor = before;
    }
    (forward, backward)
}

#[test]
fn member_and_group_lists_page_both_ways_in_id_order() {
    let fx = Fx::new();
    let (dir, mut uids, mut gids) = populated(&fx, 7, 5);
    uids.sort();
    gids.sort();
    for limit in 1..5 {
        for order in [Order::Asc, Order::Desc] {
            let (fwd, back) = walk(limit, order, |req| {
                let p = fx.engine.list_users(&dir, Some(&gids[2]), req).unwrap();
                let ids = p.data.into_iter().map(|u| u.user.id).collect();
                (ids, p.before, p.after)
            });
            let mut want = uids.clone();
            if order == Order::Desc {
                want.reverse();
            }
            assert_eq!(fwd, want, "members, limit {limit}, {order:?}");
            // Going back from the last page reaches everything before it.
            let last_page = want.len() - (want.len() - 1) % limit - 1;
            assert_eq!(
                back,
                want[..last_page],
                "members back, limit {limit}, {order:?}"
            );

            let (fwd, _) = walk(limit, order, |req| {
                let p = fx.engine.list_groups(&dir, Some(&uids[3]), req).unwrap();
                let ids = p.data.into_iter().map(|g| g.group.id).collect();
                (ids, p.before, p.after)
            });
            let mut want = gids.clone();
            if order == Order::Desc {
                want.reverse();
            }
            assert_eq!(fwd, want, "groups, limit {limit}, {order:?}");
        }
    }
    assert!(fx.engine.is_member(&gids[0], &uids[0]).unwrap());
    fx.engine
        .remove_group_members(&dir, &gids[0], vec![uids[0].clone()])
        .unwrap();
    assert!(!fx.engine.is_member(&gids[0], &uids[0]).unwrap());
    assert_eq!(fx.engine.group_members(&gids[0]).unwrap(), uids[1..]);
    assert_eq!(fx.engine.user_groups(&uids[0]).unwrap().len(), 4);
}

/// What `fx`'s store holds as memberships: (group, user) from rows, and the legacy keys.
fn stored_pairs(fx: &Fx) -> (Vec<(String, String)>, Vec<String>) {
    let (mut rows, mut keys) = (Vec::new(), Vec::new());
    fx.store
        .export(&mut |r| {
            match r {
                ExportRecord::Row { table, values } if table == "directory_memberships" => rows
                    .push((
                        values[0].as_text().unwrap().to_owned(),
                        values[1].as_text().unwrap().to_owned(),
                    )),
                ExportRecord::Entry { table, key, .. } if table == "dsync.members" => {
                    keys.push(key)
                }
                _ => {}
            }
            Ok(())
        })
        .unwrap();
    (rows, keys)
}

#[test]
fn key_value_memberships_of_an_earlier_build_move_to_rows_when_an_engine_opens() {
    let fx = Fx::new();
    let (_dir, uids, gids) = populated(&fx, 3, 2);
    let (rows, keys) = stored_pairs(&fx);
    assert_eq!(rows.len(), 6);
    assert!(keys.is_empty(), "this build writes rows only");

    // Put the store back in the earlier layout: both keys per pair, no rows. One pair has
    // only its user-side key (the move keeps it), and one key is malformed (dropped).
    let mut cs = ChangeSet::new();
    for (g, u) in &rows {
        cs.delete_row(
            memberships_table(),
            vec![g.as_str().into(), u.as_str().into()],
        );
        if (g, u) != (&gids[1], &uids[2]) {
            cs.put("dsync.members", format!("g/{g}/{u}"), Vec::new());
        }
        cs.put("dsync.members", format!("u/{u}/{g}"), Vec::new());
    }
    cs.put("dsync.members", "x/garbage", Vec::new());
    fx.store.commit(cs).unwrap();
    assert_eq!(stored_pairs(&fx).0.len(), 0);

    let engine = DirectoryEngine::open(fx.store.clone(), fx.orgs.clone()).unwrap();
    let (mut after, keys) = stored_pairs(&fx);
    after.sort();
    let mut want = rows.clone();
    want.sort();
    assert_eq!(after, want, "every pair is a row again");
    assert!(keys.is_empty(), "no key-value membership is left: {keys:?}");
    let mut members = engine.group_members(&gids[1]).unwrap();
    members.sort();
    let mut all = uids.clone();
    all.sort();
    assert_eq!(members, all);

    // A second open has nothing to move.
    let seq = fx.last_seq();
    let commits = fx.store.stats().commits;
    DirectoryEngine::open(fx.store.clone(), fx.orgs.clone()).unwrap();
    assert_eq!(fx.store.stats().commits, commits);
    assert_eq!(fx.last_seq(), seq, "the move writes no event");
}

/// A copy of the engine's declaration of the memberships table (the engine keeps its own
/// private): enough to delete rows the way an earlier build never wrote them.
fn memberships_table() -> &'static idbridge_store::TableDef {
    static T: idbridge_store::TableDef = idbridge_store::TableDef {
        name: "directory_memberships",
        columns: &[
            idbridge_store::Column::text("group_id"),
            idbridge_store::Column::text("user_id"),
        ],
        primary_key: &["group_id", "user_id"],
        indexes: &[idbridge_store::IndexDef {
            name: "directory_memberships_by_user",
            terms: &["user_id", "group_id"],
            unique: false,
            partial: None,
        }],
        version_column: None,
        without_rowid: true,
    };
    &T
}
