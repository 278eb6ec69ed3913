//! Service providers registered with idbridge's IdP (issue 16): the one owner of the
//! [`SERVICE_PROVIDERS`] and [`BY_ENTITY`] tables.
//!
//! A record says who may ask for an assertion (the SP entity id), where the answer may go (its
//! registered ACS URLs: never a URL taken from a request), which certificates verify its signed
//! AuthnRequests, how its responses are shaped (NameID format, released attributes, signed
//! response, encrypted assertion) and how users authenticate (the *directory* source: a password
//! checked against one of the organization's LDAP/AD directories). It is built from the SP's
//! metadata (XML or a URL; WorkOS hands out an SP metadata URL) or from explicit fields. SAML
//! SPs hold no secrets: certificates are public.

use std::collections::BTreeMap;
use std::sync::Arc;

use idbridge_model::{new_id, parse_id, IdPrefix, Page, PageRequest, Timestamp};
use idbridge_saml::idp::response::name_id_format;
use idbridge_saml::idp::{AcsEndpoint, RegisteredSp, SpMetadata};
use idbridge_secrets::sha256_hex;
use idbridge_store::{ChangeSet, Store, StoreError};
use openssl::x509::X509;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::db::{self, to_json};
use crate::error::{FieldIssue, SsoError, SsoResult};
use crate::SsoService;

/// `sp_…` → [`ServiceProvider`].
pub const SERVICE_PROVIDERS: &str = "idp_service_providers";
/// `<organization id>/<sha256 hex of the SP entity id>` → `sp_…` (one registration per entity
/// id and organization).
const BY_ENTITY: &str = "idp_service_providers_by_entity";

/// The attributes an assertion can carry (WorkOS's names).
pub const RELEASABLE_ATTRIBUTES: [&str; 5] = ["id", "email", "firstName", "lastName", "groups"];
/// Default NotOnOrAfter of an assertion, from its issue instant.
pub const DEFAULT_ASSERTION_VALIDITY_SECS: u64 = 300;
/// Longest assertion lifetime an admin may configure.
pub const MAX_ASSERTION_VALIDITY_SECS: u64 = 3600;
const BINDING_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";
const MAX_NAME_LEN: usize = 512;
const MAX_ACS_URLS: usize = 16;

/// One registered ACS endpoint (HTTP-POST).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcsUrl {
    pub url: String,
    pub index: Option<u16>,
    pub is_default: bool,
}

/// How users of this SP authenticate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuthSource {
    /// A login page: the password is checked by binding as the user against this LDAP/AD
    /// directory of the organization; the user must exist (and be active) in its synced copy.
    Directory { directory_id: String },
    /// Broker mode: the user signs in through this SAML or OIDC connection of the organization
    /// (the upstream IdP), verified by the same ACS/callback code as any SSO login; the
    /// verified profile becomes the assertion.
    Broker { connection_id: String },
}

