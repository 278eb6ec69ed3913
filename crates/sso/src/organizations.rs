//! Organizations and their domains (workos-api.md §2.2): the one owner of the
//! [`ORGANIZATIONS`], [`BY_EXTERNAL_ID`] and [`BY_DOMAIN`] tables.
//!
//! Records are the WorkOS `organization` object as JSON, keyed by id; ids are ULIDs and
//! `created_at` is taken from the ULID, so key order is list order. The directory engine reads
//! organizations through this module too ([`idbridge_directory::Organizations`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use idbridge_model::tag::{OrganizationDomainTag, OrganizationTag};
use idbridge_model::{
    new_id, parse_id, DomainState, Event, EventKind, IdPrefix, Organization, OrganizationDomain,
    Page, PageRequest, Timestamp, VerificationStrategy,
};
use idbridge_store::{ChangeSet, ConflictKind, Store, StoreError};

use crate::db::{self, created_at_of, to_json};
use crate::error::{FieldIssue, SsoError, SsoResult};

/// `org_…` → the organization (JSON).
const ORGANIZATIONS: &str = "organizations";
/// `<external_id>` → organization id (unique).
const BY_EXTERNAL_ID: &str = "org_by_external_id";
/// `<domain>/<organization id>` → organization id (a domain may be claimed by several).
const BY_DOMAIN: &str = "org_by_domain";

/// Longest organization name.
pub const MAX_NAME_LEN: usize = 512;
/// Most domains per organization.
pub const MAX_DOMAINS: usize = 100;
/// Most metadata keys.
pub const MAX_METADATA_KEYS: usize = 50;
/// Longest metadata key.
pub const MAX_METADATA_KEY_LEN: usize = 40;
/// Longest metadata value.
pub const MAX_METADATA_VALUE_LEN: usize = 600;

/// A domain of a new or updated organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInput {
    /// The DNS name (lower-cased by [`DomainInput::new`]).
    pub domain: String,
    /// `verified` or `pending`.
    pub state: DomainState,
}

impl DomainInput {
    /// A domain, lower-cased.
    pub fn new(domain: &str, state: DomainState) -> Self {
        DomainInput {
            domain: domain.to_ascii_lowercase(),
            state,
        }
    }
}

/// `POST /organizations`, typed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewOrganization {
    pub name: String,
    pub domains: Vec<DomainInput>,
    pub external_id: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub allow_profiles_outside_organization: bool,
}

/// `PUT /organizations/{id}`, typed: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrganizationChanges {
    pub name: Option<String>,
    pub domains: Option<Vec<DomainInput>>,
    /// `Some(None)` clears it.
    pub external_id: Option<Option<String>>,
    /// `Some(None)` clears it.
    pub stripe_customer_id: Option<Option<String>>,
    /// Keys to set (`Some`) or remove (`None`); other keys stay.
    pub metadata: Option<BTreeMap<String, Option<String>>>,
    pub allow_profiles_outside_organization: Option<bool>,
}

/// `GET /organizations` filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrganizationFilter {
    /// Only organizations with one of these domains (lower-case).
    pub domains: Vec<String>,
    /// Only names containing this (case-insensitive).
    pub search: Option<String>,
}

/// A plausible DNS name: labels of letters, digits and hyphens, at least one dot.
pub fn valid_domain(d: &str) -> bool {
    let d = d.trim_end_matches('.');
    d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn name_issues(name: &str, out: &mut Vec<FieldIssue>) {
    if name.trim().is_empty() {
        out.push(FieldIssue::new("name", "must_not_be_blank"));
    } else if name.len() > MAX_NAME_LEN {
        out.push(FieldIssue::new("name", "too_long"));
    }
}

fn domain_issues(domains: &[DomainInput], out: &mut Vec<FieldIssue>) {
    for (i, d) in domains.iter().enumerate() {
        if !valid_domain(&d.domain) {
            out.push(FieldIssue::new(
                format!("domain_data[{i}].domain"),
                "invalid_domain",
            ));
        }
    }
    if domains.len() > MAX_DOMAINS {
        out.push(FieldIssue::new("domain_data", "too_many_domains"));
    }
}

fn metadata_issues<'a>(
    entries: impl Iterator<Item = (&'a String, Option<&'a String>)>,
    out: &mut Vec<FieldIssue>,
) {
    for (k, v) in entries {
        if k.is_empty() || k.len() > MAX_METADATA_KEY_LEN {
            out.push(FieldIssue::new(
                format!("metadata.{k}"),
                "invalid_metadata_key",
            ));
        } else if v.is_some_and(|v| v.len() > MAX_METADATA_VALUE_LEN) {
            out.push(FieldIssue::new(format!("metadata.{k}"), "value_too_long"));
        }
    }
}

