//! Bearer-token authentication of a directory's SCIM endpoint (RFC 6750 §2.1).
//!
//! Each directory has its own token; the store keeps only its SHA-256, and the comparison is
//! constant-time so response timing does not reveal how much of a guess was right. Failures are
//! 401 SCIM errors; the router adds `WWW-Authenticate: Bearer` ([`WWW_AUTHENTICATE`]).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ScimError;

/// The challenge to send with a 401.
pub const WWW_AUTHENTICATE: &str = "Bearer realm=\"scim\"";

/// Extracts the token from an `Authorization` header value (`Bearer <token68>`, scheme
/// case-insensitive). Missing or malformed headers are 401.
pub fn bearer_token(authorization: Option<&str>) -> Result<&str, ScimError> {
    let header = authorization.ok_or_else(|| ScimError::unauthorized("missing bearer token"))?;
    let (scheme, token) = header
        .trim()
        .split_once(' ')
        .ok_or_else(|| ScimError::unauthorized("malformed Authorization header"))?;
    let token = token.trim_start();
    let token68 = !token.is_empty()
        && token
            .trim_end_matches('=')
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~+/".contains(c))
        && !token.starts_with('=');
    if !scheme.eq_ignore_ascii_case("bearer") || !token68 {
        return Err(ScimError::unauthorized("malformed Authorization header"));
    }
    Ok(token)
}

/// SHA-256 of a token, as the store keeps it.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `presented` hashes to `stored_hash`, compared in constant time.
pub fn verify_token(presented: &str, stored_hash: &[u8]) -> bool {
    hash_token(presented).ct_eq(stored_hash).into()
}

/// Parses the header and checks the token: `Ok(())` or a 401 SCIM error.
pub fn authenticate(authorization: Option<&str>, stored_hash: &[u8]) -> Result<(), ScimError> {
    let token = bearer_token(authorization)?;
    if verify_token(token, stored_hash) {
        Ok(())
    } else {
        Err(ScimError::unauthorized("invalid bearer token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_headers() {
        assert_eq!(
            bearer_token(Some("Bearer abc.DEF-123_~+/==")).ok(),
            Some("abc.DEF-123_~+/==")
        );
        assert_eq!(bearer_token(Some("bearer  tok")).ok(), Some("tok"));
        for bad in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer "),
            Some("Basic dXNlcjpwdw=="),
            Some("Bearer a b"),
            Some("Bearer =abc"),
            Some("Bearer tök"),
        ] {
            let e = bearer_token(bad).err();
            assert_eq!(
                e.map(|e| (e.status, e.scim_type)),
                Some((401, None)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn verifies_against_the_stored_hash_only() {
        let stored = hash_token("se_directory_token");
        assert!(authenticate(Some("Bearer se_directory_token"), &stored).is_ok());
        assert!(authenticate(Some("Bearer se_directory_tokeN"), &stored).is_err());
        assert!(authenticate(Some("Bearer se_directory_token"), &hash_token("other")).is_err());
        // A stored hash of the wrong length never matches.
        assert!(!verify_token("se_directory_token", &stored[..31]));
        assert!(authenticate(None, &stored).is_err());
    }
}
