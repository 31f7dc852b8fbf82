"""nest.py: a NestJS TCP-transport client and frame codec in pure Python (stdlib only).

Wire format (docs/architecture.md#nestjs-tcp-codec-and-rpc, checked against
@nestjs/microservices):

    frame    = <decimal length> "#" <JSON text>       (no terminator)
    length   = UTF-16 code units of the JSON text (JavaScript string.length): a 4-byte UTF-8
               character counts 2, a 1-, 2- or 3-byte one counts 1
    request  = {"pattern": P, "data": D, "id": ID}
    event    = {"pattern": P, "data": D}               (no "id" key at all)
    response = {"response": R, "isDisposed": true, "id": ID}
    error    = {"err": E, "isDisposed": true, "id": ID}
    stream   = {"response": R1, "id": ID} ... then a message with "isDisposed": true (with or
               without a "response")
    unknown  = {"id": ID, "status": "error", "err": "There is no matching message handler ..."}

Responses may arrive out of order; NestClient keeps the ones it was not waiting for.

    from nest import NestClient, NestError, encode_frame, FrameDecoder
    with NestClient("127.0.0.1", port) as c:
        c.call("chance.categories", {})            # -> response value
        c.call_stream("logs.tail", {"n": 3})       # -> [r1, r2, r3]
        c.emit("audit.note", {"x": 1})             # event, no reply
        c.send_raw(b"5#{}")                        # anything at all
        c.recv_frame()                             # next decoded message
"""

import json
import os
import select
import socket
import time
from collections import deque

__all__ = [
    "FrameError", "NestError", "NestClosed", "encode_frame", "encode_text", "utf16_len",
    "FrameDecoder", "NestClient", "new_id",
]


class FrameError(ValueError):
    """Malformed frame: bad length prefix, bad UTF-8, bad JSON, oversize."""


class NestError(Exception):
    """The peer answered with an "err"; .err is its value, .message the whole message."""

    def __init__(self, err, message=None):
        super().__init__(err)
        self.err = err
        self.message = message


class NestClosed(ConnectionError):
    """The peer closed the connection."""


def utf16_len(text):
    """JavaScript string.length of a Python str."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def encode_text(text):
    """Frame an already serialised JSON text as-is (UTF-8, length in UTF-16 units)."""
    return b"%d#%s" % (utf16_len(text), text.encode("utf-8", "surrogatepass"))


def encode_frame(obj, ascii_only=True):
    """Frame a JSON value.

    ascii_only=True (how chanced sends): every non-ASCII character is escaped as \\uXXXX
    (surrogate pairs above U+FFFF), so the length equals the byte count.
    ascii_only=False (how Node sends): raw UTF-8, length counted in UTF-16 units.
    """
    text = json.dumps(obj, ensure_ascii=ascii_only, separators=(",", ":"), allow_nan=False)
    return encode_text(text)


def _utf8_seq_len(lead):
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


class FrameDecoder:
    """Incremental decoder: feed bytes split anywhere, get every complete message.

        dec = FrameDecoder()
        for msg in dec.feed(chunk): ...

    Raises FrameError on a malformed frame; the decoder is then unusable, as the connection
    would be.  raw=True yields the JSON text (str) instead of the parsed value.
    """

    MAX_DIGITS = 12

    def __init__(self, max_length=None, raw=False):
        self.buf = bytearray()
        self.max_length = max_length
        self.raw = raw
        self.broken = None

    def pending(self):
        """Bytes received but not yet part of a complete frame."""
        return bytes(self.buf)

    def feed(self, data):
        if self.broken:
            raise FrameError("decoder already failed: %s" % self.broken)
        self.buf += data
        out = []
        try:
            while True:
                item = self._one()
                if item is None:
                    break
                out.append(item)
        except FrameError as e:
            self.broken = str(e)
            raise
        return out

    def _one(self):
        buf = self.buf
        hash_at = buf.find(b"#", 0, self.MAX_DIGITS + 1)
        if hash_at < 0:
            if len(buf) > self.MAX_DIGITS:
                raise FrameError("no '#' after %d bytes: %r" % (self.MAX_DIGITS, bytes(buf[:20])))
            if buf and not buf.isdigit():
                raise FrameError("bad length prefix %r" % bytes(buf[:20]))
            return None
        digits = bytes(buf[:hash_at])
        if not digits or not digits.isdigit():
            raise FrameError("bad length prefix %r" % digits[:20])
        units = int(digits)
        if self.max_length is not None and units > self.max_length:
            raise FrameError("frame length %d over the limit %d" % (units, self.max_length))
        # walk the UTF-8 text counting UTF-16 units
        pos = hash_at + 1
        counted = 0
        n = len(buf)
        while counted < units:
            if pos >= n:
                return None  # incomplete
            k = _utf8_seq_len(buf[pos])
            if k == 0:
                raise FrameError("invalid UTF-8 lead byte 0x%02x" % buf[pos])
            if pos + k > n:
                if any(b & 0xC0 != 0x80 for b in buf[pos + 1:n]):
                    raise FrameError("invalid UTF-8 sequence at byte %d" % pos)
                return None
            if any(b & 0xC0 != 0x80 for b in buf[pos + 1:pos + k]):
                raise FrameError("invalid UTF-8 sequence at byte %d" % pos)
            counted += 2 if k == 4 else 1
            pos += k
        if counted != units:
            raise FrameError("length %d ends inside a surrogate pair" % units)
        try:
            text = bytes(buf[hash_at + 1:pos]).decode("utf-8")
        except UnicodeDecodeError as e:
            raise FrameError("invalid UTF-8: %s" % e) from None
        del buf[:pos]
        if self.raw:
            return text
        try:
            return json.loads(text)
        except ValueError as e:
            raise FrameError("bad JSON %r: %s" % (text[:80], e)) from None


def new_id():
    """A 21-character hex id, the shape of Nest's uid(21)."""
    return os.urandom(11).hex()[:21]


