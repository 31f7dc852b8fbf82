#!/usr/bin/python3
"""bench.py: the suites of `make bench` (test/bench/README.md says what each one measures and
how to read it). test/bench/run.sh starts the servers, tunes PostgreSQL and runs this:

    bench.py [SUITE ...]        suites: claims generate scale logger chance (default: all)

Every figure is measured CHANCED_BENCH_RUNS times (3; 1 with CHANCED_BENCH_SMOKE=1) with its
reference in the same run, and reported per run and as the median. The results go to
$CHANCED_BENCH_OUT/results.md (build/bench), the raw figures to $CHANCED_BENCH_OUT/raw/.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time

import redis as redislib

from benchlib import (BIN, OUT, PGSTAT_SETTLE_S, ROOT, SMOKE, TEST_DIR, TOOLS, BenchError,
                      CpuMeter, Daemon, PgSnap, fmt, free_port, http, log, md_table, median, metrics, pg_admin,
                      pg_delta, pg_query, pg_url, run_client, runs_row, save_json, server_groups,
                      wait_ready)

sys.path.insert(0, os.path.join(ROOT, "test", "integration"))
from nest import NestClient  # noqa: E402


def param(name, full, smoke, kind=int):
    v = os.environ.get("CHANCED_BENCH_" + name.upper())
    return kind(v) if v else (smoke if SMOKE else full)


RUNS = param("runs", 3, 1)
SECONDS = param("seconds", 15, 2, float)  # each claims run, pgbench and HTTP alike
CLIENTS = param("clients", 64, 4)
USERS_PER_CLIENT = param("users_per_client", 4, 2)
CLAIM_CODES = param("claim_codes", 150000, 3000)  # per claim category (4 of them)
GEN_CODES = param("gen_codes", 1000000, 20000)
GEN_CLAIM_SECONDS = param("gen_claim_seconds", 10, 1, float)
LAG_RATE = param("lag_rate", 1000, 200)
LAG_SECONDS = param("lag_seconds", 10, 2, float)
SCALE_SECONDS = param("scale_seconds", 10, 1.5, float)
SCALE_MAX = param("scale_max", 3, 3)
CHANCE_REQUESTS = param("chance_requests", 20000, 300)
LOGGER_EVENTS = param("logger_events", 20000, 500)
WARMUP = param("warmup", 3, 0, float)
STORE_WRITERS = 4  # the logger's store_workers default: the store reference writes as many
LOG_LEVEL = os.environ.get("CHANCED_BENCH_LOG_LEVEL", "warn")  # of the roles
# Extra flags per role, to compare settings: CHANCED_BENCH_GATEWAY_FLAGS="--http_threads=8"
ROLE_FLAGS = {r: os.environ.get("CHANCED_BENCH_%s_FLAGS" % r.upper(), "").split()
              for r in ("gateway", "chance", "logger")}
GEN_CHUNK = 2000  # the chance role's generate_chunk default: the ceiling writes in its shape

PGBIN = os.environ.get("CHANCED_TEST_PG_BIN", "/usr/lib/postgresql/15/bin")
REDIS_URL = os.environ.get("CHANCED_TEST_REDIS_URL", "")
AMQP_URL = os.environ.get("CHANCED_TEST_AMQP_URL", "")
MONGO_URL = os.environ.get("CHANCED_TEST_MONGO_URL", "")
MONGO_BASE = MONGO_URL.split("?")[0].rsplit("/", 1)[0]
MONGO_OPTS = "socketTimeoutMS=30000&serverSelectionTimeoutMS=5000"
RPORT = int(REDIS_URL.rsplit(":", 1)[1].split("/")[0]) if REDIS_URL else 0
DB = "bench"
PGB_ROLE = "bench_pgbench"
CLAIM_LOAD = os.path.join(TOOLS, "claim_load")
LOGGER_TOOL = os.path.join(TOOLS, "logger_tool")
ACTOR = {"id": 1, "username": "bench", "role": "admin"}
RESULTS = os.path.join(OUT, "results.md")


def q(argv):
    return " ".join(shlex.quote(str(a)) for a in argv)


def section(text):
    with open(RESULTS, "a") as f:
        f.write(text + "\n")


# ---- the roles --------------------------------------------------------------------------------

class Stack:
    """n instances of every role on the shared servers: every gateway is given every chance and
    logger instance (endpoint lists; it spreads its calls over them per request). Chance
    instances share Redis (relay consumer groups), loggers share the queue."""

    def __init__(self, n, queue, mongo_db, gateways=True, logger_mongo_url=None,
                 chance_amqp_url=None, loggers=True):
        self.n, self.procs = n, []
        self.chance, self.logger, self.gateway = [], [], []
        self.gw_ports, self.gw_health, self.ch_ports, self.ch_health, self.lg_health = \
            [], [], [], [], []
        common = ["--log_format=json", "--log_level=" + LOG_LEVEL]
        mongo = logger_mongo_url or "%s/%s?%s" % (MONGO_BASE, mongo_db, MONGO_OPTS)
        for i in range(n):
            cp, ch = free_port(), free_port()
            d = self._start("chance-%d" % i, [
                "--role=chance", "--chance_listen=127.0.0.1:%d" % cp,
                "--chance_health_listen=127.0.0.1:%d" % ch, "--redis_url=" + REDIS_URL,
                "--amqp_url=" + (chance_amqp_url or AMQP_URL), "--amqp_queue=" + queue] + common +
                ROLE_FLAGS["chance"])
            self.chance.append(d)
            self.ch_ports.append(cp)
            self.ch_health.append(ch)
            if loggers:
                lp, lh = free_port(), free_port()
                d = self._start("logger-%d" % i, [
                    "--role=logger", "--logger_listen=127.0.0.1:%d" % lp,
                    "--logger_health_listen=127.0.0.1:%d" % lh, "--mongo_url=" + mongo,
                    "--amqp_url=" + AMQP_URL, "--amqp_queue=" + queue] + common +
                    ROLE_FLAGS["logger"])
                self.logger.append((d, lp))
                self.lg_health.append(lh)
        for d, port in zip(self.chance, self.ch_health):
            wait_ready(port, d.name, daemon=d)
        for (d, _), port in zip(self.logger, self.lg_health):
            wait_ready(port, d.name, daemon=d)
        if gateways:
            for i in range(n):
                gp, gh = free_port(), free_port()
                d = self._start("gateway-%d" % i, [
                    "--role=gateway", "--http_listen=127.0.0.1:%d" % gp,
                    "--gateway_health_listen=127.0.0.1:%d" % gh,
                    "--chance_addr=" + ",".join("127.0.0.1:%d" % p for p in self.ch_ports),
                    "--logger_addr=" + ",".join("127.0.0.1:%d" % p for _, p in self.logger),
                    "--postgres_url=" + pg_url(DB), "--claim_rate=1000000",
                    "--claim_burst=1000000", "--signup_rate_ip=1000000",
                    "--login_rate_ip=1000000", "--login_burst_ip=1000000",
                    # sign-ups come 16 at a time: let them queue for the argon2 slots
                    "--argon2_queue_ms=10000", "--argon2_queue_max=64",
                    "--cookie_secure=false",
                    # every load client is 127.0.0.1: lift the per-address connection cap
                    "--http_max_conns_per_addr=1000000"] + common + ROLE_FLAGS["gateway"])
                self.gateway.append(d)
                self.gw_ports.append(gp)
                self.gw_health.append(gh)
            for d, port in zip(self.gateway, self.gw_ports):
                wait_ready(port, d.name, daemon=d)

    def _start(self, name, args):
        d = Daemon(name, [BIN] + args, os.path.join(OUT, "logs", name + ".log"))
        self.procs.append(d)
        return d

    def restart_chance(self):
        """Stops every chance instance (a clean stop hands its generation leases back) and
        starts it again on the same ports: how a stalled generation driver is got going."""
        for i, d in enumerate(self.chance):
            stopped(d)
            self.procs.remove(d)
            self.chance[i] = self._start(d.name, d.argv[1:])
        for d, port in zip(self.chance, self.ch_health):
            wait_ready(port, d.name, daemon=d)

    def groups(self):
        def role(get):
            return lambda t: set().union(set(), *[t.tree(d.pid) for d in get()])
        out = {"gateway": role(lambda: self.gateway), "chance": role(lambda: self.chance),
               "logger": role(lambda: [d for d, _ in self.logger])}
        out.update(server_groups())
        return out

    def stop(self):
        for d in reversed(self.procs):
            stopped(d)
        self.procs = []


BAD_EXITS = []  # roles that did not exit 0 when stopped (a crash, a sanitizer report)


def stopped(d):
    rc = d.stop()
    if rc != 0:
        log("%s (pid %d) exited %s when stopped; its log: %s" % (d.name, d.pid, rc, d.logfile))
        BAD_EXITS.append("%s exit %s" % (d.name, rc))


def drain(stack, admin, timeout=180):
    """Waits until the audit pipeline is empty: no undelivered outbox row, no unrelayed entry in
    chance's streams, and the loggers' stored count unchanged for a second. Returns seconds."""
    t0 = time.time()
    r = redislib.Redis.from_url(REDIS_URL)
    last, since = None, None
    while time.time() - t0 < timeout:
        backlog = 0
        if stack.gateway:
            backlog = pg_query(admin, "SELECT count(*) FROM outbox WHERE delivered_at IS NULL")[0][0]
        xlen = sum(r.xlen(k) for k in r.scan_iter("chance:{*}:events", count=1000))
        stored = 0.0
        for port in stack.lg_health:
            m = metrics(port)
            stored += m.get("chanced_logger_events_stored_total", 0) + \
                m.get("chanced_logger_events_duplicate_total", 0)
        now = time.time()
        if backlog == 0 and xlen == 0 and stored == last:
            if now - since >= 1.0:
                return now - t0 - 1.0
        else:
            last, since = stored, now
        time.sleep(0.2)
    raise BenchError("the audit pipeline did not drain in %d s" % timeout)


# ---- data -------------------------------------------------------------------------------------

class Data:
    """The users (tokens in a file, ordered by user id), the admin, the claim categories."""

    def __init__(self, stack, users):
        port = stack.gw_ports[0]
        pw = "bench admin password"
        p = subprocess.run([BIN, "admin", "create-user", "--username", "benchadmin", "--admin",
                            "--if-missing", "--postgres_url=" + pg_url(DB), "--log_level=warn"],
                           input=pw.encode(), capture_output=True,
                           env={k: v for k, v in os.environ.items() if not k.startswith("CHANCED_")})
        if p.returncode != 0:
            raise BenchError("admin create-user: " + p.stderr.decode())
        st, b, _ = http(port, "POST", "/api/v1/auth/login",
                        {"username": "benchadmin", "password": pw})
        if st != 200:
            raise BenchError("admin login: %s %s" % (st, b))
        self.admin = b["token"]
        got, lock = [], threading.Lock()

        def signup(i):
            st, b, _ = http(port, "POST", "/api/v1/auth/signup",
                            {"username": "bench%05d" % i, "password": "bench password %d" % i})
            if st != 201:
                raise BenchError("signup: %s %s" % (st, b))
            with lock:
                got.append((int(b["user"]["id"]), b["token"]))

        for start in range(0, users, 16):
            ts = [threading.Thread(target=signup, args=(i,))
                  for i in range(start, min(users, start + 16))]
            [t.start() for t in ts]
            [t.join() for t in ts]
        if len(got) != users:
            raise BenchError("only %d of %d signups worked" % (len(got), users))
        got.sort()
        self.umin, self.umax = got[0][0], got[-1][0]
        if self.umax - self.umin + 1 != users:
            raise BenchError("user ids are not contiguous: %d..%d" % (self.umin, self.umax))
        self.tokens = os.path.join(TEST_DIR, "tokens")
        with open(self.tokens, "w") as f:
            f.write("".join(t + "\n" for _, t in got))
        self.cats = generate_http(stack, self.admin, 4, CLAIM_CODES)["categories"]


class GenStall(BenchError):
    """A batch stopped progressing with every category full (see STALLS)."""


# Batches whose driver stopped with every category full and the batch still "generating": the
# chance role's driver misses its last step when that step coincides with a lease renewal
# (roles/chance/generate.c, fill(): the final `inflight == 0` test counts the renewal in
# flight, and the renewal's reply does not step the driver again). Restarting the role hands
# the lease back and another driver closes the batch; a timed run that stalled is run again.
STALLS = []
STALL_S = 5.0


def all_full(batch):
    """Every category of the batch holds its codes (Redis says so): only the batch's closing
    steps are left, which take milliseconds."""
    r = redislib.Redis.from_url(REDIS_URL)
    for c in batch["categories"]:
        total, target = r.hmget("chance:{c%d}:meta" % c, "total", "target")
        if total is None or target is None or int(total) < int(target):
            return False
    return True


def wait_batch(fetch, batch, restart, timeout=900, redo=False):
    """Polls fetch(id) until the batch is no longer generating; on a stall (every category full,
    no progress reported for STALL_S) restarts the chance role(s) and waits on. Returns the final batch;
    with redo, a batch that stalled raises GenStall once it is ready (a timed run is void)."""
    deadline, seen, since, stalled = time.time() + timeout, None, time.time(), False
    while batch["state"] == "generating":
        if time.time() > deadline:
            raise BenchError("batch %d still generating after %d s: %s" % (batch["id"], timeout,
                                                                           batch))
        time.sleep(0.1)
        batch = fetch(batch["id"])
        key = (batch["codes_written"], batch["categories_done"])
        if key != seen:
            seen, since = key, time.time()
        elif time.time() - since > STALL_S and all_full(batch):
            STALLS.append({"batch": batch["id"], "total": batch["total"], "at": time.time()})
            log("batch %d stalled with every category full: restarting chance" % batch["id"])
            restart()
            stalled, since = True, time.time() + 30  # the new driver takes over within ~5 s
    if batch["state"] != "ready":
        raise BenchError("batch %d ended %s: %s" % (batch["id"], batch["state"], batch))
    if stalled and redo:
        raise GenStall("batch %d stalled" % batch["id"])
    return batch


def http_batch_fetch(port, token):
    def fetch(bid):
        deadline = time.time() + 30
        while True:
            st, b, _ = http(port, "GET", "/api/v1/admin/batches/%d" % bid, token=token)
            if st == 200:
                return b["batch"]
            if st != 503 or time.time() > deadline:  # 503: chance is being restarted
                raise BenchError("GET /admin/batches: %s %s" % (st, b))
            time.sleep(0.2)
    return fetch


def generate_http(stack, token, ncat, per, wait=True, redo=False, timeout=900):
    """POST /admin/batches; with wait, polls GET /admin/batches/{id} until the batch is ready."""
    port = stack.gw_ports[0]
    st, b, _ = http(port, "POST", "/api/v1/admin/batches",
                    {"categories": ncat, "codes_per_category": per, "reward_min": 1000,
                     "reward_max": 100000, "per_user_limit": 1000000}, token)
    if st != 202:
        raise BenchError("POST /admin/batches: %s %s" % (st, b))
    if not wait:
        return b["batch"]
    return wait_batch(http_batch_fetch(port, token), b["batch"], stack.restart_chance, timeout,
                      redo)


def generate_nest(stack, ncat, per, timeout=900):
    """chance.generate, then chance.batch until the batch is ready."""
    def call(cmd, data):
        with NestClient("127.0.0.1", stack.ch_ports[0], timeout=60) as c:
            return c.call(cmd, data)["batch"]
    batch = call("chance.generate", {"categories": ncat, "codes_per_category": per,
                                     "reward_min": 1000, "reward_max": 100000,
                                     "per_user_limit": 1000000, "actor": ACTOR})
    return wait_batch(lambda bid: call("chance.batch", {"id": bid}), batch,
                      stack.restart_chance, timeout)


def http_claims(stack, data, seconds, tag, ports=None):
    argv = [CLAIM_LOAD, "--http", "--ports", ",".join(map(str, ports or stack.gw_ports)),
            "--tokens", data.tokens, "--categories", ",".join(map(str, data.cats)),
            "--clients", CLIENTS, "--seconds", seconds, "--run", tag]
    rc, out, err, cpu, _ = run_client([str(a) for a in argv], timeout=seconds + 120)
    if rc != 0:
        raise BenchError("claim_load: exit %d: %s" % (rc, err))
    r = json.loads(out)
    r["client_cpu"] = cpu
    r["argv"] = argv
    if r["ok"] == 0:
        raise BenchError("no claim succeeded: %s" % out)
    return r


# ---- suite: claims (HTTP vs pgbench, and the work per claim) -----------------------------------

PGBENCH_SQL = r"""-- The plain credit transaction: the rows the gateway's credit statement writes for a claim
-- (roles/gateway/claims.c) in separate statements, without its idempotency guard and outbox row,
-- into copies of the gateway's tables (schema reference: see reference_tables()).
-- Client c credits the users umin + c + clients * k (k < per), like claim_load's client c.
\set uid :umin + :client_id + :clients * random(0, :per - 1)
\set reward random(1000, 100000)
\set cat random(:cmin, :cmax)
\set n random(1, 999999999999999)
BEGIN;
INSERT INTO reference.claims (claim_id, user_id, category, status, code, reward) VALUES (lpad('pgb' || :client_id::text || 'n' || :n::text, 64, '0'), :uid, :cat, 'credited', 'P' || :client_id::text || 'N' || :n::text, :reward);
UPDATE reference.wallets SET balance = balance + :reward, updated_at = now() WHERE user_id = :uid RETURNING balance \gset
INSERT INTO reference.ledger (user_id, claim_id, code, category, amount, balance_after, source) VALUES (:uid, lpad('pgb' || :client_id::text || 'n' || :n::text, 64, '0'), 'P' || :client_id::text || 'N' || :n::text, :cat, :reward, :balance, 'request');
COMMIT;
"""


def pgbench_argv(data, seconds):
    path = os.path.join(TEST_DIR, "credit.sql")
    with open(path, "w") as f:
        f.write(PGBENCH_SQL)
    return [os.path.join(PGBIN, "pgbench"), "-n", "-M", "prepared", "-c", str(CLIENTS), "-j", "2",
            "-T", str(int(round(seconds))), "-f", path, "-D", "umin=%d" % data.umin,
            "-D", "clients=%d" % CLIENTS, "-D", "per=%d" % USERS_PER_CLIENT,
            "-D", "cmin=%d" % min(data.cats), "-D", "cmax=%d" % max(data.cats),
            pg_url(DB, PGB_ROLE)]


def parse_pgbench(text):
    out = {}
    for line in text.splitlines():
        if line.startswith("number of transactions actually processed:"):
            out["txns"] = int(line.split(":")[1].split()[0].split("/")[0])
        elif line.startswith("latency average ="):
            out["lat_avg_ms"] = float(line.split("=")[1].split()[0])
        elif line.startswith("tps =") and "tps" not in out:
            out["tps"] = float(line.split("=")[1].split()[0])
        elif line.startswith("number of failed transactions:"):
            out["failed"] = int(line.split(":")[1].split()[0])
    if "tps" not in out or "txns" not in out:
        raise BenchError("pgbench output not understood:\n" + text)
    return out


class Window:
    """CPU, statements, WAL and rows written between start() and end() (after a drain).
    Statements, the WAL position and CPU are read at once; the table and pg_stat_wal counters
    PGSTAT_SETTLE_S later (nothing of the workload runs meanwhile; the gateway's idle polls
    write nothing)."""

    def __init__(self, meter, admin, role):
        self.meter, self.admin, self.role = meter, admin, role

    def start(self, settle):
        if settle:
            time.sleep(PGSTAT_SETTLE_S)
        self.a = PgSnap(self.admin, DB, self.role).counters()
        self.c0 = self.meter.snap()

    def end(self):
        self.c1 = self.meter.snap()
        b = PgSnap(self.admin, DB, self.role)
        time.sleep(PGSTAT_SETTLE_S)
        d = pg_delta(self.a, b.counters())
        d["cpu"] = CpuMeter.delta(self.c0, self.c1)
        return d


def per_op(w, ops, client_cpu):
    """The work of a window divided by its operations (CPU per 1,000)."""
    cpu = {k: v * 1000.0 / ops for k, v in w["cpu"].items() if not k.startswith("_")}
    cpu["load generator"] = client_cpu * 1000.0 / ops
    cpu["all of the above"] = sum(cpu.values())
    cpu["machine (every process)"] = w["cpu"]["_busy"] * 1000.0 / ops
    share = cpu["all of the above"] / cpu["machine (every process)"] \
        if cpu["machine (every process)"] > 0 else None
    return {"cpu_share": share, "statements": w["calls"] / ops, "rows_written": w["rows_written"] / ops,
            "wal_bytes": w["wal_lsn_bytes"] / ops, "wal_records": w["wal_records"] / ops,
            "wal_fpi": w["wal_fpi"] / ops, "cpu_per_1000": cpu,
            "by_statement": [dict(s, per_op=s["calls"] / ops, wal_per_op=s["wal_bytes"] / ops,
                                  ms_per_op=s["ms"] / ops) for s in w["statements"]],
            "by_table": {t: {k: v / ops for k, v in x.items()} for t, x in w["tables"].items()}}


def suite_claims(ctx):
    stack, data, admin = ctx["stack"], ctx["data"], ctx["admin_db"]
    stats = ctx["admin"]  # pg_stat_statements lives in the postgres database
    meter = CpuMeter(stack.groups())
    runs = []
    if WARMUP > 0:
        log("claims: warm-up (%.0f s each)" % WARMUP)
        run_client(pgbench_argv(data, WARMUP), timeout=WARMUP + 120)
        http_claims(stack, data, WARMUP, "warm%d" % time.time())
        drain(stack, admin)
    for i in range(RUNS):
        log("claims run %d/%d: pgbench %d clients, %.0f s" % (i + 1, RUNS, CLIENTS, SECONDS))
        win = Window(meter, stats, PGB_ROLE)
        win.start(settle=(i == 0))  # later runs start right after a settled end()
        argv = pgbench_argv(data, SECONDS)
        rc, out, err, cpu, _ = run_client(argv, timeout=SECONDS + 120)
        if rc != 0:
            raise BenchError("pgbench exit %d:\n%s%s" % (rc, out, err))
        pgb = parse_pgbench(out)
        pw = win.end()
        log("claims run %d/%d: pgbench %.0f tps; HTTP claims, %d clients" % (
            i + 1, RUNS, pgb["tps"], CLIENTS))
        win = Window(meter, stats, "chanced")
        win.start(settle=False)
        rep0 = repairs(stack)
        h = http_claims(stack, data, SECONDS, "c%dr%d" % (time.time(), i))
        h["drain_s"] = drain(stack, admin)
        h["repairs"] = repairs(stack) - rep0
        hw = win.end()
        log("claims run %d/%d: HTTP %.0f claims/s, p50 %.1f ms, p99 %.1f ms (drained in %.1f s)"
            % (i + 1, RUNS, h["per_second"], h["p50_us"] / 1e3, h["p99_us"] / 1e3,
               h["drain_s"]))
        runs.append({"pgbench": pgb, "pgbench_argv": argv, "http": h,
                     "pgbench_per_op": per_op(pw, pgb["txns"], cpu),
                     "http_per_op": per_op(hw, h["ok"], h["client_cpu"]),
                     "ratio": h["per_second"] / pgb["tps"]})
    save_json("claims", runs)
    report_claims(runs)
    bad = sum(r["http"]["repairs"] for r in runs)
    if bad:
        raise BenchError("the reconciler repaired %d codes in Redis during the HTTP runs: work "
                         "that is not the claims' ran in their window" % bad)


def repairs(stack):
    """Codes the gateways' reconcilers gave back to their ledger owner in Redis, so far."""
    return sum(metrics(port).get("chanced_gateway_redis_repairs_total", 0)
               for port in stack.gw_health)


