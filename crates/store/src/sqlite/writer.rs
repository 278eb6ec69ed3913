//! The one writer thread: queued change sets, one SAVEPOINT each, one COMMIT per batch.
//!
//! Callers queue a [`Job`] and block on its reply. The thread takes every job already queued
//! (up to [`MAX_BATCH`]), opens one `BEGIN IMMEDIATE` transaction, applies each change set
//! inside its own `SAVEPOINT` — a failed condition rolls back only that savepoint and fails
//! only its caller — and then COMMITs once. The connection runs `synchronous=NORMAL`, so that
//! COMMIT writes the WAL frames without syncing them: the thread then gives each change set a
//! group-commit ticket and answers "applied" at once. Durability is the callers' next step
//! ([`crate::Store::wait_durable`]): a group `fdatasync` of the `-wal` file ([`super::wal`])
//! that started after the COMMIT, shared by every commit before it — while the thread already
//! applies the next batch.
//!
//! A failed COMMIT (or a failed sync) poisons the store: after a failed write or fsync the
//! kernel may have dropped the dirty pages, so later "successes" could be lies.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use super::schema::{self, quoted, sql_name};
use crate::durability::GroupCommit;
use crate::error::{ConflictKind, Result, StoreError, EVENT_LOG};
use crate::types::{ChangeSet, CommitReceipt, StoreStats};

/// Most change sets one COMMIT covers (bounds the latency a batch adds to its first caller).
const MAX_BATCH: usize = 1024;

/// A commit's answer: its receipt and its group-commit ticket (None when it wrote nothing).
pub(crate) type CommitReply = Result<(CommitReceipt, Option<u64>)>;

/// Work for the writer thread.
pub(crate) enum Job {
    /// Apply a change set in the next batch.
    Commit {
        changes: ChangeSet,
        reply: SyncSender<CommitReply>,
    },
    /// Run alone, between batches (compaction, purge, import): the closure opens its own
    /// transaction with [`Writer::write_tx`] and sends its own reply.
    Exclusive(Box<dyn FnOnce(&mut Writer) + Send>),
}

/// State shared by the writer, the store handle and the checkpointer.
#[derive(Default)]
pub(crate) struct Shared {
    /// SQL names of the store tables known to exist in committed state.
    pub(crate) known_tables: RwLock<HashSet<String>>,
    pub(crate) commits: AtomicU64,
    pub(crate) conflicts: AtomicU64,
    busy_nanos: AtomicU64,
    pub(crate) checkpoints: AtomicU64,
    pub(crate) slowest_checkpoint_micros: AtomicU64,
    slowest_batch_micros: AtomicU64,
}

impl Shared {
    pub(crate) fn fill_stats(&self, stats: &mut StoreStats) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        stats.commits = load(&self.commits);
        stats.conflicts = load(&self.conflicts);
        stats.apply_nanos = load(&self.busy_nanos);
        stats.checkpoints = load(&self.checkpoints);
        stats.slowest_checkpoint_micros = load(&self.slowest_checkpoint_micros);
        stats.slowest_batch_micros = load(&self.slowest_batch_micros);
    }

    fn table_known(&self, name: &str) -> bool {
        self.known_tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }
}

/// The writer thread's connection and bookkeeping.
pub(crate) struct Writer {
    pub(crate) conn: Connection,
    pub(crate) shared: Arc<Shared>,
    group: Arc<GroupCommit>,
}

fn sql_err(context: &str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::backend(context, e)
}

/// A change set that applied inside its savepoint and waits for the batch's COMMIT.
struct Applied {
    reply: SyncSender<CommitReply>,
    receipt: CommitReceipt,
    /// Whether it wrote anything (then it needs a ticket).
    wrote: bool,
    /// The event log's last seq once it applied.
    last_seq: u64,
}

impl Writer {
    pub(crate) fn new(conn: Connection, shared: Arc<Shared>, group: Arc<GroupCommit>) -> Self {
        Writer {
            conn,
            shared,
            group,
        }
    }

