"""The chance role against a real redis-server: generation, claims, queries, bad input.

Every test starts its own `chanced --role=chance` on fresh ports (conftest's `chanced` fixture)
against the shared private Redis, flushed first (`redis_client`).
"""

import json
import random
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from nest import NestClient, NestError, encode_frame

ROOT = Path(__file__).resolve().parent.parent.parent
ACTOR = {"id": 1, "username": "alice", "role": "admin"}
CODE_RE = re.compile(r"^[2-9A-HJKMNP-Z]{12}$")  # no 0/O, 1/I/L


def generate(c, **kw):
    """chance.generate answers at once with the batch (state "generating"); chance.batch reports
    its progress until it is "ready". Returns (the final batch, the progress seen)."""
    req = {"categories": 1, "codes_per_category": 10, "reward_min": 1000,
           "reward_max": 100000, "actor": ACTOR}
    req.update(kw)
    batch = c.call("chance.generate", req, timeout=30)["batch"]
    assert batch["state"] in ("generating", "ready"), batch
    progress = [batch["codes_written"]]
    deadline = time.time() + 120
    while batch["state"] == "generating":
        assert time.time() < deadline, "batch %d still generating: %r" % (batch["id"], batch)
        time.sleep(0.05)
        batch = c.call("chance.batch", {"id": batch["id"]})["batch"]
        progress.append(batch["codes_written"])
    assert batch["state"] == "ready", batch
    return batch, progress


def index_key(code):
    """The code index shard of a code: named by its first two random characters."""
    return "chance:{i%s}:codes" % code.split("-")[-1][:2]


def index_size(r):
    return sum(r.hlen(k) for k in r.scan_iter("chance:{i*}:codes"))


INSTANCE = "chance:{g}:instance"


def err_code(exc):
    return exc.value.err["code"] if isinstance(exc.value.err, dict) else exc.value.err


def claim(c, cat, claim_id, uid, name="u"):
    return c.call("chance.claim", {"claim_id": claim_id, "category": cat,
                                   "user": {"id": uid, "username": name}})


def all_codes(r, cat):
    """code -> its record {r: reward, s: status, and once assigned u, n, c, t}."""
    return {k: json.loads(v) for k, v in r.hgetall("chance:{c%d}:codes" % cat).items()}


# ---- generation ---------------------------------------------------------------------------

def test_generate_counts_alphabet_rewards_and_events(chanced, redis_client):
    ch = chanced("chance", amqp_url="amqp://guest:guest@127.0.0.1:1/")
    with NestClient(*ch.hostport()) as c:
        batch, progress = generate(c, categories=5, codes_per_category=20, reward_min=1000,
                                   reward_max=100000, reward_step=500, name="Nowruz")
    assert len(batch["categories"]) == 5 and batch["total"] == 100
    assert progress[-1] == 100 and batch["categories_done"] == 5
    seen = set()
    paid = 0
    for i, cat in enumerate(batch["categories"]):
        codes = all_codes(redis_client, cat)
        assert len(codes) == 20
        assert redis_client.scard("chance:{c%d}:free" % cat) == 20
        meta = redis_client.hgetall("chance:{c%d}:meta" % cat)
        assert meta["status"] == "ready" and meta["name"] == "Nowruz %d" % (i + 1)
        for code, h in codes.items():
            assert CODE_RE.match(code), code
            assert h["s"] == "available"
            reward = int(h["r"])
            assert 1000 <= reward <= 100000 and (reward - 1000) % 500 == 0
            paid += reward
            assert redis_client.hget(index_key(code), code) == str(cat)
        seen |= set(codes)
    assert len(seen) == 100  # unique across categories
    assert batch["total_reward"] == paid
    events = redis_client.xrange("chance:{g}:events")
    assert len(events) == 1
    ev = json.loads(events[0][1]["e"])
    ns = redis_client.get(INSTANCE)
    assert ns and ev["type"] == "batch.generated"
    assert re.match(r"^batch\.generated:%s:%d:[0-9a-f]{16}$" % (ns, batch["id"]), ev["_id"])
    assert ev["message"] == ("admin alice generated 100 codes in 5 categories, "
                             "rewards 1,000\u2013100,000 Toman")


