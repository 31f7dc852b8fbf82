"""The Dockerfile, built and run for real (no Docker engine needed).

test/image/image.sh builds the repository's Dockerfile with buildah (chroot isolation) on a
debootstrapped stand-in for debian:bookworm-slim, cached in buildah's storage between runs.  Then:

    test_roles_run_from_the_image   chance, logger and gateway each run from the image (its
        ENTRYPOINT plus compose.yaml's `command`) with `buildah run --isolation chroot --network
        host`, configured as compose.yaml configures their containers: its `environment`, the
        image's ENV, secrets as files at /run/secrets/NAME read through CHANCED_*_FILE, and the
        internal links' certificates that compose's `certs` one-shot makes in the image (twice:
        the second run changes nothing), each role mounting its own volume (a host directory).  Only the
        addresses change: every *_LISTEN becomes 127.0.0.1:<free port> and every *_ADDR the peer's
        port, because the containers share the host's network; the secret files hold the URLs of
        test/run.sh's servers.  compose.yaml's healthchecks gate the start order; the image's own
        HEALTHCHECK and `chanced healthcheck --role=ROLE` pass in each container; `chanced migrate`
        and the create-admin one-shot run in the image; an admin generates codes over HTTP, a user
        signs up and claims one, and the audit events of that claim reach MongoDB through the
        logger.  Each role then gets SIGTERM, as `docker stop` sends it, and must exit 0.
    test_kill_leaves_nothing        `buildah run` does not pass SIGTERM on (its child gets SIGKILL)
        and, killed itself, leaves the entrypoint running: the stop code here signals the
        entrypoint and kills every process of the run by PID; proven by killing `buildah run`.
    test_compose_environment        each chanced service's environment from compose.yaml, with
        secret files made by deploy/secrets/README.md's generator, passes `chanced config check`
        inside the image.

Every process is stopped by PID and every working container removed with `buildah rm`, pass or
fail; a process left inside a container fails the test.  Needs root, buildah, podman and
debootstrap (test/deps.sh).  The first run makes the base image and builds everything (about a
minute, network needed); later runs reuse buildah's layer cache (seconds).
"""

import json
import os
import re
import shlex
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
sys.path.insert(0, str(ROOT / "test" / "integration"))
from gwclient import request  # noqa: E402  (after the path is set)

STRICT = os.environ.get("CHANCED_TEST_STRICT") == "1"
IMAGE_SH = HERE / "image.sh"
COMPOSE = ROOT / "compose.yaml"
SECRETS_README = ROOT / "deploy" / "secrets" / "README.md"
OUTPUT = Path(os.environ.get("CHANCED_TEST_OUTPUT") or ROOT / "build" / "test-output") / "image"
ROLES = ("chance", "logger", "gateway")
WORK_PREFIX = "chanced-imgtest-"  # image.sh clean removes working containers named so
BUILD_TIMEOUT = 1800
STOP_GRACE = 20.0  # compose.yaml's stop_grace_period
START_TIMEOUT = 90.0


def need(condition, why):
    """Skip, or fail under CHANCED_TEST_STRICT=1 (make test), when something is missing."""
    if not condition:
        if STRICT:
            pytest.fail(why, pytrace=False)
        pytest.skip(why)


def need_env(name):
    value = os.environ.get(name)
    need(value, "%s is not set: run the tests with `make test` (test/run.sh starts the servers)"
         % name)
    return value


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, n=40):
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()[-n:]
    except OSError:
        return "(no %s)" % path
    return "---- last %d lines of %s ----\n%s" % (len(lines), path, "\n".join(lines))


# --- processes, by PID, from /proc -----------------------------------------------------------

