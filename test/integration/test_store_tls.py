"""TLS to the stores, on the real daemon against private TLS-only servers started here, with a
throwaway CA made by openssl (storekit.Pki). The server certificates name 127.0.0.1 only, so a
server reached at another address (127.0.0.2), or by a name, must not verify.

    Redis       rediss:// with redis_tls_ca/cert/key against redis-server --tls-port (clients
                must present a certificate): generation and claims; a wrong CA, another
                address, no or a foreign client certificate leave chance not ready, saying why
    RabbitMQ    amqps:// with amqp_tls_* against a broker with TLS listeners (peer certificates
                required): the relay publishes and the logger consumes, an event ends in
                MongoDB; a wrong CA or another address is refused
    PostgreSQL  ssl=on and hostssl-only pg_hba: the gateway and `chanced migrate` with
                postgres_url ...?sslmode=verify-full&sslrootcert=CA; a wrong root certificate, a
                name the certificate does not carry, a missing root file: a clear error
    MongoDB     the stand-in has no TLS: only that mongo_url's tls options reach the driver
                (docs/deploy.md gives them)
"""

import os
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import pytest

from chancekit import generate_ready
from gwclient import GATEWAY_TEST_KEYS, request
from loggerkit import store, wait_ready, wait_until
from nest import NestClient, NestError
from storekit import Pki, Proc, ShellServer, free_port, redis_server_argv, scratch

__all__ = ["store"]

pytestmark = [pytest.mark.slow]

ACTOR = {"id": 1, "username": "root", "role": "admin"}


