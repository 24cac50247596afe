#!/usr/bin/env bash
# Where a full backup's time goes: one cairn full of a pgbench cluster (data checksums on,
# vacuum-frozen), timed, then again under `perf record -g`, and perf's report by thread and
# symbol (the top 25). Run as root; needs perf (apt-get install linux-perf).
# Usage: bench/pg_profile.sh [SCALE=40]
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-40}
PGBIN=/usr/lib/postgresql/15/bin
command -v perf >/dev/null || { echo "perf is needed (apt-get install linux-perf)"; exit 2; }
cargo build --release -q -p cairn-cli
W=$(mktemp -d /var/tmp/cairn-prof.XXXXXX)
chmod 755 "$W"
mkdir -p "$W/sock"
install -m 755 target/release/cairn "$W/cairn"
chown -R postgres:postgres "$W"
cleanup() { runuser -u postgres -- $PGBIN/pg_ctl -D "$W/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$W"; }
trap cleanup EXIT
export CAIRN_CACHE_PATH=$W/cache
CAIRN="$W/cairn --repo $W/repo --stanza bench --log-level warn --process-max 2 --compress-level 3 --pg-path $W/data --pg-host $W/sock --pg-port 5432"
as_pg() { runuser -u postgres -- "$@"; }
as_pg $PGBIN/initdb -k -A trust -D "$W/data" >/dev/null
cat >> "$W/data/postgresql.conf" <<CONF
port = 5432
unix_socket_directories = '$W/sock'
listen_addresses = ''
archive_mode = on
archive_command = 'CAIRN_CACHE_PATH=$W/cache $CAIRN archive-push %p'
max_wal_size = 4GB
CONF
as_pg $PGBIN/pg_ctl -D "$W/data" -l "$W/pg.log" -w start >/dev/null
as_pg $PGBIN/pgbench -h "$W/sock" -p 5432 -i -s "$SCALE" -q postgres >/dev/null 2>&1
as_pg psql -h "$W/sock" -p 5432 -XAtq -d postgres -c "vacuum freeze" >/dev/null
as_pg psql -h "$W/sock" -p 5432 -XAtq -d postgres -c "checkpoint" >/dev/null
fresh() { rm -rf "$W/repo" "$W/cache"; as_pg mkdir -p "$W/repo"; as_pg $CAIRN stanza-create --engine postgres >/dev/null; }
fresh
/usr/bin/time -f "first full: %e s, peak RSS %M KiB" runuser -u postgres -- $CAIRN backup --type full --no-expire
fresh
perf record -q -F 1999 -g -o "$W/perf.data" -- runuser -u postgres -- $CAIRN backup --type full --no-expire
perf report -i "$W/perf.data" --no-children --sort comm,symbol 2>/dev/null | grep -v '^#' | grep '%' | grep -v -- '--' | head -25
