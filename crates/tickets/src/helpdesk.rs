//! [`Helpdesk`]: one workspace's helpdesk, the handle every operation hangs off, and [`Actor`],
//! who performs a change.
//!
//! Holding the workspace id here is what confines every query to one tenant: no public
//! operation takes a row key without it. This module must never hold per-request state beyond
//! that (no caches, no HTTP types).

use sqlx::{PgPool, Postgres, Transaction};

use crate::{
    TicketError,
    outbox::{Outbox, OutboxEvent},
};

/// One workspace's helpdesk: the pool, the outbox events are recorded through, and the
/// workspace every query is confined to.
#[derive(Clone, Copy)]
pub struct Helpdesk<'a> {
    pub(crate) pool: &'a PgPool,
    pub(crate) outbox: &'a dyn Outbox,
    pub(crate) workspace_id: i64,
}

impl std::fmt::Debug for Helpdesk<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Helpdesk")
            .field("workspace_id", &self.workspace_id)
            .finish_non_exhaustive()
    }
}

impl<'a> Helpdesk<'a> {
    /// The helpdesk of `workspace_id`.
    pub fn new(pool: &'a PgPool, outbox: &'a dyn Outbox, workspace_id: i64) -> Self {
        Self {
            pool,
            outbox,
            workspace_id,
        }
    }

    /// The workspace this handle is confined to.
    pub fn workspace_id(&self) -> i64 {
        self.workspace_id
    }

    /// Records `events` in `tx`, commits, then tells the outbox. The only way a change with
    /// events is committed.
    pub(crate) async fn commit_with_events(
        &self,
        mut tx: Transaction<'_, Postgres>,
        events: &[OutboxEvent],
    ) -> Result<(), TicketError> {
        if !events.is_empty() {
            self.outbox
                .record(&mut tx, self.workspace_id, events)
                .await?;
        }
        tx.commit().await?;
        if !events.is_empty() {
            self.outbox.committed();
        }
        Ok(())
    }
}

/// Who performs a change: recorded in the activity log and, for messages, as the author.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// An agent (a user of the workspace), e.g. through a key bound to that user.
    Agent(i64),
    /// A customer (a requester), e.g. an imported inbound message.
    Customer(i64),
    /// An API key not bound to a user.
    ApiKey(i64),
}

impl Actor {
    /// The stored actor type.
    pub const fn kind(self) -> &'static str {
        match self {
            Self::Agent(_) => "agent",
            Self::Customer(_) => "customer",
            Self::ApiKey(_) => "api_key",
        }
    }

    /// The stored actor key.
    pub const fn key(self) -> i64 {
        match self {
            Self::Agent(key) | Self::Customer(key) | Self::ApiKey(key) => key,
        }
    }
}
