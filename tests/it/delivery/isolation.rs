//! Isolation and order: a slow endpoint never delays the others, the in-flight cap holds, and
//! `per_ticket` endpoints get each ticket's events strictly in order, even with two instances.

use std::{collections::HashMap, time::Duration};

use serde_json::json;

use super::Client;
use crate::support::{TestApp, receiver::Receiver};

#[tokio::test]
async fn a_slow_endpoint_does_not_delay_a_fast_one_and_keeps_its_cap() {
    slow_endpoint_does_not_delay_a_fast_one(TestApp::spawn().await).await;
}

/// On `app`: a fast endpoint gets 40 events while a slow one (1.5 s per request, cap 2) is
/// busy with the same events, and the slow one never sees more than its cap at once.
pub async fn slow_endpoint_does_not_delay_a_fast_one(app: TestApp) {
    let client = Client::new(&app).await;
    let slow = Receiver::start().await;
    slow.delay(Duration::from_millis(1500));
    let fast = Receiver::start().await;
    client.endpoint(&slow, json!({ "max_in_flight": 2 })).await;
    client.endpoint(&fast, json!({})).await;

    let events: Vec<_> = (0..40)
        .map(|i| json!({ "id": format!("iso-{i}"), "type": "ticket.created", "data": {"n": i} }))
        .collect();
    let started = tokio::time::Instant::now();
    client.ingest(json!({ "events": events })).await;
    fast.wait_for(40, Duration::from_secs(10)).await;
    let fast_done = started.elapsed();
    // The slow endpoint needs 40 / 2 × 1.5 s = 30 s; the fast one must not wait for it.
    assert!(
        fast_done < Duration::from_millis(1400),
        "the fast endpoint took {fast_done:?} while the slow one was busy"
    );
    assert!(
        slow.received().len() <= 4,
        "slow endpoint: {}",
        slow.received().len()
    );
    slow.wait_for(4, Duration::from_secs(10)).await;
    assert!(
        slow.max_concurrency() <= 2,
        "the slow endpoint saw {} concurrent requests with max_in_flight 2",
        slow.max_concurrency()
    );
    app.stop().await;
}

#[tokio::test]
async fn per_ticket_order_holds_with_two_instances_claiming() {
    let first = TestApp::spawn_with(|c| c.retry_schedule = ordered_retries()).await;
    let second =
        TestApp::spawn_on(first.db.clone(), |c| c.retry_schedule = ordered_retries()).await;
    per_ticket_order_holds(first, second).await;
}

/// The retry schedule of [`per_ticket_order_holds`]: fast, and long enough to survive its
/// scripted failures.
pub fn ordered_retries() -> deskhook::config::RetrySchedule {
    "30ms,30ms,30ms,30ms,30ms".parse().expect("schedule")
}

