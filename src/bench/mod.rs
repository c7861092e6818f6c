//! `deskhook bench`: the benchmark program (design: performance.md).
//!
//! It needs nothing beyond the README's set-up: it opens the private PostgreSQL (or uses
//! `DATABASE_URL`), measures the bare SQL ceiling of a batched insert/claim/delete cycle on
//! that server, then for each scenario creates a fresh database, starts `deskhook serve` as a
//! child process (so its CPU and memory are its own), starts loopback receivers, drives load
//! through the public HTTP API, and prints a table plus one JSON line per scenario. Every loop
//! is bounded in count and time, and all traffic stays on 127.0.0.1.
//!
//! With `--citus` it also starts a Citus cluster of its own (a coordinator and two workers on
//! loopback, from the system's server binaries with the extension installed) and runs each
//! selected scenario on the single server and then on the cluster, distributed as `deskhook
//! migrate --distribute` leaves it, so one report compares the two on the same machine.
//!
//! It measures; it never asserts a speed. CI runs `--quick` to prove it still works.

mod claims;
mod measure;
mod recorder;
mod scenarios;
mod sink;

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use deskhook_local_postgres::LocalCitus;
use serde_json::{Value, json};
use sqlx::{Connection as _, PgConnection, PgPool, postgres::PgPoolOptions};

use crate::database::{Database, DatabaseSettings};
pub use scenarios::{CITUS_SCENARIOS, SCENARIOS};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Scenarios by name (empty: all).
    pub scenarios: Vec<String>,
    /// Events per scenario (default depends on the scenario and `quick`).
    pub events: Option<u64>,
    /// Seed for the random parts (failures, payload padding).
    pub seed: u64,
    /// A small run that finishes in under a minute.
    pub quick: bool,
    /// Runs per scenario; the report gives medians.
    pub runs: u32,
    /// Where the database is.
    pub database: DatabaseSettings,
    /// Also run each scenario on a private Citus cluster (only [`CITUS_SCENARIOS`]).
    pub citus: bool,
}

/// The operator key the benchmark's service instances use.
const SECRET_KEY: [u8; 32] = [
    0x1b, 0x6f, 0x61, 0xa8, 0xbe, 0xd8, 0x81, 0x45, 0xd4, 0x28, 0x45, 0xc2, 0x66, 0x01, 0xc7, 0x66,
    0x3a, 0xb2, 0x65, 0x77, 0x24, 0xcd, 0x10, 0xc4, 0x11, 0x16, 0x61, 0xb3, 0x23, 0x17, 0x2d, 0x7f,
];

/// Runs the benchmark and prints its report.
pub async fn run(options: BenchOptions) -> anyhow::Result<()> {
    let offered = if options.citus {
        CITUS_SCENARIOS
    } else {
        SCENARIOS
    };
    let selected: Vec<&str> = if options.scenarios.is_empty() {
        offered.to_vec()
    } else {
        for name in &options.scenarios {
            anyhow::ensure!(
                offered.contains(&name.as_str()),
                "{} scenario `{name}`; expected one of {}",
                if options.citus && SCENARIOS.contains(&name.as_str()) {
                    "--citus does not run"
                } else {
                    "unknown"
                },
                offered.join(", ")
            );
        }
        offered
            .iter()
            .copied()
            .filter(|s| options.scenarios.iter().any(|n| n == s))
            .collect()
    };
    let database = Database::open(options.database.clone()).await?;
    let cluster = if options.citus {
        match start_citus(&options.database).await {
            Ok(cluster) => Some(cluster),
            Err(error) => {
                database.close().await;
                return Err(error);
            }
        }
    } else {
        None
    };
    let server_url = server_url(database.url());
    let single = Target::Single {
        server: &server_url,
        pid: database.server_pid(),
    };
    let result = async {
        let ceiling = sql_ceiling(&server_url, options.quick).await?;
        eprintln!("SQL ceiling (batched insert/claim/delete, 4 connections): {ceiling:.0} jobs/s");
        let mut reports = Vec::new();
        for scenario in selected {
            let targets: Vec<Target<'_>> = std::iter::once(single)
                .chain(cluster.as_ref().map(Target::Citus))
                .collect();
            // Runs alternate between the targets, so both meet the same machine noise.
            let mut runs: Vec<Vec<Value>> = vec![Vec::new(); targets.len()];
            for run in 0..options.runs.max(1) {
                for (target, runs) in targets.iter().zip(&mut runs) {
                    eprintln!(
                        "running {scenario}{} ({}/{})",
                        target.suffix(),
                        run + 1,
                        options.runs.max(1)
                    );
                    let report = run_scenario(scenario, &options, *target, ceiling)
                        .await
                        .with_context(|| format!("scenario {scenario}{}", target.suffix()))?;
                    runs.push(report);
                }
            }
            let mut medians = runs.into_iter().map(scenarios::median_report);
            let single_report = medians.next().context("no run")?;
            println!("{}", serde_json::to_string(&single_report)?);
            let citus_report = medians
                .next()
                .map(|report| on_citus(report, &single_report));
            reports.push(single_report);
            if let Some(report) = citus_report {
                println!("{}", serde_json::to_string(&report)?);
                reports.push(report);
            }
        }
        print_table(&reports, ceiling);
        anyhow::Ok(())
    }
    .await;
    if let Some(cluster) = cluster {
        let _ = tokio::task::spawn_blocking(move || drop(cluster)).await;
    }
    database.close().await;
    result
}

