//! Which operating-system user runs the server.
//!
//! PostgreSQL refuses to run as root. When Deskhook runs as root, the server runs as the
//! `postgres` system user if Debian's packages created one, or else as a `deskhook` system user
//! created here (no login shell, no home).

use std::{os::unix::process::CommandExt as _, path::Path, process::Command};

use nix::unistd::{Gid, Uid, User};

use crate::{Error, io_err};

/// The user the server runs as; `switch` is set when that is not the current user.
#[derive(Debug, Clone)]
pub(crate) struct ServerOwner {
    pub(crate) name: String,
    pub(crate) uid: Uid,
    pub(crate) gid: Gid,
    switch: bool,
}

impl ServerOwner {
    /// Makes `command` run as this user.
    pub(crate) fn apply(&self, command: &mut Command) {
        if self.switch {
            command.uid(self.uid.as_raw()).gid(self.gid.as_raw());
            // Keep HOME from pointing at root's closed directory.
            command.env("HOME", "/tmp");
        }
    }

    /// Gives `path` to this user (only needed when switching users).
    pub(crate) fn take_ownership(&self, path: &Path) -> Result<(), Error> {
        if self.switch {
            nix::unistd::chown(path, Some(self.uid), Some(self.gid)).map_err(|errno| {
                Error::Io {
                    context: format!("giving {} to user {}", path.display(), self.name),
                    source: errno.into(),
                }
            })?;
        }
        Ok(())
    }

    /// Whether files must be made reachable for a user other than us.
    pub(crate) fn is_other_user(&self) -> bool {
        self.switch
    }
}

pub(crate) fn server_owner() -> Result<ServerOwner, Error> {
    let uid = Uid::effective();
    if !uid.is_root() {
        return Ok(ServerOwner {
            name: User::from_uid(uid)
                .ok()
                .flatten()
                .map_or_else(|| uid.to_string(), |user| user.name),
            uid,
            gid: Gid::effective(),
            switch: false,
        });
    }
    let user = match lookup("postgres")? {
        Some(user) => user,
        None => match lookup("deskhook")? {
            Some(user) => user,
            None => {
                create_system_user("deskhook")?;
                lookup("deskhook")?.ok_or_else(|| Error::Command {
                    command: "useradd deskhook".into(),
                    output: "the user was not found after creating it".into(),
                })?
            }
        },
    };
    Ok(ServerOwner {
        name: user.name,
        uid: user.uid,
        gid: user.gid,
        switch: true,
    })
}

fn lookup(name: &str) -> Result<Option<User>, Error> {
    User::from_name(name).map_err(|errno| Error::Io {
        context: format!("looking up user {name}"),
        source: errno.into(),
    })
}

fn create_system_user(name: &str) -> Result<(), Error> {
    let output = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ])
        .output()
        .map_err(io_err("running useradd"))?;
    if !output.status.success() {
        return Err(Error::Command {
            command: format!("useradd {name}"),
            output: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(())
}
