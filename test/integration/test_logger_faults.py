"""Fault injection on the audit trail: the logger killed between insert and ack, MongoDB
paused, RabbitMQ stopped during claims, the chance role killed while its relay publishes.
Afterwards every event must be stored exactly once and nothing valid dead-lettered.
"""

import json
import signal
import time

import pytest

from chancekit import generate_ready
from nest import NestClient
from loggerkit import (body, call, event, http_get, metric, publish, queue_depth,
                                 store, wait_ready, wait_until)

__all__ = ["store"]
ADMIN = {"id": 1, "username": "alice", "role": "admin"}

pytestmark = pytest.mark.fault


def start_logger(chanced, store, **keys):
    lg = chanced("logger", mongo_url=store[0], **keys)
    wait_ready(lg)
    return lg


@pytest.mark.slow
def test_sigkill_between_insert_and_ack_stores_exactly_once(chanced, store, amqp_url,
                                                           amqp_queue):
    lg = start_logger(chanced, store, test_ack_delay_ms=8000)
    events = [event(i, prefix="kill") for i in range(200)]
    publish(amqp_url, amqp_queue, [body(e) for e in events])
    lg.wait_log("consumer_ack_delayed", timeout=30)
    # inserted (journaled) but not acknowledged: now the process dies
    inserted = store[1].events.count_documents({})
    assert inserted > 0
    lg.kill(signal.SIGKILL)
    # the broker gives the unacknowledged deliveries back
    wait_until("deliveries back in the queue",
               lambda: queue_depth(amqp_url, amqp_queue) == (200, 0), timeout=30)
    lg.keys["test_ack_delay_ms"] = 0
    lg.start()
    wait_ready(lg)
    wait_until("queue drained", lambda: queue_depth(amqp_url, amqp_queue) == (0, 1), timeout=60)
    hp = lg.addr("logger_health_listen")
    wait_until("redeliveries acknowledged", lambda: (metric(
        hp, "chanced_logger_events_duplicate_total", 'source="amqp"') or 0) == inserted)
    # "drained" counts ready messages only: wait until the rest are stored as well
    wait_until("the rest stored", lambda: (metric(
        hp, "chanced_logger_events_stored_total", 'source="amqp"') or 0) == 200 - inserted)
    assert sorted(d["_id"] for d in store[1].events.find({}, {"_id": 1})) == \
        sorted(e["_id"] for e in events)
    assert metric(hp, "chanced_logger_events_stored_total", 'source="amqp"') == 200 - inserted
    assert queue_depth(amqp_url, amqp_queue + ".dlq")[0] == 0


@pytest.mark.slow
def test_mongodb_paused_means_consumption_pauses_and_nothing_is_dead_lettered(
        chanced, store, amqp_url, amqp_queue, servers):
    lg = start_logger(chanced, store, amqp_prefetch=100, insert_batch=50)
    hp = lg.addr("logger_health_listen")
    publish(amqp_url, amqp_queue, [body(event(0, prefix="warm"))])
    wait_until("first event stored", lambda: store[1].events.count_documents({}) == 1)
    events = [event(i, prefix="paused") for i in range(400)]
    servers.mongo.pause()
    try:
        publish(amqp_url, amqp_queue, [body(e) for e in events])
        lg.wait_log("consumer_paused", timeout=30)
        time.sleep(2)
        # the consumer holds at most its prefetch window; the rest waits in RabbitMQ
        ready, consumers = queue_depth(amqp_url, amqp_queue)
        assert consumers == 1 and ready >= 400 - 100, ready
        assert queue_depth(amqp_url, amqp_queue + ".dlq")[0] == 0
        assert metric(hp, "chanced_logger_consumer_paused") == 1
        assert metric(hp, "chanced_dependency_up", 'role="logger",dependency="mongodb"') == 0
        status, why = http_get(hp, "/readyz")
        assert status == 503 and "mongodb" in why, why
    finally:
        servers.mongo.resume()
    wait_until("all stored after SIGCONT", lambda: store[1].events.count_documents({}) == 401,
               timeout=90)
    wait_until("queue drained", lambda: queue_depth(amqp_url, amqp_queue) == (0, 1), timeout=30)
    assert queue_depth(amqp_url, amqp_queue + ".dlq")[0] == 0
    assert metric(hp, "chanced_logger_dead_lettered_total") == 0
    assert metric(hp, "chanced_logger_consumer_paused") == 0
    assert metric(hp, "chanced_logger_store_errors_total") >= 1
    wait_until("ready again", lambda: http_get(hp, "/readyz")[0] == 200)
    assert "consumer_resumed" in lg.log_text()


