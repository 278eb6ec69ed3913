//! One search result entry as read: its DN and attributes, in the server's order.
//!
//! Built straight from ldap3's parsed BER ([`Entry::from_result`]) instead of through
//! `ldap3::SearchEntry`: the values' buffers become the strings (no copy), a handful of
//! attributes needs no hash map, and a malformed entry is an error instead of ldap3's panic.

use ldap3::asn1::{StructureTag, TagClass, PL};
use ldap3::ResultEntry;

use crate::error::LdapError;

/// BER tag of a SearchResultEntry (RFC 4511 §4.5.2: `[APPLICATION 4]`).
const SEARCH_RESULT_ENTRY: u64 = 4;

/// A search result entry. Values that are valid UTF-8 are text; an attribute with any other
/// value (AD's `objectGUID`) is kept whole under `bin_attrs`, as ldap3 splits them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    /// The DN as the server sent it.
    pub dn: String,
    /// Text attributes: (name as sent, values).
    pub attrs: Vec<(String, Vec<String>)>,
    /// Attributes with a value that is not UTF-8: (name as sent, values).
    pub bin_attrs: Vec<(String, Vec<Vec<u8>>)>,
}

impl Entry {
    /// Parses a search result entry; `Malformed` when it is not one.
    pub fn from_result(re: ResultEntry) -> Result<Entry, LdapError> {
        let bad = |what: &str| LdapError::Malformed(format!("search result entry: {what}"));
        let tag = re.0;
        if tag.class != TagClass::Application || tag.id != SEARCH_RESULT_ENTRY {
            return Err(bad("not a SearchResultEntry"));
        }
        let mut parts = constructed(tag)
            .ok_or_else(|| bad("not constructed"))?
            .into_iter();
        let dn = parts
            .next()
            .and_then(primitive)
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| bad("no DN"))?;
        let list = parts
            .next()
            .and_then(constructed)
            .ok_or_else(|| bad("no attribute list"))?;
        let mut entry = Entry {
            dn,
            attrs: Vec::with_capacity(list.len()),
            bin_attrs: Vec::new(),
        };
        for attribute in list {
            let mut pair = constructed(attribute)
                .ok_or_else(|| bad("attribute not a sequence"))?
                .into_iter();
            let name = pair
                .next()
                .and_then(primitive)
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| bad("attribute without a name"))?;
            let raw = pair
                .next()
                .and_then(constructed)
                .ok_or_else(|| bad("attribute without a value set"))?;
            let mut text = Vec::with_capacity(raw.len());
            let mut binary: Option<Vec<Vec<u8>>> = None;
            for value in raw {
                let bytes = primitive(value).ok_or_else(|| bad("constructed value"))?;
                match binary.as_mut() {
                    Some(bin) => bin.push(bytes),
                    None => match String::from_utf8(bytes) {
                        Ok(s) => text.push(s),
                        Err(e) => {
                            let mut bin: Vec<Vec<u8>> =
                                text.drain(..).map(String::into_bytes).collect();
                            bin.push(e.into_bytes());
                            binary = Some(bin);
                        }
                    },
                }
            }
            match binary {
                Some(bin) => entry.bin_attrs.push((name, bin)),
                None => entry.attrs.push((name, text)),
            }
        }
        Ok(entry)
    }

    /// The text values of an attribute (exact name first, then ignoring ASCII case).
    pub fn values(&self, name: &str) -> Option<&Vec<String>> {
        find(&self.attrs, name)
    }

    /// The values of an attribute that has a non-UTF-8 value.
    pub fn bin_values(&self, name: &str) -> Option<&Vec<Vec<u8>>> {
        find(&self.bin_attrs, name)
    }

    /// Removes an attribute's text values (exact name).
    pub fn take(&mut self, name: &str) -> Option<Vec<String>> {
        let at = self.attrs.iter().position(|(k, _)| k == name)?;
        Some(self.attrs.remove(at).1)
    }

    /// Appends text values to an attribute (exact name), adding it when absent.
    pub fn extend(&mut self, name: String, values: Vec<String>) {
        match self.attrs.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => v.extend(values),
            None => self.attrs.push((name, values)),
        }
    }
}

