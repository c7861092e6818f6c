//! Faults one tenant's data must not turn into an outage for everyone (security review H1).

use std::time::Duration;

use deskhook::{
    ids::{self, Kind},
    queue::{Settlement, Verdict},
};
use reqwest::Method;
use serde_json::json;

use super::{Client, event, settlement};
use crate::support::{TestApp, receiver::Receiver};

#[tokio::test]
async fn a_delivery_at_the_old_counter_limit_does_not_stop_other_deliveries() {
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    let poisoned = Receiver::start().await;
    let healthy = Receiver::start().await;
    let (poisoned_id, _) = client
        .endpoint(&poisoned, json!({ "events": ["ticket.created"] }))
        .await;
    client
        .endpoint(&healthy, json!({ "events": ["ticket.updated"] }))
        .await;
    let accepted = client
        .ingest(json!({ "events": [event("poison", "ticket.closed")] }))
        .await;
    let event_key = ids::decode(Kind::Event, accepted[0]["id"].as_str().expect("id")).expect("key");
    // One row whose next claim takes it past 32,767 attempts (smallint's limit).
    sqlx::query(
        "INSERT INTO delivery (id, workspace_id, endpoint_id, event_id, attempt, attempt_base) \
         SELECT deskhook_id(), workspace_id, $1, $2, 32767, 32767 FROM endpoint WHERE id = $1",
    )
    .bind(ids::decode(Kind::Webhook, &poisoned_id).expect("key"))
    .bind(event_key)
    .execute(&app.pool)
    .await
    .expect("seed");
    client
        .ingest(json!({ "events": [event("after", "ticket.updated")] }))
        .await;
    healthy.wait_for(1, Duration::from_secs(10)).await;
    // The poisoned row is past the attempt cap: it is attempted once more, then ends dead.
    let received = poisoned.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(received[0].header("deskhook-attempt"), "32768");
    app.stop().await;
}

