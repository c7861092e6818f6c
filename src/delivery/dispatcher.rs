//! The dispatcher: one claimer per instance feeding up to `worker_concurrency` concurrent
//! attempts, and one settler writing their outcomes back in batches.
//!
//! ```text
//!  wake-up (local commit | NOTIFY | poll | next due) ─► claim batch (≤ free slots) ─► spawn attempts
//!                                                                                   │ sign, POST
//!                          settle batch (what is waiting, ≤ 256 outcomes) ◄────────┘
//! ```
//! No transaction is held across a POST: a claim commits before any request leaves. On
//! shutdown the claimer stops, in-flight attempts get `shutdown_timeout` to finish and be
//! settled; whatever is still leased then is rescued by the lease reaper later.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use chrono::Utc;
use rand::Rng as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::{
    client::{DeliveryClient, OutcomeKind},
    retry,
};
use crate::{
    config::RetrySchedule,
    events,
    ids::{self, Kind},
    metrics::{Metrics, status_class},
    queue::{self, Claimed, Settlement, Verdict, Wakeup, claim},
    signing,
    webhooks::{self, SecretBox, Target},
};

/// How long endpoint settings (URL, secrets, headers) are cached by the dispatcher. A change
/// through this instance's API also invalidates the cache at once.
const TARGET_TTL: Duration = Duration::from_secs(2);
/// The fallback poll interval when nothing wakes the dispatcher.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// The shortest idle wait: due but blocked work is re-checked at most this often.
const IDLE_FLOOR: Duration = Duration::from_millis(50);
/// Settles per statement at most.
const SETTLE_BATCH: usize = 256;

/// What the dispatcher needs.
#[derive(Clone)]
pub struct DispatcherConfig {
    /// Concurrent attempts.
    pub concurrency: usize,
    /// Deliveries per claim at most.
    pub claim_batch: usize,
    /// The retry schedule.
    pub schedule: RetrySchedule,
    /// The per-attempt timeout.
    pub attempt_timeout: Duration,
    /// How long in-flight attempts may take to finish on shutdown.
    pub shutdown_timeout: Duration,
}

/// What the dispatcher knows of an endpoint it must send to.
#[derive(Clone)]
enum Lookup {
    /// Ready to send.
    Found(Arc<Target>),
    /// Deleted since the claim: its deliveries end dead.
    Gone,
    /// Its settings could not be read (database error, unreadable secret): try again later,
    /// never burn the delivery.
    Unavailable(String),
}

/// An endpoint's settings (`None`: deleted) and when they were loaded.
type CachedTarget = (Option<Arc<Target>>, Instant);

/// Send settings cached per endpoint.
#[derive(Default)]
pub struct TargetCache {
    entries: Mutex<HashMap<i64, CachedTarget>>,
}

impl TargetCache {
    /// Forgets every cached endpoint (after a change through the API).
    pub fn invalidate(&self) {
        self.entries.lock().expect("target cache").clear();
    }
}

/// Spaces requests to rate-limited endpoints (per instance).
#[derive(Default)]
struct Pacer {
    next_free: Mutex<HashMap<i64, tokio::time::Instant>>,
}

