//! The dispatcher: one loop per instance that, each turn, settles the attempts that finished
//! and claims what is due with the free worker slots, in one statement (`queue::cycle`), then
//! hands the claimed deliveries to concurrent attempts.
//!
//! ```text
//!  wake-up (local commit | NOTIFY | tick: retry due, rate slot, poll) ─┐
//!  outcomes (urgent when the endpoint is at its cap, else ≤ 5 ms) ─────┴► turn: settle + claim
//!                                                                          │ spawn attempts
//!                   gate (≤ max_in_flight at once per endpoint) ◄────────┘ (≤ worker slots)
//!                                  attempt: sign, POST, classify, next from the gate
//! ```
//! `max_in_flight` bounds concurrent requests, not throughput: the claim may lease up to
//! `claim::LEASE_AHEAD` × `max_in_flight` rows of an endpoint this dispatcher alone is sending
//! to; the endpoint's gate sends `max_in_flight` of them and starts the next the moment a
//! response is read, while the settle rides on a later turn.
//! No transaction is held across a POST and no attempt ever waits for anything but its own
//! request: a rate-limited endpoint is paced by the claim, not by sleeping. Wake-ups are
//! coalesced (turns at least [`COALESCE`] apart) so a trickle is claimed in batches, and the
//! next due retry or rate slot is read only by a tick, never after each claim. On shutdown the
//! loop stops claiming, gives back leased-ahead rows that were never sent, settles attempts as
//! they finish for up to `shutdown_timeout`, and exits; whatever is still leased then is
//! rescued by the lease reaper later.
//!
//! It must never build SQL of its own or talk HTTP except through `client.rs`.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use chrono::Utc;
use rand::Rng as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
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
    queue::{self, Claimed, Settlement, Verdict, Wakeup, claim, cycle},
    secret_box::SecretBox,
    signing,
    webhooks::{Cached, Target, TargetCache},
};

/// The fallback poll: a tick (promote due retries, read the next due instant) and a claim even
/// when nothing woke the dispatcher.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Turns started by a wake-up are at least this far apart, so a steady trickle is claimed in
/// batches rather than one row per commit.
const COALESCE: Duration = Duration::from_millis(2);
/// An outcome waits at most this long for a claim to ride on before it is settled alone.
const SETTLE_LINGER: Duration = Duration::from_millis(5);
/// A leased-ahead delivery starts only while this much of its lease would be left after a
/// whole attempt, so it never outlives its lease (and is never sent twice).
const LEASE_MARGIN: Duration = Duration::from_secs(2);
/// Settles per statement at most.
const SETTLE_BATCH: usize = 256;
/// The longest pause after a failed turn.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

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

/// A claimed delivery ready to send, holding its worker slot.
struct Job {
    delivery: Claimed,
    target: Cached,
    body: Bytes,
    permit: OwnedSemaphorePermit,
    /// Started later than this, the attempt could outlive the lease: give it back instead.
    start_by: Instant,
    /// Holds (or, waiting, will hold) a send slot of its endpoint's gate, to pass on when done.
    gated: bool,
}

/// This dispatcher's sends to one endpoint.
#[derive(Default)]
struct Gate {
    sending: usize,
    /// Leased-ahead deliveries, in claim order.
    waiting: VecDeque<Job>,
}

/// Per-endpoint gates: at most `max_in_flight` requests at once to an endpoint from this
/// dispatcher; the claim keeps the sum across dispatchers within the cap (`queue::claim`).
#[derive(Default)]
struct Gates {
    endpoints: Mutex<HashMap<i64, Gate>>,
}

impl Gates {
    /// Returns `job` if it may be sent now; else it waits for a send of its endpoint to end.
    fn admit(&self, mut job: Job) -> Option<Job> {
        let cap = match &job.target {
            Cached::Found(target) => usize::try_from(target.max_in_flight).unwrap_or(1).max(1),
            // Not sent anywhere: ends at once.
            Cached::Gone | Cached::Unavailable(_) => return Some(job),
        };
        let mut endpoints = self.endpoints.lock().expect("gates");
        let gate = endpoints.entry(job.delivery.endpoint_id).or_default();
        job.gated = true;
        if gate.sending < cap {
            gate.sending += 1;
            Some(job)
        } else {
            gate.waiting.push_back(job);
            None
        }
    }

