//! Registered clients (relying parties) of the provider and their authentication at the token
//! endpoint: `client_secret_basic`, `client_secret_post`, or `none` for public clients (which
//! must use PKCE). Secrets are compared in constant time.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::{ErrorCode, OAuthError};
use crate::Secret;

/// A client as the SSO crate's registry holds it (secret unsealed for this request).
#[derive(Debug, Clone)]
pub struct RegisteredClient {
    pub client_id: String,
    /// The client secret; `None` for a public client (no secret, PKCE required).
    pub secret: Option<Secret>,
    /// Redirect URIs, compared exactly (no prefix, no normalization).
    pub redirect_uris: Vec<String>,
    /// Require PKCE (always required for public clients).
    pub require_pkce: bool,
    /// Put `groups` in the ID token and userinfo even when the `groups` scope was not asked
    /// for (WorkOS's Generic OIDC connection asks for `openid profile email` only).
    pub groups_without_scope: bool,
}

impl RegisteredClient {
    /// Whether PKCE is mandatory for this client.
    pub fn pkce_required(&self) -> bool {
        self.require_pkce || self.secret.is_none()
    }
}

/// A new client secret: 32 random bytes, base64url (no `+`, `/` or `%`, so clients that skip
/// the form-encoding RFC 6749 §2.3.1 asks for in HTTP Basic still send it unchanged).
pub fn generate_client_secret() -> Result<Secret, OAuthError> {
    let mut bytes = [0u8; 32];
    openssl::rand::rand_bytes(&mut bytes)
        .map_err(|e| OAuthError::new(ErrorCode::ServerError, e.to_string()))?;
    Ok(Secret::new(URL_SAFE_NO_PAD.encode(bytes)))
}

/// Constant-time equality of a presented secret and the registered one (hashed first, so the
/// comparison takes the same time whatever the lengths).
pub fn secret_matches(presented: &str, registered: &Secret) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(registered.expose().as_bytes());
    bool::from(a.ct_eq(&b))
}

/// How the client presented itself at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    None,
}

/// The credentials found in a token request.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    pub secret: Option<Secret>,
    pub method: ClientAuthMethod,
}

fn invalid_client(why: &str) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidClient, why)
}

fn form_decode(s: &str) -> Option<String> {
    // application/x-www-form-urlencoded (RFC 6749 §2.3.1 encodes id and secret so before Basic).
    let joined = format!("x={s}");
    url::form_urlencoded::parse(joined.as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
}

/// Read the client's credentials from the `Authorization` header and the form's `client_id` /
/// `client_secret`. Using two methods at once is refused (RFC 6749 §2.3).
pub fn client_credentials(
    authorization: Option<&str>,
    form_client_id: Option<&str>,
    form_client_secret: Option<&str>,
) -> Result<ClientCredentials, OAuthError> {
    if let Some(h) = authorization {
        let Some(b64) = h
            .strip_prefix("Basic ")
            .or_else(|| h.strip_prefix("basic "))
        else {
            return Err(invalid_client(
                "the Authorization header must use the Basic scheme",
            ));
        };
        if form_client_secret.is_some() {
            return Err(OAuthError::invalid_request(
                "use one client authentication method: HTTP Basic or client_secret in the body",
            ));
        }
        let raw = STANDARD
            .decode(b64.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| invalid_client("the Basic credentials are not base64 of UTF-8"))?;
        let (id, secret) = raw
            .split_once(':')
            .ok_or_else(|| invalid_client("the Basic credentials have no ':'"))?;
        let id = form_decode(id).ok_or_else(|| invalid_client("bad client id encoding"))?;
        let secret =
            form_decode(secret).ok_or_else(|| invalid_client("bad client secret encoding"))?;
        if form_client_id.is_some_and(|f| f != id) {
            return Err(invalid_client(
                "client_id in the body differs from the Basic credentials",
            ));
        }
        return Ok(ClientCredentials {
            client_id: id,
            secret: Some(Secret::new(secret)),
            method: ClientAuthMethod::ClientSecretBasic,
        });
    }
    let id = form_client_id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid_client("no client authentication (client_id is missing)"))?;
    Ok(ClientCredentials {
        client_id: id.to_owned(),
        secret: form_client_secret.map(Secret::new),
        method: if form_client_secret.is_some() {
            ClientAuthMethod::ClientSecretPost
        } else {
            ClientAuthMethod::None
        },
    })
}

