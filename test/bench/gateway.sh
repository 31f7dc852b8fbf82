#!/usr/bin/env bash
# The gateway's benchmark, in one run on this machine (load generator, all three roles and the
# servers share it, which is the point of measuring ratios):
#  (a) POST /api/v1/claims over keep-alive HTTP by authenticated users (wrk), 16 and 64
#      connections, with p50/p99: bearer check, Idempotency-Key lookup, chance.claim, one credit
#      commit; against
#  (b) pgbench running the same credit statement (claims row + wallet + ledger row + outbox
#      event, one commit) on the same PostgreSQL at the same concurrency;
#  (c) GET /api/v1/me at 64 connections;
#  (d) the gateway's RSS under that load (and its peak).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${CHANCED_BENCH_OUT:-$ROOT/build/bench}
DUR=${GATEWAY_BENCH_SECONDS:-10}
NUSERS=${GATEWAY_BENCH_USERS:-256}
BIN=${CHANCED_BIN:-build/chanced}
mkdir -p "$OUT"
command -v wrk >/dev/null || { echo "gateway bench: wrk is missing (apt-get install wrk)" >&2; exit 1; }
[ -n "${CHANCED_BENCH_NOBUILD:-}" ] || make -s all
export CHANCED_TEST_DIR=$(mktemp -d /tmp/chanced-bench.XXXXXX)
. test/lib/servers.sh
PIDS=()
cleanup() {
    local rc=$?
    set +e # a failing step here must not turn a good run into a failed one
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    stop_all >/dev/null 2>&1
    rm -rf "$CHANCED_TEST_DIR"
    exit $rc
}
trap cleanup EXIT
start_redis >/dev/null && start_postgres >/dev/null && start_rabbitmq >/dev/null && start_mongo >/dev/null
PGBIN=${CHANCED_TEST_PG_BIN:-/usr/lib/postgresql/15/bin}

CP=$(free_port); CH=$(free_port); LP=$(free_port); LH=$(free_port); GP=$(free_port)
run() { # name args... : a role in the background, its log in $OUT
    local name=$1; shift
    "$BIN" "$@" --log_format=json --log_level=warn >"$OUT/gateway-bench-$name.log" 2>&1 &
    PIDS+=($!)
}
run chance --role=chance --chance_listen=127.0.0.1:$CP --chance_health_listen=127.0.0.1:$CH \
    --redis_url="$CHANCED_TEST_REDIS_URL" --amqp_url="$CHANCED_TEST_AMQP_URL"
run logger --role=logger --logger_listen=127.0.0.1:$LP --logger_health_listen=127.0.0.1:$LH \
    --mongo_url="$CHANCED_TEST_MONGO_URL" --amqp_url="$CHANCED_TEST_AMQP_URL"
run gateway --role=gateway --http_listen=127.0.0.1:$GP --chance_addr=127.0.0.1:$CP \
    --logger_addr=127.0.0.1:$LP --postgres_url="$CHANCED_TEST_POSTGRES_URL" \
    --http_threads=128 --pg_pool_size=32 --claim_rate=1000000 --claim_burst=1000000 \
    --signup_rate_ip=1000000 --login_rate_ip=1000000 --cookie_secure=false
GWPID=${PIDS[2]}
/usr/bin/python3 - "$GP" <<'PY' || { echo "gateway not ready" >&2; tail "$OUT"/gateway-bench-*.log >&2; exit 1; }
import sys, time, urllib.request
for _ in range(300):
    try:
        urllib.request.urlopen("http://127.0.0.1:%s/readyz" % sys.argv[1], timeout=2).read()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
PY

# Users, an admin, and enough codes for every claim of the run.
env -u CHANCED_TEST_POSTGRES_URL "$BIN" admin create-user --username benchadmin --admin \
    --postgres_url="$CHANCED_TEST_POSTGRES_URL" --log_level=warn <<<"bench admin password" >/dev/null
/usr/bin/python3 - "$GP" "$NUSERS" "$CHANCED_TEST_DIR" <<'PY'
import json, sys, threading, urllib.request
port, n, d = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def call(path, body, token=None):
    req = urllib.request.Request("http://127.0.0.1:%d/api/v1%s" % (port, path),
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())
admin = call("/auth/login", {"username": "benchadmin", "password": "bench admin password"})
batch = call("/admin/batches", {"categories": 4, "codes_per_category": 100000, "reward_min": 1000,
                                "reward_max": 100000, "per_user_limit": 1000000},
             admin["token"])["batch"]
