//! Error types of the delivery worker.

/// Why one delivery attempt failed (each of these is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The receiver answered, but not with a 2xx (3xx included: redirects are refused because
    /// following one would send the signed event to a host the admin did not register).
    #[error("receiver answered HTTP {status}")]
    Status {
        /// The HTTP status code.
        status: u16,
    },
    /// Connect or total timeout.
    #[error("timed out: {0}")]
    Timeout(String),
    /// DNS, connection refused, TLS, reset...
    #[error("transport error: {0}")]
    Transport(String),
}

impl DeliveryError {
    /// Short label for metrics and the admin view.
    pub fn outcome(&self) -> &'static str {
        match self {
            DeliveryError::Status { .. } => "http_error",
            DeliveryError::Timeout(_) => "timeout",
            DeliveryError::Transport(_) => "transport_error",
        }
    }
}

/// Failures of the worker itself (not of a receiver).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The store failed; the worker waits and retries.
    #[error(transparent)]
    Store(#[from] idbridge_store::StoreError),
    /// A stored record did not decode.
    #[error("corrupt record {table}/{key}: {detail}")]
    Corrupt {
        /// Table name.
        table: &'static str,
        /// Key.
        key: String,
        /// Decoder message.
        detail: String,
    },
    /// The HTTP client could not be built (bad TLS setup).
    #[error("building the HTTP client: {0}")]
    Client(String),
    /// A blocking store call panicked or was cancelled.
    #[error("blocking task failed: {0}")]
    Join(String),
}
