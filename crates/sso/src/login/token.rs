//! The code exchange (workos-api.md §1.2) and the profile behind an access token (§1.4).
//!
//! Client authentication is checked before the code is touched, so a caller without the API
//! key cannot burn someone else's code. The exchange is one commit: the code is taken (single
//! use) and the token stored together.

use base64::Engine as _;
use idbridge_model::Profile;
use idbridge_secrets::random_token;
use idbridge_store::ChangeSet;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Logins, TokenRecord};
use crate::db::{self, now_ms, ttl_ms};
use crate::error::{SsoError, SsoResult};
use crate::SsoService;

/// `POST /sso/token` parameters (form, JSON or query: the SDKs use all three).
#[derive(Clone, Default)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub code: Option<String>,
    pub code_verifier: Option<String>,
    pub redirect_uri: Option<String>,
}

impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRequest")
            .field("grant_type", &self.grant_type)
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

/// A successful exchange.
#[derive(Clone)]
pub struct TokenGrant {
    pub access_token: String,
    /// Seconds.
    pub expires_in: u64,
    pub profile: Profile,
}

impl std::fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGrant")
            .field("expires_in", &self.expires_in)
            .field("profile", &self.profile.id)
            .finish_non_exhaustive()
    }
}

fn oauth(error: &'static str, description: &str) -> SsoError {
    SsoError::OAuth {
        error,
        description: description.to_string(),
    }
}

/// PKCE S256 challenge of a verifier: `BASE64URL(SHA256(verifier))`.
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// PKCE S256: `BASE64URL(SHA256(verifier)) == challenge`, compared in constant time.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    if !(43..=128).contains(&verifier.len()) {
        return false;
    }
    let computed = pkce_challenge(verifier);
    bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

impl SsoService {
    /// Exchanges a code for an access token and the profile.
    #[tracing::instrument(name = "sso.token", skip_all)]
    pub async fn exchange_code(&self, req: TokenRequest) -> SsoResult<TokenGrant> {
        let non_empty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        match req.grant_type.as_deref() {
            Some("authorization_code") => {}
            Some(_) => {
                return Err(oauth(
                    "unsupported_grant_type",
                    "Only authorization_code is supported.",
                ))
            }
            None => return Err(oauth("invalid_request", "grant_type is required.")),
        }
        let expected_client = self
            .client_id()?
            .ok_or_else(|| oauth("invalid_client", "Invalid client ID or secret."))?;
        let client_id = non_empty(&req.client_id).unwrap_or_default();
        if !bool::from(client_id.as_bytes().ct_eq(expected_client.as_bytes())) {
            return Err(oauth("invalid_client", "Invalid client ID or secret."));
        }
        let secret_ok = match non_empty(&req.client_secret) {
            Some(secret) => {
                if self.verify_api_key(&secret)?.is_none() {
                    return Err(oauth("invalid_client", "Invalid client ID or secret."));
                }
                true
            }
            None => false,
        };
        let verifier = non_empty(&req.code_verifier);
        if !secret_ok && verifier.is_none() {
            return Err(oauth(
                "invalid_client",
                "client_secret or code_verifier is required.",
            ));
        }
        let code =
            non_empty(&req.code).ok_or_else(|| oauth("invalid_request", "code is required."))?;
        let expired = || {
            oauth(
                "invalid_grant",
                "The code has expired or has already been used.",
            )
        };
        if code.len() > 256 {
            return Err(expired());
        }
        let now = now_ms();
        let rec = self.logins.code(&code, now)?.ok_or_else(expired)?;
        let mismatch = if rec.client_id != client_id {
            Some(oauth(
                "invalid_grant",
                "The code was issued to another client.",
            ))
        } else if non_empty(&req.redirect_uri).is_some_and(|r| r != rec.redirect_uri) {
            Some(oauth(
                "invalid_grant",
                "redirect_uri does not match the authorization request.",
            ))
        } else {
            match (&rec.code_challenge, &verifier) {
                // A PKCE login needs its verifier even when the API key is also sent.
                (Some(challenge), Some(v)) if pkce_matches(v, challenge) => None,
                (Some(_), _) => Some(oauth(
                    "invalid_grant",
                    "The code_verifier does not match the code_challenge.",
                )),
                (None, Some(_)) if !secret_ok => Some(oauth(
                    "invalid_grant",
                    "This code was not issued with a code_challenge.",
                )),
                (None, _) => None,
            }
        };
        let mut cs = ChangeSet::new();
        // A code presented wrongly is spent too: it cannot be tried again.
        Logins::stage_take_code(&mut cs, &code, now);
        let ttl = self.config().access_token_ttl;
        let access_token = random_token(32);
        if mismatch.is_none() {
            let tok = TokenRecord {
                profile: rec.profile.clone(),
            };
            Logins::stage_token(&mut cs, &access_token, &tok, now + ttl_ms(ttl))?;
        }
        match db::commit(&self.store, cs).await {
            Ok(_) => {}
            Err(e) if e.conflict_on().is_some() => return Err(expired()),
            Err(e) => return Err(e.into()),
        }
        if let Some(e) = mismatch {
            return Err(e);
        }
        tracing::info!(profile_id = %rec.profile.id, "code exchanged");
        Ok(TokenGrant {
            access_token,
            expires_in: ttl.as_secs(),
            profile: rec.profile,
        })
    }

    /// The profile behind a live access token.
    pub fn profile_for_token(
        &self,
        token: &str,
    ) -> Result<Option<Profile>, idbridge_store::StoreError> {
        if token.is_empty() || token.len() > 256 {
            return Ok(None);
        }
        Ok(self.logins.token(token, now_ms())?.map(|t| t.profile))
    }
}
