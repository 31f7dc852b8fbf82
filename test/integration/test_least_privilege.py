"""Least privilege: each role works with a store user of its own that can do only what the role
needs, exactly as compose.yaml sets them up (docs/deploy.md, "Least privilege"), and a step
outside it is refused.

    PostgreSQL  deploy/postgres/chanced-role.sql run as the superuser in a new database (what
                compose's init script does): `chanced migrate`, `admin create-user` and the
                gateway's claim flow work as that role; it is no superuser, owns only its schema
    Redis       the redis_acl secret of deploy/secrets/README.md's generator (from
                deploy/redis/chance.acl-rules) loaded by a private redis-server: every chance
                pattern, the audit relay included, works as user `chance` (nothing in ACL LOG);
                other commands, keys and channels are refused
    RabbitMQ    deploy/rabbitmq/definitions.json's users chance and logger, imported into a vhost
                of the test broker: chance publishes, the logger consumes; chance cannot consume,
                the logger cannot publish
    MongoDB     the stand-in has no users: compose's init script and the docs only (test_deploy)
"""

import hashlib
import hmac
import json
import os
import re
import shlex
import subprocess
import time
import urllib.parse
from base64 import b64decode

import pytest

from gwclient import GATEWAY_TEST_KEYS, Client, create_user, request, wait_for
from gwclient import wait_ready as gateway_ready
from loggerkit import store, wait_ready, wait_until
from nest import NestClient, NestError
from storekit import (ROOT, SERVERS_SH, Proc, free_port, generate_secrets, need_test_dir,
                      redis_server_argv, scratch)

__all__ = ["store"]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QUEUE = "chanced.events"  # the queue the RabbitMQ permissions name (amqp_queue's default)
ROLE_SQL = ROOT / "deploy" / "postgres" / "chanced-role.sql"
ACTOR = {"id": 1, "username": "root", "role": "admin"}


# --- compose's secrets ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def secrets(tmp_path_factory):
    """The files deploy/secrets/README.md's generator writes, by name."""
    return generate_secrets(tmp_path_factory.mktemp("compose-secrets"))


def acl_password(acl, user):
    m = re.search(r"^user %s on >(\S+) " % re.escape(user), acl, re.M)
    assert m, "no enabled user %s with a password in redis_acl:\n%s" % (user, acl)
    return m.group(1)


# --- PostgreSQL: the gateway's role --------------------------------------------------------

@pytest.fixture
def app_db(postgres_admin_url, pg_bin, secrets):
    """A new database owned by the superuser, set up by chanced-role.sql for a new role (the
    compose init script's steps, with a name of the test's own); yields (the role's URL, the
    role, its password, the superuser's URL of the database). Dropped, role included,
    afterwards."""
    import psycopg2
    tag = os.urandom(4).hex()
    db, role = "lp_%s" % tag, "chanced_app_%s" % tag
    pwfile = scratch("pg-role") / "postgres_password"
    pwfile.write_text(secrets["postgres_password"])
    password = secrets["postgres_password"].strip()
    admin = psycopg2.connect(postgres_admin_url, connect_timeout=10)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute('CREATE DATABASE "%s"' % db)
    base = urllib.parse.urlsplit(postgres_admin_url)
    super_db = base._replace(path="/" + db).geturl()
    try:
        p = subprocess.run([os.path.join(pg_bin, "psql"), "-X", "--no-psqlrc", "-v",
                            "ON_ERROR_STOP=1", "-d", super_db, "-v", "app_user=" + role, "-v",
                            "app_password_file=%s" % pwfile, "-f", str(ROLE_SQL)],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, "chanced-role.sql failed:\n%s%s" % (p.stdout, p.stderr)
        url = base._replace(netloc="%s:%s@%s:%d" % (role, password, base.hostname, base.port),
                            path="/" + db).geturl()
        yield url, role, password, super_db
    finally:
        with admin.cursor() as cur:
            cur.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % db)
            cur.execute('DROP ROLE IF EXISTS "%s"' % role)
        admin.close()


