//! A receiver that logs every request it gets: when it arrived and its `webhook-id`. The
//! `ratelimited` scenario checks an endpoint's rate limit from the outside with it, which needs
//! each request's time; `sink::Sink` keeps only an event's first arrival.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, extract::State, http::HeaderMap, http::StatusCode, routing::post};

/// Every request received: arrival time and `webhook-id`, in arrival order.
type Log = Arc<Mutex<Vec<(Instant, String)>>>;

/// A running recorder; it answers 204 at once.
pub struct Recorder {
    /// Where endpoints should point.
    pub url: String,
    log: Log,
}

impl Recorder {
    /// Starts a recorder on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let log = Log::default();
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(log.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url: format!("http://{address}/hook"),
            log,
        })
    }

    /// Requests received.
    pub fn received(&self) -> usize {
        self.log.lock().expect("recorder").len()
    }

    /// The most requests that arrived within any `window`, sliding over the arrivals.
    pub fn max_in_window(&self, window: Duration) -> usize {
        let times: Vec<Instant> = self
            .log
            .lock()
            .expect("recorder")
            .iter()
            .map(|(at, _)| *at)
            .collect();
        max_in_window(&times, window)
    }

    /// The shortest time between two consecutive arrivals, in milliseconds (`None` below two):
    /// how close a rate limit's requests came, beside `max_in_window`'s count.
    pub fn min_gap_ms(&self) -> Option<f64> {
        let log = self.log.lock().expect("recorder");
        log.windows(2)
            .map(|pair| pair[1].0.duration_since(pair[0].0).as_secs_f64() * 1e3)
            .min_by(f64::total_cmp)
    }

    /// Requests whose `webhook-id` had arrived before.
    pub fn repeats(&self) -> u64 {
        let log = self.log.lock().expect("recorder");
        let mut seen = HashSet::new();
        log.iter()
            .filter(|(_, id)| !seen.insert(id.as_str()))
            .count() as u64
    }
}

async fn receive(State(log): State<Log>, headers: HeaderMap) -> StatusCode {
    let arrived = Instant::now();
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    log.lock().expect("recorder").push((arrived, id));
    StatusCode::NO_CONTENT
}

/// The most of `times` (in ascending order) inside any half-open interval `[t, t + window)`:
/// the densest window always starts at an arrival, so one pass with two cursors finds it.
fn max_in_window(times: &[Instant], window: Duration) -> usize {
    let mut best = 0;
    let mut end = 0;
    for (start, first) in times.iter().enumerate() {
        while end < times.len() && times[end].duration_since(*first) < window {
            end += 1;
        }
        best = best.max(end - start);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn densest_window() {
        let base = Instant::now();
        let at = |ms: &[u64]| -> Vec<Instant> {
            ms.iter()
                .map(|m| base + Duration::from_millis(*m))
                .collect()
        };
        let second = Duration::from_secs(1);
        assert_eq!(max_in_window(&[], second), 0);
        // Exactly one second apart: never two in one window.
        assert_eq!(max_in_window(&at(&[0, 1000, 2000, 3000]), second), 1);
        assert_eq!(max_in_window(&at(&[0, 999, 2000, 2100, 2200]), second), 3);
        assert_eq!(max_in_window(&at(&[0, 10, 20, 5000]), second), 3);
    }
}
