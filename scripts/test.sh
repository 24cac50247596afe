#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine, as root: install what the tests need when it
# is missing (PostgreSQL 15's server, moto and s3s-fs as real S3 servers, openssl, curl, GNU
# time), then `cargo test --workspace`, closing with the total of passed and failed tests.
# The PostgreSQL tests start their own clusters as the `postgres` user; the S3 tests start
# their servers on 127.0.0.1. `.ci/run` calls this after formatting, lints and fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "run as root: the tests run PostgreSQL as the postgres user (runuser) and install packages" >&2
  exit 2
fi

apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then
    apt-get update
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

echo "== test dependencies"
# PostgreSQL 15 server binaries (the package also creates the postgres user).
if [ ! -x /usr/lib/postgresql/15/bin/postgres ] || ! id postgres >/dev/null 2>&1; then
  apt_install postgresql-15
fi
/usr/lib/postgresql/15/bin/postgres --version
command -v runuser >/dev/null
# openssl makes the TLS test's private CA; curl creates its bucket over HTTPS; GNU time
# measures a command's peak memory (the catalog-bomb test); pip installs moto.
if ! command -v openssl >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1 || [ ! -x /usr/bin/time ]; then
  apt_install openssl curl time
fi
# moto: a real S3-compatible server for the S3 backend's tests.
if ! command -v moto_server >/dev/null 2>&1; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt_install python3-pip
  fi
  python3 -m pip install --quiet 'moto[server]' 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages 'moto[server]'
  hash -r
fi
command -v moto_server
# s3s-fs: a second S3 server, which checks request signatures.
if ! command -v s3s-fs >/dev/null 2>&1; then
  echo "building s3s-fs (a few minutes, once)"
  cargo install s3s-fs --version 0.14.1 --features binary --locked
fi
command -v s3s-fs

echo "== test suite"
df -h . | tail -n 1
log=$(mktemp)
set +e
cargo test --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# cargo prints one summary per test binary, the last often an empty doc-test run: close with
# the total, as a plain 'N passed, N failed' line.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "\ntotal: %d passed, %d failed\n", p, f; if (p == 0) exit 1 }' "$log"
rm -f "$log"
exit "$status"
