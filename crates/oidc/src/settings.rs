//! Connection settings and the per-connection-type presets.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::{OidcError, Secret};

/// How the client authenticates at the token endpoint (RFC 6749 §2.3.1, OIDC Core §9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// `client_secret_basic`: HTTP Basic with the form-urlencoded id and secret (the OIDC default).
    #[default]
    ClientSecretBasic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// An ID token signature algorithm we are willing to accept.
///
/// Only asymmetric algorithms exist here: `none` and the HMAC family cannot be put on an
/// allow-list at all, which rules out unsigned tokens and the "HMAC keyed with the public key"
/// confusion by construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SigningAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
}

impl SigningAlg {
    /// The JOSE name (`RS256`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlg::RS256 => "RS256",
            SigningAlg::RS384 => "RS384",
            SigningAlg::RS512 => "RS512",
            SigningAlg::PS256 => "PS256",
            SigningAlg::PS384 => "PS384",
            SigningAlg::PS512 => "PS512",
            SigningAlg::ES256 => "ES256",
            SigningAlg::ES384 => "ES384",
        }
    }

    /// Parses a JOSE `alg` value; `None` for anything not on this list (HS*, none, EdDSA...).
    pub fn from_jose(alg: &str) -> Option<Self> {
        Some(match alg {
            "RS256" => SigningAlg::RS256,
            "RS384" => SigningAlg::RS384,
            "RS512" => SigningAlg::RS512,
            "PS256" => SigningAlg::PS256,
            "PS384" => SigningAlg::PS384,
            "PS512" => SigningAlg::PS512,
            "ES256" => SigningAlg::ES256,
            "ES384" => SigningAlg::ES384,
            _ => return None,
        })
    }

    /// Hash length family used for `at_hash` (OIDC Core §3.1.3.6): 256, 384 or 512.
    pub(crate) fn hash_bits(self) -> u16 {
        match self {
            SigningAlg::RS256 | SigningAlg::PS256 | SigningAlg::ES256 => 256,
            SigningAlg::RS384 | SigningAlg::PS384 | SigningAlg::ES384 => 384,
            SigningAlg::RS512 | SigningAlg::PS512 => 512,
        }
    }

    pub(crate) fn to_core(self) -> openidconnect::core::CoreJwsSigningAlgorithm {
        use openidconnect::core::CoreJwsSigningAlgorithm as C;
        match self {
            SigningAlg::RS256 => C::RsaSsaPkcs1V15Sha256,
            SigningAlg::RS384 => C::RsaSsaPkcs1V15Sha384,
            SigningAlg::RS512 => C::RsaSsaPkcs1V15Sha512,
            SigningAlg::PS256 => C::RsaSsaPssSha256,
            SigningAlg::PS384 => C::RsaSsaPssSha384,
            SigningAlg::PS512 => C::RsaSsaPssSha512,
            SigningAlg::ES256 => C::EcdsaP256Sha256,
            SigningAlg::ES384 => C::EcdsaP384Sha384,
        }
    }
}

/// Where each profile field comes from in the (ID token + userinfo) claims.
///
/// Every standard field is a list of claim names: the first one present with a non-empty value
/// wins (Entra puts the address in `email`, `preferred_username` or `upn` depending on the
/// tenant). A name containing dots that is not itself a claim is followed as a path into nested
/// objects (`realm_access.roles`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimMap {
    /// The IdP's stable user id (WorkOS `idp_id`).
    pub idp_id: Vec<String>,
    /// Email address.
    pub email: Vec<String>,
    /// Given name.
    pub first_name: Vec<String>,
    /// Family name.
    pub last_name: Vec<String>,
    /// Display name; when absent it is built from first and last name.
    pub name: Vec<String>,
    /// Group names or ids: an array of strings or a single string.
    pub groups: Vec<String>,
    /// `custom_attributes` key → claim name (or dotted path).
    pub custom: BTreeMap<String, String>,
}

impl Default for ClaimMap {
    fn default() -> Self {
        Self {
            idp_id: vec!["sub".into()],
            email: vec!["email".into()],
            first_name: vec!["given_name".into()],
            last_name: vec!["family_name".into()],
            name: vec!["name".into()],
            groups: vec!["groups".into()],
            custom: BTreeMap::new(),
        }
    }
}