/// Where a scenario's database lives.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// One server: `postgres://user:pass@host:port`, and its postmaster when it is ours.
    Single { server: &'a str, pid: Option<u32> },
    /// The bench's own Citus cluster.
    Citus(&'a LocalCitus),
}

impl Target<'_> {
    /// What a report's scenario name gets on this target.
    fn suffix(self) -> &'static str {
        match self {
            Self::Single { .. } => "",
            Self::Citus(_) => "@citus",
        }
    }

    /// A fresh database `name`, migrated (and on Citus distributed) as `deskhook migrate`
    /// leaves it; returns its URL.
    pub(crate) async fn fresh_database(self, name: &str) -> anyhow::Result<String> {
        let url = match self {
            Self::Single { server, .. } => {
                recreate_database(server, name).await?;
                format!("{server}/{name}")
            }
            Self::Citus(cluster) => {
                cluster.drop_database(name).await?;
                let url = cluster.create_database(name).await?;
                crate::database::prefer_tls_or_plaintext(url).await
            }
        };
        crate::database::migrate_url(&url).await?;
        if let Self::Citus(_) = self {
            crate::database::distribute_url(&url).await?;
        }
        Ok(url)
    }

    async fn drop_database(self, name: &str) -> anyhow::Result<()> {
        match self {
            Self::Single { server, .. } => drop_database(server, name).await,
            Self::Citus(cluster) => Ok(cluster.drop_database(name).await?),
        }
    }

    /// CPU seconds used so far by every PostgreSQL process of the target (every node's
    /// postmaster and its children); `None` when the server is not ours to see.
    pub(crate) fn postgres_cpu_seconds(self) -> Option<f64> {
        match self {
            Self::Single { pid, .. } => pid.map(measure::cpu_seconds_tree),
            Self::Citus(cluster) => Some(
                cluster
                    .nodes()
                    .filter_map(deskhook_local_postgres::LocalPostgres::postmaster_pid)
                    .map(measure::cpu_seconds_tree)
                    .sum(),
            ),
        }
    }
}

/// Starts the bench's Citus cluster (a coordinator and two workers) under the data directory.
async fn start_citus(settings: &DatabaseSettings) -> anyhow::Result<LocalCitus> {
    let dir = settings.data_dir.join("bench-citus");
    let bin = settings.postgres_bin.clone();
    tokio::task::spawn_blocking(move || {
        let binaries = match bin {
            Some(dir) => deskhook_local_postgres::Binaries::in_dir(&dir)?,
            None => deskhook_local_postgres::Binaries::find()?,
        };
        anyhow::ensure!(
            LocalCitus::available(&binaries),
            "--citus needs the Citus extension in these PostgreSQL server binaries \
             (install it with ../shared/citus/install)"
        );
        eprintln!(
            "starting a Citus cluster (a coordinator and 2 workers) in {}",
            dir.display()
        );
        Ok(LocalCitus::start(&dir, 2)?)
    })
    .await?
}