/// A registered service provider: the stored record and (with [`ServiceProvider::wire`]) the
/// admin API's object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceProvider {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub entity_id: String,
    pub acs_urls: Vec<AcsUrl>,
    /// PEM certificates verifying its signed AuthnRequests (two during a rollover).
    pub signing_certs: Vec<String>,
    /// PEM certificate assertions are encrypted to (when `encrypt_assertions`).
    pub encryption_cert: Option<String>,
    /// Where the metadata came from, when it came from a URL.
    pub metadata_url: Option<String>,
    pub name_id_format: String,
    pub released_attributes: Vec<String>,
    pub sign_response: bool,
    pub encrypt_assertions: bool,
    pub require_signed_requests: bool,
    pub auth_source: Option<AuthSource>,
    pub assertion_validity_secs: u64,
    /// Whether `GET /idp/{org}/saml/start?sp=…` may send this SP an unsolicited assertion
    /// (IdP-initiated login). Off unless the admin turns it on.
    #[serde(default)]
    pub allow_idp_initiated: bool,
    /// The SP's SingleLogoutService (HTTP-Redirect): where idbridge answers its
    /// LogoutRequests. From its metadata, or set by the admin.
    #[serde(default)]
    pub slo_url: Option<String>,
    /// Extra assertion attributes: attribute name → the directory user field it is taken from
    /// (see [`super::source::valid_user_field`]); left out when the user has no value.
    #[serde(default)]
    pub custom_attributes: BTreeMap<String, String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl ServiceProvider {
    /// The admin API object: the record plus `object` and the IdP URLs to give the SP's admin.
    pub fn wire(&self, idp: &super::IdpUrls) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("object".into(), Value::String("service_provider".into()));
            o.insert(
                "idp".into(),
                serde_json::json!({
                    "entity_id": idp.entity_id,
                    "metadata_url": idp.metadata_url,
                    "sso_url": idp.sso_url,
                    "slo_url": idp.slo_url,
                }),
            );
        }
        v
    }

    /// The part-1 intake's view of this SP.
    pub fn registered(&self) -> SsoResult<RegisteredSp> {
        let signing_certs = self
            .signing_certs
            .iter()
            .map(|p| X509::from_pem(p.as_bytes()).map_err(SsoError::internal))
            .collect::<SsoResult<Vec<_>>>()?;
        Ok(RegisteredSp {
            entity_id: self.entity_id.clone(),
            acs: self
                .acs_urls
                .iter()
                .map(|a| AcsEndpoint::post(a.url.clone(), a.index, a.is_default))
                .collect(),
            signing_certs,
            require_signed_requests: self.require_signed_requests,
            allow_sha1: false,
            name_id_format: self.name_id_format.clone(),
        })
    }

    /// Whether attribute `name` is released to this SP.
    pub fn releases(&self, name: &str) -> bool {
        self.released_attributes.iter().any(|a| a == name)
    }
}

/// Where an SP's protocol settings come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpSource {
    /// SP metadata XML, pasted.
    MetadataXml(String),
    /// An SP metadata URL, fetched now.
    MetadataUrl(String),
    /// Explicit settings.
    Explicit {
        entity_id: String,
        acs_urls: Vec<String>,
        /// PEM or base64 DER.
        signing_certs: Vec<String>,
        encryption_cert: Option<String>,
    },
}

/// Settings an admin may set on create and change on update (`None` = default / unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpOptions {
    pub name: Option<String>,
    pub name_id_format: Option<String>,
    pub released_attributes: Option<Vec<String>>,
    pub sign_response: Option<bool>,
    pub encrypt_assertions: Option<bool>,
    pub require_signed_requests: Option<bool>,
    /// `Some(None)` removes the source. Shorthand for a directory `auth_source`.
    pub directory_id: Option<Option<String>>,
    /// `Some(None)` removes the source.
    pub auth_source: Option<Option<AuthSource>>,
    pub assertion_validity_secs: Option<u64>,
    pub allow_idp_initiated: Option<bool>,
    /// `Some(None)` removes it.
    pub slo_url: Option<Option<String>>,
    /// Replaces the whole map.
    pub custom_attributes: Option<BTreeMap<String, String>>,
}

/// `POST /admin/service_providers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewServiceProvider {
    pub organization_id: String,
    pub source: SpSource,
    pub options: SpOptions,
}

/// `PUT /admin/service_providers/{id}`: only what is given changes; a new source replaces the
/// entity id, ACS URLs and certificates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceProviderUpdate {
    pub source: Option<SpSource>,
    pub options: SpOptions,
}

/// The protocol half read from a source.
struct SourceSettings {
    entity_id: String,
    acs_urls: Vec<AcsUrl>,
    signing_certs: Vec<String>,
    encryption_cert: Option<String>,
    metadata_url: Option<String>,
    authn_requests_signed: bool,
    name_id_formats: Vec<String>,
    slo_url: Option<String>,
}

