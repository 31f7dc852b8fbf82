"""Helpers and fixtures for the gateway's tests (test_gateway*.py); holds no tests itself.

    def test_x(gw_stack):
        admin = gw_stack.admin()                       # created with `chanced admin create-user`
        alice = gw_stack.signup("alice")               # Client with a bearer token
        r = alice.post("/api/v1/claims", {"category": 1}, headers={"Idempotency-Key": "k"})

A stack is chance (+ logger) + gateway as separate `chanced` processes on free ports, with a
fresh PostgreSQL database and a flushed Redis.  The gateway gets test-friendly limits (rate
limits high, reconciler fast); tests that check a limit start their own gateway with lower ones.
"""

import http.client
import json
import os
import socket
import subprocess
import time

import pytest

API = "/api/v1"

# Gateway keys for tests: generous rate limits, connection caps (every test client is 127.0.0.1)
# and a longer argon2 queue (each is tested on its own: test_http_edge.py, test_login_edge.py),
# a fast reconciler.
GATEWAY_TEST_KEYS = {
    "http_max_conns_per_addr": 100000,
    "login_rate_ip": 100000,
    "login_burst_ip": 100000,
    "login_fail_rate": 1000,
    "login_rate_user": 1000,
    "argon2_queue_ms": 2000,
    "argon2_queue_max": 64,
    "signup_rate_ip": 100000,
    "claim_rate": 1000,
    "claim_burst": 1000,
    "reconcile_interval_ms": 200,
    "reconcile_grace_ms": 300,
    "pending_settle_ms": 1000,
    "outbox_interval_ms": 100,
    "cookie_secure": False,
    "rpc_timeout_ms": 3000,
}


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # dict, lower-case names (last value wins)
        self.set_cookies = [v for k, v in headers.get("_all", []) if k.lower() == "set-cookie"]
        self.body = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    @property
    def code(self):
        """The problem+json `code`, or None."""
        return self.json.get("code") if isinstance(self.json, dict) else None

    def __repr__(self):
        return "<Response %d %s>" % (self.status, self.body[:300])


def request(port, method, path, body=None, token=None, headers=None, raw=None, timeout=30,
            conn=None):
    """One HTTP request; body is JSON-encoded unless raw bytes are given.  A new connection
    per call unless conn (an http.client.HTTPConnection to reuse) is given."""
    h = {}
    if token:
        h["Authorization"] = "Bearer " + token
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        payload = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        hdrs["_all"] = r.getheaders()
        return Response(r.status, hdrs, payload.decode("utf-8", "replace"))
    finally:
        if own:
            c.close()


