//! The durable delivery queue in PostgreSQL. It knows nothing of HTTP or signing.
//!
//! ```text
//!  enqueue, replay, rescue ──► ready (state 0) ◄── promote when due ── scheduled (state 2)
//!        disable ⇄ enable: parked (state 3)  │ claim (batched, SKIP LOCKED, fair, leased)   ▲
//!                                            ▼                                            │
//!                                 in flight (state 1, lease_id fences late settles)        │
//!                      ┌─────────────────────┼───────────────────────────┐                 │
//!                 success          failure, none left / 410 Gone   failure, retries left ──┘
//!                      ▼                     ▼
//!       delivery_finished (succeeded)   delivery_finished (dead) ── retry/recover ──► ready
//! ```
//! Each partial index holds one state, so a claim reads ready rows only: what waits for a
//! retry, or for its endpoint to be enabled, costs the claim nothing.
//! A crashed worker's lease expires and the reaper puts the delivery back to waiting, so an
//! accepted event is never lost; the receiver may see its `webhook-id` twice (at least once).
//! The hot table `delivery` holds only unfinished work; history lives in `delivery_finished`
//! and `delivery_attempt`.

pub mod claim;
pub mod cycle;
pub mod deliveries;
pub mod enqueue;
pub mod events;
pub mod retention;
pub mod settle;
pub mod wakeup;

pub use claim::Claimed;
pub use enqueue::{NewEvent, QueueOutbox, Stored, enqueue};
pub use settle::{Settled, Settlement, Verdict};
pub use wakeup::Wakeup;
