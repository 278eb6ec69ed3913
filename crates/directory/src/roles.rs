//! Roles and IdP-group → role mappings per organization, and a user's roles from its groups.

use std::collections::HashSet;

use idbridge_model::{
    resolve_roles, Event, EventKind, OrganizationRoleEvent, Role, RoleMapping, RoleMode, RoleRef,
};
use idbridge_store::{ChangeSet, StoreError};

use crate::engine::{from_bytes, to_bytes, DirectoryEngine};
use crate::error::{Constraint, EngineError, Result};
use crate::layout;

/// The roles an organization has configured, loaded once per operation.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoleCtx {
    roles: Vec<Role>,
    mappings: Vec<RoleMapping>,
    mode: RoleMode,
}

/// `role` and `roles` as stored on a user.
pub(crate) type UserRoles = (Option<RoleRef>, Option<Vec<RoleRef>>);

impl RoleCtx {
    /// False when the organization has no roles: users then carry no `role`, and membership
    /// changes need no recomputation.
    pub fn active(&self) -> bool {
        !self.roles.is_empty()
    }

    /// Resolves from the user's groups, each given by idp_id and name (a mapping may name either).
    pub fn resolve(&self, group_refs: &[String]) -> UserRoles {
        if !self.active() {
            return (None, None);
        }
        let refs: Vec<&str> = group_refs.iter().map(String::as_str).collect();
        let resolved = resolve_roles(&self.roles, &self.mappings, &refs, self.mode);
        let roles: Vec<RoleRef> = resolved
            .iter()
            .map(|r| RoleRef {
                slug: r.slug.clone(),
            })
            .collect();
        (roles.first().cloned(), Some(roles))
    }
}

impl DirectoryEngine {
    /// `mode` is the directory's setting; an organization-wide mode, when set, wins so SSO
    /// profiles and directory users resolve roles alike.
    pub(crate) fn role_ctx(&self, organization_id: &str, mode: RoleMode) -> Result<RoleCtx> {
        let roles: Vec<Role> = self
            .get_json(layout::ROLES, organization_id)?
            .unwrap_or_default();
        if roles.is_empty() {
            return Ok(RoleCtx::default());
        }
        let mode = self
            .get_json::<RoleMode>(layout::ROLE_MODES, organization_id)?
            .unwrap_or(mode);
        let mappings = self
            .get_json(layout::ROLE_MAPPINGS, organization_id)?
            .unwrap_or_default();
        Ok(RoleCtx {
            roles,
            mappings,
            mode,
        })
    }

    /// Replaces an organization's roles. Slugs must be unique and non-empty; at most one role
    /// is the default. Users' roles are recomputed on their next change, or at once with
    /// [`DirectoryEngine::recompute_roles`].
    pub fn set_roles(&self, organization_id: &str, roles: Vec<Role>) -> Result<()> {
        check_roles(&roles)?;
        let mut cs = ChangeSet::new();
        cs.put(layout::ROLES, organization_id, to_bytes(&roles)?);
        self.store.commit(cs)?;
        Ok(())
    }

    /// One change of an organization's roles through the WorkOS roles API: `edit` changes the
    /// list (or refuses, `Ok(Err(..))`, changing nothing) and names its
    /// `organization_role.*` event, committed with the change. The write is conditional on
    /// the roles `edit` saw (a concurrent change is a conflict, never lost); mappings naming a
    /// role that is gone are dropped in the same commit.
    pub fn edit_roles<T, E>(
        &self,
        organization_id: &str,
        edit: impl FnOnce(&mut Vec<Role>) -> std::result::Result<(T, Event<OrganizationRoleEvent>), E>,
    ) -> Result<std::result::Result<T, E>> {
        let raw = self.get_raw(layout::ROLES, organization_id)?;
        let mut roles: Vec<Role> = match &raw {
            Some(bytes) => from_bytes(layout::ROLES, organization_id, bytes)?,
            None => Vec::new(),
        };
        let (out, event) = match edit(&mut roles) {
            Ok(done) => done,
            Err(refused) => return Ok(Err(refused)),
        };
        self.commit_roles(organization_id, raw, &roles, None, &[event])?;
        Ok(Ok(out))
    }

    /// Replaces an organization's roles (`PUT /admin/organizations/{id}/roles`) and, when
    /// given, its role mode: one commit, conditional on the roles it replaced, with an
    /// `organization_role.*` event per role created, changed or removed. A role whose
    /// declaration did not change keeps its timestamps and announces nothing.
    pub fn replace_roles(
        &self,
        organization_id: &str,
        mut roles: Vec<Role>,
        mode: Option<RoleMode>,
    ) -> Result<()> {
        let raw = self.get_raw(layout::ROLES, organization_id)?;
        let before: Vec<Role> = match &raw {
            Some(bytes) => from_bytes(layout::ROLES, organization_id, bytes)?,
            None => Vec::new(),
        };
        let announce =
            |kind, role: &Role| Event::new(kind, OrganizationRoleEvent::of(organization_id, role));
        let mut events = Vec::new();
        for role in &mut roles {
            match before.iter().find(|r| r.slug == role.slug) {
                None => events.push(announce(EventKind::OrganizationRoleCreated, role)),
                Some(old) => {
                    role.created_at = old.created_at;
                    let same = (&old.name, &old.description, old.priority, old.is_default)
                        == (
                            &role.name,
                            &role.description,
                            role.priority,
                            role.is_default,
                        );
                    if same {
                        role.updated_at = old.updated_at;
                    } else {
                        events.push(announce(EventKind::OrganizationRoleUpdated, role));
                    }
                }
            }
        }
        for old in &before {
            if !roles.iter().any(|r| r.slug == old.slug) {
                events.push(announce(EventKind::OrganizationRoleDeleted, old));
            }
        }
        self.commit_roles(organization_id, raw, &roles, mode, &events)
    }