/// The Citus run's report, named `<scenario>@citus`, with the single server's figure beside it.
fn on_citus(mut report: Value, single: &Value) -> Value {
    let name = report["scenario"].as_str().unwrap_or_default().to_owned();
    report["scenario"] = json!(format!("{name}@citus"));
    let citus_rate = report["deliveries_per_s"].as_f64();
    let single_rate = single["deliveries_per_s"].as_f64();
    report["single_server_deliveries_per_s"] = json!(single_rate);
    report["citus_to_single_ratio"] = json!(
        citus_rate
            .zip(single_rate)
            .filter(|(_, single)| *single > 0.0)
            .map(|(citus, single)| citus / single)
    );
    report["nodes"] = json!(3);
    // pg_stat_database and pg_stat_statements are per node; the workers' share of the work
    // is in the PostgreSQL CPU figure, which sums every node.
    let counted = "commits, statements and WAL are the coordinator's alone";
    report["note"] = match report["note"].as_str() {
        Some(note) => json!(format!("{note}; {counted}")),
        None => json!(counted),
    };
    report
}

/// `postgres://user:pass@host:port` of the server behind a database URL.
fn server_url(url: &str) -> String {
    let without_query = url.split('?').next().unwrap_or(url);
    match without_query.rfind('/') {
        Some(slash) if slash > "postgres://".len() => without_query[..slash].to_owned(),
        _ => without_query.to_owned(),
    }
}

/// The bare SQL ceiling: batches of 100 inserted, claimed with SKIP LOCKED and deleted, by 4
/// connections at once, on a scratch table of a scratch database.
async fn sql_ceiling(server: &str, quick: bool) -> anyhow::Result<f64> {
    let name = "deskhook_bench_ceiling";
    recreate_database(server, name).await?;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&format!("{server}/{name}"))
        .await?;
    sqlx::query(
        "CREATE TABLE job (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
         state smallint NOT NULL DEFAULT 0, payload text NOT NULL, \
         run_at timestamptz NOT NULL DEFAULT now()) \
         WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000)",
    )
    .execute(&pool)
    .await?;
    sqlx::query("CREATE INDEX job_due ON job (run_at, id) WHERE state = 0")
        .execute(&pool)
        .await?;
    let window = if quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(4)
    };
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..4 {
        let pool = pool.clone();
        workers.push(tokio::spawn(async move {
            let mut done = 0_u64;
            while started.elapsed() < window {
                sqlx::query("INSERT INTO job (payload) SELECT repeat('x', 500) FROM generate_series(1, 100)")
                    .execute(&pool)
                    .await?;
                let ids: Vec<i64> = sqlx::query_scalar(
                    "UPDATE job SET state = 1 WHERE id = ANY(ARRAY(SELECT id FROM job WHERE state = 0 \
                     ORDER BY run_at, id LIMIT 100 FOR UPDATE SKIP LOCKED)) RETURNING id",
                )
                .fetch_all(&pool)
                .await?;
                let deleted = sqlx::query("DELETE FROM job WHERE id = ANY($1)")
                    .bind(&ids)
                    .execute(&pool)
                    .await?;
                done += deleted.rows_affected();
            }
            anyhow::Ok(done)
        }));
    }
    let mut total = 0;
    for worker in workers {
        total += worker.await??;
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    pool.close().await;
    drop_database(server, name).await?;
    Ok(rate)
}

async fn recreate_database(server: &str, name: &str) -> anyhow::Result<()> {
    drop_database(server, name).await?;
    let mut admin = PgConnection::connect(&format!("{server}/postgres")).await?;
    sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
        .execute(&mut admin)
        .await?;
    admin.close().await.ok();
    Ok(())
}

async fn drop_database(server: &str, name: &str) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&format!("{server}/postgres")).await?;
    sqlx::query(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
        .execute(&mut admin)
        .await?;
    admin.close().await.ok();
    Ok(())
}

/// One `deskhook serve` child process, with its log in its own data directory.
struct Instance {
    child: Child,
    /// `http://127.0.0.1:port`.
    base: String,
    data_dir: PathBuf,
}

