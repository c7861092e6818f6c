//! The scenarios of performance.md, each a bounded run through the public HTTP API against a
//! `deskhook serve` child process, and the report each produces.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt as _, stream};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use serde_json::{Value, json};

use super::{
    BenchOptions, SECRET_KEY, Service, Target,
    claims::{self, ClaimTime},
    measure::{self, DbCounters},
    recorder::Recorder,
    sink::{Behaviour, Sink},
};

/// Every scenario, in the order they run.
pub const SCENARIOS: &[&str] = &[
    "steady",
    "batched",
    "fanout",
    "latency",
    "flaky",
    "noisy",
    "backlog",
    "sla",
    "tickets",
    "many-endpoints",
    "defaults",
    "ratelimited",
    "instances",
];

/// The scenarios `--citus` runs on the cluster too: the throughput ones whose tables are all
/// distributed by workspace.
pub const CITUS_SCENARIOS: &[&str] = &["steady", "fanout", "many-endpoints"];

/// A retry schedule for scenarios where nothing should fail.
const DEFAULT_SCHEDULE: &str = "5s,30s,2m";
/// The schedule the `flaky` scenario uses (performance.md).
const FLAKY_SCHEDULE: &str = "100ms,200ms,500ms,1s";

/// The type of the events the loads post.
const LOAD_EVENT_TYPE: &str = "ticket.updated";
/// The type of `ratelimited`'s backlog, which only the rate-limited endpoint subscribes to:
/// one of the catalogue's (the API refuses any other), never posted by the loads.
const BACKLOG_EVENT_TYPE: &str = "ticket.closed";

/// What one scenario run measured, before it becomes a report.
#[derive(Debug, Default)]
struct Measured {
    deliveries: u64,
    events: u64,
    /// From the first request sent to the last delivery received.
    elapsed: Duration,
    /// From the first request sent to the last acceptance (the last 202).
    accepted_for: Duration,
    /// Acceptance (the 202 reaching the producer) to first receipt.
    latencies: Vec<Duration>,
    lost: u64,
    duplicates: u64,
    /// Events the sinks received that this load did not send.
    unexpected: u64,
    extra: serde_json::Map<String, Value>,
    note: Option<String>,
}

/// An event payload of about 1 KB.
fn event_body(event_type: &str, id: &str, padding: &str) -> Value {
    json!({
        "id": id,
        "type": event_type,
        "data": { "ticket": { "id": format!("tkt_{id}"), "subject": "Printer on fire",
                              "status": "open", "notes": padding } }
    })
}

fn padding(rng: &mut StdRng) -> String {
    (0..860)
        .map(|_| char::from(rng.gen_range(b'a'..=b'z')))
        .collect()
}

/// The in-flight cap of the throughput scenarios' endpoints: the instance's worker
/// concurrency, so one fast receiver may use every worker slot. The cap is there for fairness
/// between endpoints; at 64, `batched` drained one endpoint at ~4,600 deliveries/s instead of
/// ~5,800/s (two runs each), its claims bounded by the cap over the claim-POST-settle cycle.
const THROUGHPUT_IN_FLIGHT: i32 = 256;

/// A count by `--events` and `--quick`: `full` by default, `fast` with `--quick`.
fn sized(options: &BenchOptions, full: u64, fast: u64) -> u64 {
    options
        .events
        .unwrap_or(if options.quick { fast } else { full })
}

/// Where a scenario runs and what its report is compared with.
pub(super) struct Context<'a> {
    pub options: &'a BenchOptions,
    /// The server or cluster that holds the scenario's database.
    pub target: Target<'a>,
    /// The scenario's database (recreated by every run).
    pub database: &'a str,
    /// The SQL ceiling measured at the start.
    pub ceiling: f64,
}

/// Runs one scenario and returns its report.
pub(super) async fn run(scenario: &str, context: &Context<'_>) -> anyhow::Result<Value> {
    if scenario == "instances" {
        return instances(context).await;
    }
    Box::pin(run_once(scenario, context, 0)).await
}

