//! The strict parsers of server controls and Sync Info messages (`idbridge_ldap::controls`):
//! what real servers send parses; every malformed shape is `Malformed`, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;

use common::ber::{ber, boolean_tag, cons, octets, prim, seq};
use idbridge_ldap::controls::{paged_results, sync_done, sync_info, sync_state};
use idbridge_ldap::LdapError;
use ldap3::asn1::{StructureTag, TagClass, Types};
use ldap3::controls::{EntryState, RawControl, SyncInfo};
use ldap3::ResultEntry;

/// OID of the Sync Info intermediate response.
const SYNC_INFO_OID: &[u8] = b"1.3.6.1.4.1.4203.1.9.1.4";
/// `[APPLICATION 25]`, RFC 4511 §4.13.
const INTERMEDIATE_RESPONSE: u64 = 25;

fn control(val: Option<Vec<u8>>) -> RawControl {
    RawControl {
        ctype: "1.3.6.1.4.1.4203.1.9.1.2".into(),
        crit: false,
        val,
    }
}

const UUID: [u8; 16] = [7; 16];

fn state_value(state: u8, uuid: &[u8], cookie: Option<&[u8]>) -> Vec<u8> {
    let mut parts = vec![
        prim(TagClass::Universal, Types::Enumerated as u64, &[state]),
        octets(uuid),
    ];
    parts.extend(cookie.map(octets));
    ber(seq(parts))
}

fn intermediate(name: Option<&[u8]>, value: Option<Vec<u8>>) -> ResultEntry {
    let mut parts = Vec::new();
    parts.extend(name.map(|n| prim(TagClass::Context, 0, n)));
    parts.extend(value.map(|v| prim(TagClass::Context, 1, &v)));
    ResultEntry::new(cons(TagClass::Application, INTERMEDIATE_RESPONSE, parts))
}

fn info(choice: StructureTag) -> Result<SyncInfo, LdapError> {
    sync_info(intermediate(Some(SYNC_INFO_OID), Some(ber(choice))))
}

fn paged_value(size: &[u8], cookie: &[u8]) -> Vec<u8> {
    ber(seq(vec![
        prim(TagClass::Universal, Types::Integer as u64, size),
        octets(cookie),
    ]))
}

#[test]
fn paged_results_values_parse() {
    let p = paged_results(&control(Some(paged_value(&[0x01, 0x00], b"next")))).expect("page");
    assert_eq!((p.size, p.cookie.as_slice()), (256, &b"next"[..]));
    let last = paged_results(&control(Some(paged_value(&[0], b"")))).expect("last page");
    assert_eq!((last.size, last.cookie.len()), (0, 0));
    let max = paged_results(&control(Some(paged_value(&[0x7f, 0xff, 0xff, 0xff], b""))));
    assert_eq!(max.expect("maxInt").size, i32::MAX);
}

#[test]
fn malformed_paged_results_controls_are_errors() {
    let int = |b: &[u8]| prim(TagClass::Universal, Types::Integer as u64, b);
    let cases: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("no value", None),
        ("empty", Some(vec![])),
        ("negative size", Some(paged_value(&[0xff], b"c"))),
        (
            "size over maxInt",
            Some(paged_value(&[0, 0x80, 0, 0, 0], b"c")),
        ),
        ("empty size", Some(paged_value(&[], b"c"))),
        ("no cookie", Some(ber(seq(vec![int(&[1])])))),
        (
            "cookie first",
            Some(ber(seq(vec![octets(b"c"), int(&[1])]))),
        ),
        (
            "extra element",
            Some(ber(seq(vec![int(&[1]), octets(b"c"), octets(b"d")]))),
        ),
        ("not a sequence", Some(ber(int(&[1])))),
        ("trailing bytes", {
            let mut v = paged_value(&[1], b"c");
            v.extend_from_slice(&[4, 0]);
            Some(v)
        }),
    ];
    for (name, value) in cases {
        assert!(
            matches!(paged_results(&control(value)), Err(LdapError::Malformed(_))),
            "{name} was accepted"
        );
    }
}

#[test]
fn sync_state_values_parse() {
    let s = sync_state(&control(Some(state_value(2, &UUID, Some(b"c1"))))).expect("state");
    assert!(matches!(s.state, EntryState::Modify));
    assert_eq!(s.entry_uuid, UUID);
    assert_eq!(s.cookie.as_deref(), Some(&b"c1"[..]));
    let s = sync_state(&control(Some(state_value(3, &UUID, None)))).expect("state");
    assert!(matches!(s.state, EntryState::Delete));
    assert_eq!(s.cookie, None);
}

#[test]
fn malformed_sync_state_controls_are_errors() {
    let cases: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("no value", None),
        ("empty", Some(vec![])),
        ("truncated", {
            let mut v = state_value(1, &UUID, None);
            v.pop();
            Some(v)
        }),
        ("trailing bytes", {
            let mut v = state_value(1, &UUID, None);
            v.push(0);
            Some(v)
        }),
        ("unknown state", Some(state_value(4, &UUID, None))),
        ("short uuid", Some(state_value(1, &UUID[..15], None))),
        ("not a sequence", Some(ber(octets(b"x")))),
        (
            "no uuid",
            Some(ber(seq(vec![prim(TagClass::Universal, 10, &[1])]))),
        ),
        (
            "state as integer",
            Some(ber(seq(vec![
                prim(TagClass::Universal, Types::Integer as u64, &[1]),
                octets(&UUID),
            ]))),
        ),
        (
            "extra element",
            Some(ber(seq(vec![
                prim(TagClass::Universal, 10, &[1]),
                octets(&UUID),
                octets(b"c"),
                octets(b"d"),
            ]))),
        ),
    ];
    for (name, value) in cases {
        assert!(
            matches!(sync_state(&control(value)), Err(LdapError::Malformed(_))),
            "{name} was accepted"
        );
    }
}