    /// A send to `endpoint` ended: the next waiting delivery takes its place; waiting ones
    /// too late to start are put in `expired`. Also says whether the gate is running low, so
    /// the claim should top it up now.
    fn next(&self, endpoint: i64, was_gated: bool, expired: &mut Vec<Job>) -> (Option<Job>, bool) {
        if !was_gated {
            return (None, true);
        }
        let mut endpoints = self.endpoints.lock().expect("gates");
        let Some(gate) = endpoints.get_mut(&endpoint) else {
            return (None, true);
        };
        let now = Instant::now();
        let mut next = gate.waiting.pop_front();
        while let Some(job) = next.take_if(|job| job.start_by < now) {
            expired.push(job);
            next = gate.waiting.pop_front();
        }
        // Half the lease-ahead left: the turn that tops it up overlaps the sends of the rest.
        let low = gate.waiting.len() * 2 < gate.sending * claim::LEASE_AHEAD as usize;
        if next.is_none() {
            gate.sending = gate.sending.saturating_sub(1);
            if gate.sending == 0 {
                endpoints.remove(&endpoint);
            }
        }
        (next, low)
    }

    /// Takes every waiting delivery out (shutdown).
    fn take_waiting(&self) -> Vec<Job> {
        let mut endpoints = self.endpoints.lock().expect("gates");
        endpoints
            .values_mut()
            .flat_map(|gate| gate.waiting.drain(..))
            .collect()
    }
}

/// When this dispatcher may next send to each rate-limited endpoint. The claim hands out a
/// rate-limited endpoint's rows one slot (`claim::slot_interval`) apart, but the time from
/// claim to request varies by a few milliseconds: a request that would go out sooner than one
/// slot after the previous one waits out the difference (never more than one slot), so a limit
/// of N/s means at most N requests in any second, not just on average.
#[derive(Default)]
struct Pacing {
    next_send: Mutex<HashMap<i64, Instant>>,
}

impl Pacing {
    /// How long a request to `endpoint` (limited to `rate`/s) must wait; reserves its slot.
    fn reserve(&self, endpoint: i64, rate: i32) -> Duration {
        let interval = claim::slot_interval(rate);
        let now = Instant::now();
        let mut next_send = self.next_send.lock().expect("pacing");
        if next_send.len() > 4_096 {
            next_send.retain(|_, at| *at > now);
        }
        let slot = next_send.get(&endpoint).copied().unwrap_or(now).max(now);
        let wait = (slot - now).min(interval);
        next_send.insert(endpoint, now + wait + interval);
        wait
    }
}

/// The dispatcher of one instance.
pub struct Dispatcher {
    /// Marks the rows this dispatcher leases (`delivery.leased_by`), random per process.
    id: i64,
    gates: Gates,
    pacing: Pacing,
    pool: PgPool,
    client: DeliveryClient,
    secret_box: SecretBox,
    config: DispatcherConfig,
    wakeup: Wakeup,
    metrics: Metrics,
    targets: Arc<TargetCache>,
}

/// The loop's memory between turns.
struct LoopState {
    /// Finished attempts not yet settled.
    pending: Vec<Settlement>,
    /// When the oldest of `pending` arrived.
    pending_since: Option<Instant>,
    /// Claimable work may exist (a wake-up, a full batch, a tick).
    hint: bool,
    /// The fair claim's cursor (an endpoint) and the lane claim's (a lane).
    fair_cursor: claim::EndpointCursor,
    lane_cursor: claim::LaneCursor,
    /// On a distributed schema (Citus), the workspaces with claimable work, each taking its
    /// turn; `None` on plain PostgreSQL, where one turn claims across workspaces.
    rotation: Option<VecDeque<WorkspaceTurn>>,
    /// Whether `per_ticket` lanes have ready rows (from the last tick).
    lanes: bool,
    /// When to tick next.
    next_tick: Instant,
    /// When the last turn started.
    last_turn: Instant,
    /// After a failed turn, none before this.
    backoff_until: Option<Instant>,
    backoff: Duration,
}

