//! The database: where it is, the connection pool, and the migrations.
//!
//! With `DATABASE_URL` set, Deskhook uses that server. Without it, [`Database::open`] starts
//! the private PostgreSQL (crate `deskhook-local-postgres`) under the data directory and makes
//! sure its `deskhook` database exists. Migrations are the `migrations/` directory, embedded
//! at build time; sqlx's migrator holds an advisory lock while it runs, so several instances
//! may start at once.
//!
//! TLS follows libpq's `sslmode`, default `prefer`: TLS when it can be had, plaintext
//! otherwise. sqlx gives up instead when a TLS handshake fails (Citus, for one, gives every
//! node a self-signed X.509 v1 certificate at `CREATE EXTENSION citus`, which rustls cannot
//! use), so for `prefer` the choice is made once, when the database is opened
//! ([`prefer_tls_or_plaintext`]). `require` and the `verify-*` modes never fall back, and their
//! failures name the fix ([`describe`]).
//!
//! On Citus, `deskhook migrate --distribute` also places the tables ([`citus`]).

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use deskhook_local_postgres::{Binaries, LocalPostgres};
use sqlx::{
    Connection as _, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions, PgSslMode},
};

pub mod citus;

/// Every migration, embedded from `migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Where the database is, as configured.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// An external server (`DATABASE_URL`).
    pub url: Option<String>,
    /// The private server's data directory (`DESKHOOK_DATA_DIR`).
    pub data_dir: PathBuf,
    /// Where `initdb`/`postgres` are (`DESKHOOK_POSTGRES_BIN`), if not the default search.
    pub postgres_bin: Option<PathBuf>,
}

/// An opened database: its URL and, for the private server, the handle that stops it.
#[derive(Debug)]
pub struct Database {
    url: String,
    local: Option<LocalPostgres>,
}

impl Database {
    /// Resolves the settings to a reachable database, starting the private server if needed.
    pub async fn open(settings: DatabaseSettings) -> anyhow::Result<Self> {
        if let Some(url) = settings.url {
            connect_options(&url)?;
            let url = prefer_tls_or_plaintext(url).await;
            return Ok(Self { url, local: None });
        }
        let data_dir = settings.data_dir.clone();
        let bin = settings.postgres_bin.clone();
        let local = tokio::task::spawn_blocking(move || {
            let binaries = match bin {
                Some(dir) => Binaries::in_dir(&dir),
                None => Binaries::find(),
            }?;
            LocalPostgres::start_with(&data_dir, &binaries)
        })
        .await
        .context("starting the private PostgreSQL")??;
        for note in local.notes() {
            tracing::info!("{note}");
        }
        tracing::info!(
            cluster = %local.cluster_dir().display(),
            port = local.connect_info().port,
            started_here = local.owns_server(),
            "using the private PostgreSQL"
        );
        ensure_database(&local.connect_info().url("postgres"), "deskhook").await?;
        Ok(Self {
            url: local.connect_info().url("deskhook"),
            local: Some(local),
        })
    }

    /// The URL to connect to. Contains a password: never log it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The private server's process id (its postmaster), when Deskhook runs one.
    pub fn server_pid(&self) -> Option<u32> {
        self.local.as_ref()?.postmaster_pid()
    }

    /// Stops the private server if this process started it.
    pub async fn close(self) {
        if let Some(local) = self.local {
            let _ = tokio::task::spawn_blocking(move || local.stop()).await;
        }
    }
}

async fn ensure_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(admin_url)
        .await
        .context("connecting to the private PostgreSQL")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        // Two commands starting at once may both try; the loser's "already exists" is fine.
        if let Err(error) = sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
            .execute(&mut conn)
            .await
        {
            let duplicate = error
                .as_database_error()
                .and_then(|e| e.code())
                .is_some_and(|code| code == "42P04");
            if !duplicate {
                return Err(error).context("creating the deskhook database");
            }
        }
    }
    conn.close().await.ok();
    Ok(())
}

/// The service's pool. Lazy: the service starts (and answers `/healthz`) while the database
/// is still unreachable, and `/readyz` says when it is usable.
pub fn pool(url: &str, size: u32) -> anyhow::Result<PgPool> {
    Ok(lazy_pool(
        connect_options(url)?.application_name("deskhook"),
        size,
    ))
}

