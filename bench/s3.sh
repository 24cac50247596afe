#!/usr/bin/env bash
# Backup and restore throughput with the repository on a local S3 server (s3s-fs on
# 127.0.0.1, which checks signatures), at --process-max 1, 2, 4 and 8, side by side in one run;
# the requests each backup sent (PUTs per GiB) and the peak memory (max RSS) of each restore.
# Usage: bench/s3.sh [MiB] [process-max list]     e.g. bench/s3.sh 1024 "1 2 4 8"
# Needs s3s-fs (cargo install s3s-fs --version 0.14.1 --features binary --locked).
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-1024}
PMAXES=${2:-"1 2 4 8"}
cargo build --release -q
BIN=$PWD/target/release/cairn
WORK=$(mktemp -d /var/tmp/cairn-s3bench.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/s3"
s3s-fs --host 127.0.0.1 --port "$PORT" --access-key bench --secret-key bench-secret "$WORK/s3" \
  >"$WORK/s3s.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_EC2_METADATA_DISABLED=true
python3 bench/gen_tree.py "$WORK/src" "$MIB" >/dev/null
BYTES=$(du -sb "$WORK/src" | cut -f1)
sync
printf 'tree: %d MB (%s MiB asked), s3s-fs 0.14.1 on 127.0.0.1, one run on %s cores\n' \
  $((BYTES / 1000000)) "$MIB" "$(nproc)"
printf '%-12s %10s %10s %10s %10s %8s %12s %10s\n' process-max backup-s "MB/s" restore-s "MB/s" PUTs PUTs/GiB restore-RSS
for P in $PMAXES; do
  mkdir -p "$WORK/s3/bench-p$P"
  C="$BIN --repo s3://bench-p$P/repo --s3-endpoint http://127.0.0.1:$PORT --s3-region us-east-1 --s3-path-style --stanza bench --process-max $P"
  $C --log-level warn stanza-create --engine files
  t0=$(date +%s.%N)
  $C --log-level info backup --type full --source "$WORK/src" 2>"$WORK/backup.log"
  t1=$(date +%s.%N)
  PUTS=$(sed -n 's/.*S3 requests: \([0-9]*\) PUT.*/\1/p' "$WORK/backup.log" | tail -1)
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  rm -rf "$WORK/out"
  t2=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$WORK/rss" $C --log-level warn restore --dest "$WORK/out"
  t3=$(date +%s.%N)
  diff -r "$WORK/src" "$WORK/out" >/dev/null || { echo "restore at --process-max $P differs"; exit 1; }
  python3 - "$P" "$BYTES" "$t0" "$t1" "$t2" "$t3" "$PUTS" "$(cat "$WORK/rss")" <<'PY'
import sys
p, b, t0, t1, t2, t3, puts, rss = sys.argv[1:]
b = int(b); mb = b / 1e6
bt, rt = float(t1) - float(t0), float(t3) - float(t2)
print(f"{p:<12} {bt:10.2f} {mb/bt:10.1f} {rt:10.2f} {mb/rt:10.1f} {puts:>8} {int(puts)/(b/2**30):12.1f} {int(rss)/1024:8.0f} MiB")
PY
  rm -rf "$WORK/s3/bench-p$P" "$WORK/out"
done
