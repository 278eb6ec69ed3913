//! Storage layout: every table and key the directory engine writes.
//!
//! All ids are `<prefix>_<ULID>` (no `/`), so `/` separates key parts; the last part (an idp id
//! or a unique-key value) may contain anything because keys are only ever built or prefix-scanned,
//! never split. Values are JSON unless noted.
//!
//! | table | key | value |
//! |---|---|---|
//! | `dsync.directories` | `<directory id>` | [`crate::DirectoryRecord`] |
//! | `dsync.directories_by_org` | `<organization id>/<directory id>` | empty (list by org in id order) |
//! | `dsync.counts` | `<directory id>` | [`crate::Counts`] (kept in the same commits as the changes) |
//! | `dsync.users` | `<directory id>/<user id>` | [`crate::StoredUser`] (a directory's users in id order = prefix scan) |
//! | `dsync.user_dir` | `<user id>` | directory id (UTF-8) — lookups by user id alone |
//! | `dsync.users_by_idp` | `<directory id>/<idp_id>` | user id (unique per directory) |
//! | `dsync.user_key.<index>` | `<directory id>/<value>` | user id (one table per unique key name, e.g. `scim.userName`) |
//! | `dsync.parked_users` | `<directory id>/<user id>` | [`crate::StoredUser`] deactivated through SCIM under `DeleteUser`: gone from the directory, kept as a SCIM resource (it keeps its `users_by_idp` and `user_key.*` slots; no `user_dir`, no memberships) |
//! | `dsync.user_fp` | `<directory id>/<user id>` | 16 bytes: fingerprint of the snapshot input the user was last reconciled with (pull sources; deleted by every other write of the user) |
//! | `dsync.groups` | `<directory id>/<group id>` | [`crate::StoredGroup`] |
//! | `dsync.group_dir` | `<group id>` | directory id (UTF-8) |
//! | `dsync.groups_by_idp` | `<directory id>/<idp_id>` | group id (unique per directory) |
//! | `dsync.group_key.<index>` | `<directory id>/<value>` | group id |
//! | `dsync.deleting_from` | `<directory id>` | `DirectoryState` before a chunked delete began |
//! | `dsync.roles` | `<organization id>` | `Vec<idbridge_model::Role>` |
//! | `dsync.role_mappings` | `<organization id>` | `Vec<idbridge_model::RoleMapping>` |
//! | `dsync.role_modes` | `<organization id>` | `idbridge_model::RoleMode` (absent: each directory's `role_mode` setting; single for SSO) |
//!
//! Memberships are typed rows, `directory_memberships(group_id, user_id)` (see the
//! `memberships` module, which owns the table and moves pairs an earlier build kept in
//! `dsync.members`).
//!
//! Organizations are not the engine's: it reads them through [`crate::Organizations`].

use crate::error::Constraint;

/// Directory records.
pub const DIRECTORIES: &str = "dsync.directories";
/// `<org>/<directory>` → empty.
pub const DIRECTORIES_BY_ORG: &str = "dsync.directories_by_org";
/// Per-directory user/group counters.
pub const COUNTS: &str = "dsync.counts";
/// `<directory>/<user>` → user.
pub const USERS: &str = "dsync.users";
/// `<user>` → directory id.
pub const USER_DIR: &str = "dsync.user_dir";
/// `<directory>/<user>` → a parked user (see the `parked` module of this crate).
pub const PARKED_USERS: &str = "dsync.parked_users";
/// `<directory>/<idp_id>` → user id.
pub const USERS_BY_IDP: &str = "dsync.users_by_idp";
/// `<directory>/<user>` → fingerprint of the snapshot input that produced the user (binary):
/// lets a full sync skip unchanged users without reading them (see `snapshot.rs`).
pub const USER_FINGERPRINTS: &str = "dsync.user_fp";
/// `<directory>/<group>` → group.
pub const GROUPS: &str = "dsync.groups";
/// `<group>` → directory id.
pub const GROUP_DIR: &str = "dsync.group_dir";
/// `<directory>/<idp_id>` → group id.
pub const GROUPS_BY_IDP: &str = "dsync.groups_by_idp";
/// `<directory id>` → the state before a chunked deletion started (only while deleting).
pub const DELETING_FROM: &str = "dsync.deleting_from";
/// Roles per organization.
pub const ROLES: &str = "dsync.roles";
/// Role mappings per organization.
pub const ROLE_MAPPINGS: &str = "dsync.role_mappings";
/// Role mode per organization (single / multiple), shared by SSO and directories.
pub const ROLE_MODES: &str = "dsync.role_modes";

const USER_KEY_PREFIX: &str = "dsync.user_key.";
const GROUP_KEY_PREFIX: &str = "dsync.group_key.";

/// The unique-index table for user key `index` (e.g. `scim.userName`).
pub fn user_key_table(index: &str) -> String {
    format!("{USER_KEY_PREFIX}{index}")
}

/// The unique-index table for group key `index`.
pub fn group_key_table(index: &str) -> String {
    format!("{GROUP_KEY_PREFIX}{index}")
}

/// `<a>/<b>`: the key shape of every per-directory table.
pub fn key(a: &str, b: &str) -> String {
    format!("{a}/{b}")
}

/// Prefix of every key that belongs to `id` in a `<id>/...` table.
pub fn prefix(id: &str) -> String {
    format!("{id}/")
}

/// The domain constraint a table stands for, used to explain a failed commit condition.
pub(crate) fn constraint_of_table(table: &str) -> Constraint {
    if let Some(index) = table
        .strip_prefix(USER_KEY_PREFIX)
        .or_else(|| table.strip_prefix(GROUP_KEY_PREFIX))
    {
        return Constraint::UniqueKey(index.to_owned());
    }
    match table {
        USERS_BY_IDP | GROUPS_BY_IDP => Constraint::IdpId,
        _ => Constraint::ConcurrentUpdate,
    }
}
