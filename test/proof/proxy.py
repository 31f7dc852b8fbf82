"""A fault-injecting TCP proxy for the proof suite (asyncio, stdlib only), run as its own process.

    python3 proxy.py --control PORT --link NAME=LISTEN_PORT:TARGET_HOST:TARGET_PORT [--link ...]

Each link listens on 127.0.0.1:LISTEN_PORT and forwards every accepted connection to its target.
The control port takes one command per line, "NAME MODE [ARG]", answers "ok" (or "error ..."),
and "stats" answers one JSON line of per-link counters.  Modes, applied to the link's current
and future connections at once:

    pass             forward as is
    delay MS         hold every chunk MS milliseconds before forwarding it (order kept)
    slice            forward byte by byte, each its own TCP segment (TCP_NODELAY, drained)
    cut              forward the first half of the next chunk, then close both sides: a frame
                     cut in the middle
    reset            abort every connection with a TCP RST; new ones are accepted and reset
    blackhole        new connections: accept and read, never connect upstream (a peer that
                     hangs); open ones: nothing moves until the mode changes, then the held
                     bytes go on in order (a partition, as TCP sees it)

It runs as a separate process so that its work (the 1-byte segments above all) does not compete
with the workload threads for the test process's interpreter lock; the harness stops it by PID.
"""

import argparse
import asyncio
import json
import socket
import struct
import sys


class Link:
    def __init__(self, name, listen_port, host, port):
        self.name = name
        self.listen_port = listen_port
        self.host = host
        self.port = port
        self.mode = "pass"
        self.arg = 0
        self.conns = set()  # (client writer, upstream writer or None)
        self.stats = {"accepted": 0, "bytes": 0, "cut": 0, "reset": 0}

    def set_mode(self, mode, arg):
        self.mode = mode
        self.arg = arg
        if mode == "reset":
            for pair in list(self.conns):
                self.reset(pair)

    def reset(self, pair):
        for w in pair:
            if w is None:
                continue
            sock = w.get_extra_info("socket")
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            w.transport.abort()
        self.stats["reset"] += 1
        self.conns.discard(pair)

    async def handle(self, reader, writer):
        self.stats["accepted"] += 1
        if self.mode == "reset":
            self.reset((writer, None))
            return
        if self.mode == "blackhole":
            # never connect upstream: the caller's request is swallowed
            pair = (writer, None)
            self.conns.add(pair)
            try:
                while await reader.read(65536):
                    pass
            except OSError:
                pass
            self.conns.discard(pair)
            writer.close()
            return
        try:
            up_r, up_w = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.transport.abort()
            return
        for w in (writer, up_w):
            w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = (writer, up_w)
        self.conns.add(pair)
        await asyncio.gather(self.pump(reader, up_w, pair), self.pump(up_r, writer, pair),
                             return_exceptions=True)
        self.conns.discard(pair)
        for w in pair:
            w.transport.abort()

    async def pump(self, reader, writer, pair):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                mode = self.mode
                while mode == "blackhole":
                    # A partition delays an open connection's bytes; it never drops some from
                    # the middle of the stream and goes on (TCP would retransmit them after it
                    # heals, or the connection dies). So: stop reading, hold, forward on heal.
                    await asyncio.sleep(0.05)
                    mode = self.mode
                if mode == "reset":
                    self.reset(pair)
                    return
                if mode == "delay":
                    await asyncio.sleep(self.arg / 1000.0)
                if mode == "cut":
                    writer.write(data[:max(1, len(data) // 2)])
                    await writer.drain()
                    self.stats["cut"] += 1
                    break
                if mode == "slice":
                    for i in range(len(data)):
                        writer.write(data[i:i + 1])
                        await writer.drain()
                        await asyncio.sleep(0)
                else:
                    writer.write(data)
                    await writer.drain()
                self.stats["bytes"] += len(data)
        except (OSError, asyncio.IncompleteReadError):
            pass
        # one side ended (or was cut): end the other too, as a dying peer would
        for w in pair:
            if w is not None:
                w.transport.abort()


async def control(links, reader, writer):
    while True:
        line = await reader.readline()
        if not line:
            break
        words = line.decode().split()
        try:
            if words == ["stats"]:
                out = json.dumps({n: dict(l.stats, mode=l.mode) for n, l in links.items()})
            else:
                name, mode = words[0], words[1]
                arg = int(words[2]) if len(words) > 2 else 0
                if mode not in ("pass", "delay", "slice", "cut", "reset", "blackhole"):
                    raise ValueError("unknown mode %s" % mode)
                links[name].set_mode(mode, arg)
                out = "ok"
        except (IndexError, KeyError, ValueError) as e:
            out = "error %s" % e
        writer.write((out + "\n").encode())
        await writer.drain()
    writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--control", type=int, required=True)
    ap.add_argument("--link", action="append", default=[])
    a = ap.parse_args()
    links = {}
    for spec in a.link:
        name, rest = spec.split("=", 1)
        listen, host, port = rest.split(":")
        links[name] = Link(name, int(listen), host, int(port))
    for link in links.values():
        await asyncio.start_server(link.handle, "127.0.0.1", link.listen_port)
    await asyncio.start_server(lambda r, w: control(links, r, w), "127.0.0.1", a.control)
    print("proxy: %d links ready" % len(links), flush=True)
    await asyncio.Event().wait()


class ProxyControl:
    """The harness's side: sets a link's mode over the control port."""

    def __init__(self, port):
        self.port = port

    def _send(self, line):
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall((line + "\n").encode())
            f = s.makefile()
            return f.readline().strip()

    def set(self, link, mode, arg=None):
        r = self._send("%s %s%s" % (link, mode, "" if arg is None else " %d" % arg))
        if r != "ok":
            raise RuntimeError("proxy: %s" % r)

    def stats(self):
        return json.loads(self._send("stats"))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
