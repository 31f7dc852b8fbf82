"""The chance relay does not hold an audit event behind the broker's confirms of earlier ones.

The relay's broker connection goes through a proxy that delivers everything RabbitMQ sends back
(the confirms among it) CONFIRM_DELAY_S late. An event read while earlier messages wait for
their confirms must still be published at once: it reaches the logger's store in well under
CONFIRM_DELAY_S. (The relay once published in rounds and waited for each round's confirms before
publishing the next, so such an event waited for the confirms of the round before it.) It is
still removed from Redis only once confirmed, and stored once.
"""

import time
from urllib.parse import urlsplit, urlunsplit

from chancekit import generate_ready
from loggerkit import store, wait_ready, wait_until
from nest import NestClient
from test_chance_slow_redis import SlowProxy

__all__ = ["store"]
ADMIN = {"id": 1, "username": "alice", "role": "admin"}
CONFIRM_DELAY_S = 3.0


def stored(store, claim_id):
    return store[1].events.count_documents({"type": "code.assigned",
                                            "subject.claim_id": claim_id})


def test_an_event_is_published_while_earlier_confirms_are_outstanding(chanced, store, amqp_url,
                                                                       redis_client):
    u = urlsplit(amqp_url)
    proxy = SlowProxy((u.hostname, u.port), 0.0)
    try:
        netloc = "%s@127.0.0.1:%d" % (u.netloc.rsplit("@", 1)[0], proxy.port) \
            if "@" in u.netloc else "127.0.0.1:%d" % proxy.port
        ch = chanced("chance", amqp_url=urlunsplit(u._replace(netloc=netloc)))
        lg = chanced("logger", mongo_url=store[0])
        wait_ready(lg)
        with NestClient(*ch.hostport(), timeout=30) as c:
            cat = generate_ready(c, {"categories": 1, "codes_per_category": 10,
                                     "reward_min": 1000, "reward_max": 2000,
                                     "per_user_limit": 10, "actor": ADMIN})["categories"][0]
            wait_until("batch.generated stored",
                       lambda: store[1].events.count_documents({"type": "batch.generated"}))
            proxy.delay = CONFIRM_DELAY_S  # from now on every confirm comes this late
            user = {"id": "u1", "username": "user1"}
            c.call("chance.claim", {"claim_id": "first", "category": cat, "user": user})
            wait_until("the first event stored", lambda: stored(store, "first"), timeout=10,
                       interval=0.02)
            # its confirm is still on its way: the next event must not wait for it
            t0 = time.monotonic()
            c.call("chance.claim", {"claim_id": "second", "category": cat, "user": user})
            wait_until("the second event stored", lambda: stored(store, "second"),
                       timeout=3 * CONFIRM_DELAY_S, interval=0.02)
            took = time.monotonic() - t0
            assert took < CONFIRM_DELAY_S / 2, \
                "the second event took %.2f s: it waited for the first one's confirm" % took
            # confirmed late, then acknowledged and deleted from the stream; each stored once
            wait_until("the stream emptied after the confirms",
                       lambda: redis_client.xlen("chance:{c%d}:events" % cat) == 0,
                       timeout=6 * CONFIRM_DELAY_S)
            assert stored(store, "first") == 1 and stored(store, "second") == 1
    finally:
        proxy.close()
