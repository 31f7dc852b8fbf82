"""The binary's command line, configuration sources, exit codes, signals and health port."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port
from chancekit import generate_ready, wait_batch
from nest import NestClient

ROOT = Path(__file__).resolve().parent.parent.parent


def run(chanced_bin, *args, env=None, stdin=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("CHANCED_")}
    e.update(env or {})
    return subprocess.run([chanced_bin, *args], capture_output=True, text=True, env=e,
                          input=stdin, timeout=60)


def test_help_and_version(chanced_bin):
    r = run(chanced_bin, "--help")
    assert r.returncode == 0 and "--role=gateway|chance|logger|all" in r.stdout
    r = run(chanced_bin, "--version")
    assert r.returncode == 0 and r.stdout.startswith("chanced ")


@pytest.mark.parametrize("args", [["--role=nope"], [], ["--bogus"], ["-x"], ["frobnicate"]])
def test_usage_errors_exit_64(chanced_bin, args):
    r = run(chanced_bin, *args)
    assert r.returncode == 64, (args, r.stdout, r.stderr)
    assert "usage" in r.stderr or "unknown" in r.stderr or "required" in r.stderr


@pytest.mark.parametrize("args,key", [
    (["--code_length=5"], "code_length"),
    (["--max_frame_bytes=abc"], "max_frame_bytes"),
    (["--redis_url=http://x"], "redis_url"),
    (["--chance_listen=nohostport"], "chance_listen"),
    (["--log_level=loud"], "log_level"),
    (["--no_such_key=1"], "no_such_key"),
])
def test_bad_config_exits_78_naming_the_key(chanced_bin, args, key):
    r = run(chanced_bin, "--role=chance", *args)
    assert r.returncode == 78, r.stderr
    assert key in r.stderr


def test_precedence_default_file_env_flag(chanced_bin, tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("# a comment\nmax_conns = 11\nframe_stall_ms = 2222\n"
                    "generate_chunk = 333\n")
    r = run(chanced_bin, "config", "check", "--config=%s" % conf, "--generate-chunk=444",
            env={"CHANCED_FRAME_STALL_MS": "3333", "CHANCED_GENERATE_CHUNK": "555"})
    assert r.returncode == 0, r.stderr
    lines = {l.split(" = ")[0]: l for l in r.stdout.splitlines() if " = " in l}
    assert lines["max_conns"] == "max_conns = 11  # file"
    assert lines["frame_stall_ms"] == "frame_stall_ms = 3333  # env"
    assert lines["generate_chunk"] == "generate_chunk = 444  # flag"
    assert lines["code_length"] == "code_length = 12  # default"


def test_secrets_redacted_and_read_from_files(chanced_bin, tmp_path):
    secret = tmp_path / "redis"
    secret.write_text("redis://:hunter2@10.0.0.9:6379/0\n")
    r = run(chanced_bin, "config", "check", env={"CHANCED_REDIS_URL_FILE": str(secret)})
    assert r.returncode == 0, r.stderr
    assert "hunter2" not in r.stdout
    assert "redis_url = (redacted)  # env" in r.stdout
    r = run(chanced_bin, "config", "check", env={"CHANCED_REDIS_URL_FILE": "/nonexistent"})
    assert r.returncode == 78 and "redis_url_file" in r.stderr


def test_config_file_errors(chanced_bin, tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("max_conns = 5\nthis line is not ini\n")
    r = run(chanced_bin, "config", "check", "--config=%s" % bad)
    assert r.returncode == 78 and ":2:" in r.stderr
    r = run(chanced_bin, "config", "check", "--config=%s" % (tmp_path / "missing.conf"))
    assert r.returncode == 78 and "cannot open" in r.stderr


def test_listen_failure_exits_69(chanced_bin, chanced, redis_client):
    ch = chanced("chance")
    r = run(chanced_bin, "--role=chance", "--chance_listen=%s" % ch.addr(),
            "--redis_url=%s" % os.environ["CHANCED_TEST_REDIS_URL"],
            "--chance_health_listen=127.0.0.1:%d" % free_port())
    assert r.returncode == 69, r.stdout + r.stderr
    assert "chance_listen_failed" in r.stdout


def http_get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_health_metrics_and_graceful_stop(chanced, chanced_bin, redis_client, servers):
    ch = chanced("chance")
    health = "http://%s" % ch.addr("chance_health_listen")
    assert http_get(health + "/livez")[0] == 200
    deadline = time.time() + 10
    while http_get(health + "/readyz")[0] != 200:
        assert time.time() < deadline
        time.sleep(0.1)
    with NestClient(*ch.hostport()) as c:
        generate_ready(c, {"categories": 1, "codes_per_category": 3, "reward_min": 1,
                           "reward_max": 5, "actor": {"id": 1, "username": "a"}})
        c.call("chance.claim", {"claim_id": "m1", "category": 1,
                                "user": {"id": 1, "username": "u"}})
    def scrape():
        status, text = http_get(health + "/metrics")
        assert status == 200
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out
    samples = scrape()
    assert samples['chanced_claims_total{outcome="assigned"}'] == 1
    assert samples['chanced_rpc_requests_total{role="chance",cmd="chance.claim",outcome="ok"}'] == 1
    assert samples['chanced_dependency_up{role="chance",dependency="redis"}'] == 1
    deadline = time.time() + 10  # per-category gauges refresh every 5 s
    while samples.get('chanced_codes_remaining{category="1"}') != 2:
        assert time.time() < deadline, samples
        time.sleep(0.5)
        samples = scrape()
    assert any(k.startswith("chanced_rpc_request_duration_seconds_bucket") for k in samples)
    # the healthcheck subcommand agrees with /readyz
    r = run(chanced_bin, "healthcheck", "--role=chance", "--chance_health_listen=%s" % ch.addr("chance_health_listen"))
    assert r.returncode == 0, r.stderr
    # Redis down: not ready (503 with a reason), still live
    servers.redis.stop()
    deadline = time.time() + 10
    while True:
        status, body = http_get(health + "/readyz")
        if status == 503:
            break
        assert time.time() < deadline
        time.sleep(0.1)
    assert json.loads(body)["reason"] == "redis unreachable"
    assert http_get(health + "/livez")[0] == 200
    r = run(chanced_bin, "healthcheck", "--role=chance", "--chance_health_listen=%s" % ch.addr("chance_health_listen"))
    assert r.returncode == 1
    servers.redis.start()
    deadline = time.time() + 15
    while http_get(health + "/readyz")[0] != 200:
        assert time.time() < deadline, "did not become ready again"
        time.sleep(0.2)
    ch.stop()  # SIGTERM: must exit 0 (checked by stop) within the bound
    assert "process_exit" in ch.log_text()


def test_sighup_reloads_log_level(chanced, redis_client, tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("log_level = info\n")
    ch = chanced("chance", args=["--config=%s" % conf])
    conf.write_text("log_level = debug\n")
    os.kill(ch.pid, signal.SIGHUP)
    ch.wait_log(r"reloaded.*log_level=debug")
    with NestClient(*ch.hostport()) as c:
        c.call("chance.categories", {})
    ch.wait_log(r"rpc_conn_open")  # a debug line: the new level is in force
    conf.write_text("log_level = shout\n")
    os.kill(ch.pid, signal.SIGHUP)
    ch.wait_log(r"reload_failed")  # a bad file keeps the old config and the daemon running
    assert ch.running()


def test_sigterm_hands_a_batch_in_progress_over(chanced, redis_client):
    """A stop does not wait for a long generation: the driver gives its lease back and the
    next chance instance (here the same one, restarted) finishes the batch, without a
    duplicate code or a second batch."""
    ch = chanced("chance", generate_chunk=20)
    c = NestClient(*ch.hostport(), timeout=60)
    batch = c.call("chance.generate", {"categories": 2, "codes_per_category": 40000,
                                       "reward_min": 1, "reward_max": 9,
                                       "actor": {"id": 1, "username": "a"}})["batch"]
    time.sleep(0.1)
    c.close()
    started = time.monotonic()
    os.kill(ch.pid, signal.SIGTERM)
    assert ch.wait_exit(30) == 0
    assert time.monotonic() - started < 5
    state = redis_client.hgetall("chance:{g}:batch:%d" % batch["id"])
    assert state["state"] == "generating", state
    ch.start()
    with NestClient(*ch.hostport(), timeout=60) as c2:
        done = wait_batch(c2, c2.call("chance.batch", {"id": batch["id"]})["batch"])
    assert done["state"] == "ready" and done["codes_written"] == 80000
    index = sum(redis_client.hlen(k) for k in redis_client.scan_iter("chance:{i*}:codes"))
    assert index >= 80000  # (a chunk cut short by the stop may leave an unused reservation)
    for cat in batch["categories"]:
        assert redis_client.hlen("chance:{c%d}:codes" % cat) == 40000
        assert redis_client.scard("chance:{c%d}:free" % cat) == 40000
    assert redis_client.scard("chance:{g}:active") == 0


def _raw_health_request(hostport, request):
    """Sends raw bytes to a health port; returns the status code, or None if the port closed
    the connection without an answer."""
    host, port = hostport.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        try:
            s.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.") else None


def test_health_port_bounds_headers_and_bodies(chanced, redis_client):
    """The health port is evhttp too: a 64 KiB header or a 1 MiB body is refused, not buffered
    (and the port keeps answering)."""
    ch = chanced("chance")
    hp = ch.addr("chance_health_listen")
    big_header = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 65536 + b"\r\n\r\n"
    assert _raw_health_request(hp, big_header) in (None, 400, 413, 431)
    big_body = (b"GET /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n" +
                b"b" * 1048576)
    assert _raw_health_request(hp, big_body) in (None, 400, 413)
    assert _raw_health_request(hp, b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n") == 200
