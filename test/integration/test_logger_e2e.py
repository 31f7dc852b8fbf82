"""End to end over HTTP, the three roles as separate processes: after a scenario (sign-up,
logins, a failed login, a batch, claims, a replayed claim, a category change, a user disabled)
the logger holds exactly one event per operation, with the right actor, subject and message,
and GET /api/v1/admin/logs filters and pages them correctly; the CSV export matches the JSON.

This needs the gateway's HTTP API and the chance relay. While either is missing the test
fails and says which (it is never skipped).
"""

import csv
import io
import json
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from loggerkit import queue_depth, store, wait_ready

__all__ = ["store"]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


class Http:
    def __init__(self, hostport):
        self.base = "http://%s" % hostport

    def req(self, method, path, body=None, token=None, headers=None, raw=False):
        data = json.dumps(body).encode() if body is not None else None
        h = {"Content-Type": "application/json"} if data else {}
        if token:
            h["Authorization"] = "Bearer " + token
        h.update(headers or {})
        r = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(r, timeout=30) as resp:
                text = resp.read().decode()
                return resp.status, (text if raw else (json.loads(text) if text else None))
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            try:
                return e.code, json.loads(text)
            except ValueError:
                return e.code, text


def expect(status_body, status, what):
    st, body = status_body
    assert st == status, "%s: HTTP %s %r" % (what, st, body)
    return body


