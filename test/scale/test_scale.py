"""Scale-out (issue 11): several instances of every role on clustered stores, with faults.

A 3-master Redis Cluster (one replica each), a 3-node RabbitMQ cluster, a PostgreSQL primary
with a streaming replica, and 3 chance, 2 logger and 3 gateway instances (test/scale/clusters.py
starts the stores; MongoDB is the run's own, in a database of this test).  Users sign up and
claim through random gateways; 30% of the claims are sent again with the same Idempotency-Key
through another gateway.  During the load, one fault per round: kill -9 (and restart) a chance,
the reconciler's gateway, a logger; kill -9 a Redis master that has a replica; kill -9 the
RabbitMQ node leading the audit queue; stop the PostgreSQL primary and promote the replica.

After quiet, the invariants of issue 7 hold on the cluster: wallets add up to the ledger, no code
or claim is credited twice, the codes Redis (every master) holds as assigned are exactly the
ledger's with the same owner, per-user limits hold, every claim has exactly one audit event of
each kind in MongoDB; chance published each event about once (≤ 1.05 × events) however many
instances ran; at every sample at most one gateway held the reconciler lease, and another took
it over within the TTL after the holder died; every Redis master holds ≥ 20% of the categories.

Bounded by default (about 3 minutes, in `make test`); CHANCED_SCALE=full runs issue 11's sizes
(20 categories × 500 codes, 300 users).  test/scale/README.md has more.
"""

import concurrent.futures
import json
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
INTEGRATION = ROOT / "test" / "integration"
for p in (str(INTEGRATION), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import clusters  # noqa: E402
from gwclient import API, GATEWAY_TEST_KEYS, create_user, request  # noqa: E402
from loggerkit import http_get  # noqa: E402
from shared_fixtures import export_fixtures  # noqa: E402


export_fixtures(globals(), "output_dir", "test_output_dir", "chanced_bin", "mongo_url",
                "amqp_queue", "chanced")

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.slow]

FULL = os.environ.get("CHANCED_SCALE") == "full"
CATEGORIES = 20
CODES = 500 if FULL else 40
USERS = 300 if FULL else 48
CLAIMS_PER_USER = 6 if FULL else 4
PER_USER_LIMIT = 1  # users draw categories at random: some hit it (409 user_limit_reached)
RETRY_SHARE = 0.30
LEASE_TTL_MS = 2000
N_CHANCE, N_LOGGER, N_GATEWAY = 3, 2, 3
WORKERS = 8


# --- the stores ----------------------------------------------------------------------------

