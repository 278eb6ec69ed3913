//! Typed rows inside a [`crate::staged::StagedStore`] run: row writes are checked and kept in
//! an overlay (final row per primary key) that the run's reads merge with the real store, and
//! replayed in order into the run's one change set, where the real commit re-checks them.
//!
//! Checked while staging: primary-key conflicts (insert of a taken key, update of an absent
//! row), expected versions and unique index values, against the overlay or, for rows the run
//! has not touched, the real store (the real commit re-checks all of it). Reads through an
//! index evaluate its terms on staged rows; the terms the row API allows are a column or
//! `lower(column)`, and the partial condition `column IS NOT NULL`.

use std::collections::BTreeMap;

use idbridge_store::rows::{key_text, PRIMARY};
use idbridge_store::{ConflictKind, Row, RowOp, RowValue, RowWrite, Store, StoreError, TableDef};

type Result<T> = idbridge_store::Result<T>;

/// (table name, primary key) → the table and the row's final staged state (`None`: deleted).
type OverlayMap =
    BTreeMap<(&'static str, Vec<RowValue>), (&'static TableDef, Option<Vec<RowValue>>)>;

/// The run's row writes: the overlay reads merge, and the writes in order for the commit.
#[derive(Default)]
pub(crate) struct RowOverlay {
    rows: OverlayMap,
    writes: Vec<RowWrite>,
}

fn unsupported(what: String) -> StoreError {
    StoreError::Backend(format!(
        "{what} is not available inside a staged directory run"
    ))
}

fn key_of(table: &TableDef, values: &[RowValue]) -> Vec<RowValue> {
    table
        .primary_key
        .iter()
        .filter_map(|k| table.column_index(k))
        .filter_map(|i| values.get(i).cloned())
        .collect()
}

/// The value of an index term (a column or `lower(column)`) on a row.
fn eval_term(table: &TableDef, values: &[RowValue], term: &str) -> Result<RowValue> {
    let column = |name: &str| {
        table
            .column_index(name)
            .and_then(|i| values.get(i).cloned())
            .ok_or_else(|| unsupported(format!("index term {term} of {}", table.name)))
    };
    if let Some(inner) = term
        .strip_prefix("lower(")
        .and_then(|t| t.strip_suffix(')'))
    {
        // SQLite's lower() folds ASCII only (no ICU): the same here.
        return Ok(match column(inner.trim())? {
            RowValue::Text(s) => RowValue::Text(s.to_ascii_lowercase()),
            other => other,
        });
    }
    column(term.trim())
}

/// Whether a row satisfies a partial index's condition (`column IS NOT NULL`).
fn eval_partial(table: &TableDef, values: &[RowValue], partial: Option<&str>) -> Result<bool> {
    let Some(cond) = partial else { return Ok(true) };
    match cond.strip_suffix(" IS NOT NULL") {
        Some(col) => Ok(eval_term(table, values, col)? != RowValue::Null),
        None => Err(unsupported(format!("the partial condition {cond}"))),
    }
}

/// The order terms of `index` (its terms, then the primary-key columns not among them) and its
/// partial condition.
fn order_terms(table: &TableDef, index: &str) -> Result<(Vec<&'static str>, Option<&'static str>)> {
    if index == PRIMARY {
        return Ok((table.primary_key.to_vec(), None));
    }
    let def = table
        .index(index)
        .ok_or_else(|| StoreError::Backend(format!("table {} has no index {index}", table.name)))?;
    let mut terms = def.terms.to_vec();
    terms.extend(table.primary_key.iter().filter(|k| !def.terms.contains(k)));
    Ok((terms, def.partial))
}

/// A row's order values in `index` when it falls under `prefix` (None otherwise).
fn order_of(
    table: &TableDef,
    terms: &[&str],
    partial: Option<&str>,
    prefix: &[RowValue],
    values: &[RowValue],
) -> Result<Option<Vec<RowValue>>> {
    if !eval_partial(table, values, partial)? {
        return Ok(None);
    }
    let order = terms
        .iter()
        .map(|t| eval_term(table, values, t))
        .collect::<Result<Vec<_>>>()?;
    Ok(order.starts_with(prefix).then_some(order))
}

impl RowOverlay {
    /// Writes + row writes staged (the engine's commit-size measure).
    pub(crate) fn ops(&self) -> usize {
        self.writes.len()
    }

    /// The staged row writes, in order, for the run's change set.
    pub(crate) fn take(&mut self) -> Vec<RowWrite> {
        self.rows.clear();
        std::mem::take(&mut self.writes)
    }