fn pem(cert: &X509) -> SsoResult<String> {
    String::from_utf8(cert.to_pem().map_err(SsoError::internal)?).map_err(SsoError::internal)
}

/// One certificate given as PEM or base64 DER, as PEM.
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

fn valid_acs_url(u: &str) -> bool {
    url::Url::parse(u).is_ok_and(|p| matches!(p.scheme(), "https" | "http") && p.has_host())
}

fn from_metadata(xml: &str, field: &str, url: Option<String>) -> SsoResult<SourceSettings> {
    let m = SpMetadata::from_xml(xml).map_err(|e| {
        tracing::info!(error = %e, "SP metadata refused");
        SsoError::invalid(field, "invalid_metadata")
    })?;
    let acs_urls: Vec<AcsUrl> = m
        .acs
        .iter()
        .filter(|a| a.binding == BINDING_POST)
        .map(|a| AcsUrl {
            url: a.location.clone(),
            index: a.index,
            is_default: a.is_default,
        })
        .collect();
    if acs_urls.is_empty() {
        return Err(SsoError::invalid(field, "no_http_post_acs"));
    }
    Ok(SourceSettings {
        entity_id: m.entity_id.clone(),
        acs_urls,
        signing_certs: m.signing_certs.iter().map(pem).collect::<SsoResult<_>>()?,
        encryption_cert: m.encryption_certs.first().map(pem).transpose()?,
        metadata_url: url,
        authn_requests_signed: m.authn_requests_signed,
        name_id_formats: m.name_id_formats.clone(),
        slo_url: m.slo_urls.first().cloned(),
    })
}

fn explicit(
    entity_id: &str,
    acs_urls: &[String],
    signing_certs: &[String],
    encryption_cert: Option<&str>,
) -> SsoResult<SourceSettings> {
    let mut issues = Vec::new();
    if entity_id.trim().is_empty() || entity_id.len() > 1024 {
        issues.push(FieldIssue::new("entity_id", "invalid"));
    }
    if acs_urls.is_empty() {
        issues.push(FieldIssue::new("acs_urls", "required"));
    }
    if acs_urls.len() > MAX_ACS_URLS {
        issues.push(FieldIssue::new("acs_urls", "too_many"));
    }
    for (i, u) in acs_urls.iter().enumerate() {
        if !valid_acs_url(u) {
            issues.push(FieldIssue::new(format!("acs_urls[{i}]"), "invalid_url"));
        }
    }
    let mut certs = Vec::new();
    for (i, c) in signing_certs.iter().enumerate() {
        match cert_to_pem(c) {
            Some(p) => certs.push(p),
            None => issues.push(FieldIssue::new(
                format!("signing_certs[{i}]"),
                "invalid_certificate",
            )),
        }
    }
    let enc = match encryption_cert.map(cert_to_pem) {
        Some(None) => {
            issues.push(FieldIssue::new("encryption_cert", "invalid_certificate"));
            None
        }
        Some(Some(p)) => Some(p),
        None => None,
    };
    if !issues.is_empty() {
        return Err(SsoError::Invalid(issues));
    }
    Ok(SourceSettings {
        entity_id: entity_id.trim().to_owned(),
        acs_urls: acs_urls
            .iter()
            .enumerate()
            .map(|(i, u)| AcsUrl {
                url: u.clone(),
                index: u16::try_from(i).ok(),
                is_default: i == 0,
            })
            .collect(),
        signing_certs: certs,
        encryption_cert: enc,
        metadata_url: None,
        authn_requests_signed: false,
        name_id_formats: Vec::new(),
        slo_url: None,
    })
}

/// Most custom attributes per SP or client.
pub const MAX_CUSTOM_ATTRIBUTES: usize = 32;

