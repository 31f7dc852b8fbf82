"""docs/protocol.md, section "Joining from NestJS": every code block marked
`<!-- snippet: NAME -->` there is run here with node, exactly as written (the text between the
fences, saved as NAME.js), against real chance and logger roles and the test RabbitMQ.  The doc
is the single source of truth: change a snippet there and this test runs the new text.

The snippets take their addresses from the environment (AMQP_URL, AMQP_QUEUE, CHANCE_PORT,
LOGGER_PORT, ...); node finds @nestjs/* in test/interop/node_modules through NODE_PATH
(`npm ci` in test/interop, as test/deps.sh does).  Each run's NAME.js, stdout and stderr are
kept in the test's output directory.

    CHANCED_BIN=build/san/chanced CHANCED_UNIT_DIR=/nonexistent \
        CHANCED_PYTEST_PATHS=test/interop/test_nest_snippets.py bash test/run.sh
"""

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
INTEROP = ROOT / "test" / "interop"
DOC = ROOT / "docs" / "protocol.md"
SNIPPETS = ("rmq-emit", "rmq-emit-declare", "rmq-default-fails", "tcp-chance", "tcp-logger",
            "tcp-tls")


def _load_integration_fixtures():
    """test/integration/conftest.py (daemons, servers, queues) as a module of its own: pytest
    only applies a conftest to its own directory.  Loading it also puts test/integration on
    sys.path, for nest.py and loggerkit.py."""
    spec = importlib.util.spec_from_file_location(
        "chanced_integration_conftest", ROOT / "test" / "integration" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


_fx = _load_integration_fixtures()
from loggerkit import call, drain, http_get, queue_depth, store, wait_ready, wait_until  # noqa: E402
from chancekit import generate_ready  # noqa: E402
from nest import NestClient  # noqa: E402

# the fixtures used here, and the ones they depend on, re-exported for pytest
chanced = _fx.chanced
chanced_bin = _fx.chanced_bin
test_output_dir = _fx.test_output_dir
output_dir = _fx.output_dir
amqp_queue = _fx.amqp_queue
amqp_url = _fx.amqp_url
redis_url = _fx.redis_url
redis_client = _fx.redis_client
mongo_url = _fx.mongo_url
__all__ = ["store"]

NO_HANDLER = "There is no matching message handler defined in the remote service."
# docs/protocol.md, `chance.categories`
CATEGORY_KEYS = {"id", "name", "batch", "total", "remaining", "assigned", "paid_out", "reward_min",
                 "reward_max", "reward_step", "per_user_limit", "starts_at", "ends_at", "enabled",
                 "claimable", "created_at"}
CLAIM_KEYS = {"code", "category", "reward", "assigned_at", "claim_id", "replay", "per_user_limit"}


# ---- the doc's blocks and running them -----------------------------------------------------

def doc_blocks(kind):
    """{name: text} of the fenced blocks marked `<!-- KIND: name -->` in docs/protocol.md."""
    text = DOC.read_text(encoding="utf-8")
    out = {}
    for m in re.finditer(r"^<!-- %s: ([A-Za-z0-9_-]+) -->\n```[a-z]*\n(.*?)\n```$" % kind, text,
                         re.M | re.S):
        assert m.group(1) not in out, "%s block %r twice in %s" % (kind, m.group(1), DOC)
        out[m.group(1)] = m.group(2) + "\n"
    return out


@pytest.fixture(scope="module")
def snippets():
    got = doc_blocks("snippet")
    missing = [n for n in SNIPPETS if n not in got]
    assert not missing, "docs/protocol.md lost the snippet(s) %s" % missing
    return got


@pytest.fixture(scope="module")
def node():
    exe = shutil.which("node")
    have_modules = (INTEROP / "node_modules" / "@nestjs" / "microservices").is_dir()
    if exe and have_modules:
        return exe
    msg = ("node is not installed" if not exe else
           "test/interop/node_modules is missing: run `npm ci` in test/interop (test/deps.sh does)")
    if _fx.STRICT:
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


@pytest.fixture
def run_snippet(node, snippets, test_output_dir):
    """run_snippet(name, **env) -> CompletedProcess of `node NAME.js` (text, 60 s at most)."""
    runs = {}

    def run(name, timeout=60, **env):
        runs[name] = runs.get(name, 0) + 1
        stem = "%s-%d" % (name, runs[name])
        path = test_output_dir / (stem + ".js")
        path.write_text(snippets[name], encoding="utf-8")
        full = {k: v for k, v in os.environ.items() if not k.startswith("CHANCED_")}
        full.pop("NODE_OPTIONS", None)
        full["NODE_PATH"] = str(INTEROP / "node_modules")
        full["NO_COLOR"] = "1"  # plain Nest log lines in the saved stderr
        full.update({k: str(v) for k, v in env.items()})
        p = subprocess.run([node, str(path)], cwd=str(test_output_dir), env=full,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
        (test_output_dir / (stem + ".out")).write_text(p.stdout, encoding="utf-8")
        (test_output_dir / (stem + ".err")).write_text(p.stderr, encoding="utf-8")
        return p

    return run


def lines(p):
    """The JSON objects a snippet printed, one a line."""
    return [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]


def show(p):
    return "exit %d\n--- stdout\n%s--- stderr\n%s" % (p.returncode, p.stdout, p.stderr[-3000:])


# ---- ClientRMQ -----------------------------------------------------------------------------

def test_rmq_snippets_store_events_and_the_default_client_crashes(
        chanced, store, amqp_url, amqp_queue, run_snippet):
    lg = chanced("logger", mongo_url=store[0])
    wait_ready(lg)
    env = {"AMQP_URL": amqp_url, "AMQP_QUEUE": amqp_queue}

    # the documented failure: a default ClientRMQ re-declares the queue without its arguments
    p = run_snippet("rmq-default-fails", **env)
    expected = doc_blocks("output")["rmq-default-fails"].strip().replace("chanced.events", amqp_queue)
    assert p.returncode == 1 and expected in p.stderr and p.stdout == "", show(p)

    # the two working configurations
    p = run_snippet("rmq-emit", INVOICE_ID="INV-A", **env)
    assert p.returncode == 0, show(p)
    [e1] = lines(p)
    assert e1["_id"] == "billing:invoice.paid:INV-A"
    p = run_snippet("rmq-emit-declare", INVOICE_ID="INV-B", **env)  # exactly chanced's arguments
    assert p.returncode == 0, show(p)
    [e2] = lines(p)

    wait_until("both emitted events stored",
               lambda: len(call(lg, "log.query", {"service": "billing"})["items"]) == 2)
    wait_until("queue drained", lambda: queue_depth(amqp_url, amqp_queue)[0] == 0)
    assert drain(amqp_url, amqp_queue + ".dlq") == []  # nothing was refused by the logger

    # read back with the ClientTCP snippet, one event per page: newest first, stored as sent
    p = run_snippet("tcp-logger", LOGGER_PORT=lg.port, PAGE_SIZE=1)
    assert p.returncode == 0, show(p)
    [out] = lines(p)
    assert out["items"] == sorted([e1, e2], key=lambda e: (e["ts"], e["_id"]), reverse=True)


def test_rmq_no_assert_drops_silently_when_the_queue_is_missing(amqp_url, amqp_queue, run_snippet):
    """The caveat of noAssert in the doc: no queue, no error, no message."""
    import pika
    missing = amqp_queue + ".absent"
    p = run_snippet("rmq-emit", AMQP_URL=amqp_url, AMQP_QUEUE=missing)
    assert p.returncode == 0 and lines(p), show(p)
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            conn.channel().queue_declare(missing, passive=True)
        assert exc.value.reply_code == 404
    finally:
        if conn.is_open:
            conn.close()


def test_default_client_first_leaves_chanced_unable_to_declare(
        chanced, store, redis_client, amqp_url, amqp_queue, run_snippet):
    """The doc's warning: a default ClientRMQ on a broker where chanced never ran creates the
    queue as a classic one; chanced's roles then cannot declare it."""
    p = run_snippet("rmq-default-fails", AMQP_URL=amqp_url, AMQP_QUEUE=amqp_queue)
    assert p.returncode == 0 and len(lines(p)) == 1, show(p)  # no queue yet: it "works"
    refused = r"PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange'"
    lg = chanced("logger", mongo_url=store[0])
    lg.wait_log(r'"event":"amqp_unavailable".*' + refused, timeout=30)
    assert http_get(lg.addr("logger_health_listen"), "/readyz")[0] == 503
    ch = chanced("chance")
    ch.wait_log(r'"event":"relay_amqp_unavailable".*' + refused, timeout=30)
    assert queue_depth(amqp_url, amqp_queue)[0] == 1  # the event waits, unconsumed
    # until the queue is deleted (with the event in it): then the logger declares it and serves
    import pika
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        conn.channel().queue_delete(queue=amqp_queue)
    finally:
        conn.close()
    wait_ready(lg)
    assert call(lg, "log.query", {})["items"] == []


# ---- ClientTCP -----------------------------------------------------------------------------

class SilentServer:
    """Accepts connections, reads everything, never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    @staticmethod
    def _drain(conn):
        with conn:
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass

    def close(self):
        self.sock.close()


def test_tcp_chance_snippet(chanced, redis_client, run_snippet):
    ch = chanced("chance")
    with NestClient(*ch.hostport(), timeout=60) as c:
        batch = generate_ready(c, {
            "categories": 1, "codes_per_category": 5, "reward_min": 1000, "reward_max": 5000,
            "reward_step": 1000, "name": "docs",
            "actor": {"id": "1", "username": "admin", "role": "admin"}})
    cat = batch["categories"][0]

    p = run_snippet("tcp-chance", CHANCE_PORT=ch.port)
    assert p.returncode == 0, show(p)
    out = {}
    for obj in lines(p):
        out.update(obj)
    page = out["categories"]
    assert [i["id"] for i in page["items"]] == [cat] and page["next_cursor"] is None, out
    assert CATEGORY_KEYS <= set(page["items"][0]), sorted(CATEGORY_KEYS - set(page["items"][0]))
    claim, again = out["claim"], out["again"]
    assert set(claim) == CLAIM_KEYS, claim
    assert claim["category"] == cat and claim["replay"] is False
    assert again == dict(claim, replay=True)
    assert out["refused"] == {"code": "category_not_found",
                              "message": "claim refused: category_not_found"}
    with NestClient(*ch.hostport()) as c:
        item = c.call("chance.code", {"code": claim["code"]})
        # "chanced also accepts the bare string" as the pattern
        assert c.call_pattern("chance.code", {"code": claim["code"]}) == item
    assert item["status"] == "assigned" and item["user_id"] == "42" \
        and item["claim_id"] == claim["claim_id"], item

    # the failures the doc lists: nobody listening, nobody answering, a pattern chance lacks
    port = _fx.free_port()
    p = run_snippet("tcp-chance", CHANCE_PORT=port)
    assert p.returncode == 1 and p.stdout == "" \
        and p.stderr == "ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:%d\n" % port, show(p)
    silent = SilentServer()
    try:
        p = run_snippet("tcp-chance", CHANCE_PORT=silent.port, RPC_TIMEOUT_MS=700)
    finally:
        silent.close()
    assert p.returncode == 1 and p.stdout == "" \
        and p.stderr == "TimeoutError: Timeout has occurred\n", show(p)
    p = run_snippet("tcp-logger", LOGGER_PORT=ch.port)  # log.query sent to chance
    assert p.returncode == 1 and p.stderr == "Error: %s\n" % NO_HANDLER, show(p)


# ---- ClientTCP over mutual TLS -------------------------------------------------------------

def gen_certs(top, *roles):
    p = subprocess.run(["sh", str(ROOT / "deploy" / "gen-certs.sh"), str(top)] + list(roles),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return top


def tls_keys(d, role):
    return {"rpc_tls_ca": str(d / role / "ca.crt"), "rpc_tls_cert": str(d / role / "cert.pem"),
            "rpc_tls_key": str(d / role / "key.pem")}


def test_tcp_tls_snippet(chanced, redis_client, store, run_snippet, tmp_path):
    """The doc's tlsOptions client against chance and logger with mutual TLS; and each failure
    the doc names."""
    ca = gen_certs(tmp_path / "ca", "chance", "logger", "billing")
    other = gen_certs(tmp_path / "other", "billing")
    # a category to list (generated through a plain chance on the same Redis; its audit event
    # travels to the logger through RabbitMQ)
    plain = chanced("chance")
    with NestClient(*plain.hostport(), timeout=60) as c:
        batch = generate_ready(c, {
            "categories": 1, "codes_per_category": 3, "reward_min": 1000, "reward_max": 1000,
            "name": "tls", "actor": {"id": "1", "username": "admin", "role": "admin"}})
    ch = chanced("chance", chance_listen="0.0.0.0:%d" % _fx.free_port(), **tls_keys(ca, "chance"))
    lg = chanced("logger", mongo_url=store[0], **tls_keys(ca, "logger"))
    env = {"CHANCE_PORT": ch.port, "LOGGER_PORT": lg.port}

    out = None
    for _ in range(30):  # until the logger has stored the batch's audit event
        p = run_snippet("tcp-tls", TLS_DIR=ca / "billing", **env)
        assert p.returncode == 0, show(p)
        [out] = lines(p)
        if out["events"]["items"]:
            break
        time.sleep(1)
    assert [i["id"] for i in out["categories"]["items"]] == batch["categories"], out
    assert out["events"]["items"][0]["type"] == "batch.generated", out

    def fails_with(p, logged):
        assert p.returncode == 1 and p.stdout == "", show(p)
        assert p.stderr.endswith("Error: Connection closed\n"), show(p)
        assert logged in p.stderr, show(p)

    # a certificate chanced's CA did not sign: chanced refuses the client
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(ca / "billing" / "ca.crt", mixed / "ca.crt")
    for f in ("cert.pem", "key.pem"):
        shutil.copy(other / "billing" / f, mixed / f)
    fails_with(run_snippet("tcp-tls", TLS_DIR=mixed, **env), "ERR_SSL_TLSV1_ALERT_UNKNOWN_CA")
    # a CA that did not sign chanced's certificate: the client refuses chanced
    fails_with(run_snippet("tcp-tls", TLS_DIR=other / "billing", **env),
               "SELF_SIGNED_CERT_IN_CHAIN")
    # an address the certificate does not name (127.0.0.2 reaches the 0.0.0.0 listener)
    fails_with(run_snippet("tcp-tls", TLS_DIR=ca / "billing", CHANCE_HOST="127.0.0.2", **env),
               "ERR_TLS_CERT_ALTNAME_INVALID")
    # no tlsOptions at all: the plain ClientTCP snippet
    p = run_snippet("tcp-chance", CHANCE_PORT=ch.port)
    assert p.returncode == 1 and p.stdout == "" and \
        p.stderr.endswith("Error: Connection closed\n"), show(p)
