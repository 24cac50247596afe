#!/usr/bin/env bash
# WAL under load, cairn against pgBackRest 2.59, both archiving asynchronously
# (cairn --archive-async, pgBackRest archive-async=y; --process-max 2, zstd 3):
#  1. archiving sustained under pgbench at full speed (its tpcb-like transactions and one
#     that inserts 100 rows of 1 KB, in turn) into a local and an S3 (s3s-fs)
#     repository: WAL written per second, the backlog of `.ready` segments sampled every
#     second (its largest and its last value), and how long archiving takes to catch up after
#     pgbench stops;
#  2. recovery of about RECOVERY_MIB of WAL from the S3 repository, archive-get prefetching
#     (cairn --archive-async, pgBackRest archive-get-queue-max): the time from starting the
#     restored cluster to the end of its recovery.
# Each tool in turn, the order alternating by round; medians. Run as root (the cluster runs as
# postgres). Installs nothing: needs pgbackrest-2.59 (../shared/tools/install-pgbackrest-2.59.sh),
# s3s-fs 0.14.1, socat and openssl (pgBackRest speaks only TLS to S3: socat puts TLS in front of
# s3s-fs, on loopback).
# Usage: bench/pg_wal.sh [SECONDS=30] [RECOVERY_MIB=1024] [ROUNDS=2] [CLIENTS=4]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-30}
RECOVERY_MIB=${2:-1024}
ROUNDS=${3:-2}
CLIENTS=${4:-4}
PGBIN=/usr/lib/postgresql/15/bin
PGBR_BIN=$(command -v pgbackrest-2.59) || { echo "pgbackrest-2.59 is not installed: run ../shared/tools/install-pgbackrest-2.59.sh"; exit 2; }
for t in s3s-fs socat openssl; do command -v $t >/dev/null || { echo "$t is needed"; exit 2; }; done
cargo build --release -q -p cairn-cli
W=$(mktemp -d /var/tmp/cairn-pgwal.XXXXXX)
chmod 755 "$W"
install -m 755 target/release/cairn "$W/cairn"
mkdir -p "$W/sock" "$W/sock2" "$W/s3/cairn" "$W/s3/pgbr" "$W/cairn-local" "$W/pgbr-local" \
  "$W/log" "$W/lock"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$W/key.pem" -out "$W/cert.pem" \
  -subj /CN=127.0.0.1 -days 1 >/dev/null 2>&1
chown -R postgres:postgres "$W"
s3s-fs --host 127.0.0.1 --port "$PORT" --access-key bench --secret-key bench-secret "$W/s3" \
  >"$W/s3s.log" 2>&1 &
S3PID=$!
socat "OPENSSL-LISTEN:$TPORT,bind=127.0.0.1,reuseaddr,fork,cert=$W/cert.pem,key=$W/key.pem,verify=0" \
  "TCP:127.0.0.1:$PORT" 2>"$W/socat.log" &
