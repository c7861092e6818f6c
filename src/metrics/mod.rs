//! Every Prometheus metric Deskhook exports is defined here, and nowhere else.
//!
//! Rules (operations.md): names are `deskhook_<thing>_<unit>`, counters end in `_total`, count
//! gauges carry no unit; labels come only from bounded sets (event type, outcome, status class,
//! route template, role), never an endpoint URL, an id or error text. Process-local metrics are
//! updated as things happen; gauges that need the database are sampled by cheap indexed
//! queries, never by scanning history.

use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// The registry and every metric in it.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// HTTP requests served, by method, route template and status class.
    pub http_requests_total: IntCounterVec,
    /// HTTP request duration in seconds, by route template.
    pub http_request_duration_seconds: HistogramVec,
}

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
