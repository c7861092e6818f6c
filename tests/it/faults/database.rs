//! PostgreSQL failing under load: restarted (fast and immediate shutdowns), and its
//! connections cut and delayed by a TCP proxy between the service and the database.

use std::{collections::HashSet, net::SocketAddr, time::Duration};

use deskhook_testkit::TestDatabase;
use serde_json::json;

use super::{produce, settle_and_report};
use crate::{
    delivery::Client,
    support::{TestApp, proxy::Proxy, receiver::Receiver},
};

/// `url` with its `host:port` replaced by `address`.
fn via(url: &str, address: SocketAddr) -> String {
    let (credentials, rest) = url.rsplit_once('@').expect("a postgres:// URL");
    let (_, database) = rest.split_once('/').expect("a database");
    format!("{credentials}@{address}/{database}")
}

/// The `host:port` of `url`.
fn address_of(url: &str) -> SocketAddr {
    let (_, rest) = url.rsplit_once('@').expect("a postgres:// URL");
    let (host, _) = rest.split_once('/').expect("a database");
    host.parse().expect("host:port")
}

async fn workspace_client(app: &TestApp) -> (Client, Receiver) {
    let client = Client::new(app).await;
    let receiver = Receiver::start().await;
    receiver.delay(Duration::from_millis(5));
    client.endpoint(&receiver, json!({})).await;
    (client, receiver)
}

fn fast_retries(config: &mut deskhook::config::Config) {
    config.retry_schedule = "100ms,200ms,500ms,1s,1s,1s,1s,1s"
        .parse()
        .expect("schedule");
}

#[tokio::test]
async fn postgres_restarted_fast_and_immediately_under_load_loses_nothing() {
    // A server of its own: restarting the shared test server would disturb other tests.
    let dir = std::env::temp_dir().join(format!("deskhook-faults-pg-{}", std::process::id()));
    let mut postgres = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || deskhook_local_postgres::LocalPostgres::start(&dir).expect("private postgres")
    })
    .await
    .expect("join");
    let db = TestDatabase {
        url: postgres.connect_info().url("postgres"),
        name: "postgres".to_owned(),
    };
    let app = TestApp::spawn_on(db, fast_retries).await;
    let (client, receiver) = workspace_client(&app).await;
    let mut accepted = HashSet::new();
    let restarts = 6;
    for round in 0..(restarts * 2 + 2) {
        if round % 2 == 1 && round / 2 < restarts {
            let immediate = (round / 2) % 2 == 1;
            postgres = tokio::task::spawn_blocking(move || {
                if immediate {
                    postgres.crash_and_restart().expect("immediate restart");
                } else {
                    postgres.restart().expect("fast restart");
                }
                postgres
            })
            .await
            .expect("join");
        }
        produce(
            &client,
            &format!("pg{round}"),
            25,
            "ticket.created",
            &mut accepted,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    settle_and_report(
        "PostgreSQL restarts (3 fast, 3 immediate) under load",
        restarts,
        &accepted,
        &receiver,
        Duration::from_secs(60),
    )
    .await;
    app.stop().await;
    tokio::task::spawn_blocking(move || postgres.stop())
        .await
        .expect("stop");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn database_connections_cut_and_delayed_under_load_lose_nothing() {
    let db = TestDatabase::create().await;
    let proxy = Proxy::start(address_of(&db.url)).await;
    let through_proxy = TestDatabase {
        url: via(&db.url, proxy.address),
        name: db.name.clone(),
    };
    let app = TestApp::spawn_on(through_proxy, fast_retries).await;
    let (client, receiver) = workspace_client(&app).await;
    let mut accepted = HashSet::new();
    let cuts = 8;
    for round in 0..(cuts + 6) {
        match round {
            // Every connection dropped at once, eight times.
            r if r < cuts => proxy.cut(),
            // Then a slow network: every chunk held 300 ms, both ways.
            r if r == cuts => proxy.delay(Duration::from_millis(300)),
            r if r == cuts + 3 => proxy.delay(Duration::ZERO),
            _ => {}
        }
        produce(
            &client,
            &format!("cut{round}"),
            25,
            "ticket.created",
            &mut accepted,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    settle_and_report(
        "database connections cut (8x) and delayed (300 ms) under load",
        cuts,
        &accepted,
        &receiver,
        Duration::from_secs(60),
    )
    .await;
    app.stop().await;
}
