//! WorkOS cursor pagination over a table whose keys are `<prefix><id>` with ULID ids, so key
//! order is creation order (workos-api.md §2.3): the one implementation every owner of a
//! listed table uses.
//!
//! `order=desc` (the default) lists newest first. `after=<id>` continues past that item in the
//! list's direction, `before=<id>` goes back. `after` is the last item's id when more follow;
//! `before` is the first item's id when earlier ones exist.

use idbridge_model::{Cursor, Order, Page, PageRequest};

use crate::error::Result;
use crate::Store;

/// Raw rows read per scan step while filtering (the first step reads just `limit + 1`).
const SCAN_BATCH: usize = 256;

/// One page of `table`'s rows under `prefix`. `item(id, value)` decodes a row and filters it:
/// `Ok(None)` skips the row (a filter, or a row whose target is gone). `id` is the key without
/// the prefix and is what the cursors name.
pub fn page<T>(
    store: &dyn Store,
    table: &str,
    prefix: &str,
    req: &PageRequest,
    mut item: impl FnMut(&str, &[u8]) -> Result<Option<T>>,
) -> Result<Page<T>> {
    let limit = req.limit.max(1);
    let key_of = |id: &String| format!("{prefix}{id}");
    // `forward_asc`: the scan direction, in key order; `start`: the cursor as a key bound.
    let (forward_asc, start) = match (&req.cursor, req.order) {
        (Cursor::None, Order::Asc) => (true, None),
        (Cursor::None, Order::Desc) => (false, None),
        (Cursor::After(id), Order::Asc) | (Cursor::Before(id), Order::Desc) => {
            (true, Some(key_of(id)))
        }
        (Cursor::After(id), Order::Desc) | (Cursor::Before(id), Order::Asc) => {
            (false, Some(key_of(id)))
        }
    };
    let mut items = collect(
        store,
        table,
        prefix,
        forward_asc,
        start.clone(),
        limit + 1,
        &mut item,
    )?;
    let more_in_direction = items.len() > limit;
    items.truncate(limit);
    let going_back = matches!(req.cursor, Cursor::Before(_));
    if going_back {
        items.reverse();
    }
    let (more_after, more_before) = if going_back {
        (start.is_some(), more_in_direction)
    } else {
        // Something precedes this page iff a cursor was given and an accepted item lies at or
        // behind it (the cursor item itself may have been deleted since).
        let behind = match &start {
            None => false,
            Some(cursor) => {
                let at_cursor = match store.get(table, cursor)? {
                    Some(bytes) => {
                        let id = cursor.strip_prefix(prefix).unwrap_or(cursor);
                        item(id, &bytes)?.is_some()
                    }
                    None => false,
                };
                at_cursor
                    || !collect(
                        store,
                        table,
                        prefix,
                        !forward_asc,
                        Some(cursor.clone()),
                        1,
                        &mut item,
                    )?
                    .is_empty()
            }
        };
        (more_in_direction, behind)
    };
    let after = if more_after {
        items.last().map(|(id, _)| id.clone())
    } else {
        None
    };
    let before = if more_before {
        items.first().map(|(id, _)| id.clone())
    } else {
        None
    };
    Ok(Page {
        data: items.into_iter().map(|(_, t)| t).collect(),
        before,
        after,
    })
}

/// Up to `want` accepted items past `bound` in one direction, with their ids.
fn collect<T>(
    store: &dyn Store,
    table: &str,
    prefix: &str,
    asc: bool,
    mut bound: Option<String>,
    want: usize,
    item: &mut impl FnMut(&str, &[u8]) -> Result<Option<T>>,
) -> Result<Vec<(String, T)>> {
    let mut out = Vec::new();
    let mut batch = want;
    loop {
        let rows = if asc {
            store.scan(table, prefix, bound.as_deref(), batch)?
        } else {
            store.scan_rev(table, prefix, bound.as_deref(), batch)?
        };
        let exhausted = rows.len() < batch;
        for (key, value) in rows {
            let id = key.strip_prefix(prefix).unwrap_or(&key).to_owned();
            if let Some(t) = item(&id, &value)? {
                out.push((id, t));
                if out.len() >= want {
                    return Ok(out);
                }
            }
            bound = Some(key);
        }
        if exhausted {
            return Ok(out);
        }
        batch = SCAN_BATCH;
    }
}
