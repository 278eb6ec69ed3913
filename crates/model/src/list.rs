//! List envelopes (workos-api.md §2.3, §4.1).

use serde::{Deserialize, Serialize};

use crate::tag::ListTag;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct List<T> {
    pub object: ListTag,
    pub data: Vec<T>,
    pub list_metadata: ListMetadata,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListMetadata {
    pub before: Option<String>,
    pub after: Option<String>,
}

impl<T> List<T> {
    pub fn new(data: Vec<T>, before: Option<String>, after: Option<String>) -> Self {
        List {
            object: ListTag,
            data,
            list_metadata: ListMetadata { before, after },
        }
    }
}

/// `/events` pages forward only, so its metadata has just `after`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsList<T> {
    pub object: ListTag,
    pub data: Vec<T>,
    pub list_metadata: EventListMetadata,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventListMetadata {
    pub after: Option<String>,
}

/// Sort order of a page (WorkOS lists default to newest first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first.
    #[default]
    Desc,
}

/// Cursor of a page: WorkOS `after` / `before` (ids of the listed kind).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Cursor {
    /// From the start (in the page's order).
    #[default]
    None,
    /// Items past this id in the page's order.
    After(String),
    /// Items before this id in the page's order.
    Before(String),
}

/// A page request, WorkOS style (`limit`, `order`, `before` / `after`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// At most this many items (the caller bounds it, e.g. 1–100).
    pub limit: usize,
    /// Order.
    pub order: Order,
    /// Cursor.
    pub cursor: Cursor,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            limit: 10,
            order: Order::Desc,
            cursor: Cursor::None,
        }
    }
}

impl PageRequest {
    /// Whether an item with `id` lies on the requested side of the cursor.
    pub fn admits(&self, id: &str) -> bool {
        match (&self.cursor, self.order) {
            (Cursor::None, _) => true,
            (Cursor::After(c), Order::Desc) | (Cursor::Before(c), Order::Asc) => id < c.as_str(),
            (Cursor::After(c), Order::Asc) | (Cursor::Before(c), Order::Desc) => id > c.as_str(),
        }
    }
}

/// A page of items with WorkOS `list_metadata` cursors.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// Items in the requested order.
    pub data: Vec<T>,
    /// First item's id when items exist before it (in the page's order).
    pub before: Option<String>,
    /// Last item's id when more items follow.
    pub after: Option<String>,
}

impl<T> Page<T> {
    /// The page as the WorkOS list envelope.
    pub fn into_list(self) -> List<T> {
        List::new(self.data, self.before, self.after)
    }

    /// The same page with every item converted.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            data: self.data.into_iter().map(f).collect(),
            before: self.before,
            after: self.after,
        }
    }
}
