"""The logger role against a real RabbitMQ and the MongoDB stand-in (through libmongoc):
the queue consumer, the dead-letter queue, log.append / log.query / log.stats, the queue
topology shared with NestJS clients, retention, health and metrics.

Every test starts its own `chanced --role=logger` with its own queue and database.
"""

import json
import subprocess
import time
from pathlib import Path

import pytest

from nest import NestClient
from loggerkit import (body, call, call_err, drain, event, http_get, metric, publish,
                                 query_all, queue_depth, store, wait_ready, wait_until)

ROOT = Path(__file__).resolve().parent.parent.parent
INTEROP = ROOT / "test" / "interop"
NEST_QUEUE_ARGS = '{"x-queue-type":"quorum","x-dead-letter-exchange":"%s.dlx"}'

__all__ = ["store"]  # the fixture, imported for pytest


def start_logger(chanced, store, **keys):
    lg = chanced("logger", mongo_url=store[0], **keys)
    wait_ready(lg)
    return lg


def stored_ids(db):
    return sorted(d["_id"] for d in db.events.find({}, {"_id": 1}))


# ---- the queue consumer -------------------------------------------------------------------

def test_queue_events_are_stored_once_and_queryable(chanced, store, amqp_url, amqp_queue):
    lg = start_logger(chanced, store)
    events = [event(i) for i in range(120)]
    # every event twice: redeliveries and duplicates are absorbed by _id
    publish(amqp_url, amqp_queue, [body(e) for e in events] + [body(e) for e in events[:40]])
    wait_until("120 stored events", lambda: store[1].events.count_documents({}) == 120)
    wait_until("queue drained", lambda: queue_depth(amqp_url, amqp_queue)[0] == 0)
    assert stored_ids(store[1]) == sorted(e["_id"] for e in events)
    hp = lg.addr("logger_health_listen")
    wait_until("160 acknowledged", lambda: (metric(hp, "chanced_logger_events_stored_total",
                                                   'source="amqp"') or 0) +
               (metric(hp, "chanced_logger_events_duplicate_total", 'source="amqp"') or 0) == 160)
    assert metric(hp, "chanced_logger_dead_lettered_total") == 0

    # the stored document is the event as sent (derived fields never show)
    items, pages = query_all(lg, {}, limit=25)
    assert pages == 5 and len(items) == 120
    assert items[0] == events[-1]  # newest first
    assert [i["_id"] for i in items] == [e["_id"] for e in reversed(events)]


def test_report_filters_and_pagination(chanced, store, amqp_url, amqp_queue):
    lg = start_logger(chanced, store)
    events = [event(i) for i in range(60)]
    # equal timestamps must still page without gaps or repeats (ties broken by _id)
    events += [event(i, prefix="tie", ts=1767225600000) for i in range(30)]
    events.append(event(999, prefix="other", service="gateway", type="login.failed", actor=None,
                        subject={"username": "eve"}, data={},
                        message="login failed for eve (bad password)"))
    publish(amqp_url, amqp_queue, [body(e) for e in events])
    wait_until("all stored", lambda: store[1].events.count_documents({}) == len(events))

    def ids(filters, limit=7):
        items, _ = query_all(lg, filters, limit=limit)
        got = [i["_id"] for i in items]
        assert len(got) == len(set(got)), "a page repeated an item"
        keys = [(i["ts"], i["_id"]) for i in items]
        assert keys == sorted(keys, reverse=True), "not ts desc, _id desc"
        return set(got)

    def expect(pred):
        return {e["_id"] for e in events if pred(e)}

    assert ids({}) == expect(lambda e: True)
    assert ids({"type": "code.assigned"}) == expect(lambda e: e["type"] == "code.assigned")
    assert ids({"service": "gateway"}) == {"other:999"}
    assert ids({"user": "user1"}) == expect(lambda e: e["actor"] and e["actor"]["username"] == "user1")
    assert ids({"user": "u2"}) == expect(lambda e: e["actor"] and e["actor"]["id"] == "u2")
    assert ids({"user": "eve"}) == {"other:999"}  # subject.username counts too
    assert ids({"category": 2}) == expect(lambda e: e["subject"].get("category") == 2)
    assert ids({"code": "abcdefghjk07"}) == expect(lambda e: e["subject"].get("code") == "ABCDEFGHJK07")
    assert ids({"q": "BAD PASSWORD"}) == {"other:999"}
    assert ids({"q": "(category 1,"}) == expect(lambda e: "(category 1," in e["message"])
    lo, hi = 1767225600000 + 10_000, 1767225600000 + 20_000
    assert ids({"from": lo, "to": hi}) == expect(lambda e: lo <= e["ts"] <= hi)
    assert ids({"from": lo, "to": hi, "user": "user0", "category": 1}) == expect(
        lambda e: lo <= e["ts"] <= hi and e["actor"] and e["actor"]["username"] == "user0"
        and e["subject"]["category"] == 1)
    assert ids({"type": "nothing.here"}) == set()
    r = call(lg, "log.query", {"limit": 1000})
    assert len(r["items"]) == len(events) and r["next_cursor"] is None


