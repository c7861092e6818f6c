//! Operations routes: liveness, readiness, metrics, and the envelope on unknown routes.

use serde_json::Value;

use crate::support::TestApp;

#[tokio::test]
async fn health_and_readiness_answer_without_a_key() {
    let app = TestApp::spawn().await;
    let health = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let ready = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    app.stop().await;
}

#[tokio::test]
async fn readiness_is_503_while_the_database_is_unreachable() {
    // A port nothing listens on: the instance is alive but not ready.
    let db = deskhook_testkit::TestDatabase::create().await;
    let mut config = deskhook::config::Config::for_database("postgres://nobody:x@127.0.0.1:1/none");
    config.pool_size = 2;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(deskhook::run(config, listener, shutdown.clone()));
    let client = reqwest::Client::new();
    let health = client
        .get(format!("http://{address}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let ready = client
        .get(format!("http://{address}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.expect("json");
    assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE");
    shutdown.cancel();
    task.await.expect("join").expect("clean stop");
    drop(db);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_with_the_error_envelope() {
    let app = TestApp::spawn().await;
    let missing = app
        .client
        .get(app.url("/nope"))
        .send()
        .await
        .expect("request");
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.expect("json");
    assert_eq!(body["error"]["code"], "NOT_FOUND");
    assert!(body["error"]["details"].is_object());

    let wrong_method = app
        .client
        .post(app.url("/healthz"))
        .send()
        .await
        .expect("request");
    assert_eq!(wrong_method.status(), 405);
    let body: Value = wrong_method.json().await.expect("json");
    assert_eq!(body["error"]["code"], "METHOD_NOT_ALLOWED");
    app.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let app = TestApp::spawn().await;
    for _ in 0..3 {
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("healthz");
    }
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let line = text
        .lines()
        .find(|line| {
            line.starts_with("deskhook_http_requests_total{")
                && line.contains(r#"route="/healthz""#)
                && line.contains(r#"status_class="2xx""#)
        })
        .expect("a counter for /healthz");
    let count: f64 = line
        .rsplit(' ')
        .next()
        .expect("value")
        .parse()
        .expect("number");
    assert!(count >= 3.0, "{line}");
    assert!(text.contains("process_cpu_seconds_total"));
    app.stop().await;
}

#[tokio::test]
async fn several_instances_share_one_database() {
    let first = TestApp::spawn().await;
    let second = TestApp::spawn_on(first.db.clone(), |_| {}).await;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&first.pool)
        .await
        .expect("count migrations");
    assert_eq!(applied, deskhook::database::MIGRATOR.iter().count() as i64);
    for app in [&first, &second] {
        let ready = app
            .client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        assert_eq!(ready.status(), 200);
    }
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn metrics_list_the_whole_catalogue_from_the_start() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.expect("text");
    // Before any event: the families whose series are known up front, with help and type.
    for (name, kind) in [
        ("deskhook_http_requests_total", "counter"),
        ("deskhook_http_request_duration_seconds", "histogram"),
        ("deskhook_deliveries_completed_total", "counter"),
        ("deskhook_delivery_attempt_duration_seconds", "histogram"),
        ("deskhook_delivery_latency_seconds", "histogram"),
        ("deskhook_delivery_settles_fenced_total", "counter"),
        ("deskhook_delivery_leases_rescued_total", "counter"),
        ("deskhook_queue_depth", "gauge"),
        ("deskhook_queue_oldest_due_seconds", "gauge"),
        ("deskhook_dead_letters", "gauge"),
        ("deskhook_webhooks", "gauge"),
        ("deskhook_webhooks_disabled_total", "counter"),
        ("deskhook_sla_events_total", "counter"),
        ("deskhook_sla_timer_lag_seconds", "histogram"),
        ("deskhook_db_oldest_xact_age_seconds", "gauge"),
        ("deskhook_db_pool_connections", "gauge"),
        ("deskhook_db_pool_idle_connections", "gauge"),
        ("deskhook_db_pool_max_connections", "gauge"),
        ("deskhook_instance_roles", "gauge"),
        ("process_resident_memory_bytes", "gauge"),
    ] {
        assert!(
            text.lines()
                .any(|line| line.starts_with(&format!("# HELP {name} "))),
            "no help line for {name}"
        );
        assert!(
            text.lines()
                .any(|line| line == format!("# TYPE {name} {kind}")),
            "{name} is not a {kind}"
        );
    }
    for series in [
        r#"deskhook_queue_depth{status="pending"}"#,
        r#"deskhook_queue_depth{status="retrying"}"#,
        r#"deskhook_queue_depth{status="delivering"}"#,
        r#"deskhook_webhooks{state="enabled"}"#,
        r#"deskhook_sla_events_total{kind="breached",metric="first_response"}"#,
        r#"deskhook_webhooks_disabled_total{reason="gone_410"}"#,
    ] {
        assert!(
            text.lines()
                .any(|line| line.starts_with(&format!("{series} "))),
            "no series {series}"
        );
    }
    // No label value may be an id or a URL.
    for line in text.lines().filter(|l| l.starts_with("deskhook_")) {
        assert!(
            !line.contains("http://") && !line.contains("evt_") && !line.contains("wh_"),
            "{line}"
        );
    }
    app.stop().await;
}
