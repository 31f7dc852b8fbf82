"""Static checks of the deployment files against the binary they deploy.

No Docker engine exists on the build machines and systemd is not PID 1, so nothing here starts a
container or a unit.  Instead every name the files use is checked against the real binary
($CHANCED_BIN) at test time: the keys come from `chanced config markdown`, the flags and
variables are fed to `chanced config check` (which shows where each value came from), and
`chanced healthcheck` is asked which address it would probe.  The files checked:

    compose.yaml                 parses (and `docker compose config` where Compose exists); every
                                 reference resolves; healthchecks everywhere; networks, ports,
                                 secrets; each service's env and flags accepted by the binary;
                                 chance and logger scale (--scale)
    Dockerfile, .dockerignore    bookworm multi-stage, non-root, exec-form ENTRYPOINT,
                                 HEALTHCHECK via the binary, EXPOSE, runtime packages cover
                                 `ldd`, the COPY set builds
    deploy/chanced@.service      directives, `systemd-analyze verify` and `security`, one
                                 credential per secret key, read by the daemon itself
    deploy/chanced.conf.example  every key of the binary, with its default; `config check` passes
    deploy/secrets/README.md     its generator block runs and yields consistent secrets
    deploy/{postgres,redis,rabbitmq,mongo}
                                 least privilege: each role's own store user, made by the init
                                 scripts, ACL and definitions compose mounts (run for real by
                                 test_least_privilege.py)
    docs/deploy.md               every CHANCED_* variable it names exists; the per-role env
                                 files set only keys their role reads

The example config is generated from the binary:

    /usr/bin/python3 test/integration/test_deploy.py --write-example [path/to/chanced]
"""

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
UNIT = ROOT / "deploy" / "chanced@.service"
EXAMPLE = ROOT / "deploy" / "chanced.conf.example"
SECRETS_README = ROOT / "deploy" / "secrets" / "README.md"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
RULES_FILE = ROOT / "deploy" / "redis" / "chance.acl-rules"

STRICT = os.environ.get("CHANCED_TEST_STRICT") == "1"
BIN_IN_IMAGE = "/usr/local/bin/chanced"
ROLES = ("gateway", "chance", "logger")
# Where each role serves /readyz, the address `chanced healthcheck --role=ROLE` probes: a key of
# the role's own module (docs/architecture.md#health-readiness-and-metrics)
HEALTH_KEY = {role: "%s_health_listen" % role for role in ("gateway", "chance", "logger")}
# The key tables each role reads: its own, the core's, and the RabbitMQ one for the two roles
# that use the audit queue (docs/architecture.md#configuration)
ROLE_MODULES = {"gateway": ("core", "gateway"), "chance": ("core", "rmq", "chance"),
                "logger": ("core", "rmq", "logger")}
DATABASES = {"redis": "redis/redis-stack-server", "postgres": "postgres", "rabbitmq": "rabbitmq",
             "mongo": "mongo"}
GENERATOR_READS = ("redis", "rabbitmq")  # committed deploy/ folders the secret generator reads
SANITIZER_LIB = re.compile(r"^lib(a|ub|l|t|hwa|m)san\.so")
ONE_SHOT_CONDITIONS = ("service_healthy", "service_completed_successfully")
# The internal NestJS TCP links: mutual TLS, never EXPOSEd or published (issue 10).
INTERNAL_LISTEN = ("chance_listen", "logger_listen")
# Loaded as systemd credentials though not secret: the internal links' certificate files.
TLS_FILE_CREDENTIALS = {"rpc_tls_ca", "rpc_tls_cert"}


def need(condition, why):
    """Skip (or, under `make test`, fail) when a tool the check needs is missing."""
    if not condition:
        if STRICT:
            pytest.fail(why, pytrace=False)
        pytest.skip(why)


# --- the binary ----------------------------------------------------------------------------

def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CHANCED_") and k != "NOTIFY_SOCKET"}
    env.update(extra or {})
    return env


def run_bin(binary, args, env=None, timeout=30):
    return subprocess.run([binary] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, env=clean_env(env), timeout=timeout)


MD_ROW = re.compile(r"^\|\s*`(?P<key>[^`]+)`\s*\|\s*(?:`(?P<default>[^`]*)`)?\s*\|"
                    r"\s*(?P<module>[^|]+?)\s*\|\s*(?P<desc>.*?)\s*\|\s*$")
DUMP_LINE = re.compile(r"^(?P<key>[a-z0-9_]+) = (?P<value>.*?)  # (?P<source>[a-z]+)$")


def key_table(binary):
    """[(key, default, module, description, secret)] from `chanced config markdown`, in order."""
    p = run_bin(binary, ["config", "markdown"])
    assert p.returncode == 0, p.stderr
    rows = []
    for line in p.stdout.splitlines():
        m = MD_ROW.match(line)
        if m:
            desc = m.group("desc")
            rows.append((m.group("key"), m.group("default") or "", m.group("module"), desc,
                         "Secret;" in desc or "Secret." in desc))
    assert rows, "`chanced config markdown` printed no key rows:\n" + p.stdout
    return rows


def parse_dump(text):
    """`chanced config check` output -> {key: [(value, source), ...]} (a key may repeat)."""
    out = {}
    for line in text.splitlines():
        m = DUMP_LINE.match(line)
        if m:
            out.setdefault(m.group("key"), []).append((m.group("value"), m.group("source")))
    return out


@pytest.fixture(scope="module")
def keys(chanced_bin):
    return key_table(chanced_bin)


@pytest.fixture(scope="module")
def key_names(keys):
    return {k for k, *_ in keys}


@pytest.fixture(scope="module")
def secret_keys(keys):
    return {k for k, _, _, _, secret in keys if secret}


@pytest.fixture(scope="module")
def defaults(keys):
    """{key: {module: default}}"""
    out = {}
    for k, d, mod, _, _ in keys:
        out.setdefault(k, {})[mod] = d
    return out


def config_check(binary, args=(), env=None):
    """Runs `chanced ARGS config check`; returns (process, parsed dump)."""
    p = run_bin(binary, list(args) + ["config", "check"], env=env)
    return p, parse_dump(p.stdout)


def check_env_accepted(binary, env, key_names, secret_keys, args=(), what="environment"):
    """Every CHANCED_* variable of env must be a key (or a secret's _FILE variant) that the binary
    takes: `config check` must show it coming from the environment, with that value.  (Unknown
    CHANCED_* variables are skipped silently by the daemon, so the dump is the only proof.)"""
    p, dump = config_check(binary, args, env)
    assert p.returncode == 0, "%s rejected by `chanced config check` (exit %d): %s" % (
        what, p.returncode, p.stderr.strip())
    for var, value in env.items():
        assert var.startswith("CHANCED_"), "%s: %s is not a CHANCED_* variable" % (what, var)
        if var == "CHANCED_ROLE":
            continue
        key = var[len("CHANCED_"):].lower()
        if key.endswith("_file") and key not in key_names:
            base = key[:-len("_file")]
            assert base in secret_keys, "%s: %s: %s is not a secret key of the binary" % (
                what, var, base)
            entries = dump.get(base, [])
            assert entries and all(s == "env" and v == "(redacted)" for v, s in entries), \
                "%s: %s was not taken from the environment: %s" % (what, var, entries)
            continue
        assert key in key_names, "%s: %s: the binary has no key %s" % (what, var, key)
        entries = dump.get(key, [])
        assert entries and all(s == "env" for _, s in entries), \
            "%s: %s was not taken from the environment: %s" % (what, var, entries)
        if key not in secret_keys:
            assert all(v == value for v, _ in entries), "%s: %s=%s shows as %s" % (
                what, var, value, entries)
    return dump


# --- secrets: the generator block of deploy/secrets/README.md ------------------------------

