//! The relying party: authorization request, code exchange, ID token checks, userinfo.

use std::str::FromStr;
use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chrono::Utc;
use openidconnect::core::{CoreIdToken, CoreJsonWebKey};
use openidconnect::{
    ClaimsVerificationError, ClientId, CsrfToken, IdTokenVerifier, IssuerUrl, JsonWebKeySet, Nonce,
    PkceCodeChallenge, SignatureVerificationError,
};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};
use url::Url;

use crate::claims::map_identity;
use crate::error::sanitize_description;
use crate::http::{json_error, read_capped, transport_error};
use crate::provider::{ProviderCache, ProviderMetadata, Refetch};
use crate::settings::check_url;
use idbridge_model::Identity;

use crate::{AuthMethod, OidcError, OidcSettings, Secret, SigningAlg};

/// What [`OidcClient::begin`] produced: send the browser to `url`, and keep `state`, `nonce` and
/// `pkce_verifier` bound to that browser (e.g. in the server-side login session keyed by a
/// cookie) until the callback.
#[derive(Debug)]
pub struct BeginAuth {
    /// The provider's authorization URL with all parameters.
    pub url: Url,
    /// The `state` sent to the provider; the callback must return it.
    pub state: String,
    /// The `nonce` sent to the provider; the ID token must contain it.
    pub nonce: String,
    /// The PKCE code verifier (S256); only its hash left this process.
    pub pkce_verifier: Secret,
}

/// How many extra scopes one login may add, and how long one may be: bounds the URL.
pub const MAX_EXTRA_SCOPES: usize = 20;
const MAX_SCOPE_LEN: usize = 128;

/// Per-login extras for [`OidcClient::begin_with`], from the app's authorization request.
#[derive(Debug, Clone, Copy, Default)]
pub struct BeginOptions<'a> {
    /// Pre-fills the provider's sign-in form (`login_hint`).
    pub login_hint: Option<&'a str>,
    /// Scopes requested on top of the connection's (WorkOS `provider_scopes`).
    pub extra_scopes: &'a [String],
    /// Makes the provider authenticate the user again even with a live session
    /// (`prompt=login`, the OIDC counterpart of SAML `ForceAuthn`).
    pub force_login: bool,
}

/// Inputs of [`OidcClient::finish`]: what the callback carried and what was bound to the browser.
#[derive(Debug, Clone, Copy)]
pub struct FinishParams<'a> {
    /// `code` from the callback query.
    pub code: &'a str,
    /// `state` from the callback query.
    pub returned_state: &'a str,
    /// `state` stored for this browser at [`OidcClient::begin`].
    pub expected_state: &'a str,
    /// `iss` from the callback query, if the provider sent one (RFC 9207, mix-up defence).
    pub returned_iss: Option<&'a str>,
    /// `nonce` stored for this browser.
    pub nonce: &'a str,
    /// PKCE verifier stored for this browser.
    pub pkce_verifier: &'a str,
    /// The same redirect URI that was given to `begin`.
    pub redirect_uri: &'a Url,
}

/// An OpenID Connect relying party for one connection.
///
/// Holds the discovery document and JWKS caches, so keep one per connection for as long as the
/// connection's settings do not change (key rotation at the provider is followed without
/// rebuilding it).
pub struct OidcClient {
    settings: OidcSettings,
    http: reqwest::Client,
    provider: ProviderCache,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    id_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

impl OidcClient {
    /// Builds a client. `http` should come from [`crate::default_http_client`] (redirects off,
    /// timeouts on) or be configured the same way. Nothing is fetched until first use.
    pub fn new(settings: OidcSettings, http: reqwest::Client) -> Result<Self, OidcError> {
        settings.validate()?;
        let provider = ProviderCache::new(&settings, http.clone())?;
        Ok(Self {
            settings,
            http,
            provider,
        })
    }

