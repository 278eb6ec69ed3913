//! The structural pre-gate: run on the raw tree before any cryptography, so that xmlsec only
//! ever sees the one shape we know how to verify (one assertion, signatures in fixed positions,
//! one Reference to the parent's ID, no transforms beyond enveloped-signature and exc-c14n).

use crate::error::GateViolation;
use crate::xml::{Element, Node, NS_ASSERTION, NS_DSIG, NS_EXC_C14N, NS_PROTOCOL};
use std::collections::HashSet;

pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
pub const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
pub const RSA_SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384";
pub const RSA_SHA512: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512";
pub const ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";
pub const ECDSA_SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384";
pub const ECDSA_SHA512: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512";
pub const RSA_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#rsa-sha1";
pub const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
pub const SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#sha384";
pub const SHA512: &str = "http://www.w3.org/2001/04/xmlenc#sha512";
pub const SHA1: &str = "http://www.w3.org/2000/09/xmldsig#sha1";

const MAX_ID_LEN: usize = 256;

/// Signature algorithms we accept; SHA-1 only when the connection opts in.
pub fn signature_allowed(alg: &str, allow_sha1: bool) -> bool {
    matches!(
        alg,
        RSA_SHA256 | RSA_SHA384 | RSA_SHA512 | ECDSA_SHA256 | ECDSA_SHA384 | ECDSA_SHA512
    ) || (allow_sha1 && alg == RSA_SHA1)
}

/// Digest algorithms we accept; SHA-1 only when the connection opts in.
pub fn digest_allowed(alg: &str, allow_sha1: bool) -> bool {
    matches!(alg, SHA256 | SHA384 | SHA512) || (allow_sha1 && alg == SHA1)
}

/// What the gate learned about a Response; every later step re-checks against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseShape {
    pub response_id: String,
    pub response_signed: bool,
    pub assertion: AssertionShape,
}

/// The single assertion of a Response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssertionShape {
    Plain { id: String, signed: bool },
    Encrypted,
}

