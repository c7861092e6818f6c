//! Waking the dispatcher: in-process at once after a local commit, a throttled `pg_notify` for
//! other instances, and (in the dispatcher) a poll as the fallback.
//!
//! NOTIFY takes a database-wide lock at commit, so it is never sent inside an enqueue
//! transaction and at most once per [`NOTIFY_INTERVAL`] per instance (queue.md).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sqlx::PgPool;
use tokio::sync::Notify;

/// The channel other instances listen on.
pub const CHANNEL: &str = "deskhook_ready";
/// The shortest gap between two NOTIFYs from one instance.
pub const NOTIFY_INTERVAL: Duration = Duration::from_millis(20);

/// A handle to wake the dispatchers. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Wakeup {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    local: Notify,
    notify_pending: AtomicBool,
    remote: Notify,
}

impl Wakeup {
    /// Wakes this instance's dispatcher and schedules a NOTIFY for the others.
    pub fn notify_local(&self) {
        self.inner.local.notify_one();
        if !self.inner.notify_pending.swap(true, Ordering::AcqRel) {
            self.inner.remote.notify_one();
        }
    }

    /// Wakes this instance's dispatcher only (a NOTIFY from another instance, a retry due).
    pub fn wake_dispatcher(&self) {
        self.inner.local.notify_one();
    }

    /// Waits until woken.
    pub async fn notified(&self) {
        self.inner.local.notified().await;
    }

    /// Sends the throttled NOTIFY for other instances until the pool closes. Run once per
    /// instance.
    pub async fn run_notifier(self, pool: PgPool, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = self.inner.remote.notified() => {}
                () = shutdown.cancelled() => return,
            }
            tokio::time::sleep(NOTIFY_INTERVAL).await;
            self.inner.notify_pending.store(false, Ordering::Release);
            if let Err(error) = sqlx::query("SELECT pg_notify($1, '')")
                .bind(CHANNEL)
                .execute(&pool)
                .await
            {
                tracing::debug!(error = %error, "could not send the cross-instance wake-up");
            }
        }
    }
}
