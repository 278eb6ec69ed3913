//! Each webhook endpoint's delivery progress: the one owner of the [`DELIVERY`] table. The
//! endpoint records themselves belong to `idbridge_sso::webhooks`; creating or deleting an
//! endpoint stages this table's part ([`DeliveryStates::stage_start`],
//! [`DeliveryStates::stage_remove`]) into the endpoint's own commit.

use std::sync::Arc;

use idbridge_model::Timestamp;
use idbridge_sso::webhooks::WebhookEndpoints;
use idbridge_store::{ChangeSet, Store, StoreError};
use serde::{Deserialize, Serialize};

/// Delivery state (cursor included), keyed by endpoint id.
const DELIVERY: &str = "webhook_delivery";

/// Per-endpoint delivery progress, persisted with every cursor move and every failure so the
/// admin API and a restarted worker see the same state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DeliveryState {
    /// Seq of the last event handled (delivered or skipped); the next delivery is `cursor + 1`.
    pub cursor: u64,
    /// Time of the last 2xx.
    pub last_success_at: Option<Timestamp>,
    /// Time of the last failed attempt.
    pub last_failure_at: Option<Timestamp>,
    /// Failed attempts since the last success (0 when healthy).
    pub consecutive_failures: u32,
    /// When the next retry is due (None when not backing off).
    pub next_attempt_at: Option<Timestamp>,
    /// What went wrong last (`receiver answered HTTP 503`, `timed out: …`).
    pub last_error: Option<String>,
    /// Id of the event the current failures are about, or of the last one delivered.
    pub last_event_id: Option<String>,
    /// Events acknowledged with a 2xx since the endpoint was created.
    pub delivered_total: u64,
}

/// The owner of the delivery states.
#[derive(Clone)]
pub struct DeliveryStates {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for DeliveryStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryStates").finish_non_exhaustive()
    }
}

impl DeliveryStates {
    /// Over a store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        DeliveryStates { store }
    }

    /// An endpoint's state, if one was stored.
    pub fn get(&self, endpoint_id: &str) -> Result<Option<DeliveryState>, StoreError> {
        match self.store.get(DELIVERY, endpoint_id)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::corrupt(DELIVERY, format!("{endpoint_id}: {e}"))),
            None => Ok(None),
        }
    }

    /// Stages a new endpoint's starting cursor: `cursor` (the current end of the log for an
    /// endpoint created through the API: it receives what is committed after its creation,
    /// not the backlog).
    pub fn stage_start(
        cs: &mut ChangeSet,
        endpoint_id: &str,
        cursor: u64,
    ) -> Result<(), StoreError> {
        cs.put_json(
            DELIVERY,
            endpoint_id,
            &DeliveryState {
                cursor,
                ..DeliveryState::default()
            },
        )?;
        Ok(())
    }

    /// Stages the removal of a deleted endpoint's state.
    pub fn stage_remove(cs: &mut ChangeSet, endpoint_id: &str) {
        cs.delete(DELIVERY, endpoint_id);
    }

    /// Durably stores the state, but only while the endpoint still exists: `Ok(false)` means
    /// it was deleted (and no state record is resurrected).
    pub fn save(&self, endpoint_id: &str, state: &DeliveryState) -> Result<bool, StoreError> {
        let mut cs = ChangeSet::new();
        WebhookEndpoints::stage_exists(&mut cs, endpoint_id);
        cs.put_json(DELIVERY, endpoint_id, state)?;
        match self.store.commit(cs) {
            Ok(_) => Ok(true),
            Err(e) if WebhookEndpoints::is_gone(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