    /// The thread's loop: until every sender is gone.
    pub(crate) fn run(mut self, jobs: Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            let mut batch = Vec::new();
            let mut exclusive = None;
            match first {
                Job::Commit { changes, reply } => batch.push((changes, reply)),
                Job::Exclusive(f) => exclusive = Some(f),
            }
            while exclusive.is_none() && batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(Job::Commit { changes, reply }) => batch.push((changes, reply)),
                    Ok(Job::Exclusive(f)) => exclusive = Some(f),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                let started = Instant::now();
                self.commit_batch(batch);
                self.add_busy(started);
            }
            if let Some(f) = exclusive {
                let started = Instant::now();
                f(&mut self);
                self.add_busy(started);
            }
        }
        // Last connection closing checkpoints the WAL into the database file.
        tracing::debug!("store writer stopped");
    }

    fn add_busy(&self, since: Instant) {
        let nanos = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.shared.busy_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.shared
            .slowest_batch_micros
            .fetch_max(nanos / 1000, Ordering::Relaxed);
    }

    /// COMMITs the open transaction (under `synchronous=NORMAL`: written, visible, not yet
    /// synced). A failure poisons the store when the transaction wrote (`wrote`): what reached
    /// the WAL is unknown.
    fn commit(&mut self, wrote: bool) -> Result<()> {
        let outcome = self.conn.execute_batch("COMMIT").map_err(sql_err("COMMIT"));
        if let Err(e) = outcome {
            if !self.conn.is_autocommit() {
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            if wrote {
                self.group.poison(&e.to_string());
            }
            return Err(e);
        }
        Ok(())
    }

    fn begin(&self) -> Result<()> {
        self.group.check_writable()?;
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(sql_err("BEGIN IMMEDIATE"))
    }

    fn commit_batch(&mut self, batch: Vec<(ChangeSet, SyncSender<CommitReply>)>) {
        let _span = tracing::debug_span!("store.batch", size = batch.len()).entered();
        let fail_all = |jobs: Vec<SyncSender<CommitReply>>, e: &StoreError| {
            for reply in jobs {
                let _ = reply.send(Err(StoreError::Backend(e.to_string())));
            }
        };
        if let Err(e) = self.begin() {
            fail_all(batch.into_iter().map(|(_, r)| r).collect(), &e);
            return;
        }
        let mut last_seq = match schema::last_seq(&self.conn) {
            Ok(s) => s,
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                fail_all(batch.into_iter().map(|(_, r)| r).collect(), &e);
                return;
            }
        };
        let start_seq = last_seq;
        let mut applied: Vec<Applied> = Vec::with_capacity(batch.len());
        let mut created: Vec<String> = Vec::new();
        let mut rest = batch.into_iter();
        while let Some((changes, reply)) = rest.next() {
            let mut mine = Vec::new();
            let outcome = run_cached(&self.conn, "SAVEPOINT change_set")
                .map_err(sql_err("SAVEPOINT"))
                .and_then(|()| apply(&self.conn, &self.shared, &changes, last_seq, &mut mine));
            match outcome {
                Ok(n_events) => {
                    if let Err(e) =
                        run_cached(&self.conn, "RELEASE change_set").map_err(sql_err("RELEASE"))
                    {
                        let _ = reply.send(Err(StoreError::Backend(e.to_string())));
                        self.abandon(applied, rest, &e);
                        return;
                    }
                    let receipt = CommitReceipt {
                        event_seqs: (last_seq + 1..=last_seq + n_events).collect(),
                    };
                    last_seq += n_events;
                    created.extend(mine);
                    applied.push(Applied {
                        reply,
                        receipt,
                        wrote: changes.has_writes(),
                        last_seq,
                    });
                }
                Err(e) => {
                    if self.conn.is_autocommit() {
                        // SQLite rolled the whole transaction back (I/O error, full disk).
                        let _ = reply.send(Err(e.clone_text()));
                        self.abandon(applied, rest, &e);
                        return;
                    }
                    let undo = run_cached(&self.conn, "ROLLBACK TO change_set")
                        .and_then(|()| run_cached(&self.conn, "RELEASE change_set"));
                    if matches!(e, StoreError::Conflict { .. }) {
                        self.shared.conflicts.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = reply.send(Err(e));
                    if let Err(u) = undo {
                        let u = StoreError::backend("ROLLBACK TO", u);
                        self.abandon(applied, rest, &u);
                        return;
                    }
                }
            }
        }
        if last_seq != start_seq {
            if let Err(e) = schema::set_last_seq(&self.conn, last_seq) {
                let _ = self.conn.execute_batch("ROLLBACK");
                fail_all(applied.into_iter().map(|a| a.reply).collect(), &e);
                return;
            }
        }
        let wrote = applied.iter().any(|a| a.wrote);
        if let Err(e) = self.commit(wrote) {
            fail_all(applied.into_iter().map(|a| a.reply).collect(), &e);
            return;
        }
        if !created.is_empty() {
            let mut known = self
                .shared
                .known_tables
                .write()
                .unwrap_or_else(|p| p.into_inner());
            known.extend(created);
        }
        // Tickets only now: a sync round covers a ticket only if it started after the COMMIT
        // that wrote the change set's frames. All of the batch's tickets before the first
        // reply: the first caller to lead a round then covers the whole batch.
        let replies: Vec<(SyncSender<CommitReply>, CommitReply)> = applied
            .into_iter()
            .map(|a| {
                let reply = match a.wrote {
                    true => self
                        .group
                        .record_applied(a.last_seq)
                        .map(|ticket| (a.receipt, Some(ticket))),
                    false => Ok((a.receipt, None)),
                };
                (a.reply, reply)
            })
            .collect();
        for (to, reply) in replies {
            self.shared.commits.fetch_add(1, Ordering::Relaxed);
            let _ = to.send(reply);
        }
    }

    /// The transaction is lost: fails every applied and every not yet started change set.
    fn abandon(
        &mut self,
        applied: Vec<Applied>,
        rest: impl Iterator<Item = (ChangeSet, SyncSender<CommitReply>)>,
        e: &StoreError,
    ) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        let replies = applied
            .into_iter()
            .map(|a| a.reply)
            .chain(rest.map(|(_, r)| r));
        for reply in replies {
            let _ = reply.send(Err(StoreError::Backend(format!(
                "the batch this write was in failed: {e}"
            ))));
        }
    }

    /// Runs `f` in its own IMMEDIATE transaction, commits it and waits until it is durable
    /// (`f` returns its result and whether it wrote anything). Rare bulk jobs (compaction,
    /// purge, import), so the writer thread waits for the sync itself.
    pub(crate) fn write_tx<T>(
        &mut self,
        f: impl FnOnce(&Connection) -> Result<(T, bool)>,
    ) -> Result<T> {
        self.begin()?;
        let (value, wrote) = match f(&self.conn) {
            Ok(v) => v,
            Err(e) => {
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                return Err(e);
            }
        };
        self.commit(wrote)?;
        if wrote {
            let last_seq = schema::last_seq(&self.conn)?;
            let ticket = self.group.record_applied(last_seq)?;
            self.group.wait_durable(ticket)?;
        }
        Ok(value)
    }
}

