#!/usr/bin/env bash
# The chance role's benchmark, in one run on this machine:
#  (a) chance.claim through the role at 1, 16 and 64 requests in flight (claim_load), against
#  (b) redis-benchmark running the same Lua claim script by EVALSHA on the same Redis, 64 clients;
#  (c) generation of 1,000,000 codes through chance.generate against a pipelined bulk load of the
#      same commands with redis-cli --pipe (the ceiling);
#  (d) RSS of the idle role.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${CHANCED_BENCH_OUT:-$ROOT/build/bench}
N=${CHANCE_BENCH_CLAIMS:-50000}
GEN=${CHANCE_BENCH_GENERATE:-1000000}
mkdir -p "$OUT"
[ -n "${CHANCED_BENCH_NOBUILD:-}" ] || make -s all build/claim_load
export CHANCED_TEST_DIR=$(mktemp -d /tmp/chanced-bench.XXXXXX)
. test/lib/servers.sh
trap 'stop_all; rm -rf "$CHANCED_TEST_DIR"' EXIT
start_redis >/dev/null
RPORT=${CHANCED_TEST_REDIS_URL##*:}; RPORT=${RPORT%%/*}
CPORT=$(free_port); HPORT=$(free_port)
build/chanced --role=chance --redis_url="$CHANCED_TEST_REDIS_URL" --chance_listen=127.0.0.1:$CPORT \
    --chance_health_listen=127.0.0.1:$HPORT --log_format=json >"$OUT/chance.log" 2>&1 &
CHPID=$!
echo "chance $CHPID" >>"$CHANCED_TEST_DIR/pids.extra"
trap 'kill $CHPID 2>/dev/null; wait $CHPID 2>/dev/null; stop_all; rm -rf "$CHANCED_TEST_DIR"' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$CPORT) 2>/dev/null && break; sleep 0.1; done
sleep 0.5
RSS_IDLE=$(awk '/VmRSS/ {print $2}' /proc/$CHPID/status)
ANON_IDLE=$(awk '/RssAnon/ {print $2}' /proc/$CHPID/status)

gen() { # categories codes_per_category -> prints "seconds category_ids"
    /usr/bin/python3 - "$CPORT" "$1" "$2" <<'PY'
import sys, time
sys.path.insert(0, "test/integration")
from nest import NestClient
c = NestClient("127.0.0.1", int(sys.argv[1]), timeout=600)
t = time.time()
r = c.call_stream("chance.generate", {"categories": int(sys.argv[2]),
    "codes_per_category": int(sys.argv[3]), "reward_min": 1000, "reward_max": 100000,
    "per_user_limit": 1000000, "actor": {"id": 1, "username": "bench"}}, timeout=600)
print("%.3f %s" % (time.time() - t, " ".join(map(str, r[-1]["batch"]["categories"]))))
PY
}

# Two categories large enough for every claim of (a) and (b).
read -r _ CATS <<<"$(gen 2 $((N * 4)))"
CAT_A=${CATS%% *}; CAT_B=${CATS##* }
declare -A RES
for k in 1 16 64; do
    RES[$k]=$(build/claim_load --port "$CPORT" --category "$CAT_A" --requests "$N" --inflight $k --run a$k)
    echo "claim_load inflight=$k ${RES[$k]}"
done
SHA=$(redis-cli -p "$RPORT" SCRIPT LOAD "$(build/claim_load --print-claim-script)")
K="chance:{c$CAT_B}"
REF=$(redis-benchmark -p "$RPORT" -c 64 -n "$N" -r 1000000000 --csv EVALSHA "$SHA" 7 "$K:meta" \
      "$K:free" "$K:claims" "$K:users" "$K:events" "$K:log" "$K:byuser" "rb__rand_int__" \
      "__rand_int__" benchuser "$K:code:" "$CAT_B" | tail -1)
REF_RPS=$(echo "$REF" | awk -F'","' '{print $2}' | tr -d '"')
echo "redis-benchmark EVALSHA claim: $REF_RPS req/s"
# The same script pipelined 64 deep on one connection: what Redis itself can do at most.
PIPE=$(redis-benchmark -p "$RPORT" -c 1 -P 64 -n "$N" -r 1000000000 --csv EVALSHA "$SHA" 7 "$K:meta" \
      "$K:free" "$K:claims" "$K:users" "$K:events" "$K:log" "$K:byuser" "rp__rand_int__" \
      "__rand_int__" benchuser "$K:code:" "$CAT_B" | tail -1)
PIPE_RPS=$(echo "$PIPE" | awk -F'","' '{print $2}' | tr -d '"')
echo "redis-benchmark EVALSHA claim, pipelined: $PIPE_RPS req/s"

# (c) generation vs the pipelined bulk-load ceiling of the same writes.
redis-cli -p "$RPORT" FLUSHALL >/dev/null
read -r GEN_S _ <<<"$(gen 1 "$GEN")"
redis-cli -p "$RPORT" FLUSHALL >/dev/null
/usr/bin/python3 - "$GEN" >"$CHANCED_TEST_DIR/bulk.resp" <<'PY'
import os, sys
n = int(sys.argv[1]); A = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"; out = sys.stdout.buffer
def cmd(*a):
    out.write(b"*%d\r\n" % len(a) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in a))
