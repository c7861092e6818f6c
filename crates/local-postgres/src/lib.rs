//! A private PostgreSQL server started from the system's server binaries.
//!
//! Deskhook needs no database configuration to run: with no `DATABASE_URL` it calls
//! [`LocalPostgres::start`], which finds `initdb` and `postgres` (on `PATH` or under
//! `/usr/lib/postgresql/*/bin`), creates a cluster in the data directory on first use, and
//! starts it on `127.0.0.1` on a free port, password-protected. The test support uses the same
//! code, so tests run against exactly what users run.
//!
//! Lifetime: the server runs under a tiny `sh` watchdog whose standard input is a pipe held by
//! this process. Dropping the [`LocalPostgres`] (or this process dying in any way, even by
//! `SIGKILL`) closes the pipe, and the watchdog asks PostgreSQL for a fast shutdown. So no
//! server is ever left behind, and a crashed earlier run cannot wedge the next one.
//!
//! What it must never do: listen on anything but loopback, run the server as root, or print
//! the database password.

mod binaries;
mod citus;
mod cluster;
mod os_user;

use std::{
    fs,
    io::{self, Read as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

pub use binaries::Binaries;
pub use citus::LocalCitus;

/// Why the private server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `initdb`/`postgres` found.
    #[error(
        "PostgreSQL server binaries (initdb, postgres) were not found {searched}: \
         install them (Debian: `apt-get install -y postgresql`) or set DATABASE_URL"
    )]
    BinariesNotFound {
        /// Where they were looked for.
        searched: String,
    },
    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A statement preparing a database on a node failed.
    #[error("{context}: {source}")]
    Sql {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: sqlx::Error,
    },
    /// A command (initdb, useradd, ...) exited unsuccessfully.
    #[error("{command} failed: {output}")]
    Command {
        /// The command that failed.
        command: String,
        /// The tail of what it printed.
        output: String,
    },
    /// The server did not become ready.
    #[error(
        "the private PostgreSQL did not start within {waited:?}; its log ({log}) ends with: {tail}"
    )]
    StartTimeout {
        /// How long we waited.
        waited: Duration,
        /// Where the server log is.
        log: String,
        /// The last lines of the log.
        tail: String,
    },
    /// The server exited while starting.
    #[error("the private PostgreSQL exited while starting; its log ({log}) ends with: {tail}")]
    Exited {
        /// Where the server log is.
        log: String,
        /// The last lines of the log.
        tail: String,
    },
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Server settings tuned for a queue workload (see the design's queue.md pitfalls). They are
/// passed on the command line at every start, so a newer Deskhook retunes an older cluster.
const TUNING: &[(&str, &str)] = &[
    ("listen_addresses", "127.0.0.1"),
    ("unix_socket_directories", ""),
    ("max_connections", "400"),
    ("shared_buffers", "256MB"),
    ("max_wal_size", "2GB"),
    ("min_wal_size", "256MB"),
    ("checkpoint_timeout", "15min"),
    ("wal_compression", "on"),
    ("idle_in_transaction_session_timeout", "60s"),
    // The hot table deletes thousands of rows a second, and a claim walks their dead index
    // entries until a vacuum removes them: with the default 60 s between autovacuum visits a
    // steady run's claim grew from 1.5 to 7.5 ms. Visits are cheap when there is nothing to do.
    ("autovacuum_naptime", "1s"),
    ("track_io_timing", "off"),
    ("log_min_messages", "warning"),
    ("log_line_prefix", "%m [%p] "),
];

/// Where to connect to a running private server.
#[derive(Clone)]
pub struct ConnectInfo {
    /// Always a loopback address.
    pub host: String,
    /// The TCP port.
    pub port: u16,
    /// The database role.
    pub user: String,
    password: String,
}

impl ConnectInfo {
    /// A `postgres://` URL for `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{}:{}@{}:{}/{}",
            self.user, self.password, self.host, self.port, database
        )
    }
}

impl std::fmt::Debug for ConnectInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectInfo")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

/// How a server is started, beyond what every private server gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerOptions {
    /// Preload the Citus extension (a node of a [`LocalCitus`] cluster).
    pub citus: bool,
}

/// A running private server. Dropping it stops the server if this value started it.
pub struct LocalPostgres {
    connect: ConnectInfo,
    cluster_dir: PathBuf,
    watchdog: Option<(Child, ChildStdin)>,
    notes: Vec<String>,
    binaries: Binaries,
    owner: os_user::ServerOwner,
    options: ServerOptions,
}

