-- Foundation: time-sortable ids, workspaces (tenants) and their API keys.

-- Every row id is a bigint that sorts by creation time: milliseconds since 2025-01-01 in the
-- high bits, a sequence in the low 22 bits. The API shows them as opaque prefixed strings
-- (`tkt_…`, `evt_…`); see src/ids.rs.
CREATE SEQUENCE deskhook_id_seq;

CREATE FUNCTION deskhook_id() RETURNS bigint
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
  SELECT ((floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint - 1735689600000) << 22)
         | (nextval('deskhook_id_seq') & 4194303)
$$;

CREATE TABLE workspace (
  id                    bigint PRIMARY KEY DEFAULT deskhook_id(),
  name                  text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  rate_limit_per_minute integer CHECK (rate_limit_per_minute > 0),
  created_at            timestamptz NOT NULL DEFAULT now()
);

-- Keys are shown once; only a SHA-256 of the key and its first 8 characters are stored.
CREATE TABLE api_key (
  id           bigint PRIMARY KEY DEFAULT deskhook_id(),
  workspace_id bigint      NOT NULL REFERENCES workspace (id) ON DELETE CASCADE,
  name         text,
  prefix       text        NOT NULL,
  key_hash     bytea       NOT NULL UNIQUE,
  scopes       text[]      NOT NULL CHECK (scopes <@ ARRAY['read', 'write', 'ingest', 'admin']
                                           AND cardinality(scopes) > 0),
  user_id      bigint,
  created_at   timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz,
  expires_at   timestamptz,
  revoked_at   timestamptz
);
CREATE INDEX api_key_workspace ON api_key (workspace_id, id);
