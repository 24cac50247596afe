#!/usr/bin/env bash
# Side by side on one PostgreSQL 15 cluster: cairn and pgBackRest (Debian's 2.45), same
# --process-max, zstd level 3. Measures full backup time, incremental time and stored bytes
# after changing about 5% of pages, restore time, and archive-push time per 16 MiB segment.
# Run as root (clusters run as postgres). Usage: bench/pg_vs_pgbackrest.sh [pgbench scale] [process-max]
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-40}
PMAX=${2:-2}
PGBIN=/usr/lib/postgresql/15/bin
command -v pgbackrest >/dev/null || { echo "install pgbackrest first (apt-get install pgbackrest)"; exit 2; }
cargo build --release -q
W=$(mktemp -d /var/tmp/cairn-pgbench.XXXXXX)
chmod 755 "$W"
install -m 755 target/release/cairn "$W/cairn"
mkdir -p "$W/sock" "$W/cairn-repo" "$W/pgbr-repo" "$W/pgbr-log" "$W/pgbr-lock" "$W/restore"
chown -R postgres:postgres "$W"
cleanup() { runuser -u postgres -- $PGBIN/pg_ctl -D "$W/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$W"; }
trap cleanup EXIT
as_pg() { runuser -u postgres -- "$@"; }
cat > "$W/pgbackrest.conf" <<CONF
[global]
repo1-path=$W/pgbr-repo
log-path=$W/pgbr-log
lock-path=$W/pgbr-lock
log-level-console=warn
log-level-file=off
process-max=$PMAX
compress-type=zst
compress-level=3
start-fast=y
repo1-retention-full=10
[bench]
pg1-path=$W/data
pg1-socket-path=$W/sock
pg1-port=5432
CONF
chown postgres "$W/pgbackrest.conf"
PGBR="pgbackrest --config=$W/pgbackrest.conf --stanza=bench"
CAIRN="$W/cairn --repo $W/cairn-repo --stanza bench --log-level warn --process-max $PMAX --compress-level 3 --pg-path $W/data --pg-host $W/sock --pg-port 5432"

as_pg $PGBIN/initdb -k -A trust -D "$W/data" >/dev/null
cat >> "$W/data/postgresql.conf" <<CONF
port = 5432
unix_socket_directories = '$W/sock'
listen_addresses = ''
wal_level = replica
archive_mode = on
archive_command = '$CAIRN archive-push %p && $PGBR archive-push %p'
max_wal_size = 4GB
CONF
as_pg $PGBIN/pg_ctl -D "$W/data" -l "$W/pg.log" -w start >/dev/null
as_pg $CAIRN stanza-create --engine postgres
as_pg $PGBR stanza-create >/dev/null
as_pg $PGBIN/pgbench -h "$W/sock" -p 5432 -i -s "$SCALE" -q postgres >/dev/null 2>&1
as_pg psql -h "$W/sock" -p 5432 -XAtq -d postgres -c "checkpoint" >/dev/null
DBSIZE=$(as_pg psql -h "$W/sock" -p 5432 -XAtq -d postgres -c "select pg_database_size('postgres')")

t() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); python3 -c "print(f'{$e-$s:.2f}')"; }

cf=$(t as_pg $CAIRN backup --type full)
pf=$(t as_pg $PGBR backup --type=full)
# Change about 5% of pages: update a contiguous 5% of pgbench_accounts.
N=$((SCALE * 100000 / 20))
as_pg psql -h "$W/sock" -p 5432 -XAtq -d postgres -c "update pgbench_accounts set abalance = abalance + 1 where aid <= $N" >/dev/null
as_pg psql -h "$W/sock" -p 5432 -XAtq -d postgres -c "checkpoint" >/dev/null
ci=$(t as_pg $CAIRN backup --type incr)
pi=$(t as_pg $PGBR backup --type=incr)
cib=$(as_pg $CAIRN info --output json | python3 -c 'import json,sys; b=json.load(sys.stdin)[0]["backup"][-1]; print(b["info"]["repository"]["delta"])')
pib=$(as_pg $PGBR info --output=json | python3 -c 'import json,sys; b=json.load(sys.stdin)[0]["backup"][-1]; print(b["info"]["repository"]["delta"])')

