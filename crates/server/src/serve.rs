//! `idbridge serve`: wires the store, the API and the background workers, and listens.
//!
//! Signals: `SIGHUP` reloads the HTTPS certificate (`crate::tls`). `SIGTERM`/`SIGINT` shut down
//! gracefully: `/readyz` turns 503 `draining` at once; the listener keeps serving for
//! `server.shutdown_delay_secs` (so a load balancer sees the 503 and stops sending before
//! connections are refused), then closes (new connections are refused); in-flight requests get
//! `server.shutdown_grace_secs` to finish (then the rest are closed); the background workers
//! are stopped (webhook deliveries in flight finish and are recorded within what is left of
//! the grace period; LDAP schedulers, SFTP pulls and server, SCIM push and timers stop; a store
//! write in progress always completes, as each is one transaction on a blocking thread); and
//! the store is closed, which checkpoints its WAL into the database file so the next start has
//! nothing to replay. A second signal cuts the delay short; one while draining closes the
//! remaining connections at once.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use idbridge_api::{ApiConfig, AppState};
use idbridge_store::Store;

use crate::config::Config;

pub fn serve(config: Config) -> anyhow::Result<()> {
    crate::logging::init(&config.log);
    // Two rustls providers are linked (russh and reqwest pull in different ones): pick one.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let stopped = runtime.block_on(serve_async(config))?;
    // Whatever still runs (timers, aborted workers) is dropped here; blocking work in flight
    // (a store transaction) gets what is left of the grace period, at least a second.
    let deadline = stopped.began + stopped.grace;
    runtime.shutdown_timeout(
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1)),
    );
    close_store(stopped.store);
    tracing::info!(
        elapsed_ms = u64::try_from(stopped.began.elapsed().as_millis()).unwrap_or(u64::MAX),
        "idbridge stopped"
    );
    Ok(())
}

/// What is left to close once the HTTP server has drained.
struct Stopped {
    store: Arc<dyn Store>,
    /// When the listener closed (the grace period counts from here).
    began: Instant,
    grace: Duration,
}

/// `server.shutdown_delay_secs` and `server.shutdown_grace_secs`, read when the stop signal
/// arrives: `PATCH /admin/settings/server` changes them while the server runs.
pub struct ShutdownTimes {
    delay_secs: AtomicU64,
    grace_secs: AtomicU64,
}

impl ShutdownTimes {
    pub fn new(server: &crate::config::ServerConfig) -> Self {
        ShutdownTimes {
            delay_secs: AtomicU64::new(server.shutdown_delay_secs),
            grace_secs: AtomicU64::new(server.shutdown_grace_secs),
        }
    }

    pub fn set(&self, server: &crate::config::ServerConfig) {
        self.delay_secs
            .store(server.shutdown_delay_secs, Ordering::Relaxed);
        self.grace_secs
            .store(server.shutdown_grace_secs, Ordering::Relaxed);
    }

    fn delay(&self) -> Duration {
        Duration::from_secs(self.delay_secs.load(Ordering::Relaxed))
    }

    fn grace(&self) -> Duration {
        Duration::from_secs(self.grace_secs.load(Ordering::Relaxed))
    }
}

/// Drops the last handle of the store: its threads stop and SQLite checkpoints the WAL into
/// the database file on the last close, so the next start has no recovery work.
fn close_store(store: Arc<dyn Store>) {
    let holders = Arc::strong_count(&store);
    if holders > 1 {
        tracing::warn!(
            holders,
            "the store is still held by a task that did not stop; it closes at exit instead \
             (acknowledged writes are on disk; the next start replays the WAL)"
        );
    }
    drop(store);
    if holders == 1 {
        tracing::info!("store closed");
    }
}

