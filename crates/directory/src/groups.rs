//! Directory groups and memberships, with role recomputation for the members they affect.

use std::collections::{BTreeSet, HashSet};

use idbridge_model::tag::DirectoryGroupTag;
use idbridge_model::{new_id, DirectoryGroup, EventKind, IdPrefix};

use crate::attributes::previous_attributes;
use crate::engine::{created_at_of, from_bytes, to_bytes, to_value, DirectoryEngine, Tx};
use crate::error::{Constraint, EngineError, Result};
use crate::layout;
use crate::memberships;
use crate::roles::RoleCtx;
use crate::types::{
    ChangeKind, GroupChange, GroupInput, GroupWrite, MembershipChange, StoredGroup, StoredUser,
};
use crate::users::{check_version, normalized_keys, validate_keys, with_previous, Loaded};

pub(crate) fn validate_group(input: &GroupInput) -> Result<()> {
    if input.idp_id.trim().is_empty() {
        return Err(EngineError::Invalid("group idp_id is empty".into()));
    }
    validate_keys(&input.unique_keys)
}

/// How a group write changes the group's members (user ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberEdit {
    /// Exactly these users (SCIM POST and PUT of a group).
    Set(Vec<String>),
    /// Add these, remove those; members named in neither stay (SCIM PATCH: concurrent PATCHes
    /// adding other members, as Okta sends them, do not undo each other).
    Delta {
        /// Users to add (already-members are ignored).
        add: Vec<String>,
        /// Users to remove (non-members are ignored).
        remove: Vec<String>,
    },
}

/// What [`DirectoryEngine::stage_members`] staged.
#[derive(Default)]
struct StagedMembers {
    added: Vec<String>,
    removed: Vec<String>,
    /// The users linked (`true`) or unlinked (`false`), for role recomputation.
    loaded: Vec<(StoredUser, bool)>,
}

impl DirectoryEngine {
    /// A group of `dir_id` with the bytes read (None if absent or in another directory).
    pub(crate) fn load_group(
        &self,
        dir_id: &str,
        group_id: &str,
    ) -> Result<Option<Loaded<StoredGroup>>> {
        let key = layout::key(dir_id, group_id);
        match self.get_raw(layout::GROUPS, &key)? {
            Some(bytes) => Ok(Some((
                from_bytes(layout::GROUPS, &key, &bytes)?,
                Some(bytes),
            ))),
            None => Ok(None),
        }
    }

    pub(crate) fn build_group(
        tx: &Tx,
        existing: Option<&StoredGroup>,
        input: &GroupInput,
    ) -> StoredGroup {
        let (id, created_at, updated_at, version) = match existing {
            Some(e) => (
                e.group.id.clone(),
                e.group.created_at,
                e.group.updated_at,
                e.version,
            ),
            None => {
                let id = tx
                    .preset_id
                    .clone()
                    .unwrap_or_else(|| new_id(IdPrefix::DirectoryGroup));
                let at = created_at_of(IdPrefix::DirectoryGroup, &id);
                (id, at, at, 1)
            }
        };
        StoredGroup {
            group: DirectoryGroup {
                object: DirectoryGroupTag,
                id,
                idp_id: input.idp_id.clone(),
                directory_id: tx.rec.directory.id.clone(),
                organization_id: tx.rec.directory.organization_id.clone(),
                name: input.name.clone(),
                raw_attributes: input.raw_attributes.clone(),
                created_at,
                updated_at,
            },
            version,
            unique_keys: normalized_keys(&input.unique_keys),
        }
    }

