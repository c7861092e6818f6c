//! The outbox: how the domain emits events. The only way.
//!
//! A mutation builds its [`OutboxEvent`]s and hands them to [`Outbox::record`] on the same
//! connection (inside the same transaction) as the change itself, before committing. The
//! implementation (the service's queue) stores the event and fans it out to deliveries in that
//! transaction; after the commit the crate calls [`Outbox::committed`] so the implementation
//! can wake its workers. This crate never knows where events go.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::PgConnection;

/// Where an event came from (a bounded label for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSource {
    /// A change through the REST API.
    Api,
    /// The external ingest endpoint.
    Ingest,
    /// The SLA timer.
    Sla,
    /// A `webhook.test` ping.
    Test,
}

impl EventSource {
    /// The stored and labelled name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Ingest => "ingest",
            Self::Sla => "sla",
            Self::Test => "test",
        }
    }
}

/// An event to record with a change.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    /// `ticket.created`, `ticket.replied`, ...
    pub event_type: &'static str,
    /// The ticket it is about (orders `per_ticket` endpoints).
    pub ticket_id: Option<i64>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// The payload's `data` object, serialised once (`{"ticket": …, "message": …}`).
    pub data: String,
    /// Where it came from.
    pub source: EventSource,
    /// A key that makes a repeat a duplicate (SLA deadlines); `None` for ordinary changes.
    pub dedupe_key: Option<String>,
}

/// Stores events in the caller's transaction. Implemented by the service's queue.
pub trait Outbox: Send + Sync + 'static {
    /// Records `events` of `workspace_id` on `conn`, which is inside the change's transaction.
    /// Returns how many were new (a dedupe key seen before is not recorded again).
    fn record<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        workspace_id: i64,
        events: &'a [OutboxEvent],
    ) -> BoxFuture<'a, Result<u64, sqlx::Error>>;

    /// Called after the transaction that recorded events has committed.
    fn committed(&self) {}
}
