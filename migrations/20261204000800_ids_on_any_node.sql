-- Ids that any node can draw. On Citus, a statement of one workspace runs whole on the worker
-- holding its shard, `deskhook_id()` included, and each node has its own copy of the sequence
-- (Citus starts a node's copy at its group id << 48). The low 22 bits are now 6 bits of that
-- node number and 16 of the sequence, so ids drawn on different nodes in the same millisecond
-- never collide; on plain PostgreSQL the node number is 0. 65,536 ids per millisecond per
-- node; the time in the high bits, and so `deskhook_id_at`, is unchanged.
--
-- The body is SQL-standard (`RETURN`), so the function depends on the sequence and Citus
-- creates the sequence wherever it creates the function.
CREATE OR REPLACE FUNCTION deskhook_id() RETURNS bigint
  LANGUAGE sql VOLATILE PARALLEL SAFE
  RETURN (SELECT ((floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint - 1735689600000) << 22)
                 | (((n >> 48) & 63) << 16) | (n & 65535)
          FROM (SELECT nextval('deskhook_id_seq'::regclass) AS n) AS drawn);
