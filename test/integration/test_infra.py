"""Tests of the test infrastructure itself: the NestJS frame codec and client in nest.py, the
private servers started by test/run.sh, and the Daemon fixture.  If these fail, no other
integration result can be trusted."""

import json
import os
import signal
import socket
import textwrap
import threading
import time
from pathlib import Path

import pytest

from nest import (FrameDecoder, FrameError, NestClient, NestClosed, NestError, encode_frame,
                  encode_text, utf16_len)

ROOT = Path(__file__).resolve().parent.parent.parent
FRAMES = ROOT / "test" / "data" / "nest_frames.txt"


# --- frame codec ---------------------------------------------------------------------------

def test_encode_ascii_frame():
    assert encode_frame({"a": "b"}) == b'9#{"a":"b"}'
    assert encode_frame({"pattern": {"cmd": "x"}, "data": None, "id": 7}) == \
        b'42#{"pattern":{"cmd":"x"},"data":null,"id":7}'


@pytest.mark.parametrize("text,units", [
    ("a", 1), ("é", 1), ("س", 1), ("✓", 1), ("—", 1), ("🎉", 2), ("👨‍👩‍👧", 8), ("a🎉b", 4), ("", 0),
])
def test_utf16_length(text, units):
    assert utf16_len(text) == units
    # raw UTF-8 frame: the prefix counts UTF-16 units, not bytes
    frame = encode_frame(text, ascii_only=False)
    prefix, body = frame.split(b"#", 1)
    assert int(prefix) == units + 2  # the quotes
    assert body.decode("utf-8") == json.dumps(text, ensure_ascii=False)


def test_encode_escapes_non_ascii_so_length_equals_bytes():
    obj = {"name": "سلام دنیا", "emoji": "🎉", "mixed": "a—b ✓ é"}
    frame = encode_frame(obj)
    prefix, body = frame.split(b"#", 1)
    assert int(prefix) == len(body)
    assert body.isascii()
    assert b"\\ud83c\\udf89" in body  # surrogate pair for U+1F389
    assert json.loads(body) == obj
    # the same value as Node sends it: shorter prefix than bytes
    raw = encode_frame(obj, ascii_only=False)
    rprefix, rbody = raw.split(b"#", 1)
    assert int(rprefix) == utf16_len(rbody.decode()) < len(rbody)


def _captured_frames():
    if not FRAMES.exists():
        pytest.fail("%s is missing (written by test/interop/capture_frames.js)" % FRAMES)
    out = []
    # split on LF only: frames contain U+2028, which str.splitlines() treats as a line break
    for line in FRAMES.read_text(encoding="utf-8").split("\n"):
        if line.strip() and not line.startswith("#"):
            label, frame = line.split("\t", 1)
            out.append((label, frame.encode("utf-8")))
    assert len(out) > 20
    return out


def test_decoder_on_real_nest_frames():
    """Every frame captured from @nestjs/microservices decodes to exactly one message, and our
    encoder reproduces it byte for byte (Node style or chanced's escaped style)."""
    for label, frame in _captured_frames():
        dec = FrameDecoder()
        msgs = dec.feed(frame)
        assert len(msgs) == 1 and dec.pending() == b"", label
        text = frame.split(b"#", 1)[1].decode("utf-8")
        assert msgs[0] == json.loads(text), label
        assert frame in (encode_frame(msgs[0], ascii_only=False), encode_frame(msgs[0])), label


def test_decoder_split_at_every_offset_and_byte_by_byte():
    frames = _captured_frames()
    for label, frame in frames:
        want = FrameDecoder().feed(frame)
        for cut in range(1, len(frame)):
            dec = FrameDecoder()
            got = dec.feed(frame[:cut])
            got += dec.feed(frame[cut:])
            assert got == want, "%s split at %d" % (label, cut)
        dec = FrameDecoder()
        got = []
        for i in range(len(frame)):
            got += dec.feed(frame[i:i + 1])
        assert got == want, label
    # all of them pipelined in one buffer, then fed in odd-sized chunks
    stream = b"".join(f for _, f in frames)
    want = [FrameDecoder().feed(f)[0] for _, f in frames]
    assert FrameDecoder().feed(stream) == want
    dec, got = FrameDecoder(), []
    for i in range(0, len(stream), 7):
        got += dec.feed(stream[i:i + 7])
    assert got == want and dec.pending() == b""


