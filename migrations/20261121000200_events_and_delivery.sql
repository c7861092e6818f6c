-- Events, webhook endpoints and the delivery queue (queue.md).
--
-- The hot table `delivery` holds only unfinished work (waiting or in flight); finished
-- deliveries move to `delivery_finished`, every attempt is appended to `delivery_attempt`,
-- and the payload lives once in `event`, shared by every endpoint's delivery.

-- Written once by the outbox (ticket changes), ingest, the SLA timer or a test ping; immutable.
-- No foreign key to workspace: its check takes a KEY SHARE lock on the one workspace row for
-- every event, and concurrent ingest then contends on that row's MultiXacts.
CREATE TABLE event (
  id           bigint PRIMARY KEY DEFAULT deskhook_id(),
  workspace_id bigint      NOT NULL,
  event_type   text        NOT NULL,
  source       text        NOT NULL CHECK (source IN ('api', 'ingest', 'sla', 'test')),
  -- What orders `per_ticket` endpoints: the ticket's public id, or an ingest producer's ticket_id.
  ticket_key   text,
  -- Ingest: the producer's id; SLA: the deadline's key. Unique per workspace: a repeat is a duplicate.
  external_id  text,
  occurred_at  timestamptz NOT NULL,
  -- The payload's `data` object as raw JSON, serialised once and sent byte for byte.
  data         text        NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX event_external_id ON event (workspace_id, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX event_workspace ON event (workspace_id, id);
-- Retention needs no time index: ids sort by creation time (deskhook_id).

CREATE TABLE endpoint (
  id                      bigint PRIMARY KEY DEFAULT deskhook_id(),
  workspace_id            bigint      NOT NULL REFERENCES workspace (id) ON DELETE CASCADE,
  url                     text        NOT NULL,
  description             text,
  event_types             text[]      NOT NULL DEFAULT '{*}',
  enabled                 boolean     NOT NULL DEFAULT true,
  disabled_reason         text CHECK (disabled_reason IN ('manual', 'gone_410', 'consecutive_failures')),
  disabled_at             timestamptz,
  ordering                text        NOT NULL DEFAULT 'none' CHECK (ordering IN ('none', 'per_ticket')),
  max_in_flight           integer     NOT NULL DEFAULT 8 CHECK (max_in_flight BETWEEN 1 AND 1000),
  rate_limit_per_second   integer CHECK (rate_limit_per_second > 0),
  headers                 jsonb       NOT NULL DEFAULT '{}',
  legacy_signature_header text,
  include_internal_notes  boolean     NOT NULL DEFAULT false,
  -- Deliveries ended dead since the last success; 3 disables the endpoint.
  consecutive_dead        integer     NOT NULL DEFAULT 0,
  created_at              timestamptz NOT NULL DEFAULT now(),
  updated_at              timestamptz NOT NULL DEFAULT now(),
  deleted_at              timestamptz
);
CREATE INDEX endpoint_workspace ON endpoint (workspace_id, id) WHERE deleted_at IS NULL;

-- Signing secrets, encrypted with the operator key. The current one has no expiry; a rotated-out
-- one keeps signing (second) until expires_at.
CREATE TABLE endpoint_secret (
  id          bigint PRIMARY KEY DEFAULT deskhook_id(),
  endpoint_id bigint      NOT NULL REFERENCES endpoint (id) ON DELETE CASCADE,
  ciphertext  bytea       NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz
);
CREATE INDEX endpoint_secret_endpoint ON endpoint_secret (endpoint_id, id);

CREATE SEQUENCE delivery_lease_seq;

-- HOT table: unfinished work only. state 0 = waiting (pending or retrying), 1 = in flight.
CREATE TABLE delivery (
  id               bigint PRIMARY KEY,
  workspace_id     bigint      NOT NULL,
  endpoint_id      bigint      NOT NULL,
  event_id         bigint      NOT NULL,
  order_key        bigint,                        -- NULL: unordered; else the (endpoint, ticket) FIFO lane
  priority         smallint    NOT NULL DEFAULT 1, -- 0 SLA events, 1 live, 2 replays
  state            smallint    NOT NULL DEFAULT 0 CHECK (state IN (0, 1)),
  attempt          smallint    NOT NULL DEFAULT 0, -- attempts made so far (1-based once claimed)
  attempt_base     smallint    NOT NULL DEFAULT 0, -- attempts before the last replay: the schedule restarts there
  run_at           timestamptz NOT NULL DEFAULT now(),
  lease_until      timestamptz,
  lease_id         bigint,                         -- fencing token, new on every claim
  last_attempt_at  timestamptz,
  last_status_code smallint,
  created_at       timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 90,
        autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000,
        autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 2000,
        autovacuum_vacuum_cost_delay = 0);

CREATE INDEX delivery_ep_due ON delivery (endpoint_id, priority, run_at, id)
  WHERE state = 0 AND order_key IS NULL;
CREATE INDEX delivery_run_at ON delivery (run_at) WHERE state = 0;
CREATE INDEX delivery_inflight ON delivery (lease_until) INCLUDE (endpoint_id) WHERE state = 1;
CREATE INDEX delivery_lane ON delivery (order_key, id) WHERE state = 0 AND order_key IS NOT NULL;
CREATE UNIQUE INDEX delivery_one_in_flight_per_key ON delivery (order_key)
  WHERE state = 1 AND order_key IS NOT NULL;


-- Finished deliveries (succeeded or dead), readable by id and in lists for the retention period.
CREATE TABLE delivery_finished (
  id               bigint PRIMARY KEY,
  workspace_id     bigint      NOT NULL,
  endpoint_id      bigint      NOT NULL,
  event_id         bigint      NOT NULL,
  priority         smallint    NOT NULL,
  status           text        NOT NULL CHECK (status IN ('succeeded', 'dead')),
  attempts         smallint    NOT NULL,
  last_attempt_at  timestamptz,
  last_status_code smallint,
  created_at       timestamptz NOT NULL,
  finished_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX delivery_finished_workspace ON delivery_finished (workspace_id, id);
CREATE INDEX delivery_finished_dead ON delivery_finished (endpoint_id, finished_at) WHERE status = 'dead';
CREATE INDEX delivery_finished_event ON delivery_finished (event_id);

-- Every attempt, appended, never updated.
CREATE TABLE delivery_attempt (
  delivery_id   bigint      NOT NULL,
  attempt       smallint    NOT NULL,
  endpoint_id   bigint      NOT NULL,
  started_at    timestamptz NOT NULL,
  duration_ms   integer     NOT NULL,
  status_code   smallint,
  outcome       text        NOT NULL CHECK (outcome IN ('success', 'http_error', 'timeout',
                                                       'connect_error', 'tls_error', 'refused')),
  error         text,
  response_body text
);
CREATE INDEX delivery_attempt_delivery ON delivery_attempt (delivery_id, attempt);
