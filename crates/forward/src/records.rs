//! The records the worker reads and writes. The API crate writes the same shapes (its
//! `tables.rs` names the same tables): endpoint records on CRUD, the first delivery state (the
//! starting cursor) on creation. Both sides ignore fields they do not know.

use idbridge_model::Timestamp;
use serde::{Deserialize, Serialize};

/// Webhook endpoints, keyed by id (`we_…`); the value is the WorkOS `webhook_endpoint` object.
pub const ENDPOINTS_TABLE: &str = "webhook_endpoints";
/// Delivery state (cursor included), keyed by endpoint id.
pub const DELIVERY_TABLE: &str = "webhook_delivery";

/// `enabled` endpoints get deliveries; `disabled` ones keep their cursor and resume from it
/// when enabled again (nothing is skipped while disabled, as long as retention keeps it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointStatus {
    /// Receives deliveries.
    Enabled,
    /// Paused.
    Disabled,
}

/// The fields of a stored webhook endpoint that delivery needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// `we_<ULID>`.
    pub id: String,
    /// Where events are POSTed.
    pub endpoint_url: String,
    /// HMAC key of the `WorkOS-Signature` header.
    pub secret: String,
    /// Enabled or disabled.
    pub status: EndpointStatus,
    /// Subscribed event types; an event of another type is skipped (the cursor moves past it).
    pub events: Vec<String>,
}

impl EndpointRecord {
    /// Whether this endpoint wants events of type `kind`.
    pub fn subscribes_to(&self, kind: &str) -> bool {
        self.events.iter().any(|e| e == kind)
    }
}

/// Per-endpoint delivery progress, persisted with every cursor move and every failure so the
/// admin API (another component) and a restarted worker see the same state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DeliveryState {
    /// Seq of the last event handled (delivered or skipped); the next delivery is `cursor + 1`.
    pub cursor: u64,
    /// Time of the last 2xx.
    pub last_success_at: Option<Timestamp>,
    /// Time of the last failed attempt.
    pub last_failure_at: Option<Timestamp>,
    /// Failed attempts since the last success (0 when healthy).
    pub consecutive_failures: u32,
    /// When the next retry is due (None when not backing off).
    pub next_attempt_at: Option<Timestamp>,
    /// What went wrong last (`receiver answered HTTP 503`, `timed out: …`).
    pub last_error: Option<String>,
    /// Id of the event the current failures are about, or of the last one delivered.
    pub last_event_id: Option<String>,
    /// Events acknowledged with a 2xx since the endpoint was created.
    pub delivered_total: u64,
}
