//! The SCIM push forwarder's tables and their typed records. This module is the only one that
//! names the tables; every other part of idbridge goes through [`super::ScimPush`].
//!
//! | table | key | value |
//! |---|---|---|
//! | `forward.scim_targets` | `<directory id>` | [`TargetRecord`]: endpoint, sealed bearer token, options |
//! | `forward.scim_state` | `<directory id>` | [`PushState`]: cursor, dispatch reservation, backfill progress, counters, last error |
//! | `forward.scim_idmap` | `<directory id>/<local user or group id>` | [`IdMapEntry`]: the remote id and what was last sent |
//! | `forward.scim_parked` | `<directory id>/<local user or group id>` | [`ParkedObject`]: why the object was not forwarded |
//!
//! The id map, the parked objects and the state (cursor) move in ONE commit, so a crash never
//! leaves the cursor past an object whose remote id was not recorded.

use idbridge_model::Timestamp;
use serde::{Deserialize, Serialize};

/// Forward targets, keyed by directory id.
pub const TARGETS_TABLE: &str = "forward.scim_targets";
/// Forwarding progress, keyed by directory id.
pub const STATE_TABLE: &str = "forward.scim_state";
/// Local id ↔ remote id, keyed `<directory id>/<local id>`.
pub const IDMAP_TABLE: &str = "forward.scim_idmap";
/// Objects not forwarded (a WorkOS rule, or the target refused them), keyed like the id map.
pub const PARKED_TABLE: &str = "forward.scim_parked";

/// The event idbridge appends for every parked object. idbridge's own type: webhook endpoints
/// and `/events` queries get it only when they name it (like `dsync.delivery_rejected`).
pub const FORWARD_FAILED_EVENT: &str = idbridge_model::EventKind::DsyncForwardFailed.as_str();

/// Key of a per-object row.
pub fn object_key(directory_id: &str, local_id: &str) -> String {
    format!("{directory_id}/{local_id}")
}

/// Prefix of a directory's per-object rows.
pub fn directory_prefix(directory_id: &str) -> String {
    format!("{directory_id}/")
}

/// The secret-box context a directory's bearer token is sealed under: a sealed token moved to
/// another directory's record does not open.
pub fn token_context(directory_id: &str) -> String {
    format!("{directory_id}/forward_bearer_token")
}

/// What happens remotely to a user that left the directory (deleted, or deactivated and
/// deleted by the directory's policy). A user still in the directory with `state: inactive`
/// (the directory keeps deactivated users) is mirrored as `active: false` either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deprovision {
    /// `PATCH active:false`, as IdPs deprovision into WorkOS (WorkOS then deletes or keeps the
    /// user inactive per its own environment setting). The remote user is kept.
    #[default]
    Deactivate,
    /// `DELETE /Users/{id}`.
    Delete,
}

impl Deprovision {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Deprovision::Deactivate => "deactivate",
            Deprovision::Delete => "delete",
        }
    }
}

/// The SCIM extension URN under which idbridge sends custom attributes that no standard SCIM
/// attribute carries (mapped attributes, `employment_start_date`, `manager_email`, ...), keyed
/// by their WorkOS names: a target maps `<URN>.<name>` (idbridge's own SCIM server accepts it).
pub const CUSTOM_ATTRIBUTES_SCHEMA: &str =
    "urn:idbridge:params:scim:schemas:extension:custom_attributes:2.0:User";

/// Per-target options. Every one is settable in the config file (`forward = {...}`), through
/// `PUT /admin/directories/{id}/forward` and the CLI; a change reaches the running forwarder
/// within a second (its task restarts from the durable cursor).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TargetOptions {
    /// Deactivate (default) or delete remote users that leave the directory.
    pub deprovision: Deprovision,
    /// Allow a plain `http://` endpoint on a non-loopback host (tokens travel in clear text).
    pub allow_insecure_http: bool,
    /// Objects forwarded at once (strict order per object is kept). 1 – 64.
    pub concurrency: u16,
    /// TCP + TLS connect timeout, ms.
    pub connect_timeout_ms: u64,
    /// Whole-request timeout, ms: a target that hangs longer is an error for that object.
    pub request_timeout_ms: u64,
    /// Where custom attributes without a standard SCIM field go: this extension URN (default
    /// [`CUSTOM_ATTRIBUTES_SCHEMA`]; the enterprise URN puts them into the enterprise object, as
    /// WorkOS's attribute-mapping docs show), or nowhere when `None` (strict targets that know
    /// only RFC 7643 schemas).
    pub custom_attributes_schema: Option<String>,
}

