//! Pull sources: full snapshots (LDAP full sync, SFTP CSV) diffed by idp_id, and LDAP deltas.
//!
//! Atomicity: a snapshot whose diff fits in the engine's commit limit
//! ([`MAX_COMMIT_OPS`](crate::MAX_COMMIT_OPS) writes + events by default) is applied as ONE
//! commit (all or nothing). A bigger diff is applied in bounded commits, in this order:
//! groups created/updated, users the source no longer lists (deleted or deactivated, first so
//! they free their unique keys), users updated/created in source order, memberships added, then
//! removed, groups deleted. Each commit carries its own events. If a run fails half-way, the
//! commits already made stay; running the same snapshot again diffs against what is now stored
//! and applies exactly the rest (re-applying an applied snapshot changes nothing and emits
//! nothing), so a failed run is resumable by simply retrying it.
//!
//! Memory: the engine never holds the snapshot's users. It reads the [`SnapshotSource`] twice
//! (once to index and check it, once to apply it) and keeps only compact indexes: every idp_id
//! once, a few bytes of state per user, memberships as pairs of integers. The existing side is
//! read from the idp_id index, not from the user records; a user record is read only when its
//! input is compared with it. Event bodies go to the log, not into the outcome. So a
//! million-user CSV delivery costs tens of megabytes here, not gigabytes.

use std::collections::{HashMap, HashSet};

use idbridge_model::{parse_id, IdPrefix, UserState};
use ulid::Ulid;

use sha2::{Digest, Sha256};

use crate::engine::{from_bytes, to_bytes, DirectoryEngine, Tx};
use crate::error::{EngineError, GuardError, Result};
use crate::groups::validate_group;
use crate::layout;
use crate::roles::{RoleCtx, UserRoles};
use crate::types::{
    ChangeKind, Deactivation, DeltaChange, DeltaOutcome, GroupInput, Snapshot, SnapshotOutcome,
    SnapshotPolicy, StoredGroup, StoredUser, UserInput,
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
    /// Calls `f` for every user; called twice per run (index, then apply).
    fn for_each_user(&self, f: &mut dyn FnMut(&UserInput) -> Result<()>) -> Result<()>;
    /// Every group (groups are few: they are held in memory).
    fn groups(&self) -> Result<Vec<GroupInput>>;
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

/// The open commit of a chunked run, flushed when it grows past the engine's commit limit.
struct Chunker<'e> {
    engine: &'e DirectoryEngine,
    dir_id: String,
    tx: Option<Tx>,
    events: u64,
    commits: u64,
    /// Users written by the open commit that the membership phase needs: not readable from
    /// the store until the commit lands (cleared when it does).
    staged_users: HashMap<u32, StoredUser>,
}

impl<'e> Chunker<'e> {
    fn new(engine: &'e DirectoryEngine, dir_id: &str) -> Self {
        Chunker {
            engine,
            dir_id: dir_id.to_owned(),
            tx: None,
            events: 0,
            commits: 0,
            staged_users: HashMap::new(),
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
        if let Some(tx) = self.tx.take() {
            let wrote = tx.cs.has_writes();
            let (_, n) = self.engine.finish(tx)?;
            self.events += n;
            if wrote {
                self.commits += 1;
            }
        }
        self.staged_users.clear();
        Ok(())
    }
}

/// Each distinct idp_id once, numbered densely: the run's indexes hold `u32`s, not strings.
#[derive(Default)]
struct Interner {
    ids: HashMap<Box<str>, u32>,
}

impl Interner {
    fn intern(&mut self, s: &str) -> Result<u32> {
        if let Some(&i) = self.ids.get(s) {
            return Ok(i);
        }
        let i = u32::try_from(self.ids.len())
            .map_err(|_| EngineError::Invalid("snapshot has more than 2^32 records".into()))?;
        self.ids.insert(s.into(), i);
        Ok(i)
    }

