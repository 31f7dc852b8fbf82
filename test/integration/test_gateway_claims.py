"""Claims under concurrency and faults: every assigned code credited exactly once, the ledger,
the wallets and Redis agreeing, a gateway killed between assignment and credit, a chance too
slow to answer, and pending claims settled by the reconciler."""

import http.client
import os
import signal
import threading
import time

import pytest

from gwclient import (Stack, claim_id_for, pg_query, redis_codes, request, wait_for,  # noqa: F401
                                 gw_stack)

pytestmark = [pytest.mark.e2e]


def invariants(stack, redis_client, expect_codes=None):
    """The money invariants over PostgreSQL and Redis; returns the ledger rows."""
    url = stack.postgres_url
    ledger = pg_query(url, "SELECT user_id, claim_id, code, category, amount, balance_after, id"
                           " FROM ledger ORDER BY id")
    codes = [r[2] for r in ledger]
    assert len(codes) == len(set(codes)), "a code was credited twice"
    assert len({r[1] for r in ledger}) == len(ledger), "a claim was credited twice"
    assigned = {c: h for c, h in redis_codes(redis_client).items() if h.get("status") == "assigned"}
    if expect_codes is not None:
        assert len(assigned) == expect_codes
    # Every assignment credited once, to its user, with its reward; nothing else credited.
    assert set(codes) == set(assigned), "ledger and Redis disagree on the assigned codes"
    for uid, claim, code, _cat, amount, _after, _id in ledger:
        h = assigned[code]
        assert (h["user_id"], h["claim_id"], int(h["reward"])) == (str(uid), claim, amount)
    total_ledger = sum(r[4] for r in ledger)
    total_wallets = pg_query(url, "SELECT coalesce(sum(balance), 0) FROM wallets")[0][0]
    total_redis = sum(int(h["reward"]) for h in assigned.values())
    assert total_wallets == total_ledger == total_redis
    # Each user's balance_after chain adds up to the wallet.
    per_user = {}
    for uid, _claim, _code, _cat, amount, after, _id in ledger:
        per_user[uid] = per_user.get(uid, 0) + amount
        assert after == per_user[uid], "balance_after out of order for user %s" % uid
    for uid, balance in pg_query(url, "SELECT user_id, balance FROM wallets"):
        assert balance == per_user.get(uid, 0)
    return ledger


@pytest.mark.slow
def test_200_users_claim_300_codes_in_parallel(chanced, chanced_bin, fresh_postgres_url,
                                               redis_client):
    s = Stack(chanced, chanced_bin, fresh_postgres_url, with_logger=False, http_threads=256,
              pg_pool_size=24)
    batch = s.generate(3, 100, 1000, 100000, per_user_limit=2)
    cats = batch["categories"]

    users = [None] * 200
    def signup(i):
        users[i] = s.signup("u%03d_%s" % (i, os.urandom(2).hex()))
    run_threads(signup, 200, width=8)

    results = {i: [] for i in range(200)}
    start = threading.Barrier(200)

    def claimer(i):
        u = users[i]
        start.wait()
        todo = list(cats[i % 3:] + cats[:i % 3])
        n = 0
        while todo:
            cat = todo[0]
            n += 1
            r = u.claim(cat, key="k%d" % n)
            results[i].append((r.status, r.json))
            if r.status in (201, 202):
                continue
            assert r.status == 409, r
            assert r.code in ("user_limit_reached", "category_exhausted"), r
            todo.pop(0)
    run_threads(claimer, 200, width=200)

    statuses = [st for rs in results.values() for st, _ in rs]
    assert statuses.count(201) + statuses.count(202) == 300, sorted(set(statuses))
    assert set(statuses) <= {201, 202, 409}
    # Anything answered 202 is finished by the reconciler.
    wait_for(lambda: pg_query(s.postgres_url, "SELECT count(*) FROM ledger")[0][0] == 300,
             timeout=30, what="300 credits")
    ledger = invariants(s, redis_client, expect_codes=300)
    credited = {(j["claim_id"], j["code"], j["reward"]) for rs in results.values()
                for st, j in rs if st == 201}
    assert credited <= {(r[1], r[2], r[4]) for r in ledger}
    # Each 201 told its user the balance right after that credit.
    after = {r[1]: r[5] for r in ledger}
    assert all(after[j["claim_id"]] == j["balance"] for rs in results.values()
               for st, j in rs if st == 201)
    # chance's own counters agree: everything assigned, paid out == ledger.
    cat_stats = s.admin().get("/admin/categories").json["items"]
    assert sum(c["assigned"] for c in cat_stats) == 300
    assert sum(c["remaining"] for c in cat_stats) == 0
    assert sum(c["paid_out"] for c in cat_stats) == sum(r[4] for r in ledger)
    # One claim.credited audit event per credit, in the same transactions.
    events = pg_query(s.postgres_url,
                      "SELECT count(*) FROM outbox WHERE event LIKE '%\"claim.credited\"%'")[0][0]
    assert events == 300


