//! A writer that emits XML directly in Exclusive XML Canonicalization 1.0 form (without
//! comments), so a digest over the bytes it wrote is the digest a verifier computes after its own
//! exc-c14n: signing then needs no parse and no canonicalization pass, only one hash and one RSA
//! operation.
//!
//! The rules it follows (W3C xml-exc-c14n, C14N 1.0 §2.3):
//! - no XML declaration; empty elements are written as a start/end pair (`<a></a>`);
//! - a namespace declaration is written on an element only when the element or one of its
//!   attributes uses the prefix ("visibly utilized") and no output ancestor already declared the
//!   same prefix with the same URI; declarations come first, ordered by prefix;
//! - attributes are ordered by (namespace URI, local name) — all of ours are unqualified;
//! - text escapes `&` `<` `>` and CR; attribute values escape `&` `<` `"` TAB LF CR; nothing
//!   else is escaped (UTF-8 as is, no Unicode normalization);
//! - characters XML 1.0 cannot carry at all (C0 controls other than TAB/LF/CR, U+FFFE, U+FFFF)
//!   are refused: they would make the document unparsable, and no escape exists for them.
//!
//! Only the namespaces this crate writes are supported; the default namespace is never used.
//! `tests/idp_c14n_props.rs` compares the output with libxml2's own exc-c14n of the same bytes.

use std::fmt;

/// A namespace prefix and URI this crate writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ns {
    pub prefix: &'static str,
    pub uri: &'static str,
}

/// `samlp:` (protocol).
pub const SAMLP: Ns = Ns {
    prefix: "samlp",
    uri: crate::xml::NS_PROTOCOL,
};
/// `saml:` (assertion).
pub const SAML: Ns = Ns {
    prefix: "saml",
    uri: crate::xml::NS_ASSERTION,
};
/// `ds:` (XML-DSig).
pub const DS: Ns = Ns {
    prefix: "ds",
    uri: crate::xml::NS_DSIG,
};
/// `xenc:` (XML Encryption).
pub const XENC: Ns = Ns {
    prefix: "xenc",
    uri: crate::xml::NS_XENC,
};
/// `xenc11:` (XML Encryption 1.1).
pub const XENC11: Ns = Ns {
    prefix: "xenc11",
    uri: crate::xml::NS_XENC11,
};
/// `md:` (SAML metadata).
pub const MD: Ns = Ns {
    prefix: "md",
    uri: crate::xml::NS_METADATA,
};

/// A value XML 1.0 cannot represent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidXmlChar {
    /// The offending character.
    pub ch: char,
}

impl fmt::Display for InvalidXmlChar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "U+{:04X} cannot appear in XML 1.0 (not even escaped); remove it from the value",
            u32::from(self.ch)
        )
    }
}

impl std::error::Error for InvalidXmlChar {}

/// Whether XML 1.0's `Char` production allows `c` (Rust strings hold no surrogates).
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Check a whole value (for callers that want to refuse input early).
pub fn check_xml_chars(s: &str) -> Result<(), InvalidXmlChar> {
    match s.chars().find(|c| !is_xml_char(*c)) {
        Some(ch) => Err(InvalidXmlChar { ch }),
        None => Ok(()),
    }
}

/// Append `s` escaped as canonical text content.
pub fn push_text(out: &mut String, s: &str) -> Result<(), InvalidXmlChar> {
    push_escaped(out, s, false)
}

/// Append `s` escaped as a canonical (double-quoted) attribute value.
pub fn push_attr_value(out: &mut String, s: &str) -> Result<(), InvalidXmlChar> {
    push_escaped(out, s, true)
}

