//! Error types. A sync that returns any of these applied nothing from its own reads.

use idbridge_directory::{EngineError, GuardError};

/// Bad or incomplete settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The settings contradict each other or are missing something.
    #[error("ldap settings: {0}")]
    Invalid(String),
    /// The bind password could not be read (the secret itself is never shown).
    #[error("bind password from {source_name}: {detail}")]
    Secret {
        /// File path or `$VAR`.
        source_name: String,
        /// Why.
        detail: String,
    },
    /// The CA bundle could not be loaded.
    #[error("ca bundle {path}: {detail}")]
    CaBundle {
        /// Path.
        path: String,
        /// Why.
        detail: String,
    },
}

/// Talking to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    /// Settings problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Connect, TLS, bind or protocol failure.
    #[error("ldap {op}: {detail}")]
    Protocol {
        /// Which operation (connect, bind, search ...).
        op: &'static str,
        /// The library's or server's message.
        detail: String,
    },
    /// The server answered with a non-success result code.
    #[error("ldap {op} failed: result code {rc} ({text})")]
    Result {
        /// Which operation.
        op: &'static str,
        /// LDAP result code.
        rc: u32,
        /// Diagnostic text.
        text: String,
    },
    /// An operation took longer than the configured timeout.
    #[error("ldap {op} timed out after {secs}s")]
    Timeout {
        /// Which operation.
        op: &'static str,
        /// Seconds.
        secs: u64,
    },
    /// The server refused an RFC 4533 cookie (e-syncRefreshRequired, or a cookie it cannot
    /// use): the cookies are dropped and the next run is a full sync, which re-seeds them.
    #[error("ldap sync cookie refused: result code {rc} ({text}); the next run is a full sync")]
    CookieRefused {
        /// LDAP result code (4096 = e-syncRefreshRequired).
        rc: u32,
        /// Diagnostic text.
        text: String,
    },
    /// `change_tracking = "sync"` against a server without RFC 4533.
    #[error("change_tracking = \"sync\" but the server does not offer RFC 4533 content synchronization (no 1.3.6.1.4.1.4203.1.9.1.1 in the root DSE's supportedControl; load the syncprov overlay, or use \"auto\" / \"timestamp\")")]
    SyncUnsupported,
    /// The reply could not be understood (or the parser panicked on it).
    #[error("malformed ldap reply: {0}")]
    Malformed(String),
}

impl LdapError {
    pub(crate) fn proto(op: &'static str, e: impl std::fmt::Display) -> Self {
        LdapError::Protocol {
            op,
            detail: e.to_string(),
        }
    }
}

/// Why a sync run did not (fully) apply.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Reading from the server failed: nothing was applied.
    #[error(transparent)]
    Ldap(#[from] LdapError),
    /// The full sync would delete too many users: nothing was applied; an admin must confirm.
    #[error("{0}; confirm the deletion to apply it")]
    Guard(GuardError),
    /// The directory engine refused or failed.
    #[error("directory engine: {0}")]
    Engine(EngineError),
    /// The store failed while keeping sync state.
    #[error("sync state: {0}")]
    State(String),
    /// Another run of the same directory is in progress.
    #[error("a sync of directory {0} is already running")]
    Busy(String),
}

impl From<EngineError> for SyncError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Guard(g) => SyncError::Guard(g),
            other => SyncError::Engine(other),
        }
    }
}