    /// Creates or updates a group in `tx` (events included). Returns the stored group and
    /// whether its role-relevant identity (idp_id or name) changed.
    pub(crate) fn stage_upsert_group(
        &self,
        tx: &mut Tx,
        existing: Option<Loaded<StoredGroup>>,
        input: &GroupInput,
    ) -> Result<(ChangeKind, StoredGroup, bool)> {
        let mut new = Self::build_group(tx, existing.as_ref().map(|e| &e.0), input);
        let dir_id = tx.dir_id().to_owned();
        let gid = new.group.id.clone();
        let key = layout::key(&dir_id, &gid);
        let Some(old) = existing else {
            let idp = new.group.idp_id.clone();
            self.claim_slot(tx, layout::GROUPS_BY_IDP, Constraint::IdpId, &idp, &gid)?;
            self.move_slots(tx, layout::group_key_table, &gid, &[], &new.unique_keys)?;
            tx.cs
                .require_absent(layout::GROUPS, key.clone())
                .put(layout::GROUPS, key, to_bytes(&new)?)
                .put(layout::GROUP_DIR, gid, dir_id.as_bytes().to_vec());
            tx.counts.groups += 1;
            tx.emit(EventKind::DsyncGroupCreated, to_value(&new.group)?);
            return Ok((ChangeKind::Created, new, false));
        };
        if new == old.0 {
            return Ok((ChangeKind::Unchanged, new, false));
        }
        if let Some(bytes) = &old.1 {
            tx.cs
                .require_equals(layout::GROUPS, key.clone(), Some(bytes.clone()));
        }
        new.version = old.0.version + 1;
        new.group.updated_at = tx.now;
        if old.0.group.idp_id != new.group.idp_id {
            tx.cs.delete(
                layout::GROUPS_BY_IDP,
                layout::key(&dir_id, &old.0.group.idp_id),
            );
            let idp = new.group.idp_id.clone();
            self.claim_slot(tx, layout::GROUPS_BY_IDP, Constraint::IdpId, &idp, &gid)?;
        }
        self.move_slots(
            tx,
            layout::group_key_table,
            &gid,
            &old.0.unique_keys,
            &new.unique_keys,
        )?;
        tx.cs.put(layout::GROUPS, key, to_bytes(&new)?);
        let new_json = to_value(&new.group)?;
        let prev = previous_attributes(&to_value(&old.0.group)?, &new_json);
        if !prev.is_empty() {
            tx.emit(EventKind::DsyncGroupUpdated, with_previous(new_json, prev));
        }
        let identity_changed =
            old.0.group.idp_id != new.group.idp_id || old.0.group.name != new.group.name;
        Ok((ChangeKind::Updated, new, identity_changed))
    }

    /// Creates (`existing_id` None; the idp_id and unique keys must be free) or updates a
    /// group, as one commit. A rename or idp_id change recomputes the members' roles.
    pub fn upsert_group(
        &self,
        dir_id: &str,
        existing_id: Option<&str>,
        input: GroupInput,
        expected_version: Option<u64>,
    ) -> Result<GroupChange> {
        self.upsert_group_inner(dir_id, existing_id, None, input, expected_version)
    }

    /// Creates a group under an id the caller generated (`directory_group_<ULID>`); see
    /// [`DirectoryEngine::create_user_with_id`].
    pub fn create_group_with_id(
        &self,
        dir_id: &str,
        group_id: &str,
        input: GroupInput,
    ) -> Result<GroupChange> {
        idbridge_model::parse_id(IdPrefix::DirectoryGroup, group_id).map_err(|_| {
            EngineError::Invalid(format!("{group_id:?} is not a directory group id"))
        })?;
        self.upsert_group_inner(dir_id, None, Some(group_id), input, None)
    }

    fn upsert_group_inner(
        &self,
        dir_id: &str,
        existing_id: Option<&str>,
        preset_id: Option<&str>,
        input: GroupInput,
        expected_version: Option<u64>,
    ) -> Result<GroupChange> {
        let w = self.write_group_inner(
            dir_id,
            existing_id,
            preset_id,
            Some(input),
            None,
            expected_version,
        )?;
        Ok(GroupChange {
            kind: w.kind,
            group: w.group,
            events: w.events,
        })
    }

