#!/usr/bin/env bash
# The logger role's benchmark, in one run on this machine:
#  (a) the store's own bulk-insert rate: logger_tool inserts N audit documents straight into
#      MongoDB (insert_many of BATCH, unordered, journaled, the logger's indexes);
#      and the broker's own rate draining such a queue without storing (logger_tool drain);
#  (b) the logger draining a deep queue: N events are queued first, then the logger starts and
#      we time from its first delivery to the N-th stored event (its /metrics); target >= 80% of (a);
#  (c) end-to-end lag (event written -> queryable through log.query), p50/p99, at a steady
#      1,000 events/s: written into a chance stream (through the chance role's relay) when the
#      relay runs, else published straight to the queue (then only queue -> queryable).
# MongoDB is the test stand-in here unless mongod is on PATH
# (docs/architecture.md#mongodb-test-stand-in): its rate is what (b) is compared with, in the same
# run.
set -euo pipefail
[ -n "${LOGGER_BENCH_TRACE:-}" ] && trap 'echo "logger.sh: line $LINENO failed" >&2' ERR
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${CHANCED_BENCH_OUT:-$ROOT/build/bench}
N=${LOGGER_BENCH_EVENTS:-20000}
BATCH=${LOGGER_BENCH_BATCH:-500}
LAG_SECONDS=${LOGGER_BENCH_LAG_SECONDS:-10}
mkdir -p "$OUT"
[ -n "${CHANCED_BENCH_NOBUILD:-}" ] || make -s all
TOOL="$OUT/logger_tool"
# shellcheck disable=SC2046
cc -O2 -std=gnu11 -o "$TOOL" test/bench/logger_tool.c \
    $(pkg-config --cflags --libs libmongoc-1.0 libbson-1.0 librabbitmq)

