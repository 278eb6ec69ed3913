// The backend-independent behaviour of every `Store` method. Included by tests/api.rs once
// per backend, inside a module that defines `Backend`, `open_at(dir) -> Backend` and
// `COUNTS_SYNCS` (whether the backend's stats count its own fdatasyncs: SQLite's group commit
// does; on PostgreSQL the server syncs its WAL and the store cannot see it).

fn open() -> (tempfile::TempDir, Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_at(dir.path());
    (dir, store)
}

fn event(id: &str, created_at_ms: i64) -> NewEvent {
    NewEvent {
        id: id.to_owned(),
        kind: "dsync.user.created".to_owned(),
        organization_id: Some("org_1".to_owned()),
        created_at_ms,
        body: format!(r#"{{"id":"{id}"}}"#).into_bytes(),
    }
}

fn keys(rows: &[(String, Vec<u8>)]) -> Vec<&str> {
    rows.iter().map(|(k, _)| k.as_str()).collect()
}

#[test]
fn commit_writes_entities_and_events_and_numbers_them() {
    let (_d, s) = open();
    let mut cs = ChangeSet::new();
    cs.put("users", "u1", b"{\"a\":1}".to_vec())
        .put("users_by_email", "a@x", b"u1".to_vec())
        .event(event("event_1", 1))
        .event(event("event_2", 2));
    let receipt = s.commit(cs).expect("commit");
    assert_eq!(receipt.event_seqs, vec![1, 2]);
    assert_eq!(
        s.get("users", "u1").expect("get"),
        Some(b"{\"a\":1}".to_vec())
    );
    assert_eq!(
        s.get("users_by_email", "a@x").expect("get"),
        Some(b"u1".to_vec())
    );
    assert_eq!(
        s.get("users", "a@x").expect("get"),
        None,
        "tables are separate"
    );

    let mut cs = ChangeSet::new();
    cs.event(event("event_3", 3));
    assert_eq!(s.commit(cs).expect("commit").event_seqs, vec![3]);
    assert_eq!(s.last_event_seq().expect("last"), 3);
    let events = s.events_after(0, 10).expect("events");
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["event_1", "event_2", "event_3"]);
    assert_eq!(events[0].organization_id.as_deref(), Some("org_1"));
    assert_eq!(events[1].body, br#"{"id":"event_2"}"#.to_vec());
    assert_eq!(s.event_seq("event_2").expect("seq"), Some(2));
    assert_eq!(s.event_seq("event_9").expect("seq"), None);
    let stats = s.stats();
    assert_eq!(stats.commits, 2);
    assert!(!COUNTS_SYNCS || stats.fdatasyncs >= 2, "{stats:?}");
}

#[test]
fn put_json_serializes() {
    let (_d, s) = open();
    let mut cs = ChangeSet::new();
    cs.put_json("orgs", "org_1", &serde_json::json!({"name": "Acme"}))
        .expect("json");
    s.commit(cs).expect("commit");
    let raw = s.get("orgs", "org_1").expect("get").expect("present");
    let v: serde_json::Value = serde_json::from_slice(&raw).expect("json");
    assert_eq!(v["name"], "Acme");
}

/// Every failing condition: Conflict, and neither entities nor events are written.
#[test]
fn failed_conditions_write_nothing() {
    let (_d, s) = open();
    let mut seed = ChangeSet::new();
    seed.put("idx", "taken", b"v1".to_vec())
        .event(event("event_seed", 1));
    s.commit(seed).expect("seed");
    let fdatasyncs_before = s.stats().fdatasyncs;

    let absent = |k: &str| Condition::Absent {
        table: "idx".into(),
        key: k.into(),
    };
    let present = |k: &str| Condition::Present {
        table: "idx".into(),
        key: k.into(),
    };
    let equals = |k: &str, v: Option<&[u8]>| Condition::Equals {
        table: "idx".into(),
        key: k.into(),
        value: v.map(<[u8]>::to_vec),
    };
    let failing: Vec<Vec<Condition>> = vec![
        vec![absent("taken")],
        vec![present("missing")],
        vec![equals("taken", Some(b"v0"))],
        vec![equals("taken", None)],
        vec![equals("missing", Some(b"v1"))],
        // A passing condition does not save a failing one.
        vec![present("taken"), absent("taken")],
    ];
    for (n, conditions) in failing.iter().enumerate() {
        let mut cs = ChangeSet::new();
        cs.put("users", format!("u{n}"), b"x".to_vec())
            .delete("idx", "taken")
            .event(event(&format!("event_fail_{n}"), 2));
        cs.conditions.extend(conditions.iter().cloned());
        let err = s.commit(cs).expect_err("must conflict");
        let failed = conditions
            .iter()
            .find(|c| !c.holds(s.get("idx", c.key()).expect("get").as_deref(), None))
            .expect("a failing condition");
        assert_eq!(
            err.to_string(),
            failed.conflict().to_string(),
            "case {n}: the conflict names the failed condition"
        );
        assert_eq!(
            s.get("users", &format!("u{n}")).expect("get"),
            None,
            "case {n}"
        );
        assert_eq!(s.get("idx", "taken").expect("get"), Some(b"v1".to_vec()));
    }
    assert_eq!(s.last_event_seq().expect("last"), 1);
    assert_eq!(s.events_after(0, 100).expect("events").len(), 1);
    assert_eq!(s.stats().conflicts, failing.len() as u64);
    if COUNTS_SYNCS {
        assert_eq!(
            s.stats().fdatasyncs,
            fdatasyncs_before,
            "no sync for rejected writes"
        );
    }

    // The next successful commit continues the log without a gap.
    let mut ok = ChangeSet::new();
    ok.require_equals("idx", "taken", Some(b"v1".to_vec()))
        .require_absent("idx", "free")
        .require_present("idx", "taken")
        .event(event("event_ok", 3));
    assert_eq!(s.commit(ok).expect("commit").event_seqs, vec![2]);
}

/// Conflicts are typed: the table, the key and which precondition failed.
#[test]
fn conflicts_name_table_key_and_kind() {
    let (_d, s) = open();
    let mut seed = ChangeSet::new();
    seed.put("idx", "taken", b"v1".to_vec());
    s.commit(seed).expect("seed");
    let cases: Vec<(ChangeSet, &str, ConflictKind)> = vec![
        (
            {
                let mut c = ChangeSet::new();
                c.require_absent("idx", "taken");
                c
            },
            "taken",
            ConflictKind::Exists,
        ),
        (
            {
                let mut c = ChangeSet::new();
                c.require_present("idx", "free");
                c
            },
            "free",
            ConflictKind::Missing,
        ),
        (
            {
                let mut c = ChangeSet::new();
                c.require_equals("idx", "taken", Some(b"v0".to_vec()));
                c
            },
            "taken",
            ConflictKind::Changed,
        ),
    ];
    for (cs, key, kind) in cases {
        match s.commit(cs) {
            Err(StoreError::Conflict {
                table,
                key: k,
                kind: got,
            }) => {
                assert_eq!((table.as_str(), k.as_str(), got), ("idx", key, kind));
            }
            other => panic!("expected a conflict on idx/{key}, got {other:?}"),
        }
    }
    let mut dup = ChangeSet::new();
    dup.event(event("event_d", 1)).event(event("event_d", 2));
    let err = s.commit(dup).expect_err("duplicate event id");
    assert_eq!(
        err.conflict_on(),
        Some((EVENT_LOG, ConflictKind::DuplicateEventId))
    );
}

/// Expiring entries ride in change sets: with entity writes and events in one commit, a
/// vacancy condition (replay cache) and a take (single-use code) that fail write nothing.
#[test]
fn change_sets_carry_expiring_entries() {
    let (_d, s) = open();
    let now = 1_000;
    let mut login = ChangeSet::new();
    login
        .put_expiring("codes", "c1", b"code".to_vec(), now + 600)
        .insert_expiring("replay", "a1", Vec::new(), now + 300, now)
        .put("profiles", "p1", b"prof".to_vec())
        .event(event("event_login", now));
    s.commit(login).expect("login");
    assert_eq!(
        s.get_expiring("codes", "c1", now).expect("get"),
        Some(b"code".to_vec())
    );
    assert_eq!(
        s.get_expiring("replay", "a1", now).expect("get"),
        Some(Vec::new())
    );
    assert_eq!(s.last_event_seq().expect("last"), 1);

    // Replaying the assertion: the vacancy condition fails and nothing of the commit lands.
    let mut replay = ChangeSet::new();
    replay
        .insert_expiring("replay", "a1", Vec::new(), now + 300, now + 10)
        .put_expiring("codes", "c2", b"code".to_vec(), now + 600)
        .put("profiles", "p2", b"prof".to_vec())
        .event(event("event_replay", now));
    let err = s.commit(replay).expect_err("replay");
    assert_eq!(err.conflict_on(), Some(("replay", ConflictKind::Live)));
    assert_eq!(s.get_expiring("codes", "c2", now).expect("get"), None);
    assert_eq!(s.get("profiles", "p2").expect("get"), None);
    assert_eq!(s.last_event_seq().expect("last"), 1);
    // Once the entry expired, the same key may be used again.
    let mut later = ChangeSet::new();
    later.insert_expiring("replay", "a1", b"2".to_vec(), now + 900, now + 300);
    s.commit(later).expect("expired entries are vacant");

    // Taking a code: once. The second take and a take of an expired code conflict.
    let mut take = ChangeSet::new();
    take.take_expiring("codes", "c1", now + 1).put_expiring(
        "tokens",
        "t1",
        b"tok".to_vec(),
        now + 600,
    );
    s.commit(take).expect("first take");
    assert_eq!(s.get_expiring("codes", "c1", now).expect("get"), None);
    let mut again = ChangeSet::new();
    again.take_expiring("codes", "c1", now + 2).put_expiring(
        "tokens",
        "t2",
        b"tok".to_vec(),
        now + 600,
    );
    let err = s.commit(again).expect_err("second take");
    assert_eq!(err.conflict_on(), Some(("codes", ConflictKind::NotLive)));
    assert_eq!(s.get_expiring("tokens", "t2", now).expect("get"), None);
    s.put_expiring("codes", "c3", b"code".to_vec(), now + 600)
        .expect("put");
    let mut late = ChangeSet::new();
    late.take_expiring("codes", "c3", now + 600);
    let err = s.commit(late).expect_err("expired take");
    assert_eq!(err.conflict_on(), Some(("codes", ConflictKind::NotLive)));

    // The expiry index follows change-set writes: purge removes what they wrote.
    assert!(s.purge_expired(now + 10_000).expect("purge") >= 3);
    for (t, k) in [("replay", "a1"), ("tokens", "t1"), ("codes", "c3")] {
        assert_eq!(s.get_expiring(t, k, 0).expect("get"), None, "{t}/{k}");
    }
}

#[test]
fn reused_event_id_is_a_conflict() {
    let (_d, s) = open();
    let mut cs = ChangeSet::new();
    cs.event(event("event_a", 1));
    s.commit(cs).expect("commit");

    let mut again = ChangeSet::new();
    again
        .put("users", "u", b"x".to_vec())
        .event(event("event_a", 2));
    assert!(matches!(s.commit(again), Err(StoreError::Conflict { .. })));

    let mut twice = ChangeSet::new();
    twice.event(event("event_b", 2)).event(event("event_b", 3));
    assert!(matches!(s.commit(twice), Err(StoreError::Conflict { .. })));
    assert_eq!(s.event_seq("event_b").expect("seq"), None);
    assert_eq!(s.get("users", "u").expect("get"), None);
    assert_eq!(s.last_event_seq().expect("last"), 1);
}

#[test]
fn deletes_apply_before_puts_and_absent_deletes_are_fine() {
    let (_d, s) = open();
    let mut cs = ChangeSet::new();
    cs.put("t", "a", b"1".to_vec()).put("t", "b", b"1".to_vec());
    s.commit(cs).expect("commit");
    let mut cs = ChangeSet::new();
    cs.delete("t", "a")
        .delete("t", "never")
        .delete("t", "b")
        .put("t", "b", b"2".to_vec());
    s.commit(cs).expect("commit");
    assert_eq!(s.get("t", "a").expect("get"), None);
    assert_eq!(s.get("t", "b").expect("get"), Some(b"2".to_vec()));
}

#[test]
fn empty_and_condition_only_change_sets_do_not_sync() {
    let (_d, s) = open();
    let before = s.stats().fdatasyncs;
    assert!(ChangeSet::new().is_empty());
    assert_eq!(
        s.commit(ChangeSet::new()).expect("empty").event_seqs,
        Vec::<u64>::new()
    );
    let mut only_check = ChangeSet::new();
    only_check.require_absent("t", "k");
    assert!(!only_check.is_empty() && !only_check.has_writes());
    s.commit(only_check).expect("check passes");
    assert_eq!(s.stats().fdatasyncs, before);
    let mut failing = ChangeSet::new();
    failing.require_present("t", "k");
    assert!(matches!(
        s.commit(failing),
        Err(StoreError::Conflict { .. })
    ));
}

#[test]
fn scans_respect_prefix_cursor_limit_and_direction() {
    let (_d, s) = open();
    let all = ["a", "ab", "abc", "abd", "ab~", "ac", "b", "\u{e9}t\u{e9}"];
    let mut cs = ChangeSet::new();
    for k in all {
        cs.put("t", k, k.as_bytes().to_vec());
    }
    cs.put("other", "abz", b"x".to_vec());
    s.commit(cs).expect("commit");

    let fwd = s.scan("t", "ab", None, 10).expect("scan");
    assert_eq!(keys(&fwd), ["ab", "abc", "abd", "ab~"]);
    assert_eq!(fwd[1].1, b"abc".to_vec());
    assert_eq!(
        keys(&s.scan("t", "ab", Some("abc"), 10).expect("scan")),
        ["abd", "ab~"]
    );
    assert_eq!(
        keys(&s.scan("t", "ab", Some("abc"), 1).expect("scan")),
        ["abd"]
    );
    assert_eq!(
        keys(&s.scan("t", "ab", Some("a"), 2).expect("scan")),
        ["ab", "abc"]
    );
    assert!(s.scan("t", "ab", Some("ab~"), 10).expect("scan").is_empty());
    assert!(s.scan("t", "ab", Some("b"), 10).expect("scan").is_empty());
    assert!(s.scan("t", "ab", None, 0).expect("scan").is_empty());
    assert_eq!(s.scan("t", "", None, 100).expect("scan").len(), all.len());
    assert_eq!(
        keys(&s.scan("t", "", Some("b"), 100).expect("scan")),
        ["\u{e9}t\u{e9}"]
    );

    let rev = s.scan_rev("t", "ab", None, 10).expect("scan_rev");
    assert_eq!(keys(&rev), ["ab~", "abd", "abc", "ab"]);
    assert_eq!(
        keys(&s.scan_rev("t", "ab", Some("abd"), 10).expect("rev")),
        ["abc", "ab"]
    );
    assert_eq!(
        keys(&s.scan_rev("t", "ab", Some("abd"), 1).expect("rev")),
        ["abc"]
    );
    assert_eq!(
        keys(&s.scan_rev("t", "ab", Some("zz"), 1).expect("rev")),
        ["ab~"]
    );
    assert!(s
        .scan_rev("t", "ab", Some("ab"), 10)
        .expect("rev")
        .is_empty());
    assert!(s
        .scan_rev("t", "ab", Some("a"), 10)
        .expect("rev")
        .is_empty());
    assert_eq!(
        keys(&s.scan_rev("t", "", None, 2).expect("rev")),
        ["\u{e9}t\u{e9}", "b"]
    );

    assert_eq!(s.count_prefix("t", "ab").expect("count"), 4);
    assert_eq!(s.count_prefix("t", "").expect("count"), all.len() as u64);
    assert_eq!(s.count_prefix("t", "zz").expect("count"), 0);
    assert_eq!(s.count_prefix("missing_table", "").expect("count"), 0);
}

mod model {
    use super::*;
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[ab\u{e9}~]{0,4}").expect("regex")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// scan / scan_rev / count_prefix agree with a BTreeMap model for any keys and cursors.
        #[test]
        fn scans_match_a_sorted_map(
            stored in proptest::collection::btree_set(key(), 0..20),
            prefix in key(),
            cursor in proptest::option::of(key()),
            limit in 0usize..6,
        ) {
            let (_d, s) = open();
            let mut cs = ChangeSet::new();
            for k in &stored {
                cs.put("t", k.clone(), k.as_bytes().to_vec());
            }
            s.commit(cs).expect("commit");
            let model: BTreeMap<&str, ()> = stored.iter().map(|k| (k.as_str(), ())).collect();
            let with_prefix = || model.keys().copied().filter(|k| k.starts_with(prefix.as_str()));

            let want_fwd: Vec<&str> = with_prefix()
                .filter(|k| cursor.as_deref().is_none_or(|c| k.as_bytes() > c.as_bytes()))
                .take(limit)
                .collect();
            let got_fwd = s.scan("t", &prefix, cursor.as_deref(), limit).expect("scan");
            prop_assert_eq!(keys(&got_fwd), want_fwd);

            let want_rev: Vec<&str> = with_prefix()
                .rev()
                .filter(|k| cursor.as_deref().is_none_or(|c| k.as_bytes() < c.as_bytes()))
                .take(limit)
                .collect();
            let got_rev = s.scan_rev("t", &prefix, cursor.as_deref(), limit).expect("scan_rev");
            prop_assert_eq!(keys(&got_rev), want_rev);

            prop_assert_eq!(
                s.count_prefix("t", &prefix).expect("count"),
                with_prefix().count() as u64
            );
        }
    }
}

