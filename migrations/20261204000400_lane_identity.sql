-- A lane is (order_key, endpoint_id), not order_key alone. The key is a 64-bit hash of the
-- endpoint and a producer-chosen ticket id, so two endpoints (of two tenants) could share one;
-- keyed by the hash alone, a collision merged their lanes and one tenant's failing head then
-- held back the other's deliveries (security review L8). The hash stays first, so a walk over
-- lanes still interleaves endpoints.
DROP INDEX delivery_lane;
CREATE INDEX delivery_lane ON delivery (order_key, endpoint_id, id)
  WHERE state = 0 AND order_key IS NOT NULL;
DROP INDEX delivery_lane_scheduled;
CREATE INDEX delivery_lane_scheduled ON delivery (order_key, endpoint_id, id)
  WHERE state = 2 AND order_key IS NOT NULL;
DROP INDEX delivery_one_in_flight_per_key;
CREATE UNIQUE INDEX delivery_one_in_flight_per_lane ON delivery (order_key, endpoint_id)
  WHERE state = 1 AND order_key IS NOT NULL;