impl Instance {
    /// Starts `deskhook serve` running `roles` on `database_url` and waits until it is ready.
    async fn spawn(database_url: &str, retry_schedule: &str, roles: &str) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let data_dir =
            std::env::temp_dir().join(format!("deskhook-bench-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&data_dir)?;
        let log = std::fs::File::create(data_dir.join("service.log"))?;
        let child = Command::new(std::env::current_exe()?)
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("DESKHOOK_LISTEN", format!("127.0.0.1:{port}"))
            .env("DESKHOOK_ROLES", roles)
            .env("DESKHOOK_DATA_DIR", &data_dir)
            .env("DESKHOOK_RATE_LIMIT", "off")
            .env("DESKHOOK_ALLOW_NETWORKS", "127.0.0.1/32")
            .env("DESKHOOK_RETRY_SCHEDULE", retry_schedule)
            .env("DESKHOOK_SECRET_KEY", hex::encode(SECRET_KEY))
            .env("DESKHOOK_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting deskhook serve")?;
        let instance = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            data_dir,
        };
        match instance.ready().await {
            Ok(()) => Ok(instance),
            Err(error) => {
                // Never leave a child behind: a scenario that fails here ends the bench.
                instance.terminate();
                instance.wait().await;
                Err(error)
            }
        }
    }

