//! A unit of work over the store: the engine's commits land in memory, reads see them, and
//! the whole run leaves as ONE change set for the real store.
//!
//! Why: an LDAP delta is many engine changes (each written as its own commit by the engine's
//! per-change code) plus the sync cursor that covers them; they must reach the store together,
//! or a crash leaves the cursor past unapplied changes or applied changes behind an old cursor.
//! Rather than re-writing every engine operation as a staging variant, the delta runs on an
//! engine over a [`StagedStore`]: each commit's conditions are checked against what the run
//! already staged (or, for rows it has not touched, against the real store, and then carried
//! into the final change set so the real commit re-checks them), its writes are folded into
//! one write per key, and its events are appended in order. The caller holds the directory's
//! lock for the whole run, so nothing of this process writes the directory in between; the
//! carried conditions catch another process.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use idbridge_store::{
    ChangeSet, CommitReceipt, Condition, ExportRecord, NewEvent, OwnerSchema, PendingSync, Row,
    RowValue, Store, StoreError, StoreStats, StoredEvent, TableDef,
};

use crate::staged_rows::RowOverlay;

type Key = (String, String);

#[derive(Default)]
struct Staged {
    /// Final value per row written by the run (`None`: deleted).
    writes: BTreeMap<Key, Option<Vec<u8>>>,
    /// Conditions on rows the run had not written when they were checked.
    conditions: Vec<Condition>,
    events: Vec<NewEvent>,
    /// Typed row writes (see `staged_rows`).
    rows: RowOverlay,
}

/// See the module docs. Expiring tables are not part of a directory run and are refused.
pub(crate) struct StagedStore {
    inner: Arc<dyn Store>,
    staged: Mutex<Staged>,
}

fn unsupported(what: &str) -> StoreError {
    StoreError::Backend(format!(
        "{what} is not available inside a staged directory run"
    ))
}

