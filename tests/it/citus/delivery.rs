//! The delivery suite's core on the cluster, with every role running: the claim, the settle,
//! the retries and the lease reaper, each statement on the shard of one workspace.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use serde_json::json;

use deskhook_testkit::TestDatabase;

use super::{distributed_database, migrate_and_distribute, skipped_without_citus};
use crate::{
    delivery::{
        Client, event,
        isolation::{
            ordered_retries, per_ticket_order_holds, slow_endpoint_does_not_delay_a_fast_one,
        },
    },
    support::{TestApp, receiver::Receiver},
};

/// Two instances with fast retries on a fresh distributed database, or `None` without Citus.
async fn two_instances(schedule: &str) -> Option<(TestApp, TestApp)> {
    let db = distributed_database().await?;
    let schedule: deskhook::config::RetrySchedule = schedule.parse().expect("schedule");
    let first = TestApp::spawn_on(db.clone(), |c| c.retry_schedule = schedule.clone()).await;
    let second = TestApp::spawn_on(db, |c| c.retry_schedule = schedule).await;
    Some((first, second))
}

#[tokio::test]
async fn tenants_on_every_shard_get_their_events_signed_once_and_failures_end_dead() {
    let Some((first, second)) = two_instances("30ms,30ms").await else {
        return;
    };
    // Enough workspaces that both workers hold some; each has its own receiver.
    let tenants = 8;
    let per_tenant = 25;
    let mut healthy = Vec::new();
    for tenant in 0..tenants {
        let client = Client::new(&first).await;
        let receiver = Receiver::start().await;
        client.endpoint(&receiver, json!({})).await;
        healthy.push((client, receiver, tenant));
    }
    let failing_client = Client::new(&first).await;
    let failing = Receiver::start().await;
    failing.respond_with(500);
    failing_client.endpoint(&failing, json!({})).await;

    for (client, _, tenant) in &healthy {
        // Half of each tenant's events through each instance.
        for (n, instance) in [&first, &second].into_iter().enumerate() {
            let events: Vec<_> = (0..per_tenant)
                .filter(|i| i % 2 == n)
                .map(|i| event(&format!("w{tenant}-{i}"), "ticket.created"))
                .collect();
            client
                .on(instance)
                .ingest(json!({ "events": events }))
                .await;
        }
    }
    let accepted = failing_client
        .ingest(json!({ "events": [event("doomed", "ticket.created")] }))
        .await;

    for (_, receiver, tenant) in &healthy {
        let received = receiver.wait_for(per_tenant, Duration::from_secs(30)).await;
        let mut ids: Vec<String> = received
            .iter()
            .map(|r| {
                r.json["data"]["ticket"]["id"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), per_tenant, "tenant {tenant}: {ids:?}");
        assert!(
            received.iter().all(|r| r.verified_by == vec![0]),
            "tenant {tenant}: every request is signed with its endpoint's secret"
        );
        assert!(
            ids.iter()
                .all(|id| id.starts_with(&format!("T-w{tenant}-"))),
            "tenant {tenant} got only its own events: {ids:?}"
        );
    }
    // The failing endpoint's delivery is tried three times (the first attempt and two
    // retries), then dead, with each attempt in its log.
    let event_id = accepted[0]["id"].as_str().expect("event id");
    let deliveries = failing_client
        .get(&format!("/v1/deliveries?event_id={event_id}"))
        .await;
    let delivery_id = deliveries["data"][0]["id"].as_str().expect("delivery id");
    let dead = failing_client
        .wait_delivery(delivery_id, "dead", Duration::from_secs(30))
        .await;
    assert_eq!(dead["attempts"], 3, "{dead}");
    assert_eq!(failing.received().len(), 3);
    // Nothing was delivered twice: no request beyond one per event.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts: HashMap<usize, usize> = healthy
        .iter()
        .map(|(_, receiver, tenant)| (*tenant, receiver.received().len()))
        .collect();
    assert!(counts.values().all(|&n| n == per_tenant), "{counts:?}");
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn per_ticket_order_holds_on_the_cluster_with_two_instances() {
    let Some(db) = distributed_database().await else {
        return;
    };
    let first = TestApp::spawn_on(db.clone(), |c| c.retry_schedule = ordered_retries()).await;
    let second = TestApp::spawn_on(db, |c| c.retry_schedule = ordered_retries()).await;
    per_ticket_order_holds(first, second).await;
}

#[tokio::test]
async fn a_slow_endpoint_does_not_delay_a_fast_one_on_the_cluster() {
    let Some(db) = distributed_database().await else {
        return;
    };
    slow_endpoint_does_not_delay_a_fast_one(TestApp::spawn_on(db, |_| {}).await).await;
}

#[tokio::test]
async fn an_instance_killed_mid_delivery_on_the_cluster_loses_nothing() {
    let Some(db) = distributed_database().await else {
        return;
    };
    crate::delivery::failures::killed_mid_delivery_loses_nothing(db).await;
}

#[tokio::test]
async fn ingest_is_idempotent_on_the_cluster_with_workers_delivering() {
    let Some(db) = distributed_database().await else {
        return;
    };
    crate::delivery::signed::ingest_is_idempotent(TestApp::spawn_on(db, |_| {}).await).await;
}

#[tokio::test]
async fn each_worker_node_restarted_under_ingest_loses_no_accepted_event() {
    // A cluster of its own: restarting the shared cluster's nodes would disturb other tests.
    let Some((mut cluster, db)) =
        skipped_without_citus(TestDatabase::create_on_private_citus().await)
    else {
        return;
    };
    migrate_and_distribute(&db).await;
    let app = TestApp::spawn_on(db, |c| {
        c.retry_schedule = "100ms,200ms,500ms,1s,1s,1s,1s".parse().expect("schedule");
    })
    .await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    receiver.delay(Duration::from_millis(5));
    client.endpoint(&receiver, json!({})).await;

    // Both workers in turn, so whichever holds this workspace's shard is restarted while
    // events are being accepted and delivered.
    let mut accepted = HashSet::new();
    let mut restarted = 0;
    for batch in 0..9 {
        if batch == 3 || batch == 6 {
            let worker = restarted;
            cluster = tokio::task::spawn_blocking(move || {
                cluster
                    .worker_mut(worker)
                    .expect("worker")
                    .restart()
                    .expect("restarting a worker");
                cluster
            })
            .await
            .expect("join");
            restarted += 1;
        }
        // Right after a restart the first requests may fail (a 5xx): a producer retries until
        // accepted, as it would against any service; only 202s count as accepted.
        crate::faults::produce(
            &client,
            &format!("w{batch}"),
            20,
            "ticket.updated",
            &mut accepted,
        )
        .await;
    }
    assert_eq!(restarted, 2);
    assert_eq!(accepted.len(), 180);
    let received = receiver
        .wait_for_events(&accepted, Duration::from_secs(60))
        .await;
    assert!(
        received.iter().all(|r| r.verified_by == [0]),
        "every delivery is signed with the endpoint's secret"
    );
}