fn find<'a, V>(list: &'a [(String, V)], name: &str) -> Option<&'a V> {
    list.iter()
        .find(|(k, _)| k == name)
        .or_else(|| list.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
        .map(|(_, v)| v)
}

fn constructed(t: StructureTag) -> Option<Vec<StructureTag>> {
    match t.payload {
        PL::C(inner) => Some(inner),
        PL::P(_) => None,
    }
}

fn primitive(t: StructureTag) -> Option<Vec<u8>> {
    match t.payload {
        PL::P(bytes) => Some(bytes),
        PL::C(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn octets(b: &[u8]) -> StructureTag {
        StructureTag {
            class: TagClass::Universal,
            id: 4,
            payload: PL::P(b.to_vec()),
        }
    }

    fn seq(inner: Vec<StructureTag>) -> StructureTag {
        StructureTag {
            class: TagClass::Universal,
            id: 16,
            payload: PL::C(inner),
        }
    }

    fn result_entry(dn: &[u8], attrs: Vec<(&[u8], Vec<&[u8]>)>) -> ResultEntry {
        let list = attrs
            .into_iter()
            .map(|(n, vs)| seq(vec![octets(n), seq(vs.into_iter().map(octets).collect())]))
            .collect();
        ResultEntry::new(StructureTag {
            class: TagClass::Application,
            id: SEARCH_RESULT_ENTRY,
            payload: PL::C(vec![octets(dn), seq(list)]),
        })
    }

    #[test]
    fn text_and_binary_attributes() {
        let guid: &[u8] = &[0xff, 0x00, 0x41];
        let e = Entry::from_result(result_entry(
            b"CN=Jane,DC=x",
            vec![
                (b"mail", vec![b"a@x", b"b@x"]),
                (b"objectGUID", vec![guid]),
                (b"mixed", vec![b"text", guid]),
            ],
        ))
        .expect("entry");
        assert_eq!(e.dn, "CN=Jane,DC=x");
        assert_eq!(
            e.values("MAIL"),
            Some(&vec!["a@x".to_owned(), "b@x".to_owned()])
        );
        assert_eq!(e.bin_values("objectguid"), Some(&vec![guid.to_vec()]));
        // One non-UTF-8 value makes the whole attribute binary, in order.
        assert_eq!(
            e.bin_values("mixed"),
            Some(&vec![b"text".to_vec(), guid.to_vec()])
        );
        assert_eq!(e.values("mixed"), None);
        assert_eq!(e.values("absent"), None);
    }

    #[test]
    fn malformed_entries_are_errors_not_panics() {
        let mut not_entry = result_entry(b"dc=x", vec![]);
        not_entry.0.id = 5;
        assert!(Entry::from_result(not_entry).is_err());
        let bad_dn = result_entry(&[0xff], vec![]);
        assert!(Entry::from_result(bad_dn).is_err());
        let no_list = ResultEntry::new(StructureTag {
            class: TagClass::Application,
            id: SEARCH_RESULT_ENTRY,
            payload: PL::C(vec![octets(b"dc=x")]),
        });
        assert!(Entry::from_result(no_list).is_err());
        let flat_attr = ResultEntry::new(StructureTag {
            class: TagClass::Application,
            id: SEARCH_RESULT_ENTRY,
            payload: PL::C(vec![octets(b"dc=x"), seq(vec![octets(b"cn")])]),
        });
        assert!(Entry::from_result(flat_attr).is_err());
    }

    #[test]
    fn take_and_extend() {
        let mut e = Entry::from_result(result_entry(
            b"cn=g",
            vec![(b"member;range=0-1", vec![b"a", b"b"])],
        ))
        .expect("entry");
        let v = e.take("member;range=0-1").expect("ranged");
        e.extend("member".into(), v);
        e.extend("member".into(), vec!["c".into()]);
        assert_eq!(
            e.attrs,
            vec![(
                "member".to_owned(),
                vec!["a".into(), "b".into(), "c".into()]
            )]
        );
    }
}
