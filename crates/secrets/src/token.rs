//! Bearer secrets: generating them and the digest they are stored as. API keys, SCIM tokens,
//! SSO codes, access tokens and login sessions are kept only as [`sha256_hex`] digests, so a
//! copy of the store cannot be replayed.

use base64::Engine as _;
use rand::distributions::Alphanumeric;
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};

/// A URL-safe token (base64url, no padding) with `bytes` bytes of entropy from the OS RNG.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// `len` characters from `[A-Za-z0-9]`, from the OS RNG (API keys, webhook secrets: formats
/// that other tools expect to be alphanumeric).
pub fn random_alphanumeric(len: usize) -> String {
    rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Lower-case hex SHA-256 of `secret`: the form every bearer secret is stored and looked up as.
pub fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fresh_and_well_formed() {
        let a = random_token(32);
        assert_eq!(a.len(), 43);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(a, random_token(32));
        let k = random_alphanumeric(40);
        assert!(k.len() == 40 && k.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
