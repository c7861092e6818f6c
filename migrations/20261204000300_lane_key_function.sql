-- The lane key of a `per_ticket` delivery, in one place: enqueue, replay and an ordering
-- change all compute it here. Same value as the expression it replaces, so existing rows keep
-- their lanes. SQL-bodied and immutable, so the planner inlines it.
CREATE FUNCTION deskhook_lane_key(endpoint_id bigint, ticket_key text) RETURNS bigint
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN hashtextextended(endpoint_id::text || ':' || ticket_key, 0);
