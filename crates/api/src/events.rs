//! Appending events to a change set: the event log is the outbox, so an event is written in
//! the same transaction as the change it describes.

use idbridge_model::Event;
use idbridge_store::{ChangeSet, NewEvent};

/// Adds `event` to the change set and returns it (for logging or responses).
pub fn append(
    cs: &mut ChangeSet,
    kind: &str,
    data: serde_json::Value,
    organization_id: Option<&str>,
) -> Event {
    let event = Event::new(kind, data);
    cs.event(NewEvent {
        id: event.id.clone(),
        kind: event.event.clone(),
        organization_id: organization_id.map(str::to_string),
        created_at_ms: event.created_at.as_millis(),
        body: event.to_compact_json(),
    });
    event
}
