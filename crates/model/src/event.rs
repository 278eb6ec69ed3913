//! Events: the append-only log behind `/events`, webhooks and forwarders (workos-api.md §4).

use serde::{Deserialize, Serialize};

use crate::ids::{new_id, IdPrefix};
use crate::tag::EventTag;
use crate::Timestamp;

/// Every kind of event idbridge emits: the one list (the store keeps the kind as text, so the
/// log stays readable by tools that do not know this enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    AuthenticationSsoStarted,
    AuthenticationSsoSucceeded,
    AuthenticationSsoFailed,
    AuthenticationSsoTimedOut,
    ConnectionActivated,
    ConnectionDeactivated,
    ConnectionDeleted,
    ConnectionSamlCertificateRenewed,
    ConnectionSamlCertificateRenewalRequired,
    OrganizationCreated,
    OrganizationUpdated,
    OrganizationDeleted,
    OrganizationDomainCreated,
    OrganizationDomainUpdated,
    OrganizationDomainVerified,
    OrganizationDomainVerificationFailed,
    OrganizationDomainDeleted,
    OrganizationRoleCreated,
    OrganizationRoleUpdated,
    OrganizationRoleDeleted,
    DsyncActivated,
    DsyncDeactivated,
    DsyncDeleted,
    DsyncUserCreated,
    DsyncUserUpdated,
    DsyncUserDeleted,
    DsyncGroupCreated,
    DsyncGroupUpdated,
    DsyncGroupDeleted,
    DsyncGroupUserAdded,
    DsyncGroupUserRemoved,
    /// idbridge's own (not in WorkOS's catalogue): an SFTP delivery was refused. Opt-in only
    /// (see [`EventKind::opt_in`]).
    DsyncDeliveryRejected,
    /// idbridge's own: a SCIM push forwarder gave up on a change (opt-in only).
    DsyncForwardFailed,
    /// idbridge's own: a user signed in through idbridge's IdP and an assertion went to a
    /// service provider (opt-in only).
    IdpLoginSucceeded,
    /// idbridge's own: a sign-in at idbridge's IdP login page was refused (opt-in only).
    IdpLoginFailed,
}

impl EventKind {
    /// Every kind, for catalogues and tests.
    pub const ALL: [EventKind; 35] = [
        EventKind::AuthenticationSsoStarted,
        EventKind::AuthenticationSsoSucceeded,
        EventKind::AuthenticationSsoFailed,
        EventKind::AuthenticationSsoTimedOut,
        EventKind::ConnectionActivated,
        EventKind::ConnectionDeactivated,
        EventKind::ConnectionDeleted,
        EventKind::ConnectionSamlCertificateRenewed,
        EventKind::ConnectionSamlCertificateRenewalRequired,
        EventKind::OrganizationCreated,
        EventKind::OrganizationUpdated,
        EventKind::OrganizationDeleted,
        EventKind::OrganizationDomainCreated,
        EventKind::OrganizationDomainUpdated,
        EventKind::OrganizationDomainVerified,
        EventKind::OrganizationDomainVerificationFailed,
        EventKind::OrganizationDomainDeleted,
        EventKind::OrganizationRoleCreated,
        EventKind::OrganizationRoleUpdated,
        EventKind::OrganizationRoleDeleted,
        EventKind::DsyncActivated,
        EventKind::DsyncDeactivated,
        EventKind::DsyncDeleted,
        EventKind::DsyncUserCreated,
        EventKind::DsyncUserUpdated,
        EventKind::DsyncUserDeleted,
        EventKind::DsyncGroupCreated,
        EventKind::DsyncGroupUpdated,
        EventKind::DsyncGroupDeleted,
        EventKind::DsyncGroupUserAdded,
        EventKind::DsyncGroupUserRemoved,
        EventKind::DsyncDeliveryRejected,
        EventKind::DsyncForwardFailed,
        EventKind::IdpLoginSucceeded,
        EventKind::IdpLoginFailed,
    ];

