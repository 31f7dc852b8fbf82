"""The chance relay when the broker is lost with a round unconfirmed (found by test_scale.py,
where the RabbitMQ queue leader is killed): the round comes back with nothing confirmed, so there
is nothing to acknowledge in Redis. The relay must not report that as a failed acknowledgement
(`relay_ack_failed` is for Redis refusing XACK/XDEL, an alarm for operators); the events are
published again once a broker answers, and none is lost."""

import signal
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
INTEGRATION = HERE.parent / "integration"
if str(INTEGRATION) not in sys.path:
    sys.path.insert(0, str(INTEGRATION))

from nest import NestClient  # noqa: E402
from shared_fixtures import export_fixtures  # noqa: E402


export_fixtures(globals(), "output_dir", "test_output_dir", "chanced_bin", "redis_url",
                "amqp_url", "redis_client", "amqp_queue", "servers", "rabbit", "chanced")

ACTOR = {"id": 1, "username": "root", "role": "admin"}


def backlog(r):
    return sum(r.xlen(k) for k in r.scan_iter(match="chance:{*}:events", count=1000))


def test_a_lost_broker_is_not_a_failed_acknowledgement(chanced, redis_client, rabbit, amqp_url,
                                                       amqp_queue):
    ch = chanced("chance")
    ch.wait_log(r'"event":"relay_connected"', timeout=30)

    def generate():
        with NestClient(*ch.hostport()) as c:
            c.call("chance.generate", {"categories": 3, "codes_per_category": 5,
                                       "reward_min": 1000, "reward_max": 2000, "actor": ACTOR},
                   timeout=30)

    # a first batch goes through: the quorum queue is established before the broker's crash
    # (one declared a moment before a kill -9 may not come back on a single node)
    generate()
    deadline = time.monotonic() + 30
    while backlog(redis_client) > 0 or '"event":"batch_generated"' not in ch.log_text():
        assert time.monotonic() < deadline, "the first batch's events were not published"
        time.sleep(0.1)
    time.sleep(1.0)
    rabbit.pause()  # the next round is sent and never confirmed...
    try:
        generate()
        deadline = time.monotonic() + 20
        while backlog(redis_client) == 0:
            assert time.monotonic() < deadline, "no audit events written"
            time.sleep(0.05)
        time.sleep(1.0)  # the relay has read them and sent its round
    finally:
        rabbit.kill()  # ...and its connection dies: the round comes back unconfirmed
    ch.wait_log(r'"event":"relay_amqp_failed"', timeout=30)
    time.sleep(2.0)  # several retry rounds against no broker
    rabbit.start()
    deadline = time.monotonic() + 60
    while backlog(redis_client) > 0:
        assert time.monotonic() < deadline, "events not published after the broker came back"
        time.sleep(0.2)
    text = ch.log_text()
    assert '"event":"relay_ack_failed"' not in text, \
        [line for line in text.splitlines() if "relay_ack_failed" in line][:3]
    assert ch.kill(signal.SIGTERM) == 0
