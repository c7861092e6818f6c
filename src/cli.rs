//! The command line: `deskhook serve` (the default), `deskhook migrate`, and the bootstrap
//! commands. Each setting is a flag with a `DESKHOOK_*` environment equivalent.
//!
//! This module turns arguments into a [`Config`] and calls into the library; it holds no
//! product logic. A bad setting ends the start with one line naming the setting.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{CommandFactory as _, Parser, Subcommand, error::ContextKind};
use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{self, Scope},
    config::{self, Config, ConnectionLimits, LogFormat, RateLimit, RetrySchedule, Roles},
    database::{self, DatabaseSettings},
    ids::{self, Kind},
    secret_box::SecretBox,
    telemetry,
};

/// Deskhook: webhook delivery for helpdesks.
#[derive(Debug, Parser)]
#[command(name = "deskhook", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: API, ingest, delivery workers and SLA timer (the default).
    Serve(Box<ServeArgs>),
    /// Apply database migrations and exit.
    Migrate(MigrateArgs),
    /// Manage workspaces (tenants).
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Run the benchmark (performance.md): load through the public API, a table and JSON lines.
    Bench(BenchArgs),
    /// Show the whole product working: a private database, a local receiver, a ticket's
    /// events delivered and their signatures verified; then exit.
    Demo(DemoArgs),
    /// Start only the private PostgreSQL, print its URL, and keep it until stdin closes or a
    /// signal (the test command's one server per run; handy with psql).
    Postgres(PostgresArgs),
}

/// `deskhook workspace ...`.
#[derive(Debug, Subcommand)]
enum WorkspaceCommand {
    /// Create a workspace and its first admin key; prints one JSON line.
    Create {
        /// The workspace's name.
        name: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

/// `deskhook key ...`.
#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Create an API key; prints one JSON line with the key (shown only here).
    Create {
        /// The workspace (`ws_…`).
        #[arg(long)]
        workspace: String,
        /// A scope: read, write, ingest or admin (repeat for several).
        #[arg(long = "scope", required = true, value_parser = parse_scope)]
        scopes: Vec<Scope>,
        /// Bind the key to a user (`usr_…`): the default message author and "me".
        #[arg(long)]
        user: Option<String>,
        /// A label for the key.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

/// A parsed `DESKHOOK_SECRET_KEY` (never printed). A value that does not parse is kept as its
/// reason and refused when the key is used: clap would echo the rejected value, and a
/// mistyped key is still a secret.
#[derive(Clone)]
struct SecretKey(Result<[u8; 32], String>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey([REDACTED])")
    }
}

#[expect(clippy::unnecessary_wraps, reason = "clap's value_parser signature")]
fn parse_secret_key(text: &str) -> Result<SecretKey, String> {
    Ok(SecretKey(SecretBox::parse_key(text)))
}

/// The operator key ring: the setting (the data directory's key file, if there is one, stays
/// readable), or the key file, created on first use; plus `DESKHOOK_SECRET_KEY_PREVIOUS`.
fn secret_box(
    key: Option<&SecretKey>,
    previous: &PreviousKeys,
    data_dir: &std::path::Path,
) -> anyhow::Result<SecretBox> {
    let mut ring = previous.0.clone().map_err(|why| {
        anyhow::anyhow!("DESKHOOK_SECRET_KEY_PREVIOUS (--secret-key-previous): {why}")
    })?;
    let current = match key {
        Some(SecretKey(Err(why))) => {
            anyhow::bail!("DESKHOOK_SECRET_KEY (--secret-key): {why}")
        }
        Some(SecretKey(Ok(key))) => {
            // Secrets sealed under the generated key before the operator set their own.
            ring.extend(SecretBox::read_key_file(data_dir)?);
            *key
        }
        None => {
            let (key, created) = SecretBox::key_file(data_dir)?;
            if created {
                tracing::warn!(
                    path = %data_dir.join(crate::secret_box::KEY_FILE).display(),
                    "generated a key to encrypt webhook secrets at rest; back it up, or set DESKHOOK_SECRET_KEY"
                );
            }
            key
        }
    };
    Ok(SecretBox::with_previous(current, ring))
}

/// A parsed `DESKHOOK_SECRET_KEY_PREVIOUS` (never printed).
/// Refused like [`SecretKey`]: when used, without echoing the value.
#[derive(Clone)]
struct PreviousKeys(Result<Vec<[u8; 32]>, String>);

impl Default for PreviousKeys {
    fn default() -> Self {
        Self(Ok(Vec::new()))
    }
}

impl std::fmt::Debug for PreviousKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Ok(keys) => write!(f, "PreviousKeys({} [REDACTED])", keys.len()),
            Err(_) => f.write_str("PreviousKeys(invalid)"),
        }
    }
}

