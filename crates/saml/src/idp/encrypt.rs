//! Assertion encryption for an SP's certificate: a fresh AES content key (CBC or GCM) wrapped
//! with RSA-OAEP. The crypto is shared by the production response builder (which writes the
//! `EncryptedAssertion` canonically, so a signed Response can carry it) and the test signer.

use super::c14n::{CanonicalWriter, DS, SAML, XENC, XENC11};
use super::error::IdpError;
use crate::decrypt::{
    AES128_CBC, AES128_GCM, AES256_CBC, AES256_GCM, MGF1_SHA256, RSA_OAEP_11, RSA_OAEP_MGF1P,
};
use crate::gate::{SHA1, SHA256};
use base64::Engine as _;
use openssl::md::Md;
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use openssl::symm::{Cipher, Crypter, Mode};
use openssl::x509::X509;

/// Symmetric algorithm for assertion encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataEnc {
    Aes128Cbc,
    Aes256Cbc,
    Aes128Gcm,
    Aes256Gcm,
}

impl DataEnc {
    /// The XML Encryption algorithm URI.
    pub fn uri(self) -> &'static str {
        match self {
            DataEnc::Aes128Cbc => AES128_CBC,
            DataEnc::Aes256Cbc => AES256_CBC,
            DataEnc::Aes128Gcm => AES128_GCM,
            DataEnc::Aes256Gcm => AES256_GCM,
        }
    }

    fn key_len(self) -> usize {
        match self {
            DataEnc::Aes128Cbc | DataEnc::Aes128Gcm => 16,
            DataEnc::Aes256Cbc | DataEnc::Aes256Gcm => 32,
        }
    }
}

/// Key transport for assertion encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEnc {
    /// rsa-oaep-mgf1p with SHA-1 (the common default, understood by every SP).
    OaepSha1,
    /// xmlenc11#rsa-oaep with SHA-256 digest and MGF1-SHA-256.
    OaepSha256,
    /// rsa-1_5: only for negative tests (the verifier must refuse it).
    #[cfg(feature = "testkit")]
    Rsa15,
}

/// The ciphertexts of one encryption.
pub(crate) struct Encrypted {
    pub data: DataEnc,
    pub key: KeyEnc,
    /// The content key wrapped for the recipient.
    pub wrapped_key: Vec<u8>,
    /// IV ‖ ciphertext (CBC), or IV ‖ ciphertext ‖ tag (GCM).
    pub payload: Vec<u8>,
}

