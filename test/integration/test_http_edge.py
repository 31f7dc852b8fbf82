"""The gateway's public HTTP edge under abuse (issue 10): slow clients, connection caps, header
and body limits, X-Forwarded-For.  Real chance + logger + gateway processes (gwclient.Stack).

The slow clients connect from 127.0.0.2 and the well-behaved ones from 127.0.0.1: Linux routes
all of 127.0.0.0/8 to lo, so binding the source address makes them distinct clients.
"""

import json
import os
import socket
import threading
import time

import pytest

from gwclient import API, Stack, pg_query, redis_codes, request, table_counts  # noqa: F401

SLOW = "127.0.0.2"


def connect_from(source, port, timeout=5.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def is_open(s, wait=0.3):
    """True if the server has not closed s within `wait` seconds (nothing to read)."""
    s.settimeout(wait)
    try:
        data = s.recv(1)
    except socket.timeout:
        return True
    except (ConnectionResetError, BrokenPipeError):
        return False
    return data != b""


def closed_within(s, seconds):
    """True if the server closes s (EOF or reset, after any response) within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if s.recv(65536) == b"":
                return True
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def raw_request(port, data, source="127.0.0.1", timeout=10.0):
    """Sends raw bytes, reads until the server closes or a full response arrived; returns
    (status, headers dict, body bytes) or (None, {}, b"") when the connection closed silently."""
    s = connect_from(source, port, timeout)
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading everything we send
        buf = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if sep:
                lines = head.decode("latin-1").split("\r\n")
                hdrs = {k.strip().lower(): v.strip() for k, _, v in
                        (line.partition(":") for line in lines[1:])}
                n = int(hdrs.get("content-length", "-1"))
                if n >= 0 and len(rest) >= n:
                    break
        head, sep, rest = buf.partition(b"\r\n\r\n")
        if not sep:
            return None, {}, b""
        lines = head.decode("latin-1").split("\r\n")
        hdrs = {k.strip().lower(): v.strip() for k, _, v in
                (line.partition(":") for line in lines[1:])}
        return int(lines[0].split()[1]), hdrs, rest
    finally:
        s.close()


def livez_ms(port):
    t = time.monotonic()
    r = request(port, "GET", "/livez", timeout=5)
    assert r.status == 200, r
    return (time.monotonic() - t) * 1000


@pytest.mark.slow
def test_200_slow_header_clients_do_not_stop_livez_logins_or_claims(chanced, chanced_bin,
                                                                   fresh_postgres_url):
    # Each slow connection is held for the whole test (read timeout and per-address cap out of
    # the way): only a front that reads without a thread per connection survives this.
    s = Stack(chanced, chanced_bin, fresh_postgres_url, http_read_timeout_ms=120000,
              http_max_conns_per_addr=1000)
    batch = s.generate(1, 5)
    cat = batch["categories"][0]
    request_bytes = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200 + b"\r\n\r\n"
    slow = [connect_from(SLOW, s.port) for _ in range(200)]
    stop = threading.Event()
    errors = []

    def trickle():
        i = 0
        while not stop.is_set() and i < len(request_bytes) - 4:  # never completes a request
            for c in slow:
                try:
                    c.sendall(request_bytes[i:i + 1])
                except OSError as e:
                    errors.append(e)
            i += 1
            stop.wait(2.0)

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        worst = 0.0
        start = time.monotonic()
        signed_up = logged_in = claimed = False
        while time.monotonic() - start < 10.0:
            worst = max(worst, livez_ms(s.port))
            if not signed_up:
                u = s.signup("slowtest_%s" % os.urandom(3).hex(), "correct horse 1")
                signed_up = True
            elif not logged_in:
                u = s.login(u.user["username"], "correct horse 1")
                logged_in = True
            elif not claimed:
                r = u.claim(cat, key="under-siege")
                assert r.status == 201, r
                claimed = True
            time.sleep(0.2)
        assert worst < 1000, "GET /livez took %.0f ms with 200 slow clients" % worst
        assert signed_up and logged_in and claimed
        # The slow clients were really held, not refused: each connection is still open.
        assert not errors, errors[:3]
        assert sum(is_open(c, 0.01) for c in slow) == 200
    finally:
        stop.set()
        t.join(5)
        for c in slow:
            c.close()


def test_a_request_must_arrive_within_the_read_timeout(chanced, chanced_bin, fresh_postgres_url):
    s = Stack(chanced, chanced_bin, fresh_postgres_url, http_read_timeout_ms=1500)
    # Headers one byte every 0.3 s: each byte is progress, yet the request is cut at ~1.5 s.
    c = connect_from(SLOW, s.port)
    t0 = time.monotonic()
    closed = False
    for b in b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa":
        try:
            c.sendall(bytes([b]))
        except OSError:
            closed = True
            break
        if closed_within(c, 0.3):
            closed = True
            break
    elapsed = time.monotonic() - t0
    c.close()
    assert closed and 1.2 < elapsed < 4.0, (closed, elapsed)
    # A body trickled after complete headers is cut too.
    c = connect_from(SLOW, s.port)
    c.sendall(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 100\r\n\r\n{")
    assert closed_within(c, 4.0)
    c.close()
    # An idle keep-alive connection closes after the same time; a full request before that works.
    c = connect_from(SLOW, s.port)
    c.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    c.settimeout(5)
    assert c.recv(4096).startswith(b"HTTP/1.1 200")
    t0 = time.monotonic()
    assert closed_within(c, 4.0)
    assert time.monotonic() - t0 > 1.0
    c.close()
    assert livez_ms(s.port) < 1000


def test_connections_per_address_are_capped(chanced, chanced_bin, fresh_postgres_url):
    s = Stack(chanced, chanced_bin, fresh_postgres_url, http_max_conns_per_addr=4)
    held = [connect_from(SLOW, s.port) for _ in range(4)]
    try:
        assert all(is_open(c) for c in held)
        extra = connect_from(SLOW, s.port)
        assert closed_within(extra, 2.0), "a fifth connection from one address was kept"
        extra.close()
        # Another address is served meanwhile, over several connections of its own.
        for _ in range(6):
            assert livez_ms(s.port) < 1000
        # Closing one frees its place: the next connection from the address is served.
        held.pop().close()
        time.sleep(0.2)
        status, _, _ = raw_request(s.port, b"GET /livez HTTP/1.1\r\nHost: x\r\n"
                                   b"Connection: close\r\n\r\n", source=SLOW)
        assert status == 200
    finally:
        for c in held:
            c.close()


def test_total_cap_keeps_a_reserve_for_new_addresses(chanced, chanced_bin, fresh_postgres_url):
    # 16 in total, the last 2 (an eighth) only for addresses that hold fewer than 2.
    s = Stack(chanced, chanced_bin, fresh_postgres_url, http_max_conns=16,
              http_max_conns_per_addr=100)
    socks = []
    try:
        socks += [connect_from(SLOW, s.port) for _ in range(14)]
        assert all(is_open(c, 0.05) for c in socks)
        hog = connect_from(SLOW, s.port)
        assert closed_within(hog, 2.0), "the reserve went to an address holding 14"
        hog.close()
        fresh = [connect_from("127.0.0.3", s.port), connect_from("127.0.0.4", s.port)]
        socks += fresh
        assert all(is_open(c) for c in fresh), "a new address was refused a reserved slot"
        full = connect_from("127.0.0.5", s.port)
        assert closed_within(full, 2.0), "more than http_max_conns connections were kept"
        full.close()
    finally:
        for c in socks:
            c.close()
    time.sleep(0.3)
    assert livez_ms(s.port) < 1000  # every count went back down


def test_header_and_body_limits_answer_431_and_413_and_change_nothing(chanced, chanced_bin,
                                                                      fresh_postgres_url,
                                                                      redis_client):
    s = Stack(chanced, chanced_bin, fresh_postgres_url, http_max_header_bytes=4096,
              max_body_bytes=1024)
    batch = s.generate(1, 5)
    cat = batch["categories"][0]
    user = s.signup()
    before, codes_before = table_counts(s.postgres_url), redis_codes(redis_client)

    r = user.claim(cat, key="big-headers", headers={"X-Pad": "p" * 5000})
    assert r.status == 431 and r.code == "headers_too_large", r
    assert r.headers["content-type"] == "application/problem+json"
    # Far above the limit evhttp stops reading: a plain 400 and the connection closes.
    # (The reset that may follow closing with unread bytes can beat the answer: None.)
    status, _, _ = raw_request(s.port, ("POST %s/claims HTTP/1.1\r\nHost: x\r\n"
                                        "Authorization: Bearer %s\r\nX-Pad: %s\r\n\r\n"
                                        % (API, user.token, "p" * 20000)).encode())
    assert status in (400, None)

    body = json.dumps({"category": cat, "pad": "x" * 2000}).encode()
    r = user.post("/claims", raw=body, headers={"Content-Type": "application/json",
                                                "Idempotency-Key": "big-body"})
    assert r.status == 413, r
    # The same without Content-Length: chunks adding up past the limit.
    head = ("POST %s/claims HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: application/json\r\nIdempotency-Key: chunked\r\n"
            "Transfer-Encoding: chunked\r\n\r\n" % (API, user.token)).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 500]), body[i:i + 500])
                      for i in range(0, len(body), 500)) + b"0\r\n\r\n"
    status, _, _ = raw_request(s.port, head + chunks)
    assert status == 413

    assert table_counts(s.postgres_url) == before
    assert redis_codes(redis_client) == codes_before
    # Within the limits everything still works, on the same connection settings.
    r = user.claim(cat, key="fine", headers={"X-Pad": "p" * 1000})
    assert r.status == 201, r


def forwarded_client(gw, port, xff_lines, rid):
    """Sends GET /livez with the given X-Forwarded-For lines; returns the client address the
    gateway logged for it."""
    head = "GET /livez HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\nConnection: close\r\n" % rid
    for line in xff_lines:
        head += "X-Forwarded-For: %s\r\n" % line
    status, _, _ = raw_request(port, (head + "\r\n").encode())
    assert status == 200
    m = gw.wait_log(r'"event":"http_request","rid":"%s","fields":"[^\n]*?client=([0-9a-f.:]+)"'
                    % rid)
    return m.group(1)


def test_forwarded_for_right_most_valid_entry_only_when_trusted(chanced, chanced_bin,
                                                                fresh_postgres_url):
    s = Stack(chanced, chanced_bin, fresh_postgres_url, trust_forwarded_for=True,
              log_level="debug", log_format="json")
    gw, port = s.gateway, s.port
    assert forwarded_client(gw, port, ["203.0.113.9"], "x1") == "203.0.113.9"
    assert forwarded_client(gw, port, ["203.0.113.9, 198.51.100.7"], "x2") == "198.51.100.7"
    # Right-most across lines: a client's own header line comes first, the proxy's last.
    assert forwarded_client(gw, port, ["6.6.6.6, 7.7.7.7", "198.51.100.8"], "x3") == \
        "198.51.100.8"
    assert forwarded_client(gw, port, ["6.6.6.6", "2001:DB8::0:1"], "x4") == "2001:db8::1"
    # Garbage in the right-most place: the socket's address, never an entry further left.
    for i, lines in enumerate((["6.6.6.6, garbage"], ["6.6.6.6", "unknown"], ["6.6.6.6, "],
                               ["6.6.6.6, 198.51.100.7:8080"], ["6.6.6.6,<script>"])):
        assert forwarded_client(gw, port, lines, "g%d" % i) == "127.0.0.1", lines

    # Untrusted: the header is ignored.
    s2 = Stack(chanced, chanced_bin, fresh_postgres_url, log_level="debug", log_format="json")
    assert forwarded_client(s2.gateway, s2.port, ["203.0.113.9"], "u1") == "127.0.0.1"


def test_forwarded_for_drives_the_per_address_rate_limit(chanced, chanced_bin,
                                                         fresh_postgres_url):
    # Two signups a minute per address: a third from the same forwarded address is refused,
    # another forwarded address is not (so the limiter counts the validated address).
    s = Stack(chanced, chanced_bin, fresh_postgres_url, trust_forwarded_for=True,
              signup_rate_ip=2)

    def signup(addr):
        name = "xff_%s" % os.urandom(3).hex()
        return request(s.port, "POST", API + "/auth/signup",
                       {"username": name, "password": "correct horse 1"},
                       headers={"X-Forwarded-For": "6.6.6.6, " + addr})

    assert signup("198.51.100.1").status == 201
    assert signup("198.51.100.1").status == 201
    assert signup("198.51.100.1").status == 429
    assert signup("198.51.100.2").status == 201


def test_keep_alive_and_pipelined_requests_are_all_answered_in_order(chanced, chanced_bin,
                                                                     fresh_postgres_url):
    # The next request on a connection may arrive (or already wait, pipelined) the moment the
    # previous response is written, while that request's worker is still finishing.
    s = Stack(chanced, chanced_bin, fresh_postgres_url)
    c = connect_from("127.0.0.1", s.port)
    try:
        n = 100
        c.sendall(b"".join(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Request-Id: p%d\r\n\r\n" % i
                           for i in range(n)))
        buf = b""
        c.settimeout(10)
        while buf.count(b"HTTP/1.1 ") < n or not buf.endswith(b"}"):
            chunk = c.recv(65536)
            assert chunk, "closed after %d responses" % buf.count(b"HTTP/1.1 ")
            buf += chunk
        heads = [h for h in buf.split(b"HTTP/1.1 ")[1:]]
        assert [h[:3] for h in heads] == [b"200"] * n
        assert [h.split(b"X-Request-Id: ")[1].split(b"\r\n")[0] for h in heads] == \
            [b"p%d" % i for i in range(n)]
        # And one at a time, each sent as soon as the previous answer arrived.
        for i in range(200):
            c.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
            r = b""
            while not r.endswith(b"}"):
                chunk = c.recv(4096)
                assert chunk, "closed at request %d" % i
                r += chunk
            assert r.startswith(b"HTTP/1.1 200"), r[:200]
    finally:
        c.close()
