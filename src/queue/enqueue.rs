//! Enqueue: store events and fan each out to one delivery per subscribed, enabled endpoint, in
//! the caller's transaction (the outbox). One statement per batch of events.
//!
//! Dedupe: an event with an `external_id` (ingest producer id, SLA deadline key) that the
//! workspace already has is not stored again, and gets no deliveries; the caller learns the
//! first event's id.

use chrono::{DateTime, Utc};
use deskhook_tickets::outbox::{EventSource, Outbox, OutboxEvent};
use futures::future::BoxFuture;
use sqlx::PgConnection;

use super::Wakeup;

/// One event to store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The event type (`ticket.created`, ...).
    pub event_type: String,
    /// Where it came from.
    pub source: EventSource,
    /// What orders it on `per_ticket` endpoints.
    pub ticket_key: Option<String>,
    /// Dedupe key, unique per workspace.
    pub external_id: Option<String>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// The raw JSON `data` object.
    pub data: String,
}

/// What happened to one event of a batch, in input order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The event's key (the first one's, for a duplicate).
    pub event_id: i64,
    /// Whether it was already there.
    pub duplicate: bool,
}

/// The enqueue statement: events in, deliveries fanned out, one row back per input event.
///
/// Ids are drawn before the insert so inserted rows can be matched to their input rows even
/// when some are skipped as duplicates; a duplicate (of a stored event or of an earlier one in
/// the batch) is skipped by `ON CONFLICT` and comes back with no id. No `NOT EXISTS` pre-check:
/// measured in `steady`, the planner, with a fresh table's statistics, hashed it into a scan of
/// every event of the workspace (7.6 ms per call). `event_types` of an endpoint is a list of
/// types or `*`; `*` never matches `webhook.test`, which only the test action sends. The match is
/// written as one `&&` so the `endpoint_subscribed` GIN index answers it: the fan-out reads the
/// endpoints the event is for, never every endpoint of the workspace. SLA events get
/// priority 0, everything else 1. Deliveries are numbered in event order, which is the FIFO
/// order of `per_ticket` lanes.
const ENQUEUE: &str = r"
WITH input AS (
  SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::text[])
         WITH ORDINALITY AS i(event_type, source, ticket_key, external_id, occurred_at, data, ord)
),
fresh AS MATERIALIZED (
  SELECT deskhook_id() AS id, i.*
  FROM (SELECT * FROM input ORDER BY ord) i
),
inserted AS (
  INSERT INTO event (id, workspace_id, event_type, source, ticket_key, external_id, occurred_at, data)
  SELECT id, $1, event_type, source, ticket_key, external_id, occurred_at, data FROM fresh ORDER BY id
  ON CONFLICT (workspace_id, external_id) WHERE external_id IS NOT NULL DO NOTHING
  RETURNING id, event_type, ticket_key
),
fanout AS (
  INSERT INTO delivery (id, workspace_id, endpoint_id, event_id, order_key, priority)
  SELECT deskhook_id(), $1, ep.id, e.id,
         CASE WHEN ep.ordering = 'per_ticket' THEN deskhook_lane_key(ep.id, e.ticket_key) END,
         CASE WHEN e.event_type LIKE 'sla.%' THEN 0 ELSE 1 END
  FROM (SELECT * FROM inserted ORDER BY id) e
  JOIN endpoint ep
    ON ep.workspace_id = $1 AND ep.enabled AND ep.deleted_at IS NULL
   AND ep.event_types && ARRAY[e.event_type, '*']
   AND (e.event_type <> 'webhook.test' OR ep.event_types @> ARRAY['webhook.test'])
  ORDER BY e.id, ep.id
  RETURNING 1
)
SELECT ins.id, ins.id IS NULL AS duplicate
FROM input i
LEFT JOIN fresh f ON f.ord = i.ord
LEFT JOIN inserted ins ON ins.id = f.id
ORDER BY i.ord
";

/// Stores `events` of `workspace_id` and their deliveries on `conn` (inside the caller's
/// transaction). Returns one [`Stored`] per event, in input order.
pub async fn enqueue(
    conn: &mut PgConnection,
    workspace_id: i64,
    events: &[NewEvent],
) -> Result<Vec<Stored>, sqlx::Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(Option<i64>, bool)> = sqlx::query_as(ENQUEUE)
        .bind(workspace_id)
        .bind(
            events
                .iter()
                .map(|e| e.event_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.source.as_str()).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.ticket_key.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| e.external_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.occurred_at).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.data.as_str()).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?;
    // Duplicates (rare) get their first event's id from one more indexed lookup. Joining
    // `event` inside the statement instead made every enqueue scan the workspace's events.
    let missing: Vec<&str> = rows
        .iter()
        .zip(events)
        .filter(|((id, _), _)| id.is_none())
        .filter_map(|(_, event)| event.external_id.as_deref())
        .collect();
    let found: std::collections::HashMap<String, i64> = if missing.is_empty() {
        std::collections::HashMap::new()
    } else {
        sqlx::query_as::<_, (String, i64)>(
            "SELECT external_id, id FROM event WHERE workspace_id = $1 AND external_id = ANY($2)",
        )
        .bind(workspace_id)
        .bind(&missing)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect()
    };
    rows.into_iter()
        .zip(events)
        .map(|((id, duplicate), event)| {
            let event_id = id
                .or_else(|| {
                    event
                        .external_id
                        .as_ref()
                        .and_then(|x| found.get(x).copied())
                })
                .ok_or_else(|| {
                    sqlx::Error::Protocol("enqueue returned no id for an event".into())
                })?;
            Ok(Stored {
                event_id,
                duplicate,
            })
        })
        .collect()
}

/// The queue as the ticket core's outbox: ticket changes enqueue in their own transaction and
/// wake the dispatcher after commit.
#[derive(Debug, Clone)]
pub struct QueueOutbox {
    wakeup: Wakeup,
    metrics: Option<crate::metrics::Metrics>,
}

impl QueueOutbox {
    /// An outbox that wakes `wakeup` after each commit.
    pub fn new(wakeup: Wakeup) -> Self {
        Self {
            wakeup,
            metrics: None,
        }
    }

    /// Also counts recorded events in `deskhook_events_total`. They are counted when recorded
    /// inside the change's transaction: a change whose commit then fails is counted too.
    #[must_use]
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

impl Outbox for QueueOutbox {
    fn record<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        workspace_id: i64,
        events: &'a [OutboxEvent],
    ) -> BoxFuture<'a, Result<u64, sqlx::Error>> {
        Box::pin(async move {
            let events: Vec<NewEvent> = events
                .iter()
                .map(|e| NewEvent {
                    event_type: e.event_type.to_owned(),
                    source: e.source,
                    ticket_key: e.ticket_id.map(|id| {
                        deskhook_tickets::ids::encode(deskhook_tickets::ids::Kind::Ticket, id)
                    }),
                    external_id: e.dedupe_key.clone(),
                    occurred_at: e.occurred_at,
                    data: e.data.clone(),
                })
                .collect();
            let stored = enqueue(conn, workspace_id, &events).await?;
            if let Some(metrics) = &self.metrics {
                for (event, stored) in events.iter().zip(&stored) {
                    if !stored.duplicate {
                        metrics
                            .events_total
                            .with_label_values(&[event.event_type.as_str(), event.source.as_str()])
                            .inc();
                    }
                }
            }
            Ok(stored.iter().filter(|s| !s.duplicate).count() as u64)
        })
    }

    fn committed(&self) {
        self.wakeup.notify_local();
    }
}
