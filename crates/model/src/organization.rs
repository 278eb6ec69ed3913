//! Organizations and their domains (workos-api.md §2.2).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::tag::{OrganizationDomainTag, OrganizationTag};
use crate::Timestamp;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    pub object: OrganizationTag,
    pub id: String,
    pub name: String,
    pub domains: Vec<OrganizationDomain>,
    /// WorkOS metadata values are strings.
    pub metadata: BTreeMap<String, String>,
    pub external_id: Option<String>,
    /// Optional string in the OpenAPI spec: omitted rather than `null` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe_customer_id: Option<String>,
    /// Deprecated upstream but required by the Python v5 SDK's model.
    pub allow_profiles_outside_organization: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrganizationDomain {
    pub object: OrganizationDomainTag,
    pub id: String,
    pub organization_id: String,
    pub domain: String,
    pub state: DomainState,
    pub verification_strategy: VerificationStrategy,
    /// Optional strings in the OpenAPI spec: omitted rather than `null` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_prefix: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainState {
    Failed,
    LegacyVerified,
    Pending,
    Unverified,
    Verified,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationStrategy {
    Dns,
    Manual,
}

impl Organization {
    /// The domain names, lower-cased, for lookups by email domain.
    pub fn domain_names(&self) -> impl Iterator<Item = &str> {
        self.domains.iter().map(|d| d.domain.as_str())
    }
}