#[test]
fn events_page_by_cursor() {
    let (_d, s) = open();
    for n in 1..=25 {
        let mut cs = ChangeSet::new();
        cs.event(event(&format!("event_{n:02}"), n));
        s.commit(cs).expect("commit");
    }
    let mut seen = Vec::new();
    let mut cursor = 0;
    loop {
        let page = s.events_after(cursor, 10).expect("page");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 10);
        cursor = page.last().map(|e| e.seq).expect("non-empty");
        seen.extend(page.into_iter().map(|e| (e.seq, e.id)));
    }
    let want: Vec<(u64, String)> = (1..=25).map(|n| (n, format!("event_{n:02}"))).collect();
    assert_eq!(seen, want);
    assert!(s.events_after(25, 10).expect("tail").is_empty());
    assert!(s.events_after(u64::MAX, 10).expect("huge").is_empty());
    assert!(s.events_after(0, 0).expect("zero").is_empty());
}

#[test]
fn compaction_drops_an_old_prefix_and_keeps_seqs() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = open_at(dir.path());
        // created_at: 100..=109, then one out-of-order old timestamp at seq 11.
        for n in 0..10 {
            let mut cs = ChangeSet::new();
            cs.event(event(&format!("event_{n}"), 100 + n));
            s.commit(cs).expect("commit");
        }
        let mut cs = ChangeSet::new();
        cs.event(event("event_late", 1));
        s.commit(cs).expect("commit");

        assert_eq!(s.compact_events_before(105).expect("compact"), 5);
        let kept = s.events_after(0, 100).expect("events");
        let seqs: Vec<u64> = kept.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (6..=11).collect::<Vec<_>>(),
            "prefix only, seqs unchanged"
        );
        assert_eq!(s.event_seq("event_0").expect("seq"), None);
        assert_eq!(s.event_seq("event_5").expect("seq"), Some(6));
        assert_eq!(s.compact_events_before(105).expect("again"), 0);

        // Everything goes; the counter does not.
        assert_eq!(s.compact_events_before(i64::MAX).expect("all"), 6);
        assert!(s.events_after(0, 100).expect("events").is_empty());
        assert_eq!(s.last_event_seq().expect("last"), 11);
    }
    let s = open_at(dir.path());
    assert_eq!(s.last_event_seq().expect("last"), 11);
    let mut cs = ChangeSet::new();
    cs.event(event("event_next", 200));
    assert_eq!(s.commit(cs).expect("commit").event_seqs, vec![12]);
    assert_eq!(s.events_after(0, 10).expect("events")[0].seq, 12);
}

