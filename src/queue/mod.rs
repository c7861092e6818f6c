//! The durable delivery queue in PostgreSQL. It knows nothing of HTTP or signing.
//!
//! ```text
//!  enqueue ──► waiting (state 0: pending, or retrying after a failed attempt)
//!                 │ claim (batched, FOR UPDATE SKIP LOCKED, fair across endpoints, lease)
//!                 ▼
//!              in flight (state 1, lease_id fences late settles)
//!        ┌────────┼─────────────────┐
//!   success   failure, retries left   failure, none left / 410 Gone
//!        ▼        ▼                  ▼
//!  delivery_finished  back to waiting    delivery_finished (dead) ── retry/recover ──► waiting
//!  (succeeded)        at run_at = backoff
//! ```
//! A crashed worker's lease expires and the reaper puts the delivery back to waiting, so an
//! accepted event is never lost; the receiver may see its `webhook-id` twice (at least once).
//! The hot table `delivery` holds only unfinished work; history lives in `delivery_finished`
//! and `delivery_attempt`.

pub mod claim;
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
