"""The seven invariants of the proof suite (issue 9), checked on a quiet system.

Each check takes the State (read once, after the fault healed and the system went quiet) and
yields every counter-example as text (nothing when the invariant holds).  They are checked
over the whole history of the run, not only the last phase: an earlier fault's damage found
later is still damage.

  1 money      Σ wallet balances == Σ ledger amounts; no balance below zero (also sampled during
               load, see money_sample)
  2 codes      no code credited twice or owned by two claims; Redis's assigned codes are exactly
               the ledger's codes, each assigned to the ledger's claim and user
  3 claims     every claim a client saw succeed is credited once, with the code it was told;
               every unknown one at most once; no claim refused for good is credited; nothing
               is pending any more
  4 limits     no user holds more codes of a category than its per_user_limit
  5 audit      one claim.credited per credited claim, one claim.failed per failed one, one
               code.assigned per ledger row (where Redis lost it, the code.repaired that
               restored it); none for claims that did not end that way; the
               dead-letter queue is empty; no outbox row was refused
  6 replays    every final answer to one Idempotency-Key is the same answer
  7 resources  each daemon's RSS and open descriptors are back near their baseline
"""

import collections
import json

NAMES = {1: "money", 2: "codes", 3: "claims", 4: "limits", 5: "audit", 6: "replays",
         7: "resources"}


def pg(url, sql, args=None):
    import psycopg2
    conn = psycopg2.connect(url, connect_timeout=10)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


MONEY_SQL = ("SELECT (SELECT coalesce(sum(balance), 0) FROM wallets),"
             " (SELECT coalesce(sum(amount), 0) FROM ledger),"
             " (SELECT min(balance) FROM wallets)")


def money_sample(postgres_url):
    """Invariant 1 in one statement (one snapshot), for the sampler during load."""
    wallets, ledger, low = pg(postgres_url, MONEY_SQL)[0]
    if wallets != ledger:
        return "Σ balances %d != Σ ledger %d" % (wallets, ledger)
    if low is not None and low < 0:
        return "a balance of %d" % low
    return None


def redis_codes(r):
    """{code: record} of every code in Redis (see gwclient.redis_codes), values as stored."""
    out = {}
    for key in r.scan_iter(match="chance:{c*}:codes", count=1000):
        category = int(key.split("{c", 1)[1].split("}", 1)[0])
        for code, record in r.hgetall(key).items():
            rec = json.loads(record)
            rec["category"] = category
            out[code] = rec
    return out


class State:
    """Everything the checks look at, read once."""

    def __init__(self, cluster, recorder, limits):
        url = cluster.postgres_url
        self.limits = limits  # {category: per_user_limit}
        self.ops = list(recorder.ops)
        self.money = pg(url, MONEY_SQL)[0]
        self.ledger = pg(url, "SELECT user_id, claim_id, code, category, amount FROM ledger")
        self.claims = {r[0]: r[1:] for r in pg(
            url, "SELECT claim_id, user_id, category, status, code, error FROM claims")}
        self.outbox = pg(url, "SELECT count(*) FILTER (WHERE delivered_at IS NULL AND rejected"
                         " IS NULL), count(*) FILTER (WHERE rejected IS NOT NULL) FROM outbox")[0]
        self.codes = redis_codes(cluster.redis_client())
        import pymongo
        client = pymongo.MongoClient(cluster.mongo_url)
        self.events = list(client.get_default_database()["events"].find(
            {}, {"_id": 1, "type": 1, "subject": 1, "data": 1}))
        client.close()
        self.claim_secret = pg(url, "SELECT value FROM gateway_meta"
                               " WHERE key = 'claim_secret'")[0][0]
        self.op_claims = None  # claim id -> ops, built when a counter-example needs it
        self.dlq = queue_depth(cluster.amqp_url, cluster.queue + ".dlq")


def queue_depth(amqp_url, queue):
    import pika
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        return conn.channel().queue_declare(queue=queue, passive=True).method.message_count
    finally:
        conn.close()


def check_money(s):
    wallets, ledger, low = s.money
    if wallets != ledger:
        yield "Σ balances %d != Σ ledger amounts %d" % (wallets, ledger)
    if low is not None and low < 0:
        yield "a wallet balance of %d" % low


