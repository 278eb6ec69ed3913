//! Organizations and their domains (workos-api.md §2.2): the one owner of the
//! [`ORGANIZATIONS`], [`BY_EXTERNAL_ID`], [`BY_DOMAIN`] and [`BY_DOMAIN_ID`] tables.
//!
//! Domains live inside their organization's record (that is how WorkOS shows them); the
//! `/organization_domains` calls find a domain's organization through [`BY_DOMAIN_ID`].
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
/// `org_domain_…` → organization id.
const BY_DOMAIN_ID: &str = "org_domain_by_id";
/// Length of a DNS verification token.
const VERIFICATION_TOKEN_LEN: usize = 25;

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
        for d in &org.domains {
            cs.delete(BY_DOMAIN, domain_key(&d.domain, &org.id));
            cs.delete(BY_DOMAIN_ID, &d.id);
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

/// Why a DNS-verified domain failed (the reasons of WorkOS's
/// `organization_domain.verification_failed` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainFailure {
    /// It stayed pending longer than the verification period.
    PeriodExpired,
    /// Another organization verified the same domain first.
    VerifiedByOtherOrganization,
}

impl DomainFailure {
    /// The event's `reason`.
    pub fn reason(self) -> &'static str {
        match self {
            DomainFailure::PeriodExpired => "domain_verification_period_expired",
            DomainFailure::VerifiedByOtherOrganization => "domain_verified_by_other_organization",
        }
    }
}

/// What a DNS check concluded, to be applied to a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainCheckOutcome {
    /// The TXT record carries the token: verified (`organization_domain.verified`).
    Verified,
    /// A verification record with another token: failed (`organization_domain.updated`).
    WrongToken,
    /// No record: pending; `restart` starts its verification period again (an explicit
    /// verify call on a failed domain).
    Absent { restart: bool },
    /// Failed for one of WorkOS's reasons (`organization_domain.verification_failed`).
    Failed(DomainFailure),
}

impl Organizations {
    /// The organization holding this domain id, and the domain.
    pub fn find_domain(
        &self,
        domain_id: &str,
    ) -> Result<Option<(Organization, OrganizationDomain)>, StoreError> {
        if parse_id(IdPrefix::OrganizationDomain, domain_id).is_err() {
            return Ok(None);
        }
        let Some(org_id) = db::get_string(self.store.as_ref(), BY_DOMAIN_ID, domain_id)? else {
            return Ok(None);
        };
        Ok(self.get(&org_id)?.and_then(|org| {
            let d = org.domains.iter().find(|d| d.id == domain_id).cloned()?;
            Some((org, d))
        }))
    }

    /// The domain, or `NotFound`.
    pub fn load_domain(&self, domain_id: &str) -> SsoResult<OrganizationDomain> {
        self.find_domain(domain_id)?
            .map(|(_, d)| d)
            .ok_or_else(|| SsoError::not_found("Organization Domain", domain_id))
    }

    /// The organization that has verified `domain` (lower-case), if one has.
    pub fn verified_owner(&self, domain: &str) -> Result<Option<Organization>, StoreError> {
        Ok(self
            .holders_of(domain, "")?
            .into_iter()
            .find(|(_, d)| d.state == DomainState::Verified)
            .map(|(org, _)| org))
    }

    /// The organizations other than `except` that hold `domain`, with their copy of it.
    fn holders_of(
        &self,
        domain: &str,
        except: &str,
    ) -> Result<Vec<(Organization, OrganizationDomain)>, StoreError> {
        let mut ids = Vec::new();
        self.store
            .for_each_prefixed(BY_DOMAIN, &format!("{domain}/"), &mut |_, v| {
                ids.push(String::from_utf8_lossy(v).into_owned());
                true
            })?;
        let mut out = Vec::new();
        for id in ids.into_iter().filter(|id| id != except) {
            if let Some(org) = self.get(&id)? {
                if let Some(d) = org.domains.iter().find(|d| d.domain == domain).cloned() {
                    out.push((org, d));
                }
            }
        }
        Ok(out)
    }

