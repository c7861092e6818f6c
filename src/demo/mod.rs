//! `deskhook demo`: the first-run experience. One command starts everything in this process
//! (the private PostgreSQL unless `DATABASE_URL` is set, a Deskhook instance on a free
//! loopback port, a local receiver that verifies signatures), then, through the public REST
//! API as any client would, creates an endpoint, a ticket, a reply and a close, and shows each
//! delivery arriving with its signature verified. It ends by printing where to look next,
//! stops the instance and the private PostgreSQL, and exits.
//!
//! Rules: the demo only ever lets its own receiver's `127.0.0.1` through the SSRF guard; it
//! never fakes an event or a verification (a step the product cannot do yet says so); every
//! wait is bounded, so it always finishes on its own.
//!
//! Each step is one function over [`Demo`]; the SLA at-risk step is [`sla_at_risk`], which
//! creates a short SLA policy and waits for the `sla.at_risk` delivery from the SLA timer.

pub mod receiver;

use std::{net::IpAddr, time::Duration};

use anyhow::{Context as _, bail};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{self, Scope},
    config::{Config, RetrySchedule},
    database::{self, DatabaseSettings},
    ids::{self, Kind},
    secret_box::SecretBox,
    signing::SigningSecret,
};
use receiver::{Arrival, Receiver};

/// The whole demo must finish within this, whatever happens.
pub const DEADLINE: Duration = Duration::from_secs(180);

/// How long one delivery may take to arrive.
const ARRIVAL_WAIT: Duration = Duration::from_secs(30);

/// The event types the demo's endpoint subscribes to.
const EVENT_TYPES: [&str; 4] = [
    "ticket.created",
    "ticket.replied",
    "ticket.closed",
    "sla.at_risk",
];

/// Runs the demo against the database `settings` describe.
pub async fn run(settings: DatabaseSettings) -> anyhow::Result<()> {
    quiet_logs();
    let external = settings.url.is_some();
    let data_dir = settings.data_dir.clone();
    println!("Deskhook demo: the whole product, in one command.\n");
    if external {
        println!("[1] Database: DATABASE_URL");
    } else {
        println!(
            "[1] Database: a private PostgreSQL in {} (stopped when the demo ends)",
            data_dir.join("pg").display()
        );
    }
    let database = database::Database::open(settings).await?;
    let result = tokio::time::timeout(DEADLINE, run_with(database.url(), &data_dir, external))
        .await
        .unwrap_or_else(|_| bail!("the demo did not finish within {DEADLINE:?}"));
    database.close().await;
    result
}

async fn run_with(url: &str, data_dir: &std::path::Path, external: bool) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let (receiver, arrivals) = Receiver::start(stop.clone())
        .await
        .context("starting the demo receiver")?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("binding a free port on 127.0.0.1")?;
    let address = listener.local_addr()?;
    let config = demo_config(url, data_dir, receiver.address.ip())?;
    let server = tokio::spawn(crate::run(config, listener, stop.clone()));
    let mut demo = Demo {
        base: format!("http://{address}"),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()?,
        key: String::new(),
        arrivals,
        receiver,
        verified: 0,
    };
    let result = demo.steps(url, external).await;
    stop.cancel();
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(error = %error, "the demo instance stopped with an error"),
        Err(error) => tracing::warn!(error = %error, "the demo instance panicked"),
    }
    result
}

/// An instance like `serve`'s, on loopback, whose SSRF guard lets through only the receiver's
/// address, with retries short enough to watch.
fn demo_config(url: &str, data_dir: &std::path::Path, receiver: IpAddr) -> anyhow::Result<Config> {
    let mut config = Config::for_database(url);
    config.pool_size = 5;
    config.allow_networks = vec![ipnet::IpNet::from(receiver)];
    config.retry_schedule = "1s,2s,5s"
        .parse::<RetrySchedule>()
        .map_err(anyhow::Error::msg)?;
    config.attempt_timeout = Duration::from_secs(5);
    config.shutdown_timeout = Duration::from_secs(5);
    // The same operator key as `serve` on this data directory, so the demo's endpoint stays
    // readable by a later `deskhook serve`.
    let (key, _) = SecretBox::key_file(data_dir)
        .with_context(|| format!("cannot read or create {}/secret.key", data_dir.display()))?;
    config.secret_box = SecretBox::new(key);
    Ok(config)
}

/// The running demo: the instance's URL, the workspace's key, the receiver's arrivals.
struct Demo {
    base: String,
    http: reqwest::Client,
    key: String,
    arrivals: mpsc::UnboundedReceiver<Arrival>,
    receiver: Receiver,
    verified: u32,
}

