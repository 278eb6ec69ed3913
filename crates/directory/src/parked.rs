//! SCIM users deactivated under [`Deactivation::DeleteUser`]: "parked" users.
//!
//! WorkOS deletes a deactivated user (`dsync.user.deleted`), but a SCIM client (Okta, Entra ID,
//! scim2-tester) still owns the resource: it reads it back (`active: false`), finds it with
//! `userName eq ...`, PATCHes it active again, and expects its `userName` to stay taken. So a
//! SCIM deactivation does, in ONE commit, what the app must see — the user leaves the
//! directory: record, id lookup and memberships removed (no `user_removed` events), counters
//! decremented, `dsync.user.deleted` appended — and moves the record into
//! [`layout::PARKED_USERS`], where only the SCIM entry points below see it. A parked user keeps
//! its id and its `users_by_idp` / `user_key.*` slots, so uniqueness still covers it and a
//! reactivation (`active: true`) brings back the same directory user with `dsync.user.created`
//! (no groups: memberships follow what the SCIM groups say from then on).
//!
//! Why a table of its own rather than a `parked` flag on the stored user: every WorkOS read
//! path (`get_user`, `list_users`, `user_groups`, group member pages, the counters) and the
//! pull sources' snapshot and delta diffs read `dsync.users` / `dsync.user_dir`. With a flag,
//! each of them would have to learn to skip parked rows, and one forgotten path leaks a deleted
//! user to the app; with a separate table they exclude parked users by construction, and pull
//! sources (LDAP, SFTP), which have no SCIM resource to keep, go on deleting users unchanged.
//!
//! A parked member in a group write (Okta PUTs a whole group that still lists a deactivated
//! user) is accepted and skipped: it is simply not a member of the directory group.

use crate::engine::{from_bytes, to_bytes, to_value, DirectoryEngine, Tx};
use idbridge_model::EventKind;

use crate::error::{Constraint, EngineError, Result};
use crate::layout;
use crate::roles::RoleCtx;
use crate::types::{ChangeKind, Deactivation, StoredUser, UserChange, UserInput};
use crate::users::{check_version, validate_user, Loaded};

/// Where a user the SCIM layer addressed was found.
enum Found {
    /// In the directory (`dsync.users`).
    Directory(Loaded<StoredUser>),
    /// Parked (`dsync.parked_users`).
    Parked(Loaded<StoredUser>),
}

impl DirectoryEngine {
    /// A parked user of `dir_id` with the bytes read.
    pub(crate) fn load_parked(
        &self,
        dir_id: &str,
        user_id: &str,
    ) -> Result<Option<Loaded<StoredUser>>> {
        let key = layout::key(dir_id, user_id);
        match self.get_raw(layout::PARKED_USERS, &key)? {
            Some(bytes) => Ok(Some((
                from_bytes(layout::PARKED_USERS, &key, &bytes)?,
                Some(bytes),
            ))),
            None => Ok(None),
        }
    }

    fn load_scim(&self, dir_id: &str, user_id: &str) -> Result<Option<Found>> {
        if let Some(l) = self.load_user(dir_id, user_id)? {
            return Ok(Some(Found::Directory(l)));
        }
        Ok(self.load_parked(dir_id, user_id)?.map(Found::Parked))
    }

    /// A SCIM user resource of `dir_id`: a directory user or a parked one.
    pub fn get_scim_user(&self, dir_id: &str, user_id: &str) -> Result<StoredUser> {
        match self.load_scim(dir_id, user_id)? {
            Some(Found::Directory((u, _)) | Found::Parked((u, _))) => Ok(u),
            None => Err(EngineError::not_found("directory_user", user_id)),
        }
    }

    /// Whether `user_id` is a parked user of `dir_id`.
    pub fn is_parked(&self, dir_id: &str, user_id: &str) -> Result<bool> {
        Ok(self
            .get_raw(layout::PARKED_USERS, &layout::key(dir_id, user_id))?
            .is_some())
    }

    /// A SCIM user (directory or parked) by a unique key, e.g. `("scim.userName", value)`.
    pub fn find_scim_user_by_key(
        &self,
        dir_id: &str,
        index: &str,
        value: &str,
    ) -> Result<Option<StoredUser>> {
        let table = layout::user_key_table(index);
        match self.get_string(&table, &layout::key(dir_id, value))? {
            Some(uid) => self.get_scim_user(dir_id, &uid).map(Some).or_else(absent),
            None => Ok(None),
        }
    }

