# Shared by scripts/test, scripts/demo, scripts/package and bench/: the PostgreSQL install
# to use, building and installing the extension into it.
set -euo pipefail

PGOPS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# PGOPS_PG_MAJOR picks the server: 15 is Debian's, 16-18 are .ci/install's
# (/opt/pgops/pg/<major>). PGOPS_PG_CONFIG, if set, names a pg_config directly.
PG_MAJOR=${PGOPS_PG_MAJOR:-15}
SUPPORTED_MAJORS=(15 16 17 18)

# The pg_config of PostgreSQL major $1.
pg_config_of() {
  case "$1" in
    15) echo /usr/lib/postgresql/15/bin/pg_config ;;
    16 | 17 | 18) echo "${PGOPS_PG_ROOT:-/opt/pgops/pg}/$1/bin/pg_config" ;;
    *) echo "PostgreSQL $1 is not supported: pick one of ${SUPPORTED_MAJORS[*]}" >&2; return 2 ;;
  esac
}
PG_CONFIG=${PGOPS_PG_CONFIG:-$(pg_config_of "$PG_MAJOR")}
PG_BIN=$(dirname "$PG_CONFIG")
export PATH="$HOME/.cargo/bin:$PATH"
export PGOPS_BARMAN_VENV=${PGOPS_BARMAN_VENV:-/opt/pgops/barman-venv}
# Never let the AWS SDK probe the EC2 metadata service from this machine.
export AWS_EC2_METADATA_DISABLED=true

step() { printf '\n== %s\n' "$*"; }

# Builds pgops for $PG_CONFIG's major and installs it into that server; arguments go to
# cargo pgrx install (--release).
install_extension() {
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(--sudo)
  (cd "$PGOPS_ROOT" && cargo pgrx install --pg-config "$PG_CONFIG" "${sudo[@]}" "$@")
}

# Runs a command as the postgres user (Postgres refuses to run as root).
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
