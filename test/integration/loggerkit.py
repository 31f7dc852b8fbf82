"""Helpers shared by the logger's tests (test_logger*.py): events, the queue, the store, waits.

Each test gets its own queue (conftest's amqp_queue) and its own MongoDB database (the
`store` fixture below), so tests never see each other's events.
"""

import json
import os
import time
import urllib.error
import urllib.request

import pytest

from nest import NestClient, NestError


def wait_until(what, fn, timeout=30.0, interval=0.1):
    """Polls fn() until it returns a truthy value; fails the test with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    pytest.fail("timed out after %.0fs waiting for %s (last: %r)" % (timeout, what, last),
                pytrace=False)


def event(i, prefix="ev", ts=None, **over):
    """A valid audit event in the schema of docs/protocol.md."""
    ev = {
        "_id": "%s:%d" % (prefix, i),
        "ts": ts if ts is not None else 1767225600000 + i * 1000,  # 2026-01-01 + i s
        "service": "chance",
        "type": "code.assigned",
        "actor": {"id": "u%d" % (i % 3), "username": "user%d" % (i % 3), "role": "user"},
        "subject": {"category": 1 + i % 2, "code": "ABCDEFGHJK%02d" % (i % 100),
                    "user_id": "u%d" % (i % 3), "username": "user%d" % (i % 3),
                    "claim_id": "cl-%d" % i},
        "data": {"reward": 1000 * (1 + i % 5)},
        "message": "user user%d received code ABCDEF\u2026 (category %d, %d Toman)"
                   % (i % 3, 1 + i % 2, 1000 * (1 + i % 5)),
    }
    ev.update(over)
    return ev


def body(ev):
    """The NestJS RMQ event shape the relay publishes."""
    return json.dumps({"pattern": {"cmd": "log.event"}, "data": ev}, ensure_ascii=False)


def pika_channel(amqp_url):
    import pika
    params = pika.URLParameters(amqp_url)
    params.socket_timeout = 10
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.confirm_delivery()
    return conn, ch


def publish(amqp_url, queue, bodies, persistent=True):
    """Publishes raw bodies (str or bytes) to queue through the default exchange, confirmed."""
    import pika
    conn, ch = pika_channel(amqp_url)
    try:
        props = pika.BasicProperties(delivery_mode=2 if persistent else 1)
        for b in bodies:
            ch.basic_publish("", queue, b.encode() if isinstance(b, str) else b, props,
                             mandatory=True)
    finally:
        conn.close()


def queue_depth(amqp_url, queue):
    """(ready, consumers) of a queue, by a passive declare."""
    conn, ch = pika_channel(amqp_url)
    try:
        q = ch.queue_declare(queue, passive=True)
        return q.method.message_count, q.method.consumer_count
    finally:
        conn.close()


def drain(amqp_url, queue, limit=1000):
    """Takes (and acks) up to limit messages: [(properties, body)]."""
    conn, ch = pika_channel(amqp_url)
    out = []
    try:
        while len(out) < limit:
            method, props, b = ch.basic_get(queue, auto_ack=True)
            if method is None:
                break
            out.append((props, b))
    finally:
        conn.close()
    return out


def http_get(hostport, path, timeout=5):
    """(status, body text) of GET http://hostport/path."""
    try:
        with urllib.request.urlopen("http://%s%s" % (hostport, path), timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, OSError) as e:  # not listening (yet), or gone
        return None, str(e)


def metric(hostport, name, labels=""):
    """The value of one series from /metrics, or None."""
    status, text = http_get(hostport, "/metrics")
    if status != 200:
        return None
    want = name + ("{%s}" % labels if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return None


def wait_ready(daemon, timeout=30):
    """Waits for the logger's /readyz to answer 200 (store reached, consuming)."""
    addr = daemon.addr("logger_health_listen")
    return wait_until("%s /readyz 200" % daemon.role,
                      lambda: http_get(addr, "/readyz")[0] == 200, timeout=timeout)


def call(daemon, cmd, data, timeout=30):
    with NestClient(*daemon.hostport(), timeout=timeout) as c:
        return c.call(cmd, data, timeout=timeout)


def call_err(daemon, cmd, data):
    """The err of a call that must fail."""
    with NestClient(*daemon.hostport(), timeout=30) as c:
        try:
            r = c.call(cmd, data)
        except NestError as e:
            return e.err
    pytest.fail("%s %r succeeded: %r" % (cmd, data, r), pytrace=False)


def query_all(daemon, filters, limit=50):
    """Walks every page of log.query; returns (items, pages)."""
    items, pages, cursor = [], 0, None
    while True:
        data = dict(filters, limit=limit)
        if cursor:
            data["cursor"] = cursor
        r = call(daemon, "log.query", data)
        items += r["items"]
        pages += 1
        cursor = r["next_cursor"]
        if not cursor:
            return items, pages
        assert pages < 10000


@pytest.fixture
def store(mongo_url):
    """(url, pymongo Database) of a MongoDB database of this test's own, dropped afterwards."""
    pymongo = pytest.importorskip("pymongo")
    name = "t_%s" % os.urandom(5).hex()
    base, _, query = mongo_url.partition("?")
    url = base.rsplit("/", 1)[0] + "/" + name + ("?" + query if query else "")
    client = pymongo.MongoClient(url)
    yield url, client[name]
    try:
        client.drop_database(name)
    except Exception:  # the stand-in may be paused or gone after a fault test
        pass
    client.close()
