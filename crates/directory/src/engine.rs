//! The engine handle, its transaction helper and directory lifecycle (create, tokens, delete).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};

use idbridge_model::tag::DirectoryTag;
use idbridge_model::{
    new_id, parse_id, Directory, DirectoryMetadata, DirectoryState, Event, EventKind, IdPrefix,
    Organization, Timestamp, UserCounts,
};
use idbridge_secrets::{random_alphanumeric, sha256_hex};
use idbridge_store::{ChangeSet, ConflictKind, PendingSync, Store, StoreError};
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::error::{Constraint, EngineError, Result};
use crate::layout;
use crate::organizations::Organizations;
use crate::types::{Counts, DirectoryRecord, DirectorySettings, Page, PageRequest, ScimAuth};

/// Default largest number of writes (puts + deletes + events) the engine puts in one commit.
/// Runs that need more (big snapshots, deleting a big directory) are split; see those methods
/// and [`DirectoryEngine::with_commit_limit`]. Sized by memory, not speed: a sled transaction
/// holds its whole write set (measured: ~20 MB per 1,000 ops of a CSV snapshot), and commits of
/// 2,000 and 20,000 ops load a snapshot equally fast.
pub const MAX_COMMIT_OPS: usize = 4_000;

/// Turns directory-feed changes into users, groups, memberships and roles, each change one
/// atomic store commit carrying its `dsync.*` events.
///
/// All methods block (async callers use `spawn_blocking`). Writes to one directory are
/// serialized by an in-process lock, so each read-diff-write sees the state it writes over; the
/// commits also carry store conditions (counters, replaced records, unique slots), so a second
/// process writing the same store gets `Conflict` rather than a lost update.
pub struct DirectoryEngine {
    pub(crate) store: Arc<dyn Store>,
    /// Organizations are not the engine's; their owner answers through this.
    pub(crate) orgs: Arc<dyn Organizations>,
    pub(crate) max_ops: usize,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Set once the engine's typed tables are migrated (see `memberships.rs`).
    pub(crate) tables_ready: AtomicBool,
}

impl std::fmt::Debug for DirectoryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectoryEngine").finish_non_exhaustive()
    }
}

/// Serializes for the store; a failure here is a bug in our own types, reported as a store error.
pub(crate) fn to_bytes<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v)
        .map_err(|e| EngineError::Store(StoreError::Backend(format!("serializing: {e}"))))
}

pub(crate) fn to_value<T: Serialize + ?Sized>(v: &T) -> Result<Value> {
    serde_json::to_value(v)
        .map_err(|e| EngineError::Store(StoreError::Backend(format!("serializing: {e}"))))
}

pub(crate) fn from_bytes<T: DeserializeOwned>(table: &str, key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| EngineError::corrupt(table, key, e))
}

/// `created_at` from the id's ULID, so key order is list order (as organizations do).
pub(crate) fn created_at_of(prefix: IdPrefix, id: &str) -> Timestamp {
    parse_id(prefix, id)
        .map(|u| Timestamp::from_millis(i64::try_from(u.timestamp_ms()).unwrap_or(i64::MAX)))
        .unwrap_or_else(|_| Timestamp::now())
}

fn is_scim_type(directory_type: &str) -> bool {
    directory_type.to_ascii_lowercase().contains("scim")
}

fn new_scim_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// One commit being built: the change set, its events, and the directory's counters.
pub(crate) struct Tx {
    pub rec: DirectoryRecord,
    pub cs: ChangeSet,
    pub events: Vec<Event>,
    pub event_count: u64,
    pub counts: Counts,
    counts_before: Counts,
    counts_bytes: Option<Vec<u8>>,
    pub now: Timestamp,
    /// A successful contact with the source even if nothing changed: activates the directory.
    pub contact: bool,
    /// Unique slots claimed in this commit (`table\0key`): a second claim is a conflict.
    pub claimed: HashSet<String>,
    /// Big snapshot runs keep only the count; the bodies are in the log.
    keep_events: bool,
    /// Id for a record this commit creates, chosen by the caller (SCIM: the id doubles as the
    /// `idp_id` fallback, so it must be known before the write).
    pub preset_id: Option<String>,
}