def check_codes(s):
    seen_code, seen_claim = {}, {}
    for uid, claim, code, cat, amount in s.ledger:
        if code in seen_code:
            yield "code %s credited to claims %s and %s" % (code, seen_code[code], claim)
        if claim in seen_claim:
            yield "claim %s credited twice (%s, %s)" % (claim[:12], seen_claim[claim], code)
        seen_code[code], seen_claim[claim] = claim, code
        rec = s.codes.get(code)
        if rec is None:
            yield "ledger code %s is not in Redis" % code
            continue
        if rec.get("s") != "assigned" or rec.get("c") != claim or str(rec.get("u")) != str(uid):
            yield "ledger code %s is claim %s of user %s; Redis says %s" % (
                code, claim[:12], uid, {k: rec.get(k) for k in ("s", "c", "u")})
    for code, rec in s.codes.items():
        if rec.get("s") == "assigned" and code not in seen_code:
            yield "Redis holds code %s as assigned to claim %s, the ledger does not" % (
                code, str(rec.get("c"))[:12])


def check_claims(s):
    credited = {claim: code for _u, claim, code, _c, _a in s.ledger}
    by_key = collections.defaultdict(list)
    for op in s.ops:
        if op.key is not None:
            by_key[(op.user, op.key)].append(op)
        elif op.outcome == "ok" and credited.get(op.claim_id) != op.code:
            yield "keyless claim %s answered 201 with %s, ledger has %s" % (
                op.claim_id, op.code, credited.get(op.claim_id))
    for (user, key), ops in by_key.items():
        oks = [o for o in ops if o.outcome == "ok"]
        for o in oks:
            if credited.get(o.claim_id) != o.code:
                yield "%r answered 201 with code %s, ledger has %s" % (
                    o, o.code, credited.get(o.claim_id))
    pending = [c for c, row in s.claims.items() if row[2] == "pending"]
    if pending:
        yield "%d claims still pending, e.g. %s" % (len(pending), pending[0][:12])
    for claim, row in s.claims.items():
        if row[2] == "credited" and credited.get(claim) != row[3]:
            yield "claim %s credited with %s, ledger has %s" % (claim[:12], row[3],
                                                                credited.get(claim))
        if row[2] == "failed" and claim in credited:
            yield "claim %s is failed but in the ledger" % claim[:12]
    # a failed op names no claim id; a refused keyed claim is recorded failed: compare
    failed_keyed = {}
    for (user, key), ops in by_key.items():
        if ops and all(o.outcome == "failed" for o in ops):
            failed_keyed[(user, key)] = ops[0]
    yield from _refused_not_credited(s, failed_keyed, credited)


def _refused_not_credited(s, failed_keyed, credited):
    """A keyed claim refused every time it was asked is not in the ledger (needs the claim id,
    which is a function of the user and key: claimid.c)."""
    secret = s.claim_secret
    for (user, key), op in failed_keyed.items():
        cid = claim_id(secret, user, key)
        if cid in credited:
            yield "%r was refused (%s) but claim %s is credited" % (op, op.error, cid[:12])


def claim_id(secret, user_id, key):
    import hashlib
    import hmac
    nonce = hashlib.sha256(("chanced-claim-nonce:%d:%s" % (user_id, key)).encode()).hexdigest()
    nonce = nonce[:32]
    tag = hmac.new(secret.encode(), ("%s:%d" % (nonce, user_id)).encode(),
                   hashlib.sha256).hexdigest()[:32]
    return nonce + tag


def check_limits(s):
    held = collections.Counter((uid, cat) for uid, _c, _code, cat, _a in s.ledger)
    for (uid, cat), n in held.items():
        if n > s.limits.get(cat, n):
            yield "user %d holds %d codes of category %d (limit %d)" % (uid, n, cat,
                                                                         s.limits[cat])