/// Encrypt `plain` for `recipient`.
pub(crate) fn encrypt(
    plain: &[u8],
    recipient: &X509,
    data: DataEnc,
    key: KeyEnc,
) -> Result<Encrypted, IdpError> {
    let key_len = data.key_len();
    let mut ck = vec![0u8; key_len];
    openssl::rand::rand_bytes(&mut ck).map_err(IdpError::build)?;
    let payload = match data {
        DataEnc::Aes128Cbc | DataEnc::Aes256Cbc => {
            let cipher = if key_len == 16 {
                Cipher::aes_128_cbc()
            } else {
                Cipher::aes_256_cbc()
            };
            let mut iv = [0u8; 16];
            openssl::rand::rand_bytes(&mut iv).map_err(IdpError::build)?;
            // XML Encryption padding: arbitrary bytes, the last one the pad length (1..=16).
            let pad = 16 - plain.len() % 16;
            let mut padded = plain.to_vec();
            let mut filler = vec![0u8; pad];
            openssl::rand::rand_bytes(&mut filler).map_err(IdpError::build)?;
            if let Some(last) = filler.last_mut() {
                *last = u8::try_from(pad).map_err(IdpError::build)?;
            }
            padded.extend_from_slice(&filler);
            let mut c =
                Crypter::new(cipher, Mode::Encrypt, &ck, Some(&iv)).map_err(IdpError::build)?;
            c.pad(false);
            let mut out = vec![0u8; padded.len() + 16];
            let mut n = c.update(&padded, &mut out).map_err(IdpError::build)?;
            n += c
                .finalize(
                    out.get_mut(n..)
                        .ok_or_else(|| IdpError::build("cipher overrun"))?,
                )
                .map_err(IdpError::build)?;
            out.truncate(n);
            [iv.to_vec(), out].concat()
        }
        DataEnc::Aes128Gcm | DataEnc::Aes256Gcm => {
            let cipher = if key_len == 16 {
                Cipher::aes_128_gcm()
            } else {
                Cipher::aes_256_gcm()
            };
            let mut iv = [0u8; 12];
            openssl::rand::rand_bytes(&mut iv).map_err(IdpError::build)?;
            let mut tag = [0u8; 16];
            let ct = openssl::symm::encrypt_aead(cipher, &ck, Some(&iv), &[], plain, &mut tag)
                .map_err(IdpError::build)?;
            [iv.to_vec(), ct, tag.to_vec()].concat()
        }
    };
    let pubkey = recipient.public_key().map_err(IdpError::build)?;
    let mut ctx = PkeyCtx::new(&pubkey).map_err(IdpError::build)?;
    ctx.encrypt_init().map_err(IdpError::build)?;
    match key {
        KeyEnc::OaepSha1 => {
            ctx.set_rsa_padding(Padding::PKCS1_OAEP)
                .map_err(IdpError::build)?;
            ctx.set_rsa_oaep_md(Md::sha1()).map_err(IdpError::build)?;
        }
        KeyEnc::OaepSha256 => {
            ctx.set_rsa_padding(Padding::PKCS1_OAEP)
                .map_err(IdpError::build)?;
            ctx.set_rsa_oaep_md(Md::sha256()).map_err(IdpError::build)?;
            ctx.set_rsa_mgf1_md(Md::sha256()).map_err(IdpError::build)?;
        }
        #[cfg(feature = "testkit")]
        KeyEnc::Rsa15 => {
            ctx.set_rsa_padding(Padding::PKCS1)
                .map_err(IdpError::build)?;
        }
    }
    let mut wrapped_key = Vec::new();
    ctx.encrypt_to_vec(&ck, &mut wrapped_key)
        .map_err(IdpError::build)?;
    Ok(Encrypted {
        data,
        key,
        wrapped_key,
        payload,
    })
}

/// Write `<saml:EncryptedAssertion>` canonically (for a Response that may be signed).
pub(crate) fn write_encrypted_assertion(
    w: &mut CanonicalWriter,
    e: &Encrypted,
) -> Result<(), IdpError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    w.start(SAML, "EncryptedAssertion", &[])?;
    w.start(
        XENC,
        "EncryptedData",
        &[("Type", "http://www.w3.org/2001/04/xmlenc#Element")],
    )?;
    w.empty(XENC, "EncryptionMethod", &[("Algorithm", e.data.uri())])?;
    w.start(DS, "KeyInfo", &[])?;
    w.start(XENC, "EncryptedKey", &[])?;
    match e.key {
        KeyEnc::OaepSha1 => {
            w.start(XENC, "EncryptionMethod", &[("Algorithm", RSA_OAEP_MGF1P)])?;
            w.empty(DS, "DigestMethod", &[("Algorithm", SHA1)])?;
            w.end();
        }
        KeyEnc::OaepSha256 => {
            w.start(XENC, "EncryptionMethod", &[("Algorithm", RSA_OAEP_11)])?;
            w.empty(DS, "DigestMethod", &[("Algorithm", SHA256)])?;
            w.empty(XENC11, "MGF", &[("Algorithm", MGF1_SHA256)])?;
            w.end();
        }
        #[cfg(feature = "testkit")]
        KeyEnc::Rsa15 => {
            w.empty(
                XENC,
                "EncryptionMethod",
                &[("Algorithm", crate::decrypt::RSA_1_5)],
            )?;
        }
    }
    w.start(XENC, "CipherData", &[])?;
    w.leaf(XENC, "CipherValue", &[], &b64.encode(&e.wrapped_key))?;
    w.end();
    w.end(); // EncryptedKey
    w.end(); // KeyInfo
    w.start(XENC, "CipherData", &[])?;
    w.leaf(XENC, "CipherValue", &[], &b64.encode(&e.payload))?;
    w.end();
    w.end(); // EncryptedData
    w.end(); // EncryptedAssertion
    Ok(())
}
