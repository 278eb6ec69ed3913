//! Roles and IdP-group → role mappings (workos-api.md §5).

use serde::{Deserialize, Serialize};

use crate::tag::RoleTag;
use crate::Timestamp;

/// The wire form of an assigned role: `{"slug": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RoleRef {
    pub slug: String,
}

/// An environment-level role. Lower `priority` numbers win in single-role mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub slug: String,
    pub name: String,
    /// Set through the WorkOS roles API (`description`); records written before it have none.
    #[serde(default)]
    pub description: Option<String>,
    pub priority: u32,
    pub is_default: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Maps an IdP group (by its IdP id or name) to a role slug, per organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleMapping {
    pub organization_id: String,
    pub idp_group: String,
    pub role_slug: String,
}

/// A role as the WorkOS roles API shows it (`GET /authorization/organizations/{id}/roles`,
/// OpenAPI `Role`). idbridge's roles are per organization, so each is an `OrganizationRole`
/// without permissions; its id is derived from the organization and the slug (stable, and
/// the same on every node) since the role settings store none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleObject {
    pub object: RoleTag,
    pub id: String,
    pub slug: String,
    pub name: String,
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub role_type: String,
    pub resource_type_slug: String,
    pub permissions: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl RoleObject {
    /// The wire object of `role`, one of `organization_id`'s roles.
    pub fn of(organization_id: &str, role: &Role) -> Self {
        RoleObject {
            object: RoleTag,
            id: role_id(organization_id, &role.slug, role.created_at),
            slug: role.slug.clone(),
            name: role.name.clone(),
            description: role.description.clone(),
            role_type: "OrganizationRole".into(),
            resource_type_slug: "organization".into(),
            permissions: Vec::new(),
            created_at: role.created_at,
            updated_at: role.updated_at,
        }
    }
}

/// The `data` of `organization_role.created|updated|deleted` (OpenAPI `EventSchema`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrganizationRoleEvent {
    pub object: crate::tag::OrganizationRoleTag,
    pub organization_id: String,
    pub slug: String,
    pub name: String,
    pub description: Option<String>,
    pub resource_type_slug: String,
    pub permissions: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl OrganizationRoleEvent {
    /// The event data of `role`, one of `organization_id`'s roles.
    pub fn of(organization_id: &str, role: &Role) -> Self {
        OrganizationRoleEvent {
            object: crate::tag::OrganizationRoleTag,
            organization_id: organization_id.to_owned(),
            slug: role.slug.clone(),
            name: role.name.clone(),
            description: role.description.clone(),
            resource_type_slug: "organization".into(),
            permissions: Vec::new(),
            created_at: role.created_at,
            updated_at: role.updated_at,
        }
    }
}

/// `role_<ULID>`: the creation time, then 80 bits of a FNV-1a hash of organization and slug.
fn role_id(organization_id: &str, slug: &str, created_at: Timestamp) -> String {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in organization_id.bytes().chain([b'/']).chain(slug.bytes()) {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    let ms = u64::try_from(created_at.as_millis()).unwrap_or(0);
    format!("role_{}", ulid::Ulid::from_parts(ms, h))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleMode {
    /// The highest-priority mapped role wins.
    #[default]
    Single,
    /// Every mapped role applies.
    Multiple,
}

/// The roles a user gets from their IdP groups.
///
/// Single-role mode picks the best-priority mapped role; multiple-roles mode takes the union
/// (sorted by priority, then slug, for stable output); with no mapped group the default role
/// applies. Returns an empty list when nothing applies (no roles configured).
pub fn resolve_roles<'a>(
    roles: &'a [Role],
    mappings: &[RoleMapping],
    user_groups: &[&str],
    mode: RoleMode,
) -> Vec<&'a Role> {
    let mut matched: Vec<&Role> = mappings
        .iter()
        .filter(|m| user_groups.iter().any(|g| *g == m.idp_group))
        .filter_map(|m| roles.iter().find(|r| r.slug == m.role_slug))
        .collect();
    matched.sort_by(|a, b| a.priority.cmp(&b.priority).then(a.slug.cmp(&b.slug)));
    matched.dedup_by(|a, b| a.slug == b.slug);
    if matched.is_empty() {
        return roles.iter().filter(|r| r.is_default).take(1).collect();
    }
    match mode {
        RoleMode::Single => matched.into_iter().take(1).collect(),
        RoleMode::Multiple => matched,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(slug: &str, priority: u32, is_default: bool) -> Role {
        Role {
            slug: slug.into(),
            name: slug.into(),
            description: None,
            priority,
            is_default,
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
        }
    }

    fn map(group: &str, slug: &str) -> RoleMapping {
        RoleMapping {
            organization_id: "org_x".into(),
            idp_group: group.into(),
            role_slug: slug.into(),
        }
    }

    #[test]
    fn single_mode_picks_highest_priority_multiple_takes_union() {
        let roles = [
            role("member", 100, true),
            role("admin", 1, false),
            role("eng", 10, false),
        ];
        let maps = [map("g-eng", "eng"), map("g-admin", "admin")];
        let groups = ["g-eng", "g-admin", "g-unmapped"];
        let single = resolve_roles(&roles, &maps, &groups, RoleMode::Single);
        assert_eq!(
            single.iter().map(|r| &r.slug[..]).collect::<Vec<_>>(),
            ["admin"]
        );
        let multi = resolve_roles(&roles, &maps, &groups, RoleMode::Multiple);
        assert_eq!(
            multi.iter().map(|r| &r.slug[..]).collect::<Vec<_>>(),
            ["admin", "eng"]
        );
    }

    #[test]
    fn role_ids_are_stable_per_organization_and_slug() {
        let r = role("admin", 1, false);
        let a = RoleObject::of("org_a", &r);
        assert_eq!(a.id, RoleObject::of("org_a", &r).id);
        assert_ne!(a.id, RoleObject::of("org_b", &r).id);
        assert!(a.id.starts_with("role_") && a.id.len() == 31, "{}", a.id);
    }

    #[test]
    fn no_mapped_group_gets_default_and_no_roles_gets_nothing() {
        let roles = [role("member", 100, true), role("admin", 1, false)];
        let maps = [map("g-admin", "admin")];
        let got = resolve_roles(&roles, &maps, &["other"], RoleMode::Single);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].slug, "member");
        assert!(resolve_roles(&[], &maps, &["g-admin"], RoleMode::Single).is_empty());
    }
}
