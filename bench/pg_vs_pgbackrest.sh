#!/usr/bin/env bash
# cairn and pgBackRest 2.59 side by side on one PostgreSQL 15 cluster (issue 11): pgbench at
# SCALE plus a text table of TEXT_ROWS rows, vacuum-frozen; both with --process-max PMAX and
# zstd level 3, pgBackRest with bundling and block incremental (repo1-bundle=y,
# repo1-block=y). RUNS rounds, the order of the two tools alternating each round; reports the
# median of each measure and the ratio cairn / pgBackRest of the medians:
#   first full into a new repository (time, repository bytes, peak RSS);
#   a second full into the same repository;
#   an incremental after about 5% of pages change (time, bytes it added);
#   restore of that incremental (time, peak RSS);
#   archive-push per 16 MiB segment, synchronous and asynchronous;
# and the machine's limits on the same data (read, zstd level 3 and BLAKE3 on every core,
# crates/repo/examples/machine_limits.rs), with cairn's full and restore as multiples of them.
# Installs nothing: needs `pgbackrest-2.59` (../shared/tools/install-pgbackrest-2.59.sh) and
# PostgreSQL 15. Run as root (clusters run as postgres).
# Usage: bench/pg_vs_pgbackrest.sh [SCALE=40] [TEXT_ROWS=1500000] [RUNS=3] [PMAX=2]
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-40}
TEXT_ROWS=${2:-1500000}
RUNS=${3:-3}
PMAX=${4:-2}
PGBIN=/usr/lib/postgresql/15/bin
PGBR_BIN=$(command -v pgbackrest-2.59) || { echo "pgbackrest-2.59 is not installed: run ../shared/tools/install-pgbackrest-2.59.sh"; exit 2; }
command -v /usr/bin/time >/dev/null || { echo "GNU time is needed (apt-get install time)"; exit 2; }
cargo build --release -q -p cairn-cli
cargo build --release -q -p cairn-repo --example machine_limits
W=$(mktemp -d /var/tmp/cairn-pgbench.XXXXXX)
chmod 755 "$W"
install -m 755 target/release/cairn "$W/cairn"
install -m 755 target/release/examples/machine_limits "$W/machine_limits"
mkdir -p "$W/sock" "$W/pgbr-log" "$W/pgbr-lock" "$W/spool-cairn" "$W/spool-pgbr" "$W/results"
chown -R postgres:postgres "$W"
cleanup() { [ -n "${KEEP:-}" ] && { echo "kept $W"; return; }; runuser -u postgres -- $PGBIN/pg_ctl -D "$W/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$W"; }
trap cleanup EXIT
as_pg() { runuser -u postgres -- "$@"; }
psql_() { as_pg psql -h "$W/sock" -p 5432 -XAtq -d postgres -c "$1"; }

# Both tools archive into the repository that `cur-cairn` / `cur-pgbr` point to, so each
# round can start from new, empty repositories.
cat > "$W/pgbackrest.conf" <<CONF
[global]
repo1-path=$W/cur-pgbr
repo1-bundle=y
repo1-block=y
log-path=$W/pgbr-log
lock-path=$W/pgbr-lock
spool-path=$W/spool-pgbr
log-level-console=warn
log-level-file=off
process-max=$PMAX
compress-type=zst
compress-level=3
start-fast=y
repo1-retention-full=100
[bench]
pg1-path=$W/data
pg1-socket-path=$W/sock
pg1-port=5432
CONF
chown postgres "$W/pgbackrest.conf"
PGBR="$PGBR_BIN --config=$W/pgbackrest.conf --stanza=bench"
CAIRN="$W/cairn --repo $W/cur-cairn --stanza bench --log-level warn --process-max $PMAX --compress-level 3 --pg-path $W/data --pg-host $W/sock --pg-port 5432"
export CAIRN_CACHE_PATH=$W/cairn-cache

