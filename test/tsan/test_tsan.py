"""ThreadSanitizer: one `chanced --role=all` built with -fsanitize=thread, under real load.

`make tsan` (and `make test`) export CHANCED_TSAN_BIN=build/tsan/chanced.  The daemon runs the
three roles in one process (one thread and event loop each, plus the gateway's HTTP workers and
the runtime's main thread) against the private test servers, with TSAN_OPTIONS sending every
report to a file of its own (log_path) and making any report turn the exit status into 66.  The
load crosses every thread boundary the process has:

  - concurrent sign-ups and logins (HTTP workers, the PostgreSQL pool, argon2 slots, sessions);
  - an admin batch (POST /api/v1/admin/batches, repeated with the same Idempotency-Key, then
    GET .../batches/{id} polled from several threads while the chance loop generates);
  - concurrent claims from many users, some sending one Idempotency-Key from several threads at
    once, some users sharing a key string (gateway workers -> chance over RPC -> Redis, the
    outbox, the reconciler; chance -> RabbitMQ -> logger -> MongoDB for the audit trail);
  - admin log queries (log.query, log.stats, the streamed CSV) while events arrive;
  - /metrics and /readyz polled on the three health ports all along (the shared metrics
    registry), /readyz and /livez on the API port;
  - SIGHUP twice mid-load: the log file renamed away and reopened, log_level changed to debug
    and back through the config file (main thread vs. every thread that logs);
  - a graceful SIGTERM with requests still arriving.

It then asserts what the load did (every claim answered consistently, ledger, Redis and the audit
trail agreeing), that the daemon exited 0 within its drain, and that TSan wrote no report.
Suppressions (test/tsan/tsan.supp) cover only third-party libraries; see that file.

The fixtures are test/integration/conftest.py's, loaded here under a module name of their own and
re-exported from this module.  A test/tsan/conftest.py would do the same but, collected in one
session with test/integration, it would take the module name `conftest` from the integration one
(pytest imports every conftest.py as `conftest`), and `from conftest import free_port` in
test_daemon.py, test_notify.py and test_make_run.py would then import it.
"""

import http.client
import importlib.util
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
INTEGRATION = ROOT / "test" / "integration"
if str(INTEGRATION) not in sys.path:
    sys.path.insert(0, str(INTEGRATION))  # its kits: gwclient, loggerkit, nest

from gwclient import GATEWAY_TEST_KEYS, Stack, pg_query, redis_codes, wait_for  # noqa: E402
from gwclient import wait_ready as wait_http_ready  # noqa: E402
from loggerkit import http_get, store  # noqa: E402
from loggerkit import wait_ready as wait_logger_ready  # noqa: E402


