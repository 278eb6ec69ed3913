//! Response controls and intermediate messages from the server (RFC 2696 paged results, RFC
//! 4533 content sync), parsed strictly and without panics.
//!
//! ldap3 ships parsers for these (`PagedResults`, `SyncState`, `SyncDone`, `parse_syncinfo`)
//! but they panic on anything unexpected; a reply from a misbehaving or hostile server must
//! fail the run with an error that says what was wrong, so we parse the BER ourselves into
//! ldap3's value types.
//!
//! ```text
//! realSearchControlValue ::= SEQUENCE { size INTEGER (0..maxInt), cookie OCTET STRING }
//! syncStateValue ::= SEQUENCE { state ENUMERATED { present(0), add(1), modify(2), delete(3) },
//!                               entryUUID OCTET STRING (SIZE(16)), cookie OCTET STRING OPTIONAL }
//! syncDoneValue  ::= SEQUENCE { cookie OCTET STRING OPTIONAL, refreshDeletes BOOLEAN DEFAULT FALSE }
//! syncInfoValue  ::= CHOICE {
//!     newcookie      [0] OCTET STRING,
//!     refreshDelete  [1] SEQUENCE { cookie OPTIONAL, refreshDone BOOLEAN DEFAULT TRUE },
//!     refreshPresent [2] SEQUENCE { cookie OPTIONAL, refreshDone BOOLEAN DEFAULT TRUE },
//!     syncIdSet      [3] SEQUENCE { cookie OPTIONAL, refreshDeletes BOOLEAN DEFAULT FALSE,
//!                                   syncUUIDs SET OF OCTET STRING (SIZE(16)) } }
//! ```

use std::collections::HashSet;

use ldap3::asn1::{parse_tag, StructureTag, TagClass, Types, PL};
use ldap3::controls::{EntryState, PagedResults, RawControl, SyncDone, SyncInfo, SyncState};
use ldap3::ResultEntry;

use crate::error::LdapError;

/// OID of the Sync Info intermediate response.
const SYNC_INFO_OID: &[u8] = b"1.3.6.1.4.1.4203.1.9.1.4";
/// `[APPLICATION 25]`, RFC 4511 §4.13.
const INTERMEDIATE_RESPONSE: u64 = 25;
/// RFC 4533 §2.1: `syncUUID ::= OCTET STRING (SIZE(16))`.
const UUID_LEN: usize = 16;

fn malformed(what: &str, why: &str) -> LdapError {
    LdapError::Malformed(format!("{what}: {why}"))
}

/// Parses one whole BER element; trailing bytes are an error.
fn parse_whole(bytes: &[u8], what: &str) -> Result<StructureTag, LdapError> {
    match parse_tag(bytes) {
        Ok(([], tag)) => Ok(tag),
        Ok(_) => Err(malformed(what, "trailing bytes after the value")),
        Err(_) => Err(malformed(what, "not a BER element")),
    }
}

fn control_value<'a>(ctrl: &'a RawControl, what: &str) -> Result<&'a [u8], LdapError> {
    ctrl.val
        .as_deref()
        .ok_or_else(|| malformed(what, "control without a value"))
}

fn is_universal(tag: &StructureTag, ty: Types) -> bool {
    tag.class == TagClass::Universal && tag.id == ty as u64
}

fn sequence(tag: StructureTag, what: &str) -> Result<Vec<StructureTag>, LdapError> {
    if !is_universal(&tag, Types::Sequence) {
        return Err(malformed(what, "not a SEQUENCE"));
    }
    constructed(tag, what)
}

fn constructed(tag: StructureTag, what: &str) -> Result<Vec<StructureTag>, LdapError> {
    match tag.payload {
        PL::C(inner) => Ok(inner),
        PL::P(_) => Err(malformed(
            what,
            "primitive where a constructed element belongs",
        )),
    }
}

fn primitive(tag: StructureTag, what: &str) -> Result<Vec<u8>, LdapError> {
    match tag.payload {
        PL::P(bytes) => Ok(bytes),
        PL::C(_) => Err(malformed(
            what,
            "constructed where a primitive element belongs",
        )),
    }
}

fn octet_string(tag: StructureTag, what: &str) -> Result<Vec<u8>, LdapError> {
    if !is_universal(&tag, Types::OctetString) {
        return Err(malformed(what, "not an OCTET STRING"));
    }
    primitive(tag, what)
}

