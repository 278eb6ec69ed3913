//! SSO connections (workos-api.md §2.1, §8.2): the one owner of the [`CONNECTIONS`],
//! [`BY_ORG`] and [`BY_EXTERNAL_ID`] tables.
//!
//! A connection record is the WorkOS wire object plus private protocol settings. Private keys
//! and client secrets are sealed ([`keys`]) before they reach the store and never leave through
//! the wire object. The other concerns live beside this file: [`create`] (typed input → record),
//! [`keys`] (sealing, SP settings, rotation), [`metadata`] (IdP metadata fetching and the
//! refresh worker), [`admin`] (the secret-free admin view), [`update`] (PATCH: name,
//! external id, active/inactive, with [`patch`] merging attribute maps and protocol options)
//! and [`certificates`] (the SAML certificate sub-resources).

pub mod admin;
pub mod certificates;
pub mod create;
pub mod keys;
pub mod metadata;
pub mod patch;
pub mod reconfigure;
pub mod update;

use std::sync::Arc;

use idbridge_model::tag::ConnectionDomainTag;
use idbridge_model::{
    parse_id, Connection, ConnectionDomain, ConnectionState, Event, EventKind, IdPrefix,
    Organization, Page, PageRequest, Timestamp,
};
use idbridge_oidc::ClaimMap;
use idbridge_saml::{AttributeMap, SamlConnectionType};
use idbridge_store::{ChangeSet, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::db::{self, to_json};
use crate::error::{SsoError, SsoResult};

/// `conn_…` → [`ConnectionRecord`] (wire object + sealed settings).
pub const CONNECTIONS: &str = "connections";
/// `<organization id>/<connection id>` → connection id.
const BY_ORG: &str = "connections_by_org";
/// `<external_id>` → connection id (unique).
const BY_EXTERNAL_ID: &str = "connection_by_external_id";

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

/// The protocol half of a record.
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
    /// The IdP's HTTP-Redirect SingleLogoutService: single logout is offered only with one.
    #[serde(default)]
    pub idp_slo_url: Option<String>,
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
    /// When each IdP signing certificate imported through
    /// `POST /connections/{id}/saml_idp_signing_certs` was added, by certificate id; a
    /// metadata refresh keeps these.
    #[serde(default)]
    pub idp_cert_added_at: certificates::ImportTimes,
}

/// An SP key pair with the private key sealed. `Debug` shows only the creation time.
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

impl ConnectionRecord {
    /// The connection id.
    pub fn id(&self) -> &str {
        &self.connection.id
    }

    /// A monotone version for caches of derived objects (OIDC clients).
    pub fn version(&self) -> i64 {
        self.connection.updated_at.as_millis()
    }

    /// The organization, if the connection has one.
    pub fn organization_id(&self) -> Option<&str> {
        self.connection.organization_id.as_deref()
    }

    /// Whether logins may start on it.
    pub fn usable(&self) -> bool {
        !matches!(
            self.connection.state,
            ConnectionState::Inactive | ConnectionState::Deleting
        )
    }
}

/// The WorkOS `connection_type` names of SAML connections.
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

/// The SAML connection type with this WorkOS name.
pub fn saml_type(name: &str) -> Option<SamlConnectionType> {
    SAML_TYPES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The WorkOS name of a SAML connection type.
pub fn saml_type_name(t: SamlConnectionType) -> &'static str {
    SAML_TYPES
        .iter()
        .find(|(_, k)| *k == t)
        .map_or("GenericSAML", |(n, _)| n)
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

/// `connection.*` event data: the connection plus `external_key` (py10 requires it).
pub(crate) fn event_data(c: &Connection, record: &ConnectionRecord) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "external_key".into(),
            Value::String(record.external_id.clone().unwrap_or_else(|| c.id.clone())),
        );
    }
    v
}

/// `GET /connections` filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionFilter {
    pub connection_type: Option<String>,
    pub organization_id: Option<String>,
    /// Only connections of organizations with this domain (lower-case).
    pub domain: Option<String>,
    /// Only names containing this (case-insensitive).
    pub search: Option<String>,
}

/// The owner of the connection tables.
#[derive(Clone)]
pub struct Connections {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections").finish_non_exhaustive()
    }
}

