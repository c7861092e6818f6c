//! Receivers that hang, reset connections, answer byte by byte, send 100 MB, redirect or ask
//! for an immediate retry, beside a healthy one; and a receiver down for the whole retry
//! schedule whose dead letters are replayed when it is back.

use std::{collections::HashSet, time::Duration};

use deskhook::ids::{self, Kind};
use reqwest::Method;
use serde_json::json;

use super::{produce, settle_and_report};
use crate::{
    delivery::Client,
    support::{
        TestApp,
        hostile::{Behaviour, Hostile},
        receiver::Receiver,
    },
};

#[tokio::test]
async fn hostile_receivers_never_hold_back_a_healthy_one_and_lose_nothing() {
    let app = TestApp::spawn_with(|config| {
        config.attempt_timeout = Duration::from_secs(2);
        config.retry_schedule = "1s,1s,1s,1s,1s,1s".parse().expect("schedule");
    })
    .await;
    let client = Client::new(&app).await;
    let healthy = Receiver::start().await;
    let redirected_to = Receiver::start().await;
    client.endpoint(&healthy, json!({})).await;
    let mut hostile = Vec::new();
    for behaviour in [
        Behaviour::Hang,
        Behaviour::Reset,
        Behaviour::ByteByByte,
        Behaviour::HugeBody,
        Behaviour::Redirect(redirected_to.url.clone()),
        Behaviour::TooManyRetryNow,
    ] {
        let receiver = Hostile::start(behaviour.clone()).await;
        let (status, body) = client
            .call(
                Method::POST,
                "/v1/webhooks",
                Some(json!({ "url": receiver.url, "max_in_flight": 64 })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let key =
            ids::decode(Kind::Webhook, body["data"]["id"].as_str().expect("id")).expect("key");
        hostile.push((behaviour, receiver, key));
    }

    let started = tokio::time::Instant::now();
    let mut accepted = HashSet::new();
    produce(&client, "hostile", 30, "ticket.created", &mut accepted).await;
    let figures = settle_and_report(
        "hostile receivers beside a healthy one",
        1,
        &accepted,
        &healthy,
        Duration::from_secs(20),
    )
    .await;
    let healthy_done = started.elapsed();
    assert!(
        healthy_done < Duration::from_secs(5),
        "the healthy endpoint waited {healthy_done:?} behind the hostile ones ({figures})"
    );
    // Give the hostile ones a few attempts.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        redirected_to.received().is_empty(),
        "a redirect was followed"
    );
    for (behaviour, receiver, key) in &hostile {
        // Every delivery of the endpoint is still accounted for: waiting, in flight or finished.
        let kept: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM delivery WHERE endpoint_id = $1) \
                  + (SELECT count(*) FROM delivery_finished WHERE endpoint_id = $1)",
        )
        .bind(key)
        .fetch_one(&app.pool)
        .await
        .expect("count");
        let attempts: i64 =
            sqlx::query_scalar("SELECT count(*) FROM delivery_attempt WHERE endpoint_id = $1")
                .bind(key)
                .fetch_one(&app.pool)
                .await
                .expect("attempts");
        eprintln!(
            "fault-figures {}",
            json!({ "scenario": format!("hostile receiver: {behaviour:?}"), "accepted": 30,
                    "kept": kept, "requests": receiver.requests(), "attempts_recorded": attempts })
        );
        assert_eq!(kept, 30, "{behaviour:?} lost deliveries");
        assert!(
            receiver.requests() >= 30,
            "{behaviour:?}: {}",
            receiver.requests()
        );
    }
    // `Retry-After: 0` is not an invitation to a tight loop: no delivery came back within a second.
    let (_, too_many, _) = &hostile[5];
    let arrivals = too_many.arrivals();
    let first = arrivals[0];
    let early = arrivals
        .iter()
        .filter(|at| at.duration_since(first) < Duration::from_millis(900))
        .count();
    assert!(early <= 30, "{early} requests within 0.9 s of the first");
    // The 100 MB answer is read only as far as the snippet: its deliveries succeeded.
    let huge_succeeded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM delivery_finished WHERE endpoint_id = $1 AND status = 'succeeded'",
    )
    .bind(hostile[3].2)
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(huge_succeeded, 30);
    app.stop().await;
}

#[tokio::test]
async fn a_receiver_down_for_the_whole_schedule_gets_everything_after_a_replay() {
    let app = TestApp::spawn_with(|config| {
        config.retry_schedule = "50ms,50ms,50ms".parse().expect("schedule");
    })
    .await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    receiver.respond_with(503);
    let (id, _) = client.endpoint(&receiver, json!({})).await;
    let since = chrono::Utc::now() - chrono::Duration::minutes(1);
    let mut accepted = HashSet::new();
    for batch in 0..4 {
        produce(
            &client,
            &format!("down{batch}"),
            25,
            "ticket.created",
            &mut accepted,
        )
        .await;
    }
    // Deliveries use up their four attempts and die; three dead in a row disable the endpoint,
    // and what has not died yet waits, parked, for it to be enabled.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (dead, parked) = loop {
        let (dead, parked): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM delivery_finished WHERE status = 'dead'), \
                    (SELECT count(*) FROM delivery WHERE state = 3)",
        )
        .fetch_one(&app.pool)
        .await
        .expect("count");
        if (dead + parked) as usize == accepted.len() {
            break (dead, parked);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{dead} dead, {parked} parked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(dead >= 3, "{dead} dead");
    eprintln!(
        "fault-figures {}",
        json!({ "scenario": "receiver down: before the replay", "accepted": accepted.len(),
                "dead": dead, "parked": parked })
    );
    // The receiver is back: the operator enables the endpoint (the parked rows come back) and
    // replays the dead letters.
    receiver.respond_with(204);
    let (status, body) = client
        .call(Method::POST, &format!("/v1/webhooks/{id}/enable"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = client
        .call(
            Method::POST,
            &format!("/v1/webhooks/{id}/recover"),
            Some(json!({ "since": since })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["requeued"], dead, "{body}");
    settle_and_report(
        "receiver down for the whole schedule, dead letters replayed",
        1,
        &accepted,
        &receiver,
        Duration::from_secs(30),
    )
    .await;
    app.stop().await;
}
