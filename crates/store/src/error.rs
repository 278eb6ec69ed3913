//! Error type shared by every store backend.

/// Result alias used throughout the store.
pub type Result<T> = std::result::Result<T, StoreError>;

/// What can go wrong in a store call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A precondition of a change set failed; nothing was written.
    #[error("conflict: {0}")]
    Conflict(String),
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

impl StoreError {
    pub(crate) fn backend(context: &str, err: impl std::fmt::Display) -> Self {
        StoreError::Backend(format!("{context}: {err}"))
    }

    pub(crate) fn corrupt(table: &str, detail: impl Into<String>) -> Self {
        StoreError::Corrupt {
            table: table.to_owned(),
            detail: detail.into(),
        }
    }
}