fn uuid(tag: StructureTag, what: &str) -> Result<Vec<u8>, LdapError> {
    let bytes = octet_string(tag, what)?;
    if bytes.len() != UUID_LEN {
        return Err(malformed(what, "a syncUUID is not 16 bytes"));
    }
    Ok(bytes)
}

/// DER and BER agree on one content byte; any non-zero byte is TRUE in BER.
fn boolean(tag: StructureTag, what: &str) -> Result<bool, LdapError> {
    if !is_universal(&tag, Types::Boolean) {
        return Err(malformed(what, "not a BOOLEAN"));
    }
    match primitive(tag, what)?.as_slice() {
        [b] => Ok(*b != 0),
        _ => Err(malformed(what, "a BOOLEAN is not one byte")),
    }
}

/// The Paged Results control of a search result (RFC 2696): the server's size estimate and
/// the cookie for the next page (empty: the last page).
pub fn paged_results(ctrl: &RawControl) -> Result<PagedResults, LdapError> {
    const WHAT: &str = "Paged Results control";
    let mut parts = sequence(parse_whole(control_value(ctrl, WHAT)?, WHAT)?, WHAT)?.into_iter();
    let size = parts.next().ok_or_else(|| malformed(WHAT, "no size"))?;
    if !is_universal(&size, Types::Integer) {
        return Err(malformed(WHAT, "the size is not an INTEGER"));
    }
    // 0..maxInt: at most four content bytes, the first without the sign bit.
    let size = match primitive(size, WHAT)?.as_slice() {
        b @ [first, ..] if b.len() <= 4 && first & 0x80 == 0 => {
            b.iter().fold(0i32, |n, &byte| (n << 8) | i32::from(byte))
        }
        _ => return Err(malformed(WHAT, "the size is not in 0..maxInt")),
    };
    let cookie = octet_string(
        parts.next().ok_or_else(|| malformed(WHAT, "no cookie"))?,
        WHAT,
    )?;
    if parts.next().is_some() {
        return Err(malformed(WHAT, "more elements than the SEQUENCE has"));
    }
    Ok(PagedResults { size, cookie })
}

/// The Sync State control of a search result entry.
pub fn sync_state(ctrl: &RawControl) -> Result<SyncState, LdapError> {
    const WHAT: &str = "Sync State control";
    let mut parts = sequence(parse_whole(control_value(ctrl, WHAT)?, WHAT)?, WHAT)?.into_iter();
    let state = parts.next().ok_or_else(|| malformed(WHAT, "no state"))?;
    if !is_universal(&state, Types::Enumerated) {
        return Err(malformed(WHAT, "the state is not an ENUMERATED"));
    }
    let state = match primitive(state, WHAT)?.as_slice() {
        [0] => EntryState::Present,
        [1] => EntryState::Add,
        [2] => EntryState::Modify,
        [3] => EntryState::Delete,
        _ => return Err(malformed(WHAT, "unknown state")),
    };
    let entry_uuid = uuid(
        parts
            .next()
            .ok_or_else(|| malformed(WHAT, "no entryUUID"))?,
        WHAT,
    )?;
    let cookie = parts.next().map(|c| octet_string(c, WHAT)).transpose()?;
    if parts.next().is_some() {
        return Err(malformed(WHAT, "more elements than the SEQUENCE has"));
    }
    Ok(SyncState {
        state,
        entry_uuid,
        cookie,
    })
}

/// The elements of a SEQUENCE after those already read.
type Rest = std::iter::Peekable<std::vec::IntoIter<StructureTag>>;

/// Reads `{ cookie OPTIONAL, flag BOOLEAN DEFAULT default }` (Sync Done, refreshDelete and
/// refreshPresent share it), then whatever follows, for the caller to check.
fn cookie_and_flag(
    parts: Vec<StructureTag>,
    default: bool,
    what: &str,
) -> Result<(Option<Vec<u8>>, bool, Rest), LdapError> {
    let mut parts = parts.into_iter().peekable();
    let cookie = match parts.peek() {
        Some(t) if is_universal(t, Types::OctetString) => {
            parts.next().map(|t| octet_string(t, what)).transpose()?
        }
        _ => None,
    };
    let flag = match parts.peek() {
        Some(t) if is_universal(t, Types::Boolean) => match parts.next() {
            Some(t) => boolean(t, what)?,
            None => default,
        },
        _ => default,
    };
    Ok((cookie, flag, parts))
}

