-- Idempotency keys of POST requests (api.md): per API key, the first answer to a request is
-- kept for 24 hours and replayed to a repeat with the same key and the same request.
-- Owner: src/http/idempotency.rs (and only its SQL touches this table).
CREATE TABLE idempotency_key (
  api_key_id   bigint      NOT NULL REFERENCES api_key (id) ON DELETE CASCADE,
  idem_key     text        NOT NULL CHECK (length(idem_key) BETWEEN 1 AND 255),
  -- SHA-256 of the method, the path with its query, and the body.
  request_hash bytea       NOT NULL,
  -- NULL while the first request is being answered; then the stored answer.
  status       smallint    CHECK (status BETWEEN 200 AND 499),
  headers      jsonb,
  body         bytea,
  -- An unfinished claim older than this (its instance died) may be taken over by a repeat.
  locked_until timestamptz NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz NOT NULL,
  PRIMARY KEY (api_key_id, idem_key)
);
-- For the purge of expired keys.
CREATE INDEX idempotency_key_expires ON idempotency_key (expires_at);
