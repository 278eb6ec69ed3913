//! The event feed (WorkOS `GET /events`, workos-api.md §4.1): reading, filtering and paging
//! the event log as a forward-only, oldest-first walk. The HTTP layer parses a request into an
//! [`EventsQuery`] and renders the [`EventsPage`]; the walk itself lives here, beside the other
//! readers of what the log is for, so any other caller (CLI, admin console) pages it the same
//! way.
//!
//! Choices where WorkOS is silent or the log differs:
//! - the feed is a cursor walk, not a sorted list (oldest first only);
//! - an `after` cursor that is unknown or already compacted away by retention is an error
//!   ([`EventsError::UnknownCursor`]: the consumer must restart from a time range), never an
//!   empty page that would look like "caught up";
//! - with no `events` filter, idbridge's own opt-in kinds ([`EventKind::opt_in`]) are left out;
//! - `after` of a page is the last returned id when more matching events may follow, else
//!   none; one page scans at most [`MAX_SCAN`] log entries, and when that budget runs out
//!   `after` is the last scanned id so the next page continues behind it.

use idbridge_model::EventKind;
use idbridge_store::{Store, StoreError, StoredEvent};

/// Log entries read per store call while filtering.
const READ_BATCH: usize = 256;
/// Most log entries one page may look at, so a rare filter cannot make a request walk the
/// whole retention window.
pub const MAX_SCAN: usize = 50_000;
/// Clocks of committers are not strictly monotonic; a range walk stops only this far past
/// `range_end`.
const CLOCK_SLACK_MS: i64 = 5 * 60 * 1000;

/// A validated feed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsQuery {
    /// Event kinds to list; empty: every kind that is not opt-in.
    pub events: Vec<String>,
    /// Only events of this organization.
    pub organization_id: Option<String>,
    /// Only events created at or after this instant (Unix ms).
    pub range_start_ms: Option<i64>,
    /// Only events created at or before this instant (Unix ms).
    pub range_end_ms: Option<i64>,
    /// Continue after this event id.
    pub after: Option<String>,
    /// Page size.
    pub limit: usize,
}

impl EventsQuery {
    fn matches(&self, e: &StoredEvent) -> bool {
        (if self.events.is_empty() {
            !EventKind::parse(&e.kind).is_some_and(EventKind::opt_in)
        } else {
            self.events.contains(&e.kind)
        }) && self
            .organization_id
            .as_ref()
            .is_none_or(|o| e.organization_id.as_ref() == Some(o))
            && self.range_start_ms.is_none_or(|s| e.created_at_ms >= s)
            && self.range_end_ms.is_none_or(|end| e.created_at_ms <= end)
    }
}

/// One page of the feed: the matching events (oldest first) and the next cursor.
#[derive(Debug)]
pub struct EventsPage {
    /// The events, with their stored bodies (the canonical compact JSON webhooks sign).
    pub events: Vec<StoredEvent>,
    /// Where the next page starts; `None` when the walk caught up.
    pub after: Option<String>,
}

/// Why a page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// The `after` cursor names no event in the log (never existed, or compacted away by
    /// retention): restart from a time range.
    #[error("Event not found: '{0}'. It does not exist or is older than the retention period.")]
    UnknownCursor(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The seq just before the first event created at or after `start_ms` (a binary search over
/// the contiguous seqs; clocks that stepped back only make the filter below skip a few).
fn seq_before_time(store: &dyn Store, start_ms: i64) -> Result<u64, StoreError> {
    let Some(oldest) = store.events_after(0, 1)?.into_iter().next() else {
        return Ok(0);
    };
    let mut lo = oldest.seq; // candidates for the first event at/after start_ms: [lo, hi]
    let mut hi = store.last_event_seq()?.saturating_add(1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match store.events_after(mid - 1, 1)?.into_iter().next() {
            Some(e) if e.seq == mid && e.created_at_ms < start_ms => lo = mid + 1,
            Some(e) if e.seq == mid => hi = mid,
            // Compaction raced us; fall back to a linear walk from the start.
            _ => return Ok(0),
        }
    }
    Ok(lo.saturating_sub(1))
}

/// Reads one page from the log.
pub fn read_page(store: &dyn Store, query: &EventsQuery) -> Result<EventsPage, EventsError> {
    let mut cursor = match (&query.after, query.range_start_ms) {
        (Some(after), _) => store
            .event_seq(after)?
            .ok_or_else(|| EventsError::UnknownCursor(after.clone()))?,
        (None, Some(start)) => seq_before_time(store, start)?,
        (None, None) => 0,
    };
    let mut out: Vec<StoredEvent> = Vec::new();
    let mut scanned = 0usize;
    loop {
        let batch = store.events_after(cursor, READ_BATCH)?;
        let exhausted = batch.len() < READ_BATCH;
        for event in batch {
            cursor = event.seq;
            scanned += 1;
            if query
                .range_end_ms
                .is_some_and(|end| event.created_at_ms > end.saturating_add(CLOCK_SLACK_MS))
            {
                return Ok(finish(out, query.limit, None));
            }
            if query.matches(&event) {
                out.push(event);
                if out.len() > query.limit {
                    return Ok(finish(out, query.limit, None));
                }
            } else {
                if scanned >= MAX_SCAN {
                    // Budget spent: let the client continue behind what was looked at.
                    return Ok(finish(out, query.limit, Some(event.id)));
                }
            }
        }
        if exhausted {
            return Ok(finish(out, query.limit, None));
        }
    }
}

fn finish(mut events: Vec<StoredEvent>, limit: usize, after: Option<String>) -> EventsPage {
    let more = events.len() > limit;
    events.truncate(limit);
    let after = if more {
        events.last().map(|e| e.id.clone())
    } else {
        after
    };
    EventsPage { events, after }
}

#[cfg(test)]
mod tests {
    use idbridge_model::{Event, EventKind};
    use idbridge_store::{ChangeSet, Store};
    use serde_json::json;

    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00.000Z

    fn seed(store: &dyn Store, times: &[i64]) {
        for at in times {
            let event = Event::at(
                EventKind::DsyncUserCreated,
                json!({}),
                idbridge_model::Timestamp::from_millis(*at),
            );
            let mut cs = ChangeSet::new();
            cs.append_event(&event, None);
            store.commit(cs).expect("commit");
        }
    }

    #[test]
    fn range_start_binary_search_finds_the_first_event() {
        let store = idbridge_store::SqliteStore::open_ephemeral().expect("store");
        let times: Vec<i64> = (0..50).map(|i| T0 + i * 100).collect();
        seed(&store, &times);
        for (i, t) in times.iter().enumerate() {
            assert_eq!(
                super::seq_before_time(&store, *t).expect("search"),
                i as u64,
                "at {t}"
            );
        }
        assert_eq!(super::seq_before_time(&store, T0 - 1).expect("search"), 0);
        assert_eq!(
            super::seq_before_time(&store, T0 + 10_000).expect("search"),
            50
        );
    }
}
