//! Directory users: upsert (create / update / deactivate), delete, unique-key slots.

use idbridge_model::tag::DirectoryUserTag;
use idbridge_model::{new_id, DirectoryUser, EventKind, IdPrefix, UserState};
use idbridge_store::ChangeSet;
use serde_json::Value;

use crate::attributes::{custom_attributes, previous_attributes};
use crate::engine::{created_at_of, from_bytes, to_bytes, to_value, DirectoryEngine, Tx};
use crate::error::{Constraint, EngineError, Result};
use crate::layout;
use crate::roles::RoleCtx;
use crate::types::{ChangeKind, Deactivation, StoredUser, UserChange, UserInput};

/// A stored record and the exact bytes read, so the commit can require them unchanged.
pub(crate) type Loaded<T> = (T, Option<Vec<u8>>);

pub(crate) fn validate_keys(keys: &[(String, String)]) -> Result<()> {
    for (index, _) in keys {
        if index.trim().is_empty() || index.contains('/') {
            return Err(EngineError::Invalid(format!(
                "unique key name {index:?} must be non-empty and contain no '/'"
            )));
        }
    }
    Ok(())
}

pub(crate) fn validate_user(input: &UserInput) -> Result<()> {
    if input.idp_id.trim().is_empty() {
        return Err(EngineError::Invalid("user idp_id is empty".into()));
    }
    validate_keys(&input.unique_keys)
}

