//! `/connections` (workos-api.md §2.1, §8.2) and the per-connection SAML SP material.
//!
//! A connection record is the WorkOS wire object plus private protocol settings. Private keys
//! and client secrets are sealed with the [`SecretBox`](super::SecretBox) before they reach the
//! store and never leave through the API: handlers serialize only [`Connection`].

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use idbridge_model::tag::{ConnectionDomainTag, ConnectionTag};
use idbridge_model::{
    new_id, parse_id, Connection, ConnectionDomain, ConnectionState, IdPrefix, List, Organization,
    Timestamp,
};
use idbridge_oidc::ClaimMap;
use idbridge_saml::{AttributeMap, IdpSettings, SamlConnectionType, SpKeyPair, SpSettings};
use idbridge_store::{ChangeSet, StoreError};
use openssl::x509::X509;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::secrets::SecretError;
use crate::body::{Fields, JsonObject, Query};
use crate::db::to_json;
use crate::error::{ApiError, ApiResult};
use crate::pagination::{paginate, PageRequest};
use crate::{events, tables, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/connections", get(list).post(create))
        .route("/connections/{id}", get(get_one).delete(delete))
        .route("/admin/connections/{id}", get(admin_view))
        .route(
            "/admin/connections/{id}/rotate_sp_keys",
            post(rotate_sp_keys),
        )
}

/// Validity of generated SP certificates. SAML peers pin them, so expiry is a formality, but
/// some IdPs refuse expired ones: rotate before then.
const SP_CERT_DAYS: u32 = 3650;
/// Keys kept per purpose: the current one and the previous one during a rollover.
const MAX_SP_KEYS: usize = 2;
/// Largest IdP metadata document fetched from a URL.
pub const MAX_METADATA_BYTES: usize = 1024 * 1024;
const MAX_NAME_LEN: usize = 512;

/// What the store holds for one connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionRecord {
    /// The wire object (domains are filled in from the organization when served).
    pub connection: Connection,
    pub external_id: Option<String>,
    /// Set on the first successful login (`connection.activated` is emitted once).
    pub activated_at: Option<Timestamp>,
    pub protocol: ProtocolSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "protocol", rename_all = "snake_case")]
pub enum ProtocolSettings {
    Saml(SamlConnection),
    Oidc(OidcConnection),
}

/// SAML settings: what we trust about the IdP and our own SP material.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SamlConnection {
    pub idp_metadata_url: Option<String>,
    pub idp_entity_id: String,
    pub idp_sso_url: Option<String>,
    /// PEM certificates (two during an IdP rollover).
    pub idp_signing_certs: Vec<String>,
    pub idp_wants_signed_requests: bool,
    pub sp_entity_id: String,
    pub acs_url: String,
    /// First signs AuthnRequests; all are published in the SP metadata.
    pub sp_signing_keys: Vec<StoredKeyPair>,
    /// All are tried for decryption; all are published.
    pub sp_encryption_keys: Vec<StoredKeyPair>,
    pub sign_requests: bool,
    pub allow_idp_initiated: bool,
    pub clock_skew_secs: u64,
    pub attribute_map: AttributeMap,
    /// SHA-256 fingerprints of certificates already announced with
    /// `connection.saml_certificate_renewal_required` (announced once each).
    #[serde(default)]
    pub renewal_notified: Vec<String>,
}

/// An SP key pair with the private key sealed. `Debug` shows only the certificate.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredKeyPair {
    pub cert_pem: String,
    pub key_sealed: String,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for StoredKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKeyPair")
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// OIDC settings; the client secret is sealed, or read from an environment variable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OidcConnection {
    pub issuer: String,
    pub discovery_url: Option<String>,
    pub client_id: String,
    pub client_secret_sealed: Option<String>,
    pub client_secret_env: Option<String>,
    pub scopes: Vec<String>,
    pub claim_map: ClaimMap,
}

fn key_context(conn_id: &str, purpose: &str) -> String {
    format!("{conn_id}/{purpose}")
}

impl ConnectionRecord {
    pub fn id(&self) -> &str {
        &self.connection.id
    }

    /// A monotone version for caches of derived objects (OIDC clients).
    pub fn version(&self) -> i64 {
        self.connection.updated_at.as_millis()
    }
}

fn open_key(
    secrets: &super::SecretBox,
    conn_id: &str,
    purpose: &str,
    k: &StoredKeyPair,
) -> Result<SpKeyPair, ApiError> {
    let pem = secrets
        .open(&key_context(conn_id, purpose), &k.key_sealed)
        .map_err(ApiError::internal)?;
    SpKeyPair::from_pem(&pem, k.cert_pem.as_bytes()).map_err(ApiError::internal)
}

impl SamlConnection {
    /// SP settings with the private keys unsealed (kept in memory only for one request).
    pub fn sp_settings(
        &self,
        conn_id: &str,
        secrets: Option<&super::SecretBox>,
    ) -> ApiResult<SpSettings> {
        let mut sp = SpSettings::new(&self.sp_entity_id, &self.acs_url);
        sp.allow_idp_initiated = self.allow_idp_initiated;
        sp.clock_skew = std::time::Duration::from_secs(self.clock_skew_secs);
        sp.want_signed_requests = self.sign_requests;
        if let Some(secrets) = secrets {
            for k in &self.sp_signing_keys {
                sp.signing_keys
                    .push(open_key(secrets, conn_id, "sp_signing_key", k)?);
            }
            for k in &self.sp_encryption_keys {
                sp.decryption_keys
                    .push(open_key(secrets, conn_id, "sp_encryption_key", k)?);
            }
        }
        Ok(sp)
    }

