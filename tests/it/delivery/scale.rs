//! The queue at scale, as tenants and operators see it: work that is not due (retries due
//! later, disabled endpoints' backlogs) never slows anyone, rows of deleted endpoints end dead
//! with a reason, per-ticket lanes keep their endpoint's cap, and rate limits pace before the
//! claim, hold across instances, starve nobody and never hold up a shutdown.

use std::time::Duration;

use deskhook::ids::{self, Kind};
use reqwest::Method;
use serde_json::json;

use super::{Client, event, fast_retry_app};
use crate::support::{TestApp, proxy::Proxy, receiver::Receiver};

async fn count(app: &TestApp, sql: &str, endpoint: &str) -> i64 {
    let key = ids::decode(Kind::Webhook, endpoint).expect("a webhook id");
    sqlx::query_scalar(sql)
        .bind(key)
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn a_disabled_endpoints_backlog_is_parked_and_comes_back_on_enable() {
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    receiver.delay(Duration::from_millis(800));
    let (endpoint, _) = client
        .endpoint(&receiver, json!({ "max_in_flight": 1 }))
        .await;
    let events: Vec<_> = (0..20)
        .map(|i| event(&format!("park-{i}"), "ticket.created"))
        .collect();
    client.ingest(json!({ "events": events })).await;
    receiver.wait_for(1, Duration::from_secs(10)).await;

    let (status, _) = client
        .call(
            Method::PATCH,
            &format!("/v1/webhooks/{endpoint}"),
            Some(json!({ "enabled": false })),
        )
        .await;
    assert_eq!(status, 200);
    // The attempt in flight finishes; nothing else is sent while disabled. What the dispatcher
    // had leased ahead is given back when that attempt ends, and parked by the next claim:
    // soon nothing of the endpoint is left for a claim to read.
    receiver.delay(Duration::ZERO);
    let ready = "SELECT count(*) FROM delivery WHERE endpoint_id = $1 AND state IN (0, 1)";
    let parked = "SELECT count(*) FROM delivery WHERE endpoint_id = $1 AND state = 3";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while count(&app, ready, &endpoint).await > 0 || count(&app, parked, &endpoint).await < 18 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the disabled endpoint's backlog was not parked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        receiver.received().len() <= 2,
        "sent while disabled: {}",
        receiver.received().len()
    );
    // The deliveries are still there, waiting.
    let listed = client
        .get(&format!(
            "/v1/deliveries?webhook_id={endpoint}&status=pending&limit=100"
        ))
        .await;
    assert!(
        listed["data"].as_array().expect("list").len() >= 18,
        "{listed}"
    );

    let (status, _) = client
        .call(
            Method::PATCH,
            &format!("/v1/webhooks/{endpoint}"),
            Some(json!({ "enabled": true })),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(count(&app, parked, &endpoint).await, 0);
    receiver
        .wait_until(Duration::from_secs(20), |r| {
            let ids: std::collections::HashSet<_> = r.iter().map(|r| r.event_id()).collect();
            ids.len() >= 20
        })
        .await;
    app.stop().await;
}

#[tokio::test]
async fn deleting_an_endpoint_ends_its_waiting_and_in_flight_deliveries_dead_with_the_reason() {
    let app = fast_retry_app("1h").await;
    let client = Client::new(&app).await;
    let failing = Receiver::start().await;
    failing.respond_with(500);
    let (endpoint, _) = client.endpoint(&failing, json!({})).await;
    let accepted = client
        .ingest(json!({ "events": [event("del-1", "ticket.created"), event("del-2", "ticket.created")] }))
        .await;
    failing.wait_for(2, Duration::from_secs(10)).await;
    // A third delivery is in flight (the receiver holds it) when the endpoint is deleted.
    failing.delay(Duration::from_millis(1500));
    client
        .ingest(json!({ "events": [event("del-3", "ticket.created")] }))
        .await;
    failing.wait_for(3, Duration::from_secs(10)).await;

    let (status, _) = client
        .call(Method::DELETE, &format!("/v1/webhooks/{endpoint}"), None)
        .await;
    assert_eq!(status, 204);
    // The scheduled retries and the one in flight end at once, in the delete.
    let waiting = "SELECT count(*) FROM delivery WHERE endpoint_id = $1";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while count(&app, waiting, &endpoint).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rows of the deleted endpoint remain"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let event_id = accepted[0]["id"].as_str().expect("event id");
    let deliveries = client
        .get(&format!("/v1/deliveries?event_id={event_id}"))
        .await;
    let delivery = &deliveries["data"][0];
    assert_eq!(delivery["status"], "dead", "{deliveries}");
    let detail = client
        .get(&format!(
            "/v1/deliveries/{}",
            delivery["id"].as_str().expect("id")
        ))
        .await;
    let log = detail["data"]["attempt_log"]
        .as_array()
        .expect("attempt log");
    assert_eq!(
        log.last().expect("an attempt")["error"],
        "the endpoint was deleted",
        "the reason is in the history: {detail}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_per_ticket_endpoint_never_exceeds_its_cap_and_every_lane_is_served() {
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    receiver.delay(Duration::from_millis(30));
    client
        .endpoint(
            &receiver,
            json!({ "ordering": "per_ticket", "max_in_flight": 2 }),
        )
        .await;
    // 60 tickets, one event each: 60 lane heads are eligible at once.
    let events: Vec<_> = (0..60)
        .map(|t| {
            json!({ "id": format!("cap-{t}"), "type": "ticket.created", "ticket_id": format!("T{t}"),
                    "data": {"ticket": format!("T{t}")} })
        })
        .collect();
    client.ingest(json!({ "events": events })).await;
    receiver.wait_for(60, Duration::from_secs(30)).await;
    assert!(
        receiver.max_concurrency() <= 2,
        "a per-ticket endpoint with max_in_flight 2 saw {} requests at once",
        receiver.max_concurrency()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_rate_limit_holds_across_two_instances_and_starves_no_one() {
    let first = TestApp::spawn_with(|c| c.worker_concurrency = 8).await;
    let second = TestApp::spawn_on(first.db.clone(), |c| c.worker_concurrency = 8).await;
    let client = Client::new(&first).await;
    let limited = Receiver::start().await;
    let healthy = Receiver::start().await;
    client
        .endpoint(
            &limited,
            json!({ "rate_limit_per_second": 5, "max_in_flight": 1000, "events": ["ticket.created"] }),
        )
        .await;
    client
        .endpoint(&healthy, json!({ "events": ["ticket.updated"] }))
        .await;
    let backlog: Vec<_> = (0..300)
        .map(|i| event(&format!("rl-{i}"), "ticket.created"))
        .collect();
    client.ingest(json!({ "events": backlog })).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // With the limited endpoint's backlog waiting, the other endpoint is served at once.
    let started = tokio::time::Instant::now();
    let events: Vec<_> = (0..20)
        .map(|i| event(&format!("ok-{i}"), "ticket.updated"))
        .collect();
    client.on(&second).ingest(json!({ "events": events })).await;
    healthy.wait_for(20, Duration::from_secs(10)).await;
    let healthy_took = started.elapsed();

    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = limited.received().len();
    assert!(
        sent >= 8,
        "the limited endpoint is still served at its rate: {sent}"
    );
    assert!(
        limited.max_in_window(Duration::from_secs(1)) <= 5,
        "two instances sent {} requests within one second to an endpoint limited to 5/s",
        limited.max_in_window(Duration::from_secs(1))
    );
    let mut ids: Vec<_> = limited.received().iter().map(|r| r.event_id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), sent, "no event is sent twice");
    assert!(
        healthy_took < Duration::from_secs(5),
        "the healthy endpoint waited {healthy_took:?} behind a rate-limited backlog"
    );

    // Stopping with a rate-limited backlog waiting takes no longer than the drain.
    let stopping = tokio::time::Instant::now();
    second.stop().await;
    first.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        stopping.elapsed()
    );
}

#[tokio::test]
async fn a_rate_limit_holds_at_the_receiver_when_the_network_delays_one_request() {
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    let address = receiver
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/hook")
        .parse()
        .expect("receiver address");
    // A path whose latency varies by 10 ms, as a subscriber's load balancer's does: the first
    // request is held, the next one is not.
    let path = Proxy::start(address).await;
    path.delay(Duration::from_millis(10));
    let behind_path = format!("http://{}/hook", path.address);
    let (status, created) = client
        .call(
            Method::POST,
            "/v1/webhooks",
            Some(json!({ "url": behind_path, "rate_limit_per_second": 1,
                         "events": ["ticket.created"] })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    client
        .ingest(json!({ "events": (0..3)
            .map(|i| event(&format!("jitter-{i}"), "ticket.created")).collect::<Vec<_>>() }))
        .await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    path.delay(Duration::ZERO);
    let received = receiver.wait_for(2, Duration::from_secs(10)).await;

    let gap = received[1].arrived_at - received[0].arrived_at;
    assert!(
        gap >= Duration::from_secs(1),
        "an endpoint limited to 1/s received two requests {gap:?} apart"
    );
    app.stop().await;
}

#[tokio::test]
async fn retries_due_later_and_parked_backlogs_do_not_slow_a_healthy_endpoint() {
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    client.endpoint(&receiver, json!({})).await;
    let workspace: i64 = sqlx::query_scalar("SELECT id FROM workspace ORDER BY id DESC LIMIT 1")
        .fetch_one(&app.pool)
        .await
        .expect("workspace");
    // 3,000 other endpoints each hold a retry due in an hour; 300 disabled ones hold ten
    // parked deliveries each. The old claim visited every one of them on every claim.
    sqlx::query(
        r"
WITH ev AS (
  INSERT INTO event (workspace_id, event_type, source, occurred_at, data)
  VALUES ($1, 'ticket.created', 'ingest', now(), '{}') RETURNING id
),
waiting AS (
  INSERT INTO endpoint (workspace_id, url, event_types)
  SELECT $1, 'http://127.0.0.1:9/x', '{ticket.never}' FROM generate_series(1, 3000)
  RETURNING id
),
disabled AS (
  INSERT INTO endpoint (workspace_id, url, event_types, enabled, disabled_reason, disabled_at)
  SELECT $1, 'http://127.0.0.1:9/x', '{ticket.never}', false, 'manual', now()
  FROM generate_series(1, 300)
  RETURNING id
),
queues AS (
  INSERT INTO endpoint_queue (endpoint_id, workspace_id)
  SELECT id, $1 FROM waiting UNION ALL SELECT id, $1 FROM disabled
),
retries AS (
  INSERT INTO delivery (id, workspace_id, endpoint_id, event_id, state, attempt, run_at)
  SELECT deskhook_id(), $1, w.id, ev.id, 2, 1, now() + interval '1 hour' FROM waiting w, ev
)
INSERT INTO delivery (id, workspace_id, endpoint_id, event_id, state)
SELECT deskhook_id(), $1, d.id, ev.id, 3 FROM disabled d, ev, generate_series(1, 10)
",
    )
    .bind(workspace)
    .execute(&app.pool)
    .await
    .expect("seed");

    let events: Vec<_> = (0..300)
        .map(|i| event(&format!("h-{i}"), "ticket.updated"))
        .collect();
    for chunk in events.chunks(100) {
        client.ingest(json!({ "events": chunk })).await;
    }
    // At the old claim's 5 deliveries/s this needed a minute.
    receiver.wait_for(300, Duration::from_secs(20)).await;
    app.stop().await;
}

#[tokio::test]
async fn an_event_fans_out_to_exactly_its_subscribers_among_thousands_of_endpoints() {
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    let other_tenant = Client::new(&app).await;
    let everything = Receiver::start().await;
    let created_only = Receiver::start().await;
    let closed_only = Receiver::start().await;
    let neighbour = Receiver::start().await;
    client
        .endpoint(&everything, json!({ "events": ["*"] }))
        .await;
    client
        .endpoint(&created_only, json!({ "events": ["ticket.created"] }))
        .await;
    client
        .endpoint(&closed_only, json!({ "events": ["ticket.closed"] }))
        .await;
    other_tenant
        .endpoint(&neighbour, json!({ "events": ["*"] }))
        .await;
    let workspace: i64 = sqlx::query_scalar(
        "SELECT workspace_id FROM endpoint WHERE url = $1 AND deleted_at IS NULL",
    )
    .bind(&everything.url)
    .fetch_one(&app.pool)
    .await
    .expect("workspace");
    // Thousands of endpoints of the same workspace the event is not for: other types,
    // disabled ones and deleted ones that would take everything.
    sqlx::query(
        r"
WITH others AS (
  INSERT INTO endpoint (workspace_id, url, event_types)
  SELECT $1, 'http://127.0.0.1:9/x', ARRAY['ticket.never', 'sla.at_risk'] FROM generate_series(1, 3000)
),
disabled AS (
  INSERT INTO endpoint (workspace_id, url, event_types, enabled, disabled_reason, disabled_at)
  SELECT $1, 'http://127.0.0.1:9/x', '{*}', false, 'manual', now() FROM generate_series(1, 300)
)
INSERT INTO endpoint (workspace_id, url, event_types, enabled, deleted_at)
SELECT $1, 'http://127.0.0.1:9/x', '{*}', false, now() FROM generate_series(1, 300)
",
    )
    .bind(workspace)
    .execute(&app.pool)
    .await
    .expect("seed");

    let events: Vec<_> = (0..5)
        .map(|i| event(&format!("fan-{i}"), "ticket.created"))
        .collect();
    client.ingest(json!({ "events": events })).await;
    everything.wait_for(5, Duration::from_secs(10)).await;
    created_only.wait_for(5, Duration::from_secs(10)).await;
    // A delivery queued for any other endpoint would stay: refused, parked or ended.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let queued: i64 =
            sqlx::query_scalar("SELECT count(*) FROM delivery WHERE workspace_id = $1")
                .bind(workspace)
                .fetch_one(&app.pool)
                .await
                .expect("count");
        if queued == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{queued} deliveries stay queued for endpoints the events are not for"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(closed_only.received().len(), 0, "ticket.closed only");
    assert_eq!(neighbour.received().len(), 0, "another workspace");
    assert_eq!(everything.received().len(), 5);
    assert_eq!(created_only.received().len(), 5);
    app.stop().await;
}
