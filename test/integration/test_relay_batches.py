"""The chance relay packs the audit events it has in hand into log.events messages.

One AMQP message per event cost RabbitMQ about as much CPU per claim as Redis (make bench): a
publish, a route, a delivery, an ack and a confirm each. Events read together (from one or several
streams) now go in one message of up to 100 events and 48 KiB, each stream's in order; a single event goes as a
plain log.event, and an entry that is no event goes alone (the logger dead-letters it without
taking valid events along). Entries are acknowledged in Redis only once their message is
confirmed.
"""

import json
import time

from loggerkit import wait_until

GLOBAL_STREAM = "chance:{g}:events"


def declare(amqp_channel, queue):
    """The queue as chanced declares it, so the test can read it before chance is up."""
    amqp_channel.queue_declare(queue, durable=True, arguments={
        "x-queue-type": "quorum", "x-dead-letter-exchange": queue + ".dlx"})


def event(i, pad=0):
    return {"_id": "test.event:%06d" % i, "ts": 1767225600000 + i, "service": "chance",
            "type": "test.event", "actor": None, "subject": {"n": i}, "data": {},
            "message": "event %d%s" % (i, "x" * pad)}


def drain(amqp_channel, queue, want_events, timeout=30):
    """Every message of the queue until want_events events came: [(message_id, body)]."""
    got, n = [], 0
    deadline = time.time() + timeout
    while n < want_events:
        assert time.time() < deadline, "%d of %d events arrived" % (n, want_events)
        method, props, body = amqp_channel.basic_get(queue, auto_ack=True)
        if method is None:
            time.sleep(0.05)
            continue
        msg = json.loads(body)
        got.append((props.message_id, msg, len(body)))
        n += len(msg["data"]["events"]) if msg["pattern"] == {"cmd": "log.events"} else 1
    return got


def test_events_in_hand_go_in_few_messages_in_stream_order(chanced, redis_client, amqp_channel,
                                                           amqp_queue):
    # Written before any relay runs: the relay reads them from the start of the stream at once.
    sent = [event(i) for i in range(250)]
    big = [event(1000 + i, pad=3000) for i in range(40)]  # 40 x ~3 KiB: the byte bound splits
    for e in sent + big:
        redis_client.xadd(GLOBAL_STREAM, {"e": json.dumps(e)})
    declare(amqp_channel, amqp_queue)
    chanced("chance")  # real broker, this test's queue
    got = drain(amqp_channel, amqp_queue, len(sent) + len(big))

    ids = []
    for message_id, msg, size in got:
        if msg["pattern"] == {"cmd": "log.events"}:
            evs = msg["data"]["events"]
            assert set(msg["data"]) == {"events"} and 2 <= len(evs) <= 100, len(evs)
            assert size <= 48 * 1024, size
            assert message_id == "%s+%d" % (evs[0]["_id"], len(evs) - 1)
        else:
            assert msg["pattern"] == {"cmd": "log.event"}
            evs = [msg["data"]]
            assert message_id == evs[0]["_id"]
        ids += [e["_id"] for e in evs]
    assert ids == [e["_id"] for e in sent + big]  # each once, in stream order
    assert len(got) <= 3 + 4 + 1, [len(m["data"].get("events", [1])) for _, m, _ in got]
    # Confirmed, so acknowledged and deleted from the stream.
    wait_until("the stream emptied", lambda: redis_client.xlen(GLOBAL_STREAM) == 0)


def test_an_entry_that_is_no_event_goes_alone(chanced, redis_client, amqp_channel, amqp_queue):
    before = [event(i) for i in range(5)]
    after = [event(10 + i) for i in range(5)]
    for e in before:
        redis_client.xadd(GLOBAL_STREAM, {"e": json.dumps(e)})
    redis_client.xadd(GLOBAL_STREAM, {"e": "[1, 2]"})  # JSON, but no event object
    for e in after:
        redis_client.xadd(GLOBAL_STREAM, {"e": json.dumps(e)})
    # an object with bytes after it: spliced into a batch it would spoil the whole message
    redis_client.xadd(GLOBAL_STREAM, {"e": json.dumps(event(99)) + " trailing"})
    last = [event(20 + i) for i in range(3)]
    for e in last:
        redis_client.xadd(GLOBAL_STREAM, {"e": json.dumps(e)})
    declare(amqp_channel, amqp_queue)
    chanced("chance")
    got = []
    deadline = time.time() + 30
    while len(got) < 5:
        assert time.time() < deadline, got
        method, props, body = amqp_channel.basic_get(amqp_queue, auto_ack=True)
        if method is None:
            time.sleep(0.05)
            continue
        got.append(body.decode())
    first = json.loads(got[0])
    assert first["pattern"] == {"cmd": "log.events"}
    assert [e["_id"] for e in first["data"]["events"]] == [e["_id"] for e in before]
    assert json.loads(got[1]) == {"pattern": {"cmd": "log.event"}, "data": [1, 2]}
    assert [e["_id"] for e in json.loads(got[2])["data"]["events"]] == [e["_id"] for e in after]
    assert got[3].startswith('{"pattern":{"cmd":"log.event"},"data":{') and \
        got[3].endswith(" trailing}")  # alone: the logger dead-letters it, no other with it
    assert [e["_id"] for e in json.loads(got[4])["data"]["events"]] == [e["_id"] for e in last]
    wait_until("the stream emptied", lambda: redis_client.xlen(GLOBAL_STREAM) == 0)


def test_the_events_of_several_streams_share_messages(chanced, redis_client, amqp_channel,
                                                      amqp_queue):
    """Under load the relay reads a few events from each category's stream at a time: packing
    only within a stream would leave one message per event or two. The events of one read, of
    every stream in it, go in the same messages (each stream's in its order), and each stream's
    entries are acknowledged in that stream."""
    from chancekit import generate_ready
    from nest import NestClient
    down = chanced("chance", amqp_url="amqp://guest:guest@127.0.0.1:1/")
    with NestClient(*down.hostport()) as c:
        cats = generate_ready(c, {"categories": 3, "codes_per_category": 5, "reward_min": 1000,
                                  "reward_max": 2000, "actor": {"id": 1, "username": "alice",
                                                                "role": "admin"}})["categories"]
    down.stop()
    streams = [GLOBAL_STREAM] + ["chance:{c%d}:events" % cat for cat in cats]
    for k, key in enumerate(streams[1:]):
        for i in range(4):
            redis_client.xadd(key, {"e": json.dumps(event(100 * (k + 1) + i))})
    want = {key: [json.loads(f["e"])["_id"] for _, f in redis_client.xrange(key)]
            for key in streams}
    n = sum(len(v) for v in want.values())
    assert n >= 13
    declare(amqp_channel, amqp_queue)
    chanced("chance", relay_claim_idle_ms=1000)  # takes over what the first one read, if any
    got = drain(amqp_channel, amqp_queue, n)
    ids = [e["_id"] for _, m, _ in got
           for e in (m["data"]["events"] if m["pattern"] == {"cmd": "log.events"} else [m["data"]])]
    assert sorted(ids) == sorted(i for v in want.values() for i in v)  # each once
    for key, order in want.items():  # each stream's events in its order
        assert [i for i in ids if i in order] == order
    # The global stream is read on its own at start; the three categories' streams together.
    cat_ids = {i for key in streams[1:] for i in want[key]}
    assert any({e["_id"] for e in m["data"].get("events", [])} == cat_ids for _, m, _ in got), \
        [len(m["data"].get("events", [1])) for _, m, _ in got]
    for key in streams:
        wait_until("%s emptied" % key, lambda: redis_client.xlen(key) == 0)
