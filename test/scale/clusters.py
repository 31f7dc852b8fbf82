"""Clustered stores for test/scale, on free loopback ports in the scratch directory:

    RedisCluster(d, masters=3, replicas=1)   redis-server --cluster-enabled yes, redis-cli --cluster create
    RabbitCluster(d, nodes=3)                3 nodes of the one Debian install, one Erlang cookie
    PgPair(d)                                a primary and a `pg_basebackup -R` streaming replica

Each start()s in __init__ order and stop()s every process it started, by PID (each server runs
in a process group of its own, so the RabbitMQ wrapper's children go with it).  Every PID is also
written to $CHANCED_TEST_DIR/pids, so test/run.sh stops whatever an interrupted test left.
"""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

# exec in a new process group of its own, keeping the PID (servers.sh's _CT_PGRP_PY)
PGRP = ["/usr/bin/python3", "-c", "import os, sys\nos.setpgid(0, 0)\nos.execvp(sys.argv[1], sys.argv[1:])"]


_given = set()


def free_port():
    """A port free now on 127.0.0.1, never handed out twice (here or by servers.sh)."""
    d = os.environ.get("CHANCED_TEST_DIR")
    ports = Path(d) / "ports" if d else None
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        taken = ports.read_text().split() if ports and ports.exists() else []
        # the cluster bus of a Redis node is its port + 10000
        if port in _given or str(port) in taken or port > 55000:
            continue
        _given.add(port)
        if ports:
            with open(ports, "a") as f:
                f.write("%d\n" % port)
        return port
    raise RuntimeError("no fresh free port")


