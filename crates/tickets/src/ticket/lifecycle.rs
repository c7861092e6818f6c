//! The ticket lifecycle as pure rules: the status, priority and source vocabularies (with the
//! seed spellings they accept), which status changes are allowed, and which event a change
//! fires.
//!
//! Rules (api.md, Decided details): any status may change to any other, except that a `closed`
//! ticket may only go to `open` or `spam`. Entering `solved` or `closed` from a status that is
//! neither fires `ticket.closed` (so `solved` → `closed` does not fire it again); leaving them
//! for a working status fires `ticket.reopened`; a customer's public reply reopens `pending`,
//! `on_hold`, `solved` and `closed` tickets. This module must never touch the database.

use serde::{Deserialize, Serialize};

use crate::events::EventKind;

/// Where a ticket is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Needs an agent.
    Open,
    /// Waiting on the customer.
    Pending,
    /// Waiting on a third party.
    OnHold,
    /// Answered; the customer may still reply.
    Solved,
    /// Finished.
    Closed,
    /// Not a real request.
    Spam,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Self; 6] = [
        Self::Open,
        Self::Pending,
        Self::OnHold,
        Self::Solved,
        Self::Closed,
        Self::Spam,
    ];

    /// The canonical name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Pending => "pending",
            Self::OnHold => "on_hold",
            Self::Solved => "solved",
            Self::Closed => "closed",
            Self::Spam => "spam",
        }
    }

    /// Parses a canonical name (also `hold`, Zendesk's spelling).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "open" => Some(Self::Open),
            "pending" => Some(Self::Pending),
            "on_hold" | "hold" => Some(Self::OnHold),
            "solved" | "resolved" => Some(Self::Solved),
            "closed" => Some(Self::Closed),
            "spam" => Some(Self::Spam),
            _ => None,
        }
    }

    /// Seed 002's status ids: 1 Open, 2 Closed, 3 On Hold, 4 Answered (waiting on the
    /// customer), 5 Customer Replied (open).
    pub const fn from_seed_002(id: i64) -> Option<Self> {
        match id {
            1 | 5 => Some(Self::Open),
            2 => Some(Self::Closed),
            3 => Some(Self::OnHold),
            4 => Some(Self::Pending),
            _ => None,
        }
    }

    /// The stable rank used to sort by status.
    pub const fn rank(self) -> i32 {
        match self {
            Self::Open => 0,
            Self::Pending => 1,
            Self::OnHold => 2,
            Self::Solved => 3,
            Self::Closed => 4,
            Self::Spam => 5,
        }
    }

    /// `solved` and `closed`: the statuses whose entry fires `ticket.closed`.
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Solved | Self::Closed)
    }

    /// Whether a ticket in this status may move to `to` (staying put is always allowed).
    pub fn may_become(self, to: Self) -> bool {
        self == to || self != Self::Closed || matches!(to, Self::Open | Self::Spam)
    }

    /// Whether a customer's public reply moves this status back to `open`.
    pub const fn reopens_on_customer_reply(self) -> bool {
        matches!(
            self,
            Self::Pending | Self::OnHold | Self::Solved | Self::Closed
        )
    }

    /// The status names, for error messages.
    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

/// How urgent a ticket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Low.
    Low,
    /// Normal (seed 001's `medium` is this).
    #[serde(alias = "medium")]
    Normal,
    /// High.
    High,
    /// Urgent.
    Urgent,
}

impl Priority {
    /// Every priority, lowest first.
    pub const ALL: [Self; 4] = [Self::Low, Self::Normal, Self::High, Self::Urgent];

    /// The canonical name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
            Self::Urgent => "urgent",
        }
    }

    /// Parses a name; `medium` is `normal`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "low" => Some(Self::Low),
            "normal" | "medium" => Some(Self::Normal),
            "high" => Some(Self::High),
            "urgent" => Some(Self::Urgent),
            _ => None,
        }
    }

    /// The error message for anything else.
    pub const MUST_BE: &'static str = "must be one of low, normal, high, urgent";
}

/// Where a ticket came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The REST API.
    #[default]
    Api,
    /// Email.
    Email,
    /// A web form.
    Web,
}

impl Source {
    /// The canonical name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Email => "email",
            Self::Web => "web",
        }
    }

    /// Parses a name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "api" => Some(Self::Api),
            "email" => Some(Self::Email),
            "web" => Some(Self::Web),
            _ => None,
        }
    }
}

/// The event a status change fires (besides any other change in the same request).
pub fn status_change_event(from: Status, to: Status) -> Option<EventKind> {
    if from == to {
        None
    } else if to.is_terminal() && !from.is_terminal() {
        Some(EventKind::Closed)
    } else if from.is_terminal() && !to.is_terminal() && to != Status::Spam {
        Some(EventKind::Reopened)
    } else {
        Some(EventKind::Updated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_tickets_only_reopen_or_become_spam() {
        for to in Status::ALL {
            let allowed = Status::Closed.may_become(to);
            assert_eq!(
                allowed,
                matches!(to, Status::Open | Status::Spam | Status::Closed),
                "closed → {to:?}"
            );
        }
        for from in Status::ALL.into_iter().filter(|s| *s != Status::Closed) {
            assert!(Status::ALL.iter().all(|to| from.may_become(*to)));
        }
    }

    #[test]
    fn closing_fires_once_per_closure() {
        assert_eq!(
            status_change_event(Status::Open, Status::Solved),
            Some(EventKind::Closed)
        );
        assert_eq!(
            status_change_event(Status::Pending, Status::Closed),
            Some(EventKind::Closed)
        );
        assert_eq!(
            status_change_event(Status::Solved, Status::Closed),
            Some(EventKind::Updated)
        );
        assert_eq!(
            status_change_event(Status::Closed, Status::Open),
            Some(EventKind::Reopened)
        );
        assert_eq!(
            status_change_event(Status::Open, Status::Pending),
            Some(EventKind::Updated)
        );
        assert_eq!(status_change_event(Status::Open, Status::Open), None);
    }

    #[test]
    fn seed_spellings() {
        assert_eq!(Priority::parse("medium"), Some(Priority::Normal));
        assert_eq!(Status::from_seed_002(4), Some(Status::Pending));
        assert_eq!(Status::from_seed_002(5), Some(Status::Open));
        assert_eq!(Status::from_seed_002(9), None);
        let medium: Priority = serde_json::from_str("\"medium\"").expect("alias");
        assert_eq!(medium, Priority::Normal);
    }
}
