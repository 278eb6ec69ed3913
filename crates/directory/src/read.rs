//! Reads for the REST API and the protocol layers: by id, by key, paged lists.

use idbridge_model::DirectoryUserWithGroups;

use crate::engine::{from_bytes, DirectoryEngine};
use crate::error::{EngineError, Result};
use crate::layout;
use crate::types::{DirectoryRecord, Page, PageRequest, StoredGroup, StoredUser};

impl DirectoryEngine {
    fn user_dir(&self, user_id: &str) -> Result<String> {
        self.get_string(layout::USER_DIR, user_id)?
            .ok_or_else(|| EngineError::not_found("directory_user", user_id))
    }

    fn group_dir(&self, group_id: &str) -> Result<String> {
        self.get_string(layout::GROUP_DIR, group_id)?
            .ok_or_else(|| EngineError::not_found("directory_group", group_id))
    }

    /// A user by id; with `dir_id`, only if it belongs to that directory (tenancy for SCIM).
    pub fn get_user(&self, dir_id: Option<&str>, user_id: &str) -> Result<StoredUser> {
        let dir = match dir_id {
            Some(d) => d.to_owned(),
            None => self.user_dir(user_id)?,
        };
        self.load_user(&dir, user_id)?
            .map(|(u, _)| u)
            .ok_or_else(|| EngineError::not_found("directory_user", user_id))
    }

    /// A group by id; with `dir_id`, only if it belongs to that directory.
    pub fn get_group(&self, dir_id: Option<&str>, group_id: &str) -> Result<StoredGroup> {
        let dir = match dir_id {
            Some(d) => d.to_owned(),
            None => self.group_dir(group_id)?,
        };
        self.load_group(&dir, group_id)?
            .map(|(g, _)| g)
            .ok_or_else(|| EngineError::not_found("directory_group", group_id))
    }

    /// `GET /directory_users/{id}`: the user with its groups (in group id order).
    pub fn get_user_with_groups(&self, user_id: &str) -> Result<DirectoryUserWithGroups> {
        let u = self.get_user(None, user_id)?;
        let groups = self
            .user_groups(user_id)?
            .into_iter()
            .map(|g| g.group)
            .collect();
        Ok(DirectoryUserWithGroups {
            user: u.user,
            groups,
        })
    }

    /// Attaches each user's groups (the `/directory_users` list shape).
    pub fn with_groups(&self, users: Vec<StoredUser>) -> Result<Vec<DirectoryUserWithGroups>> {
        let mut out = Vec::with_capacity(users.len());
        for u in users {
            // A user deleted between reading the page and reading its groups is left out, as
            // a page read a moment later would leave it out: the rest of the page stays valid.
            let Some(dir) = self.get_string(layout::USER_DIR, &u.user.id)? else {
                continue;
            };
            let groups = self
                .groups_in(&dir, &u.user.id)?
                .into_iter()
                .map(|g| g.group)
                .collect();
            out.push(DirectoryUserWithGroups {
                user: u.user,
                groups,
            });
        }
        Ok(out)
    }

    /// The groups of a user, in group id order.
    pub fn user_groups(&self, user_id: &str) -> Result<Vec<StoredGroup>> {
        let dir = self.user_dir(user_id)?;
        self.groups_in(&dir, user_id)
    }

    /// The groups of a user of directory `dir`, in group id order.
    fn groups_in(&self, dir: &str, user_id: &str) -> Result<Vec<StoredGroup>> {
        let mut out = Vec::new();
        for gid in self.group_ids_of(user_id)? {
            if let Some((g, _)) = self.load_group(dir, &gid)? {
                out.push(g);
            }
        }
        Ok(out)
    }

    /// The user ids of a group's members, in id order (use `list_users` with a group filter to
    /// page through big groups).
    pub fn group_members(&self, group_id: &str) -> Result<Vec<String>> {
        self.group_dir(group_id)?;
        self.member_ids(group_id)
    }

