"""The gateway behind PgBouncer 1.18 in transaction pooling (Debian's): with pg_prepared=false
it migrates (under transaction-scoped advisory locks), signs users up, logs them in, credits
concurrent claims exactly once, settles pending claims under its lease, and relays its audit
events, although every transaction may run on another server connection."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gwclient import claim_id_for, GATEWAY_TEST_KEYS, Stack, pg_query, wait_for  # noqa: F401

pytestmark = [pytest.mark.e2e]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def bouncer(fresh_postgres_url):
    """A private pgbouncer (pool_mode=transaction, 4 server connections) in front of the test
    database; yields its URL. Runs as the postgres user when we are root (it refuses root)."""
    exe = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(exe):
        pytest.fail("pgbouncer is not installed (test/deps.sh installs it)")
    u = urlsplit(fresh_postgres_url)
    port = _free_port()
    # not under pytest's tmp_path: pgbouncer runs as postgres, which may not enter it
    d = Path(tempfile.mkdtemp(prefix="pgbouncer.", dir=os.environ.get("CHANCED_TEST_DIR")))
    (d / "users.txt").write_text('"%s" ""\n' % u.username)
    (d / "pgbouncer.ini").write_text(
        "[databases]\n* = host=%s port=%d\n"
        "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = %d\nunix_socket_dir =\n"
        "auth_type = trust\nauth_file = %s\npool_mode = transaction\n"
        "default_pool_size = 4\nmax_client_conn = 200\nlogfile = %s\npidfile = %s\n"
        "application_name_add_host = 0\n"
        % (u.hostname, u.port, port, d / "users.txt", d / "pgbouncer.log", d / "pgbouncer.pid"))
    cmd = [exe, str(d / "pgbouncer.ini")]
    if os.geteuid() == 0:
        shutil.chown(d, "postgres", "postgres")
        for f in d.iterdir():
            shutil.chown(f, "postgres", "postgres")
        cmd = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] + cmd
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, (d / "pgbouncer.log").read_text()
                assert time.monotonic() < deadline, "pgbouncer did not listen"
                time.sleep(0.1)
        yield "postgresql://%s@127.0.0.1:%d%s" % (u.username, port, u.path)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(d, ignore_errors=True)


def test_the_gateway_works_behind_a_transaction_pooler(chanced, chanced_bin, fresh_postgres_url,
                                                       bouncer, redis_client):
    s = Stack(chanced, chanced_bin, bouncer, pg_prepared=False, pg_pool_size=12)
    s.postgres_url = fresh_postgres_url  # checks below read PostgreSQL directly
    assert pg_query(fresh_postgres_url, "SELECT max(version) FROM schema_migrations")[0][0] >= 3
    batch = s.generate(2, 60, per_user_limit=10)
    users = [s.signup() for _ in range(6)]
    s.login(users[0].user["username"], "correct horse 1")

    results, lock = [], threading.Lock()

    def claimer(u, k):
        for i in range(10):
            cat = batch["categories"][i % 2]
            r = u.claim(cat, key="k%d-%d" % (k, i))
            r2 = u.claim(cat, key="k%d-%d" % (k, i))  # a retry: the same answer
            with lock:
                results.append((r, r2))
    threads = [threading.Thread(target=claimer, args=(u, k)) for k, u in enumerate(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 60
    for r, r2 in results:
        assert r.status == 201, r
        assert r2.status == 201 and r2.json["code"] == r.json["code"], r2
    ledger = pg_query(fresh_postgres_url, "SELECT count(*), count(DISTINCT code),"
                      " coalesce(sum(amount), 0) FROM ledger")[0]
    assert ledger[0] == ledger[1] == 60
    assert pg_query(fresh_postgres_url, "SELECT sum(balance) FROM wallets")[0][0] == ledger[2]

    # a pending claim is settled by the reconciler (which holds its lease through the pooler)
    uid = users[1].id
    claim = claim_id_for(fresh_postgres_url, uid, "pending")
    pg_query(fresh_postgres_url, "INSERT INTO claims (claim_id, user_id, category, status,"
             " updated_at) VALUES (%s, %s, %s, 'pending', now() - interval '1 min')",
             (claim, uid, batch["categories"][0]))
    wait_for(lambda: pg_query(fresh_postgres_url, "SELECT status FROM claims WHERE claim_id = %s",
                              (claim,))[0][0] == "credited", timeout=30, what="the settled claim")
    assert pg_query(fresh_postgres_url, "SELECT count(*) FROM leases WHERE name = 'reconciler'"
                    " AND expires_at > now()")[0][0] == 1
    # and the audit relay delivers through it
    wait_for(lambda: pg_query(fresh_postgres_url, "SELECT count(*) FROM outbox"
                              " WHERE delivered_at IS NULL")[0][0] == 0,
             timeout=30, what="the outbox to drain")
