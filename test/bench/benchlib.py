"""benchlib.py: what the benchmark suites of test/bench/bench.py share.

Processes started here are recorded in $CHANCED_TEST_DIR/pids ("name pid starttime", as
test/lib/servers.sh does), so the stop_all of test/bench/run.sh stops them if the driver dies;
they are stopped by PID, never by name.
"""

import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psycopg2

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TEST_DIR = os.environ.get("CHANCED_TEST_DIR", "")
SMOKE = os.environ.get("CHANCED_BENCH_SMOKE") == "1"
OUT = os.path.abspath(os.environ.get("CHANCED_BENCH_OUT") or os.path.join(ROOT, "build", "bench"))
BIN = os.path.abspath(os.environ.get("CHANCED_BIN") or os.path.join(ROOT, "build", "chanced"))
TOOLS = os.path.abspath(os.environ.get("CHANCED_BENCH_TOOLS") or os.path.join(ROOT, "build"))
HZ = os.sysconf("SC_CLK_TCK")


def log(msg):
    print("bench: %s" % msg, flush=True)


class BenchError(Exception):
    """A benchmark could not run (not: a figure missed its target)."""


# ---- ports and processes ----------------------------------------------------------------------

def free_port():
    """A loopback port that is free now and was not handed out before in this scratch dir."""
    used = set()
    path = os.path.join(TEST_DIR, "ports")
    if os.path.exists(path):
        used = set(open(path).read().split())
    for _ in range(20):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if str(port) not in used:
            with open(path, "a") as f:
                f.write("%d\n" % port)
            return port
    raise BenchError("no free port")


def proc_stat(pid):
    """The fields of /proc/PID/stat after "(comm)": [state, ppid, pgrp, ...], or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None


def record_pid(name, pid):
    st = proc_stat(pid)
    with open(os.path.join(TEST_DIR, "pids"), "a") as f:
        f.write("%s %d %s\n" % (name, pid, st[19] if st else 0))


class Daemon:
    """A process of ours: started in the background with its output in a log file."""

    def __init__(self, name, argv, logfile, env=None):
        self.name = name
        self.argv = argv
        self.logfile = logfile
        self.log = open(logfile, "ab")
        if env is None:  # the daemons' settings are their flags, nothing of ours
            env = {k: v for k, v in os.environ.items() if not k.startswith("CHANCED_")}
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                  stderr=subprocess.STDOUT, env=env)
        self.pid = self.p.pid
        record_pid(name, self.pid)

    def alive(self):
        return self.p.poll() is None

    def stop(self, timeout=15):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                log("%s (pid %d) still running %d s after TERM: KILL" % (self.name, self.pid,
                                                                          timeout))
                self.p.kill()
                self.p.wait()
        self.log.close()
        return self.p.returncode

    def tail(self, n=20):
        try:
            return "".join(open(self.logfile, errors="replace").readlines()[-n:])
        except OSError:
            return ""


def run_client(argv, timeout, env=None):
    """Runs a client (a load generator, pgbench) to completion; returns (exit code, stdout,
    stderr, its CPU seconds, wall seconds). The CPU is the RUSAGE_CHILDREN delta: the driver
    runs one client at a time and reaps nothing else meanwhile."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    record_pid(os.path.basename(argv[0]), p.pid)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise BenchError("%s did not finish in %d s" % (argv[0], timeout))
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return p.returncode, out.decode(errors="replace"), err.decode(errors="replace"), cpu, wall


# ---- HTTP -------------------------------------------------------------------------------------

