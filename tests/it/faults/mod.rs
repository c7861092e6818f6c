//! The fault suite: the service under load while its parts fail, on loopback only, every wait
//! bounded. Each scenario asserts that nothing accepted is lost and prints one line,
//! `fault-figures {json}`, with what it survived, sent, lost and duplicated (the figures in
//! docs/reliability.md; `scripts/test --test it -- faults --nocapture | grep fault-figures`).

mod database;
mod kills;
mod receivers;

use std::{collections::HashSet, time::Duration};

use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    delivery::{Client, event},
    support::receiver::Received,
};

/// Ingests `count` events of `event_type` (ids `{prefix}-{i}`), retrying while the service
/// answers 5xx (an outage refuses, never loses), and adds the accepted ids to `accepted`.
pub(crate) async fn produce(
    client: &Client,
    prefix: &str,
    count: usize,
    event_type: &str,
    accepted: &mut HashSet<String>,
) {
    let events: Vec<Value> = (0..count)
        .map(|i| event(&format!("{prefix}-{i}"), event_type))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, answer) = client
            .call(
                Method::POST,
                "/v1/events",
                Some(json!({ "events": events })),
            )
            .await;
        if status == 202 {
            for item in answer["data"].as_array().expect("data") {
                accepted.insert(item["id"].as_str().expect("id").to_owned());
            }
            return;
        }
        assert!(
            status >= 500,
            "only an outage may refuse events: {status} {answer}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the service did not take events again within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Event ids delivered with a 2xx answer, and how many of those deliveries were repeats.
fn tally(received: &[Received]) -> (HashSet<String>, usize) {
    let mut delivered = HashSet::new();
    let mut repeats = 0;
    for request in received.iter().filter(|r| r.answered < 300) {
        if !delivered.insert(request.event_id()) {
            repeats += 1;
        }
    }
    (delivered, repeats)
}

/// Waits until every accepted event was delivered, then prints and returns the figures.
async fn settle_and_report(
    scenario: &str,
    cycles: usize,
    accepted: &HashSet<String>,
    receiver: &crate::support::receiver::Receiver,
    within: Duration,
) -> Value {
    let received = receiver.wait_for_events(accepted, within).await;
    let (delivered, duplicated) = tally(&received);
    let lost = accepted.difference(&delivered).count();
    let figures = json!({
        "scenario": scenario,
        "cycles": cycles,
        "accepted": accepted.len(),
        "delivered": accepted.intersection(&delivered).count(),
        "lost": lost,
        "duplicated": duplicated,
    });
    eprintln!("fault-figures {figures}");
    assert_eq!(lost, 0, "{figures}");
    figures
}
