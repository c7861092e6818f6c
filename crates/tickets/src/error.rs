//! The errors of the ticket core. They say what went wrong in domain terms; the service maps
//! them to HTTP in one place.

use std::collections::BTreeMap;

/// What a ticket-core operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    /// No such resource in this workspace (another workspace's ids land here too).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Input that is well-formed but invalid: field name → reason.
    #[error("validation failed: {0:?}")]
    Invalid(BTreeMap<String, String>),
    /// A request that cannot be honoured in the resource's current state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A request that is malformed in a way that is not about one field (e.g. a bad filter).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl TicketError {
    /// One invalid field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid(BTreeMap::from([(field.into(), reason.into())]))
    }
}
