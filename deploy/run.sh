#!/usr/bin/env bash
# make run: the whole system on this machine in one command. Installs what is missing, builds,
# starts private PostgreSQL, Redis, RabbitMQ and MongoDB (or, where no mongod exists, the test
# stand-in, announced as such) on free loopback ports, migrates, creates an admin (credentials
# printed once), runs every role in one process (--role=all) and prints the URL. Ctrl-C stops
# everything it started. Logs and data of the run live under .run/ (make clean-run removes it);
# each run starts with empty databases. The internal links (gateway -> chance, gateway -> logger)
# run mutual TLS with a private CA made on the first run (deploy/gen-certs.sh, kept in .run/tls/).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RUN=${CHANCED_RUN_DIR:-$ROOT/.run}
BIN=${CHANCED_RUN_BIN:-$ROOT/build/chanced}
HTTP_PORT=${CHANCED_RUN_PORT:-8080}

say() { printf '\033[1mrun:\033[0m %s\n' "$*"; }

# Order matters on a fresh machine: the libraries must be installed before anything compiles.
# (CHANCED_RUN_DEPS names another installer: the fresh-clone test uses it to prove the order.)
[ -n "${CHANCED_RUN_NODEPS:-}" ] || bash "${CHANCED_RUN_DEPS:-test/deps.sh}"
if [ -z "${CHANCED_RUN_NOBUILD:-}" ]; then
    say "building build/chanced"
    make -s -j"$(nproc)" all
fi

# a fresh run directory, except the certificates of the internal links (made once)
mkdir -p "$RUN"
find "$RUN" -mindepth 1 -maxdepth 1 ! -name tls -exec rm -rf {} +
export CHANCED_TEST_DIR="$RUN/servers"
mkdir -p "$CHANCED_TEST_DIR"
. test/lib/servers.sh
CHPID=
cleanup() {
    local rc=$?
    # A Ctrl-C reaches every process of the terminal's group, make included, which may signal
    # us again: the cleanup must run to its end regardless.
    trap '' INT TERM
    trap - EXIT
    set +e # stop everything even if one step fails
    if [ -n "$CHPID" ] && kill -0 "$CHPID" 2>/dev/null; then
        say "stopping chanced (pid $CHPID)"
        kill -TERM "$CHPID" 2>/dev/null || true
        wait "$CHPID" 2>/dev/null || true
    fi
    say "stopping backing servers"
    stop_all
    exit "$rc"
}
# The first INT/TERM ignores the next ones before it exits: with Ctrl-C, or a TERM sent to the
# process group, make forwards a second signal, which must not cut the cleanup short.
on_signal() {
    trap '' INT TERM
    exit 130
}
trap cleanup EXIT
trap on_signal INT TERM

say "starting PostgreSQL, Redis, RabbitMQ and MongoDB under $RUN (this takes ~15 s)"
start_redis && start_postgres && start_rabbitmq && start_mongo
if [ "${CHANCED_TEST_MONGO_KIND:-}" = standin ]; then
    say "NOTE: no mongod on this machine: the audit log is stored in the MongoDB wire-protocol"
    say "      STAND-IN from test/ (in memory, for local use only). compose.yaml uses real MongoDB."
fi

if ! (exec 3<>"/dev/tcp/127.0.0.1/$HTTP_PORT") 2>/dev/null; then :; else
    HTTP_PORT=$(free_port)
    say "port 8080 is taken; using $HTTP_PORT"
fi
CHANCE_PORT=$(free_port); LOGGER_PORT=$(free_port)
# One certificate for the process: with --role=all it is the chance and logger listeners'
# and the gateway's, on loopback.
sh deploy/gen-certs.sh "$RUN/tls" all >"$RUN/gen-certs.log" 2>&1 ||
    { cat "$RUN/gen-certs.log"; exit 1; }
cat >"$RUN/chanced.conf" <<CONF
# written by make run
http_listen = 127.0.0.1:$HTTP_PORT
chance_listen = 127.0.0.1:$CHANCE_PORT
chance_addr = 127.0.0.1:$CHANCE_PORT
logger_listen = 127.0.0.1:$LOGGER_PORT
logger_addr = 127.0.0.1:$LOGGER_PORT
postgres_url = $CHANCED_TEST_POSTGRES_URL
redis_url = $CHANCED_TEST_REDIS_URL
amqp_url = $CHANCED_TEST_AMQP_URL
mongo_url = $CHANCED_TEST_MONGO_URL
rpc_tls_ca = $RUN/tls/all/ca.crt
rpc_tls_cert = $RUN/tls/all/cert.pem
rpc_tls_key = $RUN/tls/all/key.pem
CONF
# The health ports keep their per-role defaults (gateway 9100, chance 9101, logger 9102); the
# gateway's HTTP port serves /livez and a bare /readyz status only.

"$BIN" migrate --config="$RUN/chanced.conf" >"$RUN/migrate.log" 2>&1 ||
    { cat "$RUN/migrate.log"; exit 1; }
# The first admin's password goes to a file only its owner can read (never to a log or the
# terminal); a later run with the same database keeps it.
ADMIN_FILE=$RUN/admin-password
if [ ! -s "$ADMIN_FILE" ]; then
    (umask 0377 && head -c 18 /dev/urandom | base64 | tr -d '/+=' | head -c 20 >"$ADMIN_FILE")
fi
chmod 0400 "$ADMIN_FILE"
"$BIN" admin create-user --username admin --admin --if-missing --password-file "$ADMIN_FILE" \
    --config="$RUN/chanced.conf" >"$RUN/admin.log" 2>&1 || { cat "$RUN/admin.log"; exit 1; }

"$BIN" --role=all --config="$RUN/chanced.conf" --log_format=text >"$RUN/chanced.log" 2>&1 &
CHPID=$!
for _ in $(seq 1 100); do
    "$BIN" healthcheck --role=gateway --config="$RUN/chanced.conf" >/dev/null 2>&1 && break
    kill -0 "$CHPID" 2>/dev/null || { tail -30 "$RUN/chanced.log"; exit 1; }
    sleep 0.2
done
cat <<MSG

  chanced is running: http://127.0.0.1:$HTTP_PORT/
  admin login: admin, password in $ADMIN_FILE (mode 0400)
  API: http://127.0.0.1:$HTTP_PORT/api/v1/openapi.json
  logs: $RUN/chanced.log    config: $RUN/chanced.conf
  internal links: mutual TLS, CA and certificate in $RUN/tls/ (kept across runs)
  Ctrl-C stops chanced and every server this started.

MSG
wait "$CHPID"
