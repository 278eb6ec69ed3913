//! Pull sources: full snapshots (LDAP full sync, SFTP CSV) diffed by idp_id, and LDAP deltas.
//!
//! Atomicity: a snapshot whose diff fits in the engine's commit limit
//! ([`MAX_COMMIT_OPS`](crate::MAX_COMMIT_OPS) writes + events by default) is applied as ONE
//! commit (all or nothing). A bigger diff is applied in bounded commits, in this order:
//! groups created/updated, users the source no longer lists (deleted or deactivated, first so
//! they free their unique keys), users updated/created in source order (each with its own
//! membership changes, in the same commit), the membership changes of users not otherwise
//! written, groups deleted. Each commit carries its own events. If a run fails half-way, the
//! commits already made stay; running the same snapshot again diffs against what is now stored
//! and applies exactly the rest (re-applying an applied snapshot changes nothing and emits
//! nothing), so a failed run is resumable by simply retrying it. Commits are pipelined (one
//! applies while the previous one syncs); the run returns only once all are durable.
//!
//! Memory: the engine never holds the snapshot's users. It reads the [`SnapshotSource`] twice
//! (once for the idp_ids, once to apply it) and keeps only compact indexes: every idp_id
//! once, a few bytes of state and the stored fingerprint per user, memberships as sorted
//! integer pairs. The existing side is read with ordered range scans of the idp_id index, the
//! fingerprints and the memberships (no point read per user, no user record parsed); a user
//! record is read only when its fingerprint says it changed. Event bodies go to the log, not
//! into the outcome. So a million-user CSV delivery costs tens of megabytes here, not
//! gigabytes.

use std::collections::HashMap;
use std::sync::Arc;

use idbridge_model::{parse_id, IdPrefix, UserState};
use ulid::Ulid;

use sha2::{Digest, Sha256};

use idbridge_store::{ChangeSet, StoreError};

use crate::engine::{from_bytes, to_bytes, DirectoryEngine, Tx};
use crate::error::{EngineError, GuardError, Result};
use crate::groups::validate_group;
use crate::interner::Interner;
use crate::layout;
use crate::roles::{RoleCtx, UserRoles};
use crate::staged::StagedStore;
use crate::types::{
    ChangeKind, Deactivation, DeltaChange, DeltaOutcome, DirectorySettings, GroupInput, Snapshot,
    SnapshotOutcome, SnapshotPolicy, StoredGroup, StoredUser, UserInput,
};
use crate::users::validate_user;

/// A full snapshot the engine can read more than once, so a big feed streams from its files
/// instead of being materialized (SFTP CSV deliveries reach millions of rows).
///
/// Every pass must yield the same users, groups and memberships; a source that changes between
/// passes produces an error (a user appearing that the first pass did not see) or a partial
/// diff that the next run completes. Errors of the source itself are reported as
/// [`EngineError::Source`].
pub trait SnapshotSource {
    /// Calls `f` for every user. A run reads users twice: the default implementations of
    /// [`SnapshotSource::for_each_user_id`] (index pass) and
    /// [`SnapshotSource::for_each_user_record`] (apply pass) both call this.
    fn for_each_user(&self, f: &mut dyn FnMut(&UserInput) -> Result<()>) -> Result<()>;
    /// Calls `f(idp_id, active)` for every user, in the order of `for_each_user`: the index
    /// pass needs nothing else. The default builds each user and validates it; a source that
    /// can read the id alone (a CSV column) overrides it, and then promises users that pass
    /// validation (a non-empty idp_id is checked here, the rest again in the apply pass).
    fn for_each_user_id(&self, f: &mut dyn FnMut(&str, bool) -> Result<()>) -> Result<()> {
        self.for_each_user(&mut |u| {
            validate_user(u)?;
            f(&u.idp_id, u.active)
        })
    }
    /// Every group (groups are few: they are held in memory).
    fn groups(&self) -> Result<Vec<GroupInput>>;
    /// Calls `f` for every user of the apply pass, in the order of `for_each_user`. A source
    /// that can digest a user's record more cheaply than it builds it (a CSV row) hands the
    /// engine a [`UserRecord::Lazy`]: an unchanged user is then recognized without being
    /// built. The default hands over every user built.
    fn for_each_user_record(&self, f: &mut dyn FnMut(UserRecord<'_>) -> Result<()>) -> Result<()> {
        self.for_each_user(&mut |u| f(UserRecord::Built(u)))
    }
    /// Calls `f(group idp_id, user idp_id)` for every membership; called once. Pairs naming a
    /// group or user the snapshot does not have are ignored; duplicates are harmless.
    fn for_each_membership(&self, f: &mut dyn FnMut(&str, &str) -> Result<()>) -> Result<()>;
}

impl SnapshotSource for Snapshot {
    fn for_each_user(&self, f: &mut dyn FnMut(&UserInput) -> Result<()>) -> Result<()> {
        self.users.iter().try_for_each(f)
    }

    fn groups(&self) -> Result<Vec<GroupInput>> {
        Ok(self.groups.clone())
    }

    fn for_each_membership(&self, f: &mut dyn FnMut(&str, &str) -> Result<()>) -> Result<()> {
        self.memberships.iter().try_for_each(|(g, u)| f(g, u))
    }
}

/// One user of a [`SnapshotSource`]'s apply pass.
pub enum UserRecord<'a> {
    /// The user, built.
    Built(&'a UserInput),
    /// The user's idp_id, a digest of its source record, and how to build it. The digest must
    /// change whenever the built user could (everything it is built from except the
    /// directory's settings, which the engine hashes itself); equal digests may be trusted to
    /// build equal users.
    Lazy {
        /// The user's idp_id.
        idp_id: &'a str,
        /// Digest of the record (e.g. SHA-256 of the CSV header and row).
        digest: [u8; 32],
        /// Builds the user (called only when the engine needs it).
        build: &'a mut dyn FnMut() -> Result<UserInput>,
    },
}

/// The open commit of a chunked run, flushed when it grows past the engine's commit limit.
///
/// Pipelined: a commit is applied, then made durable (flush + fdatasync) on a helper thread
/// while the next one is built; before the next is applied the previous sync must have
/// succeeded, and [`Chunker::finish`] waits for the last. So the run still returns only once
/// everything it wrote is durable (nothing is acknowledged earlier, and the event log shows
/// a commit's events only once it is durable), but the disk's sync time overlaps the CPU work.
struct Chunker<'e> {
    engine: &'e DirectoryEngine,
    dir_id: String,
    tx: Option<Tx>,
    events: u64,
    commits: u64,
    /// The sync of the last applied commit, running.
    syncing: Option<std::thread::JoinHandle<idbridge_store::Result<()>>>,
    /// Time spent applying commits, and waiting for syncs (the phase log).
    apply_time: std::time::Duration,
    wait_time: std::time::Duration,
}

