"""The gateway end to end over HTTP: accounts, claims, wallets, admin routes, audit, OpenAPI,
migrations and the create-user command.  chance, logger and gateway run as separate processes."""

import json
import os
import time

import pytest

from gwclient import (API, Stack, create_user, gw_stack, pg_query, redis_codes,  # noqa: F401
                                 request, wait_for)
from loggerkit import http_get, metric

pytestmark = pytest.mark.e2e


def test_signup_login_claim_wallet(gw_stack):
    """signup -> login -> categories -> claim -> wallet shows the reward and one ledger row."""
    s = gw_stack
    batch = s.generate(2, 10, 1000, 100000)
    s.signup("alice", "alice password")
    alice = s.login("ALICE", "alice password")  # usernames are case-insensitive
    assert alice.user["username"] == "alice" and alice.user["role"] == "user"

    me = alice.get("/me")
    assert me.status == 200 and me.json["balance"] == 0 and me.json["username"] == "alice"

    cats = alice.get("/categories")
    assert cats.status == 200, cats
    ids = [c["id"] for c in cats.json["items"]]
    assert ids == batch["categories"]
    assert all(c["remaining"] == 10 for c in cats.json["items"])

    r = alice.claim(ids[0], key="first")
    assert r.status == 201, r
    claim = r.json
    assert claim["category"] == ids[0] and claim["status"] == "credited"
    assert 1000 <= claim["reward"] <= 100000 and claim["balance"] == claim["reward"]
    assert len(claim["claim_id"]) == 64

    w = alice.get("/wallet")
    assert w.status == 200
    assert w.json["balance"] == claim["reward"]
    assert len(w.json["items"]) == 1
    row = w.json["items"][0]
    assert (row["code"], row["amount"], row["balance_after"], row["claim_id"]) == (
        claim["code"], claim["reward"], claim["reward"], claim["claim_id"])

    # The same key is the same answer, without a second code.
    again = alice.claim(ids[0], key="first")
    assert again.status == 201 and again.json == claim
    assert again.headers.get("idempotent-replayed") == "true"
    # The same key with another body is refused and assigns nothing.
    other = alice.claim(ids[1], key="first")
    assert other.status == 422 and other.code == "idempotency_key_reused"

    # My claims, one claim, and the category list that now hides what I may not claim again.
    mine = alice.get("/claims")
    assert [c["claim_id"] for c in mine.json["items"]] == [claim["claim_id"]]
    one = alice.get("/claims/" + claim["claim_id"])
    assert one.status == 200 and one.json["code"] == claim["code"]
    assert [c["id"] for c in alice.get("/categories").json["items"]] == [ids[1]]
    limit = alice.claim(ids[0], key="second")
    assert limit.status == 409 and limit.code == "user_limit_reached"

    # PostgreSQL and Redis agree.
    rows = pg_query(s.postgres_url, "SELECT code, amount, source FROM ledger")
    assert rows == [(claim["code"], claim["reward"], "request")]
    assigned = {c: h for c, h in redis_codes_of(s).items() if h.get("status") == "assigned"}
    assert list(assigned) == [claim["code"]]
    assert int(assigned[claim["code"]]["reward"]) == claim["reward"]
    assert assigned[claim["code"]]["user_id"] == str(alice.id)


def redis_codes_of(stack):
    import redis
    r = redis.Redis.from_url(os.environ["CHANCED_TEST_REDIS_URL"], decode_responses=True)
    try:
        return redis_codes(r)
    finally:
        r.close()


