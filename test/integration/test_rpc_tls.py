"""The internal NestJS TCP links with mutual TLS, on real daemons (issue 10, "Internal links").

Certificates come from deploy/gen-certs.sh (the openssl command), as `make run` and compose
make them: one CA with certificates for gateway, chance and logger, and a second CA ("other")
whose certificates must be refused.

    chance/logger with rpc_tls_*   a raw TCP peer gets no frame; a TLS peer without a
                                   certificate, or with another CA's, is refused (and counted);
                                   a peer with a certificate of the CA is served
    non-loopback listen address    exit 78 without mutual TLS, unless rpc_insecure=true
    gateway                        claims over HTTP with TLS on both links
    frames                         a 3 MB request trickled in 400-byte writes is answered
"""

import select
import socket
import ssl
import stat
import subprocess
import time
from collections import deque
from pathlib import Path

import pytest

from conftest import free_port
from gwclient import GATEWAY_TEST_KEYS, Stack, wait_for
from gwclient import wait_ready as gw_wait_ready
from loggerkit import http_get, metric, store  # noqa: F401  (store: the fixture)
from nest import FrameDecoder, NestClient, NestClosed, NestError, encode_frame, encode_text

ROOT = Path(__file__).resolve().parent.parent.parent
GEN_CERTS = ROOT / "deploy" / "gen-certs.sh"
HANDSHAKE_FAILURES = "chanced_rpc_tls_handshake_failures_total"


