//! Directories, directory users and groups (workos-api.md §3).

use serde::{Deserialize, Serialize};

use crate::tag::{DirectoryGroupTag, DirectoryTag, DirectoryUserTag};
use crate::{RoleRef, Timestamp};

/// A directory as the REST API returns it (`state` in the linked/unlinked vocabulary).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Directory {
    pub object: DirectoryTag,
    pub id: String,
    pub organization_id: String,
    pub external_key: String,
    /// `okta scim v2.0`, `azure scim v2.0`, `generic scim v2.0`, `sftp`, `ldap`, ...
    #[serde(rename = "type")]
    pub directory_type: String,
    pub state: DirectoryState,
    pub name: String,
    /// Omitted when unknown: the OpenAPI `Directory.domain` is a non-nullable string (the SDKs
    /// read it as optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    pub metadata: DirectoryMetadata,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectoryState {
    Linked,
    Validating,
    InvalidCredentials,
    Unlinked,
    Deleting,
}

impl DirectoryState {
    /// The same state in the events/webhooks vocabulary (`linked` → `active`).
    pub fn event_name(self) -> &'static str {
        match self {
            DirectoryState::Linked => "active",
            DirectoryState::Validating => "validating",
            DirectoryState::InvalidCredentials => "invalid_credentials",
            DirectoryState::Unlinked => "inactive",
            DirectoryState::Deleting => "deleting",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryMetadata {
    pub users: UserCounts,
    pub groups: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCounts {
    pub active: u64,
    pub inactive: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserState {
    Active,
    Inactive,
    Suspended,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryUserEmail {
    pub primary: bool,
    /// Omitted when unknown: the OpenAPI schema types it as a non-nullable string.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub email_type: Option<String>,
    pub value: Option<String>,
}

/// A directory user as it appears in events (no `groups` key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectoryUser {
    pub object: DirectoryUserTag,
    pub id: String,
    pub directory_id: String,
    pub organization_id: String,
    pub idp_id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub name: Option<String>,
    /// Deprecated upstream, but the Python v5 SDK requires the key.
    pub emails: Vec<DirectoryUserEmail>,
    pub username: Option<String>,
    pub job_title: Option<String>,
    pub state: UserState,
    pub custom_attributes: serde_json::Map<String, serde_json::Value>,
    pub raw_attributes: serde_json::Map<String, serde_json::Value>,
    /// Omitted when the organization has no roles: the OpenAPI schema types `role` as an
    /// object and `roles` as an array (neither nullable); Node, Python v10 and v5 treat both
    /// as optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<RoleRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<RoleRef>>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A directory user as `/directory_users` returns it: with its groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectoryUserWithGroups {
    #[serde(flatten)]
    pub user: DirectoryUser,
    pub groups: Vec<DirectoryGroup>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectoryGroup {
    pub object: DirectoryGroupTag,
    pub id: String,
    pub idp_id: String,
    pub directory_id: String,
    pub organization_id: String,
    pub name: String,
    pub raw_attributes: serde_json::Map<String, serde_json::Value>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}
