//! Delivery: the worker pool that claims due deliveries, signs them, POSTs them, and settles
//! the outcome back into the queue.
//!
//! It must never hold a database transaction across an HTTP call: claim and commit, POST,
//! then settle in a later batch.

pub mod client;
pub mod dispatcher;
pub mod retry;
