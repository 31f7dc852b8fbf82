"""Fixtures for chanced's integration tests (run by `make test` via test/run.sh).

Servers: test/run.sh starts private Redis, PostgreSQL, RabbitMQ and MongoDB (stand-in) servers
and exports CHANCED_TEST_* URLs.  Under CHANCED_TEST_STRICT=1 (what run.sh sets) a missing one
FAILS the test that needs it; without it (a bare `pytest` run) such tests are skipped.

    def test_claim(chanced, redis_client):
        ch = chanced("chance")                       # fresh ports, URLs from the environment
        with NestClient(*ch.hostport()) as c:
            assert c.call("chance.ping", {}) == "pong"
        gw = chanced("gateway", postgres_url=...)    # chance_addr/logger_addr default to the
                                                     # chance/logger daemons of this test
        ch.kill(signal.SIGKILL); ch.restart()        # fault injection
        servers.rabbitmq.stop(); servers.rabbitmq.start()

Fixtures: chanced (Daemon factory), redis_url, postgres_url, amqp_url, mongo_url,
redis_client (flushed), pg_conn, fresh_postgres_url, amqp_queue, amqp_channel, mongo_db,
servers / rabbit (stop/start/kill/pause/resume a server; restored after the test), free_port(),
output_dir.  Daemon logs go to $CHANCED_TEST_OUTPUT/daemons/<test>/<role>-<n>.log.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # `import nest` from any test

STRICT = os.environ.get("CHANCED_TEST_STRICT") == "1"
OUTPUT = Path(os.environ.get("CHANCED_TEST_OUTPUT") or ROOT / "build" / "test-output")
SANITIZER_RE = re.compile(
    r"ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error:|SUMMARY: UndefinedBehaviorSanitizer")
DEFAULT_STOP_TIMEOUT = 15.0
DEFAULT_START_TIMEOUT = 20.0


def pytest_configure(config):
    for mark in ("slow: takes more than a few seconds",
                 "fault: kills or pauses daemons or servers",
                 "e2e: all three roles as separate processes",
                 "interop: talks to real NestJS peers"):
        config.addinivalue_line("markers", mark)


# --- environment ---------------------------------------------------------------------------

def need_env(name, why=""):
    """The value of a CHANCED_TEST_* variable; fail (strict) or skip when it is missing."""
    value = os.environ.get(name)
    if value:
        return value
    msg = "%s is not set%s: run the tests with `make test` (test/run.sh starts the servers)" % (
        name, " (" + why + ")" if why else "")
    if STRICT:
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


_ports_given = set()


def free_port():
    """A TCP port on 127.0.0.1 that is free now (the kernel picks it), never the same twice."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port
    raise RuntimeError("no fresh free port")


