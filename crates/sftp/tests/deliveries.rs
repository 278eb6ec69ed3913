//! Delivery processing against a real store and the directory engine: first delivery, update,
//! removals, the mass-deletion guard, and rejections that change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use idbridge_model::EventKind;
use idbridge_sftp::feed::{ingest, DeliveryFiles, IngestError, IngestOptions};
use idbridge_sftp::{DeliverySource, DeliveryStatus};
use idbridge_store::Store;

fn users_csv(ids: std::ops::RangeInclusive<u32>, dept: &str) -> String {
    let mut s = String::from("user_id,first_name,last_name,email,department_name,cost_center\n");
    for i in ids {
        s.push_str(&format!(
            "u{i},First{i},Last{i},user{i}@foo-corp.com,{dept},cc{i}\n"
        ));
    }
    s
}

fn deliver(fx: &Fx, dir: &str, files: &[(&str, &str)]) -> idbridge_sftp::DeliveryRecord {
    let inbox = fx.path(&format!("inbox-{dir}"));
    std::fs::create_dir_all(&inbox).unwrap();
    for (name, text) in files {
        write(&inbox.join(name), text);
    }
    fx.processor
        .process_inbox(dir, &inbox, DeliverySource::Push)
        .expect("process")
        .expect("a delivery")
}

#[test]
fn first_delivery_update_and_removal() {
    let fx = Fx::new();
    let dir = fx.directory("HR feed");
    let r = deliver(
        &fx,
        &dir,
        &[
            ("users.csv", &users_csv(1..=20, "Engineering")),
            ("groups.csv", GROUPS_V1),
            (
                "user_groups.csv",
                "group_name,user_id\nEngineering,u1\nEngineering,u2\nResearch,u3\n",
            ),
        ],
    );
    assert_eq!(r.status, DeliveryStatus::Applied, "{r:?}");
    assert_eq!(r.rows.users, 20);
    let c = r.changes.unwrap();
    assert_eq!(
        (c.users_created, c.groups_created, c.memberships_added),
        (20, 2, 3)
    );
    assert_eq!(fx.user_ids(&dir).len(), 20);
    assert_eq!(fx.group_names(&dir), vec!["Engineering", "Research"]);
    let u1 = fx
        .users(&dir)
        .into_iter()
        .find(|u| u.user.idp_id == "u1")
        .unwrap();
    // WorkOS columns → fields and predefined attributes; extra columns → raw_attributes.
    assert_eq!(u1.user.email.as_deref(), Some("user1@foo-corp.com"));
    assert_eq!(u1.user.first_name.as_deref(), Some("First1"));
    let cu = serde_json::to_value(&u1.user.custom_attributes).unwrap();
    assert_eq!(cu["department_name"], "Engineering");
    let raw = serde_json::to_value(&u1.user.raw_attributes).unwrap();
    assert_eq!(raw["cost_center"], "cc1");
    let kinds = fx.event_kinds_after(0);
    assert_eq!(kinds[0], "dsync.activated");
    assert_eq!(
        kinds.iter().filter(|k| *k == "dsync.user.created").count(),
        20
    );

    // Update: one department changes, one membership moves. Re-delivering is a no-op.
    let seq = fx.last_seq();
    let mut v2 = users_csv(1..=20, "Engineering");
    v2 = v2.replace(
        "u5,First5,Last5,user5@foo-corp.com,Engineering",
        "u5,First5,Last5,user5@foo-corp.com,Sales",
    );
    let r = deliver(
        &fx,
        &dir,
        &[
            ("users.csv", &v2),
            ("groups.csv", GROUPS_V1),
            (
                "user_groups.csv",
                "group_name,user_id\nEngineering,u1\nResearch,u2\nResearch,u3\n",
            ),
        ],
    );
    assert_eq!(r.status, DeliveryStatus::Applied, "{r:?}");
    let c = r.changes.unwrap();
    assert_eq!(
        (c.users_updated, c.memberships_added, c.memberships_removed),
        (1, 1, 1),
        "{c:?}"
    );
    let kinds = fx.event_kinds_after(seq);
    assert!(
        kinds.contains(&"dsync.user.updated".to_owned()),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"dsync.group.user_removed".to_owned()),
        "{kinds:?}"
    );

    // Removal: u20 and the Research group disappear (1 of 20 = 5%, under the guard).
    let seq = fx.last_seq();
    let r = deliver(
        &fx,
        &dir,
        &[
            ("users.csv", &users_csv(1..=19, "Engineering")),
            ("groups.csv", "group_name\nEngineering\n"),
            ("user_groups.csv", "group_name,user_id\nEngineering,u1\n"),
        ],
    );
    assert_eq!(r.status, DeliveryStatus::Applied, "{r:?}");
    assert_eq!(fx.user_ids(&dir).len(), 19);
    assert!(!fx.user_ids(&dir).contains(&"u20".to_owned()));
    assert_eq!(fx.group_names(&dir), vec!["Engineering"]);
    let kinds = fx.event_kinds_after(seq);
    assert!(
        kinds.contains(&"dsync.user.deleted".to_owned()),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"dsync.group.deleted".to_owned()),
        "{kinds:?}"
    );

    // The files were archived, the inbox is empty of deliveries.
    let inbox = fx.path(&format!("inbox-{dir}"));
    assert!(!inbox.join("users.csv").exists());
    assert_eq!(std::fs::read_dir(inbox.join("archive")).unwrap().count(), 3);
    assert_eq!(fx.deliveries(&dir).len(), 3);
}

