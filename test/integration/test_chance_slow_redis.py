"""The chance role with a slow Redis: every reply arrives DELAY_S late (a loaded or distant server).

Generation renews its lease in the same pipeline as its steps, every 250 ms; with replies this
slow a renewal is in flight whenever a step's reply arrives, including the last chunk of the
last category, and the batch must still move on to ready (it once waited for that renewal's
reply, which wakes nobody, and stayed "generating" for ever).
"""

import socket
import threading
import time
from urllib.parse import urlsplit

import pytest

from nest import NestClient

ACTOR = {"id": 1, "username": "alice", "role": "admin"}
DELAY_S = 0.3


class SlowProxy:
    """127.0.0.1:port -> target; what the target sends back is delivered DELAY_S late, in order."""

    def __init__(self, target, delay):
        self.target = target
        self.delay = delay
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.socks = []
        self.threads = []
        self.closed = threading.Event()
        self._spawn(self._accept)

    def _spawn(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        self.threads.append(t)
        t.start()

    def _accept(self):
        while not self.closed.is_set():
            try:
                client, _ = self.lsock.accept()
            except OSError:
                return
            server = socket.create_connection(self.target, timeout=10)
            server.settimeout(None)
            self.socks += [client, server]
            queue, ready = [], threading.Condition()
            self._spawn(self._pump, client, server)
            self._spawn(self._read_late, server, queue, ready)
            self._spawn(self._write_late, client, queue, ready)

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _read_late(self, server, queue, ready):
        try:
            while True:
                data = server.recv(65536)
                with ready:
                    queue.append((time.monotonic() + self.delay, data))
                    ready.notify()
                if not data:
                    return
        except OSError:
            with ready:
                queue.append((0, b""))
                ready.notify()

    def _write_late(self, client, queue, ready):
        while True:
            with ready:
                while not queue:
                    ready.wait()
                due, data = queue.pop(0)
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                if not data:
                    client.shutdown(socket.SHUT_RDWR)
                    return
                client.sendall(data)
            except OSError:
                return

    def close(self):
        self.closed.set()
        for s in [self.lsock] + self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self.threads:
            t.join(timeout=10)


@pytest.fixture
def slow_redis_url(redis_url):
    u = urlsplit(redis_url)
    proxy = SlowProxy((u.hostname, u.port), DELAY_S)
    yield "redis://127.0.0.1:%d%s" % (proxy.port, u.path)
    proxy.close()


def test_generation_finishes_while_a_lease_renewal_is_in_flight(chanced, redis_client,
                                                                slow_redis_url):
    ch = chanced("chance", redis_url=slow_redis_url, start_timeout=60)
    with NestClient(*ch.hostport(), timeout=60) as c:
        req = {"categories": 2, "codes_per_category": 20, "reward_min": 1000,
               "reward_max": 5000, "actor": ACTOR}
        batch = c.call("chance.generate", req, timeout=60)["batch"]
        deadline = time.monotonic() + 90  # a dozen steps of a few replies each: ~10 s
        while batch["state"] == "generating" and time.monotonic() < deadline:
            time.sleep(0.5)
            batch = c.call("chance.batch", {"id": batch["id"]}, timeout=60)["batch"]
    assert batch["state"] == "ready", batch
    assert batch["codes_written"] == 40, batch
    assigned = sum(redis_client.hlen(k) for k in redis_client.scan_iter("chance:{c*}:codes"))
    assert assigned == 40
