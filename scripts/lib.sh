# Shared by scripts/run and scripts/test: make sure what Deskhook needs is on the machine.
# Sourced, not run.

# PostgreSQL server binaries (initdb, postgres): Deskhook starts its own private server from
# them. Installs Debian's `postgresql` package when they are missing.
ensure_postgres_binaries() {
  if command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1; then
    return 0
  fi
  if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    return 0
  fi
  echo "PostgreSQL server binaries not found: installing Debian's postgresql package" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
}

# Cargo, when the shell that runs us has not loaded rustup's environment.
ensure_cargo() {
  if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
  command -v cargo >/dev/null 2>&1 || {
    echo "cargo not found: install the Rust toolchain (https://rustup.rs) first" >&2
    exit 1
  }
}
