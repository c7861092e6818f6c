//! The service on a real Citus cluster (a coordinator and two workers on loopback, from the
//! test kit): migrated the way `deskhook migrate` does it, then used the way tenants use it.
//! Without the Citus extension these tests say so and pass, unless `DESKHOOK_REQUIRE_CITUS`
//! is set (CI installs Citus and sets it, so there they always run).

mod delivery;

use std::time::Duration;

use deskhook_testkit::TestDatabase;
use reqwest::Method;
use serde_json::json;
use sqlx::Connection as _;

use crate::{
    delivery::{Client, event},
    support::{TestApp, receiver::Receiver},
};

/// A fresh database on the Citus cluster, or `None` (with a note) where Citus is missing.
async fn citus_database() -> Option<TestDatabase> {
    skipped_without_citus(TestDatabase::create_on_citus().await)
}

/// `prepared`, or a note that the test is skipped (a failure when CI requires Citus).
fn skipped_without_citus<T>(prepared: Option<T>) -> Option<T> {
    if prepared.is_none() {
        assert!(
            std::env::var_os("DESKHOOK_REQUIRE_CITUS").is_none(),
            "DESKHOOK_REQUIRE_CITUS is set but the Citus extension is not installed \
             (run ../shared/citus/install)"
        );
        eprintln!("skipped: the Citus extension is not installed");
    }
    prepared
}

#[tokio::test]
async fn an_event_is_delivered_signed_on_citus() {
    let Some(db) = citus_database().await else {
        return;
    };
    let app = TestApp::spawn_on(db, |_| {}).await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    client.endpoint(&receiver, json!({})).await;
    client
        .ingest(json!({ "events": [event("citus-1", "ticket.created")] }))
        .await;
    let received = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(received[0].json["type"], "ticket.created");
    assert_eq!(
        received[0].verified_by,
        vec![0],
        "signed with the endpoint's secret"
    );
    app.stop().await;
}

#[tokio::test]
async fn deskhook_migrate_distribute_places_every_table_by_workspace() {
    let Some(db) = citus_database().await else {
        return;
    };
    let url = deskhook::database::prefer_tls_or_plaintext(db.url.clone()).await;
    for _ in 0..2 {
        // The second run finds everything placed and changes nothing.
        let migrate = tokio::process::Command::new(env!("CARGO_BIN_EXE_deskhook"))
            .args(["migrate", "--distribute", "--log-format", "json"])
            .env("DATABASE_URL", &url)
            .output()
            .await
            .expect("deskhook migrate");
        assert!(
            migrate.status.success(),
            "deskhook migrate --distribute failed: {}",
            String::from_utf8_lossy(&migrate.stderr)
        );
    }
    let pool = db.pool().await;
    let placed: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT logicalrelid::regclass::text, partmethod::text || repmodel::text, colocationid \
         FROM pg_dist_partition ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("placements");
    let reference: Vec<&str> = placed
        .iter()
        .filter(|(_, method, _)| method == "nt")
        .map(|(table, _, _)| table.as_str())
        .collect();
    assert_eq!(reference, ["api_key", "workspace"]);
    let distributed: Vec<&(String, String, i32)> = placed
        .iter()
        .filter(|(_, method, _)| method.starts_with('h'))
        .collect();
    assert_eq!(
        distributed.len(),
        deskhook::database::citus::DISTRIBUTED_TABLES.len()
    );
    assert!(
        distributed
            .iter()
            .all(|(_, _, group)| *group == distributed[0].2),
        "every tenant table in one co-location group: {distributed:?}"
    );
    let nodes: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT nodeport) FROM citus_shards WHERE table_name = 'delivery'::regclass",
    )
    .fetch_one(&pool)
    .await
    .expect("shard nodes");
    assert_eq!(
        nodes, 2,
        "the delivery table's shards are spread over both workers"
    );
}

#[tokio::test]
async fn ingest_on_the_distributed_schema_draws_ids_on_each_node_without_collisions() {
    let Some(app) = distributed_api().await else {
        return;
    };
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    client.endpoint(&receiver, json!({})).await;
    let events: Vec<_> = (0..50)
        .map(|i| event(&format!("d-{i}"), "ticket.created"))
        .collect();
    client.ingest(json!({ "events": events })).await;

    // The statement ran whole on the worker holding the workspace's shard, ids included.
    let stored: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(DISTINCT id) FROM event), (SELECT count(DISTINCT id) FROM delivery)",
    )
    .fetch_one(&app.pool)
    .await
    .expect("counts");
    assert_eq!(stored, (50, 50), "every event and its delivery stored once");
    // Each node draws ids with its own node number in them.
    let nodes: Vec<String> = sqlx::query_scalar(
        "SELECT result FROM run_command_on_workers($$SELECT deskhook_id() >> 16 & 63$$) \
         UNION ALL SELECT (deskhook_id() >> 16 & 63)::text",
    )
    .fetch_all(&app.pool)
    .await
    .expect("node numbers");
    let mut distinct = nodes.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "coordinator and workers: {nodes:?}");
    app.stop().await;
}

