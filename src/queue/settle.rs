//! Settling attempts: the CTEs that record a batch of outcomes, run fused with the next claim
//! in one statement by `queue::cycle`.
//!
//! Success and dead move the delivery out of the hot table into `delivery_finished`; a retry
//! puts it back as ready when due at once, scheduled otherwise, parked when its endpoint was
//! disabled meanwhile (and ends it dead when the endpoint was deleted); every attempt is
//! appended to `delivery_attempt`. Each settle is fenced by the claim's `lease_id`: a worker
//! whose lease expired (and whose delivery was claimed again) cannot settle it; its attempt is
//! counted as fenced and recorded with `fenced` set, since the request may have reached the
//! receiver. The same statement keeps each endpoint's dead streak and disables an
//! endpoint after three consecutive dead deliveries, or on `410 Gone`, without writing the
//! endpoint row on ordinary successes.

use chrono::{DateTime, Utc};

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
    pub(crate) fn code(self) -> i16 {
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
    /// The delivery's workspace.
    pub workspace_id: i64,
    /// The delivery's endpoint.
    pub endpoint_id: i64,
    /// The attempt's number (the claim's).
    pub attempt: i32,
    /// Settle without lingering: the claim took all the endpoint's room, so its next work
    /// waits for this settle (not sent to the database).
    pub urgent: bool,
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

/// The settle's CTEs, first in the cycle statement, without writing the history: they end in
/// `finished_rows` and `attempt_rows` (shaped as `delivery_finished` and `delivery_attempt`
/// rows), which [`RECORD_CTES`] inserts. On Citus a statement with an `INSERT` in a CTE is not
/// one router query, so there the rows come back and are inserted by the next statement of
/// the same transaction (`queue::cycle`). They bind `$1`..`$11` (one array per
/// [`Settlement`] field, `$16` for `attempt` and `$17` for `workspace_id`) and end in `settled(id, endpoint_id, attempt)` and
/// `endpoints(id, enabled, disabled_reason, disabled_at)` for the claim that follows.
pub(crate) const SETTLE_CTES: &str = r"
o AS (
  SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::smallint[], $4::timestamptz[],
                       $5::timestamptz[], $6::int[], $7::smallint[], $8::text[], $9::text[],
                       $10::text[], $11::bigint[], $16::int[], $17::bigint[])
         AS o(id, lease_id, verdict, next_run_at, started_at, duration_ms, status_code,
              outcome, error, response_body, endpoint_id, attempt, workspace_id)
),
oe AS MATERIALIZED (
  SELECT o.*, ep.id IS NULL OR ep.deleted_at IS NOT NULL AS gone,
         coalesce(ep.enabled, false) AS live, o.next_run_at <= now() AS due
  FROM o
  LEFT JOIN endpoint ep
    ON ep.id = o.endpoint_id AND ep.workspace_id = o.workspace_id /*ws ep*/
),
finished AS (
  DELETE FROM delivery d USING oe
  WHERE d.id = oe.id AND d.workspace_id = oe.workspace_id AND d.lease_id = oe.lease_id
    AND d.state = 1 AND (oe.verdict <> 1 OR oe.gone) /*ws d*/
  RETURNING d.id, d.workspace_id, d.endpoint_id, d.event_id, d.priority, d.attempt, d.created_at,
            CASE WHEN oe.verdict = 1 THEN 2 ELSE oe.verdict END AS verdict, oe.started_at,
            oe.status_code
),
retried AS (
  UPDATE delivery d
  SET state = CASE WHEN NOT oe.live THEN 3 WHEN oe.due THEN 0 ELSE 2 END,
      run_at = oe.next_run_at, lease_until = NULL, lease_id = NULL,
      last_attempt_at = oe.started_at, last_status_code = oe.status_code
  FROM oe
  WHERE d.id = oe.id AND d.workspace_id = oe.workspace_id AND d.lease_id = oe.lease_id
    AND d.state = 1 AND oe.verdict = 1 AND NOT oe.gone /*ws d*/
  RETURNING d.id, d.endpoint_id, d.attempt
),
settled AS (
  SELECT id, endpoint_id, attempt FROM finished
  UNION ALL
  SELECT id, endpoint_id, attempt FROM retried
),
attempt_rows AS MATERIALIZED (
  SELECT o.workspace_id, o.id AS delivery_id, o.attempt, o.endpoint_id, o.started_at,
         o.duration_ms, o.status_code, o.outcome, o.error, o.response_body, s.id IS NULL AS fenced
  FROM o LEFT JOIN settled s ON s.id = o.id
  -- A fenced attempt is recorded once, even when a settle whose commit was not acknowledged
  -- is sent again.
  WHERE s.id IS NOT NULL
     OR NOT EXISTS (SELECT 1 FROM delivery_attempt a
                    WHERE a.delivery_id = o.id AND a.workspace_id = o.workspace_id
                      AND a.attempt = o.attempt AND a.started_at = o.started_at /*ws a*/)
),
finished_rows AS MATERIALIZED (
  SELECT id, workspace_id, endpoint_id, event_id, priority,
         CASE WHEN verdict = 0 THEN 'succeeded' ELSE 'dead' END AS status,
         attempt AS attempts, started_at AS last_attempt_at, status_code AS last_status_code,
         created_at
  FROM finished
),
streak AS (
  SELECT endpoint_id, workspace_id, now() AS at,
         count(*) FILTER (WHERE verdict = 0) AS ok,
         count(*) FILTER (WHERE verdict IN (2, 3)) AS dead,
         bool_or(verdict = 3) AS gone
  FROM finished GROUP BY endpoint_id, workspace_id
),
-- Endpoint rows are locked in id order before any is written: two instances settling
-- overlapping failing endpoints then queue behind each other instead of deadlocking (review
-- L14). Only endpoints whose streak changes are locked; successes on a clean streak write nothing.
streak_locked AS (
  SELECT ep.id FROM endpoint ep
  JOIN streak s ON s.endpoint_id = ep.id AND s.workspace_id = ep.workspace_id
  WHERE ep.deleted_at IS NULL AND (s.dead > 0 OR ep.consecutive_dead > 0) /*ws ep*/
  ORDER BY ep.id
  FOR UPDATE OF ep
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
            THEN s.at
          ELSE ep.disabled_at END
  FROM streak s JOIN streak_locked l ON l.id = s.endpoint_id
  WHERE ep.id = l.id AND ep.workspace_id = s.workspace_id AND ep.deleted_at IS NULL
    AND (s.dead > 0 OR ep.consecutive_dead > 0) /*ws ep*/
  RETURNING ep.id, ep.enabled, ep.disabled_reason, ep.disabled_at
),
";

