"""Several gateways on one database: the reconciler and the outbox housekeeping run on one
instance at a time through leases in PostgreSQL, and another instance takes over within the
lease's TTL when the holder dies (or at once when it stops cleanly)."""

import os
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


def _served(ch):
    """chance.claim calls this chance instance answered (its /metrics)."""
    from loggerkit import http_get
    st, text = http_get(ch.addr("chance_health_listen"), "/metrics")
    assert st == 200, text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("chanced_rpc_requests_total{") and 'cmd="chance.claim"' in line)


@pytest.mark.fault
@pytest.mark.parametrize("how", ["list", "dns"])
def test_calls_spread_over_every_chance_and_fail_over(chanced, chanced_bin, fresh_postgres_url,
                                                      redis_client, tmp_path, how):
    """chance_addr as a comma-separated list, or one DNS name with several addresses: each call
    goes to the next connected instance, and when one dies the others take every later call."""
    from gwclient import _unused_port
    port = _unused_port()
    from loggerkit import http_get
    chances = [chanced("chance", wait=False, chance_listen="127.0.0.%d:%d" % (2 + i, port))
               for i in range(2)]
    for ch in chances:  # the fixture waits on 127.0.0.1; these listen elsewhere
        wait_for(lambda: http_get(ch.addr("chance_health_listen"), "/readyz")[0] == 200,
                 timeout=30, what="chance ready")
    env = None
    if how == "list":
        addr = ",".join("127.0.0.%d:%d" % (2 + i, port) for i in range(2))
    else:
        # nss_wrapper (Debian's libnss-wrapper) gives the name two addresses; it must not dlopen
        # libc with RTLD_DEEPBIND, which AddressSanitizer refuses (the gateway aborts)
        hosts = tmp_path / "hosts"
        hosts.write_text("127.0.0.2 chance.test\n127.0.0.3 chance.test\n")
        env = {"LD_PRELOAD": "libnss_wrapper.so", "NSS_WRAPPER_HOSTS": str(hosts),
               "NSS_WRAPPER_PASSWD": "/etc/passwd", "NSS_WRAPPER_GROUP": "/etc/group",
               "NSS_WRAPPER_DISABLE_DEEPBIND": "1",
               "ASAN_OPTIONS": "verify_asan_link_order=0:" + os.environ.get("ASAN_OPTIONS", "")}
        addr = "chance.test:%d" % port
    keys = dict(GATEWAY_TEST_KEYS, postgres_url=fresh_postgres_url, chance_addr=addr,
                rpc_insecure=True, logger_addr="127.0.0.1:%d" % _unused_port())
    gw = chanced("gateway", env=env, **keys)
    wait_ready(gw.port)
    s = Stack.__new__(Stack)  # the helpers of Stack over this gateway
    s.chanced, s.bin, s.postgres_url, s.gateway, s.port = chanced, chanced_bin, \
        fresh_postgres_url, gw, gw.port
    s.chance, s.logger, s._admin, s._n = chances[0], None, None, 0
    batch = s.generate(1, 200, per_user_limit=200)
    cat = batch["categories"][0]
    user = s.signup()
    for i in range(20):
        assert user.claim(cat, key="a%d" % i).status == 201
    a, b = _served(chances[0]), _served(chances[1])
    assert a >= 5 and b >= 5, (a, b)  # spread per request, not stuck on one connection

    chances[0].kill(signal.SIGKILL)
    statuses = [user.claim(cat, key="b%d" % i).status for i in range(20)]
    # the call in flight at the kill may be unknown (202); every later one is served
    assert all(st == 201 for st in statuses[2:]), statuses
    assert set(statuses) <= {201, 202, 503}, statuses
    assert _served(chances[1]) >= b + 18