/// One run of `scenario` on a fresh database, with `extra_workers` worker-only instances
/// beside the first.
async fn run_once(
    scenario: &str,
    context: &Context<'_>,
    extra_workers: usize,
) -> anyhow::Result<Value> {
    let options = context.options;
    let quick = options.quick;
    let events = |full: u64, fast: u64| sized(options, full, fast);
    let database_url = context.target.fresh_database(context.database).await?;
    let prepared = Service::prepare(&database_url).await?;
    let mut rng = StdRng::seed_from_u64(options.seed);
    let schedule = if scenario == "flaky" {
        FLAKY_SCHEDULE
    } else {
        DEFAULT_SCHEDULE
    };

    // Backlogs are seeded before the service starts, straight into the database.
    let mut backlog_sink = None;
    let mut seeded = serde_json::Map::new();
    if scenario == "backlog" {
        let sink = Sink::start(Behaviour::default()).await?;
        let endpoint =
            create_endpoint_direct(&prepared.0, prepared.1, &sink.url, THROUGHPUT_IN_FLIGHT)
                .await?;
        seed_backlog(&prepared.0, prepared.1, endpoint, events(1_000_000, 20_000)).await?;
        backlog_sink = Some(sink);
    }
    if scenario == "sla" {
        seed_open_tickets(&prepared.0, prepared.1, events(1_000_000, 20_000)).await?;
    }
    if scenario == "many-endpoints" {
        let (idle, disabled) = if quick {
            (5_000, 1_000)
        } else {
            (100_000, 10_000)
        };
        seed_idle_endpoints(&prepared.0, prepared.1, idle, disabled).await?;
        seeded.insert("seeded_endpoints".into(), json!(idle));
        seeded.insert("seeded_disabled_endpoints".into(), json!(disabled));
    }

    let mut service = Service::start(&database_url, prepared, schedule).await?;
    if let Err(error) = service.add_workers(extra_workers).await {
        service.stop().await;
        return Err(error);
    }
    let before = measure::db_counters(&service.pool).await;
    let claims_before = claims::read(&service.pool).await;
    let service_cpu = service_cpu_seconds(&service);
    let postgres_cpu = context.target.postgres_cpu_seconds();

    let measured = match scenario {
        "steady" | "many-endpoints" => {
            single_event_load(&service, &mut rng, &Load::steady(options)).await
        }
        "batched" => batched_load(&service, &mut rng, 8, 100, events(100_000, 10_000)).await,
        "fanout" => single_event_load(&service, &mut rng, &Load::fanout(options)).await,
        "latency" => paced_load(&service, &mut rng, 500.0, events(10_000, 1_500)).await,
        "flaky" => {
            let load = Load {
                behaviour: Behaviour {
                    latency: Duration::ZERO,
                    failure_rate: 0.10,
                },
                ..Load::steady(options)
            };
            single_event_load(&service, &mut rng, &load).await
        }
        "noisy" => {
            noisy(
                &service,
                &mut rng,
                if quick {
                    Duration::from_secs(6)
                } else {
                    Duration::from_secs(60)
                },
            )
            .await
        }
        "backlog" => {
            drain(
                &service,
                backlog_sink.as_ref().expect("seeded"),
                events(1_000_000, 20_000),
            )
            .await
        }
        "tickets" => tickets(&service, events(20_000, 1_000), 16).await,
        "sla" => {
            let (due, window) = if quick {
                (500, Duration::from_secs(10))
            } else {
                (10_000, Duration::from_secs(60))
            };
            sla(&service, due, window).await
        }
        "defaults" => defaults(&service, &mut rng, options).await,
        "ratelimited" => ratelimited(&service, &mut rng, options).await,
        other => Err(anyhow::anyhow!("no runner for scenario {other}")),
    };
    let mut measured = match measured {
        Ok(measured) => measured,
        Err(error) => {
            // Never leave instances behind: the bench stops at the first failed scenario.
            service.stop().await;
            return Err(error);
        }
    };
    measured.extra.extend(seeded);
    if extra_workers > 0 {
        measured.extra.insert(
            "attempts_by_instance".into(),
            json!(service.attempts_by_instance().await),
        );
    }

    let costs = Costs {
        before,
        after: measure::db_counters(&service.pool).await,
        claims_before,
        claims_after: claims::read(&service.pool).await,
        service_cpu: service_cpu_seconds(&service) - service_cpu,
        postgres_cpu: context
            .target
            .postgres_cpu_seconds()
            .zip(postgres_cpu)
            .map(|(a, b)| a - b),
        peak_rss_mb: service.pids().into_iter().map(measure::peak_rss_mb).sum(),
    };
    service.stop().await;
    Ok(report(scenario, &measured, &costs, context.ceiling))
}

/// CPU seconds of every instance of the service.
fn service_cpu_seconds(service: &Service) -> f64 {
    service.pids().into_iter().map(measure::cpu_seconds).sum()
}

/// What a run cost the service (every instance) and PostgreSQL.
struct Costs {
    before: DbCounters,
    after: DbCounters,
    claims_before: Option<ClaimTime>,
    claims_after: Option<ClaimTime>,
    service_cpu: f64,
    postgres_cpu: Option<f64>,
    /// The sum of the instances' peaks.
    peak_rss_mb: f64,
}

/// The fields every report has; a scenario's own figures come after them (see
/// [`extra_figures`]).
const REPORT_FIELDS: &[&str] = &[
    "scenario",
    "deliveries_per_s",
    "events_per_s",
    "latency_ms",
    "lost",
    "duplicates",
    "deliveries",
    "events",
    "seconds",
    "commits_per_delivery",
    "statements_per_delivery",
    "claim_mean_ms",
    "wal_bytes_per_delivery",
    "cpu_ms_per_delivery",
    "service_cpu_ms_per_delivery",
    "postgres_cpu_ms_per_delivery",
    "peak_rss_mb",
    "sql_ceiling_per_s",
    "ratio_to_ceiling",
    "note",
    "runs",
];