def pg_rows(url, sql, args=None):
    import psycopg2
    conn = psycopg2.connect(url, connect_timeout=10)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def scram_matches(verifier, password):
    """True if a PostgreSQL SCRAM-SHA-256 verifier (pg_authid.rolpassword) is of password."""
    m = re.match(r"^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)$", verifier or "")
    assert m, "not a SCRAM verifier: %r" % verifier
    iterations, salt, stored = int(m.group(1)), b64decode(m.group(2)), b64decode(m.group(3))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hashlib.sha256(client_key).digest() == stored


def run_chanced(binary, args, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANCED_")}
    return subprocess.run([binary] + args + ["--log_format=json"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, env=env, timeout=timeout)


def test_postgres_role_migrates_and_owns_only_its_schema(app_db, chanced_bin):
    import psycopg2
    url, role, password, super_db = app_db
    for attempt in (1, 2):  # the second run finds everything applied
        p = run_chanced(chanced_bin, ["migrate", "--postgres_url=" + url])
        assert p.returncode == 0, "migrate #%d as %s: %s%s" % (attempt, role, p.stdout, p.stderr)
    assert '"schema_ready"' in p.stdout + p.stderr

    # what the superuser sees
    flags = pg_rows(super_db, "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, "
                              "rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = %s", (role,))
    assert flags == [(False, False, False, False, False, True)]
    verifier = pg_rows(super_db, "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,))
    assert scram_matches(verifier[0][0], password), "the role's password is not the secret's"
    objects = pg_rows(super_db, """
        SELECT n.nspname, c.relname, c.relkind, pg_get_userbyid(c.relowner)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')""")
    tables = {r[1] for r in objects if r[2] == "r"}
    assert {"users", "wallets", "ledger", "claims", "outbox", "gateway_meta",
            "schema_migrations"} <= tables, tables
    assert {(r[0], r[3]) for r in objects} == {(role, role)}, \
        "objects outside the role's schema or owned by another role: %s" % objects
    schemas = dict(pg_rows(super_db, "SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace"
                                     " WHERE nspname NOT LIKE 'pg\\_%%' AND nspname <> "
                                     "'information_schema'"))
    assert schemas == {"public": "pg_database_owner", role: role}, schemas
    # migration 4's gen_random_uuid() and sha256() ran as this role: a 64-hex-digit secret
    secret = pg_rows(url, "SELECT value FROM gateway_meta WHERE key = 'claim_secret'")
    assert secret and re.match(r"^[0-9a-f]{64}$", secret[0][0]), secret

    # what the role itself may not do
    for sql in ("CREATE TABLE public.intruder (x int)", 'CREATE DATABASE "lp_no_%s"' % role,
                'CREATE ROLE "lp_no_%s"' % role, "SELECT rolpassword FROM pg_authid",
                "ALTER ROLE CURRENT_USER SUPERUSER"):
        with pytest.raises(psycopg2.Error) as e:
            pg_rows(url, sql)
        assert e.value.pgcode == "42501", "%s: %s" % (sql, e.value)  # insufficient_privilege
    # and another role gets nothing in this database
    parts = urllib.parse.urlsplit(url)
    other = parts._replace(netloc="chanced@%s:%d" % (parts.hostname, parts.port)).geturl()
    with pytest.raises(psycopg2.OperationalError) as e:
        pg_rows(other, "SELECT 1")
    assert "permission denied for database" in str(e.value)

    p = create_user(chanced_bin, url, "root", "admin password 1", admin=True)
    assert p.returncode == 0, p.stderr
    assert pg_rows(url, "SELECT role FROM users WHERE username = 'root'") == [("admin",)]


# --- Redis: the chance user ----------------------------------------------------------------

class AclRedis:
    """A private redis-server loading compose's generated ACL file."""

    def __init__(self, secrets):
        self.dir = scratch("redis-acl")
        acl = self.dir / "users.acl"
        acl.write_text(secrets["redis_acl"])
        self.port = free_port()
        self.chance_password = acl_password(secrets["redis_acl"], "chance")
        self.admin_password = acl_password(secrets["redis_acl"], "admin")
        self.proc = Proc("redis", redis_server_argv(self.dir, "--port", self.port, "--bind",
                                                    "127.0.0.1", "--aclfile", acl),
                         self.dir / "stdout.log", wait_port=self.port)

    def url(self, user="chance", password=None):
        return "redis://%s:%s@127.0.0.1:%d/0" % (user, password or self.chance_password,
                                                 self.port)

    def client(self, user):
        import redis
        pw = {"chance": self.chance_password, "admin": self.admin_password}[user]
        return redis.Redis(host="127.0.0.1", port=self.port, username=user, password=pw,
                           decode_responses=True, socket_timeout=10)


@pytest.fixture(scope="module")
def acl_redis(secrets):
    r = AclRedis(secrets)
    r.proc.start()
    yield r
    r.proc.stop()


@pytest.fixture
def acl_admin(acl_redis):
    """Admin connection to the ACL Redis; empty data and ACL LOG before the test."""
    a = acl_redis.client("admin")
    a.flushall()
    a.execute_command("ACL", "LOG", "RESET")
    yield a
    a.close()


def denied(acl_admin):
    """The ACL LOG entries: every command, key or channel the server refused."""
    return [{k: e[k] for k in ("reason", "object", "username") if k in e}
            for e in acl_admin.acl_log()]


def test_redis_acl_refuses_what_chance_does_not_use(acl_redis, acl_admin):
    import redis
    r = acl_redis.client("chance")
    r.set("chance:{g}:probe", "1")  # its own keys, with a command it uses
    assert r.get("chance:{g}:probe") == "1"
    refused = [
        ("FLUSHALL",), ("CONFIG", "GET", "maxmemory"), ("KEYS", "*"), ("GET", "other:key"),
        ("SET", "other:key", "1"), ("ACL", "LIST"), ("MONITOR",), ("CLIENT", "LIST"),
        ("SHUTDOWN", "NOSAVE"), ("FUNCTION", "LIST"), ("SCRIPT", "FLUSH"), ("PUBLISH", "c", "m"),
        ("SUBSCRIBE", "c"), ("EVAL", "return redis.call('GET', KEYS[1])", "1", "other:key"),
    ]
    for cmd in refused:
        with pytest.raises(redis.exceptions.NoPermissionError):  # NOPERM
            r.execute_command(*cmd)
    # inside a script, a command or key outside the rules fails the script
    for script in ("return redis.call('FLUSHALL')", "return redis.call('GET', 'other:key')",
                   "return redis.call('SET', 'other:key', '1')"):
        with pytest.raises(redis.exceptions.ResponseError) as e:
            r.execute_command("EVAL", script, "0")
        assert "The user executing the script can't" in str(e.value), e.value
    assert acl_admin.get("other:key") is None and acl_admin.dbsize() == 1
    # the default user is off: no command without logging in
    anon = redis.Redis(host="127.0.0.1", port=acl_redis.port, socket_timeout=10)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anon.ping()
    r.close()
    anon.close()


def test_redis_acl_without_cluster_slots_is_reported(chanced, acl_redis, acl_admin):
    """A user that may not ask CLUSTER SLOTS leaves chance not ready and says why, rather
    than guessing that the server is no cluster."""
    rules = (ROOT / "deploy" / "redis" / "chance.acl-rules").read_text()
    rules = [ln for ln in rules.splitlines() if ln and not ln.startswith("#")][0].split()
    assert "+cluster|slots" in rules
    acl_admin.execute_command("ACL", "SETUSER", "noslots", "reset", "on", ">noslots-pw",
                              *[x for x in rules if x != "+cluster|slots"])
    try:
        ch = chanced("chance", redis_url=acl_redis.url("noslots", "noslots-pw"))
        ch.wait_log(r"CLUSTER SLOTS: NOPERM.*needs \+cluster\|slots", timeout=30)
        status, body = http_get(ch.addr("chance_health_listen"), "/readyz")
        assert status == 503, body
    finally:
        acl_admin.execute_command("ACL", "DELUSER", "noslots")


def http_get(hostport, path):
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen("http://%s%s" % (hostport, path), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


# --- RabbitMQ: a user per role -------------------------------------------------------------

def shared_rabbitmqctl(*args):
    """rabbitmqctl against the run's own broker (test/lib/servers.sh)."""
    d = need_test_dir()
    p = subprocess.run(["bash", "-c", ". %s && . %s && ct_rabbitmqctl %s" % (
        shlex.quote(str(d / "env.sh")), shlex.quote(str(SERVERS_SH)),
        " ".join(shlex.quote(a) for a in args))], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, "rabbitmqctl %s: %s%s" % (" ".join(args), p.stdout, p.stderr)
    return p.stdout


@pytest.fixture
def rabbit_users(amqp_url, secrets):
    """deploy/rabbitmq/definitions.json's users chance and logger (the generated secret, with
    their passwords and exactly their permissions) and the queue topology, imported into a new
    vhost of the test broker, the users under names of the test's own; yields {role: amqp URL}.
    Deleted afterwards."""
    tag = os.urandom(4).hex()
    vhost = "lp-" + tag
    defs = json.loads(secrets["rabbitmq_definitions.json"])
    names = {u["name"]: "lp-%s-%s" % (tag, u["name"]) for u in defs["users"]}
    roles = ("chance", "logger")
    mine = {
        "vhosts": [{"name": vhost}],
        "users": [dict(u, name=names[u["name"]]) for u in defs["users"] if u["name"] in roles],
        "permissions": [dict(p, user=names[p["user"]], vhost=vhost)
                        for p in defs["permissions"] if p["user"] in roles],
    }
    for kind in ("exchanges", "queues", "bindings"):
        mine[kind] = [dict(x, vhost=vhost) for x in defs[kind]]
    assert len(mine["users"]) == 2 and len(mine["permissions"]) == 2, defs
    assert {q["name"] for q in mine["queues"]} == {QUEUE, QUEUE + ".dlq"}, defs
    f = scratch("rabbit-defs") / "definitions.json"
    f.write_text(json.dumps(mine))
    shared_rabbitmqctl("import_definitions", str(f))
    f.unlink()  # it holds passwords
    broker = urllib.parse.urlsplit(amqp_url)
    urls = {}
    for u in mine["users"]:
        role = next(r for r in roles if names[r] == u["name"])
        urls[role] = "amqp://%s:%s@%s:%d/%s" % (u["name"], u["password"], broker.hostname,
                                                broker.port, vhost)
    # the import is asynchronous: wait until both users can log in
    import pika
    for url in urls.values():
        wait_for(lambda url=url: _can_connect(pika, url), timeout=60, what="user of " + url)
    yield urls
    shared_rabbitmqctl("delete_vhost", vhost)
    for n in mine["users"]:
        shared_rabbitmqctl("delete_user", n["name"])


def _can_connect(pika, url):
    try:
        pika.BlockingConnection(pika.URLParameters(url)).close()
        return True
    except Exception:
        return False


def refused(url, action):
    """Runs action(channel) as the user of url; the broker's reply code when it closes the
    channel (403 ACCESS_REFUSED expected), or None if the action went through."""
    import pika
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        try:
            action(ch)
        except pika.exceptions.ChannelClosedByBroker as e:
            return e.reply_code
        return None
    finally:
        try:
            conn.close()
        except Exception:
            pass


def check_queue_permissions(urls):
    """Each user can do its part and nothing else, on the topology the daemons declared."""
    import pika
    # chance may not take events off the queue (or the dead-letter queue), nor touch others
    assert refused(urls["chance"], lambda ch: ch.basic_get(QUEUE)) == 403
    assert refused(urls["chance"], lambda ch: ch.basic_get(QUEUE + ".dlq")) == 403
    assert refused(urls["chance"], lambda ch: ch.queue_declare("elsewhere")) == 403
    assert refused(urls["chance"], lambda ch: ch.queue_purge(QUEUE)) == 403
    assert refused(urls["chance"], lambda ch: ch.exchange_declare(QUEUE + ".dlx", "fanout",
                                                                  durable=True)) == 403
    # the logger may not publish to the queue (so it cannot forge chance's events), nor use
    # anything but its own topology
    for exchange in ("", "amq.topic"):
        assert refused(urls["logger"], lambda ch, x=exchange: ch.basic_publish(
            x, QUEUE, b"{}", pika.BasicProperties(delivery_mode=2))) == 403, exchange
    assert refused(urls["logger"], lambda ch: ch.queue_declare("elsewhere")) == 403
    assert refused(urls["logger"], lambda ch: ch.exchange_declare("elsewhere")) == 403
    assert refused(urls["logger"], lambda ch: ch.basic_get("elsewhere")) in (403, 404)


# --- end to end ----------------------------------------------------------------------------

def chance_readyz(ch, timeout=60):
    addr = ch.addr("chance_health_listen")
    wait_until("chance /readyz 200", lambda: http_get(addr, "/readyz")[0] == 200,
               timeout=timeout)


def events_of(db, types, timeout=90):
    """Waits until the logger stored at least one event of each type; {type: [events]}."""
    def found():
        got = {}
        for ev in db["events"].find({"type": {"$in": list(types)}}):
            got.setdefault(ev["type"], []).append(ev)
        return got if set(got) >= set(types) else None
    return wait_until("events %s in MongoDB" % sorted(types), found, timeout=timeout)


def test_chance_and_logger_work_with_their_own_users(chanced, acl_redis, acl_admin, rabbit_users,
                                                     store):
    """Every chance pattern, as Redis user `chance`; the relay publishes as RabbitMQ user chance
    and the logger consumes as logger: the events end in MongoDB. Redis refused nothing."""
    ch = chanced("chance", redis_url=acl_redis.url(), amqp_url=rabbit_users["chance"],
                 amqp_queue=QUEUE, relay_sweep_ms=200)
    lg = chanced("logger", amqp_url=rabbit_users["logger"], amqp_queue=QUEUE,
                 mongo_url=store[0])
    chance_readyz(ch)
    wait_ready(lg, timeout=60)
    with NestClient(*ch.hostport(), timeout=30) as c:
        batch = c.call("chance.generate", {"categories": 2, "codes_per_category": 6,
                                           "reward_min": 1000, "reward_max": 9000,
                                           "per_user_limit": 2, "batch_key": "lp-1",
                                           "name": "Least", "actor": ACTOR})["batch"]
        deadline = time.monotonic() + 120
        while batch["state"] == "generating":
            assert time.monotonic() < deadline, batch
            time.sleep(0.1)
            batch = c.call("chance.batch", {"id": batch["id"]})["batch"]
        assert batch["state"] == "ready", batch
        again = c.call("chance.generate", {"categories": 2, "codes_per_category": 6,
                                           "reward_min": 1000, "reward_max": 9000,
                                           "batch_key": "lp-1", "actor": ACTOR})["batch"]
        assert again["id"] == batch["id"]
        cat, cat2 = batch["categories"]
        got = c.call("chance.claim", {"claim_id": "lp-a", "category": cat,
                                      "user": {"id": 7, "username": "u7"}})
        assert c.call("chance.claim", {"claim_id": "lp-a", "category": cat,
                                       "user": {"id": 7, "username": "u7"}})["replay"] is True
        c.call("chance.claim", {"claim_id": "lp-b", "category": cat,
                                "user": {"id": 8, "username": "u8"}})
        items = c.call("chance.categories", {"claimable": True, "user": 7})["items"]
        assert {i["id"]: i["user_claims"] for i in items}[cat] == 1
        assert c.call("chance.categories", {"after": cat, "limit": 1})["items"][0]["id"] == cat2
        upd = c.call("chance.category.update", {"category": cat2, "enabled": False,
                                                "per_user_limit": 3, "actor": ACTOR})
        assert upd["enabled"] is False
        for req in ({"category": cat}, {"category": cat, "status": "available"},
                    {"category": cat, "status": "assigned"}, {"category": cat, "user": 7},
                    {"code": got["code"]}):
            assert c.call("chance.codes", req)["items"], req
        page = c.call("chance.codes", {"category": cat, "limit": 2})
        assert c.call("chance.codes", {"category": cat, "cursor": page["next_cursor"]})["items"]
        page = c.call("chance.codes", {"category": cat, "status": "available", "limit": 2})
        c.call("chance.codes", {"category": cat, "status": "available",
                                "cursor": page["next_cursor"]})
        page = c.call("chance.codes", {"category": cat, "status": "assigned", "limit": 1})
        c.call("chance.codes", {"category": cat, "status": "assigned",
                                "cursor": page["next_cursor"]})
        assert c.call("chance.code", {"code": got["code"]})["status"] == "assigned"
        log = c.call("chance.assignments", {"category": cat})["items"]
        assert len(log) == 2
        assert c.call("chance.verify", {"category": cat, "items": [
            {"code": got["code"], "claim_id": "lp-a"}]})["mismatches"] == []
        rel = c.call("chance.release", {"claim_id": "lp-a", "category": cat, "reason": "lp"})
        assert rel == {"released": True, "code": got["code"]}
        rep = c.call("chance.reassign", {"category": cat, "code": got["code"],
                                         "claim_id": "lp-a",
                                         "user": {"id": 7, "username": "u7"},
                                         "reward": got["reward"]})
        assert rep["repaired"] is True
        with pytest.raises(NestError):
            c.call("chance.claim", {"claim_id": "lp-c", "category": cat2,
                                    "user": {"id": 9, "username": "u9"}})  # disabled
    # the relay publishes (as chance) and the logger stores (as logger)
    stored = events_of(store[1], ["batch.generated", "code.assigned", "claim.released",
                                  "code.repaired", "category.changed"])
    assert len(stored["code.assigned"]) == 2
    ch.stop()  # drains the relay; nothing it did may have been refused
    assert "NOPERM" not in ch.log_text()
    assert denied(acl_admin) == [], "Redis refused chance something"
    check_queue_permissions(rabbit_users)


def test_gateway_claims_as_its_own_role(chanced, chanced_bin, app_db, acl_redis, acl_admin,
                                        rabbit_users, store):
    """The whole claim flow over HTTP with every role on its least-privilege user: the gateway
    as the PostgreSQL role of chanced-role.sql (it migrates at start), chance as the Redis and
    RabbitMQ user chance, the logger as RabbitMQ user logger."""
    url, role, _password, super_db = app_db
    ch = chanced("chance", redis_url=acl_redis.url(), amqp_url=rabbit_users["chance"],
                 amqp_queue=QUEUE, relay_sweep_ms=200)
    lg = chanced("logger", amqp_url=rabbit_users["logger"], amqp_queue=QUEUE,
                 mongo_url=store[0])
    chance_readyz(ch)
    wait_ready(lg, timeout=60)
    keys = dict(GATEWAY_TEST_KEYS, postgres_url=url)
    gw = chanced("gateway", start_timeout=60, **keys)
    gateway_ready(gw.port, timeout=60)
    p = create_user(chanced_bin, url, "root", "admin password 1", admin=True)
    assert p.returncode == 0, p.stderr
    admin = login(gw.port, "root", "admin password 1")
    r = admin.post("/admin/batches", {"categories": 1, "codes_per_category": 4,
                                      "reward_min": 1000, "reward_max": 5000})
    assert r.status == 202, r
    batch = r.json["batch"]
    batch = wait_for(lambda: _ready_batch(admin, batch["id"]), timeout=120, what="batch ready")
    r = request(gw.port, "POST", "/api/v1/auth/signup", {"username": "alice",
                                                          "password": "alice password 1"})
    assert r.status == 201, r
    alice = Client(gw.port, r.json["token"], r.json["user"])
    r = alice.claim(batch["categories"][0], key="k1")
    assert r.status == 201, r
    reward = r.json["reward"]
    wallet = alice.get("/wallet")
    assert wallet.status == 200 and wallet.json["balance"] == reward, wallet
    rows = pg_rows(super_db, 'SELECT user_id, amount FROM "%s".ledger' % role)
    assert rows == [(int(alice.id), reward)]
    events_of(store[1], ["user.signed_up", "batch.generated", "code.assigned",
                         "claim.credited"])
    gw.stop()
    ch.stop()
    assert denied(acl_admin) == []
    # every gateway connection was the role's own
    assert pg_rows(super_db, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                             "current_database() AND usename <> %s AND pid <> pg_backend_pid()",
                   (role,)) == [(0,)]


def login(port, username, password):
    for _ in range(20):
        r = request(port, "POST", "/api/v1/auth/login", {"username": username,
                                                         "password": password})
        if r.status != 503:
            break
        time.sleep(1)
    assert r.status == 200, r
    return Client(port, r.json["token"], r.json["user"])


def _ready_batch(admin, batch_id):
    r = admin.get("/admin/batches/%d" % batch_id)
    assert r.status == 200, r
    if r.json["batch"]["state"] == "generating":
        return None
    assert r.json["batch"]["state"] == "ready", r
    return r.json["batch"]