#[test]
fn compaction_handles_more_than_one_batch() {
    let (_d, s) = open();
    let mut cs = ChangeSet::new();
    for n in 0..1300 {
        cs.event(event(&format!("event_{n}"), n));
    }
    s.commit(cs).expect("commit");
    assert_eq!(s.compact_events_before(1200).expect("compact"), 1200);
    let first = s.events_after(0, 1).expect("events");
    assert_eq!(first[0].seq, 1201);
    assert_eq!(first[0].created_at_ms, 1200);
}

#[test]
fn data_and_counter_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = open_at(dir.path());
        let mut cs = ChangeSet::new();
        cs.put("t", "k", b"v".to_vec()).event(event("event_1", 1));
        s.commit(cs).expect("commit");
        s.put_expiring("codes", "c", b"v".to_vec(), i64::MAX)
            .expect("put");
    }
    let s = open_at(dir.path());
    assert_eq!(s.get("t", "k").expect("get"), Some(b"v".to_vec()));
    assert_eq!(
        s.get_expiring("codes", "c", 0).expect("get"),
        Some(b"v".to_vec())
    );
    let mut cs = ChangeSet::new();
    cs.event(event("event_2", 2));
    assert_eq!(s.commit(cs).expect("commit").event_seqs, vec![2]);
}

