//! A quick measurement, not a timed test: ticket creates per second and latency percentiles
//! through the real HTTP server and PostgreSQL. It asserts only that every create succeeded.
//! Run on demand:
//! `scripts/test -p deskhook --test it throughput -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use futures::{StreamExt as _, stream};
use serde_json::json;

use crate::support::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement to run on demand, not a test of timing"]
async fn ticket_create_throughput() {
    let app = TestApp::spawn().await;
    let api = app.api("bench").await;
    let creates = 3000;
    let concurrency = 32;
    let create = |n: usize| {
        let api = &api;
        async move {
            let started = Instant::now();
            let (status, body) = api
                .post(
                    "/tickets",
                    json!({
                        "subject": format!("Ticket {n}"),
                        "requester": {"email": format!("c{}@example.com", n % 200), "name": "C"},
                        "message": "Something is broken",
                        "priority": "high",
                        "tags": ["bench"],
                    }),
                )
                .await;
            assert_eq!(status, 201, "{body}");
            started.elapsed()
        }
    };
    // Warm up the pool and the per-workspace number sequence.
    stream::iter(0..100)
        .map(create)
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    let started = Instant::now();
    let mut latencies: Vec<Duration> = stream::iter(0..creates)
        .map(create)
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed();
    latencies.sort();
    let percentile =
        |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "ticket create: {creates} requests, concurrency {concurrency}: {:.0} req/s, p50 {:?}, p99 {:?}, max {:?}",
        creates as f64 / elapsed.as_secs_f64(),
        percentile(0.50),
        percentile(0.99),
        latencies[latencies.len() - 1],
    );
    let numbers: i64 = sqlx::query_scalar("SELECT count(DISTINCT number) FROM ticket")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(
        numbers,
        i64::try_from(creates + 100).expect("count"),
        "numbers are unique"
    );
    app.stop().await;
}