fn report(scenario: &str, m: &Measured, costs: &Costs, ceiling: f64) -> Value {
    let Costs {
        before,
        after,
        claims_before,
        claims_after,
        service_cpu,
        postgres_cpu,
        peak_rss_mb: rss,
    } = *costs;
    let seconds = m.elapsed.as_secs_f64().max(1e-9);
    let deliveries = m.deliveries.max(1) as f64;
    let mut latencies = m.latencies.clone();
    latencies.sort();
    let ms = |p: f64| measure::percentile(&latencies, p).as_secs_f64() * 1000.0;
    let deliveries_per_s = m.deliveries as f64 / seconds;
    let mut value = json!({
        "scenario": scenario,
        "deliveries_per_s": deliveries_per_s,
        "events_per_s": m.events as f64 / seconds,
        "latency_ms": { "p50": ms(50.0), "p95": ms(95.0), "p99": ms(99.0) },
        "lost": m.lost,
        "duplicates": m.duplicates,
        "deliveries": m.deliveries,
        "events": m.events,
        "seconds": seconds,
        "commits_per_delivery": (after.commits - before.commits) as f64 / deliveries,
        "statements_per_delivery": after.statements.zip(before.statements)
            .map(|(a, b)| (a - b) as f64 / deliveries),
        // The dispatcher's claim (fused with its settle): what a claim costs at this scale.
        "claim_mean_ms": claims::mean_ms(claims_before, claims_after),
        "wal_bytes_per_delivery": (after.wal_bytes - before.wal_bytes) as f64 / deliveries,
        "cpu_ms_per_delivery": (service_cpu + postgres_cpu.unwrap_or(0.0)) * 1000.0 / deliveries,
        "service_cpu_ms_per_delivery": service_cpu * 1000.0 / deliveries,
        "postgres_cpu_ms_per_delivery": postgres_cpu.map(|c| c * 1000.0 / deliveries),
        "peak_rss_mb": rss,
        "sql_ceiling_per_s": ceiling,
        "ratio_to_ceiling": deliveries_per_s / ceiling.max(1e-9),
    });
    if let Some(object) = value.as_object_mut() {
        object.extend(m.extra.clone());
        if let Some(note) = &m.note {
            object.insert("note".into(), Value::String(note.clone()));
        }
    }
    value
}

