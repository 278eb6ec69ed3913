//! `authentication.sso_timed_out`: a login started at `/sso/authorize` that neither succeeds
//! nor fails before its session expires. The one owner of [`DEADLINES`].
//!
//! Authorize writes a deadline row (a plain, durable table, not an expiring one: the store's
//! purge would otherwise drop it unseen) in the same commit as the session; the login's
//! success or failure commit deletes it. The sweeper commits, per expired row, the row's
//! conditional delete with the event: a row is announced at most once, across restarts and
//! across nodes sweeping the same store (the second commit finds the row gone).

use std::sync::Arc;
use std::time::Duration;

use idbridge_model::{Event, EventKind};
use idbridge_store::{ChangeSet, StoreError};
use serde::{Deserialize, Serialize};

use super::complete::auth_event_data;
use super::{key_of, ClientInfo};
use crate::db::{self, to_json};
use crate::error::SsoResult;
use crate::SsoService;

/// `<sha256 hex of session id>` → [`LoginDeadline`].
pub const DEADLINES: &str = "sso_login_deadlines";
/// Rows looked at per sweep (the rest wait for the next one).
const SWEEP_BATCH: usize = 1000;
/// The longest pause between sweeps; with a short login lifetime the sweeper runs every half
/// lifetime (at least every second), so a timeout is announced within 1.5 lifetimes.
pub const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// The pause between sweeps for a login lifetime.
pub fn sweep_interval(login_ttl: Duration) -> Duration {
    (login_ttl / 2).clamp(Duration::from_secs(1), MAX_SWEEP_INTERVAL)
}

/// What the timed-out event needs, kept until the login ends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LoginDeadline {
    pub expires_at_ms: i64,
    pub connection_id: String,
    pub organization_id: Option<String>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
}

/// Stages the deadline of a new login session.
pub(crate) fn stage_deadline(
    cs: &mut ChangeSet,
    session_id: &str,
    deadline: &LoginDeadline,
) -> SsoResult<()> {
    cs.put(DEADLINES, key_of(session_id), to_json(deadline)?);
    Ok(())
}

/// Stages the end of a login (success or failure): no timeout is announced for it.
pub(crate) fn stage_clear_deadline(cs: &mut ChangeSet, session_id: &str) {
    cs.delete(DEADLINES, key_of(session_id));
}

impl SsoService {
    /// Emits `authentication.sso_timed_out` for every started login whose session expired
    /// before `now_ms` without ending; returns how many it announced.
    #[tracing::instrument(name = "sso.sweep_timed_out", skip(self))]
    pub async fn sweep_timed_out_logins(&self, now_ms: i64) -> Result<usize, StoreError> {
        let rows = self.store.scan(DEADLINES, "", None, SWEEP_BATCH)?;
        let mut announced = 0;
        for (key, bytes) in rows {
            let deadline: LoginDeadline = match db::decode(DEADLINES, &key, &bytes) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "unreadable login deadline; dropped");
                    let mut cs = ChangeSet::new();
                    cs.delete(DEADLINES, &key);
                    db::commit(&self.store, cs).await?;
                    continue;
                }
            };
            if deadline.expires_at_ms > now_ms {
                continue;
            }
            let client = ClientInfo {
                ip_address: deadline.ip_address.clone(),
                user_agent: deadline.user_agent.clone(),
            };
            let org = deadline.organization_id.as_deref();
            let event = Event::new(
                EventKind::AuthenticationSsoTimedOut,
                auth_event_data(
                    "timed_out",
                    None,
                    org,
                    &deadline.connection_id,
                    &client,
                    Some((
                        "sso_timed_out",
                        "The login was not completed before its session expired; start it again.",
                    )),
                ),
            );
            let mut cs = ChangeSet::new();
            cs.require_equals(DEADLINES, &key, Some(bytes));
            cs.delete(DEADLINES, &key);
            cs.append_event(&event, org);
            match db::commit(&self.store, cs).await {
                Ok(_) => announced += 1,
                // Ended or announced by someone else meanwhile.
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if announced > 0 {
            tracing::info!(count = announced, "SSO logins timed out");
        }
        Ok(announced)
    }
}

/// Runs the timed-out sweep for as long as the process lives, every [`sweep_interval`] of the
/// current login lifetime (read each time: it can change while running). Errors are logged;
/// the next pass retries.
pub fn spawn_timeout_sweeper(sso: Arc<SsoService>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(sweep_interval(sso.config().login_ttl)).await;
            if let Err(e) = sso.sweep_timed_out_logins(db::now_ms()).await {
                tracing::warn!(error = %e, "SSO timeout sweep failed");
            }
        }
    });
}