    /// Creates a group under an id the caller generated, with its first members, as ONE
    /// commit (a SCIM POST of a group with `members`). Members must be users of the directory
    /// (parked SCIM users are skipped).
    pub fn create_group_with_members(
        &self,
        dir_id: &str,
        group_id: &str,
        input: GroupInput,
        members: Vec<String>,
    ) -> Result<GroupWrite> {
        idbridge_model::parse_id(IdPrefix::DirectoryGroup, group_id).map_err(|_| {
            EngineError::Invalid(format!("{group_id:?} is not a directory group id"))
        })?;
        self.write_group_inner(
            dir_id,
            None,
            Some(group_id),
            Some(input),
            Some(MemberEdit::Set(members)),
            None,
        )
    }

    /// Changes a group's attributes (`input`, None = keep) and members (None = keep) as ONE
    /// commit (a SCIM PUT or PATCH of a group is one change: a crash or a reader never sees
    /// the new name without the new members). `expected_version` guards the group record.
    pub fn update_group(
        &self,
        dir_id: &str,
        group_id: &str,
        input: Option<GroupInput>,
        members: Option<MemberEdit>,
        expected_version: Option<u64>,
    ) -> Result<GroupWrite> {
        self.write_group_inner(
            dir_id,
            Some(group_id),
            None,
            input,
            members,
            expected_version,
        )
    }

    fn write_group_inner(
        &self,
        dir_id: &str,
        existing_id: Option<&str>,
        preset_id: Option<&str>,
        input: Option<GroupInput>,
        members: Option<MemberEdit>,
        expected_version: Option<u64>,
    ) -> Result<GroupWrite> {
        let _span = tracing::info_span!("dsync.write_group", directory_id = dir_id).entered();
        if let Some(input) = &input {
            validate_group(input)?;
        }
        let lock = self.dir_lock(dir_id);
        let held = Self::guard(&lock);
        let mut tx = self.begin(dir_id)?;
        tx.preset_id = preset_id.map(str::to_owned);
        let (kind, group, identity_changed) = match (existing_id, input) {
            (Some(id), input) => {
                let loaded = self
                    .load_group(dir_id, id)?
                    .ok_or_else(|| EngineError::not_found("directory_group", id))?;
                check_version(expected_version, loaded.0.version)?;
                match input {
                    Some(input) => self.stage_upsert_group(&mut tx, Some(loaded), &input)?,
                    None => (ChangeKind::Unchanged, loaded.0, false),
                }
            }
            (None, Some(input)) => self.stage_upsert_group(&mut tx, None, &input)?,
            (None, None) => {
                return Err(EngineError::Invalid(
                    "a new group needs its attributes".into(),
                ))
            }
        };
        let staged = match members {
            Some(edit) => self.stage_members(&mut tx, &group, edit)?,
            None => StagedMembers::default(),
        };
        let roles = self.role_ctx(&tx.rec.directory.organization_id, tx.rec.settings.role_mode)?;
        if roles.active() {
            let gid = group.group.id.clone();
            let mut seen = HashSet::new();
            for (u, add) in &staged.loaded {
                if seen.insert(u.user.id.clone()) {
                    let (joined, left) = if *add {
                        (Some(&group), None)
                    } else {
                        (None, Some(gid.as_str()))
                    };
                    self.stage_role_refresh(&mut tx, &roles, &u.user.id, joined, left)?;
                }
            }
            // A rename or idp_id change moves the roles of the members who stay.
            if identity_changed {
                for uid in self.member_ids(&gid)? {
                    if !staged.removed.contains(&uid) && seen.insert(uid.clone()) {
                        self.stage_role_refresh(&mut tx, &roles, &uid, Some(&group), None)?;
                    }
                }
            }
        }
        let events = self.finish_unlocking(tx, held)?;
        Ok(GroupWrite {
            kind,
            group,
            added: staged.added,
            removed: staged.removed,
            events,
        })
    }