def stat(pid):
    """(state, ppid, starttime) of a process, or None once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            rest = f.read().rsplit(") ", 1)[1].split()
        return rest[0], int(rest[1]), rest[19]
    except (OSError, IndexError, ValueError):
        return None


def alive(pid, starttime):
    """The same process (not a recycled PID) still runs; a zombie has stopped running."""
    s = stat(pid)
    return s is not None and s[2] == starttime and s[0] != "Z"


def descendants(root):
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            s = stat(int(name))
            if s:
                children.setdefault(s[1], []).append(int(name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0")[:-1]]
    except OSError:
        return []


def processes_under(root_dir):
    """Live processes whose root directory is root_dir: what still runs inside one `buildah
    run` (each run chroots into a fresh /var/tmp/buildahNNN/mnt/rootfs)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                r = os.readlink("/proc/%s/root" % name)
            except OSError:
                continue
            if r == root_dir or r.startswith(root_dir + "/"):
                s = stat(int(name))
                if s and s[0] != "Z":
                    out.append((int(name), " ".join(cmdline(int(name)))))
    return out


def record_pid(name, pid):
    """Tell test/run.sh about the process, so that it is stopped even if this test cannot."""
    d = os.environ.get("CHANCED_TEST_DIR")
    s = stat(pid)
    if d and os.path.isdir(d) and s:
        with open(os.path.join(d, "pids"), "a") as f:
            f.write("%s %d %s\n" % (name, pid, s[2]))


