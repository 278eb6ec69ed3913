//! The background loop of one LDAP directory: a full sync at start and every `full_every`,
//! delta syncs every `delta_every` in between. A failed run is retried at the next tick; an
//! admin's confirmation of a guarded deletion is picked up at the next tick (as a full run).
//!
//! Aborting the task is a safe shutdown: the reads come first and the engine's apply runs on a
//! blocking thread that an abort does not interrupt mid-commit.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinHandle;

use crate::state::SyncKind;
use crate::sync::{LdapSource, NoProgress, Syncer};

/// Intervals of the background runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Between full syncs (default 1 h).
    pub full_every: Duration,
    /// Between delta syncs (default 5 min).
    pub delta_every: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            full_every: Duration::from_secs(3600),
            delta_every: Duration::from_secs(300),
        }
    }
}

fn after(d: Duration) -> Option<chrono::DateTime<Utc>> {
    chrono::Duration::from_std(d).ok().map(|d| Utc::now() + d)
}

/// Starts the loop of one directory on the current runtime.
pub fn spawn(syncer: Arc<Syncer>, src: LdapSource, schedule: Schedule) -> JoinHandle<()> {
    tokio::spawn(async move {
        let full_every = schedule.full_every.max(Duration::from_secs(1));
        let delta_every = schedule.delta_every.max(Duration::from_secs(1));
        let mut next_full = tokio::time::Instant::now();
        let mut next_delta = next_full + delta_every;
        loop {
            let now = tokio::time::Instant::now();
            let confirmed = syncer
                .state(&src.directory_id)
                .map(|s| s.deletion_confirmed)
                .unwrap_or(false);
            let kind = if now >= next_full || confirmed {
                next_full = now + full_every;
                next_delta = now + delta_every;
                Some(SyncKind::Full)
            } else if now >= next_delta {
                next_delta = now + delta_every;
                Some(SyncKind::Delta)
            } else {
                None
            };
            if let Some(kind) = kind {
                if let Err(e) = syncer.run(&src, kind, Arc::new(NoProgress)).await {
                    tracing::warn!(directory_id = %src.directory_id, error = %e, "scheduled ldap sync failed");
                }
                let _ = syncer.set_schedule(
                    &src.directory_id,
                    after(next_full.saturating_duration_since(tokio::time::Instant::now())),
                    after(next_delta.saturating_duration_since(tokio::time::Instant::now())),
                );
            }
            let wake = next_full.min(next_delta);
            // Wake at least every 5 s to notice an admin's confirmation.
            let cap = tokio::time::Instant::now() + Duration::from_secs(5);
            tokio::time::sleep_until(wake.min(cap)).await;
        }
    })
}