    /// The settings this client was built with.
    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// The provider's discovery document (cached). Useful to test a connection when it is saved.
    pub async fn provider_metadata(&self) -> Result<Arc<ProviderMetadata>, OidcError> {
        self.provider.metadata().await
    }

    /// Starts a login: a fresh `state`, `nonce` and PKCE (S256) pair, and the authorization URL.
    pub async fn begin(
        &self,
        redirect_uri: &Url,
        login_hint: Option<&str>,
    ) -> Result<BeginAuth, OidcError> {
        self.begin_with(
            redirect_uri,
            &BeginOptions {
                login_hint,
                ..BeginOptions::default()
            },
        )
        .await
    }

    /// [`OidcClient::begin`] with the app's per-login extras (WorkOS `login_hint`,
    /// `provider_scopes`, `prompt=login`).
    #[tracing::instrument(name = "oidc.begin", skip_all, fields(issuer = %self.settings.issuer))]
    pub async fn begin_with(
        &self,
        redirect_uri: &Url,
        opts: &BeginOptions<'_>,
    ) -> Result<BeginAuth, OidcError> {
        let meta = self.provider.metadata().await?;
        if let Some(methods) = &meta.code_challenge_methods_supported {
            if !methods.iter().any(|m| m == "S256") {
                tracing::warn!("provider does not advertise PKCE S256; sending it anyway");
            }
        }
        let state = CsrfToken::new_random().secret().clone();
        let nonce = Nonce::new_random().secret().clone();
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut url = meta.authorization_endpoint.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.settings.client_id)
                .append_pair("redirect_uri", redirect_uri.as_str())
                .append_pair("scope", &self.scopes_with(opts.extra_scopes).join(" "))
                .append_pair("state", &state)
                .append_pair("nonce", &nonce)
                .append_pair("code_challenge", challenge.as_str())
                .append_pair("code_challenge_method", "S256");
            if let Some(hint) = opts.login_hint.filter(|h| !h.is_empty()) {
                q.append_pair("login_hint", hint);
            }
            if opts.force_login {
                q.append_pair("prompt", "login");
            }
        }
        Ok(BeginAuth {
            url,
            state,
            nonce,
            pkce_verifier: Secret::new(verifier.secret().clone()),
        })
    }

    /// The connection's scopes plus the app's extra ones: well-formed scope tokens (RFC 6749
    /// §3.3) only, each once, at most [`MAX_EXTRA_SCOPES`] of them; others are dropped so an
    /// app's typo cannot break the provider's authorization request.
    fn scopes_with(&self, extra: &[String]) -> Vec<String> {
        let mut out = self.settings.effective_scopes();
        let mut added = 0;
        for s in extra {
            let well_formed = !s.is_empty()
                && s.len() <= MAX_SCOPE_LEN
                && s.bytes()
                    .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
            if !well_formed {
                tracing::debug!("dropping a malformed provider scope");
                continue;
            }
            if added < MAX_EXTRA_SCOPES && !out.contains(s) {
                out.push(s.clone());
                added += 1;
            }
        }
        out
    }

    /// Completes a login: checks `state`, exchanges the code (with the PKCE verifier), verifies
    /// the ID token, fetches and merges userinfo, and maps the claims to an identity.
    #[tracing::instrument(name = "oidc.finish", skip_all, fields(issuer = %self.settings.issuer))]
    pub async fn finish(&self, p: FinishParams<'_>) -> Result<Identity, OidcError> {
        // State first, before any network call: a forged callback costs us nothing.
        if p.expected_state.is_empty() {
            return Err(OidcError::MissingBinding("state"));
        }
        if !digest_eq(p.returned_state, p.expected_state) {
            return Err(OidcError::StateMismatch);
        }
        if p.nonce.is_empty() {
            return Err(OidcError::MissingBinding("nonce"));
        }
        if p.pkce_verifier.is_empty() {
            return Err(OidcError::MissingBinding("PKCE verifier"));
        }
        let meta = self.provider.metadata().await?;
        match p.returned_iss {
            Some(iss) if iss != self.settings.issuer => {
                return Err(OidcError::InvalidIssuer(
                    "the callback's iss parameter names another provider".into(),
                ));
            }
            None if meta.authorization_response_iss_parameter_supported => {
                return Err(OidcError::InvalidIssuer(
                    "the provider sends iss on callbacks but this one has none".into(),
                ));
            }
            _ => {}
        }
        let (access_token, id_token) = self.exchange_code(&meta, &p).await?;
        let mut claims = self
            .verify_with(&meta, &id_token, p.nonce, Some(access_token.expose()))
            .await?;
        if self.settings.fetch_userinfo {
            if let Some(endpoint) = &meta.userinfo_endpoint {
                let info = self.userinfo(endpoint, &access_token).await?;
                merge_userinfo(&mut claims, info)?;
            }
        }
        let identity = map_identity(claims, &self.settings)?;
        tracing::info!(idp_id = %identity.idp_id, "OIDC login verified");
        Ok(identity)
    }

    /// Verifies an ID token with every check `finish` applies (signature with the provider's
    /// keys and the algorithm allow-list, `iss`, `aud`/`azp`, `exp`/`iat`/`nbf` with bounded skew,
    /// `nonce`, and `at_hash` when both it and `access_token` are present). Returns the claims.
    pub async fn verify_id_token(
        &self,
        id_token: &str,
        nonce: &str,
        access_token: Option<&str>,
    ) -> Result<Map<String, Value>, OidcError> {
        let meta = self.provider.metadata().await?;
        self.verify_with(&meta, id_token, nonce, access_token).await
    }

    async fn exchange_code(
        &self,
        meta: &ProviderMetadata,
        p: &FinishParams<'_>,
    ) -> Result<(Secret, String), OidcError> {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "authorization_code")
            .append_pair("code", p.code)
            .append_pair("redirect_uri", p.redirect_uri.as_str())
            .append_pair("code_verifier", p.pkce_verifier);
        let mut req = self
            .http
            .post(meta.token_endpoint.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
        match self.settings.auth_method {
            AuthMethod::ClientSecretBasic => {
                // RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding.
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                let creds = format!(
                    "{}:{}",
                    enc(&self.settings.client_id),
                    enc(self.settings.client_secret.expose())
                );
                req = req.header(
                    reqwest::header::AUTHORIZATION,
                    format!("Basic {}", STANDARD.encode(creds)),
                );
            }
            AuthMethod::ClientSecretPost => {
                form.append_pair("client_id", &self.settings.client_id)
                    .append_pair("client_secret", self.settings.client_secret.expose());
            }
        }
        let resp = req
            .body(form.finish())
            .send()
            .await
            .map_err(|e| transport_error("token", e))?;
        let status = resp.status();
        let body = read_capped(resp, "token").await?;
        let parsed: Result<TokenResponse, _> = serde_json::from_slice(&body);
        if !status.is_success() {
            return Err(match parsed {
                Ok(TokenResponse {
                    error: Some(error),
                    error_description,
                    ..
                }) => OidcError::TokenEndpoint {
                    error: sanitize_description(&error),
                    description: error_description.as_deref().map(sanitize_description),
                },
                _ => OidcError::HttpStatus {
                    endpoint: "token",
                    status: status.as_u16(),
                },
            });
        }
        let tr = parsed.map_err(|e| json_error("token", &e))?;
        let access_token = tr.access_token.filter(|t| !t.is_empty()).ok_or_else(|| {
            OidcError::InvalidResponse {
                endpoint: "token",
                message: "no access_token".into(),
            }
        })?;
        if !tr
            .token_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("bearer"))
        {
            return Err(OidcError::InvalidResponse {
                endpoint: "token",
                message: "token_type is not Bearer".into(),
            });
        }
        let id_token = tr.id_token.ok_or(OidcError::MissingIdToken)?;
        Ok((Secret::new(access_token), id_token))
    }

    async fn verify_with(
        &self,
        meta: &ProviderMetadata,
        id_token: &str,
        nonce: &str,
        access_token: Option<&str>,
    ) -> Result<Map<String, Value>, OidcError> {
        if nonce.is_empty() {
            return Err(OidcError::MissingBinding("nonce"));
        }
        let (header, payload_b64) = split_jwt(id_token)?;
        let alg_name = header.get("alg").and_then(Value::as_str).unwrap_or("");
        // Our own allow-list check, before the library sees the token: the allow-list type cannot
        // express `none` or HMAC, so those are refused here whatever the library would do.
        let alg = SigningAlg::from_jose(alg_name)
            .filter(|a| self.settings.allowed_algs.contains(a))
            .ok_or_else(|| OidcError::AlgorithmNotAllowed(sanitize_description(alg_name)))?;
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .map(sanitize_description);
        let token = CoreIdToken::from_str(id_token)
            .map_err(|e| OidcError::MalformedIdToken(sanitize_description(&e.to_string())))?;
        let nonce = Nonce::new(nonce.to_owned());

        let keys = self.provider.jwks(meta).await?;
        let first = self.check_signature_and_claims(&token, &keys, &nonce);
        let result = match first {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => match self.provider.refetch_jwks(meta).await? {
                Refetch::Fetched(keys) => {
                    match self.check_signature_and_claims(&token, &keys, &nonce) {
                        Err(ClaimsVerificationError::SignatureVerification(
                            SignatureVerificationError::NoMatchingKey,
                        )) => Err(OidcError::UnknownSigningKey {
                            kid,
                            rate_limited: false,
                        }),
                        other => other.map_err(map_claims_error),
                    }
                }
                Refetch::RateLimited => Err(OidcError::UnknownSigningKey {
                    kid,
                    rate_limited: true,
                }),
            },
            other => other.map_err(map_claims_error),
        };
        result?;

        // The signature covered the payload, so its JSON is now trustworthy as a whole.
        let claims = decode_json_segment(payload_b64)?;
        self.check_times(&claims)?;
        if let Some(azp) = claims.get("azp") {
            if azp.as_str() != Some(self.settings.client_id.as_str()) {
                return Err(OidcError::InvalidAudience(
                    "azp does not name this client".into(),
                ));
            }
        }
        if let (Some(at_hash), Some(access_token)) = (claims.get("at_hash"), access_token) {
            let expected = token_hash(access_token, alg);
            if at_hash.as_str() != Some(expected.as_str()) {
                return Err(OidcError::AtHashMismatch);
            }
        }
        Ok(claims)
    }

    /// Signature, `iss`, `aud`, `exp` (with skew) and `nonce`, by openidconnect.
    fn check_signature_and_claims(
        &self,
        token: &CoreIdToken,
        keys: &[CoreJsonWebKey],
        nonce: &Nonce,
    ) -> Result<(), ClaimsVerificationError> {
        let skew = chrono::Duration::from_std(self.settings.clock_skew)
            .unwrap_or_else(|_| chrono::Duration::seconds(0));
        let issuer = IssuerUrl::new(self.settings.issuer.clone())
            .map_err(|e| ClaimsVerificationError::Other(format!("issuer: {e}")))?;
        // A public-client verifier even though we hold a secret: the secret must never become an
        // HMAC key (and HMAC algorithms are not on the allow-list anyway).
        let verifier = IdTokenVerifier::new_public_client(
            ClientId::new(self.settings.client_id.clone()),
            issuer,
            JsonWebKeySet::new(keys.to_vec()),
        )
        .set_allowed_algs(self.settings.allowed_algs.iter().map(|a| a.to_core()))
        // openidconnect rejects when now >= exp; shifting "now" back by the skew tolerates
        // clocks that are at most `clock_skew` apart.
        .set_time_fn(move || Utc::now() - skew);
        token.claims(&verifier, nonce).map(|_| ())
    }

    /// `iat` within [now - max_age - skew, now + skew]; `nbf` (optional) <= now + skew.
    fn check_times(&self, claims: &Map<String, Value>) -> Result<(), OidcError> {
        let now = Utc::now().timestamp();
        let skew = i64::try_from(self.settings.clock_skew.as_secs()).unwrap_or(i64::MAX);
        let max_age = i64::try_from(self.settings.max_id_token_age.as_secs()).unwrap_or(i64::MAX);
        let iat =
            claims.get("iat").and_then(Value::as_f64).ok_or_else(|| {
                OidcError::MalformedIdToken("iat is missing or not a number".into())
            })? as i64;
        if iat > now.saturating_add(skew) {
            return Err(OidcError::InvalidIssuedAt(format!(
                "issued {}s in the future",
                iat - now
            )));
        }
        if iat < now.saturating_sub(max_age).saturating_sub(skew) {
            return Err(OidcError::InvalidIssuedAt(format!(
                "issued {}s ago",
                now - iat
            )));
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf
                .as_f64()
                .ok_or_else(|| OidcError::MalformedIdToken("nbf is not a number".into()))?
                as i64;
            if nbf > now.saturating_add(skew) {
                return Err(OidcError::InvalidIssuedAt("not valid yet (nbf)".into()));
            }
        }
        Ok(())
    }

    #[tracing::instrument(name = "oidc.userinfo", skip_all)]
    async fn userinfo(
        &self,
        endpoint: &Url,
        access_token: &Secret,
    ) -> Result<Map<String, Value>, OidcError> {
        check_url(
            endpoint,
            self.settings.allow_insecure_http,
            "userinfo_endpoint",
        )?;
        let resp = self
            .http
            .get(endpoint.clone())
            .bearer_auth(access_token.expose())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| transport_error("userinfo", e))?;
        if !resp.status().is_success() {
            return Err(OidcError::HttpStatus {
                endpoint: "userinfo",
                status: resp.status().as_u16(),
            });
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if content_type.starts_with("application/jwt") {
            return Err(OidcError::Userinfo(
                "signed or encrypted userinfo responses are not supported".into(),
            ));
        }
        let body = read_capped(resp, "userinfo").await?;
        match serde_json::from_slice::<Value>(&body).map_err(|e| json_error("userinfo", &e))? {
            Value::Object(m) => Ok(m),
            _ => Err(OidcError::Userinfo("response is not a JSON object".into())),
        }
    }
}