impl Pacer {
    async fn wait(&self, endpoint_id: i64, per_second: i32) {
        let gap = Duration::from_secs_f64(1.0 / f64::from(per_second.max(1)));
        let slot = {
            let mut next = self.next_free.lock().expect("pacer");
            let now = tokio::time::Instant::now();
            let slot = next.get(&endpoint_id).copied().unwrap_or(now).max(now);
            next.insert(endpoint_id, slot + gap);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// The dispatcher of one instance.
pub struct Dispatcher {
    pool: PgPool,
    client: DeliveryClient,
    secret_box: SecretBox,
    config: DispatcherConfig,
    wakeup: Wakeup,
    metrics: Metrics,
    targets: Arc<TargetCache>,
    pacer: Pacer,
}

impl Dispatcher {
    /// A dispatcher over `pool` sending with `client`.
    pub fn new(
        pool: PgPool,
        client: DeliveryClient,
        secret_box: SecretBox,
        config: DispatcherConfig,
        wakeup: Wakeup,
        metrics: Metrics,
        targets: Arc<TargetCache>,
    ) -> Self {
        Self {
            pool,
            client,
            secret_box,
            config,
            wakeup,
            metrics,
            targets,
            pacer: Pacer::default(),
        }
    }

    /// The lease of a claim: the attempt timeout, plus time for a rate-limited endpoint's
    /// spacing (at most about a second: the claim takes no more than the rate per second) and
    /// the settle flush.
    fn lease_seconds(&self) -> f64 {
        self.config.attempt_timeout.as_secs_f64() + 5.0
    }

    /// Runs until `shutdown`, then drains.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let (outcomes, settle_rx) = mpsc::unbounded_channel();
        let settler = tokio::spawn(this.clone().settle_loop(settle_rx));
        let listener = tokio::spawn(this.clone().listen(shutdown.clone()));
        let slots = Arc::new(Semaphore::new(this.config.concurrency));
        let mut lanes_checked = Instant::now() - Duration::from_secs(1);
        let mut lanes = false;

        while !shutdown.is_cancelled() {
            // Wait for a free slot, then take as many as are free (up to a batch).
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => permit.expect("never closed"),
                () = shutdown.cancelled() => break,
            };
            let mut permits = vec![first];
            while permits.len() < this.config.claim_batch {
                match slots.clone().try_acquire_owned() {
                    Ok(permit) => permits.push(permit),
                    Err(_) => break,
                }
            }
            let wanted = permits.len();
            if lanes_checked.elapsed() > Duration::from_millis(250) {
                lanes = claim::lanes_in_use(&this.pool).await.unwrap_or(true);
                lanes_checked = Instant::now();
            }
            let claimed = match this.claim(wanted, lanes).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(error = %error, "claiming deliveries failed; retrying");
                    drop(permits);
                    sleep_or_cancel(&shutdown, Duration::from_millis(500)).await;
                    continue;
                }
            };
            let got = claimed.len();
            if got > 0 {
                this.start_attempts(claimed, &mut permits, &outcomes).await;
            }
            drop(permits);
            if got < wanted {
                this.idle(&shutdown).await;
            }
        }

