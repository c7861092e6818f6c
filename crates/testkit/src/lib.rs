//! Test support shared by every crate: a real PostgreSQL and a fresh database per test.
//!
//! With `DATABASE_URL` set (the README's test command sets it to one private cluster for the
//! whole run), tests create their databases on that server. Without it, the first test of a test
//! binary starts a private server with the same code `deskhook serve` uses, in a temporary
//! directory, and the server stops when the test process exits.
//!
//! Each test gets its own database, cloned from a template that has every migration applied,
//! so a test starts from the real schema in a few milliseconds and never sees another test's
//! rows. This crate must never be a dependency of anything but tests.
//!
//! [`TestDatabase::create_on_citus`] gives a database on a private Citus cluster (a
//! coordinator and two workers on loopback) instead, when the Citus extension is installed
//! (`../shared/citus/install`); it is prepared on every node and migrated like the service's
//! (`deskhook migrate`), so each test's tables are distributed for real.

use std::sync::{Mutex, OnceLock};

use deskhook_local_postgres::{LocalCitus, LocalPostgres};
use rand::Rng as _;
use sqlx::{Connection as _, PgConnection, PgPool, postgres::PgPoolOptions};

/// The one migration history of the one database, embedded the same way the service does.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// A database of its own for one test.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    /// Its `postgres://` URL.
    pub url: String,
    /// Its name.
    pub name: String,
}

impl TestDatabase {
    /// A fresh database with every migration applied.
    pub async fn create() -> Self {
        let server = server_url_base();
        let template = template(&server).await;
        let name = format!("test_{}", random_suffix());
        create_database(&format!("{server}/postgres"), &name, Some(&template)).await;
        Self {
            url: format!("{server}/{name}"),
            name,
        }
    }

    /// A fresh database with no migration applied (for tests of the migrations themselves).
    pub async fn create_empty() -> Self {
        let server = server_url_base();
        let name = format!("test_{}", random_suffix());
        create_database(&format!("{server}/postgres"), &name, None).await;
        Self {
            url: format!("{server}/{name}"),
            name,
        }
    }

    /// A fresh database on the private Citus cluster, with the Citus extension created on
    /// every node and the workers added, but no migration applied (the caller migrates it the
    /// way the service does). `None` when the Citus extension is not installed here.
    pub async fn create_on_citus() -> Option<Self> {
        // One preparation at a time (`LocalCitus::create_database` says why).
        static PREPARING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let cluster = citus_cluster()?;
        let _one_at_a_time = PREPARING.lock().await;
        Some(Self::prepare_on(cluster).await)
    }

    /// A Citus cluster of this test's own (a coordinator and two workers), for a test that
    /// stops or restarts a node, with a fresh database on it as [`Self::create_on_citus`]
    /// gives. The cluster stops when the returned [`LocalCitus`] is dropped. `None` when the
    /// Citus extension is not installed here.
    pub async fn create_on_private_citus() -> Option<(LocalCitus, Self)> {
        let cluster = tokio::task::spawn_blocking(start_citus)
            .await
            .expect("starting a Citus cluster")?;
        let database = Self::prepare_on(&cluster).await;
        Some((cluster, database))
    }

    async fn prepare_on(cluster: &LocalCitus) -> Self {
        let name = format!("test_{}", random_suffix());
        let url = cluster
            .create_database(&name)
            .await
            .unwrap_or_else(|error| panic!("preparing a database on the Citus cluster: {error}"));
        // The service gets the URL as an operator would write it (TLS preferred), so it meets
        // the node's certificate the way it would in production.
        Self { url, name }
    }

    /// A pool on this database.
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(10)
            .connect(&plaintext(&self.url))
            .await
            .expect("connecting to the test database")
    }

    /// The URL of the server that holds this database (no database part).
    pub fn server_url(&self) -> String {
        server_url_base()
    }
}

/// `postgres://user:password@host:port` of the test server, starting it if needed.
fn server_url_base() -> String {
    static SERVER: OnceLock<String> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            if let Ok(url) = std::env::var("DATABASE_URL") {
                return strip_database(&url);
            }
            // Kept for the life of the test process; the watchdog stops it when we exit.
            static LOCAL: OnceLock<LocalPostgres> = OnceLock::new();
            let dir = std::env::temp_dir().join(format!(
                "deskhook-test-{}-{}",
                std::process::id(),
                random_suffix()
            ));
            let server = LOCAL.get_or_init(|| {
                LocalPostgres::start(&dir).unwrap_or_else(|error| {
                    panic!("tests need PostgreSQL server binaries or DATABASE_URL: {error}")
                })
            });
            strip_database(&server.connect_info().url("postgres"))
        })
        .clone()
}