impl StoreError {
    /// A copy of this error for a second recipient (the text is kept, the kind where it can be).
    fn clone_text(&self) -> StoreError {
        match self {
            StoreError::Conflict { table, key, kind } => StoreError::conflict(table, key, *kind),
            other => StoreError::Backend(other.to_string()),
        }
    }
}

/// Runs one statement through the statement cache (the per-change-set SAVEPOINT / RELEASE
/// are parsed once, not once per change set).
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Creates the SQL table `name` unless it exists; records it in `created` when it did not.
fn ensure_table(
    conn: &Connection,
    shared: &Shared,
    name: &str,
    created: &mut Vec<String>,
) -> Result<()> {
    if shared.table_known(name) || created.iter().any(|c| c == name) {
        return Ok(());
    }
    if !schema::table_exists(conn, name)? {
        conn.execute_batch(&schema::create_table_sql(name))
            .map_err(|e| StoreError::backend(&format!("creating table {name}"), e))?;
    }
    created.push(name.to_owned());
    Ok(())
}

fn exists(conn: &Connection, shared: &Shared, name: &str) -> Result<bool> {
    Ok(shared.table_known(name) || schema::table_exists(conn, name)?)
}

/// Applies one change set (inside its savepoint); returns how many events it appended.
fn apply(
    conn: &Connection,
    shared: &Shared,
    cs: &ChangeSet,
    last_seq: u64,
    created: &mut Vec<String>,
) -> Result<u64> {
    for cond in &cs.conditions {
        let name = sql_name(cond.is_expiring(), cond.table());
        let (current, expiry) = if exists(conn, shared, &name)? {
            read_entry(conn, &name, cond.key(), cond.is_expiring())?
        } else {
            (None, None)
        };
        if !cond.holds(current.as_deref(), expiry) {
            return Err(cond.conflict());
        }
    }
    for d in &cs.deletes {
        let name = sql_name(false, &d.table);
        if exists(conn, shared, &name)? {
            delete_key(conn, &name, &d.key)?;
        }
    }
    for p in &cs.puts {
        let name = sql_name(false, &p.table);
        ensure_table(conn, shared, &name, created)?;
        conn.prepare_cached(&format!(
            "INSERT OR REPLACE INTO {} (key, value) VALUES (?1, ?2)",
            quoted(&name)
        ))
        .and_then(|mut s| s.execute(params![p.key, p.value]))
        .map_err(sql_err("put"))?;
    }
    for row in &cs.rows {
        super::rows::apply_row(conn, row)?;
    }
    for d in &cs.expiring_deletes {
        let name = sql_name(true, &d.table);
        if exists(conn, shared, &name)? {
            delete_key(conn, &name, &d.key)?;
        }
    }
    for p in &cs.expiring_puts {
        let name = sql_name(true, &p.table);
        ensure_table(conn, shared, &name, created)?;
        conn.prepare_cached(&format!(
            "INSERT OR REPLACE INTO {} (key, value, expires_at) VALUES (?1, ?2, ?3)",
            quoted(&name)
        ))
        .and_then(|mut s| s.execute(params![p.key, p.value, p.expires_at_ms]))
        .map_err(sql_err("expiring put"))?;
    }
    let mut seq = last_seq;
    for e in &cs.events {
        seq += 1;
        insert_event(
            conn,
            seq,
            &e.id,
            &e.kind,
            e.organization_id.as_deref(),
            e.created_at_ms,
            &e.body,
        )?;
    }
    Ok(seq - last_seq)
}