impl Drop for Chunker<'_> {
    /// A run that fails still returns only after its last sync ended.
    fn drop(&mut self) {
        if let Some(h) = self.syncing.take() {
            let _ = h.join();
        }
    }
}

impl<'e> Chunker<'e> {
    fn new(engine: &'e DirectoryEngine, dir_id: &str) -> Self {
        Chunker {
            engine,
            dir_id: dir_id.to_owned(),
            tx: None,
            events: 0,
            commits: 0,
            syncing: None,
            apply_time: std::time::Duration::ZERO,
            wait_time: std::time::Duration::ZERO,
        }
    }

    fn tx(&mut self) -> Result<&mut Tx> {
        if self.tx.is_none() {
            self.tx = Some(self.engine.begin_quiet(&self.dir_id)?);
        }
        self.tx
            .as_mut()
            .ok_or_else(|| EngineError::Invalid("no open commit".into()))
    }

    /// Commits when the open change set is full (called between whole records, never inside
    /// one, so a record's writes and its event always share a commit).
    fn maybe_flush(&mut self) -> Result<()> {
        if self
            .tx
            .as_ref()
            .is_some_and(|t| t.ops() >= self.engine.max_ops)
        {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        // The previous commit is durable before this one applies: a failed sync stops the run
        // with at most one commit applied and not durable.
        self.wait_synced()?;
        if let Some(tx) = self.tx.take() {
            let wrote = tx.cs.has_writes();
            let t = std::time::Instant::now();
            let (_, n, pending) = self.engine.finish_applied(tx)?;
            self.apply_time += t.elapsed();
            self.events += n;
            if wrote {
                self.commits += 1;
            }
            // (Also a commit that only activates the directory: `wrote` predates that.)
            if pending != idbridge_store::PendingSync::default() {
                let store = self.engine.store.clone();
                self.syncing = Some(std::thread::spawn(move || store.wait_durable(pending)));
            }
        }
        Ok(())
    }

    fn wait_synced(&mut self) -> Result<()> {
        if let Some(h) = self.syncing.take() {
            let t = std::time::Instant::now();
            let outcome = h.join();
            self.wait_time += t.elapsed();
            match outcome {
                Ok(r) => r?,
                Err(_) => {
                    return Err(EngineError::Store(idbridge_store::StoreError::Backend(
                        "the sync thread panicked".into(),
                    )))
                }
            }
        }
        Ok(())
    }

    /// Commits what is open and returns once every commit of the run is durable.
    fn finish(&mut self) -> Result<()> {
        self.flush()?;
        self.wait_synced()
    }
}

/// What the run knows about one user idp_id, from the source and from the store. Kept small
/// (24 bytes): a million-user feed holds a million of these.
#[derive(Debug, Clone, Copy, Default)]
struct UserSlot {
    /// The stored user's id (its ULID, split to keep 8-byte alignment), valid with `STORED`:
    /// before the run and, once written, after it.
    stored: [u64; 2],
    flags: u8,
}

impl UserSlot {
    const IN_SOURCE: u8 = 1;
    const ACTIVE_IN_SOURCE: u8 = 2;
    const STORED: u8 = 4;
    /// Leaves the directory in this run (deleted).
    const DELETED: u8 = 8;
    /// A membership of this user changes (the membership phase needs the final record).
    const TOUCHED: u8 = 16;
    /// A fingerprint is stored for the user (in the run's `stored_fp`).
    const HAS_FP: u8 = 32;

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn set(&mut self, flag: u8) {
        self.flags |= flag;
    }

    fn stored(&self) -> Option<u128> {
        self.has(Self::STORED)
            .then(|| (u128::from(self.stored[0]) << 64) | u128::from(self.stored[1]))
    }

