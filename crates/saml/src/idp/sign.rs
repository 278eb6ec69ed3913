//! Enveloped XML signatures over canonical bytes we wrote ourselves: SHA-256 of the element
//! (its canonical form without the Signature, which is what the enveloped-signature and
//! exc-c14n transforms give a verifier), then RSA-SHA256 over the canonical SignedInfo.

use super::c14n::{CanonicalWriter, Ns, DS};
use super::error::IdpError;
use super::keys::IdpSigningKey;
use crate::gate::{ENVELOPED, EXC_C14N, RSA_SHA256, SHA256};
use base64::Engine as _;
use sha2::{Digest, Sha256};

fn write_signed_info(w: &mut CanonicalWriter, id: &str, digest_b64: &str) -> Result<(), IdpError> {
    w.start(DS, "SignedInfo", &[])?;
    w.empty(DS, "CanonicalizationMethod", &[("Algorithm", EXC_C14N)])?;
    w.empty(DS, "SignatureMethod", &[("Algorithm", RSA_SHA256)])?;
    // `#` + an xs:ID needs no escaping, but the writer escapes anyway.
    let mut uri = String::with_capacity(id.len() + 1);
    uri.push('#');
    uri.push_str(id);
    w.start(DS, "Reference", &[("URI", &uri)])?;
    w.start(DS, "Transforms", &[])?;
    w.empty(DS, "Transform", &[("Algorithm", ENVELOPED)])?;
    w.empty(DS, "Transform", &[("Algorithm", EXC_C14N)])?;
    w.end();
    w.empty(DS, "DigestMethod", &[("Algorithm", SHA256)])?;
    w.leaf(DS, "DigestValue", &[], digest_b64)?;
    w.end(); // Reference
    w.end(); // SignedInfo
    Ok(())
}

/// The `ds:Signature` element for the element with ID `id`, whose canonical form without the
/// signature is `canonical` (the signature is then inserted where the schema puts it, under
/// ancestors that rendered `in_scope`).
fn enveloped_signature(
    key: &IdpSigningKey,
    id: &str,
    canonical: &[&str],
    in_scope: &[Ns],
) -> Result<String, IdpError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut h = Sha256::new();
    for part in canonical {
        h.update(part.as_bytes());
    }
    let digest_b64 = b64.encode(h.finalize());

    // SignedInfo canonicalized on its own is the apex of its output: it renders xmlns:ds.
    let mut si = CanonicalWriter::with_capacity(768);
    write_signed_info(&mut si, id, &digest_b64)?;
    let signature = key.sign_rsa_sha256(si.as_str().as_bytes())?;

    let cert = key.cert_der_b64();
    let mut w = CanonicalWriter::nested(1200 + cert.len(), in_scope);
    w.start(DS, "Signature", &[])?;
    write_signed_info(&mut w, id, &digest_b64)?;
    w.leaf(DS, "SignatureValue", &[], &b64.encode(signature))?;
    w.start(DS, "KeyInfo", &[])?;
    w.start(DS, "X509Data", &[])?;
    w.leaf(DS, "X509Certificate", &[], cert)?;
    w.end();
    w.end();
    w.end();
    Ok(w.finish())
}

/// Sign the element with ID `id` that `w` just finished writing (its canonical form is all of
/// `w`, the signature not being there yet), inserting the Signature at byte offset `at` (right
/// after the element's Issuer), under ancestors that rendered `in_scope`.
pub(crate) fn sign_in_place(
    w: &mut CanonicalWriter,
    key: &IdpSigningKey,
    id: &str,
    at: usize,
    in_scope: &[Ns],
) -> Result<(), IdpError> {
    let (head, tail) = w.as_str().split_at(at);
    let sig = enveloped_signature(key, id, &[head, tail], in_scope)?;
    w.insert(at, &sig);
    Ok(())
}
