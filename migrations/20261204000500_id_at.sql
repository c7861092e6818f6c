-- The smallest id `deskhook_id()` gives a row created at `at` (its sequence bits zero). Ids sort
-- by creation time, so "created before t" is `id < deskhook_id_at(t)` on a primary key, and
-- nothing outside the database needs to know the id epoch (2025-01-01, in milliseconds), which
-- lives only here and in `deskhook_id()`.
CREATE FUNCTION deskhook_id_at(at timestamptz) RETURNS bigint
  LANGUAGE sql STABLE PARALLEL SAFE
  RETURN ((floor(extract(epoch FROM at) * 1000)::bigint - 1735689600000) << 22);
