"""Regression tests for issue 9, defects 4, 5 and 6: the chance role against a real Redis that
refuses writes, hangs, or holds damaged data.

- Defect 4: generation reported success when Redis refused its writes (-OOM), left "generating"
  categories behind with no audit event, and a retry made a second batch.
- Defect 5: a hung Redis (SIGSTOP) left chance answering nothing for minutes while /readyz said
  ready.
- Defect 6: a missing code record crashed chance (the replay branch) or half-assigned the code
  (the assign branch).

Each test starts its own `chanced --role=chance` against the shared private Redis (flushed by
`redis_client`), with RabbitMQ unreachable so audit events stay in their Redis streams where
the test can read them.  Whatever a test does to Redis (maxmemory, SIGSTOP) is undone in a
`finally`.
"""

import json
import time
import urllib.error
import urllib.request

import pytest

from nest import NestClient, NestError

ACTOR = {"id": 1, "username": "alice", "role": "admin"}
NO_BROKER = "amqp://guest:guest@127.0.0.1:1/"  # events stay in Redis for the test to read
GIVE_UP_S = 8  # generate_give_up_ms of the test daemon: failures this long fail the batch


def err_code(exc):
    err = exc.err
    return err.get("code") if isinstance(err, dict) else err


def claim(c, cat, claim_id, uid, timeout=None):
    return c.call("chance.claim", {"claim_id": claim_id, "category": cat,
                                   "user": {"id": uid, "username": "u%d" % uid}},
                  timeout=timeout)


def make_category(c, codes):
    """One ready category of `codes` codes; its id.  chance.generate answers at once and
    chance.batch reports progress (a binary that answers only when done is accepted too)."""
    batch = c.call("chance.generate", {"categories": 1, "codes_per_category": codes,
                                       "reward_min": 1000, "reward_max": 5000, "actor": ACTOR},
                   timeout=60)["batch"]
    deadline = time.monotonic() + 60
    while batch.get("state", "ready") == "generating":
        assert time.monotonic() < deadline, batch
        time.sleep(0.05)
        batch = c.call("chance.batch", {"id": batch["id"]})["batch"]
    assert batch.get("state", "ready") == "ready", batch
    return batch["categories"][0]


def code_record(r, cat, code):
    """A code's record wherever this version keeps it: a field of the category's codes hash
    (JSON), or an older version's hash of its own; None when there is none."""
    old_key = "chance:{c%d}:code:%s" % (cat, code)
    if r.exists(old_key):
        return r.hgetall(old_key)
    v = r.hget("chance:{c%d}:codes" % cat, code)
    return json.loads(v) if v is not None else None


def drop_code_record(r, cat, code):
    """Deletes a code's record (damaged Redis contents), leaving every other key alone."""
    n = r.delete("chance:{c%d}:code:%s" % (cat, code))
    n += r.hdel("chance:{c%d}:codes" % cat, code)
    assert n == 1, "no record of %s found to delete" % code


def free_codes(r, cat):
    return r.smembers("chance:{c%d}:free" % cat)


def still_serving(ch, c):
    """The role did not crash on what it read: the process lives and answers."""
    assert ch.running(), "chance died:\n" + ch.log_tail()
    c.call("chance.categories", {}, timeout=10)


def readyz(ch):
    host, port = ch.hostport("chance_health_listen")
    try:
        with urllib.request.urlopen("http://%s:%d/readyz" % (host, port), timeout=3) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


# ---- defect 4: generation when Redis refuses writes ---------------------------------------