/// Claims that only the (signed) ID token may provide.
const ID_TOKEN_ONLY: &[&str] = &[
    "iss",
    "aud",
    "exp",
    "iat",
    "nbf",
    "nonce",
    "at_hash",
    "c_hash",
    "azp",
    "auth_time",
    "jti",
    "acr",
    "amr",
    "sid",
];

/// Merges userinfo into the ID token claims (OIDC Core §5.3.2): the subjects must match; claims
/// the ID token already has keep the signed value; protocol claims never come from userinfo.
fn merge_userinfo(
    claims: &mut Map<String, Value>,
    info: Map<String, Value>,
) -> Result<(), OidcError> {
    let id_sub = claims.get("sub").and_then(Value::as_str);
    let info_sub = info.get("sub").and_then(Value::as_str);
    match (id_sub, info_sub) {
        (Some(a), Some(b)) if a == b => {}
        _ => return Err(OidcError::UserinfoSubjectMismatch),
    }
    for (k, v) in info {
        if !ID_TOKEN_ONLY.contains(&k.as_str()) && !claims.contains_key(&k) {
            claims.insert(k, v);
        }
    }
    Ok(())
}

/// `at_hash`/`c_hash` per OIDC Core §3.1.3.6: the left half of the hash matching the alg.
pub(crate) fn token_hash(token: &str, alg: SigningAlg) -> String {
    let digest: Vec<u8> = match alg.hash_bits() {
        256 => Sha256::digest(token.as_bytes()).to_vec(),
        384 => Sha384::digest(token.as_bytes()).to_vec(),
        _ => Sha512::digest(token.as_bytes()).to_vec(),
    };
    let half = digest.get(..digest.len() / 2).unwrap_or(&[]);
    URL_SAFE_NO_PAD.encode(half)
}

