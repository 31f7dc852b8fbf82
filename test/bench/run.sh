#!/usr/bin/env bash
# make bench: runs every test/bench/<name>.sh against private servers and collects the results in
# build/bench/results.md. Figures are ratios against a reference measured in the same run (this is
# a shared, noisy 2-core machine: absolute numbers move, ratios much less). Not a test: it fails
# only if a benchmark cannot run.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
export CHANCED_BENCH_OUT="$ROOT/build/bench"
mkdir -p "$CHANCED_BENCH_OUT"
: > "$CHANCED_BENCH_OUT/results.md"
status=0
for b in ${CHANCED_BENCHES:-chance gateway logger}; do
    script="test/bench/$b.sh"
    [ -f "$script" ] || continue
    echo "== bench: $b"
    if ! bash "$script"; then
        echo "bench $b FAILED" >&2
        status=1
    fi
done
echo
cat "$CHANCED_BENCH_OUT/results.md"
exit $status