    /// The staged state of a row: `Some(None)` deleted, `None` untouched by the run.
    fn staged(&self, table: &TableDef, key: &[RowValue]) -> Option<Option<Vec<RowValue>>> {
        self.rows
            .get(&(table.name, key.to_vec()))
            .map(|(_, r)| r.clone())
    }

    /// Checks `writes` against the overlay and the real store, then stages them all, or none
    /// (the error of the first that fails).
    pub(crate) fn stage(&mut self, inner: &dyn Store, writes: Vec<RowWrite>) -> Result<()> {
        let mut pending: OverlayMap = BTreeMap::new();
        for w in &writes {
            let table = w.table;
            let key = match w.op {
                RowOp::Delete => w.values.clone(),
                _ => key_of(table, &w.values),
            };
            let slot = (table.name, key.clone());
            let current = match pending.get(&slot).or_else(|| self.rows.get(&slot)) {
                Some((_, r)) => r.clone(),
                None => inner.get_row(table, &key)?.map(|r| r.values),
            };
            let version_pos = table.version_column.and_then(|v| table.column_index(v));
            let version_of = |r: &Option<Vec<RowValue>>| {
                version_pos
                    .and_then(|i| r.as_ref().and_then(|r| r.get(i)))
                    .and_then(RowValue::as_integer)
                    .unwrap_or(0)
            };
            let conflict = |kind| StoreError::conflict(table.name, &key_text(&key), kind);
            let new = match w.op {
                RowOp::Delete => None,
                RowOp::Insert if current.is_some() => return Err(conflict(ConflictKind::Exists)),
                RowOp::Update { .. } if current.is_none() => {
                    return Err(conflict(ConflictKind::Missing))
                }
                RowOp::Update {
                    expect_version: Some(v),
                } if version_of(&current) != v => return Err(conflict(ConflictKind::Changed)),
                _ => {
                    let mut row = w.values.clone();
                    if let Some(i) = version_pos {
                        if let Some(slot) = row.get_mut(i) {
                            *slot = RowValue::Integer(match current.is_some() {
                                true => version_of(&current) + 1,
                                false => 1,
                            });
                        }
                    }
                    Some(row)
                }
            };
            if let Some(row) = &new {
                self.check_unique(inner, &pending, table, &key, row)?;
            }
            pending.insert(slot, (table, new));
        }
        self.rows.extend(pending);
        self.writes.extend(writes);
        Ok(())
    }

