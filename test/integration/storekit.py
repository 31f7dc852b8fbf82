"""Helpers for the store tests (test_store_tls.py, test_least_privilege.py); no tests here.

    pki = Pki(scratch("pki"))                           # a throwaway PKI made with openssl
    ca = pki.ca("good")                                 # -> Cert(crt, key)
    srv = pki.issue(ca, "server", sans=["IP:127.0.0.1"])
    redis = Proc("redis-tls", ["redis-server", ...], wait_port=port).start()
    rabbit = ShellServer("rabbit-tls", "rabbitmq", conf_extra="listeners.ssl.default = ...")
    rabbit.start(); rabbit.env["CHANCED_TEST_AMQP_PORT"]; rabbit.ctl("list_connections")
    ...; redis.stop(); rabbit.stop()

Private servers live in a directory of their own under $CHANCED_TEST_DIR (reachable by the
postgres user; its *.log files end up in build/test-output). Each process is recorded in
$CHANCED_TEST_DIR/pids as well, so test/run.sh stops it even if the test process dies; the
fixtures stop them by PID (servers.sh's stop_all for the ones it started).
"""

import os
import re
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
SERVERS_SH = ROOT / "test" / "lib" / "servers.sh"
SECRETS_README = ROOT / "deploy" / "secrets" / "README.md"
STRICT = os.environ.get("CHANCED_TEST_STRICT") == "1"


def need_test_dir():
    d = os.environ.get("CHANCED_TEST_DIR")
    if not d or not os.path.isdir(d):
        msg = "CHANCED_TEST_DIR is not set: run the tests with `make test` (test/run.sh)"
        if STRICT:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return Path(d)