# --- certificates ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """{"ca": DIR, "other": DIR}: each DIR/<role>/{ca.crt,cert.pem,key.pem}."""
    top = tmp_path_factory.mktemp("rpc-tls")
    out = {}
    for name in ("ca", "other"):
        p = subprocess.run(["sh", str(GEN_CERTS), str(top / name), "gateway", "chance", "logger",
                            "client"], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, "deploy/gen-certs.sh failed:\n%s%s" % (p.stdout, p.stderr)
        out[name] = top / name
    return out


def tls_keys(d, role):
    """The rpc_tls_* keys of one role, from a gen-certs.sh directory."""
    return {"rpc_tls_ca": str(d / role / "ca.crt"), "rpc_tls_cert": str(d / role / "cert.pem"),
            "rpc_tls_key": str(d / role / "key.pem")}


class TlsNestClient(NestClient):
    """NestClient over TLS (Python's ssl): verifies the server against ca, presents cert/key."""

    def __init__(self, host, port, ca, cert=None, key=None, timeout=10.0):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(str(ca))
        if cert:
            ctx.load_cert_chain(str(cert), str(key))
        self.addr = (host, int(port))
        self.timeout = timeout
        self.ascii_only = True
        raw = socket.create_connection(self.addr, timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = ctx.wrap_socket(raw, server_hostname=host)
        self.decoder = FrameDecoder()
        self.inbox = deque()
        self.eof = False

    def _fill(self, deadline):
        # decrypted bytes may wait inside the SSL object, where select() cannot see them
        if self.eof:
            raise NestClosed("connection closed by %s:%d" % self.addr)
        if not self.sock.pending():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                return False
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLZeroReturnError):
            data = b""
        if not data:
            self.eof = True
            raise NestClosed("connection closed by %s:%d" % self.addr)
        self.inbox.extend(self.decoder.feed(data))
        return True


def client_for(d, port, role="client", host="127.0.0.1", **kw):
    return TlsNestClient(host, port, d / role / "ca.crt", d / role / "cert.pem",
                         d / role / "key.pem", **kw)


def raw_tcp_gets_nothing(port, what):
    """A plain TCP peer sends a valid NestJS request: it must get no frame back, only (at most)
    a TLS alert record, and the connection must end."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(encode_frame({"pattern": {"cmd": what}, "data": {}, "id": "raw-1"}))
        got = b""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            except socket.timeout:
                continue
            if not chunk:
                break
            got += chunk
        else:
            pytest.fail("a plain TCP peer of %s was left connected" % what)
    assert got == b"" or got[:1] == b"\x15", "plain TCP peer got %r" % got[:80]
    assert b"#{" not in got and b"response" not in got


def refused(fn):
    """fn() (a TLS request) must fail at the TLS layer: handshake error, alert, or close."""
    with pytest.raises((ssl.SSLError, NestClosed, ConnectionResetError, BrokenPipeError)):
        fn()


def tls_peer_refused(port, d, role, cmd, data, *, with_cert=True):
    def go():
        if with_cert:
            c = client_for(d, port, role)
        else:
            c = TlsNestClient("127.0.0.1", port, d / role / "ca.crt")
        with c:
            c.call(cmd, data, timeout=20)
    refused(go)


def test_gen_certs_is_idempotent_and_keeps_keys_private(tmp_path):
    d = tmp_path / "tls"

    def run(*args):
        p = subprocess.run(["sh", str(GEN_CERTS), str(d)] + list(args), capture_output=True,
                           text=True, timeout=120)
        return p

    def snapshot():
        return {str(f.relative_to(d)): (f.read_bytes(), stat.S_IMODE(f.stat().st_mode))
                for f in sorted(d.rglob("*")) if f.is_file()}

    assert run().returncode == 0
    first = snapshot()
    assert set(first) == {"ca/ca.key", "ca/ca.crt"} | {
        "%s/%s" % (r, f) for r in ("gateway", "chance", "logger")
        for f in ("ca.crt", "cert.pem", "key.pem")}
    for name, (_, mode) in first.items():
        assert mode == (0o400 if name.endswith(".key") or name.endswith("key.pem") else 0o444), \
            (name, oct(mode))
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    p = run()
    assert p.returncode == 0 and snapshot() == first, p.stdout  # nothing rewritten
    assert p.stdout.count("keeping") == 4
    # a name added for one role: that role alone gets a new key and certificate
    p = run("gateway", "chance=chance.internal,10.9.8.7", "logger")
    assert p.returncode == 0, p.stderr
    again = snapshot()
    changed = {n for n in first if first[n] != again[n]}
    assert changed == {"chance/cert.pem", "chance/key.pem"}, changed
    text = subprocess.run(["openssl", "x509", "-in", str(d / "chance" / "cert.pem"), "-noout",
                           "-ext", "subjectAltName"], capture_output=True, text=True).stdout
    assert "DNS:chance.internal" in text and "IP Address:10.9.8.7" in text, text
    # bad input changes nothing, even after a good argument
    p = run("logger=logger.new", "no/slash")
    assert p.returncode == 64 and "bad role name" in p.stderr
    p = run("logger=logger.new", "chance=a b")
    assert p.returncode == 64 and "bad names" in p.stderr
    assert snapshot() == again


# --- chance and logger ---------------------------------------------------------------------

def test_chance_serves_only_peers_with_a_certificate_of_its_ca(chanced, redis_client, certs):
    ca, other = certs["ca"], certs["other"]
    ch = chanced("chance", **tls_keys(ca, "chance"))
    health = ch.addr("chance_health_listen")
    ch.wait_log(r'"event":"rpc_listening".*tls=mutual')

    raw_tcp_gets_nothing(ch.port, "chance.categories")
    # TLS, but no client certificate; a certificate (and trust) of another CA
    tls_peer_refused(ch.port, ca, "client", "chance.categories", {}, with_cert=False)
    tls_peer_refused(ch.port, other, "client", "chance.categories", {})
    # our CA's trust, another CA's certificate (the client trusts chance, chance not it)
    def foreign_cert():
        c = TlsNestClient("127.0.0.1", ch.port, ca / "client" / "ca.crt",
                          other / "client" / "cert.pem", other / "client" / "key.pem")
        with c:
            c.call("chance.categories", {}, timeout=20)
    refused(foreign_cert)
    # each counted, and logged (at most a line a second)
    wait_for(lambda: (metric(health, HANDSHAKE_FAILURES, 'role="chance",side="server"') or 0) >= 4,
             what="4 handshake failures counted on chance")
    ch.wait_log(r'"event":"rpc_tls_handshake_failed".*side=server')

    # a certificate of the CA: served, with the certificate of any role of that CA
    with client_for(ca, ch.port) as c:
        assert c.call("chance.categories", {}) == {"items": [], "next_cursor": None}
        with pytest.raises(NestError) as e:
            c.call("chance.claim", {"claim_id": "x", "category": 999, "user": {
                "id": "1", "username": "u"}})
        assert e.value.err["code"] == "category_not_found"


def test_logger_serves_only_peers_with_a_certificate_of_its_ca(chanced, store, certs):
    ca, other = certs["ca"], certs["other"]
    lg = chanced("logger", mongo_url=store[0], **tls_keys(ca, "logger"))
    raw_tcp_gets_nothing(lg.port, "log.query")
    tls_peer_refused(lg.port, ca, "client", "log.query", {}, with_cert=False)
    tls_peer_refused(lg.port, other, "client", "log.query", {})
    with client_for(ca, lg.port, role="gateway") as c:
        r = c.call("log.query", {"limit": 5}, timeout=30)
        assert r["items"] == [] and r["next_cursor"] is None
    wait_for(lambda: (metric(lg.addr("logger_health_listen"), HANDSHAKE_FAILURES,
                             'role="logger",side="server"') or 0) >= 3,
             what="3 handshake failures counted on logger")


def test_a_silent_peer_is_dropped_at_the_handshake_deadline(chanced, redis_client, certs):
    ch = chanced("chance", frame_stall_ms=1000, **tls_keys(certs["ca"], "chance"))
    with socket.create_connection(("127.0.0.1", ch.port), timeout=15) as s:
        t0 = time.monotonic()
        assert s.recv(100) == b""  # closed by chance, nothing sent
        assert time.monotonic() - t0 >= 0.5


# --- listeners that refuse to start --------------------------------------------------------

@pytest.mark.parametrize("role,key", [("chance", "chance_listen"), ("logger", "logger_listen")])
def test_non_loopback_listener_needs_tls_or_rpc_insecure(role, key, chanced, certs, store):
    extra = {"mongo_url": store[0]} if role == "logger" else {}
    addr = "0.0.0.0:%d" % free_port()
    d = chanced(role, wait=False, **{key: addr}, **extra)
    assert d.wait_exit(timeout=30) == 78
    text = d.log_text()
    assert "%s=%s is not a loopback address" % (key, addr) in text, text
    assert "rpc_insecure=true" in text
    # server-only TLS (no CA to check clients against) is not enough either
    keys = tls_keys(certs["ca"], role)
    keys["rpc_tls_ca"] = None
    d = chanced(role, wait=False, **{key: "0.0.0.0:%d" % free_port()}, **keys, **extra)
    assert d.wait_exit(timeout=30) == 78
    # files that do not load: a configuration error too, naming the file
    keys = tls_keys(certs["ca"], role)
    keys["rpc_tls_cert"] = "/nonexistent/cert.pem"
    d = chanced(role, wait=False, **keys, **extra)
    assert d.wait_exit(timeout=30) == 78
    assert "/nonexistent/cert.pem" in d.log_text()
    # explicitly insecure: it starts, and says so in its listening line
    d = chanced(role, rpc_insecure=True, **{key: "0.0.0.0:%d" % free_port()}, **extra)
    d.wait_log(r'"event":"rpc_listening".*tls=off')
    # with mutual TLS it starts on every interface
    d = chanced(role, **{key: "0.0.0.0:%d" % free_port()}, **tls_keys(certs["ca"], role),
                **extra)
    d.wait_log(r'"event":"rpc_listening".*tls=mutual')


def test_gateway_refuses_plain_links_to_other_hosts(chanced, certs, postgres_url):
    d = chanced("gateway", wait=False, postgres_url=postgres_url, chance_addr="chance:4001",
                logger_addr="127.0.0.1:%d" % free_port())
    assert d.wait_exit(timeout=30) == 78
    assert "chance_addr=chance:4001 is not a loopback address" in d.log_text()
    keys = tls_keys(certs["ca"], "gateway")
    keys["rpc_tls_ca"] = None  # a certificate without the CA to check the servers against
    d = chanced("gateway", wait=False, postgres_url=postgres_url, **keys)
    assert d.wait_exit(timeout=30) == 78
    assert "rpc_tls_ca is not" in d.log_text()


def test_role_all_keeps_the_internal_links_on_loopback(chanced, store, postgres_url, certs):
    chance, logger = free_port(), free_port()
    d = chanced("all", chance_listen="0.0.0.0:%d" % chance, chance_addr="127.0.0.1:%d" % chance,
                logger_listen="0.0.0.0:%d" % logger, logger_addr="127.0.0.1:%d" % logger,
                mongo_url=store[0], postgres_url=postgres_url, start_timeout=60,
                **tls_keys(certs["ca"], "gateway"))
    d.wait_log(r'"event":"rpc_listen_loopback".*bound=127\.0\.0\.1:%d ' % chance, timeout=30)
    d.wait_log(r'"event":"rpc_listen_loopback".*bound=127\.0\.0\.1:%d ' % logger, timeout=30)
    for port in (chance, logger):
        with socket.socket() as s:  # another address of this host: nothing listens there
            s.settimeout(5)
            assert s.connect_ex(("127.0.0.2", port)) != 0, "port %d reachable off 127.0.0.1" % port
    gw_wait_ready(d.port, timeout=60)


# --- the gateway, end to end ---------------------------------------------------------------

class TlsStack(Stack):
    """Stack with TLS on both links: each role its own certificate of one CA."""

    def __init__(self, chanced, chanced_bin, postgres_url, store_url, d):
        self.chanced = chanced
        self.bin = chanced_bin
        self.postgres_url = postgres_url
        self.chance = chanced("chance", **tls_keys(d, "chance"))
        self.logger = chanced("logger", mongo_url=store_url, **tls_keys(d, "logger"))
        keys = dict(GATEWAY_TEST_KEYS, postgres_url=postgres_url, **tls_keys(d, "gateway"))
        self.gateway = chanced("gateway", **keys)
        self.port = self.gateway.port
        gw_wait_ready(self.port, timeout=60)
        self._admin = None
        self._n = 0


def test_gateway_claims_over_tls_links(chanced, chanced_bin, fresh_postgres_url, redis_client,
                                       store, certs):
    st = TlsStack(chanced, chanced_bin, fresh_postgres_url, store[0], certs["ca"])
    st.gateway.wait_log(r'"event":"rpc_connected".*tls=on')
    batch = st.generate(2, 5, reward_min=1000, reward_max=1000)
    alice = st.signup("alice")
    r = alice.claim(batch["categories"][0], key="tls-claim-1")
    assert r.status == 201, r
    assert r.json["reward"] == 1000
    r = alice.get("/wallet")
    assert r.status == 200 and r.json["balance"] == 1000, r
    # the audit trail reached the logger over its TLS link too
    admin = st.admin()
    wait_for(lambda: any(e["type"] == "claim.credited"
                         for e in admin.get("/admin/logs?type=claim.credited").json["items"]),
             timeout=30, what="claim.credited in the audit log")
    # nobody else talks to chance: a raw peer is refused while the gateway is served
    raw_tcp_gets_nothing(st.chance.port, "chance.categories")
    assert alice.claim(batch["categories"][1], key="tls-claim-2").status == 201


def test_gateway_does_not_trust_a_chance_of_another_ca(chanced, fresh_postgres_url,
                                                       redis_client, certs):
    """The client side checks too: a chance whose certificate is not from rpc_tls_ca (say an
    impostor on the network) gets no call from the gateway, and the gateway is not ready."""
    ch = chanced("chance", **tls_keys(certs["other"], "chance"))
    gw = chanced("gateway", postgres_url=fresh_postgres_url,
                 logger_addr="127.0.0.1:%d" % free_port(), **tls_keys(certs["ca"], "gateway"))
    gw.wait_log(r'"event":"rpc_tls_handshake_failed".*side=client', timeout=30)
    m = metric(gw.addr("gateway_health_listen"), HANDSHAKE_FAILURES,
               'role="gateway",side="client"')
    assert m and m >= 1
    status, body = http_get(gw.addr("gateway_health_listen"), "/readyz")
    assert status == 503 and "chance=down" in body, (status, body)
    assert ch.running()


# --- frames trickled in -------------------------------------------------------------------

def test_a_3mb_request_trickled_in_400_byte_writes_is_answered(chanced, redis_client):
    ch = chanced("chance", max_frame_bytes=4 << 20, frame_stall_ms=120000)
    pad = ("abc\u00e9\u20ac\U0001F600xyz" * 400000)[:3 << 20]
    frame = encode_frame({"pattern": {"cmd": "chance.categories"}, "data": {"pad": pad},
                          "id": "big-1"}, ascii_only=False)
    assert len(frame) > 3 << 20
    with NestClient(*ch.hostport(), timeout=120) as c:
        for i in range(0, len(frame), 400):
            c.send_raw(frame[i:i + 400])
            if i % 40000 == 0:
                time.sleep(0.001)  # let chance read small pieces, not one big buffer
        with pytest.raises(NestError) as e:
            c.results("big-1", timeout=120)
        # the whole frame was read and decoded: chance names the unknown field
        assert e.value.err["code"] == "bad_request" and "pad" in e.value.err["message"], \
            e.value.err
        # and the connection still serves
        assert c.call("chance.categories", {}) == {"items": [], "next_cursor": None}
