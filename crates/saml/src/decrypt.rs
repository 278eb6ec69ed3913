//! EncryptedAssertion decryption (ours, not samael's): RSA-OAEP key transport with SHA-1 or
//! SHA-256 (digest and MGF1), AES-128/256 in GCM or CBC. rsa-1_5 is refused (Bleichenbacher).
//! The plaintext is only a candidate: the caller gates it and verifies its signature.

use crate::error::DecryptError;
use crate::xml::{Element, NS_ASSERTION, NS_DSIG, NS_XENC, NS_XENC11};
use openssl::md::{Md, MdRef};
use openssl::pkey::{PKey, Private};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use openssl::symm::{Cipher, Crypter, Mode};

pub const RSA_OAEP_MGF1P: &str = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p";
pub const RSA_OAEP_11: &str = "http://www.w3.org/2009/xmlenc11#rsa-oaep";
pub const RSA_1_5: &str = "http://www.w3.org/2001/04/xmlenc#rsa-1_5";
pub const AES128_CBC: &str = "http://www.w3.org/2001/04/xmlenc#aes128-cbc";
pub const AES256_CBC: &str = "http://www.w3.org/2001/04/xmlenc#aes256-cbc";
pub const AES128_GCM: &str = "http://www.w3.org/2009/xmlenc11#aes128-gcm";
pub const AES256_GCM: &str = "http://www.w3.org/2009/xmlenc11#aes256-gcm";
pub const MGF1_SHA1: &str = "http://www.w3.org/2009/xmlenc11#mgf1sha1";
pub const MGF1_SHA256: &str = "http://www.w3.org/2009/xmlenc11#mgf1sha256";
const DIGEST_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#sha1";
const DIGEST_SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
const TYPE_ELEMENT: &str = "http://www.w3.org/2001/04/xmlenc#Element";
const MAX_ENCRYPTED_KEYS: usize = 4;

fn structure(msg: &str) -> DecryptError {
    DecryptError::Structure(msg.to_owned())
}

/// Symmetric content algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataAlg {
    Cbc(usize),
    Gcm(usize),
}

impl DataAlg {
    fn from_uri(uri: &str) -> Result<Self, DecryptError> {
        match uri {
            AES128_CBC => Ok(Self::Cbc(16)),
            AES256_CBC => Ok(Self::Cbc(32)),
            AES128_GCM => Ok(Self::Gcm(16)),
            AES256_GCM => Ok(Self::Gcm(32)),
            other => Err(DecryptError::DataAlgorithm(other.to_owned())),
        }
    }
    fn key_len(self) -> usize {
        match self {
            Self::Cbc(n) | Self::Gcm(n) => n,
        }
    }
}

/// An EncryptedKey's transport parameters and ciphertext.
struct WrappedKey {
    oaep_md: &'static MdRef,
    mgf_md: &'static MdRef,
    ciphertext: Vec<u8>,
}

fn b64(e: &Element) -> Result<Vec<u8>, DecryptError> {
    crate::xml::decode_base64_lenient(&e.text()).map_err(|_| structure("CipherValue is not base64"))
}

fn cipher_value(parent: &Element) -> Result<Vec<u8>, DecryptError> {
    let cd = parent
        .child(NS_XENC, "CipherData")
        .ok_or_else(|| structure("missing CipherData"))?;
    if cd.child(NS_XENC, "CipherReference").is_some() {
        return Err(structure("CipherReference is not supported"));
    }
    let cv = cd
        .child(NS_XENC, "CipherValue")
        .ok_or_else(|| structure("missing CipherValue"))?;
    b64(cv)
}

fn md_for_digest(uri: &str) -> Result<&'static MdRef, DecryptError> {
    match uri {
        DIGEST_SHA1 => Ok(Md::sha1()),
        DIGEST_SHA256 => Ok(Md::sha256()),
        other => Err(DecryptError::KeyTransport(format!("OAEP digest {other}"))),
    }
}

fn parse_encrypted_key(ek: &Element) -> Result<WrappedKey, DecryptError> {
    let method = ek
        .child(NS_XENC, "EncryptionMethod")
        .ok_or_else(|| structure("EncryptedKey without EncryptionMethod"))?;
    let alg = method
        .attr("Algorithm")
        .ok_or_else(|| structure("EncryptionMethod without Algorithm"))?;
    if method.child(NS_XENC, "OAEPparams").is_some() {
        return Err(DecryptError::KeyTransport(
            "OAEPparams are not supported".into(),
        ));
    }
    let oaep_md = match method.child(NS_DSIG, "DigestMethod") {
        Some(dm) => md_for_digest(dm.attr("Algorithm").unwrap_or(""))?,
        None => Md::sha1(),
    };
    let mgf_md = match alg {
        RSA_OAEP_MGF1P => Md::sha1(),
        RSA_OAEP_11 => match method
            .child(NS_XENC11, "MGF")
            .and_then(|m| m.attr("Algorithm"))
        {
            None | Some(MGF1_SHA1) => Md::sha1(),
            Some(MGF1_SHA256) => Md::sha256(),
            Some(other) => return Err(DecryptError::KeyTransport(format!("MGF {other}"))),
        },
        other => return Err(DecryptError::KeyTransport(other.to_owned())),
    };
    Ok(WrappedKey {
        oaep_md,
        mgf_md,
        ciphertext: cipher_value(ek)?,
    })
}