/// The problems of a custom-attribute map (`custom_attributes.<name>` fields): names must be
/// non-empty, at most 256 characters, not one of `reserved` (the standard attributes or
/// claims); every source must be a known user field.
pub fn check_custom_attributes(
    map: &BTreeMap<String, String>,
    reserved: &[&str],
) -> Vec<FieldIssue> {
    let mut issues = Vec::new();
    if map.len() > MAX_CUSTOM_ATTRIBUTES {
        issues.push(FieldIssue::new("custom_attributes", "too_many"));
    }
    for (name, field) in map {
        let at = format!("custom_attributes.{name}");
        if name.trim().is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
            issues.push(FieldIssue::new(at, "invalid_name"));
        } else if reserved.contains(&name.as_str()) {
            issues.push(FieldIssue::new(at, "reserved_name"));
        } else if !super::source::valid_user_field(field) {
            issues.push(FieldIssue::new(at, "unknown_user_field"));
        }
    }
    issues
}

/// A NameID format given by its short name or URN, as the URN.
fn parse_name_id_format(f: &str) -> Option<&'static str> {
    match f {
        "email" | "emailAddress" | name_id_format::EMAIL => Some(name_id_format::EMAIL),
        "persistent" | name_id_format::PERSISTENT => Some(name_id_format::PERSISTENT),
        "unspecified" | name_id_format::UNSPECIFIED => Some(name_id_format::UNSPECIFIED),
        "transient" | name_id_format::TRANSIENT => Some(name_id_format::TRANSIENT),
        _ => None,
    }
}

/// The owner of the service-provider tables.
#[derive(Clone)]
pub struct ServiceProviders {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for ServiceProviders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceProviders").finish_non_exhaustive()
    }
}

fn entity_key(org_id: &str, entity_id: &str) -> String {
    format!("{org_id}/{}", sha256_hex(entity_id))
}

impl ServiceProviders {
    /// Over a store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        ServiceProviders { store }
    }

    /// The record, if it exists (a malformed id cannot).
    pub fn get(&self, id: &str) -> Result<Option<ServiceProvider>, StoreError> {
        if parse_id(IdPrefix::ServiceProvider, id).is_err() {
            return Ok(None);
        }
        db::get_json(self.store.as_ref(), SERVICE_PROVIDERS, id)
    }

    /// The record, or `NotFound`.
    pub fn load(&self, id: &str) -> SsoResult<ServiceProvider> {
        self.get(id)?
            .ok_or_else(|| SsoError::not_found("Service Provider", id))
    }

    /// The SP an organization registered under `entity_id`, if any.
    pub fn by_entity_id(
        &self,
        org_id: &str,
        entity_id: &str,
    ) -> Result<Option<ServiceProvider>, StoreError> {
        match db::get_string(
            self.store.as_ref(),
            BY_ENTITY,
            &entity_key(org_id, entity_id),
        )? {
            Some(id) => self.get(&id),
            None => Ok(None),
        }
    }

    /// One page of the records (optionally of one organization), in id (= creation) order.
    pub fn list(
        &self,
        organization_id: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<ServiceProvider>, StoreError> {
        idbridge_store::page(
            self.store.as_ref(),
            SERVICE_PROVIDERS,
            "",
            page,
            |id, bytes| {
                let r: ServiceProvider = db::decode(SERVICE_PROVIDERS, id, bytes)?;
                Ok(organization_id
                    .is_none_or(|o| o == r.organization_id)
                    .then_some(r))
            },
        )
    }

    fn stage_create(cs: &mut ChangeSet, r: &ServiceProvider) -> SsoResult<()> {
        cs.require_absent(SERVICE_PROVIDERS, &r.id);
        cs.put(SERVICE_PROVIDERS, &r.id, to_json(r)?);
        let k = entity_key(&r.organization_id, &r.entity_id);
        cs.require_absent(BY_ENTITY, &k);
        cs.put(BY_ENTITY, k, r.id.as_bytes().to_vec());
        Ok(())
    }

    fn stage_replace(
        cs: &mut ChangeSet,
        old: &ServiceProvider,
        next: &ServiceProvider,
    ) -> SsoResult<()> {
        cs.require_equals(SERVICE_PROVIDERS, &old.id, Some(to_json(old)?));
        cs.put(SERVICE_PROVIDERS, &next.id, to_json(next)?);
        if old.entity_id != next.entity_id {
            cs.delete(BY_ENTITY, entity_key(&old.organization_id, &old.entity_id));
            let k = entity_key(&next.organization_id, &next.entity_id);
            cs.require_absent(BY_ENTITY, &k);
            cs.put(BY_ENTITY, k, next.id.as_bytes().to_vec());
        }
        Ok(())
    }

    fn stage_delete(cs: &mut ChangeSet, r: &ServiceProvider) {
        cs.require_present(SERVICE_PROVIDERS, &r.id);
        cs.delete(SERVICE_PROVIDERS, &r.id);
        cs.delete(BY_ENTITY, entity_key(&r.organization_id, &r.entity_id));
    }

    fn map_conflict(e: StoreError) -> SsoError {
        match e {
            StoreError::Conflict { ref table, .. } if table == BY_ENTITY => SsoError::Conflict {
                code: "entity_id_already_registered",
                message: "This organization already has a service provider with this entity id; update that one instead.".into(),
            },
            StoreError::Conflict { .. } => SsoError::concurrent("service provider"),
            other => other.into(),
        }
    }
}