    fn set_stored(&mut self, ulid: Option<u128>) {
        match ulid {
            Some(u) => {
                self.stored = [(u >> 64) as u64, u as u64];
                self.flags |= Self::STORED;
            }
            None => self.flags &= !Self::STORED,
        }
    }
}

fn user_id_of(ulid: u128) -> String {
    format!("{}_{}", IdPrefix::DirectoryUser.as_str(), Ulid(ulid))
}

fn ulid_of(user_id: &str) -> Result<u128> {
    parse_id(IdPrefix::DirectoryUser, user_id)
        .map(u128::from)
        .map_err(|e| EngineError::corrupt(layout::USERS_BY_IDP, user_id, e))
}

/// Bump when what a user record is built from changes meaning (attribute mapping code) or the
/// hashing below changes, so fingerprints written by an older version stop matching.
const FINGERPRINT_VERSION: &[u8] = b"idbridge-user-fp-2";

/// Feeds serialized JSON straight into the hash (no intermediate buffer per user).
struct HashWriter<'h>(&'h mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a snapshot user is reconciled from: the input, the roles its groups give it and the
/// directory's settings (attribute map, deactivation). Equal fingerprints mean an equal record.
/// The parts are JSON objects/arrays in a fixed order: each is self-delimiting, so their
/// concatenation is unambiguous without length prefixes.
fn fingerprint(settings: &Sha256, input: FpInput<'_>, roles: &UserRoles) -> Result<[u8; 16]> {
    let mut h = settings.clone();
    let ser = |e: serde_json::Error| {
        EngineError::Store(idbridge_store::StoreError::Backend(format!(
            "serializing: {e}"
        )))
    };
    match input {
        FpInput::Built(input) => {
            h.update(b"input");
            serde_json::to_writer(HashWriter(&mut h), input).map_err(ser)?;
        }
        // A tag and a fixed length: never confused with the JSON of a built input.
        FpInput::Digest(d) => {
            h.update(b"digest");
            h.update(d);
        }
    }
    serde_json::to_writer(HashWriter(&mut h), roles).map_err(ser)?;
    let digest = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    Ok(out)
}

/// What a fingerprint covers of the user itself.
enum FpInput<'a> {
    Built(&'a UserInput),
    Digest(&'a [u8; 32]),
}

/// The hash state after the run-wide parts (version, directory settings), cloned per user.
fn fingerprint_base(settings: &DirectorySettings) -> Result<Sha256> {
    let mut h = Sha256::new();
    h.update(FINGERPRINT_VERSION);
    h.update(to_bytes(settings)?);
    Ok(h)
}

/// Sorts and deduplicates membership pairs (a sorted `Vec<u64>` is a third of a `HashSet`).
fn sorted_pairs(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v.dedup();
    v
}

/// `a` minus `b`, both sorted and deduplicated.
fn sorted_difference(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut j = 0;
    for &x in a {
        while j < b.len() && b[j] < x {
            j += 1;
        }
        if j >= b.len() || b[j] != x {
            out.push(x);
        }
    }
    out
}

/// A directory's stored users, fingerprints and groups with their members' ulids, read
/// before the snapshot source ([`DirectoryEngine::apply_snapshot_read_ahead`]).
#[derive(Default)]
struct StoredSide {
    users: Vec<(Box<str>, u128)>,
    fingerprints: Vec<(u128, [u8; 16])>,
    groups: Vec<(StoredGroup, Vec<u128>)>,
}

/// Phase timings and resident memory of one run, logged at debug level when it ends (where a
/// big delivery spends its time and memory; the CSV benchmark prints them).
struct PhaseLog {
    start: std::time::Instant,
    last: std::time::Instant,
    lines: Vec<String>,
}

impl PhaseLog {
    fn new() -> Self {
        let now = std::time::Instant::now();
        PhaseLog {
            start: now,
            last: now,
            lines: Vec::new(),
        }
    }

    fn mark(&mut self, phase: &str) {
        let now = std::time::Instant::now();
        let rss = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
            })
            .unwrap_or_default();
        self.lines.push(format!(
            "{phase}: {:.2}s (rss {rss} kB)",
            (now - self.last).as_secs_f64()
        ));
        self.last = now;
    }

    fn finish(self) {
        let total = self.start.elapsed().as_secs_f64();
        if std::env::var_os("IDBRIDGE_SNAPSHOT_PHASES").is_some() {
            eprintln!("snapshot phases ({total:.2}s): {}", self.lines.join("; "));
        }
        tracing::debug!(total_secs = total, phases = %self.lines.join("; "), "snapshot phases");
    }
}

impl DirectoryEngine {
    /// Calls `f(key, value)` for every row under `prefix` in key order, in one streamed pass
    /// (bulk reads of a snapshot run: no page of rows is collected). `f` must not write.
    fn for_each_key(
        &self,
        table: &str,
        prefix: &str,
        mut f: impl FnMut(&str, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut failed: Option<EngineError> = None;
        self.store.for_each_prefixed(table, prefix, &mut |k, v| {
            let outcome = match std::str::from_utf8(k) {
                Ok(key) => f(key, v),
                Err(e) => Err(EngineError::corrupt(table, &String::from_utf8_lossy(k), e)),
            };
            match outcome {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        })?;
        failed.map_or(Ok(()), Err)
    }
}

/// The run's membership changes, indexed by user, and which are staged already.
struct MembershipChanges<'a> {
    /// (pair, add), adds first.
    changes: &'a [(u64, bool)],
    /// (user, index into `changes`), sorted.
    by_user: &'a [(u32, u32)],
    done: &'a mut [bool],
}

impl MembershipChanges<'_> {
    /// Stages every pending membership change of user `ui` (whose record is `user`), with
    /// its event, adds before removals.
    fn stage_for(
        &mut self,
        engine: &DirectoryEngine,
        tx: &mut Tx,
        ui: u32,
        user: &StoredUser,
        groups: &HashMap<u32, StoredGroup>,
        out: &mut SnapshotOutcome,
    ) -> Result<()> {
        let from = self.by_user.partition_point(|&(u, _)| u < ui);
        for &(u, k) in &self.by_user[from..] {
            if u != ui {
                break;
            }
            let k = k as usize;
            if self.done[k] {
                continue;
            }
            let (p, add) = self.changes[k];
            self.done[k] = true;
            let Some(g) = groups.get(&unpair(p).0) else {
                continue;
            };
            engine.stage_membership(tx, g, user, add)?;
            if add {
                out.memberships_added += 1;
            } else {
                out.memberships_removed += 1;
            }
        }
        Ok(())
    }
}

fn pair(group: u32, user: u32) -> u64 {
    (u64::from(group) << 32) | u64::from(user)
}

fn unpair(p: u64) -> (u32, u32) {
    ((p >> 32) as u32, p as u32)
}

impl DirectoryEngine {
    /// Applies a full in-memory snapshot; see [`DirectoryEngine::apply_snapshot_from`].
    pub fn apply_snapshot(
        &self,
        dir_id: &str,
        snap: Snapshot,
        policy: SnapshotPolicy,
    ) -> Result<SnapshotOutcome> {
        self.apply_snapshot_from(dir_id, &snap, policy)
    }

