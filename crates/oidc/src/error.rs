//! Error types and the mapping from IdP errors to WorkOS error redirects.

use thiserror::Error;

/// Everything that can go wrong in the relying party.
///
/// Variants are fine-grained on purpose: callers (and tests) can tell *which* check refused a
/// login, and [`OidcError::workos_error_code`] turns any of them into the error code the app sees.
/// No variant ever carries the client secret; IdP-provided text is length-limited.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OidcError {
    /// The connection settings are unusable (bad URL, empty client id, ...).
    #[error("invalid OIDC settings: {0}")]
    InvalidSettings(String),
    /// A network-level failure talking to the provider.
    #[error("HTTP request to the provider's {endpoint} endpoint failed: {message}")]
    Http {
        /// Which endpoint (discovery, jwks, token, userinfo).
        endpoint: &'static str,
        /// The transport error, without the request URL.
        message: String,
    },
    /// The provider answered with an unexpected HTTP status.
    #[error("the provider's {endpoint} endpoint answered HTTP {status}")]
    HttpStatus {
        /// Which endpoint.
        endpoint: &'static str,
        /// The status code.
        status: u16,
    },
    /// The provider's answer was larger than we accept.
    #[error("the provider's {endpoint} response exceeds {limit} bytes")]
    ResponseTooLarge {
        /// Which endpoint.
        endpoint: &'static str,
        /// The cap in bytes.
        limit: usize,
    },
    /// The provider's answer was not the JSON we expect.
    #[error("the provider's {endpoint} response is invalid: {message}")]
    InvalidResponse {
        /// Which endpoint.
        endpoint: &'static str,
        /// What was wrong (never the body itself: it may hold tokens).
        message: String,
    },
    /// The discovery document is inconsistent (issuer mismatch, missing endpoint, ...).
    #[error("discovery failed: {0}")]
    Discovery(String),
    /// The `state` returned by the browser is not the one bound to it.
    #[error("state mismatch: the callback's state is not the one issued to this browser")]
    StateMismatch,
    /// A value that must be bound to the browser (state, nonce, PKCE verifier) is empty.
    #[error("the {0} bound to this login is missing")]
    MissingBinding(&'static str),
    /// The token endpoint refused the code exchange (e.g. a replayed code: `invalid_grant`).
    #[error("token endpoint error `{error}`{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    TokenEndpoint {
        /// OAuth error code.
        error: String,
        /// The provider's description, truncated.
        description: Option<String>,
    },
    /// The token response has no `id_token`: this is OAuth, not OpenID Connect.
    #[error("the token response contains no id_token")]
    MissingIdToken,
    /// The ID token is not a well-formed signed JWT with the required claims.
    #[error("malformed ID token: {0}")]
    MalformedIdToken(String),
    /// The token's `alg` is not on this connection's allow-list (covers `none` and HMAC).
    #[error("ID token algorithm `{0}` is not allowed")]
    AlgorithmNotAllowed(String),
    /// No key in the provider's JWKS matches the token's `kid`, even after a re-fetch.
    #[error("no provider key matches the ID token (kid {kid:?}); JWKS re-fetch {}", if *.rate_limited { "was rate-limited" } else { "did not help" })]
    UnknownSigningKey {
        /// The token's `kid`, if any.
        kid: Option<String>,
        /// True when the re-fetch was skipped because the last one was too recent.
        rate_limited: bool,
    },
    /// The signature does not verify with the provider's key.
    #[error("ID token signature is invalid: {0}")]
    InvalidSignature(String),
    /// `iss` is not the configured issuer.
    #[error("ID token issuer is invalid: {0}")]
    InvalidIssuer(String),
    /// `aud`/`azp` do not name this client (alone).
    #[error("ID token audience is invalid: {0}")]
    InvalidAudience(String),
    /// `exp` is in the past (beyond the allowed skew).
    #[error("ID token has expired: {0}")]
    Expired(String),
    /// `iat` (or `nbf`) is too far in the future, or `iat` too old.
    #[error("ID token issue time is invalid: {0}")]
    InvalidIssuedAt(String),
    /// `nonce` is missing or not the one bound to the browser.
    #[error("ID token nonce is invalid: {0}")]
    InvalidNonce(String),
    /// `at_hash` does not match the access token.
    #[error("ID token at_hash does not match the access token")]
    AtHashMismatch,
    /// Another ID token check failed (header, subject, ...).
    #[error("ID token rejected: {0}")]
    IdTokenRejected(String),
    /// The userinfo response is about another subject than the ID token.
    #[error("userinfo subject does not match the ID token subject")]
    UserinfoSubjectMismatch,
    /// The userinfo response is in a format we do not accept (e.g. a signed JWT).
    #[error("userinfo response is not usable: {0}")]
    Userinfo(String),
    /// A required profile field could not be found in the claims.
    #[error("no claim for `{field}` (looked at: {tried})")]
    MissingClaim {
        /// The profile field (idp_id, email).
        field: &'static str,
        /// The claim names that were tried, comma separated.
        tried: String,
    },
    /// A claim failed a connection rule (e.g. `email_verified: false`, Google `hd` not allowed).
    #[error("claim `{claim}` is not acceptable: {reason}")]
    ClaimNotAllowed {
        /// The claim name.
        claim: String,
        /// Why.
        reason: String,
    },
}