def _starttime(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def record(name, pid):
    d = os.environ.get("CHANCED_TEST_DIR")
    if d and os.path.isdir(d):
        with open(os.path.join(d, "pids"), "a") as f:
            f.write("%s %d %s\n" % (name, pid, _starttime(pid) or "0"))


def alive(pid, st=None):
    now = _starttime(pid)
    if now is None:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(") ", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X") and (st is None or st == now)


def descendants(pid):
    kids = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open("/proc/%s/stat" % p) as f:
                    ppid = int(f.read().rsplit(") ", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(p))
    out, queue = [], [pid]
    while queue:
        for c in kids.get(queue.pop(), []):
            out.append(c)
            queue.append(c)
    return out


def wait_for(pred, timeout, what, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


class Proc:
    """One server process we started, in its own process group."""

    def __init__(self, name, argv, log, env=None, cwd=None, user=None):
        self.name, self.argv, self.log, self.env, self.cwd, self.user = \
            name, argv, Path(log), env, cwd, user
        self.pid = self.st = None

    def start(self):
        argv = PGRP + self.argv
        if self.user:
            argv = ["setpriv", "--reuid=%s" % self.user, "--regid=%s" % self.user,
                    "--init-groups", "--"] + argv
        with open(self.log, "ab") as log:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd)
        self.popen = p
        self.pid = p.pid
        self.st = _starttime(p.pid)
        record(self.name, p.pid)
        return self

    def alive(self):
        if self.pid is None:
            return False
        if self.popen.poll() is not None:
            return False
        return alive(self.pid, self.st)

    def signal_group(self, sig):
        """The process and everything it started (its group, and descendants that left it)."""
        if not self.alive():
            return
        pids = [self.pid] + descendants(self.pid)
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass

    def kill(self):
        """SIGKILL, as a crash: the server and every process of it."""
        self.signal_group(signal.SIGKILL)
        self.wait(10)

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if not self.alive():
            return
        desc = descendants(self.pid)
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass
        if not self.wait(timeout):
            self.signal_group(signal.SIGKILL)
            self.wait(10)
        for p in desc:  # children that outlived it
            if alive(p):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def wait(self, timeout):
        try:
            self.popen.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False


def tcp_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# --- Redis Cluster -------------------------------------------------------------------------

class RedisCluster:
    def __init__(self, base, masters=3, replicas=1, node_timeout_ms=1500):
        self.dir = Path(base) / "redis-cluster"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.node_timeout_ms = node_timeout_ms
        self.nodes = {}  # port -> Proc
        n = masters * (1 + replicas)
        self.ports = [free_port() for _ in range(n)]
        try:
            self._create(replicas)
        except BaseException:
            self.stop()  # a failed start leaves nothing running
            raise

    def _create(self, replicas):
        for port in self.ports:
            self._start(port)
        for port in self.ports:
            wait_for(lambda: self.cli(port, "PING") == "PONG", 20, "redis %d" % port)
        out = subprocess.run(["redis-cli", "--cluster", "create"]
                             + ["127.0.0.1:%d" % p for p in self.ports]
                             + ["--cluster-replicas", str(replicas), "--cluster-yes"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        wait_for(self._ok, 30, "cluster_state:ok on every node")

    def _start(self, port):
        d = self.dir / str(port)
        d.mkdir(exist_ok=True)
        p = Proc("redis-cluster", [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d),
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms), "--save", "",
            "--appendonly", "yes", "--appendfsync", "everysec", "--daemonize", "no",
            "--logfile", str(d / "redis.log")], d / "stdout.log").start()
        self.nodes[port] = p
        return p

    def cli(self, port, *args):
        p = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port)] + list(args),
                           capture_output=True, text=True, timeout=15)
        return p.stdout.strip()

    def _ok(self):
        return all("cluster_state:ok" in self.cli(p, "CLUSTER", "INFO")
                   for p in self.ports if self.nodes[p].alive())

    def url(self, count=3):
        return "redis://" + ",".join("127.0.0.1:%d" % p for p in self.ports[:count]) + "/"

    def topology(self, via=None):
        """[(port, role, master_port_or_None, [slot ranges])] as CLUSTER NODES says."""
        for port in ([via] if via else self.ports):
            if not self.nodes[port].alive():
                continue
            text = self.cli(port, "CLUSTER", "NODES")
            if not text:
                continue
            ids = {}
            rows = []
            for line in text.splitlines():
                f = line.split()
                addr = int(f[1].split("@")[0].rsplit(":", 1)[1])
                ids[f[0]] = addr
                rows.append((addr, f[2], f[3], f[7], f[8:]))
            out = []
            for addr, flags, master, link, slots in rows:
                if "fail" in flags.split(",") or "noaddr" in flags:
                    continue
                role = "master" if "master" in flags else "replica"
                out.append((addr, role, ids.get(master), slots))
            return out
        raise AssertionError("no Redis node answers")

    def masters(self):
        return sorted(p for p, role, _, slots in self.topology() if role == "master" and slots)

    def replica_of(self, master):
        for p, role, m, _ in self.topology():
            if role == "replica" and m == master and self.nodes[p].alive():
                return p
        return None

    def clients(self):
        """A python3-redis client per live master."""
        import redis
        return {p: redis.Redis(host="127.0.0.1", port=p, decode_responses=True,
                               socket_timeout=10) for p in self.masters()}

    def master_of_key(self, key):
        slot = int(self.cli(self.masters()[0], "CLUSTER", "KEYSLOT", key))
        for p, role, _, slots in self.topology():
            if role != "master":
                continue
            for r in slots:
                if r.startswith("["):
                    continue
                lo, _, hi = r.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    return p
        return None

    def kill(self, port):
        self.nodes[port].kill()

    def restart(self, port):
        self._start(port)
        wait_for(lambda: self.cli(port, "PING") == "PONG", 20, "redis %d back" % port)

    def stop(self):
        for p in self.nodes.values():
            p.stop()


# --- RabbitMQ cluster ----------------------------------------------------------------------

def _rabbit_bin():
    for d in ("/usr/lib/rabbitmq/bin", "/usr/lib/rabbitmq/sbin"):
        if os.access(d + "/rabbitmq-server", os.X_OK):
            return d
    raise AssertionError("rabbitmq-server not installed (test/deps.sh)")


def amqp_ready(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"AMQP\x00\x00\x09\x01")
            return s.recv(8)[:1] == b"\x01"
    except OSError:
        return False