def report_claims(runs):
    n = len(runs)
    hdr = ["figure"] + ["run %d" % (i + 1) for i in range(n)] + ["median"]
    rows = [
        runs_row("pgbench, plain credit transaction, %d clients (tps)" % CLIENTS,
                 [r["pgbench"]["tps"] for r in runs]),
        runs_row("POST /api/v1/claims, %d keep-alive clients (claims/s, 201 only)" % CLIENTS,
                 [r["http"]["per_second"] for r in runs]),
        runs_row("**HTTP claims / pgbench**", [100 * r["ratio"] for r in runs], 0, "%"),
        runs_row("HTTP p50 (ms)", [r["http"]["p50_us"] / 1e3 for r in runs], 1),
        runs_row("HTTP p99 (ms)", [r["http"]["p99_us"] / 1e3 for r in runs], 1),
        runs_row("HTTP max (ms)", [r["http"]["max_us"] / 1e3 for r in runs], 1),
        runs_row("pgbench latency average (ms)", [r["pgbench"]["lat_avg_ms"] for r in runs], 1),
        runs_row("HTTP answers other than 201", [r["http"]["responses"] - r["http"]["ok"]
                                                 for r in runs]),
        runs_row("audit pipeline drained after the HTTP run (s)",
                 [r["http"]["drain_s"] for r in runs], 1),
        runs_row("codes the reconciler repaired in Redis meanwhile (must be 0)",
                 [r["http"]["repairs"] for r in runs]),
        runs_row("our processes' share of the machine's busy CPU, pgbench window",
                 [100 * r["pgbench_per_op"]["cpu_share"] for r in runs], 0, "%"),
        runs_row("… HTTP window (the rest: other work on this shared machine)",
                 [100 * r["http_per_op"]["cpu_share"] for r in runs], 0, "%"),
    ]
    s = ["## 1. Claims over HTTP vs pgbench's plain credit transaction", "",
         "Same tuned PostgreSQL, same concurrency, same duration (%.0f s each), the HTTP run "
         "right after its pgbench reference. Targets (issue 13): ratio ≥ 70%% (aim 100%%), "
         "p99 ≤ 100 ms." % SECONDS, "", md_table(hdr, rows)]
    # work per operation, medians over the runs
    hp = [r["http_per_op"] for r in runs]
    pp = [r["pgbench_per_op"] for r in runs]

    def mrow(label, key, digits=1):
        a, b = median([x[key] for x in hp]), median([x[key] for x in pp])
        return [label, fmt(a, digits), fmt(b, digits),
                fmt(a / b, 1) + "×" if a is not None and b else "n/a"]

    rows = [mrow("PostgreSQL statements executed (pg_stat_statements calls)", "statements"),
            mrow("rows written (inserted + updated + deleted, pg_stat_user_tables)",
                 "rows_written"),
            mrow("WAL bytes (pg_current_wal_lsn delta)", "wal_bytes", 0),
            mrow("WAL records (pg_stat_wal)", "wal_records"),
            mrow("WAL full-page images (pg_stat_wal)", "wal_fpi", 2)]
    groups = list(hp[0]["cpu_per_1000"].keys())
    for g in groups:
        a = median([x["cpu_per_1000"][g] for x in hp])
        b = median([x["cpu_per_1000"][g] for x in pp])
        rows.append(["CPU-seconds per 1,000: %s" % g, fmt(a, 2), fmt(b, 2),
                     fmt(a / b, 1) + "×" if b and b > 0.005 else "—"])
    s += ["### Work per claim vs per pgbench transaction (median of %d runs)" % n, "",
          "Statements are those of the role `chanced` (the gateway) or `%s` (pgbench), from "
          "`pg_stat_statements`; rows and WAL are the whole database's (background work "
          "included). The HTTP window runs from the start of the load until the audit "
          "pipeline has drained (outbox delivered, chance's streams relayed, the loggers "
          "idle), so the relay, RabbitMQ, the logger and MongoDB's work for each claim counts. "
          "CPU: /proc/<pid>/stat deltas (utime + stime of every process of the group, plus "
          "what it reaped: exited PostgreSQL backends count in the postmaster). `machine` is "
          "/proc/stat busy time, other engineers' processes included." % PGB_ROLE, "",
          md_table(["per operation", "HTTP claim", "pgbench transaction", "claim / txn"], rows)]
    mid = sorted(range(n), key=lambda i: runs[i]["ratio"])[n // 2]
    for label, key in (("HTTP claim", "http_per_op"), ("pgbench transaction", "pgbench_per_op")):
        po = runs[mid][key]
        st = [[s_["query"][:110] + ("…" if len(s_["query"]) > 110 else ""),
               fmt(s_["per_op"], 3), fmt(s_["rows"] / s_["calls"], 2),
               fmt(s_["wal_per_op"], 0), fmt(s_["ms_per_op"], 3)]
              for s_ in po["by_statement"][:14]]
        s += ["### Statements per %s (run %d, the median ratio)" % (label, mid + 1), "",
              md_table(["statement", "calls / op", "rows / call", "WAL bytes / op",
                        "exec ms / op"], st)]
        tb = [[t, fmt(v["ins"], 3), fmt(v["upd"], 3), fmt(v["del"], 3), fmt(v["hot"], 3)]
              for t, v in sorted(po["by_table"].items())]
        s += ["Rows written per %s by table:" % label, "",
              md_table(["table", "inserted", "updated", "deleted", "of which HOT updates"], tb)]
    s += ["Commands (run %d):" % (mid + 1), "", "```",
          q(runs[mid]["pgbench_argv"]) + "   # script: PGBENCH_SQL in test/bench/bench.py",
          q(runs[mid]["http"]["argv"]), "```", ""]
    section("\n".join(s))


# ---- suite: generate (1M codes vs the bulk-load ceiling, claims while generating) -------------

ALPHABET = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ"


def ceiling_file(n):
    """The Redis writes of generating n codes in one category, as chance does them (per chunk of
    GEN_CHUNK: an HSETNX into the code's index shard for each code; then, in the load script,
    HSETNX of the code's record and SADD to the free set for each code, and two HINCRBY of the
    category's totals), as RESP for redis-cli --pipe, on bench:... keys of the same shape."""
    path = os.path.join(TEST_DIR, "ceiling.resp")
    rnd = os.urandom(12 * n)
    tr = bytes(ALPHABET[b % 31] for b in range(256))
    codes = rnd.translate(tr)

    def cmd(*a):
        return b"*%d\r\n" % len(a) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in a)

    with open(path, "wb") as f:
        for c0 in range(0, n, GEN_CHUNK):
            chunk = [codes[12 * i:12 * i + 12] for i in range(c0, min(n, c0 + GEN_CHUNK))]
            out = [cmd(b"HSETNX", b"bench:{i%s}:codes" % c[:2], c, b"9") for c in chunk]
            total = 0
            for j, c in enumerate(chunk):
                reward = 1000 + (c0 + j) * 7919 % 99001
                total += reward
                out.append(cmd(b"HSETNX", b"bench:{c9}:codes", c,
                               b'{"r":%d,"s":"available"}' % reward))
                out.append(cmd(b"SADD", b"bench:{c9}:free", c))
            out.append(cmd(b"HINCRBY", b"bench:{c9}:meta", b"total", b"%d" % len(chunk)))
            out.append(cmd(b"HINCRBY", b"bench:{c9}:meta", b"total_reward", b"%d" % total))
            f.write(b"".join(out))
    return path