def test_generate_prefix_and_both_reward_ends(chanced, redis_client):
    ch = chanced("chance")
    with NestClient(*ch.hostport()) as c:
        batch, _ = generate(c, codes_per_category=400, reward_min=10, reward_max=12,
                            prefix="ny26")
    codes = all_codes(redis_client, batch["categories"][0])
    assert all(re.match(r"^NY26-[2-9A-HJKMNP-Z]{12}$", k) for k in codes)
    assert {int(h["r"]) for h in codes.values()} == {10, 11, 12}


def test_large_batch_is_chunked_and_reports_progress(chanced, redis_client):
    ch = chanced("chance", generate_chunk=20)
    with NestClient(*ch.hostport()) as c:
        batch, progress = generate(c, categories=3, codes_per_category=20000)
        assert batch["total"] == 60000
        assert progress == sorted(progress) and progress[-1] == 60000
        assert len(set(progress)) > 2, progress  # it was seen moving, not only 0 and 60000
        assert index_size(redis_client) == 60000
        cats = c.call("chance.categories", {})["items"]
        assert [x["remaining"] for x in cats] == [20000, 20000, 20000]


def _generate_while_claiming(serve, gen, cat, prefix, uid, codes):
    """Claims in category cat go to the chance at serve, one after another, while the chance at
    gen generates one category of `codes`. Returns (batch, progress, codes claimed)."""
    stop, claimed, errors = threading.Event(), [], []

    def claims():
        with NestClient(*serve.hostport()) as cc:
            i = 0
            while not stop.is_set():
                try:
                    claimed.append(claim(cc, cat, "%s%d" % (prefix, i), uid + i)["code"])
                except Exception as e:  # noqa: BLE001: reported below
                    errors.append(repr(e))
                    return
                i += 1
    t = threading.Thread(target=claims)
    t.start()
    try:
        time.sleep(0.3)
        with NestClient(*gen.hostport()) as c:
            batch, progress = generate(c, codes_per_category=codes)
    finally:
        stop.set()
        t.join(10)
    assert not errors, errors
    assert len(claimed) > 0 and len(set(claimed)) == len(claimed)
    return batch, progress, claimed


def test_generation_yields_to_claims_and_still_finishes(chanced, redis_client):
    """While claims are being served, generation writes small chunks with rests between them
    (generate_busy_share), so claims in other categories keep Redis and the CPU; it still
    finishes, and it goes back to full chunks once the claims stop."""
    from loggerkit import metric
    ch = chanced("chance", amqp_url="amqp://guest:guest@127.0.0.1:1/", generate_busy_share=10)
    health = ch.addr("chance_health_listen")
    with NestClient(*ch.hostport()) as c:
        claimable, _ = generate(c, codes_per_category=20000, reward_min=1000, reward_max=1000)
    cat = claimable["categories"][0]
    full_before = metric(health, "chanced_generate_chunks_total", 'mode="full"')
    assert full_before and full_before >= 10  # 20,000 codes alone: 2,000 a chunk

    batch, progress, _ = _generate_while_claiming(ch, ch, cat, "y", 1000, 10000)
    assert len(all_codes(redis_client, batch["categories"][0])) == 10000
    yielded = metric(health, "chanced_generate_chunks_total", 'mode="yield"')
    assert yielded and yielded >= 10000 / 250 * 0.5, yielded  # most of it in small chunks
    assert len(set(progress)) > 3  # and the progress moved in steps meanwhile

    # No claims (for longer than the 250 ms that count as busy): full chunks, no yielding.
    time.sleep(0.5)
    with NestClient(*ch.hostport()) as c:
        generate(c, codes_per_category=20000)
    assert metric(health, "chanced_generate_chunks_total", 'mode="yield"') == yielded
    assert metric(health, "chanced_generate_chunks_total", 'mode="full"') >= full_before + 10


