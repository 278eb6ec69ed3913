//! The daily re-delivery: an unchanged user is recognized from a digest of its CSV row (never
//! built), so these check that every kind of real change is still found, and that what is
//! only a different spelling of the same row changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use idbridge_sftp::{DeliverySource, DeliveryStatus};

fn users_csv(rows: &[(u32, &str, &str)]) -> String {
    let mut s = String::from("user_id,first_name,last_name,email,department_name,cost_center\n");
    for (i, first, cc) in rows {
        s.push_str(&format!(
            "u{i},{first},Last{i},user{i}@foo-corp.com,Engineering,{cc}\n"
        ));
    }
    s
}

fn base_rows() -> Vec<(u32, &'static str, &'static str)> {
    (1..=10).map(|i| (i, "Ann", "cc")).collect()
}

const MEMBERS_V1: &str = "group_name,user_id\nEngineering,u1\nEngineering,u2\nResearch,u3\n";

fn deliver(fx: &Fx, dir: &str, users: &str, members: &str) -> idbridge_sftp::DeliveryRecord {
    let inbox = fx.path(&format!("inbox-{dir}"));
    std::fs::create_dir_all(&inbox).unwrap();
    write(&inbox.join("users.csv"), users);
    write(
        &inbox.join("groups.csv"),
        "group_name\nEngineering\nResearch\n",
    );
    write(&inbox.join("user_groups.csv"), members);
    let r = fx
        .processor
        .process_inbox(dir, &inbox, DeliverySource::Push)
        .expect("process")
        .expect("a delivery");
    assert_eq!(r.status, DeliveryStatus::Applied, "{r:?}");
    r
}

fn user(fx: &Fx, dir: &str, idp: &str) -> idbridge_directory::StoredUser {
    fx.users(dir)
        .into_iter()
        .find(|u| u.user.idp_id == idp)
        .expect("user")
}

#[test]
fn redelivery_finds_every_change_and_only_changes() {
    let fx = Fx::new();
    let dir = fx.directory("HR feed");
    deliver(&fx, &dir, &users_csv(&base_rows()), MEMBERS_V1);

    // The same files again: nothing is written, no event.
    let seq = fx.last_seq();
    let r = deliver(&fx, &dir, &users_csv(&base_rows()), MEMBERS_V1);
    let c = r.changes.unwrap();
    assert_eq!(
        (c.users_updated, c.memberships_added, c.memberships_removed),
        (0, 0, 0),
        "{c:?}"
    );
    assert!(fx.event_kinds_after(seq).is_empty());

    // A mapped field, an unmapped extra column (raw_attributes only) and a membership move.
    let mut rows = base_rows();
    rows[1].1 = "Bea";
    rows[4].2 = "cc-new";
    let seq = fx.last_seq();
    let r = deliver(
        &fx,
        &dir,
        &users_csv(&rows),
        "group_name,user_id\nEngineering,u1\nResearch,u2\nResearch,u3\n",
    );
    let c = r.changes.unwrap();
    assert_eq!(
        (c.users_updated, c.memberships_added, c.memberships_removed),
        (2, 1, 1),
        "{c:?}"
    );
    assert_eq!(
        user(&fx, &dir, "u2").user.first_name.as_deref(),
        Some("Bea")
    );
    let raw = serde_json::to_value(&user(&fx, &dir, "u5").user.raw_attributes).unwrap();
    assert_eq!(raw["cost_center"], "cc-new");
    // (A change of raw_attributes alone is stored without an event: not a WorkOS attribute.)
    let kinds = fx.event_kinds_after(seq);
    assert_eq!(
        kinds.iter().filter(|k| *k == "dsync.user.updated").count(),
        1,
        "{kinds:?}"
    );

    // The same content spelled differently (padding, quotes): the digest differs, the users
    // are compared and found unchanged: no write visible to anyone, no event.
    let spelled = users_csv(&rows).replace("u7,Ann,", "u7,\" Ann \",");
    let seq = fx.last_seq();
    let r = deliver(
        &fx,
        &dir,
        &spelled,
        "group_name,user_id\nEngineering,u1\nResearch,u2\nResearch,u3\n",
    );
    let c = r.changes.unwrap();
    assert_eq!((c.users_updated, c.users_created), (0, 0), "{c:?}");
    assert!(fx.event_kinds_after(seq).is_empty());
    // And again with the original spelling: still nothing.
    let r = deliver(
        &fx,
        &dir,
        &users_csv(&rows),
        "group_name,user_id\nEngineering,u1\nResearch,u2\nResearch,u3\n",
    );
    assert_eq!(r.changes.unwrap().users_updated, 0);
    assert!(fx.event_kinds_after(seq).is_empty());

    // A new column changes how every row reads: every user is compared, none changed.
    let wider = users_csv(&rows)
        .lines()
        .enumerate()
        .map(|(n, l)| {
            if n == 0 {
                format!("{l},nickname\n")
            } else {
                format!("{l},\n")
            }
        })
        .collect::<String>();
    let r = deliver(
        &fx,
        &dir,
        &wider,
        "group_name,user_id\nEngineering,u1\nResearch,u2\nResearch,u3\n",
    );
    assert_eq!(r.changes.unwrap().users_updated, 0);
    assert!(fx.event_kinds_after(seq).is_empty());
    // ... and a value in it is a change of that user.
    let r = deliver(
        &fx,
        &dir,
        &wider.replace(
            "u9,Ann,Last9,user9@foo-corp.com,Engineering,cc,",
            "u9,Ann,Last9,user9@foo-corp.com,Engineering,cc,Nine",
        ),
        "group_name,user_id\nEngineering,u1\nResearch,u2\nResearch,u3\n",
    );
    assert_eq!(r.changes.unwrap().users_updated, 1);
    let raw = serde_json::to_value(&user(&fx, &dir, "u9").user.raw_attributes).unwrap();
    assert_eq!(raw["nickname"], "Nine");
}
