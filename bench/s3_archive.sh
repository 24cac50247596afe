#!/usr/bin/env bash
# archive-push and archive-get per 16 MiB WAL segment, one process per segment as PostgreSQL's
# archive_command and restore_command run them, with the repository on a local S3 server
# (s3s-fs on 127.0.0.1) and on local disk, side by side in one run; and the S3 requests one
# push and one get send. Run as root (the cluster runs as postgres).
# Usage: bench/s3_archive.sh [segments]
# Needs s3s-fs (cargo install s3s-fs --version 0.14.1 --features binary --locked).
set -euo pipefail
cd "$(dirname "$0")/.."
NSEG=${1:-20}
PGBIN=/usr/lib/postgresql/15/bin
cargo build --release -q
W=$(mktemp -d /var/tmp/cairn-s3arch.XXXXXX)
chmod 755 "$W"
install -m 755 target/release/cairn "$W/cairn"
mkdir -p "$W/sock" "$W/walsrc" "$W/local-repo" "$W/s3/wal" "$W/got-s3" "$W/got-local"
chown -R postgres:postgres "$W"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
s3s-fs --host 127.0.0.1 --port "$PORT" --access-key bench \
  --secret-key bench-secret "$W/s3" >"$W/s3s.log" 2>&1 &
SERVER=$!
cleanup() {
  runuser -u postgres -- $PGBIN/pg_ctl -D "$W/data" -m immediate stop >/dev/null 2>&1 || true
  kill $SERVER 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
as_pg() { runuser -u postgres -- env AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_EC2_METADATA_DISABLED=true "$@"; }

# A cluster whose archive_command only copies, to collect real segments.
as_pg $PGBIN/initdb -k -A trust -D "$W/data" >/dev/null
cat >> "$W/data/postgresql.conf" <<CONF
port = 5432
unix_socket_directories = '$W/sock'
listen_addresses = ''
wal_level = replica
archive_mode = on
archive_command = 'cp %p $W/walsrc/%f'
CONF
as_pg $PGBIN/pg_ctl -D "$W/data" -l "$W/pg.log" -w start >/dev/null
as_pg $PGBIN/pgbench -h "$W/sock" -p 5432 -i -s 10 -q postgres >/dev/null 2>&1
for _ in $(seq "$NSEG"); do
  as_pg psql -h "$W/sock" -p 5432 -XAtq -d postgres -c "insert into pgbench_history select 1,1,1,1,now(),'x' from generate_series(1,1000); select pg_switch_wal()" >/dev/null
done
for _ in $(seq 100); do
  [ "$(ls "$W/walsrc" | grep -cE '^[0-9A-F]{24}$')" -ge "$NSEG" ] && break; sleep 0.2
done
SEGS=$(ls "$W/walsrc" | grep -E '^[0-9A-F]{24}$' | head -"$NSEG" | tr '\n' ' ')
N=$(echo "$SEGS" | wc -w)

S3="$W/cairn --repo s3://wal/repo --s3-endpoint http://127.0.0.1:$PORT --s3-region us-east-1 --s3-path-style --stanza bench --pg-path $W/data"
LOCAL="$W/cairn --repo $W/local-repo --stanza bench --pg-path $W/data"
as_pg $S3 --log-level warn stanza-create --engine postgres
as_pg $LOCAL --log-level warn stanza-create --engine postgres

t() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); python3 -c "print(f'{$e-$s:.3f}')"; }
push() { local g; for g in $SEGS; do (cd "$W/data" && as_pg $1 --log-level warn archive-push "$W/walsrc/$g"); done; }  # archive-push runs in pg-path, as PostgreSQL runs it
get() { local g; for g in $SEGS; do as_pg $1 --log-level warn archive-get "$g" "$2/$g"; done; }
lpush=$(t push "$LOCAL")
spush=$(t push "$S3")
lget=$(t get "$LOCAL" "$W/got-local")
sget=$(t get "$S3" "$W/got-s3")
for s in $SEGS; do cmp -s "$W/walsrc/$s" "$W/got-s3/$s" || { echo "segment $s from S3 differs"; exit 1; }; done

# The requests of one more push (a segment not yet archived: the next one the cluster made)
# and of one get.
as_pg psql -h "$W/sock" -p 5432 -XAtq -d postgres -c "insert into pgbench_history select 1,1,1,1,now(),'x' from generate_series(1,1000); select pg_switch_wal()" >/dev/null
sleep 2
LAST=$(ls "$W/walsrc" | grep -E '^[0-9A-F]{24}$' | tail -1)
pushreq=$(cd "$W/data" && as_pg $S3 --log-level debug archive-push "$W/walsrc/$LAST" 2>&1 | sed -n 's/.*\(S3 requests: .*\)/\1/p' | tail -1)
getreq=$(as_pg $S3 --log-level debug archive-get "$LAST" "$W/got-s3/last" 2>&1 | sed -n 's/.*\(S3 requests: .*\)/\1/p' | tail -1)

python3 - "$N" "$lpush" "$spush" "$lget" "$sget" <<'PY'
import sys
n, lp, sp, lg, sg = sys.argv[1:]
n = int(n)
print(f"{n} WAL segments of 16 MiB, one cairn process each, release build, one run")
print(f"{'':24}{'local disk':>12}{'S3 (s3s-fs)':>14}{'ratio':>8}")
for name, l, s in [("archive-push / segment", lp, sp), ("archive-get / segment", lg, sg)]:
    l, s = float(l) / n * 1000, float(s) / n * 1000
    print(f"{name:24}{l:>10.0f}ms{s:>12.0f}ms{s/l:>8.2f}")
PY
echo "one archive-push to S3: $pushreq"
echo "one archive-get from S3: $getreq"