def wait_port(port, host="127.0.0.1", timeout=10.0, proc=None):
    """True once host:port accepts a connection; False on timeout or if proc exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _proc_starttime(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"


def _record_pid(name, pid):
    """Add a process to $CHANCED_TEST_DIR/pids so test/run.sh stops it even if we cannot."""
    d = os.environ.get("CHANCED_TEST_DIR")
    if d and os.path.isdir(d):
        with open(os.path.join(d, "pids"), "a") as f:
            f.write("%s %d %s\n" % (name, pid, _proc_starttime(pid)))


def _safe_name(nodeid):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[-120:]


@pytest.fixture(scope="session")
def output_dir():
    OUTPUT.mkdir(parents=True, exist_ok=True)
    return OUTPUT


@pytest.fixture
def test_output_dir(request, output_dir):
    d = output_dir / "daemons" / _safe_name(request.node.nodeid)
    shutil.rmtree(d, ignore_errors=True)  # left from an earlier run
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def chanced_bin():
    path = Path(os.environ.get("CHANCED_BIN") or ROOT / "build" / "chanced")
    if not path.is_absolute():
        path = ROOT / path
    if not os.access(path, os.X_OK):
        msg = "chanced binary %s not built (make builds it; CHANCED_BIN overrides)" % path
        if STRICT:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return str(path)


@pytest.fixture(scope="session")
def redis_url():
    return need_env("CHANCED_TEST_REDIS_URL", "Redis")


@pytest.fixture(scope="session")
def postgres_url():
    return need_env("CHANCED_TEST_POSTGRES_URL", "PostgreSQL")


@pytest.fixture(scope="session")
def postgres_admin_url():
    return need_env("CHANCED_TEST_POSTGRES_ADMIN_URL", "PostgreSQL superuser")


@pytest.fixture(scope="session")
def amqp_url():
    return need_env("CHANCED_TEST_AMQP_URL", "RabbitMQ")


@pytest.fixture(scope="session")
def mongo_url():
    return need_env("CHANCED_TEST_MONGO_URL", "MongoDB or its stand-in")


@pytest.fixture(scope="session")
def pg_bin():
    """Directory of the PostgreSQL client/server binaries (pgbench, psql)."""
    return need_env("CHANCED_TEST_PG_BIN", "PostgreSQL binaries")


# --- clients -------------------------------------------------------------------------------

@pytest.fixture
def redis_client(redis_url):
    """python3-redis client on the shared test Redis, FLUSHALLed before the test."""
    import redis
    r = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=10)
    r.flushall()
    yield r
    r.close()


@pytest.fixture
def pg_conn(postgres_url):
    """psycopg2 connection (autocommit) to the shared chanced database."""
    import psycopg2
    conn = psycopg2.connect(postgres_url, connect_timeout=10)
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture
def fresh_postgres_url(postgres_url, request):
    """URL of a new, empty database owned by chanced, dropped after the test."""
    import psycopg2
    name = "t_%s" % os.urandom(6).hex()
    admin = psycopg2.connect(postgres_url, connect_timeout=10)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute('CREATE DATABASE "%s" OWNER chanced' % name)
    yield postgres_url.rsplit("/", 1)[0] + "/" + name
    try:
        with admin.cursor() as cur:
            cur.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
    finally:
        admin.close()


@pytest.fixture
def amqp_queue(request):
    """A queue name of this test's own (the daemons get it as amqp_queue), deleted afterwards."""
    name = "chanced.test.%s" % os.urandom(5).hex()
    yield name
    url = os.environ.get("CHANCED_TEST_AMQP_URL")
    if url:
        try:
            import pika
            conn = pika.BlockingConnection(pika.URLParameters(url))
            conn.channel().queue_delete(queue=name)
            conn.close()
        except Exception:  # broker stopped by the test, queue never declared: fine
            pass


@pytest.fixture
def amqp_channel(amqp_url):
    """pika BlockingConnection channel with publisher confirms on."""
    import pika
    params = pika.URLParameters(amqp_url)
    params.socket_timeout = 10
    params.blocked_connection_timeout = 10
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.confirm_delivery()
    yield ch
    try:
        conn.close()
    except Exception:
        pass


@pytest.fixture
def mongo_db(mongo_url):
    """pymongo Database "chanced" (dropped before the test)."""
    pymongo = pytest.importorskip("pymongo")
    client = pymongo.MongoClient(mongo_url)
    db = client.get_default_database()
    client.drop_database(db.name)
    yield db
    client.close()


# --- servers: stop / start / kill / pause mid-test -----------------------------------------