#[test]
fn immediate_reopen_after_drop_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    for n in 0..15 {
        let s = open_at(dir.path());
        let mut cs = ChangeSet::new();
        cs.event(event(&format!("event_{n}"), n));
        assert_eq!(s.commit(cs).expect("commit").event_seqs, vec![n as u64 + 1]);
    }
}

#[test]
fn expiring_entries_live_until_their_expiry() {
    let (_d, s) = open();
    s.put_expiring("codes", "c1", b"v1".to_vec(), 1_000)
        .expect("put");
    assert_eq!(
        s.get_expiring("codes", "c1", 999).expect("get"),
        Some(b"v1".to_vec())
    );
    assert_eq!(
        s.get_expiring("codes", "c1", 1_000).expect("get"),
        None,
        "expiry is exclusive"
    );
    assert_eq!(
        s.get_expiring("other", "c1", 0).expect("get"),
        None,
        "tables are separate"
    );
    assert_eq!(
        s.get("codes", "c1").expect("get"),
        None,
        "not an ordinary table"
    );

    assert_eq!(
        s.take_expiring("codes", "c1", 1_000).expect("take"),
        None,
        "expired"
    );
    assert_eq!(
        s.take_expiring("codes", "c1", 10).expect("take"),
        Some(b"v1".to_vec())
    );
    assert_eq!(
        s.take_expiring("codes", "c1", 10).expect("take"),
        None,
        "single use"
    );
    assert_eq!(s.take_expiring("codes", "never", 10).expect("take"), None);

    // Overwrite moves the expiry.
    s.put_expiring("codes", "c2", b"a".to_vec(), 100)
        .expect("put");
    s.put_expiring("codes", "c2", b"b".to_vec(), 5_000)
        .expect("put");
    assert_eq!(
        s.get_expiring("codes", "c2", 200).expect("get"),
        Some(b"b".to_vec())
    );
}