def test_admin_generates_and_sees_codes(gw_stack):
    """Admin generates 5 x 20 codes with rewards 1,000-100,000 and sees them."""
    s = gw_stack
    admin = s.admin()
    batch = s.generate(5, 20, 1000, 100000, name="Spring")
    assert len(batch["categories"]) == 5 and batch["total"] == 100

    cats = admin.get("/admin/categories?limit=1000")
    assert cats.status == 200
    items = cats.json["items"]
    assert [c["id"] for c in items] == batch["categories"]
    assert all(c["total"] == 20 and c["remaining"] == 20 and c["assigned"] == 0 for c in items)
    assert all(c["name"].startswith("Spring") for c in items)

    seen = {}
    for cid in batch["categories"]:
        cursor = None
        while True:
            q = "/admin/codes?category=%d&limit=7" % cid + ("&cursor=" + cursor if cursor else "")
            page = admin.get(q)
            assert page.status == 200, page
            for c in page.json["items"]:
                seen[c["code"]] = c
            cursor = page.json["next_cursor"]
            if not cursor:
                break
    assert len(seen) == 100
    assert all(1000 <= c["reward"] <= 100000 and c["status"] == "available" for c in seen.values())
    assert sum(c["reward"] for c in seen.values()) == batch["total_reward"]

    # Pagination of admin categories, and a category switched off.
    first = admin.get("/admin/categories?limit=2")
    assert len(first.json["items"]) == 2 and first.json["next_cursor"] is not None
    second = admin.get("/admin/categories?limit=2&cursor=" + first.json["next_cursor"])
    assert second.json["items"][0]["id"] == batch["categories"][2]
    off = admin.patch("/admin/categories/%d" % batch["categories"][0], {"enabled": False})
    assert off.status == 200 and off.json["enabled"] is False
    user = s.signup()
    assert batch["categories"][0] not in [c["id"] for c in user.get("/categories").json["items"]]
    r = user.claim(batch["categories"][0])
    assert r.status == 409 and r.code == "category_disabled"
    assert admin.patch("/admin/categories/999999", {"enabled": True}).status == 404
    assert admin.patch("/admin/categories/%d" % batch["categories"][0], {}).status == 422

    # Users, one user's wallet, disabling.
    users = admin.get("/admin/users?username=user")
    assert [u["id"] for u in users.json["items"]] == [user.id]
    w = admin.get("/admin/users/%d/wallet" % user.id)
    assert w.status == 200 and w.json["balance"] == 0
    assert admin.get("/admin/users/999999/wallet").status == 404
    d = admin.post("/admin/users/%d/disable" % user.id)
    assert d.status == 200 and d.json["disabled"] is True
    assert user.get("/me").status == 401  # sessions revoked at once
    assert admin.post("/admin/users/%d/disable" % admin.id).code == "cannot_disable_self"
    assert admin.post("/admin/users/%d/enable" % user.id).json["disabled"] is False


def _gateway_ids(admin, prefix, start_ms):
    """The _ids of this database's gateway events in the logger since start_ms, as listed."""
    seen = []
    cursor = None
    while True:
        page = admin.get("/admin/logs?service=gateway&from=%d&limit=50" % start_ms +
                         ("&cursor=" + cursor if cursor else ""))
        assert page.status == 200, page
        seen += [e["_id"] for e in page.json["items"] if e["_id"].startswith(prefix)]
        cursor = page.json["next_cursor"]
        if not cursor:
            return seen


def _undelivered(s):
    return pg_query(s.postgres_url, "SELECT count(*) FROM outbox WHERE delivered_at IS NULL")[0][0]


def test_audit_events_reach_the_logger(chanced, chanced_bin, fresh_postgres_url, redis_client):
    """Gateway events go through the outbox to the logger exactly once each; admins query them,
    as JSON pages, CSV and stats.  (The logger's store is shared by the whole test run, so
    everything is filtered to this test's user or database namespace.)  With
    outbox_retention_s set, every delivered row stays in the outbox, marked."""
    s = Stack(chanced, chanced_bin, fresh_postgres_url, outbox_retention_s=86400)
    start_ms = int(time.time() * 1000) - 1000
    admin = s.admin()
    batch = s.generate(1, 5)
    name = "bob_" + os.urandom(4).hex()
    bob = s.signup(name)
    assert request(s.port, "POST", API + "/auth/login",
                   {"username": name, "password": "wrong password"}).status == 401
    r = bob.claim(batch["categories"][0], key="k")
    assert r.status == 201

    def types():
        page = admin.get("/admin/logs?user=%s&limit=100" % name)
        assert page.status == 200, page
        return {e["type"] for e in page.json["items"]}
    want = {"user.signed_up", "claim.credited"}
    wait_for(lambda: want <= types(), timeout=20, what="gateway audit events in the logger")
    wait_for(lambda: all(d for _, d in pg_query(
        s.postgres_url, "SELECT id, delivered_at IS NOT NULL FROM outbox")), what="delivery")

    # Every outbox row arrived once, as gw:<namespace>:<id>.
    ns = pg_query(s.postgres_url, "SELECT value FROM gateway_meta WHERE key = 'event_namespace'")
    prefix = "gw:%s:" % ns[0][0]
    rows = pg_query(s.postgres_url, "SELECT id FROM outbox ORDER BY id")
    seen = _gateway_ids(admin, prefix, start_ms)
    assert sorted(seen) == sorted(prefix + str(i) for (i,) in rows)
    failed = admin.get("/admin/logs?type=login.failed&q=%s" % name).json["items"]
    assert len(failed) == 1 and failed[0]["subject"]["username"] == name

    credited = admin.get("/admin/logs?type=claim.credited&code=%s" % r.json["code"]).json["items"]
    assert len(credited) == 1 and credited[0]["data"]["reward"] == r.json["reward"]
    assert credited[0]["actor"]["username"] == name

    # chance's code.assigned arrives through RabbitMQ too; then the CSV must match the JSON.
    wait_for(lambda: "code.assigned" in types(), timeout=20, what="chance's event via the relay")
    items = admin.get("/admin/logs?user=%s&limit=100" % name).json["items"]
    csv = admin.get("/admin/logs.csv?user=%s" % name)
    assert csv.status == 200 and csv.headers["content-type"].startswith("text/csv")
    lines = csv.body.strip().split("\r\n")
    assert lines[0].startswith("id,ts,time,service,type")
    assert [line.split(",", 1)[0] for line in lines[1:]] == [e["_id"] for e in items]
    now = int(time.time() * 1000)
    stats = admin.get("/admin/logs/stats?from=%d&to=%d&bucket=hour" % (now - 3600000, now + 1000))
    assert stats.status == 200 and any(b["type"] == "claim.credited" for b in stats.json["buckets"])
    assert admin.get("/admin/logs?from=10&to=5").status in (400, 422)