class NestClient:
    """A blocking NestJS TCP client for tests."""

    def __init__(self, host, port, timeout=10.0, connect_timeout=5.0, ascii_only=True,
                 max_length=None):
        self.addr = (host, int(port))
        self.timeout = timeout
        self.ascii_only = ascii_only
        self.sock = socket.create_connection(self.addr, timeout=connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = FrameDecoder(max_length=max_length)
        self.inbox = deque()  # decoded messages not yet consumed
        self.eof = False

    # -- plumbing ------------------------------------------------------------------------

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send_raw(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def send(self, obj):
        self.send_raw(encode_frame(obj, ascii_only=self.ascii_only))

    def _fill(self, deadline):
        """Read once from the socket (until deadline); False on timeout."""
        if self.eof:
            raise NestClosed("connection closed by %s:%d" % self.addr)
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([self.sock], [], [], left)
        if not r:
            return False
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            raise NestClosed("connection closed by %s:%d" % self.addr)
        self.inbox.extend(self.decoder.feed(data))
        return True

    def recv_frame(self, timeout=None):
        """The next message in arrival order (including any kept by call())."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.inbox:
            if not self._fill(deadline):
                raise TimeoutError("no frame from %s:%d" % self.addr)
        return self.inbox.popleft()

    def wait_closed(self, timeout=5.0):
        """True if the peer closes the connection within timeout (frames read meanwhile are kept)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                if not self._fill(deadline):
                    return False
        except NestClosed:
            return True

    def _take(self, msg_id, deadline):
        """The next message for msg_id, leaving the others in the inbox."""
        while True:
            for i, m in enumerate(self.inbox):
                if isinstance(m, dict) and "id" in m and m["id"] == msg_id:
                    del self.inbox[i]
                    if type(m["id"]) is not type(msg_id):
                        raise AssertionError("id %r came back as %r (JSON type changed)"
                                             % (msg_id, m["id"]))
                    return m
            if not self._fill(deadline):
                raise TimeoutError("no reply for id %r from %s:%d" % ((msg_id,) + self.addr))

    # -- requests ------------------------------------------------------------------------

    def request(self, pattern, data, msg_id=None):
        """Send a request; return its id (a fresh 21-hex string unless given)."""
        if msg_id is None:
            msg_id = new_id()
        self.send({"pattern": pattern, "data": data, "id": msg_id})
        return msg_id

    def results(self, msg_id, timeout=None):
        """Every response of msg_id up to the disposing message; NestError on an "err"."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        out = []
        while True:
            m = self._take(msg_id, deadline)
            if m.get("err") is not None or ("err" in m and m.get("isDisposed")):
                raise NestError(m.get("err"), m)
            if "response" in m:
                out.append(m["response"])
            if m.get("isDisposed"):
                return out

    def call_pattern(self, pattern, data, timeout=None, msg_id=None):
        """Request and return the last response (RxJS lastValueFrom); None if there was none."""
        r = self.results(self.request(pattern, data, msg_id), timeout)
        return r[-1] if r else None

    def call(self, cmd, data=None, timeout=None, msg_id=None):
        """Request {"cmd": cmd} and return its response value."""
        return self.call_pattern({"cmd": cmd}, data, timeout, msg_id)

    def call_stream(self, cmd, data=None, timeout=None, msg_id=None):
        """Request {"cmd": cmd} and return the list of all its responses."""
        return self.results(self.request({"cmd": cmd}, data, msg_id), timeout)

    def emit(self, cmd, data=None):
        """Send the event {"pattern": {"cmd": cmd}, "data": data} (no id, no reply)."""
        self.send({"pattern": {"cmd": cmd}, "data": data})
