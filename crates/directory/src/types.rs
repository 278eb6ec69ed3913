//! Plain data types of the engine API: stored records, inputs from the feeds, outcomes.

use std::collections::BTreeMap;

use idbridge_model::{
    Directory, DirectoryGroup, DirectoryUser, DirectoryUserEmail, Event, RoleMode,
};
use serde::{Deserialize, Serialize};

/// What happens to a user the feed deactivates (`active: false`) or drops from a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deactivation {
    /// WorkOS's default ("secure flow"): the user is deleted → `dsync.user.deleted`. Through
    /// SCIM the resource itself is kept ("parked", invisible to the app) until the client
    /// deletes or reactivates it; pull sources (LDAP, SFTP) delete outright.
    #[default]
    DeleteUser,
    /// "Custom management flow": the user stays with `state: inactive` → `dsync.user.updated`.
    KeepInactive,
}

/// Custom attribute name → source path (`department`, `customSchemas.license_tier`,
/// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User.department` or `...:User:department`).
pub type AttributeMap = BTreeMap<String, String>;

/// Per-directory behaviour chosen by the admin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DirectorySettings {
    /// Deactivated users: delete (default) or keep inactive.
    pub deactivation: Deactivation,
    /// Custom attributes computed from each user's `source`.
    pub attribute_map: AttributeMap,
    /// Single role (highest priority) or the union of mapped roles.
    pub role_mode: RoleMode,
    /// Fill WorkOS's predefined custom attributes (`department_name`, `job_title`, ...) from
    /// well-known source fields.
    pub predefined_attributes: bool,
}

impl Default for DirectorySettings {
    fn default() -> Self {
        DirectorySettings {
            deactivation: Deactivation::DeleteUser,
            attribute_map: AttributeMap::new(),
            role_mode: RoleMode::Single,
            predefined_attributes: true,
        }
    }
}

/// A directory as stored: the REST object plus the engine's settings and the SCIM token digest.
///
/// `directory.metadata` in the stored JSON is not maintained; readers get it from
/// [`Counts`] (the engine's getters fill it in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectoryRecord {
    /// The WorkOS-shaped directory.
    pub directory: Directory,
    /// Engine settings.
    pub settings: DirectorySettings,
    /// SHA-256 hex of the SCIM bearer token (SCIM directories only); the token itself is
    /// never stored.
    pub scim_token_digest: Option<String>,
    /// Deactivated by an administrator (`POST /admin/directories/{id}/deactivate`): its SCIM
    /// token is refused until `.../activate`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deactivated: bool,
}

/// What a presented SCIM bearer token gets.
#[derive(Debug, Clone, PartialEq)]
pub enum ScimAuth {
    /// The directory's token: go on.
    Accepted(Box<DirectoryRecord>),
    /// Not this directory's token (or no such directory, or one being deleted).
    Refused,
    /// The right token of a deactivated directory.
    Deactivated,
}

/// Per-directory counters for `metadata`, updated in the same commit as each change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Users with `state: active`.
    pub active: u64,
    /// Users with `state: inactive` (kept by [`Deactivation::KeepInactive`]).
    pub inactive: u64,
    /// Groups.
    pub groups: u64,
}

/// A user as a feed describes it, source-agnostic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserInput {
    /// The IdP's stable id (SCIM `externalId`, LDAP `objectGUID`/`entryUUID`, CSV `user_id`).
    pub idp_id: String,
    /// Primary email.
    pub email: Option<String>,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// All emails.
    pub emails: Vec<DirectoryUserEmail>,
    /// Login name.
    pub username: Option<String>,
    /// Title.
    pub job_title: Option<String>,
    /// `false` deactivates (see [`Deactivation`]).
    pub active: bool,
    /// The record as received (served as `raw_attributes`).
    pub raw_attributes: serde_json::Map<String, serde_json::Value>,
    /// Where the attribute map reads paths from (the SCIM resource, an LDAP entry as JSON, a CSV
    /// row as JSON).
    pub source: serde_json::Value,
    /// Unique keys: (index name, normalized value), e.g. `("scim.userName", "jane@x.com")`.
    pub unique_keys: Vec<(String, String)>,
}

/// A group as a feed describes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupInput {
    /// The IdP's stable id.
    pub idp_id: String,
    /// Display name.
    pub name: String,
    /// The record as received.
    pub raw_attributes: serde_json::Map<String, serde_json::Value>,
    /// Attribute source (kept for symmetry with users; groups have no custom attributes yet).
    pub source: serde_json::Value,
    /// Unique keys, e.g. `("scim.displayName", "engineering")`.
    pub unique_keys: Vec<(String, String)>,
}

/// A stored directory user: the WorkOS object plus the engine's bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredUser {
    /// The user as events and the REST API show it (without `groups`).
    pub user: DirectoryUser,
    /// +1 on every stored change; SCIM serves it as the ETag.
    pub version: u64,
    /// The unique-key slots this user holds (so they can be released on change/delete).
    pub unique_keys: Vec<(String, String)>,
}

/// A stored directory group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredGroup {
    /// The group as events and the REST API show it.
    pub group: DirectoryGroup,
    /// +1 on every stored change.
    pub version: u64,
    /// The unique-key slots this group holds.
    pub unique_keys: Vec<(String, String)>,
}

