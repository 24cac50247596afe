#!/usr/bin/env bash
# The repository at scale (issue 10): a synthetic stream stanza of CHUNKS distinct chunks in
# BACKUPS full backups (real packs, one index segment and one manifest per backup, built by
# crates/repo/examples/synth_repo.rs), then the peak memory (GNU time, max RSS) and time of:
#   info;  a backup that adds ADD_MIB of new data;  expire of the oldest EXPIRE backups with
#   garbage collection (--gc-margin 0).
# Usage: bench/scale.sh [CHUNKS] [BACKUPS] [EXPIRE] [ADD_MIB]   (defaults 1000000 1000 100 64)
# The issue's figure is bench/scale.sh 100000000 10000 1000 1024 (about 9 GB of disk).
set -euo pipefail
cd "$(dirname "$0")/.."
CHUNKS=${1:-1000000}
BACKUPS=${2:-1000}
EXPIRE=${3:-100}
ADD_MIB=${4:-64}
cargo build --release -q -p cairn-cli
cargo build --release -q -p cairn-repo --example synth_repo
BIN=$PWD/target/release/cairn
WORK=$(mktemp -d /var/tmp/cairn-scale.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
t0=$(date +%s.%N)
target/release/examples/synth_repo "$WORK/repo" "$CHUNKS" "$BACKUPS" 2>/dev/null
t1=$(date +%s.%N)
C="$BIN --repo $WORK/repo --stanza main --log-level warn"
measure() { # name, command...
  local name=$1; shift
  /usr/bin/time -f "%M %e" -o "$WORK/time" "$@" >/dev/null
  read -r kib secs <"$WORK/time"
  printf '%-34s %8.1f MiB peak RSS %8.2f s\n' "$name" "$(echo "$kib/1024" | bc -l)" "$secs"
}
printf 'synthetic repository: %s chunks in %s backups, %s on disk, built in %.1f s\n' \
  "$CHUNKS" "$BACKUPS" "$(du -sh "$WORK/repo" | cut -f1)" "$(echo "$t1 - $t0" | bc -l)"
measure "info" $C info
head -c "$((ADD_MIB * 1048576))" /dev/urandom >"$WORK/add"
measure "backup adding $ADD_MIB MiB" sh -c "$C backup --type full <'$WORK/add'"
measure "expire oldest $EXPIRE (gc-margin 0)" $C expire --retention-full "$((BACKUPS + 1 - EXPIRE))" --gc-margin 0
measure "info after expire" $C info
measure "verify" $C verify
