//! A webhook receiver on `127.0.0.1:0`, written the way a subscriber would write one: it
//! verifies every request's Standard Webhooks signature with the `standardwebhooks` crate (an
//! implementation independent of Deskhook's signer) and records what arrived. Tests steer its
//! answers (status codes, delays) and wait on it with bounded timeouts.

use std::{
    collections::{HashSet, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use serde_json::Value;
use tokio::sync::Notify;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub json: Value,
    /// The secrets (by index in the order given to `trust`) whose signature verified.
    pub verified_by: Vec<usize>,
    /// The status the receiver answered.
    pub answered: u16,
    /// When the request arrived (before any scripted delay).
    pub arrived_at: tokio::time::Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    pub fn event_id(&self) -> String {
        self.json["id"].as_str().unwrap_or_default().to_owned()
    }
}

#[derive(Default)]
struct Inner {
    secrets: Mutex<Vec<String>>,
    received: Mutex<Vec<Received>>,
    scripted: Mutex<VecDeque<u16>>,
    default_status: Mutex<u16>,
    delay: Mutex<Duration>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    arrived: Notify,
}

/// A running receiver.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    inner: Arc<Inner>,
}

impl Receiver {
    /// Starts a receiver answering 204.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        Self::serve(listener).await
    }

    /// Serves on an already bound listener.
    pub async fn serve(listener: tokio::net::TcpListener) -> Self {
        let address = listener.local_addr().expect("receiver address");
        let inner = Arc::new(Inner::default());
        *inner.default_status.lock().expect("lock") = 204;
        let app = Router::new()
            .route("/hook", post(handle))
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{address}/hook"),
            inner,
        }
    }

    /// Verifies signatures with these secrets (`whsec_…`), in this order.
    pub fn trust(&self, secrets: &[&str]) {
        *self.inner.secrets.lock().expect("lock") =
            secrets.iter().map(|s| (*s).to_owned()).collect();
    }

    /// Answers `status` from now on.
    pub fn respond_with(&self, status: u16) {
        *self.inner.default_status.lock().expect("lock") = status;
    }

    /// Answers these statuses to the next requests, then the default again.
    pub fn script(&self, statuses: &[u16]) {
        self.inner
            .scripted
            .lock()
            .expect("lock")
            .extend(statuses.iter().copied());
    }

    /// Waits this long before answering.
    pub fn delay(&self, delay: Duration) {
        *self.inner.delay.lock().expect("lock") = delay;
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().expect("lock").clone()
    }

    /// The most requests that arrived within any window of `window` (a sliding window over
    /// arrival times).
    pub fn max_in_window(&self, window: Duration) -> usize {
        let mut times: Vec<_> = self.received().iter().map(|r| r.arrived_at).collect();
        times.sort();
        let mut most = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end] - times[start] >= window {
                start += 1;
            }
            most = most.max(end - start + 1);
        }
        most
    }

    /// The most requests that were in progress at once.
    pub fn max_concurrency(&self) -> usize {
        self.inner.max_in_flight.load(Ordering::SeqCst)
    }

    /// Waits until at least `count` requests have arrived; panics after `within`.
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.inner.arrived.notified();
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let received = self.received();
                assert!(
                    received.len() >= count,
                    "expected {count} requests within {within:?}, got {}",
                    received.len()
                );
                return received;
            }
        }
    }

    /// Waits until `predicate` holds for what was received; panics after `within`.
    pub async fn wait_until(
        &self,
        within: Duration,
        predicate: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.inner.arrived.notified();
            let received = self.received();
            if predicate(&received) {
                return received;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let received = self.received();
                assert!(
                    predicate(&received),
                    "condition not met within {within:?}; got {} requests",
                    received.len()
                );
                return received;
            }
        }
    }

    /// Waits until each event of `ids` was answered with a 2xx; panics after `within`.
    pub async fn wait_for_events(&self, ids: &HashSet<String>, within: Duration) -> Vec<Received> {
        self.wait_until(within, |received| {
            let delivered: HashSet<String> = received
                .iter()
                .filter(|r| r.answered < 300)
                .map(Received::event_id)
                .collect();
            ids.is_subset(&delivered)
        })
        .await
    }
}

async fn handle(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let arrived_at = tokio::time::Instant::now();
    let now = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    inner.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let delay = *inner.delay.lock().expect("lock");
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let secrets = inner.secrets.lock().expect("lock").clone();
    let verified_by = secrets
        .iter()
        .enumerate()
        .filter(|(_, secret)| {
            standardwebhooks::Webhook::new(secret)
                .and_then(|hook| hook.verify(&body, &headers))
                .is_ok()
        })
        .map(|(i, _)| i)
        .collect();
    let status = inner
        .scripted
        .lock()
        .expect("lock")
        .pop_front()
        .unwrap_or_else(|| *inner.default_status.lock().expect("lock"));
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    inner.received.lock().expect("lock").push(Received {
        headers,
        body,
        json,
        verified_by,
        answered: status,
        arrived_at,
    });
    inner.in_flight.fetch_sub(1, Ordering::SeqCst);
    inner.arrived.notify_waiters();
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