@pytest.mark.slow
@pytest.mark.fault
def test_generation_refused_by_redis_fails_audited_cleaned_and_once(chanced, redis_client):
    r = redis_client
    ch = chanced("chance", amqp_url=NO_BROKER, generate_chunk=500,
                 generate_give_up_ms=GIVE_UP_S * 1000)
    saved = r.config_get("maxmemory*")
    key = "defect4-oom"
    req = {"categories": 2, "codes_per_category": 40000, "reward_min": 1000,
           "reward_max": 5000, "actor": ACTOR, "batch_key": key}
    seen = []
    try:
        # room for the batch's record and metas, not for its 80,000 codes
        used = int(r.info("memory")["used_memory"])
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("maxmemory", used + 3 * 1024 * 1024)
        with NestClient(*ch.hostport(), timeout=30) as c:
            try:
                batch = c.call("chance.generate", req, timeout=60)["batch"]
            except NestError as e:
                pytest.fail("chance.generate with batch_key %r refused: %r" % (key, e.err))
            seen.append(batch)
            bid = batch["id"]
            assert batch.get("state") != "ready", \
                "generation reported success while Redis refused its writes: %r" % batch
            assert batch.get("state") == "generating", batch
            # Redis refuses the codes: the batch never becomes ready; a retry with the same key
            # (a client that timed out) is the same batch, or refused while Redis refuses
            ch.wait_log("generate_retrying", timeout=30)
            try:
                again = c.call("chance.generate", req, timeout=30)["batch"]
                assert again["id"] == bid, (again, batch)
            except NestError as e:
                assert err_code(e) == "unavailable", e.err
            deadline = time.monotonic() + GIVE_UP_S + 10
            while time.monotonic() < deadline:
                batch = c.call("chance.batch", {"id": bid})["batch"]
                seen.append(batch)
                assert batch["state"] != "ready", \
                    "batch reported ready while Redis refused its writes: %r" % batch
                assert batch["codes_written"] < batch["total"], batch
                time.sleep(1)
            # writes accepted again: the failure is recorded (the batch gave up), never success
            r.config_set("maxmemory", saved["maxmemory"])
            deadline = time.monotonic() + 30
            while batch["state"] == "generating":
                assert time.monotonic() < deadline, "batch still generating: %r" % batch
                time.sleep(0.2)
                batch = c.call("chance.batch", {"id": bid})["batch"]
                seen.append(batch)
            assert batch["state"] == "failed", batch
            assert batch["error"], batch
            assert not any(b.get("state") == "ready" for b in seen), seen

            # audited: a batch.failed event for this batch in the batch-level stream
            failed = [json.loads(f["e"]) for _, f in r.xrange("chance:{g}:events")]
            failed = [e for e in failed if e.get("type") == "batch.failed"]
            assert [e["subject"]["batch"] for e in failed] == [bid], failed
            assert not [e for _, f in r.xrange("chance:{g}:events")
                        if json.loads(f["e"]).get("type") == "batch.generated"]

            # cleaned up: no category of it left generating (nor claimable), no codes left,
            # not even in the code index (codes reserved there that Redis then refused to add
            # to their category)
            deadline = time.monotonic() + 30
            while True:
                left = [cat for cat in batch["categories"]
                        if r.hget("chance:{c%d}:meta" % cat, "status") == "generating"]
                indexed = sum(r.hlen(k) for k in r.scan_iter("chance:{i*}:codes"))
                records = sum(r.hlen(k) for k in r.scan_iter("chance:{c*}:codes"))
                if not left and indexed == 0 and records == 0:
                    break
                assert time.monotonic() < deadline, \
                    "categories %r still generating; %d codes left in the index, %d records" \
                    % (left, indexed, records)
                time.sleep(0.2)
            assert r.zcard("chance:{g}:categories") == 0
            assert c.call("chance.categories", {})["items"] == []

            # a retry with the same key now that Redis accepts writes: still the one batch
            again = c.call("chance.generate", req, timeout=30)["batch"]
            assert again["id"] == bid, (again, batch)
            time.sleep(1)
            batches = list(r.scan_iter("chance:{g}:batch:*"))
            assert len(batches) == 1, batches
            assert r.hlen("chance:{g}:batchkeys") == 1
            assert list(r.scan_iter("chance:{c*}:meta")) == []
            still_serving(ch, c)
    finally:
        r.config_set("maxmemory", saved["maxmemory"])
        r.config_set("maxmemory-policy", saved["maxmemory-policy"])


# ---- defect 5: a hung Redis ---------------------------------------------------------------

@pytest.mark.fault
def test_hung_redis_answers_promptly_turns_not_ready_and_recovers(chanced, redis_client,
                                                                  servers):
    timeout_s = 1.0
    ch = chanced("chance", amqp_url=NO_BROKER, redis_timeout_ms=int(timeout_s * 1000))
    with NestClient(*ch.hostport(), timeout=30) as c:
        cat = make_category(c, 20)
        assert claim(c, cat, "before", 1)["category"] == cat
        assert readyz(ch) == 200
        try:
            servers.redis.pause()
            # every claim is answered within the command timeout (+1 s), not minutes
            for i in range(3):
                t0 = time.monotonic()
                with pytest.raises(NestError) as e:
                    try:
                        claim(c, cat, "hung%d" % i, 10 + i, timeout=timeout_s + 5)
                    except TimeoutError:
                        pytest.fail("chance.claim %d unanswered %.0f s into a hung Redis"
                                    % (i, time.monotonic() - t0))
                took = time.monotonic() - t0
                assert err_code(e.value) in ("unavailable", "timeout"), e.value.err
                assert took <= timeout_s + 1.0, "claim %d answered after %.2f s" % (i, took)
            # and the role says it is not ready
            deadline = time.monotonic() + 5
            while readyz(ch) != 503:
                assert time.monotonic() < deadline, "/readyz still 200 with Redis hung"
                time.sleep(0.1)
        finally:
            servers.redis.resume()
        deadline = time.monotonic() + 15
        while True:
            try:
                got = claim(c, cat, "after", 2, timeout=10)
                break
            except NestError as ex:
                assert err_code(ex) in ("unavailable", "timeout"), ex.err
                assert time.monotonic() < deadline, "claims still fail after SIGCONT"
                time.sleep(0.2)
        assert got["category"] == cat and not got["replay"]
        deadline = time.monotonic() + 10
        while readyz(ch) != 200:
            assert time.monotonic() < deadline, "/readyz not 200 after Redis resumed"
            time.sleep(0.1)
        assert claim(c, cat, "before", 1)["replay"]