#[test]
fn mass_deletion_guard_rejects_and_changes_nothing() {
    let fx = Fx::new();
    let dir = fx.directory("HR feed");
    deliver(&fx, &dir, &[("users.csv", &users_csv(1..=20, "Eng"))]);
    let seq = fx.last_seq();
    // A truncated export: 15 of 20 users missing.
    let r = deliver(&fx, &dir, &[("users.csv", &users_csv(1..=5, "Eng"))]);
    assert_eq!(r.status, DeliveryStatus::Rejected);
    assert!(
        r.problems[0].reason.contains("would delete 15 of 20"),
        "{r:?}"
    );
    assert_eq!(fx.user_ids(&dir).len(), 20);
    assert_eq!(
        fx.event_kinds_after(seq),
        vec![EventKind::DsyncDeliveryRejected.as_str()]
    );
    let report = std::fs::read_to_string(
        fx.path(&format!("inbox-{dir}"))
            .join(r.report.as_ref().unwrap()),
    )
    .unwrap();
    assert!(report.contains("nothing was changed"), "{report}");
}

/// Each bad delivery is refused whole: no user, group or dsync event changes, one
/// `dsync.delivery_rejected` event, and the report names file, line and reason.
/// (label, files, reported file, line, reason fragment)
type Case<'a> = (
    &'a str,
    Vec<(&'a str, Vec<u8>)>,
    &'a str,
    Option<u64>,
    &'a str,
);

