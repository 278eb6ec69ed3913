//! A small, strict, namespace-aware XML tree built on quick-xml.
//!
//! This is the first layer of the pre-gate and the only parser whose output we ever read data
//! from. It refuses DOCTYPE, processing instructions and non-predefined entities outright (no DTD
//! processing means no XXE and no billion laughs), and it bounds depth, element count, attribute
//! count and namespace declarations so hostile input costs little.

use crate::error::GateViolation;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{NamespaceError, PrefixDeclaration, ResolveResult};
use quick_xml::reader::NsReader;
use quick_xml::XmlVersion;

/// SAML protocol namespace.
pub const NS_PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
/// SAML assertion namespace.
pub const NS_ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
/// XML-DSig namespace.
pub const NS_DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
/// XML-Enc namespace.
pub const NS_XENC: &str = "http://www.w3.org/2001/04/xmlenc#";
/// XML-Enc 1.1 namespace.
pub const NS_XENC11: &str = "http://www.w3.org/2009/xmlenc11#";
/// Exclusive c14n namespace (InclusiveNamespaces).
pub const NS_EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
/// SAML metadata namespace.
pub const NS_METADATA: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
/// XML Schema instance namespace.
pub const NS_XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// Resource caps applied while building a tree.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_depth: usize,
    pub max_elements: usize,
    pub max_attributes: usize,
    pub max_namespace_decls: usize,
}

impl Limits {
    /// Caps for a SAML protocol message: generous for real IdPs (a response with a few hundred
    /// group values), small enough that hostile input is cheap to reject.
    pub const MESSAGE: Limits = Limits {
        max_bytes: 512 * 1024,
        max_depth: 24,
        max_elements: 8_000,
        max_attributes: 32,
        max_namespace_decls: 128,
    };
    /// Caps for metadata documents, which legitimately carry more elements.
    pub const METADATA: Limits = Limits {
        max_bytes: 2 * 1024 * 1024,
        max_depth: 32,
        max_elements: 50_000,
        max_attributes: 64,
        max_namespace_decls: 512,
    };
}

/// An attribute (namespace declarations are not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ns: Option<String>,
    pub local: String,
    pub value: String,
}

/// A node of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
    /// A comment; kept only so that the gate can refuse comments in signature data.
    Comment,
}

/// An element with its resolved namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub ns: Option<String>,
    pub local: String,
    pub attrs: Vec<Attr>,
    /// Namespace declarations on this element: (prefix, "" for the default; URI).
    pub ns_decls: Vec<(String, String)>,
    pub children: Vec<Node>,
}

impl Element {
    /// True when this element has the given namespace and local name.
    pub fn is(&self, ns: &str, local: &str) -> bool {
        self.local == local && self.ns.as_deref() == Some(ns)
    }

    /// An unqualified attribute's value.
    pub fn attr(&self, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.is_none() && a.local == local)
            .map(|a| a.value.as_str())
    }

    /// A namespace-qualified attribute's value.
    pub fn attr_ns(&self, ns: &str, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.as_deref() == Some(ns) && a.local == local)
            .map(|a| a.value.as_str())
    }

    /// Child elements in document order.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            _ => None,
        })
    }

    /// Child elements with the given name.
    pub fn children_named<'a>(
        &'a self,
        ns: &'a str,
        local: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.elements().filter(move |e| e.is(ns, local))
    }

    /// The first child element with the given name.
    pub fn child(&self, ns: &str, local: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(ns, local))
    }

    /// Concatenated text of the whole subtree (comments never split a value).
    pub fn text(&self) -> String {
        let mut out = String::new();
        collect_text(self, &mut out);
        out
    }

    /// True when a comment appears anywhere in this subtree.
    pub fn has_comment(&self) -> bool {
        self.children.iter().any(|n| match n {
            Node::Comment => true,
            Node::Element(e) => e.has_comment(),
            Node::Text(_) => false,
        })
    }

    /// Visit every element of the subtree (self included) with its depth-first parent chain.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Element, Option<&'a Element>)) {
        fn go<'a>(
            e: &'a Element,
            parent: Option<&'a Element>,
            f: &mut dyn FnMut(&'a Element, Option<&'a Element>),
        ) {
            f(e, parent);
            for c in e.elements() {
                go(c, Some(e), f);
            }
        }
        go(self, None, f);
    }
}

fn collect_text(e: &Element, out: &mut String) {
    for n in &e.children {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Element(c) => collect_text(c, out),
            Node::Comment => {}
        }
    }
}

fn malformed(e: impl std::fmt::Display) -> GateViolation {
    GateViolation::Malformed(e.to_string())
}

fn resolved_ns(r: ResolveResult<'_>) -> Result<Option<String>, GateViolation> {
    match r {
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Bound(ns) => Ok(Some(ns.into_inner().to_owned())),
        ResolveResult::Unknown(p) => Err(GateViolation::UnboundPrefix(p)),
    }
}

