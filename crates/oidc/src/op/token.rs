//! Authorization codes, the token endpoint and the userinfo endpoint of the provider.
//!
//! The SSO crate stores two short-lived records, each under the SHA-256 of its secret (so a
//! leaked store does not yield usable codes or tokens): a [`CodeGrant`] under [`secret_key`] of
//! the code (taken out atomically when redeemed: single use), and an [`AccessGrant`] under
//! [`secret_key`] of the access token (read by userinfo until it expires).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::authorize::{pkce_syntax_ok, AuthorizationRequest};
use super::error::{ErrorCode, OAuthError};
use super::keys::OpSigningKey;
use crate::settings::SigningAlg;

/// Default lifetime of an authorization code.
pub const DEFAULT_CODE_TTL_SECS: i64 = 60;
/// Default lifetime of access and ID tokens.
pub const DEFAULT_TOKEN_TTL_SECS: i64 = 600;
/// Largest token request body we parse.
pub const MAX_TOKEN_FORM: usize = 16 * 1024;

/// The authenticated user, as the provider describes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpUser {
    /// Stable subject identifier (the directory user's idp_id or profile id).
    pub sub: String,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub name: Option<String>,
    pub groups: Vec<String>,
    /// Configured extra claims (the client's `custom_claims`): one value as a string,
    /// several as an array; released whatever the scopes (the client's admin asked for them).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

/// Claims a configured extra claim may not replace.
pub const RESERVED_CLAIMS: [&str; 18] = [
    "sub",
    "email",
    "email_verified",
    "given_name",
    "family_name",
    "name",
    "groups",
    "iss",
    "aud",
    "exp",
    "iat",
    "nbf",
    "nonce",
    "auth_time",
    "at_hash",
    "c_hash",
    "azp",
    "sid",
];

impl OpUser {
    /// The claims `scopes` release: `sub` always; `email`, `email_verified` with `email`;
    /// names with `profile`; `groups` with `groups` (or always, when `groups_always`).
    pub fn claims(&self, scopes: &[String], groups_always: bool) -> Map<String, Value> {
        let has = |s: &str| scopes.iter().any(|x| x == s);
        let mut m = Map::new();
        m.insert("sub".into(), json!(self.sub));
        if has("email") {
            if let Some(e) = &self.email {
                m.insert("email".into(), json!(e));
                m.insert(
                    "email_verified".into(),
                    json!(self.email_verified.unwrap_or(false)),
                );
            }
        }
        if has("profile") {
            for (k, v) in [
                ("given_name", &self.given_name),
                ("family_name", &self.family_name),
                ("name", &self.name),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), json!(v));
                }
            }
        }
        if has("groups") || groups_always {
            m.insert("groups".into(), json!(self.groups));
        }
        for (k, v) in &self.extra {
            if RESERVED_CLAIMS.contains(&k.as_str()) {
                continue;
            }
            match v.as_slice() {
                [one] => m.insert(k.clone(), json!(one)),
                many => m.insert(k.clone(), json!(many)),
            };
        }
        m
    }
}