/// The OIDC connection types of the WorkOS API (`connection_type`) that this crate serves.
///
/// `LoginGovOidc` is deliberately absent: login.gov only accepts `private_key_jwt` client
/// authentication, which this crate does not implement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConnectionType {
    /// Any standards-compliant provider.
    #[serde(rename = "GenericOIDC")]
    GenericOidc,
    /// Microsoft Entra ID (Azure AD) v2 endpoints.
    #[serde(rename = "EntraIdOIDC")]
    EntraIdOidc,
    /// Okta (org or custom authorization server).
    #[serde(rename = "OktaOIDC")]
    OktaOidc,
    /// Google Workspace.
    #[serde(rename = "GoogleOIDC")]
    GoogleOidc,
    /// ADP.
    #[serde(rename = "AdpOidc")]
    AdpOidc,
    /// Clever.
    #[serde(rename = "CleverOIDC")]
    CleverOidc,
}

impl ConnectionType {
    /// Every supported type, for listing them (e.g. in an admin UI or validation message).
    pub const ALL: [ConnectionType; 6] = [
        ConnectionType::GenericOidc,
        ConnectionType::EntraIdOidc,
        ConnectionType::OktaOidc,
        ConnectionType::GoogleOidc,
        ConnectionType::AdpOidc,
        ConnectionType::CleverOidc,
    ];

    /// The WorkOS spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionType::GenericOidc => "GenericOIDC",
            ConnectionType::EntraIdOidc => "EntraIdOIDC",
            ConnectionType::OktaOidc => "OktaOIDC",
            ConnectionType::GoogleOidc => "GoogleOIDC",
            ConnectionType::AdpOidc => "AdpOidc",
            ConnectionType::CleverOidc => "CleverOIDC",
        }
    }

    /// Scopes requested by default.
    ///
    /// Okta only emits a `groups` claim when the `groups` scope is asked for (and a groups claim
    /// is configured on the authorization server); the others carry groups in the ID token
    /// (Entra, when "groups claim" is enabled) or not at all (Google).
    pub fn default_scopes(self) -> Vec<String> {
        let mut s: Vec<String> = ["openid", "profile", "email"].map(String::from).to_vec();
        if self == ConnectionType::OktaOidc {
            s.push("groups".into());
        }
        s
    }

    /// The claim map preset for this connection type.
    ///
    /// * Generic, ADP, Clever: standard claims (`sub`, `email`, `given_name`, `family_name`,
    ///   `name`, `groups`).
    /// * Entra ID: `idp_id` from `oid` (the user's object id, the same across apps and the one
    ///   Entra's SCIM feed uses as `externalId`; Entra's `sub` is pairwise per application), then
    ///   `sub`; email from `email`, then `preferred_username`, then `upn`; `groups` (object ids
    ///   when the app's "groups claim" is on; the overage indirection `_claim_names` is not
    ///   followed); custom `tenant_id` ← `tid`.
    /// * Okta: standard claims, plus the `groups` scope; custom `okta_user_id` ← `uid` is not
    ///   used because `sub` already is the Okta user id.
    /// * Google: standard claims; custom `hosted_domain` ← `hd` (restrict logins to a Workspace
    ///   domain with [`OidcSettings::required_claim_values`]`{"hd": [domain]}`).
    pub fn claim_map(self) -> ClaimMap {
        let mut m = ClaimMap::default();
        match self {
            ConnectionType::EntraIdOidc => {
                m.idp_id = vec!["oid".into(), "sub".into()];
                m.email = vec!["email".into(), "preferred_username".into(), "upn".into()];
                m.custom.insert("tenant_id".into(), "tid".into());
            }
            ConnectionType::GoogleOidc => {
                m.custom.insert("hosted_domain".into(), "hd".into());
            }
            ConnectionType::GenericOidc
            | ConnectionType::OktaOidc
            | ConnectionType::AdpOidc
            | ConnectionType::CleverOidc => {}
        }
        m
    }
}

impl FromStr for ConnectionType {
    type Err = OidcError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                OidcError::InvalidSettings(format!("unsupported OIDC connection type `{s}`"))
            })
    }
}