    /// A user by idp_id.
    pub fn find_user_by_idp_id(&self, dir_id: &str, idp_id: &str) -> Result<Option<StoredUser>> {
        match self.get_string(layout::USERS_BY_IDP, &layout::key(dir_id, idp_id))? {
            Some(uid) => Ok(self.load_user(dir_id, &uid)?.map(|(u, _)| u)),
            None => Ok(None),
        }
    }

    /// Every user idp_id of a directory, from the idp_id index (no record is parsed): pull
    /// sources that learn deletions as "everything not named present" diff against it.
    pub fn user_idp_ids(&self, dir_id: &str) -> Result<Vec<String>> {
        self.idp_ids(layout::USERS_BY_IDP, dir_id)
    }

    /// Every group idp_id of a directory, from the idp_id index.
    pub fn group_idp_ids(&self, dir_id: &str) -> Result<Vec<String>> {
        self.idp_ids(layout::GROUPS_BY_IDP, dir_id)
    }

    /// One ordered pass over an idp_id index (no pages: a directory may hold 100,000s).
    fn idp_ids(&self, table: &str, dir_id: &str) -> Result<Vec<String>> {
        let prefix = layout::prefix(dir_id);
        let mut out = Vec::new();
        self.store()
            .for_each_prefixed(table, &prefix, &mut |k, _| {
                let k = k.strip_prefix(prefix.as_bytes()).unwrap_or(k);
                out.push(String::from_utf8_lossy(k).into_owned());
                true
            })?;
        Ok(out)
    }

    /// A user by a unique key (e.g. `("scim.userName", normalized value)`).
    pub fn find_user_by_key(
        &self,
        dir_id: &str,
        index: &str,
        value: &str,
    ) -> Result<Option<StoredUser>> {
        let table = layout::user_key_table(index);
        match self.get_string(&table, &layout::key(dir_id, value))? {
            Some(uid) => Ok(self.load_user(dir_id, &uid)?.map(|(u, _)| u)),
            None => Ok(None),
        }
    }

    /// A group by idp_id.
    pub fn find_group_by_idp_id(&self, dir_id: &str, idp_id: &str) -> Result<Option<StoredGroup>> {
        match self.get_string(layout::GROUPS_BY_IDP, &layout::key(dir_id, idp_id))? {
            Some(gid) => Ok(self.load_group(dir_id, &gid)?.map(|(g, _)| g)),
            None => Ok(None),
        }
    }

    /// A group by a unique key.
    pub fn find_group_by_key(
        &self,
        dir_id: &str,
        index: &str,
        value: &str,
    ) -> Result<Option<StoredGroup>> {
        let table = layout::group_key_table(index);
        match self.get_string(&table, &layout::key(dir_id, value))? {
            Some(gid) => Ok(self.load_group(dir_id, &gid)?.map(|(g, _)| g)),
            None => Ok(None),
        }
    }

