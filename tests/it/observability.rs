//! What an SRE sees: `/metrics` moves with real deliveries to real receivers, the sampled queue
//! gauges show a stalled backlog and its drain, and every metric the dashboard and the alert
//! rules use is one the running service really exports.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use deskhook::config::Roles;
use serde_json::{Value, json};

use crate::{
    delivery::{Client, event},
    support::{TestApp, receiver::Receiver},
};

const WAIT: Duration = Duration::from_secs(20);

/// One scrape of `/metrics`, parsed.
struct Scrape {
    /// `name{labels}` → value, labels as exported (sorted by the encoder).
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
    /// Family name → type, from the `# TYPE` lines.
    types: BTreeMap<String, String>,
    /// Family name → help, from the `# HELP` lines.
    help: BTreeMap<String, String>,
}

impl Scrape {
    async fn of(app: &TestApp) -> Self {
        let response = app
            .client
            .get(app.url("/metrics"))
            .send()
            .await
            .expect("scrape");
        assert_eq!(response.status(), 200);
        Self::parse(&response.text().await.expect("text"))
    }

    fn parse(text: &str) -> Self {
        let mut scrape = Self {
            samples: Vec::new(),
            types: BTreeMap::new(),
            help: BTreeMap::new(),
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line");
                scrape.types.insert(name.to_owned(), kind.to_owned());
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                scrape.help.insert(name.to_owned(), help.to_owned());
            } else if !line.is_empty() && !line.starts_with('#') {
                let (series, value) = line.rsplit_once(' ').expect("sample line");
                let value: f64 = value.parse().expect("sample value");
                let (name, labels) = match series.split_once('{') {
                    Some((name, labels)) => (name, parse_labels(labels.trim_end_matches('}'))),
                    None => (series, BTreeMap::new()),
                };
                scrape.samples.push((name.to_owned(), labels, value));
            }
        }
        scrape
    }

    /// The sum of every series of `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|(n, _, _)| n == name)
    }
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    // Label values here never hold `",`; the encoder escapes quotes as `\"`.
    text.split("\",")
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').expect("label pair");
            (
                key.to_owned(),
                value.trim_matches('"').replace("\\\"", "\""),
            )
        })
        .collect()
}

