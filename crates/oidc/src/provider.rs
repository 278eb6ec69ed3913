//! Provider metadata (discovery) and signing keys (JWKS), cached and refreshed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::CoreJsonWebKey;
use serde::Deserialize;
use tokio::sync::Mutex;
use url::Url;

use crate::http::{json_error, read_capped, transport_error};
use crate::settings::check_url;
use crate::{OidcError, OidcSettings};

/// The parts of an OpenID Provider's discovery document we use.
///
/// Deliberately lenient about everything else: `openidconnect`'s `CoreProviderMetadata` refuses
/// documents that list an algorithm or claim type it does not know, and real providers add new
/// ones over time.
#[derive(Clone, Debug, Deserialize)]
#[non_exhaustive]
pub struct ProviderMetadata {
    /// The provider's issuer identifier (must equal the configured one exactly).
    pub issuer: String,
    /// Where the browser is sent.
    pub authorization_endpoint: Url,
    /// Where codes are exchanged.
    pub token_endpoint: Url,
    /// Userinfo endpoint, if any.
    #[serde(default)]
    pub userinfo_endpoint: Option<Url>,
    /// The provider's JWKS.
    pub jwks_uri: Url,
    /// Token endpoint auth methods the provider accepts (absent means `client_secret_basic`).
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// PKCE methods the provider advertises.
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
    /// RFC 9207: the provider puts `iss` on every authorization response, so a callback
    /// without it must be refused (mix-up defence).
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

struct Cached<T> {
    value: Arc<T>,
    fetched: Instant,
}

#[derive(Default)]
struct State {
    metadata: Option<Cached<ProviderMetadata>>,
    jwks: Option<Cached<Vec<CoreJsonWebKey>>>,
    /// Last JWKS fetch *attempt*, successful or not: the rate limit counts attempts.
    last_jwks_attempt: Option<Instant>,
}

/// Result of asking for a JWKS re-fetch after an unknown `kid`.
pub(crate) enum Refetch {
    /// Fresh keys.
    Fetched(Arc<Vec<CoreJsonWebKey>>),
    /// Skipped: the last fetch was too recent.
    RateLimited,
}

/// Per-connection cache of the discovery document and the JWKS.
///
/// One async mutex serialises fetches, so a burst of logins after expiry triggers one fetch, not
/// one per login. A failed discovery refresh keeps serving the previous document (logged), so a
/// provider blip does not break logins that would otherwise succeed.
pub(crate) struct ProviderCache {
    issuer: String,
    discovery_url: Url,
    ttl: Duration,
    refetch_interval: Duration,
    allow_insecure_http: bool,
    http: reqwest::Client,
    state: Mutex<State>,
}

impl ProviderCache {
    pub(crate) fn new(settings: &OidcSettings, http: reqwest::Client) -> Result<Self, OidcError> {
        Ok(Self {
            issuer: settings.issuer.clone(),
            discovery_url: settings.discovery_url()?,
            ttl: settings.discovery_ttl,
            refetch_interval: settings.jwks_refetch_min_interval,
            allow_insecure_http: settings.allow_insecure_http,
            http,
            state: Mutex::new(State::default()),
        })
    }

    /// The discovery document, fetched when missing or older than the TTL.
    pub(crate) async fn metadata(&self) -> Result<Arc<ProviderMetadata>, OidcError> {
        let mut st = self.state.lock().await;
        if let Some(c) = &st.metadata {
            if c.fetched.elapsed() < self.ttl {
                return Ok(c.value.clone());
            }
        }
        match self.fetch_metadata().await {
            Ok(m) => {
                let m = Arc::new(m);
                let changed_jwks_uri = st
                    .metadata
                    .as_ref()
                    .is_some_and(|old| old.value.jwks_uri != m.jwks_uri);
                if changed_jwks_uri {
                    st.jwks = None;
                }
                st.metadata = Some(Cached {
                    value: m.clone(),
                    fetched: Instant::now(),
                });
                Ok(m)
            }
            Err(e) => match &st.metadata {
                Some(old) => {
                    tracing::warn!(issuer = %self.issuer, error = %e, "discovery refresh failed; using the cached document");
                    Ok(old.value.clone())
                }
                None => Err(e),
            },
        }
    }

    /// The signing keys, fetched when missing or older than the TTL.
    pub(crate) async fn jwks(
        &self,
        metadata: &ProviderMetadata,
    ) -> Result<Arc<Vec<CoreJsonWebKey>>, OidcError> {
        let mut st = self.state.lock().await;
        if let Some(c) = &st.jwks {
            if c.fetched.elapsed() < self.ttl {
                return Ok(c.value.clone());
            }
        }
        self.fetch_jwks_locked(&mut st, metadata).await
    }

