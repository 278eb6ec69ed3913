//! Where an IdP login's user comes from, and the one shape every source ends in.
//!
//! A login through idbridge's IdP has two halves: a *source* proves who the user is, and a
//! *protocol* answers the pending request (a SAML Response today; an OIDC authorization code
//! from `idp::oidc*`). The seam between them is [`AuthenticatedSubject`]: every source
//! (the directory password check in [`super::login`], the upstream SSO login in
//! [`super::broker`]) produces one, and every protocol renders its answer from it, so the
//! protocols never look at where the user came from.

use idbridge_model::{DirectoryUser, Profile};

/// A user the IdP has authenticated, with what may be released about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedSubject {
    /// The organization whose IdP authenticated the user (always the pending request's).
    pub organization_id: String,
    /// The stable id released as `id` / `sub` (directory: objectGUID/entryUUID; broker: the
    /// upstream IdP's idp_id).
    pub idp_id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub groups: Vec<String>,
    /// How the user was authenticated (for events and logs).
    pub source: SubjectSource,
}

/// How the subject was authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectSource {
    /// A password bound against this LDAP/AD directory; the synced directory user.
    Directory {
        directory_id: String,
        directory_user_id: String,
    },
    /// An upstream SSO login through this connection; the profile it produced.
    Broker {
        connection_id: String,
        profile_id: String,
    },
}

impl AuthenticatedSubject {
    /// A directory user who proved their password, with their group names.
    pub fn from_directory_user(
        organization_id: &str,
        directory_id: &str,
        user: &DirectoryUser,
        groups: Vec<String>,
    ) -> Self {
        AuthenticatedSubject {
            organization_id: organization_id.to_owned(),
            idp_id: user.idp_id.clone(),
            email: user.email.clone(),
            first_name: user.first_name.clone(),
            last_name: user.last_name.clone(),
            groups,
            source: SubjectSource::Directory {
                directory_id: directory_id.to_owned(),
                directory_user_id: user.id.clone(),
            },
        }
    }

    /// The verified profile of an upstream login (broker mode).
    pub fn from_profile(organization_id: &str, profile: &Profile) -> Self {
        AuthenticatedSubject {
            organization_id: organization_id.to_owned(),
            idp_id: profile.idp_id.clone(),
            email: Some(profile.email.clone()).filter(|e| !e.is_empty()),
            first_name: profile.first_name.clone(),
            last_name: profile.last_name.clone(),
            groups: profile.groups.clone(),
            source: SubjectSource::Broker {
                connection_id: profile.connection_id.clone(),
                profile_id: profile.id.clone(),
            },
        }
    }

    /// The `data` fields of `idp.login_succeeded` that say who and how.
    pub fn event_fields(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "idp_id": self.idp_id,
            "email": self.email,
        });
        if let Some(o) = v.as_object_mut() {
            match &self.source {
                SubjectSource::Directory {
                    directory_id,
                    directory_user_id,
                } => {
                    o.insert("source".into(), "directory".into());
                    o.insert("directory_id".into(), directory_id.clone().into());
                    o.insert("directory_user_id".into(), directory_user_id.clone().into());
                }
                SubjectSource::Broker {
                    connection_id,
                    profile_id,
                } => {
                    o.insert("source".into(), "broker".into());
                    o.insert("connection_id".into(), connection_id.clone().into());
                    o.insert("profile_id".into(), profile_id.clone().into());
                }
            }
        }
        v
    }
}