class Server:
    """One private server, controlled through $CHANCED_TEST_DIR/server-ctl.sh."""

    def __init__(self, name):
        self.name = name
        self.touched = False

    def _ctl(self, cmd, timeout=120):
        ctl = need_env("CHANCED_TEST_SERVER_CTL", "server control script")
        self.touched = True
        p = subprocess.run([ctl, self.name, cmd], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout)
        if p.returncode not in (0, 3):
            raise RuntimeError("server-ctl.sh %s %s failed (%d):\n%s"
                               % (self.name, cmd, p.returncode, p.stdout))
        return p.stdout.strip()

    def start(self):
        """Start again on the same port and data directory; returns when it serves."""
        self._ctl("start")

    def stop(self):
        """Clean stop (TERM; INT for PostgreSQL); KILL after 10 s."""
        self._ctl("stop")

    def restart(self):
        self._ctl("restart")

    def kill(self):
        """SIGKILL the server and all its processes, as a crash would."""
        self._ctl("kill")

    def pause(self):
        """SIGSTOP the server and all its processes (connections hang, nothing is refused)."""
        self._ctl("pause")

    def resume(self):
        self._ctl("resume")

    def pid(self):
        out = self._ctl("pid")
        return int(out) if out.isdigit() else None

    def running(self):
        return self._ctl("status").startswith(self.name + " running")


class Servers:
    def __init__(self):
        self.redis = Server("redis")
        self.postgres = Server("postgres")
        self.rabbitmq = Server("rabbitmq")
        self.mongo = Server("mongo")

    def all(self):
        return [self.redis, self.postgres, self.rabbitmq, self.mongo]

    def restore(self):
        """Resume and start whatever a test stopped, so the next test finds them serving."""
        for s in self.all():
            if s.touched:
                try:
                    s.resume()
                except RuntimeError:
                    pass
                s.start()
                s.touched = False


@pytest.fixture
def servers():
    s = Servers()
    yield s
    s.restore()


@pytest.fixture
def rabbit(servers):
    """The RabbitMQ broker: rabbit.stop(), rabbit.start(), rabbit.kill(), ..."""
    return servers.rabbitmq


# --- the daemon under test -----------------------------------------------------------------

ROLE_LISTEN = {  # keys a role listens on, first = the port to wait for
    "chance": ["chance_listen", "chance_health_listen"],
    "logger": ["logger_listen", "logger_health_listen"],
    "gateway": ["http_listen", "gateway_health_listen"],
    "all": ["http_listen", "chance_listen", "logger_listen", "gateway_health_listen",
            "chance_health_listen", "logger_health_listen"],
}
ROLE_URLS = {  # keys a role needs from the environment
    "chance": {"redis_url": "CHANCED_TEST_REDIS_URL", "amqp_url": "CHANCED_TEST_AMQP_URL"},
    "logger": {"amqp_url": "CHANCED_TEST_AMQP_URL", "mongo_url": "CHANCED_TEST_MONGO_URL"},
    "gateway": {"postgres_url": "CHANCED_TEST_POSTGRES_URL"},
}
ROLE_URLS["all"] = {**ROLE_URLS["chance"], **ROLE_URLS["logger"], **ROLE_URLS["gateway"]}


