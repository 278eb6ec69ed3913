//! HTTP helpers: a safe default client and size-capped body reads.

use std::time::Duration;

use crate::OidcError;

/// Largest provider response we read (discovery, JWKS, token, userinfo). Real ones are a few KiB.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// A `reqwest::Client` suitable for talking to identity providers.
///
/// Redirects are off: a token or userinfo request that gets redirected would carry the client
/// secret or the access token to wherever the redirect points (and discovery redirects are an
/// SSRF vector). Timeouts are on so a hung provider cannot hold a login forever.
pub fn default_http_client() -> Result<reqwest::Client, OidcError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .user_agent(concat!("idbridge-oidc/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| OidcError::InvalidSettings(format!("cannot build HTTP client: {e}")))
}

/// Describes a transport error without its URL (kept short, never containing request bodies).
pub(crate) fn transport_error(endpoint: &'static str, err: reqwest::Error) -> OidcError {
    let err = err.without_url();
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    OidcError::Http { endpoint, message }
}

/// Reads a response body, refusing to buffer more than [`MAX_RESPONSE_BYTES`].
pub(crate) async fn read_capped(
    mut resp: reqwest::Response,
    endpoint: &'static str,
) -> Result<Vec<u8>, OidcError> {
    let too_large = OidcError::ResponseTooLarge {
        endpoint,
        limit: MAX_RESPONSE_BYTES,
    };
    if resp
        .content_length()
        .is_some_and(|l| l > MAX_RESPONSE_BYTES as u64)
    {
        return Err(too_large);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| transport_error(endpoint, e))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Describes a JSON error by position and category only: serde messages can quote values, and
/// the values here may be tokens.
pub(crate) fn json_error(endpoint: &'static str, err: &serde_json::Error) -> OidcError {
    OidcError::InvalidResponse {
        endpoint,
        message: format!(
            "{:?} JSON error at line {} column {}",
            err.classify(),
            err.line(),
            err.column()
        ),
    }
}
