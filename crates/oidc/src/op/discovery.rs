//! The discovery document (OpenID Connect Discovery 1.0 §3) of the provider: what WorkOS's
//! "Generic OIDC" connection and any RP read from `{issuer}/.well-known/openid-configuration`.

use serde_json::{json, Value};
use url::Url;

use super::error::{ErrorCode, OAuthError};

/// Scopes the provider understands (others are ignored, as OIDC Core §3.1.2.1 asks).
pub const SUPPORTED_SCOPES: [&str; 4] = ["openid", "email", "profile", "groups"];

/// Claims the provider can issue.
pub const SUPPORTED_CLAIMS: [&str; 14] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "at_hash",
    "email",
    "email_verified",
    "name",
    "given_name",
    "family_name",
    "groups",
];

/// Where the provider's endpoints are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpEndpoints {
    /// The issuer identifier, exactly as it appears in `iss` (no trailing slash added).
    pub issuer: String,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    pub userinfo_endpoint: Url,
    pub jwks_uri: Url,
}

impl OpEndpoints {
    /// Endpoints under the issuer: `/authorize`, `/token`, `/userinfo`, `/jwks`. The issuer
    /// must be an https URL (http only for loopback, for tests) without query or fragment.
    pub fn under_issuer(issuer: &str) -> Result<Self, OAuthError> {
        let bad = |why: &str| {
            OAuthError::new(ErrorCode::ServerError, format!("issuer {issuer:?}: {why}"))
        };
        let u = Url::parse(issuer).map_err(|e| bad(&e.to_string()))?;
        let loopback = matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        if u.scheme() != "https" && !(u.scheme() == "http" && loopback) {
            return Err(bad("must be https"));
        }
        if u.query().is_some() || u.fragment().is_some() {
            return Err(bad("must not have a query or fragment"));
        }
        let base = issuer.trim_end_matches('/');
        let at =
            |path: &str| Url::parse(&format!("{base}/{path}")).map_err(|e| bad(&e.to_string()));
        Ok(Self {
            issuer: issuer.to_owned(),
            authorization_endpoint: at("authorize")?,
            token_endpoint: at("token")?,
            userinfo_endpoint: at("userinfo")?,
            jwks_uri: at("jwks")?,
        })
    }

    /// Where the discovery document is served.
    pub fn discovery_url(&self) -> String {
        format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        )
    }
}

/// The discovery document.
pub fn discovery_document(e: &OpEndpoints) -> Value {
    json!({
        "issuer": e.issuer,
        "authorization_endpoint": e.authorization_endpoint.as_str(),
        "token_endpoint": e.token_endpoint.as_str(),
        "userinfo_endpoint": e.userinfo_endpoint.as_str(),
        "jwks_uri": e.jwks_uri.as_str(),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": SUPPORTED_SCOPES,
        "claims_supported": SUPPORTED_CLAIMS,
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "authorization_response_iss_parameter_supported": true,
    })
}