# ---- with the chance role's relay ---------------------------------------------------------

def wait_relayed(what, store, redis_client, want, timeout=60):
    """Waits until `want` events are stored; explains a relay that never published."""
    def count():
        return store[1].events.count_documents({})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if count() >= want:
            return
        time.sleep(0.2)
    waiting = {k: redis_client.xlen(k) for k in redis_client.scan_iter("chance:*:events")}
    pytest.fail("%s: %d of %d events stored after %ds; entries still in the Redis streams: %s. "
                "If they never left Redis, the chance role does not run the audit relay "
                "(roles/chance/relay.c: relay_new must be called from the role's start)."
                % (what, count(), want, timeout, waiting), pytrace=False)


def generate(c, codes):
    return generate_ready(c, {
        "categories": 1, "codes_per_category": codes, "reward_min": 1000, "reward_max": 100000,
        "per_user_limit": 1000, "actor": ADMIN})["categories"][0]


@pytest.mark.slow
def test_rabbitmq_down_during_claims_loses_nothing(chanced, store, amqp_url, amqp_queue,
                                                   redis_client, servers):
    ch = chanced("chance")
    lg = start_logger(chanced, store)
    with NestClient(*ch.hostport(), timeout=30) as c:
        cat = generate(c, 300)
        wait_relayed("batch.generated before the outage", store, redis_client, 1)
        servers.rabbitmq.stop()
        t0 = time.monotonic()
        for i in range(150):
            r = c.call("chance.claim", {"claim_id": "down-%d" % i, "category": cat,
                                        "user": {"id": "u%d" % (i % 7), "username": "user%d" % (i % 7)}})
            assert r["replay"] is False
        took = time.monotonic() - t0
    # claims never waited for the broker
    assert took < 30, took
    waiting = redis_client.xlen("chance:{c%d}:events" % cat)
    assert waiting == 150, "events should wait in Redis while RabbitMQ is down (%d)" % waiting
    servers.rabbitmq.start()
    wait_relayed("after RabbitMQ came back", store, redis_client, 151, timeout=120)
    wait_until("streams trimmed", lambda: redis_client.xlen("chance:{c%d}:events" % cat) == 0)
    ids = [d["_id"] for d in store[1].events.find({"type": "code.assigned"}, {"_id": 1})]
    ns = redis_client.get("chance:{g}:instance")
    claims = {json.loads(v)["c"]: code
              for code, v in redis_client.hgetall("chance:{c%d}:codes" % cat).items()
              if json.loads(v)["s"] == "assigned"}
    assert sorted(ids) == sorted("code.assigned:%s:c%d:down-%d:%s" % (ns, cat, i, claims["down-%d" % i])
                                 for i in range(150))
    assert queue_depth(amqp_url, amqp_queue + ".dlq")[0] == 0
    items = call(lg, "log.query", {"type": "code.assigned", "limit": 1000})["items"]
    assert len(items) == 150
    assert all(i["subject"]["category"] == cat and i["data"]["reward"] >= 1000 for i in items)


@pytest.mark.slow
def test_chance_killed_while_relaying_publishes_each_event_once(chanced, store, amqp_url,
                                                                redis_client):
    # Entries the killed instance read but did not acknowledge are taken over once idle for
    # relay_claim_idle_ms (60 s by default; short here).
    ch = chanced("chance", relay_batch=50, relay_claim_idle_ms=2000)
    start_logger(chanced, store)
    with NestClient(*ch.hostport(), timeout=30) as c:
        cat = generate(c, 1200)
        for i in range(1000):
            c.call("chance.claim", {"claim_id": "k-%d" % i, "category": cat,
                                    "user": {"id": "u%d" % (i % 50), "username": "n%d" % (i % 50)}})
    ch.kill(signal.SIGKILL)  # somewhere in the middle of publishing the backlog, or after
    ch.start()
    wait_relayed("after the restart", store, redis_client, 1001, timeout=120)
    wait_until("streams trimmed", lambda: redis_client.xlen("chance:{c%d}:events" % cat) == 0)
    assert store[1].events.count_documents({"type": "code.assigned"}) == 1000
    assert queue_depth(amqp_url, ch.keys["amqp_queue"] + ".dlq")[0] == 0
