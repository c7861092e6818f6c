-- Every tenant row names its workspace, so the schema can be distributed by `workspace_id`
-- (Citus: a row's shard is its workspace's) and no tenant query needs a join to learn it. The
-- four tables that only reached their workspace through a parent get the column, filled from
-- that parent, and every writer supplies it from now on (NOT NULL).

ALTER TABLE ticket_tag ADD COLUMN workspace_id bigint;
UPDATE ticket_tag tt SET workspace_id = t.workspace_id FROM ticket t WHERE t.id = tt.ticket_id;
ALTER TABLE ticket_tag ALTER COLUMN workspace_id SET NOT NULL;

ALTER TABLE endpoint_secret ADD COLUMN workspace_id bigint;
UPDATE endpoint_secret s SET workspace_id = e.workspace_id FROM endpoint e WHERE e.id = s.endpoint_id;
ALTER TABLE endpoint_secret ALTER COLUMN workspace_id SET NOT NULL;

ALTER TABLE idempotency_key ADD COLUMN workspace_id bigint;
UPDATE idempotency_key i SET workspace_id = k.workspace_id FROM api_key k WHERE k.id = i.api_key_id;
ALTER TABLE idempotency_key ALTER COLUMN workspace_id SET NOT NULL;

-- Attempts: from their endpoint (on every row; endpoints are only soft-deleted), else from
-- their delivery. One with neither belongs to a workspace that was deleted (its endpoints went
-- with it), and goes as the rest of that workspace did.
ALTER TABLE delivery_attempt ADD COLUMN workspace_id bigint;
UPDATE delivery_attempt a SET workspace_id = e.workspace_id FROM endpoint e WHERE e.id = a.endpoint_id;
UPDATE delivery_attempt a SET workspace_id = d.workspace_id
  FROM (SELECT id, workspace_id FROM delivery
        UNION ALL SELECT id, workspace_id FROM delivery_finished) d
  WHERE a.workspace_id IS NULL AND d.id = a.delivery_id;
DELETE FROM delivery_attempt WHERE workspace_id IS NULL;
ALTER TABLE delivery_attempt ALTER COLUMN workspace_id SET NOT NULL;
