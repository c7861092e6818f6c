//! The timer through a real receiver: one `sla.at_risk` per deadline with the right fields,
//! none after a reply in time, none for notes, a fresh one per next_response deadline, pauses,
//! and priority changes.

use std::time::Duration;

use serde_json::json;

use super::{Desk, count, instant};
use crate::support::TestApp;

/// 6 s to the deadline, at risk 3 s before it.
fn fast(metric: &str, priority: &str) -> serde_json::Value {
    json!({"metric": metric, "priority": priority, "minutes": 0.1, "warn_before_minutes": 0.05})
}

#[tokio::test]
async fn one_at_risk_then_one_breach_per_deadline_with_its_fields() {
    let app = TestApp::spawn().await;
    let desk = Desk::new(&app).await;
    let policy = desk.policy(json!([fast("first_response", "urgent")])).await;
    let ticket = desk.ticket("Down", "urgent").await;
    let due = instant(&ticket["sla"]["first_response_due"]);

    let events = desk.wait(&ticket, "sla.at_risk", 1).await;
    let (kind, sla) = &events[0];
    assert_eq!(kind, "sla.at_risk");
    assert_eq!(sla["metric"], "first_response");
    assert_eq!(sla["policy_id"], policy["id"]);
    assert_eq!(instant(&sla["due_at"]), due);
    let at_risk_at = instant(&sla["at_risk_at"]);
    assert_eq!(due - at_risk_at, chrono::Duration::seconds(3));
    let remaining = sla["remaining_seconds"].as_i64().expect("remaining");
    assert!((0..=3).contains(&remaining), "{sla}");
    let arrived = chrono::Utc::now();
    assert!(arrived >= at_risk_at, "not early");
    assert!(
        arrived - at_risk_at < chrono::Duration::seconds(3),
        "on time"
    );

    let shown = desk.show(&ticket).await;
    assert_eq!(shown["sla"]["at_risk"], true, "{shown}");

    let events = desk.wait(&ticket, "sla.breached", 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events = {
        let later = desk.events_of(&ticket);
        assert_eq!(later.len(), events.len(), "nothing more: {later:?}");
        later
    };
    assert_eq!(count(&events, "sla.at_risk", "first_response"), 1);
    assert_eq!(count(&events, "sla.breached", "first_response"), 1);
    let shown = desk.show(&ticket).await;
    assert_eq!(
        shown["sla"]["breached"],
        json!(["first_response"]),
        "{shown}"
    );
    assert_eq!(shown["sla"]["at_risk"], false);
    app.stop().await;
}

#[tokio::test]
async fn a_reply_in_time_prevents_it_and_an_internal_note_does_not() {
    let app = TestApp::spawn().await;
    let desk = Desk::new(&app).await;
    desk.policy(json!([fast("first_response", "urgent")])).await;
    let answered = desk.ticket("Answered", "urgent").await;
    let noted = desk.ticket("Only a note", "urgent").await;
    desk.message(&answered, "agent", "reply").await;
    desk.message(&noted, "agent", "note").await;

    desk.wait(&noted, "sla.breached", 1).await;
    let noted_events = desk.events_of(&noted);
    assert_eq!(count(&noted_events, "sla.at_risk", "first_response"), 1);
    assert!(desk.events_of(&answered).is_empty(), "answered in time");
    let shown = desk.show(&answered).await;
    assert_eq!(shown["sla"]["clocks"][0]["state"], "achieved", "{shown}");
    app.stop().await;
}

#[tokio::test]
async fn each_customer_turn_is_a_fresh_next_response_deadline() {
    let app = TestApp::spawn().await;
    let desk = Desk::new(&app).await;
    desk.policy(json!([fast("next_response", "normal")])).await;
    let ticket = desk.ticket("Back and forth", "normal").await;
    assert!(
        ticket["sla"].is_null(),
        "no first_response target: no clock"
    );

    desk.message(&ticket, "customer", "reply").await;
    let shown = desk.show(&ticket).await;
    assert!(shown["sla"]["next_response_due"].is_string(), "{shown}");
    let first = desk.wait(&ticket, "sla.at_risk", 1).await;
    desk.message(&ticket, "agent", "reply").await;
    desk.message(&ticket, "customer", "reply").await;
    desk.message(&ticket, "customer", "reply").await; // does not move the deadline
    let events = desk.wait(&ticket, "sla.at_risk", 2).await;
    assert_eq!(count(&events, "sla.at_risk", "next_response"), 2);
    assert!(instant(&events[1].1["due_at"]) > instant(&first[0].1["due_at"]));
    assert_eq!(
        count(&events, "sla.breached", "next_response"),
        0,
        "the first deadline was met"
    );
    let shown = desk.show(&ticket).await;
    let instances: Vec<i64> = shown["sla"]["clocks"]
        .as_array()
        .expect("clocks")
        .iter()
        .filter_map(|c| c["instance"].as_i64())
        .collect();
    assert_eq!(instances, [1, 2], "{shown}");
    app.stop().await;
}

#[tokio::test]
async fn a_paused_clock_keeps_its_time_and_fires_after_resuming() {
    let app = TestApp::spawn().await;
    let desk = Desk::new(&app).await;
    desk.policy(json!([fast("resolution", "normal")])).await;
    let ticket = desk.ticket("Waiting on customer", "normal").await;
    let original_due = instant(&ticket["sla"]["resolution_due"]);
    let paused = desk.change(&ticket, json!({"status": "pending"})).await;
    assert!(paused["sla"]["resolution_due"].is_null(), "{paused}");
    assert_eq!(paused["sla"]["clocks"][0]["state"], "paused");

    // Past the original at-risk instant and deadline: nothing fires while paused.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(
        desk.events_of(&ticket).is_empty(),
        "paused clocks do not fire"
    );

    let resumed = desk.change(&ticket, json!({"status": "open"})).await;
    let due = instant(&resumed["sla"]["resolution_due"]);
    assert!(
        due > original_due + chrono::Duration::seconds(6),
        "{resumed}"
    );
    let events = desk.wait(&ticket, "sla.at_risk", 1).await;
    assert_eq!(instant(&events[0].1["due_at"]), due);
    assert!(chrono::Utc::now() >= instant(&events[0].1["at_risk_at"]));
    app.stop().await;
}

