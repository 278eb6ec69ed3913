//! idbridge-secrets: encryption at rest for the credentials idbridge keeps (OIDC client
//! secrets, SP private keys, SCIM push bearer tokens, bind passwords).
//!
//! AES-256-GCM with a 32-byte key that never enters the store: it comes from
//! `IDBRIDGE_SECRET_KEY` or a 0600 file in the data directory, so a copied database alone does
//! not reveal IdP credentials. Each ciphertext is bound to its record and purpose through the
//! GCM associated data, so a ciphertext cannot be moved to another record.
//!
//! [`token`] is the one home of bearer-secret generation and the digest they are stored as.

#![forbid(unsafe_code)]

pub mod token;

pub use token::{random_alphanumeric, random_token, sha256_hex};

use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};

/// Environment variable holding the key (64 hex characters or base64 of 32 bytes).
pub const SECRET_KEY_ENV: &str = "IDBRIDGE_SECRET_KEY";
/// File name of the generated key inside the data directory.
pub const SECRET_KEY_FILE: &str = "secret.key";

const VERSION: &str = "v1:";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret key must be 32 bytes, given as 64 hex characters or base64")]
    BadKey,
    #[error("secret key file {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error("secret key file {0} is readable by group or others (want mode 0600)")]
    KeyFilePermissions(String),
    #[error("no secret key configured; connection secrets cannot be stored")]
    NoKey,
    #[error("encryption failed")]
    Encrypt,
    /// Wrong key, tampered ciphertext or a ciphertext moved between records.
    #[error("decryption failed")]
    Decrypt,
}

/// The key used to seal connection secrets. `Debug` never prints it.
#[derive(Clone)]
pub struct SecretBox {
    key: [u8; 32],
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox([redacted])")
    }
}

impl SecretBox {
    /// A box from raw key bytes (the server passes the key it loaded).
    pub fn new(key: [u8; 32]) -> Self {
        SecretBox { key }
    }

    /// Parses a key given as 64 hex characters or base64 of 32 bytes.
    pub fn from_text(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| SecretError::BadKey)?
        } else {
            B64.decode(text).map_err(|_| SecretError::BadKey)?
        };
        let key: [u8; 32] = bytes.try_into().map_err(|_| SecretError::BadKey)?;
        Ok(SecretBox { key })
    }

    /// A fresh random key (tests, and the first start of a data directory).
    pub fn generate() -> Result<Self, SecretError> {
        let mut key = [0u8; 32];
        openssl::rand::rand_bytes(&mut key).map_err(|_| SecretError::Encrypt)?;
        Ok(SecretBox { key })
    }

    /// `IDBRIDGE_SECRET_KEY` when set, else `<data_dir>/secret.key`, created (mode 0600) on
    /// first use. An existing file readable by others is refused rather than trusted.
    pub fn load_or_create(env_value: Option<&str>, data_dir: &Path) -> Result<Self, SecretError> {
        if let Some(v) = env_value.filter(|v| !v.trim().is_empty()) {
            return Self::from_text(v);
        }
        let path = data_dir.join(SECRET_KEY_FILE);
        let shown = path.display().to_string();
        let io = |source| SecretError::KeyFile {
            path: shown.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::metadata(&path).map_err(io)?.permissions().mode();
                    if mode & 0o077 != 0 {
                        return Err(SecretError::KeyFilePermissions(shown));
                    }
                }
                Self::from_text(&text)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                std::fs::create_dir_all(data_dir).map_err(io)?;
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    opts.mode(0o600);
                }
                let mut file = opts.open(&path).map_err(io)?;
                file.write_all(hex::encode(key.key).as_bytes())
                    .and_then(|_| file.sync_all())
                    .map_err(io)?;
                tracing::info!(path = %shown, "created the secret key for connection secrets");
                Ok(key)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Seals `plaintext`, bound to `context` (e.g. `conn_…/oidc_client_secret`).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<String, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        openssl::rand::rand_bytes(&mut nonce).map_err(|_| SecretError::Encrypt)?;
        let mut tag = [0u8; TAG_LEN];
        let ct = encrypt_aead(
            Cipher::aes_256_gcm(),
            &self.key,
            Some(&nonce),
            context.as_bytes(),
            plaintext,
            &mut tag,
        )
        .map_err(|_| SecretError::Encrypt)?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out.extend_from_slice(&tag);
        Ok(format!("{VERSION}{}", B64.encode(out)))
    }

    /// Opens a value sealed with the same key and context.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, SecretError> {
        let body = sealed.strip_prefix(VERSION).ok_or(SecretError::Decrypt)?;
        let raw = B64.decode(body).map_err(|_| SecretError::Decrypt)?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(SecretError::Decrypt);
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        decrypt_aead(
            Cipher::aes_256_gcm(),
            &self.key,
            Some(nonce),
            context.as_bytes(),
            ct,
            tag,
        )
        .map_err(|_| SecretError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_context_binding() {
        let b = SecretBox::generate().unwrap();
        let sealed = b.seal("conn_a/x", b"hunter2").unwrap();
        assert!(!sealed.contains("hunter2"));
        assert_eq!(b.open("conn_a/x", &sealed).unwrap(), b"hunter2");
        // Moved to another record: refused.
        assert!(matches!(
            b.open("conn_b/x", &sealed),
            Err(SecretError::Decrypt)
        ));
        // Another key: refused.
        let other = SecretBox::generate().unwrap();
        assert!(matches!(
            other.open("conn_a/x", &sealed),
            Err(SecretError::Decrypt)
        ));
        // Tampered: refused.
        let mut t = sealed.clone().into_bytes();
        let i = t.len() - 3;
        t[i] = if t[i] == b'A' { b'B' } else { b'A' };
        assert!(b.open("conn_a/x", &String::from_utf8(t).unwrap()).is_err());
        assert!(b.open("conn_a/x", "v1:AAAA").is_err());
        assert!(b.open("conn_a/x", "garbage").is_err());
    }

    #[test]
    fn key_parsing_and_debug() {
        assert!(SecretBox::from_text(&"ab".repeat(32)).is_ok());
        assert!(SecretBox::from_text(&B64.encode([7u8; 32])).is_ok());
        assert!(SecretBox::from_text("short").is_err());
        assert!(SecretBox::from_text(&B64.encode([7u8; 31])).is_err());
        let b = SecretBox::from_text(&"ab".repeat(32)).unwrap();
        assert!(!format!("{b:?}").contains("abab"));
    }

    #[test]
    fn key_file_is_created_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = SecretBox::load_or_create(None, dir.path()).unwrap();
        let sealed = a.seal("c", b"v").unwrap();
        let b = SecretBox::load_or_create(None, dir.path()).unwrap();
        assert_eq!(b.open("c", &sealed).unwrap(), b"v");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.path().join(SECRET_KEY_FILE);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                SecretBox::load_or_create(None, dir.path()),
                Err(SecretError::KeyFilePermissions(_))
            ));
        }
        // The environment wins over the file.
        let env = "cd".repeat(32);
        let e = SecretBox::load_or_create(Some(&env), dir.path()).unwrap();
        assert!(e.open("c", &sealed).is_err());
    }
}