def test_decoder_waits_for_incomplete_frames():
    dec = FrameDecoder()
    assert utf16_len('{"a":"🎉"}') == 10
    assert dec.feed(b"1") == []
    assert dec.feed(b"0#") == []
    assert dec.feed(b'{"a":"\xf0\x9f') == []  # half of the emoji
    assert dec.feed(b'\x8e\x89"}4#"') == [{"a": "🎉"}]
    assert dec.pending() == b'4#"'
    assert dec.feed(b'\xf0\x9f\x8e\x89"') == ["🎉"]  # 4 units: quote, pair, quote


@pytest.mark.parametrize("data", [
    b"abc#{}",                    # not a number
    b"#{}",                       # empty length
    b"-1#{}",                     # sign
    b" 2#{}",                     # space
    b"1234567890123",             # no '#' in sight
    b"3#{x}",                     # bad JSON
    b'6#{"a":1}',                 # one unit short: '{"a":1' is not JSON
    b'2#"\xf0\x9f\x8e\x89"',      # 2 units end inside the surrogate pair
    b'3#"\xff"',                  # not UTF-8
    b'3#"\xc3"',                  # truncated 2-byte sequence
    b'5#"\xe2\x9c"}',              # truncated 3-byte sequence
    b"11#",                       # over max_length=10
])
def test_decoder_rejects_malformed(data):
    dec = FrameDecoder(max_length=10)
    with pytest.raises(FrameError):
        dec.feed(data)
    with pytest.raises(FrameError):  # stays failed, as the connection would be closed
        dec.feed(b"2#{}")


def test_encode_text_counts_units_not_bytes():
    assert encode_text('{"x":"\u00e9"}') == b'9#{"x":"\xc3\xa9"}'
    assert encode_text('"🎉"') == b'4#"\xf0\x9f\x8e\x89"'


# --- NestClient against a scripted in-process peer -----------------------------------------

class FakeNestServer:
    """Answers like a Nest microservice, deliberately out of order."""

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4)
        self.port = self.lsock.getsockname()[1]
        self.events = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        conn, _ = self.lsock.accept()
        dec = FrameDecoder()
        held = None
        with conn:
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                try:
                    msgs = dec.feed(data)
                except FrameError:
                    return  # Nest closes the connection on a malformed frame
                for m in msgs:
                    if "id" not in m:
                        self.events.append(m)
                        continue
                    cmd, mid, d = m["pattern"].get("cmd"), m["id"], m["data"]
                    out = []
                    if cmd == "echo":
                        out = [{"response": d, "isDisposed": True, "id": mid}]
                    elif cmd == "hold":  # answered after the next request
                        held = {"response": d, "isDisposed": True, "id": mid}
                    elif cmd == "stream":
                        out = [{"response": i, "id": mid} for i in range(d)]
                        out.append({"isDisposed": True, "id": mid})
                    elif cmd == "stream_last":
                        out = [{"response": 1, "id": mid}, {"response": 2, "isDisposed": True, "id": mid}]
                    elif cmd == "fail":
                        out = [{"err": {"code": "E_TEST", "message": d}, "isDisposed": True, "id": mid}]
                    else:
                        out = [{"id": mid, "status": "error",
                                "err": "There is no matching message handler defined in the remote service."}]
                    wire = b"".join(encode_frame(o, ascii_only=False) for o in out)
                    if held and cmd != "hold":
                        wire += encode_frame(held, ascii_only=False)
                        held = None
                    # dribble the bytes to exercise the client's reassembly
                    for i in range(0, len(wire), 5):
                        conn.sendall(wire[i:i + 5])


def test_nest_client_calls_streams_errors_and_events():
    srv = FakeNestServer()
    with NestClient("127.0.0.1", srv.port, timeout=5) as c:
        assert c.call("echo", {"t": "سلام 🎉"}) == {"t": "سلام 🎉"}
        held = c.request({"cmd": "hold"}, "first")
        assert c.call("echo", 2) == 2  # the reply to "hold" arrives after this one
        assert c.results(held) == ["first"]
        assert c.call_stream("stream", 3) == [0, 1, 2]
        assert c.call_stream("stream", 0) == []
        assert c.call("stream", 2) == 1  # last value
        assert c.call_stream("stream_last") == [1, 2]  # final message may carry a response
        with pytest.raises(NestError) as ei:
            c.call("fail", "boom")
        assert ei.value.err == {"code": "E_TEST", "message": "boom"}
        with pytest.raises(NestError) as ei:
            c.call("nope")
        assert "no matching message handler" in ei.value.err
        assert c.call("echo", 5, msg_id=42) == 5  # numeric id, echoed as a number
        c.emit("note", {"x": 1})
        assert c.call("echo", None) is None
        assert srv.events == [{"pattern": {"cmd": "note"}, "data": {"x": 1}}]
        c.send_raw(b"oops#")
        assert c.wait_closed(timeout=5)
        with pytest.raises(NestClosed):
            c.call("echo", 1)