impl Tx {
    /// Appends an event (same commit as the change it describes: the log is the outbox).
    pub fn emit(&mut self, kind: EventKind, data: Value) {
        let event = Event::at(kind, data, self.now);
        self.cs
            .append_event(&event, Some(&self.rec.directory.organization_id));
        self.event_count += 1;
        if self.keep_events {
            self.events.push(event);
        }
    }

    /// [`Tx::emit`] for data that is a serializable struct: a run that does not keep event
    /// objects (big snapshots) writes the body straight from `data`, never building a
    /// `serde_json::Value` tree (the same bytes: `Value` maps keep field order).
    pub fn emit_with<T: Serialize>(&mut self, kind: EventKind, data: &T) -> Result<()> {
        if self.keep_events {
            self.emit(kind, to_value(data)?);
            return Ok(());
        }
        let event = Event::at(kind, data, self.now);
        self.cs
            .append_event(&event, Some(&self.rec.directory.organization_id));
        self.event_count += 1;
        Ok(())
    }

    pub fn dir_id(&self) -> &str {
        &self.rec.directory.id
    }

    pub fn ops(&self) -> usize {
        self.cs.puts.len() + self.cs.deletes.len() + self.cs.rows.len() + self.cs.events.len()
    }
}

impl DirectoryEngine {
    /// An engine over `store`, reading organizations through `orgs` (their owner). Its typed
    /// tables are migrated the first time it needs them; [`DirectoryEngine::open`] does it
    /// at once (the server: at start, not inside the first request).
    pub fn new(store: Arc<dyn Store>, orgs: Arc<dyn Organizations>) -> Self {
        DirectoryEngine {
            store,
            orgs,
            max_ops: MAX_COMMIT_OPS,
            locks: Mutex::new(HashMap::new()),
            tables_ready: AtomicBool::new(false),
        }
    }

    /// [`DirectoryEngine::new`], then creates or migrates the engine's typed tables and moves
    /// data an earlier build kept in key-value tables (see `memberships.rs`).
    pub fn open(store: Arc<dyn Store>, orgs: Arc<dyn Organizations>) -> Result<Self> {
        let engine = Self::new(store, orgs);
        engine.ensure_tables()?;
        Ok(engine)
    }

    /// Sets the commit-size limit (minimum 1); lower it to keep big runs' commits small, or
    /// raise it to make more snapshots all-or-nothing at the cost of memory per commit.
    pub fn with_commit_limit(mut self, max_ops: usize) -> Self {
        self.max_ops = max_ops.max(1);
        self
    }

