# Shared by scripts/test, scripts/demo and bench/: install prerequisites, build and install
# the extension into the Debian PostgreSQL 15 server.
set -euo pipefail

PGOPS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_CONFIG=${PGOPS_PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PG_BIN=$(dirname "$PG_CONFIG")
export PATH="$HOME/.cargo/bin:$PATH"
export PGOPS_BARMAN_VENV=${PGOPS_BARMAN_VENV:-/opt/pgops/barman-venv}
# Never let the AWS SDK probe the EC2 metadata service from this machine.
export AWS_EC2_METADATA_DISABLED=true

step() { printf '\n== %s\n' "$*"; }

# Builds pgops and installs it into the server; $1 is an optional cargo profile flag.
install_extension() {
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(--sudo)
  (cd "$PGOPS_ROOT" && cargo pgrx install --pg-config "$PG_CONFIG" "${sudo[@]}" "$@")
}

# Runs a command as the postgres user (Postgres refuses to run as root).
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
