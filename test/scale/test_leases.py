"""The reconciler's lease when a pass outlasts it (found by test_scale.py: during a Redis
failover a holder's pass hung on chance for longer than the TTL, another gateway took the lease,
and both said they held it).

A gateway holds the lease only until the TTL runs out since its last renewal, whatever its pass
is doing: its chanced_gateway_lease_held gauge drops to 0 then, and it does no more reconciling
work in that pass, so at most one gateway reports (and acts on) the lease at any moment."""

import signal
import sys
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent
INTEGRATION = HERE.parent / "integration"
if str(INTEGRATION) not in sys.path:
    sys.path.insert(0, str(INTEGRATION))

from gwclient import GATEWAY_TEST_KEYS, Stack, wait_for, wait_ready  # noqa: E402
from loggerkit import http_get  # noqa: E402
from shared_fixtures import export_fixtures  # noqa: E402


export_fixtures(globals(), "output_dir", "test_output_dir", "chanced_bin", "redis_url",
                "postgres_url", "redis_client", "fresh_postgres_url", "amqp_queue", "chanced")

TTL_MS = 1500
RPC_TIMEOUT_MS = 6000  # a call to a hung chance outlasts the lease four times


def held(g):
    st, text = http_get(g.addr("gateway_health_listen"), "/metrics", timeout=2)
    assert st == 200, text
    for line in text.splitlines():
        if line.startswith('chanced_gateway_lease_held{lease="reconciler"}'):
            return float(line.split()[-1]) == 1
    return False


def test_a_pass_that_outlasts_the_lease_gives_it_up(chanced, chanced_bin, fresh_postgres_url,
                                                    redis_client):
    s = Stack(chanced, chanced_bin, fresh_postgres_url, with_logger=False, lease_ttl_ms=TTL_MS,
              rpc_timeout_ms=RPC_TIMEOUT_MS)
    s.generate(2, 3)
    keys = dict(GATEWAY_TEST_KEYS, postgres_url=fresh_postgres_url, lease_ttl_ms=TTL_MS,
                rpc_timeout_ms=RPC_TIMEOUT_MS, logger_addr=s.gateway.keys["logger_addr"])
    g2 = chanced("gateway", **keys)
    wait_ready(g2.port)
    gws = [s.gateway, g2]
    first = wait_for(lambda: [g for g in gws if held(g)], timeout=20, what="a lease holder")
    assert len(first) == 1

    # chance hangs: the holder's next pass blocks on it for RPC_TIMEOUT_MS, far past the TTL
    s.chance.kill(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        samples = []
        while time.monotonic() < stopped + RPC_TIMEOUT_MS / 1000 + 1:
            samples.append((time.monotonic(), [g.proc.pid for g in gws if held(g)]))
            time.sleep(0.05)
    finally:
        s.chance.kill(signal.SIGCONT)
    runs = []  # (from, to, holders): the samples in short
    for t, h in samples:
        if runs and runs[-1][2] == h:
            runs[-1][1] = round(t - stopped, 2)
        else:
            runs.append([round(t - stopped, 2), round(t - stopped, 2), h])
    both = [h for _, h in samples if len(h) > 1]
    assert not both, "both gateways said they held the reconciler lease: %r" % runs
    # the first holder's claim ended within about the TTL of its last renewal (its pass renews
    # every reconcile_interval_ms until it blocks on chance), and the other took over
    gone = next((t for t, h in samples if first[0].proc.pid not in h), None)
    assert gone is not None and gone - stopped < TTL_MS / 1000 + 1.0, runs
    assert any(h and first[0].proc.pid not in h for _, h in samples), runs
    # and once chance answers again, one of them holds it
    wait_for(lambda: sum(held(g) for g in gws) == 1, timeout=20, what="one holder again")