async fn serve_async(config: Config) -> anyhow::Result<Stopped> {
    // Signals that arrive while starting wait for the handler instead of killing the process.
    let signals = Signals::install()?;
    // The certificate first: a bad pair stops the start before anything is opened.
    let tls_cert = match &config.server.tls {
        Some(tls) => Some(crate::tls::ReloadableCert::load(&tls.cert, &tls.key)?),
        None => None,
    };
    let secret_key = crate::secret_key(&config)?;
    let store = crate::open_store(&config)?;
    // An operator-provided key (a Kubernetes Secret) replaces the first-start random one.
    crate::keys::provision_from_env(store.as_ref())?;
    // Runtime settings (crate::settings): the file's values, except those changed through the
    // admin API since (and not changed in the file since).
    let file_config = config.clone();
    let seeded =
        crate::settings::seed(store.as_ref(), &config).context("reading the runtime settings")?;
    let config = seeded.config.clone();
    if config.log.level != file_config.log.level {
        if let Err(e) = crate::logging::set_level(&config.log.level) {
            tracing::warn!(error = %e, "the stored log level is not usable");
        }
    }
    if config.log.format != file_config.log.format {
        if let Err(e) = crate::logging::set_format(config.log.format) {
            tracing::warn!(error = %e, "the stored log format is not usable");
        }
    }
    if let Some(boot) = idbridge_sso::api_keys::bootstrap(store.as_ref())? {
        // Printed once, on the first start of a fresh data directory.
        println!("IDBRIDGE_API_KEY={}", boot.api_key);
        println!("IDBRIDGE_CLIENT_ID={}", boot.client_id);
        eprintln!(
            "First start: created an API key and a client id (printed above on stdout). \
             Store the key now; it is kept only as a hash."
        );
    }

    if let Some((user, password)) = idbridge_console::operators::bootstrap(store.as_ref())? {
        // Printed once, like the API key: the console's first operator.
        println!("IDBRIDGE_CONSOLE_USER={user}");
        println!("IDBRIDGE_CONSOLE_PASSWORD={password}");
        eprintln!(
            "First start: created the console operator {user:?} (password printed above on \
             stdout; sign in at {}/console and keep it safe, or change it with \
             `idbridge console-user passwd {user}`).",
            config.public_url()
        );
    }

    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let mut state = AppState::new(
        store.clone(),
        ApiConfig {
            public_url: config.public_url(),
            request_timeout: Duration::from_secs(config.server.request_timeout_secs),
            max_body_bytes: config.server.max_body_bytes,
            body_read_timeout: Duration::from_secs(config.server.body_read_timeout_secs),
            limits: config.limits.to_api(),
        },
    );
    state.ready.store(false, Ordering::Relaxed);
    state.metrics = Some(Arc::new(move || metrics.render()));
    state.tls = tls_cert
        .clone()
        .map(|c| c as idbridge_api::tls_admin::SharedTlsReloader);
    // SSO: redirect-URI allow-list and the key sealing connection secrets (loaded before the
    // store is opened: a bad secret stops the start before anything is written).
    // SCIM push: its tokens are sealed with the same key.
    state.forward = idbridge_forward::scim_push::ScimPush::new(
        store.clone(),
        state.directory.clone(),
        Some(secret_key.clone()),
    );
    // LDAP / SFTP feed settings: bind passwords and pull keys are sealed with the same key.
    state.feeds = Arc::new(idbridge_api::feeds_admin::Feeds::new(
        idbridge_directory::feeds::FeedStore::new(store.clone(), Some(secret_key.clone())),
    ));
    let state = state.with_sso(config.sso.to_api(), Some(secret_key));
    state.sso.set_idp_config(
        config
            .idp
            .settings
            .to_config()
            .context("the [idp] section of the config file")?,
    );
    // IdP metadata URLs: new signing certificates and expiry warnings, hourly.
    idbridge_sso::connections::metadata::spawn_metadata_refresh(
        state.sso.clone(),
        Duration::from_secs(3600),
    );
    // Started logins whose session expired unfinished: authentication.sso_timed_out.
    idbridge_sso::login::timeout::spawn_timeout_sweeper(state.sso.clone());

    // Organization domains: DNS settings from [dns], and the re-check of pending domains.
    state.sso.dns().set_settings(config.dns.to_settings());
    let domain_recheck = idbridge_sso::domains::spawn_domain_recheck(state.sso.clone());

    crate::declared::apply_organizations(
        state.sso.organizations(),
        state.store.as_ref(),
        &config.organizations,
    )
    .await?;
    crate::connections::apply_declared(&state.sso, state.store.as_ref(), &config).await?;
    // Then the feeds that name a declared directory by key get its id.
    let config = {
        let engine = state.directory.clone();
        let mut cfg = config.clone();
        let public_url = config.public_url();
        tokio::task::spawn_blocking(move || {
            crate::directories::apply_declared(&engine, &cfg, &public_url)?;
            crate::directories::resolve_references(&engine, &mut cfg)?;
            Ok::<_, anyhow::Error>(cfg)
        })
        .await
        .context("applying declared directories")??
    };
    // [[idp.service_providers]] / [[idp.oidc_clients]] (may name a declared directory).
    crate::idp_declared::apply_declared(
        &state.sso,
        &state.directory,
        state.store.as_ref(),
        &config.idp,
    )
    .await?;
    {
        let (push, engine, cfg) = (
            state.forward.clone(),
            state.directory.clone(),
            config.clone(),
        );
        tokio::task::spawn_blocking(move || {
            crate::forward_cli::apply_declared(&push, &engine, &cfg)
        })
        .await
        .context("applying declared forward targets")??;
    }
    let retention_days = Arc::new(AtomicU32::new(config.events.retention_days));
    let housekeeping = spawn_housekeeping(store.clone(), retention_days.clone());
    // SCIM push: one forwarder per directory with a target, each from its own cursor.
    let scim_push = state.forward.spawn();
    // Webhook deliveries: one task per endpoint, each from its own cursor in the event log.
    let webhooks = Arc::new(
        crate::settings::WebhookWorker::start(store.clone(), config.webhooks.clone())
            .context("starting the webhook delivery worker")?,
    );
    // LDAP / SFTP feeds: the file's entries seeded into the store (crate::feeds), then every
    // stored feed run (LDAP schedulers, the embedded SFTP server, pull jobs), and changed live
    // by the admin API from now on.
    {
        let (feeds, cfg, st) = (state.feeds.store.clone(), config.clone(), store.clone());
        tokio::task::spawn_blocking(move || crate::feeds::seed(&feeds, st.as_ref(), &cfg))
            .await
            .context("seeding directory feeds")??;
    }
    let supervisor = crate::feeds::FeedSupervisor::new(
        state.directory.clone(),
        state.feeds.store.clone(),
        state.ldap.clone(),
        &config,
    );
    state.feeds.install(supervisor.clone());
    if let Err(e) = supervisor.apply_all().await {
        tracing::error!(error = %e, "some directory feeds could not be started; fix them with PUT /admin/directories/{{id}}/feed or in the config file");
    }

    // Slow and greedy clients: connection counts, header and idle timers (conn_limits.rs).
    let limits = crate::conn_limits::ConnLimits::from_config(&config.server);
    let conn_caps = Arc::new(crate::conn_limits::ConnCaps::new(&limits));
    let shutdown_times = Arc::new(ShutdownTimes::new(&config.server));
    // `/admin/settings`: changes are stored and applied to these from now on.
    state
        .settings
        .install(Arc::new(crate::settings::RuntimeSettings::new(
            store.clone(),
            file_config,
            crate::settings::env_keys(std::env::vars()),
            seeded,
            crate::settings::LiveHandles {
                sso: state.sso.clone(),
                http: state.http_limits.clone(),
                api_limiters: state.api_limiters.clone(),
                scim_limiters: state.scim_limiters.clone(),
                conn_caps: conn_caps.clone(),
                retention_days,
                webhooks: webhooks.clone(),
                feeds: supervisor.clone(),
                shutdown: shutdown_times.clone(),
            },
        )));

    let app = idbridge_api::router(state.clone());
    let addr = config.server.listen;
    let handle = axum_server::Handle::new();
    let began = Arc::new(OnceLock::new());
    tokio::spawn(on_signals(
        signals,
        handle.clone(),
        state.draining.clone(),
        tls_cert.clone(),
        shutdown_times.clone(),
        began.clone(),
    ));
    state.ready.store(true, Ordering::Relaxed);
    tracing::info!(%addr, public_url = %config.public_url(), "idbridge listening");
    // The client address reaches handlers (per-address failed-authentication limits).
    let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    match &tls_cert {
        Some(cert) => {
            let rustls =
                axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(cert.server_config()?));
            let mut server = axum_server::bind_rustls(addr, rustls).map(|tls| {
                crate::conn_limits::LimitedAcceptor::with_caps(tls, limits, conn_caps.clone())
            });
            limits.tune(server.http_builder());
            server.handle(handle).serve(service).await
        }
        None => {
            let mut server = axum_server::bind(addr).map(|plain| {
                crate::conn_limits::LimitedAcceptor::with_caps(plain, limits, conn_caps.clone())
            });
            limits.tune(server.http_builder());
            server.handle(handle).serve(service).await
        }
    }
    .with_context(|| format!("serving on {addr}"))?;
    tracing::info!("HTTP connections drained; stopping the background workers");
    let (began, grace) = began
        .get()
        .copied()
        .unwrap_or_else(|| (Instant::now(), shutdown_times.grace()));
    supervisor.stop_all().await;
    // Deliveries in flight get what is left of the grace period (half a second at least) to be
    // answered and recorded, so the restart does not send them again.
    let left = (began + grace)
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(500));
    if !webhooks.stop(left).await {
        tracing::warn!(
            "webhook deliveries still in flight at the end of the grace period were cut; \
             they are sent again after the restart"
        );
    }
    for task in [scim_push, housekeeping, domain_recheck] {
        task.abort();
    }
    Ok(Stopped {
        store,
        began,
        grace,
    })
}