# archive-push per segment: push already-archived segments again into a second, empty
# stanza of each tool (same live cluster), so both do the full work of a first push.
mkdir -p "$W/segs" "$W/cairn-repo2" "$W/pgbr-repo2"; chown postgres "$W/segs" "$W/cairn-repo2" "$W/pgbr-repo2"
SEGS=$(ls "$W/cairn-repo/stanza/bench/archive/"*/00000001/ | grep -E '^[0-9A-F]{24}$' | head -10 | tr '\n' ' ')
for s in $SEGS; do as_pg $W/cairn --repo $W/cairn-repo --stanza bench --log-level warn archive-get "$s" "$W/segs/$s"; done
NSEG=$(echo "$SEGS" | wc -w)
C2="$W/cairn --repo $W/cairn-repo2 --stanza bench --log-level warn --compress-level 3 --pg-path $W/data"
as_pg $C2 stanza-create --engine postgres
cat >> "$W/pgbackrest.conf" <<CONF
[bench2]
repo1-path=$W/pgbr-repo2
pg1-path=$W/data
pg1-socket-path=$W/sock
pg1-port=5432
CONF
PGBR2="pgbackrest --config=$W/pgbackrest.conf --stanza=bench2"
as_pg $PGBR2 stanza-create >/dev/null
cpush=$(t bash -c "cd $W/data && for s in $SEGS; do runuser -u postgres -- $C2 archive-push $W/segs/\$s; done")
ppush=$(t bash -c "for s in $SEGS; do runuser -u postgres -- $PGBR2 archive-push $W/segs/\$s; done")

as_pg $PGBIN/pg_ctl -D "$W/data" -m fast -w stop >/dev/null
cr=$(t as_pg $CAIRN restore --dest "$W/restore/cairn")
sed -i "0,/^pg1-path=.*/s##pg1-path=$W/restore/pgbr#" "$W/pgbackrest.conf"
pr=$(t as_pg $PGBR restore)
if diff -r -q -x postgresql.auto.conf -x recovery.signal -x backup_label -x pg_control -x 'pg_wal' "$W/restore/cairn" "$W/restore/pgbr" > "$W/restore.diff" 2>&1; then
  same=identical
else
  same="differ: $(head -5 "$W/restore.diff" | tr '\n' ';')"
fi

python3 - "$DBSIZE" "$PMAX" "$cf" "$pf" "$ci" "$pi" "$cib" "$pib" "$cr" "$pr" "$cpush" "$ppush" "$NSEG" "$same" <<'PY'
import sys
db, pmax, cf, pf, ci, pi, cib, pib, cr, pr, cpush, ppush, nseg, same = sys.argv[1:]
f = float
print(f"database: {int(db)/1e6:.0f} MB (pgbench), --process-max {pmax}, zstd level 3")
print(f"{'':28}{'cairn':>10}{'pgBackRest':>12}{'ratio':>8}")
def row(name, a, b, unit="s"):
    print(f"{name:28}{a:>9}{unit}{b:>11}{unit}{f(a)/max(f(b),1e-9):>8.2f}")
row("full backup", cf, pf)
row("incr backup (5% pages)", ci, pi)
print(f"{'incr stored bytes':28}{int(cib):>10}{int(pib):>12}{int(cib)/max(int(pib),1):>8.2f}")
row("restore", cr, pr)
n = int(nseg)
print(f"{'archive-push per segment':28}{f(cpush)/n*1000:>8.0f}ms{f(ppush)/n*1000:>10.0f}ms{f(cpush)/max(f(ppush),1e-9):>8.2f}")
print(f"restored data directories (each tool restores its own backup, so backup_label, pg_control, recovery settings and pg_wal are left out): {same}")
PY
