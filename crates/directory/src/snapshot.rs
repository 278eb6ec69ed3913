//! Pull sources: full snapshots (LDAP full sync, SFTP CSV) diffed by idp_id, and LDAP deltas.
//!
//! Atomicity: a snapshot whose diff fits in the engine's commit limit
//! ([`MAX_COMMIT_OPS`](crate::MAX_COMMIT_OPS) writes + events by default) is applied as ONE
//! commit (all or nothing). A bigger diff is applied in bounded commits, in this order:
//! groups created/updated, users updated/deleted, users created, memberships added/removed,
//! groups deleted. Each commit carries its own events. If a run fails half-way, the commits
//! already made stay; running the same snapshot again diffs against what is now stored and
//! applies exactly the rest (re-applying an applied snapshot changes nothing and emits
//! nothing), so a failed run is resumable by simply retrying it.
//!
//! Memory: the existing users are read twice in pages (a compact idp_id map for the guard and
//! the membership diff, then full records page by page for the update diff); only users whose
//! memberships change are kept whole until the membership phase. Event bodies go to the log,
//! not into the outcome.

use std::collections::{BTreeSet, HashMap, HashSet};

use idbridge_model::UserState;

use crate::engine::{from_bytes, DirectoryEngine, Tx};
use crate::error::{EngineError, GuardError, Result};
use crate::groups::validate_group;
use crate::layout;
use crate::roles::RoleCtx;
use crate::types::{
    ChangeKind, Deactivation, DeltaChange, DeltaOutcome, GroupInput, Snapshot, SnapshotOutcome,
    SnapshotPolicy, StoredGroup, StoredUser,
};
use crate::users::validate_user;

/// The open commit of a chunked run, flushed when it grows past the engine's commit limit.
struct Chunker<'e> {
    engine: &'e DirectoryEngine,
    dir_id: String,
    tx: Option<Tx>,
    events: u64,
    commits: u64,
}

impl<'e> Chunker<'e> {
    fn new(engine: &'e DirectoryEngine, dir_id: &str) -> Self {
        Chunker {
            engine,
            dir_id: dir_id.to_owned(),
            tx: None,
            events: 0,
            commits: 0,
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
        Ok(())
    }
}

fn check_unique<'a>(what: &str, ids: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut seen = HashSet::new();
    for id in ids {
        if !seen.insert(id) {
            return Err(EngineError::Invalid(format!(
                "{what} idp_id {id:?} appears twice in the snapshot"
            )));
        }
    }
    Ok(())
}

