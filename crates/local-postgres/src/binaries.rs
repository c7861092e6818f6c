//! Finding the PostgreSQL server binaries: `PATH` first, then Debian's versioned directories.

use std::path::{Path, PathBuf};

use crate::Error;

/// The server programs this crate runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `initdb`.
    pub initdb: PathBuf,
    /// `postgres`.
    pub postgres: PathBuf,
}

impl Binaries {
    /// Looks on `PATH`, then under `/usr/lib/postgresql/<version>/bin` (highest version first).
    pub fn find() -> Result<Self, Error> {
        let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect())
            .unwrap_or_default();
        dirs.extend(debian_dirs(Path::new("/usr/lib/postgresql")));
        dirs.into_iter()
            .find_map(|dir| {
                let initdb = dir.join("initdb");
                let postgres = dir.join("postgres");
                (is_executable(&initdb) && is_executable(&postgres))
                    .then_some(Self { initdb, postgres })
            })
            .ok_or_else(|| Error::BinariesNotFound {
                searched: "on PATH or under /usr/lib/postgresql/*/bin".into(),
            })
    }

    /// Whether the server's library directory (`../lib` beside the binaries, Debian's layout)
    /// holds the loadable module `name`.
    pub fn has_library(&self, name: &str) -> bool {
        // Through symlinks (`/usr/local/bin/postgres` → Debian's versioned directory).
        let postgres = self
            .postgres
            .canonicalize()
            .unwrap_or_else(|_| self.postgres.clone());
        postgres
            .parent()
            .and_then(Path::parent)
            .is_some_and(|root| root.join("lib").join(format!("{name}.so")).is_file())
    }

    /// Uses the binaries in `dir` only.
    pub fn in_dir(dir: &Path) -> Result<Self, Error> {
        let initdb = dir.join("initdb");
        let postgres = dir.join("postgres");
        if is_executable(&initdb) && is_executable(&postgres) {
            Ok(Self { initdb, postgres })
        } else {
            Err(Error::BinariesNotFound {
                searched: format!("in {} (DESKHOOK_POSTGRES_BIN)", dir.display()),
            })
        }
    }
}

fn debian_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut versions: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}