/// Everything the relying party needs to know about one connection.
///
/// Build it with [`OidcSettings::new`] (which applies the connection type's preset) and adjust
/// fields as needed. `Debug` is safe to log: the secret prints as `[redacted]`.
#[derive(Clone, Debug)]
pub struct OidcSettings {
    /// Connection type; only used for presets and logs.
    pub connection_type: ConnectionType,
    /// The issuer identifier; the discovery document and every ID token must name exactly this
    /// string. Kept as a string, not a `Url`, because URL normalisation adds a trailing `/` to
    /// `https://accounts.google.com` and the comparison must be exact (OIDC Core §3.1.3.7).
    pub issuer: String,
    /// Discovery document URL when it is not `{issuer}/.well-known/openid-configuration`.
    pub discovery_url: Option<Url>,
    /// OAuth client id registered at the provider.
    pub client_id: String,
    /// OAuth client secret (decrypted from the store or read with [`Secret::from_env`]).
    pub client_secret: Secret,
    /// Token endpoint client authentication.
    pub auth_method: AuthMethod,
    /// Scopes to request; `openid` is added if missing.
    pub scopes: Vec<String>,
    /// Claim → profile mapping.
    pub claim_map: ClaimMap,
    /// Accepted ID token algorithms (default RS256, ES256, PS256).
    pub allowed_algs: Vec<SigningAlg>,
    /// Clock skew tolerated on `exp`, `iat` and `nbf` (default 60 s, capped at 5 min).
    pub clock_skew: Duration,
    /// Oldest `iat` accepted, before skew (default 10 min): codes are exchanged within seconds.
    pub max_id_token_age: Duration,
    /// Whether to call the userinfo endpoint (when the provider has one) and merge its claims.
    pub fetch_userinfo: bool,
    /// Refuse logins whose `email_verified` claim is explicitly `false` (default true).
    pub reject_unverified_email: bool,
    /// Claims that must be present with one of the listed string values (e.g. Google `hd`).
    pub required_claim_values: BTreeMap<String, Vec<String>>,
    /// How long a discovery document (and the JWKS fetched with it) is trusted (default 1 h).
    pub discovery_ttl: Duration,
    /// Minimum time between two JWKS re-fetches triggered by an unknown `kid` (default 30 s), so
    /// a stream of forged tokens cannot make us hammer the provider.
    pub jwks_refetch_min_interval: Duration,
    /// Allow `http://` URLs for non-loopback hosts (default false; loopback is always allowed so
    /// tests and local providers work).
    pub allow_insecure_http: bool,
}

/// Upper bound on the configurable clock skew: more than this defeats expiry checks.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

impl OidcSettings {
    /// Settings with the preset of `connection_type` (scopes, claim map) and safe defaults.
    pub fn new(
        connection_type: ConnectionType,
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: Secret,
    ) -> Self {
        Self {
            connection_type,
            issuer: issuer.into(),
            discovery_url: None,
            client_id: client_id.into(),
            client_secret,
            auth_method: AuthMethod::default(),
            scopes: connection_type.default_scopes(),
            claim_map: connection_type.claim_map(),
            allowed_algs: vec![SigningAlg::RS256, SigningAlg::ES256, SigningAlg::PS256],
            clock_skew: Duration::from_secs(60),
            max_id_token_age: Duration::from_secs(600),
            fetch_userinfo: true,
            reject_unverified_email: true,
            required_claim_values: BTreeMap::new(),
            discovery_ttl: Duration::from_secs(3600),
            jwks_refetch_min_interval: Duration::from_secs(30),
            allow_insecure_http: false,
        }
    }

    /// The discovery document URL (explicit, or derived from the issuer per OIDC Discovery §4).
    pub fn discovery_url(&self) -> Result<Url, OidcError> {
        if let Some(u) = &self.discovery_url {
            return Ok(u.clone());
        }
        let base = self.issuer.trim_end_matches('/');
        Url::parse(&format!("{base}/.well-known/openid-configuration"))
            .map_err(|e| OidcError::InvalidSettings(format!("cannot derive discovery URL: {e}")))
    }

    /// Checks the settings for mistakes that would make logins fail or be unsafe.
    pub fn validate(&self) -> Result<(), OidcError> {
        if self.client_id.trim().is_empty() {
            return Err(OidcError::InvalidSettings("client_id is empty".into()));
        }
        if self.client_secret.is_empty() {
            return Err(OidcError::InvalidSettings("client_secret is empty".into()));
        }
        if self.allowed_algs.is_empty() {
            return Err(OidcError::InvalidSettings("allowed_algs is empty".into()));
        }
        if self.clock_skew > MAX_CLOCK_SKEW {
            return Err(OidcError::InvalidSettings(format!(
                "clock_skew {:?} exceeds the maximum {:?}",
                self.clock_skew, MAX_CLOCK_SKEW
            )));
        }
        let issuer = Url::parse(&self.issuer)
            .map_err(|e| OidcError::InvalidSettings(format!("issuer is not a URL: {e}")))?;
        if issuer.query().is_some() || issuer.fragment().is_some() {
            return Err(OidcError::InvalidSettings(
                "issuer must not have a query or fragment".into(),
            ));
        }
        check_url(&issuer, self.allow_insecure_http, "issuer")?;
        check_url(
            &self.discovery_url()?,
            self.allow_insecure_http,
            "discovery_url",
        )?;
        Ok(())
    }

