//! Finishing a login: the identity becomes a profile (stable id, roles, the organization's
//! domain rule), and ONE commit takes the login session, writes the SAML replay entries, the
//! profile id, the single-use code, `authentication.sso_succeeded` and the connection's
//! first-login activation. A failed login is one commit too: the session take with
//! `authentication.sso_failed`.

use idbridge_model::tag::ProfileTag;
use idbridge_model::{
    join_name, new_id, DomainState, Event, EventKind, IdPrefix, Identity, Profile, RoleRef,
};
use idbridge_secrets::random_token;
use idbridge_store::ChangeSet;
use serde_json::Value;

use super::{error_redirect, with_params, ClientInfo, CodeRecord, LoginReply, Logins, PageStatus};
use crate::connections::{stage_activation, ConnectionRecord, Connections};
use crate::db::{self, now_ms, ttl_ms};
use crate::error::{SsoError, SsoResult};
use crate::SsoService;

/// Attempts of a login's commit when it races another writer (a parallel first login taking
/// the profile id, an activation or metadata refresh changing the connection record).
const COMMIT_ATTEMPTS: usize = 3;

const OUTSIDE_ORG: &str = "profile_not_allowed_outside_organization";

/// Where a finished login goes, and what it consumes.
pub(crate) struct Destination {
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub client: ClientInfo,
    /// The login session (its id, from the cookie) taken by the login's commit.
    pub session_id: Option<String>,
    /// SAML replay-cache entries (key, expiry) inserted by the login's commit.
    pub replay: Vec<(String, i64)>,
    /// SAML: the assertion's NameID and SessionIndex, kept for single logout.
    pub saml_subject: Option<super::SamlSubject>,
}

/// The `data` of an `authentication.sso_*` event (workos-api.md §4.3).
pub(crate) fn auth_event_data(
    status: &str,
    email: Option<&str>,
    organization_id: Option<&str>,
    connection_id: &str,
    client: &ClientInfo,
    error: Option<(&str, &str)>,
) -> Value {
    let mut data = serde_json::json!({
        "type": "sso",
        "status": status,
        "ip_address": client.ip_address,
        "user_agent": client.user_agent,
        "user_id": null,
        "email": email,
        "sso": {
            "organization_id": organization_id,
            "connection_id": connection_id,
            "session_id": null,
        },
    });
    if let (Some((code, message)), Some(obj)) = (error, data.as_object_mut()) {
        obj.insert(
            "error".into(),
            serde_json::json!({"code": code, "message": message}),
        );
    }
    data
}

/// A profile whose id is not decided yet: the commit decides it.
struct ProfileDraft {
    profile: Profile,
}

impl SsoService {
    /// The organization's roles for these IdP groups, from the directory engine's role
    /// settings (the same ones directory users get their roles from): `(role, roles)` in the
    /// wire form, both `None` when no roles exist.
    fn roles_for(
        &self,
        org_id: Option<&str>,
        groups: &[String],
    ) -> SsoResult<(Option<RoleRef>, Option<Vec<RoleRef>>)> {
        let Some(org_id) = org_id else {
            return Ok((None, None));
        };
        let (role, roles) = self
            .directory
            .resolve_org_roles(org_id, groups)
            .map_err(SsoError::internal)?;
        Ok((role, roles.filter(|r| !r.is_empty())))
    }

    /// An organization with verified domains and `allow_profiles_outside_organization: false`
    /// only admits emails in those domains (workos-api.md §1.1); one without domains admits all.
    fn check_domain(&self, org_id: Option<&str>, email: &str) -> SsoResult<()> {
        let Some(org) = org_id
            .map(|id| self.organizations.get(id))
            .transpose()?
            .flatten()
        else {
            return Ok(());
        };
        let verified: Vec<&str> = org
            .domains
            .iter()
            .filter(|d| d.state == DomainState::Verified)
            .map(|d| d.domain.as_str())
            .collect();
        if org.allow_profiles_outside_organization || verified.is_empty() {
            return Ok(());
        }
        let domain = email
            .rsplit_once('@')
            .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
            .unwrap_or_default();
        if verified.iter().any(|d| *d == domain) {
            Ok(())
        } else {
            Err(SsoError::Refused {
                code: OUTSIDE_ORG,
                message: "The email domain is not one of the organization's domains.".into(),
            })
        }
    }