#[test]
fn replay_cache_insert_if_absent() {
    let (_d, s) = open();
    let far = i64::MAX;
    assert!(s
        .insert_expiring_if_absent("seen", "a1", b"1".to_vec(), far)
        .expect("first"));
    assert!(!s
        .insert_expiring_if_absent("seen", "a1", b"2".to_vec(), far)
        .expect("replay"));
    assert_eq!(
        s.get_expiring("seen", "a1", 0).expect("get"),
        Some(b"1".to_vec())
    );
    // An expired entry (relative to the system clock) may be replaced.
    s.put_expiring("seen", "old", b"1".to_vec(), 1)
        .expect("put");
    assert!(s
        .insert_expiring_if_absent("seen", "old", b"2".to_vec(), far)
        .expect("after expiry"));
    assert_eq!(
        s.get_expiring("seen", "old", 0).expect("get"),
        Some(b"2".to_vec())
    );
    // The replaced entry's old index slot must not purge the new one.
    assert_eq!(s.purge_expired(10).expect("purge"), 0);
    assert_eq!(
        s.get_expiring("seen", "old", 0).expect("get"),
        Some(b"2".to_vec())
    );
}

#[test]
fn purge_removes_only_expired_entries() {
    let (_d, s) = open();
    for n in 0..1100i64 {
        s.put_expiring("codes", &format!("c{n}"), b"v".to_vec(), n)
            .expect("put");
    }
    s.put_expiring("other", "x", b"v".to_vec(), 10)
        .expect("put");
    s.put_expiring("other", "y", b"v".to_vec(), 5_000)
        .expect("put");
    // Moved to a later expiry: the old index slot (20) must not remove it.
    s.put_expiring("codes", "c20", b"v".to_vec(), 9_000)
        .expect("put");

    assert_eq!(s.purge_expired(1049).expect("purge"), 1050 - 1 + 1);
    assert_eq!(
        s.get_expiring("codes", "c20", 0).expect("get"),
        Some(b"v".to_vec())
    );
    assert_eq!(s.get_expiring("codes", "c1049", 0).expect("get"), None);
    assert_eq!(
        s.get_expiring("codes", "c1050", 0).expect("get"),
        Some(b"v".to_vec())
    );
    assert_eq!(
        s.get_expiring("other", "y", 0).expect("get"),
        Some(b"v".to_vec())
    );
    assert_eq!(s.purge_expired(1049).expect("again"), 0);
    // Entries past purge time but not purged are already invisible; purge just reclaims them.
    assert_eq!(s.purge_expired(i64::MAX).expect("all"), 50 + 1 + 1);
}