def test_malformed_messages_go_to_the_dead_letter_queue(chanced, store, amqp_url, amqp_queue):
    lg = start_logger(chanced, store, max_event_bytes=4096)
    bad = [
        "not json at all",
        json.dumps({"pattern": {"cmd": "something.else"}, "data": event(1)}),
        json.dumps({"pattern": {"cmd": "log.event"}, "data": dict(event(2), ts="yesterday")}),
        json.dumps({"pattern": {"cmd": "log.event"}, "data": {k: v for k, v in event(3).items()
                                                              if k != "_id"}}),
        json.dumps({"pattern": {"cmd": "log.event"}, "data": dict(event(4), data={"$where": 1})}),
        json.dumps({"pattern": {"cmd": "log.event"}, "data": event(5)}) + " trailing",
        body(event(6, message="x" * 5000)),  # over max_event_bytes
        b"\xff\xfe{}",
    ]
    good = [event(i, prefix="good") for i in range(3)]
    publish(amqp_url, amqp_queue, bad[:4] + [body(good[0])] + bad[4:] + [body(e) for e in good[1:]])
    wait_until("good events stored", lambda: store[1].events.count_documents({}) == 3)
    hp = lg.addr("logger_health_listen")
    wait_until("8 dead-lettered", lambda: metric(hp, "chanced_logger_dead_lettered_total") == 8)
    dead = drain(amqp_url, amqp_queue + ".dlq")
    assert len(dead) == 8
    got = sorted(b for _, b in dead)
    assert got == sorted(b.encode() if isinstance(b, str) else b for b in bad)
    for props, _ in dead:
        assert props.headers["x-death"][0]["reason"] == "rejected"
        assert props.headers["x-death"][0]["queue"] == amqp_queue
    assert stored_ids(store[1]) == sorted(e["_id"] for e in good)
    assert lg.log_text().count("message_dead_lettered") == 8
    assert queue_depth(amqp_url, amqp_queue) == (0, 1)  # and it keeps consuming
    publish(amqp_url, amqp_queue, [body(event(7, prefix="after"))])
    wait_until("a later event stored", lambda: store[1].events.count_documents({}) == 4)


