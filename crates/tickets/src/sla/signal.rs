//! A process-wide signal from the ticket path to this process's SLA timers: "a clock's next
//! instant is now `at`". A timer sleeping past `at` wakes and re-reads the earliest instant.
//!
//! The signal is an optimisation only: a timer also polls the database, which is how changes
//! made by other instances reach it. It must never carry state a timer depends on for
//! correctness, and never block the ticket path (listeners only poke a `Notify`-like waker).

use std::sync::{Arc, Mutex, PoisonError, Weak};

use chrono::{DateTime, Utc};

/// A listener: called with the instant a clock now falls due at.
pub type Listener = dyn Fn(DateTime<Utc>) + Send + Sync;

static LISTENERS: Mutex<Vec<Weak<Listener>>> = Mutex::new(Vec::new());

/// Keeps a listener registered; dropping it unregisters.
#[must_use = "the listener is unregistered when this is dropped"]
pub struct Subscription {
    _listener: Arc<Listener>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

/// Registers `listener` until the returned subscription is dropped.
pub fn subscribe(listener: Arc<Listener>) -> Subscription {
    let mut listeners = LISTENERS.lock().unwrap_or_else(PoisonError::into_inner);
    listeners.retain(|weak| weak.strong_count() > 0);
    listeners.push(Arc::downgrade(&listener));
    Subscription {
        _listener: listener,
    }
}

/// Tells every registered timer that a clock now falls due at `at`.
pub fn poke(at: DateTime<Utc>) {
    let listeners: Vec<Arc<Listener>> = LISTENERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for listener in listeners {
        listener(at);
    }
}