#[expect(clippy::unnecessary_wraps, reason = "clap's value_parser signature")]
fn parse_previous_keys(text: &str) -> Result<PreviousKeys, String> {
    Ok(PreviousKeys(SecretBox::parse_keys(text)))
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    Scope::parse(text)
        .ok_or_else(|| format!("`{text}` is not a scope (read, write, ingest, admin)"))
}

/// `deskhook bench`.
#[derive(Debug, Clone, clap::Args)]
struct BenchArgs {
    /// Scenarios to run (repeat or comma-separate; default: all).
    #[arg(long = "scenario", value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Events per scenario (default depends on the scenario and --quick).
    #[arg(long)]
    events: Option<u64>,
    /// Seed for random payloads and failures.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// A small run that finishes in under a minute (what CI runs).
    #[arg(long)]
    quick: bool,
    /// Runs per scenario; the report gives medians.
    #[arg(long, default_value_t = 1)]
    runs: u32,
    /// Also run each scenario on a private Citus cluster (a coordinator and two workers) and
    /// report both (steady, fanout and many-endpoints; needs the Citus extension).
    #[arg(long)]
    citus: bool,
    #[command(flatten)]
    database: DatabaseArgs,
}

/// `deskhook demo`.
#[derive(Debug, Clone, clap::Args)]
struct DemoArgs {
    #[command(flatten)]
    database: DatabaseArgs,
}

/// `deskhook postgres`.
#[derive(Debug, Clone, clap::Args)]
struct PostgresArgs {
    /// Where the private PostgreSQL lives.
    #[arg(long, env = "DESKHOOK_DATA_DIR", default_value = "./.deskhook")]
    data_dir: PathBuf,
    /// A directory holding `initdb` and `postgres`.
    #[arg(long, env = "DESKHOOK_POSTGRES_BIN")]
    postgres_bin: Option<PathBuf>,
}

/// Where the database is.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL; unset starts a private PostgreSQL under the data directory.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Where the private PostgreSQL lives.
    #[arg(long, env = "DESKHOOK_DATA_DIR", default_value = "./.deskhook")]
    pub data_dir: PathBuf,
    /// A directory holding `initdb` and `postgres` (default: PATH, then /usr/lib/postgresql/*/bin).
    #[arg(long, env = "DESKHOOK_POSTGRES_BIN")]
    pub postgres_bin: Option<PathBuf>,
}

impl DatabaseArgs {
    fn settings(&self) -> DatabaseSettings {
        DatabaseSettings {
            url: self
                .database_url
                .clone()
                .filter(|url| !url.trim().is_empty()),
            data_dir: self.data_dir.clone(),
            postgres_bin: self.postgres_bin.clone(),
        }
    }
}

