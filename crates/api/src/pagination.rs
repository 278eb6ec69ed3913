//! WorkOS pagination parameters (workos-api.md §2.3) parsed from the query; the owners of the
//! listed tables page them (`idbridge_store::page`).

use idbridge_model::IdPrefix;

use crate::body::Query;
use crate::error::{ApiError, FieldError};

pub const DEFAULT_LIMIT: usize = 10;
pub const MAX_LIMIT: usize = 100;

pub use idbridge_model::{Cursor, Order, PageRequest};

/// Parses `limit`, `order`, `before`, `after`; cursors must be ids of the listed kind.
pub fn page_request(q: &Query, prefix: IdPrefix) -> Result<PageRequest, ApiError> {
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
