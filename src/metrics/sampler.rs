//! The sampler: every few seconds, reads the gauges that need the database (queue depth by
//! status, the oldest due delivery's age, dead letters, endpoints by state, the oldest open
//! transaction) and the pool's own counts, and sets them in [`Metrics`].
//!
//! Every instance samples (every instance serves `/metrics`), so each sample must stay cheap
//! whatever the history's size: one statement of counts over the hot `delivery` table's partial
//! indexes (it holds only unfinished work), `min(run_at)` read from the `delivery_run_at`
//! index, a count of the dead letters through the partial `delivery_finished_dead` index
//! (capped, so it stays bounded), the small `endpoint` table, and `pg_stat_activity`. It must
//! never scan `delivery_finished` or `delivery_attempt` history, never write, and never hold a
//! transaction longer than [`STATEMENT_TIMEOUT`].

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::Metrics;
use crate::config::Roles;

/// How often the database gauges are refreshed.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// A sample that takes longer than this is cancelled by the server (and counted as failed).
pub const STATEMENT_TIMEOUT: &str = "2s";

/// `deskhook_dead_letters` saturates here: counting more would stop being cheap, and an alert
/// on dead letters rising has fired long before.
pub const DEAD_LETTER_CAP: i64 = 1_000_000;

/// One reading of the database gauges.
#[derive(Debug, Clone, Copy, PartialEq, sqlx::FromRow)]
pub struct Sample {
    /// Waiting, never attempted.
    pub pending: i64,
    /// Waiting after a failed attempt.
    pub retrying: i64,
    /// Claimed, in flight.
    pub delivering: i64,
    /// Seconds since the oldest waiting delivery became due (0 when none is due).
    pub oldest_due_seconds: f64,
    /// Dead deliveries held, at most [`DEAD_LETTER_CAP`].
    pub dead_letters: i64,
    /// Enabled endpoints (not deleted).
    pub webhooks_enabled: i64,
    /// Disabled endpoints (not deleted).
    pub webhooks_disabled: i64,
    /// Seconds since the oldest open transaction in this database began (0 when none).
    pub oldest_xact_seconds: f64,
}

/// Reads one sample. Each sub-select is answered from an index or a small table.
pub async fn sample(pool: &PgPool) -> Result<Sample, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(&format!(
        "SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'"
    ))
    .execute(&mut *tx)
    .await?;
    let sample = sqlx::query_as::<_, Sample>(
        r"
        SELECT
          (SELECT count(*) FROM delivery WHERE state = 0 AND attempt = 0) AS pending,
          (SELECT count(*) FROM delivery WHERE state = 0 AND attempt > 0) AS retrying,
          (SELECT count(*) FROM delivery WHERE state = 1) AS delivering,
          COALESCE((SELECT EXTRACT(EPOCH FROM clock_timestamp() - min(run_at))::float8
                      FROM delivery WHERE state = 0 AND run_at <= clock_timestamp()), 0)
            AS oldest_due_seconds,
          (SELECT count(*) FROM (SELECT 1 FROM delivery_finished WHERE status = 'dead'
                                 LIMIT $1) AS dead) AS dead_letters,
          (SELECT count(*) FROM endpoint WHERE deleted_at IS NULL AND enabled) AS webhooks_enabled,
          (SELECT count(*) FROM endpoint WHERE deleted_at IS NULL AND NOT enabled)
            AS webhooks_disabled,
          COALESCE((SELECT EXTRACT(EPOCH FROM clock_timestamp() - min(xact_start))::float8
                      FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid()
                       AND xact_start IS NOT NULL), 0) AS oldest_xact_seconds
        ",
    )
    .bind(DEAD_LETTER_CAP)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(sample)
}

impl Metrics {
    /// Sets the sampled gauges from `sample`.
    pub fn record_sample(&self, sample: &Sample) {
        for (status, value) in super::QUEUE_STATUSES.into_iter().zip([
            sample.pending,
            sample.retrying,
            sample.delivering,
        ]) {
            self.queue_depth.with_label_values(&[status]).set(value);
        }
        self.queue_oldest_due_seconds
            .set(sample.oldest_due_seconds.max(0.0));
        self.dead_letters.set(sample.dead_letters);
        self.webhooks
            .with_label_values(&["enabled"])
            .set(sample.webhooks_enabled);
        self.webhooks
            .with_label_values(&["disabled"])
            .set(sample.webhooks_disabled);
        self.db_oldest_xact_age_seconds
            .set(sample.oldest_xact_seconds.max(0.0));
    }

    /// Sets the pool gauges (no query: the pool knows its own counts).
    pub fn record_pool(&self, pool: &PgPool) {
        self.db_pool_connections.set(i64::from(pool.size()));
        self.db_pool_idle_connections
            .set(i64::try_from(pool.num_idle()).unwrap_or(i64::MAX));
        self.db_pool_max_connections
            .set(i64::from(pool.options().get_max_connections()));
    }
}

/// Records the instance's roles, then samples every [`INTERVAL`] until `shutdown`. Call it
/// once the schema is in place.
pub async fn run(pool: PgPool, metrics: Metrics, roles: Roles, shutdown: CancellationToken) {
    metrics.set_roles(roles);
    let mut failing = false;
    loop {
        match sample(&pool).await {
            Ok(sample) => {
                metrics.record_sample(&sample);
                if failing {
                    tracing::info!("metrics sampling works again");
                }
                failing = false;
            }
            Err(error) => {
                metrics.metrics_sample_failures_total.inc();
                // Logged once per outage, not every five seconds.
                if !failing {
                    tracing::warn!(error = %error, "cannot sample the queue gauges; they keep their last value");
                }
                failing = true;
            }
        }
        metrics.record_pool(&pool);
        tokio::select! {
            () = tokio::time::sleep(INTERVAL) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
