//! Every Prometheus metric Deskhook exports is defined here, and nowhere else.
//!
//! Rules (operations.md): names are `deskhook_<thing>_<unit>`, counters end in `_total`, count
//! gauges carry no unit; labels come only from bounded sets (event type, outcome, status class,
//! route template, role), never an endpoint URL, an id or error text. Process-local metrics are
//! updated as things happen; gauges that need the database are sampled by cheap indexed
//! queries, never by scanning history.

use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
    Registry, TextEncoder,
};

/// The registry and every metric in it.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// HTTP requests served, by method, route template and status class.
    pub http_requests_total: IntCounterVec,
    /// HTTP request duration in seconds, by route template.
    pub http_request_duration_seconds: HistogramVec,
    /// Events accepted, by type and source (`api`, `ingest`, `sla`, `test`).
    pub events_total: IntCounterVec,
    /// Delivery attempts, by outcome and status class.
    pub delivery_attempts_total: IntCounterVec,
    /// Deliveries that reached a final state, by result (`succeeded`, `dead`).
    pub deliveries_completed_total: IntCounterVec,
    /// Time of one delivery attempt (request sent → response read), in seconds.
    pub delivery_attempt_duration_seconds: Histogram,
    /// Event accepted → delivery settled in a final state, in seconds, by result.
    pub delivery_latency_seconds: HistogramVec,
    /// Settles refused because the claim's lease had been lost (another worker took over).
    pub delivery_settles_fenced_total: IntCounter,
    /// Deliveries whose lease expired and were put back to waiting (a worker died).
    pub delivery_leases_rescued_total: IntCounter,
    /// Endpoints disabled, by reason (`gone_410`, `consecutive_failures`, `manual`).
    pub webhooks_disabled_total: IntCounterVec,
}

/// Latency buckets from half a millisecond to a day: fast local deliveries and long retry
/// schedules both land in a useful bucket.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0,
];

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let http_requests_total = IntCounterVec::new(
            Opts::new(
                "deskhook_http_requests_total",
                "HTTP requests served, by method, route template and status class.",
            ),
            &["method", "route", "status_class"],
        )
        .expect("valid metric");
        let http_request_duration_seconds = HistogramVec::new(
            HistogramOpts::new(
                "deskhook_http_request_duration_seconds",
                "Time to answer an HTTP request, by route template.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(http_requests_total.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(http_request_duration_seconds.clone()))
            .expect("unique metric");
        let events_total = counter_vec(
            &registry,
            "deskhook_events_total",
            "Events accepted, by type and source.",
            &["type", "source"],
        );
        let delivery_attempts_total = counter_vec(
            &registry,
            "deskhook_delivery_attempts_total",
            "Delivery attempts, by outcome and status class.",
            &["outcome", "status_class"],
        );
        let deliveries_completed_total = counter_vec(
            &registry,
            "deskhook_deliveries_completed_total",
            "Deliveries that reached a final state, by result.",
            &["result"],
        );
        let delivery_attempt_duration_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "deskhook_delivery_attempt_duration_seconds",
                "Time of one delivery attempt, request sent to response read.",
            )
            .buckets(LATENCY_BUCKETS[..18].to_vec()),
        )
        .expect("valid metric");
        registry
            .register(Box::new(delivery_attempt_duration_seconds.clone()))
            .expect("unique metric");
        let delivery_latency_seconds = HistogramVec::new(
            HistogramOpts::new(
                "deskhook_delivery_latency_seconds",
                "Event accepted to delivery settled in a final state, by result.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["result"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(delivery_latency_seconds.clone()))
            .expect("unique metric");
        let delivery_settles_fenced_total = IntCounter::new(
            "deskhook_delivery_settles_fenced_total",
            "Settles refused because the claim's lease had been lost.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(delivery_settles_fenced_total.clone()))
            .expect("unique metric");
        let delivery_leases_rescued_total = IntCounter::new(
            "deskhook_delivery_leases_rescued_total",
            "Deliveries whose lease expired and were put back to waiting.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(delivery_leases_rescued_total.clone()))
            .expect("unique metric");
        let webhooks_disabled_total = counter_vec(
            &registry,
            "deskhook_webhooks_disabled_total",
            "Endpoints disabled, by reason.",
            &["reason"],
        );
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        Self {
            registry,
            http_requests_total,
            http_request_duration_seconds,
            events_total,
            delivery_attempts_total,
            deliveries_completed_total,
            delivery_attempt_duration_seconds,
            delivery_latency_seconds,
            delivery_settles_fenced_total,
            delivery_leases_rescued_total,
            webhooks_disabled_total,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(counter.clone()))
        .expect("unique metric");
    counter
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `2xx`, `4xx`, ... for a status code: the bounded label used everywhere.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
