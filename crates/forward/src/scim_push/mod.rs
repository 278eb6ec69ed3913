//! SCIM push: every directory (SCIM, LDAP/AD, SFTP) forwarded into a remote SCIM 2.0
//! endpoint such as a WorkOS "Custom SCIM v2.0" directory (workos-api.md §8.1).
//!
//! Each directory may have one target (endpoint + bearer token + [`TargetOptions`]). Its
//! forwarder is a consumer of the event log like a webhook endpoint: its own durable cursor,
//! strict order per object, several objects at once, never blocking other forwarders or the
//! webhooks. A new target first pushes the directory's current state (the backfill), then
//! follows the log from the position taken when the backfill started. See `runner` for the
//! ordering and crash-safety design, `sync` for how one object is brought to its local state,
//! `resource` for the SCIM shapes and WorkOS's rules, `reconcile` for drift repair.
//!
//! [`ScimPush`] is both the admin service (typed inputs, typed errors; the HTTP layer only
//! parses) and the scheduler that runs one task per target.

mod client;
mod reconcile;
pub mod records;
pub mod resource;
mod runner;
mod service;
mod shared;
mod sync;

pub use client::{classify_answer, parse_retry_after, Answer, CallError, SCIM_CONTENT_TYPE};
pub use reconcile::list_page;
pub use reconcile::{Drift, MembershipDrift, ReconcileReport, ReconcileRun};
pub use records::{
    Deprovision, IdMapEntry, ObjectKind, ParkedObject, PushState, TargetOptions, TargetRecord,
    CUSTOM_ATTRIBUTES_SCHEMA, FORWARD_FAILED_EVENT, IDMAP_TABLE, PARKED_TABLE, STATE_TABLE,
    TARGETS_TABLE,
};
pub use service::{
    AdminError, BackfillView, ReconcileView, ScimPush, SetOutcome, TargetInput, TargetStatus,
};
pub use sync::{remote_active, remote_member_ids};

/// Failures of a target's run (not of one object: those park the object).
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] idbridge_store::StoreError),
    /// A stored record did not decode.
    #[error("corrupt record {table}/{key}: {detail}")]
    Corrupt {
        /// Table.
        table: &'static str,
        /// Key.
        key: String,
        /// Decoder message.
        detail: String,
    },
    /// The HTTP client could not be built.
    #[error("{0}")]
    Client(String),
    /// A task panicked or was cancelled.
    #[error("task failed: {0}")]
    Join(String),
    /// The target was changed or deleted: this run ends (the scheduler starts the new one).
    #[error("the target changed or was deleted")]
    Stopped,
    /// The directory could not be read (deleted?).
    #[error("directory: {0}")]
    Directory(String),
}
