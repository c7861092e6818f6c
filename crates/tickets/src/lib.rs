//! The helpdesk ticket core: workspaces' tickets, customers, agents (users), groups, tags,
//! conversations (messages), knowledge-base articles and the per-ticket activity log, over
//! PostgreSQL.
//!
//! Every change that matters records its event through the [`outbox::Outbox`] in the same
//! transaction as the change: a committed change always has its event, a rolled-back one never
//! does. Every query takes the workspace id, so data never crosses tenants.
//!
//! What this crate must never do: speak HTTP, make outbound network calls, or know how events
//! are delivered. It owns the helpdesk tables and nothing else.

pub mod error;
pub mod ids;
pub mod outbox;

pub use error::TicketError;