impl SsoService {
    /// Service provider records.
    pub fn service_providers(&self) -> &ServiceProviders {
        &self.idp.service_providers
    }

    async fn read_source(&self, source: &SpSource) -> SsoResult<SourceSettings> {
        match source {
            SpSource::MetadataXml(xml) => from_metadata(xml, "metadata_xml", None),
            SpSource::MetadataUrl(url) => {
                let xml = self.fetch_metadata(url).await.map_err(|e| {
                    tracing::info!(error = %e, %url, "SP metadata URL unreadable");
                    SsoError::invalid("metadata_url", "metadata_unreachable")
                })?;
                from_metadata(&xml, "metadata_url", Some(url.clone()))
            }
            SpSource::Explicit {
                entity_id,
                acs_urls,
                signing_certs,
                encryption_cert,
            } => explicit(
                entity_id,
                acs_urls,
                signing_certs,
                encryption_cert.as_deref(),
            ),
        }
    }

    /// Applies `o` to `r`, checking every value; the directory must be one of the
    /// organization's.
    fn apply_options(&self, r: &mut ServiceProvider, o: &SpOptions) -> SsoResult<()> {
        let mut issues = Vec::new();
        if let Some(n) = &o.name {
            if n.trim().is_empty() || n.len() > MAX_NAME_LEN {
                issues.push(FieldIssue::new("name", "invalid"));
            } else {
                r.name = n.trim().to_owned();
            }
        }
        if let Some(f) = &o.name_id_format {
            match parse_name_id_format(f) {
                Some(u) => r.name_id_format = u.to_owned(),
                None => issues.push(FieldIssue::new("name_id_format", "unsupported")),
            }
        }
        if let Some(list) = &o.released_attributes {
            for (i, a) in list.iter().enumerate() {
                if !RELEASABLE_ATTRIBUTES.contains(&a.as_str()) {
                    issues.push(FieldIssue::new(
                        format!("released_attributes[{i}]"),
                        "unknown_attribute",
                    ));
                }
            }
            let mut l = list.clone();
            l.dedup();
            r.released_attributes = l;
        }
        if let Some(b) = o.sign_response {
            r.sign_response = b;
        }
        if let Some(b) = o.require_signed_requests {
            r.require_signed_requests = b;
        }
        if let Some(b) = o.encrypt_assertions {
            r.encrypt_assertions = b;
        }
        if r.encrypt_assertions && r.encryption_cert.is_none() {
            issues.push(FieldIssue::new(
                "encrypt_assertions",
                "no_encryption_certificate",
            ));
        }
        if r.require_signed_requests && r.signing_certs.is_empty() {
            issues.push(FieldIssue::new(
                "require_signed_requests",
                "no_signing_certificate",
            ));
        }
        if let Some(secs) = o.assertion_validity_secs {
            if secs == 0 || secs > MAX_ASSERTION_VALIDITY_SECS {
                issues.push(FieldIssue::new("assertion_validity_secs", "out_of_range"));
            } else {
                r.assertion_validity_secs = secs;
            }
        }
        if let Some(b) = o.allow_idp_initiated {
            r.allow_idp_initiated = b;
        }
        if let Some(map) = &o.custom_attributes {
            let before = issues.len();
            issues.extend(check_custom_attributes(map, &RELEASABLE_ATTRIBUTES));
            if issues.len() == before {
                r.custom_attributes = map.clone();
            }
        }
        match &o.slo_url {
            Some(Some(u)) if !valid_acs_url(u) => {
                issues.push(FieldIssue::new("slo_url", "invalid_url"));
            }
            Some(u) => r.slo_url = u.clone(),
            None => {}
        }
        let source = match (&o.directory_id, &o.auth_source) {
            (Some(_), Some(_)) => {
                issues.push(FieldIssue::new(
                    "directory_id",
                    "give_only_one_of_directory_id_auth_source",
                ));
                None
            }
            (Some(dir), None) => Some(
                dir.clone()
                    .map(|directory_id| AuthSource::Directory { directory_id }),
            ),
            (None, source) => source.clone(),
        };
        let field = if o.directory_id.is_some() {
            "directory_id"
        } else {
            "auth_source.directory_id"
        };
        match source {
            None => {}
            Some(None) => r.auth_source = None,
            Some(Some(AuthSource::Directory { directory_id: d })) => {
                match self.check_directory_source(&r.organization_id, &d) {
                    Ok(()) => r.auth_source = Some(AuthSource::Directory { directory_id: d }),
                    Err(code) => issues.push(FieldIssue::new(field, code)),
                }
            }
            Some(Some(AuthSource::Broker { connection_id })) => {
                match self.check_broker_connection(&r.organization_id, &connection_id) {
                    Ok(()) => r.auth_source = Some(AuthSource::Broker { connection_id }),
                    Err(code) => issues.push(FieldIssue::new("auth_source.connection_id", code)),
                }
            }
        }
        if issues.is_empty() {
            Ok(())
        } else {
            Err(SsoError::Invalid(issues))
        }
    }