#[test]
fn two_threads_taking_one_code_exactly_one_wins() {
    let (_d, s) = open();
    let s = Arc::new(s);
    let codes = 100;
    for n in 0..codes {
        s.put_expiring(
            "codes",
            &format!("c{n}"),
            n.to_string().into_bytes(),
            i64::MAX,
        )
        .expect("put");
    }
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                let mut won = Vec::new();
                for n in 0..codes {
                    if let Some(v) = s.take_expiring("codes", &format!("c{n}"), 0).expect("take") {
                        won.push(String::from_utf8(v).expect("utf8"));
                    }
                }
                won
            })
        })
        .collect();
    let mut all: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("thread"))
        .collect();
    all.sort_by_key(|v| v.parse::<u32>().unwrap_or(u32::MAX));
    let want: Vec<String> = (0..codes).map(|n| n.to_string()).collect();
    assert_eq!(all, want, "every code taken exactly once");
}

#[test]
fn concurrent_replay_inserts_exactly_one_wins() {
    let (_d, s) = open();
    let s = Arc::new(s);
    for round in 0..20 {
        let key = format!("assertion_{round}");
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = Arc::clone(&s);
                let key = key.clone();
                std::thread::spawn(move || {
                    s.insert_expiring_if_absent("replay", &key, b"1".to_vec(), i64::MAX)
                        .expect("insert")
                })
            })
            .collect();
        let wins = threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .filter(|won| *won)
            .count();
        assert_eq!(wins, 1, "round {round}");
    }
}