tokens, ids = [None] * n, [None] * n
def signup(i):
    s = call("/auth/signup", {"username": "bench%04d" % i, "password": "bench password %d" % i})
    tokens[i], ids[i] = s["token"], s["user"]["id"]
for chunk in range(0, n, 16):
    ts = [threading.Thread(target=signup, args=(i,)) for i in range(chunk, min(n, chunk + 16))]
    [t.start() for t in ts]
    [t.join() for t in ts]
with open(d + "/tokens.lua", "w") as f:
    f.write("return {tokens = {%s}, categories = {%s}}\n" % (
        ",".join('"%s"' % t for t in tokens), ",".join(map(str, batch["categories"]))))
with open(d + "/users", "w") as f:
    f.write("%d %d\n" % (min(ids), max(ids)))
PY
read -r UMIN UMAX <"$CHANCED_TEST_DIR/users"
RSS_IDLE=$(awk '/VmRSS/ {print $2}' /proc/$GWPID/status) # after the signups: argon2 memory freed?

cat >"$CHANCED_TEST_DIR/claims.lua" <<'LUA'
-- POST /api/v1/claims as a different user on every request, each with a fresh Idempotency-Key.
local data = dofile(os.getenv("GW_BENCH_DIR") .. "/tokens.lua")
local run = os.getenv("GW_BENCH_RUN")
local n, counter = 0, 0
function setup(thread)
    n = n + 1
    thread:set("tid", n)