    /// Applies a full snapshot: creates, updates and removes users and groups (by idp_id) and
    /// memberships so the directory matches it. Users missing from the snapshot follow the
    /// directory's [`Deactivation`] setting.
    ///
    /// Checked before anything is written: every idp_id valid and unique, and the guard: if
    /// the run would delete or deactivate more than `max_delete_ratio` of the current users
    /// (exactly at the ratio is allowed), it returns [`GuardError::MassDeletion`] and changes
    /// nothing, unless `confirmed`. See the module docs for atomicity and memory.
    pub fn apply_snapshot_from(
        &self,
        dir_id: &str,
        src: &dyn SnapshotSource,
        policy: SnapshotPolicy,
    ) -> Result<SnapshotOutcome> {
        let _span = tracing::info_span!("dsync.apply_snapshot", directory_id = dir_id).entered();
        let lock = self.dir_lock(dir_id);
        let _g = Self::guard(&lock);
        self.apply_snapshot_locked(dir_id, src, policy, None, PhaseLog::new())
    }

    /// [`DirectoryEngine::apply_snapshot_from`] for a caller still producing its source (an
    /// LDAP full sync still reading): the stored side (idp index, fingerprints, groups and
    /// memberships) is read into memory first, then `source` is called and may block until
    /// the source is complete, so the two overlap. `None` from `source` (the read failed)
    /// returns `Ok(None)` with nothing changed. The directory stays locked from the first
    /// stored read to the last write, as in `apply_snapshot_from`. Holds the stored idp ids
    /// in memory (about 60 bytes per user): meant for sources that hold theirs anyway.
    pub fn apply_snapshot_read_ahead<S: SnapshotSource>(
        &self,
        dir_id: &str,
        policy: SnapshotPolicy,
        source: impl FnOnce() -> Option<S>,
    ) -> Result<Option<(SnapshotOutcome, S)>> {
        let _span = tracing::info_span!("dsync.apply_snapshot", directory_id = dir_id).entered();
        let lock = self.dir_lock(dir_id);
        let _g = Self::guard(&lock);
        let mut phases = PhaseLog::new();
        let stored = self.read_stored_side(dir_id)?;
        phases.mark("stored side read ahead");
        let Some(src) = source() else {
            return Ok(None);
        };
        phases.mark("waited for the source");
        let out = self.apply_snapshot_locked(dir_id, &src, policy, Some(stored), phases)?;
        Ok(Some((out, src)))
    }

    /// The stored side of a snapshot run, read ahead of the source.
    fn read_stored_side(&self, dir_id: &str) -> Result<StoredSide> {
        let prefix = layout::prefix(dir_id);
        let mut side = StoredSide::default();
        self.for_each_stored_user(&prefix, |idp, ulid| {
            side.users.push((idp.into(), ulid));
            Ok(())
        })?;
        self.for_each_stored_fingerprint(&prefix, |ulid, fp| {
            side.fingerprints.push((ulid, fp));
            Ok(())
        })?;
        for g in self.stored_groups(&prefix)? {
            let members = self.stored_member_ulids(&g)?;
            side.groups.push((g, members));
        }
        Ok(side)
    }

    /// Calls `f(idp_id, user ulid)` for every entry of the directory's idp_id index.
    fn for_each_stored_user(
        &self,
        prefix: &str,
        mut f: impl FnMut(&str, u128) -> Result<()>,
    ) -> Result<()> {
        self.for_each_key(layout::USERS_BY_IDP, prefix, |key, value| {
            let idp = key.strip_prefix(prefix).unwrap_or(key);
            let uid = std::str::from_utf8(value)
                .map_err(|e| EngineError::corrupt(layout::USERS_BY_IDP, key, e))?;
            f(idp, ulid_of(uid)?)
        })
    }

    /// Calls `f(user ulid, fingerprint)` for every stored fingerprint of the directory
    /// (malformed rows are skipped: the user then counts as changed).
    fn for_each_stored_fingerprint(
        &self,
        prefix: &str,
        mut f: impl FnMut(u128, [u8; 16]) -> Result<()>,
    ) -> Result<()> {
        self.for_each_key(layout::USER_FINGERPRINTS, prefix, |key, value| {
            let uid = key.strip_prefix(prefix).unwrap_or(key);
            if let (Ok(ulid), Ok(fp)) = (ulid_of(uid), <[u8; 16]>::try_from(value)) {
                f(ulid, fp)?;
            }
            Ok(())
        })
    }

    /// The directory's stored groups.
    fn stored_groups(&self, prefix: &str) -> Result<Vec<StoredGroup>> {
        let mut groups = Vec::new();
        self.for_each_row(layout::GROUPS, prefix, |key, bytes| {
            groups.push(from_bytes(layout::GROUPS, key, bytes)?);
            Ok(())
        })?;
        Ok(groups)
    }

    /// The ulids of a stored group's members (malformed rows skipped).
    fn stored_member_ulids(&self, g: &StoredGroup) -> Result<Vec<u128>> {
        Ok(self
            .member_ids(&g.group.id)?
            .iter()
            .filter_map(|uid| ulid_of(uid).ok())
            .collect())
    }

