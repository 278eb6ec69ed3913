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
    ChangeSet, CommitReceipt, Condition, ExportRecord, NewEvent, PendingSync, Store, StoreError,
    StoreStats, StoredEvent,
};

type Key = (String, String);

#[derive(Default)]
struct Staged {
    /// Final value per row written by the run (`None`: deleted).
    writes: BTreeMap<Key, Option<Vec<u8>>>,
    /// Conditions on rows the run had not written when they were checked.
    conditions: Vec<Condition>,
    events: Vec<NewEvent>,
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
        s.writes.len() + s.events.len()
    }

    /// Takes everything staged as one change set (and starts empty again).
    pub(crate) fn take(&self) -> ChangeSet {
        let s = std::mem::take(&mut *self.lock());
        let mut cs = ChangeSet::new();
        cs.conditions = s.conditions;
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
        // Typed rows are not staged (yet): refused rather than dropped from the final commit.
        if !changes.rows.is_empty() {
            return Err(unsupported("a typed row write"));
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use idbridge_store::SqliteStore;

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

    #[test]
    fn a_typed_row_write_is_refused_not_dropped() {
        static T: idbridge_store::TableDef = idbridge_store::TableDef {
            name: "staged_rows",
            columns: &[idbridge_store::Column::text("id")],
            primary_key: &["id"],
            indexes: &[],
            version_column: None,
            without_rowid: true,
        };
        let inner: Arc<dyn Store> = Arc::new(SqliteStore::open_ephemeral().unwrap());
        let staged = StagedStore::new(inner);
        let mut cs = ChangeSet::new();
        cs.put("t", "k", b"v".to_vec())
            .insert_row(&T, vec!["a".into()]);
        let e = staged.commit(cs).unwrap_err().to_string();
        assert!(e.contains("typed row"), "{e}");
        assert_eq!(
            staged.ops(),
            0,
            "nothing of the refused change set is staged"
        );
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
