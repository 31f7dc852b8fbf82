"""The proof suite's system under test: two instances of every role, each a separate process.

    gateway A, B ──► proxy ──► chance A, B ──► private Redis (AOF, appendfsync everysec)
        │                          └─(chance A only)─► proxy ──► RabbitMQ ──► logger A, B ──► MongoDB
        └────────► proxy ──► logger A, B
        └──► PostgreSQL (a database of its own, synchronous_commit on)

Every gateway gets chance_addr=<proxy of chance A>,<proxy of chance B> and the same for the
loggers, so a fault on one link or one instance has a healthy peer to fail over to.  The shared
PostgreSQL, RabbitMQ and MongoDB of test/run.sh are used (a database, queue and MongoDB database
of this run's own); Redis is private because a Redis that is killed must reload its AOF, which
the shared one (started without persistence) would not.
"""

import os
import signal
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
INTEGRATION = ROOT / "test" / "integration"
if str(INTEGRATION) not in sys.path:
    sys.path.insert(0, str(INTEGRATION))
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from gwclient import GATEWAY_TEST_KEYS, create_user, request, wait_ready  # noqa: E402
from storekit import Proc, scratch  # noqa: E402
from proxy import ProxyControl  # noqa: E402
from shared_fixtures import integration_conftest  # noqa: E402,F401  (faults, test_proof)


_it = integration_conftest()
Daemon, free_port = _it.Daemon, _it.free_port

# Short periods so that a fault heals in seconds: the reconciler, the pending settle, the
# lease takeover after a gateway dies, the relay's takeover of a dead chance's stream entries.
GATEWAY_KEYS = dict(GATEWAY_TEST_KEYS, reconcile_interval_ms=200, reconcile_grace_ms=500,
                    pending_settle_ms=1000, reconcile_verify_delay_ms=4000, lease_ttl_ms=2000,
                    outbox_interval_ms=100, rpc_timeout_ms=2000, claim_rate=100000,
                    claim_burst=100000,
                    # the MongoDB stand-in (mongomock) inserts in O(stored events): small
                    # batches and a long deadline, or a large backlog never fits in one call
                    logger_timeout_ms=30000, outbox_batch=100)
CHANCE_KEYS = {"relay_claim_idle_ms": 3000, "redis_timeout_ms": 2000, "relay_sweep_ms": 500}
LOGGER_KEYS = {"mongo_timeout_ms": 30000, "insert_batch": 100}