#[tokio::test]
async fn a_priority_change_recomputes_from_the_start() {
    let app = TestApp::spawn().await;
    let desk = Desk::new(&app).await;
    desk.policy(json!([
        fast("first_response", "urgent"),
        {"metric": "first_response", "priority": "low", "minutes": 600, "warn_before_minutes": 60},
    ]))
    .await;
    let raised = desk.ticket("Raised at once", "low").await;
    let raised_late = desk.ticket("Raised after its urgent deadline", "low").await;
    let lowered = desk.ticket("Lowered", "urgent").await;

    let raised = desk.change(&raised, json!({"priority": "urgent"})).await;
    let due = instant(&raised["sla"]["first_response_due"]);
    let created = instant(&raised["created_at"]);
    assert!(
        (due - created - chrono::Duration::seconds(6))
            .num_milliseconds()
            .abs()
            < 1000,
        "{raised}"
    );
    desk.change(&lowered, json!({"priority": "low"})).await;

    desk.wait(&raised, "sla.breached", 1).await;
    let events = desk.events_of(&raised);
    assert_eq!(count(&events, "sla.at_risk", "first_response"), 1);

    // Raised once its urgent deadline has passed: breached at once, no at-risk.
    tokio::time::sleep(Duration::from_secs(1)).await;
    desk.change(&raised_late, json!({"priority": "urgent"}))
        .await;
    let events = desk.wait(&raised_late, "sla.breached", 1).await;
    assert_eq!(
        count(&events, "sla.at_risk", "first_response"),
        0,
        "{events:?}"
    );
    assert!(
        desk.events_of(&lowered).is_empty(),
        "lowered: ten hours to go"
    );
    app.stop().await;
}