    /// The body of a snapshot run, under the directory lock; `ahead` is the stored side when
    /// it was read before the source.
    fn apply_snapshot_locked(
        &self,
        dir_id: &str,
        src: &dyn SnapshotSource,
        policy: SnapshotPolicy,
        ahead: Option<StoredSide>,
        mut phases: PhaseLog,
    ) -> Result<SnapshotOutcome> {
        let probe = self.begin(dir_id)?;
        let settings = probe.rec.settings.clone();
        let roles = self.role_ctx(&probe.rec.directory.organization_id, settings.role_mode)?;
        drop(probe);
        let (ahead_users, ahead_fps, ahead_groups) = match ahead {
            Some(a) => (Some(a.users), Some(a.fingerprints), Some(a.groups)),
            None => (None, None, None),
        };

        // Pass one over the source: check and index its users.
        let mut user_ids = Interner::default();
        let mut users: Vec<UserSlot> = Vec::new();
        src.for_each_user_id(&mut |idp_id, active| {
            if idp_id.trim().is_empty() {
                return Err(EngineError::Invalid("user idp_id is empty".into()));
            }
            let i = user_ids.intern(idp_id)? as usize;
            if i < users.len() {
                return Err(EngineError::Invalid(format!(
                    "user idp_id {idp_id:?} appears twice in the snapshot"
                )));
            }
            let mut slot = UserSlot::default();
            slot.set(UserSlot::IN_SOURCE);
            if active {
                slot.set(UserSlot::ACTIVE_IN_SOURCE);
            }
            users.push(slot);
            Ok(())
        })?;
        let source_users = users.len();
        phases.mark("pass1");
        let groups = src.groups()?;
        let mut group_ids = Interner::default();
        for (n, g) in groups.iter().enumerate() {
            validate_group(g)?;
            if group_ids.intern(&g.idp_id)? as usize != n {
                return Err(EngineError::Invalid(format!(
                    "group idp_id {:?} appears twice in the snapshot",
                    g.idp_id
                )));
            }
        }
        let source_groups = groups.len();
        tracing::info!(
            users = source_users,
            groups = source_groups,
            "snapshot indexed"
        );

        // The stored side, from the idp_id index (no user record is parsed here).
        let user_prefix = layout::prefix(dir_id);
        let mut slot_of_id: Vec<(u128, u32)> = Vec::new();
        let mut on_stored_user = |idp: &str, ulid: u128| {
            let i = user_ids.intern(idp)?;
            if i as usize == users.len() {
                users.push(UserSlot::default());
            }
            users[i as usize].set_stored(Some(ulid));
            slot_of_id.push((ulid, i));
            Ok(())
        };
        match ahead_users {
            Some(stored) => stored
                .into_iter()
                .try_for_each(|(idp, ulid)| on_stored_user(&idp, ulid))?,
            None => self.for_each_stored_user(&user_prefix, on_stored_user)?,
        }
        slot_of_id.sort_unstable();
        let slot_by_ulid = |ulid: u128| -> Option<u32> {
            slot_of_id
                .binary_search_by(|&(u, _)| u.cmp(&ulid))
                .ok()
                .map(|at| slot_of_id[at].1)
        };
        // The stored fingerprints, in one ordered pass (not a point read per user): pass two
        // compares against these and reads no store at all for an unchanged user.
        let mut stored_fp: Vec<[u8; 16]> = vec![[0; 16]; users.len()];
        let mut on_stored_fp = |ulid: u128, fp: [u8; 16]| {
            if let Some(i) = slot_by_ulid(ulid) {
                stored_fp[i as usize] = fp;
                users[i as usize].set(UserSlot::HAS_FP);
            }
            Ok(())
        };
        match ahead_fps {
            Some(stored) => stored
                .into_iter()
                .try_for_each(|(ulid, fp)| on_stored_fp(ulid, fp))?,
            None => self.for_each_stored_fingerprint(&user_prefix, on_stored_fp)?,
        }
        phases.mark("idp index");

        // Which stored users leave (deleted, or newly inactive when kept), and the guard.
        let delete_mode = settings.deactivation == Deactivation::DeleteUser;
        let mut would_delete = 0u64;
        let mut total = 0u64;
        let mut sample = Vec::new();
        for slot in users.iter_mut() {
            let Some(ulid) = slot.stored() else { continue };
            total += 1;
            if slot.has(UserSlot::IN_SOURCE) && slot.has(UserSlot::ACTIVE_IN_SOURCE) {
                continue;
            }
            let leaves = delete_mode
                || self
                    .load_user(dir_id, &user_id_of(ulid))?
                    .is_some_and(|(u, _)| u.user.state == UserState::Active);
            if leaves {
                would_delete += 1;
                if sample.len() < crate::GUARD_SAMPLE {
                    sample.push(user_id_of(ulid));
                }
                if delete_mode {
                    slot.set(UserSlot::DELETED);
                }
            }
        }
        if !policy.confirmed && would_delete as f64 > policy.max_delete_ratio * total as f64 + 1e-9
        {
            tracing::warn!(
                would_delete,
                total,
                "snapshot refused by the mass-deletion guard"
            );
            return Err(GuardError::MassDeletion {
                would_delete,
                total,
                threshold: policy.max_delete_ratio,
                sample,
            }
            .into());
        }

        phases.mark("guard");
        // Stored groups and memberships, as integer pairs.
        let mut old_groups: HashMap<u32, StoredGroup> = HashMap::new();
        let mut old_pairs: Vec<u64> = Vec::new();
        let mut on_stored_group = |g: StoredGroup, members: Vec<u128>| {
            let gi = group_ids.intern(&g.group.idp_id)?;
            old_pairs.extend(
                members
                    .into_iter()
                    .filter_map(slot_by_ulid)
                    .map(|ui| pair(gi, ui)),
            );
            old_groups.insert(gi, g);
            Ok::<_, EngineError>(())
        };
        match ahead_groups {
            Some(stored) => stored
                .into_iter()
                .try_for_each(|(g, members)| on_stored_group(g, members))?,
            None => {
                for g in self.stored_groups(&user_prefix)? {
                    let members = self.stored_member_ulids(&g)?;
                    on_stored_group(g, members)?;
                }
            }
        }
        let old_pairs = sorted_pairs(old_pairs);
        drop(slot_of_id);
        phases.mark("stored memberships");
        let in_source_group = |gi: u32| (gi as usize) < source_groups;
        let mut desired: Vec<u64> = Vec::new();
        src.for_each_membership(&mut |g, u| {
            if let (Some(gi), Some(ui)) = (group_ids.get(g), user_ids.get(u)) {
                if in_source_group(gi) && users[ui as usize].has(UserSlot::IN_SOURCE) {
                    desired.push(pair(gi, ui));
                }
            }
            Ok(())
        })?;
        let desired = sorted_pairs(desired);
        let added: Vec<u64> = sorted_difference(&desired, &old_pairs);
        phases.mark("source memberships");
        // Removals implied by a group or user deletion get no event (workos-api.md §3.5).
        let mut removed: Vec<u64> = sorted_difference(&old_pairs, &desired);
        removed.retain(|&p| {
            let (gi, ui) = unpair(p);
            in_source_group(gi) && !users[ui as usize].has(UserSlot::DELETED)
        });
        drop(old_pairs);
        // Every membership change, adds first; and per user which ones, so a user written in
        // this run gets its membership changes in the same commit, from the record in hand
        // (no second read of a million users in the membership phase).
        let changes: Vec<(u64, bool)> = added
            .iter()
            .map(|&p| (p, true))
            .chain(removed.iter().map(|&p| (p, false)))
            .collect();
        drop((added, removed));
        let mut by_user: Vec<(u32, u32)> = Vec::with_capacity(changes.len());
        for (k, &(p, _)) in changes.iter().enumerate() {
            let ui = unpair(p).1;
            users[ui as usize].set(UserSlot::TOUCHED);
            by_user.push((ui, k as u32));
        }
        by_user.sort_unstable();
        let mut done = vec![false; changes.len()];
        let mut pending = MembershipChanges {
            changes: &changes,
            by_user: &by_user,
            done: &mut done,
        };
        // A user's groups, for role mappings: (user, group) sorted by user.
        let groups_of_user: Vec<(u32, u32)> = if roles.active() {
            let mut v: Vec<(u32, u32)> = desired
                .iter()
                .map(|&p| {
                    let (g, u) = unpair(p);
                    (u, g)
                })
                .collect();
            v.sort_unstable();
            v
        } else {
            Vec::new()
        };
        drop(desired);
        let refs_of = |ui: u32| -> Vec<String> {
            let from = groups_of_user.partition_point(|&(u, _)| u < ui);
            let to = groups_of_user.partition_point(|&(u, _)| u <= ui);
            groups_of_user[from..to]
                .iter()
                .flat_map(|&(_, g)| {
                    let gi = &groups[g as usize];
                    [gi.idp_id.clone(), gi.name.clone()]
                })
                .collect()
        };

        let mut out = SnapshotOutcome::default();
        phases.mark("membership diff");
        let mut ch = Chunker::new(self, dir_id);

        // Groups: create / update.
        let mut final_groups: HashMap<u32, StoredGroup> = HashMap::new();
        for (gi, input) in groups.iter().enumerate() {
            let gi = gi as u32;
            let existing = old_groups.get(&gi).map(|g| (g.clone(), None));
            let tx = ch.tx()?;
            let (kind, g, _) = self.stage_upsert_group(tx, existing, input)?;
            match kind {
                ChangeKind::Created => out.groups_created += 1,
                ChangeKind::Updated => out.groups_updated += 1,
                _ => {}
            }
            final_groups.insert(gi, g);
            ch.maybe_flush()?;
        }

        phases.mark("groups applied");
        // Users the source no longer lists: deleted or deactivated (before any create or
        // update, so the unique keys they free can be taken).
        for (ui, &slot) in users.iter().enumerate() {
            let Some(ulid) = slot.stored() else { continue };
            if slot.has(UserSlot::IN_SOURCE) {
                continue;
            }
            let Some((old, _)) = self.load_user(dir_id, &user_id_of(ulid))? else {
                continue;
            };
            let tx = ch.tx()?;
            let (kind, user) = self.stage_absent_user(tx, old)?;
            match kind {
                ChangeKind::Updated => out.updated += 1,
                ChangeKind::Deleted => out.deleted += 1,
                _ => {}
            }
            if kind == ChangeKind::Updated && slot.has(UserSlot::TOUCHED) {
                let tx = ch.tx()?;
                pending.stage_for(self, tx, ui as u32, &user, &final_groups, &mut out)?;
            }
            ch.maybe_flush()?;
        }

        phases.mark("absent users");
        // Pass two over the source: update and create. A user whose input, groups' roles and
        // directory settings hash to the fingerprint stored at its last reconciliation is
        // unchanged: skipped without reading its record (the common case of a scheduled run).
        let fp_base = fingerprint_base(&settings)?;
        src.for_each_user_record(&mut |record| {
            let idp_id = match &record {
                UserRecord::Built(u) => u.idp_id.as_str(),
                UserRecord::Lazy { idp_id, .. } => idp_id,
            };
            let ui = user_ids.get(idp_id).ok_or_else(|| {
                EngineError::Source(format!(
                    "user {idp_id:?} was not in the source's first pass"
                ))
            })?;
            let slot = users[ui as usize];
            let refs = if roles.active() {
                refs_of(ui)
            } else {
                Vec::new()
            };
            let fp_input = match &record {
                UserRecord::Built(u) => FpInput::Built(u),
                UserRecord::Lazy { digest, .. } => FpInput::Digest(digest),
            };
            let fp = fingerprint(&fp_base, fp_input, &roles.resolve(&refs))?;
            if slot.stored().is_some() && slot.has(UserSlot::HAS_FP) && stored_fp[ui as usize] == fp
            {
                return Ok(());
            }
            let built;
            let input = match record {
                UserRecord::Built(u) => u,
                UserRecord::Lazy { idp_id, build, .. } => {
                    built = build()?;
                    if built.idp_id != idp_id {
                        return Err(EngineError::Source(format!(
                            "user {idp_id:?} was built with idp_id {:?}",
                            built.idp_id
                        )));
                    }
                    &built
                }
            };
            validate_user(input)?;
            let existing = match slot.stored() {
                Some(ulid) => self
                    .load_user(dir_id, &user_id_of(ulid))?
                    .map(|(u, _)| (u, None)),
                None => None,
            };
            let tx = ch.tx()?;
            let (kind, user) = self.stage_upsert_user(tx, existing, input, &roles, &refs)?;
            if matches!(
                kind,
                ChangeKind::Created | ChangeKind::Updated | ChangeKind::Unchanged
            ) {
                let fp_key = layout::key(dir_id, &user.user.id);
                tx.cs.put(layout::USER_FINGERPRINTS, fp_key, fp.to_vec());
            }
            let s = &mut users[ui as usize];
            match kind {
                ChangeKind::Created => {
                    out.created += 1;
                    s.set_stored(Some(ulid_of(&user.user.id)?));
                }
                ChangeKind::Updated => out.updated += 1,
                ChangeKind::Deleted => {
                    out.deleted += 1;
                    s.set_stored(None);
                }
                // Unchanged, or nothing stored (an inactive newcomer under DeleteUser).
                _ => {}
            }
            if slot.has(UserSlot::TOUCHED)
                && matches!(
                    kind,
                    ChangeKind::Created | ChangeKind::Updated | ChangeKind::Unchanged
                )
            {
                pending.stage_for(self, tx, ui, &user, &final_groups, &mut out)?;
            }
            ch.maybe_flush()
        })?;

        phases.mark("pass2 users");
        // Memberships of users this run did not write (their record is read once here).
        for (k, &(p, _)) in changes.iter().enumerate() {
            if pending.done[k] {
                continue;
            }
            let ui = unpair(p).1;
            let Some(ulid) = users[ui as usize].stored() else {
                continue;
            };
            let Some((user, _)) = self.load_user(dir_id, &user_id_of(ulid))? else {
                continue;
            };
            let tx = ch.tx()?;
            pending.stage_for(self, tx, ui, &user, &final_groups, &mut out)?;
            ch.maybe_flush()?;
        }

        phases.mark("memberships applied");
        // Groups the snapshot no longer has.
        for (&gi, g) in &old_groups {
            if in_source_group(gi) {
                continue;
            }
            let tx = ch.tx()?;
            self.stage_delete_group(tx, &(g.clone(), None))?;
            out.groups_deleted += 1;
            ch.maybe_flush()?;
        }
        // A run with nothing to change still counts as contact (activates a new directory).
        ch.tx()?.contact = true;
        ch.finish()?;
        phases.lines.push(format!(
            "(commits: applying {:.2}s, waiting for syncs {:.2}s)",
            ch.apply_time.as_secs_f64(),
            ch.wait_time.as_secs_f64()
        ));
        out.events = ch.events;
        phases.mark("final commit");
        out.commits = ch.commits;
        phases.finish();
        tracing::info!(?out, "snapshot applied");
        Ok(out)
    }

