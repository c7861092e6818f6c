-- SLA: business-hours calendars, policies, and the per-ticket clocks the SLA timer watches.
-- Owner: crates/tickets/src/sla (see sla.md).

-- A business-hours calendar: weekly open intervals in an IANA time zone, minus holidays.
-- `weekly` is {"mon": [["09:00","17:00"]], …}; `holidays` is [{"date": "2026-12-25", "name": …}].
CREATE TABLE sla_calendar (
  id           bigint PRIMARY KEY DEFAULT deskhook_id(),
  workspace_id bigint      NOT NULL REFERENCES workspace (id) ON DELETE CASCADE,
  name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  timezone     text        NOT NULL,
  weekly       jsonb       NOT NULL CHECK (jsonb_typeof(weekly) = 'object'),
  holidays     jsonb       NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(holidays) = 'array'),
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sla_calendar_workspace ON sla_calendar (workspace_id, id);

-- An SLA policy. The first active policy (by position) whose `match` fits a ticket applies.
-- `targets`, `match`, `pause_statuses` and `settings` are stored as sent (minutes keep their
-- decimals); `version` bumps on every change.
CREATE TABLE sla_policy (
  id             bigint PRIMARY KEY DEFAULT deskhook_id(),
  workspace_id   bigint      NOT NULL REFERENCES workspace (id) ON DELETE CASCADE,
  name           text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  description    text,
  position       integer     NOT NULL,
  active         boolean     NOT NULL DEFAULT true,
  match          jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(match) = 'object'),
  calendar_id    bigint      REFERENCES sla_calendar (id),
  targets        jsonb       NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(targets) = 'array'),
  pause_statuses jsonb       NOT NULL CHECK (jsonb_typeof(pause_statuses) = 'object'),
  settings       jsonb       NOT NULL CHECK (jsonb_typeof(settings) = 'object'),
  version        integer     NOT NULL DEFAULT 1,
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sla_policy_order ON sla_policy (workspace_id, position, id);

-- One row per metric instance of a ticket: the deadline `sla.at_risk` is exactly-once about.
-- Durations are milliseconds (targets may be fractions of a minute). `next_at` is the next
-- instant the timer must act on (the at-risk instant while its latch is clear, else the due
-- instant); it is set only while the clock is active, so the timer's look-up touches only
-- what falls due.
CREATE TABLE sla_clock (
  id                 bigint PRIMARY KEY DEFAULT deskhook_id(),
  workspace_id       bigint      NOT NULL REFERENCES workspace (id) ON DELETE CASCADE,
  ticket_id          bigint      NOT NULL REFERENCES ticket (id) ON DELETE CASCADE,
  metric             text        NOT NULL
                     CHECK (metric IN ('first_response', 'next_response', 'resolution')),
  instance           integer     NOT NULL CHECK (instance >= 1),
  -- No foreign key: a clock keeps the policy it ran under after the policy is deleted.
  policy_id          bigint      NOT NULL,
  policy_version     integer     NOT NULL,
  calendar_id        bigint,
  target_ms          bigint      NOT NULL CHECK (target_ms > 0),
  warn_ms            bigint      NOT NULL CHECK (warn_ms >= 0),
  business_hours     boolean     NOT NULL,
  started_at         timestamptz NOT NULL,
  elapsed_ms         bigint      NOT NULL DEFAULT 0 CHECK (elapsed_ms >= 0),
  running_since      timestamptz,
  due_at             timestamptz,
  at_risk_at         timestamptz,
  state              text        NOT NULL
                     CHECK (state IN ('active', 'paused', 'achieved', 'breached', 'cancelled')),
  at_risk_emitted_at timestamptz,
  breached_at        timestamptz,
  fulfilled_at       timestamptz,
  next_at            timestamptz,
  updated_at         timestamptz NOT NULL DEFAULT now(),
  CHECK ((state = 'active') = (next_at IS NOT NULL)),
  CHECK (state <> 'active' OR (running_since IS NOT NULL AND due_at IS NOT NULL))
);
CREATE UNIQUE INDEX sla_clock_instance ON sla_clock (ticket_id, metric, instance);
-- The timer's index: only active clocks are in it, ordered by their next instant.
CREATE INDEX sla_clock_next ON sla_clock (next_at) WHERE next_at IS NOT NULL;