    fn get(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
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

/// Bump when what a user record is built from changes meaning (attribute mapping code), so
/// fingerprints written by an older version stop matching.
const FINGERPRINT_VERSION: &[u8] = b"idbridge-user-fp-1";

/// What a snapshot user is reconciled from: the input, the roles its groups give it and the
/// directory's settings (attribute map, deactivation). Equal fingerprints mean an equal record.
fn fingerprint(settings: &[u8], input: &UserInput, roles: &UserRoles) -> Result<[u8; 16]> {
    let mut h = Sha256::new();
    for part in [
        FINGERPRINT_VERSION,
        settings,
        &to_bytes(input)?,
        &to_bytes(roles)?,
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let digest = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    Ok(out)
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
        let probe = self.begin(dir_id)?;
        let settings = probe.rec.settings.clone();
        let roles = self.role_ctx(&probe.rec.directory.organization_id, settings.role_mode)?;
        drop(probe);

        // Pass one over the source: check and index its users.
        let mut user_ids = Interner::default();
        let mut users: Vec<UserSlot> = Vec::new();
        src.for_each_user(&mut |u| {
            validate_user(u)?;
            let i = user_ids.intern(&u.idp_id)? as usize;
            if i < users.len() {
                return Err(EngineError::Invalid(format!(
                    "user idp_id {:?} appears twice in the snapshot",
                    u.idp_id
                )));
            }
            let mut slot = UserSlot::default();
            slot.set(UserSlot::IN_SOURCE);
            if u.active {
                slot.set(UserSlot::ACTIVE_IN_SOURCE);
            }
            users.push(slot);
            Ok(())
        })?;
        let source_users = users.len();
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
        self.for_each_row(layout::USERS_BY_IDP, &user_prefix, |key, value| {
            let idp = key.strip_prefix(&user_prefix).unwrap_or(key);
            let uid = std::str::from_utf8(value)
                .map_err(|e| EngineError::corrupt(layout::USERS_BY_IDP, key, e))?;
            let ulid = ulid_of(uid)?;
            let i = user_ids.intern(idp)?;
            if i as usize == users.len() {
                users.push(UserSlot::default());
            }
            users[i as usize].set_stored(Some(ulid));
            slot_of_id.push((ulid, i));
            Ok(())
        })?;
        slot_of_id.sort_unstable();

        // Which stored users leave (deleted, or newly inactive when kept), and the guard.
        let delete_mode = settings.deactivation == Deactivation::DeleteUser;
        let mut would_delete = 0u64;
        let mut total = 0u64;
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
            }
            .into());
        }