/// `deskhook serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Address of the HTTP server.
    #[arg(long, env = "DESKHOOK_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Which roles this instance runs: api, workers, timers (comma-separated).
    #[arg(long, env = "DESKHOOK_ROLES", default_value = "api,workers,timers")]
    roles: Roles,
    /// CIDRs exempt from the SSRF guard (comma-separated).
    #[arg(long, env = "DESKHOOK_ALLOW_NETWORKS", default_value = "", value_parser = config::parse_networks)]
    allow_networks: ::std::vec::Vec<IpNet>,
    /// Delays between delivery attempts (comma-separated, like `5s,30s,2m`; empty: no retries).
    #[arg(
        long,
        env = "DESKHOOK_RETRY_SCHEDULE",
        default_value = "5s,30s,2m,10m,30m,1h,3h,6h,12h,24h"
    )]
    retry_schedule: RetrySchedule,
    /// Per-attempt HTTP timeout.
    #[arg(long, env = "DESKHOOK_ATTEMPT_TIMEOUT", default_value = "15s", value_parser = config::parse_duration)]
    attempt_timeout: Duration,
    /// The proxy deliveries go through (it must enforce the SSRF deny-list itself);
    /// environment proxies are never used for deliveries.
    #[arg(long, env = "DESKHOOK_EGRESS_PROXY")]
    egress_proxy: Option<url::Url>,
    /// Log format.
    #[arg(
        long,
        env = "DESKHOOK_LOG_FORMAT",
        value_enum,
        default_value = "pretty"
    )]
    log_format: LogFormat,
    /// API requests per minute per key, or `off`.
    #[arg(long, env = "DESKHOOK_RATE_LIMIT", default_value = "600")]
    rate_limit: RateLimit,
    /// Database connections per instance.
    #[arg(long, env = "DESKHOOK_DB_POOL_SIZE", default_value_t = 20, value_parser = clap::value_parser!(u32).range(2..=1000))]
    pool_size: u32,
    /// Concurrent delivery attempts per instance.
    #[arg(long, env = "DESKHOOK_WORKER_CONCURRENCY", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    worker_concurrency: u32,
    /// Deliveries claimed per claim statement at most.
    #[arg(long, env = "DESKHOOK_CLAIM_BATCH", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1000))]
    claim_batch: u32,
    /// How long in-flight deliveries may take to finish on shutdown.
    #[arg(long, env = "DESKHOOK_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = config::parse_duration)]
    shutdown_timeout: Duration,
    /// Open HTTP connections at most; more wait to be accepted.
    #[arg(long, env = "DESKHOOK_MAX_CONNECTIONS", default_value_t = 4_096)]
    max_connections: usize,
    /// How long a client may take to send a request's headers.
    #[arg(long, env = "DESKHOOK_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = config::parse_duration)]
    header_read_timeout: Duration,
    /// How long one HTTP request may take, body and answer included (then a 408).
    #[arg(long, env = "DESKHOOK_REQUEST_TIMEOUT", default_value = "60s", value_parser = config::parse_duration)]
    request_timeout: Duration,
    /// How long events, attempts and finished deliveries are kept.
    #[arg(long, env = "DESKHOOK_RETENTION", default_value = "30d", value_parser = config::parse_duration)]
    retention: Duration,
    /// The key that encrypts endpoint secrets at rest (base64 or hex of 32 bytes); unset:
    /// generated once into the data directory.
    #[arg(long, env = "DESKHOOK_SECRET_KEY", hide_env_values = true, value_parser = parse_secret_key)]
    secret_key: Option<SecretKey>,
    /// Former keys, comma-separated: they only open secrets (re-sealed under the current key
    /// when read), so the key can be changed without breaking endpoints.
    #[arg(long, env = "DESKHOOK_SECRET_KEY_PREVIOUS", hide_env_values = true, value_parser = parse_previous_keys, default_value = "")]
    secret_key_previous: PreviousKeys,
    /// Apply migrations at start (`false` when a separate `deskhook migrate` step does it).
    #[arg(long, env = "DESKHOOK_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    migrate: bool,
    /// Make claims and settles wait for the WAL flush too (`false`: a database crash may
    /// repeat a few deliveries, never lose one).
    #[arg(long, env = "DESKHOOK_QUEUE_SYNCHRONOUS_COMMIT", default_value_t = false, action = clap::ArgAction::Set)]
    queue_synchronous_commit: bool,
}

