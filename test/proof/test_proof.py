"""The proof suite (issue 9): two instances of every role under a claim workload, one fault at a
time, and the seven invariants checked after each (invariants.py).  See test/proof/README.md.

CHANCED_PROOF=full (`make proof`) runs every fault of faults.FAULTS; otherwise (`make test`)
the short list faults.SHORT.  Each scenario: load for a while, inject the fault, hold it, heal
it, load a little longer, stop the load, wait until the system is quiet (no pending claim, the
outbox, Redis's event streams and the queue empty, the audit trail no longer growing), then
check.  Every scenario adds a row to build/proof/report.md, written after each one.
"""

import itertools
import os
import re
import time
from pathlib import Path

import pytest

from cluster import Cluster, integration_conftest, ROOT
import faults as F
import invariants as I
from workload import Recorder, User, Workload

_it = integration_conftest()
chanced_bin = _it.chanced_bin  # fixture
output_dir = _it.output_dir  # fixture

FULL = os.environ.get("CHANCED_PROOF") == "full"
SELECTED = F.FAULTS if FULL else [f for f in F.FAULTS if f.name in F.SHORT]
USERS = 40 if FULL else 24
THREADS = 4
THINK_S = 0.05  # a worker's pause between requests: ~60 claims/s, what the stand-in can audit
LIMITS = [1, 3, 10, 100]  # per_user_limit of the four categories
CODES = 3000
PRE_S, POST_S = 2.0, 3.0  # load before the fault, and after it healed
QUIET_TIMEOUT_S = 120.0
REPORT = ROOT / "build" / "proof" / "report.md"
SANITIZER_RE = _it.SANITIZER_RE


def slug(name):
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