@pytest.mark.fault
def test_audit_events_wait_for_a_stopped_logger(gw_stack):
    """With the logger down nothing is lost or refused: events wait in the outbox (readiness
    stays green) and are delivered, once each, when it is back."""
    s = gw_stack
    s.logger.stop()
    name = "frank_" + os.urandom(4).hex()
    s.signup(name)
    assert request(s.port, "GET", "/readyz").status == 200
    time.sleep(0.5)
    assert pg_query(s.postgres_url, "SELECT count(*) FROM outbox WHERE delivered_at IS NULL")[0][0] >= 1
    s.logger.start()
    wait_for(lambda: pg_query(s.postgres_url, "SELECT count(*) FROM outbox"
                                              " WHERE delivered_at IS NULL")[0][0] == 0,
             timeout=30, what="delivery after the logger came back")
    admin = s.admin()
    wait_for(lambda: len(admin.get("/admin/logs?user=%s" % name).json["items"]) == 1,
             what="the signup event, once")


@pytest.mark.fault
def test_delivered_events_leave_the_outbox(gw_stack):
    """By default (outbox_retention_s 0) a delivered event's row is deleted in the transaction
    that records its delivery: after delivery the outbox holds only parked rows, and each event
    reached the logger once under its outbox id. The backlog gauge counts the undelivered rows.
    The prune deletes delivered rows left from a retention, keeps parked ones seven days."""
    s = gw_stack
    start_ms = int(time.time() * 1000) - 1000
    admin = s.admin()
    cat = s.generate(1, 5)["categories"][0]
    health = s.gateway.addr("gateway_health_listen")
    wait_for(lambda: _undelivered(s) == 0, timeout=30, what="the outbox to drain")
    assert pg_query(s.postgres_url, "SELECT count(*) FROM outbox")[0][0] == 0

    # The logger down: record the ids of the events that wait, then deliver them.
    s.logger.stop()
    name = "dora_" + os.urandom(4).hex()
    dora = s.signup(name)
    assert dora.claim(cat, key="k").status == 201
    assert request(s.port, "POST", API + "/auth/login",
                   {"username": name, "password": "wrong password"}).status == 401
    corrupt = pg_query(s.postgres_url, "INSERT INTO outbox (event) VALUES ('not json')"
                       " RETURNING id")[0][0]
    waiting = [i for (i,) in pg_query(s.postgres_url, "SELECT id FROM outbox ORDER BY id")]
    assert len(waiting) >= 4 and _undelivered(s) == len(waiting)
    wait_for(lambda: metric(health, "chanced_gateway_outbox_backlog") == len(waiting),
             timeout=30, what="the backlog gauge to count the waiting events")
    s.logger.start()
    wait_for(lambda: _undelivered(s) == 0, timeout=30, what="delivery after the logger came back")
    assert pg_query(s.postgres_url, "SELECT id, delivered_at IS NOT NULL, rejected FROM outbox") \
        == [(corrupt, True, "stored event is not a JSON object")]
    wait_for(lambda: metric(health, "chanced_gateway_outbox_backlog") == 0, timeout=30,
             what="the backlog gauge to drop to 0")

    ns = pg_query(s.postgres_url, "SELECT value FROM gateway_meta WHERE key = 'event_namespace'")
    prefix = "gw:%s:" % ns[0][0]
    want = {prefix + str(i) for i in waiting if i != corrupt}
    seen = _gateway_ids(admin, prefix, start_ms)
    assert sorted(e for e in seen if e in want) == sorted(want)
    assert len(seen) == len(set(seen))

    # The prune: a delivered row kept by an earlier retention goes at once; a parked row stays
    # seven days.
    kept = pg_query(s.postgres_url, "INSERT INTO outbox (event, delivered_at, rejected) VALUES"
                    " ('{}', now() - interval '1 second', NULL),"
                    " ('{}', now() - interval '6 days', 'parked six days ago'),"
                    " ('{}', now() - interval '8 days', 'parked eight days ago') RETURNING id")
    old_delivered, parked6, parked8 = [i for (i,) in kept]
    wait_for(lambda: pg_query(s.postgres_url, "SELECT count(*) FROM outbox WHERE id = ANY(%s)",
                              ([old_delivered, parked8],))[0][0] == 0,
             timeout=30, what="the prune")
    assert sorted(i for (i,) in pg_query(s.postgres_url, "SELECT id FROM outbox")) == \
        sorted([corrupt, parked6])


