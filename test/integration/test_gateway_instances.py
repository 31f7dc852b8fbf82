"""Several gateways on one database: the reconciler and the outbox housekeeping run on one
instance at a time through leases in PostgreSQL, and another instance takes over within the
lease's TTL when the holder dies (or at once when it stops cleanly)."""

import signal
import time

import pytest

from gwclient import (API, GATEWAY_TEST_KEYS, Stack, claim_id_for, pg_query,  # noqa: F401
                      request, wait_for, wait_ready)

pytestmark = [pytest.mark.e2e]

TTL_MS = 2000


def holders(url):
    """{lease name: holder} of the leases not expired now."""
    return dict(pg_query(url, "SELECT name, holder FROM leases WHERE expires_at > now()"))


def second_gateway(s, chanced):
    keys = dict(GATEWAY_TEST_KEYS, postgres_url=s.postgres_url, lease_ttl_ms=TTL_MS)
    keys["logger_addr"] = s.gateway.keys["logger_addr"]
    g = chanced("gateway", **keys)
    wait_ready(g.port)
    return g


def pid_of(holder):
    return int(holder.split(":")[1])


@pytest.mark.fault
def test_one_reconciler_at_a_time_and_takeover_within_the_ttl(chanced, chanced_bin,
                                                               fresh_postgres_url, redis_client):
    s = Stack(chanced, chanced_bin, fresh_postgres_url, lease_ttl_ms=TTL_MS)
    g2 = second_gateway(s, chanced)
    batch = s.generate(1, 3)
    pids = {s.gateway.proc.pid: s.gateway, g2.proc.pid: g2}
    wait_for(lambda: {"reconciler", "outbox_housekeeping"} <= set(holders(s.postgres_url)),
             timeout=20, what="both leases taken")
    # sampled for a while: always exactly one holder, one of our two gateways, and it keeps it
    first = holders(s.postgres_url)["reconciler"]
    for _ in range(15):
        h = holders(s.postgres_url)
        assert h["reconciler"] == first and pid_of(first) in pids
        time.sleep(0.1)

    # the holder dies: the other takes over once the lease expires, within about the TTL
    victim = pids[pid_of(first)]
    killed_at = time.monotonic()
    victim.kill(signal.SIGKILL)
    wait_for(lambda: holders(s.postgres_url).get("reconciler", first) != first,
             timeout=TTL_MS / 1000 * 3, interval=0.05, what="the other gateway to take over")
    took = time.monotonic() - killed_at
    new = holders(s.postgres_url)["reconciler"]
    survivor = pids[pid_of(new)]
    assert survivor is not victim
    assert took < TTL_MS / 1000 + 2.0, took

    # the survivor reconciles: a pending claim is settled by it alone
    r = request(survivor.port, "POST", API + "/auth/signup",
                {"username": "lease_user", "password": "correct horse 1"})
    assert r.status == 201, r
    uid = r.json["user"]["id"]
    claim = claim_id_for(s.postgres_url, uid, "k")
    pg_query(s.postgres_url, "INSERT INTO claims (claim_id, user_id, category, status, updated_at)"
             " VALUES (%s, %s, %s, 'pending', now() - interval '1 min')",
             (claim, uid, batch["categories"][0]))
    wait_for(lambda: pg_query(s.postgres_url, "SELECT status FROM claims WHERE claim_id = %s",
                              (claim,))[0][0] == "credited", timeout=20, what="settled")

    # a clean stop hands the lease over at once, without waiting for the TTL
    other = second_gateway(s, chanced)
    time.sleep(0.5)
    assert holders(s.postgres_url)["reconciler"] == new
    stopped_at = time.monotonic()
    survivor.stop()
    wait_for(lambda: pid_of(holders(s.postgres_url).get("reconciler", new)) == other.proc.pid,
             timeout=10, interval=0.05, what="the third gateway to take over")
    assert time.monotonic() - stopped_at < TTL_MS / 1000, "a clean stop should not wait the TTL"
