//! idbridge-ldap: pulls users and groups from Active Directory, OpenLDAP / 389-DS or any LDAP
//! server into the directory engine.
//!
//! - [`settings`]: per-directory connection, mapping and safety settings (TOML).
//! - [`client`]: ldap3 over LDAPS / StartTLS, paged searches, AD ranged retrieval, timeouts.
//! - [`entry`]: one search result entry, parsed from ldap3's BER without panics.
//! - [`mapping`]: entries → [`idbridge_directory::UserInput`] / `GroupInput` per flavor.
//! - [`sync`]: full and delta runs ([`Syncer`]); reads complete before anything is applied.
//! - [`state`]: per-directory sync state in the store, for the admin API, metrics and CLI.
//! - [`scheduler`]: the background loop (full on start and every interval, deltas between).
//! - [`bind_auth`]: password checks for the IdP login page (search with the service account,
//!   bind as the user on a separate connection, typed refusals incl. AD sub-codes).

#![forbid(unsafe_code)]

pub mod ad;
pub mod bind_auth;
pub mod client;
pub mod controls;
pub mod entry;
mod error;
pub mod feed;
pub mod mapping;
pub mod scheduler;
pub mod settings;
pub mod state;
pub mod sync;

pub use bind_auth::{
    authenticate, BindAuthError, BindAuthenticator, BoundUser, LoginLookup, Password,
};
pub use error::{ad_bind_subcode, result_code_name, ConfigError, LdapError, SyncError};
pub use feed::LdapFeed;
pub use settings::{AttributeNames, ChangeTracking, Flavor, LdapSettings, SecretValue, Timeouts};
pub use state::{DeltaCursor, PendingGuard, RunRecord, StateStore, SyncKind, SyncState};
pub use sync::{LdapSource, NoProgress, Progress, Syncer};

/// The engine directory type of LDAP directories.
pub const DIRECTORY_TYPE: &str = "ldap";