    /// A SCIM user (directory or parked) by idp_id (SCIM `externalId`).
    pub fn find_scim_user_by_idp_id(
        &self,
        dir_id: &str,
        idp_id: &str,
    ) -> Result<Option<StoredUser>> {
        match self.get_string(layout::USERS_BY_IDP, &layout::key(dir_id, idp_id))? {
            Some(uid) => self.get_scim_user(dir_id, &uid).map(Some).or_else(absent),
            None => Ok(None),
        }
    }

    /// Every SCIM user of a directory, directory and parked ones, in id (= creation) order.
    pub fn scim_users(&self, dir_id: &str) -> Result<Vec<StoredUser>> {
        self.get_raw(layout::DIRECTORIES, dir_id)?
            .ok_or_else(|| EngineError::not_found("directory", dir_id))?;
        let prefix = layout::prefix(dir_id);
        let mut out: Vec<StoredUser> = Vec::new();
        for table in [layout::USERS, layout::PARKED_USERS] {
            self.for_each_row(table, &prefix, |key, bytes| {
                out.push(from_bytes(table, key, bytes)?);
                Ok(())
            })?;
        }
        out.sort_by(|a, b| a.user.id.cmp(&b.user.id));
        Ok(out)
    }

    /// SCIM `POST /Users` under an id the caller generated. As
    /// [`DirectoryEngine::create_user_with_id`], except that a user arriving inactive under
    /// [`Deactivation::DeleteUser`] is parked ([`ChangeKind::Parked`], no event) instead of
    /// discarded, so the client can read it back and its `userName` stays taken.
    pub fn create_scim_user(
        &self,
        dir_id: &str,
        user_id: &str,
        input: UserInput,
    ) -> Result<UserChange> {
        idbridge_model::parse_id(idbridge_model::IdPrefix::DirectoryUser, user_id)
            .map_err(|_| EngineError::Invalid(format!("{user_id:?} is not a directory user id")))?;
        self.scim_write(dir_id, None, Some(user_id), input, None)
    }

    /// SCIM `PUT`/`PATCH` of a user (directory or parked), one commit. Under
    /// [`Deactivation::DeleteUser`]: `active: false` parks a directory user
    /// ([`ChangeKind::Parked`], `dsync.user.deleted`); a parked user that stays inactive only
    /// has its kept resource updated (no event); `active: true` brings it back with the same id
    /// ([`ChangeKind::Created`], `dsync.user.created`). Otherwise as
    /// [`DirectoryEngine::upsert_user`]. `expected_version` is SCIM's If-Match.
    pub fn update_scim_user(
        &self,
        dir_id: &str,
        user_id: &str,
        input: UserInput,
        expected_version: Option<u64>,
    ) -> Result<UserChange> {
        self.scim_write(dir_id, Some(user_id), None, input, expected_version)
    }

    /// SCIM `DELETE /Users/{id}`: a directory user is deleted as by
    /// [`DirectoryEngine::delete_user`]; a parked one is removed for good with its slots and no
    /// event (the app saw it leave when it was parked).
    pub fn delete_scim_user(&self, dir_id: &str, user_id: &str) -> Result<UserChange> {
        let _span = tracing::info_span!("dsync.delete_scim_user", directory_id = dir_id).entered();
        let lock = self.dir_lock(dir_id);
        let held = Self::guard(&lock);
        let mut tx = self.begin(dir_id)?;
        let shown = match self.load_scim(dir_id, user_id)? {
            Some(Found::Directory(old)) => {
                let shown = old.0.clone();
                self.stage_delete_user(&mut tx, &old, &shown)?;
                shown
            }
            Some(Found::Parked((old, bytes))) => {
                let key = layout::key(dir_id, user_id);
                tx.cs
                    .require_equals(layout::PARKED_USERS, key.clone(), bytes)
                    .delete(layout::PARKED_USERS, key);
                // Its slots (it holds no record, id lookup or membership in the directory).
                self.stage_user_removal(&mut tx.cs, dir_id, &old)?;
                old
            }
            None => return Err(EngineError::not_found("directory_user", user_id)),
        };
        let events = self.finish_unlocking(tx, held)?;
        Ok(UserChange {
            kind: ChangeKind::Deleted,
            user: shown,
            events,
            parked: false,
        })
    }