        // Stored groups and memberships, as integer pairs.
        let mut old_groups: HashMap<u32, StoredGroup> = HashMap::new();
        self.for_each_row(layout::GROUPS, &user_prefix, |key, bytes| {
            let g: StoredGroup = from_bytes(layout::GROUPS, key, bytes)?;
            old_groups.insert(group_ids.intern(&g.group.idp_id)?, g);
            Ok(())
        })?;
        let mut old_pairs: HashSet<u64> = HashSet::new();
        for (&gi, g) in &old_groups {
            let members = layout::members_of(&g.group.id);
            self.for_each_row(layout::MEMBERS, &members, |key, _| {
                let uid = key.strip_prefix(&members).unwrap_or(key);
                if let Ok(ulid) = ulid_of(uid) {
                    if let Ok(at) = slot_of_id.binary_search_by(|&(u, _)| u.cmp(&ulid)) {
                        old_pairs.insert(pair(gi, slot_of_id[at].1));
                    }
                }
                Ok(())
            })?;
        }
        drop(slot_of_id);
        let in_source_group = |gi: u32| (gi as usize) < source_groups;
        let mut desired: HashSet<u64> = HashSet::new();
        src.for_each_membership(&mut |g, u| {
            if let (Some(gi), Some(ui)) = (group_ids.get(g), user_ids.get(u)) {
                if in_source_group(gi) && users[ui as usize].has(UserSlot::IN_SOURCE) {
                    desired.insert(pair(gi, ui));
                }
            }
            Ok(())
        })?;
        let mut added: Vec<u64> = desired.difference(&old_pairs).copied().collect();
        // Removals implied by a group or user deletion get no event (workos-api.md §3.5).
        let mut removed: Vec<u64> = old_pairs
            .difference(&desired)
            .copied()
            .filter(|&p| {
                let (gi, ui) = unpair(p);
                in_source_group(gi) && !users[ui as usize].has(UserSlot::DELETED)
            })
            .collect();
        drop(old_pairs);
        added.sort_unstable();
        removed.sort_unstable();
        for &p in added.iter().chain(removed.iter()) {
            users[unpair(p).1 as usize].set(UserSlot::TOUCHED);
        }
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
                ch.staged_users.insert(ui as u32, user);
            }
            ch.maybe_flush()?;
        }

        // Pass two over the source: update and create. A user whose input, groups' roles and
        // directory settings hash to the fingerprint stored at its last reconciliation is
        // unchanged: skipped without reading its record (the common case of a scheduled run).
        let settings_bytes = to_bytes(&settings)?;
        src.for_each_user(&mut |input| {
            let ui = user_ids.get(&input.idp_id).ok_or_else(|| {
                EngineError::Source(format!(
                    "user {:?} was not in the source's first pass",
                    input.idp_id
                ))
            })?;
            let slot = users[ui as usize];
            let refs = if roles.active() {
                refs_of(ui)
            } else {
                Vec::new()
            };
            let fp = fingerprint(&settings_bytes, input, &roles.resolve(&refs))?;
            let existing = match slot.stored() {
                Some(ulid) => {
                    let id = user_id_of(ulid);
                    let fp_key = layout::key(dir_id, &id);
                    if self
                        .get_raw(layout::USER_FINGERPRINTS, &fp_key)?
                        .is_some_and(|stored| stored == fp)
                    {
                        return Ok(());
                    }
                    self.load_user(dir_id, &id)?.map(|(u, _)| (u, None))
                }
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
                && matches!(kind, ChangeKind::Created | ChangeKind::Updated)
            {
                ch.staged_users.insert(ui, user);
            }
            ch.maybe_flush()
        })?;

        // Memberships.
        for (set, add) in [(&added, true), (&removed, false)] {
            for &p in set {
                let (gi, ui) = unpair(p);
                let Some(g) = final_groups.get(&gi) else {
                    continue;
                };
                let user = match ch.staged_users.get(&ui) {
                    Some(u) => u.clone(),
                    None => {
                        let Some(ulid) = users[ui as usize].stored() else {
                            continue;
                        };
                        match self.load_user(dir_id, &user_id_of(ulid))? {
                            Some((u, _)) => u,
                            None => continue,
                        }
                    }
                };
                let tx = ch.tx()?;
                self.stage_membership(tx, g, &user, add)?;
                if add {
                    out.memberships_added += 1;
                } else {
                    out.memberships_removed += 1;
                }
                ch.maybe_flush()?;
            }
        }

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
        ch.flush()?;
        out.events = ch.events;
        out.commits = ch.commits;
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

    /// Applies LDAP delta changes in order, each as its own commit (addressed by idp_id, so a
    /// failed batch can be retried from the start: already-applied changes are no-ops).
    pub fn apply_delta(&self, dir_id: &str, changes: Vec<DeltaChange>) -> Result<DeltaOutcome> {
        let _span = tracing::info_span!(
            "dsync.apply_delta",
            directory_id = dir_id,
            changes = changes.len()
        )
        .entered();
        let mut out = DeltaOutcome::default();
        for change in changes {
            let (wrote, events) = match change {
                DeltaChange::UpsertUser(input) => {
                    let existing = self.find_user_by_idp_id(dir_id, &input.idp_id)?;
                    let r = self.upsert_user(
                        dir_id,
                        existing.as_ref().map(|u| u.user.id.as_str()),
                        input,
                        None,
                    )?;
                    (
                        !matches!(r.kind, ChangeKind::Unchanged | ChangeKind::Discarded),
                        r.events.len(),
                    )
                }
                DeltaChange::DeleteUser { idp_id } => {
                    match self.find_user_by_idp_id(dir_id, &idp_id)? {
                        Some(u) => (true, self.delete_user(dir_id, &u.user.id)?.events.len()),
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
                    (r.kind != ChangeKind::Unchanged, r.events.len())
                }
                DeltaChange::DeleteGroup { idp_id } => {
                    match self.find_group_by_idp_id(dir_id, &idp_id)? {
                        Some(g) => (true, self.delete_group(dir_id, &g.group.id)?.events.len()),
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
                    (!r.added.is_empty() || !r.removed.is_empty(), r.events.len())
                }
            };
            if wrote {
                out.applied += 1;
            } else {
                out.unchanged += 1;
            }
            out.events += events as u64;
        }
        Ok(out)
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