    /// The profile of an identity on a connection, before its id is known.
    fn draft_profile(&self, record: &ConnectionRecord, id: Identity) -> SsoResult<ProfileDraft> {
        let email = id
            .email
            .filter(|e| !e.trim().is_empty())
            .ok_or_else(|| SsoError::Refused {
                code: "email_missing",
                message: "The identity provider sent no email address.".into(),
            })?;
        let org_id = record.connection.organization_id.clone();
        self.check_domain(org_id.as_deref(), &email)?;
        let (role, roles) = self.roles_for(org_id.as_deref(), &id.groups)?;
        let name = id
            .name
            .or_else(|| join_name(id.first_name.as_deref(), id.last_name.as_deref()));
        Ok(ProfileDraft {
            profile: Profile {
                object: ProfileTag,
                id: String::new(),
                idp_id: id.idp_id,
                organization_id: org_id,
                connection_id: record.connection.id.clone(),
                connection_type: record.connection.connection_type.clone(),
                email,
                first_name: id.first_name,
                last_name: id.last_name,
                name,
                role,
                roles,
                groups: id.groups,
                custom_attributes: id.custom_attributes,
                raw_attributes: serde_json::Map::new(),
            },
        })
    }

    /// Completes a verified login in one commit and sends the browser to the app with a code.
    pub(crate) async fn complete_login(
        &self,
        record: &ConnectionRecord,
        identity: Identity,
        dest: &Destination,
    ) -> LoginReply {
        let conn_id = record.id().to_string();
        let draft = match self.draft_profile(record, identity) {
            Ok(p) => p,
            Err(e) => {
                let (code, msg) = match &e {
                    SsoError::Refused {
                        code: OUTSIDE_ORG,
                        message,
                    } => (OUTSIDE_ORG, message.clone()),
                    SsoError::Refused { message, .. } => ("server_error", message.clone()),
                    _ => (
                        "server_error",
                        "The profile could not be built.".to_string(),
                    ),
                };
                tracing::warn!(connection_id = %conn_id, error = %e, "login failed after verification");
                return self.fail_login(record, dest, code, &msg, None).await;
            }
        };
        let mut last_error = None;
        for _ in 0..COMMIT_ATTEMPTS {
            match self.commit_login(record, &draft, dest).await {
                Ok((code, profile_id)) => {
                    tracing::info!(connection_id = %conn_id, profile_id = %profile_id, "SSO login succeeded");
                    return match with_params(
                        &dest.redirect_uri,
                        &[("code", Some(&code)), ("state", dest.state.as_deref())],
                    ) {
                        Some(loc) => LoginReply::Redirect(loc),
                        None => LoginReply::page(
                            PageStatus::BadRequest,
                            "server_error",
                            "Invalid redirect URI.",
                        ),
                    };
                }
                // A parallel first login took the profile id, or the connection record changed
                // (activation, rotation, refresh): build the commit again from what is stored.
                Err(SsoError::Store(e))
                    if Logins::is_profile_id_race(&e) || Connections::is_record_conflict(&e) =>
                {
                    last_error = Some(e);
                }
                Err(SsoError::Store(e)) if Logins::is_replay(&e) => {
                    tracing::warn!(connection_id = %conn_id, "SAML response replayed");
                    return self
                        .fail_login(
                            record,
                            dest,
                            "server_error",
                            "The SAML response could not be verified.",
                            None,
                        )
                        .await;
                }
                Err(SsoError::Store(e)) if Logins::is_session_gone(&e) => {
                    return self
                        .fail_login(
                            record,
                            dest,
                            "server_error",
                            "The login expired or was already completed.",
                            Some(&draft.profile.email),
                        )
                        .await;
                }
                Err(e) => {
                    tracing::error!(connection_id = %conn_id, error = %e, "could not complete the login");
                    last_error = None;
                    break;
                }
            }
        }
        if let Some(e) = last_error {
            tracing::error!(connection_id = %conn_id, error = %e, "login commit kept conflicting");
        }
        self.fail_login(
            record,
            dest,
            "server_error",
            "The login could not be completed.",
            Some(&draft.profile.email),
        )
        .await
    }