def _integration_conftest():
    spec = importlib.util.spec_from_file_location("chanced_tsan_integration_conftest",
                                                  INTEGRATION / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_it = _integration_conftest()
free_port = _it.free_port
# fixtures this test uses, and the ones they depend on
output_dir = _it.output_dir
test_output_dir = _it.test_output_dir
chanced_bin = _it.chanced_bin
redis_url = _it.redis_url
postgres_url = _it.postgres_url
mongo_url = _it.mongo_url
redis_client = _it.redis_client
fresh_postgres_url = _it.fresh_postgres_url
amqp_queue = _it.amqp_queue
chanced = _it.chanced

__all__ = ["store", "output_dir", "test_output_dir", "chanced_bin", "redis_url", "postgres_url",
           "mongo_url", "redis_client", "fresh_postgres_url", "amqp_queue", "chanced"]

SUPPRESSIONS = HERE / "tsan.supp"
STOP_TIMEOUT = 120.0  # SIGTERM to exit, under TSan on a loaded machine

CATEGORIES = 3
CODES = 30
PER_USER_LIMIT = 3
USERS = 16
DUP_THREADS = 3  # threads sending one user's same Idempotency-Key at once


def tsan_bin():
    value = os.environ.get("CHANCED_TSAN_BIN")
    if not value:
        pytest.skip("CHANCED_TSAN_BIN is not set: `make tsan` (or `make test`) builds "
                    "build/tsan/chanced and sets it")
    path = Path(value)
    if not path.is_absolute():
        path = ROOT / path
    assert os.access(path, os.X_OK), "CHANCED_TSAN_BIN=%s is not an executable" % value
    return str(path)


def tsan_options(report_prefix):
    opts = ["log_path=%s" % report_prefix, "exitcode=66", "history_size=4",
            "second_deadlock_stack=1", "halt_on_error=0"]
    if SUPPRESSIONS.exists():
        opts.append("suppressions=%s" % SUPPRESSIONS)
    return ":".join(opts)


def tsan_reports(report_prefix):
    """The files TSan wrote (log_path gets a .<pid> suffix), with their text."""
    d = report_prefix.parent
    out = {}
    for p in sorted(d.glob(report_prefix.name + "*")):
        out[p.name] = p.read_text(errors="replace")
    return out


class AllStack(Stack):
    """gwclient.Stack's helpers (signup, login, admin, generate) over one --role=all process."""

    def __init__(self, daemon, binary, postgres_url):  # not Stack's: that starts 3 processes
        self.chanced = None
        self.bin = binary
        self.postgres_url = postgres_url
        self.chance = self.logger = self.gateway = daemon
        self.port = daemon.port
        self._admin = None
        self._n = 0


class Pollers:
    """Threads polling /metrics, /readyz and /livez on every port until stopped.  Answers are
    recorded per (addr, path) apart from those after `draining` was set (SIGTERM sent), when
    refusals and cut connections are expected."""

    def __init__(self, addrs, n=2, api_addr=None):
        self.addrs = addrs
        self.api_addr = api_addr  # the public port: no /metrics there (the health port has it)
        self.stop_flag = threading.Event()
        self.draining = threading.Event()
        self.seen = {}  # (addr, path) -> {status: count}, before the SIGTERM
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(n)]

    def _run(self, i):
        paths = ["/metrics", "/readyz", "/livez"]
        k = i
        while not self.stop_flag.is_set():
            addr = self.addrs[k % len(self.addrs)]
            path = paths[(k // len(self.addrs)) % len(paths)]
            k += 1
            if addr == self.api_addr and path == "/metrics":
                path = "/livez"
            try:
                status, body = http_get(addr, path, timeout=30)
            except Exception as e:  # noqa: B902 - a cut answer, recorded like a status
                status, body = "%s: %s" % (type(e).__name__, e), ""
            if path == "/metrics" and status == 200 and "chanced_build_info" not in body:
                status = "metrics without chanced_build_info: %r" % body[:200]
            if self.draining.is_set():
                continue
            with self.lock:
                per = self.seen.setdefault((addr, path), {})
                per[status] = per.get(status, 0) + 1
            time.sleep(0.02)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=60)


def run_threads(fn, items, width):
    """fn(item) on `width` threads at most; re-raises the first failure."""
    errors = []
    sem = threading.Semaphore(width)

    def wrap(item):
        with sem:
            try:
                fn(item)
            except BaseException as e:  # noqa: B902 - re-raised below
                errors.append((item, e))
    threads = [threading.Thread(target=wrap, args=(it,)) for it in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "a load thread is stuck"
    if errors:
        raise errors[0][1]


def write_conf(path, level, log_file):
    path.write_text("# test_tsan.py\nlog_level = %s\nlog_file = %s\n" % (level, log_file))


def test_role_all_under_load_is_race_free(chanced, store, fresh_postgres_url, redis_client,
                                          test_output_dir, tmp_path):
    binary = tsan_bin()
    reports = test_output_dir / "tsan-report"
    conf = tmp_path / "chanced.conf"
    log_file = test_output_dir / "all-daemon.log"
    write_conf(conf, "info", log_file)
    keys = dict(GATEWAY_TEST_KEYS)
    keys.update(rpc_timeout_ms=20000, logger_timeout_ms=20000, http_threads=32,
                pg_pool_size=8, reconcile_grace_ms=2000, shutdown_timeout_ms=60000)
    chance_addr = "127.0.0.1:%d" % free_port()
    logger_addr = "127.0.0.1:%d" % free_port()
    d = chanced("all", binary=binary, args=["--config=%s" % conf], start_timeout=120,
                env={"TSAN_OPTIONS": tsan_options(reports)},
                postgres_url=fresh_postgres_url, mongo_url=store[0],
                chance_listen=chance_addr, chance_addr=chance_addr,
                logger_listen=logger_addr, logger_addr=logger_addr, **keys)
    wait_http_ready(d.port, timeout=120)
    wait_logger_ready(d, timeout=120)
    s = AllStack(d, binary, fresh_postgres_url)
    addrs = [d.addr(k) for k in ("http_listen", "gateway_health_listen", "chance_health_listen",
                                 "logger_health_listen")]

    with Pollers(addrs, api_addr=d.addr("http_listen")) as pollers:
        admin = s.admin()

        # --- a batch generating while users sign up and log in -------------------------------
        body = {"categories": CATEGORIES, "codes_per_category": CODES, "reward_min": 1000,
                "reward_max": 100000, "per_user_limit": PER_USER_LIMIT}
        r = admin.post("/admin/batches", body, headers={"Idempotency-Key": "tsan-batch"})
        assert r.status == 202, r
        batch_id = r.json["batch"]["id"]

        users = [None] * USERS
        passwords = ["pw of user %d!" % i for i in range(USERS)]
        names = ["tsan%02d_%s" % (i, os.urandom(2).hex()) for i in range(USERS)]

        def signup(i):
            users[i] = s.signup(names[i], passwords[i])

        batches = []

        def poll_batch(_):
            again = admin.post("/admin/batches", body, headers={"Idempotency-Key": "tsan-batch"})
            assert again.status == 202 and again.json["batch"]["id"] == batch_id, again
            deadline = time.monotonic() + 300
            while True:
                r = admin.get("/admin/batches/%d" % batch_id)
                assert r.status == 200, r
                if r.json["batch"]["state"] != "generating":
                    batches.append(r.json["batch"])
                    return
                assert time.monotonic() < deadline, r
                time.sleep(0.05)

        run_threads(lambda job: job[0](job[1]),
                    [(signup, i) for i in range(USERS)] + [(poll_batch, j) for j in range(3)],
                    width=8)
        assert {b["state"] for b in batches} == {"ready"}, batches
        cats = batches[0]["categories"]
        assert len(cats) == CATEGORIES

        def login(i):
            c = s.login(names[i], passwords[i])
            assert c.id == users[i].id
            users[i] = c if i % 2 else users[i]  # half go on with the new session

        run_threads(login, range(USERS), width=8)

        # --- claims, log queries and two SIGHUPs at once -------------------------------------
        results = []  # (user index, key, category, status, json)
        rlock = threading.Lock()

        def claim(u, key, cat):
            r = users[u].claim(cat, key=key, timeout=120)
            with rlock:
                results.append((u, key, cat, r.status, r.json))
            return r

        go = threading.Barrier(USERS * DUP_THREADS)

        def dup_claim(job):
            u, _t = job
            go.wait(timeout=120)
            r = claim(u, "dup", cats[u % CATEGORIES])
            assert r.status in (201, 202, 409), r

        def claimer(u):
            for cat in cats[u % CATEGORIES:] + cats[:u % CATEGORIES]:
                for n in range(PER_USER_LIMIT + 1):
                    key = "shared-%d-%d" % (cat, n)  # the same strings for every user
                    r = claim(u, key, cat)
                    if r.status == 409:
                        assert r.code in ("user_limit_reached", "category_exhausted"), r
                        break
                    assert r.status in (201, 202), r

        log_pages = []

        def log_queries(i):
            for _ in range(6):
                now = int(time.time() * 1000)
                path = ["/admin/logs?limit=50",
                        "/admin/logs/stats?bucket=hour&from=%d&to=%d" % (now - 3600000,
                                                                         now + 3600000),
                        "/admin/logs.csv?type=code.assigned"][i % 3]
                r = admin.get(path, timeout=120)
                assert r.status == 200, r
                log_pages.append(r)

        def sighups(_):
            time.sleep(1.0)
            (log_file.parent / "all-daemon.log.1").unlink(missing_ok=True)
            os.rename(log_file, log_file.parent / "all-daemon.log.1")
            write_conf(conf, "debug", log_file)
            d.kill(signal.SIGHUP, wait=False)
            wait_for(lambda: log_file.exists() and re.search(
                r'"event":"reloaded","fields":"log_level=debug', log_file.read_text()),
                timeout=60, what="the reload to debug in the reopened log file")
            time.sleep(1.0)
            write_conf(conf, "info", log_file)
            d.kill(signal.SIGHUP, wait=False)
            wait_for(lambda: re.search(r'"event":"reloaded","fields":"log_level=info',
                                       log_file.read_text()),
                     timeout=60, what="the reload back to info")

        jobs = ([(dup_claim, (u, t)) for u in range(USERS) for t in range(DUP_THREADS)] +
                [(claimer, u) for u in range(USERS)] + [(log_queries, i) for i in range(6)] +
                [(sighups, None)])
        run_threads(lambda job: job[0](job[1]), jobs, width=len(jobs))

        # --- what the load did ----------------------------------------------------------------
        by_claim = {}
        for u, key, cat, status, j in results:
            if status in (201, 202):
                assert j["category"] == cat, j
                by_claim.setdefault(j["claim_id"], []).append((u, key, status, j))
        # One user's key is one claim; the same key string of two users is two claims.
        for u in range(USERS):
            dup = {j["claim_id"] for uu, key, _c, st, j in results
                   if uu == u and key == "dup" and st in (201, 202)}
            assert len(dup) <= 1, (u, dup)
        for cid, answers in by_claim.items():
            assert len({(u, key) for u, key, _st, _j in answers}) == 1, answers
            codes = {j["code"] for _u, _k, st, j in answers if st == 201}
            assert len(codes) <= 1, answers
        claimed = len(by_claim)
        assert 0 < claimed <= CATEGORIES * CODES
        # Every claim credited exactly once (a 202 is finished by the reconciler).
        wait_for(lambda: pg_query(fresh_postgres_url, "SELECT count(*) FROM ledger")[0][0]
                 == claimed, timeout=120, what="%d credits" % claimed)
        ledger = pg_query(fresh_postgres_url, "SELECT claim_id, code FROM ledger")
        assert {row[0] for row in ledger} == set(by_claim)
        assigned = {c for c, h in redis_codes(redis_client).items()
                    if h.get("status") == "assigned"}
        assert assigned == {row[1] for row in ledger}
        # The audit trail reached the logger: one code.assigned event per claim.
        wait_for(lambda: len(admin.get("/admin/logs?type=code.assigned&limit=1000").json
                             ["items"]) == claimed,
                 timeout=120, what="%d code.assigned events in the logger" % claimed)
        assert log_pages and all(p.status == 200 for p in log_pages)

        # --- SIGTERM while requests still arrive ----------------------------------------------
        stopping = threading.Event()

        def late_traffic(u):
            while not stopping.is_set():
                try:
                    users[u].get("/me", timeout=30)
                except (OSError, http.client.HTTPException):
                    return  # the listener closed or the connection was cut: the drain
                time.sleep(0.01)

        late = [threading.Thread(target=late_traffic, args=(u,), daemon=True) for u in range(4)]
        for t in late:
            t.start()
        time.sleep(0.5)
        pollers.draining.set()
        rc = d.stop(timeout=STOP_TIMEOUT)
        stopping.set()
        for t in late:
            t.join(timeout=60)

    assert rc == 0, "chanced --role=all exited %s after SIGTERM" % rc
    for (addr, path), statuses in pollers.seen.items():
        assert set(statuses) <= {200, 503}, (addr, path, statuses)
        if path in ("/metrics", "/livez"):
            assert statuses.get(200), (addr, path, statuses)
    found = tsan_reports(reports)
    assert not found, "ThreadSanitizer reports:\n" + "\n".join(
        "==== %s\n%s" % (name, text[:20000]) for name, text in found.items())
    assert "process_exit" in log_file.read_text()