/// A fresh database on the cluster, migrated and distributed as `deskhook migrate
/// --distribute` leaves it.
async fn distributed_database() -> Option<TestDatabase> {
    let db = citus_database().await?;
    migrate_and_distribute(&db).await;
    Some(db)
}

/// What `deskhook migrate --distribute` does to `db`.
async fn migrate_and_distribute(db: &TestDatabase) {
    let url = deskhook::database::prefer_tls_or_plaintext(db.url.clone()).await;
    deskhook::database::migrate_url(&url)
        .await
        .expect("migrate");
    deskhook::database::distribute_url(&url)
        .await
        .expect("distribute");
}

/// An instance on a distributed database running `roles`.
async fn spawn_on_distributed(db: TestDatabase, roles: deskhook::config::Roles) -> TestApp {
    TestApp::spawn_on(db, |config| config.roles = roles).await
}

/// A distributed database and an instance on it serving the API alone: the claim does not
/// run on distributed tables yet (docs/scaling.md).
async fn distributed_api() -> Option<TestApp> {
    let db = distributed_database().await?;
    let roles = deskhook::config::Roles {
        api: true,
        workers: false,
        timers: false,
    };
    Some(spawn_on_distributed(db, roles).await)
}

#[tokio::test]
async fn the_helpdesk_main_paths_work_on_the_distributed_schema() {
    let Some(app) = distributed_api().await else {
        return;
    };
    let api = app.api("citus").await;
    let agent = api.user("Jane Smith", "jane@example.com").await;
    let agent_id = agent["id"].as_str().expect("id");
    let (status, group) = api.post("/groups", json!({"name": "Sales"})).await;
    assert_eq!(status, 201, "{group}");
    let group_id = group["data"]["id"].as_str().expect("id");

    let ticket = api.ticket("Quote", "a@example.com").await;
    let ticket_id = ticket["id"].as_str().expect("id");
    let (status, routed) = api
        .patch(
            &format!("/tickets/{ticket_id}"),
            json!({"group_id": group_id, "assignee_id": agent_id, "tags": ["vip", "emea"],
                   "priority": "high"}),
        )
        .await;
    assert_eq!(status, 200, "{routed}");
    assert_eq!(routed["data"]["group"]["name"], "Sales");
    assert_eq!(routed["data"]["assignee"]["id"], agent_id);

    let agent_api = api
        .other_key(
            &app.pool,
            &[deskhook::auth::Scope::Write],
            Some(crate::support::key_of(
                deskhook::ids::Kind::User,
                &agent["id"],
            )),
        )
        .await;
    let (status, reply) = agent_api
        .post(
            &format!("/tickets/{ticket_id}/messages"),
            json!({"body": "We are on it", "type": "reply"}),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let (status, shown) = api.get(&format!("/tickets/{ticket_id}")).await;
    assert_eq!(status, 200, "{shown}");
    let mut tags: Vec<&str> = shown["data"]["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    tags.sort_unstable();
    assert_eq!(tags, ["emea", "vip"]);
    let (status, listed) = api.get("/tickets?tags=vip").await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["meta"]["total"], 1);
    let (status, messages) = api.get(&format!("/tickets/{ticket_id}/messages")).await;
    assert_eq!(status, 200, "{messages}");
    let (status, customers) = api.get("/customers").await;
    assert_eq!(status, 200, "{customers}");
    let (status, tag_list) = api.get("/tags").await;
    assert_eq!(status, 200, "{tag_list}");

    let (status, deleted) = api.delete(&format!("/groups/{group_id}")).await;
    assert_eq!(status, 204, "{deleted}");
    let (_, ungrouped) = api.get(&format!("/tickets/{ticket_id}")).await;
    assert!(ungrouped["data"]["group"].is_null());

    // Every change emitted its event in the same transaction, on the workspace's shard.
    let events: Vec<String> =
        sqlx::query_scalar("SELECT event_type FROM event WHERE workspace_id = $1 ORDER BY id")
            .bind(api.workspace_id)
            .fetch_all(&app.pool)
            .await
            .expect("events");
    assert!(events.iter().any(|t| t == "ticket.created"), "{events:?}");
    assert!(events.iter().any(|t| t == "ticket.replied"), "{events:?}");
    app.stop().await;
}

#[tokio::test]
async fn the_webhook_api_works_on_the_distributed_schema() {
    let Some(app) = distributed_api().await else {
        return;
    };
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    let (endpoint, _) = client.endpoint(&receiver, json!({})).await;
    client
        .ingest(json!({ "events": [event("w-1", "ticket.created")] }))
        .await;
    let calls = [
        (Method::GET, "/v1/webhooks".to_owned(), None, 200),
        (Method::GET, format!("/v1/webhooks/{endpoint}"), None, 200),
        (
            Method::PATCH,
            format!("/v1/webhooks/{endpoint}"),
            Some(json!({"enabled": false})),
            200,
        ),
        (
            Method::POST,
            format!("/v1/webhooks/{endpoint}/enable"),
            None,
            200,
        ),
        (
            Method::GET,
            format!("/v1/webhooks/{endpoint}/secret"),
            None,
            200,
        ),
        (
            Method::POST,
            format!("/v1/webhooks/{endpoint}/rotate-secret"),
            None,
            200,
        ),
        (
            Method::POST,
            format!("/v1/webhooks/{endpoint}/test"),
            None,
            202,
        ),
        (Method::GET, "/v1/events".to_owned(), None, 200),
        (Method::GET, "/v1/deliveries".to_owned(), None, 200),
    ];
    for (method, path, body, expected) in calls {
        let (status, answer) = client.call(method.clone(), &path, body).await;
        assert_eq!(status, expected, "{method} {path}: {answer}");
    }
    let (_, deliveries) = client.call(Method::GET, "/v1/deliveries", None).await;
    let listed = deliveries["data"].as_array().expect("deliveries");
    assert_eq!(
        listed.len(),
        2,
        "the ingested event's and the test's: {deliveries}"
    );
    let delivery = listed[0]["id"].as_str().expect("id");
    let (status, shown) = client
        .call(Method::GET, &format!("/v1/deliveries/{delivery}"), None)
        .await;
    assert_eq!(status, 200, "{shown}");
    let (status, deleted) = client
        .call(Method::DELETE, &format!("/v1/webhooks/{endpoint}"), None)
        .await;
    assert_eq!(status, 204, "{deleted}");
    app.stop().await;
}

#[tokio::test]
async fn distribute_on_plain_postgres_migrates_then_says_in_one_line_what_is_missing() {
    let db = TestDatabase::create_empty().await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_deskhook"))
        .args(["migrate", "--distribute"])
        .env("DATABASE_URL", &db.url)
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("deskhook migrate");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("no Citus extension") && last.contains("CREATE EXTENSION citus"),
        "one line saying what to do: {stderr}"
    );
    // The migrations themselves went in; only the placing was refused.
    let applied: bool = deskhook::database::migrations_applied(&db.pool().await)
        .await
        .expect("migrations");
    assert!(applied);
}