    /// SP settings with certificates only (metadata needs no private key).
    pub fn public_sp_settings(&self) -> ApiResult<SpSettings> {
        let mut sp = SpSettings::new(&self.sp_entity_id, &self.acs_url);
        sp.want_signed_requests = self.sign_requests;
        sp.allow_idp_initiated = self.allow_idp_initiated;
        // Metadata only reads certificates, so an ephemeral key stands in for the private part.
        for (list, out) in [
            (&self.sp_signing_keys, &mut sp.signing_keys),
            (&self.sp_encryption_keys, &mut sp.decryption_keys),
        ] {
            for k in list {
                let cert = X509::from_pem(k.cert_pem.as_bytes()).map_err(ApiError::internal)?;
                out.push(SpKeyPair {
                    key: placeholder_key()?,
                    cert,
                });
            }
        }
        Ok(sp)
    }

    pub fn idp_settings(&self) -> ApiResult<IdpSettings> {
        let certs: Vec<&[u8]> = self
            .idp_signing_certs
            .iter()
            .map(|c| c.as_bytes())
            .collect();
        let mut idp = IdpSettings::new(&self.idp_entity_id, self.idp_sso_url.clone(), &certs)
            .map_err(ApiError::internal)?;
        idp.wants_signed_requests = self.idp_wants_signed_requests;
        Ok(idp)
    }
}

/// A tiny EC key used only to satisfy `SpKeyPair` when rendering metadata (never signs).
fn placeholder_key() -> ApiResult<openssl::pkey::PKey<openssl::pkey::Private>> {
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
        .map_err(ApiError::internal)?;
    let ec = openssl::ec::EcKey::generate(&group).map_err(ApiError::internal)?;
    openssl::pkey::PKey::from_ec_key(ec).map_err(ApiError::internal)
}

const SAML_TYPES: &[(&str, SamlConnectionType)] = &[
    ("GenericSAML", SamlConnectionType::GenericSAML),
    ("OktaSAML", SamlConnectionType::OktaSAML),
    ("AzureSAML", SamlConnectionType::AzureSAML),
    ("ADFSSAML", SamlConnectionType::ADFSSAML),
    ("GoogleSAML", SamlConnectionType::GoogleSAML),
    ("KeycloakSAML", SamlConnectionType::KeycloakSAML),
    ("OneLoginSAML", SamlConnectionType::OneLoginSAML),
    ("PingFederateSAML", SamlConnectionType::PingFederateSAML),
];

fn saml_type(s: &str) -> Option<SamlConnectionType> {
    SAML_TYPES.iter().find(|(n, _)| *n == s).map(|(_, t)| *t)
}

/// Parses one certificate given as PEM or base64 DER; returns PEM.
fn cert_to_pem(text: &str) -> Option<String> {
    use base64::Engine as _;
    let t = text.trim();
    let cert = if t.starts_with("-----BEGIN") {
        X509::from_pem(t.as_bytes()).ok()?
    } else {
        let compact: String = t.chars().filter(|c| !c.is_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .ok()?;
        X509::from_der(&der).ok()?
    };
    String::from_utf8(cert.to_pem().ok()?).ok()
}

fn certs_to_pem(idp: &IdpSettings) -> ApiResult<Vec<String>> {
    idp.signing_certs
        .iter()
        .map(|c| {
            c.to_pem()
                .map_err(ApiError::internal)
                .and_then(|p| String::from_utf8(p).map_err(ApiError::internal))
        })
        .collect()
}

/// Fetches IdP metadata from a URL (size-capped, no redirects, short timeout).
pub async fn fetch_metadata(state: &AppState, url: &str) -> Result<String, String> {
    let http = state
        .sso
        .http
        .as_ref()
        .ok_or_else(|| "no HTTP client".to_string())?;
    let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err("not an http(s) URL".into());
    }
    let mut resp = http
        .get(parsed)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_METADATA_BYTES {
            return Err("metadata too large".into());
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "metadata is not UTF-8".to_string())
}

/// The attribute map: the type's preset, with `attribute_maps` (py10 shape) taking precedence.
fn parse_attribute_map(f: &mut Fields<'_>, kind: SamlConnectionType) -> AttributeMap {
    let mut map = AttributeMap::preset(kind);
    let Some(obj) = f.opt_object("attribute_maps") else {
        return map;
    };
    if let Some(std_attrs) = obj.get("standard_attributes") {
        match std_attrs {
            Value::Object(m) => {
                for (k, v) in m {
                    let Some(src) = v.as_str().filter(|s| !s.trim().is_empty()) else {
                        if !v.is_null() {
                            f.error(
                                &format!("attribute_maps.standard_attributes.{k}"),
                                "must_be_string",
                            );
                        }
                        continue;
                    };
                    let list = match k.as_str() {
                        "idp_id" => &mut map.idp_id,
                        "email" => &mut map.email,
                        "first_name" => &mut map.first_name,
                        "last_name" => &mut map.last_name,
                        "groups" => &mut map.groups,
                        // `name` is derived from first and last name.
                        "name" => continue,
                        _ => {
                            f.error(
                                &format!("attribute_maps.standard_attributes.{k}"),
                                "unknown_attribute",
                            );
                            continue;
                        }
                    };
                    list.retain(|s| s != src);
                    list.insert(0, src.to_string());
                }
            }
            Value::Null => {}
            _ => f.error("attribute_maps.standard_attributes", "must_be_object"),
        }
    }
    map.custom = parse_custom(f, obj);
    map
}