class Stores:
    def __init__(self, base):
        self.redis = self.rabbit = self.pg = None
        errors = []

        def start(attr, make):
            try:
                setattr(self, attr, make())
            except BaseException as e:  # noqa: B036 -- reported below, after the others
                errors.append("%s: %s" % (attr, e))

        # RabbitMQ boots slowest: the others start meanwhile
        threads = [threading.Thread(target=start, args=a) for a in (
            ("rabbit", lambda: clusters.RabbitCluster(base)),
            ("redis", lambda: clusters.RedisCluster(base)),
            ("pg", lambda: clusters.PgPair(base)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            self.stop()
            pytest.fail("could not start the clustered stores: " + "; ".join(errors),
                        pytrace=False)

    def stop(self):
        for s in (self.rabbit, self.redis, self.pg):
            if s is not None:
                s.stop()


@pytest.fixture
def stores(tmp_path_factory):
    base = os.environ.get("CHANCED_TEST_DIR") or str(tmp_path_factory.mktemp("scale"))
    s = Stores(base)
    yield s
    s.stop()


# --- metrics sampling ----------------------------------------------------------------------

def metric_values(hostport, name):
    """{labels: value} of one metric from a /metrics page, or None if not reachable."""
    st, text = http_get(hostport, "/metrics", timeout=2)
    if st != 200:
        return None
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            out[key[len(name):]] = float(value)
    return out


class Sampler(threading.Thread):
    """Every 100 ms: which gateways say they hold the reconciler lease, and how many events each
    chance process has published (the last value seen per process, so a kill -9 loses at most
    one interval's count)."""

    def __init__(self, gateways, chances):
        super().__init__(daemon=True)
        self.gateways, self.chances = gateways, chances
        self.stop_ev = threading.Event()
        self.samples = []  # (monotonic, [gateway index holding the reconciler lease])
        self.published = {}  # (chance index, pid) -> last chanced_relay_published_total
        self.lock = threading.Lock()

    def holders(self):
        held = []
        for i, g in enumerate(self.gateways):
            if not g.running():
                continue
            v = metric_values(g.addr("gateway_health_listen"), "chanced_gateway_lease_held")
            if v and v.get('{lease="reconciler"}') == 1:
                held.append(i)
        return held

    def sample_published(self):
        for i, c in enumerate(self.chances):
            if not c.running():
                continue
            pid = c.pid
            v = metric_values(c.addr("chance_health_listen"), "chanced_relay_published_total")
            if v:
                with self.lock:
                    self.published[(i, pid)] = sum(v.values())

    def run(self):
        while not self.stop_ev.is_set():
            h = self.holders()
            with self.lock:
                self.samples.append((time.monotonic(), h))
            self.sample_published()
            self.stop_ev.wait(0.1)

    def stop(self):
        self.stop_ev.set()
        self.join(10)


# --- clients -------------------------------------------------------------------------------

class Users:
    def __init__(self, gateways):
        self.gateways = gateways
        self.rng = random.Random(11)

    def live_ports(self, exclude=None):
        ports = [g.port for g in self.gateways if g.running() and g.port != exclude]
        return ports or [g.port for g in self.gateways]

    def send(self, method, path, body=None, token=None, headers=None, first=None, tries=40):
        """Through a random live gateway (first if given); on a lost connection or 5xx, again
        through another one.  Returns (response, port) of the last answer."""
        port = first or random.choice(self.live_ports())
        last = None
        for _ in range(tries):
            try:
                r = request(port, method, path, body=body, token=token, headers=headers,
                            timeout=20)
                if r.status < 500 or (r.status == 503 and r.code not in (None, "busy", "unavailable")):
                    return r, port
                last = r
                time.sleep(float(r.headers.get("retry-after", "0.3")) if r.status == 503 else 0.3)
            except OSError as e:
                last = e
                time.sleep(0.3)
            port = random.choice(self.live_ports(exclude=port))
        raise AssertionError("%s %s: no gateway answered: %r" % (method, path, last))


def signup(users, name):
    r, _ = users.send("POST", API + "/auth/signup", {"username": name, "password": "correct horse 1"})
    assert r.status == 201, r
    return {"name": name, "id": r.json["user"]["id"], "token": r.json["token"]}


def pg_rows(pg, sql, args=()):
    import psycopg2
    conn = psycopg2.connect(pg.url(), connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args or None)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def redis_assigned(rc):
    """{code: (user_id, claim_id)} of every code assigned in Redis, read from every master."""
    out, categories = {}, set()
    for port, r in rc.clients().items():
        for key in r.scan_iter(match="chance:{c*}:codes", count=1000):
            categories.add(key)
            for code, rec in r.hgetall(key).items():
                rec = json.loads(rec)
                if rec.get("s") == "assigned":
                    assert code not in out, "code %s assigned on two masters" % code
                    out[code] = (str(rec.get("u")), rec.get("c"))
    return out


def stream_backlog(rc):
    n = 0
    for r in rc.clients().values():
        for key in r.scan_iter(match="chance:{*}:events", count=1000):
            n += r.xlen(key)
    return n


# --- the test ------------------------------------------------------------------------------

def test_every_guarantee_holds_on_clustered_stores(stores, chanced, chanced_bin, mongo_url,
                                                   amqp_queue, test_output_dir):
    import pymongo
    began = time.monotonic()
    rc, mq, pg = stores.redis, stores.rabbit, stores.pg
    base, _, query = mongo_url.partition("?")
    mdb_name = "scale_%s" % os.urandom(4).hex()
    murl = base.rsplit("/", 1)[0] + "/" + mdb_name + ("?" + query if query else "")

    chances = [chanced("chance", redis_url=rc.url(), amqp_url=mq.urls(order),
                       relay_claim_idle_ms=10000, relay_sweep_ms=300)
               for i, order in enumerate([[0, 1, 2], [1, 2, 0], [2, 0, 1]][:N_CHANCE])]
    loggers = [chanced("logger", amqp_url=mq.urls([(i + 1) % 3, (i + 2) % 3, i % 3]),
                       mongo_url=murl) for i in range(N_LOGGER)]
    chance_addr = ",".join(c.addr("chance_listen") for c in chances)
    logger_addr = ",".join(lg.addr("logger_listen") for lg in loggers)
    p = create_user(chanced_bin, pg.url(), "root", "admin password 1", admin=True)
    assert p.returncode == 0, p.stderr
    gw_keys = dict(GATEWAY_TEST_KEYS, postgres_url=pg.url(), chance_addr=chance_addr,
                   logger_addr=logger_addr, lease_ttl_ms=LEASE_TTL_MS)
    gateways = [chanced("gateway", **gw_keys) for _ in range(N_GATEWAY)]
    users_api = Users(gateways)

    r, _ = users_api.send("POST", API + "/auth/login", {"username": "root",
                                                       "password": "admin password 1"})
    assert r.status == 200, r
    admin = r.json["token"]
    r, _ = users_api.send("POST", API + "/admin/batches", {
        "categories": CATEGORIES, "codes_per_category": CODES, "reward_min": 1000,
        "reward_max": 100000, "per_user_limit": PER_USER_LIMIT}, token=admin,
        headers={"Idempotency-Key": "scale-batch"})
    assert r.status == 202, r
    batch = r.json["batch"]
    deadline = time.monotonic() + 120
    while batch["state"] == "generating":
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)
        r, _ = users_api.send("GET", API + "/admin/batches/%d" % batch["id"], token=admin)
        batch = r.json["batch"]
    assert batch["state"] == "ready", batch
    cats = batch["categories"]

    # every master holds at least 20% of the categories
    per_master = {m: 0 for m in rc.masters()}
    for c in cats:
        per_master[rc.master_of_key("chance:{c%d}:codes" % c)] += 1
    assert len(per_master) == 3 and min(per_master.values()) >= 0.2 * len(cats), per_master

    sampler = Sampler(gateways, chances)
    sampler.start()
    try:
        users = [signup(users_api, "scale%d_%s" % (i, os.urandom(2).hex())) for i in range(USERS)]

        rng = random.Random(1)
        jobs = []  # (user, key, category, retry through another gateway?)
        for u in users:
            for k in range(CLAIMS_PER_USER):
                jobs.append((u, "k%d" % k, rng.choice(cats), rng.random() < RETRY_SHARE))
        rng.shuffle(jobs)
        answers = {}  # (user id, key) -> [responses]
        alock = threading.Lock()

        def claim(job):
            u, key, cat, retry = job
            r, port = users_api.send("POST", API + "/claims", {"category": cat}, token=u["token"],
                                     headers={"Idempotency-Key": key})
            got = [r]
            if retry:
                r2, _ = users_api.send("POST", API + "/claims", {"category": cat},
                                       token=u["token"], headers={"Idempotency-Key": key},
                                       first=random.choice(users_api.live_ports(exclude=port)))
                got.append(r2)
            with alock:
                answers.setdefault((u["id"], key), []).extend(got)

        takeover = {}

        def kill_lease_holder():
            held = sampler.holders()
            assert len(held) == 1, held
            victim = gateways[held[0]]
            t0 = time.monotonic()
            victim.kill(signal.SIGKILL)
            clusters.wait_for(lambda: sampler.holders(), LEASE_TTL_MS / 1000 * 4,
                              "another gateway to take the reconciler lease", interval=0.05)
            takeover["s"] = time.monotonic() - t0
            victim.start()

        def kill_chance():
            sampler.sample_published()
            chances[0].kill(signal.SIGKILL)
            time.sleep(0.5)
            chances[0].start()

        def kill_logger():
            loggers[0].kill(signal.SIGKILL)
            time.sleep(0.5)
            loggers[0].start()

        def fail_over_redis():
            master = rc.master_of_key("chance:{c%d}:codes" % cats[0])
            replica = rc.replica_of(master)
            assert replica, rc.topology()
            rc.kill(master)
            clusters.wait_for(lambda: replica in rc.masters(), 30,
                              "replica %d to be promoted" % replica, interval=0.2)
            rc.restart(master)  # rejoins as a replica of the new master

        rabbit_restart = []

        def kill_rabbit_leader():
            leader = mq.leader(amqp_queue)
            assert leader is not None, "no leader for %s" % amqp_queue
            leader.kill()
            # it boots again in the background while the load goes on
            t = threading.Thread(target=leader.start, daemon=True)
            t.start()
            rabbit_restart.append(leader)

        faults = [("chance", kill_chance), ("gateway", kill_lease_holder),
                  ("redis", fail_over_redis), ("rabbitmq", kill_rabbit_leader),
                  ("logger", kill_logger), ("postgres", pg.fail_over)]
        rounds = [jobs[i::len(faults)] for i in range(len(faults))]
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            for (name, fault), round_jobs in zip(faults, rounds):
                futs = [pool.submit(claim, j) for j in round_jobs]
                # the fault once a third of the round is answered, the rest during and after
                concurrent.futures.wait(futs[:len(futs) // 3])
                fault()
                for f in futs:
                    f.result()

        # --- quiet ---------------------------------------------------------------------
        for node in rabbit_restart:
            clusters.wait_for(node.ready, 120, "RabbitMQ node %s back" % node.name, interval=0.5)
        clusters.wait_for(lambda: pg_rows(pg, "SELECT count(*) FROM claims WHERE status = 'pending'")
                          [0][0] == 0, 90, "no pending claims", interval=0.5)
        clusters.wait_for(lambda: pg_rows(pg, "SELECT count(*) FROM outbox WHERE delivered_at IS NULL"
                                          " AND rejected IS NULL")[0][0] == 0, 90,
                          "the outbox delivered", interval=0.5)
        clusters.wait_for(lambda: stream_backlog(rc) == 0, 90, "chance's streams drained",
                          interval=0.5)
        time.sleep(1.0)
        sampler.sample_published()
    finally:
        sampler.stop()

    mongo = pymongo.MongoClient(murl)
    events = mongo[mdb_name]["events"]

    def check():
        ledger = pg_rows(pg, "SELECT user_id, claim_id, code, amount, category FROM ledger")
        assert len({r[2] for r in ledger}) == len(ledger), "a code was credited twice"
        assert len({r[1] for r in ledger}) == len(ledger), "a claim was credited twice"
        total = pg_rows(pg, "SELECT coalesce(sum(balance), 0) FROM wallets")[0][0]
        assert total == sum(r[3] for r in ledger), "wallets do not add up to the ledger"
        per = {}
        for uid, _, _, _, cat in ledger:
            per[(uid, cat)] = per.get((uid, cat), 0) + 1
        assert max(per.values()) <= PER_USER_LIMIT, "a user got past the per-user limit"
        assigned = redis_assigned(rc)
        owners = {code: (str(uid), claim) for uid, claim, code, _, _ in ledger}
        assert assigned == owners, "Redis's assignments differ from the ledger: %s" % sorted(
            set(assigned.items()) ^ set(owners.items()))[:10]
        credited = {}
        assigned_ev = {}
        for e in events.find({"type": {"$in": ["claim.credited", "code.assigned"]}}):
            s = e.get("subject", {})
            if e["type"] == "claim.credited":
                credited[s.get("claim_id")] = credited.get(s.get("claim_id"), 0) + 1
            else:
                k = (s.get("claim_id"), s.get("code"))
                assigned_ev[k] = assigned_ev.get(k, 0) + 1
        for _, claim, code, _, _ in ledger:
            assert credited.get(claim) == 1, ("claim.credited events", claim, credited.get(claim))
            assert assigned_ev.get((claim, code)) == 1, ("code.assigned events", claim, code)
        return ledger

    deadline = time.monotonic() + 60
    while True:
        try:
            ledger = check()
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    assert len(ledger) >= len(jobs) // 2, (len(ledger), len(jobs))
    # the limit was reached for real: the claims over it failed, not credited
    over = pg_rows(pg, "SELECT count(*) FROM claims WHERE status = 'failed'"
                   " AND error = 'user_limit_reached'")[0][0]
    assert over > 0 and len(ledger) + over == len(answers), (len(ledger), over, len(answers))

    # every answer for one (user, key) is that claim's one outcome, now as then
    by_key = {}
    for uid, claim, code, _, _ in ledger:
        by_key[claim] = code
    for (uid, key), rs in answers.items():
        codes = {r.json["code"] for r in rs if r.status == 201}
        assert len(codes) <= 1, ("two codes for one Idempotency-Key", uid, key, codes)
        for r in rs:
            assert r.status in (201, 202, 409), ("unexpected answer", uid, key, r)
            if r.status == 201:
                assert by_key.get(r.json["claim_id"]) == r.json["code"], (uid, key, r)

    # the relay published each chance event about once, however many instances ran
    chance_events = events.count_documents({"service": "chance"})
    published = sum(sampler.published.values())
    assert chance_events > 0
    assert published <= 1.05 * chance_events, (published, chance_events, sampler.published)

    # at most one gateway said it held the reconciler lease at every sample; takeover in the TTL
    two = [(t, h) for t, h in sampler.samples if len(h) > 1]
    assert not two, "two reconciler lease holders at once: %r" % two[:5]
    assert takeover["s"] < LEASE_TTL_MS / 1000 + 2.0, takeover
    mongo.close()
    summary = {"size": "full" if FULL else "bounded", "categories": CATEGORIES, "codes": CODES,
               "users": USERS, "claims": len(jobs), "answers": sum(len(v) for v in answers.values()),
               "credited": len(ledger), "over_limit": over, "chance_events": chance_events, "published": published,
               "publish_ratio": round(published / chance_events, 3),
               "lease_samples": len(sampler.samples), "takeover_s": round(takeover["s"], 2),
               "categories_per_master": per_master, "seconds": round(time.monotonic() - began, 1)}
    (test_output_dir / "scale-summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print("scale summary:", json.dumps(summary))