class Proof:
    """The cluster, its users and categories, the recorder, and the report rows."""

    def __init__(self, cluster):
        self.c = cluster
        self.rec = Recorder()
        self.rows = []
        self.baseline = {}
        self.seen = set()  # counter-examples reported so far
        self.san = "/san/" in cluster.bin

    def setup(self):
        c = self.c
        c.start_servers()
        c.start_roles()
        c.admin_token()
        self.limits = {}
        for limit in LIMITS:
            self.limits[c.generate(CODES, limit)] = limit
        self.users = []
        for i in range(USERS):
            r = c.auth("signup", "proof%02d_%s" % (i, os.urandom(2).hex()), "proof password 1",
                       gw=i % 2)
            assert r.status == 201, r
            self.users.append(User(r.json["user"]["id"], r.json["token"]))
        self.load = Workload([lambda: c.gateway_port(0), lambda: c.gateway_port(1)], self.users,
                             list(self.limits), self.rec, threads=THREADS, think=THINK_S,
                             sample=lambda: I.money_sample(c.postgres_url))

    # -- one scenario --------------------------------------------------------------------

    def run(self, fault):
        name = fault.name if fault else "no fault"
        t_start = time.monotonic()
        self.load.samples, self.load.sample_violations = [], []
        self.load.start(name)
        time.sleep(PRE_S)
        t_heal = None
        error = None
        try:
            if fault:
                try:
                    fault.inject(self.c)
                    time.sleep(fault.hold)
                finally:
                    fault.heal(self.c)  # whatever happened, the next scenario needs it healed
                t_heal = time.monotonic()
            time.sleep(POST_S)
        except Exception as e:  # the fault itself failed: still stop the load and report
            error = "fault injection failed: %r" % e
        finally:
            self.load.stop()
        t_stop = time.monotonic()
        quiet = self.wait_quiet()
        ops = self.rec.phase(name)
        row = {"fault": name, "what": fault.what if fault else "", "counts":
               self.rec.counts(ops), "seconds": t_stop - t_start,
               "ok_per_s": sum(o.outcome == "ok" for o in ops) / max(t_stop - t_start, 1e-9),
               "ops_per_s": len(ops) / max(t_stop - t_start, 1e-9),
               "recovery": self.recovery(ops, t_heal), "gap": self.max_gap(ops, t_start, t_stop),
               "pending_clear": quiet.get("pending"), "audit_lag": quiet.get("audit"),
               "results": {}}
        results = row["results"]
        if error or quiet.get("error"):
            results[0] = error or quiet["error"]
        state = I.State(self.c, self.rec, self.limits)
        found = {}
        for n, check in I.CHECKS.items():
            try:
                found[n] = list(itertools.islice(check(state), 50))
            except Exception as e:
                found[n] = ["check failed: %r" % e]
        found[1] += ["during load: " + v for v in self.load.sample_violations[:1]]
        found[7] = list(self.check_processes())
        for n, examples in found.items():
            # the checks cover the whole run: what an earlier scenario already reported is
            # that scenario's violation, not this one's
            new = [v for v in examples if v not in self.seen]
            self.seen.update(examples)
            results[n] = new[0] if new else None
            if examples and not new:
                row.setdefault("carried", []).append((n, examples[0]))
        self.rows.append(row)
        write_report(self.rows, self.san)
        return row

    def recovery(self, ops, t_heal):
        """Seconds from the heal to the first 201 of a request sent after it."""
        if t_heal is None:
            return None
        after = [o.t1 for o in ops if o.outcome == "ok" and o.t0 >= t_heal]
        return (min(after) - t_heal) if after else None

    @staticmethod
    def max_gap(ops, t0, t1):
        """The longest time without a 201 answer during the scenario's load."""
        ts = sorted(o.t1 for o in ops if o.outcome == "ok") or [t1]
        gaps = [ts[0] - t0] + [b - a for a, b in zip(ts, ts[1:])] + [t1 - ts[-1]]
        return max(gaps)

    def wait_quiet(self):
        """Until nothing is pending or undelivered anywhere and the audit trail stopped
        growing; the seconds it took for the claims and for the audit trail."""
        c = self.c
        t0 = time.monotonic()
        out = {}
        last = None
        import pymongo
        mongo = pymongo.MongoClient(c.mongo_url)
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        trace = open(REPORT.parent / "quiet.log", "a")  # what the wait saw, for a post-mortem
        trace.write("---- %s\n" % self.load.phase)
        try:
            while time.monotonic() - t0 < QUIET_TIMEOUT_S:
                try:
                    pending, outbox = I.pg(c.postgres_url, (
                        "SELECT (SELECT count(*) FROM claims WHERE status = 'pending'),"
                        " (SELECT count(*) FROM outbox WHERE delivered_at IS NULL"
                        " AND rejected IS NULL)"))[0]
                    r = c.redis_client()
                    streams = sum(r.xlen(k) for k in r.scan_iter(match="chance:*:events",
                                                                  count=1000))
                    queued = I.queue_depth(c.amqp_url, c.queue)
                    events = mongo.get_default_database()["events"].estimated_document_count()
                except Exception:
                    time.sleep(0.5)
                    continue
                now = time.monotonic() - t0
                trace.write("%6.1f pending=%d outbox=%d streams=%d queued=%d events=%d\n" % (
                    now, pending, outbox, streams, queued, events))
                if pending == 0 and "pending" not in out:
                    out["pending"] = now
                if pending == 0 and outbox == 0 and streams == 0 and queued == 0 and \
                        events == last:
                    out["audit"] = now
                    return out
                last = events
                time.sleep(0.5)
            out["error"] = ("not quiet after %.0f s: %s pending, %s undelivered outbox rows, %s"
                            " stream entries, %s queued" % (QUIET_TIMEOUT_S, pending, outbox,
                                                            streams, queued))
            return out
        finally:
            mongo.close()
            trace.close()

    def check_processes(self):
        """Invariant 7, plus: no daemon died by itself or wrote a sanitizer report."""
        for name, d in self.c.daemons.items():
            if not d.running():
                yield "%s is not running (%s)" % (name, d.proc.poll())
            elif SANITIZER_RE.search(d.log_text()):
                yield "%s: sanitizer report in %s" % (name, d.log_path)
        now = self.c.resources()
        slack = 384 * 1024 if self.san else 64 * 1024  # ASan's quarantine holds freed memory
        bad = list(I.check_resources(self.baseline, now, rss_slack_kib=slack))
        for name, v in now.items():  # a restarted daemon: its baseline starts again
            if name not in self.baseline or self.baseline[name][2] != v[2]:
                self.baseline[name] = v
        yield from bad


