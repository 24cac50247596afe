#!/usr/bin/env bash
# Backup and restore throughput of a mixed tree (default 1 GiB) with --process-max 2, and the
# repository's index cost per chunk. Usage: bench/throughput.sh [MiB] [process-max]
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-1024}
PMAX=${2:-2}
cargo build --release -q
BIN=$PWD/target/release/cairn
WORK=$(mktemp -d /var/tmp/cairn-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
python3 bench/gen_tree.py "$WORK/src" "$MIB" >/dev/null
BYTES=$(du -sb "$WORK/src" | cut -f1)
sync
C="$BIN --repo $WORK/repo --stanza bench --log-level warn --process-max $PMAX"
$C stanza-create --engine files
t0=$(date +%s.%N); $C backup --type full --source "$WORK/src"; t1=$(date +%s.%N)
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
t2=$(date +%s.%N); $C restore --dest "$WORK/out"; sync; t3=$(date +%s.%N)
t4=$(date +%s.%N); $C backup --type full --source "$WORK/src"; t5=$(date +%s.%N)
diff -r "$WORK/src" "$WORK/out" >/dev/null && same=yes || same=NO
INDEX=$(du -sb "$WORK/repo/stanza/bench/index" | cut -f1)
CHUNKS=$($C info --output json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(b["cairn"]["new-chunks"] for b in d[0]["backup"]))')
REPO=$(du -sb "$WORK/repo" | cut -f1)
python3 - "$BYTES" "$t0" "$t1" "$t2" "$t3" "$t4" "$t5" "$INDEX" "$CHUNKS" "$REPO" "$same" "$PMAX" <<'PY'
import sys
b, t0, t1, t2, t3, t4, t5, idx, chunks, repo, same, pmax = sys.argv[1:]
b = int(b); mb = b / 1e6
print(f"tree: {mb:.0f} MB, --process-max {pmax}")
print(f"full backup:        {float(t1)-float(t0):6.2f} s  {mb/(float(t1)-float(t0)):7.1f} MB/s")
print(f"restore:            {float(t3)-float(t2):6.2f} s  {mb/(float(t3)-float(t2)):7.1f} MB/s  (identical: {same})")
print(f"second full (dedup): {float(t5)-float(t4):5.2f} s  {mb/(float(t5)-float(t4)):7.1f} MB/s")
print(f"repository: {int(repo)/1e6:.0f} MB for {mb:.0f} MB x2; index {int(idx)} bytes for {chunks} chunks = {int(idx)/max(1,int(chunks)):.1f} bytes/chunk")
PY
