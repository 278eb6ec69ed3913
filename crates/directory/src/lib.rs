//! idbridge-directory: the directory engine.
//!
//! Every directory feed — SCIM pushes, LDAP pulls, SFTP CSV snapshots — goes through
//! [`DirectoryEngine`], which turns source-agnostic inputs ([`UserInput`], [`GroupInput`],
//! [`Snapshot`]) into directory users, groups, memberships and roles. Each change is ONE atomic
//! store commit that also appends its `dsync.*` events: the event log is the outbox
//! (ARCHITECTURE.md, "two rules"). An LDAP delta is one commit for all its changes plus the
//! caller's cursor ([`DirectoryEngine::apply_delta_with`]). Tables and keys are listed in
//! [`layout`].
//!
//! Event payloads follow workos-api.md §4.3: users never carry `groups`; `*.updated` events
//! carry `previous_attributes`; membership events carry `{directory_id, user, group}`;
//! `dsync.activated` precedes the first change applied to a directory.

#![forbid(unsafe_code)]

pub mod attributes;
mod engine;
mod error;
pub mod feeds;
mod groups;
mod interner;
mod layout;
mod memberships;
mod organizations;
mod parked;
mod read;
mod roles;
mod snapshot;
mod source_state;
mod staged;
mod staged_rows;
mod types;
mod users;

pub use engine::{DirectoryEngine, MAX_COMMIT_OPS};
pub use error::{Constraint, EngineError, GuardError, Result, GUARD_SAMPLE};
pub use groups::MemberEdit;
pub use organizations::{FixedOrganizations, Organizations};
pub use snapshot::{SnapshotSource, UserRecord};
pub use types::{
    AttributeMap, ChangeKind, Counts, Cursor, Deactivation, DeltaChange, DeltaOutcome,
    DirectoryRecord, DirectorySettings, GroupChange, GroupInput, GroupWrite, MembershipChange,
    Order, Page, PageRequest, ScimAuth, Snapshot, SnapshotOutcome, SnapshotPolicy, StoredGroup,
    StoredUser, UserChange, UserInput,
};