#[test]
fn sync_done_defaults_and_errors() {
    let d = sync_done(&control(Some(ber(seq(vec![]))))).expect("empty done");
    assert_eq!((d.cookie, d.refresh_deletes), (None, false));
    let d = sync_done(&control(Some(ber(seq(vec![
        octets(b"k"),
        boolean_tag(0xff),
    ])))))
    .expect("done");
    assert_eq!(
        (d.cookie.as_deref(), d.refresh_deletes),
        (Some(&b"k"[..]), true)
    );
    let d = sync_done(&control(Some(ber(seq(vec![boolean_tag(1)]))))).expect("flag only");
    assert_eq!((d.cookie, d.refresh_deletes), (None, true));
    for (name, value) in [
        ("no value", None),
        (
            "boolean of two bytes",
            Some(ber(seq(vec![prim(TagClass::Universal, 1, &[1, 1])]))),
        ),
        (
            "empty boolean",
            Some(ber(seq(vec![prim(TagClass::Universal, 1, &[])]))),
        ),
        (
            "flag before cookie",
            Some(ber(seq(vec![boolean_tag(1), octets(b"k")]))),
        ),
        (
            "unknown element",
            Some(ber(seq(vec![prim(TagClass::Universal, 2, &[1])]))),
        ),
        (
            "constructed cookie",
            Some(ber(seq(vec![cons(TagClass::Universal, 4, vec![])]))),
        ),
    ] {
        assert!(
            matches!(sync_done(&control(value)), Err(LdapError::Malformed(_))),
            "{name} was accepted"
        );
    }
}

#[test]
fn sync_info_choices_parse() {
    let new_cookie = info(prim(TagClass::Context, 0, b"nc")).expect("newcookie");
    assert!(matches!(new_cookie, SyncInfo::NewCookie(c) if c == b"nc"));
    // refreshDone defaults to TRUE.
    let present = info(cons(TagClass::Context, 2, vec![octets(b"p")])).expect("present");
    assert!(matches!(
        present,
        SyncInfo::RefreshPresent { cookie: Some(c), refresh_done: true } if c == b"p"
    ));
    let delete = info(cons(TagClass::Context, 1, vec![boolean_tag(0)])).expect("delete");
    assert!(matches!(
        delete,
        SyncInfo::RefreshDelete {
            cookie: None,
            refresh_done: false
        }
    ));
    let ids = info(cons(
        TagClass::Context,
        3,
        vec![
            boolean_tag(1),
            cons(
                TagClass::Universal,
                Types::Set as u64,
                vec![octets(&UUID), octets(&[9; 16])],
            ),
        ],
    ))
    .expect("syncIdSet");
    match ids {
        SyncInfo::SyncIdSet {
            cookie: None,
            refresh_deletes: true,
            sync_uuids,
        } => assert_eq!(sync_uuids, HashSet::from([UUID.to_vec(), vec![9; 16]])),
        other => panic!("got {other:?}"),
    }
}

#[test]
fn malformed_sync_info_messages_are_errors() {
    let set = |uuids: Vec<StructureTag>| cons(TagClass::Universal, Types::Set as u64, uuids);
    let entries = vec![
        (
            "no name",
            intermediate(None, Some(ber(prim(TagClass::Context, 0, b"c")))),
        ),
        (
            "another response",
            intermediate(Some(b"1.2.3"), Some(ber(prim(TagClass::Context, 0, b"c")))),
        ),
        ("no value", intermediate(Some(SYNC_INFO_OID), None)),
        (
            "garbage value",
            intermediate(Some(SYNC_INFO_OID), Some(vec![0xff, 0xff])),
        ),
        (
            "choice 4",
            intermediate(
                Some(SYNC_INFO_OID),
                Some(ber(prim(TagClass::Context, 4, b"c"))),
            ),
        ),
        (
            "universal choice",
            intermediate(Some(SYNC_INFO_OID), Some(ber(octets(b"c")))),
        ),
        (
            "constructed newcookie",
            intermediate(
                Some(SYNC_INFO_OID),
                Some(ber(cons(TagClass::Context, 0, vec![]))),
            ),
        ),
        (
            "primitive refreshPresent",
            intermediate(
                Some(SYNC_INFO_OID),
                Some(ber(prim(TagClass::Context, 2, b""))),
            ),
        ),
        (
            "syncIdSet without the set",
            intermediate(
                Some(SYNC_INFO_OID),
                Some(ber(cons(TagClass::Context, 3, vec![octets(b"c")]))),
            ),
        ),
        (
            "syncIdSet with a short uuid",
            intermediate(
                Some(SYNC_INFO_OID),
                Some(ber(cons(
                    TagClass::Context,
                    3,
                    vec![set(vec![octets(&[1; 8])])],
                ))),
            ),
        ),
        (
            "syncIdSet with an element after the set",
            intermediate(
                Some(SYNC_INFO_OID),
                Some(ber(cons(
                    TagClass::Context,
                    3,
                    vec![set(vec![]), boolean_tag(1)],
                ))),
            ),
        ),
        (
            "not an intermediate response",
            ResultEntry::new(cons(TagClass::Application, 4, vec![])),
        ),
    ];
    for (name, entry) in entries {
        assert!(
            matches!(sync_info(entry), Err(LdapError::Malformed(_))),
            "{name} was accepted"
        );
    }
}
