//! The SLA timer (the `timers` role): turns SLA deadlines into `sla.at_risk` and
//! `sla.breached` events on time.
//!
//! It sleeps until the earliest known instant of any active clock — one look-up on the partial
//! index `sla_clock_next` — or until this process's ticket path signals an earlier one
//! ([`deskhook_tickets::sla::signal`]), and at most [`POLL`] in any case, which is how changes
//! made through other instances reach it (so an idle timer costs one cheap indexed query per
//! [`POLL`]). When something is due it claims the due clocks in batches with `FOR UPDATE SKIP
//! LOCKED` and records their events through the outbox in one transaction per batch
//! ([`deskhook_tickets::sla::fire_due`]). Its cost follows what falls due, never the number of
//! open tickets.
//!
//! Exactly once per ticket, metric and deadline is the database's guarantee, not this loop's:
//! a claimed clock's latch or state changes in the same transaction as its event is recorded,
//! and every event carries a dedupe key unique per workspace. Several instances may run this
//! loop at once; after downtime it catches up (at-risk while the deadline is ahead, otherwise
//! breached, never at-risk after breach). This module must never decide what an SLA event
//! means (the ticket core does) nor busy-poll.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use deskhook_tickets::{
    outbox::Outbox,
    sla::{self, Fired, signal},
};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// The longest the timer sleeps without looking (changes made through other instances).
pub const POLL: Duration = Duration::from_secs(1);
/// Clocks claimed per transaction.
pub const BATCH: i64 = 500;
/// The pause after a failed look-up, or when every due clock is held by another instance.
const BACKOFF: Duration = Duration::from_millis(50);
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// This timer's wake-up: the instant it plans to wake at, and how the ticket path pokes it.
#[derive(Debug, Default)]
struct Wake {
    notify: Notify,
    /// Milliseconds since the epoch of the planned wake-up.
    planned_ms: AtomicI64,
}

/// Runs the SLA timer until `shutdown`.
pub async fn run(
    pool: PgPool,
    outbox: Arc<dyn Outbox>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let wake = Arc::new(Wake::default());
    let listener = {
        let wake = wake.clone();
        Arc::new(move |at: chrono::DateTime<Utc>| {
            if at.timestamp_millis() < wake.planned_ms.load(Ordering::Acquire) {
                wake.notify.notify_one();
            }
        })
    };
    let _subscription = signal::subscribe(listener);
    tracing::info!("SLA timer started");
    while !shutdown.is_cancelled() {
        // Register interest before looking, so a change committed meanwhile is not missed.
        let notified = wake.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        wake.planned_ms.store(i64::MAX, Ordering::Release);

        let pause = match step(&pool, outbox.as_ref(), &metrics).await {
            Ok(Step::Again) => continue,
            Ok(Step::Busy) => BACKOFF,
            Ok(Step::Sleep(until)) => until,
            Err(error) => {
                tracing::warn!(error = %error, "SLA timer step failed; retrying");
                ERROR_BACKOFF
            }
        };
        let planned = Utc::now() + chrono::Duration::from_std(pause).unwrap_or_default();
        wake.planned_ms
            .store(planned.timestamp_millis(), Ordering::Release);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = &mut notified => {}
            () = shutdown.cancelled() => {}
        }
    }
    tracing::info!("SLA timer stopped");
}

/// What the loop does next.
enum Step {
    /// A full batch was fired: look again at once.
    Again,
    /// Due clocks exist but another instance holds them: look again shortly.
    Busy,
    /// Nothing is due: sleep this long (until the next instant, at most [`POLL`]).
    Sleep(Duration),
}

async fn step(
    pool: &PgPool,
    outbox: &dyn Outbox,
    metrics: &Metrics,
) -> Result<Step, deskhook_tickets::TicketError> {
    let next = sla::next_instant(pool).await?;
    let now = Utc::now();
    match next {
        Some(at) if at <= now => {
            let fired = sla::fire_due(pool, outbox, now, BATCH).await?;
            record(metrics, &fired);
            Ok(if fired.claimed as i64 >= BATCH {
                Step::Again
            } else if fired.claimed == 0 {
                Step::Busy
            } else {
                // Some were fired; others may still be held elsewhere: look again now.
                Step::Again
            })
        }
        Some(at) => Ok(Step::Sleep(
            (at - now).to_std().unwrap_or_default().min(POLL),
        )),
        None => Ok(Step::Sleep(POLL)),
    }
}

fn record(metrics: &Metrics, fired: &Fired) {
    let now = Utc::now();
    for emitted in &fired.emitted {
        let lag = (now - emitted.instant).num_milliseconds().max(0) as f64 / 1000.0;
        metrics.sla_timer_lag_seconds.observe(lag);
        metrics
            .sla_events_total
            .with_label_values(&[emitted.firing.label(), emitted.metric.as_str()])
            .inc();
        tracing::debug!(
            kind = emitted.firing.label(),
            metric = emitted.metric.as_str(),
            lag_seconds = lag,
            "SLA event emitted"
        );
    }
}
