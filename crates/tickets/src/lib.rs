//! The helpdesk ticket core: workspaces' tickets, customers, agents (users), groups, tags,
//! conversations (messages), knowledge-base articles and the per-ticket activity log, over
//! PostgreSQL.
//!
//! Every change that matters records its event through the [`outbox::Outbox`] in the same
//! transaction as the change: a committed change always has its event, a rolled-back one never
//! does. Every query takes the workspace id, so data never crosses tenants: the entry point is
//! [`Helpdesk`], one workspace's view of the tables.
//!
//! What this crate must never do: speak HTTP, make outbound network calls, or know how events
//! are delivered. It owns the helpdesk tables and nothing else.
//!
//! # Layout
//! - [`helpdesk`]: [`Helpdesk`] (pool + outbox + workspace) and [`Actor`] (who acts).
//! - [`listing`]: sorting, keyset positions and pages shared by every list.
//! - [`ticket`]: tickets, their lifecycle rules, filters, and the ticket SQL.
//! - [`message`]: the conversation (public replies and internal notes).
//! - [`activity`]: the per-ticket audit log.
//! - [`sla`]: SLA policies, calendars and per-ticket clocks, and the timer's emission step.
//! - [`customer`], [`user`], [`group`], [`tag`], [`article`]: the other resources.
//! - [`events`]: the event payloads a change emits.

pub mod activity;
pub mod article;
pub mod customer;
pub mod error;
pub mod events;
pub mod group;
pub mod helpdesk;
pub mod ids;
pub mod listing;
pub mod message;
pub mod outbox;
pub mod sla;
pub mod tag;
pub mod ticket;
pub mod user;
pub mod validate;

pub use error::TicketError;
pub use helpdesk::{Actor, Helpdesk};