def scratch(name):
    """A new directory $CHANCED_TEST_DIR/private/<name>-<random>, mode 0755."""
    top = need_test_dir() / "private"
    top.mkdir(exist_ok=True)
    top.chmod(0o755)
    d = top / ("%s-%s" % (name, os.urandom(3).hex()))
    d.mkdir()
    d.chmod(0o755)
    return d


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(port, host="127.0.0.1", timeout=60.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def _starttime(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"


def record_pid(name, pid, starttime=None):
    """Adds a process to $CHANCED_TEST_DIR/pids, which test/run.sh stops at the end."""
    with open(need_test_dir() / "pids", "a") as f:
        f.write("%s %d %s\n" % (name, pid, starttime or _starttime(pid)))


# --- a throwaway PKI -----------------------------------------------------------------------

class Cert:
    def __init__(self, crt, key):
        self.crt = str(crt)
        self.key = str(key)

    def __repr__(self):
        return "<Cert %s>" % self.crt


class Pki:
    """Certificates made with the openssl command: EC P-256, valid two days."""

    def __init__(self, directory):
        self.d = Path(directory)
        self.d.mkdir(parents=True, exist_ok=True)

    def _openssl(self, *args):
        p = subprocess.run(["openssl"] + list(args), cwd=self.d, capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, "openssl %s: %s" % (" ".join(args), p.stderr)

    def ca(self, name):
        crt, key = self.d / (name + ".crt"), self.d / (name + ".key")
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "2",
                      "-subj", "/CN=chanced test CA %s" % name,
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        return Cert(crt, key)

    def issue(self, ca, name, sans=(), client=False):
        """A certificate signed by ca: a server one for the given subjectAltNames (e.g.
        "IP:127.0.0.1", "DNS:localhost"), or a client one."""
        crt, key, csr = (self.d / (name + ext) for ext in (".crt", ".key", ".csr"))
        ext = self.d / (name + ".ext")
        lines = ["basicConstraints=CA:FALSE",
                 "keyUsage=critical,digitalSignature",
                 "extendedKeyUsage=%s" % ("clientAuth" if client else "serverAuth")]
        if sans:
            lines.append("subjectAltName=" + ",".join(sans))
        ext.write_text("\n".join(lines) + "\n")
        self._openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                      "-keyout", str(key), "-out", str(csr), "-subj", "/CN=%s" % name)
        self._openssl("x509", "-req", "-in", str(csr), "-CA", ca.crt, "-CAkey", ca.key,
                      "-CAcreateserial", "-days", "2", "-out", str(crt), "-extfile", str(ext))
        for f in (crt, key):
            f.chmod(0o644)  # servers running as other users (postgres) read copies of them
        return Cert(crt, key)


# --- private servers -----------------------------------------------------------------------

class Proc:
    """One server process started directly: its own session, stopped by PID (TERM, then KILL
    after 15 s)."""

    def __init__(self, name, argv, log, wait_port=None, cwd=None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log = Path(log)
        self.port = wait_port
        self.cwd = cwd
        self.proc = None

    def start(self, timeout=60.0):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.cwd,
                                         start_new_session=True)
        record_pid(self.name, self.proc.pid)
        if self.port and not wait_port(self.port, timeout=timeout, proc=self.proc):
            self.stop()
            pytest.fail("%s did not listen on %d:\n%s" % (self.name, self.port, self.log_tail()),
                        pytrace=False)
        return self

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)

    def log_tail(self, n=30):
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class ShellServer:
    """A server of test/lib/servers.sh (redis, postgres, rabbitmq, mongo) started in a private
    scratch directory with its own ports: `env` holds its CHANCED_TEST_* variables."""

    def __init__(self, name, kind, conf_extra=""):
        self.kind = kind
        self.dir = scratch(name)
        self.conf_extra = conf_extra
        self.env = {}
        self._recorded = 0

    def _bash(self, script, timeout=300):
        # the caller's CHANCED_TEST_* (ports, URLs of the shared servers) must not leak in
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHANCED_TEST_")}
        env["CHANCED_TEST_DIR"] = str(self.dir)
        if self.conf_extra:
            env["CHANCED_TEST_RABBIT_CONF_EXTRA"] = self.conf_extra
        pre = ""
        if (self.dir / "env.sh").exists():
            pre = ". %s && " % shlex.quote(str(self.dir / "env.sh"))
        return subprocess.run(["bash", "-c", "%s. %s && %s" % (pre, shlex.quote(str(SERVERS_SH)),
                                                               script)],
                              env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)

    def _record(self):
        """Copies the processes servers.sh recorded here into the run's own pids file."""
        try:
            lines = (self.dir / "pids").read_text().splitlines()
        except OSError:
            return
        for line in lines[self._recorded:]:
            name, pid, st = line.split()
            record_pid(name, int(pid), st)
        self._recorded = len(lines)

    def start(self):
        p = self._bash("start_%s" % self.kind)
        self._record()
        if p.returncode != 0:
            self.stop()
            pytest.fail("private %s did not start:\n%s%s" % (self.kind, p.stdout, p.stderr),
                        pytrace=False)
        env = {}
        for line in (self.dir / "env.sh").read_text().splitlines():
            m = re.match(r"^export (CHANCED_TEST_\w+)=(.*)$", line)
            if m:
                try:
                    env[m.group(1)] = shlex.split(m.group(2))[0] if m.group(2) else ""
                except (ValueError, IndexError):  # bash's $'...' quoting: not one we need
                    pass
        self.env = env
        return self

    def ctl(self, *args, timeout=120):
        """rabbitmqctl against this node; its stdout."""
        p = self._bash("ct_rabbitmqctl " + " ".join(shlex.quote(a) for a in args),
                       timeout=timeout)
        assert p.returncode == 0, "rabbitmqctl %s: %s%s" % (" ".join(args), p.stdout, p.stderr)
        return p.stdout

    def stop(self):
        self._bash("stop_all", timeout=120)


def redis_server_argv(directory, *args):
    """redis-server with no persistence, logging into directory."""
    return ["redis-server", "--dir", str(directory), "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--logfile", str(Path(directory) / "redis.log")] + list(args)


# --- compose's secrets, from the generator of deploy/secrets/README.md ---------------------

def generate_secrets(top):
    """Runs the documented generator block in top (a scratch copy of the layout, with the
    committed deploy/ files it reads); returns {file name: text}."""
    text = SECRETS_README.read_text()
    m = re.search(r"<!-- generate-secrets.*?-->\s*```sh\n(.*?)```", text, re.S)
    assert m, "%s has no generator block" % SECRETS_README
    top = Path(top)
    (top / "deploy" / "secrets").mkdir(parents=True)
    for sub in ("redis", "rabbitmq"):
        src = ROOT / "deploy" / sub
        if src.is_dir():
            (top / "deploy" / sub).mkdir()
            for f in src.iterdir():
                (top / "deploy" / sub / f.name).write_bytes(f.read_bytes())
    p = subprocess.run(["sh", "-c", m.group(1)], cwd=top, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, "secret generator failed:\n%s%s" % (p.stdout, p.stderr)
    d = top / "deploy" / "secrets"
    return {f.name: f.read_text() for f in d.iterdir()}