/// Creates database `name` (from `template`, if given) on the server `admin_url` reaches.
async fn create_database(admin_url: &str, name: &str, template: Option<&str>) {
    let mut admin = PgConnection::connect(admin_url)
        .await
        .expect("connecting to the test PostgreSQL");
    let from = template.map_or_else(String::new, |t| format!(r#" TEMPLATE "{t}""#));
    sqlx::query(&format!(r#"CREATE DATABASE "{name}"{from}"#))
        .execute(&mut admin)
        .await
        .expect("creating the test database");
    admin.close().await.ok();
}

/// `url` without TLS, for the kit's own connections on loopback: Citus nodes present a
/// certificate rustls refuses (the service falls back on its own, `deskhook::database`).
fn plaintext(url: &str) -> String {
    if url.contains("sslmode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&sslmode=disable")
    } else {
        format!("{url}?sslmode=disable")
    }
}

/// The private Citus cluster of this test process, started on first use; `None` without the
/// extension.
fn citus_cluster() -> Option<&'static LocalCitus> {
    static CLUSTER: OnceLock<Option<LocalCitus>> = OnceLock::new();
    CLUSTER.get_or_init(start_citus).as_ref()
}

/// A coordinator and two workers in a temporary directory (blocking); `None` without the
/// extension.
fn start_citus() -> Option<LocalCitus> {
    let binaries = deskhook_local_postgres::Binaries::find().ok()?;
    if !LocalCitus::available(&binaries) {
        return None;
    }
    let dir = std::env::temp_dir().join(format!(
        "deskhook-citus-{}-{}",
        std::process::id(),
        random_suffix()
    ));
    Some(LocalCitus::start(&dir, 2).unwrap_or_else(|error| {
        panic!("the Citus extension is installed but the cluster did not start: {error}")
    }))
}

fn strip_database(url: &str) -> String {
    let without_query = url.split('?').next().unwrap_or(url);
    match without_query.rfind('/') {
        Some(slash) if without_query[..slash].contains("://") && slash > "postgres://".len() => {
            without_query[..slash].to_owned()
        }
        _ => without_query.to_owned(),
    }
}

/// The template database for this migration set, created once per server. Several test
/// processes may race to create it; an advisory lock makes one of them do it.
async fn template(server: &str) -> String {
    static NAME: Mutex<Option<String>> = Mutex::new(None);
    if let Some(name) = NAME.lock().expect("template lock").clone() {
        return name;
    }
    let fingerprint: u64 = MIGRATOR
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, migration| {
            migration.checksum.iter().fold(hash, |h, byte| {
                (h ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3)
            })
        });
    let name = format!("deskhook_template_{fingerprint:016x}");
    let mut admin = PgConnection::connect(&format!("{server}/postgres"))
        .await
        .expect("connecting to the test PostgreSQL");
    sqlx::query("SELECT pg_advisory_lock(72620001)")
        .execute(&mut admin)
        .await
        .expect("locking template creation");
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1 AND datistemplate)",
    )
    .bind(&name)
    .fetch_one(&mut admin)
    .await
    .expect("looking for the template");
    if !exists {
        let building = format!("{name}_building");
        sqlx::query(&format!(r#"DROP DATABASE IF EXISTS "{building}""#))
            .execute(&mut admin)
            .await
            .expect("dropping a half-built template");
        sqlx::query(&format!(r#"CREATE DATABASE "{building}""#))
            .execute(&mut admin)
            .await
            .expect("creating the template");
        {
            let mut conn = PgConnection::connect(&format!("{server}/{building}"))
                .await
                .expect("connecting to the template");
            MIGRATOR
                .run(&mut conn)
                .await
                .expect("applying migrations to the template");
            conn.close().await.ok();
        }
        sqlx::query(&format!(
            r#"ALTER DATABASE "{building}" RENAME TO "{name}""#
        ))
        .execute(&mut admin)
        .await
        .expect("naming the template");
        sqlx::query(&format!(r#"ALTER DATABASE "{name}" WITH IS_TEMPLATE true"#))
            .execute(&mut admin)
            .await
            .expect("marking the template");
    }
    sqlx::query("SELECT pg_advisory_unlock(72620001)")
        .execute(&mut admin)
        .await
        .expect("unlocking template creation");
    admin.close().await.ok();
    *NAME.lock().expect("template lock") = Some(name.clone());
    name
}

fn random_suffix() -> String {
    let value: u64 = rand::thread_rng().r#gen();
    format!("{value:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_the_database_from_urls() {
        assert_eq!(
            strip_database("postgres://u:p@127.0.0.1:5432/app?sslmode=disable"),
            "postgres://u:p@127.0.0.1:5432"
        );
        assert_eq!(
            strip_database("postgres://u:p@127.0.0.1:5432"),
            "postgres://u:p@127.0.0.1:5432"
        );
    }
}