class RabbitNode:
    def __init__(self, cluster, i):
        self.cluster = cluster
        self.i = i
        self.port = free_port()
        self.dist = free_port()
        self.ctl = free_port()
        self.name = "chanced_scale_%d_%d@localhost" % (i, self.port)
        self.dir = cluster.dir / ("n%d" % i)
        for sub in ("mnesia", "log"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.proc = None

    def env(self):
        d, c = self.dir, self.cluster
        e = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        e.update({
            "HOME": str(c.home),  # the shared .erlang.cookie
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist),
            "RABBITMQ_CTL_DIST_PORT_MIN": str(self.ctl),
            "RABBITMQ_CTL_DIST_PORT_MAX": str(self.ctl),
            "ERL_EPMD_PORT": str(c.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_LOGS": str(d / "log" / "rabbit.log"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(d / "rabbit.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        })
        return e

    def start(self):
        d = self.dir
        peers = "".join("cluster_formation.classic_config.nodes.%d = %s\n" % (k + 1, n.name)
                        for k, n in enumerate(self.cluster.nodes))
        (d / "rabbitmq.conf").write_text(
            "listeners.tcp.default = 127.0.0.1:%d\nloopback_users = none\n"
            "disk_free_limit.absolute = 10MB\nlog.console = false\nlog.file.level = info\n"
            "cluster_formation.peer_discovery_backend = classic_config\n%s" % (self.port, peers))
        (d / "enabled_plugins").write_text("[].\n")
        (d / "rabbitmq-env.conf").write_text("")
        self.proc = Proc("rabbitmq-cluster", [_rabbit_bin() + "/rabbitmq-server"],
                         d / "log" / "stdout.log", env=self.env(), cwd=str(d)).start()
        return self

    def ready(self):
        return self.proc is not None and self.proc.alive() and amqp_ready(self.port)

    def ctl_cmd(self, *args, timeout=60):
        return subprocess.run([_rabbit_bin() + "/rabbitmqctl", "-n", self.name] + list(args),
                              env=self.env(), capture_output=True, text=True, timeout=timeout)

    def url(self):
        return "amqp://guest:guest@127.0.0.1:%d/" % self.port

    def kill(self):
        self.proc.kill()

    def stop(self):
        if self.proc is not None:
            self.proc.stop(timeout=30)


class RabbitCluster:
    def __init__(self, base, nodes=3):
        self.dir = Path(base) / "rabbit-cluster"
        self.home = self.dir / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(os.urandom(12).hex())
            cookie.chmod(0o400)
        self.epmd_port = free_port()
        self.epmd = Proc("epmd", ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                         self.dir / "epmd.log",
                         env=dict(os.environ, ERL_EPMD_ADDRESS="127.0.0.1")).start()
        wait_for(lambda: tcp_open(self.epmd_port), 10, "epmd")
        self.nodes = []
        for i in range(nodes):
            self.nodes.append(RabbitNode(self, i))
        try:
            self._create()
        except BaseException:
            self.stop()  # a failed start leaves nothing running
            raise

    def _create(self):
        for n in self.nodes:
            n.start()
        wait_for(lambda: all(n.ready() or not n.proc.alive() for n in self.nodes), 120,
                 "every RabbitMQ node to answer AMQP")
        for n in self.nodes:
            assert n.ready(), "RabbitMQ node %s did not start: see %s" % (n.name, n.dir / "log")
        wait_for(self._clustered, 60, "the RabbitMQ nodes to form one cluster", interval=1)

    def running_nodes(self, via=None):
        for n in ([via] if via else self.nodes):
            if not n.ready():
                continue
            p = n.ctl_cmd("eval", "rabbit_nodes:all_running().")
            if p.returncode == 0:
                return p.stdout.strip()
        return ""

    def _clustered(self):
        text = self.running_nodes(self.nodes[0])
        return all(n.name in text for n in self.nodes)

    def urls(self, order=None):
        nodes = [self.nodes[i] for i in order] if order else self.nodes
        return ",".join(n.url() for n in nodes)

    def leader(self, queue):
        """The node leading a quorum queue (rabbitmqctl list_queues ... leader)."""
        for n in self.nodes:
            if not n.ready():
                continue
            p = n.ctl_cmd("list_queues", "-q", "--no-table-headers", "name", "leader")
            if p.returncode != 0:
                continue
            for line in p.stdout.splitlines():
                f = line.split("\t")
                if len(f) == 2 and f[0] == queue:
                    for m in self.nodes:
                        if m.name == f[1].strip():
                            return m
        return None

    def stop(self):
        for n in self.nodes:
            n.stop()
        self.epmd.stop()


# --- PostgreSQL primary + streaming replica ------------------------------------------------

def _pg_bin():
    b = os.environ.get("CHANCED_TEST_PG_BIN")
    if b and os.access(b + "/initdb", os.X_OK):
        return b
    import glob
    cands = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda s: int(s.split("/")[4]))
    return cands[-1]