/// The dispatcher's own small pool, whose commits (claims and settles) do not wait for the WAL
/// flush unless `synchronous` says so.
///
/// Why that is safe: a claim or settle lost in a database crash only means a delivery is
/// attempted again (its lease expires, or it is still waiting), which at-least-once delivery
/// with `webhook-id` dedupe allows; accepted events and the outbox keep synchronous commits on
/// the main pool, so nothing accepted is ever lost. Why it matters: the claim and settle round
/// trips then end without waiting for the disk, and the server flushes WAL less often.
pub fn queue_pool(url: &str, size: u32, synchronous: bool) -> anyhow::Result<PgPool> {
    // No bitmap scans for the dispatcher's queries. The claim counts in-flight deliveries
    // over the hot table's partial index, which churns thousands of rows a second; a bitmap
    // scan revisits every dead entry on every claim (never marking them dead, as a plain index
    // scan does), until autovacuum comes round. Measured mid-`steady`: 30,317 index entries and
    // 482 heap pages for 30 live rows, 7 ms per claim; a plain index scan skips them after
    // its first pass.
    let mut options = connect_options(url)?
        .application_name("deskhook-dispatcher")
        .options([("enable_bitmapscan", "off")]);
    if !synchronous {
        options = options.options([("synchronous_commit", "off")]);
    }
    Ok(lazy_pool(options, size))
}

/// For `sslmode=prefer` (stated or by default): tries one TLS connection, and when its
/// handshake fails, returns the URL with `sslmode=disable`, saying so in one warning line, as
/// libpq's `prefer` falls back. Any other mode, an unreachable server, or a handshake that
/// works leave the URL as it is.
pub async fn prefer_tls_or_plaintext(url: String) -> String {
    let Ok(options) = connect_options(&url) else {
        return url;
    };
    if !matches!(options.get_ssl_mode(), PgSslMode::Prefer) {
        return url;
    }
    let attempt = tokio::time::timeout(
        Duration::from_secs(10),
        PgConnection::connect_with(&options),
    )
    .await;
    match attempt {
        Ok(Err(error)) if is_tls_failure(&error) => {
            tracing::warn!(
                "{}; connecting without TLS, as sslmode=prefer allows",
                describe(&error)
            );
            with_sslmode_disable(&url)
        }
        Ok(Ok(connection)) => {
            connection.close().await.ok();
            url
        }
        Ok(Err(_)) | Err(_) => url,
    }
}

/// `url` with `sslmode=disable` in place of any `sslmode` it had.
fn with_sslmode_disable(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_owned();
    };
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(name, _)| name != "sslmode")
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    parsed
        .query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair("sslmode", "disable");
    parsed.into()
}

/// Whether `error` is a failed TLS handshake. sqlx reports rustls's verdicts on the server's
/// certificate as I/O errors during the handshake, so their text is all there is to go by.
fn is_tls_failure(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Tls(_) => true,
        sqlx::Error::Io(cause) => {
            let text = cause.to_string();
            text.contains("certificate") || text.contains("TLS") || text.contains("handshake")
        }
        _ => false,
    }
}

/// A database error in one line, with the fix where there is a known one.
pub fn describe(error: &sqlx::Error) -> String {
    match error {
        _ if is_tls_failure(error) && error.to_string().contains("UnsupportedCertVersion") => {
            "the database server presents an X.509 v1 TLS certificate (Citus makes one for \
             every node), which TLS here cannot use: give the server a v3 certificate \
             (ssl_cert_file; `openssl req -x509` makes one) or, on a trusted network, set \
             sslmode=prefer or sslmode=disable in DATABASE_URL"
                .to_owned()
        }
        _ if is_tls_failure(error) => format!(
            "TLS to the database failed ({error}): check the server's certificate and \
             DATABASE_URL's sslmode and sslrootcert"
        ),
        other => other.to_string(),
    }
}

fn connect_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    url.parse()
        .context("DATABASE_URL is not a valid PostgreSQL URL")
}

fn lazy_pool(options: PgConnectOptions, size: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(size)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(300))
        .connect_lazy_with(options)
}

/// Applies every pending migration on `pool`.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Connects to `url` once and applies every pending migration (`deskhook migrate`).
pub async fn migrate_url(url: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(url)
        .await
        .map_err(|error| anyhow::anyhow!("connecting to the database: {}", describe(&error)))?;
    MIGRATOR
        .run(&mut conn)
        .await
        .context("applying migrations")?;
    conn.close().await.ok();
    Ok(())
}

/// Connects to `url` once and places the tables on Citus (`deskhook migrate --distribute`).
pub async fn distribute_url(url: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(url)
        .await
        .map_err(|error| anyhow::anyhow!("connecting to the database: {}", describe(&error)))?;
    let placed = citus::distribute(&mut conn).await?;
    conn.close().await.ok();
    tracing::info!(
        placed,
        reference = citus::REFERENCE_TABLES.len(),
        distributed = citus::DISTRIBUTED_TABLES.len(),
        "tables placed on Citus"
    );
    Ok(())
}

/// Whether every embedded migration has been applied to the database behind `pool`.
pub async fn migrations_applied(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
            .or_else(|error| match &error {
                // No migrations table yet: nothing applied.
                sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => Ok(None),
                _ => Err(error),
            })?;
    Ok(applied.is_some_and(|version| version >= latest))
}