    /// Registers a service provider.
    #[tracing::instrument(name = "idp.create_service_provider", skip_all, fields(org = %input.organization_id))]
    pub async fn create_service_provider(&self, input: NewServiceProvider) -> SsoResult<Value> {
        if self.organizations().get(&input.organization_id)?.is_none() {
            return Err(SsoError::invalid("organization_id", "not_found"));
        }
        let s = self.read_source(&input.source).await?;
        let now = Timestamp::now();
        let default_format = if s
            .name_id_formats
            .iter()
            .any(|f| f == name_id_format::PERSISTENT)
            && !s.name_id_formats.iter().any(|f| f == name_id_format::EMAIL)
        {
            name_id_format::PERSISTENT
        } else {
            name_id_format::EMAIL
        };
        let mut r = ServiceProvider {
            id: new_id(IdPrefix::ServiceProvider),
            organization_id: input.organization_id.clone(),
            name: s.entity_id.chars().take(MAX_NAME_LEN).collect(),
            entity_id: s.entity_id,
            acs_urls: s.acs_urls,
            signing_certs: s.signing_certs,
            encryption_cert: s.encryption_cert,
            metadata_url: s.metadata_url,
            name_id_format: default_format.to_owned(),
            released_attributes: RELEASABLE_ATTRIBUTES
                .iter()
                .map(|a| a.to_string())
                .collect(),
            sign_response: false,
            encrypt_assertions: false,
            require_signed_requests: s.authn_requests_signed,
            auth_source: None,
            assertion_validity_secs: self.idp_config().default_assertion_validity_secs,
            allow_idp_initiated: false,
            slo_url: s.slo_url,
            custom_attributes: BTreeMap::new(),
            created_at: now,
            updated_at: now,
        };
        self.apply_options(&mut r, &input.options)?;
        let mut cs = ChangeSet::new();
        ServiceProviders::stage_create(&mut cs, &r)?;
        db::commit(&self.store, cs)
            .await
            .map_err(ServiceProviders::map_conflict)?;
        tracing::info!(sp = %r.id, entity_id = %r.entity_id, "service provider registered");
        Ok(r.wire(&self.idp_urls(&r.organization_id)))
    }

