//! The authorization endpoint's request, in two steps like the SAML side: [`parse_authorization`]
//! reads the query (duplicate parameters refused) and names the client; the SSO crate looks the
//! client up and [`UncheckedAuthorization::validate`] checks everything against it. Until the
//! redirect URI is known to be registered (exact match), errors must be shown on our own page
//! ([`AuthorizeError::NoRedirect`]); after that they go back to the client
//! ([`AuthorizeError::Redirect`]) with `state` and `iss` (RFC 9207).

use std::collections::BTreeMap;

use url::Url;

use super::client::RegisteredClient;
use super::error::{ErrorCode, OAuthError};

/// Longest `state` / `nonce` we carry (they come back verbatim in URLs and tokens).
pub const MAX_STATE_LEN: usize = 2048;

/// `prompt` values (OIDC Core §3.1.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    None,
    Login,
    Consent,
    SelectAccount,
}

/// A validated authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRequest {
    pub client_id: String,
    /// One of the client's registered redirect URIs (exactly as registered).
    pub redirect_uri: String,
    /// Requested scopes, in order, deduplicated (`openid` always among them).
    pub scopes: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    /// PKCE S256 challenge.
    pub code_challenge: Option<String>,
    pub prompt: Vec<Prompt>,
    /// `max_age` in seconds: re-authenticate when the session is older.
    pub max_age: Option<u64>,
    pub login_hint: Option<String>,
}

/// Why an authorization request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizeError {
    /// The client or its redirect URI cannot be trusted: show the error on our own page and
    /// never redirect (RFC 6749 §4.1.2.1).
    #[error("authorization request refused (no redirect): {0}")]
    NoRedirect(OAuthError),
    /// Redirect the browser back to the client with this error.
    #[error("authorization request refused: {error}")]
    Redirect {
        redirect_uri: String,
        error: OAuthError,
        state: Option<String>,
    },
}

impl AuthorizeError {
    /// The error redirect (`error`, `error_description`, `state`, `iss`), when there is one.
    pub fn redirect_url(&self, issuer: &str) -> Option<Url> {
        match self {
            AuthorizeError::NoRedirect(_) => None,
            AuthorizeError::Redirect {
                redirect_uri,
                error,
                state,
            } => {
                let mut u = Url::parse(redirect_uri).ok()?;
                {
                    let mut q = u.query_pairs_mut();
                    q.append_pair("error", error.code.as_str());
                    q.append_pair("error_description", &error.description);
                    if let Some(s) = state {
                        q.append_pair("state", s);
                    }
                    q.append_pair("iss", issuer);
                }
                Some(u)
            }
        }
    }

    /// The OAuth error either way.
    pub fn error(&self) -> &OAuthError {
        match self {
            AuthorizeError::NoRedirect(e) | AuthorizeError::Redirect { error: e, .. } => e,
        }
    }
}

/// Parameters read, not yet checked against the client.
#[derive(Debug, Clone)]
pub struct UncheckedAuthorization {
    params: BTreeMap<String, String>,
}

/// Read an authorization request's query string (or form body, for POST). Every parameter may
/// appear once (RFC 6749 §3.1); `client_id` is required.
pub fn parse_authorization(query: &str) -> Result<UncheckedAuthorization, AuthorizeError> {
    let mut params = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if params.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(AuthorizeError::NoRedirect(OAuthError::invalid_request(
                format!("parameter {k} appears more than once"),
            )));
        }
    }
    match params.get("client_id") {
        Some(id) if !id.is_empty() => Ok(UncheckedAuthorization { params }),
        _ => Err(AuthorizeError::NoRedirect(OAuthError::invalid_request(
            "client_id is missing",
        ))),
    }
}