as_pg $PGBIN/initdb -k -A trust -D "$W/data" >/dev/null
cat >> "$W/data/postgresql.conf" <<CONF
port = 5432
unix_socket_directories = '$W/sock'
listen_addresses = ''
wal_level = replica
archive_mode = on
archive_command = 'CAIRN_CACHE_PATH=$W/cairn-cache $CAIRN archive-push %p && $PGBR archive-push %p'
max_wal_size = 4GB
CONF
as_pg $PGBIN/pg_ctl -D "$W/data" -l "$W/pg.log" -w start >/dev/null
as_pg $PGBIN/pgbench -h "$W/sock" -p 5432 -i -s "$SCALE" -q postgres >/dev/null 2>&1
psql_ "create table notes (id bigint primary key, body text); insert into notes select g, md5(g::text) || ' ' || repeat(md5((g * 7)::text), 2) from generate_series(1, $TEXT_ROWS) g" >/dev/null
psql_ "vacuum freeze" >/dev/null
psql_ "checkpoint" >/dev/null
DBSIZE=$(psql_ "select sum(pg_database_size(datname)) from pg_database")

new_repos() { # round
  as_pg rm -rf "$W/cur-cairn" "$W/cur-pgbr" "$W/cairn-$1" "$W/pgbr-$1" "$W/cairn-cache"
  as_pg mkdir -p "$W/cairn-$1" "$W/pgbr-$1"
  as_pg ln -sfn "$W/cairn-$1" "$W/cur-cairn"
  as_pg ln -sfn "$W/pgbr-$1" "$W/cur-pgbr"
  as_pg $CAIRN stanza-create --engine postgres >/dev/null
  as_pg $PGBR stanza-create >/dev/null
}
# measure NAME TOOL command...: wall seconds and peak RSS into results/NAME.TOOL
# Each starts with no writeback pending from the step before (the other tool's restore, a
# deleted restore, a checkpoint): neither pays for the other's dirty pages.
measure() {
  local name=$1 tool=$2; shift 2
  sync
  /usr/bin/time -f "%e %M" -o "$W/time" runuser -u postgres -- "$@" >/dev/null
  echo "$(cat "$W/time")" >>"$W/results/$name.$tool"
}
bytes() { du -sb "$1" | cut -f1; }
# Let the archiver catch up (both tools push every segment), so no backup's time or bytes
# include WAL written before it started.
archived() {
  local seg
  # Write a record first: with no WAL since the last switch, pg_switch_wal does nothing and
  # names the segment in use, which would never be archived.
  psql_ "select pg_logical_emit_message(false, 'bench', 'archived')" >/dev/null
  seg=$(psql_ "select pg_walfile_name(pg_switch_wal())")
  until [ "$(psql_ "select coalesce(last_archived_wal, '') >= '$seg' from pg_stat_archiver")" = t ]; do sleep 0.1; done
}
record() { echo "$3" >>"$W/results/$1.$2"; }
tools_in_order() { if [ $(($1 % 2)) = 1 ]; then echo "cairn pgbr"; else echo "pgbr cairn"; fi; }
for round in $(seq 1 "$RUNS"); do
  new_repos "$round"
  for tool in $(tools_in_order "$round"); do
    archived
    if [ "$tool" = cairn ]; then
      measure full1 cairn $CAIRN backup --type full --no-expire
      record full1_bytes cairn "$(bytes "$W/cairn-$round")"
    else
      measure full1 pgbr $PGBR backup --type=full
      record full1_bytes pgbr "$(bytes "$W/pgbr-$round")"
    fi
  done
  for tool in $(tools_in_order "$round"); do
    archived
    if [ "$tool" = cairn ]; then measure full2 cairn $CAIRN backup --type full --no-expire
    else measure full2 pgbr $PGBR backup --type=full; fi
  done
  # About 5% of pages: a contiguous 5% of pgbench_accounts updated (a new 5% each round).
  N=$((SCALE * 100000 / 20))
  OFF=$(( (round - 1) * N ))
  psql_ "update pgbench_accounts set abalance = abalance + 1 where aid > $OFF and aid <= $OFF + $N" >/dev/null
  psql_ "checkpoint" >/dev/null
  for tool in $(tools_in_order "$round"); do
    archived
    if [ "$tool" = cairn ]; then
      b0=$(bytes "$W/cairn-$round"); measure incr cairn $CAIRN backup --type incr --no-expire
      record incr_bytes cairn $(( $(bytes "$W/cairn-$round") - b0 ))
    else
      b0=$(bytes "$W/pgbr-$round"); measure incr pgbr $PGBR backup --type=incr
      record incr_bytes pgbr $(( $(bytes "$W/pgbr-$round") - b0 ))
    fi
  done
  # Each restore goes into a new directory, and the copies are deleted only at the end: ext4
  # does not reuse an inode deleted in the last 60 seconds and skips each such one, one by
  # one, at every file creation, so a restore made right after deleting the last copy (about
  # 1,000 files) spends up to 0.7 s more creating its files, whichever tool comes after
  # whichever deletion. (RESTORE_AFTER_DELETE=1 measures that case: delete, then restore.)
  for tool in $(tools_in_order "$round"); do
    dest="$W/restore-$tool-$round"
    if [ "${RESTORE_AFTER_DELETE:-0}" = 1 ]; then dest="$W/restore-$tool"; as_pg rm -rf "$dest"; fi
    as_pg mkdir -m 700 "$dest"
    if [ "$tool" = cairn ]; then measure restore cairn $CAIRN restore --dest "$dest"
    else measure restore pgbr $PGBR restore --pg1-path="$dest"; fi
    [ "${RESTORE_AFTER_DELETE:-0}" = 1 ] && as_pg rm -rf "$dest"
  done