def test_generation_yields_to_claims_served_by_another_instance(chanced, redis_client):
    """Instances share Redis: claims served by one make another's generation yield (each notes
    chance:{g}:claims_busy while it serves claims; a generating instance reads it)."""
    from loggerkit import metric
    keys = dict(amqp_url="amqp://guest:guest@127.0.0.1:1/", generate_busy_share=10)
    gen, serve = chanced("chance", **keys), chanced("chance", **keys)
    health = gen.addr("chance_health_listen")
    with NestClient(*serve.hostport()) as c:
        cat = generate(c, codes_per_category=5000, reward_min=1000, reward_max=1000)[0][
            "categories"][0]
    batch, _, _ = _generate_while_claiming(serve, gen, cat, "e", 3000, 5000)
    assert len(all_codes(redis_client, batch["categories"][0])) == 5000
    yielded = metric(health, "chanced_generate_chunks_total", 'mode="yield"')
    assert yielded and yielded >= 5000 / 250 * 0.5, yielded


@pytest.mark.parametrize("bad", [
    {"categories": 0},
    {"categories": -1},
    {"categories": "5"},
    {"categories": 1.5},
    {"codes_per_category": 10 ** 9},
    {"reward_min": 5000, "reward_max": 10},
    {"reward_min": 10 ** 30},
    {"reward_step": 0},
    {"name": "a{b}"},
    {"name": "x:y"},
    {"name": "*"},
    {"name": "line\nbreak"},
    {"prefix": "TOOLONGPREFIX"},
    {"prefix": "a-b"},
    {"starts_at": 2000, "ends_at": 1000},
    {"actor": None},
    {"actor": {"id": 1}},
    {"surprise": 1},
])
def test_generate_rejects_bad_input_and_writes_nothing(chanced, redis_client, bad):
    ch = chanced("chance")
    req = {"categories": 2, "codes_per_category": 3, "reward_min": 1000, "reward_max": 2000,
           "actor": ACTOR}
    req.update(bad)
    req = {k: v for k, v in req.items() if v is not None}
    with NestClient(*ch.hostport()) as c:
        with pytest.raises(NestError) as e:
            c.call("chance.generate", req)
    assert err_code(e) == "bad_request", e.value.err
    assert e.value.err["message"]
    assert set(redis_client.keys()) <= {INSTANCE}


def test_generate_refuses_more_than_the_batch_limit(chanced, redis_client):
    ch = chanced("chance", max_codes_per_batch=1000)
    with NestClient(*ch.hostport()) as c:
        with pytest.raises(NestError) as e:
            c.call("chance.generate", {"categories": 11, "codes_per_category": 100,
                                       "reward_min": 1, "reward_max": 2, "actor": ACTOR})
    assert err_code(e) == "too_many_codes"
    assert set(redis_client.keys()) <= {INSTANCE}


# ---- claims --------------------------------------------------------------------------------

# RabbitMQ unreachable for these: the audit events then stay in the Redis streams to be counted.
NO_RELAY = {"amqp_url": "amqp://guest:guest@127.0.0.1:1/"}


def test_claim_replay_limit_and_log(chanced, redis_client):
    ch = chanced("chance", **NO_RELAY)
    with NestClient(*ch.hostport()) as c:
        batch, _ = generate(c, codes_per_category=5)
        cat = batch["categories"][0]
        redis_client.script_flush()  # EVALSHA gets NOSCRIPT; the adapter must fall back to EVAL
        first = claim(c, cat, "claim-1", 7, "bob")
        assert CODE_RE.match(first["code"]) and first["replay"] is False
        again = claim(c, cat, "claim-1", 7, "bob")
        assert again["code"] == first["code"] and again["replay"] is True
        assert again["reward"] == first["reward"]
        with pytest.raises(NestError) as e:
            claim(c, cat, "claim-2", 7, "bob")
        assert err_code(e) == "user_limit_reached"
        h = all_codes(redis_client, cat)[first["code"]]
        assert h["s"] == "assigned" and h["u"] == "7" and h["n"] == "bob" and h["c"] == "claim-1"
        assert first["per_user_limit"] == 1
        assert redis_client.scard("chance:{c%d}:free" % cat) == 4
        log = c.call("chance.assignments", {"category": cat})
        assert [i["code"] for i in log["items"]] == [first["code"]]
        assert c.call("chance.assignments", {"category": cat, "after": log["next_cursor"]})[
            "items"] == []
        events = redis_client.xrange("chance:{c%d}:events" % cat)
        assert len(events) == 1  # the replay wrote nothing
        ev = json.loads(events[0][1]["e"])
        assert ev["type"] == "code.assigned" and ev["subject"]["code"] == first["code"]
        # the code is part of the id: after a lost write the same claim may draw another code
        assert ev["_id"] == "code.assigned:%s:c%d:claim-1:%s" % (redis_client.get(INSTANCE), cat,
                                                                 first["code"])
        assert ev["message"].startswith("user bob received code %s" % first["code"][:6])