SOCATPID=$!
cleanup() {
  for d in data rec-cairn rec-pgbr; do
    runuser -u postgres -- $PGBIN/pg_ctl -D "$W/$d" -m immediate stop >/dev/null 2>&1 || true
  done
  kill $S3PID $SOCATPID 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
as_pg() { runuser -u postgres -- env AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_EC2_METADATA_DISABLED=true CAIRN_CACHE_PATH="$W/cache" "$@"; }
psql_() { as_pg psql -h "$W/sock" -p 5432 -XAtq -d postgres -c "$1"; }

# One configuration file per tool and repository.
for repo in local s3; do
  mkdir -p "$W/spool-cairn-$repo" "$W/spool-pgbr-$repo"
  if [ $repo = local ]; then loc="repo = \"$W/cairn-local\""; else
    loc="repo = \"s3://cairn/repo\"
s3-endpoint = \"http://127.0.0.1:$PORT\"
s3-region = \"us-east-1\"
s3-path-style = true"
  fi
  cat >"$W/cairn-$repo.toml" <<CONF
$loc
stanza = "bench"
pg-path = "$W/data"
pg-host = "$W/sock"
pg-port = 5432
process-max = 2
compress-level = 3
log-level = "warn"
archive-async = true
spool-path = "$W/spool-cairn-$repo"
CONF
  if [ $repo = local ]; then loc="repo1-path=$W/pgbr-local"; else
    loc="repo1-type=s3
repo1-path=/repo
repo1-s3-bucket=pgbr
repo1-s3-endpoint=127.0.0.1
repo1-storage-port=$TPORT
repo1-s3-region=us-east-1
repo1-s3-key=bench
repo1-s3-key-secret=bench-secret
repo1-s3-uri-style=path
repo1-storage-verify-tls=n"
  fi
  cat >"$W/pgbr-$repo.conf" <<CONF
[global]
$loc
repo1-bundle=y
repo1-block=y
log-path=$W/log
lock-path=$W/lock
spool-path=$W/spool-pgbr-$repo
archive-async=y
archive-get-queue-max=128MiB
log-level-console=warn
log-level-file=off
process-max=2
compress-type=zst
compress-level=3
start-fast=y
repo1-retention-full=100
[bench]
pg1-path=$W/data
pg1-socket-path=$W/sock
pg1-port=5432
CONF
done
chown -R postgres:postgres "$W"
cairn_cmd() { echo "env AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_EC2_METADATA_DISABLED=true CAIRN_CACHE_PATH=$W/cache $W/cairn --config $W/cairn-$1.toml"; }
pgbr_cmd() { echo "$PGBR_BIN --config=$W/pgbr-$1.conf --stanza=bench"; }

as_pg $PGBIN/initdb -k -A trust -D "$W/data" >/dev/null
cat >> "$W/data/postgresql.conf" <<CONF
port = 5432
unix_socket_directories = '$W/sock'
listen_addresses = ''
wal_level = replica
archive_mode = on
archive_command = '/bin/true'
max_wal_size = 4GB
CONF
as_pg $PGBIN/pg_ctl -D "$W/data" -l "$W/pg.log" -w start >/dev/null
as_pg $PGBIN/pgbench -h "$W/sock" -p 5432 -i -s 20 -q postgres >/dev/null 2>&1
# Full speed for WAL: pgbench's own transactions and, as often, one that inserts 100 rows of
# 1 KB (about 120 KB of WAL each).
psql_ "create table wal_load (id int, body text)" >/dev/null
cat >"$W/heavy.sql" <<'SQL'
insert into wal_load select g, md5(random()::text) || repeat(md5(g::text), 30) from generate_series(1, 100) g;
SQL
chown postgres "$W/heavy.sql"
load() { as_pg $PGBIN/pgbench -h "$W/sock" -p 5432 -n -c "$CLIENTS" -j 2 -T "$1" -b tpcb-like@1 -f "$W/heavy.sql@1" postgres; }
for repo in local s3; do
  as_pg $(cairn_cmd $repo) stanza-create --engine postgres >/dev/null
  as_pg $(pgbr_cmd $repo) stanza-create >/dev/null
done

set_archive() { psql_ "alter system set archive_command = '$1'" >/dev/null; psql_ "select pg_reload_conf()" >/dev/null; }
ready() { ls "$W/data/pg_wal/archive_status" | grep -c '\.ready$' || true; }
drain() { # wait until nothing is left to archive
  psql_ "select pg_switch_wal()" >/dev/null
  until [ "$(ready)" = 0 ]; do sleep 0.2; done
}
lsn() { psql_ "select pg_current_wal_lsn() - '0/0'::pg_lsn"; }
tools_in_order() { if [ $(($1 % 2)) = 1 ]; then echo "cairn pgbr"; else echo "pgbr cairn"; fi; }
R="$W/results"; mkdir -p "$R"

# 1. Archiving under load.
for round in $(seq 1 "$ROUNDS"); do
  for repo in local s3; do
    for tool in $(tools_in_order "$round"); do
      if [ $tool = cairn ]; then set_archive "$(cairn_cmd $repo) archive-push %p"
      else set_archive "$(pgbr_cmd $repo) archive-push %p"; fi
      drain
      l0=$(lsn); max=0
      psql_ "truncate wal_load" >/dev/null
      load "$SECS" >"$W/pgbench.out" 2>&1 &
      PB=$!
      while kill -0 $PB 2>/dev/null; do
        n=$(ready); [ "$n" -gt "$max" ] && max=$n; sleep 1
      done
      wait $PB
      l1=$(lsn); last=$(ready); s=$(date +%s.%N)
      until [ "$(ready)" = 0 ]; do sleep 0.1; done
      e=$(date +%s.%N)
      tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$W/pgbench.out" | head -1)
      echo "$(python3 -c "print(f'{($l1 - $l0) / $SECS / 1048576:.1f}')") $max $last $(python3 -c "print(f'{$e-$s:.1f}')") $tps" >>"$R/load-$repo.$tool"
    done
  done
done

psql_ "truncate wal_load" >/dev/null
# 2. Recovery of RECOVERY_MIB of WAL from S3: a full backup by each tool, then WAL archived
# into both S3 repositories, then each tool restores its backup and the cluster recovers.
set_archive "$(cairn_cmd s3) archive-push %p && $(pgbr_cmd s3) archive-push %p"
drain
as_pg $(cairn_cmd s3) backup --type full --no-expire >/dev/null
as_pg $(pgbr_cmd s3) backup --type=full >/dev/null
l0=$(lsn)
while [ $(( ($(lsn) - l0) / 1048576 )) -lt "$RECOVERY_MIB" ]; do
  load 5 >/dev/null 2>&1
done
WAL_MIB=$(( ($(lsn) - l0) / 1048576 ))
drain
as_pg $PGBIN/pg_ctl -D "$W/data" -m fast stop >/dev/null
for round in $(seq 1 "$ROUNDS"); do
  for tool in $(tools_in_order "$round"); do
    d="$W/rec-$tool"
    rm -rf "$d" "$W/spool-cairn-s3/archive" "$W/spool-pgbr-s3/archive"
    as_pg mkdir -m 700 "$d"
    if [ $tool = cairn ]; then as_pg $(cairn_cmd s3) restore --dest "$d" >/dev/null
    else as_pg $(pgbr_cmd s3) restore --pg1-path="$d" >/dev/null; fi
    cat >>"$d/postgresql.auto.conf" <<CONF
port = 5433
unix_socket_directories = '$W/sock2'
archive_mode = off
CONF
    s=$(date +%s.%N)
    as_pg $PGBIN/pg_ctl -D "$d" -l "$W/rec.log" -w -t 3600 start >/dev/null
    until [ "$(as_pg psql -h "$W/sock2" -p 5433 -XAtq -d postgres -c 'select pg_is_in_recovery()' 2>/dev/null)" = f ]; do sleep 0.1; done
    e=$(date +%s.%N)
    as_pg $PGBIN/pg_ctl -D "$d" -m immediate stop >/dev/null
    python3 -c "print(f'{$e-$s:.2f}')" >>"$R/recovery.$tool"
  done
done

python3 - "$R" "$SECS" "$CLIENTS" "$ROUNDS" "$WAL_MIB" <<'PY'
import statistics, sys, os
r, secs, clients, rounds, wal = sys.argv[1:]
def rows(name):
    p = os.path.join(r, name)
    return [l.split() for l in open(p)] if os.path.exists(p) else []
def med(vals):
    return statistics.median(vals) if vals else float("nan")
print(f"pgbench -c {clients} for {secs} s per run (scale 20), asynchronous archiving, --process-max 2, zstd 3, {rounds} rounds alternating; medians")
print(f"{'':44}{'cairn':>10}{'pgBackRest':>12}{'ratio':>8}")
for repo in ("local", "s3"):
    c, p = rows(f"load-{repo}.cairn"), rows(f"load-{repo}.pgbr")
    for i, what in [(0, "WAL written, MiB/s"), (4, "pgbench tps"), (1, "largest backlog (segments)"), (2, "backlog when pgbench stopped"), (3, "catching up after it, s")]:
        a, b = med([float(x[i]) for x in c]), med([float(x[i]) for x in p])
        ratio = f"{a / b:.2f}" if b else "-"
        print(f"{repo + ': ' + what:44}{a:>10.1f}{b:>12.1f}{ratio:>8}")
a = med([float(x[0]) for x in rows("recovery.cairn")])
b = med([float(x[0]) for x in rows("recovery.pgbr")])
print(f"{'recovery of ' + wal + ' MiB of WAL from S3, s':44}{a:>10.2f}{b:>12.2f}{a / b:>8.2f}")
PY
