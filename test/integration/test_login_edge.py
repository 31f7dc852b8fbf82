"""The gateway's login edge on the real daemon: a login flood is answered fast (429 from the small
per-address burst, 503 + Retry-After when the argon2 slots and their short queue are full) while
/livez stays prompt; wrong passwords from one address do not lock the user out from another (per
(username, address) failures refuse that address only; the per-username cap slows, within a
bound); the login and signup budgets are shared by the gateways of one database (PostgreSQL,
also through PgBouncer in transaction pooling), not multiplied by their number."""

import http.client
import json
import threading
import time

import pytest

from gwclient import API, GATEWAY_TEST_KEYS, Stack, pg_query, wait_ready
from loggerkit import metric
from test_pgbouncer import bouncer  # noqa: F401 - the fixture

pytestmark = [pytest.mark.e2e]

# The defaults of the login limits (gateway_conf.c), which the generous GATEWAY_TEST_KEYS override.
DEFAULT_LIMITS = {"login_rate_ip": 60, "login_burst_ip": 10, "login_fail_rate": 10,
                  "login_rate_user": 10, "argon2_queue_ms": 100, "argon2_queue_max": 4}


class Answer:
    def __init__(self, status, headers, body, seconds):
        self.status, self.headers, self.body, self.seconds = status, headers, body, seconds
        try:
            self.json = json.loads(body)
        except ValueError:
            self.json = None

    def __repr__(self):
        return "<%d %.2fs %s>" % (self.status, self.seconds, self.body[:200])