def bulk_load(path):
    r = redislib.Redis.from_url(REDIS_URL)
    argv = ["redis-cli", "-p", str(RPORT), "--pipe"]
    t0 = time.monotonic()
    with open(path, "rb") as f:
        p = subprocess.run(argv, stdin=f, capture_output=True)
    secs = time.monotonic() - t0
    text = p.stdout.decode(errors="replace")
    if p.returncode != 0 or "errors: 0," not in text:
        raise BenchError("redis-cli --pipe: " + text + p.stderr.decode(errors="replace"))
    keys = list(r.scan_iter("bench:{*", count=1000))
    for i in range(0, len(keys), 500):
        r.unlink(*keys[i:i + 500])
    return secs, argv


def gen_seconds(batch):
    return (batch["finished_at"] - batch["created_at"]) / 1000.0


def generate_run(stack, data, admin, token, path, i):
    port = stack.gw_ports[0]
    log("generate run %d/%d: %d codes via POST /api/v1/admin/batches" % (i + 1, RUNS, GEN_CODES))
    drain(stack, admin)
    t0 = time.monotonic()
    batch = generate_http(stack, token, 1, GEN_CODES, redo=True)
    solo, solo_wall = gen_seconds(batch), time.monotonic() - t0
    bulk, bulk_argv = bulk_load(path)
    log("generate run %d/%d: %.1f s (ceiling %.1f s: %.0f%%)" % (i + 1, RUNS, solo, bulk,
                                                                 100 * bulk / solo))
    dur = max(1.0, min(GEN_CLAIM_SECONDS, 0.8 * solo))
    drain(stack, admin)
    base = http_claims(stack, data, dur, "gb%dr%d" % (time.time(), i))
    drain(stack, admin)
    b2 = generate_http(stack, token, 1, GEN_CODES, wait=False)
    during = http_claims(stack, data, dur, "gd%dr%d" % (time.time(), i))
    b2 = wait_batch(http_batch_fetch(port, token), b2, stack.restart_chance, redo=True)
    loaded = gen_seconds(b2)
    if b2["finished_at"] < b2["created_at"] + dur * 1000 * 0.9:
        log("generate run %d: the batch finished before the claims run did" % (i + 1))
    log("generate run %d/%d: claims %.0f/s alone, %.0f/s while generating (%.1f s)" % (
        i + 1, RUNS, base["per_second"], during["per_second"], loaded))
    return {"codes": GEN_CODES, "gen_s": solo, "gen_wall_s": solo_wall, "bulk_s": bulk,
            "ratio": bulk / solo, "claim_s": dur, "claims_alone": base, "claims_during": during,
            "gen_under_claims_s": loaded, "slowdown": 1 - during["per_second"] / base["per_second"],
            "bulk_argv": bulk_argv}