impl DirectoryEngine {
    /// Applies a full snapshot: creates, updates and removes users and groups (by idp_id) and
    /// memberships so the directory matches it. Users missing from the snapshot follow the
    /// directory's [`Deactivation`] setting.
    ///
    /// Guard: if the run would delete or deactivate more than `max_delete_ratio` of the current
    /// users (exactly at the ratio is allowed), it returns [`GuardError::MassDeletion`] and
    /// changes nothing, unless `confirmed`. See the module docs for atomicity.
    pub fn apply_snapshot(
        &self,
        dir_id: &str,
        snap: Snapshot,
        policy: SnapshotPolicy,
    ) -> Result<SnapshotOutcome> {
        let _span = tracing::info_span!(
            "dsync.apply_snapshot",
            directory_id = dir_id,
            users = snap.users.len(),
            groups = snap.groups.len(),
            memberships = snap.memberships.len()
        )
        .entered();
        for u in &snap.users {
            validate_user(u)?;
        }
        for g in &snap.groups {
            validate_group(g)?;
        }
        check_unique("user", snap.users.iter().map(|u| u.idp_id.as_str()))?;
        check_unique("group", snap.groups.iter().map(|g| g.idp_id.as_str()))?;

        let lock = self.dir_lock(dir_id);
        let _g = Self::guard(&lock);
        let probe = self.begin(dir_id)?;
        let settings = probe.rec.settings.clone();
        let roles = self.role_ctx(&probe.rec.directory.organization_id, settings.role_mode)?;
        drop(probe);

        let inputs: HashMap<&str, usize> = snap
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.idp_id.as_str(), i))
            .collect();
        let group_inputs: HashMap<&str, &GroupInput> =
            snap.groups.iter().map(|g| (g.idp_id.as_str(), g)).collect();

        // Pass one: a compact map of existing users, for the guard and the membership diff.
        let user_prefix = layout::prefix(dir_id);
        let mut known: HashMap<String, UserState> = HashMap::new();
        let mut idp_of: HashMap<String, String> = HashMap::new();
        self.for_each_row(layout::USERS, &user_prefix, |key, bytes| {
            let u: StoredUser = from_bytes(layout::USERS, key, bytes)?;
            idp_of.insert(u.user.id.clone(), u.user.idp_id.clone());
            known.insert(u.user.idp_id, u.user.state);
            Ok(())
        })?;

        // Which existing users leave (deleted, or newly inactive when kept).
        let delete_mode = settings.deactivation == Deactivation::DeleteUser;
        let leaves = |idp: &str, state: &UserState| -> bool {
            let stays_active = inputs.get(idp).is_some_and(|&i| snap.users[i].active);
            !stays_active && (delete_mode || *state == UserState::Active)
        };
        let would_delete = known.iter().filter(|(idp, k)| leaves(idp, k)).count() as u64;
        let total = known.len() as u64;
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
        let deleted_idps: HashSet<&str> = if delete_mode {
            known
                .iter()
                .filter(|(idp, k)| leaves(idp, k))
                .map(|(idp, _)| idp.as_str())
                .collect()
        } else {
            HashSet::new()
        };

        // Existing groups and memberships, in idp terms.
        let mut old_groups: HashMap<String, StoredGroup> = HashMap::new();
        self.for_each_row(layout::GROUPS, &user_prefix, |key, bytes| {
            let g: StoredGroup = from_bytes(layout::GROUPS, key, bytes)?;
            old_groups.insert(g.group.idp_id.clone(), g);
            Ok(())
        })?;
        let mut old_pairs: HashSet<(String, String)> = HashSet::new();
        for (g_idp, g) in &old_groups {
            for uid in self.scan_suffixes(layout::MEMBERS, &layout::members_of(&g.group.id))? {
                if let Some(u_idp) = idp_of.get(&uid) {
                    old_pairs.insert((g_idp.clone(), u_idp.clone()));
                }
            }
        }
        drop(idp_of);
        let desired: HashSet<(String, String)> = snap
            .memberships
            .iter()
            .filter(|(g, u)| {
                group_inputs.contains_key(g.as_str()) && inputs.contains_key(u.as_str())
            })
            .cloned()
            .collect();
        let added: BTreeSet<&(String, String)> = desired.difference(&old_pairs).collect();
        // Removals implied by a group or user deletion get no event (workos-api.md §3.5).
        let removed: BTreeSet<&(String, String)> = old_pairs
            .difference(&desired)
            .filter(|(g, u)| {
                group_inputs.contains_key(g.as_str()) && !deleted_idps.contains(u.as_str())
            })
            .collect();
        let touched: HashSet<&str> = added
            .iter()
            .chain(removed.iter())
            .map(|(_, u)| u.as_str())
            .collect();
        let mut refs_of: HashMap<&str, Vec<String>> = HashMap::new();
        if roles.active() {
            for (g, u) in &desired {
                if let Some(gi) = group_inputs.get(g.as_str()) {
                    let r = refs_of.entry(u.as_str()).or_default();
                    r.push(gi.idp_id.clone());
                    r.push(gi.name.clone());
                }
            }
        }

        let mut out = SnapshotOutcome::default();
        let mut ch = Chunker::new(self, dir_id);

        // Groups: create / update.
        let mut final_groups: HashMap<String, StoredGroup> = HashMap::new();
        for gi in &snap.groups {
            let existing = old_groups.get(&gi.idp_id).map(|g| (g.clone(), None));
            let tx = ch.tx()?;
            let (kind, g, _) = self.stage_upsert_group(tx, existing, gi)?;
            match kind {
                ChangeKind::Created => out.groups_created += 1,
                ChangeKind::Updated => out.groups_updated += 1,
                _ => {}
            }
            final_groups.insert(gi.idp_id.clone(), g);
            ch.maybe_flush()?;
        }

        // Users: update / deactivate / delete the existing ones, page by page.
        let mut final_users: HashMap<String, StoredUser> = HashMap::new();
        let no_refs: Vec<String> = Vec::new();
        self.for_each_row(layout::USERS, &user_prefix, |key, bytes| {
            let old: StoredUser = from_bytes(layout::USERS, key, bytes)?;
            let idp = old.user.idp_id.clone();
            let tx = ch.tx()?;
            let (kind, user) = match inputs.get(idp.as_str()) {
                Some(&i) => {
                    let refs = refs_of.get(idp.as_str()).unwrap_or(&no_refs);
                    self.stage_upsert_user(tx, Some((old, None)), &snap.users[i], &roles, refs)?
                }
                None => self.stage_absent_user(tx, old)?,
            };
            match kind {
                ChangeKind::Updated => out.updated += 1,
                ChangeKind::Deleted => out.deleted += 1,
                _ => {}
            }
            if kind != ChangeKind::Deleted && touched.contains(idp.as_str()) {
                final_users.insert(idp, user);
            }
            ch.maybe_flush()
        })?;

        // Users: create the new ones.
        for input in &snap.users {
            if known.contains_key(&input.idp_id) {
                continue;
            }
            let refs = refs_of.get(input.idp_id.as_str()).unwrap_or(&no_refs);
            let tx = ch.tx()?;
            let (kind, user) = self.stage_upsert_user(tx, None, input, &roles, refs)?;
            if kind == ChangeKind::Created {
                out.created += 1;
                if touched.contains(input.idp_id.as_str()) {
                    final_users.insert(input.idp_id.clone(), user);
                }
            }
            ch.maybe_flush()?;
        }

        // Memberships.
        for (set, add) in [(&added, true), (&removed, false)] {
            for (g_idp, u_idp) in set.iter() {
                let (Some(g), Some(u)) = (final_groups.get(g_idp), final_users.get(u_idp)) else {
                    continue;
                };
                let tx = ch.tx()?;
                self.stage_membership(tx, g, u, add)?;
                if add {
                    out.memberships_added += 1;
                } else {
                    out.memberships_removed += 1;
                }
                ch.maybe_flush()?;
            }
        }

        // Groups the snapshot no longer has.
        for (g_idp, g) in &old_groups {
            if group_inputs.contains_key(g_idp.as_str()) {
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