def http_get(hostport, path):
    try:
        with urllib.request.urlopen("http://%s%s" % (hostport, path), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def need_tool(name):
    if shutil.which(name) is None:
        pytest.fail("%s is not installed (test/deps.sh installs it)" % name, pytrace=False)


# --- the PKI -------------------------------------------------------------------------------

class Certs:
    def __init__(self):
        need_tool("openssl")
        pki = Pki(scratch("pki"))
        self.ca = pki.ca("good")
        self.other_ca = pki.ca("other")
        # the servers' certificate names 127.0.0.1 and nothing else
        self.server = pki.issue(self.ca, "server", sans=["IP:127.0.0.1"])
        self.client = pki.issue(self.ca, "client", client=True)
        self.stranger = pki.issue(self.other_ca, "stranger", client=True)


@pytest.fixture(scope="module")
def certs():
    return Certs()


# --- Redis ---------------------------------------------------------------------------------

class TlsRedis:
    """redis-server with TLS only (--port 0) on 127.0.0.1 and 127.0.0.2, client certificates
    from the good CA required."""

    def __init__(self, certs):
        self.certs = certs
        self.dir = scratch("redis-tls")
        self.port = free_port()
        self.proc = Proc("redis", redis_server_argv(
            self.dir, "--port", "0", "--tls-port", self.port, "--bind", "127.0.0.1 127.0.0.2",
            "--tls-cert-file", certs.server.crt, "--tls-key-file", certs.server.key,
            "--tls-ca-cert-file", certs.ca.crt, "--tls-auth-clients", "yes"),
            self.dir / "stdout.log", wait_port=self.port)

    def client(self):
        import redis
        return redis.Redis(host="127.0.0.1", port=self.port, ssl=True,
                           ssl_ca_certs=self.certs.ca.crt, ssl_certfile=self.certs.client.crt,
                           ssl_keyfile=self.certs.client.key, decode_responses=True,
                           socket_timeout=10)


@pytest.fixture(scope="module")
def tls_redis(certs):
    r = TlsRedis(certs)
    r.proc.start()
    yield r
    r.proc.stop()


@pytest.fixture
def tls_redis_client(tls_redis):
    c = tls_redis.client()
    c.flushall()
    yield c
    c.close()


def test_chance_generates_and_claims_over_rediss(chanced, certs, tls_redis, tls_redis_client):
    import redis
    # the key as a secret: redis_tls_key_file hands the daemon the PEM text itself
    ch = chanced("chance", redis_url="rediss://127.0.0.1:%d/0" % tls_redis.port,
                 redis_tls_ca=certs.ca.crt, redis_tls_cert=certs.client.crt,
                 redis_tls_key_file=certs.client.key)
    wait_until("chance /readyz 200", lambda: http_get(ch.addr("chance_health_listen"),
                                                      "/readyz")[0] == 200, timeout=60)
    with NestClient(*ch.hostport(), timeout=30) as c:
        batch = generate_ready(c, {"categories": 2, "codes_per_category": 50, "reward_min": 10,
                                   "reward_max": 99, "actor": ACTOR})
        cat = batch["categories"][0]
        got = c.call("chance.claim", {"claim_id": "tls-1", "category": cat,
                                      "user": {"id": 3, "username": "u3"}})
        again = c.call("chance.claim", {"claim_id": "tls-1", "category": cat,
                                        "user": {"id": 3, "username": "u3"}})
        assert again["replay"] is True and again["code"] == got["code"]
        items = c.call("chance.categories", {})["items"]
    assert {i["id"]: i["remaining"] for i in items} == {cat: 49, batch["categories"][1]: 50}
    # what chance wrote over TLS is there
    record = tls_redis_client.hget("chance:{c%d}:codes" % cat, got["code"])
    assert record and '"c":"tls-1"' in record.replace(" ", ""), record
    assert tls_redis_client.scard("chance:{c%d}:free" % cat) == 49
    ch.wait_log(r"redis_connected.*node=127\.0\.0\.1:%d" % tls_redis.port)
    # and the server speaks nothing but TLS
    plain = redis.Redis(host="127.0.0.1", port=tls_redis.port, socket_timeout=5)
    with pytest.raises(redis.exceptions.ConnectionError):
        plain.ping()


BAD_REDIS_TLS = {
    # name: (url host, redis_tls_* keys (ca, cert, key), the reason logged)
    "wrong CA": ("127.0.0.1", ("other_ca", "client", "client"),
                 r"TLS: the server's certificate does not verify: (self-signed certificate in "
                 r"certificate chain|unable to get local issuer certificate)"),
    "address not in the certificate": ("127.0.0.2", ("ca", "client", "client"),
                                       r"TLS: the server's certificate does not verify: IP "
                                       r"address mismatch"),
    "no client certificate": ("127.0.0.1", ("ca", None, None),
                              r"TLS: (.*alert certificate required|the server closed the "
                              r"connection)"),
    "client certificate of another CA": ("127.0.0.1", ("ca", "stranger", "stranger"),
                                         r"TLS: (.*alert (unknown ca|certificate unknown|bad "
                                         r"certificate)|the server closed the connection)"),
}


@pytest.mark.parametrize("case", sorted(BAD_REDIS_TLS))
def test_chance_is_not_ready_with_an_untrusted_redis_link(case, chanced, certs, tls_redis,
                                                          tls_redis_client):
    host, (ca, cert, key), reason = BAD_REDIS_TLS[case]
    keys = {"redis_url": "rediss://%s:%d/0" % (host, tls_redis.port),
            "redis_tls_ca": getattr(certs, ca).crt, "redis_timeout_ms": 2000}
    if cert:
        keys["redis_tls_cert"] = getattr(certs, cert).crt
        keys["redis_tls_key"] = getattr(certs, key).key
    ch = chanced("chance", **keys)
    m = ch.wait_log(r'"event":"redis_connect_failed".*reason=\\"%s:%d: (%s)' % (
        re.escape(host), tls_redis.port, reason), timeout=30)
    assert m
    status, body = http_get(ch.addr("chance_health_listen"), "/readyz")
    assert status == 503 and "redis unreachable" in body, (status, body)
    with NestClient(*ch.hostport(), timeout=30) as c:
        with pytest.raises(NestError) as e:
            c.call("chance.generate", {"categories": 1, "codes_per_category": 5,
                                       "reward_min": 1, "reward_max": 2, "actor": ACTOR})
    assert e.value.err["code"] in ("unavailable", "timeout"), e.value.err
    assert "redis_connected" not in ch.log_text()
    assert tls_redis_client.dbsize() == 0


def test_chance_stops_when_a_redis_tls_file_cannot_be_loaded(chanced, certs, tls_redis):
    ch = chanced("chance", wait=False, redis_url="rediss://127.0.0.1:%d/0" % tls_redis.port,
                 redis_tls_ca=str(scratch("missing") / "ca.crt"))
    assert ch.wait_exit(timeout=30) != 0
    ch.wait_log(r"chance_start_failed.*rediss://: cannot load the CA .*missing-[0-9a-f]+/ca\.crt")


# --- RabbitMQ ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_rabbit(certs):
    """A broker of its own with TLS listeners on 127.0.0.1 and 127.0.0.2 (peer certificates
    from the good CA required); its plain listener is only for servers.sh's start check."""
    ports = free_port(), free_port()
    conf = "\n".join([
        "listeners.ssl.1 = 127.0.0.1:%d" % ports[0],
        "listeners.ssl.2 = 127.0.0.2:%d" % ports[1],
        "ssl_options.cacertfile = %s" % certs.ca.crt,
        "ssl_options.certfile = %s" % certs.server.crt,
        "ssl_options.keyfile = %s" % certs.server.key,
        "ssl_options.verify = verify_peer",
        "ssl_options.fail_if_no_peer_cert = true",
    ])
    rabbit = ShellServer("rabbit-tls", "rabbitmq", conf_extra=conf)
    try:
        rabbit.start()
        rabbit.tls_ports = ports
        yield rabbit
    finally:
        rabbit.stop()


def amqps(host, port):
    return "amqps://guest:guest@%s:%d/" % (host, port)


def amqp_tls_keys(certs, ca="ca"):
    return {"amqp_tls_ca": getattr(certs, ca).crt, "amqp_tls_cert": certs.client.crt,
            "amqp_tls_key_file": certs.client.key}


def test_relay_publishes_and_logger_consumes_over_amqps(chanced, certs, tls_rabbit, store,
                                                        redis_client):
    url = amqps("127.0.0.1", tls_rabbit.tls_ports[0])
    ch = chanced("chance", amqp_url=url, relay_sweep_ms=200, **amqp_tls_keys(certs))
    lg = chanced("logger", amqp_url=url, mongo_url=store[0], **amqp_tls_keys(certs))
    wait_ready(lg, timeout=60)
    with NestClient(*ch.hostport(), timeout=30) as c:
        batch = generate_ready(c, {"categories": 1, "codes_per_category": 5, "reward_min": 10,
                                   "reward_max": 99, "actor": ACTOR})
        got = c.call("chance.claim", {"claim_id": "tls-q", "category": batch["categories"][0],
                                      "user": {"id": 4, "username": "u4"}})

    def stored():
        types = {e["type"]: e for e in store[1]["events"].find({})}
        return types if {"batch.generated", "code.assigned"} <= set(types) else None
    events = wait_until("chance's events in MongoDB", stored, timeout=90)
    assert events["code.assigned"]["subject"]["code"] == got["code"]
    ch.wait_log(r"relay_connected.*broker=127\.0\.0\.1:%d" % tls_rabbit.tls_ports[0])
    # both roles reached the broker over TLS, and only so
    conns = [ln.split() for ln in tls_rabbit.ctl("list_connections", "ssl", "peer_host",
                                                 "--no-table-headers", "--quiet").splitlines()
             if ln.strip()]
    assert len(conns) >= 2 and all(c[0] == "true" for c in conns), conns


BAD_AMQP_TLS = {
    "wrong CA": (0, "other_ca", r"SSL peer cert verification failed"),
    "address not in the certificate": (1, "ca", r"SSL peer cert verification failed"),
}


@pytest.mark.parametrize("case", sorted(BAD_AMQP_TLS))
def test_roles_refuse_an_untrusted_broker(case, chanced, certs, tls_rabbit, store, redis_client):
    which, ca, reason = BAD_AMQP_TLS[case]
    host = ("127.0.0.1", "127.0.0.2")[which]
    url = amqps(host, tls_rabbit.tls_ports[which])
    ch = chanced("chance", amqp_url=url, relay_sweep_ms=200, **amqp_tls_keys(certs, ca))
    lg = chanced("logger", amqp_url=url, mongo_url=store[0], **amqp_tls_keys(certs, ca))
    with NestClient(*ch.hostport(), timeout=30) as c:
        generate_ready(c, {"categories": 1, "codes_per_category": 2, "reward_min": 10,
                           "reward_max": 99, "actor": ACTOR})
    ch.wait_log(r'"event":"relay_amqp_unavailable".*cannot connect to %s:%d: %s' % (
        re.escape(host), tls_rabbit.tls_ports[which], reason), timeout=30)
    lg.wait_log(r'"event":"amqp_unavailable".*%s' % reason, timeout=30)
    status, _ = http_get(lg.addr("logger_health_listen"), "/readyz")
    assert status == 503
    # the event waits in Redis, unpublished
    assert redis_client.xlen("chance:{g}:events") == 1
    assert "relay_connected" not in ch.log_text()


# --- PostgreSQL ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_postgres(certs):
    """A PostgreSQL of its own (servers.sh), then ssl=on with the server certificate and a
    pg_hba.conf that lets TCP clients in over TLS only."""
    import psycopg2
    pg = ShellServer("pg-tls", "postgres")
    try:
        pg.start()
        data = pg.dir / "postgres" / "data"
        for src, name in ((certs.server.crt, "server.crt"), (certs.server.key, "server.key")):
            shutil.copy(src, data / name)
            shutil.chown(data / name, "postgres", "postgres")
        (data / "server.key").chmod(0o600)
        admin_url = pg.env["CHANCED_TEST_POSTGRES_ADMIN_URL"]
        conn = psycopg2.connect(admin_url, connect_timeout=10)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ALTER SYSTEM SET ssl = on")
            cur.execute("ALTER SYSTEM SET ssl_cert_file = 'server.crt'")
            cur.execute("ALTER SYSTEM SET ssl_key_file = 'server.key'")
            (data / "pg_hba.conf").write_text("local all all trust\n"
                                              "hostssl all all 127.0.0.1/32 trust\n"
                                              "hostnossl all all 127.0.0.1/32 reject\n")
            cur.execute("SELECT pg_reload_conf()")
        conn.close()
        pg.admin_url = admin_url + "?sslmode=require"
        wait_until("PostgreSQL serving TLS", lambda: _pg_ssl(pg.admin_url), timeout=60)
        yield pg
    finally:
        pg.stop()


def _pg_ssl(url):
    import psycopg2
    try:
        conn = psycopg2.connect(url, connect_timeout=5)
    except psycopg2.OperationalError:
        return False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            return cur.fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
def tls_db(tls_postgres):
    """A new database owned by chanced on the TLS server; its URL without parameters."""
    import psycopg2
    name = "t_%s" % os.urandom(5).hex()
    conn = psycopg2.connect(tls_postgres.admin_url, connect_timeout=10)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute('CREATE DATABASE "%s" OWNER chanced' % name)
    yield "postgresql://chanced@127.0.0.1:%s/%s" % (
        tls_postgres.env["CHANCED_TEST_POSTGRES_PORT"], name)
    with conn.cursor() as cur:
        cur.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
    conn.close()


def with_params(url, **params):
    return url + "?" + urllib.parse.urlencode(params)


def run_chanced(binary, args, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANCED_")}
    return subprocess.run([binary] + args + ["--log_format=json"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, env=env, timeout=timeout)


def test_gateway_over_postgres_verify_full(chanced, chanced_bin, certs, tls_postgres, tls_db):
    import psycopg2
    url = with_params(tls_db, sslmode="verify-full", sslrootcert=certs.ca.crt)
    p = run_chanced(chanced_bin, ["migrate", "--postgres_url=" + url])
    assert p.returncode == 0, p.stdout + p.stderr
    keys = dict(GATEWAY_TEST_KEYS, postgres_url=url,
                chance_addr="127.0.0.1:%d" % free_port(), logger_addr="127.0.0.1:%d" % free_port())
    gw = chanced("gateway", start_timeout=60, **keys)
    r = request(gw.port, "POST", "/api/v1/auth/signup", {"username": "tls_user",
                                                          "password": "tls password 1"})
    assert r.status == 201, r
    r = request(gw.port, "POST", "/api/v1/auth/login", {"username": "tls_user",
                                                         "password": "tls password 1"})
    assert r.status == 200, r
    # every connection of the gateway to this database is TLS (pg_hba refuses others anyway)
    db = tls_db.rsplit("/", 1)[1]
    conn = psycopg2.connect(tls_postgres.admin_url, connect_timeout=10)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT s.ssl, s.version FROM pg_stat_activity a JOIN pg_stat_ssl s "
                        "USING (pid) WHERE a.datname = %s AND a.usename = 'chanced'", (db,))
            rows = cur.fetchall()
    finally:
        conn.close()
    assert rows and all(ssl and version.startswith("TLSv1.") for ssl, version in rows), rows
    with pytest.raises(psycopg2.OperationalError) as e:
        psycopg2.connect(with_params(tls_db, sslmode="disable"), connect_timeout=10)
    assert "no encryption" in str(e.value)
    gw.stop()


BAD_PG_TLS = {
    # name: (extra URL parameters, the libpq error logged)
    "wrong root certificate": (lambda c: {"sslrootcert": c.other_ca.crt},
                               r"SSL error: certificate verify failed"),
    "name not in the certificate": (lambda c: {"sslrootcert": c.ca.crt, "host": "localhost",
                                               "hostaddr": "127.0.0.1"},
                                    r"server certificate for \\?\"127\.0\.0\.1\\?\"( \(and \d+ "
                                    r"other names?\))? does not match host name "
                                    r"\\?\"localhost\\?\""),
    "missing root certificate file": (lambda c: {"sslrootcert": "/nonexistent/ca.crt"},
                                      r"root certificate file \\?\"/nonexistent/ca\.crt\\?\" "
                                      r"does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD_PG_TLS))
def test_postgres_verify_full_refuses(case, chanced, chanced_bin, certs, tls_postgres, tls_db):
    params, reason = BAD_PG_TLS[case]
    url = with_params(tls_db, sslmode="verify-full", **params(certs))
    p = run_chanced(chanced_bin, ["migrate", "--postgres_url=" + url])
    assert p.returncode == 69, p.stdout + p.stderr
    out = p.stdout + p.stderr
    assert re.search(r'"event":"migrate_failed".*' + reason, out), out
    gw = chanced("gateway", wait=False, postgres_url=url,
                 chance_addr="127.0.0.1:%d" % free_port(), logger_addr="127.0.0.1:%d" % free_port())
    assert gw.wait_exit(timeout=60) == 69
    gw.wait_log(r'"event":"migrate_failed".*' + reason)
    # and nothing reached the database
    import psycopg2
    conn = psycopg2.connect(with_params(tls_db, sslmode="require"), connect_timeout=10)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            assert cur.fetchone() == (0,)
    finally:
        conn.close()


# --- MongoDB: the stand-in speaks no TLS, so only that the URL's options reach the driver ------

def test_logger_hands_mongo_tls_options_to_the_driver(chanced, certs, mongo_url):
    """mongo_url's tls=true makes the driver attempt a TLS handshake (which the plaintext
    stand-in cannot answer: not ready), and a CA file it cannot load is said."""
    base = mongo_url.split("?", 1)[0]
    lg = chanced("logger", mongo_url=base + "?" + urllib.parse.urlencode(
        {"tls": "true", "tlsCAFile": certs.ca.crt, "serverSelectionTimeoutMS": "2000"}))
    lg.wait_log(r'"event":"store_unavailable".*TLS handshake', timeout=60)
    assert http_get(lg.addr("logger_health_listen"), "/readyz")[0] == 503
    missing = str(scratch("missing") / "ca.pem")
    lg2 = chanced("logger", mongo_url=base + "?" + urllib.parse.urlencode(
        {"tls": "true", "tlsCAFile": missing, "serverSelectionTimeoutMS": "2000"}))
    lg2.wait_log(r"Cannot load Certificate Authorities from '%s'" % re.escape(missing),
                 timeout=60)
    assert http_get(lg2.addr("logger_health_listen"), "/readyz")[0] == 503