#[tokio::test]
async fn a_delivery_that_used_up_its_attempts_cannot_be_retried_again() {
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    client.endpoint(&receiver, json!({})).await;
    let accepted = client
        .ingest(json!({ "events": [event("cap", "ticket.created")] }))
        .await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    let event_id = accepted[0]["id"].as_str().expect("id").to_owned();
    let delivery = loop {
        let listed = client
            .get(&format!("/v1/deliveries?event_id={event_id}"))
            .await;
        if listed["data"][0]["status"] == "succeeded" {
            break listed["data"][0]["id"].as_str().expect("id").to_owned();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    sqlx::query("UPDATE delivery_finished SET attempts = $1 WHERE id = $2")
        .bind(deskhook::queue::deliveries::MAX_ATTEMPTS)
        .bind(ids::decode(Kind::Delivery, &delivery).expect("key"))
        .execute(&app.pool)
        .await
        .expect("age the delivery");
    let (status, body) = client
        .call(
            Method::POST,
            &format!("/v1/deliveries/{delivery}/retry"),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "CONFLICT", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn deliveries_ignore_environment_proxies() {
    // A "proxy" that records every connection it gets and answers none.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let proxy_url = format!("http://{}", proxy.local_addr().expect("addr"));
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = connections.clone();
    let recorder = tokio::spawn(async move {
        while let Ok((socket, _)) = proxy.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(socket);
        }
    });

    let db = deskhook_testkit::TestDatabase::create().await;
    let pool = db.pool().await;
    let data_dir = std::env::temp_dir().join(format!("deskhook-proxy-{}", std::process::id()));
    let port = super::failures::free_port();
    let proxies = [
        ("HTTP_PROXY", proxy_url.as_str()),
        ("HTTPS_PROXY", proxy_url.as_str()),
        ("ALL_PROXY", proxy_url.as_str()),
        ("http_proxy", proxy_url.as_str()),
        ("all_proxy", proxy_url.as_str()),
    ];
    let mut service = super::failures::start_service_with(&db.url, port, &data_dir, &proxies);
    super::failures::wait_ready(port).await;
    let workspace = deskhook::auth::create_workspace(&pool, "Proxy")
        .await
        .expect("workspace");
    let key = deskhook::auth::create_key(
        &pool,
        workspace,
        &[deskhook::auth::Scope::Admin],
        None,
        None,
    )
    .await
    .expect("key");
    let client = Client {
        base: format!("http://127.0.0.1:{port}"),
        key: key.key,
        http: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client"),
    };
    let receiver = Receiver::start().await;
    client.endpoint(&receiver, json!({})).await;
    client
        .ingest(json!({ "events": [event("direct", "ticket.created")] }))
        .await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the delivery went through the environment's proxy"
    );
    let _ = service.kill();
    let _ = service.wait();
    recorder.abort();
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test]
async fn an_event_batch_over_the_body_cap_gets_the_error_envelope() {
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    let big = "x".repeat(6 * 1024 * 1024);
    let (status, body) = client
        .call(
            Method::POST,
            "/v1/events",
            Some(json!({ "events": [{ "id": "big", "type": "ticket.created", "data": { "big": big } }] })),
        )
        .await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_secret_no_key_opens_fails_only_its_own_endpoint_and_ends_dead() {
    let app = super::fast_retry_app("1s").await;
    let client = Client::new(&app).await;
    let broken = Receiver::start().await;
    let healthy = Receiver::start().await;
    let (broken_id, _) = client.endpoint(&broken, json!({})).await;
    client.endpoint(&healthy, json!({})).await;
    // One endpoint's secret was sealed under a key this instance does not have (another
    // instance's generated key, or an operator key that was replaced).
    let broken_key = ids::decode(Kind::Webhook, &broken_id).expect("key");
    sqlx::query("UPDATE endpoint_secret SET ciphertext = $2 WHERE endpoint_id = $1")
        .bind(broken_key)
        .bind(deskhook::secret_box::SecretBox::new([9; 32]).seal(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            &deskhook::secret_box::SealedFor::endpoint_secret(broken_key),
        ))
        .execute(&app.pool)
        .await
        .expect("foreign seal");
    // One event for both: its deliveries are enqueued together, so one claim takes both.
    let accepted = client
        .ingest(json!({ "events": [event("b1", "ticket.created")] }))
        .await;
    let received = healthy.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        received[0].header("deskhook-attempt"),
        "1",
        "the healthy endpoint's first attempt failed with the other one's secret"
    );
    let listed = client
        .get(&format!(
            "/v1/deliveries?event_id={}&webhook_id={broken_id}",
            accepted[0]["id"].as_str().expect("id")
        ))
        .await;
    let delivery = listed["data"][0]["id"]
        .as_str()
        .expect("delivery")
        .to_owned();
    // Counted against the schedule ("1s": two attempts), so it ends dead and visible.
    let dead = client
        .wait_delivery(&delivery, "dead", Duration::from_secs(20))
        .await;
    let log = dead["attempt_log"].to_string();
    assert!(log.contains("could not be read"), "{log}");
    assert!(broken.received().is_empty(), "sent without a signature key");
    app.stop().await;
}

/// Reads from `stream` until the server closes it or `within` passes; returns what arrived
/// and whether it was closed.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, within: Duration) -> (String, bool) {
    use tokio::io::AsyncReadExt as _;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buffer = [0_u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return (String::from_utf8_lossy(&seen).into_owned(), true),
            Ok(Ok(n)) => seen.extend_from_slice(&buffer[..n]),
            Err(_) => return (String::from_utf8_lossy(&seen).into_owned(), false),
        }
    }
}