# ---- defect 6: a missing code record --------------------------------------------------------

def assert_not_half_assigned(r, cat, code):
    """Nothing in Redis says `code` (whose record is gone) belongs to anyone."""
    claims = r.hgetall("chance:{c%d}:claims" % cat)
    assert code not in claims.values(), "claim %r maps to %s, which has no record" % (
        [k for k, v in claims.items() if v == code], code)
    rec = code_record(r, cat, code)
    assert rec is None, "%s got a partial record %r" % (code, rec)
    for uid, held in r.hgetall("chance:{c%d}:byuser" % cat).items():
        assert code not in held.split(), "user %s holds %s, which has no record" % (uid, code)


@pytest.mark.parametrize("codes", [1, 3])
def test_free_code_without_record_is_never_assigned_nor_crashes(chanced, redis_client, codes):
    r = redis_client
    ch = chanced("chance", amqp_url=NO_BROKER)
    with NestClient(*ch.hostport(), timeout=15) as c:
        cat = make_category(c, codes)
        free = sorted(free_codes(r, cat))
        assert len(free) == codes
        broken = free[0]
        drop_code_record(r, cat, broken)
        got = {}
        for i in range(codes + 1):  # one claim more than codes: every free entry is drawn
            try:
                a = claim(c, cat, "d6a-%d" % i, 100 + i)
            except NestError as e:
                still_serving(ch, c)
                assert_not_half_assigned(r, cat, broken)
                assert err_code(e) in ("category_exhausted", "inconsistent"), e.err
                continue
            except (ConnectionError, TimeoutError) as e:
                pytest.fail("chance.claim %d got no answer (%r); chance running: %s\n%s"
                            % (i, e, ch.running(), ch.log_tail()))
            assert a["code"] != broken, "a code without a record was handed out: %r" % a
            got[a["code"]] = "d6a-%d" % i
            still_serving(ch, c)
        assert set(got) == set(free) - {broken}
        for code, cid in got.items():
            rec = code_record(r, cat, code)
            assert rec and rec.get("s", rec.get("status")) == "assigned", rec
        assert_not_half_assigned(r, cat, broken)
        assert int(r.hget("chance:{c%d}:meta" % cat, "assigned")) == codes - 1
        with pytest.raises(NestError) as e:
            claim(c, cat, "d6a-last", 999)
        assert err_code(e.value) == "category_exhausted", e.value.err
        still_serving(ch, c)


def test_replay_of_a_claim_whose_record_is_gone_is_a_clear_answer(chanced, redis_client):
    r = redis_client
    ch = chanced("chance", amqp_url=NO_BROKER)
    with NestClient(*ch.hostport(), timeout=15) as c:
        cat = make_category(c, 2)
        first = claim(c, cat, "d6b", 7)
        drop_code_record(r, cat, first["code"])
        for _ in range(2):
            try:
                again = claim(c, cat, "d6b", 7)
            except NestError as e:
                assert err_code(e) == "inconsistent", e.err
            except (ConnectionError, TimeoutError) as e:
                pytest.fail("replay got no answer (%r); chance running: %s\n%s"
                            % (e, ch.running(), ch.log_tail()))
            else:  # the same answer, or nothing
                assert again["code"] == first["code"] and again["replay"], (again, first)
                assert again["reward"] == first["reward"], (again, first)
            still_serving(ch, c)
        # the other code is still there for someone else
        other = claim(c, cat, "d6b-other", 8)
        assert other["code"] != first["code"] and not other["replay"]
        still_serving(ch, c)