/// `deskhook migrate`.
#[derive(Debug, Clone, clap::Args)]
struct MigrateArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// After migrating, place the tables on Citus: reference tables and tables distributed by
    /// `workspace_id` (the database must have the Citus extension and its workers). Not every
    /// statement runs distributed yet: see docs/scaling.md before using it.
    #[arg(long)]
    distribute: bool,
    /// Log format.
    #[arg(
        long,
        env = "DESKHOOK_LOG_FORMAT",
        value_enum,
        default_value = "pretty"
    )]
    log_format: LogFormat,
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return report_parse_error(&error),
    };
    let command = match cli.command {
        Some(command) => command,
        // `deskhook` alone is `deskhook serve`, with settings from the environment.
        None => match Cli::try_parse_from(["deskhook", "serve"]) {
            Ok(Cli {
                command: Some(command),
            }) => command,
            Ok(Cli { command: None }) => unreachable!("serve was given"),
            Err(error) => return report_parse_error(&error),
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("deskhook: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Serve(args) => serve(*args).await,
            Command::Migrate(args) => migrate(args).await,
            Command::Postgres(args) => postgres(args).await,
            Command::Demo(args) => crate::demo::run(args.database.settings()).await,
            Command::Bench(args) => {
                telemetry::init(LogFormat::Pretty);
                crate::bench::run(crate::bench::BenchOptions {
                    scenarios: args.scenarios,
                    events: args.events,
                    seed: args.seed,
                    quick: args.quick,
                    runs: args.runs,
                    database: args.database.settings(),
                    citus: args.citus,
                })
                .await
            }
            Command::Workspace(WorkspaceCommand::Create { name, database }) => {
                create_workspace(&name, database).await
            }
            Command::Key(KeyCommand::Create {
                workspace,
                scopes,
                user,
                name,
                database,
            }) => {
                create_key(
                    &workspace,
                    &scopes,
                    user.as_deref(),
                    name.as_deref(),
                    database,
                )
                .await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("deskhook: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format);
    let secret_box = secret_box(
        args.secret_key.as_ref(),
        &args.secret_key_previous,
        &args.database.data_dir,
    )?;
    let database = database::Database::open(args.database.settings()).await?;
    if let Err(error) = check_secret_key(database.url(), &secret_box).await {
        database.close().await;
        return Err(error);
    }
    let config = Config {
        listen: args.listen,
        database_url: database.url().to_owned(),
        pool_size: args.pool_size,
        roles: args.roles,
        allow_networks: args.allow_networks,
        retry_schedule: args.retry_schedule,
        attempt_timeout: args.attempt_timeout,
        egress_proxy: args.egress_proxy,
        worker_concurrency: args.worker_concurrency as usize,
        claim_batch: args.claim_batch as usize,
        shutdown_timeout: args.shutdown_timeout,
        connections: ConnectionLimits {
            max_connections: args.max_connections,
            header_read_timeout: args.header_read_timeout,
            drain_timeout: args.shutdown_timeout,
        },
        request_timeout: args.request_timeout,
        rate_limit: args.rate_limit,
        migrate_on_start: args.migrate,
        queue_synchronous_commit: args.queue_synchronous_commit,
        retention: args.retention,
        secret_box,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot listen on {} (DESKHOOK_LISTEN): {error}",
                config.listen
            )
        })?;
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    let result = crate::run(config, listener, shutdown).await;
    database.close().await;
    result
}

/// Stops the start with one clear line when no key of the ring opens the newest stored
/// secret. A database that cannot be reached yet is not a reason to stop: `/readyz` says so.
async fn check_secret_key(url: &str, secret_box: &SecretBox) -> anyhow::Result<()> {
    let Ok(pool) = database::pool(url, 1) else {
        return Ok(());
    };
    let checked = tokio::time::timeout(
        Duration::from_secs(10),
        crate::webhooks::check_secret_key(&pool, secret_box),
    )
    .await;
    pool.close().await;
    match checked {
        Ok(Err(crate::webhooks::WebhookError::Secret(error))) => Err(anyhow::anyhow!(
            "{error}: set DESKHOOK_SECRET_KEY to the key the secrets were sealed with, or list it in DESKHOOK_SECRET_KEY_PREVIOUS"
        )),
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "could not check the secret key at start");
            Ok(())
        }
        Ok(Ok(())) | Err(_) => Ok(()),
    }
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format);
    let database = database::Database::open(args.database.settings()).await?;
    let mut result = database::migrate_url(database.url()).await;
    if result.is_ok() && args.distribute {
        result = database::distribute_url(database.url()).await;
    }
    database.close().await;
    result?;
    tracing::info!("migrations applied");
    Ok(())
}

/// Opens the database the way `serve` would, applies migrations, and runs `work` on a pool.
async fn with_migrated_pool<T>(
    database: DatabaseArgs,
    work: impl AsyncFnOnce(&sqlx::PgPool) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    telemetry::init(LogFormat::Pretty);
    let database = database::Database::open(database.settings()).await?;
    let result = async {
        database::migrate_url(database.url()).await?;
        let pool = database::pool(database.url(), 2)?;
        let result = work(&pool).await;
        pool.close().await;
        result
    }
    .await;
    database.close().await;
    result
}

