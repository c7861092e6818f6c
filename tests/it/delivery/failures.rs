//! Failures injected for real: refused destinations, a service killed mid-delivery, a database
//! restarted under load. Accepted events are never lost (duplicates are allowed).

use std::{
    collections::HashSet,
    process::{Child, Command, Stdio},
    time::Duration,
};

use reqwest::Method;
use serde_json::json;

use super::{Client, event};
use crate::support::{TestApp, receiver::Receiver};

#[tokio::test]
async fn addresses_outside_the_allow_list_are_refused() {
    // Only 127.0.0.1/32 is allowed (the test app's default).
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    for url in [
        "http://127.0.0.2:9/hook",
        "http://[::1]:9/hook",
        "http://169.254.169.254/latest",
        "http://10.0.0.1/x",
    ] {
        let (status, body) = client
            .call(Method::POST, "/v1/webhooks", Some(json!({ "url": url })))
            .await;
        assert_eq!(status, 422, "{url}: {body}");
        assert!(
            body["error"]["details"]["fields"]["url"]
                .as_str()
                .is_some_and(|r| r.contains("not in DESKHOOK_ALLOW_NETWORKS")),
            "{body}"
        );
    }
    for url in [
        "ftp://127.0.0.1/x",
        "not a url",
        "mailto:someone@example.com",
        "http://user:pw@127.0.0.1/x",
    ] {
        let (status, _) = client
            .call(Method::POST, "/v1/webhooks", Some(json!({ "url": url })))
            .await;
        assert_eq!(status, 422, "{url}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_name_resolving_to_a_refused_address_gets_no_request() {
    // Allow only 127.0.0.2: `localhost` resolves to 127.0.0.1, which is then refused at
    // connect time. The receiver listens there, so a broken guard would show as a request.
    let app = TestApp::spawn_with(|c| {
        c.allow_networks = deskhook::config::parse_networks("127.0.0.2/32").expect("cidr");
        c.retry_schedule = "".parse().expect("no retries");
    })
    .await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    let port = receiver
        .url
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    let (status, created) = client
        .call(
            Method::POST,
            "/v1/webhooks",
            Some(json!({ "url": format!("http://localhost:{port}") })),
        )
        .await;
    assert_eq!(status, 201, "a name is accepted at creation: {created}");
    let webhook = created["data"]["id"].as_str().expect("id").to_owned();
    client.ingest(event("ssrf", "ticket.created")).await;
    let dead = loop {
        let dead = client
            .get(&format!("/v1/deliveries?status=dead&webhook_id={webhook}"))
            .await;
        if dead["data"].as_array().is_some_and(|d| !d.is_empty()) {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let id = dead["data"][0]["id"].as_str().expect("id");
    let delivery = client.get(&format!("/v1/deliveries/{id}")).await;
    assert_eq!(
        delivery["data"]["attempt_log"][0]["outcome"], "refused",
        "{delivery}"
    );
    assert!(
        receiver.received().is_empty(),
        "no request may reach a refused address"
    );
    // An SRE sees the refusal under the label operations.md names.
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains(
            r#"deskhook_delivery_attempts_total{outcome="ssrf_blocked",status_class="none"} 1"#
        ),
        "{metrics}"
    );
    app.stop().await;
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn start_service(database_url: &str, port: u16, data_dir: &std::path::Path) -> Child {
    start_service_with(database_url, port, data_dir, &[])
}

/// `deskhook serve` as a process of its own (its environment is its own), with `env` added.
pub(crate) fn start_service_with(
    database_url: &str,
    port: u16,
    data_dir: &std::path::Path,
    env: &[(&str, &str)],
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_deskhook"))
        .arg("serve")
        .envs(env.iter().copied())
        .env("DATABASE_URL", database_url)
        .env("DESKHOOK_LISTEN", format!("127.0.0.1:{port}"))
        .env("DESKHOOK_DATA_DIR", data_dir)
        .env("DESKHOOK_ALLOW_NETWORKS", "127.0.0.1/32")
        .env("DESKHOOK_ATTEMPT_TIMEOUT", "1s")
        .env("DESKHOOK_RETRY_SCHEDULE", "100ms,100ms,100ms,100ms,100ms")
        .env("DESKHOOK_RATE_LIMIT", "off")
        .env("DESKHOOK_SECRET_KEY", crate::support::OPERATOR_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start deskhook")
}

pub(crate) async fn wait_ready(port: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await
            && response.status() == 200
        {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "service not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_service_killed_mid_delivery_loses_nothing() {
    killed_mid_delivery_loses_nothing(deskhook_testkit::TestDatabase::create().await).await;
}

/// A `deskhook serve` process on `db` is SIGKILLed while it delivers 300 events; restarted,
/// it delivers every accepted event, signed.
pub(crate) async fn killed_mid_delivery_loses_nothing(db: deskhook_testkit::TestDatabase) {
    let pool = db.pool().await;
    let data_dir = std::env::temp_dir().join(format!("deskhook-kill-{}", std::process::id()));
    let port = free_port();
    let mut service = start_service(&db.url, port, &data_dir);
    wait_ready(port).await;

    let workspace = deskhook::auth::create_workspace(&pool, "Kill")
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
        http: reqwest::Client::new(),
    };
    let receiver = Receiver::start().await;
    receiver.delay(Duration::from_millis(20));
    client
        .endpoint(&receiver, json!({ "max_in_flight": 16 }))
        .await;

    let mut accepted = HashSet::new();
    for batch in 0..6 {
        let events: Vec<_> = (0..50)
            .map(|i| event(&format!("k{batch}-{i}"), "ticket.updated"))
            .collect();
        for answer in client.ingest(json!({ "events": events })).await {
            accepted.insert(answer["id"].as_str().unwrap_or_default().to_owned());
        }
    }
    receiver.wait_for(40, Duration::from_secs(20)).await;
    service.kill().expect("SIGKILL");
    service.wait().expect("reaped");
    let before_restart = receiver.received().len();
    assert!(
        before_restart < accepted.len(),
        "the kill must land mid-delivery"
    );

    let mut restarted = start_service(&db.url, port, &data_dir);
    wait_ready(port).await;
    let received = receiver
        .wait_for_events(&accepted, Duration::from_secs(40))
        .await;
    let delivered: HashSet<String> = received.iter().map(|r| r.event_id()).collect();
    assert!(
        accepted.is_subset(&delivered),
        "every accepted event arrives"
    );
    assert!(received.iter().all(|r| r.verified_by == [0]));
    restarted.kill().ok();
    restarted.wait().ok();
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test]
async fn the_service_recovers_by_itself_when_postgres_restarts_under_load() {
    // A server of its own: restarting the shared test server would disturb other tests.
    let dir = std::env::temp_dir().join(format!("deskhook-pg-restart-{}", std::process::id()));
    let mut postgres = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || deskhook_local_postgres::LocalPostgres::start(&dir).expect("private postgres")
    })
    .await
    .expect("join");
    let url = postgres.connect_info().url("postgres");
    let schedule: deskhook::config::RetrySchedule =
        "100ms,200ms,500ms,1s,1s,1s,1s".parse().expect("schedule");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr");
    let mut config = deskhook::config::Config::for_database(&url);
    config.allow_networks = deskhook::config::parse_networks("127.0.0.1/32").expect("cidr");
    config.rate_limit = deskhook::config::RateLimit::Off;
    config.retry_schedule = schedule;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(deskhook::run(config, listener, shutdown.clone()));
    let base = format!("http://{address}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{base}/readyz"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
        != 200
    {
        assert!(tokio::time::Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .expect("pool");
    let workspace = deskhook::auth::create_workspace(&pool, "Restart")
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
    pool.close().await;
    let client = Client {
        base,
        key: key.key,
        http: reqwest::Client::new(),
    };
    let receiver = Receiver::start().await;
    receiver.delay(Duration::from_millis(10));
    client.endpoint(&receiver, json!({})).await;

    let mut accepted = HashSet::new();
    let mut restarted = false;
    for batch in 0..10 {
        if batch == 3 {
            postgres = tokio::task::spawn_blocking(move || {
                postgres.restart().expect("restart");
                postgres
            })
            .await
            .expect("join");
            restarted = true;
        }
        // Right after the restart the first requests may find broken connections: a producer
        // retries until accepted, as it would against any service.
        crate::faults::produce(
            &client,
            &format!("p{batch}"),
            20,
            "ticket.updated",
            &mut accepted,
        )
        .await;
    }
    assert!(restarted);
    receiver
        .wait_for_events(&accepted, Duration::from_secs(40))
        .await;
    shutdown.cancel();
    task.await.expect("join").expect("clean stop");
    tokio::task::spawn_blocking(move || postgres.stop())
        .await
        .expect("stop");
    let _ = std::fs::remove_dir_all(&dir);
}