impl std::fmt::Debug for LocalPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPostgres")
            .field("connect", &self.connect)
            .field("cluster_dir", &self.cluster_dir)
            .field("owned", &self.watchdog.is_some())
            .finish_non_exhaustive()
    }
}

/// The database role the private server is created with.
pub const ROLE: &str = "deskhook";

impl LocalPostgres {
    /// Starts (or joins) the private server whose files live under `data_dir`.
    ///
    /// The cluster is created on first use in `data_dir/pg`; later calls reuse it. If a server
    /// on that cluster is already running (another Deskhook command has it), this joins it and
    /// leaves it running on drop. Blocking: call it before the async runtime gets busy, or from
    /// `spawn_blocking`.
    pub fn start(data_dir: &Path) -> Result<Self, Error> {
        Self::start_with(data_dir, &Binaries::find()?)
    }

    /// Like [`LocalPostgres::start`], with the server binaries given.
    pub fn start_with(data_dir: &Path, binaries: &Binaries) -> Result<Self, Error> {
        Self::start_with_options(data_dir, binaries, ServerOptions::default())
    }

    /// Like [`LocalPostgres::start_with`], with `options`.
    pub fn start_with_options(
        data_dir: &Path,
        binaries: &Binaries,
        options: ServerOptions,
    ) -> Result<Self, Error> {
        let owner = os_user::server_owner()?;
        fs::create_dir_all(data_dir).map_err(io_err(format!("creating {}", data_dir.display())))?;
        let data_dir = data_dir
            .canonicalize()
            .map_err(io_err(format!("resolving {}", data_dir.display())))?;
        let mut notes = Vec::new();
        let cluster_dir = cluster::location(&data_dir, &owner, &mut notes)?;
        let password = cluster::password(&data_dir)?;
        if !cluster_dir.join("PG_VERSION").exists() {
            cluster::init(binaries, &cluster_dir, &owner, &password)?;
            notes.push(format!(
                "created a private PostgreSQL cluster in {}",
                cluster_dir.display()
            ));
        }

        if let Some(port) = cluster::running_port(&cluster_dir)? {
            return Ok(Self {
                connect: ConnectInfo {
                    host: "127.0.0.1".into(),
                    port,
                    user: ROLE.into(),
                    password,
                },
                cluster_dir,
                watchdog: None,
                notes,
                binaries: binaries.clone(),
                owner,
                options,
            });
        }

        // The free port can be taken by someone else before the server binds it: try again.
        let log_path = cluster_dir.with_extension("log");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port()?;
            let (child, stdin) =
                spawn_watchdog(binaries, &cluster_dir, &owner, port, &log_path, options)?;
            let mut server = Self {
                connect: ConnectInfo {
                    host: "127.0.0.1".into(),
                    port,
                    user: ROLE.into(),
                    password: password.clone(),
                },
                cluster_dir: cluster_dir.clone(),
                watchdog: Some((child, stdin)),
                notes: notes.clone(),
                binaries: binaries.clone(),
                owner: owner.clone(),
                options,
            };
            match server.wait_ready(&log_path, Duration::from_secs(60)) {
                Ok(()) => return Ok(server),
                Err(Error::Exited { tail, .. })
                    if attempt < 3 && tail.contains("could not bind") => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// Where to connect.
    pub fn connect_info(&self) -> &ConnectInfo {
        &self.connect
    }

    /// The server's process id (its postmaster), from its `postmaster.pid`; `None` when it
    /// is not running.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.cluster_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// The cluster's directory (under the data directory, or a reachable fallback for root).
    pub fn cluster_dir(&self) -> &Path {
        &self.cluster_dir
    }

    /// Whether this value started the server (and so stops it when dropped).
    pub fn owns_server(&self) -> bool {
        self.watchdog.is_some()
    }

    /// Things worth telling the operator (a cluster created, a directory relocated).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Stops the server (fast shutdown: clients are disconnected) and starts it again on the
    /// same port, as an operator's restart would. Only for a server this value started.
    pub fn restart(&mut self) -> Result<(), Error> {
        if self.watchdog.is_none() {
            return Ok(());
        }
        self.shutdown();
        self.start_again()
    }

    /// Kills the server as a crash would (an immediate shutdown: no checkpoint, crash
    /// recovery on the next start) and starts it again on the same port. Only for a server
    /// this value started.
    pub fn crash_and_restart(&mut self) -> Result<(), Error> {
        if self.watchdog.is_none() {
            return Ok(());
        }
        let postmaster = self
            .postmaster_pid()
            .and_then(|pid| i32::try_from(pid).ok());
        if let Some(pid) = postmaster {
            // SIGQUIT is PostgreSQL's immediate shutdown.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGQUIT,
            );
        }
        if let Some((mut child, stdin)) = self.watchdog.take() {
            let _ = child.wait();
            drop(stdin);
        }
        self.start_again()
    }

    /// Starts the stopped server on its port and waits until it accepts connections.
    fn start_again(&mut self) -> Result<(), Error> {
        let log_path = self.cluster_dir.with_extension("log");
        let (child, stdin) = spawn_watchdog(
            &self.binaries,
            &self.cluster_dir,
            &self.owner,
            self.connect.port,
            &log_path,
            self.options,
        )?;
        self.watchdog = Some((child, stdin));
        self.wait_ready(&log_path, Duration::from_secs(60))
    }

    /// Stops the server if this value started it, and waits until it has exited.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some((mut child, stdin)) = self.watchdog.take() {
            // Closing the pipe is the stop signal: the watchdog asks for a fast shutdown.
            drop(stdin);
            let _ = child.wait();
        }
    }

    fn wait_ready(&mut self, log_path: &Path, limit: Duration) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            let exited = self
                .watchdog
                .as_mut()
                .is_some_and(|(child, _)| matches!(child.try_wait(), Ok(Some(_))));
            if exited {
                self.watchdog = None;
                return Err(Error::Exited {
                    log: log_path.display().to_string(),
                    tail: log_tail(log_path),
                });
            }
            if cluster::pid_file_status(&self.cluster_dir).as_deref() == Some("ready") {
                return Ok(());
            }
            if started.elapsed() > limit {
                self.shutdown();
                return Err(Error::StartTimeout {
                    waited: limit,
                    log: log_path.display().to_string(),
                    tail: log_tail(log_path),
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs `postgres` under `sh`: the shell forwards the end of its stdin as a fast-shutdown
/// request and exits when the server does, so `try_wait` on it tells whether the server died.
fn spawn_watchdog(
    binaries: &Binaries,
    cluster_dir: &Path,
    owner: &os_user::ServerOwner,
    port: u16,
    log_path: &Path,
    options: ServerOptions,
) -> Result<(Child, ChildStdin), Error> {
    // Background jobs of a non-interactive shell read /dev/null, so the pipe is kept on fd 3.
    const SCRIPT: &str = r#"exec 3<&0
"$@" </dev/null &
pg=$!
( cat <&3 >/dev/null; kill -INT "$pg" 2>/dev/null ) &
wait "$pg""#;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(io_err(format!("opening {}", log_path.display())))?;
    let log_err = log
        .try_clone()
        .map_err(io_err("duplicating the log handle"))?;
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(SCRIPT)
        .arg("deskhook-postgres")
        .arg(&binaries.postgres)
        .arg("-D")
        .arg(cluster_dir)
        .arg("-p")
        .arg(port.to_string());
    for (name, value) in TUNING {
        command.arg("-c").arg(format!("{name}={value}"));
    }
    // Statement statistics for operators and the benchmark, where the server has the module.
    // Citus must come first in the list.
    let mut preload = Vec::new();
    if options.citus {
        preload.push("citus");
    }
    if binaries.has_library("pg_stat_statements") {
        preload.push("pg_stat_statements");
        command.arg("-c").arg("pg_stat_statements.track=top");
    }
    if !preload.is_empty() {
        command
            .arg("-c")
            .arg(format!("shared_preload_libraries={}", preload.join(",")));
    }
    if options.citus {
        // A cluster on one machine: the nodes talk over loopback with the certificates Citus
        // generates, and prepared transactions carry its two-phase commits.
        command.arg("-c").arg("max_prepared_transactions=200");
    }
    command
        .stdin(Stdio::piped())
        .stdout(log)
        .stderr(log_err)
        // Own process group: a Ctrl-C in the terminal reaches Deskhook, which drains first
        // and then stops the database, instead of both being interrupted at once.
        .process_group(0);
    owner.apply(&mut command);
    let mut child = command
        .spawn()
        .map_err(io_err("starting the private PostgreSQL"))?;
    let stdin = child.stdin.take().expect("stdin was piped");
    Ok((child, stdin))
}

fn free_port() -> Result<u16, Error> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(io_err("finding a free loopback port"))?;
    let port = listener
        .local_addr()
        .map_err(io_err("finding a free loopback port"))?
        .port();
    Ok(port)
}

fn log_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = fs::File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}
