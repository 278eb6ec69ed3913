//! The service's error: what went wrong in domain terms. The HTTP layer maps each variant to a
//! WorkOS status and body; the CLI prints it.

use idbridge_store::StoreError;

/// One invalid input field, as in a WorkOS 422 `errors[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldIssue {
    /// The field path, e.g. `saml_options.idp_metadata_url`.
    pub field: String,
    /// What is wrong, e.g. `invalid_metadata`.
    pub code: String,
}

impl FieldIssue {
    /// An issue with `field`.
    pub fn new(field: impl Into<String>, code: impl Into<String>) -> Self {
        FieldIssue {
            field: field.into(),
            code: code.into(),
        }
    }
}

/// Why a service call did not apply. Every error means nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    /// The entity does not exist (malformed ids included: they cannot exist).
    #[error("{entity} not found: '{id}'")]
    NotFound {
        /// `Organization`, `Connection`, `Webhook Endpoint`.
        entity: &'static str,
        /// The id that was looked up.
        id: String,
    },
    /// Fields that are invalid in the domain's terms (an unknown organization, metadata that
    /// does not parse); WorkOS answers 422.
    #[error("invalid input: {}", describe(.0))]
    Invalid(Vec<FieldIssue>),
    /// A request the domain refuses, with a WorkOS error code (400).
    #[error("{message}")]
    Refused {
        /// WorkOS error code, e.g. `external_id_already_used`.
        code: &'static str,
        /// What went wrong and what to do.
        message: String,
    },
    /// A conflict with existing data or a concurrent change (409).
    #[error("{message}")]
    Conflict {
        /// WorkOS error code, e.g. `concurrent_update`.
        code: &'static str,
        /// What went wrong and what to do.
        message: String,
    },
    /// An OAuth error of the token endpoint (`{error, error_description}`, 400).
    #[error("{error}: {description}")]
    OAuth {
        /// OAuth error code, e.g. `invalid_grant`.
        error: &'static str,
        /// What went wrong.
        description: String,
    },
    /// A service this call depends on (a DNS resolver) did not answer; nothing was written and
    /// the call can be retried (503).
    #[error("{message}")]
    Unavailable {
        /// Error code, e.g. `dns_lookup_failed`.
        code: &'static str,
        /// What went wrong and what to do.
        message: String,
    },
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Something that is a bug or a broken environment (key generation, a task that died).
    #[error("internal: {0}")]
    Internal(String),
}

fn describe(issues: &[FieldIssue]) -> String {
    issues
        .iter()
        .map(|i| format!("{} ({})", i.field, i.code))
        .collect::<Vec<_>>()
        .join(", ")
}

impl SsoError {
    /// Not found.
    pub fn not_found(entity: &'static str, id: impl Into<String>) -> Self {
        SsoError::NotFound {
            entity,
            id: id.into(),
        }
    }

    /// One invalid field.
    pub fn invalid(field: impl Into<String>, code: impl Into<String>) -> Self {
        SsoError::Invalid(vec![FieldIssue::new(field, code)])
    }

    /// An internal error from anything displayable.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        SsoError::Internal(err.to_string())
    }

    /// The "changed concurrently; retry" conflict of `what` (e.g. `organization`).
    pub(crate) fn concurrent(what: &str) -> Self {
        SsoError::Conflict {
            code: "concurrent_update",
            message: format!("The {what} was changed concurrently; retry."),
        }
    }
}

impl From<idbridge_secrets::SecretError> for SsoError {
    fn from(e: idbridge_secrets::SecretError) -> Self {
        match e {
            idbridge_secrets::SecretError::NoKey => SsoError::Refused {
                code: "secret_key_not_configured",
                message: "This server has no secret key for connection secrets.".into(),
            },
            other => SsoError::internal(other),
        }
    }
}

/// Result alias of the service.
pub type SsoResult<T> = Result<T, SsoError>;
