-- The queue at scale (docs/queue.md): what a claim reads follows due work, never the number of
-- endpoints with something waiting.
--
-- `delivery.state` gains two values, so every partial index holds only what it serves:
--   0 ready      due now: never attempted, replayed, rescued, or a retry whose time has come
--   1 in flight  claimed, leased, fenced by lease_id
--   2 scheduled  a retry waiting for run_at; promoted to ready by the dispatchers when due
--   3 parked     its endpoint is disabled; back to ready/scheduled on enable
-- The claim walks ready rows only (delivery_ep_due, delivery_lane), so a retry due in an hour
-- or a disabled endpoint's backlog costs a claim nothing.

ALTER TABLE delivery DROP CONSTRAINT delivery_state_check;
ALTER TABLE delivery ADD CONSTRAINT delivery_state_check CHECK (state IN (0, 1, 2, 3));

-- Retries not yet due become scheduled; waiting rows of disabled endpoints are parked.
UPDATE delivery d SET state = 2 WHERE d.state = 0 AND d.run_at > now();
UPDATE delivery d SET state = 3
FROM endpoint ep
WHERE ep.id = d.endpoint_id AND d.state IN (0, 2) AND NOT ep.enabled AND ep.deleted_at IS NULL;

-- Waiting rows of deleted endpoints (left behind by a settle after the delete) end dead.
WITH gone AS (
  DELETE FROM delivery d USING endpoint ep
  WHERE ep.id = d.endpoint_id AND d.state <> 1 AND ep.deleted_at IS NOT NULL
  RETURNING d.*
),
history AS (
  INSERT INTO delivery_attempt (delivery_id, attempt, endpoint_id, started_at, duration_ms, outcome, error)
  SELECT id, attempt + 1, endpoint_id, now(), 0, 'refused', 'the endpoint was deleted' FROM gone
)
INSERT INTO delivery_finished (id, workspace_id, endpoint_id, event_id, priority, status, attempts,
                               last_attempt_at, last_status_code, created_at)
SELECT id, workspace_id, endpoint_id, event_id, priority, 'dead', attempt + 1, last_attempt_at,
       last_status_code, created_at
FROM gone;

-- Scheduled retries by due time: promotion reads only the due ones, `next due` one entry.
CREATE INDEX delivery_scheduled ON delivery (run_at) WHERE state = 2;
-- A lane whose earlier row waits for its retry blocks its later rows (per-ticket order).
CREATE INDEX delivery_lane_scheduled ON delivery (order_key, id) WHERE state = 2 AND order_key IS NOT NULL;
-- Unparking on enable.
CREATE INDEX delivery_parked ON delivery (endpoint_id) WHERE state = 3;

-- Per-endpoint claim state, written only by claims (never by producers or settles):
--  * claim_seq is bumped by every claim that takes rows of the endpoint. A claim locks the rows
--    of the endpoints it takes from (FOR UPDATE SKIP LOCKED) and takes nothing from one whose
--    claim_seq moved since its snapshot: the in-flight count it computed would be stale. That
--    keeps max_in_flight exact across any number of instances without a counter.
--  * next_send_at is the rate limit's next free slot (GCRA): an endpoint at its rate gets
--    nothing claimed until then, so no attempt ever waits for its slot holding a worker.
CREATE TABLE endpoint_queue (
  endpoint_id   bigint PRIMARY KEY,
  workspace_id  bigint NOT NULL,
  claim_seq     bigint NOT NULL DEFAULT 0,
  next_send_at  timestamptz
) WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
CREATE INDEX endpoint_queue_next_send ON endpoint_queue (next_send_at) WHERE next_send_at IS NOT NULL;

INSERT INTO endpoint_queue (endpoint_id, workspace_id)
SELECT id, workspace_id FROM endpoint WHERE deleted_at IS NULL;