    /// Scopes to send, with `openid` guaranteed and duplicates removed.
    pub(crate) fn effective_scopes(&self) -> Vec<String> {
        let mut out = vec!["openid".to_string()];
        for s in &self.scopes {
            if !s.is_empty() && !out.contains(s) {
                out.push(s.clone());
            }
        }
        out
    }
}

/// Refuses anything but `https`, except `http` on loopback (or everywhere when allowed).
pub(crate) fn check_url(url: &Url, allow_insecure_http: bool, what: &str) -> Result<(), OidcError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || is_loopback(url) => Ok(()),
        other => Err(OidcError::InvalidSettings(format!(
            "{what} must use https (got `{other}` for host {:?})",
            url.host_str().unwrap_or("")
        ))),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(issuer: &str) -> OidcSettings {
        OidcSettings::new(
            ConnectionType::GenericOidc,
            issuer,
            "client",
            Secret::new("s3cret"),
        )
    }

    #[test]
    fn connection_types_round_trip() {
        for t in ConnectionType::ALL {
            assert_eq!(t.as_str().parse::<ConnectionType>().unwrap(), t);
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
        assert!("LoginGovOidc".parse::<ConnectionType>().is_err());
        assert!("GenericSAML".parse::<ConnectionType>().is_err());
    }

    #[test]
    fn presets_differ_where_documented() {
        let entra = ConnectionType::EntraIdOidc.claim_map();
        assert_eq!(entra.idp_id, vec!["oid", "sub"]);
        assert!(entra.email.contains(&"upn".to_string()));
        assert!(ConnectionType::OktaOidc
            .default_scopes()
            .contains(&"groups".to_string()));
        assert!(!ConnectionType::GoogleOidc
            .default_scopes()
            .contains(&"groups".to_string()));
        assert_eq!(
            ConnectionType::GoogleOidc
                .claim_map()
                .custom
                .get("hosted_domain")
                .map(String::as_str),
            Some("hd")
        );
    }

    #[test]
    fn discovery_url_is_derived_without_double_slash() {
        let s = settings("https://idp.example.com/tenant/");
        assert_eq!(
            s.discovery_url().unwrap().as_str(),
            "https://idp.example.com/tenant/.well-known/openid-configuration"
        );
    }

    #[test]
    fn validate_rejects_plain_http_off_loopback() {
        assert!(settings("https://idp.example.com").validate().is_ok());
        assert!(settings("http://127.0.0.1:8080").validate().is_ok());
        assert!(settings("http://localhost:8080").validate().is_ok());
        let err = settings("http://idp.example.com").validate().unwrap_err();
        assert!(matches!(err, OidcError::InvalidSettings(_)), "{err}");
        let mut s = settings("http://idp.example.com");
        s.allow_insecure_http = true;
        assert!(s.validate().is_ok());
    }

    #[test]
    fn validate_rejects_bad_values() {
        assert!(settings("not a url").validate().is_err());
        assert!(settings("https://idp.example.com/?x=1").validate().is_err());
        let mut s = settings("https://idp.example.com");
        s.allowed_algs.clear();
        assert!(s.validate().is_err());
        let mut s = settings("https://idp.example.com");
        s.clock_skew = Duration::from_secs(3600);
        assert!(s.validate().is_err());
        let mut s = settings("https://idp.example.com");
        s.client_id = " ".into();
        assert!(s.validate().is_err());
        let mut s = settings("https://idp.example.com");
        s.client_secret = Secret::new("");
        assert!(s.validate().is_err());
    }

    #[test]
    fn alg_allow_list_cannot_hold_none_or_hmac() {
        for alg in ["none", "HS256", "HS384", "HS512", "EdDSA", ""] {
            assert_eq!(SigningAlg::from_jose(alg), None, "{alg}");
        }
        for alg in ["RS256", "ES256", "PS256", "RS384", "PS512", "ES384"] {
            assert_eq!(
                SigningAlg::from_jose(alg).map(SigningAlg::as_str),
                Some(alg)
            );
        }
    }

    #[test]
    fn scopes_always_include_openid_once() {
        let mut s = settings("https://idp.example.com");
        s.scopes = vec!["email".into(), "openid".into(), "email".into()];
        assert_eq!(s.effective_scopes(), vec!["openid", "email"]);
    }
}