def suite_generate(ctx):
    stack, data, admin = ctx["stack"], ctx["data"], ctx["admin_db"]
    token = data.admin
    log("generate: writing the bulk-load file (%d codes)" % GEN_CODES)
    path = ceiling_file(GEN_CODES)
    runs, attempts = [], 0
    while len(runs) < RUNS:
        i = len(runs)
        attempts += 1
        if attempts > RUNS + 3:
            raise BenchError("generation stalled in %d runs" % len(STALLS))
        try:
            runs.append(generate_run(stack, data, admin, token, path, i))
        except GenStall:
            log("generate run %d: a batch stalled (chance restarted): run again" % (i + 1))
    save_json("generate", runs)
    n = len(runs)
    hdr = ["figure"] + ["run %d" % (i + 1) for i in range(n)] + ["median"]
    rows = [
        runs_row("generate %s codes via POST /api/v1/admin/batches (s, created_at → "
                 "finished_at)" % fmt(GEN_CODES), [r["gen_s"] for r in runs], 2),
        runs_row("… codes/s", [GEN_CODES / r["gen_s"] for r in runs]),
        runs_row("bulk-load ceiling: the same Redis writes by redis-cli --pipe (s)",
                 [r["bulk_s"] for r in runs], 2),
        runs_row("… codes/s", [GEN_CODES / r["bulk_s"] for r in runs]),
        runs_row("**generation / ceiling** (target ≥ 80%)", [100 * r["ratio"] for r in runs], 0,
                 "%"),
        runs_row("HTTP claims/s in other categories, no generation",
                 [r["claims_alone"]["per_second"] for r in runs]),
        runs_row("HTTP claims/s in other categories while %s codes generate" % fmt(GEN_CODES),
                 [r["claims_during"]["per_second"] for r in runs]),
        runs_row("**claims slowdown while generating** (target ≤ 30%)",
                 [100 * r["slowdown"] for r in runs], 0, "%"),
        runs_row("HTTP p99, no generation (ms)",
                 [r["claims_alone"]["p99_us"] / 1e3 for r in runs], 1),
        runs_row("… while generating", [r["claims_during"]["p99_us"] / 1e3 for r in runs], 1),
        runs_row("generation time while claims run (s)", [r["gen_under_claims_s"] for r in runs],
                 2),
    ]
    s = ["## 2. Generation: %s codes vs the bulk-load ceiling, and claims meanwhile" % fmt(GEN_CODES), "",
         "The ceiling replays, with `redis-cli --pipe`, the Redis writes generation makes for "
         "the same number of codes (per chunk of %d: HSETNX into the code's index shard for "
         "each code; HSETNX of its record into the category's codes hash and SADD to its free "
         "set for each code; two HINCRBY of the category's totals), on `bench:` keys of the "
         "same shape, removed afterwards. A claims run lasts %s s or 80%% of that run's generation "
         "time if that is shorter (so the generation covers it), %d keep-alive clients on the "
         "4 claim categories (the one being generated is not claimable until it is ready)."
         % (GEN_CHUNK, fmt(GEN_CLAIM_SECONDS), CLIENTS),
         "", md_table(hdr, rows),
         "Batches whose generation stalled during this benchmark (chance restarted; a timed "
         "run that stalled was run again, see test/bench/README.md): %d." % len(STALLS), "",
         "Commands (last run):", "", "```",
         "POST /api/v1/admin/batches {\"categories\": 1, \"codes_per_category\": %d, "
         "\"reward_min\": 1000, \"reward_max\": 100000, \"per_user_limit\": 1000000}; then GET "
         "/api/v1/admin/batches/{id} until ready" % GEN_CODES,
         q(runs[-1]["bulk_argv"]) + " < ceiling.resp   # written by ceiling_file() in "
         "test/bench/bench.py", q(runs[-1]["claims_during"]["argv"]), "```", ""]
    section("\n".join(s))


