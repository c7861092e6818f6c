//! Exactly once is the database's guarantee: two instances share the timer's work, a clock
//! whose latch is lost (a crash between commit and acknowledgement) fires no second event, and
//! a restart catches up on what fell due while no instance ran.

use std::{collections::HashMap, time::Duration};

use serde_json::json;

use super::{Desk, WAIT, count, instant, sla_events};
use crate::support::TestApp;

#[tokio::test]
async fn two_instances_emit_each_deadline_exactly_once() {
    let first = TestApp::spawn().await;
    let second = TestApp::spawn_on(first.db.clone(), |_| {}).await;
    let desk = Desk::new(&first).await;
    desk.policy(json!([
        {"metric": "first_response", "priority": "urgent", "minutes": 0.05, "warn_before_minutes": 0.025}
    ]))
    .await;
    let mut tickets = Vec::new();
    for i in 0..25 {
        tickets.push(desk.ticket(&format!("Ticket {i}"), "urgent").await);
    }
    desk.receiver
        .wait_until(WAIT, |received| {
            received
                .iter()
                .filter(|r| r.json["type"] == "sla.breached")
                .count()
                >= tickets.len()
        })
        .await;

    // A lost latch (as if a crash came between the event and the clock's update): the timer
    // fires the clock again, and the deadline's key makes it a duplicate.
    sqlx::query(
        "UPDATE sla_clock SET state = 'active', at_risk_emitted_at = NULL, breached_at = NULL, \
         next_at = at_risk_at WHERE workspace_id = $1",
    )
    .bind(desk.api.workspace_id)
    .execute(&first.pool)
    .await
    .expect("reset latches");
    let settled = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sla_clock WHERE workspace_id = $1 AND next_at IS NOT NULL",
        )
        .bind(desk.api.workspace_id)
        .fetch_one(&first.pool)
        .await
        .expect("count");
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < settled,
            "the timers re-fired the clocks"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    for ticket in &tickets {
        let events = sla_events(&desk.receiver, ticket);
        assert_eq!(
            count(&events, "sla.at_risk", "first_response"),
            1,
            "{events:?}"
        );
        assert_eq!(
            count(&events, "sla.breached", "first_response"),
            1,
            "{events:?}"
        );
    }
    let stored: Vec<(String, i64)> = sqlx::query_as(
        "SELECT event_type, count(*) FROM event WHERE workspace_id = $1 GROUP BY event_type",
    )
    .bind(desk.api.workspace_id)
    .fetch_all(&first.pool)
    .await
    .expect("events");
    let stored: HashMap<String, i64> = stored.into_iter().collect();
    assert_eq!(stored.get("sla.at_risk"), Some(&25));
    assert_eq!(stored.get("sla.breached"), Some(&25));
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn a_restart_catches_up_at_risk_before_the_deadline_and_breached_after_it() {
    let first = TestApp::spawn().await;
    let db = first.db.clone();
    let desk = Desk::new(&first).await;
    desk.policy(json!([
        // At risk after 3 s, due after 12 s.
        {"metric": "first_response", "priority": "urgent", "minutes": 0.2, "warn_before_minutes": 0.15},
        // Due after 3 s.
        {"metric": "first_response", "priority": "high", "minutes": 0.05, "warn_before_minutes": 0.025},
    ]))
    .await;
    let ahead = desk.ticket("Deadline still ahead", "urgent").await;
    let passed = desk.ticket("Deadline passed while down", "high").await;
    first.stop().await;

    // Down past both at-risk instants and the high deadline.
    let down_until = instant(&ahead["created_at"]) + chrono::Duration::seconds(5);
    let wait = (down_until - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait).await;
    assert!(desk.events_of(&ahead).is_empty() && desk.events_of(&passed).is_empty());

    let second = TestApp::spawn_on(db, |_| {}).await;
    let events = desk.wait(&ahead, "sla.at_risk", 1).await;
    let caught_up = chrono::Utc::now();
    assert!(
        caught_up < instant(&events[0].1["due_at"]),
        "at risk before its deadline"
    );
    let events = desk.wait(&passed, "sla.breached", 1).await;
    assert_eq!(
        count(&events, "sla.at_risk", "first_response"),
        0,
        "never at-risk after breach"
    );
    let events = desk.wait(&ahead, "sla.breached", 1).await;
    assert_eq!(count(&events, "sla.at_risk", "first_response"), 1);
    second.stop().await;
}
