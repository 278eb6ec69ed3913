//! The delivery worker: a scheduler that follows the endpoint table and one task per enabled
//! endpoint that walks the event log from the endpoint's own cursor.
//!
//! Per endpoint, delivery is strictly in log order: an event that keeps failing is retried
//! (exponential backoff, jitter, no give-up) and the events behind it wait. Endpoints never wait
//! for each other because each has its own task.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use idbridge_model::Timestamp;
use idbridge_store::{Store, StoreError, StoredEvent};
use rand::rngs::StdRng;
use rand::SeedableRng;
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tracing::Instrument;

use crate::config::DeliveryConfig;
use crate::error::{DeliveryError, ForwardError};
use crate::records::{DeliveryState, DeliveryStates};
use crate::sign::signature_header;
use idbridge_sso::webhooks::{EndpointStatus, WebhookEndpoint, WebhookEndpoints};

/// Header carrying the signature, as WorkOS names it.
pub const SIGNATURE_HEADER: &str = "WorkOS-Signature";

/// The HTTP side of a delivery: a client that never follows redirects and always times out.
#[derive(Clone)]
pub struct DeliveryClient {
    http: reqwest::Client,
}

impl DeliveryClient {
    /// Builds the client from the config's timeouts and user agent.
    pub fn new(config: &DeliveryConfig) -> Result<Self, ForwardError> {
        let http = reqwest::Client::builder()
            // A redirect would carry the signed event to a URL nobody registered.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .user_agent(config.user_agent.clone())
            .build()
            .map_err(|e| ForwardError::Client(e.to_string()))?;
        Ok(DeliveryClient { http })
    }

    /// POSTs one event body, signed now. Ok(status) only for a 2xx.
    pub async fn deliver(
        &self,
        endpoint: &WebhookEndpoint,
        body: &[u8],
    ) -> Result<u16, DeliveryError> {
        let t_ms = chrono::Utc::now().timestamp_millis();
        let signature = signature_header(&endpoint.secret, t_ms, body);
        let response = self
            .http
            .post(&endpoint.endpoint_url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(SIGNATURE_HEADER, signature)
            .body(body.to_vec())
            .send()
            .await
            .map_err(classify)?;
        let status = response.status();
        // The body is not read: receivers' answers are not part of the protocol.
        drop(response);
        if status.is_success() {
            Ok(status.as_u16())
        } else {
            Err(DeliveryError::Status {
                status: status.as_u16(),
            })
        }
    }
}

fn classify(err: reqwest::Error) -> DeliveryError {
    // The error chain holds the useful part ("connection refused"), the top level only the URL.
    let mut detail = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    if err.is_timeout() {
        DeliveryError::Timeout(detail)
    } else {
        DeliveryError::Transport(detail)
    }
}

/// Starts the delivery worker on the current tokio runtime. The store's cursors make a restart
/// resume exactly where each endpoint stood.
pub fn spawn(
    store: Arc<dyn Store>,
    config: DeliveryConfig,
) -> Result<DeliveryWorker, ForwardError> {
    let client = DeliveryClient::new(&config)?;
    let (stop, stopping) = watch::channel(false);
    let worker = Worker {
        store,
        client,
        config: Arc::new(config),
        stopping,
    };
    Ok(DeliveryWorker {
        task: tokio::spawn(worker.schedule()),
        stop,
    })
}

/// The running delivery worker.
pub struct DeliveryWorker {
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl DeliveryWorker {
    /// Stops at once, even mid-delivery: a POST the receiver already got is sent again after
    /// the restart (its cursor was not moved), which receivers absorb by the event id.
    pub fn abort(self) {
        self.task.abort();
    }

    /// The graceful stop (server shutdown): each endpoint finishes the delivery in flight and
    /// records its answer and cursor, then stops instead of starting another one or waiting out
    /// a retry delay. Whatever still runs after `within` is aborted, as [`Self::abort`] does.
    /// Returns whether every endpoint stopped on its own.
    pub async fn stop(self, within: Duration) -> bool {
        let _ = self.stop.send(true);
        let mut task = self.task;
        match tokio::time::timeout(within, &mut task).await {
            Ok(_) => true,
            Err(_) => {
                task.abort();
                false
            }
        }
    }
}

#[derive(Clone)]
struct Worker {
    store: Arc<dyn Store>,
    client: DeliveryClient,
    config: Arc<DeliveryConfig>,
    /// Turns true when the worker is asked to stop ([`DeliveryWorker::stop`]).
    stopping: watch::Receiver<bool>,
}

/// How one event's delivery ended.
enum Delivery {
    /// A 2xx, and the cursor moved past the event durably.
    Acknowledged,
    /// The endpoint was deleted meanwhile: its task ends.
    EndpointDeleted,
    /// The worker is stopping: the event stays unacknowledged, to be sent after the restart.
    Stopped,
}

impl Worker {
    /// Re-reads the endpoint table every poll interval and keeps exactly one task per enabled
    /// endpoint, restarted when its record changes (new URL, secret, events) so a changed
    /// endpoint is retried at once with its new settings.
    async fn schedule(self) {
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut running: HashMap<String, (WebhookEndpoint, AbortHandle)> = HashMap::new();
        loop {
            if self.is_stopping() {
                // Each endpoint task sees the same signal and ends after its delivery in flight.
                while tasks.join_next().await.is_some() {}
                return;
            }
            while tasks.try_join_next().is_some() {}
            match self.load_endpoints().await {
                Ok(endpoints) => {
                    let wanted: HashMap<String, WebhookEndpoint> = endpoints
                        .into_iter()
                        .filter(|e| e.status == EndpointStatus::Enabled)
                        .map(|e| (e.id.clone(), e))
                        .collect();
                    running.retain(|id, (record, handle)| {
                        let keep = wanted.get(id) == Some(record) && !handle.is_finished();
                        if !keep {
                            handle.abort();
                        }
                        keep
                    });
                    for (id, record) in wanted {
                        if running.contains_key(&id) {
                            continue;
                        }
                        tracing::info!(endpoint = %id, url = %record.endpoint_url, "webhook endpoint delivery started");
                        let handle = tasks.spawn(self.clone().run_endpoint(record.clone()));
                        running.insert(id, (record, handle));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading webhook endpoints failed"),
            }
            self.pause(self.config.poll_interval()).await;
        }
    }

    fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Sleeps for `delay`, or less when the worker is asked to stop meanwhile.
    async fn pause(&self, delay: Duration) {
        let mut stopping = self.stopping.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopping.wait_for(|stop| *stop) => {}
        }
    }

    async fn load_endpoints(&self) -> Result<Vec<WebhookEndpoint>, ForwardError> {
        let endpoints = WebhookEndpoints::new(self.store.clone());
        let (ok, bad) = self.blocking(move |_| endpoints.all()).await?;
        // One bad record must not stop the others' deliveries.
        for (id, e) in bad {
            tracing::error!(endpoint = %id, error = %e, "corrupt webhook endpoint record skipped");
        }
        Ok(ok)
    }

    /// Runs `f` on the blocking pool (store calls block, commits wait for fdatasync).
    async fn blocking<T, F>(&self, f: F) -> Result<T, ForwardError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| ForwardError::Join(e.to_string()))?
            .map_err(ForwardError::from)
    }