def test_exhausted_disabled_and_window(chanced, redis_client):
    ch = chanced("chance")
    now = int(time.time() * 1000)
    with NestClient(*ch.hostport()) as c:
        batch, _ = generate(c, codes_per_category=2, per_user_limit=10)
        cat = batch["categories"][0]
        claim(c, cat, "a", 1)
        claim(c, cat, "b", 1)
        with pytest.raises(NestError) as e:
            claim(c, cat, "c", 1)
        assert err_code(e) == "category_exhausted"

        batch, _ = generate(c, codes_per_category=2)
        cat = batch["categories"][0]
        c.call("chance.category.update", {"category": cat, "enabled": False, "actor": ACTOR})
        with pytest.raises(NestError) as e:
            claim(c, cat, "d", 1)
        assert err_code(e) == "category_disabled"
        c.call("chance.category.update", {"category": cat, "enabled": True,
                                          "starts_at": now + 3600_000, "actor": ACTOR})
        with pytest.raises(NestError) as e:
            claim(c, cat, "e", 1)
        assert err_code(e) == "not_in_window"
        c.call("chance.category.update", {"category": cat, "starts_at": 1,
                                          "ends_at": now - 1000, "actor": ACTOR})
        with pytest.raises(NestError) as e:
            claim(c, cat, "f", 1)
        assert err_code(e) == "not_in_window"
        got = c.call("chance.category.update", {"category": cat, "starts_at": None,
                                                "ends_at": None, "actor": ACTOR})
        assert got["claimable"] is True and got["starts_at"] is None
        assert claim(c, cat, "g", 1)["category"] == cat
        assert redis_client.scard("chance:{c%d}:free" % cat) == 1
        with pytest.raises(NestError) as e:
            claim(c, 999999, "h", 1)
        assert err_code(e) == "category_not_found"
        with pytest.raises(NestError) as e:
            c.call("chance.category.update", {"category": 999999, "enabled": True,
                                              "actor": ACTOR})
        assert err_code(e) == "category_not_found"


