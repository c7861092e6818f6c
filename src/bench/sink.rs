//! The benchmark's receivers: axum servers on `127.0.0.1:0` that answer at once (or after a
//! set latency, or with a set failure rate), record when each event first arrived, and count
//! duplicates and concurrency. They do not verify signatures: the tests do that; here every
//! cycle spent is measured against Deskhook.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use rand::Rng as _;

/// How a sink answers.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// Wait this long before answering.
    pub latency: Duration,
    /// Answer 500 to this fraction of requests.
    pub failure_rate: f64,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            failure_rate: 0.0,
        }
    }
}

/// The most 500s one event gets from a failing sink (see `receive`).
const MAX_FAILURES_PER_EVENT: u8 = 3;

#[derive(Default)]
struct Inner {
    first_seen: Mutex<HashMap<String, Instant>>,
    failures: Mutex<HashMap<String, u8>>,
    requests: AtomicU64,
    duplicates: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    behaviour: Mutex<Behaviour>,
}

/// A running sink.
#[derive(Clone)]
pub struct Sink {
    /// Where endpoints should point.
    pub url: String,
    inner: Arc<Inner>,
}

impl Sink {
    /// Starts a sink.
    pub async fn start(behaviour: Behaviour) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let inner = Arc::new(Inner {
            behaviour: Mutex::new(behaviour),
            ..Inner::default()
        });
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url: format!("http://{address}/hook"),
            inner,
        })
    }

    /// Events received successfully at least once, with the time they first arrived.
    pub fn arrivals(&self) -> HashMap<String, Instant> {
        self.inner.first_seen.lock().expect("sink").clone()
    }

    /// How many distinct events arrived successfully.
    pub fn delivered(&self) -> usize {
        self.inner.first_seen.lock().expect("sink").len()
    }

    /// Successful deliveries of an event that had already arrived.
    pub fn duplicates(&self) -> u64 {
        self.inner.duplicates.load(Ordering::Relaxed)
    }

    /// Requests of any outcome.
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// The most requests in progress at once.
    pub fn max_concurrency(&self) -> usize {
        self.inner.max_in_flight.load(Ordering::Relaxed)
    }
}

async fn receive(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> StatusCode {
    let now = inner.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    inner.max_in_flight.fetch_max(now, Ordering::Relaxed);
    inner.requests.fetch_add(1, Ordering::Relaxed);
    let behaviour = *inner.behaviour.lock().expect("sink");
    if !behaviour.latency.is_zero() {
        tokio::time::sleep(behaviour.latency).await;
    }
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let fail =
        behaviour.failure_rate > 0.0 && rand::thread_rng().gen_bool(behaviour.failure_rate) && {
            // Never fail one event more than MAX_FAILURES_PER_EVENT times: with `flaky`'s
            // four retries an unlucky event (1 in 100,000 at 10 %) would otherwise end dead
            // and stall the run as if it were lost. The dead-letter path is the tests' job.
            let mut failures = inner.failures.lock().expect("sink");
            let count = failures.entry(id.clone()).or_default();
            *count = count.saturating_add(1);
            *count <= MAX_FAILURES_PER_EVENT
        };
    if !fail {
        let arrived = Instant::now();
        let mut seen = inner.first_seen.lock().expect("sink");
        // Keep the first arrival: it is what latency is measured to.
        match seen.entry(id) {
            std::collections::hash_map::Entry::Occupied(_) => {
                inner.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(arrived);
            }
        }
    }
    inner.in_flight.fetch_sub(1, Ordering::Relaxed);
    if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}