#[tokio::test]
async fn retention_sweeps_the_distributed_schema() {
    let Some(app) = distributed_api().await else {
        return;
    };
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    client
        .endpoint(&receiver, json!({ "events": ["ticket.created"] }))
        .await;
    // One event nobody subscribes to (history only) and one with a waiting delivery.
    client
        .ingest(
            json!({ "events": [event("r-1", "ticket.closed"), event("r-2", "ticket.created")] }),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(5)).await;

    let deleted = deskhook::queue::retention::sweep(&app.pool, Duration::ZERO)
        .await
        .expect("a sweep across shards");
    assert_eq!(deleted, [0, 0, 1], "only the unreferenced event goes");
    let kept: Vec<String> = sqlx::query_scalar("SELECT event_type FROM event")
        .fetch_all(&app.pool)
        .await
        .expect("events");
    assert_eq!(
        kept,
        ["ticket.created"],
        "the event a delivery waits for stays"
    );
    app.stop().await;
}

#[tokio::test]
async fn sla_timers_fire_once_per_deadline_on_the_distributed_schema() {
    let Some(db) = distributed_database().await else {
        return;
    };
    // The API and the timers; two instances, so each deadline is contended.
    let roles = deskhook::config::Roles {
        api: true,
        workers: false,
        timers: true,
    };
    let first = spawn_on_distributed(db.clone(), roles).await;
    let second = spawn_on_distributed(db, roles).await;
    let desk = crate::sla::Desk::new(&first).await;
    desk.policy(json!([{"metric": "first_response", "priority": "urgent",
                        "minutes": 0.05, "warn_before_minutes": 0.025}]))
        .await;
    let ticket = desk.ticket("Down", "urgent").await;
    let ticket_id = ticket["id"].as_str().expect("id").to_owned();

    let fired = |kind: &'static str| {
        let pool = first.pool.clone();
        let ticket_id = ticket_id.clone();
        async move {
            let count: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM event WHERE event_type = $1 AND ticket_key = $2",
            )
            .bind(kind)
            .bind(ticket_id)
            .fetch_one(&pool)
            .await
            .expect("events");
            count
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while fired("sla.breached").await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no sla.breached within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fired("sla.at_risk").await, 1, "one at-risk per deadline");
    assert_eq!(fired("sla.breached").await, 1, "one breach per deadline");
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn migrations_added_after_distributing_apply_on_the_cluster() {
    // An operator upgrading a distributed deployment: the schema was distributed at an older
    // release, then `deskhook migrate` applies what came since.
    let Some(db) = citus_database().await else {
        return;
    };
    let url = deskhook::database::prefer_tls_or_plaintext(db.url.clone()).await;
    let first_after = 20_261_205_000_000;
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    crate::schema::apply_before(&mut conn, first_after).await;
    deskhook::database::distribute_url(&url)
        .await
        .expect("distribute");
    deskhook::database::migrate_url(&url)
        .await
        .expect("the later migrations apply on the distributed schema");
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes \
         WHERE tablename = 'delivery' AND indexname LIKE 'delivery_ready%' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .expect("indexes");
    assert_eq!(indexes, ["delivery_ready", "delivery_ready_lane"]);
}