# -- the report ---------------------------------------------------------------------------

def _fmt_s(v):
    return "—" if v is None else "%.1f s" % v


def write_report(rows, san):
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    inv = list(I.NAMES.items())
    out = ["# chanced proof report", "",
           "%s run, %s build; two gateways, two chance, two loggers; %d users, %d worker threads,"
           " categories with per-user limits %s." % ("full" if FULL else "short",
                                                      "ASan" if san else "plain", USERS, THREADS,
                                                      LIMITS),
           "Invariants (test/proof/invariants.py): " +
           "; ".join("%d %s" % (n, s) for n, s in inv) + ".", "",
           "| fault | " + " | ".join("%d %s" % (n, s) for n, s in inv) + " |",
           "|---|" + "---|" * len(inv)]
    for r in rows:
        cells = []
        carried = {n for n, _ in r.get("carried", [])}
        for n, _ in inv:
            v = r["results"].get(n)
            cells.append("**violated**" if v else "holds†" if n in carried else "holds")
        if r["results"].get(0):
            cells[-1] += " (%s)" % r["results"][0]
        out.append("| %s | %s |" % (r["fault"], " | ".join(cells)))
    out += ["", "| fault | how | ok | failed | unknown | ops/s | ok/s | recovery | longest"
            " gap without a 201 | pending cleared | audit lag |", "|---|---|" + "---|" * 9]
    for r in rows:
        k = r["counts"]
        out.append("| %s | %s | %d | %d | %d | %.1f | %.1f | %s | %s | %s | %s |" % (
            r["fault"], r["what"], k["ok"], k["failed"], k["unknown"], r["ops_per_s"],
            r["ok_per_s"], _fmt_s(r["recovery"]), _fmt_s(r["gap"]), _fmt_s(r["pending_clear"]),
            _fmt_s(r["audit_lag"])))
    out += ["", "recovery: from the heal to the first 201 of a request sent after it; pending"
            " cleared / audit lag: from the end of the load until no claim was pending / until"
            " the outbox, Redis's event streams and the queue were empty and MongoDB's event"
            " count stood still. holds†: no new counter-example, one found after an earlier"
            " fault is still there.", ""]
    bad = [(r["fault"], n, v) for r in rows for n, v in sorted(r["results"].items()) if v]
    if bad:
        out.append("## Counter-examples")
        out.append("")
        for fault, n, v in bad:
            out.append("- %s, invariant %s: %s" % (fault, I.NAMES.get(n, "setup"), v))
    else:
        out.append("Every invariant held after every fault.")
    REPORT.write_text("\n".join(out) + "\n")


# -- tests ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def proof(chanced_bin, output_dir):
    env = {k: v for k, v in os.environ.items() if k.startswith("CHANCED_TEST_")}
    for k in ("CHANCED_TEST_POSTGRES_URL", "CHANCED_TEST_AMQP_URL", "CHANCED_TEST_MONGO_URL",
              "CHANCED_TEST_SERVER_CTL"):
        _it.need_env(k)
    for f in (REPORT, REPORT.parent / "quiet.log"):
        f.unlink(missing_ok=True)
    c = Cluster(chanced_bin, Path(output_dir) / "daemons" / "proof", env)
    p = Proof(c)
    try:
        p.setup()
        yield p
    finally:
        problems = c.stop()
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)


def _assert_holds(row):
    bad = ["%s: %s" % (I.NAMES.get(n, "setup"), v) for n, v in sorted(row["results"].items())
           if v]
    assert not bad, "%s: %s" % (row["fault"], "; ".join(bad))


def test_no_fault(proof):
    """The load alone: the baseline for load figures, memory and descriptors."""
    row = proof.run(None)
    _assert_holds(row)


@pytest.mark.parametrize("fault", SELECTED, ids=[slug(f.name) for f in SELECTED])
def test_fault(proof, fault):
    row = proof.run(fault)
    _assert_holds(row)