#[test]
fn bad_files_change_nothing() {
    let fx = Fx::new();
    let dir = fx.directory("HR feed");
    deliver(
        &fx,
        &dir,
        &[("users.csv", USERS_V1), ("user_groups.csv", USER_GROUPS_V1)],
    );
    let before_users = fx.users(&dir);
    let before_groups = fx.group_names(&dir);
    let good_row_4_plus = "u4,Bad,Row,bad@foo-corp.com,Eng,x,B\n";
    let mut latin1 = USERS_V1.as_bytes().to_vec();
    latin1.extend_from_slice(b"u4,Ren\xe9,Dupont,rene@foo-corp.com,Eng,x,B\n");
    let cases: Vec<Case> = vec![
        (
            "non-UTF-8",
            vec![("users.csv", latin1)],
            "users.csv",
            Some(5),
            "not UTF-8",
        ),
        (
            "missing column",
            vec![(
                "users.csv",
                b"user_id,first_name,email\nu1,Ada,ada@x.com\n".to_vec(),
            )],
            "users.csv",
            Some(1),
            "missing required column \"last_name\"",
        ),
        (
            "duplicate user_id",
            vec![(
                "users.csv",
                format!("{USERS_V1}u2,Al,T,al2@foo-corp.com,R,S,B\n").into_bytes(),
            )],
            "users.csv",
            Some(5),
            "duplicate user_id \"u2\"",
        ),
        (
            "malformed row",
            vec![(
                "users.csv",
                format!("{USERS_V1}u4,Only,Three\n").into_bytes(),
            )],
            "users.csv",
            Some(5),
            "expected 7 fields",
        ),
        (
            "empty email",
            vec![(
                "users.csv",
                format!("{USERS_V1}u4,No,Mail,,Eng,x,B\n").into_bytes(),
            )],
            "users.csv",
            Some(5),
            "email is empty",
        ),
        (
            "unknown user in user_groups",
            vec![
                (
                    "users.csv",
                    format!("{USERS_V1}{good_row_4_plus}").into_bytes(),
                ),
                (
                    "user_groups.csv",
                    b"group_name,user_id\nEngineering,u1\nEngineering,u99\n".to_vec(),
                ),
            ],
            "user_groups.csv",
            Some(3),
            "user_id \"u99\" is not in users.csv",
        ),
        (
            "duplicate group",
            vec![
                ("users.csv", USERS_V1.as_bytes().to_vec()),
                ("groups.csv", b"group_name\nEng\nEng\n".to_vec()),
            ],
            "groups.csv",
            Some(3),
            "duplicate group_name",
        ),
    ];
    for (label, files, file, line, reason) in cases {
        let seq = fx.last_seq();
        let inbox = fx.path(&format!("inbox-{dir}"));
        for (name, bytes) in &files {
            std::fs::write(inbox.join(name), bytes).unwrap();
        }
        let r = fx
            .processor
            .process_inbox(&dir, &inbox, DeliverySource::Push)
            .unwrap()
            .unwrap();
        assert_eq!(r.status, DeliveryStatus::Rejected, "{label}: {r:?}");
        let p = &r.problems[0];
        assert_eq!((p.file.as_str(), p.line), (file, line), "{label}: {p:?}");
        assert!(p.reason.contains(reason), "{label}: {}", p.reason);
        assert_eq!(fx.users(&dir), before_users, "{label}: users changed");
        assert_eq!(
            fx.group_names(&dir),
            before_groups,
            "{label}: groups changed"
        );
        assert_eq!(
            fx.event_kinds_after(seq),
            vec![EventKind::DsyncDeliveryRejected.as_str()],
            "{label}"
        );
        let ev = fx.store.events_after(seq, 10).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&ev[0].body).unwrap();
        assert_eq!(body["data"]["directory_id"], dir.as_str());
        assert_eq!(body["data"]["problems"][0]["file"], file);
        let report = std::fs::read_to_string(inbox.join(r.report.as_ref().unwrap())).unwrap();
        let expect = match line {
            Some(l) => format!("{file}:{l}: "),
            None => format!("{file}: "),
        };
        assert!(report.contains(&expect), "{label}: {report}");
    }
    let d = idbridge_sftp::summary(fx.store.as_ref(), &dir).unwrap();
    assert_eq!((d.deliveries, d.rejections), (8, 7));
    assert_eq!(d.last_applied.unwrap().status, DeliveryStatus::Applied);
}