/// What an upsert or delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A new record was stored.
    Created,
    /// The stored record changed.
    Updated,
    /// Nothing differed; nothing was written and no event emitted.
    Unchanged,
    /// The record was removed (explicitly, or by deactivation under [`Deactivation::DeleteUser`]).
    Deleted,
    /// A new user arrived inactive under [`Deactivation::DeleteUser`]: nothing was stored.
    Discarded,
    /// SCIM under [`Deactivation::DeleteUser`]: the user left (`dsync.user.deleted`) or, created
    /// inactive, never entered the directory, but its SCIM resource is kept, parked, for the
    /// client (see [`UserChange::parked`]).
    Parked,
}

/// The result of a user operation.
#[derive(Debug, Clone, PartialEq)]
pub struct UserChange {
    /// What happened.
    pub kind: ChangeKind,
    /// The record after the change (for `Deleted`/`Discarded`: as it was at removal, no longer stored).
    pub user: StoredUser,
    /// Events appended by the commit, in log order.
    pub events: Vec<Event>,
    /// After the change the user is a parked SCIM resource: deactivated under
    /// [`Deactivation::DeleteUser`], absent from the directory, kept for the SCIM client.
    pub parked: bool,
}

/// The result of a group operation.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupChange {
    /// What happened.
    pub kind: ChangeKind,
    /// The record after the change (for `Deleted`: as it was).
    pub group: StoredGroup,
    /// Events appended by the commit, in log order.
    pub events: Vec<Event>,
}

/// The result of a group write that can change attributes and members in one commit.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupWrite {
    /// What happened to the group record (`Unchanged` when only members changed).
    pub kind: ChangeKind,
    /// The record after the write.
    pub group: StoredGroup,
    /// User ids added to the group.
    pub added: Vec<String>,
    /// User ids removed from the group.
    pub removed: Vec<String>,
    /// Events appended by the commit, in log order.
    pub events: Vec<Event>,
}

/// The result of a membership operation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MembershipChange {
    /// User ids added to the group.
    pub added: Vec<String>,
    /// User ids removed from the group.
    pub removed: Vec<String>,
    /// Events appended (user_added / user_removed / user.updated for role changes).
    pub events: Vec<Event>,
}

/// A full picture of a directory from a pull source (LDAP full sync, SFTP CSV upload).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Every user the source has.
    pub users: Vec<UserInput>,
    /// Every group the source has.
    pub groups: Vec<GroupInput>,
    /// (group idp_id, user idp_id) pairs.
    pub memberships: Vec<(String, String)>,
}

/// Safety settings for [`crate::DirectoryEngine::apply_snapshot`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SnapshotPolicy {
    /// Largest share of current users a run may delete or deactivate without confirmation.
    pub max_delete_ratio: f64,
    /// An admin confirmed this run: skip the guard.
    pub confirmed: bool,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            max_delete_ratio: 0.10,
            confirmed: false,
        }
    }
}

/// What a snapshot run changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotOutcome {
    /// Users created.
    pub created: u64,
    /// Users updated (including deactivated-and-kept and role changes).
    pub updated: u64,
    /// Users deleted.
    pub deleted: u64,
    /// Groups created.
    pub groups_created: u64,
    /// Groups updated.
    pub groups_updated: u64,
    /// Groups deleted.
    pub groups_deleted: u64,
    /// Memberships added.
    pub memberships_added: u64,
    /// Memberships removed.
    pub memberships_removed: u64,
    /// Events appended (their bodies are in the event log; not kept in memory for big runs).
    pub events: u64,
    /// Commits used (1 when the whole diff fit in one atomic commit).
    pub commits: u64,
}

/// One change of an LDAP delta sync, addressed by idp_id.
#[derive(Debug, Clone, PartialEq)]
pub enum DeltaChange {
    /// Create or update the user with this idp_id.
    UpsertUser(UserInput),
    /// The source no longer has the user with this idp_id: deleted, or kept inactive, per the
    /// directory's deactivation setting, as a full sync treats an absent user (unknown: no-op).
    RemoveUser {
        /// The user's idp_id.
        idp_id: String,
    },
    /// Create or update the group with this idp_id.
    UpsertGroup(GroupInput),
    /// Delete the group with this idp_id (absent: no-op).
    DeleteGroup {
        /// The group's idp_id.
        idp_id: String,
    },
    /// Replace a group's members (by user idp_id; unknown users are skipped).
    SetMembers {
        /// The group's idp_id.
        group_idp_id: String,
        /// The members' idp_ids.
        user_idp_ids: Vec<String>,
    },
}

/// Summary of an [`crate::DirectoryEngine::apply_delta`] run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeltaOutcome {
    /// Changes that wrote something.
    pub applied: u64,
    /// Changes that found nothing to do.
    pub unchanged: u64,
    /// Users created.
    pub created: u64,
    /// Users updated (including deactivated-and-kept).
    pub updated: u64,
    /// Users deleted.
    pub deleted: u64,
    /// Groups created.
    pub groups_created: u64,
    /// Groups updated.
    pub groups_updated: u64,
    /// Groups deleted.
    pub groups_deleted: u64,
    /// Memberships added.
    pub memberships_added: u64,
    /// Memberships removed (a user kept inactive leaving its groups included).
    pub memberships_removed: u64,
    /// Events appended.
    pub events: u64,
    /// Store commits used (1 when the delta, with the caller's part, fit in one).
    pub commits: u64,
}

impl DeltaOutcome {
    pub(crate) fn count_user(&mut self, kind: ChangeKind) {
        match kind {
            ChangeKind::Created => self.created += 1,
            ChangeKind::Updated => self.updated += 1,
            ChangeKind::Deleted | ChangeKind::Parked => self.deleted += 1,
            ChangeKind::Unchanged | ChangeKind::Discarded => {}
        }
    }
}

pub use idbridge_model::{Cursor, Order, Page, PageRequest};
