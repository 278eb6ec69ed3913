//! WorkOS cursor pagination over id-ordered tables (workos-api.md §2.3).
//!
//! `order=desc` (the default) lists newest first. `after=<id>` continues past that item in the
//! list's direction, `before=<id>` goes back. `list_metadata.after` is the last item's id when
//! more follow; `list_metadata.before` is the first item's id when earlier ones exist.

use idbridge_model::IdPrefix;
use serde::de::DeserializeOwned;

use crate::body::Query;
use crate::db::Db;
use crate::error::{ApiError, FieldError};

pub const DEFAULT_LIMIT: usize = 10;
pub const MAX_LIMIT: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    None,
    After(String),
    Before(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: usize,
    pub order: Order,
    pub cursor: Cursor,
}

impl PageRequest {
    /// Parses `limit`, `order`, `before`, `after`; cursors must be ids of the listed kind.
    pub fn from_query(q: &Query, prefix: IdPrefix) -> Result<Self, ApiError> {
        let mut errors = Vec::new();
        let limit = match q.get("limit") {
            None => DEFAULT_LIMIT,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    errors.push(FieldError::new("limit", "limit_must_be_between_1_and_100"));
                    DEFAULT_LIMIT
                }
            },
        };
        let order = match q.get("order") {
            None | Some("desc") | Some("normal") => Order::Desc,
            Some("asc") => Order::Asc,
            Some(_) => {
                errors.push(FieldError::new("order", "order_must_be_asc_or_desc"));
                Order::Desc
            }
        };
        let mut cursor_for = |field: &str| -> Option<String> {
            let v = q.get(field)?;
            if idbridge_model::parse_id(prefix, v).is_err() {
                errors.push(FieldError::new(field, "invalid_cursor"));
                return None;
            }
            Some(v.to_string())
        };
        let before = cursor_for("before");
        let after = cursor_for("after");
        let cursor = match (before, after) {
            (Some(_), Some(_)) => {
                errors.push(FieldError::new("before", "before_and_after_are_exclusive"));
                Cursor::None
            }
            (Some(b), None) => Cursor::Before(b),
            (None, Some(a)) => Cursor::After(a),
            (None, None) => Cursor::None,
        };
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        Ok(PageRequest {
            limit,
            order,
            cursor,
        })
    }
}

pub struct Page<T> {
    pub data: Vec<T>,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// How many raw rows to read per scan step while filtering.
const SCAN_BATCH: usize = 256;

/// Lists a table of JSON records keyed by id (with an optional key prefix), keeping those the
/// filter accepts. `id_of` extracts the id used as cursor.
pub fn paginate<T, F, I>(
    db: &Db,
    table: &str,
    prefix: &str,
    req: &PageRequest,
    mut filter: F,
    id_of: I,
) -> Result<Page<T>, ApiError>
where
    T: DeserializeOwned,
    F: FnMut(&T) -> bool,
    I: Fn(&T) -> String,
{
    // Ascending key order == oldest first.
    // Keys are `<prefix><id>`; a cursor id becomes a full key bound.
    let key_of = |id: &String| Some(format!("{prefix}{id}"));
    let (forward_asc, start) = match (&req.cursor, req.order) {
        (Cursor::None, Order::Asc) => (true, None),
        (Cursor::None, Order::Desc) => (false, None),
        (Cursor::After(id), Order::Asc) => (true, key_of(id)),
        (Cursor::After(id), Order::Desc) => (false, key_of(id)),
        (Cursor::Before(id), Order::Asc) => (false, key_of(id)),
        (Cursor::Before(id), Order::Desc) => (true, key_of(id)),
    };
    let mut items = collect(
        db,
        table,
        prefix,
        forward_asc,
        start.clone(),
        req.limit + 1,
        &mut filter,
    )?;
    let more_in_direction = items.len() > req.limit;
    items.truncate(req.limit);
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
                let at_cursor = match db.get_raw(table, cursor)? {
                    Some(bytes) => serde_json::from_slice::<T>(&bytes)
                        .map(|item| filter(&item))
                        .unwrap_or(false),
                    None => false,
                };
                at_cursor
                    || !collect::<T, F>(
                        db,
                        table,
                        prefix,
                        !forward_asc,
                        Some(cursor.clone()),
                        1,
                        &mut filter,
                    )?
                    .is_empty()
            }
        };
        (more_in_direction, behind)
    };
    let after = if more_after {
        items.last().map(&id_of)
    } else {
        None
    };
    let before = if more_before {
        items.first().map(&id_of)
    } else {
        None
    };
    Ok(Page {
        data: items,
        before,
        after,
    })
}

fn collect<T, F>(
    db: &Db,
    table: &str,
    prefix: &str,
    asc: bool,
    mut bound: Option<String>,
    want: usize,
    filter: &mut F,
) -> Result<Vec<T>, ApiError>
where
    T: DeserializeOwned,
    F: FnMut(&T) -> bool,
{
    let mut out = Vec::new();
    loop {
        let rows = if asc {
            db.store()
                .scan(table, prefix, bound.as_deref(), SCAN_BATCH)?
        } else {
            db.store()
                .scan_rev(table, prefix, bound.as_deref(), SCAN_BATCH)?
        };
        let exhausted = rows.len() < SCAN_BATCH;
        for (key, value) in rows {
            bound = Some(key.clone());
            let item: T = serde_json::from_slice(&value)
                .map_err(|e| ApiError::Internal(format!("corrupt record {table}/{key}: {e}")))?;
            if filter(&item) {
                out.push(item);
                if out.len() >= want {
                    return Ok(out);
                }
            }
        }
        if exhausted {
            return Ok(out);
        }
    }
}
