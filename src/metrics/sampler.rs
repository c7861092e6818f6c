//! The sampler: every few seconds, reads the gauges that need the database (queue depth by
//! status, the oldest due delivery's age, dead letters, endpoints by state, the oldest open
//! transaction) and the pool's own counts, and sets them in [`Metrics`].
//!
//! Every instance samples (every instance serves `/metrics`), so each sample must stay cheap
//! whatever the queue's, the endpoints' or the history's size: counts are exact up to
//! [`EXACT_UP_TO`] rows and planner estimates above, the oldest due delivery is one probe into
//! each of the `delivery_run_at` and `delivery_scheduled` indexes, and the oldest transaction
//! comes from `pg_stat_activity`. It must never count a whole table, never write, and never
//! hold a transaction longer than [`STATEMENT_TIMEOUT`].

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::Metrics;
use crate::config::Roles;

/// How often the database gauges are refreshed.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// A sample that takes longer than this is cancelled by the server (and counted as failed).
pub const STATEMENT_TIMEOUT: &str = "2s";

/// Counts are exact up to this many rows; above, they come from the planner's statistics
/// (kept fresh by the hot table's absolute autovacuum thresholds), so a sample never reads
/// more than this many index entries per gauge, whatever the queue's or the history's size.
pub const EXACT_UP_TO: i64 = 10_000;

/// One reading of the database gauges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Waiting, never attempted.
    pub pending: i64,
    /// Waiting after a failed attempt.
    pub retrying: i64,
    /// Claimed, in flight.
    pub delivering: i64,
    /// Seconds since the oldest claimable delivery became due (0 when none is due). Rows of
    /// disabled endpoints (parked) are not claimable and do not count.
    pub oldest_due_seconds: f64,
    /// Dead deliveries held.
    pub dead_letters: i64,
    /// Enabled endpoints (not deleted).
    pub webhooks_enabled: i64,
    /// Disabled endpoints (not deleted).
    pub webhooks_disabled: i64,
    /// Seconds since the oldest open transaction in this database began (0 when none).
    pub oldest_xact_seconds: f64,
}

/// The rows of `FROM … WHERE …` (`from_where`): exact up to [`EXACT_UP_TO`], else the
/// planner's estimate (never below the bound, so the gauge does not jump down).
async fn bounded_count(
    conn: &mut sqlx::PgConnection,
    from_where: &str,
) -> Result<i64, sqlx::Error> {
    let exact: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM (SELECT 1 {from_where} LIMIT {}) x",
        EXACT_UP_TO + 1
    ))
    .fetch_one(&mut *conn)
    .await?;
    if exact <= EXACT_UP_TO {
        return Ok(exact);
    }
    let plan: sqlx::types::Json<serde_json::Value> =
        sqlx::query_scalar(&format!("EXPLAIN (FORMAT JSON) SELECT 1 {from_where}"))
            .fetch_one(&mut *conn)
            .await?;
    let estimate = plan.0[0]["Plan"]["Plan Rows"].as_f64().unwrap_or(0.0);
    #[allow(clippy::cast_possible_truncation)]
    Ok((estimate as i64).max(exact))
}

/// Reads one sample. Each sub-select is answered from an index or a small table.
pub async fn sample(pool: &PgPool) -> Result<Sample, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(&format!(
        "SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'"
    ))
    .execute(&mut *tx)
    .await?;
    let pending = bounded_count(&mut tx, "FROM delivery WHERE state <> 1 AND attempt = 0").await?;
    let retrying = bounded_count(&mut tx, "FROM delivery WHERE state <> 1 AND attempt > 0").await?;
    // In flight is bounded by the instances' worker slots.
    let delivering = bounded_count(&mut tx, "FROM delivery WHERE state = 1").await?;
    let dead_letters =
        bounded_count(&mut tx, "FROM delivery_finished WHERE status = 'dead'").await?;
    let webhooks_enabled = bounded_count(
        &mut tx,
        "FROM endpoint WHERE deleted_at IS NULL AND enabled",
    )
    .await?;
    let webhooks_disabled = bounded_count(
        &mut tx,
        "FROM endpoint WHERE deleted_at IS NULL AND NOT enabled",
    )
    .await?;
    let (oldest_due_seconds, oldest_xact_seconds): (f64, f64) = sqlx::query_as(
        r"
        SELECT
          -- Ready rows, and scheduled retries due but not yet promoted: one probe each.
          COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - least(
              (SELECT min(run_at) FROM delivery WHERE state = 0),
              (SELECT min(run_at) FROM delivery WHERE state = 2 AND run_at <= clock_timestamp())
            ))::float8, 0),
          COALESCE((SELECT EXTRACT(EPOCH FROM clock_timestamp() - min(xact_start))::float8
                      FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid()
                       AND xact_start IS NOT NULL), 0)
        ",
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Sample {
        pending,
        retrying,
        delivering,
        oldest_due_seconds,
        dead_letters,
        webhooks_enabled,
        webhooks_disabled,
        oldest_xact_seconds,
    })
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