impl StagedStore {
    pub(crate) fn new(inner: Arc<dyn Store>) -> Self {
        StagedStore {
            inner,
            staged: Mutex::new(Staged::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Staged> {
        self.staged.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes + events staged so far (the engine's commit-size measure).
    pub(crate) fn ops(&self) -> usize {
        let s = self.lock();
        s.writes.len() + s.events.len() + s.rows.ops()
    }

    /// Takes everything staged as one change set (and starts empty again).
    pub(crate) fn take(&self) -> ChangeSet {
        let mut s = std::mem::take(&mut *self.lock());
        let mut cs = ChangeSet::new();
        cs.conditions = s.conditions;
        cs.rows = s.rows.take();
        for ((table, key), value) in s.writes {
            match value {
                Some(v) => cs.put(table, key, v),
                None => cs.delete(table, key),
            };
        }
        cs.events = s.events;
        cs
    }

    /// The staged value of a row: `Some(None)` deleted, `None` untouched by the run.
    fn staged_row(s: &Staged, table: &str, key: &str) -> Option<Option<Vec<u8>>> {
        s.writes.get(&(table.to_owned(), key.to_owned())).cloned()
    }

    /// Staged rows of `table` under `prefix` with `lo < key` (and `key <= hi` when given).
    fn staged_range(
        s: &Staged,
        table: &str,
        prefix: &str,
        lo: Option<&str>,
        hi: Option<&str>,
    ) -> Vec<(String, Option<Vec<u8>>)> {
        s.writes
            .range((table.to_owned(), prefix.to_owned())..)
            .take_while(|((t, k), _)| t == table && k.starts_with(prefix))
            .filter(|((_, k), _)| lo.is_none_or(|lo| k.as_str() > lo))
            .filter(|((_, k), _)| hi.is_none_or(|hi| k.as_str() <= hi))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Merges a page of stored rows with staged rows in the same key range (staged wins).
fn merge(
    stored: Vec<(String, Vec<u8>)>,
    staged: Vec<(String, Option<Vec<u8>>)>,
) -> Vec<(String, Vec<u8>)> {
    let mut all: BTreeMap<String, Option<Vec<u8>>> =
        stored.into_iter().map(|(k, v)| (k, Some(v))).collect();
    all.extend(staged);
    all.into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
}

impl Store for StagedStore {
    fn commit_applied(
        &self,
        changes: ChangeSet,
    ) -> idbridge_store::Result<(CommitReceipt, PendingSync)> {
        if !changes.expiring_puts.is_empty() || !changes.expiring_deletes.is_empty() {
            return Err(unsupported("an expiring entry"));
        }
        let mut s = self.lock();
        let mut carried = Vec::new();
        for c in &changes.conditions {
            if c.is_expiring() {
                return Err(unsupported("an expiring condition"));
            }
            let holds = match Self::staged_row(&s, c.table(), c.key()) {
                Some(v) => c.holds(v.as_deref(), None),
                None => {
                    carried.push(c.clone());
                    c.holds(self.inner.get(c.table(), c.key())?.as_deref(), None)
                }
            };
            if !holds {
                return Err(c.conflict());
            }
        }
        // Rows last among the checks: when they pass, the whole change set is staged.
        s.rows.stage(self.inner.as_ref(), changes.rows)?;
        s.conditions.extend(carried);
        for d in changes.deletes {
            s.writes.insert((d.table, d.key), None);
        }
        for p in changes.puts {
            s.writes.insert((p.table, p.key), Some(p.value));
        }
        s.events.extend(changes.events);
        Ok((CommitReceipt::default(), PendingSync::default()))
    }

    fn wait_durable(&self, _pending: PendingSync) -> idbridge_store::Result<()> {
        Ok(())
    }

    fn get(&self, table: &str, key: &str) -> idbridge_store::Result<Option<Vec<u8>>> {
        match Self::staged_row(&self.lock(), table, key) {
            Some(v) => Ok(v),
            None => self.inner.get(table, key),
        }
    }

    fn scan(
        &self,
        table: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> idbridge_store::Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut cursor = after.map(str::to_owned);
        loop {
            let rows = self.inner.scan(table, prefix, cursor.as_deref(), limit)?;
            let exhausted = rows.len() < limit;
            let upper = if exhausted {
                None
            } else {
                rows.last().map(|(k, _)| k.clone())
            };
            let staged = Self::staged_range(
                &self.lock(),
                table,
                prefix,
                cursor.as_deref(),
                upper.as_deref(),
            );
            out.extend(merge(rows, staged));
            if out.len() >= limit || exhausted {
                out.truncate(limit);
                return Ok(out);
            }
            cursor = upper;
        }
    }

    fn scan_rev(
        &self,
        table: &str,
        prefix: &str,
        before: Option<&str>,
        limit: usize,
    ) -> idbridge_store::Result<Vec<(String, Vec<u8>)>> {
        // Rare in a run: merge everything under the prefix, then page.
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.scan(table, prefix, after.as_deref(), 1000)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            all.extend(page);
        }
        Ok(all
            .into_iter()
            .rev()
            .filter(|(k, _)| before.is_none_or(|b| k.as_str() < b))
            .take(limit)
            .collect())
    }

    fn count_prefix(&self, table: &str, prefix: &str) -> idbridge_store::Result<u64> {
        let mut n = self.inner.count_prefix(table, prefix)?;
        let staged = Self::staged_range(&self.lock(), table, prefix, None, None);
        for (k, v) in staged {
            match (self.inner.get(table, &k)?.is_some(), v.is_some()) {
                (true, false) => n = n.saturating_sub(1),
                (false, true) => n += 1,
                _ => {}
            }
        }
        Ok(n)
    }

    fn events_after(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> idbridge_store::Result<Vec<StoredEvent>> {
        self.inner.events_after(after_seq, limit)
    }

    fn event_seq(&self, event_id: &str) -> idbridge_store::Result<Option<u64>> {
        self.inner.event_seq(event_id)
    }

    fn last_event_seq(&self) -> idbridge_store::Result<u64> {
        self.inner.last_event_seq()
    }

    fn compact_events_before(&self, _cutoff_ms: i64) -> idbridge_store::Result<u64> {
        Err(unsupported("compacting the event log"))
    }

    fn get_expiring(
        &self,
        _table: &str,
        _key: &str,
        _now_ms: i64,
    ) -> idbridge_store::Result<Option<Vec<u8>>> {
        Err(unsupported("an expiring entry"))
    }

    fn purge_expired(&self, _now_ms: i64) -> idbridge_store::Result<u64> {
        Err(unsupported("purging expiring entries"))
    }

    fn export(
        &self,
        _sink: &mut dyn FnMut(ExportRecord) -> idbridge_store::Result<()>,
    ) -> idbridge_store::Result<()> {
        Err(unsupported("export"))
    }

    fn import(
        &self,
        _records: &mut dyn Iterator<Item = idbridge_store::Result<ExportRecord>>,
    ) -> idbridge_store::Result<u64> {
        Err(unsupported("import"))
    }

    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }

    fn migrate_owner(&self, schema: &OwnerSchema) -> idbridge_store::Result<i64> {
        self.inner.migrate_owner(schema)
    }

    fn get_row(&self, table: &TableDef, key: &[RowValue]) -> idbridge_store::Result<Option<Row>> {
        self.lock().rows.get_row(self.inner.as_ref(), table, key)
    }

    fn find_unique(
        &self,
        table: &TableDef,
        index: &str,
        values: &[RowValue],
    ) -> idbridge_store::Result<Option<Row>> {
        self.lock()
            .rows
            .find_unique(self.inner.as_ref(), table, index, values)
    }

    fn scan_index(
        &self,
        table: &TableDef,
        index: &str,
        prefix: &[RowValue],
        after: Option<&[RowValue]>,
        limit: usize,
    ) -> idbridge_store::Result<Vec<Row>> {
        let s = self.lock();
        s.rows.scan(
            self.inner.as_ref(),
            table,
            index,
            prefix,
            after,
            limit,
            false,
        )
    }

    fn scan_index_rev(
        &self,
        table: &TableDef,
        index: &str,
        prefix: &[RowValue],
        before: Option<&[RowValue]>,
        limit: usize,
    ) -> idbridge_store::Result<Vec<Row>> {
        let s = self.lock();
        s.rows.scan(
            self.inner.as_ref(),
            table,
            index,
            prefix,
            before,
            limit,
            true,
        )
    }

    fn count_index(
        &self,
        table: &TableDef,
        index: &str,
        prefix: &[RowValue],
    ) -> idbridge_store::Result<u64> {
        self.lock()
            .rows
            .count(self.inner.as_ref(), table, index, prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idbridge_store::{ConflictKind, SqliteStore};

    fn put(store: &dyn Store, k: &str, v: &str) {
        let mut cs = ChangeSet::new();
        cs.put("t", k, v.as_bytes().to_vec());
        store.commit(cs).unwrap();
    }

    fn keys(rows: Vec<(String, Vec<u8>)>) -> Vec<String> {
        rows.into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn reads_see_staged_writes_and_the_real_store_sees_nothing_until_taken() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        for k in ["a1", "a2", "a3", "a5", "b1"] {
            put(inner.as_ref(), k, "old");
        }
        let staged = StagedStore::new(inner.clone());
        let mut cs = ChangeSet::new();
        cs.require_equals("t", "a2", Some(b"old".to_vec()))
            .put("t", "a2", b"new".to_vec())
            .put("t", "a4", b"new".to_vec())
            .delete("t", "a3");
        staged.commit(cs).unwrap();
        // A second commit's condition on a staged row is checked against the staged value.
        let mut cs = ChangeSet::new();
        cs.require_equals("t", "a2", Some(b"new".to_vec()))
            .require_absent("t", "a3");
        staged.commit(cs).unwrap();
        let mut stale = ChangeSet::new();
        stale.require_equals("t", "a2", Some(b"old".to_vec()));
        assert!(staged.commit(stale).is_err());

        assert_eq!(staged.get("t", "a2").unwrap(), Some(b"new".to_vec()));
        assert_eq!(staged.get("t", "a3").unwrap(), None);
        assert_eq!(inner.get("t", "a3").unwrap(), Some(b"old".to_vec()));
        for limit in 1..6 {
            let mut after = None;
            let mut seen = Vec::new();
            loop {
                let page = staged.scan("t", "a", after.as_deref(), limit).unwrap();
                if page.is_empty() {
                    break;
                }
                after = page.last().map(|(k, _)| k.clone());
                seen.extend(keys(page));
            }
            assert_eq!(seen, ["a1", "a2", "a4", "a5"], "page size {limit}");
        }
        assert_eq!(
            keys(staged.scan_rev("t", "a", Some("a5"), 2).unwrap()),
            ["a4", "a2"]
        );
        assert_eq!(staged.count_prefix("t", "a").unwrap(), 4);

        let commits_before = inner.stats().commits;
        let cs = staged.take();
        assert_eq!(
            cs.conditions.len(),
            1,
            "only the condition on an untouched row"
        );
        inner.commit(cs).unwrap();
        assert_eq!(inner.stats().commits, commits_before + 1);
        assert_eq!(
            keys(inner.scan("t", "a", None, 10).unwrap()),
            ["a1", "a2", "a4", "a5"]
        );
    }

    static T: TableDef = TableDef {
        name: "staged_rows",
        columns: &[
            idbridge_store::Column::text("g"),
            idbridge_store::Column::text("u"),
            idbridge_store::Column::text("email").nullable(),
            idbridge_store::Column::integer("version"),
        ],
        primary_key: &["g", "u"],
        indexes: &[
            idbridge_store::IndexDef {
                name: "staged_rows_by_u",
                terms: &["u", "g"],
                unique: false,
                partial: None,
            },
            idbridge_store::IndexDef {
                name: "staged_rows_by_email",
                terms: &["lower(email)"],
                unique: true,
                partial: Some("email IS NOT NULL"),
            },
        ],
        version_column: Some("version"),
        without_rowid: true,
    };
    static SCHEMA: OwnerSchema = OwnerSchema {
        owner: "staged_test",
        migrations: &[idbridge_store::OwnerMigration {
            version: 1,
            description: "test",
            create: &[&T],
            sql: "",
        }],
    };

    fn row(g: &str, u: &str, email: Option<&str>) -> Vec<RowValue> {
        vec![g.into(), u.into(), email.into(), 0.into()]
    }

    fn pairs(rows: Vec<Row>) -> Vec<String> {
        rows.into_iter()
            .map(|r| {
                format!(
                    "{}{}",
                    r.values[0].as_text().unwrap(),
                    r.values[1].as_text().unwrap()
                )
            })
            .collect()
    }

    /// Every page of `index` under `prefix`, forwards and backwards, at each page size.
    fn walk(store: &dyn Store, index: &str, prefix: &[RowValue], rev: bool) -> Vec<Vec<String>> {
        (1..6)
            .map(|limit| {
                let mut seen = Vec::new();
                let mut bound: Option<Vec<RowValue>> = None;
                loop {
                    let page = match rev {
                        false => store.scan_index(&T, index, prefix, bound.as_deref(), limit),
                        true => store.scan_index_rev(&T, index, prefix, bound.as_deref(), limit),
                    }
                    .unwrap();
                    let Some(last) = page.last() else { break };
                    // The order columns after the prefix (primary: g, u; by_u: u, g).
                    let order: Vec<RowValue> = match index {
                        "primary" => vec![last.values[0].clone(), last.values[1].clone()],
                        _ => vec![last.values[1].clone(), last.values[0].clone()],
                    };
                    bound = Some(order[prefix.len()..].to_vec());
                    seen.extend(pairs(page));
                }
                seen
            })
            .collect()
    }

    #[test]
    fn typed_rows_are_staged_read_back_merged_and_committed_in_one_change_set() {
        let inner: Arc<dyn Store> = Arc::new(SqliteStore::open_ephemeral().unwrap());
        inner.migrate_owner(&SCHEMA).unwrap();
        let mut cs = ChangeSet::new();
        for (g, u, e) in [
            ("a", "1", Some("X@a")),
            ("a", "3", None),
            ("a", "5", None),
            ("b", "1", None),
            ("b", "2", Some("w@a")),
        ] {
            cs.insert_row(&T, row(g, u, e));
        }
        inner.commit(cs).unwrap();
        let staged = StagedStore::new(inner.clone());
        let mut cs = ChangeSet::new();
        cs.upsert_row(&T, row("a", "2", Some("y@a")))
            .upsert_row(&T, row("a", "4", None))
            .delete_row(&T, vec!["a".into(), "3".into()])
            .update_row(&T, row("a", "1", None), Some(1));
        staged.commit(cs).unwrap();

        // Reads merge the staged rows with the store's (staged wins; deleted rows are gone).
        assert_eq!(
            staged
                .get_row(&T, &["a".into(), "1".into()])
                .unwrap()
                .unwrap()
                .values,
            vec!["a".into(), "1".into(), RowValue::Null, 2.into()],
            "an update bumps the version"
        );
        assert!(staged
            .get_row(&T, &["a".into(), "3".into()])
            .unwrap()
            .is_none());
        assert!(inner
            .get_row(&T, &["a".into(), "3".into()])
            .unwrap()
            .is_some());
        for pages in walk(&staged, "primary", &["a".into()], false) {
            assert_eq!(pages, ["a1", "a2", "a4", "a5"]);
        }
        for pages in walk(&staged, "primary", &["a".into()], true) {
            assert_eq!(pages, ["a5", "a4", "a2", "a1"]);
        }
        for pages in walk(&staged, "staged_rows_by_u", &["1".into()], false) {
            assert_eq!(pages, ["a1", "b1"]);
        }
        for pages in walk(&staged, "primary", &[], false) {
            assert_eq!(pages, ["a1", "a2", "a4", "a5", "b1", "b2"]);
        }
        assert_eq!(staged.count_index(&T, "primary", &["a".into()]).unwrap(), 4);
        assert_eq!(
            staged
                .count_index(&T, "staged_rows_by_u", &["1".into()])
                .unwrap(),
            2
        );
        // The unique email index: the stored X@a was cleared by the staged update; y@a is staged.
        let by_email = |e: &str| {
            staged
                .find_unique(&T, "staged_rows_by_email", &[e.into()])
                .unwrap()
        };
        assert!(by_email("x@a").is_none());
        assert_eq!(pairs(by_email("y@a").into_iter().collect()), ["a2"]);

        // Conflicts are checked against staged and stored rows, and stage nothing.
        let ops = staged.ops();
        for (cs, kind) in [
            (
                ChangeSet::new().insert_row(&T, row("a", "2", None)).clone(),
                ConflictKind::Exists,
            ),
            (
                ChangeSet::new().insert_row(&T, row("a", "5", None)).clone(),
                ConflictKind::Exists,
            ),
            (
                ChangeSet::new()
                    .update_row(&T, row("a", "3", None), None)
                    .clone(),
                ConflictKind::Missing,
            ),
            (
                ChangeSet::new()
                    .update_row(&T, row("a", "1", None), Some(1))
                    .clone(),
                ConflictKind::Changed,
            ),
            // A unique value held by a staged row, by a stored row, by two rows of one
            // change set.
            (
                ChangeSet::new()
                    .upsert_row(&T, row("c", "1", Some("Y@A")))
                    .clone(),
                ConflictKind::Exists,
            ),
            (
                ChangeSet::new()
                    .upsert_row(&T, row("c", "1", Some("W@a")))
                    .clone(),
                ConflictKind::Exists,
            ),
            (
                ChangeSet::new()
                    .upsert_row(&T, row("c", "2", Some("z@a")))
                    .upsert_row(&T, row("c", "3", Some("Z@a")))
                    .clone(),
                ConflictKind::Exists,
            ),
        ] {
            let mut cs = cs;
            cs.put("t", "k", b"v".to_vec());
            let e = staged.commit(cs).unwrap_err();
            assert_eq!(e.conflict_on().map(|c| c.1), Some(kind), "{e}");
            assert_eq!(
                staged.ops(),
                ops,
                "nothing of a refused change set is staged"
            );
        }

        let cs = staged.take();
        assert_eq!(cs.rows.len(), 4, "the row writes, in order");
        inner.commit(cs).unwrap();
        for pages in walk(inner.as_ref(), "primary", &["a".into()], false) {
            assert_eq!(pages, ["a1", "a2", "a4", "a5"]);
        }
        assert_eq!(
            inner
                .get_row(&T, &["a".into(), "1".into()])
                .unwrap()
                .unwrap()
                .version(&T),
            2
        );
        assert_eq!(staged.ops(), 0);
    }

    #[test]
    fn a_condition_carried_from_the_run_fails_the_real_commit_after_an_outside_write() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        put(inner.as_ref(), "k", "v1");
        let staged = StagedStore::new(inner.clone());
        let mut cs = ChangeSet::new();
        cs.require_equals("t", "k", Some(b"v1".to_vec()))
            .put("t", "k", b"mine".to_vec());
        staged.commit(cs).unwrap();
        put(inner.as_ref(), "k", "theirs");
        assert!(inner.commit(staged.take()).is_err());
        assert_eq!(inner.get("t", "k").unwrap(), Some(b"theirs".to_vec()));
    }
}