impl NewOrganization {
    /// What is wrong with it (empty when nothing): the HTTP parser reports these with its own
    /// field errors; the service refuses an input that has any.
    pub fn issues(&self) -> Vec<FieldIssue> {
        let mut out = Vec::new();
        name_issues(&self.name, &mut out);
        domain_issues(&self.domains, &mut out);
        metadata_issues(self.metadata.iter().map(|(k, v)| (k, Some(v))), &mut out);
        if self.metadata.len() > MAX_METADATA_KEYS {
            out.push(FieldIssue::new("metadata", "too_many_keys"));
        }
        out
    }
}

impl OrganizationChanges {
    /// What is wrong with it (empty when nothing); see [`NewOrganization::issues`].
    pub fn issues(&self) -> Vec<FieldIssue> {
        let mut out = Vec::new();
        if let Some(n) = &self.name {
            name_issues(n, &mut out);
        }
        if let Some(d) = &self.domains {
            domain_issues(d, &mut out);
        }
        if let Some(m) = &self.metadata {
            metadata_issues(m.iter().map(|(k, v)| (k, v.as_ref())), &mut out);
        }
        out
    }
}

fn refuse_issues(issues: Vec<FieldIssue>) -> SsoResult<()> {
    if issues.is_empty() {
        Ok(())
    } else {
        Err(SsoError::Invalid(issues))
    }
}

/// Keeps the id and creation time of domains that stay.
fn build_domains(
    org_id: &str,
    data: &[DomainInput],
    existing: &[OrganizationDomain],
    now: Timestamp,
) -> Vec<OrganizationDomain> {
    let mut out: Vec<OrganizationDomain> = Vec::new();
    for DomainInput { domain, state } in data {
        if out.iter().any(|d| &d.domain == domain) {
            continue;
        }
        match existing.iter().find(|d| &d.domain == domain) {
            Some(old) => {
                let mut d = old.clone();
                if d.state != *state {
                    d.state = *state;
                    d.updated_at = now;
                }
                out.push(d);
            }
            None => out.push(OrganizationDomain {
                object: OrganizationDomainTag,
                id: new_id(IdPrefix::OrganizationDomain),
                organization_id: org_id.to_string(),
                domain: domain.clone(),
                state: *state,
                verification_strategy: VerificationStrategy::Manual,
                verification_token: None,
                verification_prefix: None,
                created_at: now,
                updated_at: now,
            }),
        }
    }
    out
}

/// The owner of the organization tables.
#[derive(Clone)]
pub struct Organizations {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Organizations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Organizations").finish_non_exhaustive()
    }
}