def secrets_block():
    text = SECRETS_README.read_text()
    m = re.search(r"<!-- generate-secrets.*?-->\s*```sh\n(.*?)```", text, re.S)
    assert m, "%s has no ```sh block after <!-- generate-secrets -->" % SECRETS_README
    return m.group(1)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Runs the documented generator in a scratch copy of the tree (with the committed files it
    reads: deploy/redis, deploy/rabbitmq); {file name: Path}."""
    top = tmp_path_factory.mktemp("secrets")
    (top / "deploy" / "secrets").mkdir(parents=True)
    for sub in GENERATOR_READS:
        shutil.copytree(ROOT / "deploy" / sub, top / "deploy" / sub)
    p = subprocess.run(["sh", "-c", secrets_block()], cwd=top, capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, "secret generator failed:\n%s%s" % (p.stdout, p.stderr)
    d = top / "deploy" / "secrets"
    return {f.name: f for f in d.iterdir()}


# --- compose -------------------------------------------------------------------------------

VAR = re.compile(r"\$\$|\$\{(?P<braced>[^}]*)\}|\$(?P<name>[A-Za-z_][A-Za-z0-9_]*)|\$")


def interpolate(value, where):
    """Compose's variable interpolation, for a file that must not depend on the caller's
    environment: $$ is a literal $, ${VAR:-default} takes the default, anything else fails."""
    if isinstance(value, dict):
        return {k: interpolate(v, "%s.%s" % (where, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, "%s[%d]" % (where, i)) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(m):
        if m.group(0) == "$$":
            return "$"
        braced = m.group("braced")
        if braced is not None:
            for op in (":-", "-"):
                if op in braced:
                    return braced.split(op, 1)[1]
        raise AssertionError("%s: %r needs a variable from the environment (or is an unescaped "
                             "$; write $$)" % (where, m.group(0)))
    return VAR.sub(sub, value)


@pytest.fixture(scope="module")
def compose():
    try:
        import yaml
    except ImportError:
        need(False, "python3-yaml is missing (test/deps.sh should install it)")
    with open(COMPOSE) as f:
        doc = yaml.safe_load(f)
    assert isinstance(doc, dict)
    return interpolate(doc, "compose.yaml")


def services(compose):
    return compose["services"]


def role_of(svc):
    """The --role=X of a service's command, or None."""
    cmd = svc.get("command") or []
    if isinstance(cmd, str):
        cmd = shlex.split(cmd)
    roles = [a.split("=", 1)[1] for a in cmd if a.startswith("--role=")]
    return roles[0] if roles else None


def uses_image(svc):
    return "build" in svc or str(svc.get("image", "")).startswith("chanced")


def chanced_services(compose):
    return {n: s for n, s in services(compose).items() if uses_image(s)}


def role_services(compose):
    return {n: s for n, s in chanced_services(compose).items() if role_of(s)}