def http(port, method, path, body=None, token=None, headers=None, timeout=60):
    """(status, decoded JSON or text, headers) of one request to 127.0.0.1:port."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data,
                                 method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw, hdrs = r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        status, raw, hdrs = e.code, e.read(), e.headers
    text = raw.decode(errors="replace")
    try:
        return status, json.loads(text), hdrs
    except ValueError:
        return status, text, hdrs


def wait_ready(port, what, timeout=60, daemon=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if http(port, "GET", "/readyz", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        if daemon is not None and not daemon.alive():
            raise BenchError("%s exited during start:\n%s" % (what, daemon.tail()))
        time.sleep(0.1)
    raise BenchError("%s not ready after %d s%s" % (what, timeout,
                                                    ":\n" + daemon.tail() if daemon else ""))


METRIC_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def metrics(port):
    """name -> sum over its series, from a /metrics page."""
    try:
        text = http(port, "GET", "/metrics", timeout=5)[1]
    except OSError:
        return {}
    out = {}
    for line in str(text).splitlines():
        m = METRIC_RE.match(line)
        if m and not line.startswith("#"):
            try:
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
            except ValueError:
                pass
    return out


# ---- CPU accounting from /proc ----------------------------------------------------------------

class ProcTable:
    """One scan of /proc: every process's parent, group and CPU time (own + reaped children)."""

    def __init__(self):
        self.ppid, self.pgrp, self.cpu = {}, {}, {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            st = proc_stat(int(d))
            if st is None or st[0] == "Z":
                continue
            pid = int(d)
            self.ppid[pid] = int(st[1])
            self.pgrp[pid] = int(st[2])
            # utime stime cutime cstime: a child's time moves into its parent's cutime when
            # it is reaped, so own + reaped children of every live member counts each tick once
            self.cpu[pid] = sum(int(x) for x in st[11:15]) / HZ
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        self.busy = (sum(v[:8]) - v[3] - v[4]) / HZ  # all but idle and iowait
        self.t = time.monotonic()

    def tree(self, root):
        out, todo = set(), [root]
        children = {}
        for p, pp in self.ppid.items():
            children.setdefault(pp, []).append(p)
        while todo:
            p = todo.pop()
            if p in self.cpu and p not in out:
                out.add(p)
                todo.extend(children.get(p, []))
        return out

    def group(self, pgid):
        return {p for p, g in self.pgrp.items() if g == pgid}

    def seconds(self, pids):
        return sum(self.cpu.get(p, 0.0) for p in pids)


def read_pidfile(name):
    """PID of a server test/lib/servers.sh started, if it is still the same process."""
    try:
        pid, start = open(os.path.join(TEST_DIR, name + ".pid")).read().split()[:2]
    except (OSError, ValueError):
        return None
    st = proc_stat(int(pid))
    return int(pid) if st and st[19] == start and st[0] != "Z" else None


class CpuMeter:
    """CPU seconds of named process groups between two snapshots.

    groups: name -> function(ProcTable) -> set of pids. Processes that exit between the
    snapshots are still counted when a member of the group reaped them (PostgreSQL backends:
    the postmaster)."""

    def __init__(self, groups):
        self.groups = groups

    def snap(self):
        t = ProcTable()
        return {"_busy": t.busy, "_t": t.t,
                **{name: t.seconds(f(t)) for name, f in self.groups.items()}}

    @staticmethod
    def delta(a, b):
        return {k: b[k] - a[k] for k in a if k in b}


def server_groups():
    """The servers' process groups, for CpuMeter."""
    pg, redis, mongo = read_pidfile("postgres"), read_pidfile("redis"), read_pidfile("mongo")
    rsh = read_pidfile("rabbitmq-sh")
    rabbit_pgid = (proc_stat(rsh) or [0, 0, 0])[2] if rsh else None
    return {
        "postgres": lambda t: t.tree(pg) if pg else set(),
        "redis": lambda t: t.tree(redis) if redis else set(),
        "rabbitmq": lambda t: t.group(int(rabbit_pgid)) if rabbit_pgid else set(),
        "mongo": lambda t: t.tree(mongo) if mongo else set(),
    }


# ---- PostgreSQL ------------------------------------------------------------------------------

def pg_admin(db="postgres"):
    url = os.environ["CHANCED_TEST_POSTGRES_ADMIN_URL"].rsplit("/", 1)[0] + "/" + db
    c = psycopg2.connect(url)
    c.autocommit = True
    return c


def pg_url(db, user="chanced"):
    base = os.environ["CHANCED_TEST_POSTGRES_URL"]
    hostport = base.split("@", 1)[1].split("/", 1)[0]
    return "postgresql://%s@%s/%s" % (user, hostport, db)


def pg_query(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall() if cur.description else None


# A backend publishes its table and WAL counters when it goes idle, but at most once a second;
# one that published less than a second before waits PGSTAT_IDLE_INTERVAL (10 s) to publish
# again. Counters read this long after the last activity are complete.
PGSTAT_SETTLE_S = 11.0


class PgSnap:
    """PostgreSQL's counters at one moment: pg_stat_statements of one role in one database and
    the WAL position (both current at once), and, read by counters() (complete only
    PGSTAT_SETTLE_S after the activity), pg_stat_wal and the rows written per table."""

    def __init__(self, admin, db, role):
        self.admin, self.db = admin, db
        self.stmts = {}
        for qid, query, calls, rows, wal, ms in pg_query(
                admin,
                "SELECT queryid, query, calls, rows, wal_bytes, total_exec_time"
                " FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
                " WHERE d.datname = %s AND s.userid = %s::regrole", (db, role)):
            self.stmts[qid] = (query, calls, rows, int(wal), ms)
        self.lsn = pg_query(admin, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")[0][0]

    def counters(self):
        self.wal_records, self.wal_fpi, self.wal_bytes = pg_query(
            self.admin, "SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal")[0]
        self.tables = {}
        dbconn = pg_admin(self.db)
        try:
            for name, ins, upd, dele, hot in pg_query(
                    dbconn, "SELECT CASE schemaname WHEN 'public' THEN relname"
                            " ELSE schemaname || '.' || relname END,"
                            " n_tup_ins, n_tup_upd, n_tup_del, n_tup_hot_upd"
                            " FROM pg_stat_user_tables"):
                self.tables[name] = (ins, upd, dele, hot)
        finally:
            dbconn.close()
        return self


def pg_delta(a, b):
    """What happened between two PgSnaps."""
    stmts = []
    for qid, (query, calls, rows, wal, ms) in b.stmts.items():
        q0 = a.stmts.get(qid, (query, 0, 0, 0, 0.0))
        if calls - q0[1] > 0:
            stmts.append({"query": " ".join(query.split()), "calls": calls - q0[1],
                          "rows": rows - q0[2], "wal_bytes": wal - q0[3],
                          "ms": ms - q0[4]})
    stmts.sort(key=lambda s: -s["calls"])
    tables = {}
    for name, v in b.tables.items():
        v0 = a.tables.get(name, (0, 0, 0, 0))
        d = [x - y for x, y in zip(v, v0)]
        if any(d):
            tables[name] = {"ins": d[0], "upd": d[1], "del": d[2], "hot": d[3]}
    return {"statements": stmts, "calls": sum(s["calls"] for s in stmts),
            "wal_lsn_bytes": int(b.lsn - a.lsn), "wal_records": b.wal_records - a.wal_records,
            "wal_fpi": b.wal_fpi - a.wal_fpi, "wal_stat_bytes": int(b.wal_bytes - a.wal_bytes),
            "tables": tables,
            "rows_written": sum(t["ins"] + t["upd"] + t["del"] for t in tables.values())}


# ---- figures ----------------------------------------------------------------------------------

def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(v, digits=None, unit=""):
    """v with thousands separators; digits None: none from 10 up, two below."""
    if v is None:
        return "n/a"
    if digits is None:
        digits = 2 if isinstance(v, float) and abs(v) < 10 and v != int(v) else 0
    return ("{:,.%df}" % digits).format(v) + unit


def md_table(headers, rows):
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return "\n".join(out) + "\n"


def runs_row(label, values, digits=None, unit="", extra=()):
    """A table row: label, each run's value, the median."""
    return [label] + [fmt(v, digits, unit) for v in values] + \
        ["**%s**" % fmt(median(values), digits, unit)] + list(extra)


def save_json(name, obj):
    os.makedirs(os.path.join(OUT, "raw"), exist_ok=True)
    with open(os.path.join(OUT, "raw", name + ".json"), "w") as f:
        json.dump(obj, f, indent=1, default=str)


def die(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)