impl Connections {
    /// Over a store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Connections { store }
    }

    /// The record, if it exists (a malformed id cannot).
    pub fn get(&self, id: &str) -> Result<Option<ConnectionRecord>, StoreError> {
        if parse_id(IdPrefix::Connection, id).is_err() {
            return Ok(None);
        }
        db::get_json(self.store.as_ref(), CONNECTIONS, id)
    }

    /// The record, or `NotFound`.
    pub fn load(&self, id: &str) -> SsoResult<ConnectionRecord> {
        self.get(id)?
            .ok_or_else(|| SsoError::not_found("Connection", id))
    }

    /// The connection with this external id, if any.
    pub fn by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<ConnectionRecord>, StoreError> {
        match db::get_string(self.store.as_ref(), BY_EXTERNAL_ID, external_id)? {
            Some(id) => self.get(&id),
            None => Ok(None),
        }
    }

    /// The connections of an organization (at most 101: enough to tell "one" from "several").
    pub fn of_organization(&self, org_id: &str) -> Result<Vec<ConnectionRecord>, StoreError> {
        let mut out = Vec::new();
        for (key, id) in self.store.scan(BY_ORG, &format!("{org_id}/"), None, 101)? {
            let id = String::from_utf8(id)
                .map_err(|_| StoreError::corrupt(BY_ORG, format!("{key}: not UTF-8")))?;
            if let Some(r) = self.get(&id)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Every record, in id order (the CLI's list, the metadata refresh). An unreadable record
    /// is reported by id and skipped.
    pub fn all(&self) -> Result<crate::Readable<ConnectionRecord>, StoreError> {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for (id, bytes) in self.store.scan(CONNECTIONS, "", None, usize::MAX)? {
            match db::decode(CONNECTIONS, &id, &bytes) {
                Ok(r) => ok.push(r),
                Err(e) => bad.push((id, e)),
            }
        }
        Ok((ok, bad))
    }

    /// A page of records; `org_of` resolves an organization for the domain filter.
    pub fn list(
        &self,
        filter: &ConnectionFilter,
        page: &PageRequest,
        mut org_of: impl FnMut(&str) -> Result<Option<Organization>, StoreError>,
    ) -> Result<Page<ConnectionRecord>, StoreError> {
        let search = filter.search.as_ref().map(|s| s.to_lowercase());
        let mut orgs: std::collections::HashMap<String, Option<Organization>> =
            std::collections::HashMap::new();
        idbridge_store::page(self.store.as_ref(), CONNECTIONS, "", page, |id, bytes| {
            let r: ConnectionRecord = db::decode(CONNECTIONS, id, bytes)?;
            let c = &r.connection;
            if filter
                .connection_type
                .as_ref()
                .is_some_and(|t| *t != c.connection_type)
                || filter
                    .organization_id
                    .as_ref()
                    .is_some_and(|o| c.organization_id.as_ref() != Some(o))
                || search
                    .as_ref()
                    .is_some_and(|s| !c.name.to_lowercase().contains(s))
            {
                return Ok(None);
            }
            let Some(domain) = &filter.domain else {
                return Ok(Some(r));
            };
            let Some(org_id) = &c.organization_id else {
                return Ok(None);
            };
            if !orgs.contains_key(org_id) {
                orgs.insert(org_id.clone(), org_of(org_id)?);
            }
            let has_domain = orgs
                .get(org_id)
                .and_then(Option::as_ref)
                .is_some_and(|o| o.domain_names().any(|x| x == domain));
            Ok(has_domain.then_some(r))
        })
    }

    /// Stages a new record with its indexes (the id and external id must be free).
    pub(crate) fn stage_create(cs: &mut ChangeSet, record: &ConnectionRecord) -> SsoResult<()> {
        let id = record.id();
        cs.require_absent(CONNECTIONS, id);
        cs.put(CONNECTIONS, id, to_json(record)?);
        if let Some(org) = record.organization_id() {
            cs.put(BY_ORG, format!("{org}/{id}"), id.as_bytes().to_vec());
        }
        if let Some(ext) = &record.external_id {
            cs.require_absent(BY_EXTERNAL_ID, ext);
            cs.put(BY_EXTERNAL_ID, ext, id.as_bytes().to_vec());
        }
        Ok(())
    }

    /// Stages `next` over `old`, which must still be what is stored (optimistic concurrency).
    pub(crate) fn stage_replace(
        cs: &mut ChangeSet,
        old: &ConnectionRecord,
        next: &ConnectionRecord,
    ) -> SsoResult<()> {
        cs.require_equals(CONNECTIONS, old.id(), Some(to_json(old)?));
        cs.put(CONNECTIONS, next.id(), to_json(next)?);
        Ok(())
    }

    /// Stages the removal of a record and its indexes (it must exist).
    pub(crate) fn stage_delete(cs: &mut ChangeSet, record: &ConnectionRecord) {
        let id = record.id();
        cs.require_present(CONNECTIONS, id);
        cs.delete(CONNECTIONS, id);
        if let Some(org) = record.organization_id() {
            cs.delete(BY_ORG, format!("{org}/{id}"));
        }
        if let Some(ext) = &record.external_id {
            cs.delete(BY_EXTERNAL_ID, ext);
        }
    }

    /// Whether a failed commit failed on the external-id index.
    pub(crate) fn is_external_id_conflict(e: &StoreError) -> bool {
        matches!(e, StoreError::Conflict { table, .. } if table == BY_EXTERNAL_ID)
    }

    /// Whether a failed commit failed on a connection record (changed or deleted meanwhile).
    pub(crate) fn is_record_conflict(e: &StoreError) -> bool {
        matches!(e, StoreError::Conflict { table, .. } if table == CONNECTIONS)
    }
}

/// Stages the first-login activation of `record` (state `active`, `connection.activated`)
/// into `cs`, the login's own commit. Returns false (staging nothing) when already active.
pub(crate) fn stage_activation(
    cs: &mut ChangeSet,
    record: &ConnectionRecord,
    org: Option<&Organization>,
) -> SsoResult<bool> {
    if record.activated_at.is_some() {
        return Ok(false);
    }
    let now = Timestamp::now();
    let mut next = record.clone();
    next.activated_at = Some(now);
    next.connection.state = ConnectionState::Active;
    next.connection.status = ConnectionState::Active.status();
    next.connection.updated_at = now;
    Connections::stage_replace(cs, record, &next)?;
    let c = with_domains(next.connection.clone(), org);
    let event = Event::new(EventKind::ConnectionActivated, event_data(&c, &next));
    cs.append_event(&event, c.organization_id.as_deref());
    Ok(true)
}
