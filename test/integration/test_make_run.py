"""`make run`'s startup path: deploy/run.sh starts private servers and --role=all, prints the URL
and the admin password; a user signs up and claims over HTTP; SIGTERM stops everything."""

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent.parent


def http(method, url, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_make_run_serves_a_claim_and_stops_cleanly(chanced_bin, tmp_path):
    port = free_port()
    # PostgreSQL runs as the postgres user: the state directory must be reachable for it
    # (pytest's tmp_path is private to root).
    base = Path(tempfile.mkdtemp(prefix="chanced-makerun-", dir="/tmp"))
    base.chmod(0o755)
    run_dir = base / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANCED_")}
    env.update(CHANCED_RUN_NODEPS="1", CHANCED_RUN_NOBUILD="1", CHANCED_RUN_BIN=chanced_bin,
               CHANCED_RUN_PORT=str(port), CHANCED_RUN_DIR=str(run_dir))
    log = open(tmp_path / "run.out", "w+")
    proc = subprocess.Popen(["bash", str(ROOT / "deploy/run.sh")], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        text = ""
        while "chanced is running" not in text:
            assert proc.poll() is None, "make run exited early:\n" + text
            assert time.time() < deadline, "make run did not come up:\n" + text
            time.sleep(0.5)
            log.seek(0)
            text = log.read()
        url = re.search(r"chanced is running: (http://\S+?)/\s", text).group(1)
        pwfile = re.search(r"admin login: admin, password in (\S+) \(mode 0400\)", text).group(1)
        assert os.stat(pwfile).st_mode & 0o777 == 0o400, oct(os.stat(pwfile).st_mode)
        password = open(pwfile).read().strip()
        assert password and password not in text  # the password itself is shown nowhere
        api = url + "/api/v1"
        status, body = http("POST", api + "/auth/login", {"username": "admin", "password": password})
        assert status == 200, body
        admin = body["token"]
        status, body = http("POST", api + "/admin/batches",
                            {"categories": 2, "codes_per_category": 5, "reward_min": 1000,
                             "reward_max": 100000}, admin)
        assert status == 202, body
        for _ in range(600):  # the batch is being written: wait until it is ready
            if body["batch"]["state"] != "generating":
                break
            time.sleep(0.05)
            status, body = http("GET", api + "/admin/batches/%d" % body["batch"]["id"], token=admin)
        assert body["batch"]["state"] == "ready", body
        status, body = http("POST", api + "/auth/signup", {"username": "runner", "password": "a long enough pass"})
        assert status in (200, 201), body
        status, body = http("POST", api + "/auth/login", {"username": "runner", "password": "a long enough pass"})
        user = body["token"]
        status, cats = http("GET", api + "/categories", token=user)
        assert status == 200 and cats["items"], cats
        status, claim = http("POST", api + "/claims", {"category": cats["items"][0]["id"]}, user)
        assert status == 201, claim
        status, me = http("GET", api + "/me", token=user)
        assert me["balance"] == claim["reward"], me
        # that claim went to chance over mutual TLS, with certificates made on the first start
        conf = (run_dir / "chanced.conf").read_text()
        for key in ("rpc_tls_ca", "rpc_tls_cert", "rpc_tls_key"):
            assert re.search(r"^%s = %s/tls/" % (key, re.escape(str(run_dir))), conf, re.M), conf
        for key_file in (run_dir / "tls" / "all" / "key.pem", run_dir / "tls" / "ca" / "ca.key"):
            assert stat.S_IMODE(key_file.stat().st_mode) == 0o400, key_file
        chance = int(re.search(r"^chance_listen = 127\.0\.0\.1:(\d+)$", conf, re.M).group(1))
        with socket.create_connection(("127.0.0.1", chance), timeout=10) as s:
            s.sendall(b'56#{"pattern":{"cmd":"chance.categories"},"data":{},"id":1}')
            got = b""
            while True:  # chance ends the connection: the bytes are no TLS handshake
                try:
                    chunk = s.recv(4096)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                got += chunk
        assert got == b"" or got[:1] == b"\x15", got  # nothing, or a TLS alert record
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        rc = proc.wait(60)
        log.seek(0)
        out = log.read()
    assert rc in (0, 130, 143), out
    assert "stopping backing servers" in out
    pids = (run_dir / "servers" / "pids").read_text().split("\n") if (run_dir / "servers" / "pids").exists() else []
    for line in pids:
        parts = line.split()
        if len(parts) >= 2:
            assert not Path("/proc/%s" % parts[1]).exists() or \
                "Z" in Path("/proc/%s/stat" % parts[1]).read_text().split(")")[-1][:3], line
    assert pids, "no server was recorded"
    shutil.rmtree(base, ignore_errors=True)


def test_make_run_from_a_fresh_clone_installs_before_it_builds(tmp_path):
    """A new user's first command: `git clone` then `make run`, with no build directory. The
    installer must run before the first compile (on a new machine the headers come from it):
    here a stand-in installer leaves a mark and the compiler refuses to run without it, so a
    build that started first fails the test. Then the system must serve /readyz."""
    base = Path(tempfile.mkdtemp(prefix="chanced-fresh-", dir="/tmp"))
    base.chmod(0o755)
    clone = base / "src"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)], check=True)
    assert not (clone / "build").exists()
    mark = base / "deps-ran"
    fake_deps = base / "deps.sh"
    fake_deps.write_text("#!/bin/bash\necho 'deps.sh: (stand-in) installing'\ntouch %s\n" % mark)
    cc = base / "cc"
    cc.write_text("#!/bin/bash\n[ -e %s ] || { echo 'cc: called before the installer' >&2; "
                  "exit 97; }\nexec cc \"$@\"\n" % mark)
    cc.chmod(0o755)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANCED_")}
    env.update(CHANCED_RUN_DEPS=str(fake_deps), CC=str(cc), CHANCED_RUN_PORT=str(port),
               CHANCED_RUN_DIR=str(base / "run"))
    log = open(tmp_path / "run.out", "w+")
    proc = subprocess.Popen(["make", "run"], cwd=clone, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 300
        text = ""
        while "chanced is running" not in text:
            assert proc.poll() is None, "make run exited early:\n" + text
            assert time.time() < deadline, "make run did not come up:\n" + text
            time.sleep(0.5)
            log.seek(0)
            text = log.read()
        assert text.index("deps.sh: (stand-in)") < text.index("building build/chanced"), text
        url = re.search(r"chanced is running: (http://\S+?)/\s", text).group(1)
        with urllib.request.urlopen(url + "/readyz", timeout=10) as r:
            assert r.status == 200
            assert json.loads(r.read())["status"] == "ready"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        rc = proc.wait(60)
        log.seek(0)
        out = log.read()
    assert rc in (0, 2, 130, 143, -signal.SIGTERM), out
    assert "stopping backing servers" in out
    shutil.rmtree(base, ignore_errors=True)
