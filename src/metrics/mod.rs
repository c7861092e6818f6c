//! Every Prometheus metric Deskhook exports is defined here, and nowhere else.
//!
//! Rules (operations.md): names are `deskhook_<thing>_<unit>`, counters end in `_total`, count
//! gauges carry no unit; labels come only from bounded sets (event type, outcome, status class,
//! route template, role, SLA kind and metric), never an endpoint URL, an id or error text.
//! Process-local metrics are updated as things happen; gauges that need the database are
//! sampled every few seconds by [`sampler`] with cheap indexed queries, never by scanning
//! history and never from a counter row updated per delivery.
//!
//! This module must never do I/O itself (the sampler is the one place that queries), and no
//! other module may register a metric: add it here, with its help line, and to
//! `dashboards/README.md`.
//!
//! Labelled series whose label values are known up front (results, reasons, queue statuses,
//! SLA kinds and metrics) are created at zero when the registry is built, so `rate()` and
//! alert expressions see them before the first event.

pub mod sampler;

use prometheus::{
    Encoder as _, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
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
    /// Unfinished deliveries, by status: `pending` (never attempted), `retrying` (waiting after
    /// a failed attempt), `delivering` (claimed, in flight). Sampled.
    pub queue_depth: IntGaugeVec,
    /// Age in seconds of the oldest delivery that is due and waiting (0 when none is): the
    /// backlog alarm. Sampled.
    pub queue_oldest_due_seconds: Gauge,
    /// Dead deliveries held (within the retention period, until replayed). Sampled.
    pub dead_letters: IntGauge,
    /// Webhook endpoints, by state (`enabled`, `disabled`). Sampled.
    pub webhooks: IntGaugeVec,
    /// SLA events emitted, by kind (`at_risk`, `breached`) and SLA metric (`first_response`,
    /// `next_response`, `resolution`).
    pub sla_events_total: IntCounterVec,
    /// How late after its at-risk (or due) instant an SLA event was emitted, in seconds.
    pub sla_timer_lag_seconds: Histogram,
    /// Age in seconds of the oldest open transaction in the database (0 when none): long ones
    /// hold back vacuum and bloat the queue. Sampled.
    pub db_oldest_xact_age_seconds: Gauge,
    /// Connections the pool holds open (idle or in use). Sampled.
    pub db_pool_connections: IntGauge,
    /// Idle connections in the pool. Sampled.
    pub db_pool_idle_connections: IntGauge,
    /// The most connections the pool may open (`DESKHOOK_DB_POOL_SIZE`).
    pub db_pool_max_connections: IntGauge,
    /// Whether this instance runs a role (`api`, `workers`, `timers`): 1 or 0.
    pub instance_roles: IntGaugeVec,
    /// Database samples that failed (the sampled gauges keep their last value meanwhile).
    pub metrics_sample_failures_total: IntCounter,
}

/// Latency buckets from half a millisecond to a day: fast local deliveries and long retry
/// schedules both land in a useful bucket.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0,
];

/// SLA timer lag: a healthy timer emits within a second; minutes mean it is stuck or down.
const LAG_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0,
];