fn parse_custom(
    f: &mut Fields<'_>,
    obj: &Map<String, Value>,
) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    match obj.get("custom_attributes") {
        Some(Value::Object(m)) => {
            for (k, v) in m {
                match v.as_str() {
                    Some(s) if !s.trim().is_empty() && !k.is_empty() => {
                        out.insert(k.clone(), s.to_string());
                    }
                    _ => f.error(
                        &format!("attribute_maps.custom_attributes.{k}"),
                        "must_be_string",
                    ),
                }
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => f.error("attribute_maps.custom_attributes", "must_be_object"),
    }
    out
}

fn opt_str(
    f: &mut Fields<'_>,
    obj: &Map<String, Value>,
    prefix: &str,
    key: &str,
) -> Option<String> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.trim().to_string()),
        Some(_) => {
            f.error(&format!("{prefix}.{key}"), "must_be_string");
            None
        }
    }
}

fn valid_http_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// Validates a create body and durably creates the connection with its SP keys.
#[tracing::instrument(name = "connections.create", skip_all)]
pub async fn create_connection(
    state: &AppState,
    body: &Map<String, Value>,
) -> ApiResult<Connection> {
    let mut f = Fields::new(body);
    let org_id = f.required_string("organization_id");
    let name = f.opt_string("name");
    if name.as_ref().is_some_and(|n| n.len() > MAX_NAME_LEN) {
        f.error("name", "too_long");
    }
    let external_id = f.opt_string("external_id");
    let ctype = f.opt_string("connection_type");
    let saml_opts = f.opt_object("saml_options");
    let oidc_opts = f.opt_object("oidc_options");
    let org: Option<Organization> = match &org_id {
        Some(id) if parse_id(IdPrefix::Organization, id).is_ok() => {
            let org = state
                .db
                .get_json::<Organization>(tables::ORGANIZATIONS, id)?;
            if org.is_none() {
                f.error("organization_id", "organization_not_found");
            }
            org
        }
        Some(_) => {
            f.error("organization_id", "invalid_id");
            None
        }
        None => None,
    };
    let is_oidc = match (ctype.as_deref(), saml_opts, oidc_opts) {
        (Some(t), _, _) if saml_type(t).is_some() => false,
        (Some(t), _, _) if t.parse::<idbridge_oidc::ConnectionType>().is_ok() => true,
        (Some(_), _, _) => {
            f.error("connection_type", "unsupported_connection_type");
            false
        }
        (None, _, Some(_)) => true,
        (None, _, None) => false,
    };
    // py10: "When external_id matches an existing connection in the organization, that
    // connection is returned instead of creating a duplicate."
    if let (Some(ext), Some(o)) = (&external_id, &org) {
        if let Some(existing) = state
            .db
            .get_raw(tables::CONNECTION_BY_EXTERNAL_ID, ext)?
            .and_then(|b| String::from_utf8(b).ok())
        {
            let record = load(state, &existing)?;
            if record.connection.organization_id.as_deref() == Some(o.id.as_str()) {
                return wire(state, &record);
            }
            f.error("external_id", "already_used_by_another_organization");
        }
    }
    let conn_id = new_id(IdPrefix::Connection);
    let now = Timestamp::from_millis(
        parse_id(IdPrefix::Connection, &conn_id)
            .map(|u| u.timestamp_ms() as i64)
            .unwrap_or_else(|_| Timestamp::now().as_millis()),
    );
    let public_url = state.config.public_url.clone();

    let (protocol, type_name) = if is_oidc {
        let t: idbridge_oidc::ConnectionType = ctype
            .as_deref()
            .and_then(|t| t.parse().ok())
            .unwrap_or(idbridge_oidc::ConnectionType::GenericOidc);
        let Some(o) = oidc_opts else {
            f.error("oidc_options", "required");
            f.finish()?;
            return Err(ApiError::invalid("oidc_options", "required"));
        };
        let p = parse_oidc(&mut f, o, t, &conn_id, state)?;
        (p, t.as_str().to_string())
    } else {
        let t = ctype
            .as_deref()
            .and_then(saml_type)
            .unwrap_or(SamlConnectionType::GenericSAML);
        let type_name = SAML_TYPES
            .iter()
            .find(|(_, k)| *k == t)
            .map(|(n, _)| (*n).to_string())
            .unwrap_or_else(|| "GenericSAML".into());
        let map = parse_attribute_map(&mut f, t);
        let Some(o) = saml_opts else {
            f.error("saml_options", "required");
            f.finish()?;
            return Err(ApiError::invalid("saml_options", "required"));
        };
        let p = parse_saml(&mut f, o, map, &conn_id, &public_url, state).await?;
        (p, type_name)
    };
    f.finish()?;
    let org = org.ok_or_else(|| ApiError::invalid("organization_id", "organization_not_found"))?;

    let connection = Connection {
        object: ConnectionTag,
        id: conn_id.clone(),
        organization_id: Some(org.id.clone()),
        connection_type: type_name,
        name: name.unwrap_or_else(|| org.name.clone()),
        state: ConnectionState::Draft,
        status: ConnectionState::Draft.status(),
        domains: Vec::new(),
        options: serde_json::json!({"signing_cert": null}),
        created_at: now,
        updated_at: now,
    };
    let record = ConnectionRecord {
        connection,
        external_id: external_id.clone(),
        activated_at: None,
        protocol,
    };
    let mut cs = ChangeSet::default();
    cs.require_absent(tables::CONNECTIONS, &conn_id);
    cs.put(tables::CONNECTIONS, &conn_id, to_json(&record)?);
    cs.put(
        tables::CONNECTIONS_BY_ORG,
        tables::org_connection_key(&org.id, &conn_id),
        conn_id.as_bytes().to_vec(),
    );
    if let Some(ext) = &external_id {
        cs.require_absent(tables::CONNECTION_BY_EXTERNAL_ID, ext);
        cs.put(
            tables::CONNECTION_BY_EXTERNAL_ID,
            ext,
            conn_id.as_bytes().to_vec(),
        );
    }
    let wire = with_domains(record.connection.clone(), Some(&org));
    // `connection.created` is not in the WorkOS event catalogue (workos-api.md §4.3): the first
    // event of a connection is `connection.activated`, on its first successful login.
    match state.db.commit(cs).await? {
        Ok(_) => {}
        Err(StoreError::Conflict(d)) if d.starts_with(tables::CONNECTION_BY_EXTERNAL_ID) => {
            return Err(ApiError::BadRequest {
                code: "external_id_already_used",
                message: "A connection with this external_id already exists.".into(),
            })
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(connection_id = %conn_id, organization_id = %org.id, "connection created");
    Ok(wire)
}

fn parse_oidc(
    f: &mut Fields<'_>,
    o: &Map<String, Value>,
    t: idbridge_oidc::ConnectionType,
    conn_id: &str,
    state: &AppState,
) -> ApiResult<ProtocolSettings> {
    let p = "oidc_options";
    let issuer = opt_str(f, o, p, "issuer");
    // py10 sends `discovery_endpoint`; `discovery_url` is accepted too.
    let discovery_url =
        opt_str(f, o, p, "discovery_endpoint").or(opt_str(f, o, p, "discovery_url"));
    if let Some(r) = opt_str(f, o, p, "redirect_uri") {
        if r != super::oidc_callback::callback_url(state) {
            // Our callback is fixed; the IdP must be registered with it.
            f.error(
                "oidc_options.redirect_uri",
                "must_be_the_default_redirect_uri",
            );
        }
    }
    let client_id = opt_str(f, o, p, "client_id");
    let secret = opt_str(f, o, p, "client_secret");
    let secret_env = opt_str(f, o, p, "client_secret_env");
    if issuer.is_none() && discovery_url.is_none() {
        f.error("oidc_options.discovery_endpoint", "required");
    }
    for (k, v) in [("issuer", &issuer), ("discovery_endpoint", &discovery_url)] {
        if v.as_deref().is_some_and(|u| !valid_http_url(u)) {
            f.error(&format!("oidc_options.{k}"), "invalid_url");
        }
    }
    if client_id.is_none() {
        f.error("oidc_options.client_id", "required");
    }
    match (&secret, &secret_env) {
        (None, None) => f.error("oidc_options.client_secret", "required"),
        (Some(_), Some(_)) => f.error(
            "oidc_options.client_secret_env",
            "exclusive_with_client_secret",
        ),
        _ => {}
    }
    let mut scopes = t.default_scopes();
    match o.get("scopes") {
        Some(Value::Array(a)) => {
            let parsed: Vec<String> = a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            if parsed.len() != a.len() {
                f.error("oidc_options.scopes", "must_be_array_of_strings");
            }
            scopes = parsed;
        }
        Some(Value::String(s)) => scopes = s.split_whitespace().map(str::to_string).collect(),
        None | Some(Value::Null) => {}
        Some(_) => f.error("oidc_options.scopes", "must_be_array"),
    }
    let mut claim_map = t.claim_map();
    if let Some(Value::Object(m)) = o.get("claim_map") {
        for (k, v) in m {
            let list = match k.as_str() {
                "idp_id" => &mut claim_map.idp_id,
                "email" => &mut claim_map.email,
                "first_name" => &mut claim_map.first_name,
                "last_name" => &mut claim_map.last_name,
                "name" => &mut claim_map.name,
                "groups" => &mut claim_map.groups,
                "custom_attributes" => {
                    claim_map.custom = parse_custom(f, m);
                    continue;
                }
                _ => {
                    f.error(&format!("oidc_options.claim_map.{k}"), "unknown_attribute");
                    continue;
                }
            };
            match v.as_str() {
                Some(s) if !s.trim().is_empty() => {
                    list.retain(|x| x != s);
                    list.insert(0, s.to_string());
                }
                _ => f.error(&format!("oidc_options.claim_map.{k}"), "must_be_string"),
            }
        }
    }
    let sealed = match &secret {
        Some(s) => Some(
            state
                .sso
                .secrets()
                .and_then(|b| b.seal(&key_context(conn_id, "oidc_client_secret"), s.as_bytes()))
                .map_err(secret_error)?,
        ),
        None => None,
    };
    Ok(ProtocolSettings::Oidc(OidcConnection {
        issuer: issuer
            .clone()
            .or_else(|| {
                discovery_url.as_deref().map(|d| {
                    d.trim_end_matches("/.well-known/openid-configuration")
                        .to_string()
                })
            })
            .unwrap_or_default(),
        discovery_url,
        client_id: client_id.unwrap_or_default(),
        client_secret_sealed: sealed,
        client_secret_env: secret_env,
        scopes,
        claim_map,
    }))
}

fn secret_error(e: SecretError) -> ApiError {
    match e {
        SecretError::NoKey => ApiError::BadRequest {
            code: "secret_key_not_configured",
            message: "This server has no secret key for connection secrets.".into(),
        },
        other => ApiError::internal(other),
    }
}

async fn parse_saml(
    f: &mut Fields<'_>,
    o: &Map<String, Value>,
    attribute_map: AttributeMap,
    conn_id: &str,
    public_url: &str,
    state: &AppState,
) -> ApiResult<ProtocolSettings> {
    let p = "saml_options";
    let metadata_url = opt_str(f, o, p, "idp_metadata_url");
    let metadata_xml = opt_str(f, o, p, "idp_metadata_xml");
    let entity_id = opt_str(f, o, p, "idp_entity_id");
    let sso_url = opt_str(f, o, p, "idp_sso_url");
    let sp_entity_id = opt_str(f, o, p, "sp_entity_id");
    let acs_url = opt_str(f, o, p, "acs_url");
    let default_acs = format!("{public_url}/sso/saml/acs/{conn_id}");
    if acs_url.as_deref().is_some_and(|a| a != default_acs) {
        // The ACS route is fixed by this server; pretending otherwise would break logins.
        f.error("saml_options.acs_url", "must_be_the_default_acs_url");
    }
    for k in ["sp_signing_key_pair", "sp_encryption_key_pairs"] {
        if o.get(k).is_some_and(|v| !v.is_null()) {
            f.error(
                &format!("saml_options.{k}"),
                "not_supported_keys_are_generated",
            );
        }
    }
    let allow_idp_initiated = match o.get("allow_idp_initiated") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            f.error("saml_options.allow_idp_initiated", "must_be_boolean");
            false
        }
    };
    let sign_requests = match o.get("sign_requests") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            f.error("saml_options.sign_requests", "must_be_boolean");
            false
        }
    };
    let max_skew = idbridge_saml::settings::MAX_CLOCK_SKEW.as_secs();
    let clock_skew_secs = match o.get("clock_skew_secs") {
        None | Some(Value::Null) => idbridge_saml::settings::DEFAULT_CLOCK_SKEW.as_secs(),
        Some(v) => match v.as_u64() {
            Some(n) if n <= max_skew => n,
            _ => {
                f.error("saml_options.clock_skew_secs", "must_be_between_0_and_600");
                0
            }
        },
    };
    let mut certs_in = Vec::new();
    match o.get("idp_signing_certs") {
        Some(Value::Array(a)) => {
            for (i, c) in a.iter().enumerate() {
                match c.as_str().and_then(cert_to_pem) {
                    Some(pem) => certs_in.push(pem),
                    None => f.error(
                        &format!("saml_options.idp_signing_certs[{i}]"),
                        "invalid_certificate",
                    ),
                }
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => f.error("saml_options.idp_signing_certs", "must_be_array"),
    }
    for (k, v) in [
        ("idp_sso_url", &sso_url),
        ("idp_metadata_url", &metadata_url),
    ] {
        if v.as_deref().is_some_and(|u| !valid_http_url(u)) {
            f.error(&format!("saml_options.{k}"), "invalid_url");
        }
    }

    // Where the IdP settings come from: inline XML, a URL, or explicit values.
    let from_metadata = match (&metadata_xml, &metadata_url) {
        (Some(xml), _) => Some(
            IdpSettings::from_metadata_xml(xml).map_err(|e| ("idp_metadata_xml", e.to_string())),
        ),
        (None, Some(url)) if valid_http_url(url) => Some(match fetch_metadata(state, url).await {
            Ok(xml) => IdpSettings::from_metadata_xml(&xml)
                .map_err(|e| ("idp_metadata_url", e.to_string())),
            Err(e) => Err(("idp_metadata_url", e)),
        }),
        _ => None,
    };
    let (idp_entity_id, idp_sso_url, idp_certs, wants_signed) = match from_metadata {
        Some(Ok(idp)) => (
            idp.entity_id.clone(),
            sso_url.clone().or(idp.sso_url.clone()),
            certs_to_pem(&idp)?,
            idp.wants_signed_requests,
        ),
        Some(Err((field, why))) => {
            tracing::info!(reason = %why, "IdP metadata rejected");
            f.error(&format!("saml_options.{field}"), "invalid_metadata");
            (String::new(), None, Vec::new(), false)
        }
        None => {
            if entity_id.is_none() {
                f.error("saml_options.idp_entity_id", "required");
            }
            if sso_url.is_none() {
                f.error("saml_options.idp_sso_url", "required");
            }
            if certs_in.is_empty() {
                // Never run a connection without a trusted IdP signing certificate.
                f.error("saml_options.idp_signing_certs", "required");
            }
            (
                entity_id.clone().unwrap_or_default(),
                sso_url.clone(),
                certs_in,
                false,
            )
        }
    };
    let secrets = state.sso.secrets().map_err(secret_error)?.clone();
    let cn = format!("idbridge SP {conn_id}");
    let (signing, encryption) = tokio::task::spawn_blocking(move || {
        let s = SpKeyPair::generate(&cn, SP_CERT_DAYS)?;
        let e = SpKeyPair::generate(&cn, SP_CERT_DAYS)?;
        Ok::<_, idbridge_saml::SamlError>((s, e))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    Ok(ProtocolSettings::Saml(SamlConnection {
        idp_metadata_url: metadata_url,
        idp_entity_id,
        idp_sso_url,
        idp_signing_certs: idp_certs,
        idp_wants_signed_requests: wants_signed,
        sp_entity_id: sp_entity_id.unwrap_or_else(|| format!("{public_url}/sso/saml/{conn_id}")),
        acs_url: default_acs,
        sp_signing_keys: vec![store_key(&secrets, conn_id, "sp_signing_key", &signing)?],
        sp_encryption_keys: vec![store_key(
            &secrets,
            conn_id,
            "sp_encryption_key",
            &encryption,
        )?],
        sign_requests,
        allow_idp_initiated,
        clock_skew_secs,
        attribute_map,
        renewal_notified: Vec::new(),
    }))
}

fn store_key(
    secrets: &super::SecretBox,
    conn_id: &str,
    purpose: &str,
    k: &SpKeyPair,
) -> ApiResult<StoredKeyPair> {
    let key_pem = k
        .key
        .private_key_to_pem_pkcs8()
        .map_err(ApiError::internal)?;
    let cert_pem = String::from_utf8(k.cert.to_pem().map_err(ApiError::internal)?)
        .map_err(ApiError::internal)?;
    Ok(StoredKeyPair {
        cert_pem,
        key_sealed: secrets
            .seal(&key_context(conn_id, purpose), &key_pem)
            .map_err(secret_error)?,
        created_at: Timestamp::now(),
    })
}

/// The connection with its organization's domains (WorkOS lists them on the connection).
pub fn with_domains(mut c: Connection, org: Option<&Organization>) -> Connection {
    c.domains = org
        .map(|o| {
            o.domains
                .iter()
                .map(|d| ConnectionDomain {
                    object: ConnectionDomainTag,
                    id: d.id.clone(),
                    domain: d.domain.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    c
}

/// `connection.*` event data: the Connection plus `external_key` (py10 requires it).
pub fn event_data(c: &Connection, record: &ConnectionRecord) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "external_key".into(),
            Value::String(record.external_id.clone().unwrap_or_else(|| c.id.clone())),
        );
    }
    v
}

/// Loads a connection record; unknown and malformed ids are both "not found".
pub fn load(state: &AppState, id: &str) -> ApiResult<ConnectionRecord> {
    if parse_id(IdPrefix::Connection, id).is_err() {
        return Err(ApiError::not_found("Connection", id));
    }
    state
        .db
        .get_json(tables::CONNECTIONS, id)?
        .ok_or_else(|| ApiError::not_found("Connection", id))
}

fn load_org(state: &AppState, id: Option<&str>) -> ApiResult<Option<Organization>> {
    match id {
        Some(id) => state.db.get_json(tables::ORGANIZATIONS, id),
        None => Ok(None),
    }
}

/// The wire object of a record, with current domains.
pub fn wire(state: &AppState, record: &ConnectionRecord) -> ApiResult<Connection> {
    let org = load_org(state, record.connection.organization_id.as_deref())?;
    Ok(with_domains(record.connection.clone(), org.as_ref()))
}

/// The connection ids of an organization.
pub fn org_connection_ids(state: &AppState, org_id: &str) -> ApiResult<Vec<String>> {
    let rows =
        state
            .db
            .store()
            .scan(tables::CONNECTIONS_BY_ORG, &format!("{org_id}/"), None, 101)?;
    Ok(rows
        .into_iter()
        .filter_map(|(_, v)| String::from_utf8(v).ok())
        .collect())
}

async fn create(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    let c = create_connection(&state, &body).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Connection>> {
    let record = load(&state, &id)?;
    Ok(Json(wire(&state, &record)?))
}

/// Deletes a connection and emits `connection.deleted` (data = the pre-deletion object).
#[tracing::instrument(name = "connections.delete", skip(state))]
pub async fn delete_connection(state: &AppState, id: &str) -> ApiResult<Connection> {
    let record = load(state, id)?;
    let conn = wire(state, &record)?;
    let mut cs = ChangeSet::default();
    cs.require_present(tables::CONNECTIONS, id);
    cs.delete(tables::CONNECTIONS, id);
    if let Some(org) = &conn.organization_id {
        cs.delete(
            tables::CONNECTIONS_BY_ORG,
            tables::org_connection_key(org, id),
        );
    }
    if let Some(ext) = &record.external_id {
        cs.delete(tables::CONNECTION_BY_EXTERNAL_ID, ext);
    }
    events::append(
        &mut cs,
        "connection.deleted",
        event_data(&conn, &record),
        conn.organization_id.as_deref(),
    );
    match state.db.commit(cs).await? {
        Ok(_) => {
            state.sso.forget_oidc_client(id);
            Ok(conn)
        }
        Err(StoreError::Conflict(_)) => Err(ApiError::not_found("Connection", id)),
        Err(e) => Err(e.into()),
    }
}

async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    delete_connection(&state, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list(State(state): State<AppState>, q: Query) -> ApiResult<Json<List<Connection>>> {
    let page = PageRequest::from_query(&q, IdPrefix::Connection)?;
    let ctype = q.get("connection_type").map(str::to_string);
    let org_filter = q.get("organization_id").map(str::to_string);
    let domain = q.get("domain").map(|d| d.to_ascii_lowercase());
    let search = q.get("search").map(|s| s.to_lowercase());
    let mut orgs: HashMap<String, Option<Organization>> = HashMap::new();
    let mut load_error: Option<ApiError> = None;
    let result = paginate(
        &state.db,
        tables::CONNECTIONS,
        "",
        &page,
        |r: &ConnectionRecord| {
            let c = &r.connection;
            if ctype.as_ref().is_some_and(|t| *t != c.connection_type)
                || org_filter
                    .as_ref()
                    .is_some_and(|o| c.organization_id.as_ref() != Some(o))
                || search
                    .as_ref()
                    .is_some_and(|s| !c.name.to_lowercase().contains(s))
            {
                return false;
            }
            match &domain {
                None => true,
                Some(d) => {
                    let Some(org_id) = &c.organization_id else {
                        return false;
                    };
                    let org = orgs.entry(org_id.clone()).or_insert_with(|| {
                        match state
                            .db
                            .get_json::<Organization>(tables::ORGANIZATIONS, org_id)
                        {
                            Ok(o) => o,
                            Err(e) => {
                                load_error = Some(e);
                                None
                            }
                        }
                    });
                    org.as_ref()
                        .is_some_and(|o| o.domain_names().any(|x| x == d))
                }
            }
        },
        |r| r.connection.id.clone(),
    )?;
    if let Some(e) = load_error {
        return Err(e);
    }
    let data = result
        .data
        .iter()
        .map(|r| wire(&state, r))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(List::new(data, result.before, result.after)))
}

/// SP metadata XML at a stable URL (public: IdP admins paste or poll it).
pub async fn sp_metadata(State(state): State<AppState>, Path(conn_id): Path<String>) -> Response {
    let record = match load(&state, &conn_id) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let ProtocolSettings::Saml(saml) = &record.protocol else {
        return ApiError::not_found("Connection", conn_id).into_response();
    };
    let xml = saml
        .public_sp_settings()
        .and_then(|sp| idbridge_saml::sp_metadata_xml(&sp).map_err(ApiError::internal));
    match xml {
        Ok(xml) => {
            let mut resp = xml.into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/samlmetadata+xml"),
            );
            resp
        }
        Err(e) => e.into_response(),
    }
}

/// Secret-free view of a connection's settings for admins and the CLI.
pub fn admin_json(state: &AppState, record: &ConnectionRecord) -> ApiResult<Value> {
    let c = wire(state, record)?;
    let public_url = &state.config.public_url;
    let settings = match &record.protocol {
        ProtocolSettings::Saml(s) => serde_json::json!({
            "protocol": "saml",
            "sp_entity_id": s.sp_entity_id,
            "acs_url": s.acs_url,
            "sp_metadata_url": format!("{public_url}/sso/saml/metadata/{}", c.id),
            "sp_signing_certs": s.sp_signing_keys.iter().map(|k| &k.cert_pem).collect::<Vec<_>>(),
            "sp_encryption_certs": s.sp_encryption_keys.iter().map(|k| &k.cert_pem).collect::<Vec<_>>(),
            "idp_metadata_url": s.idp_metadata_url,
            "idp_entity_id": s.idp_entity_id,
            "idp_sso_url": s.idp_sso_url,
            "idp_signing_certs": s.idp_signing_certs,
            "sign_requests": s.sign_requests,
            "allow_idp_initiated": s.allow_idp_initiated,
            "clock_skew_secs": s.clock_skew_secs,
            "attribute_map": s.attribute_map,
        }),
        ProtocolSettings::Oidc(o) => serde_json::json!({
            "protocol": "oidc",
            "issuer": o.issuer,
            "discovery_url": o.discovery_url,
            "client_id": o.client_id,
            "client_secret_stored": o.client_secret_sealed.is_some(),
            "client_secret_env": o.client_secret_env,
            "scopes": o.scopes,
            "claim_map": o.claim_map,
            "redirect_uri": format!("{public_url}/sso/oidc/callback"),
        }),
    };
    Ok(serde_json::json!({"connection": c, "settings": settings}))
}

async fn admin_view(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let record = load(&state, &id)?;
    Ok(Json(admin_json(&state, &record)?))
}

/// Generates new SP signing and encryption keys; the previous ones stay published (and usable
/// for decryption) until the next rotation, so IdPs can pick the new certificate up first.
#[tracing::instrument(name = "connections.rotate_sp_keys", skip(state))]
pub async fn rotate_keys(state: &AppState, id: &str) -> ApiResult<Value> {
    let old = load(state, id)?;
    let ProtocolSettings::Saml(saml) = &old.protocol else {
        return Err(ApiError::BadRequest {
            code: "not_a_saml_connection",
            message: "Only SAML connections have SP keys.".into(),
        });
    };
    let secrets = state.sso.secrets().map_err(secret_error)?.clone();
    let cn = format!("idbridge SP {id}");
    let (s, e) = tokio::task::spawn_blocking(move || {
        Ok::<_, idbridge_saml::SamlError>((
            SpKeyPair::generate(&cn, SP_CERT_DAYS)?,
            SpKeyPair::generate(&cn, SP_CERT_DAYS)?,
        ))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let mut next = saml.clone();
    next.sp_signing_keys
        .insert(0, store_key(&secrets, id, "sp_signing_key", &s)?);
    next.sp_signing_keys.truncate(MAX_SP_KEYS);
    next.sp_encryption_keys
        .insert(0, store_key(&secrets, id, "sp_encryption_key", &e)?);
    next.sp_encryption_keys.truncate(MAX_SP_KEYS);
    let mut record = old.clone();
    record.protocol = ProtocolSettings::Saml(next);
    record.connection.updated_at = Timestamp::now();
    let mut cs = ChangeSet::default();
    cs.require_equals(tables::CONNECTIONS, id, Some(to_json(&old)?));
    cs.put(tables::CONNECTIONS, id, to_json(&record)?);
    match state.db.commit(cs).await? {
        Ok(_) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::Conflict {
                code: "concurrent_update",
                message: "The connection was changed concurrently; retry.".into(),
            })
        }
        Err(e) => return Err(e.into()),
    }
    admin_json(state, &record)
}

async fn rotate_sp_keys(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(rotate_keys(&state, &id).await?))
}

/// Marks a connection active after its first successful login, staging the state change and
/// `connection.activated` into `cs` (the login's own commit). No-op when already active.
pub fn stage_activation(
    cs: &mut ChangeSet,
    state: &AppState,
    record: &ConnectionRecord,
) -> ApiResult<bool> {
    if record.activated_at.is_some() {
        return Ok(false);
    }
    let mut next = record.clone();
    next.activated_at = Some(Timestamp::now());
    next.connection.state = ConnectionState::Active;
    next.connection.status = ConnectionState::Active.status();
    next.connection.updated_at = Timestamp::now();
    cs.require_equals(tables::CONNECTIONS, record.id(), Some(to_json(record)?));
    cs.put(tables::CONNECTIONS, record.id(), to_json(&next)?);
    let c = wire(state, &next)?;
    events::append(
        cs,
        "connection.activated",
        event_data(&c, &next),
        c.organization_id.as_deref(),
    );
    Ok(true)
}

/// Certificates expiring within this many days are announced as needing renewal.
pub const RENEWAL_WARNING_DAYS: i32 = 30;

/// What one metadata refresh pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RefreshReport {
    pub checked: usize,
    pub renewed: usize,
    pub renewal_required: usize,
    pub failed: usize,
}

fn fingerprint(pem: &str) -> Option<String> {
    let cert = X509::from_pem(pem.as_bytes()).ok()?;
    let d = cert.digest(openssl::hash::MessageDigest::sha256()).ok()?;
    Some(hex::encode(d))
}

/// Days until the certificate expires (negative once expired) and its expiry date.
fn expiry(pem: &str) -> Option<(i32, String)> {
    let cert = X509::from_pem(pem.as_bytes()).ok()?;
    let now = openssl::asn1::Asn1Time::days_from_now(0).ok()?;
    let diff = now.diff(cert.not_after()).ok()?;
    Some((diff.days, cert.not_after().to_string()))
}

fn cert_event(record: &ConnectionRecord, certificate_type: &str, pem: &str) -> Value {
    let (days, expiry_date) = expiry(pem).unwrap_or((0, String::new()));
    serde_json::json!({
        "connection": {
            "id": record.connection.id,
            "organization_id": record.connection.organization_id,
        },
        "certificate": {
            "certificate_type": certificate_type,
            "expiry_date": expiry_date,
        },
        "days_until_expiry": days,
    })
}

/// Re-reads every SAML connection's IdP metadata URL (new signing certificates are picked up,
/// with `connection.saml_certificate_renewed`) and announces certificates close to expiry with
/// `connection.saml_certificate_renewal_required`, once per certificate.
#[tracing::instrument(name = "connections.refresh_metadata", skip_all)]
pub async fn refresh_metadata(state: &AppState) -> ApiResult<RefreshReport> {
    let mut report = RefreshReport::default();
    let rows = state
        .db
        .store()
        .scan(tables::CONNECTIONS, "", None, usize::MAX)?;
    for (id, bytes) in rows {
        let Ok(old) = serde_json::from_slice::<ConnectionRecord>(&bytes) else {
            tracing::warn!(connection_id = %id, "unreadable connection record");
            continue;
        };
        let ProtocolSettings::Saml(saml) = &old.protocol else {
            continue;
        };
        report.checked += 1;
        let mut next = saml.clone();
        let mut events: Vec<(&str, Value)> = Vec::new();
        if let Some(url) = &saml.idp_metadata_url {
            let parsed = match fetch_metadata(state, url).await {
                Ok(xml) => IdpSettings::from_metadata_xml(&xml).map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match parsed.and_then(|idp| {
                certs_to_pem(&idp)
                    .map(|c| (idp, c))
                    .map_err(|e| e.to_string())
            }) {
                Ok((idp, certs)) => {
                    let mut a: Vec<_> = certs.iter().filter_map(|c| fingerprint(c)).collect();
                    let mut b: Vec<_> = saml
                        .idp_signing_certs
                        .iter()
                        .filter_map(|c| fingerprint(c))
                        .collect();
                    a.sort();
                    b.sort();
                    if a != b && !certs.is_empty() {
                        next.idp_entity_id = idp.entity_id.clone();
                        if idp.sso_url.is_some() {
                            next.idp_sso_url = idp.sso_url.clone();
                        }
                        next.idp_wants_signed_requests = idp.wants_signed_requests;
                        next.idp_signing_certs = certs.clone();
                        if let Some(first) = certs.first() {
                            events.push((
                                "connection.saml_certificate_renewed",
                                cert_event(&old, "ResponseSigning", first),
                            ));
                        }
                        report.renewed += 1;
                    }
                }
                Err(e) => {
                    report.failed += 1;
                    tracing::warn!(connection_id = %id, error = %e, "IdP metadata refresh failed");
                }
            }
        }
        let candidates = next
            .idp_signing_certs
            .iter()
            .map(|c| ("ResponseSigning", c.clone()))
            .chain(
                next.sp_signing_keys
                    .first()
                    .map(|k| ("RequestSigning", k.cert_pem.clone())),
            )
            .chain(
                next.sp_encryption_keys
                    .first()
                    .map(|k| ("ResponseEncryption", k.cert_pem.clone())),
            )
            .collect::<Vec<_>>();
        for (kind, pem) in candidates {
            let (Some(fp), Some((days, _))) = (fingerprint(&pem), expiry(&pem)) else {
                continue;
            };
            if days <= RENEWAL_WARNING_DAYS && !next.renewal_notified.contains(&fp) {
                events.push((
                    "connection.saml_certificate_renewal_required",
                    cert_event(&old, kind, &pem),
                ));
                next.renewal_notified.push(fp);
                report.renewal_required += 1;
            }
        }
        if events.is_empty() {
            continue;
        }
        let mut record = old.clone();
        record.protocol = ProtocolSettings::Saml(next);
        record.connection.updated_at = Timestamp::now();
        let mut cs = ChangeSet::default();
        cs.require_equals(tables::CONNECTIONS, &id, Some(bytes.clone()));
        cs.put(tables::CONNECTIONS, &id, to_json(&record)?);
        for (kind, data) in events {
            events::append(
                &mut cs,
                kind,
                data,
                record.connection.organization_id.as_deref(),
            );
        }
        match state.db.commit(cs).await? {
            Ok(_) => {
                state.sso.forget_oidc_client(&id);
                tracing::info!(connection_id = %id, "connection certificates updated");
            }
            // Changed meanwhile (login activation, rotation): the next pass retries.
            Err(StoreError::Conflict(_)) => report.failed += 1,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(report)
}

/// Runs [`refresh_metadata`] every `every` (the first pass after one interval).
pub fn spawn_metadata_refresh(state: AppState, every: std::time::Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            match refresh_metadata(&state).await {
                Ok(r) if r.renewed + r.renewal_required + r.failed > 0 => {
                    tracing::info!(?r, "IdP metadata refresh")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "IdP metadata refresh failed"),
            }
        }
    });
}
