//! Settling attempts: one statement per batch records every outcome.
//!
//! Success and dead move the delivery out of the hot table into `delivery_finished`; a retry
//! puts it back to waiting at its next due time; every settled attempt is appended to
//! `delivery_attempt`. Each settle is fenced by the claim's `lease_id`: a worker whose lease
//! expired (and whose delivery was claimed again) cannot settle it, and its attempt is counted
//! as fenced instead. The same statement keeps each endpoint's dead streak and disables an
//! endpoint after three consecutive dead deliveries, or on `410 Gone`, without writing the
//! endpoint row on ordinary successes.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// What becomes of a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered.
    Succeeded,
    /// Try again at this time.
    Retry(DateTime<Utc>),
    /// No attempts left.
    Dead,
    /// The receiver answered `410 Gone`: dead, and the endpoint is disabled.
    Gone,
}

impl Verdict {
    fn code(self) -> i16 {
        match self {
            Self::Succeeded => 0,
            Self::Retry(_) => 1,
            Self::Dead => 2,
            Self::Gone => 3,
        }
    }
}

/// One attempt's outcome, ready to settle.
#[derive(Debug, Clone)]
pub struct Settlement {
    /// Delivery key.
    pub id: i64,
    /// The claim's fencing token.
    pub lease_id: i64,
    /// What becomes of the delivery.
    pub verdict: Verdict,
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: i32,
    /// The status code, if any.
    pub status_code: Option<i16>,
    /// `success`, `http_error`, `timeout`, `connect_error`, `tls_error` or `refused`.
    pub outcome: &'static str,
    /// A short error description.
    pub error: Option<String>,
    /// The start of the response body.
    pub response_body: Option<String>,
}

/// What a settle batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// Settlements applied.
    pub applied: u64,
    /// Settlements refused because the lease was lost.
    pub fenced: u64,
    /// Endpoints this batch disabled, with the reason.
    pub disabled: Vec<(i64, String)>,
}

const SETTLE: &str = r"
WITH o AS (
  SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::smallint[], $4::timestamptz[],
                       $5::timestamptz[], $6::int[], $7::smallint[], $8::text[], $9::text[], $10::text[])
         AS o(id, lease_id, verdict, next_run_at, started_at, duration_ms, status_code,
              outcome, error, response_body)
),
finished AS (
  DELETE FROM delivery d USING o
  WHERE d.id = o.id AND d.lease_id = o.lease_id AND d.state = 1 AND o.verdict <> 1
  RETURNING d.id, d.workspace_id, d.endpoint_id, d.event_id, d.priority, d.attempt, d.created_at,
            o.verdict, o.started_at, o.status_code
),
moved AS (
  INSERT INTO delivery_finished (id, workspace_id, endpoint_id, event_id, priority, status,
                                 attempts, last_attempt_at, last_status_code, created_at)
  SELECT id, workspace_id, endpoint_id, event_id, priority,
         CASE WHEN verdict = 0 THEN 'succeeded' ELSE 'dead' END,
         attempt, started_at, status_code, created_at
  FROM finished
),
retried AS (
  UPDATE delivery d
  SET state = 0, run_at = o.next_run_at, lease_until = NULL, lease_id = NULL,
      last_attempt_at = o.started_at, last_status_code = o.status_code
  FROM o
  WHERE d.id = o.id AND d.lease_id = o.lease_id AND d.state = 1 AND o.verdict = 1
  RETURNING d.id, d.endpoint_id, d.attempt
),
settled AS (
  SELECT id, endpoint_id, attempt FROM finished
  UNION ALL
  SELECT id, endpoint_id, attempt FROM retried
),
history AS (
  INSERT INTO delivery_attempt (delivery_id, attempt, endpoint_id, started_at, duration_ms,
                                status_code, outcome, error, response_body)
  SELECT s.id, s.attempt, s.endpoint_id, o.started_at, o.duration_ms, o.status_code,
         o.outcome, o.error, o.response_body
  FROM settled s JOIN o ON o.id = s.id
),
streak AS (
  SELECT endpoint_id,
         count(*) FILTER (WHERE verdict = 0) AS ok,
         count(*) FILTER (WHERE verdict IN (2, 3)) AS dead,
         bool_or(verdict = 3) AS gone
  FROM finished GROUP BY endpoint_id
),
endpoints AS (
  UPDATE endpoint ep
  SET consecutive_dead = CASE WHEN s.ok > 0 THEN s.dead ELSE ep.consecutive_dead + s.dead END,
      enabled = ep.enabled AND NOT s.gone
                AND (CASE WHEN s.ok > 0 THEN s.dead ELSE ep.consecutive_dead + s.dead END) < 3,
      disabled_reason = CASE
          WHEN NOT ep.enabled THEN ep.disabled_reason
          WHEN s.gone THEN 'gone_410'
          WHEN (CASE WHEN s.ok > 0 THEN s.dead ELSE ep.consecutive_dead + s.dead END) >= 3
            THEN 'consecutive_failures'
          ELSE NULL END,
      disabled_at = CASE
          WHEN ep.enabled AND (s.gone
               OR (CASE WHEN s.ok > 0 THEN s.dead ELSE ep.consecutive_dead + s.dead END) >= 3)
            THEN now()
          ELSE ep.disabled_at END
  FROM streak s
  WHERE ep.id = s.endpoint_id AND (s.dead > 0 OR ep.consecutive_dead > 0)
  RETURNING ep.id, ep.enabled, ep.disabled_reason, ep.disabled_at
)
SELECT (SELECT count(*) FROM settled) AS applied,
       coalesce((SELECT array_agg(id) FROM endpoints
                 WHERE NOT enabled AND disabled_at = now()), '{}') AS disabled_ids,
       coalesce((SELECT array_agg(disabled_reason) FROM endpoints
                 WHERE NOT enabled AND disabled_at = now()), '{}') AS disabled_reasons
";

/// Applies a batch of settlements in one statement.
pub async fn settle(pool: &PgPool, batch: &[Settlement]) -> Result<Settled, sqlx::Error> {
    if batch.is_empty() {
        return Ok(Settled::default());
    }
    let now = Utc::now();
    let (applied, disabled_ids, disabled_reasons): (i64, Vec<i64>, Vec<String>) =
        sqlx::query_as(SETTLE)
            .bind(batch.iter().map(|s| s.id).collect::<Vec<_>>())
            .bind(batch.iter().map(|s| s.lease_id).collect::<Vec<_>>())
            .bind(batch.iter().map(|s| s.verdict.code()).collect::<Vec<_>>())
            .bind(
                batch
                    .iter()
                    .map(|s| match s.verdict {
                        Verdict::Retry(at) => at,
                        _ => now,
                    })
                    .collect::<Vec<_>>(),
            )
            .bind(batch.iter().map(|s| s.started_at).collect::<Vec<_>>())
            .bind(batch.iter().map(|s| s.duration_ms).collect::<Vec<_>>())
            .bind(batch.iter().map(|s| s.status_code).collect::<Vec<_>>())
            .bind(batch.iter().map(|s| s.outcome).collect::<Vec<_>>())
            .bind(batch.iter().map(|s| s.error.as_deref()).collect::<Vec<_>>())
            .bind(
                batch
                    .iter()
                    .map(|s| s.response_body.as_deref())
                    .collect::<Vec<_>>(),
            )
            .fetch_one(pool)
            .await?;
    let applied = u64::try_from(applied).unwrap_or_default();
    Ok(Settled {
        applied,
        fenced: batch.len() as u64 - applied.min(batch.len() as u64),
        disabled: disabled_ids.into_iter().zip(disabled_reasons).collect(),
    })
}