/// Check the credentials against the registered client (`invalid_client`, HTTP 401, on any
/// mismatch; the description never says which part was wrong).
pub fn authenticate_client(
    creds: &ClientCredentials,
    client: &RegisteredClient,
) -> Result<(), OAuthError> {
    let denied = || invalid_client("client authentication failed");
    if creds.client_id != client.client_id {
        return Err(denied());
    }
    match (&client.secret, &creds.secret) {
        (Some(registered), Some(presented)) => {
            if secret_matches(presented.expose(), registered) {
                Ok(())
            } else {
                Err(denied())
            }
        }
        (Some(_), None) => Err(denied()),
        (None, None) => Ok(()),
        (None, Some(_)) => Err(invalid_client(
            "this is a public client: it has no secret to present",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> RegisteredClient {
        RegisteredClient {
            client_id: "c1".into(),
            secret: Some(Secret::new("s3cr+t/with:colon")),
            redirect_uris: vec!["https://app.test/cb".into()],
            require_pkce: false,
            groups_without_scope: false,
        }
    }

    fn basic(id: &str, secret: &str) -> String {
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
        )
    }

    #[test]
    fn basic_and_post_authenticate_and_wrong_secrets_do_not() {
        let c = client();
        let creds =
            client_credentials(Some(&basic("c1", "s3cr+t/with:colon")), None, None).unwrap();
        assert_eq!(creds.method, ClientAuthMethod::ClientSecretBasic);
        assert!(authenticate_client(&creds, &c).is_ok());
        let creds = client_credentials(None, Some("c1"), Some("s3cr+t/with:colon")).unwrap();
        assert_eq!(creds.method, ClientAuthMethod::ClientSecretPost);
        assert!(authenticate_client(&creds, &c).is_ok());
        for (id, secret) in [("c1", "wrong"), ("c1", ""), ("c2", "s3cr+t/with:colon")] {
            let creds = client_credentials(Some(&basic(id, secret)), None, None).unwrap();
            let e = authenticate_client(&creds, &c).unwrap_err();
            assert_eq!((e.code, e.http_status()), (ErrorCode::InvalidClient, 401));
        }
        let no_secret = client_credentials(None, Some("c1"), None).unwrap();
        assert!(authenticate_client(&no_secret, &c).is_err());
    }

    #[test]
    fn two_methods_or_malformed_basic_are_refused() {
        assert_eq!(
            client_credentials(Some(&basic("c1", "x")), Some("c1"), Some("x"))
                .unwrap_err()
                .code,
            ErrorCode::InvalidRequest
        );
        assert!(client_credentials(Some(&basic("c1", "x")), Some("other"), None).is_err());
        for h in ["Bearer abc", "Basic !!!", "Basic bm9jb2xvbg=="] {
            assert_eq!(
                client_credentials(Some(h), None, None).unwrap_err().code,
                ErrorCode::InvalidClient,
                "{h}"
            );
        }
        assert!(client_credentials(None, None, None).is_err());
    }

    #[test]
    fn public_clients_present_no_secret_and_need_pkce() {
        let mut c = client();
        c.secret = None;
        assert!(c.pkce_required());
        let creds = client_credentials(None, Some("c1"), None).unwrap();
        assert!(authenticate_client(&creds, &c).is_ok());
        let creds = client_credentials(None, Some("c1"), Some("x")).unwrap();
        assert!(authenticate_client(&creds, &c).is_err());
    }

    #[test]
    fn generated_secrets_are_url_safe_and_distinct() {
        let a = generate_client_secret().unwrap();
        let b = generate_client_secret().unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 43);
        assert!(a
            .expose()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
}