    /// The admin object of a service provider.
    pub fn service_provider(&self, id: &str) -> SsoResult<Value> {
        let r = self.idp.service_providers.load(id)?;
        Ok(r.wire(&self.idp_urls(&r.organization_id)))
    }

    /// One page of service providers (of one organization), as admin objects.
    pub fn list_service_providers(
        &self,
        organization_id: Option<&str>,
        page: &PageRequest,
    ) -> SsoResult<Page<Value>> {
        Ok(self
            .idp
            .service_providers
            .list(organization_id, page)?
            .map(|r| r.wire(&self.idp_urls(&r.organization_id))))
    }

    /// Changes a service provider: one commit, on the condition that nobody changed it
    /// meanwhile.
    #[tracing::instrument(name = "idp.update_service_provider", skip(self, update))]
    pub async fn update_service_provider(
        &self,
        id: &str,
        update: ServiceProviderUpdate,
    ) -> SsoResult<Value> {
        let old = self.idp.service_providers.load(id)?;
        let mut next = old.clone();
        if let Some(src) = &update.source {
            let s = self.read_source(src).await?;
            next.entity_id = s.entity_id;
            next.acs_urls = s.acs_urls;
            next.signing_certs = s.signing_certs;
            next.encryption_cert = s.encryption_cert;
            next.metadata_url = s.metadata_url;
            next.slo_url = s.slo_url;
        }
        self.apply_options(&mut next, &update.options)?;
        next.updated_at = Timestamp::now();
        let mut cs = ChangeSet::new();
        ServiceProviders::stage_replace(&mut cs, &old, &next)?;
        db::commit(&self.store, cs)
            .await
            .map_err(ServiceProviders::map_conflict)?;
        Ok(next.wire(&self.idp_urls(&next.organization_id)))
    }

    /// Removes a service provider (its IdP logins in progress then fail).
    #[tracing::instrument(name = "idp.delete_service_provider", skip(self))]
    pub async fn delete_service_provider(&self, id: &str) -> SsoResult<()> {
        let r = self.idp.service_providers.load(id)?;
        let mut cs = ChangeSet::new();
        ServiceProviders::stage_delete(&mut cs, &r);
        db::commit(&self.store, cs)
            .await
            .map_err(ServiceProviders::map_conflict)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_id_formats_accept_short_names_and_urns() {
        assert_eq!(parse_name_id_format("email"), Some(name_id_format::EMAIL));
        assert_eq!(
            parse_name_id_format(name_id_format::PERSISTENT),
            Some(name_id_format::PERSISTENT)
        );
        assert_eq!(parse_name_id_format("x509"), None);
    }

    #[test]
    fn explicit_settings_name_every_bad_field() {
        let e = explicit(
            " ",
            &["javascript:alert(1)".into()],
            &["not a cert".into()],
            Some("nope"),
        )
        .err();
        let Some(SsoError::Invalid(issues)) = e else {
            panic!("expected invalid, got {e:?}");
        };
        let fields: Vec<_> = issues.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "entity_id",
                "acs_urls[0]",
                "signing_certs[0]",
                "encryption_cert"
            ]
        );
    }
}