/// Queue statuses of `deskhook_queue_depth`.
pub const QUEUE_STATUSES: [&str; 3] = ["pending", "retrying", "delivering"];
/// SLA event kinds of `deskhook_sla_events_total`.
pub const SLA_KINDS: [&str; 2] = ["at_risk", "breached"];
/// SLA metrics of `deskhook_sla_events_total` (sla.md).
pub const SLA_METRICS: [&str; 3] = ["first_response", "next_response", "resolution"];
/// Roles of `deskhook_instance_roles`.
pub const ROLES: [&str; 3] = ["api", "workers", "timers"];

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = Register(&registry);
        let metrics = Self {
            http_requests_total: r.counter_vec(
                "deskhook_http_requests_total",
                "HTTP requests served, by method, route template and status class.",
                &["method", "route", "status_class"],
            ),
            http_request_duration_seconds: r.histogram_vec(
                "deskhook_http_request_duration_seconds",
                "Time to answer an HTTP request, by route template.",
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ],
                &["route"],
            ),
            events_total: r.counter_vec(
                "deskhook_events_total",
                "Events accepted, by type and source.",
                &["type", "source"],
            ),
            delivery_attempts_total: r.counter_vec(
                "deskhook_delivery_attempts_total",
                "Delivery attempts, by outcome and status class.",
                &["outcome", "status_class"],
            ),
            deliveries_completed_total: r.counter_vec(
                "deskhook_deliveries_completed_total",
                "Deliveries that reached a final state, by result.",
                &["result"],
            ),
            delivery_attempt_duration_seconds: r.histogram(
                "deskhook_delivery_attempt_duration_seconds",
                "Time of one delivery attempt, request sent to response read.",
                &LATENCY_BUCKETS[..18],
            ),
            delivery_latency_seconds: r.histogram_vec(
                "deskhook_delivery_latency_seconds",
                "Event accepted to delivery settled in a final state, by result.",
                LATENCY_BUCKETS,
                &["result"],
            ),
            delivery_settles_fenced_total: r.counter(
                "deskhook_delivery_settles_fenced_total",
                "Settles refused because the claim's lease had been lost.",
            ),
            delivery_leases_rescued_total: r.counter(
                "deskhook_delivery_leases_rescued_total",
                "Deliveries whose lease expired and were put back to waiting.",
            ),
            webhooks_disabled_total: r.counter_vec(
                "deskhook_webhooks_disabled_total",
                "Endpoints disabled, by reason.",
                &["reason"],
            ),
            queue_depth: r.gauge_vec(
                "deskhook_queue_depth",
                "Unfinished deliveries, by status (pending, retrying, delivering).",
                &["status"],
            ),
            queue_oldest_due_seconds: r.gauge(
                "deskhook_queue_oldest_due_seconds",
                "Age of the oldest delivery that is due and waiting, in seconds (0 when none).",
            ),
            dead_letters: r.int_gauge(
                "deskhook_dead_letters",
                "Dead deliveries held within the retention period.",
            ),
            webhooks: r.gauge_vec(
                "deskhook_webhooks",
                "Webhook endpoints, by state (enabled, disabled).",
                &["state"],
            ),
            sla_events_total: r.counter_vec(
                "deskhook_sla_events_total",
                "SLA events emitted, by kind and SLA metric.",
                &["kind", "metric"],
            ),
            sla_timer_lag_seconds: r.histogram(
                "deskhook_sla_timer_lag_seconds",
                "How late after its instant an SLA event was emitted, in seconds.",
                LAG_BUCKETS,
            ),
            db_oldest_xact_age_seconds: r.gauge(
                "deskhook_db_oldest_xact_age_seconds",
                "Age of the oldest open transaction in the database, in seconds (0 when none).",
            ),
            db_pool_connections: r.int_gauge(
                "deskhook_db_pool_connections",
                "Database connections the pool holds open, idle or in use.",
            ),
            db_pool_idle_connections: r.int_gauge(
                "deskhook_db_pool_idle_connections",
                "Idle database connections in the pool.",
            ),
            db_pool_max_connections: r.int_gauge(
                "deskhook_db_pool_max_connections",
                "The most database connections the pool may open.",
            ),
            instance_roles: r.gauge_vec(
                "deskhook_instance_roles",
                "Whether this instance runs a role (1) or not (0).",
                &["role"],
            ),
            metrics_sample_failures_total: r.counter(
                "deskhook_metrics_sample_failures_total",
                "Database samples of the queue and database gauges that failed.",
            ),
            registry,
        };
        metrics.create_known_series();
        #[cfg(target_os = "linux")]
        metrics
            .registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        metrics
    }

    /// Series whose label values form a small known set exist from the start, at zero.
    fn create_known_series(&self) {
        for result in ["succeeded", "dead"] {
            self.deliveries_completed_total.with_label_values(&[result]);
            self.delivery_latency_seconds.with_label_values(&[result]);
        }
        for reason in ["gone_410", "consecutive_failures", "manual"] {
            self.webhooks_disabled_total.with_label_values(&[reason]);
        }
        for status in QUEUE_STATUSES {
            self.queue_depth.with_label_values(&[status]);
        }
        for state in ["enabled", "disabled"] {
            self.webhooks.with_label_values(&[state]);
        }
        for kind in SLA_KINDS {
            for metric in SLA_METRICS {
                self.sla_events_total.with_label_values(&[kind, metric]);
            }
        }
        for role in ROLES {
            self.instance_roles.with_label_values(&[role]);
        }
    }

    /// Records which roles this instance runs.
    pub fn set_roles(&self, roles: crate::config::Roles) {
        for (role, on) in ROLES
            .into_iter()
            .zip([roles.api, roles.workers, roles.timers])
        {
            self.instance_roles
                .with_label_values(&[role])
                .set(i64::from(on));
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

    /// The names of every metric family this registry exports (histograms by their base name).
    pub fn names(&self) -> Vec<String> {
        self.registry
            .gather()
            .iter()
            .map(|family| family.name().to_owned())
            .collect()
    }
}

/// Builds metrics and registers them; a name registered twice is a programming error.
struct Register<'a>(&'a Registry);

impl Register<'_> {
    fn add<M: prometheus::core::Collector + Clone + 'static>(&self, metric: M) -> M {
        self.0
            .register(Box::new(metric.clone()))
            .expect("each metric is registered once");
        metric
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help).expect("valid metric"))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn gauge(&self, name: &str, help: &str) -> Gauge {
        self.add(Gauge::new(name, help).expect("valid metric"))
    }

    fn int_gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("valid metric"))
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.add(
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                .expect("valid metric"),
        )
    }

    fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
        labels: &[&str],
    ) -> HistogramVec {
        self.add(
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )
            .expect("valid metric"),
        )
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_follows_the_naming_rules() {
        let metrics = Metrics::new();
        for family in metrics.registry.gather() {
            let name = family.name();
            if name.starts_with("process_") {
                continue;
            }
            assert!(name.starts_with("deskhook_"), "{name}");
            assert!(!family.help().is_empty(), "{name} has a help line");
            let counter = family.get_field_type() == prometheus::proto::MetricType::COUNTER;
            assert_eq!(
                counter,
                name.ends_with("_total"),
                "{name}: _total iff counter"
            );
        }
    }

    #[test]
    fn known_series_exist_at_zero_before_anything_happens() {
        let text = Metrics::new().render();
        for line in [
            r#"deskhook_queue_depth{status="retrying"} 0"#,
            r#"deskhook_webhooks{state="disabled"} 0"#,
            r#"deskhook_sla_events_total{kind="at_risk",metric="resolution"} 0"#,
            r#"deskhook_deliveries_completed_total{result="dead"} 0"#,
            "deskhook_sla_timer_lag_seconds_count 0",
            "deskhook_dead_letters 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}`");
        }
    }

    #[test]
    fn roles_are_one_or_zero() {
        let metrics = Metrics::new();
        metrics.set_roles(crate::config::Roles {
            api: false,
            workers: true,
            timers: false,
        });
        let text = metrics.render();
        assert!(text.contains(r#"deskhook_instance_roles{role="workers"} 1"#));
        assert!(text.contains(r#"deskhook_instance_roles{role="api"} 0"#));
    }
}