def test_valid_events_are_never_dead_lettered_however_often_returned(chanced, store, amqp_url,
                                                                      amqp_queue):
    """Issue 9, defect 3: the queue once had x-delivery-limit 5, and on RabbitMQ 3.10 every
    return of an unacknowledged message (a consumer's connection dying) counts toward it, so a
    logger that crashed a few times with a backlog sent valid events to the dead-letter queue,
    which nothing reads. Now the queue has no delivery limit: an event returned 12 times is still
    stored once a logger runs; only what the logger itself rejects (poison) is dead-lettered, and
    the dead-letter queue is a quorum queue too."""
    import pika
    lg = start_logger(chanced, store)
    lg.stop()
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    # the declared arguments: the same are accepted (RabbitMQ compares them); others: 406
    ch.queue_declare(amqp_queue, durable=True, arguments={
        "x-queue-type": "quorum", "x-dead-letter-exchange": amqp_queue + ".dlx"})
    ch.queue_declare(amqp_queue + ".dlq", durable=True, arguments={"x-queue-type": "quorum"})
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(amqp_queue, durable=True, arguments={"x-queue-type": "quorum"})
    assert e.value.reply_code == 406
    ch = conn.channel()
    valid = event(1, prefix="returned")
    ch.basic_publish("", amqp_queue, json.dumps({"pattern": {"cmd": "log.event"},
                                                 "data": valid}).encode(),
                     pika.BasicProperties(delivery_mode=2))
    returns = 0
    for _ in range(12):  # each return is what a consumer dying with the message does
        method = None
        for _ in range(25):
            method, _, _ = ch.basic_get(amqp_queue)
            if method is not None:
                break
            time.sleep(0.1)
        assert method is not None, "the event left the queue after %d returns" % returns
        ch.basic_nack(method.delivery_tag, requeue=True)
        returns += 1
    conn.close()
    assert drain(amqp_url, amqp_queue + ".dlq") == []
    start_logger(chanced, store)
    wait_until("the returned event stored",
               lambda: store[1].events.count_documents({"_id": valid["_id"]}) == 1)
    publish(amqp_url, amqp_queue, [b"poison"])
    dead = []
    for _ in range(50):
        dead = drain(amqp_url, amqp_queue + ".dlq")
        if dead:
            break
        time.sleep(0.1)
    assert [b for _, b in dead] == [b"poison"]
    assert dead[0][0].headers["x-death"][0]["reason"] == "rejected"