/// Inserts the settle's history: `finished_rows` into `delivery_finished`, `attempt_rows`
/// into `delivery_attempt`.
pub(crate) const RECORD_CTES: &str = r"
moved AS (
  INSERT INTO delivery_finished (id, workspace_id, endpoint_id, event_id, priority, status,
                                 attempts, last_attempt_at, last_status_code, created_at)
  SELECT * FROM finished_rows
),
history AS (
  INSERT INTO delivery_attempt (workspace_id, delivery_id, attempt, endpoint_id, started_at,
                                duration_ms, status_code, outcome, error, response_body, fenced)
  SELECT * FROM attempt_rows
),
";

/// The same inserts as [`RECORD_CTES`], from rows a statement before returned as JSON
/// (`$1`: `finished_rows`, `$2`: `attempt_rows`).
pub(crate) const RECORD_FINISHED: &str = "
INSERT INTO delivery_finished (id, workspace_id, endpoint_id, event_id, priority, status,
                               attempts, last_attempt_at, last_status_code, created_at)
SELECT id, workspace_id, endpoint_id, event_id, priority, status, attempts, last_attempt_at,
       last_status_code, created_at
FROM json_populate_recordset(NULL::delivery_finished, $1::json)";

/// See [`RECORD_FINISHED`].
pub(crate) const RECORD_ATTEMPTS: &str = "
INSERT INTO delivery_attempt (workspace_id, delivery_id, attempt, endpoint_id, started_at,
                              duration_ms, status_code, outcome, error, response_body, fenced)
SELECT workspace_id, delivery_id, attempt, endpoint_id, started_at, duration_ms, status_code,
       outcome, error, response_body, fenced
FROM json_populate_recordset(NULL::delivery_attempt, $1::json)";