/// PKCE verifier/challenge alphabet and length (RFC 7636 §4.1).
pub(crate) fn pkce_syntax_ok(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

impl UncheckedAuthorization {
    /// The `client_id` to look up.
    pub fn client_id(&self) -> &str {
        self.params.get("client_id").map_or("", String::as_str)
    }

    /// Check the request against the registered client.
    pub fn validate(
        self,
        client: &RegisteredClient,
    ) -> Result<AuthorizationRequest, AuthorizeError> {
        let p = &self.params;
        if client.client_id != self.client_id() {
            return Err(AuthorizeError::NoRedirect(OAuthError::new(
                ErrorCode::InvalidRequest,
                "unknown client_id",
            )));
        }
        let redirect_uri = match p.get("redirect_uri") {
            None => {
                return Err(AuthorizeError::NoRedirect(OAuthError::invalid_request(
                    "redirect_uri is missing",
                )))
            }
            Some(r) if client.redirect_uris.iter().any(|u| u == r) => r.clone(),
            Some(_) => {
                return Err(AuthorizeError::NoRedirect(OAuthError::invalid_request(
                    "redirect_uri is not registered for this client (exact match required)",
                )))
            }
        };
        let state = p.get("state").cloned();
        let fail = |code: ErrorCode, why: &str| AuthorizeError::Redirect {
            redirect_uri: redirect_uri.clone(),
            error: OAuthError::new(code, why),
            state: state.clone(),
        };
        if state.as_ref().is_some_and(|s| s.len() > MAX_STATE_LEN) {
            return Err(AuthorizeError::NoRedirect(OAuthError::invalid_request(
                "state is too long",
            )));
        }
        if p.contains_key("request") {
            return Err(fail(
                ErrorCode::RequestNotSupported,
                "request objects are not supported",
            ));
        }
        if p.contains_key("request_uri") {
            return Err(fail(
                ErrorCode::RequestUriNotSupported,
                "request_uri is not supported",
            ));
        }
        match p.get("response_type").map(String::as_str) {
            Some("code") => {}
            Some(_) => {
                return Err(fail(
                    ErrorCode::UnsupportedResponseType,
                    "only response_type=code is supported",
                ))
            }
            None => return Err(fail(ErrorCode::InvalidRequest, "response_type is missing")),
        }
        if let Some(m) = p.get("response_mode") {
            if m != "query" {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    "only response_mode=query is supported",
                ));
            }
        }
        let mut scopes: Vec<String> = Vec::new();
        for s in p.get("scope").map_or("", String::as_str).split(' ') {
            if !s.is_empty() && !scopes.iter().any(|x| x == s) {
                scopes.push(s.to_owned());
            }
        }
        if !scopes.iter().any(|s| s == "openid") {
            return Err(fail(
                ErrorCode::InvalidScope,
                "the openid scope is required",
            ));
        }
        let code_challenge = match (p.get("code_challenge"), p.get("code_challenge_method")) {
            (None, None) => None,
            (Some(c), Some(m)) if m == "S256" => {
                if c.len() != 43 || !pkce_syntax_ok(c) {
                    return Err(fail(
                        ErrorCode::InvalidRequest,
                        "code_challenge is not a base64url SHA-256",
                    ));
                }
                Some(c.clone())
            }
            (Some(_), _) => {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    "code_challenge_method must be S256",
                ))
            }
            (None, Some(_)) => {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    "code_challenge_method without code_challenge",
                ))
            }
        };
        if code_challenge.is_none() && client.pkce_required() {
            return Err(fail(
                ErrorCode::InvalidRequest,
                "PKCE (code_challenge with S256) is required for this client",
            ));
        }
        let nonce = p.get("nonce").cloned();
        if nonce.as_ref().is_some_and(|n| n.len() > MAX_STATE_LEN) {
            return Err(fail(ErrorCode::InvalidRequest, "nonce is too long"));
        }
        let mut prompt = Vec::new();
        for v in p.get("prompt").map_or("", String::as_str).split(' ') {
            prompt.push(match v {
                "" => continue,
                "none" => Prompt::None,
                "login" => Prompt::Login,
                "consent" => Prompt::Consent,
                "select_account" => Prompt::SelectAccount,
                _ => return Err(fail(ErrorCode::InvalidRequest, "unknown prompt value")),
            });
        }
        if prompt.contains(&Prompt::None) && prompt.len() > 1 {
            return Err(fail(
                ErrorCode::InvalidRequest,
                "prompt=none cannot be combined with other values",
            ));
        }
        let max_age = match p.get("max_age") {
            None => None,
            Some(v) => Some(
                v.parse::<u64>()
                    .map_err(|_| fail(ErrorCode::InvalidRequest, "max_age must be a number"))?,
            ),
        };
        Ok(AuthorizationRequest {
            client_id: client.client_id.clone(),
            redirect_uri,
            scopes,
            state,
            nonce,
            code_challenge,
            prompt,
            max_age,
            login_hint: p.get("login_hint").cloned(),
        })
    }
}