def test_nestjs_rmq_emit_is_stored(chanced, store, amqp_url, amqp_queue):
    lg = start_logger(chanced, store)
    e1 = event(1, prefix="nest", service="nest", type="user.signed_up",
               subject={"user_id": "7", "username": "zoe"}, data={},
               message="user zoe signed up \U0001F389 \u0633\u0644\u0627\u0645")
    e2 = event(2, prefix="nest", service="nest", type="user.signed_up", actor=None,
               subject={}, data={"note": "transient, no queue assert"}, message="second")
    runs = [
        ["--data", json.dumps(e1), "--queue-args", NEST_QUEUE_ARGS % amqp_queue, "--persistent"],
        ["--data", json.dumps(e2), "--no-assert"],
    ]
    for extra in runs:
        p = subprocess.run(["node", str(INTEROP / "rmq_emit.js"), "--url", amqp_url, "--queue",
                            amqp_queue, "--pattern", '{"cmd":"log.event"}'] + extra,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and json.loads(p.stdout.splitlines()[-1])["ok"], p.stdout + p.stderr
    wait_until("both NestJS events stored", lambda: store[1].events.count_documents({}) == 2)
    items = call(lg, "log.query", {"service": "nest"})["items"]
    assert items == [e2, e1]


def test_nestjs_tcp_client_runs_log_query(chanced, store):
    lg = start_logger(chanced, store)
    call(lg, "log.append", {"events": [event(i, prefix="gw") for i in range(3)]})
    p = subprocess.run(["node", str(INTEROP / "nest_client.js"), "call", "--port", str(lg.port),
                        "--cmd", "log.query", "--data", '{"limit":2,"type":"code.assigned"}'],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout.splitlines()[-1])
    assert out["ok"] and [i["_id"] for i in out["response"]["items"]] == ["gw:2", "gw:1"]
    assert out["response"]["next_cursor"]
    p = subprocess.run(["node", str(INTEROP / "nest_client.js"), "call", "--port", str(lg.port),
                        "--cmd", "log.query", "--data", '{"limit":0}'],
                       capture_output=True, text=True, timeout=60)
    out = json.loads(p.stdout.splitlines()[-1])
    assert out["ok"] is False and out["err"]["code"] == "bad_request"


# ---- log.append, log.query, log.stats -----------------------------------------------------

def test_log_append_is_idempotent_and_all_or_nothing(chanced, store):
    lg = start_logger(chanced, store)
    evs = [event(i, prefix="gw", service="gateway", type="login.succeeded") for i in range(5)]
    assert call(lg, "log.append", {"events": evs}) == {"stored": 5, "duplicates": 0,
                                                       "conflicts": []}
    assert call(lg, "log.append", {"events": evs[3:] + [event(9, prefix="gw")]}) == \
        {"stored": 1, "duplicates": 2, "conflicts": []}
    assert store[1].events.count_documents({}) == 6
    # one bad event: the whole request is refused and nothing of it stored
    err = call_err(lg, "log.append", {"events": [event(20, prefix="gw"),
                                                 dict(event(21, prefix="gw"), ts=-5)]})
    assert err["code"] == "bad_request" and err["message"].startswith("events[1]: field 'ts'")
    assert store[1].events.count_documents({"_id": "gw:20"}) == 0
    for data, needle in [
        ({}, "field 'events'"),
        ({"events": []}, "field 'events'"),
        ({"events": [event(1)] * 501}, "field 'events'"),
        ({"events": [event(1)], "extra": 1}, "unknown field 'extra'"),
        ({"events": [dict(event(1), surprise=1)]}, "unknown field 'surprise'"),
        ({"events": [dict(event(1), actor={"id": "1", "username": "x"})]}, "actor.role"),
        ({"events": [dict(event(1), subject={"category": "seven"})]}, "subject.category"),
        ({"events": [dict(event(1), data={"a.b": 1})]}, "a.b"),
        ({"events": [dict(event(1), data={"reward": 1.5})]}, "data.reward"),
        ({"events": [dict(event(1), _id="x" * 201)]}, "_id"),
        ({"events": [{k: v for k, v in event(1).items() if k != "message"}]}, "message"),
    ]:
        err = call_err(lg, "log.append", data)
        assert err["code"] == "bad_request" and needle in err["message"], (data, err)
    assert store[1].events.count_documents({}) == 6


def test_log_append_ids_are_the_gateways_and_collisions_are_reported(chanced, store, amqp_url,
                                                                     amqp_queue):
    """log.append takes only ids in the gateways' namespace (gw:...), and the queue takes none
    of them, so neither can pre-insert the other's ids; an id already held by an event with
    different content is a conflict, reported to the caller, never a silent duplicate."""
    lg = start_logger(chanced, store)
    err = call_err(lg, "log.append", {"events": [event(1, prefix="gw"), event(2, prefix="ev")]})
    assert err["code"] == "bad_request" and "events[1]" in err["message"] and "gw:" in \
        err["message"], err
    assert store[1].events.count_documents({}) == 0
    real = event(7, prefix="gw")
    forged = dict(real, message="a forged event, pre-inserted")
    assert call(lg, "log.append", {"events": [forged]})["stored"] == 1
    r = call(lg, "log.append", {"events": [real, event(8, prefix="gw")]})
    assert r == {"stored": 1, "duplicates": 0, "conflicts": ["gw:7"]}, r
    # the same content again is a plain duplicate
    assert call(lg, "log.append", {"events": [forged]}) == {"stored": 0, "duplicates": 1,
                                                             "conflicts": []}
    hp = lg.addr("logger_health_listen")
    assert metric(hp, "chanced_logger_events_conflict_total", 'source="rpc"') == 1
    # a queue publisher cannot take a gateway id: dead-lettered, not stored
    publish(amqp_url, amqp_queue, [body(event(9, prefix="gw"))])
    wait_until("dead-lettered", lambda: (metric(hp, "chanced_logger_dead_lettered_total") or 0)
               >= 1)
    assert store[1].events.count_documents({"_id": "gw:9"}) == 0


# ---- log.events: several events in one queue message ----------------------------------------

def batch_body(events, pattern=None):
    """A log.events message: the relay's batch form (docs/protocol.md)."""
    return json.dumps({"pattern": pattern or {"cmd": "log.events"}, "data": {"events": events}},
                      ensure_ascii=False)


def dead_reasons(lg):
    return [line for line in lg.log_text().splitlines() if "message_dead_lettered" in line]


def test_batch_messages_are_stored_once(chanced, store, amqp_url, amqp_queue):
    lg = start_logger(chanced, store)
    hp = lg.addr("logger_health_listen")
    events = [event(i, prefix="batch") for i in range(3)]
    publish(amqp_url, amqp_queue, [batch_body(events)])
    wait_until("3 stored", lambda: store[1].events.count_documents({}) == 3)
    wait_until("queue drained", lambda: queue_depth(amqp_url, amqp_queue)[0] == 0)
    assert stored_ids(store[1]) == sorted(e["_id"] for e in events)
    items, _ = query_all(lg, {}, limit=10)
    assert items == list(reversed(events))  # stored as sent
    # the same message again (a redelivery, a DLQ replay): each event is a duplicate
    publish(amqp_url, amqp_queue, [batch_body(events)])
    wait_until("3 duplicates", lambda: metric(hp, "chanced_logger_events_duplicate_total",
                                              'source="amqp"') == 3)
    assert store[1].events.count_documents({}) == 3
    # NestJS's string pattern form, as for log.event
    more = [event(i, prefix="str") for i in range(2)]
    publish(amqp_url, amqp_queue, [batch_body(more, pattern=json.dumps({"cmd": "log.events"}))])
    wait_until("5 stored", lambda: store[1].events.count_documents({}) == 5)
    wait_until("queue drained", lambda: queue_depth(amqp_url, amqp_queue)[0] == 0)
    assert metric(hp, "chanced_logger_events_stored_total", 'source="amqp"') == 5
    assert metric(hp, "chanced_logger_messages_received_total") == 3
    assert metric(hp, "chanced_logger_events_received_total") == 8
    assert metric(hp, "chanced_logger_dead_lettered_total") == 0
    assert drain(amqp_url, amqp_queue + ".dlq") == []


def test_batch_with_bad_events_stores_the_rest_and_is_dead_lettered(chanced, store, amqp_url,
                                                                    amqp_queue):
    """An invalid event, or one in the gateways' namespace, costs its neighbours nothing: they
    are stored, and the message goes to the dead-letter queue with the first bad event named."""
    lg = start_logger(chanced, store)
    hp = lg.addr("logger_health_listen")
    invalid = {k: v for k, v in event(1, prefix="a").items() if k != "type"}
    a = [event(0, prefix="a"), invalid, event(2, prefix="a"), dict(event(3, prefix="a"), ts="x")]
    b = [event(0, prefix="b"), event(1, prefix="b"), event(2, prefix="gw")]
    bodies = [batch_body(a), batch_body(b)]
    publish(amqp_url, amqp_queue, bodies)
    wait_until("2 dead-lettered", lambda: metric(hp, "chanced_logger_dead_lettered_total") == 2)
    wait_until("queue drained", lambda: queue_depth(amqp_url, amqp_queue)[0] == 0)
    assert stored_ids(store[1]) == ["a:0", "a:2", "b:0", "b:1"]
    dead = drain(amqp_url, amqp_queue + ".dlq")
    assert sorted(body for _, body in dead) == sorted(x.encode() for x in bodies)
    reasons = dead_reasons(lg)
    assert len(reasons) == 2, reasons
    assert any("events[1]: field 'type'" in r for r in reasons), reasons
    assert any("events[2]: field '_id'" in r and "gw:" in r for r in reasons), reasons
    assert metric(hp, "chanced_logger_events_stored_total", 'source="amqp"') == 4
    # replaying the dead letters later stores nothing twice
    publish(amqp_url, amqp_queue, [body for _, body in dead])
    wait_until("dead-lettered again", lambda: metric(hp, "chanced_logger_dead_lettered_total")
               == 4)
    assert metric(hp, "chanced_logger_events_duplicate_total", 'source="amqp"') == 4
    assert store[1].events.count_documents({}) == 4


def test_batch_shapes_that_are_refused_whole(chanced, store, amqp_url, amqp_queue):
    lg = start_logger(chanced, store, max_event_bytes=262144)
    hp = lg.addr("logger_health_listen")
    small = [{"_id": "big:%d" % i, "ts": 0, "service": "s", "type": "t", "message": "m"}
             for i in range(1001)]
    wrap = lambda data: json.dumps({"pattern": {"cmd": "log.events"}, "data": data})  # noqa: E731
    bad = [
        (wrap([event(0)]), "'data' must be an object"),               # data not an object
        (wrap({}), "'data' must be an object"),                       # no events
        (wrap({"events": [event(0)], "more": 1}), "'data' must be an object"),
        (wrap({"events": []}), "1 to 1000 events"),                   # empty
        (wrap({"events": event(0)}), "1 to 1000 events"),             # not an array
        (wrap({"events": small}), "1 to 1000 events"),                # 1001
        (json.dumps({"pattern": {"cmd": "log.events"}}), "no data"),
        (wrap({"events": [event(0), {"_id": "x"}][1:]}), "events[0]"),  # none valid
    ]
    publish(amqp_url, amqp_queue, [b for b, _ in bad])
    wait_until("all dead-lettered", lambda: metric(hp, "chanced_logger_dead_lettered_total")
               == len(bad))
    assert store[1].events.count_documents({}) == 0
    reasons = dead_reasons(lg)
    for (_, why), line in zip(bad, reasons):
        assert why in line, (why, line)
    assert len(drain(amqp_url, amqp_queue + ".dlq")) == len(bad)
    # exactly 1000 is fine
    publish(amqp_url, amqp_queue, [wrap({"events": small[:1000]})])
    wait_until("1000 stored", lambda: store[1].events.count_documents({}) == 1000)
    assert metric(hp, "chanced_logger_dead_lettered_total") == len(bad)


def test_batch_with_a_conflicting_event_is_dead_lettered_after_the_rest(chanced, store, amqp_url,
                                                                        amqp_queue):
    lg = start_logger(chanced, store)
    hp = lg.addr("logger_health_listen")
    held = event(5, prefix="c")
    publish(amqp_url, amqp_queue, [body(held)])
    wait_until("held stored", lambda: store[1].events.count_documents({}) == 1)
    other = dict(held, message="different content, same _id")
    batch = batch_body([event(4, prefix="c"), other, event(6, prefix="c")])
    publish(amqp_url, amqp_queue, [batch])
    wait_until("dead-lettered", lambda: metric(hp, "chanced_logger_dead_lettered_total") == 1)
    wait_until("queue drained", lambda: queue_depth(amqp_url, amqp_queue)[0] == 0)
    assert stored_ids(store[1]) == ["c:4", "c:5", "c:6"]
    assert store[1].events.find_one({"_id": "c:5"})["message"] == held["message"]
    dead = drain(amqp_url, amqp_queue + ".dlq")
    assert [b for _, b in dead] == [batch.encode()]
    reasons = dead_reasons(lg)
    assert len(reasons) == 1 and "events[1]: another event" in reasons[0], reasons


def test_a_large_round_is_stored_exactly_as_one_insert_would_store_it(chanced, store, amqp_url,
                                                                      amqp_queue):
    """A round of hundreds of events is written as concurrent parts (store_workers of them):
    duplicates and a conflict anywhere in it come out as they would from one insert. The
    second message's 1000 events span every part: its first 200 are stored already
    (duplicates), event 990 is held by a different event (the conflict: the message is
    dead-lettered after the rest are stored)."""
    lg = start_logger(chanced, store, store_workers=4, insert_batch=1000, max_event_bytes=1048576)
    hp = lg.addr("logger_health_listen")
    held = event(990, prefix="big", message="stored first, under the same _id")
    publish(amqp_url, amqp_queue, [batch_body([event(i, prefix="big") for i in range(200)] +
                                              [held])])
    wait_until("201 stored", lambda: store[1].events.count_documents({}) == 201)
    batch = batch_body([event(i, prefix="big") for i in range(1000)])
    publish(amqp_url, amqp_queue, [batch])
    wait_until("dead-lettered", lambda: metric(hp, "chanced_logger_dead_lettered_total") == 1)
    wait_until("queue drained", lambda: queue_depth(amqp_url, amqp_queue)[0] == 0)
    assert stored_ids(store[1]) == sorted("big:%d" % i for i in range(1000))
    assert store[1].events.find_one({"_id": "big:990"})["message"] == held["message"]
    assert metric(hp, "chanced_logger_events_stored_total", 'source="amqp"') == 201 + 799
    assert metric(hp, "chanced_logger_events_duplicate_total", 'source="amqp"') == 200
    reasons = dead_reasons(lg)
    assert len(reasons) == 1 and "events[990]: another event" in reasons[0], reasons
    assert [b for _, b in drain(amqp_url, amqp_queue + ".dlq")] == [batch.encode()]


def test_a_round_holds_at_most_insert_batch_events(chanced, store, amqp_url, amqp_queue):
    """insert_batch bounds the events of one insert as well as the deliveries; a message is
    taken whole. With the queue full before the logger starts, 4 batches of 10 events and
    insert_batch=10 are 4 round trips (not one of 40 events)."""
    lg = start_logger(chanced, store)
    lg.stop()
    publish(amqp_url, amqp_queue,
            [batch_body([event(10 * m + i, prefix="r") for i in range(10)]) for m in range(4)])
    lg = start_logger(chanced, store, insert_batch=10, amqp_prefetch=100)
    hp = lg.addr("logger_health_listen")
    wait_until("40 stored", lambda: store[1].events.count_documents({}) == 40)
    wait_until("4 batches", lambda: metric(hp, "chanced_logger_insert_batches_total") == 4)
    assert metric(hp, "chanced_logger_events_received_total") == 40


def _last_write_concern(db):
    if "standin" not in db.client.admin.command("buildInfo"):
        pytest.skip("needs the stand-in's record of write concerns")
    return db.command({"standinWriteConcern": "events"})["writeConcern"]


def test_writes_are_majority_and_journaled_unless_the_url_says(chanced, store):
    """An acknowledged event survives a failover: w=majority, j=true by default; a w in the URL
    is kept (journaling stays on)."""
    lg = start_logger(chanced, store)
    assert call(lg, "log.append", {"events": [event(1, prefix="gw")]})["stored"] == 1
    wc = _last_write_concern(store[1])
    assert wc["w"] == "majority" and wc["j"] is True, wc
    lg.stop()
    sep = "&" if "?" in store[0] else "?"
    lg = start_logger(chanced, (store[0] + sep + "w=1", store[1]))
    assert call(lg, "log.append", {"events": [event(2, prefix="gw")]})["stored"] == 1
    wc = _last_write_concern(store[1])
    assert wc["w"] == 1 and wc["j"] is True, wc


def test_bad_report_queries_get_clear_errors(chanced, store):
    lg = start_logger(chanced, store)
    call(lg, "log.append", {"events": [event(i, prefix="gw") for i in range(5)]})
    page = call(lg, "log.query", {"limit": 2})
    cur = page["next_cursor"]
    assert cur
    tampered = cur[:-1] + ("0" if cur[-1] != "0" else "1")
    cases = [
        ({"from": 2000, "to": 1000}, "inverted time range"),
        ({"limit": 0}, "'limit' must be an integer from 1 to 1000"),
        ({"limit": 10 ** 9}, "'limit' must be an integer from 1 to 1000"),
        ({"limit": 2.5}, "'limit'"),
        ({"cursor": "not-a-cursor"}, "'cursor' is not a cursor this query returned"),
        ({"cursor": tampered, "limit": 2}, "'cursor' is not a cursor this query returned"),
        ({"cursor": cur, "type": "other"}, "'cursor' is not a cursor this query returned"),
        ({"colour": "red"}, "unknown field 'colour'"),
        ({"category": 0}, "'category'"),
        ({"from": "yesterday"}, "'from'"),
        ({"q": "x" * 101}, "'q'"),
        ({"user": ["a"]}, "'user'"),
    ]
    for data, needle in cases:
        err = call_err(lg, "log.query", data)
        assert err["code"] == "bad_request" and needle in err["message"], (data, err)
    stats_cases = [
        ({"from": 0}, "'to' is required"),
        ({"from": 10, "to": 5}, "inverted time range"),
        ({"from": 0, "to": 1, "bucket": "week"}, "'bucket'"),
        ({"from": 0, "to": 10 ** 12, "bucket": "hour"}, "narrow it"),
        ({"from": 0, "to": 1, "group": "type"}, "unknown field 'group'"),
    ]
    for data, needle in stats_cases:
        err = call_err(lg, "log.stats", data)
        assert err["code"] == "bad_request" and needle in err["message"], (data, err)
    # the untouched cursor still works after all that
    assert len(call(lg, "log.query", {"limit": 2, "cursor": cur})["items"]) == 2


def test_log_stats_counts_per_bucket_and_type(chanced, store):
    lg = start_logger(chanced, store)
    day = 86_400_000
    t0 = 1767225600000  # 2026-01-01T00:00:00Z
    evs = [event(i, prefix="gw:a", ts=t0 + 3600_000 * (i % 3), data={"reward": 10})
           for i in range(9)]
    evs += [event(i, prefix="gw:b", ts=t0 + day + 5, type="login.failed", data={})
            for i in range(4)]
    call(lg, "log.append", {"events": evs})
    r = call(lg, "log.stats", {"from": t0, "to": t0 + 2 * day, "bucket": "day"})
    assert r == {"buckets": [
        {"start": t0, "type": "code.assigned", "count": 9, "reward": 90},
        {"start": t0 + day, "type": "login.failed", "count": 4, "reward": 0}]}
    r = call(lg, "log.stats", {"from": t0, "to": t0 + day - 1, "bucket": "hour",
                               "type": "code.assigned"})
    assert r == {"buckets": [{"start": t0 + h * 3600_000, "type": "code.assigned", "count": 3,
                              "reward": 30} for h in range(3)]}


# ---- operations ---------------------------------------------------------------------------

def test_health_metrics_and_graceful_stop(chanced, store, amqp_url, amqp_queue):
    lg = start_logger(chanced, store)
    hp = lg.addr("logger_health_listen")
    assert http_get(hp, "/livez")[0] == 200
    status, text = http_get(hp, "/readyz")
    assert status == 200
    publish(amqp_url, amqp_queue, [body(event(1))])
    wait_until("stored", lambda: metric(hp, "chanced_logger_events_stored_total",
                                        'source="amqp"') == 1)
    assert metric(hp, "chanced_dependency_up", 'role="logger",dependency="mongodb"') == 1
    assert metric(hp, "chanced_dependency_up", 'role="logger",dependency="rabbitmq"') == 1
    call(lg, "log.query", {})
    assert metric(hp, "chanced_rpc_requests_total",
                  'role="logger",cmd="log.query",outcome="ok"') == 1
    assert lg.stop() == 0
    assert "logger_drained" in lg.log_text()


def test_retention_days_sets_and_removes_the_ttl_index(chanced, store):
    def ttl():
        ix = {i["name"]: i for i in store[1].events.list_indexes()}
        return ix.get("_at_ttl", {}).get("expireAfterSeconds")

    lg = start_logger(chanced, store, retention_days=7)
    names = {i["name"] for i in store[1].events.list_indexes()}
    assert {"ts_id", "type_ts", "users_ts", "cats_ts", "code_ts", "_at_ttl"} <= names
    assert ttl() == 7 * 86400
    lg.stop()
    lg = start_logger(chanced, store, retention_days=30)
    assert ttl() == 30 * 86400
    lg.stop()
    start_logger(chanced, store, retention_days=0)
    assert ttl() is None


def test_bad_config_exits_78(chanced, store):
    for key, value in [("mongo_url", "http://nope"), ("amqp_prefetch", "0"),
                       ("amqp_prefetch", "100"), ("insert_batch", "0"),
                       ("retention_days", "-1")]:
        d = chanced("logger", wait=False, **dict({"mongo_url": store[0]}, **{key: value}))
        assert d.wait_exit() == 78, (key, d.log_tail())
