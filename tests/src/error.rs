//! The harness's error type: each variant says what to do about it, because these messages are
//! what a developer reads when the suite fails before any assertion ran.

use std::path::PathBuf;
use std::process::ExitStatus;

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(
        "idbridge binary not found at {path}; build it first with `cargo build -p idbridge` \
         (same CARGO_TARGET_DIR as the tests) or point IDBRIDGE_BIN at it"
    )]
    BinaryNotFound { path: PathBuf },

    #[error("could not start {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("idbridge exited ({status}) before it was ready; its stderr:\n{stderr}")]
    ExitedEarly { status: ExitStatus, stderr: String },

    #[error("timed out after {secs} s waiting for {what}; idbridge stderr:\n{stderr}")]
    Timeout {
        what: String,
        secs: u64,
        stderr: String,
    },

    #[error("{tool} is not available ({detail}); run `scripts/test-deps.sh` (or set IDBRIDGE_SKIP_PEERS=1 to skip peer tests)")]
    PeerMissing { tool: String, detail: String },

    #[error("`{command}` failed ({status}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")]
    PeerFailed {
        command: String,
        status: String,
        stdout: String,
        stderr: String,
    },

    #[error("`{command}` reported no passed test, so it checked nothing:\n{output}")]
    PeerRanNothing { command: String, output: String },

    #[error("HTTP error: {0}")]
    Http(#[source] reqwest::Error),

    #[error("{0}")]
    Mismatch(String),

    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl HarnessError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        HarnessError::Io {
            context: context.into(),
            source,
        }
    }
}