def test_openapi_matches_routes(gw_stack):
    """Every documented operation is routed, every route of the API summary (README.md,
    docs/architecture.md#http-api) is documented, and an undocumented path is not served."""
    s = gw_stack
    doc = request(s.port, "GET", API + "/openapi.json")
    assert doc.status == 200 and doc.json["openapi"].startswith("3.")
    ops = {(m.upper(), p) for p, item in doc.json["paths"].items() for m in item}
    design = {
        ("POST", "/api/v1/auth/signup"), ("POST", "/api/v1/auth/login"),
        ("POST", "/api/v1/auth/logout"), ("GET", "/api/v1/me"), ("GET", "/api/v1/categories"),
        ("POST", "/api/v1/claims"), ("GET", "/api/v1/claims"), ("GET", "/api/v1/claims/{id}"),
        ("GET", "/api/v1/wallet"), ("POST", "/api/v1/admin/batches"),
        ("GET", "/api/v1/admin/categories"), ("PATCH", "/api/v1/admin/categories/{id}"),
        ("GET", "/api/v1/admin/codes"), ("GET", "/api/v1/admin/users/{id}/wallet"),
        ("GET", "/api/v1/admin/logs"), ("GET", "/api/v1/admin/logs.csv"),
        ("GET", "/livez"), ("GET", "/readyz"),
    }
    assert design <= ops, design - ops
    for method, path in sorted(ops):
        r = request(s.port, method, path.replace("{id}", "1"))
        assert r.code not in ("route_not_found", "method_not_allowed"), (method, path, r)
        op = doc.json["paths"][path][method.lower()]
        assert str(r.status) in op["responses"] or r.status in (400, 415, 422, 503), (method, path, r)
    assert request(s.port, "GET", API + "/nope").code == "route_not_found"
    r = request(s.port, "DELETE", API + "/claims")
    assert r.status == 405 and "POST" in r.headers["allow"]
    for ref in json.dumps(doc.json).split('"$ref": "')[1:]:
        name = ref.split('"')[0].rsplit("/", 1)[1]
        assert name in doc.json["components"]["schemas"], name


def test_ops_endpoints(gw_stack):
    """The API port answers /livez and a bare /readyz (for load balancers); which dependency is
    down and /metrics are only on the health port."""
    s = gw_stack
    health = s.gateway.addr("gateway_health_listen")
    assert request(s.port, "GET", "/livez").json == {"status": "ok"}
    assert request(s.port, "GET", "/readyz").json == {"status": "ready"}
    r = request(s.port, "GET", "/metrics")
    assert r.status == 404 and r.code == "route_not_found" and "chanced_" not in r.body
    assert http_get(health, "/readyz")[0] == 200
    s.signup()
    want = 'chanced_gateway_http_requests_total{route="POST /api/v1/auth/signup",code="201"} 1'
    # the request is counted after its response has been written: allow a moment
    deadline = time.time() + 5
    while True:
        status, text = http_get(health, "/metrics")
        if want in text or time.time() > deadline:
            break
        time.sleep(0.05)
    assert status == 200
    assert want in text
    assert "# TYPE chanced_gateway_http_request_duration_seconds histogram" in text
    assert "chanced_gateway_pg_connections" in text