    /// Writes `roles` if the stored list is still `raw`, with `events`; mappings naming a role
    /// that is gone are dropped in the same commit.
    fn commit_roles(
        &self,
        organization_id: &str,
        raw: Option<Vec<u8>>,
        roles: &[Role],
        mode: Option<RoleMode>,
        events: &[Event<OrganizationRoleEvent>],
    ) -> Result<()> {
        check_roles(roles)?;
        let mut cs = ChangeSet::new();
        cs.require_equals(layout::ROLES, organization_id, raw);
        cs.put(layout::ROLES, organization_id, to_bytes(&roles)?);
        let mappings = self.role_mappings(organization_id)?;
        let kept: Vec<RoleMapping> = mappings
            .iter()
            .filter(|m| roles.iter().any(|r| r.slug == m.role_slug))
            .cloned()
            .collect();
        if kept.len() != mappings.len() {
            cs.put(layout::ROLE_MAPPINGS, organization_id, to_bytes(&kept)?);
        }
        if let Some(mode) = mode {
            cs.put(layout::ROLE_MODES, organization_id, to_bytes(&mode)?);
        }
        for event in events {
            cs.append_event(event, Some(organization_id));
        }
        match self.store.commit(cs) {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict { .. }) => Err(EngineError::Conflict {
                constraint: Constraint::ConcurrentUpdate,
                detail: "the organization's roles changed at the same time; retry".into(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// An organization's roles.
    pub fn roles(&self, organization_id: &str) -> Result<Vec<Role>> {
        Ok(self
            .get_json(layout::ROLES, organization_id)?
            .unwrap_or_default())
    }

    /// Replaces an organization's group → role mappings. Every mapping must belong to the
    /// organization and name a configured role.
    pub fn set_role_mappings(
        &self,
        organization_id: &str,
        mappings: Vec<RoleMapping>,
    ) -> Result<()> {
        let roles = self.roles(organization_id)?;
        for m in &mappings {
            if m.organization_id != organization_id {
                return Err(EngineError::Invalid(format!(
                    "mapping for {:?} belongs to organization {:?}",
                    m.idp_group, m.organization_id
                )));
            }
            if !roles.iter().any(|r| r.slug == m.role_slug) {
                return Err(EngineError::Invalid(format!(
                    "mapping for {:?} names unknown role {:?}",
                    m.idp_group, m.role_slug
                )));
            }
        }
        let mut cs = ChangeSet::new();
        cs.put(layout::ROLE_MAPPINGS, organization_id, to_bytes(&mappings)?);
        self.store.commit(cs)?;
        Ok(())
    }

    /// Sets the organization-wide role mode (overrides the directories' `role_mode`).
    pub fn set_role_mode(&self, organization_id: &str, mode: RoleMode) -> Result<()> {
        let mut cs = ChangeSet::new();
        cs.put(layout::ROLE_MODES, organization_id, to_bytes(&mode)?);
        self.store.commit(cs)?;
        Ok(())
    }

    /// The organization-wide role mode, if one was set.
    pub fn role_mode(&self, organization_id: &str) -> Result<Option<RoleMode>> {
        self.get_json(layout::ROLE_MODES, organization_id)
    }

    /// The roles a set of IdP groups (ids or names) gives in an organization, as SSO profiles
    /// carry them: `(role, roles)`, both `None` when the organization has no roles. Uses the
    /// organization's mode (single when unset).
    pub fn resolve_org_roles(
        &self,
        organization_id: &str,
        groups: &[String],
    ) -> Result<(
        Option<idbridge_model::RoleRef>,
        Option<Vec<idbridge_model::RoleRef>>,
    )> {
        let ctx = self.role_ctx(organization_id, RoleMode::Single)?;
        Ok(ctx.resolve(groups))
    }

    /// An organization's group → role mappings.
    pub fn role_mappings(&self, organization_id: &str) -> Result<Vec<RoleMapping>> {
        Ok(self
            .get_json(layout::ROLE_MAPPINGS, organization_id)?
            .unwrap_or_default())
    }

    /// The idp_ids and names of a user's groups, as stored (for role resolution).
    pub(crate) fn group_refs_of(&self, dir_id: &str, user_id: &str) -> Result<Vec<String>> {
        let mut refs = Vec::new();
        for gid in self.group_ids_of(user_id)? {
            if let Some(g) = self.load_group(dir_id, &gid)? {
                refs.push(g.0.group.idp_id);
                refs.push(g.0.group.name);
            }
        }
        Ok(refs)
    }
}

/// Slugs must be unique and non-empty; at most one role is the default.
fn check_roles(roles: &[Role]) -> Result<()> {
    let mut seen = HashSet::new();
    for r in roles {
        if r.slug.trim().is_empty() {
            return Err(EngineError::Invalid("role slug is empty".into()));
        }
        if !seen.insert(r.slug.as_str()) {
            return Err(EngineError::Invalid(format!(
                "duplicate role slug {:?}",
                r.slug
            )));
        }
    }
    if roles.iter().filter(|r| r.is_default).count() > 1 {
        return Err(EngineError::Invalid("more than one default role".into()));
    }
    Ok(())
}