    /// A user the snapshot no longer lists: deleted, or kept inactive (per the setting).
    fn stage_absent_user(&self, tx: &mut Tx, old: StoredUser) -> Result<(ChangeKind, StoredUser)> {
        match tx.rec.settings.deactivation {
            Deactivation::DeleteUser => {
                let mut shown = old.clone();
                shown.user.state = UserState::Inactive;
                shown.user.updated_at = tx.now;
                self.stage_delete_user(tx, &(old, None), &shown)?;
                Ok((ChangeKind::Deleted, shown))
            }
            Deactivation::KeepInactive if old.user.state == UserState::Active => {
                let mut new = old.clone();
                new.user.state = UserState::Inactive;
                let stored = self.stage_replace_user(tx, &(old, None), new)?;
                Ok((ChangeKind::Updated, stored))
            }
            Deactivation::KeepInactive => Ok((ChangeKind::Unchanged, old)),
        }
    }

    /// A user a delta says the source no longer has: deleted or kept inactive exactly as
    /// [`Self::stage_absent_user`] does in a snapshot run (one commit); a user kept inactive
    /// then leaves its groups too (one commit per group, with `user_removed` events and role
    /// refresh), as the source lists it in none — the same end state as the next full sync's.
    /// A retry after a partial failure finishes what is left. Returns what happened to the
    /// user, the memberships it left and the number of events.
    fn remove_absent_user(&self, dir_id: &str, user_id: &str) -> Result<(ChangeKind, u64, usize)> {
        let (kind, mut events) = {
            let lock = self.dir_lock(dir_id);
            let held = Self::guard(&lock);
            let mut tx = self.begin(dir_id)?;
            let Some((old, _)) = self.load_user(dir_id, user_id)? else {
                return Ok((ChangeKind::Unchanged, 0, 0));
            };
            let (kind, _) = self.stage_absent_user(&mut tx, old)?;
            let events = self.finish_unlocking(tx, held)?;
            (kind, events.len())
        };
        let mut left = 0;
        if !matches!(kind, ChangeKind::Deleted) {
            for group_id in self.group_ids_of(user_id)? {
                let change = self.remove_group_members(dir_id, &group_id, vec![user_id.into()])?;
                left += change.removed.len() as u64;
                events += change.events.len();
            }
        }
        Ok((kind, left, events))
    }

