-- The lane claim's walk, by workspace first (see 20261205000000).
CREATE INDEX delivery_ready_lane ON delivery (workspace_id, order_key, endpoint_id, id)
  WHERE state = 0 AND order_key IS NOT NULL;