class PgPair:
    def __init__(self, base):
        self.bin = _pg_bin()
        self.dir = Path(base) / "pg-pair"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.user = "postgres" if os.getuid() == 0 else None
        if self.user:
            os.chmod(base, 0o755)
            subprocess.run(["chown", "-R", "postgres:postgres", str(self.dir)], check=True)
        self.ports = [free_port(), free_port()]
        self.procs = [None, None]
        try:
            self._create()
        except BaseException:
            self.stop()  # a failed start leaves nothing running
            raise

    def _create(self):
        primary = self.dir / "primary"
        self._run([self.bin + "/initdb", "-D", str(primary), "-A", "trust", "-U", "postgres",
                   "-E", "UTF8", "--no-locale", "--no-sync"])
        self._start(0, primary)
        self.psql(0, "CREATE ROLE chanced LOGIN CREATEDB", db="postgres")
        self.psql(0, "CREATE DATABASE chanced OWNER chanced", db="postgres")
        self._run([self.bin + "/pg_basebackup", "-h", "127.0.0.1", "-p", str(self.ports[0]),
                   "-U", "postgres", "-D", str(self.dir / "replica"), "-R", "-X", "stream", "-c", "fast",
                   "--no-sync"])
        self._start(1, self.dir / "replica")
        wait_for(lambda: self.psql(0, "SELECT count(*) FROM pg_stat_replication"
                                   " WHERE state = 'streaming'", db="postgres") == "1",
                 30, "the replica to stream")

    def _run(self, argv):
        if self.user:
            argv = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] + argv
        p = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=str(self.dir))
        assert p.returncode == 0, "%s: %s%s" % (argv, p.stdout, p.stderr)
        return p

    def _start(self, i, data):
        port = self.ports[i]
        self.procs[i] = Proc("postgres-%s" % ("primary", "replica")[i], [
            self.bin + "/postgres", "-D", str(data), "-k", str(self.dir), "-p", str(port),
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200",
            "-c", "wal_level=replica", "-c", "max_wal_senders=5", "-c", "hot_standby=on"],
            self.dir / ("postgres-%d.log" % i), cwd=str(self.dir), user=self.user).start()
        wait_for(lambda: subprocess.run([self.bin + "/pg_isready", "-q", "-h", "127.0.0.1", "-p",
                                         str(port)]).returncode == 0, 30, "postgres on %d" % port)

    def psql(self, i, sql, db="chanced"):
        p = subprocess.run([self.bin + "/psql", "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1",
                            "-h", "127.0.0.1", "-p", str(self.ports[i]), "-U", "postgres",
                            "-d", db, "-c", sql], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()

    def url(self, db="chanced"):
        return ("postgresql://chanced@127.0.0.1:%d,127.0.0.1:%d/%s?target_session_attrs=read-write"
                "&connect_timeout=3" % (self.ports[0], self.ports[1], db))

    def direct_url(self, i, db="chanced", user="chanced"):
        return "postgresql://%s@127.0.0.1:%d/%s" % (user, self.ports[i], db)

    def fail_over(self):
        """Stop the primary cleanly (it sends the standby its last WAL), promote the replica."""
        self.procs[0].stop(sig=signal.SIGINT)
        self.psql(1, "SELECT pg_promote(true, 30)", db="postgres")
        wait_for(lambda: self.psql(1, "SELECT pg_is_in_recovery()", db="postgres") == "f", 30,
                 "the replica to be promoted")

    def stop(self):
        for p in self.procs:
            if p is not None:
                p.stop(sig=signal.SIGINT)