done

# archive-push per segment, on segments of this cluster copied into a stand-in data
# directory (pg_wal and archive_status as PostgreSQL leaves them), into new stanzas.
FAKE="$W/fake"
as_pg mkdir -p "$FAKE/pg_wal/archive_status" "$FAKE/global"
as_pg cp "$W/data/global/pg_control" "$FAKE/global/"
SEGS=""
psql_ "select pg_switch_wal()" >/dev/null
sleep 2
# Completed segments only (archived, .done): later names in pg_wal may be recycled files.
for s in $(ls "$W/data/pg_wal/archive_status" | sed -n 's/^\([0-9A-F]\{24\}\)\.done$/\1/p' | sort | tail -16); do
  as_pg cp "$W/data/pg_wal/$s" "$FAKE/pg_wal/$s"; SEGS="$SEGS $s"
done
NSEG=$(echo $SEGS | wc -w)
push_round() { # tool mode
  local tool=$1 mode=$2 extra="" cmd
  as_pg rm -rf "$W/push-cairn" "$W/push-pgbr" "$W/spool-cairn"/* "$W/spool-pgbr"/*
  as_pg mkdir -p "$W/push-cairn" "$W/push-pgbr"
  for s in $SEGS; do as_pg touch "$FAKE/pg_wal/archive_status/$s.ready"; done
  as_pg rm -f "$FAKE/pg_wal/archive_status/"*.done
  local C2="$W/cairn --repo $W/push-cairn --stanza bench --log-level warn --process-max $PMAX --compress-level 3 --pg-path $FAKE"
  local P2="$PGBR_BIN --config=$W/pgbackrest.conf --stanza=bench --repo1-path=$W/push-pgbr --pg1-path=$FAKE"
  as_pg $W/cairn --repo $W/push-cairn --stanza bench --log-level warn --pg-path $W/data --pg-host $W/sock --pg-port 5432 stanza-create --engine postgres >/dev/null
  as_pg $PGBR_BIN --config=$W/pgbackrest.conf --stanza=bench --repo1-path=$W/push-pgbr stanza-create >/dev/null
  if [ "$mode" = async ]; then
    [ "$tool" = cairn ] && extra="--archive-async --spool-path $W/spool-cairn" || extra="--archive-async"
  fi
  [ "$tool" = cairn ] && cmd="$C2 archive-push $extra" || cmd="$P2 $extra archive-push"
  # Only the command is timed, as PostgreSQL's archiver waits only for it (its own rename
  # of .ready to .done is not part of either tool's cost).
  local spans="" t0 t1
  for s in $SEGS; do
    t0=$EPOCHREALTIME
    (cd "$FAKE" && runuser -u postgres -- $cmd "pg_wal/$s") >/dev/null
    t1=$EPOCHREALTIME
    spans="$spans $t0 $t1"
    as_pg mv "$FAKE/pg_wal/archive_status/$s.ready" "$FAKE/pg_wal/archive_status/$s.done"
  done
  record "push_$mode" "$tool" "$(python3 -c "import sys; v = [float(x) for x in sys.argv[1:]]; print(sum(b - a for a, b in zip(v[0::2], v[1::2])) / $NSEG)" $spans)"
}
for round in $(seq 1 "$RUNS"); do
  for mode in sync async; do
    for tool in $(tools_in_order "$round"); do push_round "$tool" "$mode"; done
  done
done

as_pg $PGBIN/pg_ctl -D "$W/data" -m fast -w stop >/dev/null
LIMITS=$("$W/machine_limits" "$W/data" "$PMAX")

# Every run's figures (seconds and peak KiB, one line per run), when asked for.
if [ -n "${BENCH_RESULTS:-}" ]; then mkdir -p "$BENCH_RESULTS" && cp "$W"/results/* "$BENCH_RESULTS"/; fi
python3 - "$W/results" "$DBSIZE" "$SCALE" "$TEXT_ROWS" "$RUNS" "$PMAX" "$NSEG" "$LIMITS" <<'PY'
import os, statistics, sys
res, db, scale, rows, runs, pmax, nseg, limits = sys.argv[1:]
def vals(name, tool, col=0):
    p = os.path.join(res, f"{name}.{tool}")
    return [float(l.split()[col]) for l in open(p) if l.strip()] if os.path.exists(p) else []
def med(name, tool, col=0):
    v = vals(name, tool, col)
    return statistics.median(v) if v else float("nan")
lim = dict(zip(limits.split()[0::2], limits.split()[1::2]))
print(f"cluster: {int(db)/2**20:.0f} MiB (pgbench scale {scale}, {rows} text rows), --process-max {pmax}, zstd 3, {runs} rounds alternating; medians")
print(f"{'':34}{'cairn':>12}{'pgBackRest':>12}{'ratio':>8}")
def row(label, name, unit="s", col=0, scale=1.0, fmt="{:.2f}"):
    a, b = med(name, "cairn", col) * scale, med(name, "pgbr", col) * scale
    print(f"{label:34}{fmt.format(a)+unit:>12}{fmt.format(b)+unit:>12}{a/b if b else float('nan'):>8.2f}")
row("first full, new repository", "full1")
row("  repository bytes after it", "full1_bytes", " MiB", scale=1/2**20, fmt="{:.0f}")
row("  peak RSS", "full1", " MiB", col=1, scale=1/1024, fmt="{:.0f}")
row("second full, same repository", "full2")
row("incr after ~5% of pages change", "incr")
row("  bytes it added", "incr_bytes", " MiB", scale=1/2**20, fmt="{:.1f}")
row("restore", "restore")
row("  peak RSS", "restore", " MiB", col=1, scale=1/1024, fmt="{:.0f}")
row(f"archive-push per segment (sync)", "push_sync", " ms", scale=1000, fmt="{:.0f}")
row(f"archive-push per segment (async)", "push_async", " ms", scale=1000, fmt="{:.0f}")
b = float(lim["bytes"])
print(f"machine limits on the data directory ({b/2**20:.0f} MiB, {lim['threads']} threads): read {float(lim['read_s']):.2f} s, zstd level 3 {float(lim['zstd3_s']):.2f} s (to {int(lim['zstd3_bytes'])/2**20:.0f} MiB), BLAKE3 {float(lim['blake3_s']):.2f} s")
floor = max(float(lim['read_s']), float(lim['zstd3_s']), float(lim['blake3_s']))
print(f"cairn's first full is {med('full1','cairn')/floor:.2f}x and its restore {med('restore','cairn')/max(float(lim['read_s']),1e-9):.2f}x the slowest of those limits / the read limit")
PY