/// Appends one event row; a reused id is [`ConflictKind::DuplicateEventId`].
pub(crate) fn insert_event(
    conn: &Connection,
    seq: u64,
    id: &str,
    kind: &str,
    organization_id: Option<&str>,
    created_at_ms: i64,
    body: &[u8],
) -> Result<()> {
    let seq = i64::try_from(seq).map_err(|_| StoreError::corrupt(EVENT_LOG, "seq overflow"))?;
    let outcome = conn
        .prepare_cached(
            "INSERT INTO events (seq, id, kind, organization_id, created_at_ms, body) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut s| s.execute(params![seq, id, kind, organization_id, created_at_ms, body]));
    match outcome {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(f, _))
            if f.code == ErrorCode::ConstraintViolation
                && f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
        {
            Err(StoreError::conflict(
                EVENT_LOG,
                id,
                ConflictKind::DuplicateEventId,
            ))
        }
        Err(e) => Err(StoreError::backend("appending an event", e)),
    }
}

fn delete_key(conn: &Connection, name: &str, key: &str) -> Result<()> {
    conn.prepare_cached(&format!("DELETE FROM {} WHERE key = ?1", quoted(name)))
        .and_then(|mut s| s.execute([key]))
        .map(|_| ())
        .map_err(sql_err("delete"))
}

/// The value (and, for an expiring table, the expiry) under `key` of SQL table `name`.
pub(crate) fn read_entry(
    conn: &Connection,
    name: &str,
    key: &str,
    expiring: bool,
) -> Result<(Option<Vec<u8>>, Option<i64>)> {
    let q = quoted(name);
    if expiring {
        let row: Option<(Vec<u8>, i64)> = conn
            .prepare_cached(&format!("SELECT value, expires_at FROM {q} WHERE key = ?1"))
            .and_then(|mut s| {
                s.query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(sql_err("get"))?;
        Ok(match row {
            Some((v, exp)) => (Some(v), Some(exp)),
            None => (None, None),
        })
    } else {
        let v: Option<Vec<u8>> = conn
            .prepare_cached(&format!("SELECT value FROM {q} WHERE key = ?1"))
            .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
            .map_err(sql_err("get"))?;
        Ok((v, None))
    }
}