export CHANCED_TEST_DIR=$(mktemp -d /tmp/chanced-bench.XXXXXX)
. test/lib/servers.sh
PIDS=()
cleanup() {
    set +e # servers.sh is not written for errexit
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    stop_all
    rm -rf "$CHANCED_TEST_DIR"
}
trap cleanup EXIT
# servers.sh is written for shells without errexit
set +e
start_rabbitmq >/dev/null && start_mongo >/dev/null && start_redis >/dev/null
started=$?
set -e
[ "$started" = 0 ] || { echo "logger.sh: could not start the servers" >&2; exit 1; }
MONGO_BASE=${CHANCED_TEST_MONGO_URL%%\?*}; MONGO_BASE=${MONGO_BASE%/*}
MONGO_OPTS="socketTimeoutMS=30000&serverSelectionTimeoutMS=5000"

# (a) the store alone
read -r STORE_LINE < <("$TOOL" store "$MONGO_BASE/bench_store?$MONGO_OPTS" "$N" "$BATCH")
STORE_RATE=${STORE_LINE##*docs_per_s=}
# the same starting state for (b): the stand-in keeps everything in one Python heap, and a
# heap that is 20,000 documents larger makes every later insert slower (garbage collection)
/usr/bin/python3 -c 'import sys, pymongo; pymongo.MongoClient(sys.argv[1]).drop_database("bench_store")' \
    "$MONGO_BASE/?$MONGO_OPTS"

# (b) the logger from a deep queue
Q=bench.events
"$TOOL" publish "$CHANCED_TEST_AMQP_URL" "$Q" "$N" 5 >/dev/null
# the broker's own delivery rate for such a queue, without a store behind it
"$TOOL" publish "$CHANCED_TEST_AMQP_URL" bench.drain "$N" 5 >/dev/null
read -r DRAIN_LINE < <("$TOOL" drain "$CHANCED_TEST_AMQP_URL" bench.drain "$N")
DRAIN_RATE=${DRAIN_LINE##*msgs_per_s=}
LPORT=$(free_port); HPORT=$(free_port)
build/chanced --role=logger --amqp_url="$CHANCED_TEST_AMQP_URL" --amqp_queue=$Q \
    --mongo_url="$MONGO_BASE/bench_logger?$MONGO_OPTS" --logger_listen=127.0.0.1:$LPORT \
    --logger_health_listen=127.0.0.1:$HPORT --insert_batch="$BATCH" --amqp_prefetch=$((BATCH * 4)) \
    --log_format=json >"$OUT/logger.log" 2>&1 &
PIDS+=($!)
LOGGER_RATE=$(/usr/bin/python3 - "$HPORT" "$N" <<'PY'
import sys, time, urllib.request
port, n = sys.argv[1], int(sys.argv[2])
def metric(name):
    try:
        text = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % port, timeout=5).read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(name):
            return float(line.split()[-1])
    return 0.0
deadline = time.time() + 900
t0 = None
while time.time() < deadline:
    if t0 is None and metric("chanced_logger_messages_received_total") > 0:
        t0 = time.time() - 0.005
    if metric('chanced_logger_events_stored_total{source="amqp"}') >= n:
        print("%.0f" % (n / (time.time() - t0)))
        sys.exit(0)
    # 2 cores: a tighter poll would take CPU from the logger, the broker and the store
    time.sleep(0.1 if t0 else 0.01)
sys.exit("the logger did not store %d events in time" % n)
PY
)
kill "${PIDS[0]}"; wait "${PIDS[0]}" || true; PIDS=()
RATIO=$(awk -v a="$LOGGER_RATE" -v b="$STORE_RATE" 'BEGIN { printf "%.0f", 100 * a / b }')

# (c) lag at a steady 1,000 events/s
CPORT=$(free_port); CHPORT=$(free_port); LPORT=$(free_port); HPORT=$(free_port)
Q=bench.lag
build/chanced --role=logger --amqp_url="$CHANCED_TEST_AMQP_URL" --amqp_queue=$Q \
    --mongo_url="$MONGO_BASE/bench_lag?$MONGO_OPTS" --logger_listen=127.0.0.1:$LPORT \
    --logger_health_listen=127.0.0.1:$HPORT --log_format=json >"$OUT/logger-lag.log" 2>&1 &
PIDS+=($!)
build/chanced --role=chance --redis_url="$CHANCED_TEST_REDIS_URL" --amqp_url="$CHANCED_TEST_AMQP_URL" \
    --amqp_queue=$Q --chance_listen=127.0.0.1:$CPORT --chance_health_listen=127.0.0.1:$CHPORT \
    --log_format=json >"$OUT/chance-lag.log" 2>&1 &
PIDS+=($!)
LAG=$(/usr/bin/python3 - "$CHANCED_TEST_REDIS_URL" "$CHANCED_TEST_AMQP_URL" "$Q" \
    "$MONGO_BASE/bench_lag?$MONGO_OPTS" "$LAG_SECONDS" <<'PY'
import json, multiprocessing, sys, time
import pika, pymongo, redis
rurl, aurl, queue, murl, secs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
r = redis.Redis.from_url(rurl)
events = pymongo.MongoClient(murl).get_default_database().events
def ev(i, ts):
    return {"_id": "lag:%d" % i, "ts": ts, "service": "chance", "type": "code.assigned",
            "actor": {"id": "u1", "username": "user1", "role": "user"},
            "subject": {"category": 1, "code": "LAGCODE%05d" % i}, "data": {"reward": 1},
            "message": "user user1 received code LAGCOD\u2026 (category 1, 1 Toman)"}
def stored(i):
    return events.find_one({"_id": "lag:%d" % i}, {"_id": 1}) is not None
# does the chance role relay? one probe event through its stream decides the path measured
time.sleep(2)
r.zadd("chance:categories", {"1": 1})
r.xadd("chance:{c1}:events", {"e": json.dumps(ev(-1, int(time.time() * 1000)))})
via = "queue"
for _ in range(50):
    if stored(-1):
        via = "stream"
        break
    time.sleep(0.1)
n = secs * 1000
def writer():
    # its own process: the poller below must not steal its time (one interpreter lock)
    if via == "queue":
        ch = pika.BlockingConnection(pika.URLParameters(aurl)).channel()
    start = time.time()
    for i in range(n):
        d = start + i / 1000.0 - time.time()
        if d > 0:
            time.sleep(d)
        e = ev(i, int(time.time() * 1000))
        if via == "stream":
            r.xadd("chance:{c1}:events", {"e": json.dumps(e)})
        else:
            ch.basic_publish("", queue, json.dumps({"pattern": {"cmd": "log.event"}, "data": e}),
                             pika.BasicProperties(delivery_mode=2))
w = multiprocessing.Process(target=writer)
w.start()
# events are written in order: wait for every 10th in turn (an O(1) lookup by _id, so the
# poller keeps up with the writer); its ts says when it was written
STEP = 10
lags, k = [], 0
deadline = time.time() + secs + 60
while k < n and time.time() < deadline:
    while k < n:
        doc = events.find_one({"_id": "lag:%d" % k}, {"ts": 1})
        if doc is None:
            break
        lags.append(int(time.time() * 1000) - doc["ts"])
        k += STEP
    time.sleep(0.001)
w.join()
lags.sort()
if not lags:
    print("none 0 %d 0 0" % n)
else:
    p = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))]
    print("%s %d %d %d %d" % (via, len(lags), n // STEP, p(0.50), p(0.99)))
PY
)
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null || true; done; PIDS=()
read -r LAG_VIA LAG_N LAG_TOTAL LAG_P50 LAG_P99 <<<"$LAG"

{
    echo "## logger"
    echo
    echo "| measure | value |"
    echo "|---|---|"
    echo "| store bulk insert, direct (${N} docs, batches of ${BATCH}, j:true) | ${STORE_RATE} docs/s |"
    echo "| broker alone: deep quorum queue drained, no store (${N} messages) | ${DRAIN_RATE} msgs/s |"
    echo "| logger from a deep queue (${N} events) | ${LOGGER_RATE} events/s |"
    echo "| logger / store | ${RATIO}% (target >= 80%) |"
    echo "| lag at 1,000 events/s, ${LAG_VIA:-n/a} -> queryable, p50 / p99 | ${LAG_P50:-?} ms / ${LAG_P99:-?} ms (${LAG_N:-0} of ${LAG_TOTAL:-0} sampled events seen) |"
    echo
    echo "Store: ${CHANCED_TEST_MONGO_KIND:-?} (the stand-in is a Python process; ratios, not absolute rates, are the point)."
    echo
} | tee -a "$OUT/results.md"
