//! Retention (`DESKHOOK_RETENTION`, default 30 days): deliveries that finished longer ago than
//! the retention period, their attempts, and the events no kept delivery refers to are deleted
//! in small batches, so no statement holds
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

/// The smallest id of a row created `$1` seconds ago: ids sort by creation time, so "created
/// before the cutoff" is an id range on a primary key and no time index is paid for on the hot
/// path.
const CUTOFF_ID: &str = "deskhook_id_at(now() - make_interval(secs => $1))";

/// One sweep; returns the rows deleted from `[delivery_attempt, delivery_finished, event]`.
///
/// History is kept for the retention period after it *ends*, not after the delivery was
/// created (review L6): a finished delivery goes when it finished before the cutoff (it was
/// created before it finished, so the id range only narrows the scan); attempts go with their
/// delivery, never while it is live again after a replay; an event goes only when no delivery,
/// live or finished, still refers to it, so every listed delivery finds its event.
pub async fn sweep(pool: &PgPool, retention: Duration) -> Result<[u64; 3], sqlx::Error> {
    let seconds = retention.as_secs_f64();
    // Rows are picked and deleted by their keys, which include the workspace, and every
    // correlation pairs the workspace too: on Citus each sweep statement then runs per shard
    // (a `ctid`, which this used to delete attempts by, means another row on another shard).
    let finished = format!(
        "DELETE FROM delivery_finished WHERE (id, workspace_id) IN ( \
           SELECT id, workspace_id FROM delivery_finished \
           WHERE id < {CUTOFF_ID} AND finished_at < now() - make_interval(secs => $1) LIMIT $2)"
    );
    let attempts = format!(
        "DELETE FROM delivery_attempt WHERE (workspace_id, delivery_id) IN ( \
           SELECT DISTINCT a.workspace_id, a.delivery_id FROM delivery_attempt a \
           WHERE a.delivery_id < {CUTOFF_ID} \
             AND NOT EXISTS (SELECT 1 FROM delivery d \
                             WHERE d.workspace_id = a.workspace_id AND d.id = a.delivery_id) \
             AND NOT EXISTS (SELECT 1 FROM delivery_finished f \
                             WHERE f.workspace_id = a.workspace_id AND f.id = a.delivery_id) \
           LIMIT $2)"
    );
    let events = format!(
        "DELETE FROM event WHERE (id, workspace_id) IN ( \
           SELECT e.id, e.workspace_id FROM event e \
           WHERE e.id < {CUTOFF_ID} \
             AND NOT EXISTS (SELECT 1 FROM delivery d \
                             WHERE d.workspace_id = e.workspace_id AND d.event_id = e.id) \
             AND NOT EXISTS (SELECT 1 FROM delivery_finished f \
                             WHERE f.workspace_id = e.workspace_id AND f.event_id = e.id) \
           LIMIT $2)"
    );
    // Finished rows first: their attempts and events then go in the same sweep.
    let mut deleted = [0_u64; 3];
    for (slot, statement) in [(1, finished), (0, attempts), (2, events)] {
        loop {
            let result = sqlx::query(&statement)
                .bind(seconds)
                .bind(BATCH)
                .execute(pool)
                .await?;
            deleted[slot] += result.rows_affected();
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