def run_threads(fn, n, width):
    errors = []
    sem = threading.Semaphore(width)

    def wrap(i):
        with sem:
            try:
                fn(i)
            except BaseException as e:  # noqa: B902 - reported below
                errors.append((i, e))
    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors[:3]


@pytest.mark.fault
def test_kill_after_assign_before_credit_is_reconciled(chanced, chanced_bin, fresh_postgres_url,
                                                       redis_client):
    """SIGKILL between chance's assignment and the credit: after restart the reconciler credits
    it exactly once, and the client's retry with the same key returns that same code."""
    s = Stack(chanced, chanced_bin, fresh_postgres_url, with_logger=False,
              env={"CHANCED_FAILPOINT": "after_assign_before_credit"})
    batch = s.generate(1, 5)
    user = s.signup()
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        user.claim(batch["categories"][0], key="crash-1")
    assert s.gateway.wait_exit() == -signal.SIGKILL
    s.gateway.wait_log("failpoint_hit")

    claim_id = claim_id_for(s.postgres_url, user.id, "crash-1")
    assigned = [h for h in redis_codes(redis_client).values() if h.get("status") == "assigned"]
    assert len(assigned) == 1 and assigned[0]["claim_id"] == claim_id
    assert pg_query(s.postgres_url, "SELECT count(*) FROM ledger")[0][0] == 0

    s.gateway.extra_env = {}
    s.gateway.start()
    wait_for(lambda: pg_query(s.postgres_url, "SELECT count(*) FROM ledger")[0][0] == 1,
             timeout=20, what="the reconciler's credit")
    row = pg_query(s.postgres_url, "SELECT claim_id, code, amount, source FROM ledger")[0]
    assert row == (claim_id, assigned[0]["code"], int(assigned[0]["reward"]), "reconciler")

    retry = user.claim(batch["categories"][0], key="crash-1")
    assert retry.status == 201, retry
    assert (retry.json["claim_id"], retry.json["code"], retry.json["reward"]) == row[:3]
    assert retry.json["balance"] == row[2]
    time.sleep(1)  # the reconciler keeps running: still one credit
    invariants(s, redis_client, expect_codes=1)
    assert user.get("/me").json["balance"] == row[2]
    ev = pg_query(s.postgres_url, "SELECT event FROM outbox WHERE event LIKE '%claim.credited%'")
    assert len(ev) == 1 and '"source":"reconciler"' in ev[0][0]


@pytest.mark.fault
def test_slow_chance_answers_202_and_the_claim_settles(chanced, chanced_bin, fresh_postgres_url,
                                                       redis_client):
    """chance frozen (SIGSTOP) past the deadline: 202 with the claim id, never a lost or doubled
    credit; once chance runs again the claim ends credited and a retry returns the same code."""
    s = Stack(chanced, chanced_bin, fresh_postgres_url, with_logger=False, rpc_timeout_ms=400)
    batch = s.generate(1, 5)
    user = s.signup()
    s.chance.kill(signal.SIGSTOP)
    try:
        r = user.claim(batch["categories"][0], key="slow")
    finally:
        s.chance.kill(signal.SIGCONT)
    assert r.status == 202, r
    assert r.json["status"] == "pending" and r.headers["location"].endswith(r.json["claim_id"])
    claim_id = r.json["claim_id"]
    wait_for(lambda: user.get("/claims/" + claim_id).json.get("status") == "credited",
             timeout=20, what="the pending claim to be credited")
    retry = user.claim(batch["categories"][0], key="slow")
    assert retry.status == 201 and retry.json["claim_id"] == claim_id
    assert retry.json["code"] == user.get("/claims/" + claim_id).json["code"]
    invariants(s, redis_client, expect_codes=1)


@pytest.mark.fault
def test_pending_claims_are_settled_by_redriving(chanced, chanced_bin, fresh_postgres_url,
                                                 redis_client):
    """A pending claim chance never saw (the gateway died before sending it) is driven again with
    its claim id: credited if a code is free, failed with the reason otherwise."""
    s = Stack(chanced, chanced_bin, fresh_postgres_url, with_logger=False)
    batch = s.generate(2, 1)
    admin = s.admin()
    assert admin.patch("/admin/categories/%d" % batch["categories"][1],
                       {"enabled": False}).status == 200
    user = s.signup()
    ids = {}
    for key, cat in (("never-sent", batch["categories"][0]), ("disabled", batch["categories"][1])):
        ids[key] = claim_id_for(s.postgres_url, user.id, key)
        pg_query(s.postgres_url, "INSERT INTO claims (claim_id, user_id, category, status,"
                 " created_at, updated_at) VALUES (%s, %s, %s, 'pending', now() - interval '1 min',"
                 " now() - interval '1 min')", (ids[key], user.id, cat))
    wait_for(lambda: {st for (st,) in pg_query(s.postgres_url, "SELECT status FROM claims")}
             == {"credited", "failed"}, timeout=20, what="settled claims")
    failed = user.get("/claims/" + ids["disabled"]).json
    assert failed["status"] == "failed" and failed["error"] == "category_disabled"
    ok = user.get("/claims/" + ids["never-sent"]).json
    retry = user.claim(batch["categories"][0], key="never-sent")
    assert retry.status == 201 and retry.json["code"] == ok["code"]
    invariants(s, redis_client, expect_codes=1)