/// Compares two browser-bound values without an early-exit timing signal.
fn digest_eq(a: &str, b: &str) -> bool {
    Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes())
}

fn split_jwt(jwt: &str) -> Result<(Map<String, Value>, &str), OidcError> {
    let mut parts = jwt.split('.');
    let (Some(h), Some(p), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(OidcError::MalformedIdToken(
            "not a compact JWS (three dot-separated parts)".into(),
        ));
    };
    Ok((decode_json_segment(h)?, p))
}

fn decode_json_segment(seg: &str) -> Result<Map<String, Value>, OidcError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(seg)
        .map_err(|_| OidcError::MalformedIdToken("segment is not base64url".into()))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(OidcError::MalformedIdToken(
            "segment is not a JSON object".into(),
        )),
    }
}

fn map_claims_error(e: ClaimsVerificationError) -> OidcError {
    use ClaimsVerificationError as C;
    use SignatureVerificationError as S;
    match e {
        C::Expired(m) => OidcError::Expired(m),
        C::InvalidAudience(m) => OidcError::InvalidAudience(m),
        C::InvalidIssuer(m) => OidcError::InvalidIssuer(m),
        C::InvalidNonce(m) => OidcError::InvalidNonce(m),
        C::SignatureVerification(S::DisallowedAlg(m) | S::UnsupportedAlg(m)) => {
            OidcError::AlgorithmNotAllowed(m)
        }
        C::SignatureVerification(S::NoSignature) => OidcError::AlgorithmNotAllowed("none".into()),
        C::SignatureVerification(S::NoMatchingKey) => OidcError::UnknownSigningKey {
            kid: None,
            rate_limited: false,
        },
        C::SignatureVerification(other) => OidcError::InvalidSignature(other.to_string()),
        other => OidcError::IdTokenRejected(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn at_hash_matches_the_spec_example() {
        // OIDC Core appendix A.3: access token and at_hash of the RS256 example.
        assert_eq!(
            token_hash(
                "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y",
                SigningAlg::RS256
            ),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }

    #[test]
    fn userinfo_merge_requires_same_subject_and_keeps_signed_claims() {
        let mut c = json!({"sub":"a","email":"signed@x","iss":"i"})
            .as_object()
            .cloned()
            .unwrap();
        let info = json!({"sub":"a","email":"other@x","iss":"evil","groups":["g"]});
        merge_userinfo(&mut c, info.as_object().cloned().unwrap()).unwrap();
        assert_eq!(c["email"], "signed@x");
        assert_eq!(c["iss"], "i");
        assert_eq!(c["groups"], json!(["g"]));

        let mut c = json!({"sub":"a"}).as_object().cloned().unwrap();
        let info = json!({"sub":"b","email":"x"}).as_object().cloned().unwrap();
        assert!(matches!(
            merge_userinfo(&mut c, info),
            Err(OidcError::UserinfoSubjectMismatch)
        ));
        let info = json!({"email":"x"}).as_object().cloned().unwrap();
        assert!(matches!(
            merge_userinfo(&mut c, info),
            Err(OidcError::UserinfoSubjectMismatch)
        ));
        assert!(!c.contains_key("email"));
    }

    #[test]
    fn split_jwt_rejects_non_jws() {
        for bad in ["", "a.b", "a.b.c.d", "!!.e30.sig", "e30.e30"] {
            assert!(split_jwt(bad).is_err(), "{bad}");
        }
        assert!(split_jwt("e30.e30.sig").is_ok());
    }
}
