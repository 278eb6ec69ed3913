//! idbridge patch: a shape check of every decoded LDAPMessage, run by the decoder before the
//! message reaches ldap3's own parsers (`parse_controls`, `LdapResult::from`,
//! `SearchEntry::construct`, `parse_refs`), which `expect` the shapes checked here and panic
//! on anything else. A message that fails the check is a decoding error (the connection
//! fails with an I/O error), so a malformed or hostile reply can no longer panic the
//! connection task.
//!
//! Each check mirrors the parser it guards, element by element: what the parser reads, this
//! module requires; what the parser ignores, this module ignores.

use lber::common::TagClass;
use lber::parse::parse_uint;
use lber::structure::{PL, StructureTag};
use lber::universal::Types;

/// Response protocolOps whose body is an LDAPResult (RFC 4511 §4.1.9): bind, searchResDone,
/// modify, add, delete, modDN, compare, extended.
const RESULT_OPS: &[u64] = &[1, 5, 7, 9, 11, 13, 15, 24];
const SEARCH_RESULT_ENTRY: u64 = 4;
const SEARCH_RESULT_REFERENCE: u64 = 19;
const INTERMEDIATE_RESPONSE: u64 = 25;

fn children(tag: &StructureTag) -> Option<&[StructureTag]> {
    match tag.payload {
        PL::C(ref inner) => Some(inner),
        PL::P(_) => None,
    }
}

fn bytes(tag: &StructureTag) -> Option<&[u8]> {
    match tag.payload {
        PL::P(ref inner) => Some(inner),
        PL::C(_) => None,
    }
}

fn utf8(tag: &StructureTag) -> bool {
    bytes(tag).is_some_and(|b| std::str::from_utf8(b).is_ok())
}

/// `parse_refs`: a constructed element of primitive UTF-8 strings.
fn referrals(tag: &StructureTag) -> bool {
    children(tag).is_some_and(|refs| refs.iter().all(utf8))
}

/// `LdapResult::from`: resultCode (universal ENUMERATED, an unsigned integer), matchedDN and
/// diagnosticMessage (primitive UTF-8), then optional components matched by id alone.
pub(crate) fn ldap_result(tag: &StructureTag) -> bool {
    let Some(parts) = children(tag) else {
        return false;
    };
    let [code, matched, text, rest @ ..] = parts else {
        return false;
    };
    let code_ok = code.class == TagClass::Universal
        && code.id == Types::Enumerated as u64
        && bytes(code).is_some_and(|b| parse_uint(b).is_ok());
    code_ok
        && utf8(matched)
        && utf8(text)
        && rest.iter().all(|comp| match comp.id {
            3 => referrals(comp),
            7 | 11 => bytes(comp).is_some(),
            10 => utf8(comp),
            _ => true,
        })
}

/// `SearchEntry::construct`: objectName (primitive UTF-8), then attributes, each a constructed
/// {type (primitive UTF-8), values (constructed, of primitives)}.
fn search_entry(tag: &StructureTag) -> bool {
    let Some([dn, attrs, ..]) = children(tag) else {
        return false;
    };
    utf8(dn)
        && children(attrs).is_some_and(|attrs| {
            attrs.iter().all(|attr| match children(attr) {
                Some([name, values, ..]) => {
                    utf8(name)
                        && children(values).is_some_and(|v| v.iter().all(|v| bytes(v).is_some()))
                }
                _ => false,
            })
        })
}

/// `parse_controls`: a constructed list of controls, each {controlType (primitive UTF-8),
/// criticality (BOOLEAN, one or more bytes) optional, controlValue (primitive) optional}.
pub(crate) fn controls(tag: &StructureTag) -> bool {
    let Some(list) = children(tag) else {
        return false;
    };
    list.iter().all(|ctrl| {
        let Some(parts) = children(ctrl) else {
            return false;
        };
        let mut parts = parts.iter();
        if !parts.next().is_some_and(utf8) {
            return false;
        }
        let value = match parts.next() {
            None => None,
            Some(c) if c.id == Types::Boolean as u64 => {
                if !bytes(c).is_some_and(|b| !b.is_empty()) {
                    return false;
                }
                parts.next()
            }
            Some(c) if c.id == Types::OctetString as u64 => Some(c),
            Some(_) => return false,
        };
        value.is_none_or(|v| bytes(v).is_some())
    })
}

/// The protocolOp of a response: an application-class response op whose body has the shape
/// its parser expects.
pub(crate) fn protocol_op(op: &StructureTag) -> bool {
    if op.class != TagClass::Application {
        return false;
    }
    match op.id {
        id if RESULT_OPS.contains(&id) => ldap_result(op),
        SEARCH_RESULT_ENTRY => search_entry(op),
        SEARCH_RESULT_REFERENCE => referrals(op),
        // Parsed by the caller (idbridge's strict Sync Info parser); only its framing here.
        INTERMEDIATE_RESPONSE => children(op).is_some(),
        _ => false,
    }
}