fn unwrap_key(w: &WrappedKey, key: &PKey<Private>) -> Option<Vec<u8>> {
    let mut ctx = PkeyCtx::new(key).ok()?;
    ctx.decrypt_init().ok()?;
    ctx.set_rsa_padding(Padding::PKCS1_OAEP).ok()?;
    ctx.set_rsa_oaep_md(w.oaep_md).ok()?;
    ctx.set_rsa_mgf1_md(w.mgf_md).ok()?;
    let mut out = Vec::new();
    ctx.decrypt_to_vec(&w.ciphertext, &mut out).ok()?;
    Some(out)
}

fn decrypt_content(alg: DataAlg, key: &[u8], data: &[u8]) -> Result<Vec<u8>, DecryptError> {
    match alg {
        DataAlg::Cbc(n) => {
            let cipher = if n == 16 {
                Cipher::aes_128_cbc()
            } else {
                Cipher::aes_256_cbc()
            };
            if data.len() < 32 || data.len() % 16 != 0 {
                return Err(DecryptError::ShortCiphertext);
            }
            let (iv, ct) = data.split_at(16);
            let mut c = Crypter::new(cipher, Mode::Decrypt, key, Some(iv))
                .map_err(|_| DecryptError::Content)?;
            c.pad(false);
            let mut out = vec![0u8; ct.len() + 16];
            let mut len = c.update(ct, &mut out).map_err(|_| DecryptError::Content)?;
            len += c
                .finalize(out.get_mut(len..).ok_or(DecryptError::Content)?)
                .map_err(|_| DecryptError::Content)?;
            out.truncate(len);
            // XML Encryption padding: the last byte is the pad length (1..=16); the other pad
            // bytes are arbitrary, so this is not PKCS#7.
            let pad = usize::from(*out.last().ok_or(DecryptError::Content)?);
            if pad == 0 || pad > 16 || pad > out.len() {
                return Err(DecryptError::Content);
            }
            out.truncate(out.len() - pad);
            Ok(out)
        }
        DataAlg::Gcm(n) => {
            let cipher = if n == 16 {
                Cipher::aes_128_gcm()
            } else {
                Cipher::aes_256_gcm()
            };
            if data.len() < 12 + 16 {
                return Err(DecryptError::ShortCiphertext);
            }
            let (iv, rest) = data.split_at(12);
            let (ct, tag) = rest.split_at(rest.len() - 16);
            openssl::symm::decrypt_aead(cipher, key, Some(iv), &[], ct, tag)
                .map_err(|_| DecryptError::Content)
        }
    }
}

/// Decrypt a `saml:EncryptedAssertion` with any of `keys`; returns the plaintext XML.
pub fn decrypt_assertion(enc: &Element, keys: &[PKey<Private>]) -> Result<String, DecryptError> {
    if keys.is_empty() {
        return Err(DecryptError::NoDecryptionKey);
    }
    if !enc.is(NS_ASSERTION, "EncryptedAssertion") {
        return Err(structure("not an EncryptedAssertion"));
    }
    let datas: Vec<&Element> = enc.children_named(NS_XENC, "EncryptedData").collect();
    let [data] = datas.as_slice() else {
        return Err(structure("exactly one EncryptedData is required"));
    };
    if let Some(t) = data.attr("Type") {
        if t != TYPE_ELEMENT {
            return Err(structure("EncryptedData Type must be Element"));
        }
    }
    let alg_uri = data
        .child(NS_XENC, "EncryptionMethod")
        .and_then(|m| m.attr("Algorithm"))
        .ok_or_else(|| structure("EncryptedData without EncryptionMethod"))?;
    let alg = DataAlg::from_uri(alg_uri)?;

    let mut eks: Vec<&Element> = Vec::new();
    if let Some(ki) = data.child(NS_DSIG, "KeyInfo") {
        eks.extend(ki.children_named(NS_XENC, "EncryptedKey"));
    }
    eks.extend(enc.children_named(NS_XENC, "EncryptedKey"));
    if eks.is_empty() {
        return Err(structure("no EncryptedKey"));
    }
    if eks.len() > MAX_ENCRYPTED_KEYS {
        return Err(structure("too many EncryptedKey elements"));
    }
    let wrapped = eks
        .into_iter()
        .map(parse_encrypted_key)
        .collect::<Result<Vec<_>, _>>()?;
    let ciphertext = cipher_value(data)?;

    let content_key = wrapped
        .iter()
        .flat_map(|w| keys.iter().map(move |k| (w, k)))
        .find_map(|(w, k)| unwrap_key(w, k).filter(|ck| ck.len() == alg.key_len()))
        .ok_or(DecryptError::KeyUnwrap)?;
    let plain = decrypt_content(alg, &content_key, &ciphertext)?;
    String::from_utf8(plain).map_err(|_| DecryptError::Content)
}