def test_reused_key_with_another_category_assigns_nothing(gw_stack, redis_client):
    s = gw_stack
    batch = s.generate(2, 3)
    user = s.signup()
    a, b = batch["categories"]
    assert user.claim(a, key="same").status == 201
    r = user.claim(b, key="same")
    assert r.status == 422 and r.code == "idempotency_key_reused"
    invariants(s, redis_client, expect_codes=1)


def test_reused_key_after_a_refusal_elsewhere_gives_its_code_back(gw_stack, redis_client):
    """The key is not looked up before chance is asked: its claim failed in category a, so chance
    assigns a code of b under it; the credit statement finds the claim in a, the code goes back,
    and the answer is 422 with nothing credited."""
    s = gw_stack
    a, b = s.generate(2, 1)["categories"]
    assert s.signup().claim(a).status == 201  # a is now exhausted
    user = s.signup()
    refused = user.claim(a, key="k")
    assert refused.status == 409 and refused.code == "category_exhausted"
    r = user.claim(b, key="k")
    assert r.status == 422 and r.code == "idempotency_key_reused"
    assert user.get("/wallet").json["balance"] == 0
    claim = user.get("/claims/" + claim_id_for(s.postgres_url, user.id, "k")).json
    assert (claim["status"], claim["category"]) == ("failed", a)
    # b's only code is free again: another user gets it.
    assert s.signup().claim(b).status == 201
    invariants(s, redis_client, expect_codes=2)


def test_a_credited_claim_is_replayed_while_chance_is_down(chanced, chanced_bin,
                                                           fresh_postgres_url, redis_client):
    """chance is asked first, so when it cannot be reached PostgreSQL answers a retry."""
    s = Stack(chanced, chanced_bin, fresh_postgres_url, with_logger=False)
    batch = s.generate(1, 3)
    user = s.signup()
    first = user.claim(batch["categories"][0], key="once")
    assert first.status == 201
    s.chance.kill(signal.SIGKILL)
    again = user.claim(batch["categories"][0], key="once")
    assert again.status == 201 and again.json == first.json
    assert again.headers.get("idempotent-replayed") == "true"
    other = user.claim(batch["categories"][0], key="never-used")
    assert other.status == 503


CLAIM_PATH_TABLES = ("users", "sessions", "wallets", "claims", "claim_counts", "ledger", "outbox")


def seq_scans(url):
    """Sequential scans so far of the tables a claim reads or writes, once every backend has
    published them (when it goes idle, at most once a second, else 10 s later)."""
    time.sleep(10.5)
    return dict(pg_query(url, "SELECT relname, seq_scan FROM pg_stat_user_tables"
                              " WHERE relname = ANY(%s)", (list(CLAIM_PATH_TABLES),)))


def test_claims_keep_using_indexes_as_tables_grow_from_empty(chanced, chanced_bin,
                                                             fresh_postgres_url, redis_client):
    """A launch on a fresh database: the gateway's connections plan their statements while the
    tables are empty or tiny, and keep those plans. A sequential scan of a tiny ledger is the
    cheapest plan; of the ledger a minute later it costs every claim a scan of every credit."""
    s = Stack(chanced, chanced_bin, fresh_postgres_url, with_logger=False)
    cat = s.generate(1, 60, per_user_limit=1000)["categories"][0]
    u = s.signup()
    n = [0]

    def claims(k):
        for _ in range(k):
            n[0] += 1
            r = u.claim(cat, key="k%d" % n[0])
            assert r.status == 201, r

    claims(8)
    # Autovacuum's first visit finds the tables tiny; its statistics make every plan made after
    # it (the cached ones are invalidated) a plan for tiny tables.
    pg_query(fresh_postgres_url, "ANALYZE")
    claims(8)
    before = seq_scans(fresh_postgres_url)
    claims(20)
    after = seq_scans(fresh_postgres_url)
    grew = {t: after.get(t, 0) - before.get(t, 0) for t in CLAIM_PATH_TABLES
            if after.get(t, 0) != before.get(t, 0)}
    assert grew == {}, "sequential scans during 20 claims, by table: %s" % grew