    fn scim_write(
        &self,
        dir_id: &str,
        existing_id: Option<&str>,
        preset_id: Option<&str>,
        input: UserInput,
        expected_version: Option<u64>,
    ) -> Result<UserChange> {
        let _span = tracing::info_span!("dsync.scim_write_user", directory_id = dir_id).entered();
        validate_user(&input)?;
        let lock = self.dir_lock(dir_id);
        let held = Self::guard(&lock);
        let mut tx = self.begin(dir_id)?;
        tx.preset_id = preset_id.map(str::to_owned);
        let existing = match existing_id {
            Some(id) => {
                let found = self
                    .load_scim(dir_id, id)?
                    .ok_or_else(|| EngineError::not_found("directory_user", id))?;
                let (Found::Directory(l) | Found::Parked(l)) = &found;
                check_version(expected_version, l.0.version)?;
                Some(found)
            }
            None => None,
        };
        let park = tx.rec.settings.deactivation == Deactivation::DeleteUser && !input.active;
        let roles = self.role_ctx(&tx.rec.directory.organization_id, tx.rec.settings.role_mode)?;
        // `parked`: the user is a parked resource after this write.
        let ((kind, user), parked) = match existing {
            None if park => {
                let new = Self::build_user(&tx, None, &input, &roles, &[]);
                self.stage_park_new(&mut tx, &new)?;
                ((ChangeKind::Parked, new), true)
            }
            Some(Found::Parked(old)) if input.active => {
                (self.stage_unpark(&mut tx, old, &input, &roles)?, false)
            }
            // Stays parked whatever the setting is now: only reactivation brings it back.
            Some(Found::Parked(old)) => (
                self.stage_update_parked(&mut tx, old, &input, &roles)?,
                true,
            ),
            Some(Found::Directory(old)) if park => {
                let refs = self.refs_for(dir_id, &old.0, &roles)?;
                (self.stage_park(&mut tx, old, &input, &roles, &refs)?, true)
            }
            Some(Found::Directory(old)) => {
                let refs = self.refs_for(dir_id, &old.0, &roles)?;
                let r = self.stage_upsert_user(&mut tx, Some(old), &input, &roles, &refs)?;
                (r, false)
            }
            None => (
                self.stage_upsert_user(&mut tx, None, &input, &roles, &[])?,
                false,
            ),
        };
        let events = self.finish_unlocking(tx, held)?;
        Ok(UserChange {
            kind,
            user,
            events,
            parked,
        })
    }

    fn refs_for(&self, dir_id: &str, u: &StoredUser, roles: &RoleCtx) -> Result<Vec<String>> {
        if roles.active() {
            self.group_refs_of(dir_id, &u.user.id)
        } else {
            Ok(Vec::new())
        }
    }

    /// Moves the idp_id and unique-key slots from `old` to `new` (same owner id).
    fn stage_slots(&self, tx: &mut Tx, old: &StoredUser, new: &StoredUser) -> Result<()> {
        let uid = new.user.id.clone();
        if old.user.idp_id != new.user.idp_id {
            let old_key = layout::key(tx.dir_id(), &old.user.idp_id);
            tx.cs.delete(layout::USERS_BY_IDP, old_key);
            let idp = new.user.idp_id.clone();
            self.claim_slot(tx, layout::USERS_BY_IDP, Constraint::IdpId, &idp, &uid)?;
        }
        self.move_slots(
            tx,
            layout::user_key_table,
            &uid,
            &old.unique_keys,
            &new.unique_keys,
        )
    }

    /// A new user arriving inactive: claims its slots and is stored parked (no event).
    fn stage_park_new(&self, tx: &mut Tx, new: &StoredUser) -> Result<()> {
        let dir_id = tx.dir_id().to_owned();
        let uid = new.user.id.clone();
        let idp = new.user.idp_id.clone();
        self.claim_slot(tx, layout::USERS_BY_IDP, Constraint::IdpId, &idp, &uid)?;
        self.move_slots(tx, layout::user_key_table, &uid, &[], &new.unique_keys)?;
        let key = layout::key(&dir_id, &uid);
        tx.cs
            .require_absent(layout::USERS, key.clone())
            .require_absent(layout::PARKED_USERS, key.clone())
            .put(layout::PARKED_USERS, key, to_bytes(new)?);
        Ok(())
    }

