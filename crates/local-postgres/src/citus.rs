//! A private Citus cluster on loopback: a coordinator and workers, each a [`LocalPostgres`]
//! with the Citus extension preloaded, for tests and benchmarks that need a real distributed
//! PostgreSQL. The nodes share one password, so the coordinator reaches its workers as the
//! same role the service connects with (`pg_dist_authinfo`, set where a database is prepared).
//!
//! It only starts and stops servers: creating databases, `CREATE EXTENSION citus` and adding
//! the workers to a database's metadata take SQL, which the caller runs. It must never start a
//! node without the extension installed ([`LocalCitus::available`]).

use std::{fs, path::Path};

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