/// Scrapes until `ready` holds (the sampled gauges refresh every 5 s); panics after `within`.
async fn scrape_until(app: &TestApp, within: Duration, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let scrape = Scrape::of(app).await;
        if ready(&scrape) {
            return scrape;
        }
        if tokio::time::Instant::now() > deadline {
            let lines: Vec<String> = scrape
                .samples
                .iter()
                .filter(|(n, _, _)| n.starts_with("deskhook_") && !n.ends_with("_bucket"))
                .map(|(n, l, v)| format!("{n}{l:?} {v}"))
                .collect();
            panic!(
                "the metrics did not reach the expected state within {within:?}:\n{}",
                lines.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn counters_and_gauges_move_with_real_deliveries() {
    // No retries: a failing receiver's deliveries go dead on their first attempt.
    let app =
        TestApp::spawn_with(|config| config.retry_schedule = "".parse().expect("empty")).await;
    let client = Client::new(&app).await;
    let good = Receiver::start().await;
    let failing = Receiver::start().await;
    failing.respond_with(500);
    client.endpoint(&good, json!({})).await;
    client.endpoint(&failing, json!({})).await;
    let before = Scrape::of(&app).await;

    let types = ["ticket.created", "ticket.replied", "ticket.closed"];
    client
        .ingest(json!({ "events": types.iter().enumerate()
            .map(|(i, t)| event(&format!("m{i}"), t)).collect::<Vec<_>>() }))
        .await;
    good.wait_for(3, WAIT).await;
    failing.wait_for(3, WAIT).await;

    // Three dead deliveries in a row disable the failing endpoint; the sampler sees it all.
    let after = scrape_until(&app, WAIT, |s| {
        s.value("deskhook_dead_letters", &[]) == 3.0
            && s.value("deskhook_webhooks", &[("state", "disabled")]) == 1.0
            && s.value("deskhook_queue_depth", &[]) == 0.0
    })
    .await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    assert_eq!(delta("deskhook_events_total", &[("source", "ingest")]), 3.0);
    assert_eq!(
        delta(
            "deskhook_events_total",
            &[("type", "ticket.replied"), ("source", "ingest")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "deskhook_delivery_attempts_total",
            &[("outcome", "success"), ("status_class", "2xx")]
        ),
        3.0
    );
    assert_eq!(
        delta(
            "deskhook_delivery_attempts_total",
            &[("outcome", "http_error"), ("status_class", "5xx")]
        ),
        3.0
    );
    assert_eq!(
        delta(
            "deskhook_deliveries_completed_total",
            &[("result", "succeeded")]
        ),
        3.0
    );
    assert_eq!(
        delta("deskhook_deliveries_completed_total", &[("result", "dead")]),
        3.0
    );
    assert_eq!(
        delta(
            "deskhook_delivery_latency_seconds_count",
            &[("result", "succeeded")]
        ),
        3.0
    );
    assert_eq!(
        delta("deskhook_delivery_attempt_duration_seconds_count", &[]),
        6.0
    );
    assert_eq!(
        delta(
            "deskhook_webhooks_disabled_total",
            &[("reason", "consecutive_failures")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "deskhook_http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/v1/events"),
                ("status_class", "2xx")
            ]
        ),
        1.0
    );
    assert_eq!(
        after.value("deskhook_webhooks", &[("state", "enabled")]),
        1.0
    );
    assert_eq!(after.value("deskhook_queue_oldest_due_seconds", &[]), 0.0);
    assert_eq!(after.value("deskhook_db_pool_max_connections", &[]), 10.0);
    assert!(after.value("deskhook_db_pool_connections", &[]) >= 1.0);
    assert!(after.has("deskhook_db_oldest_xact_age_seconds"));
    for role in ["api", "workers", "timers"] {
        assert_eq!(
            after.value("deskhook_instance_roles", &[("role", role)]),
            1.0
        );
    }
    assert_eq!(
        after.value("deskhook_metrics_sample_failures_total", &[]),
        0.0
    );
    app.stop().await;
}

#[tokio::test]
async fn the_queue_gauges_show_a_stalled_backlog_and_its_drain() {
    // An API-only instance accepts events but delivers nothing: the backlog builds.
    let api = TestApp::spawn_api_only().await;
    let client = Client::new(&api).await;
    let receiver = Receiver::start().await;
    client.endpoint(&receiver, json!({})).await;
    client
        .ingest(json!({ "events": (0..5)
            .map(|i| event(&format!("b{i}"), "ticket.created")).collect::<Vec<_>>() }))
        .await;
    let stalled = scrape_until(&api, WAIT, |s| {
        s.value("deskhook_queue_depth", &[("status", "pending")]) == 5.0
            && s.value("deskhook_queue_oldest_due_seconds", &[]) > 0.0
    })
    .await;
    assert_eq!(
        stalled.value("deskhook_queue_depth", &[("status", "delivering")]),
        0.0
    );
    assert_eq!(
        stalled.value("deskhook_instance_roles", &[("role", "workers")]),
        0.0
    );
    assert!(receiver.received().is_empty());

    // A worker instance on the same database drains it; both instances' gauges say so.
    let workers = TestApp::spawn_on(api.db.clone(), |config| {
        config.roles = Roles {
            api: false,
            workers: true,
            timers: true,
        };
    })
    .await;
    receiver.wait_for(5, WAIT).await;
    for app in [&workers, &api] {
        scrape_until(app, WAIT, |s| {
            s.value("deskhook_queue_depth", &[]) == 0.0
                && s.value("deskhook_queue_oldest_due_seconds", &[]) == 0.0
        })
        .await;
    }
    let drained = Scrape::of(&workers).await;
    assert_eq!(
        drained.value(
            "deskhook_delivery_attempts_total",
            &[("outcome", "success")]
        ),
        5.0
    );
    assert_eq!(
        drained.value("deskhook_instance_roles", &[("role", "api")]),
        0.0
    );
    workers.stop().await;
    api.stop().await;
}

/// The dashboard and rules files, from the repository.
fn read(path: &str) -> String {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|error| panic!("{full}: {error}"))
}

/// Every PromQL expression of a Grafana dashboard (panel targets and template queries).
fn dashboard_expressions(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                match (key.as_str(), item) {
                    ("expr" | "definition", Value::String(expr)) => found.push(expr.clone()),
                    _ => dashboard_expressions(item, found),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                dashboard_expressions(item, found);
            }
        }
        _ => {}
    }
}

/// The values of `key:` in a YAML file, following `|` and `>` blocks (enough for rules files,
/// which is all this reads).
fn yaml_values(text: &str, key: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut values = Vec::new();
    let marker = format!("{key}:");
    for (index, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start().trim_start_matches("- ");
        let Some(rest) = trimmed.strip_prefix(&marker) else {
            continue;
        };
        let rest = rest.trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            let indent = line.len() - line.trim_start().len();
            let block: Vec<&str> = lines[index + 1..]
                .iter()
                .take_while(|next| {
                    next.trim().is_empty() || next.len() - next.trim_start().len() > indent
                })
                .copied()
                .collect();
            values.push(block.join("\n"));
        } else {
            values.push(rest.trim_matches('\'').trim_matches('"').to_owned());
        }
    }
    values
}

