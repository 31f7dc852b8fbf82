"""The proof suite's claim workload and its record of every operation.

Worker threads send claims to the two gateways: most with a fresh Idempotency-Key, some with no
key at all, and some retrying an earlier key of the same user on the *other* gateway (at once
when the first answer was not final, later at random otherwise).  Every request is one Op:

    invoked  the request was sent (t0)
    ok       201: the claim is credited, with this claim id, code and reward
    failed   a definitive refusal: 404 / 409 / 422 (nothing may be credited for it, unless
             another request with the same key succeeded)
    unknown  anything else: 202 pending, 5xx, a timeout, a dropped connection (credited at most
             once, and whether it was is settled by the reconciler)

A sampler thread reads the money invariant (balances against the ledger) while the load runs.
"""

import http.client
import json
import random
import threading
import time


class Op:
    __slots__ = ("n", "user", "category", "key", "gateway", "t0", "t1", "outcome", "status",
                 "error", "claim_id", "code", "reward", "retry_of", "phase")

    def __init__(self, n, user, category, key, gateway, phase, retry_of=None):
        self.n = n
        self.user = user
        self.category = category
        self.key = key
        self.gateway = gateway
        self.phase = phase
        self.retry_of = retry_of
        self.t0 = time.monotonic()
        self.t1 = None
        self.outcome = "invoked"
        self.status = None
        self.error = None
        self.claim_id = None
        self.code = None
        self.reward = None

    def answer(self):
        """What a replay must repeat: (status, claim id, code, reward) or (status, error)."""
        if self.outcome == "ok":
            return (201, self.claim_id, self.code, self.reward)
        return (self.status, self.error)

    def __repr__(self):
        return "<op %d user=%s cat=%s key=%s gw=%d %s %s %s %s>" % (
            self.n, self.user, self.category, self.key, self.gateway, self.outcome, self.status,
            self.error or "", self.code or "")


def classify(op, status, body):
    op.status = status
    try:
        j = json.loads(body) if body else {}
    except ValueError:
        j = {}
    if not isinstance(j, dict):
        j = {}
    if status == 201:
        op.outcome = "ok"
        op.claim_id, op.code, op.reward = j.get("claim_id"), j.get("code"), j.get("reward")
    elif status in (404, 409, 422):
        op.outcome = "failed"
        op.error = j.get("code")
    else:
        op.outcome = "unknown"
        op.error = j.get("code") or ("http %d" % status)
        op.claim_id = j.get("claim_id")


class Recorder:
    """Every operation of the run, appended under a lock."""

    def __init__(self):
        self.ops = []
        self.lock = threading.Lock()

    def new(self, *a, **kw):
        with self.lock:
            op = Op(len(self.ops), *a, **kw)
            self.ops.append(op)
            return op

    def phase(self, name):
        with self.lock:
            return [o for o in self.ops if o.phase == name]

    def counts(self, ops):
        out = {"invoked": 0, "ok": 0, "failed": 0, "unknown": 0}
        for o in ops:
            out[o.outcome] += 1
        return out


class User:
    def __init__(self, uid, token):
        self.id = uid
        self.token = token
        self.keys = []  # (key, category) this user sent
        self.n = 0


class Workload:
    """Runs claims from `threads` workers until stop(); recorded into recorder under phase."""

    def __init__(self, gateways, users, categories, recorder, threads=6, timeout=12.0,
                 sample=None, think=0.0):
        self.gateways = gateways  # callables -> current HTTP port of gateway i
        self.users = users
        self.categories = categories  # [category id]
        self.rec = recorder
        self.nthreads = threads
        self.think = think
        self.timeout = timeout
        self.sample = sample  # callable -> None or a counter-example (money sampled mid-load)
        self.samples = []
        self.sample_violations = []
        self.phase = None
        self._stop = threading.Event()
        self._threads = []

    def start(self, phase):
        self.phase = phase
        self._stop.clear()
        self._threads = [threading.Thread(target=self._worker, args=(i,), daemon=True)
                         for i in range(self.nthreads)]
        if self.sample:
            self._threads.append(threading.Thread(target=self._sampler, daemon=True))
        for t in self._threads:
            t.start()

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 30)
        self._threads = []

    def _send(self, user, category, key, gw, retry_of=None):
        op = self.rec.new(user.id, category, key, gw, self.phase, retry_of=retry_of)
        headers = {"Authorization": "Bearer " + user.token, "Content-Type": "application/json"}
        if key is not None:
            headers["Idempotency-Key"] = key
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.gateways[gw](), timeout=self.timeout)
            try:
                c.request("POST", "/api/v1/claims", json.dumps({"category": category}), headers)
                r = c.getresponse()
                classify(op, r.status, r.read().decode("utf-8", "replace"))
            finally:
                c.close()
        except (OSError, http.client.HTTPException) as e:
            op.outcome = "unknown"
            op.error = type(e).__name__
        op.t1 = time.monotonic()
        return op

    def _worker(self, i):
        rnd = random.Random(i * 7919 + int(time.time()))
        while not self._stop.wait(self.think):
            user = rnd.choice(self.users)
            gw = rnd.randrange(len(self.gateways))
            r = rnd.random()
            if r < 0.15 and user.keys:
                # a later same-key retry, on the other gateway from the one picked
                key, cat = rnd.choice(user.keys)
                self._send(user, cat, key, 1 - gw, retry_of=key)
                continue
            cat = rnd.choice(self.categories)
            if r < 0.35:
                self._send(user, cat, None, gw)  # no key: every request is a new claim
                continue
            user.n += 1
            key = "k%d-%d-%s" % (user.id, user.n, rnd.getrandbits(32))
            user.keys.append((key, cat))
            op = self._send(user, cat, key, gw)
            if op.outcome == "unknown" or rnd.random() < 0.1:
                # what a client does with no final answer: the same key, the other gateway
                self._send(user, cat, key, 1 - gw, retry_of=key)

    def _sampler(self):
        while not self._stop.wait(0.25):
            try:
                bad = self.sample()
            except Exception as e:  # a server down mid-fault: no sample then
                self.samples.append(("skipped", repr(e)))
                continue
            self.samples.append(("ok", None) if bad is None else ("bad", bad))
            if bad is not None:
                self.sample_violations.append(bad)