def test_readyz_follows_chance(chanced, chanced_bin, fresh_postgres_url, redis_client):
    """Readiness needs chance; a claim while chance is down is 503 and writes nothing."""
    s = Stack(chanced, chanced_bin, fresh_postgres_url, with_logger=False)
    batch = s.generate(1, 3)
    user = s.signup()
    s.chance.stop()
    wait_for(lambda: request(s.port, "GET", "/readyz").status == 503, what="readyz 503")
    # the public port says only that; the health port says why
    assert request(s.port, "GET", "/readyz").json == {"status": "not_ready"}
    status, body = http_get(s.gateway.addr("gateway_health_listen"), "/readyz")
    assert status == 503 and "chance=down" in body, body
    before = pg_query(s.postgres_url, "SELECT count(*) FROM claims")[0][0]
    r = user.claim(batch["categories"][0], key="down")
    assert r.status == 503 and r.code == "unavailable" and "retry-after" in r.headers
    assert pg_query(s.postgres_url, "SELECT count(*) FROM claims")[0][0] == before
    s.chance.start()
    wait_for(lambda: request(s.port, "GET", "/readyz").status == 200, what="readyz 200")
    assert user.claim(batch["categories"][0], key="down").status == 201


def test_migrate_and_create_user(chanced_bin, fresh_postgres_url, tmp_path):
    import subprocess
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANCED_")}
    for _ in range(2):  # idempotent
        p = subprocess.run([chanced_bin, "migrate", "--postgres_url=" + fresh_postgres_url],
                           capture_output=True, text=True, timeout=60, env=env)
        assert p.returncode == 0, p.stdout + p.stderr
    assert pg_query(fresh_postgres_url, "SELECT max(version) FROM schema_migrations")[0][0] >= 1

    pw = tmp_path / "pw"
    pw.write_text("file password 1\n")
    p = create_user(chanced_bin, fresh_postgres_url, "Boss", None, admin=True, via=str(pw))
    assert p.returncode == 0, p.stderr
    assert "file password 1" not in p.stdout + p.stderr
    p = create_user(chanced_bin, fresh_postgres_url, "boss", "another pass 1")
    assert p.returncode == 1 and "exists" in p.stderr  # case-folded uniqueness
    p = create_user(chanced_bin, fresh_postgres_url, "shorty", "short")
    assert p.returncode == 64
    # --if-missing: an existing admin is success; a plain user of that name is refused loudly
    p = create_user(chanced_bin, fresh_postgres_url, "boss", "another pass 1", admin=True,
                    if_missing=True)
    assert p.returncode == 0 and "already exists" in p.stdout, p.stdout + p.stderr
    p = create_user(chanced_bin, fresh_postgres_url, "plain", "plain pass 12")
    assert p.returncode == 0, p.stderr
    p = create_user(chanced_bin, fresh_postgres_url, "plain", "plain pass 12", admin=True,
                    if_missing=True)
    assert p.returncode == 1 and "not an admin" in p.stderr, p.stdout + p.stderr
    rows = pg_query(fresh_postgres_url, "SELECT username, role, password_hash FROM users"
                    " WHERE role = 'admin'")
    assert len(rows) == 1 and rows[0][:2] == ("Boss", "admin")
    assert rows[0][2].startswith("$argon2id$v=19$m=19456,t=2,p=1$")

    # The constraints stand even against SQL that bypasses the gateway.
    import psycopg2
    uid = pg_query(fresh_postgres_url, "SELECT id FROM users")[0][0]
    for sql in ("UPDATE wallets SET balance = -1",
                "INSERT INTO ledger (user_id, claim_id, code, category, amount, balance_after, source)"
                " VALUES (%d, 'x', 'C', 1, 0, 0, 'request')" % uid,
                "INSERT INTO users (username, password_hash) VALUES ('BOSS', '$argon2id$x')"):
        with pytest.raises(psycopg2.Error):
            pg_query(fresh_postgres_url, sql)