/// A syntactically valid xs:ID (NCName), bounded in length.
fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    id.len() <= MAX_ID_LEN
        && (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn element_id(e: &Element, what: &'static str) -> Result<String, GateViolation> {
    match e.attr("ID") {
        Some(id) if valid_id(id) => Ok(id.to_owned()),
        _ => Err(GateViolation::BadId(what)),
    }
}

/// Every `ID` attribute in the tree must be unique (and well-formed), so that a Reference can
/// only ever resolve to one element.
fn check_unique_ids(root: &Element) -> Result<(), GateViolation> {
    let mut seen = HashSet::new();
    let mut err = None;
    root.walk(&mut |e, _| {
        if err.is_some() {
            return;
        }
        // libxml treats xml:id (and xmlGetProp ignores namespaces, so e:ID) as IDs too: refuse
        // them so the only resolvable IDs are the unqualified ones checked here.
        if e.attrs
            .iter()
            .any(|a| a.ns.is_some() && a.local.eq_ignore_ascii_case("id"))
        {
            err = Some(GateViolation::BadId("qualified ID attribute"));
            return;
        }
        if let Some(id) = e.attr("ID") {
            if !valid_id(id) {
                err = Some(GateViolation::BadId("element"));
            } else if !seen.insert(id.to_owned()) {
                err = Some(GateViolation::DuplicateId(id.to_owned()));
            }
        }
    });
    err.map_or(Ok(()), Err)
}

fn is_assertion_like(e: &Element) -> bool {
    // Any namespace: `<evil:Assertion>` must not survive as a decoy.
    e.local == "Assertion" || e.local == "EncryptedAssertion"
}

/// The envelope rules shared by the raw tree and the verified bytes: a `samlp:Response` with a
/// valid ID, unique IDs, exactly one direct (Encrypted)Assertion and no other assertion-like
/// element anywhere. Returns the assertion element and whether it is encrypted.
pub fn check_envelope(root: &Element) -> Result<(&Element, bool), GateViolation> {
    if !root.is(NS_PROTOCOL, "Response") {
        return Err(GateViolation::WrongRoot {
            expected: "samlp:Response",
        });
    }
    element_id(root, "Response")?;
    check_unique_ids(root)?;
    let direct: Vec<&Element> = root
        .elements()
        .filter(|e| e.is(NS_ASSERTION, "Assertion") || e.is(NS_ASSERTION, "EncryptedAssertion"))
        .collect();
    let [assertion] = direct.as_slice() else {
        return Err(GateViolation::AssertionCount(direct.len()));
    };
    let assertion = *assertion;
    only_assertion(root, assertion)?;
    Ok((assertion, assertion.local == "EncryptedAssertion"))
}

/// Gate a `samlp:Response`.
pub fn check_response(root: &Element, allow_sha1: bool) -> Result<ResponseShape, GateViolation> {
    let (assertion, _) = check_envelope(root)?;
    let response_id = element_id(root, "Response")?;

    check_signature_positions(root, &[root, assertion])?;
    let response_signed = checked_signature(root, &response_id, allow_sha1)?;

    let shape = if assertion.local == "EncryptedAssertion" {
        if single_signature(assertion)?.is_some() {
            return Err(GateViolation::MisplacedSignature);
        }
        AssertionShape::Encrypted
    } else {
        let id = element_id(assertion, "Assertion")?;
        let signed = checked_signature(assertion, &id, allow_sha1)?;
        if !signed && !response_signed {
            return Err(GateViolation::Unsigned);
        }
        AssertionShape::Plain { id, signed }
    };
    Ok(ResponseShape {
        response_id,
        response_signed,
        assertion: shape,
    })
}

/// Gate a `samlp:AuthnRequest` received by our IdP: valid unique IDs, no assertion-like element
/// anywhere, and at most one `ds:Signature`, a direct child of the root, of the exact shape
/// [`check_signature`] allows. Returns the request ID and its signature element, if any.
pub fn check_authn_request(
    root: &Element,
    allow_sha1: bool,
) -> Result<(String, Option<&Element>), GateViolation> {
    if !root.is(NS_PROTOCOL, "AuthnRequest") {
        return Err(GateViolation::WrongRoot {
            expected: "samlp:AuthnRequest",
        });
    }
    check_protocol_message(root, "AuthnRequest", allow_sha1)
}

/// The gate of a protocol message that carries no assertion (AuthnRequest, logout messages):
/// unique IDs, no assertion inside, a signature only on the root and only a well-formed one
/// under the algorithm allow-list. Returns its ID and the signature, if any.
fn check_protocol_message<'a>(
    root: &'a Element,
    what: &'static str,
    allow_sha1: bool,
) -> Result<(String, Option<&'a Element>), GateViolation> {
    let id = element_id(root, what)?;
    check_unique_ids(root)?;
    let mut assertion = false;
    root.walk(&mut |e, _| assertion |= is_assertion_like(e));
    if assertion {
        return Err(GateViolation::NestedAssertion);
    }
    check_signature_positions(root, &[root])?;
    let sig = single_signature(root)?;
    if let Some(sig) = sig {
        check_signature(sig, &id, allow_sha1)?;
    }
    Ok((id, sig))
}

/// Gate a POST-binding `samlp:LogoutRequest` / `samlp:LogoutResponse` (the caller checked the
/// root's name) like an AuthnRequest. Returns its ID and the signature, if any.
pub fn check_logout_message(
    root: &Element,
    allow_sha1: bool,
) -> Result<(String, Option<&Element>), GateViolation> {
    check_protocol_message(root, "logout message", allow_sha1)
}

/// Gate a standalone `saml:Assertion` (a decrypted one). Returns its ID and whether it is signed.
pub fn check_assertion(root: &Element, allow_sha1: bool) -> Result<(String, bool), GateViolation> {
    if !root.is(NS_ASSERTION, "Assertion") {
        return Err(GateViolation::WrongRoot {
            expected: "saml:Assertion",
        });
    }
    let id = element_id(root, "Assertion")?;
    check_unique_ids(root)?;
    only_assertion(root, root)?;
    check_signature_positions(root, &[root])?;
    let signed = checked_signature(root, &id, allow_sha1)?;
    Ok((id, signed))
}

