"""Regression tests for the money and audit defects of the claim path (each failed before its
fix): Redis forgetting its last writes must neither pay a code twice nor let a user past the
limit nor answer 500; a claim's failure is audited once however many settlers see it; a login
attempt with control characters in the username still reaches the audit trail; the outbox
parks the event the logger refused, by id."""

import json
import time

import pytest

from gwclient import claim_id_for, Stack, gw_stack, pg_query, redis_codes, wait_for  # noqa: F401

pytestmark = [pytest.mark.e2e]


def _raw_redis(redis_url):
    import redis
    return redis.Redis.from_url(redis_url, socket_timeout=10)


def snapshot(r, categories):
    """Every key of these categories, DUMPed: what Redis held at this moment."""
    snap = {}
    for cat in categories:
        for key in r.scan_iter(match="chance:{c%d}:*" % cat, count=1000):
            snap[key] = r.dump(key)
    return snap


def lose_writes_since(r, categories, snap):
    """Brings the categories back to the snapshot, as a Redis that crashed with appendfsync
    everysec (or a failover to a lagging replica) would: every write since is forgotten."""
    for cat in categories:
        for key in r.scan_iter(match="chance:{c%d}:*" % cat, count=1000):
            if key not in snap:
                r.delete(key)
    for key, value in snap.items():
        r.restore(key, 0, value, replace=True)


def check_ledger_agrees_with_redis(s, redis_client):
    """PostgreSQL is the record: every credited code is assigned in Redis to its ledger owner,
    no code or claim is credited twice, and wallets add up to the ledger."""
    ledger = pg_query(s.postgres_url, "SELECT user_id, claim_id, code, amount FROM ledger")
    assert len({r[2] for r in ledger}) == len(ledger), "a code was credited twice"
    assert len({r[1] for r in ledger}) == len(ledger), "a claim was credited twice"
    codes = redis_codes(redis_client)
    for uid, claim, code, amount in ledger:
        h = codes[code]
        assert (h["status"], h["user_id"], h["claim_id"], int(h["reward"])) == \
            ("assigned", str(uid), claim, amount), (code, h)
    total = pg_query(s.postgres_url, "SELECT coalesce(sum(balance), 0) FROM wallets")[0][0]
    assert total == sum(r[3] for r in ledger)
    return ledger