    /// The wire name, e.g. `dsync.user.created`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::AuthenticationSsoStarted => "authentication.sso_started",
            EventKind::AuthenticationSsoSucceeded => "authentication.sso_succeeded",
            EventKind::AuthenticationSsoFailed => "authentication.sso_failed",
            EventKind::AuthenticationSsoTimedOut => "authentication.sso_timed_out",
            EventKind::ConnectionActivated => "connection.activated",
            EventKind::ConnectionDeactivated => "connection.deactivated",
            EventKind::ConnectionDeleted => "connection.deleted",
            EventKind::ConnectionSamlCertificateRenewed => "connection.saml_certificate_renewed",
            EventKind::ConnectionSamlCertificateRenewalRequired => {
                "connection.saml_certificate_renewal_required"
            }
            EventKind::OrganizationCreated => "organization.created",
            EventKind::OrganizationUpdated => "organization.updated",
            EventKind::OrganizationDeleted => "organization.deleted",
            EventKind::OrganizationDomainCreated => "organization_domain.created",
            EventKind::OrganizationDomainUpdated => "organization_domain.updated",
            EventKind::OrganizationDomainVerified => "organization_domain.verified",
            EventKind::OrganizationDomainVerificationFailed => {
                "organization_domain.verification_failed"
            }
            EventKind::OrganizationDomainDeleted => "organization_domain.deleted",
            EventKind::OrganizationRoleCreated => "organization_role.created",
            EventKind::OrganizationRoleUpdated => "organization_role.updated",
            EventKind::OrganizationRoleDeleted => "organization_role.deleted",
            EventKind::DsyncActivated => "dsync.activated",
            EventKind::DsyncDeactivated => "dsync.deactivated",
            EventKind::DsyncDeleted => "dsync.deleted",
            EventKind::DsyncUserCreated => "dsync.user.created",
            EventKind::DsyncUserUpdated => "dsync.user.updated",
            EventKind::DsyncUserDeleted => "dsync.user.deleted",
            EventKind::DsyncGroupCreated => "dsync.group.created",
            EventKind::DsyncGroupUpdated => "dsync.group.updated",
            EventKind::DsyncGroupDeleted => "dsync.group.deleted",
            EventKind::DsyncGroupUserAdded => "dsync.group.user_added",
            EventKind::DsyncGroupUserRemoved => "dsync.group.user_removed",
            EventKind::DsyncDeliveryRejected => "dsync.delivery_rejected",
            EventKind::DsyncForwardFailed => "dsync.forward_failed",
            EventKind::IdpLoginSucceeded => "idp.login_succeeded",
            EventKind::IdpLoginFailed => "idp.login_failed",
        }
    }

    /// The kind with this wire name, if idbridge emits it.
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// idbridge's own kinds: WorkOS SDKs with strict event models would fail on them, so they
    /// reach only webhook endpoints and `/events` queries that name them explicitly.
    pub const fn opt_in(self) -> bool {
        matches!(
            self,
            EventKind::DsyncDeliveryRejected
                | EventKind::DsyncForwardFailed
                | EventKind::IdpLoginSucceeded
                | EventKind::IdpLoginFailed
        )
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        EventKind::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown event kind {s:?}")))
    }
}

