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
    /// A uniqueness or precondition failure: `what` is the unique index name (e.g.
    /// `scim.userName`), `idp_id`, `version` (If-Match / expected version) or
    /// `concurrent_update` (another writer changed what this one read).
    #[error("conflict on {what}: {detail}")]
    Conflict {
        /// Which constraint failed.
        what: String,
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
    },
}

impl EngineError {
    pub(crate) fn not_found(what: &'static str, id: &str) -> Self {
        EngineError::NotFound {
            what,
            id: id.to_owned(),
        }
    }

    pub(crate) fn conflict(what: impl Into<String>, detail: impl Into<String>) -> Self {
        EngineError::Conflict {
            what: what.into(),
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
    /// A failed commit condition names the table it read (`table/key ...`); turn that back into
    /// the domain constraint so callers can answer 409 with a useful reason.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(detail) => {
                let table = detail.split('/').next().unwrap_or_default();
                let what = layout::constraint_of_table(table);
                EngineError::Conflict { what, detail }
            }
            other => EngineError::Store(other),
        }
    }
}