/// A workspace waiting for its turn on a distributed schema, and where its walks go on.
#[derive(Debug, Clone, Copy)]
struct WorkspaceTurn {
    workspace_id: i64,
    /// Whether to claim its `per_ticket` lanes too.
    lanes: bool,
    /// The endpoint its next fair walk starts after.
    after: i64,
    /// The lane its next lane walk starts after.
    lane_after: (i64, i64),
}

impl WorkspaceTurn {
    fn new(workspace_id: i64, lanes: bool) -> Self {
        Self {
            workspace_id,
            lanes,
            after: i64::MIN,
            lane_after: (i64::MIN, i64::MIN),
        }
    }
}

impl LoopState {
    fn add(&mut self, settlement: Settlement) {
        if self.pending.is_empty() {
            self.pending_since = Some(Instant::now());
        }
        self.pending.push(settlement);
    }

    fn settle_due(&self, now: Instant, stopping: bool) -> bool {
        !self.pending.is_empty()
            && (stopping
                || self.pending.len() >= SETTLE_BATCH
                || self.pending.iter().any(|s| s.urgent)
                || self
                    .pending_since
                    .is_some_and(|since| now >= since + SETTLE_LINGER))
    }

    fn wake_at(&mut self, at: Instant) {
        self.next_tick = self.next_tick.min(at);
    }
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
            id: rand::thread_rng().gen_range(1..i64::MAX),
            gates: Gates::default(),
            pacing: Pacing::default(),
            pool,
            client,
            secret_box,
            config,
            wakeup,
            metrics,
            targets,
        }
    }

    /// The lease of a claim: time for a leased-ahead row to wait about one attempt at its
    /// endpoint's gate (later it is given back: [`LEASE_MARGIN`]), its own attempt, and the
    /// settle riding on a turn.
    fn lease_seconds(&self) -> f64 {
        self.config.attempt_timeout.as_secs_f64() * 2.0 + 5.0
    }

    /// Runs until `shutdown`, then drains.
    pub async fn run(self, shutdown: CancellationToken) {
        let distributed = crate::database::citus::queue_is_distributed(&self.pool).await;
        if distributed {
            tracing::info!("the queue is distributed (Citus): claiming one workspace at a time");
        }
        let this = Arc::new(self);
        let (outcomes_tx, mut outcomes) = mpsc::unbounded_channel();
        let listener = tokio::spawn(this.clone().listen(shutdown.clone()));
        let slots = Arc::new(Semaphore::new(this.config.concurrency));
        let now = Instant::now();
        let mut state = LoopState {
            pending: Vec::new(),
            pending_since: None,
            hint: true,
            fair_cursor: claim::FIRST_ENDPOINT,
            lane_cursor: claim::FIRST_LANE,
            rotation: distributed.then(VecDeque::new),
            lanes: false,
            next_tick: now,
            last_turn: now.checked_sub(COALESCE).unwrap_or(now),
            backoff_until: None,
            backoff: Duration::from_millis(50),
        };
        let mut drain_deadline: Option<Instant> = None;

        loop {
            let stopping = drain_deadline.is_some();
            while let Ok(settlement) = outcomes.try_recv() {
                state.add(settlement);
            }
            let now = Instant::now();
            let backing_off = state.backoff_until.is_some_and(|until| now < until);
            if !stopping && !backing_off && now >= state.next_tick {
                this.tick(&mut state).await;
            }
            let free = slots.available_permits().min(this.config.claim_batch);
            let claim_now =
                !stopping && state.hint && free > 0 && now >= state.last_turn + COALESCE;
            if !backing_off && (claim_now || state.settle_due(now, stopping)) {
                let wanted = if stopping { 0 } else { free };
                if state.rotation.is_some() {
                    this.turn_in_workspace(&mut state, &slots, wanted, stopping, &outcomes_tx)
                        .await;
                } else {
                    this.turn(&mut state, &slots, wanted, &outcomes_tx).await;
                }
                continue;
            }
            let idle = slots.available_permits() == this.config.concurrency;
            if let Some(deadline) = drain_deadline
                && ((idle && state.pending.is_empty()) || now >= deadline)
            {
                break;
            }

            let mut until = if stopping {
                drain_deadline.unwrap_or(now)
            } else {
                state.next_tick
            };
            if let Some(since) = state.pending_since.filter(|_| !state.pending.is_empty()) {
                until = until.min(since + SETTLE_LINGER);
            }
            if claim_now || (state.hint && free > 0 && !stopping) {
                until = until.min(state.last_turn + COALESCE);
            }
            if let Some(backoff) = state.backoff_until {
                until = until.max(backoff);
            }
            tokio::select! {
                () = this.wakeup.notified(), if !stopping => state.hint = true,
                Some(settlement) = outcomes.recv() => state.add(settlement),
                () = tokio::time::sleep_until(until.into()) => {}
                () = shutdown.cancelled(), if !stopping => {
                    drain_deadline = Some(Instant::now() + this.config.shutdown_timeout);
                    this.release_waiting().await;
                }
            }
        }

        if !state.pending.is_empty() {
            let _ = if state.rotation.is_some() {
                cycle::settle_by_workspace(&this.pool, &state.pending).await
            } else {
                cycle::settle(&this.pool, &state.pending).await
            };
        }
        if slots.available_permits() < this.config.concurrency {
            tracing::warn!(
                "in-flight deliveries did not finish within the shutdown timeout; their leases will expire and they will be attempted again"
            );
        }
        listener.abort();
    }

    /// Promotes due retries and learns when the next one (or a rate slot) is due.
    async fn tick(&self, state: &mut LoopState) {
        let jitter = rand::thread_rng().gen_range(0.9..1.1);
        state.next_tick = Instant::now() + POLL_INTERVAL.mul_f64(jitter);
        // The poll is also the fallback for a missed wake-up.
        state.hint = true;
        if state.rotation.is_some() {
            self.discover(state).await;
            return;
        }
        match claim::tick(&self.pool).await {
            Ok(tick) => {
                state.lanes = tick.lanes;
                if let Some(at) = tick.next_at {
                    state.wake_at(instant_of(at));
                }
            }
            Err(error) => tracing::debug!(error = %error, "queue tick failed; retrying"),
        }
    }

    /// The distributed tick: promotes due retries workspace by workspace and adds the
    /// workspaces with claimable work to the rotation.
    async fn discover(&self, state: &mut LoopState) {
        match claim::discover(&self.pool).await {
            Ok((tick, ready)) => {
                let rotation = state.rotation.get_or_insert_with(VecDeque::new);
                let mut waiting: HashMap<i64, usize> = rotation
                    .iter()
                    .enumerate()
                    .map(|(at, turn)| (turn.workspace_id, at))
                    .collect();
                for found in ready {
                    match waiting.get(&found.workspace_id) {
                        Some(&at) => rotation[at].lanes |= found.lanes,
                        None => {
                            waiting.insert(found.workspace_id, rotation.len());
                            rotation.push_back(WorkspaceTurn::new(found.workspace_id, found.lanes));
                        }
                    }
                }
                if let Some(at) = tick.next_at {
                    state.wake_at(instant_of(at));
                }
            }
            Err(error) => tracing::debug!(error = %error, "queue discovery failed; retrying"),
        }
    }

    /// One turn on a distributed schema: one workspace's settlements and claim, on its shard.
    /// The workspace whose settlements are due goes first, else the next in the rotation;
    /// a workspace whose claim was full (or whose walk stopped midway) goes to the back, so
    /// workspaces on every shard take turns.
    async fn turn_in_workspace(
        self: &Arc<Self>,
        state: &mut LoopState,
        slots: &Arc<Semaphore>,
        wanted: usize,
        stopping: bool,
        outcomes: &mpsc::UnboundedSender<Settlement>,
    ) {
        state.last_turn = Instant::now();
        let settling = state.settle_due(Instant::now(), stopping);
        let from_rotation =
            |state: &mut LoopState| state.rotation.as_mut().and_then(VecDeque::pop_front);
        let mut next = if settling {
            let workspace_id = state.pending[0].workspace_id;
            let rotation = state.rotation.get_or_insert_with(VecDeque::new);
            let waiting = rotation.iter().position(|t| t.workspace_id == workspace_id);
            Some(
                waiting
                    .and_then(|at| rotation.remove(at))
                    .unwrap_or_else(|| WorkspaceTurn::new(workspace_id, true)),
            )
        } else {
            from_rotation(state)
        };
        if next.is_none() && wanted > 0 {
            self.discover(state).await;
            next = from_rotation(state);
        }
        let Some(mut next) = next else {
            state.hint = false;
            return;
        };
        let workspace_id = next.workspace_id;
        let mut permits = acquire(slots, wanted);
        let wanted = permits.len();
        let lease = self.lease_seconds();
        let (mut batch, others): (Vec<Settlement>, Vec<Settlement>) =
            std::mem::take(&mut state.pending)
                .into_iter()
                .partition(|s| s.workspace_id == workspace_id);
        state.pending = others;
        if batch.len() > SETTLE_BATCH {
            state.pending.extend(batch.split_off(SETTLE_BATCH));
        }

        let mut claimed = Vec::new();
        let mut more_lanes = false;
        if next.lanes && wanted > 0 {
            let lanes = claim::claim_lanes_in(
                &self.pool,
                workspace_id,
                wanted,
                lease,
                next.lane_after,
                self.id,
            )
            .await;
            match lanes {
                Ok((rows, lane_after)) => {
                    more_lanes = lane_after.is_some() || rows.len() >= wanted;
                    next.lane_after = lane_after.unwrap_or((i64::MIN, i64::MIN));
                    claimed = rows;
                }
                Err(error) => tracing::warn!(error = %error, "claiming lane heads failed"),
            }
        }
        let fair_wanted = wanted - claimed.len();
        let result = cycle::turn_in(
            &self.pool,
            workspace_id,
            &batch,
            fair_wanted,
            lease,
            next.after,
            self.id,
        )
        .await;
        let rotation = state.rotation.get_or_insert_with(VecDeque::new);
        let (turn, after) = match result {
            Ok(done) => done,
            Err(error) => {
                rotation.push_front(next);
                state.pending.extend(batch);
                self.turn_failed(&error, state, lease);
                if !claimed.is_empty() {
                    self.start_attempts(claimed, &mut permits, outcomes, state)
                        .await;
                }
                return;
            }
        };
        let got = turn.claimed.len();
        next.after = after.unwrap_or(i64::MIN);
        if (got >= fair_wanted && fair_wanted > 0) || after.is_some() || more_lanes {
            rotation.push_back(next);
        }
        state.hint = !rotation.is_empty();
        state.backoff = Duration::from_millis(50);
        state.backoff_until = None;
        state.pending_since = (!state.pending.is_empty()).then(Instant::now);
        self.record_settled(&turn.settled, &batch, state);
        claimed.extend(turn.claimed);
        if !claimed.is_empty() {
            self.start_attempts(claimed, &mut permits, outcomes, state)
                .await;
        }
    }

    /// After a failed turn: back off, and give up outcomes older than a lease.
    fn turn_failed(&self, error: &sqlx::Error, state: &mut LoopState, lease: f64) {
        tracing::warn!(error = %error, "a dispatcher turn failed; retrying");
        state.backoff_until = Some(Instant::now() + state.backoff);
        state.backoff = (state.backoff * 2).min(MAX_BACKOFF);
        // Outcomes older than a lease are fenced by now: their deliveries are rescued
        // and attempted again (at least once, never lost).
        let too_old = Duration::from_secs_f64(lease);
        if state
            .pending_since
            .is_some_and(|since| since.elapsed() > too_old)
        {
            tracing::error!(
                count = state.pending.len(),
                "settling deliveries failed for longer than a lease; they will be attempted again"
            );
            state.pending.clear();
        }
    }

    /// One turn: settle what finished, claim with the free slots, start the attempts.
    async fn turn(
        self: &Arc<Self>,
        state: &mut LoopState,
        slots: &Arc<Semaphore>,
        wanted: usize,
        outcomes: &mpsc::UnboundedSender<Settlement>,
    ) {
        state.last_turn = Instant::now();
        let mut permits = acquire(slots, wanted);
        let wanted = permits.len();
        let batch_len = state.pending.len().min(SETTLE_BATCH);
        let lease = self.lease_seconds();

        let mut claimed = Vec::new();
        if state.lanes && wanted > 0 {
            match claim::claim_lanes(&self.pool, wanted, lease, state.lane_cursor, self.id).await {
                Ok(rows) => {
                    state.lane_cursor = if rows.len() < wanted {
                        claim::FIRST_LANE
                    } else {
                        rows.iter()
                            .filter_map(|c| {
                                c.order_key.map(|key| (c.workspace_id, key, c.endpoint_id))
                            })
                            .max()
                            .unwrap_or(claim::FIRST_LANE)
                    };
                    claimed = rows;
                }
                Err(error) => tracing::warn!(error = %error, "claiming lane heads failed"),
            }
        }
        let fair_wanted = wanted - claimed.len();
        let result = cycle::turn(
            &self.pool,
            &state.pending[..batch_len],
            fair_wanted,
            lease,
            state.fair_cursor,
            self.id,
        )
        .await;
        let turn = match result {
            Ok(turn) => turn,
            Err(error) => {
                self.turn_failed(&error, state, lease);
                if !claimed.is_empty() {
                    self.start_attempts(claimed, &mut permits, outcomes, state)
                        .await;
                }
                return;
            }
        };
        state.backoff = Duration::from_millis(50);
        state.backoff_until = None;

        let settled_batch: Vec<Settlement> = state.pending.drain(..batch_len).collect();
        state.pending_since = if state.pending.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
        self.record_settled(&turn.settled, &settled_batch, state);

        let got = turn.claimed.len();
        // A full batch: more may be waiting. A partial one from mid-walk: the endpoints
        // before the cursor have not been visited yet.
        state.hint = got >= fair_wanted && fair_wanted > 0
            || (got < fair_wanted && state.fair_cursor != claim::FIRST_ENDPOINT);
        state.fair_cursor = if got < fair_wanted {
            claim::FIRST_ENDPOINT
        } else {
            turn.claimed
                .iter()
                .map(|c| (c.workspace_id, c.endpoint_id))
                .max()
                .unwrap_or(claim::FIRST_ENDPOINT)
        };
        claimed.extend(turn.claimed);
        if !claimed.is_empty() {
            self.start_attempts(claimed, &mut permits, outcomes, state)
                .await;
        }
        drop(permits);
    }

    /// Metrics, logs and the next tick after a settle.
    fn record_settled(
        &self,
        settled: &queue::Settled,
        batch: &[Settlement],
        state: &mut LoopState,
    ) {
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
        // This instance's own retries: tick when the first comes due, without asking.
        if let Some(at) = batch
            .iter()
            .filter_map(|s| match s.verdict {
                Verdict::Retry(at) => Some(at),
                _ => None,
            })
            .min()
        {
            state.wake_at(instant_of(at));
        }
    }

    async fn start_attempts(
        self: &Arc<Self>,
        claimed: Vec<Claimed>,
        permits: &mut Vec<OwnedSemaphorePermit>,
        outcomes: &mpsc::UnboundedSender<Settlement>,
        state: &mut LoopState,
    ) {
        let targets = self.targets_for(&claimed).await;
        // A rate-limited endpoint's next slot: tick then, so its backlog goes on at its rate.
        for lookup in targets.values() {
            if let Cached::Found(target) = lookup
                && let Some(rate) = target.rate_limit_per_second
            {
                state.wake_at(Instant::now() + claim::slot_interval(rate));
            }
        }
        let claimed_at = state.last_turn;
        let start_by = claimed_at + Duration::from_secs_f64(self.lease_seconds())
            - self.config.attempt_timeout
            - LEASE_MARGIN;
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
                .unwrap_or(Cached::Unavailable("not loaded".to_owned()));
            let permit = permits.pop().expect("one permit per claimed delivery");
            let job = Job {
                delivery,
                target,
                body,
                permit,
                start_by,
                gated: false,
            };
            if let Some(job) = self.gates.admit(job) {
                self.spawn_sends(job, outcomes.clone());
            }
        }
    }

    /// Sends `job`, then the deliveries waiting at its endpoint's gate one after another, each
    /// the moment the previous response is read.
    fn spawn_sends(self: &Arc<Self>, job: Job, outcomes: mpsc::UnboundedSender<Settlement>) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut job = job;
            loop {
                let Job {
                    delivery,
                    target,
                    body,
                    permit,
                    gated,
                    ..
                } = job;
                let endpoint = delivery.endpoint_id;
                let capped = delivery.capped;
                let mut settlement = this.attempt(delivery, target, body).await;
                let mut expired = Vec::new();
                let (mut next, low) = this.gates.next(endpoint, gated, &mut expired);
                // Settle without lingering when the endpoint's work is held back by its cap and
                // the gate is running dry: the turn that settles this claims the next round.
                settlement.urgent = capped && low;
                let _ = outcomes.send(settlement);
                drop(permit);
                // A waiting delivery goes with its endpoint's settings of now: if it was
                // disabled since the claim, the delivery is given back (the claim parks it).
                while let Some(mut waiting) = next.take() {
                    let lookup = this
                        .targets_for(std::slice::from_ref(&waiting.delivery))
                        .await
                        .remove(&endpoint)
                        .unwrap_or(Cached::Unavailable("not loaded".to_owned()));
                    if matches!(&lookup, Cached::Found(target) if !target.enabled) {
                        expired.push(waiting);
                        next = this.gates.next(endpoint, true, &mut expired).0;
                    } else {
                        waiting.target = lookup;
                        next = Some(waiting);
                        break;
                    }
                }
                if !expired.is_empty() {
                    this.release(expired).await;
                }
                match next {
                    Some(waiting) => job = waiting,
                    None => break,
                }
            }
        });
    }

    /// Gives the leased-ahead deliveries that were never sent back to the queue (shutdown).
    async fn release_waiting(&self) {
        self.release(self.gates.take_waiting()).await;
    }

    /// Gives claimed deliveries that were never sent back to the queue.
    async fn release(&self, waiting: Vec<Job>) {
        if waiting.is_empty() {
            return;
        }
        let rows: Vec<(i64, i64, i64)> = waiting
            .iter()
            .map(|job| {
                let delivery = &job.delivery;
                (delivery.workspace_id, delivery.id, delivery.lease_id)
            })
            .collect();
        if let Err(error) = claim::release(&self.pool, &rows).await {
            tracing::warn!(error = %error, count = rows.len(), "giving back unsent deliveries failed; their leases will expire and they will be attempted then");
        }
    }

    async fn targets_for(&self, claimed: &[Claimed]) -> HashMap<i64, Cached> {
        let keys: Vec<(i64, i64)> = claimed
            .iter()
            .map(|delivery| (delivery.workspace_id, delivery.endpoint_id))
            .collect();
        self.targets.load(&self.pool, &self.secret_box, &keys).await
    }

    /// One attempt: sign, POST, classify.
    async fn attempt(&self, delivery: Claimed, target: Cached, body: Bytes) -> Settlement {
        let (verdict, reason) = match target {
            Cached::Found(target) => {
                if let Some(rate) = target.rate_limit_per_second {
                    let wait = self.pacing.reserve(delivery.endpoint_id, rate);
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
                return self.send(delivery, &target, body, Utc::now()).await;
            }
            Cached::Gone => (Verdict::Dead, "the endpoint was deleted".to_owned()),
            // Counted against the schedule like a failed request: a secret no key opens ends
            // dead and visible, never retried every few seconds forever.
            Cached::Unavailable(why) => (
                self.next_verdict(&delivery, None),
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
        self.finish(&delivery, verdict, Utc::now(), response)
    }

    /// Signs and POSTs one delivery, and decides what becomes of it.
    async fn send(
        &self,
        delivery: Claimed,
        target: &Target,
        body: Bytes,
        started_at: chrono::DateTime<Utc>,
    ) -> Settlement {
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
            _ => self.next_verdict(
                &delivery,
                response
                    .retry_after
                    .filter(|_| matches!(response.status, Some(429 | 503))),
            ),
        };
        self.finish(&delivery, verdict, started_at, response)
    }

    /// Retry by the schedule (restarted by the last replay), or dead when it is used up or the
    /// delivery reached [`queue::deliveries::MAX_ATTEMPTS`].
    fn next_verdict(&self, delivery: &Claimed, retry_after: Option<Duration>) -> Verdict {
        if delivery.attempt >= queue::deliveries::MAX_ATTEMPTS {
            return Verdict::Dead;
        }
        let since_replay = u32::try_from(delivery.attempt - delivery.attempt_base)
            .unwrap_or(1)
            .max(1);
        match retry::next_delay(&self.config.schedule, since_replay, retry_after) {
            Some(delay) => {
                Verdict::Retry(Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default())
            }
            None => Verdict::Dead,
        }
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
            workspace_id: delivery.workspace_id,
            endpoint_id: delivery.endpoint_id,
            attempt: delivery.attempt,
            urgent: delivery.capped,
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

/// The monotonic instant of a wall-clock time (now, if it has passed).
/// Up to `wanted` worker slots, as many as are free.
fn acquire(slots: &Arc<Semaphore>, wanted: usize) -> Vec<OwnedSemaphorePermit> {
    let mut permits = Vec::with_capacity(wanted);
    while permits.len() < wanted {
        match slots.clone().try_acquire_owned() {
            Ok(permit) => permits.push(permit),
            Err(_) => break,
        }
    }
    permits
}

fn instant_of(at: chrono::DateTime<Utc>) -> Instant {
    Instant::now() + (at - Utc::now()).to_std().unwrap_or(Duration::ZERO)
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
    let distributed = crate::database::citus::queue_is_distributed(&pool).await;
    loop {
        sleep_or_cancel(&shutdown, Duration::from_secs(2)).await;
        if shutdown.is_cancelled() {
            return;
        }
        let rescued = if distributed {
            claim::rescue_expired_by_workspace(&pool).await
        } else {
            claim::rescue_expired(&pool).await
        };
        match rescued {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_spaces_requests_one_interval_apart_and_never_waits_longer() {
        let pacing = Pacing::default();
        assert_eq!(
            pacing.reserve(1, 1),
            Duration::ZERO,
            "the first goes at once"
        );
        let second = pacing.reserve(1, 1);
        assert!(
            second > Duration::from_millis(1000) && second <= claim::slot_interval(1),
            "{second:?}"
        );
        // Even far ahead, one slot is the most a request waits.
        assert!(pacing.reserve(1, 1) <= claim::slot_interval(1));
        assert_eq!(
            pacing.reserve(2, 1),
            Duration::ZERO,
            "endpoints are paced apart"
        );
    }
}
