-- The helpdesk: customers, agents (users), groups, tags, tickets, their messages and activity
-- log, and knowledge-base articles. Owned by the `deskhook-tickets` crate; only its SQL touches
-- these tables. Every row carries its workspace and every query filters on it.
--
-- Ticket numbers come from one sequence per workspace (`ticket_number_ws_<workspace id>`,
-- created on the workspace's first ticket by the crate), so creates never queue behind a
-- counter row; a rolled-back create leaves a gap, which is allowed.

CREATE TABLE customer (
  id            bigint PRIMARY KEY DEFAULT deskhook_id(),
  workspace_id  bigint      NOT NULL REFERENCES workspace (id) ON DELETE CASCADE,
  email         text CHECK (length(email) BETWEEN 3 AND 320),
  name          text CHECK (length(name) <= 200),
  phone         text CHECK (length(phone) <= 50),
  company       text CHECK (length(company) <= 200),
  custom_fields jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(custom_fields) = 'object'),
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  deleted_at    timestamptz
);
CREATE UNIQUE INDEX customer_email ON customer (workspace_id, lower(email))
  WHERE email IS NOT NULL AND deleted_at IS NULL;
CREATE INDEX customer_workspace ON customer (workspace_id, created_at, id) WHERE deleted_at IS NULL;

-- Agents. `api_key.user_id` names one of these (a key bound to a user).
CREATE TABLE agent (
  id           bigint PRIMARY KEY DEFAULT deskhook_id(),
  workspace_id bigint      NOT NULL REFERENCES workspace (id) ON DELETE CASCADE,
  name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  email        text        NOT NULL CHECK (length(email) BETWEEN 3 AND 320),
  role         text        NOT NULL DEFAULT 'agent' CHECK (role IN ('admin', 'agent')),
  active       boolean     NOT NULL DEFAULT true,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  deleted_at   timestamptz
);
CREATE UNIQUE INDEX agent_email ON agent (workspace_id, lower(email)) WHERE deleted_at IS NULL;
CREATE INDEX agent_workspace ON agent (workspace_id, created_at, id) WHERE deleted_at IS NULL;