# ---- suite: scale (1, 2, 3 instances of every role) --------------------------------------------

def suite_scale(ctx):
    data, admin = ctx["data"], ctx["admin_db"]
    runs = {k: [] for k in range(1, SCALE_MAX + 1)}
    for i in range(RUNS):
        for k in range(1, SCALE_MAX + 1):
            log("scale run %d/%d: %d instance(s) of every role" % (i + 1, RUNS, k))
            st = Stack(k, ctx["queue"], DB)
            try:
                meter = CpuMeter(st.groups())
                drain(st, admin)
                c0 = meter.snap()
                h = http_claims(st, data, SCALE_SECONDS, "s%dk%dr%d" % (time.time(), k, i))
                h["drain_s"] = drain(st, admin)
                d = CpuMeter.delta(c0, meter.snap())
                h["cpu_per_1000"] = sum(v for g, v in d.items() if not g.startswith("_")) \
                    * 1000 / h["ok"]
                h["cpu_roles_per_1000"] = (d["gateway"] + d["chance"] + d["logger"]) \
                    * 1000 / h["ok"]
                log("scale run %d/%d: %d instance(s): %.0f claims/s, p99 %.1f ms" % (
                    i + 1, RUNS, k, h["per_second"], h["p99_us"] / 1e3))
                runs[k].append(h)
            finally:
                st.stop()
    save_json("scale", runs)
    one = median([h["per_second"] for h in runs[1]])
    rows = []
    for k, hs in runs.items():
        ps = median([h["per_second"] for h in hs])
        rows.append(["%d gateway + %d chance + %d logger" % (k, k, k)] +
                    [fmt(h["per_second"]) for h in hs] +
                    ["**%s**" % fmt(ps), fmt(100 * ps / one, 0, "%"),
                     fmt(median([h["p50_us"] / 1e3 for h in hs]), 1),
                     fmt(median([h["p99_us"] / 1e3 for h in hs]), 1),
                     fmt(median([h["cpu_roles_per_1000"] for h in hs]), 2),
                     fmt(median([h["cpu_per_1000"] for h in hs]), 2)])
    hdr = ["instances"] + ["run %d (claims/s)" % (i + 1) for i in range(RUNS)] + [
        "median claims/s", "vs 1 instance", "p50 ms", "p99 ms", "CPU-s / 1,000 claims (roles)",
        "CPU-s / 1,000 claims (roles + servers)"]
    s = ["## 3. Scale-out on this machine: 1 to %d instances of every role (issue 11)" % SCALE_MAX, "",
         "HTTP claims, %d keep-alive clients split round-robin over the gateways (client i → "
         "gateway i mod n), %.0f s per run; every gateway is given every chance and logger "
         "instance (endpoint lists, spread per request); all chance instances share Redis and "
         "relay through consumer groups, all loggers consume the one queue. Two cores: this "
         "shows the cost of more instances, not a speed-up." % (CLIENTS, SCALE_SECONDS), "",
         md_table(hdr, rows), "Command (3 instances, last run):", "", "```",
         q(runs[SCALE_MAX][-1]["argv"]), "```", ""]
    section("\n".join(s))


