//! Claiming due deliveries: one statement per batch, leased and fenced, joined with the event
//! it carries so the dispatcher needs no second round trip.
//!
//! Unordered deliveries use the fair claim of queue.md: enumerate endpoints that have waiting
//! work with a skip-scan, give each at most `min(free slots under its max_in_flight, its rate
//! limit, batch / endpoints + 1)` rows, and hand them out round robin (first of every
//! endpoint, then second, ...). A slow endpoint at its cap gets nothing and costs the others
//! nothing. Within an endpoint, `priority` (SLA, live, replay) then due time decide.
//!
//! `per_ticket` endpoints use FIFO lanes: only the head (lowest id) of a lane is eligible, and
//! only while nothing of the lane is in flight; a unique index makes two in flight impossible.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// A claimed delivery with its event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    /// Delivery key.
    pub id: i64,
    /// Target endpoint.
    pub endpoint_id: i64,
    /// The event.
    pub event_id: i64,
    /// The attempt this claim is (1-based, counts on across replays).
    pub attempt: i16,
    /// Attempts made before the last replay; the retry schedule restarts after them.
    pub attempt_base: i16,
    /// The fencing token of this claim.
    pub lease_id: i64,
    /// The event's workspace.
    pub workspace_id: i64,
    /// The event type.
    pub event_type: String,
    /// When the event happened.
    pub occurred_at: DateTime<Utc>,
    /// When the event was accepted (for end-to-end latency).
    pub accepted_at: DateTime<Utc>,
    /// The raw JSON data object.
    pub data: String,
}

const CLAIM_FAIR: &str = r"
WITH RECURSIVE lane AS (
  (SELECT endpoint_id FROM delivery
    WHERE state = 0 AND order_key IS NULL ORDER BY endpoint_id LIMIT 1)
  UNION ALL
  SELECT nxt.endpoint_id FROM lane
  CROSS JOIN LATERAL (
    SELECT d.endpoint_id FROM delivery d
    WHERE d.state = 0 AND d.order_key IS NULL AND d.endpoint_id > lane.endpoint_id
    ORDER BY d.endpoint_id LIMIT 1) nxt
),
inflight AS MATERIALIZED (
  SELECT endpoint_id, count(*) AS n FROM delivery WHERE state = 1 GROUP BY endpoint_id
),
room AS MATERIALIZED (
  SELECT l.endpoint_id,
         least(ep.max_in_flight - coalesce(i.n, 0),
               coalesce(ep.rate_limit_per_second, 2147483647)) AS free,
         count(*) OVER () AS lanes
  FROM lane l
  JOIN endpoint ep ON ep.id = l.endpoint_id AND ep.enabled AND ep.deleted_at IS NULL
  LEFT JOIN inflight i ON i.endpoint_id = l.endpoint_id
),
picked AS MATERIALIZED (
  SELECT r.endpoint_id, p.id, p.priority, p.run_at
  FROM room r
  CROSS JOIN LATERAL (
    SELECT d.id, d.priority, d.run_at FROM delivery d
    WHERE d.state = 0 AND d.order_key IS NULL AND d.endpoint_id = r.endpoint_id
      AND d.run_at <= now()
    ORDER BY d.priority, d.run_at, d.id
    LIMIT greatest(least(r.free, $1 / r.lanes + 1), 0)
    FOR UPDATE SKIP LOCKED) p
),
chosen AS (
  SELECT id FROM (
    SELECT id, priority, run_at,
           row_number() OVER (PARTITION BY endpoint_id ORDER BY priority, run_at, id) AS rn
    FROM picked) x
  ORDER BY rn, priority, run_at, id
  LIMIT $1
),
claimed AS (
  UPDATE delivery d
  SET state = 1, attempt = d.attempt + 1,
      lease_until = now() + make_interval(secs => $2),
      lease_id = nextval('delivery_lease_seq')
  FROM chosen WHERE d.id = chosen.id
  RETURNING d.id, d.endpoint_id, d.event_id, d.attempt, d.attempt_base, d.lease_id
)
SELECT c.id, c.endpoint_id, c.event_id, c.attempt, c.attempt_base, c.lease_id,
       e.workspace_id, e.event_type, e.occurred_at, e.created_at AS accepted_at, e.data