fn predefined_entity(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => None,
    }
}

fn push_text(stack: &mut [Element], s: &str) {
    if let Some(top) = stack.last_mut() {
        if let Some(Node::Text(t)) = top.children.last_mut() {
            t.push_str(s);
        } else {
            top.children.push(Node::Text(s.to_owned()));
        }
    }
}

/// Parse `xml` into a tree, enforcing `limits` and refusing every DTD feature.
pub fn parse(xml: &str, limits: &Limits) -> Result<Element, GateViolation> {
    if xml.len() > limits.max_bytes {
        return Err(GateViolation::TooLarge {
            limit: limits.max_bytes,
        });
    }
    let mut reader = NsReader::from_str(xml);
    reader.config_mut().check_end_names = true;
    reader.config_mut().check_comments = true;
    reader
        .resolver_mut()
        .set_max_namespace_bindings(limits.max_namespace_decls);

    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut elements = 0usize;
    let mut ns_decls = 0usize;
    let mut first_event = true;

    loop {
        let (ns, event) = reader.read_resolved_event().map_err(|e| match e {
            quick_xml::Error::Namespace(NamespaceError::TooManyBindings(n)) => {
                GateViolation::TooManyNamespaces(n)
            }
            other => malformed(other),
        })?;
        let was_first = std::mem::replace(&mut first_event, false);
        match event {
            Event::Decl(d) => {
                if !was_first {
                    return Err(malformed("XML declaration not at the start"));
                }
                if let Some(enc) = d.encoding() {
                    let enc = enc.map_err(malformed)?;
                    if !enc.eq_ignore_ascii_case("utf-8") {
                        return Err(malformed("encoding must be UTF-8"));
                    }
                }
            }
            Event::DocType(_) => return Err(GateViolation::Doctype),
            Event::PI(_) => return Err(GateViolation::ProcessingInstruction),
            Event::GeneralRef(r) => {
                if stack.is_empty() {
                    return Err(GateViolation::ContentOutsideRoot);
                }
                let c = if r.is_char_ref() {
                    r.resolve_char_ref().map_err(malformed)?
                } else {
                    predefined_entity(&r.xml10_content())
                };
                let Some(c) = c else {
                    return Err(GateViolation::Entity(r.xml10_content().into_owned()));
                };
                push_text(&mut stack, c.encode_utf8(&mut [0u8; 4]));
            }
            Event::Start(ref s) | Event::Empty(ref s) => {
                if root.is_some() {
                    return Err(GateViolation::ContentOutsideRoot);
                }
                elements += 1;
                if elements > limits.max_elements {
                    return Err(GateViolation::TooManyElements(limits.max_elements));
                }
                if stack.len() + 1 > limits.max_depth {
                    return Err(GateViolation::TooDeep(limits.max_depth));
                }
                let el_ns = resolved_ns(ns)?;
                let el = build_element(&reader, s, el_ns, limits, &mut ns_decls)?;
                if matches!(event, Event::Start(_)) {
                    stack.push(el);
                } else if let Some(parent) = stack.last_mut() {
                    parent.children.push(Node::Element(el));
                } else {
                    root = Some(el);
                }
            }
            Event::End(_) => {
                let Some(done) = stack.pop() else {
                    return Err(malformed("unbalanced end tag"));
                };
                if let Some(parent) = stack.last_mut() {
                    parent.children.push(Node::Element(done));
                } else {
                    root = Some(done);
                }
            }
            Event::Text(t) => {
                let content = t.xml10_content();
                if stack.is_empty() {
                    if !content.trim().is_empty() {
                        return Err(GateViolation::ContentOutsideRoot);
                    }
                } else {
                    push_text(&mut stack, &content);
                }
            }
            Event::CData(c) => {
                if stack.is_empty() {
                    return Err(GateViolation::ContentOutsideRoot);
                }
                let raw = c.into_inner();
                push_text(&mut stack, &raw);
            }
            Event::Comment(_) => {
                if let Some(top) = stack.last_mut() {
                    top.children.push(Node::Comment);
                }
            }
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(malformed("unexpected end of document"));
    }
    root.ok_or_else(|| malformed("no root element"))
}

fn build_element(
    reader: &NsReader<&[u8]>,
    s: &BytesStart<'_>,
    ns: Option<String>,
    limits: &Limits,
    ns_decls: &mut usize,
) -> Result<Element, GateViolation> {
    let local = s.local_name().into_inner().to_owned();
    let mut attrs = Vec::new();
    let mut decls = Vec::new();
    let mut count = 0usize;
    for a in s.attributes().with_checks(true) {
        let a = a.map_err(malformed)?;
        count += 1;
        if count > limits.max_attributes {
            return Err(GateViolation::TooManyAttributes(limits.max_attributes));
        }
        if let Some(binding) = a.key.as_namespace_binding() {
            *ns_decls += 1;
            if *ns_decls > limits.max_namespace_decls {
                return Err(GateViolation::TooManyNamespaces(limits.max_namespace_decls));
            }
            // quick-xml binds the raw value while libxml would expand references: refuse any
            // `&` here so both parsers see the same namespace.
            if a.value.contains('&') || a.value.contains('<') {
                return Err(malformed("reference in a namespace declaration"));
            }
            let prefix = match binding {
                PrefixDeclaration::Default => String::new(),
                PrefixDeclaration::Named(p) => p.to_owned(),
            };
            decls.push((prefix, a.value.into_owned()));
            continue;
        }
        if a.value.contains('<') {
            // Not well-formed XML; libxml would "recover" it differently.
            return Err(malformed("'<' in an attribute value"));
        }
        let (rns, alocal) = reader.resolver().resolve_attribute(a.key);
        let ans = resolved_ns(rns)?;
        let value =
            a.normalized_value(XmlVersion::Implicit1_0)
                .map_err(|e| match e {
                    quick_xml::Error::Escape(
                        quick_xml::escape::EscapeError::UnrecognizedEntity(_, name),
                    ) => GateViolation::Entity(name),
                    other => malformed(other),
                })?
                .into_owned();
        attrs.push(Attr {
            ns: ans,
            local: alocal.into_inner().to_owned(),
            value,
        });
    }
    Ok(Element {
        ns,
        local,
        attrs,
        ns_decls: decls,
        children: Vec::new(),
    })
}

/// The namespace bindings in scope at `target` (a descendant of `root`, or `root` itself),
/// innermost last; `None` when `target` is not in the tree.
pub fn namespaces_in_scope(root: &Element, target: &Element) -> Option<Vec<(String, String)>> {
    let mut scope = root.ns_decls.clone();
    if std::ptr::eq(root, target) {
        return Some(scope);
    }
    root.elements()
        .find_map(|c| namespaces_in_scope(c, target))
        .map(|inner| {
            scope.extend(inner);
            scope
        })
}

/// XML Encryption parses decrypted content in the context of the EncryptedData, so it may use
/// prefixes declared on ancestors. Re-declare the `inherited` bindings (last one wins) that the
/// fragment's root start tag does not declare itself. exc-c14n output depends only on the
/// bindings of visibly used prefixes, so a signature over the fragment is unaffected.
pub fn declare_inherited_namespaces(fragment: &str, inherited: &[(String, String)]) -> String {
    let Some(start) = fragment
        .char_indices()
        .find(|&(i, c)| {
            c == '<'
                && fragment[i + 1..]
                    .chars()
                    .next()
                    .is_some_and(|n| n != '?' && n != '!')
        })
        .map(|(i, _)| i)
    else {
        return fragment.to_owned();
    };
    let rest = &fragment[start..];
    let tag_end = rest.find('>').unwrap_or(rest.len());
    let start_tag = &rest[..tag_end];
    let name_end = start_tag
        .find(|c: char| c.is_ascii_whitespace() || c == '/')
        .unwrap_or(start_tag.len());
    let mut effective: Vec<(&str, &str)> = Vec::new();
    for (p, uri) in inherited {
        effective.retain(|(q, _)| q != p);
        effective.push((p, uri));
    }
    let mut extra = String::new();
    for (prefix, uri) in effective {
        let attr = if prefix.is_empty() {
            "xmlns".to_owned()
        } else {
            format!("xmlns:{prefix}")
        };
        let declared = start_tag
            .split(|c: char| c.is_ascii_whitespace())
            .any(|tok| tok.split('=').next() == Some(attr.as_str()));
        if !declared {
            extra.push_str(&format!(" {attr}=\"{}\"", escape(uri)));
        }
    }
    format!(
        "{}{}{}{}",
        &fragment[..start],
        &rest[..name_end],
        extra,
        &rest[name_end..]
    )
}

/// Decode base64 that may be wrapped over lines (IdPs and bindings both do that).
/// Browsers post it unwrapped, so the common case decodes in place without a copy.
pub fn decode_base64_lenient(s: &str) -> Result<Vec<u8>, GateViolation> {
    use base64::Engine as _;
    let engine = &base64::engine::general_purpose::STANDARD;
    let decoded = if s.bytes().any(|b| b.is_ascii_whitespace()) {
        let mut compact = s.as_bytes().to_vec();
        compact.retain(|b| !b.is_ascii_whitespace());
        engine.decode(&compact)
    } else {
        engine.decode(s)
    };
    decoded.map_err(|_| GateViolation::Base64)
}

/// Escape text for element content or a double-quoted attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            '\n' => out.push_str("&#10;"),
            '\t' => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_lenient_decodes_wrapped_and_unwrapped_and_rejects_garbage() {
        assert_eq!(
            decode_base64_lenient("aGVsbG8=").ok(),
            Some(b"hello".to_vec())
        );
        assert_eq!(
            decode_base64_lenient("aGVs\r\n bG8=\n").ok(),
            Some(b"hello".to_vec())
        );
        assert!(decode_base64_lenient("aGVs*bG8=").is_err());
        assert!(decode_base64_lenient("aGVs bG8*").is_err());
    }

    #[test]
    fn comments_do_not_split_text() {
        let e = parse("<a>x<!-- c -->y&amp;z</a>", &Limits::MESSAGE).unwrap();
        assert_eq!(e.text(), "xy&z");
        assert!(e.has_comment());
    }

    #[test]
    fn refuses_dtd_features() {
        let l = Limits::MESSAGE;
        assert_eq!(
            parse("<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>", &l),
            Err(GateViolation::Doctype)
        );
        assert_eq!(
            parse("<a><?xml-stylesheet href='x'?></a>", &l),
            Err(GateViolation::ProcessingInstruction)
        );
        assert!(matches!(
            parse("<a>&x;</a>", &l),
            Err(GateViolation::Entity(_))
        ));
        assert!(matches!(
            parse("<a b='&x;'/>", &l),
            Err(GateViolation::Entity(_)) | Err(GateViolation::Malformed(_))
        ));
        assert_eq!(
            parse("<a/>trailing", &l),
            Err(GateViolation::ContentOutsideRoot)
        );
        assert_eq!(
            parse("<a/><b/>", &l),
            Err(GateViolation::ContentOutsideRoot)
        );
        assert!(matches!(
            parse("<p:a/>", &l),
            Err(GateViolation::UnboundPrefix(_))
        ));
    }

    #[test]
    fn limits_hold_at_their_boundary() {
        let l = Limits {
            max_depth: 3,
            ..Limits::MESSAGE
        };
        assert!(parse("<a><b><c/></b></a>", &l).is_ok());
        assert_eq!(
            parse("<a><b><c><d/></c></b></a>", &l),
            Err(GateViolation::TooDeep(3))
        );
        let l = Limits {
            max_attributes: 2,
            ..Limits::MESSAGE
        };
        assert!(parse("<a x='1' y='2'/>", &l).is_ok());
        assert_eq!(
            parse("<a x='1' y='2' z='3'/>", &l),
            Err(GateViolation::TooManyAttributes(2))
        );
    }

    #[test]
    fn namespace_declarations_are_capped() {
        let l = Limits {
            max_namespace_decls: 3,
            ..Limits::MESSAGE
        };
        assert!(parse("<a xmlns:a='urn:1' xmlns:b='urn:2' xmlns:c='urn:3'/>", &l).is_ok());
        assert!(matches!(
            parse(
                "<a xmlns:a='urn:1' xmlns:b='urn:2'><b xmlns:c='urn:3' xmlns:d='urn:4'/></a>",
                &l
            ),
            Err(GateViolation::TooManyNamespaces(_))
        ));
    }

    #[test]
    fn inherited_namespaces_are_declared_once() {
        let inherited = vec![
            ("saml".to_owned(), "urn:old".to_owned()),
            ("saml".to_owned(), NS_ASSERTION.to_owned()),
            ("x".to_owned(), "urn:x".to_owned()),
        ];
        let frag = "<saml:Assertion xmlns:x=\"urn:mine\" ID=\"a\"><saml:Issuer>i</saml:Issuer></saml:Assertion>";
        let out = declare_inherited_namespaces(frag, &inherited);
        let e = parse(&out, &Limits::MESSAGE).unwrap();
        assert!(e.is(NS_ASSERTION, "Assertion"));
        assert_eq!(e.ns_decls.len(), 2, "{out}");
        assert!(e
            .ns_decls
            .contains(&("x".to_owned(), "urn:mine".to_owned())));
        // Already self-contained: unchanged.
        let own = format!("<saml:Assertion xmlns:saml=\"{NS_ASSERTION}\"/>");
        assert_eq!(declare_inherited_namespaces(&own, &inherited[1..2]), own);
    }

    #[test]
    fn namespaces_resolve() {
        let e = parse(
            "<p:a xmlns:p='urn:x' xmlns:q='urn:y' q:at='v'><b xmlns='urn:z'/></p:a>",
            &Limits::MESSAGE,
        )
        .unwrap();
        assert!(e.is("urn:x", "a"));
        assert_eq!(e.attr_ns("urn:y", "at"), Some("v"));
        assert_eq!(e.attr("at"), None);
        assert!(e.child("urn:z", "b").is_some());
    }
}
