//! SLAs: policies (targets per metric and priority), business-hours calendars, and the
//! per-ticket clocks whose deadlines the service's timer turns into `sla.at_risk` and
//! `sla.breached` events (sla.md).
//!
//! Ticket and message mutations call [`store::sync`] inside their own transaction, so a
//! ticket's clocks always agree with the committed ticket. The timer (in the service) calls
//! [`fire_due`], which claims due clocks with `SKIP LOCKED` and records their events through
//! the outbox in the same transaction that sets the clock's latch or state; each event carries
//! a dedupe key made of the ticket, metric, instance and deadline, so the database — not
//! timing — makes it exactly once per deadline.
//!
//! This module must never speak HTTP, deliver events, or sleep: the timer's scheduling lives
//! in the service (`src/sla`).
//!
//! # Layout
//! - [`calendar`]: calendars and business-time arithmetic (pure).
//! - [`policy`]: policies, their validation and matching (pure).
//! - [`clock`]: one metric instance's state machine (pure).
//! - [`signal`]: tells this process's timer that a deadline may have moved earlier.
//! - `store`: the SQL of `sla_policy`, `sla_calendar` and `sla_clock`.

pub mod calendar;
pub mod clock;
pub mod policy;
pub mod signal;
pub(crate) mod store;

use serde::{Deserialize, Serialize};

pub use store::{
    CalendarInput, CalendarView, ClockView, Emitted, Fired, SlaView, fire_due, next_instant,
};

/// The three SLA metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Until the first public agent reply.
    FirstResponse,
    /// From a customer's message (after the first response) until the next agent reply.
    NextResponse,
    /// Until the ticket is solved or closed.
    Resolution,
}

impl Metric {
    /// Every metric.
    pub const ALL: [Self; 3] = [Self::FirstResponse, Self::NextResponse, Self::Resolution];

    /// The stored and wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FirstResponse => "first_response",
            Self::NextResponse => "next_response",
            Self::Resolution => "resolution",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == text)
    }
}
