//! The cluster's files: where they live, creating them, and reading `postmaster.pid`.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use rand::{Rng as _, distributions::Alphanumeric};
use sha2::{Digest as _, Sha256};

use crate::{Binaries, Error, ROLE, io_err, os_user::ServerOwner};

/// Where the cluster lives: `data_dir/pg`, unless the server's user cannot reach it (root with
/// a data directory under a closed home), in which case a directory under `/var/lib/deskhook`
/// derived from the data directory's path, so the same data directory always maps to it.
pub(crate) fn location(
    data_dir: &Path,
    owner: &ServerOwner,
    notes: &mut Vec<String>,
) -> Result<PathBuf, Error> {
    let preferred = data_dir.join("pg");
    if !owner.is_other_user() {
        return Ok(preferred);
    }
    // The data directory itself must be traversable; the password file inside stays 0600.
    let _ = fs::set_permissions(data_dir, fs::Permissions::from_mode(0o755));
    if let Some(closed) = first_closed_ancestor(&preferred) {
        let digest = hex::encode(&Sha256::digest(data_dir.as_os_str().as_encoded_bytes())[..6]);
        let base = Path::new("/var/lib/deskhook");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(base)
            .map_err(io_err(format!("creating {}", base.display())))?;
        let fallback = base.join(format!("pg-{digest}"));
        notes.push(format!(
            "{} is not reachable by the database user {} ({} is closed), so the private PostgreSQL lives in {}",
            preferred.display(),
            owner.name,
            closed.display(),
            fallback.display()
        ));
        return Ok(fallback);
    }
    Ok(preferred)
}

fn first_closed_ancestor(path: &Path) -> Option<PathBuf> {
    path.ancestors().skip(1).find_map(|dir| {
        let mode = dir.metadata().ok()?.permissions().mode();
        (mode & 0o001 == 0).then(|| dir.to_path_buf())
    })
}

/// The server password, created once and kept readable only by Deskhook's user.
pub(crate) fn password(data_dir: &Path) -> Result<String, Error> {
    let path = data_dir.join("pg.password");
    if let Ok(existing) = fs::read_to_string(&path) {
        let existing = existing.trim();
        if !existing.is_empty() {
            return Ok(existing.to_owned());
        }
    }
    let password: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    write_private(&path, &password)?;
    Ok(password)
}

/// Writes `contents` to `path`, readable by this user only (mode 0600).
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(format!("writing {}", path.display())))?;
    file.write_all(contents.as_bytes())
        .map_err(io_err(format!("writing {}", path.display())))
}

/// Runs `initdb` as the server's user, with password authentication on loopback only.
pub(crate) fn init(
    binaries: &Binaries,
    cluster_dir: &Path,
    owner: &ServerOwner,
    password: &str,
) -> Result<(), Error> {
    // A half-made cluster from an interrupted initdb is useless: start over.
    if cluster_dir.exists() {
        fs::remove_dir_all(cluster_dir).map_err(io_err(format!(
            "removing the incomplete {}",
            cluster_dir.display()
        )))?;
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(cluster_dir)
        .map_err(io_err(format!("creating {}", cluster_dir.display())))?;
    owner.take_ownership(cluster_dir)?;

    // initdb reads the password from a file the server's user can read; remove it right after.
    let pwfile = cluster_dir.with_extension("pwfile");
    write_private(&pwfile, password)?;
    owner.take_ownership(&pwfile)?;
    let mut command = Command::new(&binaries.initdb);
    command
        .arg("--pgdata")
        .arg(cluster_dir)
        .args([
            "--username",
            ROLE,
            "--auth",
            "scram-sha-256",
            "--encoding",
            "UTF8",
        ])
        .args(["--no-locale", "--no-instructions"])
        .arg(format!("--pwfile={}", pwfile.display()));
    owner.apply(&mut command);
    let output = command.output();
    let _ = fs::remove_file(&pwfile);
    let output = output.map_err(io_err("running initdb"))?;
    if !output.status.success() {
        let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stdout));
        let _ = fs::remove_dir_all(cluster_dir);
        return Err(Error::Command {
            command: "initdb".into(),
            output: tail(&text),
        });
    }
    Ok(())
}

/// The port of a live server on this cluster, if one is running. A stale `postmaster.pid`
/// (its process gone, or the pid reused by something that is not PostgreSQL) is removed.
pub(crate) fn running_port(cluster_dir: &Path) -> Result<Option<u16>, Error> {
    let pid_file = cluster_dir.join("postmaster.pid");
    let Ok(text) = fs::read_to_string(&pid_file) else {
        return Ok(None);
    };
    let lines: Vec<&str> = text.lines().collect();
    let pid = lines
        .first()
        .and_then(|line| line.trim().parse::<i32>().ok());
    let alive = pid.is_some_and(is_postgres_process);
    if !alive {
        fs::remove_file(&pid_file)
            .map_err(io_err(format!("removing the stale {}", pid_file.display())))?;
        return Ok(None);
    }
    let port = lines
        .get(3)
        .and_then(|line| line.trim().parse::<u16>().ok());
    let ready = lines.get(7).map(|line| line.trim()) == Some("ready");
    Ok(port.filter(|_| ready))
}

/// The status line of `postmaster.pid` (`starting`, `ready`, `stopping`), if any.
pub(crate) fn pid_file_status(cluster_dir: &Path) -> Option<String> {
    let text = fs::read_to_string(cluster_dir.join("postmaster.pid")).ok()?;
    text.lines().nth(7).map(|line| line.trim().to_owned())
}

fn is_postgres_process(pid: i32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("postgres"))
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}