async fn create_workspace(name: &str, database: DatabaseArgs) -> anyhow::Result<()> {
    let name = name.trim();
    anyhow::ensure!(
        (1..=200).contains(&name.chars().count()),
        "a workspace name has 1 to 200 characters"
    );
    let line = with_migrated_pool(database, async |pool| {
        let mut tx = pool.begin().await?;
        let workspace_id = auth::create_workspace(&mut *tx, name).await?;
        let key = auth::create_key(
            &mut *tx,
            workspace_id,
            &[Scope::Admin],
            Some("bootstrap"),
            None,
        )
        .await?;
        tx.commit().await?;
        // Field order as api.md prints it.
        #[derive(serde::Serialize)]
        struct Created {
            workspace_id: String,
            api_key: String,
            key_id: String,
            scopes: [&'static str; 1],
        }
        Ok(serde_json::to_string(&Created {
            workspace_id: ids::encode(Kind::Workspace, workspace_id),
            api_key: key.key,
            key_id: ids::encode(Kind::ApiKey, key.record.id),
            scopes: ["admin"],
        })?)
    })
    .await?;
    println!("{line}");
    Ok(())
}

async fn create_key(
    workspace: &str,
    scopes: &[Scope],
    user: Option<&str>,
    name: Option<&str>,
    database: DatabaseArgs,
) -> anyhow::Result<()> {
    let workspace_id = ids::decode(Kind::Workspace, workspace)
        .ok_or_else(|| anyhow::anyhow!("`{workspace}` is not a workspace id (ws_…)"))?;
    let user_id = user
        .map(|u| {
            ids::decode(Kind::User, u)
                .ok_or_else(|| anyhow::anyhow!("`{u}` is not a user id (usr_…)"))
        })
        .transpose()?;
    let mut unique = scopes.to_vec();
    unique.sort_by_key(|scope| scope.as_str());
    unique.dedup();
    let line = with_migrated_pool(database, async |pool| {
        anyhow::ensure!(
            auth::workspace_exists(pool, workspace_id).await?,
            "workspace {workspace} does not exist"
        );
        let key = auth::create_key(pool, workspace_id, &unique, name, user_id).await?;
        #[derive(serde::Serialize)]
        struct Created {
            key_id: String,
            api_key: String,
            scopes: Vec<&'static str>,
        }
        Ok(serde_json::to_string(&Created {
            key_id: ids::encode(Kind::ApiKey, key.record.id),
            api_key: key.key,
            scopes: unique.iter().map(|s| s.as_str()).collect(),
        })?)
    })
    .await?;
    println!("{line}");
    Ok(())
}

async fn postgres(args: PostgresArgs) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt as _;
    telemetry::init(LogFormat::Pretty);
    let database = database::Database::open(DatabaseSettings {
        url: None,
        data_dir: args.data_dir,
        postgres_bin: args.postgres_bin,
    })
    .await?;
    println!("{}", database.url());
    let stop = CancellationToken::new();
    tokio::spawn(signal_shutdown(stop.clone()));
    let mut stdin = tokio::io::stdin();
    let mut sink = [0_u8; 64];
    loop {
        tokio::select! {
            read = stdin.read(&mut sink) => if matches!(read, Ok(0) | Err(_)) { break },
            () = stop.cancelled() => break,
        }
    }
    database.close().await;
    Ok(())
}

/// Cancels `token` on the first SIGTERM or SIGINT.
async fn signal_shutdown(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
    }
    token.cancel();
}

/// Prints a parse error as one line that names the setting (flag and environment variable).
fn report_parse_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = error.print();
        return ExitCode::SUCCESS;
    }
    let rendered = error.render().to_string();
    let first = rendered
        .lines()
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ");
    let setting = error
        .get(ContextKind::InvalidArg)
        .map(ToString::to_string)
        .and_then(|arg| env_name_of(&arg));
    match setting {
        Some(env) => eprintln!("deskhook: {first} (setting {env})"),
        None => eprintln!("deskhook: {first} (see `deskhook --help`)"),
    }
    ExitCode::from(2)
}

/// The environment variable behind a flag as clap names it (`--listen <LISTEN>`).
fn env_name_of(arg: &str) -> Option<String> {
    let long = arg.split_whitespace().next()?.trim_start_matches("--");
    let command = Cli::command();
    command.get_subcommands().find_map(|sub| {
        sub.get_arguments()
            .find(|a| a.get_long() == Some(long))
            .and_then(|a| a.get_env())
            .map(|env| env.to_string_lossy().into_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_map_to_their_environment_variables() {
        assert_eq!(
            env_name_of("--listen <LISTEN>").as_deref(),
            Some("DESKHOOK_LISTEN")
        );
        assert_eq!(
            env_name_of("--retry-schedule <RETRY_SCHEDULE>").as_deref(),
            Some("DESKHOOK_RETRY_SCHEDULE")
        );
        assert_eq!(env_name_of("--nonsense").as_deref(), None);
    }
}