    /// Re-fetches the JWKS because a token named a key we do not have (rotation at the
    /// provider), unless the last fetch happened less than `jwks_refetch_min_interval` ago.
    pub(crate) async fn refetch_jwks(
        &self,
        metadata: &ProviderMetadata,
    ) -> Result<Refetch, OidcError> {
        let mut st = self.state.lock().await;
        if st
            .last_jwks_attempt
            .is_some_and(|t| t.elapsed() < self.refetch_interval)
        {
            tracing::warn!(issuer = %self.issuer, "unknown kid but JWKS was fetched recently; not re-fetching");
            return Ok(Refetch::RateLimited);
        }
        tracing::info!(issuer = %self.issuer, "unknown kid: re-fetching JWKS");
        self.fetch_jwks_locked(&mut st, metadata)
            .await
            .map(Refetch::Fetched)
    }

    async fn fetch_jwks_locked(
        &self,
        st: &mut State,
        metadata: &ProviderMetadata,
    ) -> Result<Arc<Vec<CoreJsonWebKey>>, OidcError> {
        st.last_jwks_attempt = Some(Instant::now());
        let keys = Arc::new(self.fetch_jwks(&metadata.jwks_uri).await?);
        st.jwks = Some(Cached {
            value: keys.clone(),
            fetched: Instant::now(),
        });
        Ok(keys)
    }

    #[tracing::instrument(name = "oidc.discovery", skip(self), fields(url = %self.discovery_url))]
    async fn fetch_metadata(&self) -> Result<ProviderMetadata, OidcError> {
        check_url(
            &self.discovery_url,
            self.allow_insecure_http,
            "discovery_url",
        )?;
        let body = self.get_json(&self.discovery_url, "discovery").await?;
        let meta: ProviderMetadata =
            serde_json::from_slice(&body).map_err(|e| json_error("discovery", &e))?;
        // OIDC Discovery §4.3: the document's issuer must be exactly the one we asked about,
        // otherwise a compromised or misconfigured document could make us accept another
        // provider's tokens.
        if meta.issuer != self.issuer {
            return Err(OidcError::Discovery(format!(
                "discovery document names issuer `{}` but the connection is configured for `{}`",
                meta.issuer, self.issuer
            )));
        }
        for (url, what) in [
            (&meta.authorization_endpoint, "authorization_endpoint"),
            (&meta.token_endpoint, "token_endpoint"),
            (&meta.jwks_uri, "jwks_uri"),
        ] {
            check_url(url, self.allow_insecure_http, what)
                .map_err(|e| OidcError::Discovery(e.to_string()))?;
        }
        if let Some(u) = &meta.userinfo_endpoint {
            check_url(u, self.allow_insecure_http, "userinfo_endpoint")
                .map_err(|e| OidcError::Discovery(e.to_string()))?;
        }
        tracing::debug!("discovery document fetched");
        Ok(meta)
    }

    #[tracing::instrument(name = "oidc.jwks", skip(self), fields(url = %url))]
    async fn fetch_jwks(&self, url: &Url) -> Result<Vec<CoreJsonWebKey>, OidcError> {
        /// Unknown or malformed keys are skipped, like openidconnect's own `JsonWebKeySet`:
        /// one exotic key (an encryption key, a new curve) must not break every login.
        #[derive(Deserialize)]
        struct RawSet {
            keys: Vec<serde_json::Value>,
        }
        let body = self.get_json(url, "jwks").await?;
        let raw: RawSet = serde_json::from_slice(&body).map_err(|e| json_error("jwks", &e))?;
        let keys: Vec<CoreJsonWebKey> = raw
            .keys
            .into_iter()
            // Symmetric keys never belong in a provider's public JWKS; dropping them means no
            // code path can ever verify an ID token with a shared key.
            .filter(|k| k.get("kty").and_then(|t| t.as_str()) != Some("oct"))
            .filter_map(|k| serde_json::from_value(k).ok())
            .collect();
        tracing::debug!(count = keys.len(), "JWKS fetched");
        Ok(keys)
    }

    async fn get_json(&self, url: &Url, endpoint: &'static str) -> Result<Vec<u8>, OidcError> {
        let resp = self
            .http
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| transport_error(endpoint, e))?;
        if !resp.status().is_success() {
            return Err(OidcError::HttpStatus {
                endpoint,
                status: resp.status().as_u16(),
            });
        }
        read_capped(resp, endpoint).await
    }
}