/// Metric names (`deskhook_…`, `process_…`, `up`) and recording rules (`deskhook:…`) that an
/// expression refers to. Text inside quotes (label values) is skipped.
fn references(expr: &str) -> BTreeSet<String> {
    let mut unquoted = String::new();
    let mut quoted = false;
    for c in expr.chars() {
        if c == '"' {
            quoted = !quoted;
            unquoted.push(' ');
        } else if !quoted {
            unquoted.push(c);
        }
    }
    unquoted
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|token| {
            token.starts_with("deskhook_")
                || token.starts_with("deskhook:")
                || token.starts_with("process_")
        })
        .map(ToOwned::to_owned)
        .collect()
}

#[tokio::test]
async fn the_dashboard_and_the_rules_use_only_metrics_the_service_exports() {
    // Some traffic, so the families that appear with their first event are exported too.
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    client.endpoint(&receiver, json!({})).await;
    client
        .ingest(json!({ "events": [event("n1", "ticket.created")] }))
        .await;
    receiver.wait_for(1, WAIT).await;
    let scrape = scrape_until(&app, WAIT, |s| {
        s.has("deskhook_delivery_attempts_total") && s.has("deskhook_events_total")
    })
    .await;
    let exported = &scrape.types;

    let dashboard: Value =
        serde_json::from_str(&read("dashboards/grafana/deskhook-delivery.json")).expect("JSON");
    let mut dashboard_exprs = Vec::new();
    dashboard_expressions(&dashboard, &mut dashboard_exprs);
    let alerts = read("dashboards/prometheus/alerts.yaml");
    let recording = read("dashboards/prometheus/recording.yaml");
    let tests = read("dashboards/prometheus/alerts_test.yaml");
    let recorded: BTreeSet<String> = yaml_values(&recording, "record").into_iter().collect();
    assert!(recorded.len() >= 5, "{recorded:?}");

    let sources = [
        ("the dashboard", dashboard_exprs),
        ("alerts.yaml", yaml_values(&alerts, "expr")),
        ("recording.yaml", yaml_values(&recording, "expr")),
        (
            "alerts_test.yaml input series",
            yaml_values(&tests, "series"),
        ),
    ];
    let mut used = BTreeSet::new();
    for (source, exprs) in &sources {
        assert!(exprs.len() >= 5, "{source}: too few expressions found");
        for expr in exprs {
            for name in references(expr) {
                if name.starts_with("deskhook:") {
                    assert!(
                        recorded.contains(&name),
                        "{source} uses the recording rule {name}, which recording.yaml does not define: {expr}"
                    );
                    continue;
                }
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| {
                        name.strip_suffix(suffix)
                            .filter(|base| exported.get(*base).is_some_and(|t| t == "histogram"))
                    })
                    .unwrap_or(&name)
                    .to_owned();
                assert!(
                    exported.contains_key(&base),
                    "{source} uses {name}, which Deskhook does not export: {expr}"
                );
                used.insert(base);
            }
        }
    }
    assert!(used.len() >= 15, "few metrics found: {used:?}");

    // And the other way round: every exported metric is documented in the map.
    let readme = read("dashboards/README.md");
    for name in exported.keys().filter(|n| n.starts_with("deskhook_")) {
        assert!(
            readme.contains(&format!("`{name}")),
            "dashboards/README.md does not mention {name}"
        );
        assert!(
            !scrape.help.get(name).is_none_or(String::is_empty),
            "{name} has no help line"
        );
    }
    app.stop().await;
}

#[test]
fn the_reference_scanner_reads_promql() {
    let refs = references(
        r#"histogram_quantile(0.95, sum by (le) (rate(deskhook_delivery_latency_seconds_bucket{job=~"deskhook_x"}[5m]))) / deskhook:ratio:rate5m"#,
    );
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        [
            "deskhook:ratio:rate5m",
            "deskhook_delivery_latency_seconds_bucket"
        ]
    );
    let yaml = "rules:\n  - record: a:b\n    expr: |\n      sum(x)\n        / y\n  - alert: A\n    expr: up == 0\n";
    assert_eq!(
        yaml_values(yaml, "expr"),
        ["      sum(x)\n        / y", "up == 0"]
    );
    assert_eq!(yaml_values(yaml, "record"), ["a:b"]);
}

#[tokio::test]
async fn made_up_methods_add_no_metric_series() {
    let app = TestApp::spawn().await;
    let client = reqwest::Client::new();
    for n in 0..50 {
        let method = reqwest::Method::from_bytes(format!("X{n}").as_bytes()).expect("method");
        let _ = client
            .request(method, app.url("/healthz"))
            .send()
            .await
            .expect("request");
    }
    let text = client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    assert!(
        !text.contains("method=\"X"),
        "a made-up method became a label"
    );
    assert!(
        text.contains("method=\"other\""),
        "made-up methods are not counted"
    );
    app.stop().await;
}