/// C14N 1.0 §2.3: text escapes `&` `<` `>` CR; attribute values `&` `<` `"` TAB LF CR.
fn push_escaped(out: &mut String, s: &str, attr: bool) -> Result<(), InvalidXmlChar> {
    let quote = if attr { b'"' } else { b'>' };
    // Fast path: nothing to escape or refuse (names, ids, URLs, timestamps, base64). Controls
    // and 0xEF (the lead byte of U+FFFE/U+FFFF) take the slow path.
    if s.bytes()
        .all(|b| b >= 0x20 && b != b'&' && b != b'<' && b != quote && b != 0xEF)
    {
        out.push_str(s);
        return Ok(());
    }
    for c in s.chars() {
        match (c, attr) {
            ('&', _) => out.push_str("&amp;"),
            ('<', _) => out.push_str("&lt;"),
            ('>', false) => out.push_str("&gt;"),
            ('"', true) => out.push_str("&quot;"),
            ('\t', true) => out.push_str("&#x9;"),
            ('\n', true) => out.push_str("&#xA;"),
            ('\r', _) => out.push_str("&#xD;"),
            (c, _) if is_xml_char(c) => out.push(c),
            (ch, _) => return Err(InvalidXmlChar { ch }),
        }
    }
    Ok(())
}

/// One open element: its qualified name and how many namespace declarations it rendered.
struct Open {
    ns: Ns,
    local: &'static str,
    rendered: usize,
}

/// Emits canonical XML into a `String`. Element and attribute names are `'static` (ours);
/// values are escaped. Misuse (unbalanced `end`) is a bug and ends in a malformed document,
/// which the tests' verifiers catch; it cannot be caused by input values.
pub struct CanonicalWriter {
    out: String,
    open: Vec<Open>,
    /// Namespace declarations rendered by the open elements, innermost last.
    in_scope: Vec<Ns>,
}

