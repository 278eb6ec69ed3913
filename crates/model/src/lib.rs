//! The idbridge domain model: WorkOS-shaped objects, ids and timestamps.
//!
//! Every type here serializes to exactly the JSON the official WorkOS SDKs read: keys are always
//! present (`null`, `[]` or `{}` when empty) because the Python SDK indexes required keys directly
//! and fails on absence. No I/O lives here.

#![forbid(unsafe_code)]

pub mod connection;
pub mod directory;
pub mod event;
pub mod identity;
pub mod ids;
pub mod list;
pub mod organization;
pub mod profile;
pub mod role;
pub mod tag;
pub mod time;

pub use connection::{Connection, ConnectionDomain, ConnectionState, ConnectionStatus};
pub use directory::{
    Directory, DirectoryGroup, DirectoryMetadata, DirectoryState, DirectoryUser,
    DirectoryUserEmail, DirectoryUserWithGroups, UserCounts, UserState,
};
pub use event::{Event, EventKind, WEBHOOK_EVENT_TYPES};
pub use identity::{join_name, Identity};
pub use ids::{new_id, parse_id, IdError, IdPrefix};
pub use list::{
    Cursor, EventListMetadata, EventsList, List, ListMetadata, Order, Page, PageRequest,
};
pub use organization::{DomainState, Organization, OrganizationDomain, VerificationStrategy};
pub use profile::Profile;
pub use role::{
    resolve_roles, OrganizationRoleEvent, Role, RoleMapping, RoleMode, RoleObject, RoleRef,
};
pub use time::Timestamp;