/// Purges expired one-time entries and enforces event retention, once a minute.
fn spawn_housekeeping(
    store: Arc<dyn Store>,
    retention_days: Arc<AtomicU32>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let store = store.clone();
            // Read each round: `PATCH /admin/settings/events` changes it live.
            let retention_days = retention_days.load(Ordering::Relaxed);
            let result = tokio::task::spawn_blocking(move || {
                let now = chrono::Utc::now().timestamp_millis();
                let purged = store.purge_expired(now)?;
                let cutoff = now - i64::from(retention_days) * 86_400_000;
                let compacted = store.compact_events_before(cutoff)?;
                Ok::<_, idbridge_store::StoreError>((purged, compacted))
            })
            .await;
            match result {
                Ok(Ok((purged, compacted))) if purged + compacted > 0 => {
                    tracing::info!(purged, compacted, "housekeeping")
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "housekeeping failed"),
                Err(e) => tracing::warn!(error = %e, "housekeeping task failed"),
            }
        }
    })
}

/// The signals the server acts on, installed before it listens (an error stops the start).
struct Signals {
    hangup: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            hangup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// The next SIGTERM or SIGINT.
    async fn stop(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// SIGHUP reloads the certificate; SIGTERM/SIGINT start the graceful shutdown (see the module
/// docs); a second one while draining closes the remaining connections at once.
async fn on_signals(
    mut signals: Signals,
    handle: axum_server::Handle,
    draining: Arc<std::sync::atomic::AtomicBool>,
    tls: Option<Arc<crate::tls::ReloadableCert>>,
    times: Arc<ShutdownTimes>,
    began: Arc<OnceLock<(Instant, Duration)>>,
) {
    let first = loop {
        tokio::select! {
            _ = signals.terminate.recv() => break "SIGTERM",
            _ = signals.interrupt.recv() => break "SIGINT",
            _ = signals.hangup.recv() => {
                match &tls {
                    // Logged and counted by `reload`, success or refusal.
                    Some(cert) => {
                        let cert = cert.clone();
                        let _ = tokio::task::spawn_blocking(move || cert.reload()).await;
                    }
                    None => {
                        tracing::info!("SIGHUP: no [server.tls] is configured, nothing to reload")
                    }
                }
            }
        }
    };
    draining.store(true, Ordering::Relaxed);
    let delay = times.delay();
    if !delay.is_zero() {
        tracing::info!(
            signal = first,
            delay_secs = delay.as_secs(),
            "stop requested: /readyz is 503; still serving until load balancers stop sending"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            second = signals.stop() => tracing::warn!(
                signal = second,
                "second stop signal: not waiting for load balancers any longer"
            ),
        }
    }
    let grace = times.grace();
    let _ = began.set((Instant::now(), grace));
    tracing::info!(
        signal = first,
        grace_secs = grace.as_secs(),
        "shutting down: /readyz is 503, no new connections, in-flight requests may finish"
    );
    handle.graceful_shutdown(Some(grace));
    let second = signals.stop().await;
    tracing::warn!(
        signal = second,
        "second stop signal: closing the remaining connections now"
    );
    handle.shutdown();
}