#[test]
fn ingest_reports_many_problems_and_handles_bom_and_quotes() {
    let tmp = tempfile::tempdir().unwrap();
    let users = tmp.path().join("users.csv");
    // BOM, CRLF, quoted fields with commas and newlines, upper-case header.
    write(
        &users,
        "\u{feff}User_ID,First_Name,Last_Name,Email,Display_Name\r\n\
         u1,\"Lovelace, Ada\",L,ada@x.com,\"Ada\nthe first\"\r\nu2,B,C,b@x.com,\r\n",
    );
    let files = DeliveryFiles::in_dir(tmp.path()).unwrap();
    let ing = ingest(&files, &IngestOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(ing.snapshot.users.len(), 2);
    assert_eq!(
        ing.snapshot.users[0].first_name.as_deref(),
        Some("Lovelace, Ada")
    );
    assert_eq!(
        ing.snapshot.users[0].name.as_deref(),
        Some("Ada\nthe first")
    );
    assert_eq!(ing.snapshot.users[1].name, None);

    let mut bad = String::from("user_id,first_name,last_name,email\n");
    for i in 0..300 {
        bad.push_str(&format!("u{i},,L,x{i}@x.com\n"));
    }
    write(&users, &bad);
    match ingest(&files, &IngestOptions::default(), &mut |_| {}) {
        Err(IngestError::Rejected(r)) => {
            assert_eq!(r.problems.len(), 100);
            assert_eq!(r.more, 200);
            assert_eq!(r.problems[0].line, Some(2));
            assert!(r.report().contains("... and 200 more problems"));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// A bad users.csv is reported as the root cause; the user_groups.csv rows it makes unknown
/// are collapsed into one counted follow-on line after it, not listed one by one (issue 19).
/// A user_groups.csv row naming a user a clean users.csv lacks is still its own root cause.
#[test]
fn rejections_list_root_causes_first_and_count_follow_on_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let users = tmp.path().join("users.csv");
    let user_groups = tmp.path().join("user_groups.csv");
    let mut memberships = String::from("group_name,user_id\n");
    for i in 0..250 {
        memberships.push_str(&format!("Eng,u{}\n", i % 5));
    }
    write(&user_groups, &memberships);
    let rejection = |users_text: &str| {
        write(&users, users_text);
        let files = DeliveryFiles::in_dir(tmp.path()).unwrap();
        match ingest(&files, &IngestOptions::default(), &mut |_| {}) {
            Err(IngestError::Rejected(r)) => r,
            other => panic!("expected a rejection, got {other:?}"),
        }
    };

    // The header names no user_id column: every membership row is a follow-on.
    let r = rejection("id,first_name,last_name,email\nu0,A,B,a@x.com\n");
    assert_eq!(r.problems.len(), 2, "{}", r.report());
    assert_eq!(r.problems[0].file, "users.csv");
    assert!(r.problems[0]
        .reason
        .contains("missing required column \"user_id\""));
    assert_eq!(
        (r.problems[1].file.as_str(), r.problems[1].line),
        ("user_groups.csv", None)
    );
    assert!(
        r.problems[1]
            .reason
            .starts_with("250 row(s) name a user_id not in users.csv")
            && r.problems[1].reason.contains("follow-on"),
        "{}",
        r.problems[1].reason
    );
    assert_eq!(r.more, 0);
    assert!(
        r.to_string()
            .starts_with("users.csv:1: missing required column"),
        "{r}"
    );

    // Two rows whose user_id cannot be read (a short row, an empty id): two root causes, and
    // the 100 membership rows of u3 and u4 counted once.
    let r = rejection(
        "user_id,first_name,last_name,email\nu0,A,B,a@x.com\nu1,A,B,b@x.com\nu2,A,B,c@x.com\nu3,A\n,A,B,e@x.com\n",
    );
    let lines: Vec<String> = r.problems.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].starts_with("users.csv:5: expected 4 fields"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("users.csv:6: user_id is empty"),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("user_groups.csv: 100 row(s)"),
        "{lines:?}"
    );

    // users.csv is clean but lacks u3 and u4: each membership row is a root cause of its own.
    let r = rejection(
        "user_id,first_name,last_name,email\nu0,A,B,a@x.com\nu1,A,B,b@x.com\nu2,A,B,c@x.com\n",
    );
    assert_eq!(r.problems[0].file, "user_groups.csv");
    assert_eq!(r.problems[0].line, Some(5));
    assert!(r.problems[0]
        .reason
        .contains("user_id \"u3\" is not in users.csv"));
    assert_eq!(r.problems.len() as u64 + r.more, 100);
}