#[tokio::test]
async fn slow_clients_are_cut_off_by_the_header_and_request_deadlines() {
    use tokio::io::AsyncWriteExt as _;
    let app = TestApp::spawn_with(|config| {
        config.connections.header_read_timeout = Duration::from_secs(1);
        config.request_timeout = Duration::from_secs(2);
    })
    .await;
    let client = Client::new(&app).await;
    let address = app
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();

    // Headers that never end (slowloris): the connection is closed.
    let mut headers_only = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    headers_only
        .write_all(b"POST /v1/events HTTP/1.1\r\nHost: deskhook\r\nX-Slow: 1")
        .await
        .expect("write");
    let (_, closed) = read_until_closed(&mut headers_only, Duration::from_secs(6)).await;
    assert!(
        closed,
        "a connection that never finished its headers stayed open"
    );

    // A body sent a byte at a time: a 408 with the envelope, then the connection ends.
    let mut slow_body = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: deskhook\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
        client.key
    );
    slow_body.write_all(head.as_bytes()).await.expect("write");
    let (mut reader, mut writer) = slow_body.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if writer.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let answer = {
        use tokio::io::AsyncReadExt as _;
        let mut seen = Vec::new();
        let mut buffer = [0_u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !String::from_utf8_lossy(&seen).contains("REQUEST_TIMEOUT") {
            match tokio::time::timeout_at(deadline, reader.read(&mut buffer)).await {
                Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buffer[..n]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    };
    trickle.abort();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("REQUEST_TIMEOUT"), "{answer}");
    app.stop().await;
}

#[tokio::test]
async fn an_event_with_a_nul_character_is_refused_by_field_and_the_rest_still_flows() {
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    client.endpoint(&receiver, json!({})).await;
    // PostgreSQL text and jsonb cannot hold U+0000: without a check each was a 500.
    for (field, event) in [
        (
            "events[0].ticket_id",
            json!({ "id": "nul-ticket", "type": "ticket.created", "ticket_id": "a\u{0}b", "data": {} }),
        ),
        (
            "events[0].data",
            json!({ "id": "nul-data", "type": "ticket.created", "data": { "note": "a\u{0}b" } }),
        ),
        (
            "events[0].data",
            json!({ "id": "nul-key", "type": "ticket.created", "data": { "a\u{0}": 1 } }),
        ),
    ] {
        let (status, body) = client
            .call(
                Method::POST,
                "/v1/events",
                Some(json!({ "events": [event] })),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "VALIDATION_FAILED", "{body}");
        assert!(
            body["error"]["details"]["fields"][field].is_string(),
            "{field}: {body}"
        );
    }
    client
        .ingest(json!({ "events": [event("after-nul", "ticket.created")] }))
        .await;
    let received = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(received.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn custom_header_values_are_sealed_at_rest_and_shown_to_admin_keys_only() {
    let key: [u8; 32] = rand::random();
    let app = TestApp::spawn_with(|config| {
        config.secret_box = deskhook::secret_box::SecretBox::new(key);
    })
    .await;
    let admin = Client::new(&app).await;
    let receiver = Receiver::start().await;
    let (webhook, _) = admin
        .endpoint(
            &receiver,
            json!({ "headers": { "Authorization": "Bearer s3cr3t-token", "X-Team": "blue" } }),
        )
        .await;
    let (status, created) = admin
        .call(
            Method::POST,
            "/v1/api-keys",
            Some(json!({ "scopes": ["read", "write"] })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let writer = Client {
        key: created["data"]["api_key"].as_str().expect("key").to_owned(),
        ..admin.on(&app)
    };

    // Keys below admin see the names, never the values.
    for path in ["/v1/webhooks".to_owned(), format!("/v1/webhooks/{webhook}")] {
        let seen = writer.get(&path).await;
        assert!(!seen.to_string().contains("s3cr3t"), "{path}: {seen}");
        let one = if seen["data"].is_array() {
            &seen["data"][0]
        } else {
            &seen["data"]
        };
        assert_eq!(
            one["headers"],
            json!({ "Authorization": null, "X-Team": null }),
            "{path}"
        );
    }
    let admin_view = admin.get(&format!("/v1/webhooks/{webhook}")).await;
    assert_eq!(
        admin_view["data"]["headers"]["Authorization"],
        "Bearer s3cr3t-token"
    );

    // No column holds a value readable.
    let clear: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM endpoint e WHERE e::text LIKE '%s3cr3t%' OR e::text LIKE '%blue%'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("scan");
    assert_eq!(clear, 0);

    // The receiver still gets them.
    admin
        .ingest(json!({ "events": [event("with-headers", "ticket.created")] }))
        .await;
    let received = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(received[0].header("authorization"), "Bearer s3cr3t-token");
    assert_eq!(received[0].header("x-team"), "blue");

    // A row stored before sealing (clear values) is sealed by the start-up pass, and still sent.
    let key_of = ids::decode(Kind::Webhook, &webhook).expect("key");
    sqlx::query(
        "UPDATE endpoint SET headers = '{\"X-Old\": \"clear-old-token\"}', headers_sealed = NULL \
         WHERE id = $1",
    )
    .bind(key_of)
    .execute(&app.pool)
    .await
    .expect("legacy row");
    let sealed = deskhook::webhooks::seal_clear_headers(
        &app.pool,
        &deskhook::secret_box::SecretBox::new(key),
    )
    .await
    .expect("seal");
    assert_eq!(sealed, 1);
    let clear: i64 =
        sqlx::query_scalar("SELECT count(*) FROM endpoint e WHERE e::text LIKE '%clear-old%'")
            .fetch_one(&app.pool)
            .await
            .expect("scan");
    assert_eq!(clear, 0);
    let (status, _) = admin
        .call(
            Method::PATCH,
            &format!("/v1/webhooks/{webhook}"),
            Some(json!({ "description": "touch" })),
        )
        .await;
    assert_eq!(status, 200);
    let view = admin.get(&format!("/v1/webhooks/{webhook}")).await;
    assert_eq!(
        view["data"]["headers"],
        json!({ "X-Old": "clear-old-token" })
    );
    app.stop().await;
}

#[tokio::test]
async fn an_attempt_settled_after_its_lease_moved_on_is_recorded_as_fenced() {
    // API only: this test plays the two workers itself, with a lease that expires at once.
    let app = TestApp::spawn_api_only().await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    client.endpoint(&receiver, json!({})).await;
    client
        .ingest(json!({ "events": [event("late", "ticket.created")] }))
        .await;
    let turn = |lease| {
        deskhook::queue::cycle::turn(
            &app.pool,
            &[],
            10,
            lease,
            deskhook::queue::claim::FIRST_ENDPOINT,
            1,
        )
    };
    let first = turn(0.2).await.expect("claim").claimed;
    assert_eq!(first.len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rescued = deskhook::queue::claim::rescue_expired(&app.pool)
        .await
        .expect("rescue");
    assert_eq!(rescued, 1);
    let second = turn(30.0).await.expect("claim again").claimed;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].attempt, first[0].attempt + 1);

    // The first worker's request did reach the receiver; its settle comes too late.
    let late = settlement(&first[0], Verdict::Succeeded);
    for _ in 0..2 {
        // Sent twice, as a settle whose commit was not acknowledged is: recorded once.
        let settled = deskhook::queue::cycle::settle(&app.pool, std::slice::from_ref(&late))
            .await
            .expect("settle");
        assert_eq!((settled.applied, settled.fenced), (0, 1));
    }
    let id = ids::encode(Kind::Delivery, first[0].id);
    let delivery = client.get(&format!("/v1/deliveries/{id}")).await;
    assert_eq!(delivery["data"]["status"], "delivering", "{delivery}");
    let log = delivery["data"]["attempt_log"].as_array().expect("log");
    assert_eq!(log.len(), 1, "{delivery}");
    assert_eq!(log[0]["attempt"], first[0].attempt);
    assert_eq!(log[0]["outcome"], "success");
    assert_eq!(log[0]["fenced"], true);

    // The second worker's settle decides the delivery, and its attempt is not fenced.
    let settled =
        deskhook::queue::cycle::settle(&app.pool, &[settlement(&second[0], Verdict::Succeeded)])
            .await
            .expect("settle");
    assert_eq!((settled.applied, settled.fenced), (1, 0));
    let delivery = client.get(&format!("/v1/deliveries/{id}")).await;
    assert_eq!(delivery["data"]["status"], "succeeded", "{delivery}");
    let fenced: Vec<bool> = delivery["data"]["attempt_log"]
        .as_array()
        .expect("log")
        .iter()
        .map(|a| a["fenced"].as_bool().expect("fenced"))
        .collect();
    assert_eq!(fenced, [true, false]);
    app.stop().await;
}

#[tokio::test]
async fn instances_settling_the_same_failing_endpoints_in_opposite_orders_never_deadlock() {
    let app = TestApp::spawn_api_only().await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    for _ in 0..8 {
        client
            .endpoint(&receiver, json!({ "max_in_flight": 1000 }))
            .await;
    }
    for batch in 0..3 {
        client
            .ingest(json!({ "events": (0..50)
                .map(|i| event(&format!("d{batch}-{i}"), "ticket.created"))
                .collect::<Vec<_>>() }))
            .await;
    }
    let claimed = deskhook::queue::cycle::turn(
        &app.pool,
        &[],
        10_000,
        300.0,
        deskhook::queue::claim::FIRST_ENDPOINT,
        1,
    )
    .await
    .expect("claim")
    .claimed;
    assert_eq!(claimed.len(), 8 * 150);
    let dead = |c: &deskhook::queue::Claimed| settlement(c, Verdict::Dead);
    // Two instances each settle one delivery of every endpoint per turn, one in ascending and
    // one in descending endpoint order: every turn writes all eight endpoint rows.
    let mut by_endpoint: std::collections::BTreeMap<i64, Vec<Settlement>> = Default::default();
    for c in &claimed {
        by_endpoint.entry(c.endpoint_id).or_default().push(dead(c));
    }
    let mut turns: Vec<(Vec<Settlement>, Vec<Settlement>)> = Vec::new();
    for round in 0..75 {
        let mut up = Vec::new();
        let mut down = Vec::new();
        for deliveries in by_endpoint.values() {
            up.push(deliveries[2 * round].clone());
            down.push(deliveries[2 * round + 1].clone());
        }
        down.reverse();
        turns.push((up, down));
    }
    for (up, down) in turns {
        let (a, b) = tokio::join!(
            deskhook::queue::cycle::settle(&app.pool, &up),
            deskhook::queue::cycle::settle(&app.pool, &down)
        );
        assert_eq!(a.expect("ascending settle").applied, 8);
        assert_eq!(b.expect("descending settle").applied, 8);
    }
    let dead: i64 =
        sqlx::query_scalar("SELECT count(*) FROM delivery_finished WHERE status = 'dead'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(dead, 8 * 150);
    app.stop().await;
}

#[tokio::test]
async fn a_test_event_to_a_disabled_endpoint_is_refused_and_queues_nothing() {
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    let (id, _) = client
        .endpoint(&receiver, json!({ "enabled": false }))
        .await;
    let (status, body) = client
        .call(Method::POST, &format!("/v1/webhooks/{id}/test"), None)
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "CONFLICT", "{body}");
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM delivery")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(waiting, 0, "nothing waits for a disabled endpoint");

    // Enabled again, the test goes out.
    let (status, body) = client
        .call(
            Method::PATCH,
            &format!("/v1/webhooks/{id}"),
            Some(json!({ "enabled": true })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = client
        .call(Method::POST, &format!("/v1/webhooks/{id}/test"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    let received = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(received[0].json["type"], "webhook.test");
    app.stop().await;
}

#[tokio::test]
async fn a_sealed_secret_copied_to_another_endpoint_does_not_open_there() {
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    // Client::new makes a workspace of its own.
    let victim = Client::new(&app).await;
    let receiver = Receiver::start().await;
    let (mine, _) = client.endpoint(&receiver, json!({})).await;
    let (theirs, their_secret) = victim.endpoint(&receiver, json!({})).await;
    // Someone who can write the database, but has no operator key, copies the other
    // workspace's sealed secret into their own endpoint and asks for it.
    sqlx::query(
        "UPDATE endpoint_secret SET ciphertext = \
           (SELECT ciphertext FROM endpoint_secret WHERE endpoint_id = $2) \
         WHERE endpoint_id = $1",
    )
    .bind(ids::decode(Kind::Webhook, &mine).expect("key"))
    .bind(ids::decode(Kind::Webhook, &theirs).expect("key"))
    .execute(&app.pool)
    .await
    .expect("copy");
    let (status, body) = client
        .call(Method::GET, &format!("/v1/webhooks/{mine}/secret"), None)
        .await;
    assert_ne!(status, 200, "{body}");
    assert!(
        !body.to_string().contains(&their_secret),
        "the copied secret opened: {body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_shutdown_with_hanging_and_rate_limited_receivers_ends_in_time_and_loses_nothing() {
    let db = deskhook_testkit::TestDatabase::create().await;
    let settings = |config: &mut deskhook::config::Config| {
        config.shutdown_timeout = Duration::from_secs(1);
        config.attempt_timeout = Duration::from_secs(2);
    };
    let app = TestApp::spawn_on(db.clone(), settings).await;
    let client = Client::new(&app).await;
    let hanging = Receiver::start().await;
    hanging.delay(Duration::from_secs(30));
    let limited = Receiver::start().await;
    client
        .endpoint(
            &hanging,
            json!({ "events": ["ticket.created"], "max_in_flight": 4 }),
        )
        .await;
    client
        .endpoint(
            &limited,
            json!({ "events": ["ticket.updated"], "rate_limit_per_second": 1 }),
        )
        .await;
    for (prefix, event_type) in [("h", "ticket.created"), ("r", "ticket.updated")] {
        client
            .ingest(json!({ "events": (0..20)
                .map(|i| event(&format!("{prefix}{i}"), event_type)).collect::<Vec<_>>() }))
            .await;
    }
    // The hanging receiver records a request when it answers: watch its concurrency instead.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while hanging.max_concurrency() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hanging receiver never held 4 requests"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    limited.wait_for(1, Duration::from_secs(10)).await;

    let started = tokio::time::Instant::now();
    app.stop().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "a shutdown with a 1 s timeout took {took:?} with hanging and rate-limited receivers"
    );

    // What the stopped instance held is rescued and delivered by the next one.
    hanging.delay(Duration::ZERO);
    let next = TestApp::spawn_on(db, settings).await;
    let distinct = |r: &[crate::support::receiver::Received]| {
        r.iter()
            .filter(|r| r.answered < 300)
            .map(|r| r.event_id())
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    hanging
        .wait_until(Duration::from_secs(30), |r| distinct(r) >= 20)
        .await;
    // The rate-limited backlog is still there, waiting for its slots: none of it was lost.
    let kept: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM delivery) + (SELECT count(*) FROM delivery_finished)",
    )
    .fetch_one(&next.pool)
    .await
    .expect("count");
    assert_eq!(kept, 40);
    next.stop().await;
}

#[tokio::test]
async fn a_workers_only_instance_rescues_leases_a_dead_worker_left() {
    let app = TestApp::spawn_with(|config| {
        config.roles = deskhook::config::Roles {
            api: true,
            workers: true,
            timers: false,
        };
    })
    .await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    client
        .endpoint(&receiver, json!({ "events": ["ticket.created"] }))
        .await;
    let accepted = client
        .ingest(json!({ "events": [event("orphan", "ticket.closed")] }))
        .await;
    let event_key = ids::decode(Kind::Event, accepted[0]["id"].as_str().expect("id")).expect("key");
    // A worker that died mid-attempt: its row is in flight under a lease that ran out.
    sqlx::query(
        "INSERT INTO delivery (id, workspace_id, endpoint_id, event_id, state, attempt, \
                               lease_until, lease_id) \
         SELECT deskhook_id(), workspace_id, id, $1, 1, 1, now() - interval '1 second', \
                nextval('delivery_lease_seq') FROM endpoint",
    )
    .bind(event_key)
    .execute(&app.pool)
    .await
    .expect("an orphaned lease");
    let received = receiver.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(received[0].header("deskhook-attempt"), "2");
    app.stop().await;
}