/// The Sync Done control of a sync search's result.
pub fn sync_done(ctrl: &RawControl) -> Result<SyncDone, LdapError> {
    const WHAT: &str = "Sync Done control";
    let parts = sequence(parse_whole(control_value(ctrl, WHAT)?, WHAT)?, WHAT)?;
    let (cookie, refresh_deletes, mut rest) = cookie_and_flag(parts, false, WHAT)?;
    if rest.next().is_some() {
        return Err(malformed(WHAT, "an element the SEQUENCE does not have"));
    }
    Ok(SyncDone {
        cookie,
        refresh_deletes,
    })
}

/// The Sync Info intermediate response; any other intermediate response is an error.
pub fn sync_info(re: ResultEntry) -> Result<SyncInfo, LdapError> {
    const WHAT: &str = "Sync Info message";
    let tag = re.0;
    if tag.class != TagClass::Application || tag.id != INTERMEDIATE_RESPONSE {
        return Err(malformed(WHAT, "not an intermediate response"));
    }
    let mut name = None;
    let mut value = None;
    for part in constructed(tag, WHAT)? {
        match (part.class, part.id) {
            (TagClass::Context, 0) if name.is_none() && value.is_none() => {
                name = Some(primitive(part, WHAT)?)
            }
            (TagClass::Context, 1) if value.is_none() => value = Some(primitive(part, WHAT)?),
            _ => return Err(malformed(WHAT, "unexpected element")),
        }
    }
    if name.as_deref() != Some(SYNC_INFO_OID) {
        return Err(malformed(
            WHAT,
            "an intermediate response that is not Sync Info",
        ));
    }
    let value = value.ok_or_else(|| malformed(WHAT, "no value"))?;
    let choice = parse_whole(&value, WHAT)?;
    if choice.class != TagClass::Context {
        return Err(malformed(WHAT, "not one of the syncInfoValue choices"));
    }
    let info = match choice.id {
        0 => SyncInfo::NewCookie(primitive(choice, WHAT)?),
        id @ (1 | 2) => {
            let (cookie, refresh_done, mut rest) =
                cookie_and_flag(constructed(choice, WHAT)?, true, WHAT)?;
            if rest.next().is_some() {
                return Err(malformed(WHAT, "an element the SEQUENCE does not have"));
            }
            if id == 1 {
                SyncInfo::RefreshDelete {
                    cookie,
                    refresh_done,
                }
            } else {
                SyncInfo::RefreshPresent {
                    cookie,
                    refresh_done,
                }
            }
        }
        3 => {
            let (cookie, refresh_deletes, mut rest) =
                cookie_and_flag(constructed(choice, WHAT)?, false, WHAT)?;
            let set = rest
                .next()
                .ok_or_else(|| malformed(WHAT, "syncIdSet without syncUUIDs"))?;
            if !is_universal(&set, Types::Set) || rest.next().is_some() {
                return Err(malformed(
                    WHAT,
                    "syncIdSet: syncUUIDs is not the last, a SET",
                ));
            }
            let sync_uuids = constructed(set, WHAT)?
                .into_iter()
                .map(|u| uuid(u, WHAT))
                .collect::<Result<HashSet<_>, _>>()?;
            SyncInfo::SyncIdSet {
                cookie,
                refresh_deletes,
                sync_uuids,
            }
        }
        _ => return Err(malformed(WHAT, "not one of the syncInfoValue choices")),
    };
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3::asn1::write;

    fn prim(class: TagClass, id: u64, bytes: &[u8]) -> StructureTag {
        StructureTag {
            class,
            id,
            payload: PL::P(bytes.to_vec()),
        }
    }

    fn cons(class: TagClass, id: u64, inner: Vec<StructureTag>) -> StructureTag {
        StructureTag {
            class,
            id,
            payload: PL::C(inner),
        }
    }

    fn octets(b: &[u8]) -> StructureTag {
        prim(TagClass::Universal, Types::OctetString as u64, b)
    }

    fn boolean_tag(v: u8) -> StructureTag {
        prim(TagClass::Universal, Types::Boolean as u64, &[v])
    }

    fn seq(inner: Vec<StructureTag>) -> StructureTag {
        cons(TagClass::Universal, Types::Sequence as u64, inner)
    }

    fn ber(tag: StructureTag) -> Vec<u8> {
        let mut buf = bytes::BytesMut::new();
        write::encode_into(&mut buf, tag).expect("encoding a test value");
        buf.to_vec()
    }

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
}