    /// Deletes a group and its memberships as one commit: `dsync.group.deleted` only (member
    /// removal is implied, workos-api.md §3.5), plus `dsync.user.updated` for members whose
    /// role changes.
    pub fn delete_group(&self, dir_id: &str, group_id: &str) -> Result<GroupChange> {
        let _span = tracing::info_span!("dsync.delete_group", directory_id = dir_id).entered();
        let lock = self.dir_lock(dir_id);
        let held = Self::guard(&lock);
        let mut tx = self.begin(dir_id)?;
        let old = self
            .load_group(dir_id, group_id)?
            .ok_or_else(|| EngineError::not_found("directory_group", group_id))?;
        let members = self.stage_delete_group(&mut tx, &old)?;
        let roles = self.role_ctx(&tx.rec.directory.organization_id, tx.rec.settings.role_mode)?;
        if roles.active() {
            for uid in members {
                self.stage_role_refresh(&mut tx, &roles, &uid, None, Some(group_id))?;
            }
        }
        let events = self.finish_unlocking(tx, held)?;
        Ok(GroupChange {
            kind: ChangeKind::Deleted,
            group: old.0,
            events,
        })
    }

    /// Stages a group's removal with its memberships and event; returns the former members.
    pub(crate) fn stage_delete_group(
        &self,
        tx: &mut Tx,
        old: &Loaded<StoredGroup>,
    ) -> Result<Vec<String>> {
        let dir_id = tx.dir_id().to_owned();
        let gid = old.0.group.id.clone();
        let key = layout::key(&dir_id, &gid);
        if let Some(bytes) = &old.1 {
            tx.cs
                .require_equals(layout::GROUPS, key.clone(), Some(bytes.clone()));
        }
        tx.cs
            .delete(layout::GROUPS, key)
            .delete(layout::GROUP_DIR, gid.clone())
            .delete(
                layout::GROUPS_BY_IDP,
                layout::key(&dir_id, &old.0.group.idp_id),
            );
        for (index, value) in &old.0.unique_keys {
            tx.cs
                .delete(layout::group_key_table(index), layout::key(&dir_id, value));
        }
        let members = self.member_ids(&gid)?;
        for uid in &members {
            memberships::unlink(&mut tx.cs, &gid, uid);
        }
        tx.counts.groups = tx.counts.groups.saturating_sub(1);
        tx.emit(EventKind::DsyncGroupDeleted, to_value(&old.0.group)?);
        Ok(members)
    }

    /// Recomputes one user's roles as if `joined` were added / `left` removed, and stages the
    /// update (`dsync.user.updated` with the old `role`/`roles`) if they change.
    pub(crate) fn stage_role_refresh(
        &self,
        tx: &mut Tx,
        roles: &RoleCtx,
        user_id: &str,
        joined: Option<&StoredGroup>,
        left: Option<&str>,
    ) -> Result<()> {
        let dir_id = tx.dir_id().to_owned();
        let Some(old) = self.load_user(&dir_id, user_id)? else {
            return Ok(());
        };
        let mut refs = Vec::new();
        for gid in self.group_ids_of(user_id)? {
            if Some(gid.as_str()) == left || joined.is_some_and(|g| g.group.id == gid) {
                continue;
            }
            if let Some((g, _)) = self.load_group(&dir_id, &gid)? {
                refs.push(g.group.idp_id);
                refs.push(g.group.name);
            }
        }
        if let Some(g) = joined {
            refs.push(g.group.idp_id.clone());
            refs.push(g.group.name.clone());
        }
        let (role, role_list) = roles.resolve(&refs);
        if role == old.0.user.role && role_list == old.0.user.roles {
            return Ok(());
        }
        let mut new = old.0.clone();
        new.user.role = role;
        new.user.roles = role_list;
        self.stage_replace_user(tx, &old, new)?;
        Ok(())
    }

    /// Replaces a group's members (SCIM PUT semantics): the diff becomes
    /// `dsync.group.user_added` / `user_removed`, one commit.
    pub fn set_group_members(
        &self,
        dir_id: &str,
        group_id: &str,
        members: Vec<String>,
    ) -> Result<MembershipChange> {
        self.change_members(dir_id, group_id, MemberEdit::Set(members))
    }

    /// Adds users to a group (already-members are ignored), one commit.
    pub fn add_group_members(
        &self,
        dir_id: &str,
        group_id: &str,
        users: Vec<String>,
    ) -> Result<MembershipChange> {
        let edit = MemberEdit::Delta {
            add: users,
            remove: Vec::new(),
        };
        self.change_members(dir_id, group_id, edit)
    }