#[test]
fn concurrent_commits_get_gap_free_seqs_in_commit_order_and_share_syncs() {
    let (_d, s) = open();
    let s = Arc::new(s);
    let threads = 16;
    let per_thread = 40;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for n in 0..per_thread {
                    let id = format!("event_{t}_{n}");
                    let mut cs = ChangeSet::new();
                    cs.put("users", format!("{t}-{n}"), vec![b'x'; 600])
                        .event(event(&id, 0))
                        .event(event(&format!("{id}_b"), 0));
                    let r = s.commit(cs).expect("commit");
                    assert_eq!(r.event_seqs.len(), 2);
                    assert_eq!(
                        r.event_seqs[1],
                        r.event_seqs[0] + 1,
                        "a change set's events are adjacent"
                    );
                    mine.push((r.event_seqs[0], id));
                }
                mine
            })
        })
        .collect();
    let mut receipts: Vec<(u64, String)> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("thread"))
        .collect();
    receipts.sort();
    let total = (threads * per_thread) as u64;
    let events = s.events_after(0, usize::MAX).expect("events");
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=2 * total).collect::<Vec<_>>());
    for (seq, id) in &receipts {
        let stored = &events[(*seq - 1) as usize];
        assert_eq!(&stored.id, id, "receipt seq points at the committed event");
    }
    let stats = s.stats();
    assert_eq!(stats.commits, total);
    if COUNTS_SYNCS {
        assert!(
            stats.fdatasyncs >= 1 && stats.fdatasyncs <= stats.flushes,
            "{stats:?}"
        );
        assert!(
            stats.max_group_size > 1 && stats.fdatasyncs < total,
            "16 writers should share syncs: {stats:?}"
        );
    }
}

