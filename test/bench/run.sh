#!/usr/bin/env bash
# test/bench/run.sh: `make bench` (and `make bench-smoke`). Starts private Redis, PostgreSQL,
# RabbitMQ and MongoDB (or its stand-in) on free loopback ports (test/lib/servers.sh), tunes that
# PostgreSQL for the benchmark, runs test/bench/bench.py (the suites), prints the results and
# stops every process it started, by PID. See test/bench/README.md.
#
#   bash test/bench/run.sh [SUITE ...]     suites: claims generate scale logger chance
#
# Environment: CHANCED_BIN (default build/chanced), CHANCED_BENCH_TOOLS (where claim_load and
# logger_tool are; default build), CHANCED_BENCH_OUT (default build/bench, build/bench-smoke when
# CHANCED_BENCH_SMOKE=1), CHANCED_BENCH_SMOKE=1 (every suite once, tiny sizes), and the sizes
# bench.py reads (CHANCED_BENCH_RUNS, CHANCED_BENCH_SECONDS, ...: see its top).
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
if [ "${CHANCED_BENCH_SMOKE:-}" = 1 ]; then
    OUT=${CHANCED_BENCH_OUT:-$ROOT/build/bench-smoke}
    SHARED_BUFFERS=256MB
else
    OUT=${CHANCED_BENCH_OUT:-$ROOT/build/bench}
    SHARED_BUFFERS=2GB
fi
export CHANCED_BENCH_OUT=$OUT CHANCED_BIN=${CHANCED_BIN:-build/chanced}
export CHANCED_BENCH_TOOLS=${CHANCED_BENCH_TOOLS:-build}
case "$CHANCED_BIN" in /*) ;; *) CHANCED_BIN=$ROOT/$CHANCED_BIN ;; esac
case "$CHANCED_BENCH_TOOLS" in /*) ;; *) CHANCED_BENCH_TOOLS=$ROOT/$CHANCED_BENCH_TOOLS ;; esac
for f in "$CHANCED_BIN" "$CHANCED_BENCH_TOOLS/claim_load" "$CHANCED_BENCH_TOOLS/logger_tool"; do
    [ -x "$f" ] || { echo "bench: $f is missing (make bench builds it)" >&2; exit 1; }
done
for c in pgbench redis-cli redis-benchmark; do
    command -v "$c" >/dev/null || { echo "bench: $c is missing (bash test/deps.sh)" >&2; exit 1; }
done
rm -rf "$OUT"
mkdir -p "$OUT/logs"

export CHANCED_TEST_DIR
CHANCED_TEST_DIR=$(mktemp -d /tmp/chanced-bench.XXXXXX)
# shellcheck source=test/lib/servers.sh
. test/lib/servers.sh
DRIVER=""
cleanup() {
    local rc=$?
    set +e # servers.sh is not written for errexit; a failing stop must not hide the result
    trap '' INT TERM
    if [ -n "$DRIVER" ]; then
        kill -TERM "$DRIVER" 2>/dev/null
        wait "$DRIVER" 2>/dev/null
    fi
    stop_all >/dev/null 2>&1
    # keep the servers' logs next to the results, drop their data
    (cd "$CHANCED_TEST_DIR" && find . -name '*.log' -type f -print0 2>/dev/null |
        while IFS= read -r -d '' f; do
            mkdir -p "$OUT/servers/$(dirname "$f")"
            cp "$f" "$OUT/servers/$f" 2>/dev/null
        done)
    rm -rf "$CHANCED_TEST_DIR"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

set +e
start_redis && start_postgres && start_rabbitmq && start_mongo
started=$?
set -e
[ "$started" = 0 ] || { echo "bench: could not start the servers" >&2; exit 1; }
[ -n "${CHANCED_TEST_MONGO_URL:-}" ] || { echo "bench: no MongoDB (nor its stand-in)" >&2; exit 1; }

# Tune PostgreSQL (ALTER SYSTEM, then a restart on the same port and data directory).
# servers.sh's own command-line settings (fsync, synchronous_commit, full_page_writes,
# max_connections) stay: they apply to pgbench and the gateway alike.
psql -X -q -v ON_ERROR_STOP=1 "$CHANCED_TEST_POSTGRES_ADMIN_URL" \
    -c "ALTER SYSTEM SET shared_buffers = '$SHARED_BUFFERS'" \
    -c "ALTER SYSTEM SET max_wal_size = '8GB'" \
    -c "ALTER SYSTEM SET checkpoint_timeout = '30min'" \
    -c "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'" >/dev/null
set +e
_ct_stop_one postgres && start_postgres
started=$?
set -e
[ "$started" = 0 ] || { echo "bench: PostgreSQL did not restart with the bench settings" >&2; exit 1; }
got=$(psql -X -Atq "$CHANCED_TEST_POSTGRES_ADMIN_URL" -c "SHOW shared_buffers")
echo "bench: PostgreSQL tuned (shared_buffers $got, pg_stat_statements loaded)"

/usr/bin/python3 test/bench/bench.py "$@" &
DRIVER=$!
set +e
wait "$DRIVER"
rc=$?
set -e
DRIVER=""
echo
cat "$OUT/results.md"
exit $rc