impl OidcError {
    /// The WorkOS `error` code to put on the app's redirect when this error ends a login
    /// (workos-api.md §1.1). Provider outages are `server_error`; everything the IdP or the
    /// browser got wrong is `oauth_failed`.
    pub fn workos_error_code(&self) -> &'static str {
        match self {
            OidcError::InvalidSettings(_)
            | OidcError::Http { .. }
            | OidcError::HttpStatus { .. }
            | OidcError::ResponseTooLarge { .. }
            | OidcError::Discovery(_) => "server_error",
            OidcError::TokenEndpoint { error, .. } => map_idp_error(error, None).0,
            _ => "oauth_failed",
        }
    }
}

/// Longest IdP-supplied description we pass on (it ends up in a URL and in logs).
const MAX_DESCRIPTION: usize = 300;

/// Maps an OAuth/OIDC `error` returned by the IdP (on the callback or by the token endpoint) to
/// the WorkOS error code and a description for the app's `error_description`.
///
/// `access_denied` stays `access_denied` (user declined or IdP policy refused);
/// `server_error`/`temporarily_unavailable` become `server_error`; everything else
/// (`invalid_request`, `login_required`, `invalid_grant`, unknown codes ...) is `oauth_failed`.
/// The IdP's description is kept when present, stripped of control characters and truncated.
pub fn map_idp_error(error: &str, description: Option<&str>) -> (&'static str, String) {
    let code = match error {
        "access_denied" => "access_denied",
        "server_error" | "temporarily_unavailable" => "server_error",
        _ => "oauth_failed",
    };
    let text = match description.map(sanitize_description) {
        Some(d) if !d.is_empty() => d,
        _ => {
            let err = sanitize_description(error);
            format!("The identity provider returned the error `{err}`.")
        }
    };
    (code, text)
}

/// Removes control characters and bounds the length of provider-supplied text.
pub(crate) fn sanitize_description(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_DESCRIPTION)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_denied_is_kept() {
        let (code, desc) = map_idp_error("access_denied", Some("User said no"));
        assert_eq!(code, "access_denied");
        assert_eq!(desc, "User said no");
    }

    #[test]
    fn provider_outages_are_server_errors() {
        assert_eq!(map_idp_error("server_error", None).0, "server_error");
        assert_eq!(
            map_idp_error("temporarily_unavailable", None).0,
            "server_error"
        );
    }

    #[test]
    fn other_errors_are_oauth_failed_with_a_description() {
        for e in [
            "invalid_request",
            "login_required",
            "consent_required",
            "invalid_scope",
            "x",
        ] {
            let (code, desc) = map_idp_error(e, None);
            assert_eq!(code, "oauth_failed", "{e}");
            assert!(desc.contains(e), "{desc}");
        }
    }

    #[test]
    fn descriptions_are_sanitized_and_bounded() {
        let long = format!("a\r\nb{}", "x".repeat(1000));
        let (_, desc) = map_idp_error("invalid_request", Some(&long));
        assert!(!desc.contains('\n') && !desc.contains('\r'));
        assert_eq!(desc.chars().count(), MAX_DESCRIPTION);
        assert!(desc.starts_with("ab"));
    }

    #[test]
    fn error_codes_for_rp_failures() {
        assert_eq!(OidcError::StateMismatch.workos_error_code(), "oauth_failed");
        assert_eq!(
            OidcError::Discovery("x".into()).workos_error_code(),
            "server_error"
        );
        let replay = OidcError::TokenEndpoint {
            error: "invalid_grant".into(),
            description: None,
        };
        assert_eq!(replay.workos_error_code(), "oauth_failed");
    }
}