    /// A directory user deactivated: leaves the directory (`dsync.user.deleted` with the user as
    /// it leaves, `state: inactive`) and is parked with its slots.
    fn stage_park(
        &self,
        tx: &mut Tx,
        old: Loaded<StoredUser>,
        input: &UserInput,
        roles: &RoleCtx,
        refs: &[String],
    ) -> Result<(ChangeKind, StoredUser)> {
        let dir_id = tx.dir_id().to_owned();
        let mut new = Self::build_user(tx, Some(&old.0), input, roles, refs);
        new.version = old.0.version + 1;
        new.user.updated_at = tx.now;
        let key = layout::key(&dir_id, &new.user.id);
        if let Some(bytes) = &old.1 {
            tx.cs
                .require_equals(layout::USERS, key.clone(), Some(bytes.clone()));
        }
        self.stage_leave_directory(&mut tx.cs, &dir_id, &old.0)?;
        Self::count_state(tx, old.0.user.state, -1);
        tx.emit(EventKind::DsyncUserDeleted, to_value(&new.user)?);
        self.stage_slots(tx, &old.0, &new)?;
        tx.cs.require_absent(layout::PARKED_USERS, key.clone()).put(
            layout::PARKED_USERS,
            key,
            to_bytes(&new)?,
        );
        Ok((ChangeKind::Parked, new))
    }

    /// A parked user that stays inactive: only its kept resource changes (no event, no count).
    fn stage_update_parked(
        &self,
        tx: &mut Tx,
        old: Loaded<StoredUser>,
        input: &UserInput,
        roles: &RoleCtx,
    ) -> Result<(ChangeKind, StoredUser)> {
        let mut new = Self::build_user(tx, Some(&old.0), input, roles, &[]);
        // Roles are the app's view; the parked record keeps the ones it left with.
        new.user.role = old.0.user.role.clone();
        new.user.roles = old.0.user.roles.clone();
        if new == old.0 {
            return Ok((ChangeKind::Unchanged, new));
        }
        new.version = old.0.version + 1;
        new.user.updated_at = tx.now;
        let key = layout::key(tx.dir_id(), &new.user.id);
        tx.cs
            .require_equals(layout::PARKED_USERS, key.clone(), old.1.clone());
        self.stage_slots(tx, &old.0, &new)?;
        tx.cs.put(layout::PARKED_USERS, key, to_bytes(&new)?);
        Ok((ChangeKind::Updated, new))
    }

    /// A parked user reactivated: back in the directory under the same id, as a new user to
    /// the app (`dsync.user.created`), with no memberships.
    fn stage_unpark(
        &self,
        tx: &mut Tx,
        old: Loaded<StoredUser>,
        input: &UserInput,
        roles: &RoleCtx,
    ) -> Result<(ChangeKind, StoredUser)> {
        let dir_id = tx.dir_id().to_owned();
        let mut new = Self::build_user(tx, Some(&old.0), input, roles, &[]);
        new.version = old.0.version + 1;
        new.user.updated_at = tx.now;
        let uid = new.user.id.clone();
        let key = layout::key(&dir_id, &uid);
        tx.cs
            .require_equals(layout::PARKED_USERS, key.clone(), old.1.clone())
            .delete(layout::PARKED_USERS, key.clone());
        self.stage_slots(tx, &old.0, &new)?;
        tx.cs
            .require_absent(layout::USERS, key.clone())
            .put(layout::USERS, key, to_bytes(&new)?)
            .put(layout::USER_DIR, uid, dir_id.as_bytes().to_vec());
        Self::count_state(tx, new.user.state, 1);
        tx.emit(EventKind::DsyncUserCreated, to_value(&new.user)?);
        Ok((ChangeKind::Created, new))
    }
}

/// A slot whose holder vanished is "no user" for a lookup.
fn absent(e: EngineError) -> Result<Option<StoredUser>> {
    match e {
        EngineError::NotFound { .. } => Ok(None),
        e => Err(e),
    }
}