def eventually_consistent(s, redis_client, timeout=40):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check_ledger_agrees_with_redis(s, redis_client)
        except (AssertionError, KeyError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.mark.fault
def test_redis_losing_its_last_writes_never_pays_twice(chanced, chanced_bin, fresh_postgres_url,
                                                       redis_client, redis_url):
    """A holds a code of each category (limit 1); Redis forgets those claims. B then claims in
    every category: never a 500, and where B drew A's code, Redis is repaired from the ledger
    (the code is A's again) and B's claim draws another code under the same claim id. A claims
    again: refused with user_limit_reached everywhere, paid once."""
    # credits are checked against Redis 8 s after they are made: after the loss below
    s = Stack(chanced, chanced_bin, fresh_postgres_url, with_logger=False,
              reconcile_interval_ms=300, reconcile_verify_delay_ms=8000)
    raw = _raw_redis(redis_url)
    batch = s.generate(20, 3, per_user_limit=1)
    one = s.generate(1, 1, per_user_limit=1)  # one code: B can only draw A's
    cats = batch["categories"] + one["categories"]
    a, b = s.signup(), s.signup()
    before = snapshot(raw, cats)
    first = {}
    for cat in cats:
        r = a.claim(cat, key="a-%d" % cat)
        assert r.status == 201, r
        first[cat] = r.json
    lose_writes_since(raw, cats, before)
    assert all(h["status"] == "available" for h in redis_codes(redis_client).values())

    collided = 0
    for cat in batch["categories"]:
        r = b.claim(cat, key="b-%d" % cat)
        assert r.status == 201, r
        assert r.json["code"] != first[cat]["code"], "A's paid code went to B"
        assert r.json["claim_id"] == claim_id_for(s.postgres_url, b.id, "b-%d" % cat)
        collided += redis_codes(redis_client)[first[cat]["code"]]["status"] == "assigned"
    r = b.claim(one["categories"][0], key="b-one")
    assert r.status == 409 and r.code == "category_exhausted", r
    # B drew A's code somewhere (the chance of never doing so in 20 draws is 0.03%), or the
    # repair path was not exercised at all
    assert collided >= 1

    for cat in cats:
        r = a.claim(cat, key="a2-%d" % cat)
        assert r.status == 409 and r.code == "user_limit_reached", (cat, r)
    assert a.get("/me").json["balance"] == sum(c["reward"] for c in first.values())
    # codes Redis forgot and nobody drew since are repaired by the reconciler's check
    ledger = eventually_consistent(s, redis_client)
    assert len(ledger) == len(cats) + len(batch["categories"])
    # A's retries of its first claims still answer with A's codes
    for cat in cats:
        r = a.claim(cat, key="a-%d" % cat)
        assert r.status == 201 and r.json["code"] == first[cat]["code"], r
    failed = pg_query(s.postgres_url, "SELECT error, count(*) FROM claims WHERE status = 'failed'"
                      " GROUP BY error")
    assert dict(failed) == {"user_limit_reached": len(cats), "category_exhausted": 1}


@pytest.mark.fault
def test_the_reconciler_repairs_a_lost_claim_too(chanced, chanced_bin, fresh_postgres_url,
                                                 redis_client, redis_url):
    """The same loss found by the reconciler rather than a request: B's assignment of A's code,
    left uncredited (B's gateway died), is not skipped: the code goes back to A, B's claim draws
    another code and is credited."""
    s = Stack(chanced, chanced_bin, fresh_postgres_url, with_logger=False,
              reconcile_grace_ms=200, reconcile_interval_ms=300)
    raw = _raw_redis(redis_url)
    one = s.generate(1, 2, per_user_limit=1)
    cat = one["categories"][0]
    a, b = s.signup(), s.signup()
    before = snapshot(raw, [cat])
    got = a.claim(cat, key="a")
    assert got.status == 201
    lose_writes_since(raw, [cat], before)
    # B's claim reaches chance only (as if B's gateway died before crediting): park the other
    # code so B must draw A's
    other = next(c for c in redis_codes(redis_client) if c != got.json["code"])
    raw.srem("chance:{c%d}:free" % cat, other)
    from nest import NestClient
    claim_b = claim_id_for(s.postgres_url, b.id, "b")
    with NestClient(*s.chance.hostport()) as c:
        r = c.call("chance.claim", {"claim_id": claim_b, "category": cat,
                                    "user": {"id": b.id, "username": b.user["username"]}})
    assert r["code"] == got.json["code"]
    raw.sadd("chance:{c%d}:free" % cat, other)
    wait_for(lambda: pg_query(s.postgres_url, "SELECT count(*) FROM ledger")[0][0] == 2,
             timeout=30, what="the reconciler to settle B's claim")
    ledger = eventually_consistent(s, redis_client)
    owners = {code: claim for _uid, claim, code, _amount in ledger}
    assert owners[got.json["code"]] == got.json["claim_id"]
    assert owners[other] == claim_b
    assert b.get("/claims/" + claim_b).json["status"] == "credited"


def test_a_claim_failure_is_audited_once(chanced, chanced_bin, fresh_postgres_url, redis_client):
    """The settle pass fails a pending claim (category disabled); the client then retries with
    the same key and is refused again: one claim.failed event, not two."""
    s = Stack(chanced, chanced_bin, fresh_postgres_url, with_logger=False,
              pending_settle_ms=200, reconcile_interval_ms=300)
    batch = s.generate(1, 2)
    cat = batch["categories"][0]
    assert s.admin().patch("/admin/categories/%d" % cat, {"enabled": False}).status == 200
    user = s.signup()
    claim_id = claim_id_for(s.postgres_url, user.id, "k")
    pg_query(s.postgres_url, "INSERT INTO claims (claim_id, user_id, category, status, updated_at)"
             " VALUES (%s, %s, %s, 'pending', now() - interval '1 min')", (claim_id, user.id, cat))
    wait_for(lambda: user.get("/claims/" + claim_id).json.get("status") == "failed",
             timeout=20, what="the settle pass to fail the claim")
    r = user.claim(cat, key="k")
    assert r.status == 409 and r.code == "category_disabled", r
    events = pg_query(s.postgres_url, "SELECT event FROM outbox WHERE event LIKE %s",
                      ("%%claim.failed%%%s%%" % claim_id,))
    assert len(events) == 1, events


def _logs(admin, **q):
    from urllib.parse import urlencode
    r = admin.get("/admin/logs?" + urlencode(q))
    assert r.status == 200, r
    return r.json["items"]


def test_a_failed_login_with_control_characters_is_audited(gw_stack):
    """The attempted username is the client's text: escaped at the source, so the logger keeps
    the event instead of refusing it (and nothing is parked)."""
    s = gw_stack
    admin = s.admin()
    names = ["ev\x01il\x7fname", "\x1b[31mred", "\u00e9" * 31 + "\x02"]
    for name in names:
        r = s.client().post("/auth/login", {"username": name, "password": "whatever 123"})
        assert r.status == 401, r

    def stored():
        return {e["subject"]["username"] for e in _logs(admin, type="login.failed", limit=1000)}

    def mine(names_seen):
        # the trail is shared with other tests: look for these three
        return {"ev\\x01il\\x7fname", "\\x1b[31mred"} <= names_seen and \
            any(n.startswith("\u00e9" * 31) for n in names_seen)
    wait_for(lambda: mine(stored()), timeout=30, what="the login.failed events in the trail")
    for n in stored():
        assert len(n.encode()) <= 64 and not any(ord(ch) < 32 for ch in n)
    assert pg_query(s.postgres_url, "SELECT count(*) FROM outbox WHERE rejected IS NOT NULL")[0][0] \
        == 0


def test_the_outbox_parks_the_refused_event_by_id(gw_stack):
    """A corrupt row ahead of a batch and an event the logger refuses: the refused one is parked
    (not its neighbour), the corrupt one is parked, every valid one is delivered (and, by
    default, leaves the outbox; the parked ones stay)."""
    s = gw_stack
    admin = s.admin()
    wait_for(lambda: pg_query(s.postgres_url, "SELECT count(*) FROM outbox WHERE delivered_at"
                              " IS NULL")[0][0] == 0, timeout=30, what="the outbox to drain")
    # an event as audit.c writes it (delivered rows are gone: none to copy)
    good = {"ts": int(time.time() * 1000), "service": "gateway", "type": "admin.action",
            "actor": None, "subject": {}, "data": {}, "message": "valid"}
    ok1 = dict(good, message="first valid")
    bad = dict(good, type="bad type with spaces", message="refused")
    ok2 = dict(good, message="second valid")
    rows = pg_query(s.postgres_url, "INSERT INTO outbox (event) VALUES (%s), (%s), (%s), (%s)"
                    " RETURNING id", ("not json at all", json.dumps(ok1), json.dumps(bad),
                                      json.dumps(ok2)))
    ids = [r[0] for r in rows]
    wait_for(lambda: pg_query(s.postgres_url, "SELECT count(*) FROM outbox WHERE id = ANY(%s)"
                              " AND delivered_at IS NULL", (ids,))[0][0] == 0,
             timeout=30, what="the four rows to be handled")
    state = dict(pg_query(s.postgres_url, "SELECT id, rejected IS NOT NULL FROM outbox"
                          " WHERE id = ANY(%s)", (ids,)))
    assert state == {ids[0]: True, ids[2]: True}
    time.sleep(0.5)
    messages = {e["message"] for e in _logs(admin, type=good["type"])}
    assert {"first valid", "second valid"} <= messages and "refused" not in messages