/// A report's own numeric figures beyond [`REPORT_FIELDS`], in the report's order, for the
/// table.
pub(super) fn extra_figures(report: &Value) -> Vec<(&str, f64)> {
    report
        .as_object()
        .map(|fields| {
            fields
                .iter()
                .filter(|(name, _)| !REPORT_FIELDS.contains(&name.as_str()))
                .filter_map(|(name, value)| Some((name.as_str(), value.as_f64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// The median of each numeric field over several runs of one scenario (every top-level
/// number, so a scenario's own figures get medians too, and the latency percentiles).
pub(super) fn median_report(runs: Vec<Value>) -> Value {
    if runs.len() <= 1 {
        return runs.into_iter().next().unwrap_or(Value::Null);
    }
    let mut base = runs[0].clone();
    let numeric: Vec<String> = base
        .as_object()
        .map(|fields| {
            fields
                .iter()
                .filter(|(_, value)| value.is_number())
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default();
    for field in numeric {
        let mut values: Vec<f64> = runs.iter().filter_map(|r| r[&field].as_f64()).collect();
        if !values.is_empty() {
            base[&field] = json!(measure::median(&mut values));
        }
    }
    for p in ["p50", "p95", "p99"] {
        let mut values: Vec<f64> = runs
            .iter()
            .filter_map(|r| r["latency_ms"][p].as_f64())
            .collect();
        base["latency_ms"][p] = json!(measure::median(&mut values));
    }
    base["runs"] = json!(runs.len());
    base
}

/// Accepted events: event id → when the 202 arrived.
type Accepted = Arc<Mutex<HashMap<String, Instant>>>;

/// A single-event load: `producers` concurrent producers posting one event at a time, each
/// event to all of `endpoints` fresh endpoints created through the API with `settings`.
struct Load {
    endpoints: usize,
    producers: usize,
    events: u64,
    behaviour: Behaviour,
    /// The endpoints' settings besides the URL.
    settings: Value,
}

impl Load {
    /// `steady`'s: one fast endpoint with every worker slot, 32 producers.
    fn steady(options: &BenchOptions) -> Self {
        Self {
            endpoints: 1,
            producers: 32,
            events: sized(options, 30_000, 3_000),
            behaviour: Behaviour::default(),
            settings: json!({ "max_in_flight": THROUGHPUT_IN_FLIGHT }),
        }
    }

    /// `fanout`'s: ten fast endpoints, 32 producers.
    fn fanout(options: &BenchOptions) -> Self {
        Self {
            endpoints: 10,
            events: sized(options, 10_000, 1_000),
            ..Self::steady(options)
        }
    }
}

/// Runs `load`.
async fn single_event_load(
    service: &Service,
    rng: &mut StdRng,
    load: &Load,
) -> anyhow::Result<Measured> {
    let mut sinks = Vec::new();
    for _ in 0..load.endpoints {
        let sink = Sink::start(load.behaviour).await?;
        service.endpoint(&sink.url, load.settings.clone()).await?;
        sinks.push(sink);
    }
    let (producers, events) = (load.producers, load.events);
    let pad = padding(rng);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(producers)
        .build()?;
    let accepted: Accepted = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let limit = Duration::from_secs(300);
    let mut tasks = Vec::new();
    for _ in 0..producers {
        let (client, accepted, next, pad, base) = (
            client.clone(),
            accepted.clone(),
            next.clone(),
            pad.clone(),
            service.base.clone(),
        );
        let key = service.key.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= events || started.elapsed() > limit {
                    return anyhow::Ok(());
                }
                let body = event_body(LOAD_EVENT_TYPE, &format!("b{n}"), &pad);
                post_and_record(&client, &base, &key, &body, &accepted).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let sent_for = started.elapsed();
    collect(&sinks, &accepted, started, sent_for, limit).await
}

/// Waits (bounded) for every accepted event at every sink, then measures.
async fn collect(
    sinks: &[Sink],
    accepted: &Accepted,
    started: Instant,
    sent_for: Duration,
    limit: Duration,
) -> anyhow::Result<Measured> {
    let expected = accepted.lock().expect("accepted").len();
    let deadline = Instant::now() + limit;
    while sinks.iter().any(|s| s.delivered() < expected) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let accepted = accepted.lock().expect("accepted").clone();
    let mut measured = Measured {
        events: accepted.len() as u64,
        ..Measured::default()
    };
    let mut last = started;
    for sink in sinks {
        let arrivals = sink.arrivals();
        measured.duplicates += sink.duplicates();
        measured.unexpected += arrivals
            .keys()
            .filter(|id| !accepted.contains_key(*id))
            .count() as u64;
        for (id, accepted_at) in &accepted {
            match arrivals.get(id) {
                Some(arrived) => {
                    measured.deliveries += 1;
                    last = last.max(*arrived);
                    measured
                        .latencies
                        .push(arrived.saturating_duration_since(*accepted_at));
                }
                None => measured.lost += 1,
            }
        }
    }
    measured.elapsed = last.duration_since(started).max(sent_for);
    measured.accepted_for = accepted
        .values()
        .max()
        .map_or(Duration::ZERO, |at| at.duration_since(started));
    Ok(measured)
}

/// `producers` concurrent producers posting batches of `batch` events.
async fn batched_load(
    service: &Service,
    rng: &mut StdRng,
    producers: usize,
    batch: u64,
    events: u64,
) -> anyhow::Result<Measured> {
    let sink = Sink::start(Behaviour::default()).await?;
    service
        .endpoint(&sink.url, json!({ "max_in_flight": THROUGHPUT_IN_FLIGHT }))
        .await?;
    let pad = padding(rng);
    let client = reqwest::Client::new();
    let accepted: Accepted = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let limit = Duration::from_secs(300);
    let ingest_done = Arc::new(Mutex::new(Duration::ZERO));
    let mut tasks = Vec::new();
    for _ in 0..producers {
        let (client, accepted, next, pad) =
            (client.clone(), accepted.clone(), next.clone(), pad.clone());
        let (base, key, ingest_done) = (
            service.base.clone(),
            service.key.clone(),
            ingest_done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= events || started.elapsed() > limit {
                    let mut done = ingest_done.lock().expect("done");
                    *done = (*done).max(started.elapsed());
                    return anyhow::Ok(());
                }
                let items: Vec<Value> = (first..(first + batch).min(events))
                    .map(|n| event_body(LOAD_EVENT_TYPE, &format!("b{n}"), &pad))
                    .collect();
                let body = json!({ "events": items });
                post_and_record(&client, &base, &key, &body, &accepted).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let ingest_seconds = ingest_done.lock().expect("done").as_secs_f64();
    let sent_for = started.elapsed();
    let mut measured = collect(
        std::slice::from_ref(&sink),
        &accepted,
        started,
        sent_for,
        limit,
    )
    .await?;
    measured.extra.insert(
        "accepted_events_per_s".into(),
        json!(measured.events as f64 / ingest_seconds.max(1e-9)),
    );
    Ok(measured)
}

/// Events offered at a fixed rate, well under capacity.
async fn paced_load(
    service: &Service,
    rng: &mut StdRng,
    per_second: f64,
    events: u64,
) -> anyhow::Result<Measured> {
    let sink = Sink::start(Behaviour::default()).await?;
    service
        .endpoint(&sink.url, json!({ "max_in_flight": THROUGHPUT_IN_FLIGHT }))
        .await?;
    let pad = padding(rng);
    let client = reqwest::Client::new();
    let accepted: Accepted = Arc::default();
    let started = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / per_second);
    let mut ticker = tokio::time::interval(gap);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight = Vec::new();
    for n in 0..events {
        ticker.tick().await;
        let (client, accepted, base, key) = (
            client.clone(),
            accepted.clone(),
            service.base.clone(),
            service.key.clone(),
        );
        let body = event_body(LOAD_EVENT_TYPE, &format!("l{n}"), &pad);
        in_flight.push(tokio::spawn(async move {
            post_and_record(&client, &base, &key, &body, &accepted).await
        }));
    }
    for task in in_flight {
        task.await??;
    }
    let sent_for = started.elapsed();
    collect(
        std::slice::from_ref(&sink),
        &accepted,
        started,
        sent_for,
        Duration::from_secs(60),
    )
    .await
}

/// Nine healthy endpoints and one answering after 2 s with a backlog of 1,000, over a fixed
/// window: the healthy ones' latency must not suffer, and the slow one stays within its cap.
async fn noisy(service: &Service, rng: &mut StdRng, window: Duration) -> anyhow::Result<Measured> {
    let slow = Sink::start(Behaviour {
        latency: Duration::from_secs(2),
        failure_rate: 0.0,
    })
    .await?;
    let slow_id = service
        .endpoint(&slow.url, json!({ "max_in_flight": 8 }))
        .await?;
    let key = crate::ids::decode(crate::ids::Kind::Webhook, &slow_id).unwrap_or_default();
    seed_backlog(&service.pool, service.workspace_id, key, 1_000).await?;
    let mut healthy = Vec::new();
    for _ in 0..9 {
        let sink = Sink::start(Behaviour::default()).await?;
        service
            .endpoint(&sink.url, json!({ "max_in_flight": THROUGHPUT_IN_FLIGHT }))
            .await?;
        healthy.push(sink);
    }
    let pad = padding(rng);
    let client = reqwest::Client::new();
    let accepted: Accepted = Arc::default();
    let started = Instant::now();
    // A steady 200 events/s to all ten endpoints for the window.
    let mut ticker = tokio::time::interval(Duration::from_millis(5));
    let mut n = 0_u64;
    let mut tasks = Vec::new();
    while started.elapsed() < window {
        ticker.tick().await;
        n += 1;
        let (client, accepted, base, key) = (
            client.clone(),
            accepted.clone(),
            service.base.clone(),
            service.key.clone(),
        );
        let body = event_body(LOAD_EVENT_TYPE, &format!("n{n}"), &pad);
        tasks.push(tokio::spawn(async move {
            post_and_record(&client, &base, &key, &body, &accepted).await
        }));
    }
    for task in tasks {
        task.await??;
    }
    let sent_for = started.elapsed();
    let mut measured = collect(
        &healthy,
        &accepted,
        started,
        sent_for,
        Duration::from_secs(30),
    )
    .await?;
    measured.extra.insert(
        "slow_endpoint_max_in_flight".into(),
        json!(slow.max_concurrency()),
    );
    measured.extra.insert("slow_endpoint_cap".into(), json!(8));
    measured
        .extra
        .insert("slow_endpoint_requests".into(), json!(slow.requests()));
    measured.note = Some("latency and throughput are the 9 healthy endpoints'".into());
    Ok(measured)
}

/// Posts `body` to `/v1/events` and records when the 202 arrived for each accepted event.
async fn post_and_record(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    body: &Value,
    accepted: &Accepted,
) -> anyhow::Result<()> {
    let ids = post_events_raw(client, base, key, body).await?;
    let at = Instant::now();
    let mut map = accepted.lock().expect("accepted");
    for id in ids {
        map.insert(id, at);
    }
    Ok(())
}

async fn post_events_raw(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    body: &Value,
) -> anyhow::Result<Vec<String>> {
    let response = client
        .post(format!("{base}/v1/events"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 202,
        "ingest answered {}",
        response.status()
    );
    let answer: Value = response.json().await?;
    Ok(answer["data"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// Creates an endpoint without the API (before the service runs), with the bench's key.
async fn create_endpoint_direct(
    pool: &sqlx::PgPool,
    workspace_id: i64,
    url: &str,
    max_in_flight: i32,
) -> anyhow::Result<i64> {
    let settings = crate::webhooks::EndpointSettings {
        url: Some(url.to_owned()),
        max_in_flight: Some(max_in_flight),
        ..crate::webhooks::EndpointSettings::default()
    };
    let secret_box = crate::secret_box::SecretBox::new(SECRET_KEY);
    let (endpoint, _) = crate::webhooks::create(pool, &secret_box, workspace_id, &settings).await?;
    Ok(endpoint.key)
}

/// Inserts `count` events, each with one waiting delivery to `endpoint`, in batches.
async fn seed_backlog(
    pool: &sqlx::PgPool,
    workspace_id: i64,
    endpoint: i64,
    count: u64,
) -> anyhow::Result<()> {
    let mut seeded = 0;
    while seeded < count {
        let batch = (count - seeded).min(50_000);
        sqlx::query(
            "WITH e AS ( \
               INSERT INTO event (workspace_id, event_type, source, occurred_at, data) \
               SELECT $1, 'ticket.updated', 'ingest', now(), \
                      '{\"ticket\":{\"id\":\"tkt_seed\",\"notes\":\"' || repeat('x', 900) || '\"}}' \
               FROM generate_series(1, $3) RETURNING id) \
             INSERT INTO delivery (id, workspace_id, endpoint_id, event_id) \
             SELECT deskhook_id(), $1, $2, e.id FROM e",
        )
        .bind(workspace_id)
        .bind(endpoint)
        .bind(i64::try_from(batch).unwrap_or(i64::MAX))
        .execute(pool)
        .await?;
        seeded += batch;
    }
    sqlx::query("ANALYZE delivery").execute(pool).await?;
    Ok(())
}

/// Drains a seeded backlog.
async fn drain(service: &Service, sink: &Sink, count: u64) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(900);
    let count_usize = usize::try_from(count).unwrap_or(usize::MAX);
    while sink.delivered() < count_usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered = sink.delivered() as u64;
    let arrivals = sink.arrivals();
    let last = arrivals.values().max().copied().unwrap_or(started);
    let _ = service;
    Ok(Measured {
        deliveries: delivered,
        events: count,
        elapsed: last.saturating_duration_since(started),
        latencies: Vec::new(),
        lost: count.saturating_sub(delivered),
        duplicates: sink.duplicates(),
        extra: serde_json::Map::new(),
        note: Some("a seeded backlog drained from cold; latency is not meaningful here".into()),
        ..Measured::default()
    })
}

/// Ticket create + reply through the API by `clients` concurrent clients: the outbox and the
/// fan-out run in the same transaction as each change.
async fn tickets(service: &Service, count: u64, clients: usize) -> anyhow::Result<Measured> {
    let sink = Sink::start(Behaviour::default()).await?;
    service
        .endpoint(&sink.url, json!({ "max_in_flight": THROUGHPUT_IN_FLIGHT }))
        .await?;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let results: Vec<anyhow::Result<()>> = stream::iter(0..count)
        .map(|n| {
            let (client, base, key, latencies) = (client.clone(), service.base.clone(), service.key.clone(), latencies.clone());
            async move {
                let begun = Instant::now();
                let response = client.post(format!("{base}/v1/tickets")).bearer_auth(&key)
                    .json(&json!({ "subject": format!("Ticket {n}"), "requester": {"email": format!("c{}@example.com", n % 500), "name": "C"}, "message": "It is broken" }))
                    .send().await?;
                anyhow::ensure!(response.status() == 201, "ticket create answered {}", response.status());
                latencies.lock().expect("latencies").push(begun.elapsed());
                let ticket: Value = response.json().await?;
                let id = ticket["data"]["id"].as_str().unwrap_or_default();
                let requester = ticket["data"]["requester"]["id"].clone();
                let response = client.post(format!("{base}/v1/tickets/{id}/messages")).bearer_auth(&key)
                    .json(&json!({ "body": "Any news?", "type": "reply", "author": {"type": "customer", "id": requester} }))
                    .send().await?;
                anyhow::ensure!(response.status() == 201, "reply answered {}", response.status());
                anyhow::Ok(())
            }
        })
        .buffer_unordered(clients)
        .collect()
        .await;
    for result in results {
        result?;
    }
    let elapsed = started.elapsed();
    // Two events per ticket (created, replied) are delivered.
    let expected = usize::try_from(count * 2).unwrap_or(usize::MAX);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sink.delivered() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let latencies = latencies.lock().expect("latencies").clone();
    let mut measured = Measured {
        deliveries: sink.delivered() as u64,
        events: count * 2,
        elapsed,
        latencies,
        lost: (count * 2).saturating_sub(sink.delivered() as u64),
        duplicates: sink.duplicates(),
        extra: serde_json::Map::new(),
        note: Some(
            "latency is the ticket create request's; events_per_s counts created + replied".into(),
        ),
        ..Measured::default()
    };
    measured.extra.insert(
        "tickets_per_s".into(),
        json!(count as f64 / elapsed.as_secs_f64()),
    );
    Ok(measured)
}

/// Open tickets, each with an active resolution clock due tomorrow: a large open set with
/// nothing due, which the timer must not pay for.
async fn seed_open_tickets(
    pool: &sqlx::PgPool,
    workspace_id: i64,
    count: u64,
) -> anyhow::Result<()> {
    let policy: i64 = sqlx::query_scalar(
        "INSERT INTO sla_policy (workspace_id, name, position, pause_statuses, settings) \
         VALUES ($1, 'Bench', 1, '{}', '{}') RETURNING id",
    )
    .bind(workspace_id)
    .fetch_one(pool)
    .await?;
    sqlx::query(
        "INSERT INTO ticket (workspace_id, number, subject, priority) \
         SELECT $1, g, 'Bench ' || g, 'urgent' FROM generate_series(1, $2) g",
    )
    .bind(workspace_id)
    .bind(i64::try_from(count).unwrap_or(i64::MAX))
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO sla_clock (workspace_id, ticket_id, metric, instance, policy_id, \
         policy_version, target_ms, warn_ms, business_hours, started_at, running_since, due_at, \
         at_risk_at, state, next_at) \
         SELECT $1, id, 'resolution', 1, $2, 1, 86400000, 3600000, false, now(), now(), \
         now() + interval '1 day', now() + interval '23 hours', 'active', now() + interval '23 hours' \
         FROM ticket WHERE workspace_id = $1",
    )
    .bind(workspace_id)
    .bind(policy)
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE sla_clock").execute(pool).await?;
    sqlx::query("ANALYZE ticket").execute(pool).await?;
    Ok(())
}

/// `due` first-response deadlines whose at-risk instants fall evenly within `window`, among the
/// seeded open tickets: each must emit `sla.at_risk` exactly once, soon after its instant, and
/// be delivered.
async fn sla(service: &Service, due: i64, window: Duration) -> anyhow::Result<Measured> {
    let sink = Sink::start(Behaviour::default()).await?;
    service
        .endpoint(
            &sink.url,
            json!({ "events": ["sla.at_risk"], "max_in_flight": THROUGHPUT_IN_FLIGHT }),
        )
        .await?;
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO sla_clock (workspace_id, ticket_id, metric, instance, policy_id, \
         policy_version, target_ms, warn_ms, business_hours, started_at, running_since, due_at, \
         at_risk_at, state, next_at) \
         SELECT $1, id, 'first_response', 1, (SELECT id FROM sla_policy WHERE workspace_id = $1), 1, \
                7200000, 3600000, false, now(), now(), at + interval '1 hour', at, 'active', at \
         FROM (SELECT id, clock_timestamp() + interval '2 seconds' \
                 + (row_number() OVER (ORDER BY id) - 1) * make_interval(secs => $3) / $2 AS at \
               FROM ticket WHERE workspace_id = $1 ORDER BY id LIMIT $2) due",
    )
    .bind(service.workspace_id)
    .bind(due)
    .bind(window.as_secs_f64())
    .execute(&service.pool)
    .await?;
    let expected = usize::try_from(due).unwrap_or(usize::MAX);
    let deadline = Instant::now() + window + Duration::from_secs(60);
    while sink.delivered() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    let emitted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event WHERE workspace_id = $1 AND event_type = 'sla.at_risk'",
    )
    .bind(service.workspace_id)
    .fetch_one(&service.pool)
    .await?;
    // Emit lag: the event's recording minus its at-risk instant (the event's occurred_at).
    let lags: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM created_at - occurred_at)::float8 FROM event \
         WHERE workspace_id = $1 AND event_type = 'sla.at_risk'",
    )
    .bind(service.workspace_id)
    .fetch_all(&service.pool)
    .await?;
    let mut measured = Measured {
        deliveries: sink.delivered() as u64,
        events: u64::try_from(emitted).unwrap_or_default(),
        elapsed,
        latencies: lags.iter().map(|s| Duration::from_secs_f64(s.max(0.0))).collect(),
        lost: u64::try_from(due).unwrap_or_default().saturating_sub(sink.delivered() as u64),
        duplicates: sink.duplicates(),
        extra: serde_json::Map::new(),
        note: Some("latency is the emit lag (event recorded − at-risk instant); throughput is over the whole window".into()),
        ..Measured::default()
    };
    measured
        .extra
        .insert("sla_events_emitted".into(), json!(emitted));
    measured
        .extra
        .insert("sla_events_expected".into(), json!(due));
    measured
        .extra
        .insert("exactly_once".into(), json!(emitted == due));
    Ok(measured)
}

/// `idle` endpoints subscribed to nothing the loads send, each holding one retry due in an
/// hour, and `disabled` disabled endpoints holding ten parked deliveries each, all pointing
/// at one event: work that waits, which a claim must not pay for. Set-based, so 100,000
/// endpoints take seconds. Each endpoint gets its `endpoint_queue` row, as the API would.
async fn seed_idle_endpoints(
    pool: &sqlx::PgPool,
    workspace_id: i64,
    idle: i64,
    disabled: i64,
) -> anyhow::Result<()> {
    // Never requested: nothing is due during a run, and disabled endpoints get no attempts.
    let url = "http://127.0.0.1:9/never";
    let event: i64 = sqlx::query_scalar(
        "INSERT INTO event (workspace_id, event_type, source, occurred_at, data) \
         VALUES ($1, 'ticket.never', 'ingest', now(), '{}') RETURNING id",
    )
    .bind(workspace_id)
    .fetch_one(pool)
    .await?;
    sqlx::query(
        "WITH ep AS ( \
           INSERT INTO endpoint (workspace_id, url, event_types) \
           SELECT $1, $2, '{ticket.never}' FROM generate_series(1, $3) RETURNING id), \
         queued AS (INSERT INTO endpoint_queue (endpoint_id, workspace_id) SELECT id, $1 FROM ep) \
         INSERT INTO delivery (id, workspace_id, endpoint_id, event_id, state, attempt, run_at) \
         SELECT deskhook_id(), $1, ep.id, $4, 2, 1, now() + interval '1 hour' FROM ep",
    )
    .bind(workspace_id)
    .bind(url)
    .bind(idle)
    .bind(event)
    .execute(pool)
    .await?;
    sqlx::query(
        "WITH ep AS ( \
           INSERT INTO endpoint (workspace_id, url, enabled, disabled_reason, disabled_at) \
           SELECT $1, $2, false, 'manual', now() FROM generate_series(1, $3) RETURNING id), \
         queued AS (INSERT INTO endpoint_queue (endpoint_id, workspace_id) SELECT id, $1 FROM ep) \
         INSERT INTO delivery (id, workspace_id, endpoint_id, event_id, state) \
         SELECT deskhook_id(), $1, ep.id, $4, 3 FROM ep CROSS JOIN generate_series(1, 10)",
    )
    .bind(workspace_id)
    .bind(url)
    .bind(disabled)
    .bind(event)
    .execute(pool)
    .await?;
    for table in ["endpoint", "endpoint_queue", "delivery"] {
        sqlx::query(&format!("ANALYZE {table}"))
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// `steady` with 64 producers and one endpoint on default settings (8 in flight): how far
/// delivery falls behind acceptance when nobody tunes anything.
async fn defaults(
    service: &Service,
    rng: &mut StdRng,
    options: &BenchOptions,
) -> anyhow::Result<Measured> {
    let load = Load {
        producers: 64,
        settings: json!({}),
        ..Load::steady(options)
    };
    let mut measured = single_event_load(service, rng, &load).await?;
    let accepted_per_s = measured.events as f64 / measured.accepted_for.as_secs_f64().max(1e-9);
    let deliveries_per_s = measured.deliveries as f64 / measured.elapsed.as_secs_f64().max(1e-9);
    measured
        .extra
        .insert("accepted_per_s".into(), json!(accepted_per_s));
    measured.extra.insert(
        "delivered_to_accepted".into(),
        json!(deliveries_per_s / accepted_per_s.max(1e-9)),
    );
    measured.note = Some("one endpoint with default settings (max_in_flight 8)".into());
    Ok(measured)
}

/// An endpoint limited to 1 request/s (cap 1,000) holding a backlog of its own event type,
/// beside `fanout`'s load to healthy endpoints subscribed to the load's type only: the healthy
/// ones must not wait behind it, and it must get at most one request in any second. Its
/// backlog is left undrained.
async fn ratelimited(
    service: &Service,
    rng: &mut StdRng,
    options: &BenchOptions,
) -> anyhow::Result<Measured> {
    let backlog: u64 = if options.quick { 200 } else { 2_000 };
    let limited = Recorder::start().await?;
    service
        .endpoint(
            &limited.url,
            json!({ "events": [BACKLOG_EVENT_TYPE], "rate_limit_per_second": 1,
                    "max_in_flight": 1000 }),
        )
        .await?;
    let pad = padding(rng);
    let client = reqwest::Client::new();
    let mut first = 0;
    while first < backlog {
        let items: Vec<Value> = (first..(first + 100).min(backlog))
            .map(|n| event_body(BACKLOG_EVENT_TYPE, &format!("r{n}"), &pad))
            .collect();
        post_events_raw(
            &client,
            &service.base,
            &service.key,
            &json!({ "events": items }),
        )
        .await?;
        first += 100;
    }
    let load = Load {
        settings: json!({ "events": [LOAD_EVENT_TYPE], "max_in_flight": THROUGHPUT_IN_FLIGHT }),
        ..Load::fanout(options)
    };
    let mut measured = single_event_load(service, rng, &load).await?;
    for (field, value) in [
        (
            "limited_max_per_second",
            json!(limited.max_in_window(Duration::from_secs(1))),
        ),
        ("limited_min_gap_ms", json!(limited.min_gap_ms())),
        ("limited_received", json!(limited.received())),
        ("limited_duplicates", json!(limited.repeats())),
        ("limited_backlog", json!(backlog)),
        ("healthy_unexpected", json!(measured.unexpected)),
    ] {
        measured.extra.insert(field.into(), value);
    }
    measured.note =
        Some("latency and throughput are the healthy endpoints'; the limited one is at 1/s".into());
    Ok(measured)
}

/// `steady` and then `fanout` with 1, 2 and 3 instances on one database, the extra ones
/// running only the delivery workers. One report: `steady` with 3 instances, plus
/// `steady_N` and `fanout_N`, the deliveries/s with N instances, and the attempts each
/// instance made in every run with more than one.
async fn instances(context: &Context<'_>) -> anyhow::Result<Value> {
    let mut top = Value::Null;
    let mut figures = serde_json::Map::new();
    let mut attempts = serde_json::Map::new();
    let (mut lost, mut duplicates) = (0, 0);
    for load in ["steady", "fanout"] {
        for count in 1..=3 {
            eprintln!("  {load} with {count} instance(s)");
            let report = Box::pin(run_once(load, context, count - 1)).await?;
            figures.insert(
                format!("{load}_{count}"),
                report["deliveries_per_s"].clone(),
            );
            if count > 1 {
                attempts.insert(
                    format!("{load}_{count}"),
                    report["attempts_by_instance"].clone(),
                );
            }
            lost += report["lost"].as_u64().unwrap_or_default();
            duplicates += report["duplicates"].as_u64().unwrap_or_default();
            if load == "steady" && count == 3 {
                top = report;
            }
        }
    }
    top["scenario"] = json!("instances");
    top["instances"] = json!(3);
    top["attempts_by_instance"] = Value::Object(attempts);
    top["lost_all_runs"] = json!(lost);
    top["duplicates_all_runs"] = json!(duplicates);
    if let Some(object) = top.as_object_mut() {
        object.extend(figures);
    }
    top["note"] =
        json!("the figures are steady's with 3 instances; steady_N, fanout_N: deliveries/s with N");
    Ok(top)
}