    /// Waits (bounded) until `/readyz` answers 200.
    async fn ready(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = client.get(format!("{}/readyz", self.base)).send().await
                && response.status() == 200
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the service did not become ready (log: {})",
                self.data_dir.join("service.log").display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Delivery attempts the instance has made (`deskhook_delivery_attempts_total` of its
    /// `/metrics`, every label); `None` when unreadable.
    async fn attempts(&self, client: &reqwest::Client) -> Option<u64> {
        let text = client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let total: f64 = text
            .lines()
            .filter(|line| line.starts_with("deskhook_delivery_attempts_total"))
            .filter_map(|line| line.split_whitespace().last()?.parse::<f64>().ok())
            .sum();
        Some(total as u64)
    }

    /// Asks the instance to shut down (SIGTERM); [`Instance::wait`] waits for it.
    fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }

    /// Waits (bounded) for the instance to exit, kills it if it has not, and removes its data
    /// directory.
    async fn wait(mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// `deskhook serve` on a fresh database: one instance running every role, plus any
/// worker-only instances added with [`Service::add_workers`].
pub(crate) struct Service {
    primary: Instance,
    workers: Vec<Instance>,
    /// `http://127.0.0.1:port` of the instance serving the API.
    pub base: String,
    /// The admin key of the benchmark's workspace.
    pub key: String,
    /// The workspace.
    pub workspace_id: i64,
    /// A pool on the scenario's database (setup, seeding, statistics).
    pub pool: PgPool,
    /// What every instance is started with.
    database_url: String,
    retry_schedule: String,
}

impl Service {
    /// Creates the workspace in a fresh database ([`Target::fresh_database`]); the service
    /// itself starts in [`Service::start`], after any seeding.
    pub(crate) async fn prepare(url: &str) -> anyhow::Result<(PgPool, i64, String)> {
        let pool = PgPoolOptions::new().max_connections(4).connect(url).await?;
        // Statement counts come from pg_stat_statements when the server preloads it.
        let _ = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&pool)
            .await;
        let workspace_id = crate::auth::create_workspace(&pool, "bench").await?;
        let key = crate::auth::create_key(
            &pool,
            workspace_id,
            &[crate::auth::Scope::Admin],
            None,
            None,
        )
        .await?;
        Ok((pool, workspace_id, key.key))
    }

    /// Starts `deskhook serve` (every role) on the prepared database.
    pub(crate) async fn start(
        database_url: &str,
        prepared: (PgPool, i64, String),
        retry_schedule: &str,
    ) -> anyhow::Result<Self> {
        let (pool, workspace_id, key) = prepared;
        let database_url = database_url.to_owned();
        let primary = Instance::spawn(&database_url, retry_schedule, "api,workers,timers").await?;
        Ok(Self {
            base: primary.base.clone(),
            primary,
            workers: Vec::new(),
            key,
            workspace_id,
            pool,
            database_url,
            retry_schedule: retry_schedule.to_owned(),
        })
    }

    /// Starts `count` more instances on the same database and settings that run only the
    /// delivery workers: they claim from the same queue, while the API and the timers stay
    /// with the first instance.
    pub(crate) async fn add_workers(&mut self, count: usize) -> anyhow::Result<()> {
        for _ in 0..count {
            let worker =
                Instance::spawn(&self.database_url, &self.retry_schedule, "workers").await?;
            self.workers.push(worker);
        }
        Ok(())
    }

    /// The process ids of every instance, the first one first.
    pub(crate) fn pids(&self) -> Vec<u32> {
        std::iter::once(&self.primary)
            .chain(&self.workers)
            .map(|instance| instance.child.id())
            .collect()
    }

    /// Delivery attempts made so far by each instance, the first one first: whether the
    /// worker-only instances share the work.
    pub(crate) async fn attempts_by_instance(&self) -> Vec<Option<u64>> {
        let client = reqwest::Client::new();
        let mut attempts = Vec::new();
        for instance in std::iter::once(&self.primary).chain(&self.workers) {
            attempts.push(instance.attempts(&client).await);
        }
        attempts
    }

    /// Creates an endpoint through the API; returns its id.
    pub(crate) async fn endpoint(&self, url: &str, settings: Value) -> anyhow::Result<String> {
        let mut body = json!({ "url": url });
        if let (Some(target), Some(extra)) = (body.as_object_mut(), settings.as_object()) {
            target.extend(extra.clone());
        }
        let response = reqwest::Client::new()
            .post(format!("{}/v1/webhooks", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 201,
            "creating an endpoint: {}",
            response.status()
        );
        let created: Value = response.json().await?;
        Ok(created["data"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// Stops every instance (SIGTERM to all, so they drain at the same time, then waits).
    pub(crate) async fn stop(self) {
        let instances: Vec<Instance> = std::iter::once(self.primary).chain(self.workers).collect();
        for instance in &instances {
            instance.terminate();
        }
        for instance in instances {
            instance.wait().await;
        }
        self.pool.close().await;
    }
}

async fn run_scenario(
    scenario: &str,
    options: &BenchOptions,
    target: Target<'_>,
    ceiling: f64,
) -> anyhow::Result<Value> {
    // Database names keep to identifier characters (`many-endpoints` has a dash).
    let database = format!("deskhook_bench_{}", scenario.replace('-', "_"));
    let context = scenarios::Context {
        options,
        target,
        database: &database,
        ceiling,
    };
    let result = scenarios::run(scenario, &context).await;
    target.drop_database(&database).await.ok();
    result
}

fn print_table(reports: &[Value], ceiling: f64) {
    eprintln!();
    eprintln!("SQL ceiling: {ceiling:.0} jobs/s (batched insert/claim/delete, same server)");
    eprintln!(
        "{:<14} {:>12} {:>10} {:>8} {:>8} {:>8} {:>5} {:>5} {:>8} {:>8} {:>9} {:>8} {:>7} {:>7}",
        "scenario",
        "deliveries/s",
        "events/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "lost",
        "dup",
        "commits",
        "stmts",
        "WAL B",
        "cpu ms",
        "RSS MB",
        "ceiling"
    );
    for r in reports {
        let f = |v: &Value| {
            v.as_f64()
                .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}"))
        };
        let i = |v: &Value| {
            v.as_f64()
                .map_or_else(|| "-".to_owned(), |x| format!("{x:.0}"))
        };
        eprintln!(
            "{:<14} {:>12} {:>10} {:>8} {:>8} {:>8} {:>5} {:>5} {:>8} {:>8} {:>9} {:>8} {:>7} {:>7}",
            r["scenario"].as_str().unwrap_or(""),
            i(&r["deliveries_per_s"]),
            i(&r["events_per_s"]),
            f(&r["latency_ms"]["p50"]),
            f(&r["latency_ms"]["p95"]),
            f(&r["latency_ms"]["p99"]),
            i(&r["lost"]),
            i(&r["duplicates"]),
            f(&r["commits_per_delivery"]),
            f(&r["statements_per_delivery"]),
            i(&r["wal_bytes_per_delivery"]),
            f(&r["cpu_ms_per_delivery"]),
            i(&r["peak_rss_mb"]),
            f(&r["ratio_to_ceiling"]),
        );
        // The claim's mean time, then the scenario's own figures (acceptance rate, rates per
        // instance count...).
        let claim = r["claim_mean_ms"]
            .as_f64()
            .map(|ms| format!("claim_mean_ms {ms:.3}"));
        let extra: Vec<String> = claim
            .into_iter()
            .chain(
                scenarios::extra_figures(r)
                    .into_iter()
                    .map(|(name, value)| {
                        if value.fract() == 0.0 {
                            format!("{name} {value:.0}")
                        } else {
                            format!("{name} {value:.2}")
                        }
                    }),
            )
            .collect();
        if !extra.is_empty() {
            eprintln!("               {}", extra.join(", "));
        }
        if let Some(note) = r["note"].as_str() {
            eprintln!("               note: {note}");
        }
    }
}
