//! Tickets: the object, its fields' vocabularies, what a create or a change may say, and the
//! list filters. The lifecycle rules are in [`lifecycle`], the SQL in `store`.
//!
//! [`Ticket`] serialises exactly as the API returns it, and event payloads embed the same value,
//! so a subscriber sees what `GET /v1/tickets/{id}` shows. This module must never know about
//! HTTP requests: aliases of the seed APIs are mapped to [`NewTicket`]/[`TicketPatch`] by the
//! caller.

pub mod lifecycle;
pub(crate) mod store;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ids::{self, Kind};

pub use lifecycle::{Priority, Source, Status};

/// Where a ticket is addressed: its public id (`tkt_…`) or its per-workspace number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketRef {
    /// The row key behind `tkt_…`.
    Key(i64),
    /// The per-workspace number (`4821`).
    Number(i64),
}

impl TicketRef {
    /// Reads `tkt_…` or a positive number; anything else is `None` (which is a 404).
    pub fn parse(text: &str) -> Option<Self> {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return text.parse().ok().filter(|n| *n > 0).map(Self::Number);
        }
        ids::decode(Kind::Ticket, text).map(Self::Key)
    }
}

/// A person on a ticket: the requester (a customer) or the assignee (an agent).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PersonRef {
    /// `cus_…` or `usr_…`.
    pub id: String,
    /// Email.
    pub email: Option<String>,
    /// Name.
    pub name: Option<String>,
}

/// The group a ticket is routed to.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GroupRef {
    /// `grp_…`.
    pub id: String,
    /// Name.
    pub name: String,
}

/// A ticket as the API returns it (and as events carry it).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Ticket {
    /// Row key.
    #[serde(skip)]
    pub key: i64,
    /// `tkt_…`.
    pub id: String,
    /// Per-workspace sequential number.
    pub number: i64,
    /// Subject line.
    pub subject: String,
    /// The first message.
    pub description: Option<String>,
    /// Lifecycle status.
    pub status: Status,
    /// Priority.
    pub priority: Priority,
    /// Where it came from.
    pub source: Source,
    /// The customer it is for.
    pub requester: Option<PersonRef>,
    /// The agent working it.
    pub assignee: Option<PersonRef>,
    /// The group it is routed to.
    pub group: Option<GroupRef>,
    /// Tag names, sorted case-insensitively.
    pub tags: Vec<String>,
    /// Free-form fields.
    pub custom_fields: serde_json::Value,
    /// Whether it is archived.
    pub archived: bool,
    /// When it was archived.
    pub archived_at: Option<DateTime<Utc>>,
    /// Snoozed until (seed 004 `reopen_at`).
    pub snoozed_until: Option<DateTime<Utc>>,
    /// SLA clocks and deadlines: `null` when no policy applies.
    pub sla: Option<crate::sla::SlaView>,
    /// Public replies after the first message.
    pub replies_count: i32,
    /// The start of the latest public message.
    pub latest_message_preview: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Last status change.
    pub status_changed_at: DateTime<Utc>,
    /// First public agent reply on a customer-originated ticket.
    pub first_responded_at: Option<DateTime<Utc>>,
    /// Entered `solved` (cleared on reopen).
    pub solved_at: Option<DateTime<Utc>>,
    /// Entered `closed` (cleared on reopen).
    pub closed_at: Option<DateTime<Utc>>,
    /// Last reopened.
    pub reopened_at: Option<DateTime<Utc>>,
}

/// Who the requester is on create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequesterInput {
    /// An existing customer.
    Existing(i64),
    /// The customer with this email, created if missing.
    ByEmail {
        /// Email.
        email: String,
        /// Name, for a new customer (or one without a name).
        name: Option<String>,
    },
}

/// Who opened the ticket (decides whether the first-response clock runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Opener {
    /// The customer (the default for API creates).
    #[default]
    Customer,
    /// An agent, on the customer's behalf.
    Agent(i64),
}

/// A ticket to create.
#[derive(Debug, Clone, Default)]
pub struct NewTicket {
    /// Subject (required).
    pub subject: String,
    /// The first message.
    pub description: Option<String>,
    /// The requester (required).
    pub requester: Option<RequesterInput>,
    /// Initial status (default open).
    pub status: Option<Status>,
    /// Priority (default normal).
    pub priority: Option<Priority>,
    /// Source (default api).
    pub source: Option<Source>,
    /// Assignee (an agent key).
    pub assignee: Option<i64>,
    /// Group.
    pub group: Option<i64>,
    /// Tag names (unknown ones are created).
    pub tags: Vec<String>,
    /// Custom fields (an object).
    pub custom_fields: Option<serde_json::Value>,
    /// Who opened it.
    pub opener: Opener,
    /// Snoozed until.
    pub snoozed_until: Option<DateTime<Utc>>,
}

/// A change to a ticket: `None` leaves a field; `Some(None)` clears a clearable one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TicketPatch {
    /// Subject.
    pub subject: Option<String>,
    /// Status.
    pub status: Option<Status>,
    /// Priority.
    pub priority: Option<Priority>,
    /// Assignee.
    pub assignee: Option<Option<i64>>,
    /// Group.
    pub group: Option<Option<i64>>,
    /// Requester.
    pub requester: Option<i64>,
    /// Full set of tag names.
    pub tags: Option<Vec<String>>,
    /// Custom fields (replaces the object).
    pub custom_fields: Option<serde_json::Value>,
    /// Snooze.
    pub snoozed_until: Option<Option<DateTime<Utc>>>,
}

impl TicketPatch {
    /// Whether the patch asks for nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Ticket list filters. Lists of values match any of them.
#[derive(Debug, Clone, Default)]
pub struct TicketFilter {
    /// Any of these statuses.
    pub statuses: Vec<Status>,
    /// Any of these priorities.
    pub priorities: Vec<Priority>,
    /// Assigned to any of these agents.
    pub assignees: Vec<i64>,
    /// Requested by any of these customers.
    pub requesters: Vec<i64>,
    /// In any of these groups.
    pub groups: Vec<i64>,
    /// Only unassigned (true) or only assigned (false).
    pub unassigned: Option<bool>,
    /// Carrying any of these tag names.
    pub tags: Vec<String>,
    /// Substring of the subject, description or any message.
    pub search: Option<String>,
    /// Archived tickets only (true) or not archived only (false, the default).
    pub archived: Option<bool>,
    /// Created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Created before.
    pub created_before: Option<DateTime<Utc>>,
    /// Updated at or after.
    pub updated_after: Option<DateTime<Utc>>,
    /// Updated before.
    pub updated_before: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_addressed_by_id_or_number() {
        let id = ids::encode(Kind::Ticket, 99);
        assert_eq!(TicketRef::parse(&id), Some(TicketRef::Key(99)));
        assert_eq!(TicketRef::parse("4821"), Some(TicketRef::Number(4821)));
        assert_eq!(TicketRef::parse("0"), None);
        assert_eq!(TicketRef::parse("cus_0000000000001"), None);
        assert_eq!(TicketRef::parse("99999999999999999999999"), None);
        assert_eq!(TicketRef::parse(""), None);
    }
}