    /// `POST /organization_domains`: a new `pending` domain with a DNS verification token,
    /// and its `organization_domain.created` event. The same domain twice in one organization,
    /// or a domain another organization has verified, is a conflict.
    #[tracing::instrument(name = "organizations.add_domain", skip(self))]
    pub async fn add_domain(&self, org_id: &str, domain: &str) -> SsoResult<OrganizationDomain> {
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        if !valid_domain(&domain) {
            return Err(SsoError::invalid("domain", "invalid_domain"));
        }
        let old = self.load(org_id)?;
        if old.domains.iter().any(|d| d.domain == domain) {
            return Err(SsoError::Conflict {
                code: "domain_already_exists",
                message: format!("Domain '{domain}' already exists for this organization."),
            });
        }
        if old.domains.len() >= MAX_DOMAINS {
            return Err(SsoError::invalid("domain", "too_many_domains"));
        }
        let others = self.holders_of(&domain, &old.id)?;
        if let Some((other, _)) = others
            .iter()
            .find(|(_, d)| d.state == DomainState::Verified)
        {
            return Err(SsoError::Conflict {
                code: "domain_already_exists",
                message: format!(
                    "Domain '{domain}' is already verified by organization '{}'; delete it there first.",
                    other.id
                ),
            });
        }
        let id = new_id(IdPrefix::OrganizationDomain);
        let now = created_at_of(IdPrefix::OrganizationDomain, &id);
        let new = OrganizationDomain {
            object: OrganizationDomainTag,
            id,
            organization_id: old.id.clone(),
            domain,
            state: DomainState::Pending,
            verification_strategy: VerificationStrategy::Dns,
            verification_token: Some(idbridge_secrets::random_alphanumeric(
                VERIFICATION_TOKEN_LEN,
            )),
            verification_prefix: None,
            created_at: now,
            updated_at: now,
        };
        let mut org = old.clone();
        org.domains.push(new.clone());
        org.updated_at = now;
        let mut cs = ChangeSet::new();
        cs.require_equals(ORGANIZATIONS, &org.id, Some(to_json(&old)?));
        stage_write(&mut cs, &org, Some(&old))?;
        domain_event(&mut cs, EventKind::OrganizationDomainCreated, &new, None)?;
        self.commit_change(cs, &org).await?;
        tracing::info!(organization_id = %org.id, domain_id = %new.id, "organization domain added");
        Ok(new)
    }

    /// `DELETE /organization_domains/{id}`, with its `organization_domain.deleted` event.
    #[tracing::instrument(name = "organizations.delete_domain", skip(self))]
    pub async fn delete_domain(&self, domain_id: &str) -> SsoResult<OrganizationDomain> {
        let (old, domain) = self
            .find_domain(domain_id)?
            .ok_or_else(|| SsoError::not_found("Organization Domain", domain_id))?;
        let mut org = old.clone();
        org.domains.retain(|d| d.id != domain_id);
        org.updated_at = Timestamp::now();
        let mut cs = ChangeSet::new();
        cs.require_equals(ORGANIZATIONS, &org.id, Some(to_json(&old)?));
        stage_write(&mut cs, &org, Some(&old))?;
        domain_event(&mut cs, EventKind::OrganizationDomainDeleted, &domain, None)?;
        self.commit_change(cs, &org).await?;
        Ok(domain)
    }

