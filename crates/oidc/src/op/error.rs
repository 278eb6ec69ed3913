//! OAuth 2.0 / OIDC errors of the provider side, in the protocol's own shape: an error code, a
//! description for the client's logs, the HTTP status (token and userinfo endpoints) or the
//! redirect back to the client (authorization endpoint).

use serde_json::{json, Value};

/// OAuth / OIDC error codes (RFC 6749 §4.1.2.1 and §5.2, RFC 6750 §3.1, OIDC Core §3.1.2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    InvalidScope,
    AccessDenied,
    ServerError,
    TemporarilyUnavailable,
    LoginRequired,
    RequestNotSupported,
    RequestUriNotSupported,
    InvalidToken,
}

impl ErrorCode {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::LoginRequired => "login_required",
            ErrorCode::RequestNotSupported => "request_not_supported",
            ErrorCode::RequestUriNotSupported => "request_uri_not_supported",
            ErrorCode::InvalidToken => "invalid_token",
        }
    }
}

/// An error of the token or userinfo endpoint (or one the authorization endpoint redirects).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {description}", code.as_str())]
pub struct OAuthError {
    pub code: ErrorCode,
    /// Human-readable, for the client's logs; never holds a secret or a token.
    pub description: String,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }

    /// `invalid_request` with a description.
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }

    /// The HTTP status of a token/userinfo error response: 401 for client and token
    /// authentication failures, 500/503 for ours, 400 otherwise (RFC 6749 §5.2, RFC 6750 §3.1).
    pub fn http_status(&self) -> u16 {
        match self.code {
            ErrorCode::InvalidClient | ErrorCode::InvalidToken => 401,
            ErrorCode::ServerError => 500,
            ErrorCode::TemporarilyUnavailable => 503,
            _ => 400,
        }
    }

    /// The JSON body (`{"error": .., "error_description": ..}`).
    pub fn to_json(&self) -> Value {
        json!({"error": self.code.as_str(), "error_description": self.description})
    }

    /// The `WWW-Authenticate` header a 401 carries: `Basic` for a client that authenticated
    /// with HTTP Basic, `Bearer` for the userinfo endpoint (RFC 6749 §5.2, RFC 6750 §3).
    pub fn www_authenticate(&self, scheme: &str) -> Option<String> {
        (self.http_status() == 401).then(|| {
            let desc: String = self
                .description
                .chars()
                .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
                .collect();
            format!(
                "{scheme} realm=\"idbridge\", error=\"{}\", error_description=\"{desc}\"",
                self.code.as_str()
            )
        })
    }
}