class Client:
    """A signed-in (or anonymous) API client of one gateway."""

    def __init__(self, port, token=None, user=None, csrf=None):
        self.port = port
        self.token = token
        self.user = user or {}
        self.csrf = csrf

    @property
    def id(self):
        return self.user.get("id")

    def req(self, method, path, body=None, **kw):
        """path is relative to /api/v1 unless it starts with /api/ or is an ops path."""
        kw.setdefault("token", self.token)
        if not path.startswith("/api/") and path not in ("/livez", "/readyz"):
            path = API + path
        return request(self.port, method, path, body=body, **kw)

    def get(self, path, **kw):
        return self.req("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.req("POST", path, body, **kw)

    def patch(self, path, body=None, **kw):
        return self.req("PATCH", path, body, **kw)

    def claim(self, category, key=None, **kw):
        headers = dict(kw.pop("headers", {}))
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.post("/claims", {"category": category}, headers=headers, **kw)


def create_user(binary, postgres_url, username, password, admin=False, via="stdin",
                if_missing=False):
    """`chanced admin create-user`; returns the CompletedProcess."""
    argv = [binary, "admin", "create-user", "--username", username,
            "--postgres_url=%s" % postgres_url, "--log_format=json"]
    if admin:
        argv.append("--admin")
    if if_missing:
        argv.append("--if-missing")
    stdin = ""
    if via == "stdin":
        stdin = password + "\n"
    else:
        argv += ["--password-file", via]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANCED_")}
    return subprocess.run(argv, input=stdin, text=True, capture_output=True, timeout=60, env=env)


class Stack:
    """chance (+ logger) + gateway, each a separate chanced process."""

    def __init__(self, chanced, chanced_bin, postgres_url, with_logger=True, **gateway_keys):
        self.chanced = chanced
        self.bin = chanced_bin
        self.postgres_url = postgres_url
        self.chance = chanced("chance")
        self.logger = chanced("logger") if with_logger else None
        keys = dict(GATEWAY_TEST_KEYS)
        keys["postgres_url"] = postgres_url
        if not with_logger:
            keys["logger_addr"] = "127.0.0.1:%d" % _unused_port()
        keys.update(gateway_keys)
        self.gateway = chanced("gateway", **keys)
        self.port = self.gateway.port
        wait_ready(self.port)
        self._admin = None
        self._n = 0

    def _auth(self, what, username, password):
        """POST /auth/<what>, retrying 503 busy (argon2 slots saturated on a loaded machine)."""
        for _ in range(20):
            r = request(self.port, "POST", API + "/auth/" + what,
                        {"username": username, "password": password})
            if r.status != 503 or r.code != "busy":
                return r
            time.sleep(int(r.headers.get("retry-after", "1")))
        return r

    def client(self, token=None):
        return Client(self.port, token)

    def signup(self, username=None, password="correct horse 1"):
        self._n += 1
        username = username or "user%d_%s" % (self._n, os.urandom(3).hex())
        r = self._auth("signup", username, password)
        assert r.status == 201, r
        return Client(self.port, r.json["token"], r.json["user"], r.json["csrf_token"])

    def login(self, username, password):
        r = self._auth("login", username, password)
        assert r.status == 200, r
        return Client(self.port, r.json["token"], r.json["user"], r.json["csrf_token"])

    def admin(self):
        if self._admin is None:
            p = create_user(self.bin, self.postgres_url, "root", "admin password 1", admin=True)
            assert p.returncode == 0, p.stderr
            self._admin = self.login("root", "admin password 1")
        return self._admin

    def generate(self, categories, codes, reward_min=1000, reward_max=100000, **extra):
        body = {"categories": categories, "codes_per_category": codes,
                "reward_min": reward_min, "reward_max": reward_max}
        body.update(extra)
        admin = self.admin()
        r = admin.post("/admin/batches", body)
        assert r.status == 202, r
        batch = r.json["batch"]
        deadline = time.monotonic() + 120
        while batch["state"] == "generating":
            assert time.monotonic() < deadline, batch
            time.sleep(0.05)
            r = admin.get("/admin/batches/%d" % batch["id"])
            assert r.status == 200, r
            batch = r.json["batch"]
        assert batch["state"] == "ready", batch
        return batch


def _unused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, timeout=20.0):
    """Until GET /readyz answers 200 (PostgreSQL and chance reachable)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = request(port, "GET", "/readyz", timeout=5)
            if last.status == 200:
                return last
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise AssertionError("gateway not ready: %r" % (last,))


def wait_for(pred, timeout=20.0, interval=0.1, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(interval)


def pg_query(url, sql, args=()):
    import psycopg2
    conn = psycopg2.connect(url, connect_timeout=10)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args or None)  # no args: a literal % stays itself
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def claim_id_for(postgres_url, user_id, key):
    """The claim id a gateway of this database gives (user, Idempotency-Key): the nonce from
    SHA-256 of the user and key, tagged with HMAC-SHA-256 under the database's claim secret
    (roles/gateway/claimid.c)."""
    import hashlib
    import hmac
    secret = pg_query(postgres_url, "SELECT value FROM gateway_meta WHERE key = 'claim_secret'")
    nonce = hashlib.sha256(("chanced-claim-nonce:%d:%s" % (user_id, key)).encode()).hexdigest()
    nonce = nonce[:32]
    tag = hmac.new(secret[0][0].encode(), ("%s:%d" % (nonce, user_id)).encode(),
                   hashlib.sha256).hexdigest()[:32]
    return nonce + tag


def table_counts(url):
    """Row counts of every gateway table (to prove that a refused request wrote nothing)."""
    out = {}
    for t in ("users", "wallets", "sessions", "claims", "ledger", "outbox"):
        out[t] = pg_query(url, "SELECT count(*) FROM %s" % t)[0][0]
    return out


def redis_codes(redis_client):
    """Every code in chance's Redis, from each category's record hash (chance:{c<id>}:codes,
    code -> JSON): {code: {code, category, reward, status, and once assigned user_id, username,
    claim_id, assigned_at}} with every value a string, as a hash field would be."""
    names = {"r": "reward", "s": "status", "u": "user_id", "n": "username", "c": "claim_id",
             "t": "assigned_at"}
    out = {}
    for key in redis_client.scan_iter(match="chance:{c*}:codes", count=1000):
        category = key.split("{c", 1)[1].split("}", 1)[0]
        for code, record in redis_client.hgetall(key).items():
            rec = {names[k]: str(v) for k, v in json.loads(record).items() if k in names}
            out[code] = dict(rec, code=code, category=category)
    return out


@pytest.fixture
def gw_stack(chanced, chanced_bin, fresh_postgres_url, redis_client):
    """A running chance + logger + gateway on a fresh database and a flushed Redis."""
    return Stack(chanced, chanced_bin, fresh_postgres_url)