#[test]
fn optimistic_concurrency_counter() {
    let (_d, s) = open();
    let s = Arc::new(s);
    let threads = 4;
    let per_thread = 25;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for _ in 0..per_thread {
                    loop {
                        let current = s.get("c", "n").expect("get");
                        let n: u64 = current
                            .as_deref()
                            .map(|v| std::str::from_utf8(v).expect("utf8").parse().expect("num"))
                            .unwrap_or(0);
                        let mut cs = ChangeSet::new();
                        cs.require_equals("c", "n", current).put(
                            "c",
                            "n",
                            (n + 1).to_string().into_bytes(),
                        );
                        match s.commit(cs) {
                            Ok(_) => break,
                            Err(StoreError::Conflict { .. }) => continue,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let v = s.get("c", "n").expect("get").expect("present");
    assert_eq!(v, (threads * per_thread).to_string().into_bytes());
}

fn export_lines(s: &Backend) -> Vec<String> {
    let mut lines = Vec::new();
    s.export(&mut |r| {
        lines.push(serde_json::to_string(&r).expect("serialize"));
        Ok(())
    })
    .expect("export");
    lines
}

#[test]
fn export_import_round_trip() {
    let (_d, a) = open();
    let mut cs = ChangeSet::new();
    cs.put("users", "u1", br#"{"name":"A"}"#.to_vec())
        .put("users", "u2", vec![0, 159, 146, 150])
        .put("users_by_email", "a@x", b"u1".to_vec());
    for n in 0..6 {
        cs.event(event(&format!("event_{n}"), n));
    }
    a.commit(cs).expect("commit");
    a.put_expiring("codes", "c1", b"{}".to_vec(), 123)
        .expect("put");
    assert_eq!(a.compact_events_before(2).expect("compact"), 2);

    let lines = export_lines(&a);
    assert!(lines.iter().all(|l| !l.contains('\n')));
    assert!(
        lines.iter().any(|l| l.contains(r#""value":{"name":"A"}"#)),
        "{lines:?}"
    );

    let (_d2, b) = open();
    let mut records = lines.iter().map(|l| {
        serde_json::from_str::<ExportRecord>(l).map_err(|e| StoreError::Backend(e.to_string()))
    });
    let n = b.import(&mut records).expect("import");
    assert_eq!(n, lines.len() as u64);
    assert_eq!(export_lines(&b), lines, "second export is identical");
    assert_eq!(
        b.get("users", "u2").expect("get"),
        Some(vec![0, 159, 146, 150])
    );
    assert_eq!(
        b.get_expiring("codes", "c1", 0).expect("get"),
        Some(b"{}".to_vec())
    );
    assert_eq!(b.event_seq("event_3").expect("seq"), Some(4));
    assert_eq!(b.events_after(0, 1).expect("events")[0].seq, 3);
    let mut cs = ChangeSet::new();
    cs.event(event("event_new", 9));
    assert_eq!(b.commit(cs).expect("commit").event_seqs, vec![7]);

    // Import refuses a store that holds anything.
    let mut again = lines.iter().map(|l| {
        serde_json::from_str::<ExportRecord>(l).map_err(|e| StoreError::Backend(e.to_string()))
    });
    assert!(matches!(b.import(&mut again), Err(StoreError::NotEmpty)));
}

#[test]
fn import_keeps_the_counter_when_every_event_was_compacted() {
    let (_d, s) = open();
    let mut records = vec![Ok(ExportRecord::EventSeq { last_seq: 41 })].into_iter();
    s.import(&mut records).expect("import");
    assert_eq!(s.last_event_seq().expect("last"), 41);
    let mut cs = ChangeSet::new();
    cs.event(event("event_x", 1));
    assert_eq!(s.commit(cs).expect("commit").event_seqs, vec![42]);
}

#[test]
fn import_rejects_gaps_zero_seqs_and_duplicate_ids() {
    let ev = |seq: u64, id: &str| {
        let e = event(id, 0);
        Ok(ExportRecord::Event(idbridge_store::StoredEvent::from_new(
            seq, e,
        )))
    };
    let cases = vec![
        vec![ev(1, "event_a"), ev(3, "event_b")],
        vec![ev(0, "event_a")],
        vec![ev(1, "event_a"), ev(2, "event_a")],
    ];
    for (n, case) in cases.into_iter().enumerate() {
        let (_d, s) = open();
        let mut it = case.into_iter();
        assert!(
            matches!(s.import(&mut it), Err(StoreError::Corrupt { .. })),
            "case {n}"
        );
    }
    // An error from the record source stops the import.
    let (_d, s) = open();
    let mut it = vec![Err(StoreError::Backend("bad line".into()))].into_iter();
    assert!(matches!(s.import(&mut it), Err(StoreError::Backend(_))));
}

/// Other crates hold the store as `Arc<dyn Store>`; keep the trait object-safe.
#[test]
fn usable_as_a_trait_object_across_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(open_at(dir.path()));
    let worker = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            let mut cs = ChangeSet::new();
            cs.put("t", "k", b"v".to_vec()).event(event("event_dyn", 1));
            store.commit(cs).expect("commit")
        })
    };
    assert_eq!(worker.join().expect("thread").event_seqs, vec![1]);
    assert_eq!(store.get("t", "k").expect("get"), Some(b"v".to_vec()));
    let mut seen = 0;
    store
        .export(&mut |_| {
            seen += 1;
            Ok(())
        })
        .expect("export");
    assert_eq!(seen, 3, "entry, event, event seq");
}

#[test]
fn for_each_prefixed_streams_in_order_and_stops() {
    let (_d, s) = open();
    let mut cs = ChangeSet::new();
    for k in ["a", "ab", "abc", "abd", "ab~", "ac", "b"] {
        cs.put("t", k, k.as_bytes().to_vec());
    }
    cs.put("other", "abz", b"x".to_vec());
    s.commit(cs).expect("commit");
    let mut seen: Vec<(String, Vec<u8>)> = Vec::new();
    s.for_each_prefixed("t", "ab", &mut |k, v| {
        seen.push((String::from_utf8(k.to_vec()).expect("utf8"), v.to_vec()));
        true
    })
    .expect("scan");
    assert_eq!(seen, s.scan("t", "ab", None, 100).expect("scan"));
    assert_eq!(keys(&seen), ["ab", "abc", "abd", "ab~"]);
    let mut n = 0;
    s.for_each_prefixed("t", "", &mut |_, _| {
        n += 1;
        n < 3
    })
    .expect("scan");
    assert_eq!(n, 3);
}