/// Non-empty keys, deduplicated, in a stable order (so equal inputs compare equal).
pub(crate) fn normalized_keys(keys: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = keys
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// SCIM If-Match / optimistic concurrency: a stale `expected` version is a `version` conflict.
pub(crate) fn check_version(expected: Option<u64>, stored: u64) -> Result<()> {
    match expected {
        Some(v) if v != stored => Err(EngineError::conflict(
            Constraint::Version,
            format!("expected version {v}, stored {stored}"),
        )),
        _ => Ok(()),
    }
}

/// `data` of `*.updated`: the object plus `previous_attributes`.
pub(crate) fn with_previous(mut obj: Value, prev: serde_json::Map<String, Value>) -> Value {
    if let Some(o) = obj.as_object_mut() {
        o.insert("previous_attributes".to_owned(), Value::Object(prev));
    }
    obj
}

impl DirectoryEngine {
    /// Claims `(table, <dir>/<value>)` for `owner` inside the commit: taken by someone else →
    /// `Conflict` (checked now for a clear error, and again as a commit condition for races).
    pub(crate) fn claim_slot(
        &self,
        tx: &mut Tx,
        table: &str,
        what: Constraint,
        value: &str,
        owner: &str,
    ) -> Result<()> {
        let key = layout::key(tx.dir_id(), value);
        if !tx.claimed.insert(format!("{table}\u{0}{key}")) {
            let detail = format!("{what} {value:?} is used twice in this change");
            return Err(EngineError::conflict(what, detail));
        }
        match self.get_string(table, &key)? {
            Some(holder) if holder == owner => Ok(()),
            Some(holder) => {
                let detail = format!("{what} {value:?} already belongs to {holder}");
                Err(EngineError::conflict(what, detail))
            }
            None => {
                tx.cs.require_absent(table, key.clone());
                tx.cs.put(table, key, owner.as_bytes().to_vec());
                Ok(())
            }
        }
    }

    /// Moves a record's unique-key slots from `old` to `new`.
    pub(crate) fn move_slots(
        &self,
        tx: &mut Tx,
        table_of: fn(&str) -> String,
        owner: &str,
        old: &[(String, String)],
        new: &[(String, String)],
    ) -> Result<()> {
        for (index, value) in old {
            if !new.iter().any(|(i, v)| i == index && v == value) {
                let key = layout::key(tx.dir_id(), value);
                tx.cs.delete(table_of(index), key);
            }
        }
        for (index, value) in new {
            if !old.iter().any(|(i, v)| i == index && v == value) {
                let what = Constraint::UniqueKey(index.clone());
                self.claim_slot(tx, &table_of(index), what, value, owner)?;
            }
        }
        Ok(())
    }

    /// A user of `dir_id` with the bytes read (None if absent or in another directory).
    pub(crate) fn load_user(
        &self,
        dir_id: &str,
        user_id: &str,
    ) -> Result<Option<Loaded<StoredUser>>> {
        let key = layout::key(dir_id, user_id);
        match self.get_raw(layout::USERS, &key)? {
            Some(bytes) => Ok(Some((
                from_bytes(layout::USERS, &key, &bytes)?,
                Some(bytes),
            ))),
            None => Ok(None),
        }
    }

    /// Stages removal of a user and everything that points at it (no events, no counters).
    pub(crate) fn stage_user_removal(
        &self,
        cs: &mut ChangeSet,
        dir_id: &str,
        u: &StoredUser,
    ) -> Result<()> {
        self.stage_leave_directory(cs, dir_id, u)?;
        cs.delete(layout::USERS_BY_IDP, layout::key(dir_id, &u.user.idp_id));
        for (index, value) in &u.unique_keys {
            cs.delete(layout::user_key_table(index), layout::key(dir_id, value));
        }
        Ok(())
    }

    /// Stages what takes a user out of the directory's WorkOS view: the record, the id lookup
    /// and its memberships both ways (no events, no counters). The idp_id and unique-key slots
    /// stay (a parked SCIM user keeps them; [`Self::stage_user_removal`] drops them too).
    pub(crate) fn stage_leave_directory(
        &self,
        cs: &mut ChangeSet,
        dir_id: &str,
        u: &StoredUser,
    ) -> Result<()> {
        let uid = &u.user.id;
        cs.delete(layout::USERS, layout::key(dir_id, uid))
            .delete(layout::USER_DIR, uid.clone())
            .delete(layout::USER_FINGERPRINTS, layout::key(dir_id, uid));
        for gid in self.group_ids_of(uid)? {
            crate::memberships::unlink(cs, &gid, uid);
        }
        Ok(())
    }

    pub(crate) fn count_state(tx: &mut Tx, state: UserState, delta: i64) {
        let slot = match state {
            UserState::Active => &mut tx.counts.active,
            UserState::Inactive | UserState::Suspended => &mut tx.counts.inactive,
        };
        *slot = slot.saturating_add_signed(delta);
    }

    /// Removes a user in `tx` with its `dsync.user.deleted` event (the user as it leaves).
    pub(crate) fn stage_delete_user(
        &self,
        tx: &mut Tx,
        old: &Loaded<StoredUser>,
        shown: &StoredUser,
    ) -> Result<()> {
        let dir_id = tx.dir_id().to_owned();
        if let Some(bytes) = &old.1 {
            tx.cs.require_equals(
                layout::USERS,
                layout::key(&dir_id, &old.0.user.id),
                Some(bytes.clone()),
            );
        }
        self.stage_user_removal(&mut tx.cs, &dir_id, &old.0)?;
        Self::count_state(tx, old.0.user.state, -1);
        tx.emit(EventKind::DsyncUserDeleted, to_value(&shown.user)?);
        Ok(())
    }

    /// Replaces a stored user with `new` (same id), bumping the version, moving slots, fixing
    /// counters and emitting `dsync.user.updated` when a visible attribute changed.
    pub(crate) fn stage_replace_user(
        &self,
        tx: &mut Tx,
        old: &Loaded<StoredUser>,
        mut new: StoredUser,
    ) -> Result<StoredUser> {
        let dir_id = tx.dir_id().to_owned();
        let uid = new.user.id.clone();
        let key = layout::key(&dir_id, &uid);
        if let Some(bytes) = &old.1 {
            tx.cs
                .require_equals(layout::USERS, key.clone(), Some(bytes.clone()));
        }
        new.version = old.0.version + 1;
        new.user.updated_at = tx.now;
        if old.0.user.idp_id != new.user.idp_id {
            tx.cs.delete(
                layout::USERS_BY_IDP,
                layout::key(&dir_id, &old.0.user.idp_id),
            );
            let idp = new.user.idp_id.clone();
            self.claim_slot(tx, layout::USERS_BY_IDP, Constraint::IdpId, &idp, &uid)?;
        }
        self.move_slots(
            tx,
            layout::user_key_table,
            &uid,
            &old.0.unique_keys,
            &new.unique_keys,
        )?;
        if old.0.user.state != new.user.state {
            Self::count_state(tx, old.0.user.state, -1);
            Self::count_state(tx, new.user.state, 1);
        }
        // Whatever wrote this, the snapshot's fingerprint no longer vouches for the record (a
        // snapshot run re-puts it in the same commit, after this delete).
        tx.cs.delete(layout::USER_FINGERPRINTS, key.clone()).put(
            layout::USERS,
            key,
            to_bytes(&new)?,
        );
        let old_json = to_value(&old.0.user)?;
        let new_json = to_value(&new.user)?;
        let prev = previous_attributes(&old_json, &new_json);
        if !prev.is_empty() {
            tx.emit(EventKind::DsyncUserUpdated, with_previous(new_json, prev));
        }
        Ok(new)
    }

    /// Stores a new user with its slots and `dsync.user.created`.
    pub(crate) fn stage_create_user(&self, tx: &mut Tx, new: &StoredUser) -> Result<()> {
        let dir_id = tx.dir_id().to_owned();
        let uid = new.user.id.clone();
        let idp = new.user.idp_id.clone();
        self.claim_slot(tx, layout::USERS_BY_IDP, Constraint::IdpId, &idp, &uid)?;
        self.move_slots(tx, layout::user_key_table, &uid, &[], &new.unique_keys)?;
        tx.cs
            .require_absent(layout::USERS, layout::key(&dir_id, &uid))
            .put(layout::USERS, layout::key(&dir_id, &uid), to_bytes(new)?)
            .put(layout::USER_DIR, uid.clone(), dir_id.as_bytes().to_vec());
        Self::count_state(tx, new.user.state, 1);
        tx.emit_with(EventKind::DsyncUserCreated, &new.user)
    }

    /// Builds the user an input describes (id and created_at kept from `existing`).
    pub(crate) fn build_user(
        tx: &Tx,
        existing: Option<&StoredUser>,
        input: &UserInput,
        roles: &RoleCtx,
        group_refs: &[String],
    ) -> StoredUser {
        let rec = &tx.rec;
        let (id, created_at, version) = match existing {
            Some(e) => (e.user.id.clone(), e.user.created_at, e.version),
            None => {
                let id = tx
                    .preset_id
                    .clone()
                    .unwrap_or_else(|| new_id(IdPrefix::DirectoryUser));
                let at = created_at_of(IdPrefix::DirectoryUser, &id);
                (id, at, 1)
            }
        };
        let (role, role_list) = roles.resolve(group_refs);
        StoredUser {
            user: DirectoryUser {
                object: DirectoryUserTag,
                id,
                directory_id: rec.directory.id.clone(),
                organization_id: rec.directory.organization_id.clone(),
                idp_id: input.idp_id.clone(),
                email: input.email.clone(),
                first_name: input.first_name.clone(),
                last_name: input.last_name.clone(),
                name: input.name.clone(),
                emails: input.emails.clone(),
                username: input.username.clone(),
                job_title: input.job_title.clone(),
                state: if input.active {
                    UserState::Active
                } else {
                    UserState::Inactive
                },
                custom_attributes: custom_attributes(&rec.settings, input),
                raw_attributes: input.raw_attributes.clone(),
                role,
                roles: role_list,
                created_at,
                updated_at: existing.map(|e| e.user.updated_at).unwrap_or(created_at),
            },
            version,
            unique_keys: normalized_keys(&input.unique_keys),
        }
    }

    /// The core of every user write: create, update, deactivate (per the directory's setting)
    /// or nothing, staged into `tx`.
    pub(crate) fn stage_upsert_user(
        &self,
        tx: &mut Tx,
        existing: Option<Loaded<StoredUser>>,
        input: &UserInput,
        roles: &RoleCtx,
        group_refs: &[String],
    ) -> Result<(ChangeKind, StoredUser)> {
        let new = Self::build_user(
            tx,
            existing.as_ref().map(|e| &e.0),
            input,
            roles,
            group_refs,
        );
        let delete_on_deactivate =
            !input.active && tx.rec.settings.deactivation == Deactivation::DeleteUser;
        match existing {
            None if delete_on_deactivate => Ok((ChangeKind::Discarded, new)),
            None => {
                self.stage_create_user(tx, &new)?;
                Ok((ChangeKind::Created, new))
            }
            Some(old) if delete_on_deactivate => {
                let mut shown = new;
                shown.user.updated_at = tx.now;
                self.stage_delete_user(tx, &old, &shown)?;
                Ok((ChangeKind::Deleted, shown))
            }
            Some(old) => {
                if new == old.0 {
                    return Ok((ChangeKind::Unchanged, new));
                }
                let stored = self.stage_replace_user(tx, &old, new)?;
                Ok((ChangeKind::Updated, stored))
            }
        }
    }

    /// Creates (`existing_id` None) or updates a user, as one commit with its events.
    ///
    /// Create: the idp_id and every unique key must be free (`Conflict` otherwise). Update:
    /// `expected_version` (SCIM If-Match) must equal the stored version. `active: false`
    /// deletes the user (`dsync.user.deleted`) or keeps it inactive (`dsync.user.updated`) per
    /// [`Deactivation`]; a new user that arrives inactive under `DeleteUser` is not stored
    /// ([`ChangeKind::Discarded`]). An update that changes nothing writes nothing.
    pub fn upsert_user(
        &self,
        dir_id: &str,
        existing_id: Option<&str>,
        input: UserInput,
        expected_version: Option<u64>,
    ) -> Result<UserChange> {
        self.upsert_user_inner(dir_id, existing_id, None, input, expected_version)
    }

    /// Creates a user under an id the caller generated (`directory_user_<ULID>`), for protocols
    /// that need the id before the write (SCIM uses it as the `idp_id` when no `externalId`
    /// is sent). Otherwise as [`DirectoryEngine::upsert_user`] with no existing id.
    pub fn create_user_with_id(
        &self,
        dir_id: &str,
        user_id: &str,
        input: UserInput,
    ) -> Result<UserChange> {
        idbridge_model::parse_id(IdPrefix::DirectoryUser, user_id)
            .map_err(|_| EngineError::Invalid(format!("{user_id:?} is not a directory user id")))?;
        self.upsert_user_inner(dir_id, None, Some(user_id), input, None)
    }

    fn upsert_user_inner(
        &self,
        dir_id: &str,
        existing_id: Option<&str>,
        preset_id: Option<&str>,
        input: UserInput,
        expected_version: Option<u64>,
    ) -> Result<UserChange> {
        let _span = tracing::info_span!("dsync.upsert_user", directory_id = dir_id).entered();
        validate_user(&input)?;
        let lock = self.dir_lock(dir_id);
        let held = Self::guard(&lock);
        let mut tx = self.begin(dir_id)?;
        tx.preset_id = preset_id.map(str::to_owned);
        let existing = match existing_id {
            Some(id) => {
                let loaded = self
                    .load_user(dir_id, id)?
                    .ok_or_else(|| EngineError::not_found("directory_user", id))?;
                check_version(expected_version, loaded.0.version)?;
                Some(loaded)
            }
            None => None,
        };
        let roles = self.role_ctx(&tx.rec.directory.organization_id, tx.rec.settings.role_mode)?;
        let refs = match (&existing, roles.active()) {
            (Some(e), true) => self.group_refs_of(dir_id, &e.0.user.id)?,
            _ => Vec::new(),
        };
        let (kind, user) = self.stage_upsert_user(&mut tx, existing, &input, &roles, &refs)?;
        let events = self.finish_unlocking(tx, held)?;
        Ok(UserChange {
            kind,
            user,
            events,
            parked: false,
        })
    }

    /// Deletes a user (`dsync.user.deleted`) with its memberships (no `user_removed` events) and
    /// unique-key slots, as one commit.
    pub fn delete_user(&self, dir_id: &str, user_id: &str) -> Result<UserChange> {
        let _span = tracing::info_span!("dsync.delete_user", directory_id = dir_id).entered();
        let lock = self.dir_lock(dir_id);
        let held = Self::guard(&lock);
        let mut tx = self.begin(dir_id)?;
        let old = self
            .load_user(dir_id, user_id)?
            .ok_or_else(|| EngineError::not_found("directory_user", user_id))?;
        let shown = old.0.clone();
        self.stage_delete_user(&mut tx, &old, &shown)?;
        let events = self.finish_unlocking(tx, held)?;
        Ok(UserChange {
            kind: ChangeKind::Deleted,
            user: shown,
            events,
            parked: false,
        })
    }
}