class Run:
    """One `buildah run` in the background: buildah run -> buildah-chroot-runtime ->
    buildah-chroot-exec, which chroots and execs the command (the "entrypoint" below).

    buildah answers a SIGTERM or SIGINT by SIGKILLing the command, and when buildah run or the
    runtime is killed, the command keeps running (re-parented).  So stop() signals the command
    itself, as `docker stop` signals a container's PID 1, and kill() SIGKILLs every process of
    the run by PID (PIDs seen at any time, checked against their start time)."""

    def __init__(self, argv, exe, log_path, what):
        self.exe = exe
        self.what = what
        self.log_path = log_path
        self.seen = {}  # pid -> starttime: every process this run ever had
        self.entry = None  # PID of the command
        self.root = None  # its root directory, as the host sees it
        with open(log_path, "ab") as log:
            log.write(("==== %s\n" % shlex.join(argv)).encode())
            log.flush()
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        self._see(self.popen.pid)
        record_pid("buildah-run", self.popen.pid)

    def _see(self, pid):
        s = stat(pid)
        if s and s[0] != "Z":
            self.seen.setdefault(pid, s[2])

    def snapshot(self):
        for pid in descendants(self.popen.pid):
            self._see(pid)

    def find_entrypoint(self, timeout=30.0):
        """The PID of the command once buildah has exec'd it; fails if buildah run exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.snapshot()
            for pid in list(self.seen):
                argv = cmdline(pid)
                if argv and argv[0] == self.exe:
                    try:
                        self.root = os.readlink("/proc/%d/root" % pid)
                    except OSError:
                        continue
                    self.entry = pid
                    record_pid("chanced", pid)
                    return pid
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail("%s: %s never started (buildah run %s)\n%s"
                    % (self.what, self.exe, "exited with %s" % self.popen.returncode
                       if self.popen.poll() is not None else "still running", tail(self.log_path)),
                    pytrace=False)

    def running(self):
        return self.popen.poll() is None

    def stop(self, grace=STOP_GRACE):
        """SIGTERM to the entrypoint, up to `grace` seconds for buildah run to end (it exits
        with the command's exit code), then kill().  Returns buildah run's exit code, or None
        if it had to be killed."""
        self.snapshot()
        if self.entry and alive(self.entry, self.seen.get(self.entry, "")):
            os.kill(self.entry, signal.SIGTERM)
        try:
            rc = self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            rc = None
        self.kill()
        return rc

    def kill(self):
        """SIGKILL every process of the run still alive; waits until none is."""
        self.snapshot()
        deadline = time.monotonic() + 15
        while True:
            left = [p for p, st in self.seen.items() if alive(p, st)]
            if self.root:
                left += [p for p, _ in processes_under(self.root) if p not in left]
            if not left:
                break
            if time.monotonic() > deadline:
                raise AssertionError("%s: processes %s survive SIGKILL" % (self.what, left))
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
            self.snapshot()
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._forget_rundir()

    def leftovers(self):
        """Processes of this run still alive (by PID or by root directory)."""
        out = [(p, " ".join(cmdline(p))) for p, st in self.seen.items() if alive(p, st)]
        if self.root:
            out += [x for x in processes_under(self.root) if x[0] not in {p for p, _ in out}]
        return out

    def _forget_rundir(self):
        """buildah removes its /var/tmp/buildahNNN directory when it exits normally; after a
        kill it stays.  Removed only when nothing is mounted there and nothing runs in it."""
        if not self.root or not self.root.endswith("/mnt/rootfs"):
            return
        rundir = self.root[:-len("/mnt/rootfs")]
        if not re.fullmatch(r"/var/tmp/buildah\d+", rundir) or not os.path.isdir(rundir):
            return
        try:
            if os.path.ismount(self.root) or os.listdir(self.root) or processes_under(self.root):
                return
        except OSError:
            return
        shutil.rmtree(rundir, ignore_errors=True)


# --- the image -------------------------------------------------------------------------------

def buildah(*args, timeout=120, check=True):
    p = subprocess.run(["buildah"] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=timeout)
    if check and p.returncode != 0:
        pytest.fail("buildah %s: exit %d\n%s%s" % (shlex.join(args), p.returncode, p.stdout,
                                                 p.stderr), pytrace=False)
    return p


class Image:
    def __init__(self, image_id):
        self.id = image_id
        info = json.loads(buildah("inspect", "--type", "image", image_id).stdout)
        self.config = info["OCIv1"]["config"]
        self.docker_config = (info.get("Docker") or {}).get("config") or {}
        self.entrypoint = list(self.config.get("Entrypoint") or [])
        self.env = dict(e.split("=", 1) for e in self.config.get("Env") or [])
        hc = self.docker_config.get("Healthcheck") or {}
        self.healthcheck = list(hc.get("Test") or [])


@pytest.fixture(scope="module")
def image():
    need(shutil.which("buildah"), "buildah is missing (test/deps.sh installs it)")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    log = OUTPUT / "build.log"
    iidfile = OUTPUT / "image.id"
    iidfile.unlink(missing_ok=True)
    t0 = time.monotonic()
    with open(log, "wb") as f:
        try:
            p = subprocess.run([str(IMAGE_SH), "build", str(iidfile)], cwd=ROOT,
                               stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                               timeout=BUILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail("image.sh build took over %d s\n%s" % (BUILD_TIMEOUT, tail(log)),
                        pytrace=False)
    took = time.monotonic() - t0
    if p.returncode != 0:
        pytest.fail("test/image/image.sh build failed (exit %d)\n%s"
                    % (p.returncode, tail(log, 60)), pytrace=False)
    with open(log, "a") as f:
        f.write("==== image.sh build: %.1f s\n" % took)
    print("image built in %.1f s (log %s)" % (took, log))
    return Image(iidfile.read_text().strip())


@pytest.fixture(scope="module")
def compose():
    try:
        import yaml
    except ImportError:
        need(False, "python3-yaml is missing (test/deps.sh installs it)")
    return yaml.safe_load(COMPOSE.read_text())


def compose_service(compose, name):
    """environment (dict), secrets [(source, target path)], command (list), healthcheck test,
    cap_drop and tmpfs of one compose service."""
    svc = compose["services"][name]
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    env = {k: "" if v is None else str(v) for k, v in env.items()}
    secrets = []
    for s in svc.get("secrets") or []:
        source, target = (s, s) if isinstance(s, str) else (s["source"], s.get("target",
                                                                                s["source"]))
        secrets.append((source, target if target.startswith("/") else "/run/secrets/" + target))
    command = svc.get("command") or []
    if isinstance(command, str):
        command = shlex.split(command)
    tmpfs = svc.get("tmpfs") or []
    volumes = []  # (named volume, target, read-only)
    for v in svc.get("volumes") or []:
        parts = v.split(":") if isinstance(v, str) else [v["source"], v["target"]] + (
            ["ro"] if v.get("read_only") else [])
        volumes.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    entrypoint = svc.get("entrypoint") or []
    if isinstance(entrypoint, str):
        entrypoint = shlex.split(entrypoint)
    return {"env": env, "secrets": secrets, "command": [str(c) for c in command],
            "healthcheck": (svc.get("healthcheck") or {}).get("test"),
            "cap_drop": list(svc.get("cap_drop") or []),
            "tmpfs": [tmpfs] if isinstance(tmpfs, str) else list(tmpfs),
            "volumes": volumes, "entrypoint": [str(e) for e in entrypoint]}


def healthcheck_argv(test, what):
    """A compose/Docker healthcheck test as an argv (exec form only)."""
    if isinstance(test, list) and test and test[0] == "CMD":
        return [str(a) for a in test[1:]]
    pytest.fail("%s: healthcheck %r is not an exec-form [\"CMD\", ...] test" % (what, test),
                pytrace=False)


class Container:
    """A working container of the image (`buildah from`) with a container's settings: the
    environment added to the image's ENV, read-only files mounted (secrets), dropped
    capabilities and tmpfs mounts.  start() runs the entrypoint plus arguments in the background,
    like `docker run -d`; exec() runs a command to completion, like `docker exec`."""

    def __init__(self, image, label, log_dir, env=None, files=(), cap_drop=(), tmpfs=(),
                 volumes=()):
        self.image = image
        self.label = label
        self.name = "%s%s-%s" % (WORK_PREFIX, label, os.urandom(3).hex())
        self.log_path = Path(log_dir) / ("%s.log" % label)
        self.env = dict(env or {})
        self.files = list(files)
        self.volumes = list(volumes)  # (host directory, target, read-only)
        self.cap_drop = list(cap_drop)
        self.tmpfs = list(tmpfs)
        self.runs = []
        self.created = False
        buildah("from", "--pull=never", "--name", self.name, image.id)
        self.created = True

    def run_argv(self, argv):
        a = ["buildah", "run", "--isolation", "chroot", "--network", "host"]
        for k, v in self.env.items():
            a += ["--env", "%s=%s" % (k, v)]
        for host, target in self.files:
            a += ["--volume", "%s:%s:ro" % (host, target)]
        for host, target, ro in self.volumes:
            a += ["--volume", "%s:%s%s" % (host, target, ":ro" if ro else "")]
        for c in self.cap_drop:
            a += ["--cap-drop", c]
        for t in self.tmpfs:
            a += ["--mount", "type=tmpfs,destination=%s" % t]
        return a + [self.name, "--"] + list(argv)

    def start(self, args):
        argv = self.image.entrypoint + list(args)
        run = Run(self.run_argv(argv), argv[0], self.log_path, "%s (%s)" % (self.label,
                                                                            self.name))
        self.runs.append(run)
        run.find_entrypoint()
        return run

    def exec(self, argv, timeout=60):
        p = subprocess.run(self.run_argv(argv), stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=timeout)
        with open(self.log_path, "a") as log:
            log.write("==== exec %s: exit %d\n%s%s" % (shlex.join(argv), p.returncode, p.stdout,
                                                      p.stderr))
        return p

    def remove(self):
        problems = []
        for r in self.runs:
            try:
                r.kill()
            except AssertionError as e:
                problems.append(str(e))
            left = r.leftovers()
            if left:
                problems.append("%s: still running after the kill: %s" % (r.what, left))
        if self.created:
            p = buildah("rm", self.name, check=False)
            if p.returncode != 0:
                problems.append("buildah rm %s: %s" % (self.name, p.stderr.strip()))
            self.created = False
        return problems


@pytest.fixture
def containers(image, request):
    """Factory: containers(label, env=..., files=..., ...) -> Container.  At teardown, every run
    is killed by PID and every container removed, pass or fail; anything left fails the test."""
    log_dir = OUTPUT / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    made = []

    def make(label, **kw):
        c = Container(image, label, log_dir, **kw)
        made.append(c)
        return c

    yield make
    problems = []
    for c in reversed(made):
        problems += c.remove()
    if problems:
        pytest.fail("cleanup: " + "; ".join(problems), pytrace=False)


def write_secret(directory, name, value):
    path = Path(directory) / name
    path.write_text(value + "\n")
    path.chmod(0o444)  # the image runs as uid 10001
    return str(path)


# --- the roles from the image ----------------------------------------------------------------

@pytest.fixture
def fresh_database():
    """URL of a new PostgreSQL database on the test server, dropped afterwards."""
    import psycopg2
    url = need_env("CHANCED_TEST_POSTGRES_URL")
    name = "img_%s" % os.urandom(5).hex()
    admin = psycopg2.connect(url, connect_timeout=10)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute('CREATE DATABASE "%s" OWNER chanced' % name)
    yield url.rsplit("/", 1)[0] + "/" + name
    try:
        with admin.cursor() as cur:
            cur.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
    finally:
        admin.close()


@pytest.fixture
def amqp_queue():
    """A queue of this test's own (the test RabbitMQ is shared), deleted afterwards."""
    name = "chanced.test.image.%s" % os.urandom(5).hex()
    yield name
    try:
        import pika
        conn = pika.BlockingConnection(pika.URLParameters(os.environ["CHANCED_TEST_AMQP_URL"]))
        conn.channel().queue_delete(queue=name)
        conn.close()
    except Exception:  # never declared, or no broker: nothing to delete
        pass


def localize(services, image_env):
    """Each service's environment with compose's addresses moved to the loopback: every
    *_LISTEN (compose's and the image's ENV) gets a free 127.0.0.1 port, and every *_ADDR
    "service:port" the address that service now listens on."""
    listen = {}  # (service, container port) -> 127.0.0.1:port
    out = {}
    for name, spec in services.items():
        env = dict(spec["env"])
        for k in sorted(set(env) | set(image_env)):
            if k.endswith("_LISTEN"):
                value = env.get(k, image_env.get(k))
                port = value.rsplit(":", 1)[1]
                env[k] = "127.0.0.1:%d" % free_port()
                listen[(name, port)] = env[k]
        out[name] = env
    for name, env in out.items():
        for k, v in env.items():
            if k.endswith("_ADDR"):
                host, _, port = v.rpartition(":")
                if (host, port) not in listen:
                    pytest.fail("compose.yaml: %s of %s is %s, where no service listens"
                                % (k, name, v), pytrace=False)
                env[k] = listen[(host, port)]
    return out


def wait_healthy(container, run, argv, timeout=START_TIMEOUT):
    """Run the healthcheck in the container until it exits 0, as compose's
    `condition: service_healthy` waits."""
    deadline = time.monotonic() + timeout
    while True:
        p = container.exec(argv, timeout=30)
        if p.returncode == 0:
            return
        if not run.running():
            pytest.fail("%s exited (%s) before it was healthy\n%s"
                        % (run.what, run.popen.returncode, tail(run.log_path)), pytrace=False)
        if time.monotonic() > deadline:
            pytest.fail("%s: `%s` still exits %d after %.0f s\n%s%s\n%s"
                        % (run.what, shlex.join(argv), p.returncode, timeout, p.stdout, p.stderr,
                           tail(run.log_path)), pytrace=False)
        time.sleep(1)


def http(port, method, path, body=None, token=None, expect=(200,), headers=None):
    r = request(port, method, "/api/v1" + path, body=body, token=token, headers=headers)
    assert r.status in expect, "%s %s: %r" % (method, path, r)
    return r.json


def test_roles_run_from_the_image(image, compose, containers, fresh_database, amqp_queue,
                                  tmp_path):
    services = {name: compose_service(compose, name) for name in ROLES + ("create-admin",)}
    # the secrets: CHANCED_<KEY>_FILE holds what CHANCED_TEST_<KEY> names (the test servers),
    # with this test's own PostgreSQL and MongoDB databases; anything else a random password
    urls = {
        "CHANCED_POSTGRES_URL_FILE": fresh_database,
        "CHANCED_REDIS_URL_FILE": need_env("CHANCED_TEST_REDIS_URL"),
        "CHANCED_AMQP_URL_FILE": need_env("CHANCED_TEST_AMQP_URL"),
    }
    base, _, query = need_env("CHANCED_TEST_MONGO_URL").partition("?")
    urls["CHANCED_MONGO_URL_FILE"] = "%s/img_%s%s" % (base.rsplit("/", 1)[0], os.urandom(5).hex(),
                                                      "?" + query if query else "")
    secret_dir = tmp_path / "secrets"
    secret_dir.mkdir()
    secret_files = {}  # compose secret name -> host file
    for name, spec in services.items():
        by_target = {t: s for s, t in spec["secrets"]}
        for var, target in spec["env"].items():
            if var.endswith("_FILE") and var.startswith("CHANCED_"):
                assert target in by_target, "compose.yaml: %s of %s is %s, not a secret it " \
                    "mounts" % (var, name, target)
                assert var in urls, "compose.yaml: %s: no test value for %s" % (name, var)
                secret_files[by_target[target]] = write_secret(secret_dir, by_target[target],
                                                               urls[var])
    admin_password = "image test %s" % os.urandom(6).hex()
    for name, spec in services.items():
        for source, _ in spec["secrets"]:
            if source not in secret_files:  # the admin password
                secret_files[source] = write_secret(secret_dir, source, admin_password)
    envs = localize(services, image.env)
    for name in ("chance", "logger"):
        envs[name]["CHANCED_AMQP_QUEUE"] = amqp_queue  # not in compose: the broker is shared

    # compose's certs one-shot, run twice (the second run keeps everything): the internal
    # links' CA and certificates, one host directory per named volume, owned by the image's
    # uid as a new volume takes the owner of the image's directory
    certs = compose_service(compose, "certs")
    volume_dirs = {}
    for source, _, _ in certs["volumes"]:
        d = tmp_path / "volumes" / source
        d.mkdir(parents=True)
        os.chown(d, 10001, 10001)
        d.chmod(0o700)
        volume_dirs[source] = str(d)
    ctr_certs = containers("certs", cap_drop=certs["cap_drop"], tmpfs=certs["tmpfs"],
                           volumes=[(volume_dirs[s], t, ro) for s, t, ro in certs["volumes"]])
    made = None
    for i in (1, 2):
        p = ctr_certs.exec(certs["entrypoint"] + certs["command"])
        assert p.returncode == 0, "certs run %d: exit %d\n%s%s" % (i, p.returncode, p.stdout,
                                                                  p.stderr)
        files = {f: f.read_bytes() for f in sorted(Path(tmp_path / "volumes").rglob("*"))
                 if f.is_file()}
        assert made is None or files == made, "the second certs run changed files"
        made = files

    def container(name):
        spec = services[name]
        return containers(name, env=envs[name], cap_drop=spec["cap_drop"], tmpfs=spec["tmpfs"],
                          files=[(secret_files[s], t) for s, t in spec["secrets"]],
                          volumes=[(volume_dirs[s], t, ro) for s, t, ro in spec["volumes"]])

    assert image.entrypoint, "the image has no ENTRYPOINT"
    assert image.healthcheck, "the image has no HEALTHCHECK (built with --format docker?)"
    ctr, runs = {}, {}
    for name in ("chance", "logger"):  # compose: both before the gateway
        ctr[name] = container(name)
        runs[name] = ctr[name].start(services[name]["command"])
    for name in ("chance", "logger"):
        wait_healthy(ctr[name], runs[name],
                     healthcheck_argv(services[name]["healthcheck"], name))

    ctr["gateway"] = container("gateway")
    p = ctr["gateway"].exec(image.entrypoint + ["migrate"])
    assert p.returncode == 0, "chanced migrate in the image: exit %d\n%s%s" % (
        p.returncode, p.stdout, p.stderr)
    runs["gateway"] = ctr["gateway"].start(services["gateway"]["command"])
    wait_healthy(ctr["gateway"], runs["gateway"],
                 healthcheck_argv(services["gateway"]["healthcheck"], "gateway"))

    # the readiness probes, in each container: `chanced healthcheck --role=ROLE` and the image's
    # own HEALTHCHECK (no flag: it reads CHANCED_ROLE)
    for name in ROLES:
        for argv in (image.entrypoint + ["healthcheck", "--role=" + name],
                     healthcheck_argv(image.healthcheck, "the image")):
            p = ctr[name].exec(argv)
            assert p.returncode == 0, "%s: `%s` exits %d\n%s%s" % (
                name, shlex.join(argv), p.returncode, p.stdout, p.stderr)

    # compose's create-admin one-shot, twice (--if-missing: the second run changes nothing)
    ctr["create-admin"] = container("create-admin")
    for i in (1, 2):
        p = ctr["create-admin"].exec(image.entrypoint + services["create-admin"]["command"])
        assert p.returncode == 0, "create-admin run %d: exit %d\n%s%s" % (
            i, p.returncode, p.stdout, p.stderr)
    username = services["create-admin"]["command"][
        services["create-admin"]["command"].index("--username") + 1]

    # over HTTP: admin logs in and generates codes, a user signs up and claims one
    port = int(envs["gateway"]["CHANCED_HTTP_LISTEN"].rsplit(":", 1)[1])
    assert request(port, "GET", "/readyz").status == 200
    admin = http(port, "POST", "/auth/login", {"username": username, "password": admin_password})
    batch = http(port, "POST", "/admin/batches", {"categories": 1, "codes_per_category": 3,
                                                  "reward_min": 1000, "reward_max": 5000},
                 token=admin["token"], expect=(202,))
    batch = batch.get("batch", batch)
    for _ in range(600):  # 202: the codes are being written; wait until the batch is ready
        if batch["state"] != "generating":
            break
        time.sleep(0.05)
        batch = http(port, "GET", "/admin/batches/%d" % batch["id"], token=admin["token"],
                     expect=(200,))["batch"]
    assert batch["state"] == "ready", batch
    category = batch["categories"][0]
    user = http(port, "POST", "/auth/signup", {"username": "img_%s" % os.urandom(3).hex(),
                                               "password": "correct horse 1"}, expect=(201,))
    claim = http(port, "POST", "/claims", {"category": category}, token=user["token"],
                 headers={"Idempotency-Key": "image-test"}, expect=(201, 202))
    deadline = time.monotonic() + 30
    while claim["status"] != "credited":
        assert claim["status"] == "pending" and time.monotonic() < deadline, claim
        time.sleep(0.5)
        claim = http(port, "GET", "/claims/" + claim["claim_id"], token=user["token"])
    assert 1000 <= claim["reward"] <= 5000
    assert http(port, "GET", "/me", token=user["token"])["balance"] == claim["reward"]

    # the audit trail: code.assigned comes from chance through RabbitMQ to the logger,
    # claim.credited from the gateway's outbox; both end up in MongoDB and are read back
    # through the logger
    want = {"code.assigned", "claim.credited"}
    deadline = time.monotonic() + 60
    while True:
        items = http(port, "GET", "/admin/logs?limit=200", token=admin["token"])["items"]
        got = {i["type"] for i in items if (i.get("subject") or {}).get("code") == claim["code"]}
        if want <= got:
            break
        assert time.monotonic() < deadline, "audit events of claimed code %s: %s, want %s" % (
            claim["code"], sorted(got), sorted(want))
        time.sleep(0.5)

    # `docker compose stop`: SIGTERM to each container's process, 0 after draining
    for name in ("gateway", "logger", "chance"):
        rc = runs[name].stop()
        assert rc == 0, "%s: exit %s after SIGTERM (None: killed after %.0f s)\n%s" % (
            name, rc, STOP_GRACE, tail(runs[name].log_path))
        assert not runs[name].leftovers(), runs[name].leftovers()
        assert not processes_under(runs[name].root)


def test_kill_leaves_nothing(image, containers, amqp_queue):
    """Killing `buildah run` orphans the entrypoint; the cleanup still finds and stops it."""
    c = containers("chance", env={
        "CHANCED_ROLE": "chance",
        "CHANCED_CHANCE_LISTEN": "127.0.0.1:%d" % free_port(),
        "CHANCED_CHANCE_HEALTH_LISTEN": "127.0.0.1:%d" % free_port(),
        "CHANCED_REDIS_URL": need_env("CHANCED_TEST_REDIS_URL"),
        "CHANCED_AMQP_URL": need_env("CHANCED_TEST_AMQP_URL"),
        "CHANCED_AMQP_QUEUE": amqp_queue})
    run = c.start(["--role=chance"])
    entry, root = run.entry, run.root
    os.kill(run.popen.pid, signal.SIGKILL)
    run.popen.wait(timeout=10)
    time.sleep(0.5)
    assert alive(entry, run.seen[entry]), "the entrypoint died with buildah run: the " \
        "orphaning this test guards against no longer happens"
    run.kill()
    assert not run.leftovers() and not processes_under(root)
    assert not os.path.exists(root), "buildah's run directory %s was left behind" % root


# --- compose.yaml's environment, accepted by the binary in the image -------------------------

def generated_secrets(directory):
    """The secret files deploy/secrets/README.md's block writes, made in a scratch tree."""
    m = re.search(r"<!-- generate-secrets.*?-->\s*```sh\n(.*?)```", SECRETS_README.read_text(),
                  re.S)
    assert m, "%s: no ```sh block after <!-- generate-secrets -->" % SECRETS_README
    (directory / "deploy" / "secrets").mkdir(parents=True)
    for sub in ("redis", "rabbitmq"):  # the committed files the generator reads
        shutil.copytree(ROOT / "deploy" / sub, directory / "deploy" / sub)
    p = subprocess.run(["sh", "-c", m.group(1)], cwd=directory, capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, "secret generator: %s%s" % (p.stdout, p.stderr)
    return directory / "deploy" / "secrets"


@pytest.mark.parametrize("service", ROLES + ("create-admin",))
def test_compose_environment(image, compose, containers, service, tmp_path):
    svc = compose["services"].get(service)
    assert svc is not None, "compose.yaml has no service %s" % service
    spec = compose_service(compose, service)
    secrets_dir = generated_secrets(tmp_path)
    declared = compose.get("secrets") or {}
    files = []
    for source, target in spec["secrets"]:
        assert source in declared, "compose.yaml: secret %s is not declared" % source
        path = secrets_dir / Path(declared[source]["file"]).name
        assert path.is_file(), "the generator writes no %s" % path.name
        files.append((str(path), target))
    c = containers(service, env=spec["env"], files=files, cap_drop=spec["cap_drop"],
                   tmpfs=spec["tmpfs"])
    p = c.exec(image.entrypoint + ["config", "check"])
    out = p.stdout + p.stderr
    assert p.returncode == 0 and out.rstrip().endswith("# config ok"), \
        "%s: `chanced config check` with compose's environment: exit %d\n%s" % (
            service, p.returncode, out)
    # every CHANCED_* variable of the service is read (the key's source is "env") ...
    keys = {}
    for line in p.stdout.splitlines():
        m = re.match(r"^(\w+) = .*  # (\w+)$", line)
        if m:
            keys.setdefault(m.group(1), set()).add(m.group(2))
    for var in spec["env"]:
        if var.startswith("CHANCED_") and var != "CHANCED_ROLE":
            key = var[len("CHANCED_"):].lower()
            key = key[:-len("_file")] if key.endswith("_file") else key
            assert "env" in keys.get(key, set()), "%s: %s is not read (config check: %s = %s)" \
                % (service, var, key, keys.get(key))
    # ... and no secret shows
    for path, _ in files:
        for word in re.findall(r"[0-9a-f]{48}", Path(path).read_text()):
            assert word not in out, "%s: a secret from %s is printed" % (service, path)
