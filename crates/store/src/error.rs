//! Error type shared by every store backend.

/// Result alias used throughout the store.
pub type Result<T> = std::result::Result<T, StoreError>;

/// What can go wrong in a store call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A precondition of a change set failed; nothing was written. `table` and `key` name the
    /// entry that failed it, `kind` says how, so owners map it to a domain error without parsing.
    #[error("conflict: {table}/{key} {kind}")]
    Conflict {
        /// Table of the entry (the event log's name, [`EVENT_LOG`], for a reused event id).
        table: String,
        /// Key of the entry (the event id for a reused event id).
        key: String,
        /// Which precondition failed.
        kind: ConflictKind,
    },
    /// `import` needs an empty store.
    #[error("import needs an empty store; this one has data (use a new data directory)")]
    NotEmpty,
    /// sled / io errors (the source text is kept, the source type is not, so backends stay private).
    #[error("storage: {0}")]
    Backend(String),
    /// A stored record could not be decoded.
    #[error("corrupt record in {table}: {detail}")]
    Corrupt {
        /// Table (or internal tree) the record was read from.
        table: String,
        /// What was wrong with it.
        detail: String,
    },
}

/// The pseudo-table named by a [`StoreError::Conflict`] about a reused event id.
pub const EVENT_LOG: &str = crate::codec::EVENTS_TREE;

/// Which precondition of a change set failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    /// The entry exists but had to be absent (a unique slot is taken).
    Exists,
    /// The entry is absent but had to exist.
    Missing,
    /// The entry does not hold the expected value (optimistic concurrency).
    Changed,
    /// An expiring entry had to be absent or expired, and is live (a replay).
    Live,
    /// An expiring entry had to be live (to be taken), and is absent or expired.
    NotLive,
    /// An event id already in the log.
    DuplicateEventId,
}

impl std::fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConflictKind::Exists => "exists but must be absent",
            ConflictKind::Missing => "is absent but must exist",
            ConflictKind::Changed => "does not hold the expected value",
            ConflictKind::Live => "is live but must be absent or expired",
            ConflictKind::NotLive => "is absent or expired but must be live",
            ConflictKind::DuplicateEventId => "is an event id already in the log",
        })
    }
}

impl StoreError {
    /// A conflict on `table/key`.
    pub fn conflict(table: &str, key: &str, kind: ConflictKind) -> Self {
        StoreError::Conflict {
            table: table.to_owned(),
            key: key.to_owned(),
            kind,
        }
    }

    /// The table and kind of a conflict, if this is one.
    pub fn conflict_on(&self) -> Option<(&str, ConflictKind)> {
        match self {
            StoreError::Conflict { table, kind, .. } => Some((table, *kind)),
            _ => None,
        }
    }

    pub(crate) fn backend(context: &str, err: impl std::fmt::Display) -> Self {
        StoreError::Backend(format!("{context}: {err}"))
    }

    /// A stored record of `table` that cannot be decoded.
    pub fn corrupt(table: &str, detail: impl Into<String>) -> Self {
        StoreError::Corrupt {
            table: table.to_owned(),
            detail: detail.into(),
        }
    }
}