impl Organizations {
    /// Over a store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Organizations { store }
    }

    /// The organization, if it exists (a malformed id cannot).
    pub fn get(&self, id: &str) -> Result<Option<Organization>, StoreError> {
        if parse_id(IdPrefix::Organization, id).is_err() {
            return Ok(None);
        }
        db::get_json(self.store.as_ref(), ORGANIZATIONS, id)
    }

    /// The organization, or `NotFound`.
    pub fn load(&self, id: &str) -> SsoResult<Organization> {
        self.get(id)?
            .ok_or_else(|| SsoError::not_found("Organization", id))
    }

    /// The organization with this external id, if any.
    pub fn by_external_id(&self, external_id: &str) -> Result<Option<Organization>, StoreError> {
        match db::get_string(self.store.as_ref(), BY_EXTERNAL_ID, external_id)? {
            Some(id) => self.get(&id),
            None => Ok(None),
        }
    }

    /// An organization id or an external id, resolved to the organization.
    pub fn resolve(&self, id_or_external_id: &str) -> Result<Option<Organization>, StoreError> {
        if id_or_external_id.starts_with("org_") {
            if let Some(org) = self.get(id_or_external_id)? {
                return Ok(Some(org));
            }
        }
        self.by_external_id(id_or_external_id)
    }

    /// A page of organizations.
    pub fn list(
        &self,
        filter: &OrganizationFilter,
        page: &PageRequest,
    ) -> Result<Page<Organization>, StoreError> {
        let search = filter.search.as_ref().map(|s| s.to_lowercase());
        idbridge_store::page(self.store.as_ref(), ORGANIZATIONS, "", page, |id, bytes| {
            let org: Organization = db::decode(ORGANIZATIONS, id, bytes)?;
            let keep = (filter.domains.is_empty()
                || org
                    .domain_names()
                    .any(|d| filter.domains.iter().any(|w| w == d)))
                && search
                    .as_ref()
                    .is_none_or(|s| org.name.to_lowercase().contains(s));
            Ok(keep.then_some(org))
        })
    }

    /// Durably creates the organization and its `organization.created` event.
    #[tracing::instrument(name = "organizations.create", skip_all)]
    pub async fn create(&self, input: NewOrganization) -> SsoResult<Organization> {
        refuse_issues(input.issues())?;
        let id = new_id(IdPrefix::Organization);
        let now = created_at_of(IdPrefix::Organization, &id);
        let org = Organization {
            object: OrganizationTag,
            domains: build_domains(&id, &input.domains, &[], now),
            id,
            name: input.name,
            metadata: input.metadata,
            external_id: input.external_id,
            stripe_customer_id: None,
            allow_profiles_outside_organization: input.allow_profiles_outside_organization,
            created_at: now,
            updated_at: now,
        };
        let mut cs = ChangeSet::new();
        stage_write(&mut cs, &org, None)?;
        let data = serde_json::to_value(&org).map_err(SsoError::internal)?;
        cs.append_event(
            &Event::new(EventKind::OrganizationCreated, data),
            Some(&org.id),
        );
        self.commit_change(cs, &org).await?;
        tracing::info!(organization_id = %org.id, "organization created");
        Ok(org)
    }

    /// Applies the changes; an organization they do not change is not rewritten.
    #[tracing::instrument(name = "organizations.update", skip(self, changes))]
    pub async fn update(&self, id: &str, changes: OrganizationChanges) -> SsoResult<Organization> {
        refuse_issues(changes.issues())?;
        let old = self.load(id)?;
        let mut org = old.clone();
        let now = Timestamp::now();
        if let Some(n) = changes.name {
            org.name = n;
        }
        if let Some(d) = &changes.domains {
            org.domains = build_domains(&org.id, d, &old.domains, now);
        }
        if let Some(ext) = changes.external_id {
            org.external_id = ext;
        }
        if let Some(s) = changes.stripe_customer_id {
            org.stripe_customer_id = s;
        }
        if let Some(patch) = changes.metadata {
            for (k, v) in patch {
                match v {
                    Some(v) => org.metadata.insert(k, v),
                    None => org.metadata.remove(&k),
                };
            }
            if org.metadata.len() > MAX_METADATA_KEYS {
                return Err(SsoError::invalid("metadata", "too_many_keys"));
            }
        }
        if let Some(a) = changes.allow_profiles_outside_organization {
            org.allow_profiles_outside_organization = a;
        }
        if org == old {
            return Ok(org);
        }
        org.updated_at = now;
        let mut cs = ChangeSet::new();
        // Optimistic concurrency: the record must still be what was read.
        cs.require_equals(ORGANIZATIONS, &org.id, Some(to_json(&old)?));
        stage_write(&mut cs, &org, Some(&old))?;
        let data = serde_json::to_value(&org).map_err(SsoError::internal)?;
        cs.append_event(
            &Event::new(EventKind::OrganizationUpdated, data),
            Some(&org.id),
        );
        self.commit_change(cs, &org).await?;
        Ok(org)
    }

    /// Deletes the organization (its directories and connections stay, as with WorkOS until
    /// they are deleted) and appends `organization.deleted`.
    #[tracing::instrument(name = "organizations.delete", skip(self))]
    pub async fn delete(&self, id: &str) -> SsoResult<Organization> {
        let org = self.load(id)?;
        let mut cs = ChangeSet::new();
        cs.require_present(ORGANIZATIONS, &org.id);
        cs.delete(ORGANIZATIONS, &org.id);
        for d in org.domain_names() {
            cs.delete(BY_DOMAIN, domain_key(d, &org.id));
        }
        if let Some(ext) = &org.external_id {
            cs.delete(BY_EXTERNAL_ID, ext);
        }
        let data = serde_json::to_value(&org).map_err(SsoError::internal)?;
        cs.append_event(
            &Event::new(EventKind::OrganizationDeleted, data),
            Some(&org.id),
        );
        match db::commit(&self.store, cs).await {
            Ok(_) => Ok(org),
            Err(StoreError::Conflict { .. }) => Err(SsoError::not_found("Organization", id)),
            Err(e) => Err(e.into()),
        }
    }

    /// A config-declared organization, keyed by `external_id`: created when absent, otherwise
    /// brought to exactly the declared name, domains (verified) and metadata. Returns the
    /// organization and whether anything changed.
    pub async fn upsert_declared(
        &self,
        external_id: &str,
        name: &str,
        domains: &[String],
        metadata: &BTreeMap<String, String>,
    ) -> SsoResult<(Organization, bool)> {
        let domains: Vec<DomainInput> = domains
            .iter()
            .map(|d| DomainInput::new(d, DomainState::Verified))
            .collect();
        match self.by_external_id(external_id)? {
            Some(before) => {
                // Declared metadata replaces: keys no longer declared are removed.
                let mut patch: BTreeMap<String, Option<String>> =
                    before.metadata.keys().map(|k| (k.clone(), None)).collect();
                patch.extend(metadata.iter().map(|(k, v)| (k.clone(), Some(v.clone()))));
                let changes = OrganizationChanges {
                    name: Some(name.to_owned()),
                    domains: Some(domains),
                    metadata: Some(patch),
                    ..OrganizationChanges::default()
                };
                let after = self.update(&before.id, changes).await?;
                let changed = after != before;
                Ok((after, changed))
            }
            None => {
                let input = NewOrganization {
                    name: name.to_owned(),
                    domains,
                    external_id: Some(external_id.to_owned()),
                    metadata: metadata.clone(),
                    allow_profiles_outside_organization: false,
                };
                Ok((self.create(input).await?, true))
            }
        }
    }

    async fn commit_change(&self, cs: ChangeSet, org: &Organization) -> SsoResult<()> {
        match db::commit(&self.store, cs).await {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict {
                ref table,
                kind: ConflictKind::Exists,
                ..
            }) if table == BY_EXTERNAL_ID => Err(SsoError::Refused {
                code: "external_id_already_used",
                message: format!(
                    "An organization with external_id '{}' already exists.",
                    org.external_id.as_deref().unwrap_or_default()
                ),
            }),
            Err(StoreError::Conflict { .. }) => Err(SsoError::concurrent("organization")),
            Err(e) => Err(e.into()),
        }
    }
}