CREATE TABLE agent_group (
  id           bigint PRIMARY KEY DEFAULT deskhook_id(),
  workspace_id bigint      NOT NULL REFERENCES workspace (id) ON DELETE CASCADE,
  name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  description  text CHECK (length(description) <= 2000),
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX agent_group_name ON agent_group (workspace_id, lower(name));

CREATE TABLE tag (
  id           bigint PRIMARY KEY DEFAULT deskhook_id(),
  workspace_id bigint      NOT NULL REFERENCES workspace (id) ON DELETE CASCADE,
  name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
  color        text CHECK (length(color) <= 32),
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX tag_name ON tag (workspace_id, lower(name));

CREATE TABLE ticket (
  id                     bigint PRIMARY KEY DEFAULT deskhook_id(),
  workspace_id           bigint      NOT NULL REFERENCES workspace (id) ON DELETE CASCADE,
  number                 bigint      NOT NULL,
  subject                text        NOT NULL CHECK (length(subject) BETWEEN 1 AND 1000),
  description            text,
  status                 text        NOT NULL DEFAULT 'open'
                         CHECK (status IN ('open', 'pending', 'on_hold', 'solved', 'closed', 'spam')),
  priority               text        NOT NULL DEFAULT 'normal'
                         CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
  source                 text        NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'email', 'web')),
  requester_id           bigint REFERENCES customer (id),
  assignee_id            bigint REFERENCES agent (id),
  group_id               bigint REFERENCES agent_group (id) ON DELETE SET NULL,
  custom_fields          jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(custom_fields) = 'object'),
  -- Who opened it: a customer-originated ticket starts the first-response clock.
  created_by_type        text        NOT NULL DEFAULT 'customer' CHECK (created_by_type IN ('customer', 'agent')),
  created_by_id          bigint,
  replies_count          integer     NOT NULL DEFAULT 0,
  latest_message_preview text,
  snoozed_until          timestamptz,
  archived_at            timestamptz,
  deleted_at             timestamptz,
  created_at             timestamptz NOT NULL DEFAULT now(),
  updated_at             timestamptz NOT NULL DEFAULT now(),
  status_changed_at      timestamptz NOT NULL DEFAULT now(),
  first_responded_at     timestamptz,
  solved_at              timestamptz,
  closed_at              timestamptz,
  reopened_at            timestamptz
);
CREATE UNIQUE INDEX ticket_number ON ticket (workspace_id, number);
-- The list orders (keyset: sort key, then id).
CREATE INDEX ticket_created ON ticket (workspace_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX ticket_updated ON ticket (workspace_id, updated_at, id) WHERE deleted_at IS NULL;
CREATE INDEX ticket_status ON ticket (workspace_id, status) WHERE deleted_at IS NULL;
CREATE INDEX ticket_assignee ON ticket (assignee_id) WHERE deleted_at IS NULL;
CREATE INDEX ticket_requester ON ticket (requester_id) WHERE deleted_at IS NULL;
CREATE INDEX ticket_group ON ticket (group_id) WHERE deleted_at IS NULL;

CREATE TABLE ticket_tag (
  ticket_id bigint NOT NULL REFERENCES ticket (id) ON DELETE CASCADE,
  tag_id    bigint NOT NULL REFERENCES tag (id) ON DELETE CASCADE,
  PRIMARY KEY (ticket_id, tag_id)
);
CREATE INDEX ticket_tag_tag ON ticket_tag (tag_id);

-- The conversation. The author's name and email are kept as they were when the message was
-- written.
CREATE TABLE message (
  id           bigint PRIMARY KEY DEFAULT deskhook_id(),
  workspace_id bigint      NOT NULL REFERENCES workspace (id) ON DELETE CASCADE,
  ticket_id    bigint      NOT NULL REFERENCES ticket (id) ON DELETE CASCADE,
  kind         text        NOT NULL CHECK (kind IN ('reply', 'note')),
  internal     boolean     NOT NULL,
  -- The ticket's first message (its description): not counted in `replies_count`.
  opening      boolean     NOT NULL DEFAULT false,
  body         text        NOT NULL CHECK (length(body) >= 1),
  author_type  text        NOT NULL CHECK (author_type IN ('agent', 'customer')),
  author_id    bigint,
  author_name  text,
  author_email text,
  send_at      timestamptz,
  created_at   timestamptz NOT NULL DEFAULT now(),
  deleted_at   timestamptz,
  CHECK (kind = 'reply' OR internal)
);
CREATE INDEX message_ticket ON message (ticket_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX message_workspace ON message (workspace_id, created_at, id) WHERE deleted_at IS NULL;

-- Who changed what, when. Appended, never updated.
CREATE TABLE ticket_activity (
  id           bigint PRIMARY KEY DEFAULT deskhook_id(),
  workspace_id bigint      NOT NULL REFERENCES workspace (id) ON DELETE CASCADE,
  ticket_id    bigint      NOT NULL REFERENCES ticket (id) ON DELETE CASCADE,
  action       text        NOT NULL,
  field        text,
  old_value    jsonb,
  new_value    jsonb,
  actor_type   text        NOT NULL CHECK (actor_type IN ('agent', 'customer', 'api_key', 'system')),
  actor_id     bigint,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ticket_activity_ticket ON ticket_activity (ticket_id, created_at, id);

CREATE TABLE article (
  id            bigint PRIMARY KEY DEFAULT deskhook_id(),
  workspace_id  bigint      NOT NULL REFERENCES workspace (id) ON DELETE CASCADE,
  title         text        NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
  body          text        NOT NULL DEFAULT '',
  status        text        NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'published')),
  collection_id text CHECK (length(collection_id) <= 200),
  published_at  timestamptz,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX article_workspace ON article (workspace_id, created_at, id);
