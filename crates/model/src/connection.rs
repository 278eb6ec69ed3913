//! SSO connections (workos-api.md §2.1).

use serde::{Deserialize, Serialize};

use crate::tag::{ConnectionDomainTag, ConnectionTag};
use crate::Timestamp;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    pub object: ConnectionTag,
    pub id: String,
    pub organization_id: Option<String>,
    /// `GenericSAML`, `OktaSAML`, `GenericOIDC`, ... kept as a string: SDKs tolerate unknown values.
    pub connection_type: String,
    pub name: String,
    pub state: ConnectionState,
    /// Deprecated mirror of `state` that older SDKs still read.
    pub status: ConnectionStatus,
    pub domains: Vec<ConnectionDomain>,
    pub options: serde_json::Value,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionDomain {
    pub object: ConnectionDomainTag,
    pub id: String,
    pub domain: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    RequiresType,
    Draft,
    Active,
    Validating,
    Inactive,
    Deleting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    Linked,
    Unlinked,
}

impl ConnectionState {
    pub fn status(self) -> ConnectionStatus {
        match self {
            ConnectionState::Active => ConnectionStatus::Linked,
            _ => ConnectionStatus::Unlinked,
        }
    }
}