/// A fresh unguessable secret (code or access token): 32 random bytes, base64url.
pub fn new_secret() -> Result<String, OAuthError> {
    let mut bytes = [0u8; 32];
    openssl::rand::rand_bytes(&mut bytes)
        .map_err(|e| OAuthError::new(ErrorCode::ServerError, e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The store key of a code or access token: base64url(SHA-256(secret)).
pub fn secret_key(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(secret.as_bytes()))
}

/// What a code stands for until it is redeemed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeGrant {
    pub client_id: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub user: OpUser,
    /// When the user authenticated (unix seconds).
    pub auth_time: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// Copied from the client at issue time.
    pub groups_always: bool,
}

impl CodeGrant {
    /// The grant for a validated request and the user who just authenticated.
    pub fn new(
        req: &AuthorizationRequest,
        user: OpUser,
        auth_time: DateTime<Utc>,
        now: DateTime<Utc>,
        ttl_secs: i64,
        groups_always: bool,
    ) -> Self {
        Self {
            client_id: req.client_id.clone(),
            redirect_uri: req.redirect_uri.clone(),
            scopes: req.scopes.clone(),
            nonce: req.nonce.clone(),
            code_challenge: req.code_challenge.clone(),
            user,
            auth_time: auth_time.timestamp(),
            expires_at: now.timestamp() + ttl_secs,
            groups_always,
        }
    }
}

/// A token request (`application/x-www-form-urlencoded` body).
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub grant_type: String,
    pub code: String,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

impl TokenRequest {
    /// Parse the form body. Each parameter at most once (RFC 6749 §3.2); unknown parameters are
    /// ignored, as RFC 6749 §3.2 requires of the server.
    pub fn parse_form(body: &[u8]) -> Result<Self, OAuthError> {
        if body.len() > MAX_TOKEN_FORM {
            return Err(OAuthError::invalid_request("the request body is too large"));
        }
        let mut seen: Vec<String> = Vec::new();
        let (mut grant_type, mut code, mut redirect_uri, mut verifier, mut id, mut secret) =
            (None, None, None, None, None, None);
        for (k, v) in url::form_urlencoded::parse(body) {
            let slot = match k.as_ref() {
                "grant_type" => &mut grant_type,
                "code" => &mut code,
                "redirect_uri" => &mut redirect_uri,
                "code_verifier" => &mut verifier,
                "client_id" => &mut id,
                "client_secret" => &mut secret,
                _ => continue,
            };
            if seen.iter().any(|s| s == k.as_ref()) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {k} appears more than once"
                )));
            }
            seen.push(k.to_string());
            *slot = Some(v.into_owned());
        }
        let grant_type =
            grant_type.ok_or_else(|| OAuthError::invalid_request("grant_type is missing"))?;
        if grant_type != "authorization_code" {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                "only grant_type=authorization_code is supported",
            ));
        }
        Ok(Self {
            grant_type,
            code: code
                .filter(|c| !c.is_empty())
                .ok_or_else(|| OAuthError::invalid_request("code is missing"))?,
            redirect_uri,
            code_verifier: verifier,
            client_id: id,
            client_secret: secret,
        })
    }

    /// The store key of the presented code.
    pub fn code_key(&self) -> String {
        secret_key(&self.code)
    }
}

fn invalid_grant(why: &str) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidGrant, why)
}

/// Check a (just taken, single-use) grant against the token request of the authenticated client.
pub fn redeem(
    grant: &CodeGrant,
    req: &TokenRequest,
    authenticated_client_id: &str,
    now: DateTime<Utc>,
) -> Result<(), OAuthError> {
    if grant.client_id != authenticated_client_id {
        return Err(invalid_grant("the code was issued to another client"));
    }
    if now.timestamp() >= grant.expires_at {
        return Err(invalid_grant("the code has expired"));
    }
    // The redirect_uri of the authorization request, exactly (RFC 6749 §4.1.3).
    if req.redirect_uri.as_deref() != Some(grant.redirect_uri.as_str()) {
        return Err(invalid_grant(
            "redirect_uri does not match the authorization request",
        ));
    }
    match (&grant.code_challenge, &req.code_verifier) {
        (Some(challenge), Some(verifier)) => {
            if !pkce_syntax_ok(verifier) {
                return Err(OAuthError::invalid_request(
                    "code_verifier must be 43-128 unreserved characters",
                ));
            }
            let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
            if !bool::from(computed.as_bytes().ct_eq(challenge.as_bytes())) {
                return Err(invalid_grant(
                    "code_verifier does not match the code_challenge",
                ));
            }
        }
        (Some(_), None) => return Err(invalid_grant("code_verifier is missing")),
        // A verifier for a code issued without a challenge: a downgrade attempt (RFC 9700 §2.1.1).
        (None, Some(_)) => {
            return Err(invalid_grant(
                "code_verifier sent for a code issued without code_challenge",
            ))
        }
        (None, None) => {}
    }
    Ok(())
}

