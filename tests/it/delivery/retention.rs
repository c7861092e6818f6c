//! Retention removes old history, and never an event a delivery still waits on.

use std::time::Duration;

use serde_json::json;

use super::{Client, event};
use crate::support::{TestApp, receiver::Receiver};

/// The smallest id `deskhook_id()` could have given a row two days ago (ids carry their
/// creation time). Computed once, so every row a test ages matches the others.
async fn id_from_two_days_ago(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT deskhook_id_at(now() - interval '2 days')")
        .fetch_one(pool)
        .await
        .expect("an old id")
}

#[tokio::test]
async fn old_history_goes_and_waiting_work_stays() {
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    let delivered = Receiver::start().await;
    client
        .endpoint(&delivered, json!({ "events": ["ticket.created"] }))
        .await;
    client.ingest(event("old-1", "ticket.created")).await;
    delivered.wait_for(1, Duration::from_secs(10)).await;
    // Settles are asynchronous: wait until the delivery is finished.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let finished: i64 = sqlx::query_scalar("SELECT count(*) FROM delivery_finished")
            .fetch_one(&app.pool)
            .await
            .expect("count");
        if finished == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not settled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A disabled endpoint's delivery waits (it is not claimed), so its event must stay.
    let parked = Receiver::start().await;
    client
        .endpoint(
            &parked,
            json!({ "events": ["ticket.closed"], "enabled": false }),
        )
        .await;
    // Ids carry their creation time: an id from two days ago is an old row.
    let two_days_ago = id_from_two_days_ago(&app.pool).await;
    sqlx::query(&format!(
        "INSERT INTO event (id, workspace_id, event_type, source, occurred_at, data) \
         SELECT {two_days_ago} + 7, workspace_id, 'ticket.closed', 'ingest', now(), '{{}}' \
         FROM endpoint WHERE url = $1"
    ))
    .bind(&parked.url)
    .execute(&app.pool)
    .await
    .expect("an old event");
    sqlx::query(
        "INSERT INTO delivery (id, workspace_id, endpoint_id, event_id) \
         SELECT deskhook_id(), ep.workspace_id, ep.id, e.id FROM endpoint ep \
         JOIN event e ON e.event_type = 'ticket.closed' WHERE ep.url = $1",
    )
    .bind(&parked.url)
    .execute(&app.pool)
    .await
    .expect("a waiting delivery");
    sqlx::query(&format!(
        "UPDATE event SET id = {two_days_ago} + 1 WHERE event_type = 'ticket.created'"
    ))
    .execute(&app.pool)
    .await
    .expect("age the delivered event");
    sqlx::query(&format!(
        "UPDATE delivery_finished SET id = {two_days_ago} + 2, \
                finished_at = now() - interval '2 days'"
    ))
    .execute(&app.pool)
    .await
    .expect("age the delivery");
    sqlx::query(&format!(
        "UPDATE delivery_attempt SET delivery_id = {two_days_ago} + 2"
    ))
    .execute(&app.pool)
    .await
    .expect("age the attempt");

    let deleted = deskhook::queue::retention::sweep(&app.pool, Duration::from_secs(86_400))
        .await
        .expect("sweep");
    assert_eq!(
        deleted,
        [1, 1, 1],
        "one attempt, one finished delivery, one event"
    );
    let events: Vec<String> = sqlx::query_scalar("SELECT event_type FROM event")
        .fetch_all(&app.pool)
        .await
        .expect("events");
    assert_eq!(
        events,
        ["ticket.closed"],
        "the waiting delivery's event stays"
    );
    app.stop().await;
}

#[tokio::test]
async fn history_is_kept_for_the_retention_period_after_it_ends_not_after_it_began() {
    // API only: nothing claims the live row this test leaves waiting.
    let app = TestApp::spawn_api_only().await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    client.endpoint(&receiver, json!({})).await;
    let two_days_ago = id_from_two_days_ago(&app.pool).await;
    let two_days_ago = two_days_ago.to_string();
    // Two deliveries created two days ago (the retention here is one day), each with its event
    // and one attempt: one died just now, one was replayed and waits for its next attempt.
    for (n, statement) in [
        (
            1,
            "INSERT INTO delivery_finished (id, workspace_id, endpoint_id, event_id, priority, \
                                            status, attempts, created_at, finished_at) \
             SELECT {old} + 11, workspace_id, id, {old} + 1, 1, 'dead', 5, \
                    now() - interval '2 days', now() \
             FROM endpoint",
        ),
        (
            2,
            "INSERT INTO delivery (id, workspace_id, endpoint_id, event_id, attempt, created_at) \
             SELECT {old} + 12, workspace_id, id, {old} + 2, 5, now() - interval '2 days' FROM endpoint",
        ),
    ] {
        sqlx::query(&format!(
            "INSERT INTO event (id, workspace_id, event_type, source, occurred_at, data) \
             SELECT {two_days_ago} + {n}, workspace_id, 'ticket.created', 'ingest', now(), '{{}}' \
             FROM endpoint"
        ))
        .execute(&app.pool)
        .await
        .expect("an old event");
        sqlx::query(&statement.replace("{old}", &two_days_ago))
            .execute(&app.pool)
            .await
            .expect("an old delivery");
        sqlx::query(&format!(
            "INSERT INTO delivery_attempt (workspace_id, delivery_id, attempt, endpoint_id, started_at, \
                                           duration_ms, outcome) \
             SELECT workspace_id, {two_days_ago} + 1{n}, 5, id, now(), 3, 'http_error' FROM endpoint"
        ))
        .execute(&app.pool)
        .await
        .expect("its attempt");
    }

    let deleted = deskhook::queue::retention::sweep(&app.pool, Duration::from_secs(86_400))
        .await
        .expect("sweep");
    assert_eq!(
        deleted,
        [0, 0, 0],
        "nothing of either has been over for a day"
    );
    let (status, listed) = client
        .call(reqwest::Method::GET, "/v1/deliveries?status=dead", None)
        .await;
    assert_eq!(status, 200, "{listed}");
    let dead = listed["data"].as_array().expect("data");
    assert_eq!(dead.len(), 1, "the late dead letter is listed: {listed}");
    let id = dead[0]["id"].as_str().expect("id");
    let shown = client.get(&format!("/v1/deliveries/{id}")).await;
    assert_eq!(
        shown["data"]["attempt_log"].as_array().map(Vec::len),
        Some(1),
        "{shown}"
    );

    // A day after it died, the dead letter goes with its attempt and event; the live one stays.
    sqlx::query("UPDATE delivery_finished SET finished_at = now() - interval '25 hours'")
        .execute(&app.pool)
        .await
        .expect("age the death");
    let deleted = deskhook::queue::retention::sweep(&app.pool, Duration::from_secs(86_400))
        .await
        .expect("sweep");
    assert_eq!(deleted, [1, 1, 1]);
    let live_attempts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM delivery_attempt a JOIN delivery d ON d.id = a.delivery_id",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(
        live_attempts, 1,
        "the replayed delivery keeps its attempt log"
    );
    app.stop().await;
}