    /// Applies LDAP delta changes in order as ONE commit (see [`Self::apply_delta_with`]).
    pub fn apply_delta(&self, dir_id: &str, changes: Vec<DeltaChange>) -> Result<DeltaOutcome> {
        self.apply_delta_with(dir_id, changes, |_| Ok(()))
    }

    /// Applies LDAP delta changes in order, addressed by idp_id, and commits them together with
    /// the caller's part `also` (the sync cursor that covers them) as ONE change set: a crash
    /// leaves either all of it or none, so the cursor never moves past unapplied changes and
    /// applied changes never sit behind an old cursor. A change that fails (an unknown group)
    /// fails the run with nothing written.
    ///
    /// The changes run on the engine's ordinary per-change code over a [`StagedStore`] (reads
    /// see what the run staged; conditions on rows it did not write are re-checked by the real
    /// commit), under the directory's lock. A delta bigger than the commit limit is committed in
    /// chunks as it goes, `also` joining the last; a crash between chunks leaves the old cursor,
    /// and the retry re-applies the applied chunks as no-ops (no event twice).
    pub fn apply_delta_with(
        &self,
        dir_id: &str,
        changes: Vec<DeltaChange>,
        also: impl FnOnce(&mut ChangeSet) -> std::result::Result<(), StoreError>,
    ) -> Result<DeltaOutcome> {
        let _span = tracing::info_span!(
            "dsync.apply_delta",
            directory_id = dir_id,
            changes = changes.len()
        )
        .entered();
        let lock = self.dir_lock(dir_id);
        let _held = Self::guard(&lock);
        self.ensure_tables()?;
        let staged = Arc::new(StagedStore::new(self.store.clone()));
        let run =
            DirectoryEngine::new(staged.clone(), self.orgs.clone()).with_commit_limit(self.max_ops);
        run.tables_ready
            .store(true, std::sync::atomic::Ordering::Release);
        let mut out = DeltaOutcome::default();
        for change in changes {
            run.apply_delta_change(dir_id, change, &mut out)?;
            if staged.ops() >= self.max_ops {
                self.store.commit(staged.take())?;
                out.commits += 1;
            }
        }
        // A delta is contact with the source even when nothing changed: a directory not yet
        // (or no longer, e.g. `invalid_credentials`) linked becomes linked, in the same commit.
        let mut tx = run.begin(dir_id)?;
        if tx.rec.directory.state != idbridge_model::DirectoryState::Linked {
            tx.contact = true;
            run.finish(tx)?;
        }
        let mut cs = staged.take();
        also(&mut cs)?;
        if !cs.is_empty() {
            self.store.commit(cs)?;
            out.commits += 1;
        }
        Ok(out)
    }

