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