class Daemon:
    """One chanced process: `$CHANCED_BIN --role=ROLE --key=value ...`.

    stdout+stderr go to self.log_path; the process runs in a session of its own (a Ctrl-C does
    not reach it; the fixture stops it).  At teardown it gets SIGTERM and must exit 0 within
    15 s with no sanitizer report in its log.
    """

    def __init__(self, binary, role, keys, log_path, args=(), env=None, wait_port=None,
                 start_timeout=DEFAULT_START_TIMEOUT, cwd=None):
        self.binary = binary
        self.role = role
        self.keys = dict(keys)
        self.args = list(args)
        self.log_path = Path(log_path)
        self.extra_env = dict(env or {})
        self.wait_port = wait_port
        self.start_timeout = start_timeout
        self.cwd = str(cwd or ROOT)
        self.proc = None
        self.starts = 0
        self.expect_exit = False  # set once a test killed it or collected its exit itself
        self.stopped_by_signal = False
        self.returncode = None

    # -- addresses -----------------------------------------------------------------------

    def addr(self, key=None):
        """"127.0.0.1:PORT" of a *_listen key (default: the role's main one)."""
        key = key or ROLE_LISTEN.get(self.role, [None])[0]
        return self.keys[key]

    def hostport(self, key=None):
        host, port = self.addr(key).rsplit(":", 1)
        return host, int(port)

    @property
    def port(self):
        return self.hostport()[1]

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    # -- process -------------------------------------------------------------------------

    def argv(self):
        av = [self.binary, "--role=%s" % self.role]
        for k, v in self.keys.items():
            if v is None:
                continue
            if isinstance(v, bool):
                v = "true" if v else "false"
            av.append("--%s=%s" % (k, v))
        return av + self.args

    def env(self):
        # the daemon reads CHANCED_<KEY>; do not hand it the runner's CHANCED_TEST_* variables
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("CHANCED_") and k != "NOTIFY_SOCKET"}
        env.update(self.extra_env)
        return env

    def start(self, wait=True):
        self.starts += 1
        self.expect_exit = False
        self.stopped_by_signal = False
        self.returncode = None
        with open(self.log_path, "ab" if self.starts > 1 else "wb") as log:
            if self.starts > 1:
                log.write(b"\n==== test fixture: start #%d ====\n" % self.starts)
            log.write(("==== %s\n" % " ".join(self.argv())).encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=self.env(), cwd=self.cwd,
                                         start_new_session=True)
        _record_pid("chanced", self.proc.pid)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=None):
        port = self.wait_port
        if port is None and ROLE_LISTEN.get(self.role):
            port = self.port
        if port is None:
            return
        if not wait_port(port, timeout=timeout or self.start_timeout, proc=self.proc):
            rc = self.proc.poll()
            why = ("exited with %s" % self._rc_text(rc)) if rc is not None else \
                "is not accepting on port %d after %.0fs" % (port, timeout or self.start_timeout)
            if rc is None:
                self._terminate()
            self.expect_exit = True
            pytest.fail("chanced --role=%s %s\n%s" % (self.role, why, self.log_tail()),
                        pytrace=False)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL, wait=True):
        """Send a signal.  SIGKILL (and, with wait, any fatal signal): wait for the exit, and
        the teardown no longer expects exit code 0.  SIGSTOP/SIGCONT: just sent."""
        self.proc.send_signal(sig)
        if sig in (signal.SIGSTOP, signal.SIGCONT, signal.SIGTSTP):
            return None
        if sig == signal.SIGKILL or wait:
            try:
                self.returncode = self.proc.wait(timeout=DEFAULT_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                if sig == signal.SIGKILL:
                    raise
                return None
            self.expect_exit = True
        return self.returncode

    def wait_exit(self, timeout=DEFAULT_STOP_TIMEOUT):
        """Wait for the daemon to exit by itself (e.g. exit 78 on bad config); its exit code."""
        self.returncode = self.proc.wait(timeout=timeout)
        self.expect_exit = True
        return self.returncode

    def stop(self, timeout=DEFAULT_STOP_TIMEOUT, check=True):
        """SIGTERM, wait up to timeout (then SIGKILL); with check, assert a clean exit 0 and a
        log without sanitizer reports.  Returns the exit code."""
        problems = []
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)  # in case a test left it stopped
                self.proc.send_signal(signal.SIGTERM)
                self.returncode = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                problems.append("did not exit within %.0fs of SIGTERM (killed)" % timeout)
                self._terminate()
            self.stopped_by_signal = True
            if self.returncode not in (0, None):
                problems.append("exited with %s after SIGTERM, expected 0"
                                % self._rc_text(self.returncode))
        else:
            self.returncode = self.proc.returncode
            if not self.expect_exit:
                problems.append("had already exited by itself with %s"
                                % self._rc_text(self.returncode))
        if SANITIZER_RE.search(self.log_text()):
            problems.append("sanitizer report in its log")
        self.expect_exit = True  # judged now; a later stop() judges only the log again
        if check and problems:
            pytest.fail("chanced --role=%s (pid %d): %s\n%s" % (
                self.role, self.proc.pid, "; ".join(problems), self.log_tail(60)), pytrace=False)
        return self.returncode

    def restart(self, graceful=True, wait=True):
        """Stop (SIGTERM, checked, unless it is already dead or graceful=False -> SIGKILL) and
        start again with the same arguments and ports."""
        if self.running():
            if graceful:
                self.stop()
            else:
                self.kill(signal.SIGKILL)
        return self.start(wait=wait)

    def _terminate(self):
        try:
            self.proc.kill()
            self.returncode = self.proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass

    @staticmethod
    def _rc_text(rc):
        if rc is None:
            return "no exit code"
        if rc < 0:
            try:
                return "signal %s" % signal.Signals(-rc).name
            except ValueError:
                return "signal %d" % -rc
        return "exit code %d" % rc

    # -- log -----------------------------------------------------------------------------

    def log_text(self):
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=40):
        lines = self.log_text().splitlines()[-n:]
        return "---- last %d lines of %s ----\n%s" % (len(lines), self.log_path, "\n".join(lines))

    def log_json(self):
        """The JSON log lines, parsed (other lines skipped)."""
        import json
        out = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def wait_log(self, pattern, timeout=10.0):
        """Wait until the log matches the regex; return the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log_text())
            if m:
                return m
            if time.monotonic() > deadline:
                pytest.fail("log of chanced --role=%s never matched %r\n%s"
                            % (self.role, pattern, self.log_tail()), pytrace=False)
            time.sleep(0.05)

    def __repr__(self):
        return "<Daemon %s pid=%s %s>" % (self.role, self.pid, self.keys)


@pytest.fixture
def chanced(request, test_output_dir, amqp_queue):
    """Factory: chanced(role, **keys) -> a started, ready Daemon.

    Keys become --key=value flags (None drops a default).  Defaults: fresh 127.0.0.1 ports for
    the role's *_listen keys; redis_url/amqp_url/mongo_url/postgres_url from CHANCED_TEST_*;
    amqp_queue unique to this test; chance_addr/logger_addr of this test's chance/logger daemons.
    Options: wait=False (do not wait for the port), wait_port=N, start_timeout=s, args=[...]
    (extra argv, e.g. a --config=FILE), env={...}, binary=PATH (another executable).
    All daemons are stopped at teardown (SIGTERM, must exit 0, no sanitizer report).
    """
    daemons = []
    counts = {}

    def start(role, *, wait=True, wait_port=None, start_timeout=DEFAULT_START_TIMEOUT,
              args=(), env=None, binary=None, **keys):
        binary = binary or request.getfixturevalue("chanced_bin")
        full = {}
        for k in ROLE_LISTEN.get(role, []):
            full[k] = "127.0.0.1:%d" % free_port()
        for k, var in ROLE_URLS.get(role, {}).items():
            if k not in keys:
                full[k] = need_env(var, "%s for --role=%s" % (k, role))
        if role in ("chance", "logger", "all"):
            full["amqp_queue"] = amqp_queue
        if role == "gateway":
            for peer, key, listen in (("chance", "chance_addr", "chance_listen"),
                                      ("logger", "logger_addr", "logger_listen")):
                for d in reversed(daemons):
                    if d.role == peer:
                        full[key] = d.keys[listen]
                        break
        full.update(keys)
        counts[role] = counts.get(role, 0) + 1
        log = test_output_dir / ("%s-%d.log" % (role, counts[role]))
        d = Daemon(binary, role, full, log, args=args, env=env, wait_port=wait_port,
                   start_timeout=start_timeout)
        daemons.append(d)
        d.start(wait=wait)
        return d

    yield start

    problems = []
    for d in reversed(daemons):
        try:
            d.stop()
        except (Exception, pytest.fail.Exception) as e:  # stop them all, then report
            problems.append(str(e))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
