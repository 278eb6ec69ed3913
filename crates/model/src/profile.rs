//! The SSO profile returned by `/sso/token` and `/sso/profile` (workos-api.md §1.4).

use serde::{Deserialize, Serialize};

use crate::tag::ProfileTag;
use crate::RoleRef;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub object: ProfileTag,
    /// Stable per user and connection: apps key their JIT identities on it.
    pub id: String,
    pub idp_id: String,
    pub organization_id: Option<String>,
    pub connection_id: String,
    pub connection_type: String,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// Required by the Python v10 SDK even when null.
    pub name: Option<String>,
    pub role: Option<RoleRef>,
    pub roles: Option<Vec<RoleRef>>,
    pub groups: Vec<String>,
    pub custom_attributes: serde_json::Map<String, serde_json::Value>,
    /// Deprecated upstream; always present (at least `{}`) because Python v10 requires it.
    pub raw_attributes: serde_json::Map<String, serde_json::Value>,
}