/// What an access token stands for until it expires (for the userinfo endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessGrant {
    pub client_id: String,
    pub scopes: Vec<String>,
    pub user: OpUser,
    pub expires_at: i64,
    pub groups_always: bool,
}

/// The token endpoint's success body.
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub id_token: String,
    pub scope: String,
}

/// Everything one successful code exchange produces.
#[derive(Debug, Clone)]
pub struct IssuedTokens {
    /// The JSON body to return (with `Cache-Control: no-store`).
    pub response: TokenResponse,
    /// Store this under `access_key` until `grant.expires_at`.
    pub access_grant: AccessGrant,
    pub access_key: String,
}

/// Issue the access token (valid `ttl_secs`) and the RS256 ID token (valid
/// `id_token_ttl_secs`) for a redeemed grant.
pub fn issue_tokens(
    grant: &CodeGrant,
    key: &OpSigningKey,
    issuer: &str,
    now: DateTime<Utc>,
    ttl_secs: i64,
    id_token_ttl_secs: i64,
) -> Result<IssuedTokens, OAuthError> {
    let access_token = new_secret()?;
    let iat = now.timestamp();
    let exp = iat + ttl_secs;
    let mut claims = grant.user.claims(&grant.scopes, grant.groups_always);
    claims.insert("iss".into(), json!(issuer));
    claims.insert("aud".into(), json!(grant.client_id));
    claims.insert("iat".into(), json!(iat));
    claims.insert("exp".into(), json!(iat + id_token_ttl_secs));
    claims.insert("auth_time".into(), json!(grant.auth_time));
    if let Some(n) = &grant.nonce {
        claims.insert("nonce".into(), json!(n));
    }
    claims.insert(
        "at_hash".into(),
        json!(crate::client::token_hash(&access_token, SigningAlg::RS256)),
    );
    let id_token = key.sign_jwt(&Value::Object(claims))?;
    let access_key = secret_key(&access_token);
    Ok(IssuedTokens {
        response: TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: ttl_secs,
            id_token,
            scope: grant.scopes.join(" "),
        },
        access_grant: AccessGrant {
            client_id: grant.client_id.clone(),
            scopes: grant.scopes.clone(),
            user: grant.user.clone(),
            expires_at: exp,
            groups_always: grant.groups_always,
        },
        access_key,
    })
}

/// The bearer token of a userinfo request (`Authorization: Bearer ...`, RFC 6750 §2.1).
pub fn bearer_token(authorization: Option<&str>) -> Result<&str, OAuthError> {
    let h = authorization.ok_or_else(|| {
        OAuthError::new(
            ErrorCode::InvalidToken,
            "no access token (Authorization: Bearer)",
        )
    })?;
    let token = h
        .strip_prefix("Bearer ")
        .or_else(|| h.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OAuthError::new(ErrorCode::InvalidToken, "use the Bearer scheme"))?;
    Ok(token)
}

