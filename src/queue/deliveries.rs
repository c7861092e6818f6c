//! The read side of the queue and the replays: deliveries as the API shows them (waiting, in
//! flight and finished alike), their attempt log, retry of one delivery, recovery of an
//! endpoint's dead letters, and the test ping.
//!
//! A replay re-queues **the same** delivery id behind live traffic (priority 2); its attempts
//! go on counting and its retry schedule restarts.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Wakeup;

/// A delivery's public status.
pub const STATUSES: &[&str] = &["pending", "delivering", "succeeded", "retrying", "dead"];

/// A delivery row as the API lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRecord {
    /// Key.
    pub id: i64,
    /// Endpoint key.
    pub endpoint_id: i64,
    /// Event key.
    pub event_id: i64,
    /// Event type.
    pub event_type: String,
    /// One of [`STATUSES`].
    pub status: String,
    /// Attempts made.
    pub attempts: i32,
    /// When the next attempt is due (waiting deliveries).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The last attempt's start.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The last attempt's status code.
    pub last_status_code: Option<i16>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Finished (succeeded or dead).
    pub finished_at: Option<DateTime<Utc>>,
}

/// One recorded attempt.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRecord {
    /// 1-based attempt number.
    pub attempt: i32,
    /// Started.
    pub started_at: DateTime<Utc>,
    /// Duration.
    pub duration_ms: i32,
    /// Status code, if any.
    pub status_code: Option<i16>,
    /// Outcome kind.
    pub outcome: String,
    /// Error text, if any.
    pub error: Option<String>,
    /// The start of the response body.
    pub response_body: Option<String>,
    /// Its settle was refused by the lease fence: the delivery had been claimed again (its
    /// lease expired), so this outcome did not decide its fate.
    pub fenced: bool,
}

/// Filters of the deliveries list.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Only this endpoint's.
    pub endpoint_id: Option<i64>,
    /// Only this event's.
    pub event_id: Option<i64>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only these statuses.
    pub statuses: Option<Vec<String>>,
    /// Keyset: only ids below this (newest first).
    pub before: Option<i64>,
}

const LIST: &str = r"
SELECT x.id, x.endpoint_id, x.event_id, e.event_type, x.status, x.attempts, x.next_attempt_at,
       x.last_attempt_at, x.last_status_code, x.created_at, x.finished_at
FROM (
  SELECT d.id, d.workspace_id, d.endpoint_id, d.event_id,
         CASE WHEN d.state = 1 THEN 'delivering' WHEN d.attempt = 0 THEN 'pending' ELSE 'retrying' END AS status,
         d.attempt AS attempts, CASE WHEN d.state IN (0, 2) THEN d.run_at END AS next_attempt_at,
         d.last_attempt_at, d.last_status_code, d.created_at, NULL::timestamptz AS finished_at
  FROM delivery d WHERE d.workspace_id = $1
  UNION ALL
  SELECT f.id, f.workspace_id, f.endpoint_id, f.event_id, f.status, f.attempts, NULL,
         f.last_attempt_at,
         f.last_status_code, f.created_at, f.finished_at
  FROM delivery_finished f WHERE f.workspace_id = $1
) x
JOIN event e ON e.workspace_id = x.workspace_id AND e.id = x.event_id
WHERE ($2::bigint IS NULL OR x.endpoint_id = $2)
  AND ($3::bigint IS NULL OR x.event_id = $3)
  AND ($4::text IS NULL OR e.event_type = $4)
  AND ($5::text[] IS NULL OR x.status = ANY($5))
  AND ($6::bigint IS NULL OR x.id < $6)
  AND ($7::bigint IS NULL OR x.id = $7)
ORDER BY x.id DESC
LIMIT $8
";

/// A page of the workspace's deliveries, newest first.
pub async fn list(
    pool: &PgPool,
    workspace_id: i64,
    filter: &DeliveryFilter,
    limit: i64,
) -> Result<Vec<DeliveryRecord>, sqlx::Error> {
    sqlx::query_as(LIST)
        .bind(workspace_id)
        .bind(filter.endpoint_id)
        .bind(filter.event_id)
        .bind(filter.event_type.as_deref())
        .bind(filter.statuses.as_deref())
        .bind(filter.before)
        .bind(None::<i64>)
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// One delivery of the workspace.
pub async fn get(
    pool: &PgPool,
    workspace_id: i64,
    id: i64,
) -> Result<Option<DeliveryRecord>, sqlx::Error> {
    sqlx::query_as(LIST)
        .bind(workspace_id)
        .bind(None::<i64>)
        .bind(None::<i64>)
        .bind(None::<&str>)
        .bind(None::<Vec<String>>)
        .bind(None::<i64>)
        .bind(Some(id))
        .bind(1_i64)
        .fetch_optional(pool)
        .await
}

/// The attempt log of a delivery, oldest first.
pub async fn attempts(
    pool: &PgPool,
    workspace_id: i64,
    delivery_id: i64,
) -> Result<Vec<AttemptRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT attempt, started_at, duration_ms, status_code, outcome, error, response_body, \
                fenced \
         FROM delivery_attempt WHERE workspace_id = $2 AND delivery_id = $1 \
         ORDER BY attempt, started_at",
    )
    .bind(delivery_id)
    .bind(workspace_id)
    .fetch_all(pool)
    .await
}