    /// The store this engine writes to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub(crate) fn dir_lock(&self, dir_id: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks
            .entry(dir_id.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(())))
            .clone()
    }

    pub(crate) fn guard(lock: &Mutex<()>) -> MutexGuard<'_, ()> {
        lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get_raw(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.store.get(table, key)?)
    }

    pub(crate) fn get_json<T: DeserializeOwned>(
        &self,
        table: &str,
        key: &str,
    ) -> Result<Option<T>> {
        match self.store.get(table, key)? {
            Some(bytes) => Ok(Some(from_bytes(table, key, &bytes)?)),
            None => Ok(None),
        }
    }

    pub(crate) fn get_string(&self, table: &str, key: &str) -> Result<Option<String>> {
        Ok(self
            .store
            .get(table, key)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Calls `f(key, value)` for every row under `prefix` in key order, reading in pages so
    /// memory stays bounded however big the table is.
    pub(crate) fn for_each_row(
        &self,
        table: &str,
        prefix: &str,
        mut f: impl FnMut(&str, &[u8]) -> Result<()>,
    ) -> Result<()> {
        const PAGE: usize = 1000;
        let mut after: Option<String> = None;
        loop {
            let rows = self.store.scan(table, prefix, after.as_deref(), PAGE)?;
            for (k, v) in &rows {
                f(k, v)?;
            }
            match rows.into_iter().last() {
                Some((k, _)) => after = Some(k),
                None => return Ok(()),
            }
        }
    }

    /// Starts a commit for a directory that must exist and not be being deleted.
    pub(crate) fn begin(&self, dir_id: &str) -> Result<Tx> {
        // Every write starts here: the typed tables it may write must exist.
        self.ensure_tables()?;
        let rec: DirectoryRecord = self
            .get_json(layout::DIRECTORIES, dir_id)?
            .ok_or_else(|| EngineError::not_found("directory", dir_id))?;
        if rec.directory.state == DirectoryState::Deleting {
            return Err(EngineError::conflict(
                Constraint::DirectoryDeleting,
                format!("directory {dir_id} is being deleted"),
            ));
        }
        let counts_bytes = self.get_raw(layout::COUNTS, dir_id)?;
        let counts: Counts = match &counts_bytes {
            Some(b) => from_bytes(layout::COUNTS, dir_id, b)?,
            None => Counts::default(),
        };
        Ok(Tx {
            rec,
            cs: ChangeSet::new(),
            events: Vec::new(),
            event_count: 0,
            counts,
            counts_before: counts,
            counts_bytes,
            now: Timestamp::now(),
            claimed: HashSet::new(),
            contact: false,
            keep_events: true,
            preset_id: None,
        })
    }

    pub(crate) fn begin_quiet(&self, dir_id: &str) -> Result<Tx> {
        let mut tx = self.begin(dir_id)?;
        tx.keep_events = false;
        Ok(tx)
    }

    /// Commits `tx` like [`Self::finish`], releasing the directory lock `held` after the
    /// commit applied and before waiting for its sync: the next write to the directory reads
    /// what this one wrote, and concurrent writers share one group-commit sync instead of
    /// paying one each. Returns only once the commit is durable.
    pub(crate) fn finish_unlocking(&self, tx: Tx, held: MutexGuard<'_, ()>) -> Result<Vec<Event>> {
        let (events, _, pending) = self.finish_applied(tx)?;
        drop(held);
        self.store.wait_durable(pending)?;
        Ok(events)
    }

    /// Commits `tx`: activates the directory on its first change (`dsync.activated` first in
    /// the log), writes the counters under a condition, and returns the events.
    #[allow(dead_code)] // kept for writers that need no lock release (snapshots pipeline)
    pub(crate) fn finish(&self, tx: Tx) -> Result<(Vec<Event>, u64)> {
        let (events, count, pending) = self.finish_applied(tx)?;
        self.store.wait_durable(pending)?;
        Ok((events, count))
    }

    /// [`Self::finish`] up to the applied commit; the caller waits for the sync.
    pub(crate) fn finish_applied(&self, mut tx: Tx) -> Result<(Vec<Event>, u64, PendingSync)> {
        let contact = tx.contact || tx.cs.has_writes();
        if tx.rec.deactivated && tx.cs.has_writes() {
            // Read under the directory lock, like the deactivation that set it: a change in
            // flight when the directory was deactivated writes nothing.
            return Err(EngineError::Invalid(
                "the directory is deactivated; activate it (POST /admin/directories/{id}/activate) to accept changes"
                    .into(),
            ));
        }
        if contact && tx.rec.directory.state != DirectoryState::Linked {
            self.stage_activation(&mut tx)?;
        }
        if !tx.cs.has_writes() {
            return Ok((Vec::new(), 0, PendingSync::default()));
        }
        if tx.counts != tx.counts_before {
            tx.cs.require_equals(
                layout::COUNTS,
                tx.dir_id().to_owned(),
                tx.counts_bytes.clone(),
            );
            let bytes = to_bytes(&tx.counts)?;
            let id = tx.dir_id().to_owned();
            tx.cs.put(layout::COUNTS, id, bytes);
        }
        let count = tx.event_count;
        let (_, pending) = self.store.commit_applied(tx.cs)?;
        Ok((tx.events, count, pending))
    }

    fn stage_activation(&self, tx: &mut Tx) -> Result<()> {
        tx.rec.directory.state = DirectoryState::Linked;
        tx.rec.directory.updated_at = tx.now;
        let bytes = to_bytes(&tx.rec)?;
        let id = tx.dir_id().to_owned();
        tx.cs.put(layout::DIRECTORIES, id, bytes);
        let data = self.activation_data(&tx.rec.directory)?;
        // Emit then move to the front: activation precedes the change that caused it.
        let before = tx.events.len();
        tx.emit(EventKind::DsyncActivated, data);
        if let Some(ev) = tx.cs.events.pop() {
            tx.cs.events.insert(0, ev);
        }
        if tx.events.len() > before {
            if let Some(ev) = tx.events.pop() {
                tx.events.insert(0, ev);
            }
        }
        Ok(())
    }

    /// Unlinks a linked directory by hand and appends `dsync.deactivated` (the same data as
    /// `dsync.activated`, with `state: "inactive"`). Returns the event, or `None` when the
    /// directory was not linked (nothing is written). The directory links again, with
    /// `dsync.activated`, on the next change its source delivers.
    pub fn deactivate_directory(&self, dir_id: &str) -> Result<Option<Event>> {
        let _span =
            tracing::info_span!("dsync.deactivate_directory", directory_id = dir_id).entered();
        let lock = self.dir_lock(dir_id);
        let _g = Self::guard(&lock);
        let mut rec: DirectoryRecord = self
            .get_json(layout::DIRECTORIES, dir_id)?
            .ok_or_else(|| EngineError::not_found("directory", dir_id))?;
        let linked = match rec.directory.state {
            DirectoryState::Linked => true,
            DirectoryState::Deleting => {
                return Err(EngineError::Invalid(
                    "the directory is being deleted; finish the deletion instead".into(),
                ))
            }
            _ => false,
        };
        if !linked && rec.deactivated {
            return Ok(None);
        }
        let before = to_bytes(&rec)?;
        rec.deactivated = true;
        rec.directory.updated_at = Timestamp::now();
        let mut cs = ChangeSet::new();
        cs.require_equals(layout::DIRECTORIES, dir_id, Some(before));
        let event = if linked {
            rec.directory.state = DirectoryState::Unlinked;
            let event = Event::new(
                EventKind::DsyncDeactivated,
                self.activation_data(&rec.directory)?,
            );
            cs.append_event(&event, Some(&rec.directory.organization_id));
            Some(event)
        } else {
            None
        };
        cs.put(layout::DIRECTORIES, dir_id, to_bytes(&rec)?);
        self.store.commit(cs)?;
        Ok(event)
    }

    /// Lifts a deactivation: the SCIM token works again, and the next change the source
    /// delivers links the directory (`dsync.activated`). Returns false when it was not
    /// deactivated (nothing changed).
    pub fn activate_directory(&self, dir_id: &str) -> Result<bool> {
        let _span =
            tracing::info_span!("dsync.activate_directory", directory_id = dir_id).entered();
        let lock = self.dir_lock(dir_id);
        let _g = Self::guard(&lock);
        let mut rec: DirectoryRecord = self
            .get_json(layout::DIRECTORIES, dir_id)?
            .ok_or_else(|| EngineError::not_found("directory", dir_id))?;
        if !rec.deactivated {
            return Ok(false);
        }
        let before = to_bytes(&rec)?;
        rec.deactivated = false;
        rec.directory.updated_at = Timestamp::now();
        let mut cs = ChangeSet::new();
        cs.require_equals(layout::DIRECTORIES, dir_id, Some(before));
        cs.put(layout::DIRECTORIES, dir_id, to_bytes(&rec)?);
        self.store.commit(cs)?;
        Ok(true)
    }

    /// Renames a directory and/or replaces its settings (admin API `PATCH`, config seeds). One
    /// commit, conditional on the record read, so a concurrent change is a conflict rather
    /// than lost. Returns the record and whether anything changed (nothing is written
    /// otherwise). WorkOS has no event for this; the callers recompute roles when
    /// `role_mode` changed.
    pub fn update_directory(
        &self,
        dir_id: &str,
        name: Option<&str>,
        settings: Option<DirectorySettings>,
    ) -> Result<(DirectoryRecord, bool)> {
        let _span = tracing::info_span!("dsync.update_directory", directory_id = dir_id).entered();
        if name.is_some_and(|n| n.trim().is_empty()) {
            return Err(EngineError::Invalid("directory name is empty".into()));
        }
        let lock = self.dir_lock(dir_id);
        let _g = Self::guard(&lock);
        let mut rec: DirectoryRecord = self
            .get_json(layout::DIRECTORIES, dir_id)?
            .ok_or_else(|| EngineError::not_found("directory", dir_id))?;
        if rec.directory.state == DirectoryState::Deleting {
            return Err(EngineError::Invalid(
                "the directory is being deleted; finish the deletion instead".into(),
            ));
        }
        let before = to_bytes(&rec)?;
        let mut changed = false;
        if let Some(n) = name {
            if rec.directory.name != n {
                rec.directory.name = n.to_owned();
                changed = true;
            }
        }
        if let Some(s) = settings {
            if rec.settings != s {
                rec.settings = s;
                changed = true;
            }
        }
        if changed {
            rec.directory.updated_at = Timestamp::now();
            let mut cs = ChangeSet::new();
            cs.require_equals(layout::DIRECTORIES, dir_id, Some(before));
            cs.put(layout::DIRECTORIES, dir_id, to_bytes(&rec)?);
            self.store.commit(cs)?;
            tracing::info!(directory_id = %dir_id, "directory updated");
        }
        self.fill_metadata(&mut rec)?;
        Ok((rec, changed))
    }

    /// workos-api.md §4.3: the directory with `domains` (from its organization) instead of
    /// `domain`, and the state in the events vocabulary.
    fn activation_data(&self, d: &Directory) -> Result<Value> {
        let org: Option<Organization> = self.orgs.organization(&d.organization_id)?;
        let domains: Vec<Value> = org
            .map(|o| {
                o.domains
                    .iter()
                    .map(|dom| {
                        json!({"object": "organization_domain", "id": dom.id,
                            "domain": dom.domain, "organization_id": dom.organization_id})
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(json!({
            "object": "directory",
            "id": d.id,
            "organization_id": d.organization_id,
            "external_key": d.external_key,
            "type": d.directory_type,
            "state": d.state.event_name(),
            "name": d.name,
            "domains": domains,
            "created_at": d.created_at,
            "updated_at": d.updated_at,
        }))
    }

    /// Creates a directory for an existing organization. SCIM types (`... scim v2.0`) get a
    /// bearer token, returned once: only its SHA-256 is stored. The directory starts
    /// `unlinked` and becomes `linked` (`dsync.activated`) on its first applied change.
    pub fn create_directory(
        &self,
        organization_id: &str,
        name: &str,
        directory_type: &str,
        settings: DirectorySettings,
    ) -> Result<(DirectoryRecord, Option<String>)> {
        self.create_directory_with(organization_id, name, directory_type, settings, |_, _| {
            Ok(())
        })
    }

    /// [`DirectoryEngine::create_directory`], with `also` staging another owner's part of the
    /// same commit (the server records a config-declared directory's key with it, so a crash
    /// cannot leave a directory the config does not know it created).
    pub fn create_directory_with(
        &self,
        organization_id: &str,
        name: &str,
        directory_type: &str,
        settings: DirectorySettings,
        also: impl FnOnce(&DirectoryRecord, &mut ChangeSet) -> std::result::Result<(), StoreError>,
    ) -> Result<(DirectoryRecord, Option<String>)> {
        let _span = tracing::info_span!("dsync.create_directory", organization_id).entered();
        if name.trim().is_empty() {
            return Err(EngineError::Invalid("directory name is empty".into()));
        }
        if directory_type.trim().is_empty() {
            return Err(EngineError::Invalid("directory type is empty".into()));
        }
        let org: Organization = self
            .orgs
            .organization(organization_id)?
            .ok_or_else(|| EngineError::not_found("organization", organization_id))?;
        let id = new_id(IdPrefix::Directory);
        let now = created_at_of(IdPrefix::Directory, &id);
        let domain = org
            .domains
            .iter()
            .find(|d| d.state == idbridge_model::DomainState::Verified)
            .or_else(|| org.domains.first())
            .map(|d| d.domain.clone());
        let token = is_scim_type(directory_type).then(new_scim_token);
        let external_key = random_alphanumeric(16);
        let rec = DirectoryRecord {
            directory: Directory {
                object: DirectoryTag,
                id: id.clone(),
                organization_id: organization_id.to_owned(),
                external_key,
                directory_type: directory_type.to_owned(),
                state: DirectoryState::Unlinked,
                name: name.to_owned(),
                domain,
                metadata: DirectoryMetadata::default(),
                created_at: now,
                updated_at: now,
            },
            settings,
            scim_token_digest: token.as_deref().map(sha256_hex),
            deactivated: false,
        };
        let mut cs = ChangeSet::new();
        self.orgs.stage_exists(&mut cs, organization_id);
        cs.require_absent(layout::DIRECTORIES, id.clone())
            .put(layout::DIRECTORIES, id.clone(), to_bytes(&rec)?)
            .put(
                layout::DIRECTORIES_BY_ORG,
                layout::key(organization_id, &id),
                Vec::new(),
            )
            .put(layout::COUNTS, id.clone(), to_bytes(&Counts::default())?);
        also(&rec, &mut cs)?;
        match self.store.commit(cs) {
            Ok(_) => {}
            // The organization was deleted meanwhile.
            Err(StoreError::Conflict {
                key,
                kind: ConflictKind::Missing,
                ..
            }) if key == organization_id => {
                return Err(EngineError::not_found("organization", organization_id))
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(directory_id = %id, "directory created");
        Ok((rec, token))
    }

    /// The directory with `metadata` filled from its counters.
    pub fn get_directory(&self, id: &str) -> Result<DirectoryRecord> {
        let mut rec: DirectoryRecord = self
            .get_json(layout::DIRECTORIES, id)?
            .ok_or_else(|| EngineError::not_found("directory", id))?;
        self.fill_metadata(&mut rec)?;
        Ok(rec)
    }

    pub(crate) fn fill_metadata(&self, rec: &mut DirectoryRecord) -> Result<()> {
        let c = self.counts(&rec.directory.id)?;
        rec.directory.metadata = DirectoryMetadata {
            users: UserCounts {
                active: c.active,
                inactive: c.inactive,
            },
            groups: c.groups,
        };
        Ok(())
    }

    /// The directory's counters (zero for an unknown directory).
    pub fn counts(&self, dir_id: &str) -> Result<Counts> {
        Ok(self.get_json(layout::COUNTS, dir_id)?.unwrap_or_default())
    }

    /// Directories in id (= creation) order, all or one organization's, WorkOS-paged.
    pub fn list_directories(
        &self,
        organization_id: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<DirectoryRecord>> {
        let (table, prefix) = match organization_id {
            Some(org) => (layout::DIRECTORIES_BY_ORG, layout::prefix(org)),
            None => (layout::DIRECTORIES, String::new()),
        };
        let rows = self.page_rows(table, &prefix, page)?;
        let mut data = Vec::with_capacity(rows.data.len());
        for (id, bytes) in rows.data {
            let mut rec: DirectoryRecord = if organization_id.is_some() {
                match self.get_json(layout::DIRECTORIES, &id)? {
                    Some(r) => r,
                    None => continue,
                }
            } else {
                from_bytes(layout::DIRECTORIES, &id, &bytes)?
            };
            self.fill_metadata(&mut rec)?;
            data.push(rec);
        }
        Ok(Page {
            data,
            before: rows.before,
            after: rows.after,
        })
    }

    /// Rows of `table` whose keys are `<prefix><id>`, WorkOS-paged by id: returns `(id, value)`.
    pub(crate) fn page_rows(
        &self,
        table: &str,
        prefix: &str,
        req: &PageRequest,
    ) -> Result<Page<(String, Vec<u8>)>> {
        Ok(idbridge_store::page(
            self.store.as_ref(),
            table,
            prefix,
            req,
            |id, value| Ok(Some((id.to_owned(), value.to_vec()))),
        )?)
    }

    /// Replaces the SCIM bearer token; the old one stops working at once. Returns the new token
    /// (shown once).
    pub fn rotate_scim_token(&self, dir_id: &str) -> Result<String> {
        let _span = tracing::info_span!("dsync.rotate_scim_token", directory_id = dir_id).entered();
        let lock = self.dir_lock(dir_id);
        let _g = Self::guard(&lock);
        let old = self
            .get_raw(layout::DIRECTORIES, dir_id)?
            .ok_or_else(|| EngineError::not_found("directory", dir_id))?;
        let mut rec: DirectoryRecord = from_bytes(layout::DIRECTORIES, dir_id, &old)?;
        if !is_scim_type(&rec.directory.directory_type) {
            return Err(EngineError::Invalid(format!(
                "directory type {:?} has no SCIM token",
                rec.directory.directory_type
            )));
        }
        let token = new_scim_token();
        rec.scim_token_digest = Some(sha256_hex(&token));
        rec.directory.updated_at = Timestamp::now();
        let mut cs = ChangeSet::new();
        cs.require_equals(layout::DIRECTORIES, dir_id, Some(old))
            .put(layout::DIRECTORIES, dir_id, to_bytes(&rec)?);
        self.store.commit(cs)?;
        Ok(token)
    }

    /// Sets the SCIM bearer token to one the admin chose (declared in the config file so it can
    /// be registered in the IdP before the first start). Only its SHA-256 is stored; the old
    /// token stops working. Tokens shorter than 20 characters are refused as guessable.
    pub fn set_scim_token(&self, dir_id: &str, token: &str) -> Result<()> {
        let _span = tracing::info_span!("dsync.set_scim_token", directory_id = dir_id).entered();
        if token.trim().len() < 20 {
            return Err(EngineError::Invalid(
                "a SCIM token must be at least 20 characters".into(),
            ));
        }
        let lock = self.dir_lock(dir_id);
        let _g = Self::guard(&lock);
        let old = self
            .get_raw(layout::DIRECTORIES, dir_id)?
            .ok_or_else(|| EngineError::not_found("directory", dir_id))?;
        let mut rec: DirectoryRecord = from_bytes(layout::DIRECTORIES, dir_id, &old)?;
        if !is_scim_type(&rec.directory.directory_type) {
            return Err(EngineError::Invalid(format!(
                "directory type {:?} has no SCIM token",
                rec.directory.directory_type
            )));
        }
        let digest = sha256_hex(token);
        if rec.scim_token_digest.as_deref() == Some(digest.as_str()) {
            return Ok(());
        }
        rec.scim_token_digest = Some(digest);
        rec.directory.updated_at = Timestamp::now();
        let mut cs = ChangeSet::new();
        cs.require_equals(layout::DIRECTORIES, dir_id, Some(old))
            .put(layout::DIRECTORIES, dir_id, to_bytes(&rec)?);
        self.store.commit(cs)?;
        Ok(())
    }

    /// The directory if `presented` is its SCIM token (SHA-256 compared in constant time);
    /// `None` for a wrong token, an unknown directory, or one being deleted.
    pub fn authenticate_scim(
        &self,
        dir_id: &str,
        presented: &str,
    ) -> Result<Option<DirectoryRecord>> {
        Ok(match self.scim_auth(dir_id, presented)? {
            ScimAuth::Accepted(rec) => Some(*rec),
            ScimAuth::Refused | ScimAuth::Deactivated => None,
        })
    }

    /// Checks a SCIM bearer token, telling a deactivated directory's right token apart (only
    /// a caller holding the token learns that the directory is deactivated).
    pub fn scim_auth(&self, dir_id: &str, presented: &str) -> Result<ScimAuth> {
        let Some(rec) = self.get_json::<DirectoryRecord>(layout::DIRECTORIES, dir_id)? else {
            return Ok(ScimAuth::Refused);
        };
        let Some(stored) = rec.scim_token_digest.as_deref() else {
            return Ok(ScimAuth::Refused);
        };
        let presented = sha256_hex(presented);
        let ok: bool = presented.as_bytes().ct_eq(stored.as_bytes()).into();
        if !ok || rec.directory.state == DirectoryState::Deleting {
            return Ok(ScimAuth::Refused);
        }
        if rec.deactivated {
            return Ok(ScimAuth::Deactivated);
        }
        Ok(ScimAuth::Accepted(Box::new(rec)))
    }

    /// Deletes a directory and everything in it, emitting exactly one `dsync.deleted` (no
    /// per-user or per-group events).
    ///
    /// When everything fits in the commit limit ([`MAX_COMMIT_OPS`] by default) it is one atomic commit. A bigger directory
    /// is first marked `deleting` (writes and SCIM auth are refused from then on), its users,
    /// groups, memberships and index slots are removed in bounded commits, and a last commit
    /// removes the directory and appends `dsync.deleted`. If that run dies half-way, calling
    /// `delete_directory` again resumes it; the event's `state` is the pre-deletion state,
    /// remembered in the record.
    pub fn delete_directory(&self, dir_id: &str) -> Result<Event> {
        let _span = tracing::info_span!("dsync.delete_directory", directory_id = dir_id).entered();
        let lock = self.dir_lock(dir_id);
        let _g = Self::guard(&lock);
        let mut rec: DirectoryRecord = self
            .get_json(layout::DIRECTORIES, dir_id)?
            .ok_or_else(|| EngineError::not_found("directory", dir_id))?;
        let pre_state = match rec.directory.state {
            DirectoryState::Deleting => self
                .get_json::<DirectoryState>(layout::DELETING_FROM, dir_id)?
                .unwrap_or(DirectoryState::Deleting),
            s => s,
        };
        let mut pending = ChangeSet::new();
        let mut marked = rec.directory.state == DirectoryState::Deleting;
        let flush = |engine: &Self, pending: &mut ChangeSet, marked: &mut bool| -> Result<()> {
            if !*marked {
                let mut m = rec.clone();
                m.directory.state = DirectoryState::Deleting;
                let mut cs = ChangeSet::new();
                cs.put(layout::DIRECTORIES, dir_id, to_bytes(&m)?).put(
                    layout::DELETING_FROM,
                    dir_id,
                    to_bytes(&pre_state)?,
                );
                engine.store.commit(cs)?;
                *marked = true;
            }
            engine.store.commit(std::mem::take(pending))?;
            Ok(())
        };
        let ops = |cs: &ChangeSet| cs.deletes.len() + cs.puts.len();

        // Users: record, id lookup, idp slot, unique slots, memberships both ways.
        let dir_prefix = layout::prefix(dir_id);
        self.for_each_row(layout::USERS, &dir_prefix, |key, bytes| {
            let u: crate::StoredUser = from_bytes(layout::USERS, key, bytes)?;
            self.stage_user_removal(&mut pending, dir_id, &u)?;
            if ops(&pending) >= self.max_ops {
                flush(self, &mut pending, &mut marked)?;
            }
            Ok(())
        })?;
        // Parked SCIM users: their record and slots (they have no memberships).
        self.for_each_row(layout::PARKED_USERS, &dir_prefix, |key, bytes| {
            let u: crate::StoredUser = from_bytes(layout::PARKED_USERS, key, bytes)?;
            pending.delete(layout::PARKED_USERS, key);
            self.stage_user_removal(&mut pending, dir_id, &u)?;
            if ops(&pending) >= self.max_ops {
                flush(self, &mut pending, &mut marked)?;
            }
            Ok(())
        })?;
        // Groups (their memberships went with the users).
        self.for_each_row(layout::GROUPS, &dir_prefix, |key, bytes| {
            let g: crate::StoredGroup = from_bytes(layout::GROUPS, key, bytes)?;
            pending
                .delete(layout::GROUPS, key)
                .delete(layout::GROUP_DIR, g.group.id.clone())
                .delete(layout::GROUPS_BY_IDP, layout::key(dir_id, &g.group.idp_id));
            for (index, value) in &g.unique_keys {
                pending.delete(layout::group_key_table(index), layout::key(dir_id, value));
            }
            if ops(&pending) >= self.max_ops {
                flush(self, &mut pending, &mut marked)?;
            }
            Ok(())
        })?;

        rec.directory.state = pre_state;
        let data = json!({
            "object": "directory",
            "id": rec.directory.id,
            "organization_id": rec.directory.organization_id,
            "type": rec.directory.directory_type,
            "state": pre_state.event_name(),
            "name": rec.directory.name,
            "created_at": rec.directory.created_at,
            "updated_at": rec.directory.updated_at,
        });
        let event = Event::new(EventKind::DsyncDeleted, data);
        pending
            .delete(layout::DIRECTORIES, dir_id)
            .delete(layout::DELETING_FROM, dir_id)
            .delete(
                layout::DIRECTORIES_BY_ORG,
                layout::key(&rec.directory.organization_id, dir_id),
            )
            .delete(layout::COUNTS, dir_id)
            .append_event(&event, Some(&rec.directory.organization_id));
        self.store.commit(pending)?;
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(dir_id);
        tracing::info!(directory_id = dir_id, "directory deleted");
        Ok(event)
    }
}
