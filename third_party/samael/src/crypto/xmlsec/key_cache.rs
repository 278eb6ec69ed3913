//! idbridge patch: IdP certificates parsed once, cached by their DER bytes.
//!
//! Loading a certificate into an xmlsec key (`xmlSecOpenSSLAppKeyLoadMemory` → `d2i_X509_bio`)
//! sets up an OpenSSL 3 decoder context on every call: about 40% of the CPU of verifying a
//! signed SAML response. The verifier is handed the same few IdP certificates over and over, so
//! each is parsed once and every verification gets its own duplicate (the signature context
//! takes ownership of the key it verifies with and destroys it).
//!
//! The cached key holds the certificate's public key only: duplicating a key that carries its
//! X509 data copies the certificate with `X509_dup`, which pays the same decoder cost again.
//! Nothing in a verification with a key set on the context reads that X509 data (xmlsec only
//! consults KeyInfo / a keys manager when no key is set).
use super::wrapper::{XmlSecKey, XmlSecKeyFormat};
use super::XmlSecProviderError;
use openssl::x509::X509;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// Certificates in use at once are few (an IdP's current and next key per connection); the
/// bound only stops an unbounded number of distinct certificates from growing the map.
const MAX_ENTRIES: usize = 1024;

struct CachedKey(XmlSecKey);

// SAFETY: an xmlsec key has no thread affinity; the cached one is only read (duplicated) and
// dropped while the cache's mutex is held, so no two threads touch it at once.
unsafe impl Send for CachedKey {}

static CACHE: LazyLock<Mutex<HashMap<Vec<u8>, CachedKey>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// A fresh key for the certificate `der`, parsed on first use.
pub(super) fn cert_key(der: &[u8]) -> Result<XmlSecKey, XmlSecProviderError> {
    let mut cache = CACHE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(cached) = cache.get(der) {
        return Ok(cached.0.try_duplicate()?);
    }
    let spki = X509::from_der(der)?.public_key()?.public_key_to_der()?;
    let key = XmlSecKey::from_memory(&spki, XmlSecKeyFormat::Der)?;
    let copy = key.try_duplicate()?;
    if cache.len() >= MAX_ENTRIES {
        cache.clear();
    }
    cache.insert(der.to_vec(), CachedKey(key));
    Ok(copy)
}