    /// A directory's users in id (= creation) order, optionally only a group's members,
    /// WorkOS-paged. The directory (and group, in that directory) must exist. For
    /// `GET /directory_users?group=...` without `directory`, find the directory with
    /// `get_group(None, id)` first; [`DirectoryEngine::with_groups`] adds each user's groups.
    pub fn list_users(
        &self,
        dir_id: &str,
        group_id: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<StoredUser>> {
        self.get_raw(layout::DIRECTORIES, dir_id)?
            .ok_or_else(|| EngineError::not_found("directory", dir_id))?;
        let mut data = Vec::new();
        let (before, after) = match group_id {
            None => {
                let rows = self.page_rows(layout::USERS, &layout::prefix(dir_id), page)?;
                for (id, bytes) in &rows.data {
                    data.push(from_bytes(layout::USERS, id, bytes)?);
                }
                (rows.before, rows.after)
            }
            Some(gid) => {
                self.load_group(dir_id, gid)?
                    .ok_or_else(|| EngineError::not_found("directory_group", gid))?;
                let rows = self.page_member_ids(gid, page)?;
                for uid in &rows.data {
                    if let Some((u, _)) = self.load_user(dir_id, uid)? {
                        data.push(u);
                    }
                }
                (rows.before, rows.after)
            }
        };
        Ok(Page {
            data,
            before,
            after,
        })
    }

    /// A directory's groups in id order, optionally only a user's groups, WorkOS-paged.
    pub fn list_groups(
        &self,
        dir_id: &str,
        user_id: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<StoredGroup>> {
        self.get_raw(layout::DIRECTORIES, dir_id)?
            .ok_or_else(|| EngineError::not_found("directory", dir_id))?;
        let mut data = Vec::new();
        let (before, after) = match user_id {
            None => {
                let rows = self.page_rows(layout::GROUPS, &layout::prefix(dir_id), page)?;
                for (id, bytes) in &rows.data {
                    data.push(from_bytes(layout::GROUPS, id, bytes)?);
                }
                (rows.before, rows.after)
            }
            Some(uid) => {
                self.load_user(dir_id, uid)?
                    .ok_or_else(|| EngineError::not_found("directory_user", uid))?;
                let rows = self.page_group_ids_of(uid, page)?;
                for gid in &rows.data {
                    if let Some((g, _)) = self.load_group(dir_id, gid)? {
                        data.push(g);
                    }
                }
                (rows.before, rows.after)
            }
        };
        Ok(Page {
            data,
            before,
            after,
        })
    }

    /// Whether the user is a member of the group.
    pub fn is_member(&self, group_id: &str, user_id: &str) -> Result<bool> {
        self.has_member(group_id, user_id)
    }

    /// Directories in id order, WorkOS-paged, keeping those `filter` accepts (the REST list's
    /// `organization_id` / `search` / `domain` filters): directories are few, so one filtered
    /// walk serves every filter with exact cursors. `metadata` is filled from the counters.
    pub fn list_directories_where(
        &self,
        page: &PageRequest,
        mut filter: impl FnMut(&idbridge_model::Directory) -> bool,
    ) -> Result<Page<DirectoryRecord>> {
        let rows = idbridge_store::page(
            self.store().as_ref(),
            layout::DIRECTORIES,
            "",
            page,
            |id, bytes| {
                let rec: DirectoryRecord = serde_json::from_slice(bytes).map_err(|e| {
                    idbridge_store::StoreError::corrupt(layout::DIRECTORIES, format!("{id}: {e}"))
                })?;
                Ok(filter(&rec.directory).then_some(rec))
            },
        )?;
        let mut data = Vec::with_capacity(rows.data.len());
        for mut rec in rows.data {
            self.fill_metadata(&mut rec)?;
            data.push(rec);
        }
        Ok(Page {
            data,
            before: rows.before,
            after: rows.after,
        })
    }

    /// A directory's users (optionally only a group's members) in id order, WorkOS-paged,
    /// keeping those `filter` accepts: a filtered walk of the directory, for filters no index
    /// serves (email: feeds choose their own unique keys). The directory (and group) must
    /// exist.
    pub fn list_users_where(
        &self,
        dir_id: &str,
        group_id: Option<&str>,
        page: &PageRequest,
        mut filter: impl FnMut(&StoredUser) -> bool,
    ) -> Result<Page<StoredUser>> {
        self.get_raw(layout::DIRECTORIES, dir_id)?
            .ok_or_else(|| EngineError::not_found("directory", dir_id))?;
        if let Some(gid) = group_id {
            self.load_group(dir_id, gid)?
                .ok_or_else(|| EngineError::not_found("directory_group", gid))?;
        }
        let mut member_error = None;
        let page = idbridge_store::page(
            self.store().as_ref(),
            layout::USERS,
            &layout::prefix(dir_id),
            page,
            |id, bytes| {
                let u: StoredUser = serde_json::from_slice(bytes).map_err(|e| {
                    idbridge_store::StoreError::corrupt(layout::USERS, format!("{id}: {e}"))
                })?;
                let member = match group_id {
                    None => true,
                    Some(g) => match self.is_member(g, id) {
                        Ok(m) => m,
                        Err(e) => {
                            member_error = Some(e);
                            false
                        }
                    },
                };
                Ok((member && filter(&u)).then_some(u))
            },
        )?;
        match member_error {
            Some(e) => Err(e),
            None => Ok(page),
        }
    }
}
