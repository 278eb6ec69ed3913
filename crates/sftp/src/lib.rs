//! idbridge-sftp: SFTP directories fed with WorkOS-format CSV files (workos-api.md §7).
//!
//! * [`feed`]: streaming, all-or-nothing parsing of `users.csv`, `groups.csv`,
//!   `user_groups.csv` into one directory snapshot.
//! * [`delivery`]: applies a delivery through the directory engine (full snapshot, mass-deletion
//!   guard), records it, and reports rejections (`dsync.delivery_rejected`, a report file).
//! * [`server`]: the embedded SFTP server (push): per-directory user and keys, jailed inbox,
//!   quotas, processing when uploads complete.
//! * [`pull`]: the client that fetches deliveries from a customer's server (pinned host key).

#![forbid(unsafe_code)]

pub mod delivery;
pub mod feed;
mod metrics;

pub use delivery::{
    list_deliveries, summary, DeliveryError, DeliveryRecord, DeliverySource, DeliveryStatus,
    DeliveryStatusSummary, Processor,
};
pub use feed::{ingest, DeliveryFiles, IngestError, IngestOptions, Problem, Rejection};
pub mod jail;
pub mod pending;
pub mod server;
pub mod settings;

pub use server::{
    load_or_create_host_key, parse_authorized_key, RunningSftpServer, ServerConfig, ServerError,
    SftpAccount,
};
pub mod pull;

pub use settings::{PullSettings, SftpFeed};

pub use pull::{pull_once, run_schedule, HostKeyPin, PullConfig, PullError};
