//! WorkOS cursor pagination over a table whose keys are `<prefix><id>` with ULID ids, so key
//! order is creation order (workos-api.md §2.3): the one implementation every owner of a
//! listed table uses.
//!
//! `order=desc` (the default) lists newest first. `after=<id>` continues past that item in the
//! list's direction, `before=<id>` goes back. `after` is the last item's id when more follow;
//! `before` is the first item's id when earlier ones exist.

use idbridge_model::{Cursor, Order, Page, PageRequest};

use crate::error::{Result, StoreError};
use crate::rows::{Row, RowValue, TableDef};
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
    let source = KeySource {
        store,
        table,
        prefix,
    };
    page_from(&source, req, &mut |id, v: &Vec<u8>| item(id, v))
}

/// One page of typed rows of `table` in the order of `index` under `prefix`, where exactly
/// one TEXT order column follows the prefix: its value is the row's id, what the cursors
/// name (e.g. memberships by group: index = primary key `(group_id, user_id)`, prefix
/// `[group_id]`, id = user id). `item(id, row)` decodes and filters as for [`page`].
pub fn page_index<T>(
    store: &dyn Store,
    table: &TableDef,
    index: &str,
    prefix: &[RowValue],
    req: &PageRequest,
    mut item: impl FnMut(&str, &Row) -> Result<Option<T>>,
) -> Result<Page<T>> {
    let source = IndexSource {
        store,
        table,
        index,
        prefix,
    };
    page_from(&source, req, &mut |id, row: &Row| item(id, row))
}

/// What a pager reads: `(id, value)` items in id order past a bound, either way, and the
/// item at a cursor id.
trait PageSource {
    type Value;
    fn scan(
        &self,
        asc: bool,
        bound: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Self::Value)>>;
    fn at(&self, id: &str) -> Result<Option<Self::Value>>;
}

struct KeySource<'a> {
    store: &'a dyn Store,
    table: &'a str,
    prefix: &'a str,
}

impl PageSource for KeySource<'_> {
    type Value = Vec<u8>;
    fn scan(&self, asc: bool, bound: Option<&str>, limit: usize) -> Result<Vec<(String, Vec<u8>)>> {
        let bound = bound.map(|id| format!("{}{id}", self.prefix));
        let rows = if asc {
            self.store
                .scan(self.table, self.prefix, bound.as_deref(), limit)?
        } else {
            self.store
                .scan_rev(self.table, self.prefix, bound.as_deref(), limit)?
        };
        Ok(rows
            .into_iter()
            .map(|(k, v)| {
                let id = k.strip_prefix(self.prefix).unwrap_or(&k).to_owned();
                (id, v)
            })
            .collect())
    }
    fn at(&self, id: &str) -> Result<Option<Vec<u8>>> {
        self.store.get(self.table, &format!("{}{id}", self.prefix))
    }
}

struct IndexSource<'a> {
    store: &'a dyn Store,
    table: &'a TableDef,
    index: &'a str,
    prefix: &'a [RowValue],
}

impl IndexSource<'_> {
    /// The id of a row: the text of the order column after the prefix.
    fn id_of(&self, row: &Row) -> Result<String> {
        let order = match self.index {
            crate::rows::PRIMARY => self.table.primary_key.get(self.prefix.len()).copied(),
            name => self.table.index(name).and_then(|i| {
                let mut terms: Vec<&str> = i.terms.to_vec();
                terms.extend(
                    self.table
                        .primary_key
                        .iter()
                        .filter(|k| !i.terms.contains(k)),
                );
                terms.get(self.prefix.len()).copied()
            }),
        };
        order
            .and_then(|c| row.get(self.table, c))
            .and_then(RowValue::as_text)
            .map(str::to_owned)
            .ok_or_else(|| {
                StoreError::Backend(format!(
                    "index {} of {} has no text column after {} prefix values to page by",
                    self.index,
                    self.table.name,
                    self.prefix.len()
                ))
            })
    }
}

impl PageSource for IndexSource<'_> {
    type Value = Row;
    fn scan(&self, asc: bool, bound: Option<&str>, limit: usize) -> Result<Vec<(String, Row)>> {
        let bound = bound.map(|id| [RowValue::from(id)]);
        let rows = if asc {
            self.store.scan_index(
                self.table,
                self.index,
                self.prefix,
                bound.as_ref().map(|b| &b[..]),
                limit,
            )?
        } else {
            self.store.scan_index_rev(
                self.table,
                self.index,
                self.prefix,
                bound.as_ref().map(|b| &b[..]),
                limit,
            )?
        };
        rows.into_iter().map(|r| Ok((self.id_of(&r)?, r))).collect()
    }
    fn at(&self, id: &str) -> Result<Option<Row>> {
        let mut key = self.prefix.to_vec();
        key.push(RowValue::from(id));
        Ok(self
            .store
            .scan_index(self.table, self.index, &key, None, 1)?
            .into_iter()
            .next())
    }
}

/// Decodes and filters one `(id, value)` item of a page.
type ItemFn<'a, V, T> = dyn FnMut(&str, &V) -> Result<Option<T>> + 'a;

/// The WorkOS paging rules over any source (see the module docs).
fn page_from<T, S: PageSource>(
    source: &S,
    req: &PageRequest,
    item: &mut ItemFn<'_, S::Value, T>,
) -> Result<Page<T>> {
    let limit = req.limit.max(1);
    // `forward_asc`: the scan direction, in id order; `start`: the cursor id.
    let (forward_asc, start) = match (&req.cursor, req.order) {
        (Cursor::None, Order::Asc) => (true, None),
        (Cursor::None, Order::Desc) => (false, None),
        (Cursor::After(id), Order::Asc) | (Cursor::Before(id), Order::Desc) => {
            (true, Some(id.clone()))
        }
        (Cursor::After(id), Order::Desc) | (Cursor::Before(id), Order::Asc) => {
            (false, Some(id.clone()))
        }
    };
    let mut items = collect(source, forward_asc, start.clone(), limit + 1, item)?;
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
                let at_cursor = match source.at(cursor)? {
                    Some(value) => item(cursor, &value)?.is_some(),
                    None => false,
                };
                at_cursor
                    || !collect(source, !forward_asc, Some(cursor.clone()), 1, item)?.is_empty()
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
fn collect<T, S: PageSource>(
    source: &S,
    asc: bool,
    mut bound: Option<String>,
    want: usize,
    item: &mut ItemFn<'_, S::Value, T>,
) -> Result<Vec<(String, T)>> {
    let mut out = Vec::new();
    let mut batch = want;
    loop {
        let rows = source.scan(asc, bound.as_deref(), batch)?;
        let exhausted = rows.len() < batch;
        for (id, value) in rows {
            if let Some(t) = item(&id, &value)? {
                out.push((id.clone(), t));
                if out.len() >= want {
                    return Ok(out);
                }
            }
            bound = Some(id);
        }
        if exhausted {
            return Ok(out);
        }
        batch = SCAN_BATCH;
    }
}
