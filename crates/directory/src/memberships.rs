//! Group memberships as typed rows: `directory_memberships(group_id, user_id)`, primary key
//! (group_id, user_id), index (user_id, group_id), `WITHOUT ROWID` — one compact pair per
//! membership where the key-value layout kept two keys (`g/<group>/<user>` and
//! `u/<user>/<group>` in `dsync.members`). This module owns the table: every read and write
//! of a membership goes through it.
//!
//! The table is created by the directory owner's schema ([`SCHEMA`], `Store::migrate_owner`)
//! the first time an engine touches memberships ([`DirectoryEngine::open`] does it at start).
//! A store written by an earlier build keeps its pairs in `dsync.members`: they are moved
//! (row written, both keys deleted, in change sets of [`MOVE_CHUNK`] pairs) right after the
//! migration, so a crash midway leaves every pair in one place or the other and the next open
//! finishes the move.

use std::sync::atomic::Ordering;

use idbridge_store::rows::PRIMARY;
use idbridge_store::{
    ChangeSet, Column, IndexDef, OwnerMigration, OwnerSchema, Row, RowValue, TableDef,
};

use crate::engine::DirectoryEngine;
use crate::error::{EngineError, Result};
use crate::types::{Page, PageRequest};

/// Membership pairs.
pub(crate) static MEMBERSHIPS: TableDef = TableDef {
    name: "directory_memberships",
    columns: &[Column::text("group_id"), Column::text("user_id")],
    primary_key: &["group_id", "user_id"],
    indexes: &[IndexDef {
        name: BY_USER,
        terms: &["user_id", "group_id"],
        unique: false,
        partial: None,
    }],
    version_column: None,
    without_rowid: true,
};

/// A user's groups in group id order.
const BY_USER: &str = "directory_memberships_by_user";

/// The directory engine's typed tables, in released migrations (frozen once released).
pub(crate) static SCHEMA: OwnerSchema = OwnerSchema {
    owner: "directory",
    migrations: &[OwnerMigration {
        version: 1,
        description: "directory_memberships: one (group_id, user_id) row per membership",
        create: &[&MEMBERSHIPS],
        sql: "",
    }],
};

/// The key-value table memberships lived in before (read only to move its pairs).
const LEGACY_MEMBERS: &str = "dsync.members";

/// Legacy keys moved per change set (each pair: one row write and two key deletes).
const MOVE_CHUNK: usize = 2_000;

/// Rows read per scan page.
const PAGE: usize = 1_000;

fn text(row: &Row, column: &str) -> Result<String> {
    row.get(&MEMBERSHIPS, column)
        .and_then(RowValue::as_text)
        .map(str::to_owned)
        .ok_or_else(|| EngineError::corrupt(MEMBERSHIPS.name, column, "the column is not text"))
}

/// A legacy `dsync.members` key as (group id, user id).
fn legacy_pair(key: &str) -> Option<(&str, &str)> {
    if let Some(rest) = key.strip_prefix("g/") {
        return rest.split_once('/');
    }
    let (user, group) = key.strip_prefix("u/")?.split_once('/')?;
    Some((group, user))
}

impl DirectoryEngine {
    /// Creates or migrates the engine's tables and moves legacy key-value memberships to rows
    /// (once per engine; later calls return at once).
    pub(crate) fn ensure_tables(&self) -> Result<()> {
        if self.tables_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let _span = tracing::info_span!("dsync.migrate_tables").entered();
        self.store.migrate_owner(&SCHEMA)?;
        let moved = self.move_legacy_memberships()?;
        if moved > 0 {
            tracing::info!(
                memberships = moved,
                "moved memberships from dsync.members to directory_memberships"
            );
        }
        self.tables_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Moves every `dsync.members` pair to a row; returns the number of pairs moved.
    fn move_legacy_memberships(&self) -> Result<u64> {
        let mut moved = 0;
        loop {
            let keys = self.store.scan(LEGACY_MEMBERS, "", None, MOVE_CHUNK)?;
            if keys.is_empty() {
                return Ok(moved);
            }
            let mut cs = ChangeSet::new();
            for (key, _) in &keys {
                cs.delete(LEGACY_MEMBERS, key.clone());
                match legacy_pair(key) {
                    Some((group, user)) => {
                        // Both directions of the pair go in this change set.
                        cs.delete(LEGACY_MEMBERS, format!("g/{group}/{user}"))
                            .delete(LEGACY_MEMBERS, format!("u/{user}/{group}"))
                            .upsert_row(&MEMBERSHIPS, vec![group.into(), user.into()]);
                        moved += 1;
                    }
                    None => tracing::warn!(key, "dropped a malformed dsync.members key"),
                }
            }
            self.store.commit(cs)?;
        }
    }

    /// The user ids of a group's members, in id order.
    pub(crate) fn member_ids(&self, group_id: &str) -> Result<Vec<String>> {
        self.pairs(PRIMARY, group_id, "user_id")
    }

    /// The group ids of a user's groups, in id order.
    pub(crate) fn group_ids_of(&self, user_id: &str) -> Result<Vec<String>> {
        self.pairs(BY_USER, user_id, "group_id")
    }

    /// Column `other` of every pair whose first column in `index` is `id`.
    fn pairs(&self, index: &str, id: &str, other: &str) -> Result<Vec<String>> {
        self.ensure_tables()?;
        let prefix = [RowValue::from(id)];
        let mut out = Vec::new();
        loop {
            let after = out
                .last()
                .map(|last: &String| [RowValue::from(last.as_str())]);
            let rows = self.store.scan_index(
                &MEMBERSHIPS,
                index,
                &prefix,
                after.as_ref().map(|a| &a[..]),
                PAGE,
            )?;
            for row in &rows {
                out.push(text(row, other)?);
            }
            if rows.len() < PAGE {
                return Ok(out);
            }
        }
    }

    /// Whether the user is a member of the group.
    pub(crate) fn has_member(&self, group_id: &str, user_id: &str) -> Result<bool> {
        self.ensure_tables()?;
        Ok(self
            .store
            .get_row(&MEMBERSHIPS, &[group_id.into(), user_id.into()])?
            .is_some())
    }

    /// One WorkOS page of a group's member ids.
    pub(crate) fn page_member_ids(
        &self,
        group_id: &str,
        req: &PageRequest,
    ) -> Result<Page<String>> {
        self.page_pairs(PRIMARY, group_id, req)
    }

    /// One WorkOS page of a user's group ids.
    pub(crate) fn page_group_ids_of(
        &self,
        user_id: &str,
        req: &PageRequest,
    ) -> Result<Page<String>> {
        self.page_pairs(BY_USER, user_id, req)
    }

    fn page_pairs(&self, index: &str, id: &str, req: &PageRequest) -> Result<Page<String>> {
        self.ensure_tables()?;
        Ok(idbridge_store::page_index(
            self.store.as_ref(),
            &MEMBERSHIPS,
            index,
            &[RowValue::from(id)],
            req,
            |other, _| Ok(Some(other.to_owned())),
        )?)
    }
}

/// Stages a membership link (idempotent).
pub(crate) fn link(cs: &mut ChangeSet, group_id: &str, user_id: &str) {
    cs.upsert_row(&MEMBERSHIPS, vec![group_id.into(), user_id.into()]);
}

/// Stages a membership unlink (idempotent).
pub(crate) fn unlink(cs: &mut ChangeSet, group_id: &str, user_id: &str) {
    cs.delete_row(&MEMBERSHIPS, vec![group_id.into(), user_id.into()]);
}
