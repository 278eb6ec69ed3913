//! The engine's error type: protocol layers map each variant onto their own wire errors
//! (SCIM 404/409/412/400, WorkOS 404/409/422).

use idbridge_store::StoreError;

use crate::layout;

/// Result alias for engine calls.
pub type Result<T> = std::result::Result<T, EngineError>;

/// Why an engine call did not apply. Every error means nothing was written by the failing
/// commit (a chunked snapshot may have applied earlier chunks; see [`crate::snapshot`]).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The directory, user or group does not exist (or belongs to another directory).
    #[error("{what} {id} not found")]
    NotFound {
        /// `directory`, `directory_user`, `directory_group` or `organization`.
        what: &'static str,
        /// The id that was looked up.
        id: String,
    },
    /// A uniqueness or precondition failure; `constraint` says which, typed, so callers map
    /// it without reading `detail`.
    #[error("conflict on {constraint}: {detail}")]
    Conflict {
        /// Which constraint failed.
        constraint: Constraint,
        /// Human-readable detail (never contains secrets).
        detail: String,
    },
    /// The input cannot be applied (empty idp_id, unknown member, ...).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A safety guard refused the run; nothing was changed.
    #[error(transparent)]
    Guard(#[from] GuardError),
    /// The store failed (I/O, corrupt record).
    #[error("store: {0}")]
    Store(StoreError),
    /// A streamed snapshot's source failed while being read (I/O on a delivery file, a file
    /// that changed between passes). Writes already committed stay; a retry completes them.
    #[error("snapshot source: {0}")]
    Source(String),
}

/// The constraint behind an [`EngineError::Conflict`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// A feed's unique key, by the name the feed gave it (e.g. `scim.userName`).
    UniqueKey(String),
    /// The source's id of a user or group (unique per directory).
    IdpId,
    /// SCIM If-Match: the caller's version is stale.
    Version,
    /// The directory is being deleted.
    DirectoryDeleting,
    /// Another writer changed what this one read.
    ConcurrentUpdate,
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Constraint::UniqueKey(name) => f.write_str(name),
            Constraint::IdpId => f.write_str("idp_id"),
            Constraint::Version => f.write_str("version"),
            Constraint::DirectoryDeleting => f.write_str("directory_deleting"),
            Constraint::ConcurrentUpdate => f.write_str("concurrent_update"),
        }
    }
}

/// How many users a [`GuardError::MassDeletion`] names.
pub const GUARD_SAMPLE: usize = 20;

/// Guards that protect a directory from a bad feed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GuardError {
    /// A snapshot would remove more than the allowed share of the directory's users; usually a
    /// truncated CSV or an LDAP search base that went wrong. Re-run with `confirmed` to apply.
    #[error("snapshot would delete {would_delete} of {total} users (threshold {threshold})")]
    MassDeletion {
        /// Users the run would delete or deactivate.
        would_delete: u64,
        /// Users currently in the directory.
        total: u64,
        /// The configured maximum share (0.0–1.0).
        threshold: f64,
        /// The first (at most [`GUARD_SAMPLE`]) directory user ids it would remove, for the
        /// admin who reviews it.
        sample: Vec<String>,
    },
}

impl EngineError {
    pub(crate) fn not_found(what: &'static str, id: &str) -> Self {
        EngineError::NotFound {
            what,
            id: id.to_owned(),
        }
    }

    pub(crate) fn conflict(constraint: Constraint, detail: impl Into<String>) -> Self {
        EngineError::Conflict {
            constraint,
            detail: detail.into(),
        }
    }

    pub(crate) fn corrupt(table: &str, key: &str, err: impl std::fmt::Display) -> Self {
        EngineError::Store(StoreError::Corrupt {
            table: table.to_owned(),
            detail: format!("{key}: {err}"),
        })
    }
}

impl From<StoreError> for EngineError {
    /// A failed commit condition names the table it read; the layout turns that back into
    /// the domain constraint so callers can answer 409 with a useful reason.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { ref table, .. } => EngineError::Conflict {
                constraint: layout::constraint_of_table(table),
                detail: e.to_string(),
            },
            other => EngineError::Store(other),
        }
    }
}
