"""sd_notify: what chanced tells systemd, checked on a socket of our own.

systemd's notify protocol is one datagram per message to the AF_UNIX socket named by
$NOTIFY_SOCKET ("@name" = abstract namespace), with newline-separated VAR=value assignments;
WATCHDOG_USEC (and optionally WATCHDOG_PID) asks for WATCHDOG=1 pings more often than that.
deploy/chanced@.service relies on it (Type=notify, NotifyAccess=main, WatchdogSec=).  These
tests play systemd: they bind the socket, start `chanced --role=chance` with the variables, and
read what arrives, with the sender's credentials (NotifyAccess=main accepts the main pid only).
"""

import os
import signal
import socket
import struct
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import free_port

WATCHDOG_USEC = 600000  # 0.6 s: the daemon pings every 0.2 s


class NotifySocket:
    """A bound SOCK_DGRAM socket collecting (monotonic time, sender pid, {VAR: value}, raw)."""

    def __init__(self, abstract=False):
        self.dir = tempfile.mkdtemp(prefix="chanced-notify.")
        if abstract:
            name = "chanced-notify-%d-%s" % (os.getpid(), os.urandom(4).hex())
            self.env_value, addr = "@" + name, "\0" + name
        else:
            self.env_value = addr = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(addr)
        self.sock.settimeout(0.1)
        self.messages = []
        self.lock = threading.Lock()
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        ucred = struct.calcsize("iII")
        while not self.stop:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(ucred))
            except socket.timeout:
                continue
            except OSError:
                return
            pid = None
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", cdata[:ucred])[0]
            text = data.decode("utf-8", "replace")
            fields = dict(line.split("=", 1) for line in text.split("\n") if "=" in line)
            with self.lock:
                self.messages.append((time.monotonic(), pid, fields, text))

    def snapshot(self):
        with self.lock:
            return list(self.messages)

    def wait_for(self, var, value=None, timeout=20.0, after=0):
        """Index of the first message (from index `after` on) setting var (to value)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, (_, _, fields, _) in enumerate(self.snapshot()):
                if i >= after and var in fields and (value is None or fields[var] == value):
                    return i
            time.sleep(0.02)
        pytest.fail("no %s%s on the notify socket within %.0f s; got: %s" % (
            var, "=" + value if value else "", timeout,
            [m[3] for m in self.snapshot()]), pytrace=False)

    def close(self):
        self.stop = True
        self.thread.join(timeout=5)
        self.sock.close()
        try:
            os.unlink(os.path.join(self.dir, "notify"))
        except FileNotFoundError:
            pass
        os.rmdir(self.dir)


@pytest.fixture
def notify():
    socks = []

    def make(abstract=False):
        s = NotifySocket(abstract)
        socks.append(s)
        return s
    yield make
    for s in socks:
        s.close()


def http_status(hostport, path):
    try:
        with urllib.request.urlopen("http://%s%s" % (hostport, path), timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def kinds(messages):
    """The sequence of notable events: READY, STOPPING, STATUS (WATCHDOG pings left out)."""
    out = []
    for _, _, fields, _ in messages:
        for var in ("READY", "STATUS", "STOPPING"):
            if var in fields:
                out.append(var)
    return out


def test_ready_status_watchdog_stopping_in_order(chanced, notify, redis_url):
    sock = notify()
    ch = chanced("chance", env={"NOTIFY_SOCKET": sock.env_value,
                                "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    ready = sock.wait_for("READY", "1")
    # READY=1 means serving: the RPC port accepts and /readyz says 200 at that moment
    assert http_status(ch.addr("chance_health_listen"), "/readyz") == 200
    with socket.create_connection(ch.hostport(), timeout=5):
        pass
    t_ready = sock.snapshot()[ready][0]

    # pings keep coming, well inside the interval systemd was promised
    time.sleep(2.0)
    pings = [t for t, _, f, _ in sock.snapshot() if f.get("WATCHDOG") == "1" and t >= t_ready]
    assert len(pings) >= 4, "only %d WATCHDOG=1 in 2 s after READY" % len(pings)
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert max(gaps) < WATCHDOG_USEC / 1e6, "a %.3f s gap between pings (limit %.1f s)" % (
        max(gaps), WATCHDOG_USEC / 1e6)

    before_stop = len(sock.snapshot())
    ch.kill(signal.SIGTERM, wait=False)
    sock.wait_for("STOPPING", "1", after=before_stop, timeout=15)
    assert ch.wait_exit(timeout=15) == 0

    msgs = sock.snapshot()
    seq = kinds(msgs)
    assert seq.index("READY") < seq.index("STOPPING"), seq
    assert "STATUS" in seq[:seq.index("STOPPING")], "no STATUS= before stopping: %s" % seq
    assert "READY" not in seq[seq.index("STOPPING"):], "READY=1 after STOPPING=1: %s" % seq
    assert all(f.get("WATCHDOG", "1") == "1" for _, _, f, _ in msgs)
    statuses = [f["STATUS"] for _, _, f, _ in msgs if "STATUS" in f]
    assert all(s.strip() for s in statuses), statuses
    # NotifyAccess=main: every message must come from the main process
    pids = {pid for _, pid, _, _ in msgs}
    assert pids == {ch.pid}, "senders %s, daemon pid %d" % (pids, ch.pid)


READYZ_AT = {"chance": "chance_health_listen", "logger": "logger_health_listen",
             "gateway": "gateway_health_listen"}


@pytest.mark.parametrize("role", ["logger", "gateway"])
def test_ready_means_readyz_says_200(role, chanced, notify, redis_url, postgres_url, amqp_url,
                                     mongo_url):
    """For every role, READY=1 is sent only once its own /readyz answers 200 (chance: above).
    Checked on the first READY=1, at once: systemd starts what is ordered after the unit then."""
    if role == "gateway":
        chanced("chance")
        chanced("logger")
    sock = notify()
    d = chanced(role, env={"NOTIFY_SOCKET": sock.env_value}, start_timeout=60)
    sock.wait_for("READY", "1", timeout=60)
    assert http_status(d.addr(READYZ_AT[role]), "/readyz") == 200, \
        "%s sent READY=1 while its /readyz still said 503" % role


def test_no_ready_while_a_dependency_is_down(chanced, notify):
    """chance with an unreachable Redis listens but is not ready: no READY=1 (systemd keeps the
    unit "activating"), /readyz 503; the watchdog still pings (the loops are alive); SIGTERM
    still stops it cleanly."""
    sock = notify()
    dead = free_port()  # nothing listens there
    ch = chanced("chance", redis_url="redis://127.0.0.1:%d/0" % dead, redis_timeout_ms=500,
                 env={"NOTIFY_SOCKET": sock.env_value, "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    time.sleep(3.0)
    assert http_status(ch.addr("chance_health_listen"), "/readyz") == 503
    msgs = sock.snapshot()
    assert not [m for m in msgs if "READY" in m[2]], "READY=1 without Redis: %s" % [
        m[3] for m in msgs]
    assert sum(1 for m in msgs if m[2].get("WATCHDOG") == "1") >= 5, \
        "the watchdog must ping while waiting for a dependency: %s" % [m[3] for m in msgs]
    ch.kill(signal.SIGTERM, wait=False)
    sock.wait_for("STOPPING", "1", timeout=15)
    assert ch.wait_exit(timeout=15) == 0


def test_watchdog_only_when_asked_for_this_pid(chanced, notify, redis_url):
    """WATCHDOG_PID names another process (systemd sets it for the main pid; a child that
    inherits the variables must not ping) and no WATCHDOG_USEC: READY=1 but no pings."""
    a, b = notify(), notify()
    ch1 = chanced("chance", env={"NOTIFY_SOCKET": a.env_value,
                                 "WATCHDOG_USEC": str(WATCHDOG_USEC), "WATCHDOG_PID": "1"})
    ch2 = chanced("chance", env={"NOTIFY_SOCKET": b.env_value})
    a.wait_for("READY", "1")
    b.wait_for("READY", "1")
    time.sleep(1.5)
    for sock, d in ((a, ch1), (b, ch2)):
        pings = [m for m in sock.snapshot() if "WATCHDOG" in m[2]]
        assert not pings, "pid %d pinged without being asked: %s" % (d.pid, pings[:3])


def test_all_roles_ready_only_when_each_is(chanced, notify, redis_url, postgres_url, amqp_url,
                                          mongo_url):
    """--role=all (chanced@all.service): one READY=1, sent once all three roles serve; each
    role serves its own health port (one key per role), as it would in a process of its own."""
    sock = notify()
    chance, logger = "127.0.0.1:%d" % free_port(), "127.0.0.1:%d" % free_port()
    d = chanced("all", chance_listen=chance, chance_addr=chance, logger_listen=logger,
                logger_addr=logger, start_timeout=60,
                env={"NOTIFY_SOCKET": sock.env_value, "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    sock.wait_for("READY", "1", timeout=60)
    for key in ("gateway_health_listen", "chance_health_listen", "logger_health_listen"):
        assert http_status(d.addr(key), "/readyz") == 200, key
    assert "chance" in d.log_text() and "logger_started" in d.log_text()
    assert d.log_text().count("health_listening") == 3
    assert len([m for m in sock.snapshot() if "READY" in m[2]]) == 1
    d.stop()
    sock.wait_for("STOPPING", "1", timeout=5)


def test_abstract_notify_socket(chanced, notify, redis_url):
    """NOTIFY_SOCKET=@name (abstract namespace, as some service managers use) works too."""
    sock = notify(abstract=True)
    ch = chanced("chance", env={"NOTIFY_SOCKET": sock.env_value})
    sock.wait_for("READY", "1")
    ch.stop()  # SIGTERM, exit 0 checked
    sock.wait_for("STOPPING", "1", timeout=5)


def test_unusable_notify_socket_is_harmless(chanced, tmp_path, redis_url):
    """A NOTIFY_SOCKET nobody listens on (or a relative path) must not stop the daemon."""
    for value in (str(tmp_path / "nobody-listens"), "relative/path"):
        ch = chanced("chance", env={"NOTIFY_SOCKET": value, "WATCHDOG_USEC": str(WATCHDOG_USEC)})
        time.sleep(0.5)
        assert http_status(ch.addr("chance_health_listen"), "/readyz") in (200, 503)
        assert ch.running()
        ch.stop()