def test_nest_client_times_out():
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    with NestClient("127.0.0.1", lsock.getsockname()[1]) as c:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            c.call("echo", 1, timeout=0.5)
        assert time.monotonic() - t0 < 3
    lsock.close()


# --- the private servers -------------------------------------------------------------------

def test_redis_is_ours_and_flushed(redis_client):
    assert redis_client.ping()
    assert redis_client.dbsize() == 0
    redis_client.set("infra:k", "v")
    assert redis_client.get("infra:k") == "v"
    d = redis_client.config_get("dir")["dir"]
    assert d.startswith(os.environ["CHANCED_TEST_DIR"]), "Redis at %s is not the private one" % d
    assert redis_client.config_get("save")["save"] == ""


def test_postgres_is_ours(pg_conn, postgres_admin_url):
    import psycopg2
    with pg_conn.cursor() as cur:
        cur.execute("SELECT current_user, current_database()")
        assert cur.fetchone() == ("chanced", "chanced")
        cur.execute("CREATE TEMP TABLE infra (x int)")
        cur.execute("INSERT INTO infra VALUES (1), (2)")
        cur.execute("SELECT sum(x) FROM infra")
        assert cur.fetchone() == (3,)
    with psycopg2.connect(postgres_admin_url) as admin, admin.cursor() as cur:
        cur.execute("SHOW data_directory")
        d = cur.fetchone()[0]
        assert d.startswith(os.environ["CHANCED_TEST_DIR"]), d
        cur.execute("SELECT rolcreatedb, rolsuper FROM pg_roles WHERE rolname = 'chanced'")
        assert cur.fetchone() == (True, False)


def test_fresh_postgres_database(fresh_postgres_url):
    import psycopg2
    assert fresh_postgres_url.rsplit("/", 1)[1].startswith("t_")
    with psycopg2.connect(fresh_postgres_url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (x int)")  # chanced owns it
        cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert cur.fetchone() == (1,)


def test_pgbench_available(pg_bin):
    assert os.access(os.path.join(pg_bin, "pgbench"), os.X_OK)


def test_rabbitmq_is_ours_and_confirms(amqp_channel, amqp_queue):
    props = amqp_channel.connection._impl.server_properties
    # the default cluster name is the node name with the machine's host name
    node = os.environ["CHANCED_TEST_RABBIT_NODE"].split("@")[0]
    assert props.get("cluster_name", b"").split("@")[0] == node, props.get("cluster_name")
    import pika
    amqp_channel.queue_declare(queue=amqp_queue, durable=True)
    amqp_channel.basic_publish("", amqp_queue, json.dumps({"pattern": "p", "data": "é"}),
                               pika.BasicProperties(delivery_mode=2), mandatory=True)
    method, _, body = amqp_channel.basic_get(amqp_queue, auto_ack=False)
    assert method is not None and json.loads(body) == {"pattern": "p", "data": "é"}
    amqp_channel.basic_ack(method.delivery_tag)


def test_mongo_reachable(mongo_url):
    try:
        import pymongo
    except ImportError:
        host, port = mongo_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=5).close()
        return
    client = pymongo.MongoClient(mongo_url)
    try:
        assert client.admin.command("ping")["ok"] == 1
        db = client.get_default_database()
        assert db.name == "chanced"
        coll = db["infra_%s" % os.urandom(3).hex()]
        coll.insert_one({"k": 1, "t": "سلام"})
        assert coll.find_one({"k": 1})["t"] == "سلام"
        coll.drop()
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.fault
def test_rabbitmq_stop_and_restart_same_port(rabbit, amqp_url):
    """The fault tests' broker restart: same port, same data (a durable queue survives)."""
    import pika
    q = "chanced.test.restart.%s" % os.urandom(3).hex()
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(queue=q, durable=True)
    ch.basic_publish("", q, b"kept", pika.BasicProperties(delivery_mode=2))
    conn.close()
    old = rabbit.pid()
    rabbit.stop()
    assert not rabbit.running()
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(pika.URLParameters(amqp_url + "?connection_attempts=1"))
    rabbit.start()
    assert rabbit.pid() != old
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    method, _, body = ch.basic_get(q, auto_ack=True)
    assert body == b"kept"
    ch.queue_delete(queue=q)
    conn.close()


