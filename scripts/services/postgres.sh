#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server on 127.0.0.1 for the tests, and creates the database
# fleetscore_test. Installs the Debian package `postgresql` if no server binaries are found.
#
#   scripts/services/postgres.sh start     # stdout: only the connection URL (last line)
#   scripts/services/postgres.sh restart   # crash-like stop (-m immediate), then start
#   scripts/services/postgres.sh stop
#   scripts/services/postgres.sh start-tls # a second server, TLS only: see below
#   scripts/services/postgres.sh stop-tls
#
# This is a TEST-ONLY server: it trusts every local and 127.0.0.1 connection (no passwords).
# Never point it at a reachable interface. Port: POSTGRES_TEST_PORT (default 10432).
#
# start-tls starts another server (port POSTGRES_TLS_TEST_PORT, default 10442; its own data
# directory, postgres-tls-PORT) with ssl=on and a pg_hba that refuses every TCP connection
# without TLS and asks for a password (SCRAM) on those with it; local socket connections stay
# trusted, for setting it up. Its server certificate (for localhost and 127.0.0.1) is signed by a test CA
# made here with the openssl command (which Debian's postgresql brings). It prints the URL,
# `postgres://fleetscore:PASSWORD@localhost:PORT/fleetscore_test?sslmode=verify-full&sslrootcert=CA`.
#
# initdb and the server refuse to run as root, so when run as root (as in CI) they run as the
# `postgres` system user (created if missing), which then owns the data directory.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
tls=0
if [ "${1:-}" = start-tls ] || [ "${1:-}" = stop-tls ]; then tls=1; port="${POSTGRES_TLS_TEST_PORT:-10442}"; else port="${POSTGRES_TEST_PORT:-10432}"; fi
# The TLS server's test-only role and password (loopback only, like everything here).
tls_user=fleetscore
tls_password=fleetscore-tls-test-pw
# One server (data directory) per port, so a test can restart a server of its own.
# The TLS server's directory is named apart, so it never shares one with a plain server.
if [ "$tls" = 1 ]; then suffix="-tls-$port"; elif [ "$port" = 10432 ]; then suffix=""; else suffix="-$port"; fi
dir="$root/target/services/postgres$suffix"
db=fleetscore_test
url="postgres://postgres@127.0.0.1:$port/$db"
timeout=30
# Keep libpq/pg_ctl settings from the caller's environment from redirecting our commands.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS PGSSLMODE PGDATA || true

# When run as root, the postgres user must reach the data and socket directories. If some
# parent of $root is not traversable by it (e.g. a checkout under /root, mode 0700), or the
# socket path would be too long for a unix socket (108 bytes), everything the server owns
# lives under /tmp instead, in a directory named after $UID and a hash of $root.
alt="/tmp/fleetscore-postgres-$UID-$(printf '%s' "$root" | sha256sum | cut -c1-12)$suffix"

is_root() { [ "$(id -u)" -eq 0 ]; }

# Runs a command as the postgres user when we are root, else as ourselves. `cd /` because the
# caller's directory may not be readable by that user.
as_pg() {
  if ! is_root; then
    (cd / && "$@")
  elif command -v runuser > /dev/null; then
    (cd / && runuser -u postgres -- "$@")
  else
    (cd / && su postgres -s /bin/sh -c 'exec "$0" "$@"' -- "$@")
  fi
}

