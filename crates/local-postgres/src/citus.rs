//! A private Citus cluster on loopback: a coordinator and workers, each a [`LocalPostgres`]
//! with the Citus extension preloaded, for tests and benchmarks that need a real distributed
//! PostgreSQL. The nodes share one password, so the coordinator reaches its workers as the
//! same role the service connects with (`pg_dist_authinfo`, set where a database is prepared).
//!
//! It starts and stops the nodes and makes a database usable on them
//! ([`LocalCitus::create_database`]: the database on every node, the extension, the nodes'
//! password and the workers added), so tests and the benchmark prepare a cluster one way. It
//! never touches the schema: distributing tables is the service's (`deskhook migrate
//! --distribute`). It must never start a node without the extension installed
//! ([`LocalCitus::available`]).

use std::{fs, path::Path, time::Duration};

use sqlx::{Connection as _, PgConnection};

use crate::{Binaries, Error, LocalPostgres, ServerOptions, cluster, io_err};

/// A running Citus cluster. Dropping it stops every node it started.
pub struct LocalCitus {
    coordinator: LocalPostgres,
    workers: Vec<LocalPostgres>,
    password: String,
}

impl std::fmt::Debug for LocalCitus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCitus")
            .field("coordinator", &self.coordinator)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl LocalCitus {
    /// Whether these server binaries have the Citus extension installed.
    pub fn available(binaries: &Binaries) -> bool {
        binaries.has_library("citus")
    }

    /// Starts (or joins) a coordinator and `workers` workers whose files live under
    /// `data_dir` (`coordinator/`, `worker-1/`, ...). Blocking, like [`LocalPostgres::start`].
    pub fn start(data_dir: &Path, workers: usize) -> Result<Self, Error> {
        let binaries = Binaries::find()?;
        let options = ServerOptions { citus: true };
        let coordinator_dir = data_dir.join("coordinator");
        fs::create_dir_all(&coordinator_dir)
            .map_err(io_err(format!("creating {}", coordinator_dir.display())))?;
        let password = cluster::password(&coordinator_dir)?;
        let coordinator = LocalPostgres::start_with_options(&coordinator_dir, &binaries, options)?;
        let mut started = Vec::with_capacity(workers);
        for n in 1..=workers {
            let dir = data_dir.join(format!("worker-{n}"));
            share_password(&dir, &password)?;
            started.push(LocalPostgres::start_with_options(&dir, &binaries, options)?);
        }
        Ok(Self {
            coordinator,
            workers: started,
            password,
        })
    }

    /// The node clients connect to.
    pub fn coordinator(&self) -> &LocalPostgres {
        &self.coordinator
    }

    /// The workers, which hold the shards.
    pub fn workers(&self) -> &[LocalPostgres] {
        &self.workers
    }

    /// A worker, to restart or crash it under load.
    pub fn worker_mut(&mut self, index: usize) -> Option<&mut LocalPostgres> {
        self.workers.get_mut(index)
    }

    /// The password every node's role has: what the coordinator's `pg_dist_authinfo` needs.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Every node, the coordinator first.
    pub fn nodes(&self) -> impl Iterator<Item = &LocalPostgres> {
        std::iter::once(&self.coordinator).chain(&self.workers)
    }

    /// Creates database `name` on every node with the Citus extension, tells every node the
    /// cluster's password for reaching the others, and adds the workers to the coordinator's
    /// metadata. Returns the coordinator's URL for it, as an operator would write it (TLS
    /// preferred). No table is created: the caller migrates and distributes.
    ///
    /// Prepare one database at a time per cluster: the first `CREATE EXTENSION citus` on a
    /// node turns TLS on there (a reload), and a coordinator adding that node at that moment
    /// can meet it half-way (the add is retried for that reason).
    pub async fn create_database(&self, name: &str) -> Result<String, Error> {
        for node in self.nodes() {
            let info = node.connect_info();
            on_node(
                node,
                &format!(r#"CREATE DATABASE "{name}""#),
                "creating the database",
            )
            .await?;
            let mut conn = connect(&info.url(name)).await?;
            sql(
                "CREATE EXTENSION citus",
                &mut conn,
                "creating the Citus extension",
            )
            .await?;
            sqlx::query(
                "INSERT INTO pg_dist_authinfo (nodeid, rolename, authinfo) \
                 VALUES (0, current_user, 'password=' || $1)",
            )
            .bind(&self.password)
            .execute(&mut conn)
            .await
            .map_err(sql_err("storing the nodes' password"))?;
            conn.close().await.ok();
        }
        let coordinator = self.coordinator.connect_info();
        let mut conn = connect(&coordinator.url(name)).await?;
        sqlx::query("SELECT citus_set_coordinator_host('127.0.0.1', $1)")
            .bind(i32::from(coordinator.port))
            .execute(&mut conn)
            .await
            .map_err(sql_err("naming the coordinator"))?;
        for worker in &self.workers {
            let port = i32::from(worker.connect_info().port);
            let mut attempt = 0;
            loop {
                attempt += 1;
                let added = sqlx::query("SELECT citus_add_node('127.0.0.1', $1)")
                    .bind(port)
                    .execute(&mut conn)
                    .await;
                match added {
                    Ok(_) => break,
                    Err(error) if attempt < 5 => {
                        tracing::debug!(%error, port, "adding a Citus worker failed; trying again");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(error) => return Err(sql_err("adding a worker")(error)),
                }
            }
        }
        conn.close().await.ok();
        Ok(coordinator.url(name))
    }

    /// Drops database `name` from every node (workers first), if it exists.
    pub async fn drop_database(&self, name: &str) -> Result<(), Error> {
        for node in self
            .workers
            .iter()
            .chain(std::iter::once(&self.coordinator))
        {
            on_node(
                node,
                &format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#),
                "dropping the database",
            )
            .await?;
        }
        Ok(())
    }
}

/// A plain-text connection for preparing a node: on loopback, and Citus nodes present a
/// certificate rustls refuses.
async fn connect(url: &str) -> Result<PgConnection, Error> {
    let url = if url.contains('?') {
        format!("{url}&sslmode=disable")
    } else {
        format!("{url}?sslmode=disable")
    };
    PgConnection::connect(&url)
        .await
        .map_err(sql_err("connecting to a Citus node"))
}

/// Runs `statement` in the `postgres` database of `node` (creating and dropping databases).
async fn on_node(node: &LocalPostgres, statement: &str, context: &str) -> Result<(), Error> {
    let mut admin = connect(&node.connect_info().url("postgres")).await?;
    sql(statement, &mut admin, context).await?;
    admin.close().await.ok();
    Ok(())
}

async fn sql(statement: &str, conn: &mut PgConnection, context: &str) -> Result<(), Error> {
    sqlx::raw_sql(statement)
        .execute(conn)
        .await
        .map(drop)
        .map_err(sql_err(context))
}

fn sql_err(context: &str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
    move |source| Error::Sql {
        context: context.to_owned(),
        source,
    }
}

/// Writes the cluster's password where a node's server creates or reads it, before its first
/// start, so every node's role has the same one.
fn share_password(node_dir: &Path, password: &str) -> Result<(), Error> {
    fs::create_dir_all(node_dir).map_err(io_err(format!("creating {}", node_dir.display())))?;
    let path = node_dir.join("pg.password");
    if path.exists() {
        return Ok(());
    }
    cluster::write_private(&path, password)
}
