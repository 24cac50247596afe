#!/usr/bin/env bash
# The repository at scale (issue 10): a synthetic stream stanza of CHUNKS distinct chunks in
# BACKUPS full backups (real packs, one index segment and one manifest per backup, then the
# segments merged as backups would have merged them; crates/repo/examples/synth_repo.rs), then
# the peak memory (GNU time, max RSS) and time of:
#   info;  a backup that adds ADD_MIB of new data;  expire of the oldest EXPIRE backups with
#   garbage collection (--gc-margin 0);  info again;  verify (reads every pack).
# Usage: bench/scale.sh [CHUNKS] [BACKUPS] [EXPIRE] [ADD_MIB]   (defaults 1000000 1000 100 64)
# The issue's figure is bench/scale.sh 100000000 10000 1000 1024 (about 25 GB of disk).
# Environment: PROFILE=debug uses the debug build (CI); MAX_RSS_MIB=N fails (exit 1) when an
# operation peaks above N MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
CHUNKS=${1:-1000000}
BACKUPS=${2:-1000}
EXPIRE=${3:-100}
ADD_MIB=${4:-64}
PROFILE=${PROFILE:-release}
if [ "$PROFILE" = release ]; then
  cargo build --release -q -p cairn-cli
  cargo build --release -q -p cairn-repo --example synth_repo
  OUT=target/release
else
  # The test profile, the whole workspace: what `cargo test --workspace` has just built (CI).
  cargo build -q --workspace --bins --examples --profile test
  OUT=target/debug
fi
BIN=$PWD/$OUT/cairn
WORK=$(mktemp -d /var/tmp/cairn-scale.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
t0=$(date +%s.%N)
"$OUT/examples/synth_repo" "$WORK/repo" "$CHUNKS" "$BACKUPS" 2>"$WORK/synth.log" || { cat "$WORK/synth.log"; exit 1; }
t1=$(date +%s.%N)
export CAIRN_CACHE_PATH=$WORK/cache
C="$BIN --repo $WORK/repo --stanza main --log-level warn"
over=0
measure() { # name, command...
  local name=$1; shift
  /usr/bin/time -f "%M %e" -o "$WORK/time" "$@" >/dev/null
  read -r kib secs <"$WORK/time"
  local mib; mib=$(echo "$kib/1024" | bc -l)
  printf '%-34s %8.1f MiB peak RSS %8.2f s\n' "$name" "$mib" "$secs"
  if [ -n "${MAX_RSS_MIB:-}" ] && [ "$(echo "$mib > $MAX_RSS_MIB" | bc)" = 1 ]; then
    echo "  over the bound of $MAX_RSS_MIB MiB"
    over=1
  fi
}
printf 'synthetic repository: %s chunks in %s backups, %s on disk, built in %.1f s\n' \
  "$CHUNKS" "$BACKUPS" "$(du -sh "$WORK/repo" | cut -f1)" "$(echo "$t1 - $t0" | bc -l)"
printf 'index: %s segment(s), %s\n' "$(ls "$WORK/repo/stanza/main/index" | wc -l)" "$(du -sh "$WORK/repo/stanza/main/index" | cut -f1)"
measure "info (index not cached yet)" $C info
measure "info" $C info
head -c "$((ADD_MIB * 1048576))" /dev/urandom >"$WORK/add"
measure "backup adding $ADD_MIB MiB" sh -c "$C backup --type full <'$WORK/add'"
rm -f "$WORK/add"
measure "expire oldest $EXPIRE (gc-margin 0)" $C expire --retention-full "$((BACKUPS + 1 - EXPIRE))" --gc-margin 0
measure "info after expire" $C info
measure "verify" $C verify
exit $over