def env_of(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def secret_mounts(svc):
    """{path in the container: secret name} for a service's secrets."""
    out = {}
    for s in svc.get("secrets") or []:
        if isinstance(s, str):
            src, target = s, s
        else:
            src, target = s["source"], s.get("target", s["source"])
        path = target if target.startswith("/") else "/run/secrets/" + target
        out[path] = src
    return out


def config_mounts(svc):
    """{path in the container: config name} for a service's configs."""
    out = {}
    for c in svc.get("configs") or []:
        if isinstance(c, str):
            src, target = c, "/" + c
        else:
            src, target = c["source"], c.get("target", "/" + c["source"])
        out[target] = src
    return out


def config_file_of(compose, svc, path):
    """The repository file compose mounts at path in svc."""
    return ROOT / compose["configs"][config_mounts(svc)[path]]["file"]


def is_one_shot(svc, compose=None):
    """A service that runs to its end: restart "no", started by hand (a profile) or before the
    services that wait for it to complete (service_completed_successfully)."""
    if str(svc.get("restart", "no")) != "no":
        return False
    if svc.get("profiles"):
        return True
    return compose is not None and any(
        (spec or {}).get("condition") == "service_completed_successfully" and
        services(compose).get(dep) is svc
        for s in services(compose).values() for dep, spec in (s.get("depends_on") or {}).items())


def secret_file_of(compose, generated, name):
    rel = compose["secrets"][name]["file"]
    return generated[Path(rel).name]


def localize(compose, generated, svc, text):
    """Rewrites the /run/secrets/... paths in text to the generated files mounted there."""
    for path, name in secret_mounts(svc).items():
        text = text.replace(path, str(secret_file_of(compose, generated, name)))
    return text


def test_compose_parses_without_outside_variables(compose):
    assert set(compose) <= {"name", "services", "networks", "volumes", "secrets", "configs"} | {
        k for k in compose if k.startswith("x-")}, "unexpected top-level keys: %s" % list(compose)
    assert "version" not in compose  # obsolete: Compose warns about it
    assert compose.get("services"), "no services"


def test_docker_compose_config(tmp_path, generated):
    """`docker compose config` validates against the real Compose schema; it needs no engine,
    only the Compose plugin (absent on the build machines: then this is skipped)."""
    docker = shutil.which("docker")
    ok = docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                   timeout=30).returncode == 0
    if not ok:
        pytest.skip("no `docker compose` here (python3-yaml checks above still ran)")
    # a scratch copy with the secret files in place, as a real deployment has them
    shutil.copy(COMPOSE, tmp_path / "compose.yaml")
    (tmp_path / "deploy" / "secrets").mkdir(parents=True)
    for name, f in generated.items():
        shutil.copy(f, tmp_path / "deploy" / "secrets" / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    p = subprocess.run([docker, "compose", "-f", str(tmp_path / "compose.yaml"), "--profile",
                        "setup", "config", "--quiet"], capture_output=True, text=True, env=env,
                       timeout=60)
    assert p.returncode == 0, p.stderr


def test_compose_has_the_databases_and_the_roles(compose):
    svcs = services(compose)
    for name, image in DATABASES.items():
        assert name in svcs, "no %s service" % name
        assert str(svcs[name].get("image", "")).startswith(image), \
            "%s: image %s, want %s" % (name, svcs[name].get("image"), image)
    assert re.match(r"^postgres:1[5-9]", svcs["postgres"]["image"])
    assert "management" in svcs["rabbitmq"]["image"]
    assert re.match(r"^mongo:[7-9]", svcs["mongo"]["image"])
    roles = {role_of(s): n for n, s in role_services(compose).items()}
    assert set(roles) == set(ROLES), "role services: %s" % roles
    # one image for all: same image name and the same build of this repository's Dockerfile
    images = {json.dumps([s.get("image"), s.get("build")], sort_keys=True)
              for s in chanced_services(compose).values()}
    assert len(images) == 1, "the chanced services differ in image/build: %s" % images
    svc = next(iter(chanced_services(compose).values()))
    build = svc["build"] if isinstance(svc["build"], dict) else {"context": svc["build"]}
    assert (ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).resolve() \
        == DOCKERFILE.resolve()


def test_compose_references_resolve(compose):
    svcs = services(compose)
    nets = set(compose.get("networks") or {})
    vols = set(compose.get("volumes") or {})
    secrets = set(compose.get("secrets") or {})
    for name, svc in svcs.items():
        deps = svc.get("depends_on") or {}
        for dep in deps:
            assert dep in svcs, "%s depends on %s, which is not a service" % (name, dep)
        sn = svc.get("networks") or []
        for net in sn:
            assert net in nets, "%s: network %s is not declared" % (name, net)
        for v in svc.get("volumes") or []:
            src = v.split(":", 1)[0] if isinstance(v, str) else v.get("source", "")
            if src and not src.startswith((".", "/", "~")):
                assert src in vols, "%s: volume %s is not declared" % (name, src)
        for path, s in secret_mounts(svc).items():
            assert s in secrets, "%s: secret %s is not declared" % (name, s)
        for path, c in config_mounts(svc).items():
            assert c in (compose.get("configs") or {}), "%s: config %s is not declared" % (name, c)
    for name, c in (compose.get("configs") or {}).items():
        assert "file" in c, "config %s: only file configs are used" % name
        f = ROOT / c["file"]
        assert f.is_file() and f.resolve().is_relative_to(ROOT / "deploy"), \
            "config %s: %s is not a file of deploy/" % (name, c["file"])
    for name, s in (compose.get("secrets") or {}).items():
        assert "file" in s, "secret %s: only file secrets are used" % name
        assert Path(s["file"]).parent == Path("deploy/secrets"), \
            "secret %s lives outside deploy/secrets/: %s" % (name, s["file"])


def test_compose_secret_files_come_from_the_generator(compose, generated):
    wanted = {Path(s["file"]).name for s in compose["secrets"].values()}
    assert wanted <= set(generated), "generator does not write %s" % (wanted - set(generated))
    unused = set(generated) - wanted
    assert not unused, "generator writes files no service uses: %s" % unused
    for name, f in generated.items():
        mode = stat.S_IMODE(f.stat().st_mode)
        assert mode == 0o444, "%s: mode %o (the containers run as other users)" % (name, mode)
    assert stat.S_IMODE(next(iter(generated.values())).parent.stat().st_mode) == 0o700


def test_secret_generator_is_idempotent(generated):
    before = {n: f.read_text() for n, f in generated.items()}
    top = next(iter(generated.values())).parent.parent.parent
    p = subprocess.run(["sh", "-c", secrets_block()], cwd=top, capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    assert {n: f.read_text() for n, f in generated.items()} == before, "a rerun changed secrets"


def test_generated_secrets_agree_with_the_servers(compose, generated):
    """Each URL a role reads must name a compose service, its port, and a user that service is
    set up with (by its init script, ACL or definitions), with that user's password; never the
    superuser (least privilege: test_compose_least_privilege_users has the rest)."""
    svcs = services(compose)
    read = {n: f.read_text().strip() for n, f in generated.items()}

    pg = urllib.parse.urlsplit(read["postgres_url"])
    penv = env_of(svcs["postgres"])
    assert (pg.scheme, pg.hostname, pg.port or 5432) == ("postgresql", "postgres", 5432)
    assert pg.path == "/" + penv["POSTGRES_DB"]
    assert pg.username != penv["POSTGRES_USER"], "the gateway must not be the superuser"
    assert pg.password == read["postgres_password"] != read["postgres_admin_password"]
    assert penv["POSTGRES_PASSWORD_FILE"] in secret_mounts(svcs["postgres"])
    assert secret_file_of(compose, generated, secret_mounts(svcs["postgres"])[
        penv["POSTGRES_PASSWORD_FILE"]]).name == "postgres_admin_password"

    rd = urllib.parse.urlsplit(read["redis_url"])
    assert (rd.scheme, rd.hostname, rd.port) == ("redis", "redis", 6379)
    acl = re.search(r"^user %s on >(\S+) " % re.escape(rd.username or "default"),
                    read["redis_acl"], re.M)
    assert acl and rd.password == acl.group(1)
    assert "/run/secrets/redis_acl" in env_of(svcs["redis"])["REDIS_ARGS"]
    assert "--appendonly yes" in env_of(svcs["redis"])["REDIS_ARGS"]

    defs = json.loads(read["rabbitmq_definitions.json"])
    users = {u["name"]: u["password"] for u in defs["users"]}
    for role in ("chance", "logger"):
        svc = svcs[role]
        url_file = env_of(svc)["CHANCED_AMQP_URL_FILE"]
        mq = urllib.parse.urlsplit(secret_file_of(compose, generated, secret_mounts(svc)[
            url_file]).read_text().strip())
        assert (mq.scheme, mq.hostname, mq.port) == ("amqp", "rabbitmq", 5672)
        assert mq.username == role and mq.password == users[role], role
    assert "/run/secrets/rabbitmq_definitions.json" in secret_mounts(svcs["rabbitmq"])

    mg = urllib.parse.urlsplit(read["mongo_url"])
    menv = env_of(svcs["mongo"])
    assert (mg.scheme, mg.hostname, mg.port) == ("mongodb", "mongo", 27017)
    assert mg.username != menv["MONGO_INITDB_ROOT_USERNAME"], "the logger must not be root"
    assert mg.password == read["mongo_password"] != read["mongo_root_password"]
    assert urllib.parse.parse_qs(mg.query)["authSource"] == [mg.path.lstrip("/")]
    assert menv["MONGO_INITDB_ROOT_PASSWORD_FILE"] in secret_mounts(svcs["mongo"])
    assert secret_file_of(compose, generated, secret_mounts(svcs["mongo"])[
        menv["MONGO_INITDB_ROOT_PASSWORD_FILE"]]).name == "mongo_root_password"
    assert len(read["admin_password"]) >= 12


def _init_script(compose, svc, suffix):
    """(path in the container, repository file) of the one init script of a database service."""
    found = [(path, config_file_of(compose, svc, path)) for path in config_mounts(svc)
             if path.startswith("/docker-entrypoint-initdb.d/") and path.endswith(suffix)]
    assert len(found) == 1, "want one %s init script, got %s" % (suffix, found)
    return found[0]


def test_compose_least_privilege_users(compose, generated, defaults):
    """Each role's own store user exists in the compose setup with only what it needs."""
    svcs = services(compose)
    read = {n: f.read_text().strip() for n, f in generated.items()}

    # PostgreSQL: the init script runs chanced-role.sql for the URL's user with its password
    pg = urllib.parse.urlsplit(read["postgres_url"])
    path, script = _init_script(compose, svcs["postgres"], ".sh")
    assert os.access(script, os.X_OK), "%s must be executable" % script
    text = script.read_text()
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
    assert "app_user=%s" % pg.username in text
    pwfile = re.search(r"app_password_file=(\S+)", text).group(1)
    assert secret_file_of(compose, generated, secret_mounts(svcs["postgres"])[pwfile]).name == \
        "postgres_password"
    sql_path = re.search(r"-f (\S+)", text).group(1)
    sql = config_file_of(compose, svcs["postgres"], sql_path).read_text()
    create = re.search(r"^CREATE ROLE :\"app_user\"(.*?);", sql, re.M | re.S).group(1)
    for flag in ("NOSUPERUSER", "NOCREATEDB", "NOCREATEROLE", "NOREPLICATION", "NOBYPASSRLS"):
        assert flag in create, flag
    assert 'CREATE SCHEMA :"app_user" AUTHORIZATION :"app_user"' in sql
    assert "REVOKE ALL ON SCHEMA public FROM PUBLIC" in sql
    assert not re.search(r"GRANT\s+ALL|SUPERUSER\b(?<!NOSUPERUSER)|CREATEDB\b(?<!NOCREATEDB)",
                         sql.replace("NOSUPERUSER", "").replace("NOCREATEDB", ""))

    # MongoDB: the init script makes the URL's user with readWrite on the URL's database only
    mg = urllib.parse.urlsplit(read["mongo_url"])
    path, script = _init_script(compose, svcs["mongo"], ".js")
    js = script.read_text()
    if shutil.which("node"):
        p = subprocess.run(["node", "--check", str(script)], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
    db = mg.path.lstrip("/")
    assert "db.getSiblingDB('%s').createUser(" % db in js
    assert "user: '%s'" % mg.username in js
    assert re.findall(r"role: '(\w+)', db: '(\w+)'", js) == [("readWrite", db)]
    secret = re.search(r"readFileSync\('([^']+)'", js).group(1)
    assert secret_file_of(compose, generated, secret_mounts(svcs["mongo"])[secret]).name == \
        "mongo_password"

    # Redis: default off; chance has exactly the committed rules, which grant no "all"
    rules = [ln for ln in RULES_FILE.read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(rules) == 1
    acl = read["redis_acl"].splitlines()
    assert acl[0] == "user default off"
    chance = [ln for ln in acl if ln.startswith("user chance on >")]
    assert len(chance) == 1 and chance[0].split(" ", 4)[4] == rules[0]
    words = rules[0].split()
    assert "~chance:*" in words and "-@all" in words and "resetchannels" in words
    assert not {"~*", "allkeys", "+@all", "allcommands", "&*", "allchannels", "nopass"} & set(words)
    assert words.index("-@all") < min(i for i, w in enumerate(words) if w.startswith("+"))

    # RabbitMQ: the definitions the broker loads; per-role users on the real queue name
    conf = config_file_of(compose, svcs["rabbitmq"], "/etc/rabbitmq/conf.d/20-chanced.conf")
    loaded = re.search(r"^load_definitions\s*=\s*(\S+)$", conf.read_text(), re.M).group(1)
    assert secret_mounts(svcs["rabbitmq"])[loaded] == "rabbitmq_definitions"
    defs = json.loads(read["rabbitmq_definitions.json"])
    queue = defaults["amqp_queue"]["rmq"]
    perms = {p["user"]: p for p in defs["permissions"] if p["vhost"] == "/"}

    def may(user, what, name):
        return bool(re.search(perms[user][what], name)) if perms[user][what] else False
    names = ("amq.default", queue, queue + ".dlq", queue + ".dlx", "amq.topic", "other")
    assert [n for n in names if may("chance", "write", n)] == ["amq.default"]
    assert [n for n in names if may("chance", "read", n)] == []
    assert [n for n in names if may("chance", "configure", n)] == []
    assert [n for n in names if may("logger", "read", n)] == [queue, queue + ".dlx"]
    assert [n for n in names if may("logger", "write", n)] == [queue + ".dlq", queue + ".dlx"]
    assert [n for n in names if may("logger", "configure", n)] == [queue, queue + ".dlq",
                                                                     queue + ".dlx"]
    assert {u["name"] for u in defs["users"]} == {"admin", "chance", "logger"}
    assert not [u for u in defs["users"] if u["name"] != "admin" and u["tags"]]
    # the topology, exactly as src/rmq.c declares it (else the logger's declare fails: 406)
    qs = {q["name"]: q for q in defs["queues"]}
    assert qs[queue]["arguments"] == {"x-queue-type": "quorum",
                                      "x-dead-letter-exchange": queue + ".dlx"}
    assert qs[queue + ".dlq"]["arguments"] == {"x-queue-type": "quorum"}
    assert all(q["durable"] and not q["auto_delete"] for q in qs.values())
    assert [(x["name"], x["type"], x["durable"]) for x in defs["exchanges"]] == [
        (queue + ".dlx", "fanout", True)]
    assert [(b["source"], b["destination"], b["destination_type"]) for b in defs["bindings"]] == [
        (queue + ".dlx", queue + ".dlq", "queue")]

    # and the docs show the Redis rules as they are
    assert rules[0] in " ".join(DEPLOY_DOC.read_text().split())


def test_compose_every_service_has_a_healthcheck(compose):
    for name, svc in services(compose).items():
        hc = svc.get("healthcheck") or {}
        if is_one_shot(svc, compose):
            continue  # a one-shot (profile, restart: "no") finishes instead of serving
        assert not hc.get("disable"), "%s: healthcheck disabled" % name
        test = hc.get("test")
        assert test, "%s has no healthcheck" % name
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL"), \
            "%s: healthcheck test should be [CMD, ...] or [CMD-SHELL, ...]: %r" % (name, test)
        if test[0] == "CMD-SHELL":
            p = subprocess.run(["sh", "-n", "-c", test[1]], capture_output=True, text=True)
            assert p.returncode == 0, "%s: healthcheck shell syntax: %s" % (name, p.stderr)


def test_compose_role_healthchecks_use_the_binary(compose):
    for name, svc in role_services(compose).items():
        role = role_of(svc)
        assert svc["healthcheck"]["test"] == ["CMD", BIN_IN_IMAGE, "healthcheck",
                                              "--role=%s" % role], name
        # the image's own HEALTHCHECK (no --role) reads CHANCED_ROLE: keep it the same role
        assert env_of(svc).get("CHANCED_ROLE") == role, \
            "%s: CHANCED_ROLE must equal --role=%s" % (name, role)


def test_compose_depends_on_waits_for_health(compose):
    svcs = services(compose)
    for name, svc in svcs.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), "%s: depends_on needs the long form with a condition" % name
        for dep, spec in deps.items():
            cond = (spec or {}).get("condition")
            assert cond in ONE_SHOT_CONDITIONS, "%s -> %s: condition %s" % (name, dep, cond)
            if cond == "service_healthy":
                assert (svcs[dep].get("healthcheck") or {}).get("test"), \
                    "%s waits for %s to be healthy, but it has no healthcheck" % (name, dep)


def test_compose_roles_depend_on_what_they_connect_to(compose, generated):
    """Each host a role connects to (URLs in its secrets, *_addr keys) is a service it waits
    for and shares a network with."""
    svcs = services(compose)
    for name, svc in chanced_services(compose).items():
        hosts = set()
        for var, value in env_of(svc).items():
            if var.endswith("_ADDR"):
                hosts.add(value.rsplit(":", 1)[0])
            elif var.endswith("_URL_FILE"):
                url = secret_file_of(compose, generated, secret_mounts(svc)[value]).read_text()
                hosts.add(urllib.parse.urlsplit(url.strip()).hostname)
        assert hosts or is_one_shot(svc, compose), "%s connects to nothing?" % name
        for host in hosts:
            assert host in svcs, "%s connects to %s, which is not a service" % (name, host)
            assert host in (svc.get("depends_on") or {}), "%s does not wait for %s" % (name, host)
            shared = set(svc.get("networks") or ["default"]) & set(
                svcs[host].get("networks") or ["default"])
            assert shared, "%s and %s share no network" % (name, host)


def test_compose_networks_keep_databases_internal(compose):
    nets = compose.get("networks") or {}
    internal = {n for n, spec in nets.items() if (spec or {}).get("internal")}
    assert internal, "no internal network"
    svcs = services(compose)
    for name, svc in svcs.items():
        sn = set(svc.get("networks") or ["default"])
        if name in DATABASES or (uses_image(svc) and role_of(svc) != "gateway"):
            assert sn <= internal, "%s must be on internal networks only: %s" % (name, sn)
            assert not svc.get("ports"), "%s publishes ports" % name
    gw = next(s for s in role_services(compose).values() if role_of(s) == "gateway")
    assert set(gw["networks"]) - internal, "the gateway needs a non-internal (front) network"


def test_compose_ports_only_on_loopback(compose, defaults):
    published = []
    for name, svc in services(compose).items():
        for p in svc.get("ports") or []:
            if isinstance(p, dict):
                assert p.get("host_ip") == "127.0.0.1", "%s: %s" % (name, p)
                target = int(p["target"])
            else:
                parts = str(p).split(":")
                assert len(parts) == 3 and parts[0] == "127.0.0.1", \
                    "%s publishes %s: only 127.0.0.1:HOST:CONTAINER is allowed" % (name, p)
                target = int(parts[2].split("/")[0])
            published.append((name, target))
    gw = next(n for n, s in role_services(compose).items() if role_of(s) == "gateway")
    http = env_of(services(compose)[gw]).get("CHANCED_HTTP_LISTEN") or \
        defaults["http_listen"]["gateway"]
    assert (gw, int(http.rsplit(":", 1)[1])) in published, \
        "the gateway's http_listen port is not published: %s" % published


@pytest.mark.parametrize("role", ROLES)
def test_compose_role_env_and_flags_are_real(role, compose, generated, chanced_bin, key_names,
                                             secret_keys, defaults):
    name, svc = next((n, s) for n, s in role_services(compose).items() if role_of(s) == role)
    cmd = svc["command"]
    assert cmd == ["--role=%s" % role], "%s: command %r" % (name, cmd)
    env = {k: localize(compose, generated, svc, v) for k, v in env_of(svc).items()}
    for path in secret_mounts(svc):
        assert any(v == path for v in env_of(svc).values()), \
            "%s mounts %s but no *_FILE variable reads it" % (name, path)
    dump = check_env_accepted(chanced_bin, env, key_names, secret_keys, args=cmd,
                              what="compose service %s" % name)
    # listeners: every interface inside the container, on the ports the image EXPOSEs; the
    # internal links' ports are not EXPOSEd and need mutual TLS (the binary refuses otherwise)
    exposed = dockerfile_exposed()
    for key, entries in dump.items():
        if key.endswith("_listen") and any(s == "env" for _, s in entries):
            for value, _ in entries:
                host, port = value.rsplit(":", 1)
                assert host == "0.0.0.0", "%s: %s=%s" % (name, key, value)
                if key in INTERNAL_LISTEN:
                    assert int(port) not in exposed, "%s: %s port EXPOSEd" % (name, key)
                    for tls in ("rpc_tls_ca", "rpc_tls_cert", "rpc_tls_key"):
                        assert [s for _, s in dump.get(tls, [])] == ["env"], \
                            "%s: %s without %s" % (name, key, tls)
                else:
                    assert int(port) in exposed, "%s: %s port not in EXPOSE %s" % (
                        name, key, exposed)
    # in a container, a loopback default is wrong for every listener, peer address and URL of
    # the role: each must be set (a new key of that kind fails here until compose sets it)
    given = {k[len("CHANCED_"):].lower() for k in env}
    for key, by_mod in defaults.items():
        if role in by_mod and "127.0.0.1" in by_mod[role]:
            assert key in given or key + "_file" in given, \
                "%s: %s defaults to %s, wrong in a container: set CHANCED_%s%s" % (
                    name, key, by_mod[role], key.upper(), "_FILE" if key in secret_keys else "")


def test_compose_gateway_reaches_the_roles_where_they_listen(compose):
    by_role = {role_of(s): (n, env_of(s)) for n, s in role_services(compose).items()}
    gw_env = by_role["gateway"][1]
    for peer in ("chance", "logger"):
        pname, penv = by_role[peer]
        addr = gw_env.get("CHANCED_%s_ADDR" % peer.upper())
        assert addr, "the gateway does not set CHANCED_%s_ADDR" % peer.upper()
        host, port = addr.rsplit(":", 1)
        assert host in (pname, services(compose)[pname].get("hostname")), addr
        listen = penv["CHANCED_%s_LISTEN" % peer.upper()]
        assert listen.rsplit(":", 1)[1] == port, "%s listens on %s, gateway calls %s" % (
            pname, listen, addr)


def test_compose_chance_and_logger_scale(compose):
    """`docker compose up --scale chance=3 --scale logger=2` (docs/scale.md): nothing ties
    those services to one container, and the gateway names them by service name, which
    Docker's DNS resolves to every replica (a hostname would not be shared that way)."""
    by_role = {role_of(s): (n, s) for n, s in role_services(compose).items()}
    gw_env = env_of(by_role["gateway"][1])
    for peer in ("chance", "logger"):
        name, svc = by_role[peer]
        for fixed in ("container_name", "hostname", "ports"):
            assert fixed not in svc, "%s sets %s: it cannot scale" % (name, fixed)
        for addr in gw_env["CHANCED_%s_ADDR" % peer.upper()].split(","):
            assert addr.strip().rsplit(":", 1)[0] == name, \
                "the gateway calls %s, not the service name %s" % (addr, name)
    assert "docker compose up --scale chance=3 --scale logger=2" in (
        ROOT / "docs" / "scale.md").read_text()


@pytest.mark.parametrize("role", ROLES)
def test_compose_healthcheck_probes_the_role_port(role, compose, generated, chanced_bin,
                                                  defaults):
    """`chanced healthcheck --role=X` with the service's environment must probe the address the
    role serves /readyz on.  Nothing listens here, so it answers "not ready at ADDR" (or, if
    something does, "ready at ADDR"); ADDR must be the service's own setting."""
    name, svc = next((n, s) for n, s in role_services(compose).items() if role_of(s) == role)
    env = {k: localize(compose, generated, svc, v) for k, v in env_of(svc).items()}
    test = svc["healthcheck"]["test"]
    assert list(defaults.get(HEALTH_KEY[role], {})) == [role], \
        "%s is not a key of the %s module: %s" % (HEALTH_KEY[role], role,
                                                  defaults.get(HEALTH_KEY[role]))
    assert test[1] == BIN_IN_IMAGE
    p = run_bin(chanced_bin, test[2:], env=env, timeout=30)
    out = p.stdout + p.stderr
    want = env["CHANCED_" + HEALTH_KEY[role].upper()]
    m = re.search(r"\bready at (\S+)", out)
    assert p.returncode in (0, 1) and m, "healthcheck for %s: exit %d: %s" % (
        name, p.returncode, out.strip())
    assert m.group(1) == want, "%s: healthcheck probes %s, the role serves /readyz on %s (%s)" % (
        name, m.group(1), want, out.strip())


def test_compose_create_admin_uses_real_flags(compose, generated, chanced_bin, key_names,
                                              secret_keys):
    svcs = services(compose)
    assert "create-admin" in svcs
    svc = svcs["create-admin"]
    assert "setup" in (svc.get("profiles") or []) and is_one_shot(svc)
    cmd = svc["command"]
    assert cmd[:2] == ["admin", "create-user"], cmd
    usage = run_bin(chanced_bin, ["--help"]).stdout
    line = next((ln for ln in usage.splitlines() if "admin create-user" in ln), None)
    assert line, "`chanced --help` lists no `admin create-user`"
    for flag in (a.split("=", 1)[0] for a in cmd[2:] if a.startswith("--")):
        assert flag in line, "create-admin uses %s, not in: %s" % (flag, line.strip())
    assert "--password-file" in cmd, "the password must come from a file, never argv"
    env = {k: localize(compose, generated, svc, v) for k, v in env_of(svc).items()}
    check_env_accepted(chanced_bin, env, key_names, secret_keys, what="create-admin")
    for path in secret_mounts(svc):
        assert path in cmd or path in env_of(svc).values(), "create-admin: %s unused" % path


def test_compose_create_admin_runs(compose, generated, chanced_bin, fresh_postgres_url, tmp_path):
    """The create-admin command line, run for real against an empty database (the gateway's
    migrations included); twice, since it must be idempotent."""
    svc = services(compose)["create-admin"]
    url = tmp_path / "postgres_url"
    url.write_text(fresh_postgres_url + "\n")
    env = {k: localize(compose, generated, svc, v) for k, v in env_of(svc).items()}
    env["CHANCED_POSTGRES_URL_FILE"] = str(url)
    args = [localize(compose, generated, svc, a) for a in svc["command"]]
    for attempt in (1, 2):
        p = run_bin(chanced_bin, args, env=env, timeout=120)
        assert p.returncode == 0, "attempt %d: exit %d\n%s%s" % (attempt, p.returncode, p.stdout,
                                                                 p.stderr)
    import psycopg2
    conn = psycopg2.connect(fresh_postgres_url, connect_timeout=10)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT role FROM users WHERE username = 'admin'")
            assert cur.fetchall() == [("admin",)]
    finally:
        conn.close()


def test_compose_redis_healthcheck_authenticates(compose, generated, tmp_path):
    """Runs redis's healthcheck command with a stand-in redis-cli that answers PONG only when
    REDISCLI_AUTH carries the password of redis_url."""
    svc = services(compose)["redis"]
    url = urllib.parse.urlsplit(generated["redis_url"].read_text().strip())
    fake = tmp_path / "redis-cli"
    fake.write_text('#!/bin/sh\n[ "$REDISCLI_AUTH" = "%s" ] && [ "$*" = "--user %s ping" ] && '
                    'echo PONG || echo "NOAUTH Authentication required."\n'
                    % (url.password, url.username))
    fake.chmod(0o755)
    cmd = localize(compose, generated, svc, svc["healthcheck"]["test"][1])
    env = dict(os.environ, PATH="%s:%s" % (tmp_path, os.environ["PATH"]))
    assert subprocess.run(["sh", "-c", cmd], env=env, timeout=10).returncode == 0
    fake.write_text('#!/bin/sh\necho "LOADING Redis is loading the dataset in memory"\n')
    assert subprocess.run(["sh", "-c", cmd], env=env, timeout=10).returncode != 0


def test_compose_lifecycle_settings(compose, defaults):
    shutdown_ms = int(defaults["shutdown_timeout_ms"]["core"])
    for name, svc in services(compose).items():
        if is_one_shot(svc, compose):
            continue
        assert svc.get("restart") == "unless-stopped", "%s: restart %s" % (name, svc.get("restart"))
    for name, svc in chanced_services(compose).items():
        grace = svc.get("stop_grace_period", "10s")
        assert duration_ms(grace) > shutdown_ms, \
            "%s: stop_grace_period %s must exceed shutdown_timeout_ms=%d" % (name, grace,
                                                                             shutdown_ms)
        assert svc.get("read_only") is True, "%s: the daemon writes no files" % name
        assert "ALL" in (svc.get("cap_drop") or []), name
    for name in DATABASES:
        vols = services(compose)[name].get("volumes") or []
        assert any(isinstance(v, str) and not v.startswith((".", "/")) for v in vols), \
            "%s keeps its data in no named volume" % name


def duration_ms(text):
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(text)):
        total += float(num) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000, "h": 3600000}[unit]
    return total


# --- Dockerfile ----------------------------------------------------------------------------

def dockerfile_instructions():
    """[(INSTRUCTION, arguments)] with continuations joined and comments dropped."""
    out, cur = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        s = line.strip()
        if s.startswith("#") or (not s and not cur):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        if cur.strip():
            instr, _, args = cur.strip().partition(" ")
            out.append((instr.upper(), args.strip()))
        cur = ""
    return out


def dockerfile_stages():
    stages = []
    for instr, args in dockerfile_instructions():
        if instr == "FROM":
            stages.append({"from": args, "body": []})
        elif stages:  # an ARG before the first FROM is global
            stages[-1]["body"].append((instr, args))
    return stages


def apt_packages(stage):
    pkgs = []
    for instr, args in stage["body"]:
        if instr != "RUN":
            continue
        for cmd in re.split(r"&&|;", args):
            words = cmd.split()
            if "apt-get" in words and "install" in words:
                pkgs += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    return pkgs


def dockerfile_exposed():
    ports = set()
    for instr, args in dockerfile_instructions():
        if instr == "EXPOSE":
            ports |= {int(p.split("/")[0]) for p in args.split()}
    return ports


def kv_args(args):
    return dict(w.split("=", 1) for w in shlex.split(args) if "=" in w)


def test_dockerfile_is_multi_stage_on_bookworm():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "single-stage Dockerfile"
    for s in stages:
        image = s["from"].split()[0]
        assert re.match(r"^debian:bookworm(-slim)?(@sha256:[0-9a-f]+)?$", image), s["from"]
    assert stages[-1]["from"].split()[0].startswith("debian:bookworm-slim")
    build_name = stages[0]["from"].split()[-1]
    assert " AS " in stages[0]["from"].upper(), "name the build stage (FROM ... AS build)"
    copies = [a for i, a in stages[-1]["body"] if i == "COPY" and "--from=" in a]
    assert any("--from=%s" % build_name in a and BIN_IN_IMAGE in a for a in copies), \
        "the runtime stage must COPY --from=%s the binary to %s" % (build_name, BIN_IN_IMAGE)
    assert not [p for p in apt_packages(stages[-1]) if p.endswith("-dev") or
                p in ("build-essential", "gcc", "make", "pkg-config")], \
        "build tools in the runtime stage"


def test_dockerfile_runs_as_a_fixed_non_root_user():
    body = dockerfile_stages()[-1]["body"]
    users = [a for i, a in body if i == "USER"]
    assert users, "no USER in the runtime stage"
    uid = users[-1].split(":")[0]
    assert uid not in ("root", "0"), users
    assert uid.isdigit() and int(uid) >= 1000, "use a fixed numeric uid (>= 1000): %s" % uid
    runs = " ".join(a for i, a in body if i == "RUN")
    assert re.search(r"useradd\b.*--uid %s\b" % uid, runs), "uid %s is not created" % uid


def test_dockerfile_entrypoint_healthcheck_and_labels(chanced_bin):
    body = dockerfile_stages()[-1]["body"]
    entry = [a for i, a in body if i == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == [BIN_IN_IMAGE], \
        "ENTRYPOINT must be the exec form [\"%s\"]: %s" % (BIN_IN_IMAGE, entry)
    hc = [a for i, a in body if i == "HEALTHCHECK"]
    assert hc, "no HEALTHCHECK"
    m = re.search(r"\bCMD\s+(\[.*\])\s*$", hc[-1])
    assert m, "HEALTHCHECK must use CMD [exec form]: %s" % hc[-1]
    assert json.loads(m.group(1))[:2] == [BIN_IN_IMAGE, "healthcheck"]
    # its --role comes from CHANCED_ROLE: the image sets a default that the binary accepts
    env = {}
    for i, a in body:
        if i == "ENV":
            env.update(kv_args(a))
    assert env.get("CHANCED_ROLE") in ROLES + ("all",), env
    p = run_bin(chanced_bin, ["--help"])
    assert "CHANCED_ROLE" in p.stdout, "the binary no longer documents CHANCED_ROLE"
    labels = {}
    for i, a in body:
        if i == "LABEL":
            labels.update(kv_args(a))
    for label in ("title", "description", "version", "licenses", "revision", "created"):
        assert "org.opencontainers.image." + label in labels, "missing OCI label %s" % label
    args = {}
    for i, a in dockerfile_instructions():
        if i == "ARG" and "=" in a:
            args.update(kv_args(a))
    version = run_bin(chanced_bin, ["--version"]).stdout.split()[-1]
    assert args.get("VERSION") == version, "Dockerfile ARG VERSION=%s, binary %s" % (
        args.get("VERSION"), version)


def test_dockerfile_env_and_expose_match_the_binary(chanced_bin, key_names, secret_keys,
                                                    defaults):
    env = {}
    for i, a in dockerfile_stages()[-1]["body"]:
        if i == "ENV":
            env.update(kv_args(a))
    check_env_accepted(chanced_bin, env, key_names, secret_keys, what="Dockerfile ENV")
    # every listener's port, default or set by ENV, is exposed, but the internal links'
    exposed = dockerfile_exposed()
    for key, by_mod in defaults.items():
        if key.endswith("_listen") and key not in INTERNAL_LISTEN:
            values = [env.get("CHANCED_" + key.upper())] if "CHANCED_" + key.upper() in env \
                else by_mod.values()
            for v in values:
                assert int(v.rsplit(":", 1)[1]) in exposed, "%s port %s not EXPOSEd (%s)" % (
                    key, v, sorted(exposed))
    assert {8080, 9100, 9101, 9102} <= exposed and not {4001, 4002} & exposed
    assert not {"CHANCED_CHANCE_LISTEN", "CHANCED_LOGGER_LISTEN"} & set(env), \
        "the image's default --role=all keeps the internal links on loopback"


def test_dockerignore_sends_only_the_sources():
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", ".dockerignore should be an allow-list starting with *"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    for instr, args in dockerfile_instructions():
        if instr == "COPY" and "--from=" not in args:
            for src in shlex.split(args)[:-1]:
                top = src.rstrip("/").split("/")[0]
                assert top in allowed or src.rstrip("/") in allowed, \
                    "COPY %s, but .dockerignore does not allow it" % src
    for secret in ("deploy", "build", ".run", ".git", "test"):
        assert secret not in allowed


def test_dockerfile_copy_set_builds(tmp_path):
    """The files the build stage COPYs are all that `make build/chanced` needs."""
    need(shutil.which("make"), "make is not installed")
    for instr, args in dockerfile_stages()[0]["body"]:
        if instr == "COPY":
            *srcs, dest = shlex.split(args)
            for src in srcs:
                s = ROOT / src
                d = tmp_path / dest if dest not in ("./", ".") else tmp_path / Path(src).name
                if s.is_dir():
                    shutil.copytree(s, d, ignore=shutil.ignore_patterns("*.o", "*.d"))
                else:
                    shutil.copy(s, d if not dest.endswith("/") else d)
    p = subprocess.run(["make", "-n", "build/chanced"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, "make -n in a copy of the COPY set failed:\n" + p.stderr


# --- runtime libraries ---------------------------------------------------------------------

_owners = None


def dpkg_owner(path):
    """The package shipping a library path (its /usr-merged twin counts too), or None.  Reads
    dpkg's file lists once: a `dpkg -S` per library is slow."""
    global _owners
    if _owners is None:
        _owners = {}
        info = Path("/var/lib/dpkg/info")
        for lst in info.glob("*.list"):
            pkg = lst.name[:-len(".list")].split(":")[0]
            try:
                for line in lst.read_text(errors="replace").splitlines():
                    _owners.setdefault(line, pkg)
            except OSError:
                pass
    real = os.path.realpath(path)
    for c in (path, real):
        for twin in (c, c[4:] if c.startswith("/usr/") else "/usr" + c):
            if twin in _owners:
                return _owners[twin]
    return None


def dev_package(path):
    """The package shipping the development link (libX.so) that resolves to this library."""
    real = os.path.realpath(path)
    libdir = os.path.dirname(real)
    for name in sorted(os.listdir(libdir)):
        link = os.path.join(libdir, name)
        if name.endswith(".so") and os.path.islink(link) and os.path.realpath(link) == real:
            pkg = dpkg_owner(link)
            if pkg:
                return pkg
    return None


def linked_libraries(binary):
    """(direct NEEDED sonames, {soname: path} of everything ldd resolves), sanitizers skipped."""
    p = subprocess.run(["ldd", binary], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    resolved = {}
    for line in p.stdout.splitlines():
        m = re.match(r"^\s*(\S+)\s+=>\s+(\S+)", line)
        if m and not SANITIZER_LIB.match(m.group(1)):
            assert m.group(2) != "not", "ldd: %s not found" % m.group(1)
            resolved[m.group(1)] = m.group(2)
    needed = []
    tool = shutil.which("objdump") or shutil.which("readelf")
    if tool:
        args = ["-p"] if tool.endswith("objdump") else ["-d"]
        out = subprocess.run([tool] + args + [binary], capture_output=True, text=True).stdout
        needed = re.findall(r"NEEDED\s+(?:Shared library: \[)?([^\s\]]+)", out)
    needed = [n for n in needed if not SANITIZER_LIB.match(n)]
    return needed, resolved


def installed_depends():
    p = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}\t${Package}\t${Depends}, "
                        "${Pre-Depends}\t${Provides}\n"], capture_output=True, text=True)
    deps, provides = {}, {}
    for line in p.stdout.splitlines():
        status, pkg, dep, prov = (line.split("\t") + ["", "", "", ""])[:4]
        if not status.startswith("ii"):
            continue
        alts = []
        for group in dep.split(","):
            names = [re.sub(r"[\s(:].*$", "", a.strip()) for a in group.split("|")]
            alts.append([n for n in names if n])
        deps[pkg] = [a for a in alts if a]
        for v in prov.split(","):
            v = re.sub(r"[\s(].*$", "", v.strip())
            if v:
                provides.setdefault(v, []).append(pkg)
    return deps, provides


def dependency_closure(roots, deps, provides):
    seen, todo = set(), list(roots)
    while todo:
        pkg = todo.pop()
        if pkg in seen:
            continue
        seen.add(pkg)
        for alts in deps.get(pkg, []):
            for a in alts:
                for real in [a] + provides.get(a, []):
                    if real in deps:
                        todo.append(real)
    return seen


def test_runtime_packages_cover_every_linked_library(chanced_bin):
    need(shutil.which("dpkg") and shutil.which("ldd"), "dpkg/ldd missing: not Debian")
    stages = dockerfile_stages()
    runtime = apt_packages(stages[-1])
    build = apt_packages(stages[0])
    needed, resolved = linked_libraries(chanced_bin)
    assert needed, "could not read the binary's NEEDED entries (objdump/readelf missing?)"
    deps, provides = installed_depends()
    for pkg in runtime:
        assert pkg in deps, "runtime package %s is not a Debian package installed here" % pkg
    problems = []
    # every library the binary names itself: its package is listed by name
    for soname in needed:
        pkg = dpkg_owner(resolved[soname])
        if pkg is None:
            problems.append("%s (%s): no package ships it" % (soname, resolved[soname]))
        elif pkg not in runtime and pkg != "libc6":
            problems.append("%s: package %s is not installed by the runtime stage" % (soname, pkg))
        # ... and the build stage installs its -dev package (the link NAME.so the linker used)
        dev = dev_package(resolved[soname])
        if pkg != "libc6" and (dev is None or dev not in build):
            problems.append("%s: its -dev package (%s) is not installed by the build stage" % (
                soname, dev))
    # everything they pull in transitively comes with them
    closure = dependency_closure(runtime + ["libc6"], deps, provides)
    for soname, path in resolved.items():
        pkg = dpkg_owner(path)
        if pkg and pkg not in closure:
            problems.append("%s (%s) is not pulled in by the runtime packages" % (soname, pkg))
    assert not problems, "\n".join(problems)


# --- systemd -------------------------------------------------------------------------------

def unit_directives(text=None):
    """[(section, key, value)] of the unit file, continuation lines joined."""
    out, section, cur = [], None, ""
    for line in (text or UNIT.read_text()).splitlines():
        s = line.strip()
        if s.startswith(("#", ";")) or not s:
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        s, cur = cur + s, ""
        if s.startswith("["):
            section = s.strip("[]")
            continue
        k, _, v = s.partition("=")
        out.append((section, k.strip(), v.strip()))
    return out


def unit_get(key, section="Service"):
    return [v for s, k, v in unit_directives() if s == section and k == key]


def test_unit_directives(chanced_bin, defaults):
    one = {k: (unit_get(k) or [None])[-1] for k in (
        "Type", "NotifyAccess", "Restart", "DynamicUser", "ProtectSystem", "ProtectHome",
        "PrivateTmp", "PrivateDevices", "NoNewPrivileges", "SystemCallArchitectures",
        "MemoryDenyWriteExecute", "LockPersonality", "RestrictNamespaces", "CapabilityBoundingSet",
        "WatchdogSec", "TimeoutStopSec")}
    want = {"Type": "notify", "NotifyAccess": "main", "Restart": "on-failure",
            "DynamicUser": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
            "PrivateTmp": "yes", "PrivateDevices": "yes", "NoNewPrivileges": "yes",
            "SystemCallArchitectures": "native", "MemoryDenyWriteExecute": "yes",
            "LockPersonality": "yes", "RestrictNamespaces": "yes", "CapabilityBoundingSet": ""}
    for k, v in want.items():
        assert one[k] == v, "%s=%r, want %r" % (k, one[k], v)
    assert "78" in " ".join(unit_get("RestartPreventExitStatus")).split()
    assert "@system-service" in " ".join(unit_get("SystemCallFilter")).split()
    families = " ".join(unit_get("RestrictAddressFamilies")).split()
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= set(families), "AF_UNIX carries sd_notify"
    assert one["WatchdogSec"] and duration_ms(one["WatchdogSec"] + ("" if re.search(
        "[a-z]$", one["WatchdogSec"]) else "s")) >= 3000
    stop = one["TimeoutStopSec"]
    assert stop, "no TimeoutStopSec"
    stop_ms = duration_ms(stop if re.search("[a-z]$", stop) else stop + "s")
    assert stop_ms > int(defaults["shutdown_timeout_ms"]["core"]), \
        "TimeoutStopSec=%s must exceed shutdown_timeout_ms" % stop
    # ExecStart: the binary's real flags, the role from the instance name
    exec_start = unit_get("ExecStart")
    assert len(exec_start) == 1
    argv = shlex.split(exec_start[0])
    assert argv[0] == BIN_IN_IMAGE and "--role=%i" in argv, argv
    cfg = [a for a in argv if a.startswith("--config=")]
    assert cfg, "ExecStart has no --config="
    for role in ROLES + ("all",):
        args = [a.replace("%i", role).replace(cfg[0], "--config=%s" % EXAMPLE) for a in argv[1:]]
        p, _ = config_check(chanced_bin, args)
        assert p.returncode == 0, "ExecStart flags for %s: %s" % (role, p.stderr)


def test_unit_credentials_are_secret_keys(secret_keys):
    creds = unit_get("LoadCredential")
    assert creds, "no LoadCredential= for the secrets"
    for c in creds:
        ident, _, src = c.partition(":")
        assert ident in secret_keys | TLS_FILE_CREDENTIALS, \
            "LoadCredential %s: %s is not a secret key" % (c, ident)
        assert "%i" in src, "LoadCredential %s: scope the credential to the role (%%i)" % c
    assert {c.partition(":")[0] for c in creds} == secret_keys | TLS_FILE_CREDENTIALS, \
        "credentials %s, secret keys %s" % (creds, secret_keys)


def unit_copy_for_here(tmp_path, chanced_bin):
    d = tmp_path / "units"
    d.mkdir()
    (d / UNIT.name).write_text(UNIT.read_text().replace(BIN_IN_IMAGE, chanced_bin))
    return d


def test_unit_systemd_analyze_verify(tmp_path, chanced_bin):
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.skip("systemd-analyze is not installed (package systemd)")
    d = unit_copy_for_here(tmp_path, chanced_bin)
    for role in ROLES:
        p = subprocess.run([tool, "verify", str(d / ("chanced@%s.service" % role))],
                           capture_output=True, text=True, cwd=d, timeout=60)
        ours = [ln for ln in (p.stdout + p.stderr).splitlines() if "chanced@" in ln]
        assert p.returncode == 0 and not ours, "systemd-analyze verify (%s): exit %d\n%s" % (
            role, p.returncode, p.stdout + p.stderr)


def test_unit_security_exposure(tmp_path, chanced_bin):
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.skip("systemd-analyze is not installed (package systemd)")
    d = unit_copy_for_here(tmp_path, chanced_bin)
    p = subprocess.run([tool, "security", "--offline=yes", "--threshold=20", "--no-pager",
                        str(d / "chanced@chance.service")], capture_output=True, text=True,
                       cwd=d, timeout=60)
    if "--offline" in p.stderr and "unrecognized" in p.stderr:
        pytest.skip("systemd-analyze security --offline needs systemd >= 250")
    # the threshold is in tenths: 20 = an exposure level of 2.0 ("OK" is below 4)
    assert p.returncode == 0, "exposure above 2.0:\n" + p.stdout[-3000:] + p.stderr


# --- the example configuration -------------------------------------------------------------

def render_example(rows):
    """deploy/chanced.conf.example from the key table (every key belongs to one module)."""
    out = [
        "# chanced.conf: every key, commented out, with its built-in default. Uncomment what you",
        "# change. Format: `key = value` lines (libinih); `#` or `;` starts a comment line;",
        "# [sections] are allowed but ignored.",
        "#",
        "# Precedence: default < this file < environment CHANCED_<KEY> < flag --key=value.",
        "# One file serves every role; a role ignores the other roles' keys. Per-role values",
        "# (listen addresses when roles share a host) go in the environment, e.g.",
        "# /etc/chanced/<role>.env under systemd.",
        "# Secret keys do not belong in a world-readable file: give them as CHANCED_<KEY>_FILE",
        "# pointing at a file (systemd credential, Docker secret); see docs/deploy.md.",
        "#",
        "# Generated from `chanced config markdown` by",
        "#     /usr/bin/python3 test/integration/test_deploy.py --write-example [path/to/chanced]",
        "# and checked against the binary by that test: regenerate it when keys change.",
    ]
    seen, module = set(), None
    for key, default, mod, desc, secret in rows:
        assert key not in seen, "`chanced config markdown` lists %s twice" % key
        seen.add(key)
        if mod != module:
            module = mod
            out += ["", "# ---- %s %s" % (mod, "-" * (86 - len(mod)))]
        desc = re.sub(r"\s*Secret; `_file` variant reads it from a file\.", "", desc)
        out.append("")
        out += ["# " + ln for ln in wrap(desc, 92)]
        if secret:
            out.append("# Secret: prefer CHANCED_%s_FILE=/path/to/file." % key.upper())
        out.append(("#%s = %s" % (key, default)).rstrip())
    return "\n".join(out) + "\n"


def wrap(text, width):
    lines, cur = [], ""
    for word in text.split():
        if cur and len(cur) + 1 + len(word) > width:
            lines.append(cur)
            cur = word
        else:
            cur = (cur + " " + word).strip()
    return lines + ([cur] if cur else [])


EXAMPLE_KEY = re.compile(r"^#([a-z0-9_]+) =(?: (.*))?$")


def test_example_config_passes_config_check(chanced_bin):
    p, dump = config_check(chanced_bin, ["--config=%s" % EXAMPLE])
    assert p.returncode == 0, p.stderr
    assert dump and all(s == "default" for e in dump.values() for _, s in e)


def test_example_config_lists_every_key_with_its_default(chanced_bin, keys, defaults, tmp_path):
    listed = {}
    for line in EXAMPLE.read_text().splitlines():
        m = EXAMPLE_KEY.match(line)
        if m:
            assert m.group(1) not in listed, "%s listed twice" % m.group(1)
            listed[m.group(1)] = m.group(2) or ""
    missing = set(defaults) - set(listed)
    extra = set(listed) - set(defaults)
    hint = " (regenerate: /usr/bin/python3 test/integration/test_deploy.py --write-example)"
    assert not missing, "keys missing from %s: %s%s" % (EXAMPLE.name, sorted(missing), hint)
    assert not extra, "keys the binary does not have: %s%s" % (sorted(extra), hint)
    for key, value in listed.items():
        first = next(d for k, d, *_ in keys if k == key)
        assert value == first, "%s: example says %r, binary default %r%s" % (key, value, first,
                                                                              hint)
    # uncommented, every line is a valid setting of the binary
    live = tmp_path / "live.conf"
    live.write_text("\n".join(ln[1:] if EXAMPLE_KEY.match(ln) else ln
                              for ln in EXAMPLE.read_text().splitlines()) + "\n")
    p, dump = config_check(chanced_bin, ["--config=%s" % live])
    assert p.returncode == 0, "uncommented example rejected: %s" % p.stderr
    for key in listed:
        assert all(s == "file" for _, s in dump[key]), (key, dump[key])


# --- docs ----------------------------------------------------------------------------------

DOC_VAR = re.compile(r"\bCHANCED_[A-Z0-9_]*[A-Z0-9]\b")


def test_docs_name_only_real_variables(key_names, secret_keys):
    files = [DEPLOY_DOC, SECRETS_README, UNIT, COMPOSE, DOCKERFILE, EXAMPLE]
    for f in files:
        assert f.exists(), "%s is missing" % f
        for var in set(DOC_VAR.findall(f.read_text())):
            if var in ("CHANCED_ROLE", "CHANCED_BIN") or var.startswith(
                    ("CHANCED_TEST_", "CHANCED_RUN_")):
                continue
            key = var[len("CHANCED_"):].lower()
            if key.endswith("_file") and key[:-5] in secret_keys:
                continue
            assert key in key_names, "%s names %s: the binary has no key %s" % (f.name, var, key)
    doc = DEPLOY_DOC.read_text()
    for must in ("compose.yaml", "chanced@.service", "deploy/secrets/README.md",
                 "chanced.conf.example", "create-admin", "systemctl"):
        assert must in doc, "docs/deploy.md does not mention %s" % must


def doc_env_files():
    """{role: {VAR: value}} from the ```sh blocks of docs/deploy.md that begin with the line
    `# /etc/chanced/ROLE.env`."""
    out = {}
    for block in re.findall(r"```sh\n(.*?)```", DEPLOY_DOC.read_text(), re.S):
        lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
        m = re.match(r"^# /etc/chanced/(\w+)\.env$", lines[0]) if lines else None
        if m:
            out[m.group(1)] = dict(ln.split("=", 1) for ln in lines[1:] if not ln.startswith("#"))
    return out


@pytest.mark.parametrize("role", ROLES)
def test_docs_role_env_files_work(role, chanced_bin, keys, key_names, secret_keys, defaults,
                                  tmp_path):
    """The per-role environment files of the systemd instructions: real variables of keys the
    role reads, credential paths that the unit's LoadCredential= provides, and every secret the
    role needs (those with a default: the URLs it connects to) given."""
    files = doc_env_files()
    assert role in files, "docs/deploy.md shows no /etc/chanced/%s.env" % role
    env = dict(files[role])
    creds = {c.partition(":")[0] for c in unit_get("LoadCredential")}
    module_of = {k: mod for k, _, mod, _, _ in keys}
    for var, value in files[role].items():
        key = var[len("CHANCED_"):].lower()
        base = key[:-len("_file")] if key.endswith("_file") and key not in key_names else key
        assert module_of.get(base) in ROLE_MODULES[role], \
            "docs: /etc/chanced/%s.env sets %s, a key of module %s, which %s does not read" % (
                role, var, module_of.get(base), role)
        m = re.match(r"^/run/credentials/chanced@([^.]+)\.service/(\w+)$", value)
        if m:
            assert m.group(1) == role, "%s.env reads another unit's credential: %s" % (role, value)
            assert m.group(2) in creds, "%s: the unit loads no credential %s" % (var, m.group(2))
            f = tmp_path / m.group(2)
            # the key's default, or (an empty default, e.g. rpc_tls_key) some text
            f.write_text((list(defaults[m.group(2)].values())[0] or "credential") + "\n")
            env[var] = str(f)
    check_env_accepted(chanced_bin, env, key_names, secret_keys,
                       args=["--role=%s" % role, "--config=%s" % EXAMPLE],
                       what="docs: /etc/chanced/%s.env" % role)
    for key, default, module, _, secret in keys:
        if secret and default and module in ROLE_MODULES[role]:
            assert "CHANCED_%s_FILE" % key.upper() in env, \
                "docs: /etc/chanced/%s.env does not give %s" % (role, key)


def test_unit_credentials_are_read_by_the_daemon(chanced_bin, secret_keys, tmp_path):
    """What LoadCredential= delivers ($CREDENTIALS_DIRECTORY/<key>) is read by the daemon
    itself: every secret key shows the source "credential", and the environment still wins."""
    d = tmp_path / "credentials"
    d.mkdir()
    for c in unit_get("LoadCredential"):
        (d / c.partition(":")[0]).write_text("secret-%s\n" % c.partition(":")[0])
    p, dump = config_check(chanced_bin, env={"CREDENTIALS_DIRECTORY": str(d)})
    # those hold no valid URL: refused (exit 78), naming the key and the credential source
    assert p.returncode == 78 and "(from credential)" in p.stderr, (p.returncode, p.stderr)
    good = {"postgres_url": "postgresql://u:p@db:5432/x", "redis_url": "redis://:p@r:6379/0",
            "amqp_url": "amqp://u:p@mq:5672/", "mongo_url": "mongodb://u:p@m:27017/x"}
    for key in secret_keys:
        (d / key).write_text(good.get(key, "-----BEGIN PRIVATE KEY-----") + "\n")
    p, dump = config_check(chanced_bin, env={"CREDENTIALS_DIRECTORY": str(d)})
    assert p.returncode == 0, p.stderr
    for key in secret_keys:
        assert dump.get(key) == [("(redacted)", "credential")], (key, dump.get(key))
    env = {"CREDENTIALS_DIRECTORY": str(d), "CHANCED_REDIS_URL": "redis://127.0.0.1:6399/0"}
    p, dump = config_check(chanced_bin, env=env)
    assert p.returncode == 0 and dump["redis_url"] == [("(redacted)", "env")], (p.stderr, dump)


@pytest.mark.parametrize("role", ROLES)
def test_healthcheck_defaults_probe_the_role_port(role, chanced_bin, defaults):
    """With no configuration at all, `chanced healthcheck --role=ROLE` probes the default of the
    role's own health key (each role has its own port)."""
    p = run_bin(chanced_bin, ["healthcheck", "--role=%s" % role], timeout=30)
    m = re.search(r"\bready at (\S+)", p.stdout + p.stderr)
    assert p.returncode in (0, 1) and m, p.stdout + p.stderr
    assert m.group(1) == defaults[HEALTH_KEY[role]][role], (role, m.group(1))
    ports = {list(defaults[HEALTH_KEY[r]].values())[0] for r in ROLES}
    assert len(ports) == len(ROLES), "two roles share a default health port: %s" % ports


# --- regenerate the example ----------------------------------------------------------------

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "--write-example":
        sys.exit("usage: /usr/bin/python3 test/integration/test_deploy.py --write-example "
                 "[CHANCED_BIN]")
    binary = sys.argv[2] if len(sys.argv) > 2 else str(ROOT / "build" / "chanced")
    EXAMPLE.write_text(render_example(key_table(binary)))
    print("wrote %s" % EXAMPLE)