/// Every ds:Signature must be a direct child of one of `allowed_parents`.
fn check_signature_positions(
    root: &Element,
    allowed_parents: &[&Element],
) -> Result<(), GateViolation> {
    let mut bad = false;
    root.walk(&mut |e, parent| {
        if e.is(NS_DSIG, "Signature") {
            let ok = parent.is_some_and(|p| allowed_parents.iter().any(|a| std::ptr::eq(*a, p)));
            if !ok {
                bad = true;
            }
        }
    });
    if bad {
        Err(GateViolation::MisplacedSignature)
    } else {
        Ok(())
    }
}

/// No assertion-like element anywhere in `root` except `the_one` (Extensions, Object, Advice,
/// Status detail... are where wrapping attacks hide their copies).
fn only_assertion(root: &Element, the_one: &Element) -> Result<(), GateViolation> {
    let mut extra = false;
    root.walk(&mut |e, _| {
        if is_assertion_like(e) && !std::ptr::eq(e, the_one) {
            extra = true;
        }
    });
    if extra {
        Err(GateViolation::NestedAssertion)
    } else {
        Ok(())
    }
}

/// Whether `parent` carries a (structurally valid) signature over itself.
fn checked_signature(parent: &Element, id: &str, allow_sha1: bool) -> Result<bool, GateViolation> {
    match single_signature(parent)? {
        Some(sig) => {
            check_signature(sig, id, allow_sha1)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

fn single_signature(parent: &Element) -> Result<Option<&Element>, GateViolation> {
    let mut sigs = parent.children_named(NS_DSIG, "Signature");
    let first = sigs.next();
    if sigs.next().is_some() {
        return Err(GateViolation::DuplicateSignature);
    }
    Ok(first)
}

fn structure(msg: &str) -> GateViolation {
    GateViolation::SignatureStructure(msg.to_owned())
}

/// Child elements, refusing non-whitespace text and comments between them.
fn strict_children(e: &Element) -> Result<Vec<&Element>, GateViolation> {
    let mut out = Vec::new();
    for n in &e.children {
        match n {
            Node::Element(c) => out.push(c),
            Node::Text(t) if t.trim().is_empty() => {}
            Node::Text(_) => return Err(structure("unexpected text")),
            Node::Comment => return Err(GateViolation::CommentInSignature),
        }
    }
    Ok(out)
}

/// Base64 text only: no child elements, no comments.
fn check_base64_leaf(e: &Element, what: &str) -> Result<(), GateViolation> {
    for n in &e.children {
        match n {
            Node::Text(t) => {
                if !t.chars().all(|c| {
                    c.is_ascii_alphanumeric()
                        || matches!(c, '+' | '/' | '=')
                        || c.is_ascii_whitespace()
                }) {
                    return Err(structure(&format!("{what} is not base64")));
                }
            }
            Node::Comment => return Err(GateViolation::CommentInSignature),
            Node::Element(_) => return Err(structure(&format!("{what} has child elements"))),
        }
    }
    if e.text().trim().is_empty() {
        return Err(structure(&format!("{what} is empty")));
    }
    Ok(())
}

fn algorithm(e: &Element) -> Result<&str, GateViolation> {
    e.attr("Algorithm")
        .ok_or_else(|| structure(&format!("{} without Algorithm", e.local)))
}

/// Only an optional ec:InclusiveNamespaces child is allowed under a c14n method.
fn check_c14n_children(e: &Element) -> Result<(), GateViolation> {
    let kids = strict_children(e)?;
    match kids.as_slice() {
        [] => Ok(()),
        [inc] if inc.is(NS_EXC_C14N, "InclusiveNamespaces") && inc.children.is_empty() => Ok(()),
        _ => Err(structure("unexpected content in a canonicalization method")),
    }
}

/// Check one ds:Signature: exact element positions, one Reference to `#parent_id`, allow-listed
/// algorithms and transforms.
pub fn check_signature(
    sig: &Element,
    parent_id: &str,
    allow_sha1: bool,
) -> Result<(), GateViolation> {
    let kids = strict_children(sig)?;
    let (signed_info, sig_value) = match kids.as_slice() {
        [si, sv] => (*si, *sv),
        [si, sv, ki] if ki.is(NS_DSIG, "KeyInfo") => (*si, *sv),
        _ => {
            return Err(structure(
                "Signature must be SignedInfo, SignatureValue, KeyInfo?",
            ))
        }
    };
    if !signed_info.is(NS_DSIG, "SignedInfo") || !sig_value.is(NS_DSIG, "SignatureValue") {
        return Err(structure(
            "Signature must be SignedInfo, SignatureValue, KeyInfo?",
        ));
    }
    check_base64_leaf(sig_value, "SignatureValue")?;

    let si = strict_children(signed_info)?;
    let [c14n, sig_method, rest @ ..] = si.as_slice() else {
        return Err(structure("SignedInfo is incomplete"));
    };
    if !c14n.is(NS_DSIG, "CanonicalizationMethod") || !sig_method.is(NS_DSIG, "SignatureMethod") {
        return Err(structure("SignedInfo children out of order"));
    }
    let c14n_alg = algorithm(c14n)?;
    if c14n_alg != EXC_C14N {
        return Err(GateViolation::Algorithm(c14n_alg.to_owned()));
    }
    check_c14n_children(c14n)?;
    let sig_alg = algorithm(sig_method)?;
    if !signature_allowed(sig_alg, allow_sha1) {
        return Err(GateViolation::Algorithm(sig_alg.to_owned()));
    }
    if !sig_method.children.is_empty() {
        return Err(structure(
            "SignatureMethod must be empty (no HMACOutputLength)",
        ));
    }
    let [reference] = rest else {
        return Err(structure("exactly one Reference is required"));
    };
    if !reference.is(NS_DSIG, "Reference") {
        return Err(structure("SignedInfo has an unexpected element"));
    }
    let expected = format!("#{parent_id}");
    match reference.attr("URI") {
        Some(uri) if uri == expected => {}
        other => {
            return Err(GateViolation::ReferenceUri {
                found: other.unwrap_or("").to_owned(),
                expected: parent_id.to_owned(),
            })
        }
    }

    let rk = strict_children(reference)?;
    let (transforms, digest_method, digest_value) = match rk.as_slice() {
        [t, dm, dv] => (Some(*t), *dm, *dv),
        [dm, dv] => (None, *dm, *dv),
        _ => {
            return Err(structure(
                "Reference must be Transforms?, DigestMethod, DigestValue",
            ))
        }
    };
    if let Some(t) = transforms {
        if !t.is(NS_DSIG, "Transforms") {
            return Err(structure("Reference has an unexpected element"));
        }
        let list = strict_children(t)?;
        if list.is_empty() || list.len() > 2 {
            return Err(structure("one or two Transforms are allowed"));
        }
        let mut seen = HashSet::new();
        for tr in list {
            if !tr.is(NS_DSIG, "Transform") {
                return Err(structure("Transforms has an unexpected element"));
            }
            let alg = algorithm(tr)?;
            match alg {
                ENVELOPED
                    if tr
                        .children
                        .iter()
                        .all(|n| matches!(n, Node::Text(t) if t.trim().is_empty())) => {}
                EXC_C14N => check_c14n_children(tr)?,
                other => return Err(GateViolation::Transform(other.to_owned())),
            }
            if !seen.insert(alg) {
                return Err(GateViolation::Transform(format!("duplicate {alg}")));
            }
        }
    }
    if !digest_method.is(NS_DSIG, "DigestMethod") || !digest_value.is(NS_DSIG, "DigestValue") {
        return Err(structure("Reference children out of order"));
    }
    let dalg = algorithm(digest_method)?;
    if !digest_allowed(dalg, allow_sha1) {
        return Err(GateViolation::Algorithm(dalg.to_owned()));
    }
    check_base64_leaf(digest_value, "DigestValue")?;
    Ok(())
}
