#!/usr/bin/env bash
# cairn's main job on a local repository, from nothing: build cairn, create a throwaway
# PostgreSQL 15 cluster in /tmp/cairn-demo with archive_command = cairn archive-push, create
# the stanza, check archiving, take a full and an incremental backup while data changes, and
# show `cairn info`. Installs PostgreSQL 15 (Debian's postgresql-15) when run as root and it is
# missing; as root, the cluster runs as user postgres. Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
D=/tmp/cairn-demo
if [ ! -x "$PGBIN/initdb" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing PostgreSQL 15 (apt-get install postgresql-15)"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-15
fi
if [ ! -x "$PGBIN/initdb" ]; then
  echo "PostgreSQL 15 server binaries are not in $PGBIN: apt-get install postgresql-15 (or set PGBIN)" >&2
  exit 2
fi
if [ "$(id -u)" = 0 ]; then AS=(runuser -u postgres --); OWNER=postgres; else AS=(); OWNER=$(id -un); fi
TARGET=${CARGO_TARGET_DIR:-target}
echo "building cairn (release; a first build takes about 7 minutes on 2 cores, later ones seconds)"
cargo build --release
if [ -f "$D/data/postmaster.pid" ]; then "${AS[@]}" "$PGBIN/pg_ctl" -D "$D/data" -m immediate -w stop >/dev/null || true; fi
rm -rf "$D"
mkdir -p "$D/sock" "$D/repo"
install -m 755 "$TARGET/release/cairn" "$D/cairn"
chown -R "$OWNER" "$D"
CAIRN=("$D/cairn" --repo "$D/repo" --stanza demo --pg-path "$D/data" --pg-host "$D/sock" --pg-port 5432)

"${AS[@]}" "$PGBIN/initdb" -k -A trust -D "$D/data" >/dev/null
cat >> "$D/data/postgresql.conf" <<CONF
port = 5432
unix_socket_directories = '$D/sock'
listen_addresses = ''
wal_level = replica
archive_mode = on
archive_command = '$D/cairn --repo $D/repo --stanza demo --pg-path $D/data archive-push %p'
CONF
"${AS[@]}" "$PGBIN/pg_ctl" -D "$D/data" -l "$D/postgres.log" -w start >/dev/null
"${AS[@]}" "${CAIRN[@]}" stanza-create --engine postgres
"${AS[@]}" "${CAIRN[@]}" check
"${AS[@]}" "$PGBIN/pgbench" -h "$D/sock" -p 5432 -i -s 2 -q postgres >/dev/null 2>&1
"${AS[@]}" "${CAIRN[@]}" backup --type full
"${AS[@]}" "$PGBIN/pgbench" -h "$D/sock" -p 5432 -n -t 500 postgres >/dev/null
"${AS[@]}" "${CAIRN[@]}" backup --type incr
"${AS[@]}" "${CAIRN[@]}" --log-level warn info
"${AS[@]}" "$PGBIN/pg_ctl" -D "$D/data" -m fast -w stop >/dev/null
echo "cluster stopped; restore it with: ${AS[*]} ${CAIRN[*]} restore --dest /tmp/cairn-demo/restored"