    /// One delta change, counted into `out`.
    fn apply_delta_change(
        &self,
        dir_id: &str,
        change: DeltaChange,
        out: &mut DeltaOutcome,
    ) -> Result<()> {
        let (wrote, events) = match change {
            DeltaChange::UpsertUser(input) => {
                let existing = self.find_user_by_idp_id(dir_id, &input.idp_id)?;
                let r = self.upsert_user(
                    dir_id,
                    existing.as_ref().map(|u| u.user.id.as_str()),
                    input,
                    None,
                )?;
                out.count_user(r.kind);
                (
                    !matches!(r.kind, ChangeKind::Unchanged | ChangeKind::Discarded),
                    r.events.len(),
                )
            }
            DeltaChange::RemoveUser { idp_id } => {
                match self.find_user_by_idp_id(dir_id, &idp_id)? {
                    Some(u) => {
                        let (kind, left, events) = self.remove_absent_user(dir_id, &u.user.id)?;
                        out.count_user(kind);
                        out.memberships_removed += left;
                        (kind != ChangeKind::Unchanged || left > 0, events)
                    }
                    None => (false, 0),
                }
            }
            DeltaChange::UpsertGroup(input) => {
                let existing = self.find_group_by_idp_id(dir_id, &input.idp_id)?;
                let r = self.upsert_group(
                    dir_id,
                    existing.as_ref().map(|g| g.group.id.as_str()),
                    input,
                    None,
                )?;
                match r.kind {
                    ChangeKind::Created => out.groups_created += 1,
                    ChangeKind::Updated => out.groups_updated += 1,
                    _ => {}
                }
                (r.kind != ChangeKind::Unchanged, r.events.len())
            }
            DeltaChange::DeleteGroup { idp_id } => {
                match self.find_group_by_idp_id(dir_id, &idp_id)? {
                    Some(g) => {
                        let events = self.delete_group(dir_id, &g.group.id)?.events.len();
                        out.groups_deleted += 1;
                        (true, events)
                    }
                    None => (false, 0),
                }
            }
            DeltaChange::SetMembers {
                group_idp_id,
                user_idp_ids,
            } => {
                let group = self
                    .find_group_by_idp_id(dir_id, &group_idp_id)?
                    .ok_or_else(|| EngineError::not_found("directory_group", &group_idp_id))?;
                let mut ids = Vec::with_capacity(user_idp_ids.len());
                for idp in &user_idp_ids {
                    match self.find_user_by_idp_id(dir_id, idp)? {
                        Some(u) => ids.push(u.user.id),
                        None => {
                            tracing::debug!(idp_id = %idp, "member not in directory; skipped")
                        }
                    }
                }
                let r = self.set_group_members(dir_id, &group.group.id, ids)?;
                out.memberships_added += r.added.len() as u64;
                out.memberships_removed += r.removed.len() as u64;
                (!r.added.is_empty() || !r.removed.is_empty(), r.events.len())
            }
        };
        if wrote {
            out.applied += 1;
        } else {
            out.unchanged += 1;
        }
        out.events += events as u64;
        Ok(())
    }

    /// Recomputes every user's roles from their groups (after roles or mappings changed), in
    /// bounded commits with `dsync.user.updated` for each user whose role changed. Returns the
    /// number of users updated.
    pub fn recompute_roles(&self, dir_id: &str) -> Result<u64> {
        let _span = tracing::info_span!("dsync.recompute_roles", directory_id = dir_id).entered();
        let lock = self.dir_lock(dir_id);
        let _g = Self::guard(&lock);
        let probe = self.begin(dir_id)?;
        let roles: RoleCtx = self.role_ctx(
            &probe.rec.directory.organization_id,
            probe.rec.settings.role_mode,
        )?;
        drop(probe);
        let mut ch = Chunker::new(self, dir_id);
        let mut updated = 0;
        self.for_each_row(layout::USERS, &layout::prefix(dir_id), |key, bytes| {
            let old: StoredUser = from_bytes(layout::USERS, key, bytes)?;
            let refs = self.group_refs_of(dir_id, &old.user.id)?;
            let (role, role_list) = roles.resolve(&refs);
            if role == old.user.role && role_list == old.user.roles {
                return Ok(());
            }
            let mut new = old.clone();
            new.user.role = role;
            new.user.roles = role_list;
            let tx = ch.tx()?;
            self.stage_replace_user(tx, &(old, Some(bytes.to_vec())), new)?;
            updated += 1;
            ch.maybe_flush()
        })?;
        ch.flush()?;
        Ok(updated)
    }
}