# ---- suite: logger (audit lag at 1,000 events/s; store and drain rates) -----------------------

def suite_logger(ctx):
    r = redislib.Redis.from_url(REDIS_URL)
    r.flushall()
    tap_port, tap_out = free_port(), os.path.join(TEST_DIR, "tap.log")
    mport = int(MONGO_BASE.rsplit(":", 1)[1])
    tap = Daemon("mongo_tap", [sys.executable, os.path.join(ROOT, "test", "bench",
                                                            "mongo_tap.py"),
                               "--port", str(tap_port), "--upstream", str(mport),
                               "--out", tap_out], os.path.join(OUT, "logs", "mongo_tap.log"))
    queue = "chanced.bench_lag"
    st = None
    lag_runs = []
    try:
        st = Stack(1, queue, "bench_lag", gateways=False,
                   logger_mongo_url="mongodb://127.0.0.1:%d/bench_lag?%s" % (tap_port,
                                                                            MONGO_OPTS))
        n = int(LAG_RATE * LAG_SECONDS)
        cat = generate_nest(st, 1, n * RUNS + LAG_RATE * 2 + 1000)["categories"][0]

        def load(tag, count):
            argv = [CLAIM_LOAD, "--port", st.ch_ports[0], "--category", cat, "--requests",
                    count, "--inflight", 512, "--conns", 8, "--rate", LAG_RATE, "--run", tag]
            rc, out, err, _, _ = run_client([str(a) for a in argv], timeout=count / LAG_RATE
                                            + 120)
            if rc != 0:
                raise BenchError("claim_load: %s" % err)
            return json.loads(out), argv

        if WARMUP > 0:
            load("lagwarm", int(LAG_RATE))
            drain(st, None)
        meter = CpuMeter(st.groups())
        for i in range(RUNS):
            tag = "lag%dr%d" % (time.time(), i)
            log("logger run %d/%d: %d claims at %d/s through chance, lag to MongoDB" % (
                i + 1, RUNS, n, LAG_RATE))
            drain(st, None)  # the previous run's events are all stored
            c0 = meter.snap()
            res, argv = load(tag, n)
            want = n - res["errors"]
            deadline, lags = time.time() + 120, []
            while time.time() < deadline:
                lags = []
                with open(tap_out) as f:
                    for line in f:
                        parts = line.split()
                        if len(parts) == 4 and parts[3].startswith(tag + "-") and \
                                parts[2] == "code.assigned":
                            lags.append(float(parts[0]) - int(parts[1]))
                if len(lags) >= want:
                    break
                time.sleep(0.5)
            d = CpuMeter.delta(c0, meter.snap())
            lags.sort()
            if not lags:
                raise BenchError("no event of run %s reached MongoDB" % tag)
            pick = lags.__getitem__
            rec = {"claims": res, "argv": argv, "seen": len(lags), "want": want,
                   "p50": pick(int(0.5 * len(lags))), "p99": pick(min(len(lags) - 1,
                                                                      int(0.99 * len(lags)))),
                   "max": lags[-1], "cpu": d}
            log("logger run %d/%d: lag p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d/%d events)" % (
                i + 1, RUNS, rec["p50"], rec["p99"], rec["max"], rec["seen"], want))
            lag_runs.append(rec)
    finally:
        if st:
            st.stop()
        tap.stop()
    thr_runs = logger_throughput()
    save_json("logger", {"lag": lag_runs, "throughput": thr_runs})
    n = len(lag_runs)
    hdr = ["figure"] + ["run %d" % (i + 1) for i in range(n)] + ["median"]
    rows = [runs_row("claims sent (claims/s achieved)", [x["claims"]["per_second"]
                                                         for x in lag_runs]),
            runs_row("events stored / claims answered", [100.0 * x["seen"] / x["want"]
                                                         for x in lag_runs], 1, "%"),
            runs_row("lag p50 (ms)", [x["p50"] for x in lag_runs], 1),
            runs_row("**lag p99 (ms)** (target ≤ 50 ms)", [x["p99"] for x in lag_runs], 1),
            runs_row("lag max (ms)", [x["max"] for x in lag_runs], 1)]
    s = ["## 4. Audit pipeline lag at %s events/s" % fmt(LAG_RATE), "",
         "`chance.claim` at a steady %s/s (open loop, %s s) straight to the chance role; each "
         "claim writes its `code.assigned` event with `ts` taken from Redis TIME inside the "
         "claim script (the operation). Its way: Redis stream → chance's relay → RabbitMQ "
         "(publisher confirms) → logger → MongoDB. The logger reaches MongoDB through "
         "`test/bench/mongo_tap.py`, a pass-through wire proxy that notes when the store "
         "acknowledges each insert (journaled) and which events it carried: lag = acknowledged "
         "− ts, for every event of the run, no sampling and no polling delay (the proxy's one "
         "loopback hop is included, so it errs high). MongoDB: %s." % (
             fmt(LAG_RATE), fmt(LAG_SECONDS), os.environ.get("CHANCED_TEST_MONGO_KIND", "?")),
         "", md_table(hdr, rows), "Command (last run):", "", "```", q(lag_runs[-1]["argv"]),
         "```", ""]
    m = len(thr_runs)
    hdr = ["figure"] + ["run %d" % (i + 1) for i in range(m)] + ["median"]
    rows = [runs_row("store alone: insert_many of %d audit documents in batches of 500, "
                     "j:true, %d writers (docs/s)" % (LOGGER_EVENTS, STORE_WRITERS),
                     [x["store"] for x in thr_runs]),
            runs_row("broker alone: the deep queue drained without a store (msgs/s)",
                     [x["drain"] for x in thr_runs]),
            runs_row("logger from a deep queue of %d events (events/s)" % LOGGER_EVENTS,
                     [x["logger"] for x in thr_runs]),
            runs_row("**logger / store** (target ≥ 80%)",
                     [100 * x["logger"] / x["store"] for x in thr_runs], 0, "%")]
    s += ["### Logger throughput vs its store", "", md_table(hdr, rows),
          "Commands (`%s`): `logger_tool store MONGO_URL N 500 4`, `logger_tool publish AMQP_URL "
          "QUEUE N`, `logger_tool drain AMQP_URL QUEUE N`; the logger runs with "
          "`--insert_batch=500 --amqp_prefetch=2000` and is timed from its first delivery to "
          "its N-th stored event (its /metrics)." % os.path.relpath(LOGGER_TOOL, ROOT), ""]
    section("\n".join(s))