# Sets pg_bin to a directory holding pg_ctl, initdb and postgres: the version that made an
# existing data directory ($1/PG_VERSION) if installed, else the highest
# /usr/lib/postgresql/*/bin, else wherever pg_ctl on PATH really lives (/usr/local/bin/pg_ctl
# may be a symlink into /usr/lib/postgresql/N/bin). Returns 1 if none is found.
find_bin() {
  pg_bin=
  local d ver
  if [ -n "${1:-}" ] && [ -f "$1/PG_VERSION" ]; then
    ver="$(cat "$1/PG_VERSION")"
    if [ -x "/usr/lib/postgresql/$ver/bin/pg_ctl" ]; then pg_bin="/usr/lib/postgresql/$ver/bin"; return 0; fi
  fi
  for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
    if [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then pg_bin="$d"; return 0; fi
  done
  if command -v pg_ctl > /dev/null && command -v initdb > /dev/null; then
    d="$(dirname "$(readlink -f "$(command -v pg_ctl)")")"
    if [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then pg_bin="$d"; return 0; fi
  fi
  return 1
}

# Installs a Debian package (as root, or with sudo).
install_pkg() {
  local sudo=
  if ! is_root; then sudo="sudo -n"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y --no-install-recommends "$1" >&2 ||
    { $sudo apt-get update >&2 && $sudo apt-get install -y --no-install-recommends "$1" >&2; }
}

install_pg() {
  local sudo=
  if ! is_root; then
    if command -v sudo > /dev/null; then sudo="sudo -n"; else
      echo "postgres.sh: PostgreSQL server binaries not found; install the postgresql package" >&2
      exit 1
    fi
  fi
  echo "postgres.sh: installing PostgreSQL (apt-get install postgresql)" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo apt-get install -y --no-install-recommends postgresql >&2; then
    $sudo apt-get update >&2
    $sudo apt-get install -y --no-install-recommends postgresql >&2
  fi
}

# The directory holding data/, socket/ and postgres.log (see $alt above).
pick_pgdir() {
  pgdir="$dir"
  if [ "${#dir}" -gt 80 ] || { is_root && ! as_pg test -x "$dir"; }; then
    pgdir="$alt"
  fi
  mkdir -p "$pgdir"
  chmod 0755 "$pgdir"
}

# Client tools: same version as the server if possible, else the Debian wrappers / PATH.
find_client() {
  local name="$1"
  if [ -x "$pg_bin/$name" ]; then echo "$pg_bin/$name"
  elif [ -x "/usr/bin/$name" ]; then echo "/usr/bin/$name"
  else command -v "$name" || true; fi
}

# Where setup commands connect: 127.0.0.1, or the unix socket on the TLS server (whose TCP
# connections need TLS and a password).
admin_host() { if [ "$tls" = 1 ]; then echo "$sock"; else echo 127.0.0.1; fi; }

ready() {
  if [ "$tls" = 1 ] && [ -n "$pg_isready" ]; then
    "$pg_isready" -q -h "$sock" -p "$port" -U postgres -d postgres -t 2
  elif [ -n "$pg_isready" ]; then
    "$pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -t 2
  elif [ -n "$psql" ]; then
    PGCONNECT_TIMEOUT=2 "$psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -c 'select 1' > /dev/null 2>&1
  else
    (echo > "/dev/tcp/127.0.0.1/$port") 2> /dev/null
  fi
}

db_exists() {
  [ "$("$psql" -X -tA -h "$(admin_host)" -p "$port" -U postgres -d postgres \
    -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" = 1 ]
}

# Our server (for data dir $1) is running: pg_ctl status exits 0.
running() { [ -f "$1/postmaster.pid" ] && as_pg "$pg_bin/pg_ctl" -D "$1" status > /dev/null 2>&1; }

fail() {
  echo "postgres.sh: $1" >&2
  if [ -f "$pgdir/postgres.log" ]; then
    echo "--- last lines of $pgdir/postgres.log:" >&2
    tail -n 30 "$pgdir/postgres.log" >&2
  fi
  exit 1
}

# Stops the server of every data directory this script may have made. $1: fast or immediate.
stop_all() {
  local mode="$1" d
  for d in "$dir/data" "$alt/data"; do
    [ -f "$d/PG_VERSION" ] || continue
    find_bin "$d" || return 0 # no binaries: nothing can be running
    if running "$d"; then
      as_pg "$pg_bin/pg_ctl" -D "$d" -m "$mode" -w -t "$timeout" stop >&2
    fi
  done
}

start() {
  mkdir -p "$dir"
  find_bin "$dir/data" || { install_pg; find_bin; } ||
    { echo "postgres.sh: no PostgreSQL server binaries after installing postgresql" >&2; exit 1; }
  if is_root && ! id postgres > /dev/null 2>&1; then
    useradd --system --user-group --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin postgres
  fi
  pick_pgdir
  data="$pgdir/data"
  sock="$pgdir/socket"
  find_bin "$data" || true
  psql="$(find_client psql)"
  pg_isready="$(find_client pg_isready)"

  # Our server already running, but on another port (POSTGRES_TEST_PORT changed): stop it.
  if running "$data" && [ "$(sed -n 4p "$data/postmaster.pid")" != "$port" ]; then
    as_pg "$pg_bin/pg_ctl" -D "$data" -m fast -w -t "$timeout" stop >&2
  fi

  if ! ready && ! running "$data"; then
    # A data directory from another major version cannot be used; it only holds test data.
    ver="$("$pg_bin/postgres" -V | sed -E 's/[^0-9]*([0-9]+).*/\1/')"
    if [ -f "$data/PG_VERSION" ] && [ "$(cat "$data/PG_VERSION")" != "$ver" ]; then
      echo "postgres.sh: $data is from PostgreSQL $(cat "$data/PG_VERSION"), not $ver; recreating it" >&2
      rm -rf "$data"
    fi
    mkdir -p "$data" "$sock"
    if is_root; then
      chown postgres: "$sock"
      # Also repairs a data directory left by a run as another user.
      [ "$(stat -c %U "$data")" = postgres ] || chown -R postgres: "$data"
    fi
    chmod 0700 "$data"
    if [ ! -f "$data/PG_VERSION" ]; then
      # A leftover of a failed initdb would make it refuse to run.
      find "$data" -mindepth 1 -delete
      as_pg "$pg_bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C > "$pgdir/initdb.log" 2>&1 ||
        { cat "$pgdir/initdb.log" >&2; fail "initdb failed"; }
      # Test-only server: trust, and only over the unix socket and 127.0.0.1.
      printf '%s\n' \
        'local all         all              trust' \
        'host  all         all 127.0.0.1/32 trust' \
        'local replication all              trust' \
        'host  replication all 127.0.0.1/32 trust' > "$data/pg_hba.conf"
      echo "include_if_exists 'fleetscore.conf'" >> "$data/postgresql.conf"
    fi
    # Rewritten on each start, so a changed port or directory takes effect.
    printf '%s\n' \
      "listen_addresses = '127.0.0.1'" \
      "port = $port" \
      "unix_socket_directories = '${sock//\'/\'\'}'" > "$data/fleetscore.conf"
    if [ "$tls" = 1 ]; then tls_setup; fi
    if is_root; then chown postgres: "$data/pg_hba.conf" "$data/fleetscore.conf"; fi
    touch "$pgdir/postgres.log"
    if is_root; then chown postgres: "$pgdir/postgres.log"; fi
    as_pg "$pg_bin/pg_ctl" -D "$data" -l "$pgdir/postgres.log" -W -s start >&2 ||
      fail "pg_ctl start failed"
  fi

  t0=$SECONDS
  until ready; do
    if [ $((SECONDS - t0)) -ge "$timeout" ]; then
      fail "PostgreSQL did not accept connections on 127.0.0.1:$port within ${timeout}s"
    fi
    if [ $((SECONDS - t0)) -ge 2 ] && ! running "$data"; then
      fail "PostgreSQL exited instead of accepting connections on 127.0.0.1:$port"
    fi
    sleep 0.2
  done

  if [ -z "$psql" ]; then fail "psql not found; cannot create database $db"; fi
  if ! db_exists; then
    # Two starts may race; then one CREATE DATABASE fails with "already exists": check again.
    "$psql" -X -q -h "$(admin_host)" -p "$port" -U postgres -d postgres -c "CREATE DATABASE $db" \
      > /dev/null 2> "$dir/createdb.err" || db_exists || { cat "$dir/createdb.err" >&2; fail "could not create database $db"; }
  fi
  if [ "$tls" = 1 ]; then
    # The role and its password, set on every start (the password is SCRAM-hashed).
    "$psql" -X -q -h "$sock" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 > /dev/null <<SQL ||
SELECT 'CREATE ROLE $tls_user LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$tls_user')\gexec
SET password_encryption = 'scram-sha-256';
ALTER ROLE $tls_user PASSWORD '$tls_password';
ALTER DATABASE $db OWNER TO $tls_user;
SQL
      fail "could not create the role $tls_user"
    echo "postgres://$tls_user:$tls_password@localhost:$port/$db?sslmode=verify-full&sslrootcert=$pgdir/tls/ca.pem"
    return
  fi
  echo "$url"
}

# The TLS server's certificates (made once per data directory), ssl=on, and a pg_hba that
# refuses TCP without TLS.
tls_setup() {
  local t="$pgdir/tls"
  if ! command -v openssl > /dev/null; then install_pkg openssl; fi
  if [ ! -f "$t/server.key" ]; then
    mkdir -p "$t"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj "/CN=fleetscore test CA" -keyout "$t/ca.key" -out "$t/ca.pem" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
      2> "$t/openssl.log" || { cat "$t/openssl.log" >&2; fail "openssl could not make the test CA"; }
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
      -keyout "$t/server.key" -out "$t/server.csr" 2>> "$t/openssl.log" ||
      { cat "$t/openssl.log" >&2; fail "openssl could not make the server key"; }
    printf '%s\n' 'subjectAltName=DNS:localhost,IP:127.0.0.1' 'basicConstraints=CA:FALSE' \
      'extendedKeyUsage=serverAuth' > "$t/server.ext"
    openssl x509 -req -in "$t/server.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial \
      -days 3650 -extfile "$t/server.ext" -out "$t/server.pem" 2>> "$t/openssl.log" ||
      { cat "$t/openssl.log" >&2; fail "openssl could not sign the server certificate"; }
  fi
  chmod 0644 "$t/ca.pem" "$t/server.pem"
  chmod 0600 "$t/server.key"
  if is_root; then chown postgres: "$t/server.key" "$t/server.pem"; fi
  printf '%s\n' \
    "ssl = on" \
    "ssl_cert_file = '$t/server.pem'" \
    "ssl_key_file = '$t/server.key'" >> "$data/fleetscore.conf"
  printf '%s\n' \
    'local   all all              trust' \
    'hostssl all all 127.0.0.1/32 scram-sha-256' \
    'hostnossl all all 127.0.0.1/32 reject' \
    'hostssl all all ::1/128      scram-sha-256' \
    'hostnossl all all ::1/128    reject' > "$data/pg_hba.conf"
}

case "${1:-}" in
  start | start-tls)
    start
    ;;
  stop | stop-tls)
    stop_all fast
    ;;
  restart)
    stop_all immediate
    start
    ;;
  *)
    echo "usage: $0 start | stop | restart | start-tls | stop-tls" >&2
    exit 2
    ;;
esac
