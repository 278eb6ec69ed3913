//! The provider's ID token signing keys: RSA (RS256), published as a JWKS with a `kid` that is
//! the key's RFC 7638 thumbprint, so the same key always has the same `kid` and two keys can be
//! published side by side during a rollover.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::error::{ErrorCode, OAuthError};

/// An RSA signing key of the provider.
#[derive(Clone)]
pub struct OpSigningKey {
    key: PKey<Private>,
    kid: String,
    n: String,
    e: String,
}

impl std::fmt::Debug for OpSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print private key material.
        f.debug_struct("OpSigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn server_error(e: impl std::fmt::Display) -> OAuthError {
    OAuthError::new(ErrorCode::ServerError, format!("signing key: {e}"))
}

impl OpSigningKey {
    /// A fresh RSA key of `bits` (2048 or 3072).
    pub fn generate(bits: u32) -> Result<Self, OAuthError> {
        if !matches!(bits, 2048 | 3072 | 4096) {
            return Err(server_error("RSA keys must have 2048, 3072 or 4096 bits"));
        }
        let rsa = Rsa::generate(bits).map_err(server_error)?;
        Self::new(PKey::from_rsa(rsa).map_err(server_error)?)
    }

    /// Load a PEM private key (PKCS#8 or PKCS#1), e.g. after unsealing it from the store.
    pub fn from_pem(pem: &[u8]) -> Result<Self, OAuthError> {
        Self::new(PKey::private_key_from_pem(pem).map_err(server_error)?)
    }

    fn new(key: PKey<Private>) -> Result<Self, OAuthError> {
        if key.id() != Id::RSA || key.bits() < 2048 {
            return Err(server_error(
                "the ID token key must be RSA with at least 2048 bits",
            ));
        }
        let rsa = key.rsa().map_err(server_error)?;
        let n = URL_SAFE_NO_PAD.encode(rsa.n().to_vec());
        let e = URL_SAFE_NO_PAD.encode(rsa.e().to_vec());
        // RFC 7638: the required members in lexicographic order, no whitespace.
        let thumbprint_input = format!("{{\"e\":\"{e}\",\"kty\":\"RSA\",\"n\":\"{n}\"}}");
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint_input.as_bytes()));
        Ok(Self { key, kid, n, e })
    }

    /// The private key as PKCS#8 PEM (to seal it before it reaches the store).
    pub fn private_key_pem(&self) -> Result<Vec<u8>, OAuthError> {
        self.key.private_key_to_pem_pkcs8().map_err(server_error)
    }

    /// The key id (RFC 7638 thumbprint).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWK.
    pub fn jwk(&self) -> Value {
        json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": self.n, "e": self.e})
    }

    /// A compact JWS (RS256) of `claims`.
    pub fn sign_jwt(&self, claims: &Value) -> Result<String, OAuthError> {
        let header = json!({"alg": "RS256", "kid": self.kid, "typ": "JWT"});
        let mut out = String::with_capacity(1024);
        out.push_str(&URL_SAFE_NO_PAD.encode(header.to_string()));
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut s = Signer::new(MessageDigest::sha256(), &self.key).map_err(server_error)?;
        s.update(out.as_bytes()).map_err(server_error)?;
        let sig = s.sign_to_vec().map_err(server_error)?;
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(sig));
        Ok(out)
    }
}

/// The JWKS document: every key that may have signed a live token (the current one first, the
/// next or previous one beside it during a rollover).
pub fn jwks_document(keys: &[&OpSigningKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kid_is_the_rfc7638_thumbprint_and_survives_pem() {
        let k = OpSigningKey::generate(2048).unwrap();
        let again = OpSigningKey::from_pem(&k.private_key_pem().unwrap()).unwrap();
        assert_eq!(k.kid(), again.kid());
        assert_eq!(k.kid().len(), 43);
        let jwk = k.jwk();
        assert_eq!(jwk["e"], "AQAB");
        assert!(!format!("{k:?}").contains("PRIVATE"));
        let other = OpSigningKey::generate(2048).unwrap();
        assert_ne!(other.kid(), k.kid());
        assert_eq!(
            jwks_document(&[&k, &other])["keys"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn weak_or_non_rsa_keys_are_refused() {
        assert!(OpSigningKey::generate(1024).is_err());
        let small = PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap();
        assert!(OpSigningKey::from_pem(&small.private_key_to_pem_pkcs8().unwrap()).is_err());
        let group =
            openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
        let ec = PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap();
        assert!(OpSigningKey::from_pem(&ec.private_key_to_pem_pkcs8().unwrap()).is_err());
    }
}