def logger_throughput():
    from pymongo import MongoClient
    runs = []
    mc = MongoClient("%s/?%s" % (MONGO_BASE, MONGO_OPTS))
    for i in range(RUNS):
        log("logger throughput run %d/%d: %d events" % (i + 1, RUNS, LOGGER_EVENTS))
        tag = "%d%d" % (time.time(), i)
        rec = {}
        out = subprocess.run([LOGGER_TOOL, "store", "%s/bstore%s?%s" % (MONGO_BASE, tag,
                                                                        MONGO_OPTS),
                              str(LOGGER_EVENTS), "500", str(STORE_WRITERS)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise BenchError("logger_tool store: " + out.stderr)
        rec["store"] = float(out.stdout.split("docs_per_s=")[1])
        mc.drop_database("bstore" + tag)  # the stand-in is one Python heap: keep it small
        for q_ in ("bdrain" + tag, "bdeep" + tag):
            p = subprocess.run([LOGGER_TOOL, "publish", AMQP_URL, q_, str(LOGGER_EVENTS)],
                               capture_output=True, text=True)
            if p.returncode != 0:
                raise BenchError("logger_tool publish: " + p.stderr)
        p = subprocess.run([LOGGER_TOOL, "drain", AMQP_URL, "bdrain" + tag, str(LOGGER_EVENTS)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise BenchError("logger_tool drain: " + p.stderr)
        rec["drain"] = float(p.stdout.split("msgs_per_s=")[1])
        lp, lh = free_port(), free_port()
        d = Daemon("logger-deep", [BIN, "--role=logger", "--amqp_url=" + AMQP_URL,
                                   "--amqp_queue=bdeep" + tag,
                                   "--mongo_url=%s/bdeep%s?%s" % (MONGO_BASE, tag, MONGO_OPTS),
                                   "--logger_listen=127.0.0.1:%d" % lp,
                                   "--logger_health_listen=127.0.0.1:%d" % lh,
                                   "--insert_batch=500", "--amqp_prefetch=2000",
                                   "--log_format=json", "--log_level=" + LOG_LEVEL],
                   os.path.join(OUT, "logs", "logger-deep.log"))
        try:
            t0, deadline = None, time.time() + 600
            while time.time() < deadline:
                m = metrics(lh)
                if t0 is None and m.get("chanced_logger_messages_received_total", 0) > 0:
                    t0 = time.time() - 0.005
                if m.get("chanced_logger_events_stored_total", 0) >= LOGGER_EVENTS and t0:
                    rec["logger"] = LOGGER_EVENTS / (time.time() - t0)
                    break
                if not d.alive():
                    raise BenchError("logger exited:\n" + d.tail())
                time.sleep(0.1 if t0 else 0.01)
            else:
                raise BenchError("the logger did not store %d events" % LOGGER_EVENTS)
        finally:
            stopped(d)
        mc.drop_database("bdeep" + tag)
        log("logger throughput run %d/%d: store %.0f/s, broker %.0f/s, logger %.0f/s" % (
            i + 1, RUNS, rec["store"], rec["drain"], rec["logger"]))
        runs.append(rec)
    return runs


# ---- suite: chance (chance.claim through the role vs the same script by redis-benchmark) -----

def suite_chance(ctx):
    r = redislib.Redis.from_url(REDIS_URL)
    r.flushall()
    # the relay idle (a broker address nobody listens on): this isolates the request path; the
    # relay's cost is in the claims suite's CPU table
    dead = "amqp://guest:guest@127.0.0.1:%d/" % free_port()
    st = Stack(1, "chanced.bench_chance", "bench_chance", gateways=False, loggers=False,
               chance_amqp_url=dead)
    levels = (1, 16, 64)
    runs = []
    try:
        per = CHANCE_REQUESTS * len(levels) * RUNS + 1000
        b = generate_nest(st, 2, max(per, CHANCE_REQUESTS * 2 * RUNS + 1000))
        cat_a, cat_b = b["categories"]
        sha = r.script_load(subprocess.run([CLAIM_LOAD, "--print-claim-script"],
                                           capture_output=True, text=True).stdout)
        k = "chance:{c%d}" % cat_b
        keys = [k + ":" + w for w in ("meta", "free", "codes", "claims", "users", "events", "log",
                                      "byuser")]
        # the claim script's ARGV[5]: the oldest assignment-log entry to keep, as the role
        # passes it (assignment_log_retention_s, 7 days by default)
        minid = "%d-0" % (time.time() * 1000 - 7 * 86400 * 1000)
        for i in range(RUNS):
            rec = {}
            for lv in levels:
                argv = [CLAIM_LOAD, "--port", st.ch_ports[0], "--category", cat_a, "--requests",
                        CHANCE_REQUESTS, "--inflight", lv, "--run", "c%dr%di%d" % (time.time(),
                                                                                  i, lv)]
                rc, out, err, _, _ = run_client([str(a) for a in argv], timeout=600)
                if rc != 0:
                    raise BenchError("claim_load: " + err)
                rec[lv] = json.loads(out)
                rec["argv"] = argv
            for name, extra in (("ref", ["-c", "64"]), ("pipe", ["-c", "1", "-P", "64"])):
                argv = ["redis-benchmark", "-p", str(RPORT)] + extra + [
                    "-n", str(CHANCE_REQUESTS), "-r", "1000000000", "--csv", "EVALSHA", sha, "8"] \
                    + keys + ["rb%s%d__rand_int__" % (name, i), "__rand_int__", "benchuser",
                              str(cat_b), minid]
                p = subprocess.run(argv, capture_output=True, text=True)
                line = [x for x in p.stdout.splitlines() if x.startswith('"EVALSHA')]
                if p.returncode != 0 or not line:
                    raise BenchError("redis-benchmark: " + p.stdout + p.stderr)
                rec[name] = float(line[-1].split('","')[1].strip('"'))
                rec[name + "_argv"] = argv
            log("chance run %d/%d: %s; redis-benchmark %.0f/s, pipelined %.0f/s" % (
                i + 1, RUNS, ", ".join("%d in flight %.0f/s" % (lv, rec[lv]["per_second"])
                                       for lv in levels), rec["ref"], rec["pipe"]))
            errors = sum(rec[lv]["errors"] for lv in levels)
            if errors:
                raise BenchError("%d chance.claim errors" % errors)
            runs.append(rec)
    finally:
        st.stop()
    save_json("chance", runs)
    hdr = ["figure"] + ["run %d" % (i + 1) for i in range(len(runs))] + ["median"]
    rows = []
    for lv in levels:
        rows.append(runs_row("chance.claim through the role, %d in flight (claims/s)" % lv,
                             [x[lv]["per_second"] for x in runs]))
        rows.append(runs_row("… p50 (ms)", [x[lv]["p50_us"] / 1e3 for x in runs], 2))
        rows.append(runs_row("… p99 (ms)", [x[lv]["p99_us"] / 1e3 for x in runs], 2))
    rows.append(runs_row("redis-benchmark: the same claim script by EVALSHA, 64 clients (/s)",
                         [x["ref"] for x in runs]))
    rows.append(runs_row("**chance at 64 in flight / redis-benchmark** (target ≥ 70%)",
                         [100 * x[64]["per_second"] / x["ref"] for x in runs], 0, "%"))
    rows.append(runs_row("redis-benchmark, the script pipelined 64 deep on one connection (/s)",
                         [x["pipe"] for x in runs]))
    s = ["## 5. The chance role's claim path vs Redis running the same script", "",
         "The relay is idle here (its broker address is closed), so this isolates the request "
         "path: framing, JSON, one EVALSHA per claim.", "", md_table(hdr, rows),
         "Commands (last run):", "", "```", q(runs[-1]["argv"]), q(runs[-1]["ref_argv"]),
         q(runs[-1]["pipe_argv"]), "```", ""]
    section("\n".join(s))


# ---- main -------------------------------------------------------------------------------------

SUITES = ("claims", "generate", "scale", "logger", "chance")


def header():
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    admin = pg_admin()
    settings = dict(pg_query(admin, "SELECT name, current_setting(name) FROM pg_settings"
                                    " WHERE name IN ('shared_buffers', 'max_wal_size',"
                                    " 'checkpoint_timeout', 'shared_preload_libraries', 'fsync',"
                                    " 'synchronous_commit', 'full_page_writes',"
                                    " 'max_connections')"))
    admin.close()
    load = open("/proc/loadavg").read().split()[:3]
    return "\n".join([
        "# chanced benchmarks%s" % (" (SMOKE: tiny sizes, one run; the figures mean nothing)"
                                    if SMOKE else ""), "",
        "`make bench` at %s, commit %s, on %d CPUs (load average at the start %s). Every "
        "figure is measured %d time%s with its reference in the same run; **bold** is the "
        "median. How to read this: test/bench/README.md." % (
            time.strftime("%Y-%m-%d %H:%M:%S %Z"), commit, os.cpu_count(), " ".join(load), RUNS,
            "s" if RUNS > 1 else ""), "",
        "PostgreSQL (private, tuned for the bench): " + ", ".join(
            "%s=%s" % (k, settings.get(k, "?")) for k in (
                "shared_buffers", "max_wal_size", "checkpoint_timeout",
                "shared_preload_libraries", "fsync", "synchronous_commit", "full_page_writes",
                "max_connections")) +
        " (durability settings are the test servers' and the same for pgbench and "
        "the gateway). Redis, RabbitMQ and MongoDB (%s) are the test servers "
        "(test/lib/servers.sh)." % os.environ.get("CHANCED_TEST_MONGO_KIND", "?"), ""])


def setup_db():
    admin = pg_admin()
    pg_query(admin, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % DB)
    pg_query(admin, "CREATE DATABASE %s OWNER chanced" % DB)
    pg_query(admin, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    if not pg_query(admin, "SELECT 1 FROM pg_roles WHERE rolname = %s", (PGB_ROLE,)):
        pg_query(admin, "CREATE ROLE %s LOGIN" % PGB_ROLE)
    return admin


REF_SCHEMA = "reference"
REF_TABLES = ("claims", "ledger", "wallets")


def reference_tables():
    """pgbench's copies of the tables it writes, in schema `reference` of the same database:
    the same columns, checks, indexes and foreign keys to users (LIKE copies all but the foreign
    keys; each copy gets its own sequences), and the bench users' wallets. pgbench's rows must
    not be the gateway's: its reconciler checks every ledger row against Redis and would
    "repair" each pgbench credit (a chance.reassign and an audit event) during the HTTP run."""
    c = pg_admin(DB)
    try:
        pg_query(c, "DROP SCHEMA IF EXISTS %s CASCADE" % REF_SCHEMA)
        pg_query(c, "CREATE SCHEMA %s" % REF_SCHEMA)
        for t in REF_TABLES:
            pg_query(c, "CREATE TABLE {s}.{t} (LIKE public.{t} INCLUDING ALL)".format(
                s=REF_SCHEMA, t=t))
            pg_query(c, "ALTER TABLE {s}.{t} ADD FOREIGN KEY (user_id) REFERENCES public.users (id)"
                     .format(s=REF_SCHEMA, t=t))
        for t, col in (("claims", "seq"), ("ledger", "id")):
            pg_query(c, "CREATE SEQUENCE {s}.{t}_{c}_seq OWNED BY {s}.{t}.{c}".format(
                s=REF_SCHEMA, t=t, c=col))
            pg_query(c, "ALTER TABLE {s}.{t} ALTER {c} SET DEFAULT nextval('{s}.{t}_{c}_seq')"
                     .format(s=REF_SCHEMA, t=t, c=col))
        pg_query(c, "INSERT INTO %s.wallets SELECT * FROM public.wallets" % REF_SCHEMA)
        pg_query(c, "ANALYZE %s" % ", ".join("%s.%s" % (REF_SCHEMA, t) for t in REF_TABLES))
        pg_query(c, "GRANT USAGE ON SCHEMA %s TO %s" % (REF_SCHEMA, PGB_ROLE))
        pg_query(c, "GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA %s TO %s"
                 % (REF_SCHEMA, PGB_ROLE))
        pg_query(c, "GRANT USAGE ON ALL SEQUENCES IN SCHEMA %s TO %s" % (REF_SCHEMA, PGB_ROLE))
    finally:
        c.close()


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop roles
    chosen = sys.argv[1:] or list(SUITES)
    for s in chosen:
        if s not in SUITES:
            sys.exit("bench.py: unknown suite %r (suites: %s)" % (s, " ".join(SUITES)))
    os.makedirs(os.path.join(OUT, "logs"), exist_ok=True)
    with open(RESULTS, "w") as f:
        f.write(header() + "\n")
    t0 = time.time()
    ctx = {"queue": "chanced.bench"}
    failed = []
    if any(s in chosen for s in ("claims", "generate", "scale")):
        admin = ctx["admin"] = setup_db()
        redislib.Redis.from_url(REDIS_URL).flushall()
        ctx["admin_db"] = pg_admin(DB)
        stack = Stack(1, ctx["queue"], DB)
        try:
            log("setup: %d users, 4 claim categories of %d codes" % (CLIENTS * USERS_PER_CLIENT,
                                                                     CLAIM_CODES))
            ctx["stack"], ctx["data"] = stack, Data(stack, CLIENTS * USERS_PER_CLIENT)
            reference_tables()
            for s in ("claims", "generate"):
                if s in chosen:
                    try:
                        globals()["suite_" + s](ctx)
                    except BenchError as e:
                        log("%s FAILED: %s" % (s, e))
                        failed.append(s)
        finally:
            stack.stop()
        if "scale" in chosen:
            try:
                suite_scale(ctx)
            except BenchError as e:
                log("scale FAILED: %s" % e)
                failed.append("scale")
        admin.close()
    for s in ("logger", "chance"):
        if s in chosen:
            try:
                globals()["suite_" + s](ctx)
            except BenchError as e:
                log("%s FAILED: %s" % (s, e))
                failed.append(s)
    if BAD_EXITS:
        section("Roles that did not exit 0 when stopped: %s (see %s)." % (
            ", ".join(BAD_EXITS), os.path.join(OUT, "logs")))
    section("Total time: %.0f s.%s" % (time.time() - t0, " FAILED suites: " + " ".join(failed)
                                                             if failed else ""))
    if failed or (SMOKE and BAD_EXITS):
        sys.exit(1)


if __name__ == "__main__":
    main()