    /// Removes users from a group (non-members are ignored), one commit.
    pub fn remove_group_members(
        &self,
        dir_id: &str,
        group_id: &str,
        users: Vec<String>,
    ) -> Result<MembershipChange> {
        let edit = MemberEdit::Delta {
            add: Vec::new(),
            remove: users,
        };
        self.change_members(dir_id, group_id, edit)
    }

    fn change_members(
        &self,
        dir_id: &str,
        group_id: &str,
        edit: MemberEdit,
    ) -> Result<MembershipChange> {
        let w = self.write_group_inner(dir_id, Some(group_id), None, None, Some(edit), None)?;
        Ok(MembershipChange {
            added: w.added,
            removed: w.removed,
            events: w.events,
        })
    }

    /// Stages the membership links, unlinks and events of `edit` against the stored members.
    fn stage_members(
        &self,
        tx: &mut Tx,
        group: &StoredGroup,
        edit: MemberEdit,
    ) -> Result<StagedMembers> {
        let dir_id = tx.dir_id().to_owned();
        let group_id = group.group.id.as_str();
        let current: BTreeSet<String> = self.member_ids(group_id)?.into_iter().collect();
        let (mut added, removed): (Vec<String>, Vec<String>) = match edit {
            MemberEdit::Set(users) => {
                let given: BTreeSet<String> = users.into_iter().collect();
                (
                    given.difference(&current).cloned().collect(),
                    current.difference(&given).cloned().collect(),
                )
            }
            MemberEdit::Delta { add, remove } => {
                let add: BTreeSet<String> = add.into_iter().collect();
                let remove: BTreeSet<String> = remove.into_iter().collect();
                (
                    add.difference(&current).cloned().collect(),
                    remove.intersection(&current).cloned().collect(),
                )
            }
        };
        let mut loaded: Vec<(StoredUser, bool)> = Vec::new();
        let mut parked = Vec::new();
        for uid in &added {
            match self.load_user(&dir_id, uid)? {
                Some((u, _)) => loaded.push((u, true)),
                // A deactivated SCIM user the IdP still lists (Okta PUTs whole groups): not an
                // error, and not a member of the directory group while it is parked.
                None if self.is_parked(&dir_id, uid)? => parked.push(uid.clone()),
                None => {
                    return Err(EngineError::Invalid(format!(
                        "member {uid} is not a user of this directory"
                    )))
                }
            }
        }
        added.retain(|uid| !parked.contains(uid));
        for uid in &removed {
            // A member whose user record vanished is still unlinked, just without an event.
            match self.load_user(&dir_id, uid)? {
                Some((u, _)) => loaded.push((u, false)),
                None => memberships::unlink(&mut tx.cs, group_id, uid),
            }
        }
        for (u, add) in &loaded {
            self.stage_membership(tx, group, u, *add)?;
        }
        Ok(StagedMembers {
            added,
            removed,
            loaded,
        })
    }

    /// Links or unlinks one membership with its event.
    pub(crate) fn stage_membership(
        &self,
        tx: &mut Tx,
        group: &StoredGroup,
        user: &StoredUser,
        add: bool,
    ) -> Result<()> {
        let (gid, uid) = (&group.group.id, &user.user.id);
        if add {
            memberships::link(&mut tx.cs, gid, uid);
        } else {
            memberships::unlink(&mut tx.cs, gid, uid);
        }
        /// `data` of `dsync.group.user_added` / `user_removed`.
        #[derive(serde::Serialize)]
        struct Data<'a> {
            directory_id: &'a str,
            user: &'a idbridge_model::DirectoryUser,
            group: &'a idbridge_model::DirectoryGroup,
        }
        let kind = if add {
            EventKind::DsyncGroupUserAdded
        } else {
            EventKind::DsyncGroupUserRemoved
        };
        let dir_id = tx.dir_id().to_owned();
        tx.emit_with(
            kind,
            &Data {
                directory_id: &dir_id,
                user: &user.user,
                group: &group.group,
            },
        )
    }
}