/// Two instances on one database (with [`ordered_retries`]) deliver six tickets' events to a
/// `per_ticket` endpoint that fails now and then: each ticket's arrive in order.
pub async fn per_ticket_order_holds(first: TestApp, second: TestApp) {
    let client = Client::new(&first).await;
    let receiver = Receiver::start().await;
    receiver.delay(Duration::from_millis(5));
    client
        .endpoint(
            &receiver,
            json!({ "ordering": "per_ticket", "max_in_flight": 16 }),
        )
        .await;
    // Some failures force retries in the middle of lanes: order must still hold.
    receiver.script(&[500, 204, 500, 204, 204, 503]);

    let tickets = 6;
    let per_ticket = 8;
    let client_b = client.on(&second);
    for round in 0..per_ticket {
        let events: Vec<_> = (0..tickets)
            .map(|t| {
                json!({ "id": format!("t{t}-{round}"), "type": "ticket.updated",
                        "ticket_id": format!("T{t}"), "data": {"ticket": format!("T{t}"), "seq": round} })
            })
            .collect();
        // Alternate instances for ingest too.
        let target = if round % 2 == 0 { &client } else { &client_b };
        target.ingest(json!({ "events": events })).await;
    }
    let total = tickets * per_ticket;
    let received = receiver
        .wait_until(Duration::from_secs(30), |r| {
            let mut done: HashMap<String, usize> = HashMap::new();
            for request in r.iter().filter(|r| r.answered < 300) {
                *done
                    .entry(request.json["id"].as_str().unwrap_or("").to_owned())
                    .or_default() += 1;
            }
            done.len() >= total
        })
        .await;

    // Per ticket, successful deliveries arrive in event order, and no event is delivered
    // before an earlier one of its ticket has succeeded.
    let mut last_seq: HashMap<String, i64> = HashMap::new();
    for request in received.iter().filter(|r| r.answered < 300) {
        let ticket = request.json["data"]["ticket"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let seq = request.json["data"]["seq"].as_i64().unwrap_or(-1);
        let previous = last_seq.insert(ticket.clone(), seq);
        if let Some(previous) = previous {
            assert!(
                seq > previous,
                "ticket {ticket}: seq {seq} after {previous}"
            );
        }
    }
    assert_eq!(last_seq.len(), tickets);
    assert!(
        last_seq
            .values()
            .all(|&s| s == i64::from(per_ticket as u8) - 1)
    );
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn a_rate_limited_endpoint_is_paced() {
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    client
        .endpoint(&receiver, json!({ "rate_limit_per_second": 5 }))
        .await;
    let events: Vec<_> = (0..10)
        .map(|i| json!({ "id": format!("rate-{i}"), "type": "ticket.created", "data": {"n": i} }))
        .collect();
    let started = tokio::time::Instant::now();
    client.ingest(json!({ "events": events })).await;
    receiver.wait_for(10, Duration::from_secs(20)).await;
    // Ten requests at five per second need at least nine gaps of 200 ms. Slowness cannot make
    // this fail; only a broken limit can.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1700),
        "10 requests at 5/s arrived within {elapsed:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_in_flight_cap_holds_across_two_instances_leasing_ahead() {
    let first = TestApp::spawn().await;
    let second = TestApp::spawn_on(first.db.clone(), |_| {}).await;
    let client = Client::new(&first).await;
    let receiver = Receiver::start().await;
    receiver.delay(Duration::from_millis(30));
    client
        .endpoint(&receiver, json!({ "max_in_flight": 3 }))
        .await;
    let events: Vec<_> = (0..150)
        .map(|i| json!({ "id": format!("cap2-{i}"), "type": "ticket.created", "data": {"n": i} }))
        .collect();
    client.ingest(json!({ "events": events })).await;
    let received = receiver.wait_for(150, Duration::from_secs(30)).await;
    let mut ids: Vec<_> = received.iter().map(|r| r.event_id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 150, "every event once");
    assert!(
        receiver.max_concurrency() <= 3,
        "the receiver saw {} concurrent requests with max_in_flight 3 and two instances",
        receiver.max_concurrency()
    );
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn a_stopping_instance_gives_back_what_it_leased_ahead() {
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    receiver.delay(Duration::from_millis(300));
    let (endpoint, _) = client
        .endpoint(&receiver, json!({ "max_in_flight": 1 }))
        .await;
    let events: Vec<_> = (0..10)
        .map(|i| json!({ "id": format!("back-{i}"), "type": "ticket.created", "data": {"n": i} }))
        .collect();
    client.ingest(json!({ "events": events })).await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    let db = app.db.clone();
    app.stop().await;
    // Only what was being sent may still be leased; the rest is ready for any instance now,
    // not after a lease runs out, and its attempt was not counted.
    let key = deskhook::ids::decode(deskhook::ids::Kind::Webhook, &endpoint).expect("id");
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let (leased, ready_unattempted): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 1), \
                count(*) FILTER (WHERE state = 0 AND attempt = 0) \
         FROM delivery WHERE endpoint_id = $1",
    )
    .bind(key)
    .fetch_one(&pool)
    .await
    .expect("count");
    assert!(
        leased <= 1,
        "{leased} deliveries still leased after the stop"
    );
    assert!(
        ready_unattempted >= 7,
        "only {ready_unattempted} given back"
    );
}

#[tokio::test]
async fn switching_to_per_ticket_puts_the_waiting_backlog_in_order() {
    // An API-only instance holds the backlog while the ordering changes.
    let api = TestApp::spawn_api_only().await;
    let client = Client::new(&api).await;
    let receiver = Receiver::start().await;
    let (id, _) = client
        .endpoint(&receiver, json!({ "max_in_flight": 16 }))
        .await;
    let events: Vec<_> = (0..5)
        .map(|seq| {
            json!({ "id": format!("sw-{seq}"), "type": "ticket.updated", "ticket_id": "T-switch",
                    "data": { "seq": seq } })
        })
        .collect();
    client.ingest(json!({ "events": events })).await;
    let (status, body) = client
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/webhooks/{id}"),
            Some(json!({ "ordering": "per_ticket" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // The first attempt fails: in order, nothing of the ticket may pass it.
    receiver.script(&[500]);
    let schedule: deskhook::config::RetrySchedule = "50ms".parse().expect("schedule");
    let workers = TestApp::spawn_on(api.db.clone(), |config| {
        config.retry_schedule = schedule;
    })
    .await;
    let received = receiver.wait_for(6, Duration::from_secs(20)).await;
    let order: Vec<i64> = received
        .iter()
        .map(|r| r.json["data"]["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(order, [0, 0, 1, 2, 3, 4], "arrival order of the backlog");
    workers.stop().await;
    api.stop().await;
}

#[tokio::test]
async fn lanes_of_two_endpoints_sharing_an_order_key_never_block_each_other() {
    let schedule: deskhook::config::RetrySchedule = "1h".parse().expect("schedule");
    let app = TestApp::spawn_with(|config| config.retry_schedule = schedule).await;
    let failing_tenant = Client::new(&app).await;
    let other_tenant = Client::new(&app).await;
    let failing = Receiver::start().await;
    failing.respond_with(500);
    let healthy = Receiver::start().await;
    failing_tenant
        .endpoint(
            &failing,
            json!({ "ordering": "per_ticket", "events": ["ticket.created"] }),
        )
        .await;
    let (healthy_id, _) = other_tenant
        .endpoint(
            &healthy,
            json!({ "ordering": "per_ticket", "events": ["ticket.created"] }),
        )
        .await;
    failing_tenant
        .ingest(json!({ "id": "head", "type": "ticket.created", "ticket_id": "T-1", "data": {} }))
        .await;
    // The failing lane's head now waits an hour for its retry.
    failing.wait_for(1, Duration::from_secs(10)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM delivery WHERE state = 2")
        .fetch_one(&app.pool)
        .await
        .expect("count")
        == 0
    {
        assert!(tokio::time::Instant::now() < deadline, "not scheduled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The other tenant's lane has the same 64-bit order key (a hash collision, forced here):
    // its delivery must not wait behind the failing tenant's retry.
    let accepted = other_tenant
        .ingest(json!({ "id": "other", "type": "ticket.updated", "ticket_id": "T-9", "data": {} }))
        .await;
    let event = deskhook::ids::decode(
        deskhook::ids::Kind::Event,
        accepted[0]["id"].as_str().expect("id"),
    )
    .expect("key");
    sqlx::query(
        "INSERT INTO delivery (id, workspace_id, endpoint_id, event_id, order_key) \
         SELECT deskhook_id(), ep.workspace_id, ep.id, $2, \
                (SELECT order_key FROM delivery WHERE state = 2) \
         FROM endpoint ep WHERE ep.id = $1",
    )
    .bind(deskhook::ids::decode(deskhook::ids::Kind::Webhook, &healthy_id).expect("key"))
    .bind(event)
    .execute(&app.pool)
    .await
    .expect("colliding delivery");
    let received = healthy.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(received[0].json["type"], "ticket.updated");
    app.stop().await;
}
