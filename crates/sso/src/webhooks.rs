//! Webhook endpoint records (workos-api.md §4.4, OpenAPI `WebhookEndpointJson`): the one
//! owner of the [`ENDPOINTS`] and [`BY_URL`] tables.
//!
//! Deliveries are made by `idbridge-forward`, which reads endpoints through
//! [`WebhookEndpoints::all`] and owns each endpoint's delivery cursor. Creating or deleting an
//! endpoint is one commit with the cursor's part: the caller passes the cursor owner's
//! contribution as a closure that stages into the same [`ChangeSet`].

use std::sync::Arc;

use idbridge_model::{new_id, parse_id, IdPrefix, Page, PageRequest, Timestamp};
use idbridge_secrets::random_alphanumeric;
use idbridge_store::{ChangeSet, ConflictKind, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::db::{self, created_at_of, to_json};
use crate::error::{SsoError, SsoResult};

/// `we_…` → the WorkOS `webhook_endpoint` object (JSON).
const ENDPOINTS: &str = "webhook_endpoints";
/// `<normalized endpoint_url>` → endpoint id (unique: WorkOS answers 409 `duplicate_endpoint`).
const BY_URL: &str = "webhook_endpoint_by_url";

/// Longest accepted `endpoint_url`.
pub const MAX_URL_LEN: usize = 2048;

idbridge_model::object_tag!(WebhookEndpointTag, "webhook_endpoint");

/// `enabled` endpoints get deliveries; `disabled` ones keep their cursor and resume from it
/// when enabled again (nothing is skipped while disabled, as long as retention keeps it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointStatus {
    /// Receives deliveries.
    Enabled,
    /// Paused.
    Disabled,
}

/// The WorkOS `webhook_endpoint` object; also the stored record. WorkOS returns the secret
/// with every endpoint object (`secret` is a required key), so it is readable with an API key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    pub object: WebhookEndpointTag,
    /// `we_<ULID>`.
    pub id: String,
    /// Where events are POSTed (normalized).
    pub endpoint_url: String,
    /// HMAC key of the `WorkOS-Signature` header.
    pub secret: String,
    pub status: EndpointStatus,
    /// Subscribed event types; events of other types are skipped.
    pub events: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl std::fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("id", &self.id)
            .field("endpoint_url", &self.endpoint_url)
            .field("status", &self.status)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl WebhookEndpoint {
    /// Whether this endpoint wants events of type `kind`.
    pub fn subscribes_to(&self, kind: &str) -> bool {
        self.events.iter().any(|e| e == kind)
    }
}

/// `POST /webhook_endpoints`, typed (the URL already passed [`validate_url`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhookEndpoint {
    pub endpoint_url: String,
    pub events: Vec<String>,
}

/// `PATCH /webhook_endpoints/{id}`, typed: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookEndpointChanges {
    pub endpoint_url: Option<String>,
    pub events: Option<Vec<String>>,
    pub status: Option<EndpointStatus>,
}

/// http(s) only, a host, no user or password (the URL is shown back in listings and logs).
/// Returns the normalized form, which is also the duplicate check's key; the error says what
/// is wrong.
pub fn validate_url(raw: &str) -> Result<String, String> {
    if raw.len() > MAX_URL_LEN {
        return Err(format!(
            "endpoint_url is longer than {MAX_URL_LEN} characters."
        ));
    }
    let url = url::Url::parse(raw.trim())
        .map_err(|e| format!("endpoint_url is not a valid URL: {e}."))?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err("endpoint_url must use http or https.".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("endpoint_url must have a host.".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("endpoint_url must not contain credentials.".into());
    }
    if url.fragment().is_some() {
        return Err("endpoint_url must not contain a fragment.".into());
    }
    Ok(url.to_string())
}

fn duplicate(url: &str) -> SsoError {
    SsoError::Conflict {
        code: "duplicate_endpoint",
        message: format!("A Webhook Endpoint with the URL '{url}' already exists."),
    }
}

/// A contribution of another owner to an endpoint's commit (the delivery cursor).
pub type Contribution<'a> =
    Box<dyn FnOnce(&WebhookEndpoint, &mut ChangeSet) -> Result<(), StoreError> + Send + 'a>;

/// The owner of the webhook endpoint tables.
#[derive(Clone)]
pub struct WebhookEndpoints {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for WebhookEndpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpoints").finish_non_exhaustive()
    }
}