/// Re-queues finished deliveries (their ids, status and finished time chosen by `filter_sql`)
/// behind live traffic, keeping their ids and attempt counts.
const REQUEUE: &str = r"
WITH f AS (
  DELETE FROM delivery_finished f
  USING endpoint ep
  WHERE f.workspace_id = $1 AND ep.workspace_id = f.workspace_id AND ep.id = f.endpoint_id
    AND ep.deleted_at IS NULL
    AND f.attempts < $6
    AND ($2::bigint IS NULL OR f.id = $2)
    AND ($3::bigint IS NULL OR (f.endpoint_id = $3 AND f.status = 'dead'
                                AND f.finished_at >= $4 AND ($5::timestamptz IS NULL OR f.finished_at < $5)))
  RETURNING f.*, ep.ordering
)
INSERT INTO delivery (id, workspace_id, endpoint_id, event_id, order_key, priority, attempt,
                      attempt_base, run_at, last_attempt_at, last_status_code, created_at)
SELECT f.id, f.workspace_id, f.endpoint_id, f.event_id,
       CASE WHEN f.ordering = 'per_ticket' THEN deskhook_lane_key(f.endpoint_id, e.ticket_key) END,
       2, f.attempts, f.attempts, now(), f.last_attempt_at, f.last_status_code, f.created_at
FROM f JOIN event e ON e.workspace_id = f.workspace_id AND e.id = f.event_id
";

/// A delivery stops here, however often it is replayed: no counter can reach its type's
/// limit, and a delivery that failed a thousand times needs a person, not a retry.
pub const MAX_ATTEMPTS: i32 = 1_000;

/// What retrying one delivery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryResult {
    /// Re-queued.
    Requeued,
    /// It is not finished (pending, retrying or delivering).
    NotFinished,
    /// It has used up [`MAX_ATTEMPTS`].
    Exhausted,
    /// No such delivery in this workspace.
    NotFound,
}

/// Re-queues one succeeded or dead delivery, and wakes this instance's dispatcher for it.
pub async fn retry(
    pool: &PgPool,
    wakeup: &Wakeup,
    workspace_id: i64,
    id: i64,
) -> Result<RetryResult, sqlx::Error> {
    let moved = sqlx::query(REQUEUE)
        .bind(workspace_id)
        .bind(Some(id))
        .bind(None::<i64>)
        .bind(None::<DateTime<Utc>>)
        .bind(None::<DateTime<Utc>>)
        .bind(MAX_ATTEMPTS)
        .execute(pool)
        .await?;
    if moved.rows_affected() > 0 {
        wakeup.notify_local();
        return Ok(RetryResult::Requeued);
    }
    let (live, exhausted): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM delivery WHERE id = $1 AND workspace_id = $2), \
                EXISTS (SELECT 1 FROM delivery_finished WHERE id = $1 AND workspace_id = $2 \
                        AND attempts >= $3)",
    )
    .bind(id)
    .bind(workspace_id)
    .bind(MAX_ATTEMPTS)
    .fetch_one(pool)
    .await?;
    Ok(if live {
        RetryResult::NotFinished
    } else if exhausted {
        RetryResult::Exhausted
    } else {
        RetryResult::NotFound
    })
}

/// Re-queues an endpoint's dead deliveries that finished in `[since, until)` (those that used
/// up [`MAX_ATTEMPTS`] stay dead), and wakes this instance's dispatcher for them.
pub async fn recover(
    pool: &PgPool,
    wakeup: &Wakeup,
    workspace_id: i64,
    endpoint_id: i64,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
) -> Result<u64, sqlx::Error> {
    let moved = sqlx::query(REQUEUE)
        .bind(workspace_id)
        .bind(None::<i64>)
        .bind(Some(endpoint_id))
        .bind(since)
        .bind(until)
        .bind(MAX_ATTEMPTS)
        .execute(pool)
        .await?;
    if moved.rows_affected() > 0 {
        wakeup.notify_local();
    }
    Ok(moved.rows_affected())
}

/// Queues a `webhook.test` event for one endpoint only (parked if the endpoint was disabled
/// meanwhile, like any waiting row of a disabled endpoint), and wakes this instance's
/// dispatcher for it. Returns `(event key, delivery key)`.
pub async fn send_test(
    pool: &PgPool,
    wakeup: &Wakeup,
    workspace_id: i64,
    endpoint_id: i64,
    data: &str,
) -> Result<(i64, i64), sqlx::Error> {
    let created = sqlx::query_as(
        "WITH e AS ( \
           INSERT INTO event (workspace_id, event_type, source, occurred_at, data) \
           VALUES ($1, 'webhook.test', 'test', now(), $3) RETURNING id) \
         INSERT INTO delivery (id, workspace_id, endpoint_id, event_id, priority, state) \
         SELECT deskhook_id(), $1, $2, e.id, 1, CASE WHEN ep.enabled THEN 0 ELSE 3 END \
         FROM e JOIN endpoint ep ON ep.workspace_id = $1 AND ep.id = $2 \
         RETURNING event_id, id",
    )
    .bind(workspace_id)
    .bind(endpoint_id)
    .bind(data)
    .fetch_one(pool)
    .await?;
    wakeup.notify_local();
    Ok(created)
}
