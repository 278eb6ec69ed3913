//! Building BER values by hand, for parsers' negative tests and the scripted server.

use bytes::BytesMut;
use ldap3::asn1::{write, StructureTag, TagClass, Types, PL};

pub fn prim(class: TagClass, id: u64, bytes: &[u8]) -> StructureTag {
    StructureTag {
        class,
        id,
        payload: PL::P(bytes.to_vec()),
    }
}

pub fn cons(class: TagClass, id: u64, inner: Vec<StructureTag>) -> StructureTag {
    StructureTag {
        class,
        id,
        payload: PL::C(inner),
    }
}

pub fn octets(b: &[u8]) -> StructureTag {
    prim(TagClass::Universal, Types::OctetString as u64, b)
}

pub fn boolean_tag(v: u8) -> StructureTag {
    prim(TagClass::Universal, Types::Boolean as u64, &[v])
}

pub fn seq(inner: Vec<StructureTag>) -> StructureTag {
    cons(TagClass::Universal, Types::Sequence as u64, inner)
}

/// The BER encoding of `tag`.
pub fn ber(tag: StructureTag) -> Vec<u8> {
    let mut buf = BytesMut::new();
    write::encode_into(&mut buf, tag).expect("encoding a test value");
    buf.to_vec()
}