    async fn load_state(&self, id: &str) -> Result<DeliveryState, ForwardError> {
        let key = id.to_string();
        let states = DeliveryStates::new(self.store.clone());
        let found = self.blocking(move |_| states.get(&key)).await?;
        match found {
            Some(state) => Ok(state),
            // The API writes the starting cursor on creation; a record without one (written
            // by hand, or by an older version) starts at the current end, like a new endpoint.
            None => {
                let last = self.blocking(|store| store.last_event_seq()).await?;
                Ok(DeliveryState {
                    cursor: last,
                    ..DeliveryState::default()
                })
            }
        }
    }

    /// Durably stores the state, but only while the endpoint still exists: `Ok(false)` means
    /// it was deleted and the task must stop (and must not resurrect a state record).
    async fn persist(&self, id: &str, state: &DeliveryState) -> Result<bool, ForwardError> {
        let states = DeliveryStates::new(self.store.clone());
        let (id, state) = (id.to_owned(), state.clone());
        self.blocking(move |_| states.save(&id, &state)).await
    }

    /// Persists, retrying store failures with backoff until it works (a cursor that did not
    /// reach the disk would make a crash redeliver; a lost failure record is harmless but
    /// the retries keep the admin view honest). `false` = endpoint deleted.
    async fn persist_until_done(&self, id: &str, state: &DeliveryState, rng: &mut StdRng) -> bool {
        let backoff = self.config.backoff();
        let mut failures = 0;
        loop {
            match self.persist(id, state).await {
                Ok(alive) => return alive,
                Err(e) => {
                    failures += 1;
                    let delay = backoff.delay(failures, rng);
                    tracing::warn!(endpoint = %id, error = %e, ?delay, "persisting webhook cursor failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn run_endpoint(self, endpoint: WebhookEndpoint) {
        let span = tracing::info_span!("webhook_endpoint", endpoint = %endpoint.id);
        self.endpoint_loop(endpoint).instrument(span).await;
    }

    async fn endpoint_loop(self, endpoint: WebhookEndpoint) {
        let mut rng = StdRng::from_entropy();
        let backoff = self.config.backoff();
        let id = endpoint.id.clone();
        let mut state = loop {
            if self.is_stopping() {
                return;
            }
            match self.load_state(&id).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(error = %e, "loading webhook delivery state failed; retrying");
                    self.pause(backoff.max.min(Duration::from_secs(5))).await;
                }
            }
        };
        let batch_size = self.config.batch_size;
        loop {
            if self.is_stopping() {
                // Skips since the last persisted delivery, kept so a restart does not walk them.
                let _ = self.persist(&id, &state).await;
                return;
            }
            let cursor = state.cursor;
            let read = self
                .blocking(move |store| {
                    Ok((
                        store.events_after(cursor, batch_size)?,
                        store.last_event_seq()?,
                    ))
                })
                .await;
            let (batch, last_seq) = match read {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the event log failed; retrying");
                    self.pause(self.config.poll_interval()).await;
                    continue;
                }
            };
            record_lag(&id, last_seq, state.cursor);
            if batch.is_empty() {
                self.pause(self.config.poll_interval()).await;
                continue;
            }
            if let Some(first) = batch.first() {
                if first.seq > state.cursor.saturating_add(1) && state.cursor > 0 {
                    tracing::warn!(
                        cursor = state.cursor,
                        oldest_kept = first.seq,
                        "events behind this endpoint's cursor were compacted away before delivery"
                    );
                }
            }
            let mut skipped = false;
            for event in &batch {
                if event.seq <= state.cursor {
                    continue;
                }
                if !endpoint.subscribes_to(&event.kind) {
                    state.cursor = event.seq;
                    skipped = true;
                    continue;
                }
                if self.is_stopping() {
                    break;
                }
                match self
                    .deliver_until_acked(&endpoint, event, &mut state, &mut rng)
                    .await
                {
                    Delivery::Acknowledged => {}
                    Delivery::EndpointDeleted => {
                        tracing::info!("webhook endpoint deleted; delivery stopped");
                        return;
                    }
                    Delivery::Stopped => break,
                }
                skipped = false;
                record_lag(&id, last_seq, state.cursor);
            }
            // Only skips since the last persisted delivery: store them so a restart does not
            // walk them again (harmless but slow on a long log).
            if skipped && !self.persist_until_done(&id, &state, &mut rng).await {
                return;
            }
            record_lag(&id, last_seq, state.cursor);
        }
    }

    /// Delivers one event, retrying until a 2xx, then durably moves the cursor past it. A stop
    /// request ends the retries, never an attempt in flight.
    async fn deliver_until_acked(
        &self,
        endpoint: &WebhookEndpoint,
        event: &StoredEvent,
        state: &mut DeliveryState,
        rng: &mut StdRng,
    ) -> Delivery {
        let backoff = self.config.backoff();
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            let span = tracing::info_span!(
                "webhook_delivery",
                endpoint = %endpoint.id,
                event_id = %event.id,
                event = %event.kind,
                seq = event.seq,
                attempt,
            );
            let result = self
                .client
                .deliver(endpoint, &event.body)
                .instrument(span.clone())
                .await;
            let now = Timestamp::now();
            state.last_event_id = Some(event.id.clone());
            match result {
                Ok(status) => {
                    span.in_scope(|| tracing::info!(status, "webhook delivered"));
                    metrics::counter!("idbridge_webhook_deliveries_total", "endpoint" => endpoint.id.clone(), "outcome" => "success").increment(1);
                    state.cursor = event.seq;
                    state.last_success_at = Some(now);
                    state.consecutive_failures = 0;
                    state.next_attempt_at = None;
                    state.last_error = None;
                    state.delivered_total = state.delivered_total.saturating_add(1);
                    metrics::gauge!("idbridge_webhook_consecutive_failures", "endpoint" => endpoint.id.clone()).set(0.0);
                    // Seconds since the epoch, so alerts can say "no success for N minutes".
                    metrics::gauge!("idbridge_webhook_last_success_timestamp_seconds", "endpoint" => endpoint.id.clone())
                        .set(now.as_millis() as f64 / 1000.0);
                    return if self.persist_until_done(&endpoint.id, state, rng).await {
                        Delivery::Acknowledged
                    } else {
                        Delivery::EndpointDeleted
                    };
                }
                Err(err) => {
                    state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                    let delay = backoff.delay(state.consecutive_failures, rng);
                    let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                    span.in_scope(|| {
                        tracing::warn!(error = %err, retry_in_ms = delay_ms, "webhook delivery failed")
                    });
                    metrics::counter!("idbridge_webhook_deliveries_total", "endpoint" => endpoint.id.clone(), "outcome" => err.outcome()).increment(1);
                    metrics::gauge!("idbridge_webhook_consecutive_failures", "endpoint" => endpoint.id.clone())
                        .set(f64::from(state.consecutive_failures));
                    state.last_failure_at = Some(now);
                    state.last_error = Some(err.to_string());
                    state.next_attempt_at = Some(Timestamp::from_millis(
                        now.as_millis().saturating_add(delay_ms),
                    ));
                    // Best effort: a failure record that does not reach the store only makes
                    // the admin view stale; it must not hold up the retry.
                    match self.persist(&endpoint.id, state).await {
                        Ok(true) => {}
                        Ok(false) => return Delivery::EndpointDeleted,
                        Err(e) => {
                            tracing::warn!(error = %e, "recording the webhook failure failed")
                        }
                    }
                    self.pause(delay).await;
                    if self.is_stopping() {
                        return Delivery::Stopped;
                    }
                }
            }
        }
    }
}

fn record_lag(endpoint: &str, last_seq: u64, cursor: u64) {
    let lag = last_seq.saturating_sub(cursor);
    // f64 is exact for any lag below 2^53 events.
    metrics::gauge!("idbridge_webhook_lag_events", "endpoint" => endpoint.to_string())
        .set(lag as f64);
}