def check_audit(s):
    if s.dlq:
        yield "%d messages in the dead-letter queue" % s.dlq
    if s.outbox[1]:
        yield "%d outbox events refused by the logger" % s.outbox[1]
    if s.outbox[0]:
        yield "%d outbox events never delivered" % s.outbox[0]
    per = collections.defaultdict(collections.Counter)  # claim id -> type -> count
    assigned = collections.Counter()  # (claim id, code) -> code.assigned events
    undone = set()  # (claim, code) given back: claim.released / code.repaired
    repaired = set()  # claims given their ledger code back
    restored = set()  # (claim, code) whose assignment Redis lost and the ledger restored
    for e in s.events:
        sub = e.get("subject") or {}
        claim = sub.get("claim_id")
        t = e.get("type")
        if claim:
            per[claim][t] += 1
        if t == "code.assigned":
            assigned[(claim, sub.get("code"))] += 1
        elif t == "claim.released":
            undone.add((claim, sub.get("code")))
        elif t == "code.repaired":
            # the code went back to its ledger owner (subject) from the claim that had drawn it
            # after Redis lost writes (data.from_claim); a code the owner drew meanwhile went
            # back to the free set with it
            undone.add(((e.get("data") or {}).get("from_claim"), sub.get("code")))
            repaired.add(claim)
            restored.add((claim, sub.get("code")))
    for claim, row in s.claims.items():
        status = row[2]
        got = per.get(claim, collections.Counter())
        want_c, want_f = (1, 0) if status == "credited" else (0, 1) if status == "failed" \
            else (0, 0)
        if got["claim.credited"] != want_c or got["claim.failed"] != want_f:
            yield "claim %s is %s: %d claim.credited and %d claim.failed events (%s)" % (
                claim[:12], status, got["claim.credited"], got["claim.failed"],
                _events_of(s, claim))
    for _u, claim, code, _c, _a in s.ledger:
        # A code.assigned still in Redis's stream when Redis lost its last writes is gone with
        # them; the reconciler's repair of that assignment from the ledger (code.repaired, for
        # this claim and code) is then its record. Never two code.assigned, never none unrepaired.
        n = assigned[(claim, code)]
        if n > 1 or (n == 0 and (claim, code) not in restored):
            yield "credited claim %s code %s has %d code.assigned events" % (
                claim[:12], code, assigned[(claim, code)])
    credited = {(claim, code) for _u, claim, code, _c, _a in s.ledger}
    for (claim, code), n in assigned.items():
        if (claim, code) not in credited and (claim, code) not in undone and \
                claim not in repaired:
            yield "code.assigned for claim %s code %s: neither credited nor given back" \
                " (claim %s; its events: %s; Redis: %s)" % (
                    str(claim)[:12], code, s.claims.get(claim), _events_of(s, claim),
                    s.codes.get(code))
    for claim, types in per.items():
        if (types["claim.credited"] or types["claim.failed"]) and claim not in s.claims:
            yield "audit events for claim %s, which PostgreSQL does not know" % claim[:12]


def _events_of(s, claim):
    """What a counter-example shows of a claim: its requests and its audit events."""
    if s.op_claims is None:
        s.op_claims = collections.defaultdict(list)
        for o in s.ops:
            cid = o.claim_id or (o.key and claim_id(s.claim_secret, o.user, o.key))
            s.op_claims[cid].append(o)
    ops = s.op_claims.get(claim, [])
    events = [e for e in s.events if (e.get("subject") or {}).get("claim_id") == claim]
    return ["requests: %r" % ops[:4]] + sorted(
        "%s %s" % (e.get("type"), (e.get("subject") or {}).get("code")) for e in events)


def check_replays(s):
    by_key = collections.defaultdict(list)
    for op in s.ops:
        if op.key is not None and op.outcome in ("ok", "failed"):
            by_key[(op.user, op.key)].append(op)
    for ops in by_key.values():
        first = ops[0].answer()
        for o in ops[1:]:
            if o.answer() != first:
                yield "key %s: %r then %r" % (o.key, ops[0], o)


def check_resources(baseline, now, rss_slack_kib=65536, rss_factor=1.5, fd_slack=16):
    """Each daemon that is the same process as at the baseline: RSS within factor x baseline +
    slack, descriptors within baseline + slack."""
    for name, (rss0, fds0, starts0) in baseline.items():
        if name not in now:
            yield "%s is not running" % name
            continue
        rss, fds, starts = now[name]
        if starts != starts0:
            continue  # restarted since: its own baseline is taken again
        if rss > rss0 * rss_factor + rss_slack_kib:
            yield "%s RSS %d KiB, baseline %d KiB" % (name, rss, rss0)
        if fds > fds0 + fd_slack:
            yield "%s has %d open descriptors, baseline %d" % (name, fds, fds0)


CHECKS = {1: check_money, 2: check_codes, 3: check_claims, 4: check_limits, 5: check_audit,
          6: check_replays}
