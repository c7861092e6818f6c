//! The events a helpdesk change emits and their payloads: `{"ticket": …}` plus `"message": …`
//! for `ticket.replied`, the ticket and message serialised exactly as the API returns them.
//!
//! Payloads are built after the change, inside its transaction, from the rows as they will be
//! committed. This module must never record events itself: [`crate::Helpdesk`] hands them to
//! the outbox in the same transaction.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{
    TicketError,
    message::Message,
    outbox::{EventSource, OutboxEvent},
    ticket::Ticket,
    validate::serialisation_failed,
};

/// The ticket event types (webhooks.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `ticket.created`
    Created,
    /// `ticket.replied` (public messages only)
    Replied,
    /// `ticket.closed` (entering solved or closed)
    Closed,
    /// `ticket.updated`
    Updated,
    /// `ticket.assigned` (assignee set, changed or cleared)
    Assigned,
    /// `ticket.reopened`
    Reopened,
}

impl EventKind {
    /// Every kind, in the catalogue's order (Deskhook's event catalogue is built from this).
    pub const ALL: [Self; 6] = [
        Self::Created,
        Self::Replied,
        Self::Closed,
        Self::Updated,
        Self::Assigned,
        Self::Reopened,
    ];

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Created => "ticket.created",
            Self::Replied => "ticket.replied",
            Self::Closed => "ticket.closed",
            Self::Updated => "ticket.updated",
            Self::Assigned => "ticket.assigned",
            Self::Reopened => "ticket.reopened",
        }
    }
}

#[derive(Serialize)]
struct Payload<'a> {
    ticket: &'a Ticket,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a Message>,
}

/// The outbox event of `kind` about `ticket` (with `message` for replies), at `occurred_at`.
pub(crate) fn ticket_event(
    kind: EventKind,
    ticket: &Ticket,
    message: Option<&Message>,
    occurred_at: DateTime<Utc>,
) -> Result<OutboxEvent, TicketError> {
    let data = serde_json::to_string(&Payload { ticket, message }).map_err(serialisation_failed)?;
    Ok(OutboxEvent {
        event_type: kind.as_str(),
        ticket_id: Some(ticket.key),
        occurred_at,
        data,
        source: EventSource::Api,
        dedupe_key: None,
    })
}

/// Deduplicates `kinds` keeping their order, then builds one event each.
pub(crate) fn ticket_events(
    kinds: &[EventKind],
    ticket: &Ticket,
    message: Option<&Message>,
    occurred_at: DateTime<Utc>,
) -> Result<Vec<OutboxEvent>, TicketError> {
    let mut seen = Vec::with_capacity(kinds.len());
    for kind in kinds {
        if !seen.contains(kind) {
            seen.push(*kind);
        }
    }
    seen.into_iter()
        .map(|kind| {
            let message = if kind == EventKind::Replied {
                message
            } else {
                None
            };
            ticket_event(kind, ticket, message, occurred_at)
        })
        .collect()
}