impl Demo {
    async fn steps(&mut self, url: &str, external: bool) -> anyhow::Result<()> {
        self.wait_ready().await?;
        println!(
            "[2] Deskhook is running on {} (roles api, workers, timers)",
            self.base
        );
        println!(
            "[3] A webhook receiver on {} verifies every Standard Webhooks signature",
            self.receiver.url()
        );
        self.workspace(url).await?;
        let (endpoint, agent) = self.endpoint_and_agent().await?;
        self.ticket_lifecycle(&agent).await?;
        sla_at_risk(self).await?;
        self.show_metrics().await?;
        // The receiver goes away with the demo: disable its endpoint so a later `serve` does
        // not keep retrying a closed port.
        self.call(
            Method::PATCH,
            &format!("/v1/webhooks/{endpoint}"),
            Some(json!({ "enabled": false })),
            200,
        )
        .await?;
        self.where_next(external);
        Ok(())
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = self.http.get(format!("{}/readyz", self.base)).send().await
                && response.status() == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("Deskhook did not become ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A workspace and an admin key, made the way `deskhook workspace create` makes them.
    async fn workspace(&mut self, url: &str) -> anyhow::Result<()> {
        let pool = database::pool(url, 1)?;
        let created = async {
            let mut tx = pool.begin().await?;
            let name = format!("Demo {}", chrono::Utc::now().format("%Y-%m-%d %H:%M:%S"));
            let workspace = auth::create_workspace(&mut *tx, &name).await?;
            let key =
                auth::create_key(&mut *tx, workspace, &[Scope::Admin], Some("demo"), None).await?;
            tx.commit().await?;
            Ok::<_, anyhow::Error>((workspace, key.key))
        }
        .await;
        pool.close().await;
        let (workspace, key) = created.context("creating the demo workspace")?;
        self.key = key;
        println!(
            "[4] Workspace {} with an admin API key (shown once): {}",
            ids::encode(Kind::Workspace, workspace),
            self.key
        );
        Ok(())
    }

    /// An agent to reply as, and the endpoint pointing at the receiver.
    async fn endpoint_and_agent(&mut self) -> anyhow::Result<(String, String)> {
        let agent = self
            .call(
                Method::POST,
                "/v1/users",
                Some(json!({ "name": "Dana (demo agent)", "email": "dana@demo.invalid" })),
                201,
            )
            .await?;
        let agent = text(&agent["data"]["id"])?;
        let created = self
            .call(
                Method::POST,
                "/v1/webhooks",
                Some(json!({
                    "url": self.receiver.url(),
                    "description": "deskhook demo receiver",
                    "events": EVENT_TYPES,
                })),
                201,
            )
            .await?;
        let endpoint = text(&created["data"]["id"])?;
        let secret = SigningSecret::parse(&text(&created["data"]["secret"])?)
            .map_err(|error| anyhow::anyhow!("the endpoint's secret: {error}"))?;
        self.receiver.trust(secret);
        println!(
            "    POST /v1/webhooks → endpoint {endpoint} for {}",
            EVENT_TYPES.join(", ")
        );
        Ok((endpoint, agent))
    }

    /// Create, reply, close: each change's event arrives, signed.
    async fn ticket_lifecycle(&mut self, agent: &str) -> anyhow::Result<String> {
        println!("[5] A ticket's life, through the REST API:");
        let started = Instant::now();
        let ticket = self
            .call(
                Method::POST,
                "/v1/tickets",
                Some(json!({
                    "subject": "The printer is on fire",
                    "requester": { "email": "sam@customer.invalid", "name": "Sam" },
                    "message": "Smoke is coming out of the second-floor printer.",
                })),
                201,
            )
            .await?;
        let id = text(&ticket["data"]["id"])?;
        println!("    POST /v1/tickets → {id} \"The printer is on fire\"");
        self.expect("ticket.created", started).await?;

        let started = Instant::now();
        self.call(
            Method::POST,
            &format!("/v1/tickets/{id}/messages"),
            Some(json!({
                "body": "Fire brigade called; please step away from the printer.",
                "author": { "type": "agent", "id": agent },
            })),
            201,
        )
        .await?;
        println!("    POST /v1/tickets/{id}/messages → an agent's reply");
        self.expect("ticket.replied", started).await?;

        let started = Instant::now();
        self.call(
            Method::PUT,
            &format!("/v1/tickets/{id}/status"),
            Some(json!({ "status": "closed" })),
            200,
        )
        .await?;
        println!("    PUT /v1/tickets/{id}/status closed");
        self.expect("ticket.closed", started).await?;
        Ok(id)
    }

    /// Waits for a delivery of `event_type`; fails on a signature that does not verify.
    async fn expect(&mut self, event_type: &str, since: Instant) -> anyhow::Result<()> {
        let deadline = Instant::now() + ARRIVAL_WAIT;
        loop {
            let Ok(arrival) = tokio::time::timeout_at(deadline, self.arrivals.recv()).await else {
                bail!("no {event_type} delivery arrived within {ARRIVAL_WAIT:?}");
            };
            let Some(arrival) = arrival else {
                bail!("the demo receiver stopped");
            };
            if let Err(reason) = &arrival.verified {
                bail!(
                    "a {} delivery arrived but its signature did not verify: {reason}",
                    arrival.event_type
                );
            }
            self.verified += 1;
            println!(
                "      ← {} {} arrived {} ms later, signature verified{}",
                arrival.event_type,
                arrival.webhook_id,
                since.elapsed().as_millis(),
                describe(&arrival.data)
            );
            if arrival.event_type == event_type {
                return Ok(());
            }
        }
    }

    /// A few lines of the instance's own `/metrics`, once the last delivery's outcome is
    /// recorded (the receiver sees a request a moment before its worker reads the answer).
    async fn show_metrics(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let text = loop {
            let text = self
                .http
                .get(format!("{}/metrics", self.base))
                .send()
                .await?
                .error_for_status()?
                .text()
                .await?;
            let completed: f64 = text
                .lines()
                .filter(|line| line.starts_with("deskhook_deliveries_completed_total{"))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            if completed >= f64::from(self.verified) || Instant::now() > deadline {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        println!("[7] From {}/metrics:", self.base);
        for line in text.lines().filter(|line| {
            (line.starts_with("deskhook_delivery_attempts_total")
                || line.starts_with("deskhook_deliveries_completed_total")
                || line.starts_with("deskhook_delivery_latency_seconds_count"))
                && !line.ends_with(" 0")
        }) {
            println!("    {line}");
        }
        Ok(())
    }

    fn where_next(&self, external: bool) {
        let kept = if external {
            "your DATABASE_URL database"
        } else {
            "the data directory (DESKHOOK_DATA_DIR)"
        };
        println!(
            "\n{} deliveries arrived, every signature verified. The demo has stopped its instance.\n",
            self.verified
        );
        println!("Where to look next");
        println!(
            "  While it ran:  API {0}/v1   metrics {0}/metrics",
            self.base
        );
        println!("  Its workspace, key, ticket and delivery history stay in {kept}. Keep going:");
        println!("    deskhook serve      # http://127.0.0.1:8080 (DESKHOOK_LISTEN to change)");
        println!(
            "    curl -s -H 'Authorization: Bearer {}' http://127.0.0.1:8080/v1/deliveries",
            self.key
        );
        println!("    curl -s http://127.0.0.1:8080/metrics | grep '^deskhook_'");
        println!(
            "  Read README.md (configuration, deploying, scaling) and dashboards/README.md (Grafana, alerts)."
        );
    }

    /// Sends a request with the workspace key; fails unless the status is `expected`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        expected: u16,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status != expected {
            bail!("{method} {path} answered {status}, expected {expected}: {body}");
        }
        Ok(body)
    }
}

/// The SLA step: a short policy (first response within 6 s, at risk 3 s before), a new
/// customer ticket under it, and its `sla.at_risk` delivery, signed, from the SLA timer.
async fn sla_at_risk(demo: &mut Demo) -> anyhow::Result<()> {
    println!("[6] SLA: a policy answers customers within 6 seconds and warns 3 seconds before");
    let policy = demo
        .call(
            Method::POST,
            "/v1/sla-policies",
            Some(json!({
                "name": "Demo: first response in 6 s",
                "targets": [
                    { "metric": "first_response", "priority": "normal",
                      "minutes": 0.1, "warn_before_minutes": 0.05 }
                ]
            })),
            201,
        )
        .await?;
    println!(
        "    POST /v1/sla-policies → {}",
        policy["data"]["id"].as_str().unwrap_or("?")
    );
    let started = Instant::now();
    let ticket = demo
        .call(
            Method::POST,
            "/v1/tickets",
            Some(json!({
                "subject": "Still waiting for an answer",
                "priority": "normal",
                "requester": { "email": "waiting@example.com", "name": "Waiting Customer" },
                "message": "Is anyone there?"
            })),
            201,
        )
        .await?;
    println!(
        "    POST /v1/tickets → first response due {}; nobody answers…",
        ticket["data"]["sla"]["first_response_due"]
            .as_str()
            .unwrap_or("?")
    );
    demo.expect("ticket.created", started).await?;
    demo.expect("sla.at_risk", started).await?;
    Ok(())
}

/// ` (ticket #12 "Subject", status open)` from an event's data, when it names a ticket.
fn describe(data: &Value) -> String {
    let ticket = &data["ticket"];
    match (ticket["number"].as_i64(), ticket["subject"].as_str()) {
        (Some(number), Some(subject)) => format!(
            " (ticket #{number} \"{subject}\", status {})",
            ticket["status"].as_str().unwrap_or("?")
        ),
        _ => String::new(),
    }
}

/// The service's logs at `warn` (or `RUST_LOG`), so the demo's own lines stay readable.
fn quiet_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}

fn text(value: &Value) -> anyhow::Result<String> {
    value
        .as_str()
        .map(ToOwned::to_owned)
        .ok_or_else(|| anyhow::anyhow!("expected a string in the answer, got {value}"))
}