/// Event types a webhook endpoint may subscribe to: the WorkOS catalogue (the OpenAPI enum),
/// plus idbridge's own opt-in kinds. Every [`EventKind`] is in it.
pub const WEBHOOK_EVENT_TYPES: &[&str] = &[
    "authentication.email_verification_succeeded",
    "authentication.magic_auth_failed",
    "authentication.magic_auth_succeeded",
    "authentication.mfa_succeeded",
    "authentication.oauth_failed",
    "authentication.oauth_succeeded",
    "authentication.password_failed",
    "authentication.password_succeeded",
    "authentication.passkey_failed",
    "authentication.passkey_succeeded",
    "authentication.sso_failed",
    "authentication.sso_started",
    "authentication.sso_succeeded",
    "authentication.sso_timed_out",
    "authentication.radar_risk_detected",
    "api_key.created",
    "api_key.revoked",
    "connection.activated",
    "connection.deactivated",
    "connection.saml_certificate_renewal_required",
    "connection.saml_certificate_renewed",
    "connection.deleted",
    "dsync.activated",
    "dsync.deactivated",
    "dsync.deleted",
    // idbridge's own (not WorkOS's): see EventKind::opt_in.
    "dsync.delivery_rejected",
    "dsync.forward_failed",
    "dsync.group.created",
    "dsync.group.deleted",
    "dsync.group.updated",
    "dsync.group.user_added",
    "dsync.group.user_removed",
    "dsync.user.created",
    "dsync.user.deleted",
    "dsync.user.updated",
    // idbridge's own: see EventKind::opt_in.
    "idp.login_failed",
    "idp.login_succeeded",
    "email_verification.created",
    "group.created",
    "group.deleted",
    "group.member_added",
    "group.member_removed",
    "group.updated",
    "flag.created",
    "flag.deleted",
    "flag.updated",
    "flag.rule_updated",
    "invitation.accepted",
    "invitation.created",
    "invitation.resent",
    "invitation.revoked",
    "magic_auth.created",
    "organization.created",
    "organization.deleted",
    "organization.updated",
    "organization_domain.created",
    "organization_domain.deleted",
    "organization_domain.updated",
    "organization_domain.verified",
    "organization_domain.verification_failed",
    "password_reset.created",
    "password_reset.succeeded",
    "user.created",
    "user.updated",
    "user.deleted",
    "organization_membership.created",
    "organization_membership.deleted",
    "organization_membership.updated",
    "role.created",
    "role.deleted",
    "role.updated",
    "organization_role.created",
    "organization_role.deleted",
    "organization_role.updated",
    "permission.created",
    "permission.deleted",
    "permission.updated",
    "session.created",
    "session.revoked",
    "waitlist_user.approved",
    "waitlist_user.created",
    "waitlist_user.denied",
];

/// One event. `D` is its `data`: a JSON value, or (for a big sync that never builds a value
/// tree) any serializable borrowed struct; the wire bytes are the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event<D = serde_json::Value> {
    pub object: EventTag,
    pub id: String,
    /// The event name, e.g. `dsync.user.created`.
    pub event: EventKind,
    pub data: D,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Value>,
}

impl<D> Event<D> {
    /// A new event with a fresh id, stamped now.
    pub fn new(event: EventKind, data: D) -> Self {
        Event::at(event, data, Timestamp::now())
    }

    /// A new event with a fresh id, stamped `created_at` (a commit's own clock).
    pub fn at(event: EventKind, data: D, created_at: Timestamp) -> Self {
        Event {
            object: EventTag,
            id: new_id(IdPrefix::Event),
            event,
            data,
            created_at,
            context: None,
        }
    }
}

impl<D: Serialize> Event<D> {
    /// The compact JSON body, byte-identical to `JSON.stringify` of the parsed object: serde_json
    /// writes no whitespace, keeps key order (preserve_order) and escapes neither `/` nor
    /// non-ASCII, which is what webhook signature verifiers re-serialize to.
    pub fn to_compact_json(&self) -> Vec<u8> {
        // Serializing plain data (strings, numbers, maps with string keys) cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_their_wire_names() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(serde_json::from_str::<EventKind>(&json).unwrap(), k);
        }
        assert_eq!(EventKind::parse("dsync.user.renamed"), None);
        assert!(EventKind::DsyncDeliveryRejected.opt_in());
        for k in EventKind::ALL {
            assert!(
                WEBHOOK_EVENT_TYPES.contains(&k.as_str()),
                "{k} subscribable"
            );
        }
        assert!(!EventKind::DsyncUserCreated.opt_in());
    }

    #[test]
    fn borrowed_data_serializes_like_a_value() {
        #[derive(Serialize)]
        struct Data<'a> {
            name: &'a str,
        }
        let owned = Event::new(
            EventKind::OrganizationCreated,
            serde_json::json!({"name": "x"}),
        );
        let borrowed = Event {
            object: EventTag,
            id: owned.id.clone(),
            event: owned.event,
            data: &Data { name: "x" },
            created_at: owned.created_at,
            context: None,
        };
        assert_eq!(owned.to_compact_json(), borrowed.to_compact_json());
    }
}
