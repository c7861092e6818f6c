//! Retention removes old history, and never an event a delivery still waits on.

use std::time::Duration;

use serde_json::json;

use super::{Client, event};
use crate::support::{TestApp, receiver::Receiver};

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
    let two_days_ago = "((floor(extract(epoch FROM now() - interval '2 days') * 1000)::bigint - 1735689600000) << 22)";
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
        "UPDATE delivery_finished SET id = {two_days_ago} + 2"
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