def post(port, path, body, source="127.0.0.1", timeout=30):
    """POST JSON from a chosen loopback source address (the gateway's client address)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    t = time.monotonic()
    try:
        c.request("POST", path, body=json.dumps(body).encode(),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        text = r.read().decode("utf-8", "replace")
        return Answer(r.status, {k.lower(): v for k, v in r.getheaders()}, text,
                      time.monotonic() - t)
    finally:
        c.close()


def login(port, username, password, source="127.0.0.1"):
    return post(port, API + "/auth/login", {"username": username, "password": password}, source)


def signup(port, username, source="127.0.0.1"):
    return post(port, API + "/auth/signup", {"username": username, "password": "correct horse 1"},
                source)


def get_ms(port, path="/livez"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    t = time.monotonic()
    try:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        return r.status, (time.monotonic() - t) * 1000
    finally:
        c.close()


def check_refusal(a):
    """A 429/503 says why and when to come back."""
    assert a.headers["content-type"].startswith("application/problem+json"), a
    assert int(a.headers["retry-after"]) >= 1, a
    if a.status == 429:
        assert a.json["code"] == "rate_limited" and "retry after" in a.json["detail"], a
    else:
        assert a.json["code"] == "busy" and "retry after 1 s" in a.json["detail"], a


def flood(port, username, password, n=200, source="127.0.0.1"):
    """n logins at once (half with the right password) while /livez is polled all along;
    returns (answers, the slowest /livez in ms, how many /livez were asked)."""
    answers, errors, lock = [], [], threading.Lock()
    start = threading.Barrier(n + 1)
    done = threading.Event()
    livez = []

    def one(i):
        start.wait()
        try:
            a = login(port, username, password if i % 2 else "not the password", source)
        except Exception as e:  # noqa: B902 - a cut or hung connection is a finding
            with lock:
                errors.append(repr(e))
            return
        with lock:
            answers.append(a)

    def poll():
        while not done.is_set():
            status, ms = get_ms(port)
            livez.append((status, ms))
            time.sleep(0.02)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    poller = threading.Thread(target=poll)
    poller.start()
    start.wait()
    t0 = time.monotonic()
    for t in threads:
        t.join(timeout=60)
    elapsed = time.monotonic() - t0
    done.set()
    poller.join()
    assert not errors, errors[:5]
    assert len(answers) == n, "%d of %d logins answered (hung?)" % (len(answers), n)
    assert elapsed < 30, elapsed
    assert all(s == 200 for s, _ in livez), livez
    return answers, max(ms for _, ms in livez), len(livez)


@pytest.mark.parametrize("limits", ["defaults", "wide_open_address_limits"])
def test_login_flood_fails_fast(chanced, chanced_bin, fresh_postgres_url, redis_client, limits):
    """200 concurrent logins from one address: /livez under 1 s throughout, every answer
    200/401/429/503 with Retry-After on the refusals. With the default limits the small
    per-address burst turns most away (429); with the address limits wide open the argon2 slots
    and their short queue do (503), and still no login waits long."""
    keys = dict(DEFAULT_LIMITS)
    if limits != "defaults":
        keys.update(login_rate_ip=1000000, login_burst_ip=1000000, login_fail_rate=1000000,
                    login_rate_user=1000000)
    s = Stack(chanced, chanced_bin, fresh_postgres_url, with_logger=False, **keys)
    assert signup(s.port, "flooded").status == 201
    answers, slowest_livez, polls = flood(s.port, "flooded", "correct horse 1")
    statuses = [a.status for a in answers]
    assert set(statuses) <= {200, 401, 429, 503}, sorted(set(statuses))
    for a in answers:
        if a.status in (429, 503):
            check_refusal(a)
    assert slowest_livez < 1000, slowest_livez
    assert polls >= 2, polls
    assert statuses.count(200) + statuses.count(401) >= 1, statuses
    if limits == "defaults":
        # the burst of 10 (plus what refills meanwhile) gets through; the rest is 429 at once
        assert statuses.count(429) >= 180, statuses
    else:
        assert statuses.count(503) >= 100, statuses
        # a refused login waited at most about the queue time, not for a slot
        fast = sorted(a.seconds for a in answers if a.status == 503)
        assert fast[len(fast) // 2] < 1.0, fast
        # counted for the operator, on the health port
        busy = metric(s.gateway.addr("gateway_health_listen"), "chanced_gateway_logins_total",
                      'result="busy"')
        assert busy == statuses.count(503), (busy, statuses.count(503))
    # the flood is over: the user logs in normally from another address
    assert login(s.port, "flooded", "correct horse 1", source="127.0.0.9").status == 200


def test_strangers_cannot_lock_a_user_out(chanced, chanced_bin, fresh_postgres_url, redis_client):
    """Wrong passwords for U from 127.0.0.2 are refused there after login_fail_rate; U still
    logs in from 127.0.0.1 at once. Failures from many addresses exhaust a name's per-username
    budget: its logins are then slowed by at most login_user_delay_ms, and succeed."""
    s = Stack(chanced, chanced_bin, fresh_postgres_url, with_logger=False,
              **dict(DEFAULT_LIMITS, login_fail_rate=5, login_rate_user=1000, login_burst_ip=20,
                     argon2_queue_ms=2000))
    assert signup(s.port, "victim").status == 201

    got = [login(s.port, "victim", "guess %d" % i, source="127.0.0.2") for i in range(8)]
    assert [a.status for a in got] == [401] * 5 + [429] * 3, got
    check_refusal(got[-1])
    assert "this username from this address" in got[-1].json["detail"], got[-1]
    # case does not dodge it
    assert login(s.port, "VICTIM", "guess", source="127.0.0.2").status == 429

    a = login(s.port, "victim", "correct horse 1", source="127.0.0.1")
    assert a.status == 200 and a.seconds < 1.0, a
    # the owner's success does not unlock the stranger's address
    assert login(s.port, "victim", "guess", source="127.0.0.2").status == 429
    # and the stranger's address may still log in to its own account
    assert signup(s.port, "stranger", source="127.0.0.2").status == 201
    assert login(s.port, "stranger", "correct horse 1", source="127.0.0.2").status == 200

    # the per-username cap, on a second gateway of the database with 2 failures a minute (one
    # token per 30 s: the bucket stays empty for the rest of the test): strangers from
    # 127.0.0.3..5 fail twice each; after the first two failures the name's logins are slowed,
    # never refused for the name
    delay_ms = 1500
    keys = dict(GATEWAY_TEST_KEYS, postgres_url=fresh_postgres_url,
                logger_addr=s.gateway.keys["logger_addr"],
                **dict(DEFAULT_LIMITS, login_fail_rate=5, login_rate_user=2,
                       login_user_delay_ms=delay_ms, argon2_queue_ms=2000))
    g2 = chanced("gateway", **keys)
    wait_ready(g2.port)
    assert signup(g2.port, "victim2").status == 201
    slowed = []
    for host in (3, 4, 5):
        for i in range(2):
            r = login(g2.port, "victim2", "guess %d" % i, source="127.0.0.%d" % host)
            assert r.status == 401, r
            slowed.append(r.seconds)
    # bounded: the delay plus one hash (slow on a loaded machine), not until the bucket refills
    assert min(slowed[2:]) >= delay_ms / 1000 * 0.9, slowed
    assert max(slowed) < delay_ms / 1000 + 3.0, slowed
    a = login(g2.port, "victim2", "correct horse 1", source="127.0.0.1")
    assert a.status == 200, a
    assert delay_ms / 1000 * 0.9 <= a.seconds < delay_ms / 1000 + 3.0, a
    assert metric(g2.addr("gateway_health_listen"), "chanced_gateway_logins_slowed_total") == 5
    # the table holds one row per bucket, keyed by address and name (lower case)
    keys = {k for (k,) in pg_query(fresh_postgres_url, "SELECT key FROM rate_limits")}
    assert {"login.pair:127.0.0.2 victim", "login.user:victim2", "login.ip:127.0.0.3"} <= keys, keys
    g2.stop()


def two_gateways(chanced, chanced_bin, db_url, direct_url, **limits):
    """A stack (gateway A) and a second gateway B on the same database."""
    s = Stack(chanced, chanced_bin, db_url, with_logger=False, **limits)
    s.postgres_url = direct_url
    keys = dict(GATEWAY_TEST_KEYS, postgres_url=db_url, **limits)
    keys["logger_addr"] = s.gateway.keys["logger_addr"]
    g2 = chanced("gateway", **keys)
    wait_ready(g2.port)
    return s, g2


@pytest.mark.parametrize("via", ["direct", "pgbouncer"])
def test_limits_are_shared_by_the_gateways(chanced, chanced_bin, fresh_postgres_url, request,
                                           redis_client, via):
    """Two gateways of one database share the budgets: login_fail_rate failures for (name,
    address), login_burst_ip attempts from an address and signup_rate_ip signups in total, not
    twice that. Through PgBouncer in transaction pooling as well (pg_prepared=false)."""
    db_url, extra = fresh_postgres_url, {}
    if via == "pgbouncer":
        db_url = request.getfixturevalue("bouncer")
        extra = {"pg_prepared": False}
    limits = dict(login_fail_rate=4, login_rate_user=1000, login_rate_ip=1, login_burst_ip=12,
                  signup_rate_ip=3, **extra)
    # an old row is pruned by the first login (a full bucket carries no state)
    s, g2 = two_gateways(chanced, chanced_bin, db_url, fresh_postgres_url, **limits)
    assert pg_query(fresh_postgres_url, "SELECT relpersistence FROM pg_class"
                    " WHERE relname = 'rate_limits'")[0][0] == "u"
    pg_query(fresh_postgres_url, "INSERT INTO rate_limits VALUES"
             " ('login.ip:192.0.2.1', 0, false, now() - interval '1 hour')")
    ports = [s.port, g2.port]

    # signups: 3 a minute from 127.0.0.3 across both gateways
    got = [signup(ports[i % 2], "shared%d" % i, source="127.0.0.3").status for i in range(6)]
    assert got == [201] * 3 + [429] * 3, got

    # failed logins for one name from 127.0.0.4: 4 in total, then 429 on either gateway
    got = [login(ports[i % 2], "shared0", "wrong %d" % i, source="127.0.0.4") for i in range(8)]
    assert [a.status for a in got] == [401] * 4 + [429] * 4, got
    assert pg_query(fresh_postgres_url, "SELECT count(*) FROM rate_limits"
                    " WHERE key = 'login.ip:192.0.2.1'")[0][0] == 0

    # attempts from 127.0.0.5 (other names, so only the address counts): 12 in total
    got = [login(ports[i % 2], "nobody%d" % i, "wrong", source="127.0.0.5").status
           for i in range(16)]
    assert got == [401] * 12 + [429] * 4, got
    # the right password from an unspent address still works on both
    for port in ports:
        assert login(port, "shared1", "correct horse 1", source="127.0.0.6").status == 200
    g2.stop()