impl WebhookEndpoints {
    /// Over a store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        WebhookEndpoints { store }
    }

    /// The endpoint, if it exists (a malformed id cannot).
    pub fn get(&self, id: &str) -> Result<Option<WebhookEndpoint>, StoreError> {
        if parse_id(IdPrefix::WebhookEndpoint, id).is_err() {
            return Ok(None);
        }
        db::get_json(self.store.as_ref(), ENDPOINTS, id)
    }

    /// The endpoint, or `NotFound`.
    pub fn load(&self, id: &str) -> SsoResult<WebhookEndpoint> {
        self.get(id)?
            .ok_or_else(|| SsoError::not_found("Webhook Endpoint", id))
    }

    /// Every endpoint, for the delivery worker. An unreadable record is reported by id and
    /// skipped, so one bad record cannot stop the others' deliveries.
    pub fn all(&self) -> Result<crate::Readable<WebhookEndpoint>, StoreError> {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for (id, bytes) in self.store.scan(ENDPOINTS, "", None, usize::MAX)? {
            match db::decode(ENDPOINTS, &id, &bytes) {
                Ok(e) => ok.push(e),
                Err(e) => bad.push((id, e)),
            }
        }
        Ok((ok, bad))
    }

    /// A page of endpoints.
    pub fn list(&self, page: &PageRequest) -> Result<Page<WebhookEndpoint>, StoreError> {
        idbridge_store::page(self.store.as_ref(), ENDPOINTS, "", page, |id, bytes| {
            db::decode(ENDPOINTS, id, bytes).map(Some)
        })
    }

    /// Stages the condition that endpoint `id` still exists (a cursor write must not
    /// resurrect a deleted endpoint's state).
    pub fn stage_exists(cs: &mut ChangeSet, id: &str) {
        cs.require_present(ENDPOINTS, id);
    }

    /// Whether a failed commit failed because the endpoint is gone (see
    /// [`WebhookEndpoints::stage_exists`]).
    pub fn is_gone(err: &StoreError) -> bool {
        matches!(err, StoreError::Conflict { table, kind: ConflictKind::Missing, .. } if table == ENDPOINTS)
    }

    /// Creates an enabled endpoint with a fresh secret; `also` stages the other owners' part
    /// of the same commit (the delivery cursor).
    #[tracing::instrument(name = "webhook_endpoints.create", skip_all)]
    pub async fn create(
        &self,
        input: NewWebhookEndpoint,
        also: Contribution<'_>,
    ) -> SsoResult<WebhookEndpoint> {
        let id = new_id(IdPrefix::WebhookEndpoint);
        let created_at = created_at_of(IdPrefix::WebhookEndpoint, &id);
        let endpoint = WebhookEndpoint {
            object: WebhookEndpointTag,
            id,
            endpoint_url: input.endpoint_url,
            secret: format!("whsec_{}", random_alphanumeric(32)),
            status: EndpointStatus::Enabled,
            events: input.events,
            created_at,
            updated_at: created_at,
        };
        let mut cs = ChangeSet::new();
        cs.require_absent(BY_URL, &endpoint.endpoint_url);
        cs.put(
            BY_URL,
            &endpoint.endpoint_url,
            endpoint.id.as_bytes().to_vec(),
        );
        cs.put(ENDPOINTS, &endpoint.id, to_json(&endpoint)?);
        also(&endpoint, &mut cs)?;
        match db::commit(&self.store, cs).await {
            Ok(_) => Ok(endpoint),
            Err(StoreError::Conflict { ref table, .. }) if table == BY_URL => {
                Err(duplicate(&endpoint.endpoint_url))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Applies the changes; an endpoint they do not change is not rewritten.
    #[tracing::instrument(name = "webhook_endpoints.update", skip(self, changes))]
    pub async fn update(
        &self,
        id: &str,
        changes: WebhookEndpointChanges,
    ) -> SsoResult<WebhookEndpoint> {
        let old = self.load(id)?;
        let mut endpoint = old.clone();
        if let Some(u) = changes.endpoint_url {
            endpoint.endpoint_url = u;
        }
        if let Some(e) = changes.events {
            endpoint.events = e;
        }
        if let Some(s) = changes.status {
            endpoint.status = s;
        }
        if endpoint == old {
            return Ok(endpoint);
        }
        endpoint.updated_at = Timestamp::now();
        let mut cs = ChangeSet::new();
        // Optimistic concurrency: the record must still be what was read.
        cs.require_equals(ENDPOINTS, id, Some(to_json(&old)?));
        if endpoint.endpoint_url != old.endpoint_url {
            cs.delete(BY_URL, &old.endpoint_url);
            cs.require_absent(BY_URL, &endpoint.endpoint_url);
            cs.put(BY_URL, &endpoint.endpoint_url, id.as_bytes().to_vec());
        }
        cs.put(ENDPOINTS, id, to_json(&endpoint)?);
        match db::commit(&self.store, cs).await {
            Ok(_) => Ok(endpoint),
            Err(StoreError::Conflict { ref table, .. }) if table == BY_URL => {
                Err(duplicate(&endpoint.endpoint_url))
            }
            Err(StoreError::Conflict { .. }) => Err(SsoError::concurrent("webhook endpoint")),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the endpoint; `also` stages the other owners' part (the delivery cursor).
    #[tracing::instrument(name = "webhook_endpoints.delete", skip(self, also))]
    pub async fn delete(&self, id: &str, also: Contribution<'_>) -> SsoResult<WebhookEndpoint> {
        let endpoint = self.load(id)?;
        let mut cs = ChangeSet::new();
        cs.require_present(ENDPOINTS, id);
        cs.delete(ENDPOINTS, id);
        cs.delete(BY_URL, &endpoint.endpoint_url);
        also(&endpoint, &mut cs)?;
        match db::commit(&self.store, cs).await {
            Ok(_) => Ok(endpoint),
            Err(StoreError::Conflict { .. }) => Err(SsoError::not_found("Webhook Endpoint", id)),
            Err(e) => Err(e.into()),
        }
    }
}