fn domain_key(domain: &str, org_id: &str) -> String {
    format!("{domain}/{org_id}")
}

/// Stages the record and its indexes, removing the old record's stale index entries. The
/// external id must be free (checked inside the transaction).
fn stage_write(
    cs: &mut ChangeSet,
    org: &Organization,
    old: Option<&Organization>,
) -> SsoResult<()> {
    cs.put(ORGANIZATIONS, &org.id, to_json(org)?);
    if let Some(old) = old {
        for d in old.domain_names() {
            cs.delete(BY_DOMAIN, domain_key(d, &old.id));
        }
        if let Some(ext) = &old.external_id {
            if org.external_id.as_ref() != Some(ext) {
                cs.delete(BY_EXTERNAL_ID, ext);
            }
        }
    }
    for d in org.domain_names() {
        cs.put(
            BY_DOMAIN,
            domain_key(d, &org.id),
            org.id.as_bytes().to_vec(),
        );
    }
    if let Some(ext) = &org.external_id {
        if old.and_then(|o| o.external_id.as_ref()) != Some(ext) {
            cs.require_absent(BY_EXTERNAL_ID, ext);
            cs.put(BY_EXTERNAL_ID, ext, org.id.as_bytes().to_vec());
        }
    }
    Ok(())
}

impl idbridge_directory::Organizations for Organizations {
    fn organization(&self, id: &str) -> Result<Option<Organization>, StoreError> {
        self.get(id)
    }

    fn stage_exists(&self, cs: &mut ChangeSet, id: &str) {
        cs.require_present(ORGANIZATIONS, id);
    }
}