        // Drain: every slot back means every attempt has been handed to the settler.
        let all = u32::try_from(this.config.concurrency).unwrap_or(u32::MAX);
        if tokio::time::timeout(this.config.shutdown_timeout, slots.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(
                "in-flight deliveries did not finish within the shutdown timeout; their leases will expire and they will be attempted again"
            );
        }
        drop(outcomes);
        let _ = settler.await;
        listener.abort();
    }

    async fn claim(&self, wanted: usize, lanes: bool) -> Result<Vec<Claimed>, sqlx::Error> {
        let lease = self.lease_seconds();
        let mut claimed = if lanes {
            claim::claim_lanes(&self.pool, wanted, lease).await?
        } else {
            Vec::new()
        };
        if claimed.len() < wanted {
            claimed.extend(claim::claim(&self.pool, wanted - claimed.len(), lease).await?);
        }
        Ok(claimed)
    }

    /// Sleeps until something may be due: a local or remote wake-up, the next known due time,
    /// or the poll interval.
    async fn idle(&self, shutdown: &CancellationToken) {
        let jitter = rand::thread_rng().gen_range(0.9..1.1);
        let mut wait = POLL_INTERVAL.mul_f64(jitter);
        if let Ok(Some(next)) = claim::next_due(&self.pool).await {
            // Work that is due but was not claimable (a lane whose head is in flight, an
            // endpoint at its cap) becomes claimable when a settle wakes us: no spinning.
            let until = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            wait = wait.min(until.max(IDLE_FLOOR));
        }
        tokio::select! {
            () = self.wakeup.notified() => {}
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => {}
        }
    }

    async fn start_attempts(
        self: &Arc<Self>,
        claimed: Vec<Claimed>,
        permits: &mut Vec<tokio::sync::OwnedSemaphorePermit>,
        outcomes: &mpsc::UnboundedSender<Settlement>,
    ) {
        let targets = self.targets_for(&claimed).await;
        // One body per event, shared by every endpoint it fans out to.
        let mut bodies: HashMap<i64, Bytes> = HashMap::new();
        for delivery in claimed {
            let body = bodies
                .entry(delivery.event_id)
                .or_insert_with(|| {
                    Bytes::from(events::body(
                        delivery.event_id,
                        &delivery.event_type,
                        delivery.occurred_at,
                        delivery.workspace_id,
                        &delivery.data,
                    ))
                })
                .clone();
            let target = targets
                .get(&delivery.endpoint_id)
                .cloned()
                .unwrap_or(Lookup::Unavailable("not loaded".to_owned()));
            let permit = permits.pop().expect("one permit per claimed delivery");
            let this = self.clone();
            let outcomes = outcomes.clone();
            tokio::spawn(async move {
                let settlement = this.attempt(delivery, target, body).await;
                let _ = outcomes.send(settlement);
                drop(permit);
            });
        }
    }

    async fn targets_for(&self, claimed: &[Claimed]) -> HashMap<i64, Lookup> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        {
            let cache = self.targets.entries.lock().expect("target cache");
            for delivery in claimed {
                match cache.get(&delivery.endpoint_id) {
                    Some((target, at)) if at.elapsed() < TARGET_TTL => {
                        let lookup = target.clone().map_or(Lookup::Gone, Lookup::Found);
                        found.insert(delivery.endpoint_id, lookup);
                    }
                    _ => missing.push(delivery.endpoint_id),
                }
            }
        }
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            match webhooks::targets(&self.pool, &self.secret_box, &missing).await {
                Ok(loaded) => {
                    let mut cache = self.targets.entries.lock().expect("target cache");
                    let mut loaded: HashMap<i64, Arc<Target>> =
                        loaded.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
                    for key in missing {
                        let target = loaded.remove(&key);
                        cache.insert(key, (target.clone(), Instant::now()));
                        found.insert(key, target.map_or(Lookup::Gone, Lookup::Found));
                    }
                }
                Err(error) => {
                    tracing::error!(error = %error, "cannot load endpoint settings; deliveries wait");
                    for key in missing {
                        found.insert(key, Lookup::Unavailable(error.to_string()));
                    }
                }
            }
        }
        found
    }

    /// One attempt: sign, POST, classify.
    async fn attempt(&self, delivery: Claimed, target: Lookup, body: Bytes) -> Settlement {
        let started_at = Utc::now();
        let (verdict, reason) = match target {
            Lookup::Found(target) => return self.send(delivery, &target, body, started_at).await,
            Lookup::Gone => (Verdict::Dead, "the endpoint was deleted".to_owned()),
            Lookup::Unavailable(why) => (
                Verdict::Retry(Utc::now() + chrono::Duration::seconds(5)),
                format!("the endpoint's settings could not be read: {why}"),
            ),
        };
        let response = super::client::Response {
            kind: OutcomeKind::Refused,
            status: None,
            retry_after: None,
            body_snippet: None,
            error: Some(reason),
            duration: Duration::ZERO,
        };
        // No request was attempted: logged in the attempt log, not counted in the metrics.
        self.finish(&delivery, verdict, started_at, response)
    }

    /// Signs and POSTs one delivery, and decides what becomes of it.
    async fn send(
        &self,
        delivery: Claimed,
        target: &Target,
        body: Bytes,
        started_at: chrono::DateTime<Utc>,
    ) -> Settlement {
        if let Some(rate) = target.rate_limit_per_second {
            self.pacer.wait(delivery.endpoint_id, rate).await;
        }
        let event_id = ids::encode(Kind::Event, delivery.event_id);
        let timestamp = Utc::now().timestamp();
        let signatures = signing::sign(&target.secrets, &event_id, timestamp, &body);
        let headers = request_headers(target, &delivery, &event_id, timestamp, &signatures);
        let response = self.client.post(&target.url, headers, body).await;
        let class = response.status.map_or("none", status_class);
        self.metrics
            .delivery_attempts_total
            .with_label_values(&[response.kind.metric_label(), class])
            .inc();
        self.metrics
            .delivery_attempt_duration_seconds
            .observe(response.duration.as_secs_f64());

        let verdict = match (response.kind, response.status) {
            (OutcomeKind::Success, _) => Verdict::Succeeded,
            (_, Some(410)) => Verdict::Gone,
            _ => {
                let since_replay = u32::try_from(delivery.attempt - delivery.attempt_base)
                    .unwrap_or(1)
                    .max(1);
                let honoured = response
                    .retry_after
                    .filter(|_| matches!(response.status, Some(429 | 503)));
                match retry::next_delay(&self.config.schedule, since_replay, honoured) {
                    Some(delay) => Verdict::Retry(
                        Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default(),
                    ),
                    None => Verdict::Dead,
                }
            }
        };
        self.finish(&delivery, verdict, started_at, response)
    }

    /// Logs a failed attempt and makes its settlement.
    fn finish(
        &self,
        delivery: &Claimed,
        verdict: Verdict,
        started_at: chrono::DateTime<Utc>,
        response: super::client::Response,
    ) -> Settlement {
        if response.kind != OutcomeKind::Success {
            tracing::info!(
                delivery.id = %ids::encode(Kind::Delivery, delivery.id),
                event.id = %ids::encode(Kind::Event, delivery.event_id),
                webhook.id = %ids::encode(Kind::Webhook, delivery.endpoint_id),
                attempt = delivery.attempt,
                outcome = response.kind.as_str(),
                status = response.status,
                error = response.error.as_deref(),
                next = match verdict {
                    Verdict::Retry(_) => "retry",
                    Verdict::Dead | Verdict::Gone => "dead",
                    Verdict::Succeeded => "done",
                },
                "delivery attempt failed"
            );
        }
        Settlement {
            id: delivery.id,
            lease_id: delivery.lease_id,
            verdict,
            started_at,
            duration_ms: i32::try_from(response.duration.as_millis()).unwrap_or(i32::MAX),
            status_code: response.status.and_then(|s| i16::try_from(s).ok()),
            outcome: response.kind.as_str(),
            error: response.error.map(|e| without_nul(&e)),
            response_body: response.body_snippet.map(|b| without_nul(&b)),
        }
        .with_accepted_at(delivery.accepted_at, &self.metrics)
    }

    /// Writes outcomes in batches until every sender is gone. No timer: whatever arrived
    /// while the previous batch was being written forms the next one, so a lone outcome is
    /// settled at once and a busy instance settles hundreds per statement.
    async fn settle_loop(self: Arc<Self>, mut outcomes: mpsc::UnboundedReceiver<Settlement>) {
        let mut batch = Vec::with_capacity(SETTLE_BATCH);
        while let Some(first) = outcomes.recv().await {
            batch.push(first);
            while batch.len() < SETTLE_BATCH {
                match outcomes.try_recv() {
                    Ok(settlement) => batch.push(settlement),
                    Err(_) => break,
                }
            }
            self.flush(&mut batch).await;
        }
    }

    async fn flush(&self, batch: &mut Vec<Settlement>) {
        if batch.is_empty() {
            return;
        }
        let mut delay = Duration::from_millis(50);
        let settled = loop {
            match queue::settle::settle(&self.pool, batch).await {
                Ok(settled) => break Some(settled),
                Err(error) if delay < Duration::from_secs(10) => {
                    tracing::warn!(error = %error, "settling deliveries failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(error) => {
                    // The leases will expire and the deliveries will be attempted again: at
                    // least once, never lost.
                    tracing::error!(error = %error, count = batch.len(), "settling deliveries failed; they will be retried after their lease");
                    break None;
                }
            }
        };
        if let Some(settled) = settled {
            self.metrics
                .delivery_settles_fenced_total
                .inc_by(settled.fenced);
            for (endpoint, reason) in &settled.disabled {
                self.metrics
                    .webhooks_disabled_total
                    .with_label_values(&[reason.as_str()])
                    .inc();
                tracing::warn!(webhook.id = %ids::encode(Kind::Webhook, *endpoint), reason, "endpoint disabled");
            }
            if !settled.disabled.is_empty() {
                self.targets.invalidate();
            }
            // Settled deliveries free lanes and endpoint caps; retries may be due sooner than
            // the dispatcher planned.
            self.wakeup.wake_dispatcher();
        }
        batch.clear();
    }

    /// Wakes the dispatcher when another instance enqueues (NOTIFY); reconnects on failure.
    async fn listen(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            match PgListener::connect_with(&self.pool).await {
                Ok(mut listener) => {
                    if listener.listen(queue::wakeup::CHANNEL).await.is_ok() {
                        loop {
                            tokio::select! {
                                message = listener.recv() => match message {
                                    Ok(_) => self.wakeup.wake_dispatcher(),
                                    Err(_) => break,
                                },
                                () = shutdown.cancelled() => return,
                            }
                        }
                    }
                }
                Err(error) => tracing::debug!(error = %error, "cannot listen for wake-ups yet"),
            }
            sleep_or_cancel(&shutdown, Duration::from_secs(1)).await;
            if shutdown.is_cancelled() {
                return;
            }
        }
    }
}

