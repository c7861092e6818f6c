//! A measurement, not a timed test (run it on purpose): the timer's emit lag with 100,000 open
//! tickets carrying active clocks and 1,000 at-risk instants falling within a minute. Clocks are
//! seeded directly in the database. Prints p50/p99/max of (event recorded − at-risk instant).
//!
//! `scripts/test -p deskhook --test it sla::lag -- --ignored --nocapture`

use std::time::Duration;

use crate::support::TestApp;

const OPEN_TICKETS: i64 = 100_000;
const DUE: i64 = 1_000;

#[tokio::test]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn emit_lag_with_100k_open_tickets_and_1k_deadlines_in_a_minute() {
    let app = TestApp::spawn().await;
    let pool = &app.pool;
    let workspace = deskhook::auth::create_workspace(pool, "Load")
        .await
        .expect("workspace");
    let policy: i64 = sqlx::query_scalar(
        "INSERT INTO sla_policy (workspace_id, name, position, pause_statuses, settings) \
         VALUES ($1, 'Load', 1, '{}', '{}') RETURNING id",
    )
    .bind(workspace)
    .fetch_one(pool)
    .await
    .expect("policy");
    let started = std::time::Instant::now();
    sqlx::query(
        "INSERT INTO ticket (workspace_id, number, subject, priority) \
         SELECT $1, g, 'Load ' || g, 'urgent' FROM generate_series(1, $2) g",
    )
    .bind(workspace)
    .bind(OPEN_TICKETS)
    .execute(pool)
    .await
    .expect("tickets");
    // Every ticket has an active resolution clock due tomorrow: open, but nothing due.
    sqlx::query(
        "INSERT INTO sla_clock (workspace_id, ticket_id, metric, instance, policy_id, \
         policy_version, target_ms, warn_ms, business_hours, started_at, running_since, due_at, \
         at_risk_at, state, next_at) \
         SELECT $1, id, 'resolution', 1, $2, 1, 86400000, 3600000, false, now(), now(), \
         now() + interval '1 day', now() + interval '23 hours', 'active', \
         now() + interval '23 hours' FROM ticket WHERE workspace_id = $1",
    )
    .bind(workspace)
    .bind(policy)
    .execute(pool)
    .await
    .expect("background clocks");
    sqlx::query("ANALYZE sla_clock")
        .execute(pool)
        .await
        .expect("analyze");
    println!(
        "seeded {OPEN_TICKETS} open tickets with active clocks in {:?}",
        started.elapsed()
    );
    // 1,000 of them get a first_response deadline whose at-risk instant falls within the next
    // minute (3 s to 63 s from now), evenly spread.
    sqlx::query(
        "INSERT INTO sla_clock (workspace_id, ticket_id, metric, instance, policy_id, \
         policy_version, target_ms, warn_ms, business_hours, started_at, running_since, due_at, \
         at_risk_at, state, next_at) \
         SELECT $1, id, 'first_response', 1, $2, 1, 7200000, 3600000, false, now(), now(), \
         at + interval '1 hour', at, 'active', at \
         FROM (SELECT id, clock_timestamp() + interval '3 seconds' \
                 + (row_number() OVER (ORDER BY id) - 1) * interval '60 seconds' / $3 AS at \
               FROM ticket WHERE workspace_id = $1 ORDER BY id LIMIT $3) due",
    )
    .bind(workspace)
    .bind(policy)
    .bind(DUE)
    .execute(pool)
    .await
    .expect("due clocks");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let emitted: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM event WHERE workspace_id = $1 AND event_type = 'sla.at_risk'",
        )
        .bind(workspace)
        .fetch_one(pool)
        .await
        .expect("count");
        if emitted >= DUE {
            assert_eq!(emitted, DUE, "exactly once");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {emitted} of {DUE} emitted"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (p50, p99, max): (f64, f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY lag), max(lag) \
         FROM (SELECT extract(epoch FROM created_at - occurred_at)::float8 AS lag \
               FROM event WHERE workspace_id = $1 AND event_type = 'sla.at_risk') l",
    )
    .bind(workspace)
    .fetch_one(pool)
    .await
    .expect("lag");
    println!(
        "SLA emit lag over {DUE} at-risk events with {OPEN_TICKETS} open tickets: \
         p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        p50 * 1000.0,
        p99 * 1000.0,
        max * 1000.0
    );
    app.stop().await;
}
