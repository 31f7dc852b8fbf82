#!/usr/bin/python3
"""mongo_tap.py: a pass-through MongoDB wire-protocol proxy that notes when each audit event was
stored. Used by the audit-lag benchmark (test/bench/README.md, "Audit pipeline lag").

    mongo_tap.py --port LISTEN --upstream PORT --out FILE

Every connection is relayed byte for byte to 127.0.0.1:PORT (MongoDB or its stand-in). The tap
reads the OP_MSG requests going up: for an `insert` into a collection named `events` it keeps
each document's `ts` (when the operation happened: the chance role's claim script takes it from
Redis TIME), `type` and `subject.claim_id`, under the request's id. When the server's reply to
that request comes back through the tap (the insert is acknowledged, with the logger's write
concern: journaled), it appends one line per document to FILE:

    <acknowledged at, epoch ms with decimals> <ts> <type> <claim_id or ->

so `acknowledged - ts` is the event's lag from operation to MongoDB, for every event (no
sampling, no polling delay). The tap itself adds one loopback hop to each insert, so the figure
is, if anything, pessimistic by that hop. Compressed messages (OP_COMPRESSED) are relayed but not
read: the logger does not ask for compression.
"""

import argparse
import signal
import socket
import struct
import sys
import threading
import time

import bson

OP_MSG = 2013


def read_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def read_message(sock):
    head = read_exact(sock, 16)
    if head is None:
        return None
    length = struct.unpack_from("<i", head)[0]
    rest = read_exact(sock, length - 16)
    if rest is None:
        return None
    return head + rest


def insert_docs(msg):
    """The documents of an OP_MSG insert into `events`, or None."""
    length, _req, _to, opcode = struct.unpack_from("<iiii", msg)
    if opcode != OP_MSG or b"insert" not in msg:
        return None
    flags = struct.unpack_from("<I", msg, 16)[0]
    end = length - (4 if flags & 1 else 0)
    pos, body, docs = 20, None, []
    while pos < end:
        kind = msg[pos]
        pos += 1
        size = struct.unpack_from("<i", msg, pos)[0]
        if kind == 0:
            body = bson.decode(msg[pos:pos + size])
        elif kind == 1:
            name_end = msg.index(b"\x00", pos + 4)
            if msg[pos + 4:name_end] == b"documents":
                docs.extend(bson.decode_all(msg[name_end + 1:pos + size]))
        pos += size
    if body is None or body.get("insert") != "events":
        return None
    docs.extend(body.get("documents", []))
    return docs


class Tap:
    def __init__(self, upstream, out):
        self.upstream = upstream
        self.out = open(out, "a", buffering=1)
        self.lock = threading.Lock()

    def serve(self, client):
        try:
            up = socket.create_connection(("127.0.0.1", self.upstream))
        except OSError:
            client.close()
            return
        for s in (client, up):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pending = {}  # request id -> [(ts, type, claim_id)]
        plock = threading.Lock()
        threading.Thread(target=self.down, args=(up, client, pending, plock), daemon=True).start()
        try:
            while True:
                msg = read_message(client)
                if msg is None:
                    break
                try:
                    docs = insert_docs(msg)
                except (ValueError, IndexError, struct.error, bson.errors.BSONError):
                    docs = None
                if docs:
                    req = struct.unpack_from("<i", msg, 4)[0]
                    with plock:
                        pending[req] = [(d.get("ts"), d.get("type", "-"),
                                         (d.get("subject") or {}).get("claim_id") or "-")
                                        for d in docs]
                up.sendall(msg)
        except OSError:
            pass
        finally:
            for s in (client, up):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def down(self, up, client, pending, plock):
        try:
            while True:
                msg = read_message(up)
                if msg is None:
                    break
                at = time.time() * 1000.0
                to = struct.unpack_from("<i", msg, 8)[0]
                with plock:
                    docs = pending.pop(to, None)
                client.sendall(msg)
                if docs:
                    lines = "".join("%.3f %s %s %s\n" % (at, ts, t, c) for ts, t, c in docs
                                    if isinstance(ts, int))
                    with self.lock:
                        self.out.write(lines)
        except OSError:
            pass
        finally:
            for s in (client, up):
                try:
                    s.close()
                except OSError:
                    pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", type=int, required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    tap = Tap(a.upstream, a.out)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", a.port))
    ls.listen(64)
    while True:
        c, _ = ls.accept()
        threading.Thread(target=tap.serve, args=(c,), daemon=True).start()


if __name__ == "__main__":
    main()