class Cluster:
    def __init__(self, binary, out_dir, env):
        self.bin = binary
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.env = env  # CHANCED_TEST_* of test/run.sh
        tag = os.urandom(4).hex()
        self.queue = "chanced.proof.%s" % tag
        self.dbname = "proof_%s" % tag
        self.procs = []
        self.daemons = {}

    # -- servers ---------------------------------------------------------------------------

    def start_servers(self):
        import psycopg2
        base = self.env["CHANCED_TEST_POSTGRES_URL"]
        admin = psycopg2.connect(base, connect_timeout=10)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute('CREATE DATABASE "%s" OWNER chanced' % self.dbname)
            # the shared server runs with synchronous_commit=off: an immediate shutdown would
            # then lose commits that were answered, which is the test setup's loss, not ours
            cur.execute('ALTER DATABASE "%s" SET synchronous_commit = on' % self.dbname)
        admin.close()
        self.postgres_url = base.rsplit("/", 1)[0] + "/" + self.dbname
        m = urlsplit(self.env["CHANCED_TEST_MONGO_URL"])
        query = m.query.replace("socketTimeoutMS=5000", "socketTimeoutMS=30000")
        self.mongo_url = urlunsplit((m.scheme, m.netloc, "/" + self.dbname, query, ""))
        self.amqp_url = self.env["CHANCED_TEST_AMQP_URL"]
        self.amqp_port = int(urlsplit(self.amqp_url).port)

        self.redis_dir = scratch("proof-redis")
        self.redis_port = free_port()
        self.redis_url = "redis://127.0.0.1:%d/0" % self.redis_port
        self.redis = Proc("redis-proof", [
            "redis-server", "--port", self.redis_port, "--bind", "127.0.0.1",
            "--dir", self.redis_dir, "--appendonly", "yes", "--appendfsync", "everysec",
            "--save", "", "--daemonize", "no", "--logfile", self.redis_dir / "redis.log"],
            self.redis_dir / "stdout.log", wait_port=self.redis_port)
        self.redis.start()

    def redis_client(self, decode=True):
        import redis
        return redis.Redis(host="127.0.0.1", port=self.redis_port, decode_responses=decode,
                           socket_timeout=10)

    def restart_redis(self):
        """After a SIGKILL: the same port and directory; it reloads its AOF."""
        self.redis.start()

    # -- roles -----------------------------------------------------------------------------

    def _daemon(self, name, role, keys, env=None):
        d = Daemon(self.bin, role, keys, self.out / ("%s.log" % name), env=env,
                   start_timeout=60)
        self.daemons[name] = d
        return d

    def start_roles(self):
        p = {n: free_port() for n in ("chance-a", "chance-b", "logger-a", "logger-b", "amqp-a",
                                      "control")}
        self.chance_ports = {"a": free_port(), "b": free_port()}
        self.logger_ports = {"a": free_port(), "b": free_port()}
        links = ["chance-a=%d:127.0.0.1:%d" % (p["chance-a"], self.chance_ports["a"]),
                 "chance-b=%d:127.0.0.1:%d" % (p["chance-b"], self.chance_ports["b"]),
                 "logger-a=%d:127.0.0.1:%d" % (p["logger-a"], self.logger_ports["a"]),
                 "logger-b=%d:127.0.0.1:%d" % (p["logger-b"], self.logger_ports["b"]),
                 "amqp-a=%d:127.0.0.1:%d" % (p["amqp-a"], self.amqp_port)]
        argv = [sys.executable, HERE / "proxy.py", "--control", p["control"]]
        for link in links:
            argv += ["--link", link]
        self.proxy_proc = Proc("proof-proxy", argv, self.out / "proxy.log",
                               wait_port=p["control"])
        self.proxy_proc.start()
        self.proxy = ProxyControl(p["control"])

        amqp_a = self.amqp_url.replace(":%d/" % self.amqp_port, ":%d/" % p["amqp-a"])
        for i in ("a", "b"):
            self._daemon("chance-" + i, "chance", dict(
                CHANCE_KEYS, chance_listen="127.0.0.1:%d" % self.chance_ports[i],
                chance_health_listen="127.0.0.1:%d" % free_port(), redis_url=self.redis_url,
                amqp_url=amqp_a if i == "a" else self.amqp_url, amqp_queue=self.queue)).start()
        for i in ("a", "b"):
            self._daemon("logger-" + i, "logger", dict(
                LOGGER_KEYS, logger_listen="127.0.0.1:%d" % self.logger_ports[i],
                logger_health_listen="127.0.0.1:%d" % free_port(), amqp_url=self.amqp_url,
                mongo_url=self.mongo_url, amqp_queue=self.queue)).start()
        chance_addr = "127.0.0.1:%d,127.0.0.1:%d" % (p["chance-a"], p["chance-b"])
        logger_addr = "127.0.0.1:%d,127.0.0.1:%d" % (p["logger-a"], p["logger-b"])
        for i in ("a", "b"):  # one after the other: the first one migrates the database
            d = self._daemon("gateway-" + i, "gateway", dict(
                GATEWAY_KEYS, http_listen="127.0.0.1:%d" % free_port(),
                gateway_health_listen="127.0.0.1:%d" % free_port(),
                postgres_url=self.postgres_url, chance_addr=chance_addr,
                logger_addr=logger_addr))
            d.start()
            wait_ready(d.port, timeout=60)

    def gateway_port(self, i):
        return self.daemons["gateway-" + "ab"[i]].port

    # -- data ------------------------------------------------------------------------------

    def admin_token(self):
        p = create_user(self.bin, self.postgres_url, "root", "admin password 1", admin=True)
        assert p.returncode == 0, p.stderr
        r = self.auth("login", "root", "admin password 1")
        assert r.status == 200, r
        self.admin = r.json["token"]
        return self.admin

    def auth(self, what, username, password, gw=0):
        for _ in range(60):
            r = request(self.gateway_port(gw), "POST", "/api/v1/auth/" + what,
                        {"username": username, "password": password}, timeout=60)
            if r.status != 503:
                return r
            time.sleep(0.5)
        return r

    def generate(self, codes, per_user_limit):
        r = request(self.gateway_port(0), "POST", "/api/v1/admin/batches",
                    {"categories": 1, "codes_per_category": codes, "reward_min": 1000,
                     "reward_max": 50000, "per_user_limit": per_user_limit}, token=self.admin)
        assert r.status == 202, r
        batch = r.json["batch"]
        deadline = time.monotonic() + 180
        while batch["state"] == "generating":
            assert time.monotonic() < deadline, batch
            time.sleep(0.1)
            batch = request(self.gateway_port(0), "GET", "/api/v1/admin/batches/%d" % batch["id"],
                            token=self.admin).json["batch"]
        assert batch["state"] == "ready", batch
        return batch["categories"][0]

    # -- processes -------------------------------------------------------------------------

    def role_daemons(self):
        return list(self.daemons.items())

    def resources(self):
        """{name: (rss KiB, open fds)} of every running daemon."""
        out = {}
        for name, d in self.daemons.items():
            if not d.running():
                continue
            try:
                rss = 0
                with open("/proc/%d/status" % d.pid) as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            rss = int(line.split()[1])
                fds = len(os.listdir("/proc/%d/fd" % d.pid))
            except OSError:
                continue
            out[name] = (rss, fds, d.starts)
        return out

    def pause(self, pid):
        os.kill(pid, signal.SIGSTOP)

    def resume(self, pid):
        os.kill(pid, signal.SIGCONT)

    def stop(self):
        """Every process of the cluster, by PID; returns the daemons' problems (exit code,
        sanitizer report) as text."""
        problems = []
        for name, d in reversed(list(self.daemons.items())):
            try:
                d.stop()
            except BaseException as e:  # pytest.fail: collect them all, then report
                problems.append("%s: %s" % (name, e))
        for p in (getattr(self, "proxy_proc", None), getattr(self, "redis", None)):
            if p is not None:
                if p.proc is not None and p.proc.poll() is None:
                    os.kill(p.proc.pid, signal.SIGCONT)
                p.stop()
        self._drop_remote()
        return problems

    def _drop_remote(self):
        try:
            import pika
            conn = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
            ch = conn.channel()
            for q in (self.queue, self.queue + ".dlq"):
                ch.queue_delete(queue=q)
            ch.exchange_delete(exchange=self.queue + ".dlx")
            conn.close()
        except Exception:
            pass
        try:
            import pymongo
            c = pymongo.MongoClient(self.mongo_url)
            c.drop_database(self.dbname)
            c.close()
        except Exception:
            pass
        try:
            import psycopg2
            admin = psycopg2.connect(self.env["CHANCED_TEST_POSTGRES_URL"], connect_timeout=10)
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % self.dbname)
            admin.close()
        except Exception:
            pass