    /// `Exists` if another row (staged in this change set, staged earlier in the run, or
    /// stored and not replaced by the run) holds one of `row`'s unique index values.
    fn check_unique(
        &self,
        inner: &dyn Store,
        pending: &OverlayMap,
        table: &'static TableDef,
        key: &[RowValue],
        row: &[RowValue],
    ) -> Result<()> {
        for def in table.indexes.iter().filter(|d| d.unique) {
            if !eval_partial(table, row, def.partial)? {
                continue;
            }
            let values = def
                .terms
                .iter()
                .map(|t| eval_term(table, row, t))
                .collect::<Result<Vec<_>>>()?;
            let taken = |other: &[RowValue]| -> Result<bool> {
                Ok(eval_partial(table, other, def.partial)?
                    && def
                        .terms
                        .iter()
                        .map(|t| eval_term(table, other, t))
                        .collect::<Result<Vec<_>>>()?
                        == values)
            };
            let mut holder = None;
            for ((name, k), (_, r)) in pending.iter().chain(self.rows.iter()) {
                if *name == table.name && k.as_slice() != key && holder.is_none() {
                    if let Some(other) = r {
                        if taken(other)? {
                            holder = Some(k.clone());
                        }
                    }
                }
            }
            if holder.is_none() {
                if let Some(stored) = inner.find_unique(table, def.name, &values)? {
                    let k = key_of(table, &stored.values);
                    let replaced = pending.contains_key(&(table.name, k.clone()))
                        || self.rows.contains_key(&(table.name, k.clone()));
                    if k.as_slice() != key && !replaced {
                        holder = Some(k);
                    }
                }
            }
            if holder.is_some() {
                return Err(StoreError::conflict(
                    table.name,
                    &format!("{} ({})", key_text(key), def.name),
                    ConflictKind::Exists,
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn get_row(
        &self,
        inner: &dyn Store,
        table: &TableDef,
        key: &[RowValue],
    ) -> Result<Option<Row>> {
        match self.staged(table, key) {
            Some(r) => Ok(r.map(|values| Row { values })),
            None => inner.get_row(table, key),
        }
    }

    pub(crate) fn find_unique(
        &self,
        inner: &dyn Store,
        table: &TableDef,
        index: &str,
        values: &[RowValue],
    ) -> Result<Option<Row>> {
        if let Some(row) = inner.find_unique(table, index, values)? {
            // Still the answer unless the run changed or removed that row.
            if self.staged(table, &key_of(table, &row.values)).is_none() {
                return Ok(Some(row));
            }
        }
        let def = match index {
            PRIMARY => return self.get_row(inner, table, values),
            _ => table.index(index).ok_or_else(|| {
                StoreError::Backend(format!("table {} has no index {index}", table.name))
            })?,
        };
        for ((name, _), (_, row)) in &self.rows {
            let Some(row) = row.as_ref().filter(|_| *name == table.name) else {
                continue;
            };
            if !eval_partial(table, row, def.partial)? {
                continue;
            }
            let terms = def
                .terms
                .iter()
                .map(|t| eval_term(table, row, t))
                .collect::<Result<Vec<_>>>()?;
            if terms == values {
                return Ok(Some(Row {
                    values: row.clone(),
                }));
            }
        }
        Ok(None)
    }

    /// [`Store::scan_index`] (or `_rev` when `descending`) over the real store merged with the
    /// overlay (staged rows win), paging the real store as the kv merge does.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn scan(
        &self,
        inner: &dyn Store,
        table: &TableDef,
        index: &str,
        prefix: &[RowValue],
        bound: Option<&[RowValue]>,
        limit: usize,
        descending: bool,
    ) -> Result<Vec<Row>> {
        let (terms, partial) = order_terms(table, index)?;
        let tail = |order: &[RowValue]| order[prefix.len().min(order.len())..].to_vec();
        let beyond = |t: &[RowValue], b: &[RowValue]| {
            let t = &t[..b.len().min(t.len())];
            match descending {
                false => t > b,
                true => t < b,
            }
        };
        let mut out: Vec<(Vec<RowValue>, Row)> = Vec::new();
        let mut cursor: Option<Vec<RowValue>> = bound.map(<[RowValue]>::to_vec);
        loop {
            let batch = limit.max(1);
            let rows = match descending {
                false => inner.scan_index(table, index, prefix, cursor.as_deref(), batch)?,
                true => inner.scan_index_rev(table, index, prefix, cursor.as_deref(), batch)?,
            };
            let exhausted = rows.len() < batch;
            let mut upper = None;
            let mut merged: Vec<(Vec<RowValue>, Row)> = Vec::new();
            for row in rows {
                let order =
                    order_of(table, &terms, partial, prefix, &row.values)?.unwrap_or_default();
                upper = Some(tail(&order));
                if self.staged(table, &key_of(table, &row.values)).is_none() {
                    merged.push((tail(&order), row));
                }
            }
            let upper = if exhausted { None } else { upper };
            for ((name, _), (_, row)) in &self.rows {
                let Some(values) = row.as_ref().filter(|_| *name == table.name) else {
                    continue;
                };
                let Some(order) = order_of(table, &terms, partial, prefix, values)? else {
                    continue;
                };
                let t = tail(&order);
                let after_cursor = cursor.as_deref().is_none_or(|c| beyond(&t, c));
                let within = upper.as_deref().is_none_or(|u| !beyond(&t, u));
                if after_cursor && within {
                    merged.push((
                        t,
                        Row {
                            values: values.clone(),
                        },
                    ));
                }
            }
            merged.sort_by(|a, b| match descending {
                false => a.0.cmp(&b.0),
                true => b.0.cmp(&a.0),
            });
            out.extend(merged);
            if out.len() >= limit || upper.is_none() {
                out.truncate(limit);
                return Ok(out.into_iter().map(|(_, r)| r).collect());
            }
            cursor = upper;
        }
    }

    pub(crate) fn count(
        &self,
        inner: &dyn Store,
        table: &TableDef,
        index: &str,
        prefix: &[RowValue],
    ) -> Result<u64> {
        let (terms, partial) = order_terms(table, index)?;
        let mut n = inner.count_index(table, index, prefix)?;
        for ((name, key), (_, row)) in &self.rows {
            if *name != table.name {
                continue;
            }
            let was = match inner.get_row(table, key)? {
                Some(r) => order_of(table, &terms, partial, prefix, &r.values)?.is_some(),
                None => false,
            };
            let is = match row {
                Some(values) => order_of(table, &terms, partial, prefix, values)?.is_some(),
                None => false,
            };
            match (was, is) {
                (true, false) => n = n.saturating_sub(1),
                (false, true) => n += 1,
                _ => {}
            }
        }
        Ok(n)
    }
}
