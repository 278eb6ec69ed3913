//! How the engine sees organizations, which it does not own: their one owner is the
//! organizations module of `idbridge-sso`, which implements [`Organizations`] over its table.
//! A directory belongs to an organization, takes its first verified domain, and
//! `dsync.activated` lists its domains.

use std::collections::BTreeMap;
use std::sync::RwLock;

use idbridge_model::Organization;
use idbridge_store::{ChangeSet, StoreError};

/// Read access to organizations, plus the commit condition that one still exists.
pub trait Organizations: Send + Sync + 'static {
    /// The organization, if it exists.
    fn organization(&self, id: &str) -> Result<Option<Organization>, StoreError>;

    /// Adds to `cs` the condition that organization `id` exists when `cs` commits (creating a
    /// directory must not race the organization's deletion). A failed condition is a
    /// [`StoreError::Conflict`] with [`idbridge_store::ConflictKind::Missing`] and key `id`.
    fn stage_exists(&self, cs: &mut ChangeSet, id: &str);
}

/// A fixed, in-memory set of organizations, for tools and tests that run the engine without
/// the SSO service (protocol crates' tests, benchmarks). Its [`Organizations::stage_exists`]
/// adds nothing: the set lives outside the store.
#[derive(Debug, Default)]
pub struct FixedOrganizations {
    orgs: RwLock<BTreeMap<String, Organization>>,
}

impl FixedOrganizations {
    /// These organizations.
    pub fn new(orgs: impl IntoIterator<Item = Organization>) -> Self {
        FixedOrganizations {
            orgs: RwLock::new(orgs.into_iter().map(|o| (o.id.clone(), o)).collect()),
        }
    }

    /// Adds (or replaces) one.
    pub fn insert(&self, org: Organization) {
        self.orgs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(org.id.clone(), org);
    }
}

impl Organizations for FixedOrganizations {
    fn organization(&self, id: &str) -> Result<Option<Organization>, StoreError> {
        Ok(self
            .orgs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned())
    }

    fn stage_exists(&self, _cs: &mut ChangeSet, _id: &str) {}
}