    /// The login's one commit; returns the code and the profile id.
    async fn commit_login(
        &self,
        record: &ConnectionRecord,
        draft: &ProfileDraft,
        dest: &Destination,
    ) -> SsoResult<(String, String)> {
        let now = now_ms();
        let conn_id = record.id();
        let mut cs = ChangeSet::new();
        if let Some(sid) = &dest.session_id {
            Logins::stage_take_session(&mut cs, sid, now);
            super::timeout::stage_clear_deadline(&mut cs, sid);
        }
        for (key, expires) in &dest.replay {
            Logins::stage_replay(&mut cs, key, *expires, now);
        }
        let mut profile = draft.profile.clone();
        profile.id = match self.logins.profile_id(conn_id, &profile.idp_id)? {
            Some(id) => id,
            None => {
                let id = new_id(IdPrefix::Profile);
                Logins::stage_profile_id(&mut cs, conn_id, &profile.idp_id, &id);
                id
            }
        };
        let code = random_token(32);
        let code_record = CodeRecord {
            client_id: dest.client_id.clone(),
            redirect_uri: dest.redirect_uri.clone(),
            code_challenge: dest.code_challenge.clone(),
            profile: profile.clone(),
        };
        Logins::stage_code(
            &mut cs,
            &code,
            &code_record,
            now + ttl_ms(self.config().code_ttl),
        )?;
        Logins::stage_logout_session(
            &mut cs,
            &profile.id,
            &super::logout::LogoutSession {
                connection_id: conn_id.to_string(),
                saml: dest.saml_subject.clone(),
            },
            now,
        )?;
        let org_id = record.connection.organization_id.as_deref();
        let event = Event::new(
            EventKind::AuthenticationSsoSucceeded,
            auth_event_data(
                "succeeded",
                Some(&profile.email),
                org_id,
                conn_id,
                &dest.client,
                None,
            ),
        );
        cs.append_event(&event, org_id);
        // The first successful login activates the connection: re-read, it may be active by now.
        if let Some(current) = self.connections.get(conn_id)? {
            let org = match current.organization_id() {
                Some(id) => self.organizations.get(id)?,
                None => None,
            };
            if stage_activation(&mut cs, &current, org.as_ref())? {
                tracing::info!(connection_id = %conn_id, "connection activated");
            }
        }
        db::commit(&self.store, cs).await?;
        Ok((code, profile.id))
    }

    /// Records `authentication.sso_failed` (taking the login session, in one commit) and sends
    /// the app the error.
    pub(crate) async fn fail_login(
        &self,
        record: &ConnectionRecord,
        dest: &Destination,
        code: &'static str,
        message: &str,
        email: Option<&str>,
    ) -> LoginReply {
        let org_id = record.connection.organization_id.as_deref();
        let event = Event::new(
            EventKind::AuthenticationSsoFailed,
            auth_event_data(
                "failed",
                email,
                org_id,
                record.id(),
                &dest.client,
                Some((code, message)),
            ),
        );
        let mut cs = ChangeSet::new();
        if let Some(sid) = &dest.session_id {
            Logins::stage_take_session(&mut cs, sid, now_ms());
            super::timeout::stage_clear_deadline(&mut cs, sid);
        }
        cs.append_event(&event, org_id);
        let committed = match db::commit(&self.store, cs).await {
            // Someone else took the session meanwhile: the failure is still recorded.
            Err(e) if Logins::is_session_gone(&e) => {
                let mut cs = ChangeSet::new();
                cs.append_event(&event, org_id);
                db::commit(&self.store, cs).await
            }
            other => other,
        };
        if let Err(e) = committed {
            tracing::error!(error = %e, "could not record sso_failed");
        }
        error_redirect(
            &dest.redirect_uri,
            code,
            message,
            dest.state.as_deref(),
            &[],
        )
    }
}