@pytest.mark.fault
def test_redis_kill_pause_and_restart(servers, redis_url):
    import redis
    r = redis.Redis.from_url(redis_url, socket_timeout=1)
    assert r.ping()
    servers.redis.pause()
    with pytest.raises(redis.exceptions.TimeoutError):
        redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5).ping()
    servers.redis.resume()
    assert r.ping()
    servers.redis.kill()
    assert not servers.redis.running()
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis.from_url(redis_url, socket_timeout=1).ping()
    servers.redis.start()
    assert redis.Redis.from_url(redis_url, socket_timeout=1).ping()


# --- the Daemon fixture, with a stand-in executable ----------------------------------------

FAKE = textwrap.dedent("""\
    #!/usr/bin/python3
    # stand-in for build/chanced, to test the fixture: listens on its main *_listen key
    import json, os, signal, socket, sys
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    mode = os.environ.get("FAKE_MODE", "good")
    print(json.dumps({"msg": "start", "args": args,
                      "test_env": sorted(k for k in os.environ if k.startswith("CHANCED_TEST"))}),
          flush=True)
    if mode == "die":
        print("fatal: cannot start", flush=True)
        sys.exit(3)
    key = {"chance": "chance_listen", "logger": "logger_listen"}.get(args["role"], "http_listen")
    host, port = args[key].rsplit(":", 1)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(port)))
    s.listen(8)
    def term(*_):
        if mode == "asan":
            print("==1==ERROR: AddressSanitizer: heap-use-after-free", flush=True)
        print(json.dumps({"msg": "stopping"}), flush=True)
        sys.exit(1 if mode == "badexit" else 0)
    signal.signal(signal.SIGTERM, term)
    while True:
        c, _ = s.accept()
        c.close()
""")


@pytest.fixture
def fake_bin(tmp_path):
    p = tmp_path / "fake-chanced"
    p.write_text(FAKE)
    p.chmod(0o755)
    return str(p)


def test_daemon_fixture_lifecycle(chanced, fake_bin):
    d = chanced("chance", binary=fake_bin, redis_url="redis://x", amqp_url="amqp://x")
    host, port = d.hostport()
    assert host == "127.0.0.1" and port == d.port
    socket.create_connection((host, port), timeout=2).close()
    start = d.log_json()[0]
    assert start["args"]["role"] == "chance"
    assert start["args"]["amqp_queue"].startswith("chanced.test.")
    assert start["args"]["chance_health_listen"] != start["args"]["chance_listen"]
    assert start["test_env"] == [], "CHANCED_TEST_* leaked into the daemon's environment"
    gw = chanced("gateway", binary=fake_bin, postgres_url="postgresql://x")
    assert gw.log_json()[0]["args"]["chance_addr"] == d.addr("chance_listen")
    d.kill(signal.SIGSTOP)
    d.kill(signal.SIGCONT)
    assert d.kill(signal.SIGKILL) == -signal.SIGKILL
    d.restart()
    socket.create_connection(d.hostport(), timeout=2).close()
    assert d.log_text().count("start #2") == 1
    assert d.stop() == 0
    assert "stopping" in d.log_text()


def test_daemon_fixture_reports_failures(chanced, fake_bin):
    with pytest.raises(pytest.fail.Exception, match="exited with exit code 3"):
        chanced("logger", binary=fake_bin, env={"FAKE_MODE": "die"}, mongo_url="m", amqp_url="a")
    bad = chanced("logger", binary=fake_bin, env={"FAKE_MODE": "badexit"}, mongo_url="m",
                  amqp_url="a")
    with pytest.raises(pytest.fail.Exception, match="exit code 1 after SIGTERM"):
        bad.stop()
    asan = chanced("logger", binary=fake_bin, env={"FAKE_MODE": "asan"}, mongo_url="m",
                   amqp_url="a")
    with pytest.raises(pytest.fail.Exception, match="sanitizer"):
        asan.stop()
    # both were judged; take them off the teardown list's conscience
    bad.log_path.write_text("")
    asan.log_path.write_text("")