impl CanonicalWriter {
    /// A writer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            out: String::with_capacity(capacity),
            open: Vec::with_capacity(8),
            in_scope: Vec::with_capacity(8),
        }
    }

    /// A writer for an element that will be embedded under open ancestors that already
    /// rendered `in_scope` (used when a fragment is written separately, e.g. a Signature).
    pub fn nested(capacity: usize, in_scope: &[Ns]) -> Self {
        let mut w = Self::with_capacity(capacity);
        w.in_scope.extend_from_slice(in_scope);
        w
    }

    fn declared(&self, ns: Ns) -> bool {
        self.in_scope
            .iter()
            .rev()
            .find(|d| d.prefix == ns.prefix)
            .is_some_and(|d| d.uri == ns.uri)
    }

    /// Open `<ns:local ...>` with unqualified attributes (any order; written sorted).
    pub fn start(
        &mut self,
        ns: Ns,
        local: &'static str,
        attrs: &[(&'static str, &str)],
    ) -> Result<(), InvalidXmlChar> {
        self.out.push('<');
        self.out.push_str(ns.prefix);
        self.out.push(':');
        self.out.push_str(local);
        let mut rendered = 0;
        // Only the element's own prefix is visibly utilized: all our attributes are unqualified.
        if !self.declared(ns) {
            self.out.push_str(" xmlns:");
            self.out.push_str(ns.prefix);
            self.out.push_str("=\"");
            self.out.push_str(ns.uri);
            self.out.push('"');
            self.in_scope.push(ns);
            rendered = 1;
        }
        if attrs.windows(2).all(|w| w[0].0 < w[1].0) {
            for (name, value) in attrs {
                self.attr(name, value)?;
            }
        } else {
            let mut sorted: Vec<&(&'static str, &str)> = attrs.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            for (name, value) in sorted {
                self.attr(name, value)?;
            }
        }
        self.out.push('>');
        self.open.push(Open {
            ns,
            local,
            rendered,
        });
        Ok(())
    }

    fn attr(&mut self, name: &str, value: &str) -> Result<(), InvalidXmlChar> {
        self.out.push(' ');
        self.out.push_str(name);
        self.out.push_str("=\"");
        push_attr_value(&mut self.out, value)?;
        self.out.push('"');
        Ok(())
    }

    /// Escaped text content.
    pub fn text(&mut self, s: &str) -> Result<(), InvalidXmlChar> {
        push_text(&mut self.out, s)
    }

    /// Close the innermost open element.
    pub fn end(&mut self) {
        if let Some(o) = self.open.pop() {
            self.out.push_str("</");
            self.out.push_str(o.ns.prefix);
            self.out.push(':');
            self.out.push_str(o.local);
            self.out.push('>');
            let keep = self.in_scope.len() - o.rendered;
            self.in_scope.truncate(keep);
        }
    }

    /// `<ns:local attrs>text</ns:local>`.
    pub fn leaf(
        &mut self,
        ns: Ns,
        local: &'static str,
        attrs: &[(&'static str, &str)],
        text: &str,
    ) -> Result<(), InvalidXmlChar> {
        self.start(ns, local, attrs)?;
        self.text(text)?;
        self.end();
        Ok(())
    }

    /// `<ns:local attrs></ns:local>`.
    pub fn empty(
        &mut self,
        ns: Ns,
        local: &'static str,
        attrs: &[(&'static str, &str)],
    ) -> Result<(), InvalidXmlChar> {
        self.start(ns, local, attrs)?;
        self.end();
        Ok(())
    }

    /// Append bytes that are already canonical in this position (a fragment written by another
    /// writer created with [`CanonicalWriter::nested`] for the same in-scope namespaces).
    pub fn raw(&mut self, canonical: &str) {
        self.out.push_str(canonical);
    }

    /// The namespace declarations rendered by the open elements.
    pub fn in_scope(&self) -> &[Ns] {
        &self.in_scope
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// The output so far.
    pub fn as_str(&self) -> &str {
        &self.out
    }

    /// Insert a canonical fragment at byte offset `at` (a signature after the Issuer).
    pub fn insert(&mut self, at: usize, fragment: &str) {
        self.out.insert_str(at, fragment);
    }

    /// The finished document.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_only_where_visibly_used_and_not_inherited() {
        let mut w = CanonicalWriter::with_capacity(256);
        w.start(SAMLP, "Response", &[("Version", "2.0"), ("ID", "_1")])
            .unwrap();
        w.leaf(SAML, "Issuer", &[], "idp").unwrap();
        w.start(SAML, "Assertion", &[("ID", "_2")]).unwrap();
        w.leaf(SAML, "Issuer", &[], "idp").unwrap();
        w.end();
        w.empty(SAMLP, "Status", &[]).unwrap();
        w.end();
        assert_eq!(
            w.finish(),
            format!(
                "<samlp:Response xmlns:samlp=\"{}\" ID=\"_1\" Version=\"2.0\"><saml:Issuer xmlns:saml=\"{}\">idp</saml:Issuer><saml:Assertion xmlns:saml=\"{}\" ID=\"_2\"><saml:Issuer>idp</saml:Issuer></saml:Assertion><samlp:Status></samlp:Status></samlp:Response>",
                SAMLP.uri, SAML.uri, SAML.uri
            )
        );
    }

    #[test]
    fn escaping_follows_c14n() {
        let mut t = String::new();
        push_text(&mut t, "a&b<c>d\"e'f\r\n\tg é").unwrap();
        assert_eq!(t, "a&amp;b&lt;c&gt;d\"e'f&#xD;\n\tg é");
        let mut a = String::new();
        push_attr_value(&mut a, "a&b<c>d\"e'f\r\n\tg é").unwrap();
        assert_eq!(a, "a&amp;b&lt;c>d&quot;e'f&#xD;&#xA;&#x9;g é");
    }

    #[test]
    fn characters_xml_cannot_carry_are_refused() {
        for bad in [
            "\u{0}",
            "a\u{1}b",
            "\u{B}",
            "\u{1F}",
            "x\u{FFFE}",
            "\u{FFFF}",
        ] {
            assert!(push_text(&mut String::new(), bad).is_err(), "{bad:?}");
            assert!(push_attr_value(&mut String::new(), bad).is_err(), "{bad:?}");
            assert!(check_xml_chars(bad).is_err());
        }
        // The fast path's 0xEF guard routes U+FFFx through the slow path; U+FFFD is fine.
        let mut ok = String::new();
        push_text(&mut ok, "\u{FFFD}\u{EFFF}\u{10000}").unwrap();
        assert_eq!(ok, "\u{FFFD}\u{EFFF}\u{10000}");
    }
}
