"""Defence in depth for money: an assignment made on chance directly, as a compromised internal
peer could, under a claim id no gateway issued, is never credited; it is counted, logged and
audited (claim.forged)."""

import pytest

from gwclient import Stack, claim_id_for, gw_stack, pg_query, wait_for  # noqa: F401
from loggerkit import metric
from nest import NestClient

pytestmark = [pytest.mark.e2e]


def _logs(admin, **q):
    from urllib.parse import urlencode
    r = admin.get("/admin/logs?" + urlencode(q))
    assert r.status == 200, r
    return r.json["items"]


def test_an_assignment_under_a_forged_claim_id_is_never_credited(gw_stack):
    s = gw_stack
    admin = s.admin()
    batch = s.generate(1, 5, per_user_limit=10)
    cat = batch["categories"][0]
    victim = s.signup()
    genuine = claim_id_for(s.postgres_url, victim.id, "real")
    forged = ["f" * 64,                   # made up
              genuine[:32] + "0" * 32,    # a real nonce with a guessed tag
              claim_id_for(s.postgres_url, victim.id + 1000, "x")]  # another user's tag
    with NestClient(*s.chance.hostport()) as c:
        for claim in forged:
            r = c.call("chance.claim", {"claim_id": claim, "category": cat,
                                        "user": {"id": victim.id,
                                                 "username": victim.user["username"]}})
            assert r["code"]
    hp = s.gateway.addr("gateway_health_listen")
    wait_for(lambda: (metric(hp, "chanced_gateway_forged_claims_total") or 0) >= 3,
             timeout=30, what="the reconciler to refuse the three assignments")
    assert victim.get("/me").json["balance"] == 0
    assert pg_query(s.postgres_url, "SELECT count(*) FROM ledger")[0][0] == 0
    wait_for(lambda: len(_logs(admin, type="claim.forged")) >= 3, timeout=30,
             what="three claim.forged events in the audit trail")
    seen = {e["data"]["claim_id"] for e in _logs(admin, type="claim.forged")}
    assert set(forged) <= seen
    # a genuine claim still works, and is credited
    r = victim.claim(cat, key="real")
    assert r.status == 201 and r.json["claim_id"] == genuine
    assert victim.get("/me").json["balance"] == r.json["reward"]


def test_a_pre_inserted_event_id_cannot_pass_for_the_real_event(gw_stack):
    """Someone who reached the logger stored an event under the id of the gateway's next audit
    event. The real event is not taken for delivered: the logger reports the collision, the
    gateway parks the row with the reason and raises the alarm."""
    s = gw_stack
    s.admin()
    wait_for(lambda: pg_query(s.postgres_url, "SELECT count(*) FROM outbox WHERE delivered_at"
                              " IS NULL")[0][0] == 0, timeout=30, what="the outbox to drain")
    ns = pg_query(s.postgres_url, "SELECT value FROM gateway_meta WHERE key = 'event_namespace'")
    last = pg_query(s.postgres_url, "SELECT last_value FROM outbox_id_seq")[0][0]
    nxt = last + 1
    forged = {"_id": "gw:%s:%d" % (ns[0][0], nxt), "ts": 1767225600000, "service": "gateway",
              "type": "user.signed_up", "actor": None, "subject": {}, "data": {},
              "message": "a forged event"}
    with NestClient(*s.logger.hostport()) as c:
        assert c.call("log.append", {"events": [forged]})["stored"] == 1
    s.signup()  # its user.signed_up event takes outbox id nxt
    wait_for(lambda: pg_query(s.postgres_url, "SELECT delivered_at IS NOT NULL FROM outbox"
                              " WHERE id = %s", (nxt,)) == [(True,)], timeout=30,
             what="the relay to handle the event")
    rejected = pg_query(s.postgres_url, "SELECT rejected FROM outbox WHERE id = %s", (nxt,))[0][0]
    assert rejected and "id collision" in rejected, rejected
    hp = s.gateway.addr("gateway_health_listen")
    assert metric(hp, "chanced_gateway_outbox_conflicts_total") == 1
