-- Keys include the workspace: every primary key and unique index of a tenant table, and every
-- foreign key between tenant tables, names `workspace_id`, as Citus requires of tables
-- distributed by it. One schema on plain PostgreSQL and on Citus alike.
--
-- Primary keys lead with `id`, so a lookup by id alone is still one index probe here (and a
-- fan-out on Citus until it names its workspace too); ids stay unique by construction.
-- Foreign keys between tenant tables become (child_id, workspace_id) → (id, workspace_id), so a
-- row can never point into another workspace. Each key is rebuilt under a lock: on a large
-- installation run this migration in a quiet hour.

-- Foreign keys between tenant tables go first: they depend on the primary keys.
ALTER TABLE endpoint_secret DROP CONSTRAINT endpoint_secret_endpoint_id_fkey;
ALTER TABLE message DROP CONSTRAINT message_ticket_id_fkey;
ALTER TABLE sla_clock DROP CONSTRAINT sla_clock_ticket_id_fkey;
ALTER TABLE sla_policy DROP CONSTRAINT sla_policy_calendar_id_fkey;
ALTER TABLE ticket DROP CONSTRAINT ticket_group_id_fkey;
ALTER TABLE ticket DROP CONSTRAINT ticket_assignee_id_fkey;
ALTER TABLE ticket DROP CONSTRAINT ticket_requester_id_fkey;
ALTER TABLE ticket_activity DROP CONSTRAINT ticket_activity_ticket_id_fkey;
ALTER TABLE ticket_tag DROP CONSTRAINT ticket_tag_ticket_id_fkey;
ALTER TABLE ticket_tag DROP CONSTRAINT ticket_tag_tag_id_fkey;

ALTER TABLE agent DROP CONSTRAINT agent_pkey, ADD PRIMARY KEY (id, workspace_id);
ALTER TABLE agent_group DROP CONSTRAINT agent_group_pkey, ADD PRIMARY KEY (id, workspace_id);
ALTER TABLE article DROP CONSTRAINT article_pkey, ADD PRIMARY KEY (id, workspace_id);
ALTER TABLE customer DROP CONSTRAINT customer_pkey, ADD PRIMARY KEY (id, workspace_id);
ALTER TABLE delivery DROP CONSTRAINT delivery_pkey, ADD PRIMARY KEY (id, workspace_id);
ALTER TABLE delivery_finished DROP CONSTRAINT delivery_finished_pkey,
  ADD PRIMARY KEY (id, workspace_id);
ALTER TABLE endpoint DROP CONSTRAINT endpoint_pkey, ADD PRIMARY KEY (id, workspace_id);
ALTER TABLE endpoint_queue DROP CONSTRAINT endpoint_queue_pkey,
  ADD PRIMARY KEY (endpoint_id, workspace_id);
ALTER TABLE endpoint_secret DROP CONSTRAINT endpoint_secret_pkey,
  ADD PRIMARY KEY (id, workspace_id);
ALTER TABLE event DROP CONSTRAINT event_pkey, ADD PRIMARY KEY (id, workspace_id);
ALTER TABLE idempotency_key DROP CONSTRAINT idempotency_key_pkey,
  ADD PRIMARY KEY (api_key_id, idem_key, workspace_id);
ALTER TABLE message DROP CONSTRAINT message_pkey, ADD PRIMARY KEY (id, workspace_id);
ALTER TABLE sla_calendar DROP CONSTRAINT sla_calendar_pkey, ADD PRIMARY KEY (id, workspace_id);
ALTER TABLE sla_clock DROP CONSTRAINT sla_clock_pkey, ADD PRIMARY KEY (id, workspace_id);
ALTER TABLE sla_policy DROP CONSTRAINT sla_policy_pkey, ADD PRIMARY KEY (id, workspace_id);
ALTER TABLE tag DROP CONSTRAINT tag_pkey, ADD PRIMARY KEY (id, workspace_id);
ALTER TABLE ticket DROP CONSTRAINT ticket_pkey, ADD PRIMARY KEY (id, workspace_id);
ALTER TABLE ticket_activity DROP CONSTRAINT ticket_activity_pkey,
  ADD PRIMARY KEY (id, workspace_id);
ALTER TABLE ticket_tag DROP CONSTRAINT ticket_tag_pkey,
  ADD PRIMARY KEY (ticket_id, tag_id, workspace_id);

-- Unique indexes: the same meaning (the endpoint and the ticket imply the workspace).
DROP INDEX delivery_one_in_flight_per_lane;
CREATE UNIQUE INDEX delivery_one_in_flight_per_lane
  ON delivery (order_key, endpoint_id, workspace_id)
  WHERE state = 1 AND order_key IS NOT NULL;
DROP INDEX sla_clock_instance;
CREATE UNIQUE INDEX sla_clock_instance ON sla_clock (ticket_id, metric, instance, workspace_id);

ALTER TABLE endpoint_secret ADD FOREIGN KEY (endpoint_id, workspace_id)
  REFERENCES endpoint (id, workspace_id) ON DELETE CASCADE;
ALTER TABLE message ADD FOREIGN KEY (ticket_id, workspace_id)
  REFERENCES ticket (id, workspace_id) ON DELETE CASCADE;
ALTER TABLE sla_clock ADD FOREIGN KEY (ticket_id, workspace_id)
  REFERENCES ticket (id, workspace_id) ON DELETE CASCADE;
ALTER TABLE sla_policy ADD FOREIGN KEY (calendar_id, workspace_id)
  REFERENCES sla_calendar (id, workspace_id);
-- No ON DELETE SET NULL: with the workspace in the key it would null the workspace too, and
-- Citus refuses it. Deleting a group clears its tickets' group first (tickets::group).
ALTER TABLE ticket ADD FOREIGN KEY (group_id, workspace_id)
  REFERENCES agent_group (id, workspace_id);
ALTER TABLE ticket ADD FOREIGN KEY (assignee_id, workspace_id)
  REFERENCES agent (id, workspace_id);
ALTER TABLE ticket ADD FOREIGN KEY (requester_id, workspace_id)
  REFERENCES customer (id, workspace_id);
ALTER TABLE ticket_activity ADD FOREIGN KEY (ticket_id, workspace_id)
  REFERENCES ticket (id, workspace_id) ON DELETE CASCADE;
ALTER TABLE ticket_tag ADD FOREIGN KEY (ticket_id, workspace_id)
  REFERENCES ticket (id, workspace_id) ON DELETE CASCADE;
ALTER TABLE ticket_tag ADD FOREIGN KEY (tag_id, workspace_id)
  REFERENCES tag (id, workspace_id) ON DELETE CASCADE;