impl Settlement {
    /// Records the end-to-end latency of a delivery that reached a final state.
    fn with_accepted_at(self, accepted_at: chrono::DateTime<Utc>, metrics: &Metrics) -> Self {
        let result = match self.verdict {
            Verdict::Succeeded => Some("succeeded"),
            Verdict::Dead | Verdict::Gone => Some("dead"),
            Verdict::Retry(_) => None,
        };
        if let Some(result) = result {
            metrics
                .deliveries_completed_total
                .with_label_values(&[result])
                .inc();
            let latency = (Utc::now() - accepted_at).to_std().unwrap_or_default();
            metrics
                .delivery_latency_seconds
                .with_label_values(&[result])
                .observe(latency.as_secs_f64());
        }
        self
    }
}

fn request_headers(
    target: &Target,
    delivery: &Claimed,
    event_id: &str,
    timestamp: i64,
    signatures: &signing::Signatures,
) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(10 + target.headers.len());
    // Custom headers first, so Deskhook's own can never be overridden by them.
    for (name, value) in &target.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    let fixed = [
        ("content-type", "application/json".to_owned()),
        ("webhook-id", event_id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signatures.standard.clone()),
        ("deskhook-signature", signatures.simple.clone()),
        ("deskhook-event-type", delivery.event_type.clone()),
        ("deskhook-attempt", delivery.attempt.to_string()),
    ];
    for (name, value) in fixed {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    if let Some(name) = &target.legacy_signature_header
        && let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()),
            HeaderValue::from_str(&signatures.legacy_hex),
        )
    {
        headers.insert(name, value);
    }
    headers
}

fn without_nul(text: &str) -> String {
    text.replace('\0', "")
}

async fn sleep_or_cancel(shutdown: &CancellationToken, duration: Duration) {
    tokio::select! {
        () = tokio::time::sleep(duration) => {}
        () = shutdown.cancelled() => {}
    }
}

/// Puts deliveries whose worker died back to waiting, every few seconds, until `shutdown`.
pub async fn run_lease_reaper(
    pool: PgPool,
    wakeup: Wakeup,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    loop {
        sleep_or_cancel(&shutdown, Duration::from_secs(2)).await;
        if shutdown.is_cancelled() {
            return;
        }
        match claim::rescue_expired(&pool).await {
            Ok(0) => {}
            Ok(rescued) => {
                metrics.delivery_leases_rescued_total.inc_by(rescued);
                tracing::warn!(count = rescued, "rescued deliveries whose lease expired");
                wakeup.wake_dispatcher();
            }
            Err(error) => tracing::debug!(error = %error, "lease reaper could not run"),
        }
    }
}