impl Default for TargetOptions {
    fn default() -> Self {
        TargetOptions {
            deprovision: Deprovision::Deactivate,
            allow_insecure_http: false,
            concurrency: 8,
            connect_timeout_ms: 5_000,
            request_timeout_ms: 15_000,
            custom_attributes_schema: Some(CUSTOM_ATTRIBUTES_SCHEMA.to_owned()),
        }
    }
}

/// A directory's forward target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRecord {
    /// The directory whose users and groups are pushed.
    pub directory_id: String,
    /// The remote SCIM base URL (`https://api.workos.com/scim/v2.0/<key>`), no trailing `/`.
    pub endpoint: String,
    /// The bearer token, sealed with the server's secret key under [`token_context`].
    pub sealed_token: String,
    /// Options.
    pub options: TargetOptions,
    /// +1 on every change: the scheduler restarts the target's task when it moves.
    pub generation: u64,
    /// Set by the config file (`config`) or the admin API / CLI (`api`).
    pub source: String,
    /// First stored.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
}

/// Which half of a backfill runs: users first (groups need their members' remote ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackfillPhase {
    /// Pushing users.
    Users,
    /// Pushing groups with their members.
    Groups,
}

/// Progress of the initial push of a directory's current state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backfill {
    /// The log position taken when the backfill started: the log is followed from here after.
    pub start_seq: u64,
    /// Users or groups.
    pub phase: BackfillPhase,
    /// Every object of the phase up to this local id (id order) is done.
    pub done_through: Option<String>,
    /// Objects up to this local id may have been sent (a restart looks them up before
    /// creating, so a create whose answer was lost is adopted, not duplicated).
    pub reserved_through: Option<String>,
    /// Users done.
    pub users_done: u64,
    /// Users in the directory when the backfill started (an estimate: it may change meanwhile).
    pub users_total: u64,
    /// Groups done.
    pub groups_done: u64,
    /// Groups when the backfill started.
    pub groups_total: u64,
    /// Start time.
    pub started_at: Timestamp,
}

/// A directory's forwarding progress, written only by the forwarder (and the admin service on
/// create / reset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct PushState {
    /// Every event with a seq up to here is done.
    pub cursor: u64,
    /// Events up to here may have been dispatched: a restart treats them as possibly sent.
    pub reserved: u64,
    /// The running backfill, if any.
    pub backfill: Option<Backfill>,
    /// When the last backfill finished.
    pub backfill_finished_at: Option<Timestamp>,
    /// Users and groups in the last finished backfill.
    pub backfill_objects: u64,
    /// Successful write requests (create, replace, patch, delete).
    pub sent_total: u64,
    /// Failed requests (each retry counts).
    pub failed_total: u64,
    /// The last failure, e.g. `POST /Users: HTTP 503 (retrying in 2 s)`.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<Timestamp>,
    /// The last successful request.
    pub last_success_at: Option<Timestamp>,
}

/// Users or groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// A directory user (`/Users`).
    User,
    /// A directory group (`/Groups`).
    Group,
}

impl ObjectKind {
    /// The WorkOS object name.
    pub fn object_name(self) -> &'static str {
        match self {
            ObjectKind::User => "directory_user",
            ObjectKind::Group => "directory_group",
        }
    }

    /// The SCIM endpoint.
    pub fn endpoint(self) -> &'static str {
        match self {
            ObjectKind::User => "Users",
            ObjectKind::Group => "Groups",
        }
    }
}

/// A forwarded object: its remote id and a fingerprint of what was last sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapEntry {
    /// User or group.
    pub kind: ObjectKind,
    /// The id the target gave it.
    pub remote_id: String,
    /// SHA-256 (hex, shortened) of the last body sent: an unchanged object is not sent again.
    pub fingerprint: String,
    /// Users: the `userName` sent, case-folded (unique per target, as WorkOS requires).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// Users: whether the remote user is active (false after a deactivation).
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

/// Why an object is not forwarded. It is retried when it changes (and by a reconcile).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedObject {
    /// User or group.
    pub kind: ObjectKind,
    /// The local id.
    pub id: String,
    /// The IdP id, when known.
    pub idp_id: Option<String>,
    /// `workos_rule` (refused before sending), `remote_refused` (a 4xx), `bad_response`
    /// (malformed JSON, no id, a redirect), `timeout`, `conflict` (the remote object with this
    /// userName / displayName belongs to another IdP id).
    pub code: String,
    /// What went wrong and what to do.
    pub reason: String,
    /// The remote's HTTP status, if it answered.
    pub status: Option<u16>,
    /// A create may have reached the target (no usable answer): the next try looks it up first.
    #[serde(default)]
    pub maybe_created: bool,
    /// First parked.
    pub since: Timestamp,
}
