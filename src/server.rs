//! One Deskhook instance: `run(config, listener, shutdown)` starts the roles the configuration
//! asks for and returns once they have all stopped.
//!
//! Shutdown order: stop accepting HTTP requests, stop claiming deliveries, let in-flight work
//! finish within `shutdown_timeout`, then return. Work still leased at that point is not lost:
//! its lease expires and another instance (or the next start) attempts it again.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::Authenticator,
    config::Config,
    database,
    delivery::{
        client::DeliveryClient,
        dispatcher::{Dispatcher, DispatcherConfig, run_lease_reaper},
    },
    http::{self, AppState, rate_limit::RateLimiter},
    metrics::Metrics,
    queue::{QueueOutbox, Wakeup},
    ssrf::AddressGuard,
    webhooks::TargetCache,
};

/// Runs an instance until `shutdown` is cancelled. The caller owns the listener (tests bind
/// `127.0.0.1:0`) and the shutdown signal.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = database::pool(&config.database_url, config.pool_size)?;
    let migrated = Arc::new(AtomicBool::new(false));
    let wakeup = Wakeup::default();
    let targets = Arc::new(TargetCache::default());
    let metrics = Metrics::new();
    let state = AppState {
        pool: pool.clone(),
        metrics: metrics.clone(),
        config: Arc::new(config.clone()),
        migrated: migrated.clone(),
        auth: Arc::new(Authenticator::new(pool.clone())),
        rate_limiter: Arc::new(RateLimiter::new(config.rate_limit)),
        outbox: Arc::new(QueueOutbox::new(wakeup.clone()).with_metrics(metrics.clone())),
        wakeup: wakeup.clone(),
        targets: targets.clone(),
        address_guard: Arc::new(AddressGuard::new(config.allow_networks.clone())),
        ingest: crate::ingest::IngestBatcher::start(&pool, &wakeup),
    };
    let notifier = tokio::spawn(wakeup.clone().run_notifier(pool.clone(), shutdown.clone()));

    let schema = tokio::spawn(prepare_schema(
        pool.clone(),
        config.migrate_on_start,
        migrated,
        shutdown.clone(),
    ));

    // Background roles start once the schema is in place.
    let roles = tokio::spawn(start_roles(
        config.clone(),
        pool.clone(),
        wakeup.clone(),
        metrics.clone(),
        targets,
        migrated_flag(&state),
        shutdown.clone(),
    ));

    let address = listener.local_addr()?;
    tracing::info!(%address, roles = %config.roles, "deskhook listening");
    http::serve::serve(
        listener,
        http::router(state),
        config.connections,
        shutdown.clone(),
    )
    .await;

    // HTTP has stopped accepting; now the workers drain.
    let _ = roles.await;
    schema.abort();
    notifier.abort();
    pool.close().await;
    tracing::info!("deskhook stopped");
    Ok(())
}

fn migrated_flag(state: &AppState) -> Arc<AtomicBool> {
    state.migrated.clone()
}

/// Starts the delivery workers and the timers once migrations are applied, and waits for them
/// to stop after `shutdown`.
async fn start_roles(
    config: Config,
    pool: sqlx::PgPool,
    wakeup: Wakeup,
    metrics: Metrics,
    targets: Arc<TargetCache>,
    migrated: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    while !migrated.load(Ordering::Acquire) {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
            () = shutdown.cancelled() => return,
        }
    }
    // Rows written before header values were sealed at rest (review M2); a no-op afterwards.
    match crate::webhooks::seal_clear_headers(&pool, &config.secret_box).await {
        Ok(0) => {}
        Ok(sealed) => tracing::info!(endpoints = sealed, "sealed custom header values at rest"),
        Err(error) => {
            tracing::warn!(error = %error, "cannot seal custom header values yet; the next start retries");
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(crate::metrics::sampler::run(
        pool.clone(),
        metrics.clone(),
        config.roles,
        shutdown.clone(),
    ));
    if config.roles.workers {
        let client = DeliveryClient::new(
            AddressGuard::new(config.allow_networks.clone()),
            config.attempt_timeout,
            config.egress_proxy.as_ref(),
        );
        // One claim and one settle at a time, plus endpoint lookups.
        let queue_pool =
            match database::queue_pool(&config.database_url, 4, config.queue_synchronous_commit) {
                Ok(queue_pool) => queue_pool,
                Err(error) => {
                    tracing::error!(error = %error, "cannot open the dispatcher's pool");
                    return;
                }
            };
        let dispatcher = Dispatcher::new(
            queue_pool,
            client,
            config.secret_box.clone(),
            DispatcherConfig {
                concurrency: config.worker_concurrency,
                claim_batch: config.claim_batch,
                schedule: config.retry_schedule.clone(),
                attempt_timeout: config.attempt_timeout,
                shutdown_timeout: config.shutdown_timeout,
            },
            wakeup.clone(),
            metrics.clone(),
            targets,
        );
        tasks.spawn(dispatcher.run(shutdown.clone()));
    }
    if config.roles.timers {
        tasks.spawn(crate::sla::run(
            pool.clone(),
            Arc::new(QueueOutbox::new(wakeup.clone()).with_metrics(metrics.clone())),
            metrics.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(crate::queue::retention::run(
            pool.clone(),
            config.retention,
            shutdown.clone(),
        ));
    }
    // Every instance that delivers also rescues dead workers' leases (safe from any number of
    // instances): a deployment whose timers run elsewhere, or not at all, never leaves lanes and
    // caps blocked by a crashed worker (review L10).
    if config.roles.workers || config.roles.timers {
        tasks.spawn(run_lease_reaper(
            pool.clone(),
            wakeup.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
}

/// Applies migrations (or waits for another instance or `deskhook migrate` to), retrying while
/// the database is unreachable, then marks the instance ready.
async fn prepare_schema(
    pool: sqlx::PgPool,
    migrate: bool,
    migrated: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let policy = backoff::ExponentialBackoff {
        initial_interval: Duration::from_millis(200),
        max_interval: Duration::from_secs(5),
        max_elapsed_time: None,
        ..backoff::ExponentialBackoff::default()
    };
    let attempt = || async {
        if migrate {
            database::migrate(&pool).await.map_err(|error| {
                tracing::warn!(error = %error, "cannot apply migrations yet; retrying");
                backoff::Error::transient(())
            })?;
            return Ok(());
        }
        match database::migrations_applied(&pool).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                tracing::info!("waiting for `deskhook migrate` to apply migrations");
                Err(backoff::Error::transient(()))
            }
            Err(error) => {
                tracing::warn!(
                    error = %database::describe(&error),
                    "cannot reach the database yet; retrying"
                );
                Err(backoff::Error::transient(()))
            }
        }
    };
    tokio::select! {
        result = backoff::future::retry(policy, attempt) => {
            if result.is_ok() {
                migrated.store(true, Ordering::Release);
                tracing::info!("database ready");
            }
        }
        () = shutdown.cancelled() => {}
    }
}