rnd = os.urandom(12 * n)
for i in range(n):
    code = "".join(A[b % 31] for b in rnd[12 * i:12 * i + 12]).encode()
    key = b"chance:{c9}:code:" + code
    cmd(b"HSETNX", b"chance:codes", code, b"9")
    cmd(b"HSET", key, b"code", code, b"category", b"9", b"reward", b"%d" % (1000 + i % 99000),
        b"status", b"available")
    cmd(b"SADD", b"chance:{c9}:free", code)
PY
T0=$(date +%s.%N)
redis-cli -p "$RPORT" --pipe <"$CHANCED_TEST_DIR/bulk.resp" >/dev/null
T1=$(date +%s.%N)
BULK_S=$(echo "$T1 - $T0" | bc -l)
RSS_AFTER=$(awk '/VmRSS/ {print $2}' /proc/$CHPID/status)

/usr/bin/python3 - "$OUT/results.md" "$REF_RPS" "$PIPE_RPS" "$GEN" "$GEN_S" "$BULK_S" "$RSS_IDLE" "$RSS_AFTER" "$ANON_IDLE" \
    "${RES[1]}" "${RES[16]}" "${RES[64]}" <<'PY'
import json, sys
out, ref, pipe, n, gen_s, bulk_s, rss_idle, rss_after, anon_idle = sys.argv[1:10]
runs = [json.loads(x) for x in sys.argv[10:]]
ref = float(ref); pipe = float(pipe); n = int(n); gen_s = float(gen_s); bulk_s = float(bulk_s)
lines = ["## chance (`make bench`, test/bench/chance.sh)", "",
         "| measure | value | reference (same run) | ratio | target |", "|---|---|---|---|---|"]
for r in runs:
    lines.append("| chance.claim, %d in flight | %.0f/s, p50 %.2f ms, p99 %.2f ms | redis-benchmark EVALSHA claim, 64 clients: %.0f/s | %.0f%% | %s |"
                 % (r["inflight"], r["per_second"], r["p50_us"] / 1000, r["p99_us"] / 1000, ref,
                    100 * r["per_second"] / ref, "≥ 70% at 64" if r["inflight"] == 64 else ""))
lines.append("| (ceiling) the claim script pipelined 64 deep by redis-benchmark | %.0f/s | | chance at 64 in flight = %.0f%% of it | |"
             % (pipe, 100 * runs[-1]["per_second"] / pipe))
lines.append("| generate %d codes | %.0f codes/s (%.1f s) | redis-cli --pipe of the same writes: %.0f codes/s | %.0f%% | ≥ 50%% |"
             % (n, n / gen_s, gen_s, n / bulk_s, 100 * bulk_s / gen_s))
lines.append("| RSS of the idle role | %.1f MB (private anonymous: %.1f MB; the rest is shared library pages of the one binary) | | | ≤ 10 MB |"
             % (int(rss_idle) / 1024, int(anon_idle) / 1024))
lines.append("| RSS after the benchmark | %.1f MB | | | |" % (int(rss_after) / 1024))
lines.append("")
open(out, "a").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
