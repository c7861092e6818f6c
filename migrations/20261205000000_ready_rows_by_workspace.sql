-- The claim walks ready rows by workspace, then endpoint (or lane). On Citus the claim runs
-- per workspace on the workspace's shard, and a walk that names the workspace must not step
-- over other tenants' ready rows; on plain PostgreSQL the walk is the same skip-scan in a
-- different order. So the indexes of ready rows lead with the workspace (this file and the
-- next three: Citus propagates DDL on a distributed table only one statement per query).
CREATE INDEX delivery_ready ON delivery (workspace_id, endpoint_id, priority, run_at, id)
  WHERE state = 0 AND order_key IS NULL;
