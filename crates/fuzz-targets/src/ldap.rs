//! LDAP targets: our strict response-control parsers, and ldap3's message decoder (the
//! vendored fork, `third_party/ldap3/PATCHES.md`) followed by every parser a decoded message
//! meets on its way through a connection.

use bytes::BytesMut;
use idbridge_ldap::controls::{paged_results, sync_done, sync_info, sync_state};
use idbridge_ldap::entry::Entry;
use ldap3::asn1::{parse_tag, Tag};
use ldap3::controls::RawControl;
use ldap3::{LdapResult, ResultEntry, SearchEntry};

/// First byte: which parser; the rest: the control value (or, for Sync Info, a whole
/// IntermediateResponse element). Property: no panic.
pub fn ldap_controls(data: &[u8]) {
    let Some((which, value)) = data.split_first() else {
        return;
    };
    let ctrl = |oid: &str| RawControl {
        ctype: oid.into(),
        crit: false,
        val: Some(value.to_vec()),
    };
    match which % 4 {
        0 => drop(paged_results(&ctrl("1.2.840.113556.1.4.319"))),
        1 => drop(sync_state(&ctrl("1.3.6.1.4.1.4203.1.9.1.2"))),
        2 => drop(sync_done(&ctrl("1.3.6.1.4.1.4203.1.9.1.3"))),
        _ => {
            if let Ok((_, tag)) = parse_tag(value) {
                drop(sync_info(ResultEntry::new(tag)));
            }
        }
    }
}

/// A stream of bytes from an LDAP server: decoded message by message as the connection does,
/// each message then read by every parser it could meet: the result parser (any reply can
/// reach an operation waiting for a result), the entry parsers (ours and ldap3's), referrals,
/// Sync Info, and our control parsers for each control. Property: no panic.
pub fn ldap_message(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some((_id, (tag, controls)))) = ldap3::decode_message(&mut buf) {
        let _ = LdapResult::from(tag.clone());
        if let Tag::StructureTag(op) = tag {
            match op.id {
                4 => {
                    let _ = SearchEntry::construct(ResultEntry::new(op.clone()));
                    let _ = Entry::from_result(ResultEntry::new(op));
                }
                19 => drop(ldap3::parse_refs(op)),
                25 => drop(sync_info(ResultEntry::new(op))),
                _ => {}
            }
        }
        for ctrl in controls {
            let raw = &ctrl.1;
            drop(paged_results(raw));
            drop(sync_state(raw));
            drop(sync_done(raw));
        }
    }
}