impl AuthorizationRequest {
    /// The success redirect: `code`, `state` (when sent) and `iss` (RFC 9207).
    pub fn success_redirect(&self, code: &str, issuer: &str) -> Result<Url, OAuthError> {
        let mut u = Url::parse(&self.redirect_uri).map_err(|e| {
            OAuthError::new(
                ErrorCode::ServerError,
                format!("registered redirect_uri: {e}"),
            )
        })?;
        {
            let mut q = u.query_pairs_mut();
            q.append_pair("code", code);
            if let Some(s) = &self.state {
                q.append_pair("state", s);
            }
            q.append_pair("iss", issuer);
        }
        Ok(u)
    }

    /// An error redirect for a failure after validation (`login_required` for `prompt=none`
    /// without a session, `access_denied`, ...).
    pub fn error(&self, code: ErrorCode, description: impl Into<String>) -> AuthorizeError {
        AuthorizeError::Redirect {
            redirect_uri: self.redirect_uri.clone(),
            error: OAuthError::new(code, description),
            state: self.state.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> RegisteredClient {
        RegisteredClient {
            client_id: "c1".into(),
            secret: None,
            redirect_uris: vec!["https://app.test/cb?tenant=1".into()],
            require_pkce: false,
            groups_without_scope: false,
        }
    }

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn q(extra: &str) -> String {
        format!("client_id=c1&redirect_uri=https%3A%2F%2Fapp.test%2Fcb%3Ftenant%3D1&response_type=code&scope=openid+email+openid{extra}")
    }

    #[test]
    fn a_public_client_needs_pkce_and_gets_a_code_redirect() {
        let e = parse_authorization(&q("&state=s"))
            .unwrap()
            .validate(&client());
        assert_eq!(e.unwrap_err().error().code, ErrorCode::InvalidRequest);
        let r = parse_authorization(&q(&format!(
            "&state=s&nonce=n&code_challenge={CHALLENGE}&code_challenge_method=S256&prompt=login+consent&max_age=300"
        )))
        .unwrap()
        .validate(&client())
        .unwrap();
        assert_eq!(r.scopes, vec!["openid", "email"], "deduplicated, in order");
        assert_eq!(r.prompt, vec![Prompt::Login, Prompt::Consent]);
        assert_eq!(r.max_age, Some(300));
        let u = r.success_redirect("the-code", "https://idp.test").unwrap();
        assert_eq!(
            u.as_str(),
            "https://app.test/cb?tenant=1&code=the-code&state=s&iss=https%3A%2F%2Fidp.test"
        );
    }

    #[test]
    fn bad_prompt_max_age_and_state_are_refused() {
        let pkce = format!("&code_challenge={CHALLENGE}&code_challenge_method=S256");
        for extra in [
            "&prompt=none+login",
            "&prompt=sometimes",
            "&max_age=-1",
            "&response_mode=fragment",
            "&request=eyJ",
        ] {
            let e = parse_authorization(&q(&format!("{pkce}{extra}")))
                .unwrap()
                .validate(&client())
                .unwrap_err();
            assert!(matches!(e, AuthorizeError::Redirect { .. }), "{extra}: {e}");
        }
        let long = "s".repeat(MAX_STATE_LEN + 1);
        let e = parse_authorization(&q(&format!("{pkce}&state={long}")))
            .unwrap()
            .validate(&client())
            .unwrap_err();
        assert!(matches!(e, AuthorizeError::NoRedirect(_)));
        assert!(matches!(
            parse_authorization("redirect_uri=x"),
            Err(AuthorizeError::NoRedirect(_))
        ));
    }
}
