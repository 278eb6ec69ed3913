//! Events: the append-only log behind `/events`, webhooks and forwarders (workos-api.md §4).

use serde::{Deserialize, Serialize};

use crate::ids::{new_id, IdPrefix};
use crate::tag::EventTag;
use crate::Timestamp;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub object: EventTag,
    pub id: String,
    /// The event name, e.g. `dsync.user.created`.
    pub event: String,
    pub data: serde_json::Value,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Value>,
}

impl Event {
    /// A new event with a fresh id, stamped now.
    pub fn new(event: impl Into<String>, data: serde_json::Value) -> Self {
        Event {
            object: EventTag,
            id: new_id(IdPrefix::Event),
            event: event.into(),
            data,
            created_at: Timestamp::now(),
            context: None,
        }
    }

    /// The compact JSON body, byte-identical to `JSON.stringify` of the parsed object: serde_json
    /// writes no whitespace, keeps key order (preserve_order) and escapes neither `/` nor
    /// non-ASCII, which is what webhook signature verifiers re-serialize to.
    pub fn to_compact_json(&self) -> Vec<u8> {
        // Serializing plain data (strings, numbers, maps with string keys) cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}