def test_one_stored_event_per_operation_over_http(chanced, chanced_bin, store, amqp_url,
                                                  amqp_queue, fresh_postgres_url, redis_client):
    ch = chanced("chance")
    lg = chanced("logger", mongo_url=store[0])
    wait_ready(lg)
    p = subprocess.run([chanced_bin, "admin", "create-user", "--username", "root", "--admin",
                        "--postgres_url=" + fresh_postgres_url],
                       input="correct horse battery staple\n", capture_output=True, text=True,
                       timeout=60)
    if p.returncode != 0:
        pytest.fail("`chanced admin create-user` failed (is the gateway role built?): %s%s"
                    % (p.stdout, p.stderr), pytrace=False)
    gw = chanced("gateway", postgres_url=fresh_postgres_url)
    http = Http(gw.addr("http_listen"))
    st, body = http.req("POST", "/api/v1/auth/signup", {"username": "bob", "password": "pw-of-bob-123"})
    if st == 404 or st is None:
        pytest.fail("the gateway does not serve POST /api/v1/auth/signup (HTTP %s): the gateway "
                    "role is not built yet, so this end-to-end test cannot run" % st, pytrace=False)
    bob = expect((st, body), 201, "signup")
    bob_id = str(bob["user"]["id"])
    expect(http.req("POST", "/api/v1/auth/login", {"username": "bob", "password": "pw-of-bob-123"}),
           200, "login bob")
    expect(http.req("POST", "/api/v1/auth/login", {"username": "bob", "password": "wrong"}),
           401, "bad login")
    root = expect(http.req("POST", "/api/v1/auth/login", {"username": "root",
                                                          "password": "correct horse battery staple"}),
                  200, "login root")["token"]
    batch = expect(http.req("POST", "/api/v1/admin/batches", {
        "categories": 2, "codes_per_category": 5, "reward_min": 1000, "reward_max": 100000,
        "per_user_limit": 10},
        token=root), 202, "generate")
    batch = batch["batch"]
    for _ in range(600):
        if batch["state"] != "generating":
            break
        time.sleep(0.05)
        batch = expect(http.req("GET", "/api/v1/admin/batches/%d" % batch["id"], token=root),
                       200, "batch progress")["batch"]
    assert batch["state"] == "ready", batch
    cats = batch["categories"]
    claims = []
    for i in range(3):
        claims.append(expect(http.req("POST", "/api/v1/claims", {"category": cats[0]},
                                      token=bob["token"], headers={"Idempotency-Key": "k%d" % i}),
                             201, "claim %d" % i))
    replay = http.req("POST", "/api/v1/claims", {"category": cats[0]}, token=bob["token"],
                      headers={"Idempotency-Key": "k0"})
    assert replay[0] in (200, 201) and replay[1]["code"] == claims[0]["code"], replay
    expect(http.req("PATCH", "/api/v1/admin/categories/%d" % cats[1], {"enabled": False},
                    token=root), 200, "disable category")
    expect(http.req("POST", "/api/v1/admin/users/%s/disable" % bob_id, token=root), 200,
           "disable bob")

    want = {"admin.action": 1, "user.signed_up": 1, "login.succeeded": 2, "login.failed": 1,
            "batch.generated": 1, "code.assigned": 3, "claim.credited": 3,
            "category.changed": 1, "user.disabled": 1}
    total = sum(want.values())
    deadline = time.monotonic() + 90
    items = []
    while time.monotonic() < deadline:
        items = expect(http.req("GET", "/api/v1/admin/logs?limit=1000", token=root), 200,
                       "logs")["items"]
        if len(items) >= total:
            break
        time.sleep(0.5)
    got = {}
    for it in items:
        got[it["type"]] = got.get(it["type"], 0) + 1
    if got != want:
        pytest.fail("events by type: got %s, want %s. Chance events (batch.generated, "
                    "code.assigned, category.changed) come through the chance relay; gateway "
                    "events through its outbox (log.append)." % (got, want), pytrace=False)
    time.sleep(2)  # nothing more arrives later (no duplicates)
    items = expect(http.req("GET", "/api/v1/admin/logs?limit=1000", token=root), 200, "logs")["items"]
    assert len(items) == total and len({i["_id"] for i in items}) == total
    assert [i["ts"] for i in items] == sorted((i["ts"] for i in items), reverse=True)

    by = {}
    for it in items:
        by.setdefault(it["type"], []).append(it)
    assigned = {i["subject"]["code"]: i for i in by["code.assigned"]}
    credited = {i["subject"]["code"]: i for i in by["claim.credited"]}
    for c in claims:
        a, cr = assigned[c["code"]], credited[c["code"]]
        assert a["actor"]["username"] == "bob" and a["subject"]["user_id"] == bob_id
        assert a["subject"]["category"] == cats[0] and a["data"]["reward"] == c["reward"]
        assert cr["data"]["reward"] == c["reward"] and "bob" in cr["message"]
        assert "bob" in a["message"] and "Toman" in a["message"]
    gen = by["batch.generated"][0]
    assert gen["actor"]["username"] == "root" and gen["actor"]["role"] == "admin"
    assert "generated 10 codes in 2 categories" in gen["message"]
    assert by["login.failed"][0]["subject"]["username"] == "bob"
    assert by["user.disabled"][0]["subject"]["user_id"] == bob_id
    assert by["user.disabled"][0]["actor"]["username"] == "root"
    assert by["category.changed"][0]["subject"]["category"] == cats[1]
    assert all(i["message"] for i in items)

    # filters and pagination through the gateway
    def walk(query, limit):
        out, cursor = [], None
        for _ in range(100):
            q = "%s&limit=%d" % (query, limit) + ("&cursor=" + cursor if cursor else "")
            page = expect(http.req("GET", "/api/v1/admin/logs?" + q.lstrip("&"), token=root),
                          200, "logs " + q)
            out += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return out
        pytest.fail("pagination does not end")

    assert walk("", 4) == items
    assert [i["_id"] for i in walk("type=code.assigned", 2)] == [i["_id"] for i in by["code.assigned"]]
    def mentions(i, who):
        a, s = i["actor"] or {}, i["subject"]
        return who in (a.get("id"), a.get("username"), s.get("user_id"), s.get("username"))

    assert [i["_id"] for i in walk("user=bob", 3)] == [i["_id"] for i in items if mentions(i, "bob")]
    assert {i["_id"] for i in walk("category=%d" % cats[0], 2)} == \
        {i["_id"] for i in items if i["subject"].get("category") == cats[0]
         or cats[0] in i["subject"].get("categories", [])}
    code = claims[1]["code"]
    assert {i["type"] for i in walk("code=" + code.lower(), 5)} == {"code.assigned", "claim.credited"}
    st, problem = http.req("GET", "/api/v1/admin/logs?from=10&to=5", token=root)
    assert st in (400, 422) and "inverted" in json.dumps(problem), (st, problem)

    # the CSV export holds the same events in the same order
    st, text = http.req("GET", "/api/v1/admin/logs.csv", token=root, raw=True)
    assert st == 200
    rows = list(csv.reader(io.StringIO(text)))
    header, rows = rows[0], rows[1:]
    col = header.index("_id") if "_id" in header else 0
    assert [r[col] for r in rows] == [i["_id"] for i in items]
    assert queue_depth(amqp_url, amqp_queue + ".dlq")[0] == 0