def test_concurrent_claims_assign_each_code_once(chanced, redis_client):
    """64 clients, 2,000 claims, 500 codes, 300 users, per-user limit 2."""
    ch = chanced("chance", **NO_RELAY)
    with NestClient(*ch.hostport()) as c:
        batch, _ = generate(c, codes_per_category=500, per_user_limit=2)
    cat = batch["categories"][0]
    results, failures, lock = [], [], threading.Lock()
    rng = random.Random(42)
    plan = [("k%d" % i, rng.randrange(300)) for i in range(2000)]

    def worker(part):
        with NestClient(*ch.hostport(), timeout=60) as conn:
            for claim_id, uid in part:
                try:
                    r = claim(conn, cat, claim_id, uid, "user%d" % uid)
                    with lock:
                        results.append((uid, r))
                except NestError as e:
                    with lock:
                        failures.append(e.err["code"])

    threads = [threading.Thread(target=worker, args=(plan[i::64],)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) + len(failures) == 2000
    assert set(failures) <= {"category_exhausted", "user_limit_reached"}
    codes = [r["code"] for _, r in results]
    assert len(codes) == 500 and len(set(codes)) == 500
    per_user = {}
    for uid, _ in results:
        per_user[uid] = per_user.get(uid, 0) + 1
    assert max(per_user.values()) <= 2
    assert sum(r["reward"] for _, r in results) == batch["total_reward"]
    assert redis_client.scard("chance:{c%d}:free" % cat) == 0
    stored = all_codes(redis_client, cat)
    assert all(h["s"] == "assigned" for h in stored.values())
    owners = {h["c"] for h in stored.values()}
    assert len(owners) == 500
    meta = redis_client.hgetall("chance:{c%d}:meta" % cat)
    assert int(meta["assigned"]) == 500 and int(meta["paid_out"]) == batch["total_reward"]
    assert redis_client.xlen("chance:{c%d}:log" % cat) == 500
    assert redis_client.xlen("chance:{c%d}:events" % cat) == 500


def test_release_only_by_the_owning_claim(chanced, redis_client):
    ch = chanced("chance")
    with NestClient(*ch.hostport()) as c:
        batch, _ = generate(c, codes_per_category=3)
        cat = batch["categories"][0]
        got = claim(c, cat, "own", 5)
        with pytest.raises(NestError) as e:
            c.call("chance.release", {"claim_id": "other", "category": cat})
        assert err_code(e) == "claim_not_found"
        # naming a code the claim does not hold releases nothing
        other = next(k for k in all_codes(redis_client, cat) if k != got["code"])
        with pytest.raises(NestError) as e:
            c.call("chance.release", {"claim_id": "own", "category": cat, "code": other})
        assert err_code(e) == "not_owned"
        with pytest.raises(NestError) as e:
            c.call("chance.release", {"claim_id": "own", "category": cat, "code": "bad code!"})
        assert err_code(e) == "bad_request"
        assert redis_client.scard("chance:{c%d}:free" % cat) == 2
        rel = c.call("chance.release", {"claim_id": "own", "category": cat, "reason": "test"})
        assert rel == {"released": True, "code": got["code"]}
        with pytest.raises(NestError) as e:
            c.call("chance.release", {"claim_id": "own", "category": cat})
        assert err_code(e) == "claim_not_found"
        assert redis_client.scard("chance:{c%d}:free" % cat) == 3
        assert redis_client.hget("chance:{c%d}:users" % cat, "5") is None
        log = c.call("chance.assignments", {"category": cat})["items"]
        assert [i["type"] for i in log] == ["assigned", "released"]
        # the user may claim again: the limit counts codes held
        assert claim(c, cat, "own2", 5)["category"] == cat


def test_the_assignment_log_keeps_only_its_retention(chanced, redis_client):
    """Entries older than assignment_log_retention_s go as new ones are written (whole stream
    nodes at a time, so a few old ones may stay); the newest are always there."""
    ch = chanced("chance", assignment_log_retention_s=1)
    key = None
    with NestClient(*ch.hostport()) as c:
        batch, _ = generate(c, codes_per_category=400, per_user_limit=1000)
        cat = batch["categories"][0]
        key = "chance:{c%d}:log" % cat
        for i in range(250):
            claim(c, cat, "old-%d" % i, 1)
        # (250 claims can outlast the retention on a slow build: some may be trimmed already)
        assert 0 < redis_client.xlen(key) <= 250
        time.sleep(2.2)
        for i in range(150):
            claim(c, cat, "new-%d" % i, 1)
    kept = redis_client.xrange(key)
    claims = [fields["claim"] for _id, fields in kept]
    assert len(kept) < 400 and claims[-150:] == ["new-%d" % i for i in range(150)], len(kept)
    assert sum(1 for x in claims if x.startswith("old-")) < 250


# ---- queries -------------------------------------------------------------------------------

def test_categories_codes_and_pagination(chanced, redis_client):
    ch = chanced("chance")
    with NestClient(*ch.hostport()) as c:
        batch, _ = generate(c, categories=3, codes_per_category=250)
        cat = batch["categories"][1]
        page = c.call("chance.categories", {"limit": 2})
        assert [x["id"] for x in page["items"]] == batch["categories"][:2]
        rest = c.call("chance.categories", {"after": page["next_cursor"]})
        assert [x["id"] for x in rest["items"]] == batch["categories"][2:]
        assert rest["next_cursor"] is None
        mine = [claim(c, cat, "q%d" % i, 100 + i)["code"] for i in range(3)]
        seen, cursor, pages = [], None, 0
        while True:
            req = {"category": cat, "limit": 40}
            if cursor:
                req["cursor"] = cursor
            page = c.call("chance.codes", req)
            assert len(page["items"]) <= 40
            seen += [i["code"] for i in page["items"]]
            cursor = page["next_cursor"]
            pages += 1
            if not cursor:
                break
            assert pages < 100
        assert set(seen) == set(all_codes(redis_client, cat))
        assigned = c.call("chance.codes", {"category": cat, "status": "assigned"})["items"]
        assert sorted(i["code"] for i in assigned) == sorted(mine)
        by_user = c.call("chance.codes", {"category": cat, "user": 101})["items"]
        assert [i["code"] for i in by_user] == [mine[1]]
        one = c.call("chance.code", {"code": " " + mine[0].lower() + " "})
        assert one["status"] == "assigned" and one["user_id"] == "100"
        with pytest.raises(NestError) as e:
            c.call("chance.code", {"code": "2222222222222"})
        assert err_code(e) == "code_not_found"
        for forged in ["x", "h:abc:0", "h:0:-1", "s:12:0", "s:1-2-3:0", "h:1", "a:0:0",
                       "z:0:0", "h:0:99999999"]:
            with pytest.raises(NestError) as e:
                c.call("chance.codes", {"category": cat, "cursor": forged})
            assert err_code(e) == "bad_request", forged
        user_view = c.call("chance.categories", {"claimable": True, "user": 100})["items"]
        assert {x["id"]: x["user_claims"] for x in user_view}[cat] == 1


# ---- the wire ------------------------------------------------------------------------------

@pytest.mark.parametrize("data", [
    {},
    {"claim_id": "x", "category": 1},
    {"claim_id": "x", "category": "1", "user": {"id": 1, "username": "u"}},
    {"claim_id": "x", "category": 1e300, "user": {"id": 1, "username": "u"}},
    {"claim_id": "x", "category": -3, "user": {"id": 1, "username": "u"}},
    {"claim_id": "bad id!", "category": 1, "user": {"id": 1, "username": "u"}},
    {"claim_id": "x" * 65, "category": 1, "user": {"id": 1, "username": "u"}},
    {"claim_id": "x", "category": 1, "user": {"id": -1, "username": "u"}},
    {"claim_id": "x", "category": 1, "user": {"id": 1, "username": "a\u0000b"}},
    {"claim_id": "x", "category": 1, "user": {"id": 1, "username": "u", "admin": True}},
    [1, 2, 3],
    "a string",
])
def test_claim_rejects_bad_input(chanced, redis_client, data):
    ch = chanced("chance")
    with NestClient(*ch.hostport()) as c:
        generate(c, codes_per_category=2)
        before = redis_client.dbsize()
        with pytest.raises(NestError) as e:
            c.call("chance.claim", data)
        assert err_code(e) == "bad_request"
        assert redis_client.dbsize() == before
        assert redis_client.scard("chance:{c1}:free") == 2


def test_bad_frames_close_only_that_connection(chanced, redis_client):
    ch = chanced("chance", max_frame_bytes=4096)
    with NestClient(*ch.hostport()) as good:
        generate(good, codes_per_category=2)
        for junk in [b"12x#{}", b"#{}", b"5#{abc}", b"99999999#", b"12345678901#",
                     b"3#\xff\xfe\xfd", b"3#[1]"]:
            s = socket.create_connection(ch.hostport())
            s.sendall(junk)
            s.settimeout(5)
            try:
                rest = s.recv(1000)
            except ConnectionResetError:
                rest = b""
            assert rest == b"", (junk, rest)
            s.close()
        # a message without pattern or id is ignored, like Nest does; the conn stays usable
        raw = NestClient(*ch.hostport())
        raw.send_raw(b"2#{}")
        assert raw.call("chance.categories", {})["items"][0]["total"] == 2
        raw.close()
        # unknown pattern: Nest's exact reply, and the connection stays usable
        with pytest.raises(NestError) as e:
            good.call("chance.unknown", {})
        assert e.value.err == ("There is no matching message handler defined in the remote "
                               "service.")
        # an event (no id) gets no reply and does not break the connection
        good.emit("chance.categories", {})
        assert good.call("chance.categories", {})["items"][0]["remaining"] == 2


def test_frames_split_at_every_byte_and_pipelined(chanced, redis_client):
    ch = chanced("chance")
    with NestClient(*ch.hostport()) as c:
        generate(c, codes_per_category=2)
    s = socket.create_connection(ch.hostport())
    frames = b"".join(encode_frame({"pattern": {"cmd": "chance.code"},
                                    "data": {"code": "ZZZZZZZZZZZ%d" % (i + 2)}, "id": i})
                      for i in range(3))
    pattern_as_string = encode_frame({"pattern": json.dumps({"cmd": "chance.categories"}),
                                      "data": {}, "id": "s"})
    for b in frames + pattern_as_string:
        s.sendall(bytes([b]))
    s.settimeout(10)
    got = b""
    while got.count(b'"isDisposed":true') < 4:
        chunk = s.recv(65536)
        assert chunk
        got += chunk
    assert got.count(b"code_not_found") == 3 and b'"id":"s"' in got
    s.close()


def test_stalled_partial_frame_is_dropped(chanced, redis_client):
    ch = chanced("chance", frame_stall_ms=300)
    s = socket.create_connection(ch.hostport())
    s.sendall(b"50#{\"pattern\":")
    s.settimeout(5)
    assert s.recv(100) == b""  # closed by the server after the stall limit
    s.close()


def test_redis_down_means_unavailable_then_recovers(chanced, redis_client, servers):
    ch = chanced("chance", redis_timeout_ms=1000)
    with NestClient(*ch.hostport()) as c:
        batch, _ = generate(c, codes_per_category=3)
        cat = batch["categories"][0]
        servers.redis.stop()
        with pytest.raises(NestError) as e:
            claim(c, cat, "down", 1)
        assert err_code(e) in ("unavailable", "timeout")
        servers.redis.start()  # the test Redis keeps no data across a restart
        deadline = time.time() + 15
        while True:
            try:
                c.call("chance.categories", {})
                break
            except NestError as ex:
                assert ex.err["code"] in ("unavailable", "timeout")
                assert time.time() < deadline, "chance did not reconnect to Redis"
                time.sleep(0.2)
        batch, _ = generate(c, codes_per_category=3)
        assert claim(c, batch["categories"][0], "up", 1)["category"] == batch["categories"][0]


# ---- NestJS interop ------------------------------------------------------------------------

def node_client(*args):
    out = subprocess.run(["node", str(ROOT / "test/interop/nest_client.js"), *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_nestjs_client_calls_chance(chanced, redis_client):
    ch = chanced("chance")
    port = str(ch.port)
    with NestClient(*ch.hostport()) as c:
        batch, _ = generate(c, codes_per_category=3, name="\u062c\u0627\u06cc\u0632\u0647 \U0001F381")
    cat = batch["categories"][0]
    cats = node_client("call", "--port", port, "--cmd", "chance.categories", "--data", "{}")
    assert cats["ok"] and cats["response"]["items"][0]["name"] == "\u062c\u0627\u06cc\u0632\u0647 \U0001F381"
    data = json.dumps({"claim_id": "nest-1", "category": cat,
                       "user": {"id": "u-9", "username": "\u0633\u0627\u0631\u0627 \U0001F600"}})
    got = node_client("call", "--port", port, "--cmd", "chance.claim", "--data", data)
    assert got["ok"] and CODE_RE.match(got["response"]["code"])
    h = all_codes(redis_client, cat)[got["response"]["code"]]
    assert h["n"] == "\u0633\u0627\u0631\u0627 \U0001F600"
    again = node_client("call", "--port", port, "--cmd", "chance.claim", "--data", data)
    assert again["response"]["code"] == got["response"]["code"]
    assert again["response"]["replay"] is True
    bad = node_client("call", "--port", port, "--cmd", "chance.claim", "--data", "{}")
    assert bad["ok"] is False and bad["err"]["code"] == "bad_request"
    made = node_client("call", "--port", port, "--cmd", "chance.generate",
                       "--data", json.dumps({"categories": 1, "codes_per_category": 5,
                                             "reward_min": 1, "reward_max": 9,
                                             "actor": ACTOR}))
    assert made["ok"] and made["response"]["batch"]["total"] == 5
    ev = node_client("emit", "--port", port, "--cmd", "chance.categories", "--data", "{}")
    assert ev == {"ok": True}
    calls = [{"cmd": "chance.code", "data": {"code": got["response"]["code"]}},
             {"cmd": "chance.categories", "data": {}},
             {"cmd": "chance.code", "data": {"code": "ZZZZZZZZZZZZ"}}]
    f = Path(ch.log_path).with_suffix(".calls.json")
    f.write_text(json.dumps(calls))
    res = node_client("batch", "--port", port, "--file", str(f))
    assert res[0]["ok"] and res[0]["response"]["code"] == got["response"]["code"]
    assert res[1]["ok"] and res[2]["ok"] is False
