//! `idbridge serve`: wires the store, the API and the background workers, and listens.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
    runtime.block_on(serve_async(config))
}

async fn serve_async(config: Config) -> anyhow::Result<()> {
    let store = crate::open_store(&config)?;
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
    if let Some(boot) = idbridge_sso::api_keys::bootstrap(store.as_ref())? {
        // Printed once, on the first start of a fresh data directory.
        println!("IDBRIDGE_API_KEY={}", boot.api_key);
        println!("IDBRIDGE_CLIENT_ID={}", boot.client_id);
        eprintln!(
            "First start: created an API key and a client id (printed above on stdout). \
             Store the key now; it is kept only as a hash."
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
    // SSO: redirect-URI allow-list and the key sealing connection secrets.
    let secret_key = crate::secret_key(&config)?;
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
            .to_config()
            .context("the [idp] section of the config file")?,
    );
    // IdP metadata URLs: new signing certificates and expiry warnings, hourly.
    idbridge_sso::connections::metadata::spawn_metadata_refresh(
        state.sso.clone(),
        Duration::from_secs(3600),
    );

    // Organization domains: DNS settings from [dns], and the re-check of pending domains.
    state.sso.dns().set_settings(config.dns.to_settings());
    idbridge_sso::domains::spawn_domain_recheck(state.sso.clone());

    apply_declared(&state, &config).await?;
    crate::connections::apply_declared(&state.sso, &config).await?;
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
    spawn_housekeeping(store.clone(), retention_days.clone());
    // SCIM push: one forwarder per directory with a target, each from its own cursor.
    let _scim_push = state.forward.spawn();
    // Webhook deliveries: one task per endpoint, each from its own cursor in the event log.
    let webhooks = crate::settings::WebhookWorker::start(store.clone(), config.webhooks.clone())
        .context("starting the webhook delivery worker")?;
    // LDAP / SFTP feeds: the file's entries seeded into the store (crate::feeds), then every
    // stored feed run (LDAP schedulers, the embedded SFTP server, pull jobs), and changed live
    // by the admin API from now on.
    {
        let (feeds, cfg) = (state.feeds.store.clone(), config.clone());
        tokio::task::spawn_blocking(move || crate::feeds::seed(&feeds, &cfg))
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
                webhooks,
            },
        )));

    let app = idbridge_api::router(state.clone());
    let addr = config.server.listen;
    let handle = axum_server::Handle::new();
    tokio::spawn(shutdown_on_signal(handle.clone()));
    state.ready.store(true, Ordering::Relaxed);
    tracing::info!(%addr, public_url = %config.public_url(), "idbridge listening");
    // The client address reaches handlers (per-address failed-authentication limits).
    let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    match &config.server.tls {
        Some(tls) => {
            let rustls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .with_context(|| {
                    format!(
                        "loading TLS certificate {} and key {}",
                        tls.cert.display(),
                        tls.key.display()
                    )
                })?;
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
    tracing::info!("idbridge stopped");
    Ok(())
}

/// Creates or updates the organizations declared in the config, keyed by external_id.
async fn apply_declared(state: &AppState, config: &Config) -> anyhow::Result<()> {
    for org in &config.organizations {
        let (applied, changed) = state
            .sso
            .organizations()
            .upsert_declared(&org.external_id, &org.name, &org.domains, &org.metadata)
            .await
            .map_err(|e| anyhow::anyhow!("declared organization {:?}: {e}", org.external_id))?;
        tracing::info!(id = %applied.id, external_id = %org.external_id, changed, "declared organization applied");
    }
    Ok(())
}

/// Purges expired one-time entries and enforces event retention, once a minute.
fn spawn_housekeeping(store: Arc<dyn Store>, retention_days: Arc<AtomicU32>) {
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
    });
}

async fn shutdown_on_signal(handle: axum_server::Handle) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
    handle.graceful_shutdown(Some(Duration::from_secs(10)));
}