FROM claimed c JOIN event e ON e.id = c.event_id
";

const CLAIM_LANES: &str = r"
WITH RECURSIVE head AS (
  (SELECT order_key, id, run_at, endpoint_id FROM delivery
    WHERE state = 0 AND order_key IS NOT NULL ORDER BY order_key, id LIMIT 1)
  UNION ALL
  SELECT n.order_key, n.id, n.run_at, n.endpoint_id FROM head h
  CROSS JOIN LATERAL (
    SELECT d.order_key, d.id, d.run_at, d.endpoint_id FROM delivery d
    WHERE d.state = 0 AND d.order_key IS NOT NULL AND d.order_key > h.order_key
    ORDER BY d.order_key, d.id LIMIT 1) n
),
inflight AS MATERIALIZED (
  SELECT endpoint_id, count(*) AS n FROM delivery WHERE state = 1 GROUP BY endpoint_id
),
eligible AS (
  SELECT h.id FROM head h
  JOIN endpoint ep ON ep.id = h.endpoint_id AND ep.enabled AND ep.deleted_at IS NULL
  LEFT JOIN inflight i ON i.endpoint_id = h.endpoint_id
  WHERE h.run_at <= now()
    AND coalesce(i.n, 0) < ep.max_in_flight
    AND NOT EXISTS (SELECT 1 FROM delivery f WHERE f.state = 1 AND f.order_key = h.order_key)
  LIMIT $1
),
locked AS MATERIALIZED (
  SELECT d.id FROM delivery d
  WHERE d.id = ANY (ARRAY(SELECT id FROM eligible)) AND d.state = 0
  FOR UPDATE SKIP LOCKED
),
claimed AS (
  UPDATE delivery d
  SET state = 1, attempt = d.attempt + 1,
      lease_until = now() + make_interval(secs => $2),
      lease_id = nextval('delivery_lease_seq')
  FROM locked WHERE d.id = locked.id
  RETURNING d.id, d.endpoint_id, d.event_id, d.attempt, d.attempt_base, d.lease_id
)
SELECT c.id, c.endpoint_id, c.event_id, c.attempt, c.attempt_base, c.lease_id,
       e.workspace_id, e.event_type, e.occurred_at, e.created_at AS accepted_at, e.data
FROM claimed c JOIN event e ON e.id = c.event_id
";

/// Claims up to `limit` due unordered deliveries, leased for `lease_seconds`.
pub async fn claim(
    pool: &PgPool,
    limit: usize,
    lease_seconds: f64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as(CLAIM_FAIR)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(lease_seconds)
        .fetch_all(pool)
        .await
}

/// Claims up to `limit` due heads of `per_ticket` lanes, leased for `lease_seconds`.
pub async fn claim_lanes(
    pool: &PgPool,
    limit: usize,
    lease_seconds: f64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    match sqlx::query_as(CLAIM_LANES)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(lease_seconds)
        .fetch_all(pool)
        .await
    {
        Ok(rows) => Ok(rows),
        // Another claimer took a lane head at the same instant: the unique index refused the
        // second in-flight row. Nothing was claimed; the next cycle tries again.
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("23505") => {
            Ok(Vec::new())
        }
        Err(error) => Err(error),
    }
}

/// Whether any enabled endpoint orders per ticket (the lane claim is skipped otherwise).
pub async fn lanes_in_use(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM delivery WHERE state = 0 AND order_key IS NOT NULL)",
    )
    .fetch_one(pool)
    .await
}

/// The earliest due time of any waiting delivery, if there is one.
pub async fn next_due(pool: &PgPool) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT min(run_at) FROM delivery WHERE state = 0")
        .fetch_one(pool)
        .await
}

/// Puts deliveries whose lease expired (their worker died) back to waiting, due now. Safe to
/// run from every instance. Returns how many were rescued.
pub async fn rescue_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE delivery d SET state = 0, run_at = now(), lease_until = NULL, lease_id = NULL \
         WHERE d.id = ANY (ARRAY(SELECT id FROM delivery WHERE state = 1 AND lease_until < now() \
                                 ORDER BY lease_until LIMIT 1000 FOR UPDATE SKIP LOCKED))",
    )
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}