end
function request()
    counter = counter + 1
    local t = data.tokens[(counter * 31 + tid * 17) % #data.tokens + 1]
    local cat = data.categories[(counter + tid) % #data.categories + 1]
    return wrk.format("POST", "/api/v1/claims", {
        ["Authorization"] = "Bearer " .. t,
        ["Content-Type"] = "application/json",
        ["Idempotency-Key"] = run .. "-" .. tid .. "-" .. counter,
    }, '{"category":' .. cat .. '}')
end
LUA
cat >"$CHANCED_TEST_DIR/me.lua" <<'LUA'
local data = dofile(os.getenv("GW_BENCH_DIR") .. "/tokens.lua")
local counter = 0
function setup(thread) end
function request()
    counter = counter + 1
    return wrk.format("GET", "/api/v1/me",
                      {["Authorization"] = "Bearer " .. data.tokens[counter % #data.tokens + 1]})
end
LUA
# The gateway's credit statement (roles/gateway/claims.c), with a fresh claim id and code each
# time, and an audit event of the same size as the gateway's.
cat >"$CHANCED_TEST_DIR/credit.sql" <<SQL
\set uid random($UMIN, $UMAX)
\set reward random(1000, 100000)
\set cat random(1, 4)
WITH k AS (SELECT md5(random()::text || clock_timestamp()::text) AS id),
c AS (
  INSERT INTO claims (claim_id, user_id, category, status, code, reward)
  SELECT k.id, :uid, :cat, 'credited', 'PGB' || upper(substr(k.id, 1, 12)), :reward FROM k
  WHERE NOT EXISTS (SELECT 1 FROM ledger l, k WHERE l.claim_id = k.id
                    OR l.code = 'PGB' || upper(substr(k.id, 1, 12)))
  ON CONFLICT (claim_id) DO UPDATE SET status = 'credited', code = EXCLUDED.code,
    reward = EXCLUDED.reward, category = EXCLUDED.category, error = NULL, updated_at = now()
  RETURNING claim_id, code),
w AS (
  INSERT INTO wallets (user_id, balance) SELECT :uid, :reward FROM c
  ON CONFLICT (user_id) DO UPDATE SET balance = wallets.balance + EXCLUDED.balance,
    updated_at = now()
  RETURNING balance),
l AS (
  INSERT INTO ledger (user_id, claim_id, code, category, amount, balance_after, source)
  SELECT :uid, c.claim_id, c.code, :cat, :reward, w.balance, 'request' FROM c, w
  RETURNING id, claim_id, code, balance_after),
o AS (
  INSERT INTO outbox (event) SELECT '{"ts":' || (extract(epoch FROM now()) * 1000)::bigint ||
    ',"service":"gateway","type":"claim.credited","actor":{"id":"' || :uid ||
    '","username":"bench0000","role":"user"},"subject":{"category":' || :cat || ',"code":"' ||
    l.code || '","user_id":"' || :uid || '","username":"bench0000","claim_id":"' || l.claim_id ||
    '"},"data":{"reward":' || :reward || ',"source":"request"},"message":"bench0000 was credited ' ||
    :reward || ' Toman for a code of category ' || :cat || '"}' FROM l)
SELECT id, balance_after FROM l;
SQL

wrk_run() { # connections lua-script -> prints the wrk report
    GW_BENCH_DIR="$CHANCED_TEST_DIR" GW_BENCH_RUN="r$1$RANDOM" \
        wrk -t2 -c"$1" -d"${DUR}s" --latency -s "$2" "http://127.0.0.1:$GP" 2>&1
}
pgb_run() { # clients -> prints the pgbench report
    "$PGBIN/pgbench" -n -M prepared -c "$1" -j 2 -T "$DUR" -f "$CHANCED_TEST_DIR/credit.sql" \
        "$CHANCED_TEST_POSTGRES_URL" 2>&1
}
declare -A R
# Each HTTP run right after its pgbench reference, so both see the same machine.
for c in 16 64; do
    R[pgb$c]=$(pgb_run "$c")
    echo "pgbench $c clients:"; echo "${R[pgb$c]}" | tail -4
    R[claims$c]=$(wrk_run "$c" "$CHANCED_TEST_DIR/claims.lua")
    echo "$c connections, claims:"; echo "${R[claims$c]}"
    RSS_LOAD=$(awk '/VmRSS/ {print $2}' /proc/$GWPID/status)
done
R[me]=$(wrk_run 64 "$CHANCED_TEST_DIR/me.lua")
echo "GET /me:"; echo "${R[me]}"
RSS_PEAK=$(awk '/VmHWM/ {print $2}' /proc/$GWPID/status)
CHECK=$(psql -Atq "$CHANCED_TEST_POSTGRES_URL" -c "SELECT (SELECT sum(balance) FROM wallets) = (SELECT sum(amount) FROM ledger), (SELECT count(*) FROM ledger)")

/usr/bin/python3 - "$OUT/results.md" "$RSS_IDLE" "$RSS_LOAD" "$RSS_PEAK" "$CHECK" \
    "${R[claims16]}" "${R[claims64]}" "${R[me]}" "${R[pgb16]}" "${R[pgb64]}" <<'PY'
import re, sys
out, rss_idle, rss_load, rss_peak, check = sys.argv[1:6]
claims16, claims64, me, pgb16, pgb64 = sys.argv[6:11]

def wrk(text):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    def pct(p):
        m = re.search(r"\s%s%%\s+([\d.]+)(us|ms|s)\b" % p, text)
        v = float(m.group(1))
        return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errs = re.search(r"Socket errors:.*", text)
    return rps, pct(50), pct(99), int(bad.group(1)) if bad else 0, errs.group(0) if errs else ""

def pgb(text):
    tps = float(re.search(r"tps = ([\d.]+)", text).group(1))
    lat = float(re.search(r"latency average = ([\d.]+) ms", text).group(1))
    return tps, lat

lines = ["## gateway (`make bench`, test/bench/gateway.sh)", "",
         "| measure | value | reference (same run) | ratio | target |", "|---|---|---|---|---|"]
for c, text, ref in ((16, claims16, pgb16), (64, claims64, pgb64)):
    rps, p50, p99, bad, errs = wrk(text)
    tps, lat = pgb(ref)
    note = "" if not bad else " (%d non-2xx)" % bad
    lines.append("| POST /claims, %d keep-alive clients | %.0f/s, p50 %.2f ms, p99 %.2f ms%s | "
                 "pgbench, same credit statement, %d clients: %.0f tps (avg %.2f ms) | %.0f%% | %s |"
                 % (c, rps, p50, p99, note, c, tps, lat, 100 * rps / tps,
                    "≥ 50% at 64" if c == 64 else ""))
rps, p50, p99, bad, _ = wrk(me)
lines.append("| GET /me, 64 keep-alive clients | %.0f/s, p50 %.2f ms, p99 %.2f ms | | | |"
             % (rps, p50, p99))
lines.append("| gateway RSS after the signups / under claim load / peak | %.1f / %.1f / %.1f MB | | | ≤ 64 MB + argon2 in flight |"
             % (int(rss_idle) / 1024, int(rss_load) / 1024, int(rss_peak) / 1024))
ok, n = check.split("|")
lines.append("| after the run: Σ wallets == Σ ledger | %s (%s ledger rows) | | | true |"
             % ("true" if ok == "t" else "FALSE", n))
lines.append("")
open(out, "a").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
