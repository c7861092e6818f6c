//! Retention (`DESKHOOK_RETENTION`, default 30 days): finished deliveries, their attempts, and
//! events older than the retention period are deleted in small batches, so no statement holds
//! locks or a snapshot for long. An event still referenced by a waiting or in-flight delivery
//! is kept whatever its age, so nothing accepted is lost; deleting an event also ends its
//! ingest dedupe key.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Rows per delete statement.
const BATCH: i64 = 5_000;
/// How often the sweep runs.
const INTERVAL: Duration = Duration::from_secs(3600);

/// One sweep; returns the rows deleted from each table.
pub async fn sweep(pool: &PgPool, retention: Duration) -> Result<[u64; 3], sqlx::Error> {
    let seconds = retention.as_secs_f64();
    // Ids sort by creation time (`deskhook_id()`: milliseconds since 2025 above 22 bits), so
    // "older than the retention period" is an id range on each primary key: no time index is
    // paid for on the hot path. A delivery's attempts and its finished row age with the
    // delivery's creation.
    let statements = [
        "DELETE FROM delivery_attempt WHERE ctid = ANY(ARRAY(SELECT ctid FROM delivery_attempt \
           WHERE delivery_id < ((floor(extract(epoch FROM now() - make_interval(secs => $1)) * 1000)::bigint \
                                - 1735689600000) << 22) LIMIT $2))",
        "DELETE FROM delivery_finished WHERE id = ANY(ARRAY(SELECT id FROM delivery_finished \
           WHERE id < ((floor(extract(epoch FROM now() - make_interval(secs => $1)) * 1000)::bigint \
                       - 1735689600000) << 22) LIMIT $2))",
        "DELETE FROM event WHERE id = ANY(ARRAY(SELECT e.id FROM event e \
           WHERE e.id < ((floor(extract(epoch FROM now() - make_interval(secs => $1)) * 1000)::bigint \
                         - 1735689600000) << 22) \
             AND NOT EXISTS (SELECT 1 FROM delivery d WHERE d.event_id = e.id) LIMIT $2))",
    ];
    let mut deleted = [0_u64; 3];
    for (slot, statement) in deleted.iter_mut().zip(statements) {
        loop {
            let result = sqlx::query(statement)
                .bind(seconds)
                .bind(BATCH)
                .execute(pool)
                .await?;
            *slot += result.rows_affected();
            if result.rows_affected() < u64::try_from(BATCH).unwrap_or(u64::MAX) {
                break;
            }
        }
    }
    Ok(deleted)
}

/// Sweeps at start and then hourly until `shutdown`. Safe in several instances: deletes of
/// the same old rows simply find less to do.
pub async fn run(pool: PgPool, retention: Duration, shutdown: CancellationToken) {
    loop {
        match sweep(&pool, retention).await {
            Ok([0, 0, 0]) => {}
            Ok([attempts, deliveries, events]) => {
                tracing::info!(
                    attempts,
                    deliveries,
                    events,
                    "retention removed old history"
                );
            }
            Err(error) => tracing::warn!(error = %error, "retention sweep failed; will retry"),
        }
        tokio::select! {
            () = tokio::time::sleep(INTERVAL) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