/// The userinfo response for a stored grant (or `invalid_token` once it expired).
pub fn userinfo(grant: &AccessGrant, now: DateTime<Utc>) -> Result<Value, OAuthError> {
    if now.timestamp() >= grant.expires_at {
        return Err(OAuthError::new(
            ErrorCode::InvalidToken,
            "the access token has expired",
        ));
    }
    Ok(Value::Object(
        grant.user.claims(&grant.scopes, grant.groups_always),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn user() -> OpUser {
        OpUser {
            sub: "u1".into(),
            email: Some("a@x.test".into()),
            email_verified: None,
            given_name: Some("A".into()),
            family_name: None,
            name: None,
            groups: vec!["g".into()],
            extra: [
                ("dept".to_owned(), vec!["R&D".to_owned()]),
                ("sub".to_owned(), vec!["forged".to_owned()]),
            ]
            .into(),
        }
    }

    fn grant(now: DateTime<Utc>) -> CodeGrant {
        CodeGrant {
            client_id: "c1".into(),
            redirect_uri: "https://app.test/cb".into(),
            scopes: vec!["openid".into(), "email".into()],
            nonce: Some("n".into()),
            code_challenge: None,
            user: user(),
            auth_time: now.timestamp(),
            expires_at: now.timestamp() + 60,
            groups_always: false,
        }
    }

    fn req(redirect: &str) -> TokenRequest {
        TokenRequest::parse_form(
            format!("grant_type=authorization_code&code=abc&redirect_uri={redirect}").as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn claims_follow_the_scopes() {
        let u = user();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let m = u.claims(&s(&["openid"]), false);
        // Configured extra claims come whatever the scopes, but never replace a standard one.
        let mut keys = m.keys().collect::<Vec<_>>();
        keys.sort();
        assert_eq!(keys, vec!["dept", "sub"]);
        assert_eq!(m["sub"], json!("u1"));
        assert_eq!(m["dept"], json!("R&D"));
        let m = u.claims(&s(&["openid", "email", "profile", "groups"]), false);
        assert_eq!(
            m["email_verified"],
            json!(false),
            "unknown means not verified"
        );
        assert_eq!(m["given_name"], json!("A"));
        assert!(!m.contains_key("family_name"), "absent values are left out");
        assert_eq!(m["groups"], json!(["g"]));
        assert!(u.claims(&s(&["openid"]), true).contains_key("groups"));
    }

    #[test]
    fn codes_expire_and_belong_to_one_client_and_redirect_uri() {
        let now = Utc::now();
        let g = grant(now);
        assert!(redeem(&g, &req("https://app.test/cb"), "c1", now).is_ok());
        let e = redeem(
            &g,
            &req("https://app.test/cb"),
            "c1",
            now + Duration::seconds(60),
        );
        assert_eq!(e.unwrap_err().code, ErrorCode::InvalidGrant);
        assert!(redeem(&g, &req("https://app.test/cb"), "c2", now).is_err());
        assert!(redeem(&g, &req("https://app.test/cb/"), "c1", now).is_err());
        let no_redirect =
            TokenRequest::parse_form(b"grant_type=authorization_code&code=abc").unwrap();
        assert!(redeem(&g, &no_redirect, "c1", now).is_err());
    }

    #[test]
    fn tokens_carry_nonce_and_at_hash_and_userinfo_expires() {
        let now = Utc::now();
        let key = OpSigningKey::generate(2048).unwrap();
        let issued = issue_tokens(&grant(now), &key, "https://idp.test", now, 600, 600).unwrap();
        let payload = issued.response.id_token.split('.').nth(1).unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(claims["nonce"], "n");
        assert_eq!(claims["aud"], "c1");
        assert_eq!(
            claims["at_hash"],
            json!(crate::client::token_hash(
                &issued.response.access_token,
                SigningAlg::RS256
            ))
        );
        assert_eq!(issued.access_key, secret_key(&issued.response.access_token));
        assert!(userinfo(&issued.access_grant, now).is_ok());
        let late = userinfo(&issued.access_grant, now + Duration::seconds(600));
        assert_eq!(late.unwrap_err().code, ErrorCode::InvalidToken);
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_token(Some("Bearer abc")).unwrap(), "abc");
        for bad in [None, Some("Basic abc"), Some("Bearer "), Some("abc")] {
            assert_eq!(bearer_token(bad).unwrap_err().code, ErrorCode::InvalidToken);
        }
    }

    #[test]
    fn token_forms_are_strict_about_what_they_need() {
        assert_eq!(
            TokenRequest::parse_form(b"code=x").unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            TokenRequest::parse_form(b"grant_type=refresh_token&code=x")
                .unwrap_err()
                .code,
            ErrorCode::UnsupportedGrantType
        );
        assert!(TokenRequest::parse_form(b"grant_type=authorization_code").is_err());
        assert!(TokenRequest::parse_form(&vec![b'a'; MAX_TOKEN_FORM + 1]).is_err());
        // Unknown parameters are ignored (RFC 6749 §3.2).
        assert!(TokenRequest::parse_form(b"grant_type=authorization_code&code=x&foo=bar").is_ok());
    }
}