    /// Applies a DNS check's outcome to the domain as it was when the check started
    /// (`checked`): if the domain changed meanwhile, nothing is written (a conflict). Verifying
    /// fails the same domain's pending copies in other organizations
    /// (`domain_verified_by_other_organization`), in the same commit.
    #[tracing::instrument(name = "organizations.apply_domain_check", skip(self, checked))]
    pub async fn apply_domain_check(
        &self,
        checked: &OrganizationDomain,
        outcome: DomainCheckOutcome,
    ) -> SsoResult<OrganizationDomain> {
        let (old, current) = self
            .find_domain(&checked.id)?
            .ok_or_else(|| SsoError::not_found("Organization Domain", &checked.id))?;
        if &current != checked {
            return Err(SsoError::concurrent("organization domain"));
        }
        let now = Timestamp::now();
        let mut d = current.clone();
        let (state, kind, failure) = match outcome {
            DomainCheckOutcome::Verified => (
                DomainState::Verified,
                EventKind::OrganizationDomainVerified,
                None,
            ),
            DomainCheckOutcome::WrongToken => (
                DomainState::Failed,
                EventKind::OrganizationDomainUpdated,
                None,
            ),
            DomainCheckOutcome::Absent { restart } => {
                if d.state == DomainState::Pending && !restart {
                    return Ok(d);
                }
                (
                    DomainState::Pending,
                    EventKind::OrganizationDomainUpdated,
                    None,
                )
            }
            DomainCheckOutcome::Failed(f) => (
                DomainState::Failed,
                EventKind::OrganizationDomainVerificationFailed,
                Some(f),
            ),
        };
        // Someone else verified it first: this one fails instead.
        let others = self.holders_of(&d.domain, &old.id)?;
        let (state, kind, failure) = if state == DomainState::Verified
            && others.iter().any(|(_, o)| o.state == DomainState::Verified)
        {
            (
                DomainState::Failed,
                EventKind::OrganizationDomainVerificationFailed,
                Some(DomainFailure::VerifiedByOtherOrganization),
            )
        } else {
            (state, kind, failure)
        };
        if d.state == state
            && failure.is_none()
            && !matches!(outcome, DomainCheckOutcome::Absent { restart: true })
        {
            return Ok(d);
        }
        d.state = state;
        d.updated_at = now;
        let mut cs = ChangeSet::new();
        let org = replace_domain(&old, &d, now);
        cs.require_equals(ORGANIZATIONS, &org.id, Some(to_json(&old)?));
        stage_write(&mut cs, &org, Some(&old))?;
        domain_event(&mut cs, kind, &d, failure)?;
        if state == DomainState::Verified {
            for (other_old, mut od) in others {
                if od.state == DomainState::Verified || od.state == DomainState::Failed {
                    continue;
                }
                od.state = DomainState::Failed;
                od.updated_at = now;
                let other = replace_domain(&other_old, &od, now);
                cs.require_equals(ORGANIZATIONS, &other.id, Some(to_json(&other_old)?));
                stage_write(&mut cs, &other, Some(&other_old))?;
                domain_event(
                    &mut cs,
                    EventKind::OrganizationDomainVerificationFailed,
                    &od,
                    Some(DomainFailure::VerifiedByOtherOrganization),
                )?;
            }
        }
        self.commit_change(cs, &org).await?;
        tracing::info!(domain_id = %d.id, state = ?d.state, "organization domain checked");
        Ok(d)
    }

    /// Every DNS-strategy domain that is `pending`, for the background re-check.
    pub fn pending_dns_domains(&self) -> Result<Vec<OrganizationDomain>, StoreError> {
        let mut out = Vec::new();
        self.store
            .for_each_prefixed(ORGANIZATIONS, "", &mut |id, bytes| {
                let id = String::from_utf8_lossy(id);
                match db::decode::<Organization>(ORGANIZATIONS, &id, bytes) {
                    Ok(org) => out.extend(org.domains.into_iter().filter(|d| {
                        d.state == DomainState::Pending
                            && d.verification_strategy == VerificationStrategy::Dns
                            && d.verification_token.is_some()
                    })),
                    // One bad record must not stop the others' re-checks.
                    Err(e) => tracing::warn!(error = %e, "skipping an unreadable organization"),
                }
                true
            })?;
        Ok(out)
    }
}

/// The organization with `d` in place of its domain of the same id.
fn replace_domain(org: &Organization, d: &OrganizationDomain, now: Timestamp) -> Organization {
    let mut org = org.clone();
    for slot in org.domains.iter_mut() {
        if slot.id == d.id {
            *slot = d.clone();
        }
    }
    org.updated_at = now;
    org
}

/// Appends an `organization_domain.*` event: the domain itself, or for
/// `verification_failed` `{reason, organization_domain}` (the OpenAPI EventSchema).
fn domain_event(
    cs: &mut ChangeSet,
    kind: EventKind,
    d: &OrganizationDomain,
    failure: Option<DomainFailure>,
) -> SsoResult<()> {
    let domain = serde_json::to_value(d).map_err(SsoError::internal)?;
    let data = match failure {
        Some(f) => serde_json::json!({"reason": f.reason(), "organization_domain": domain}),
        None => domain,
    };
    cs.append_event(&Event::new(kind, data), Some(&d.organization_id));
    Ok(())
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
        for d in &old.domains {
            cs.delete(BY_DOMAIN, domain_key(&d.domain, &old.id));
            cs.delete(BY_DOMAIN_ID, &d.id);
        }
        if let Some(ext) = &old.external_id {
            if org.external_id.as_ref() != Some(ext) {
                cs.delete(BY_EXTERNAL_ID, ext);
            }
        }
    }
    for d in &org.domains {
        cs.put(
            BY_DOMAIN,
            domain_key(&d.domain, &org.id),
            org.id.as_bytes().to_vec(),
        );
        cs.put(BY_DOMAIN_ID, &d.id, org.id.as_bytes().to_vec());
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
