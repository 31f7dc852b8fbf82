# shellcheck shell=bash
# test/lib/servers.sh: private Redis, PostgreSQL, RabbitMQ and MongoDB (or its stand-in) servers
# on free loopback ports, in a scratch directory, and a way to stop them all again.
# Source it from bash; it does not change the caller's shell options.
#
#   export CHANCED_TEST_DIR=$(mktemp -d /tmp/chanced-test.XXXXXX)
#   . test/lib/servers.sh
#   start_redis && start_postgres && start_rabbitmq && start_mongo   # export CHANCED_TEST_*
#   ...
#   stop_all
#
# Every process started here (and every daemon the pytest fixtures start) is recorded in
# $CHANCED_TEST_DIR/pids as "name pid starttime"; starttime (field 22 of /proc/PID/stat) makes sure
# a recycled PID is never signalled.  stop_all stops them by PID: TERM (INT for PostgreSQL, its
# "fast" shutdown), up to CHANCED_TEST_STOP_WAIT (10) seconds, then KILL for them and their
# descendants.  Nothing is looked up or killed by name.  Each server runs in its own process group,
# so a Ctrl-C at the terminal reaches the test runner, which then stops the servers in order.
#
# $CHANCED_TEST_DIR/server-ctl.sh NAME start|stop|restart|kill|pause|resume|pid|status controls one
# server mid-test with the same port and data directory (NAME: redis, postgres, rabbitmq, mongo);
# $CHANCED_TEST_DIR/rabbit-ctl.sh CMD is the same for rabbitmq.  They work from any process.

CHANCED_TEST_SRC_ROOT=${CHANCED_TEST_SRC_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
export CHANCED_TEST_SRC_ROOT
_CT_SERVERS_SH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
: "${CHANCED_TEST_STOP_WAIT:=10}"

# exec a command in a new process group of its own, keeping the PID (unlike setsid(1), which
# forks when the caller already leads a group)
_CT_PGRP_PY='import os, sys
os.setpgid(0, 0)
os.execvp(sys.argv[1], sys.argv[1:])'

_ct_log() { printf 'servers: %s\n' "$*" >&2; }

_ct_need_dir() {
	if [ -z "${CHANCED_TEST_DIR:-}" ] || [ ! -d "$CHANCED_TEST_DIR" ]; then
		_ct_log "CHANCED_TEST_DIR is not set or is not a directory"
		return 1
	fi
	export CHANCED_TEST_DIR
	# the postgres user must be able to reach its data directory inside
	chmod 755 "$CHANCED_TEST_DIR" 2>/dev/null || true
	touch "$CHANCED_TEST_DIR/pids" "$CHANCED_TEST_DIR/ports"
}

# free_port: print a TCP port on 127.0.0.1 that the kernel says is free now (bind to port 0),
# never one already handed out for this scratch directory.
free_port() {
	local port i
	for i in 1 2 3 4 5 6 7 8 9 10; do
		port=$(/usr/bin/python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])') || return 1
		if [ -n "${CHANCED_TEST_DIR:-}" ] && [ -f "$CHANCED_TEST_DIR/ports" ]; then
			grep -qx "$port" "$CHANCED_TEST_DIR/ports" && continue
			echo "$port" >>"$CHANCED_TEST_DIR/ports"
		fi
		echo "$port"
		return 0
	done
	_ct_log "free_port: no fresh port after $i tries"
	return 1
}

# _ct_port VAR KEY: VAR's value if set, else the port saved under KEY in the scratch directory,
# else a new free port (saved); a restarted server keeps its port.
_ct_port() {
	local f="$CHANCED_TEST_DIR/$2.port" p
	if [ -n "${!1:-}" ]; then
		p=${!1}
	elif [ -s "$f" ]; then
		p=$(cat "$f")
	else
		p=$(free_port) || return 1
	fi
	echo "$p" >"$f"
	printf -v "$1" '%s' "$p"
	export "${1?}"
}

# --- process bookkeeping -------------------------------------------------------------------

_ct_stat_rest() { # pid -> /proc/pid/stat after the "(comm) " field: state ppid pgrp ...
	local stat
	read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
	echo "${stat##*) }"
}

_ct_starttime() { # pid -> field 22 of /proc/pid/stat
	local rest
	rest=$(_ct_stat_rest "$1") || return 1
	# shellcheck disable=SC2086
	set -- $rest
	echo "${20}"
}

_ct_state() { # pid -> one-letter state (R, S, T, Z, ...)
	local rest
	rest=$(_ct_stat_rest "$1") || return 1
	echo "${rest%% *}"
}

# _ct_alive PID [STARTTIME]: the process exists, is not a zombie, and is the one we started.
_ct_alive() {
	local st state
	[ -n "${1:-}" ] || return 1
	state=$(_ct_state "$1") || return 1
	[ "$state" != Z ] && [ "$state" != X ] || return 1
	if [ -n "${2:-}" ]; then
		st=$(_ct_starttime "$1") || return 1
		[ "$st" = "$2" ] || return 1
	fi
	return 0
}

# _ct_descendants PID: every live descendant of PID (not PID itself), one per line
_ct_descendants() {
	local p stat rest pids=() ppids=() queue=("$1") cur i
	for p in /proc/[0-9]*; do
		read -r stat 2>/dev/null <"$p/stat" || continue
		rest=${stat##*) }
		rest=${rest#* }
		pids+=("${p#/proc/}")
		ppids+=("${rest%% *}")
	done
	while [ "${#queue[@]}" -gt 0 ]; do
		cur=${queue[0]}
		queue=("${queue[@]:1}")
		for i in "${!pids[@]}"; do
			if [ "${ppids[$i]}" = "$cur" ]; then
				echo "${pids[$i]}"
				queue+=("${pids[$i]}")
			fi
		done
	done
}

# _ct_record NAME PID: remember a process we started (in pids and in NAME.pid).
_ct_record() {
	local st
	st=$(_ct_starttime "$2") || st=0
	echo "$1 $2 $st" >>"$CHANCED_TEST_DIR/pids"
	echo "$2 $st" >"$CHANCED_TEST_DIR/$1.pid"
}

# _ct_pid NAME: the recorded PID of NAME if that process is still alive.
_ct_pid() {
	local pid st
	[ -f "$CHANCED_TEST_DIR/$1.pid" ] || return 1
	read -r pid st <"$CHANCED_TEST_DIR/$1.pid" || return 1
	_ct_alive "$pid" "$st" || return 1
	echo "$pid"
}

_ct_stop_signal() { # name -> the signal that shuts it down cleanly and quickly
	case "$1" in
	postgres) echo INT ;; # fast shutdown; TERM ("smart") waits for every client to leave
	*) echo TERM ;;
	esac
}

# _ct_stop_pids SIG "pid:starttime ..."  -> signal, wait, then KILL survivors and descendants.
_ct_stop_pids() {
	local sig=$1 entries=$2 e pid st left desc="" deadline
	for e in $entries; do
		pid=${e%%:*} st=${e#*:}
		_ct_alive "$pid" "$st" || continue
		desc="$desc $(_ct_descendants "$pid" | tr '\n' ' ')"
		kill -s "$sig" "$pid" 2>/dev/null
		kill -s CONT "$pid" 2>/dev/null # a paused (SIGSTOP) process cannot act on the signal
	done
	deadline=$((SECONDS + CHANCED_TEST_STOP_WAIT))
	while :; do
		left=""
		for e in $entries; do
			pid=${e%%:*} st=${e#*:}
			_ct_alive "$pid" "$st" && left="$left $e"
		done
		[ -z "$left" ] && break
		if [ "$SECONDS" -ge "$deadline" ]; then
			for e in $left; do
				pid=${e%%:*}
				_ct_log "pid $pid ($(cat "/proc/$pid/comm" 2>/dev/null)) still running after ${CHANCED_TEST_STOP_WAIT}s: KILL"
				desc="$desc $(_ct_descendants "$pid" | tr '\n' ' ')"
				kill -s KILL "$pid" 2>/dev/null
			done
			sleep 0.2
			break
		fi
		sleep 0.1
	done
	# children that outlived their parent (postgres backends, erl_child_setup, ...): descendants of
	# processes we started, listed before we signalled them
	for pid in $desc; do
		_ct_alive "$pid" && kill -s KILL "$pid" 2>/dev/null
	done
	return 0
}

# _ct_wait_dead PID [SECONDS]
_ct_wait_dead() {
	local deadline=$((SECONDS + ${2:-10}))
	while _ct_alive "$1"; do
		[ "$SECONDS" -ge "$deadline" ] && return 1
		sleep 0.1
	done
	return 0
}

_ct_tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# _ct_fail NAME LOGFILE MESSAGE: report a failed start with the log tail.
_ct_fail() {
	_ct_log "$1: $3"
	if [ -f "$2" ]; then
		_ct_log "---- last lines of $2 ----"
		tail -n 30 "$2" >&2
		_ct_log "----"
	fi
	return 1
}

_ct_save_env() {
	local v
	for v in ${!CHANCED_TEST_@}; do
		printf 'export %s=%q\n' "$v" "${!v}"
	done >"$CHANCED_TEST_DIR/env.sh.tmp" && mv "$CHANCED_TEST_DIR/env.sh.tmp" "$CHANCED_TEST_DIR/env.sh"
}

_ct_write_ctl() {
	local ctl="$CHANCED_TEST_DIR/server-ctl.sh"
	export CHANCED_TEST_SERVER_CTL="$ctl"
	export CHANCED_TEST_RABBIT_CTL="$CHANCED_TEST_DIR/rabbit-ctl.sh"
	[ -x "$ctl" ] && return 0
	cat >"$ctl" <<EOF
#!/usr/bin/env bash
# generated by test/lib/servers.sh
# usage: server-ctl.sh redis|postgres|rabbitmq|mongo start|stop|restart|kill|pause|resume|pid|status
set -uo pipefail
. $(printf %q "$CHANCED_TEST_DIR/env.sh")
. $(printf %q "$_CT_SERVERS_SH")
server_ctl "\$@"
EOF
	cat >"$CHANCED_TEST_RABBIT_CTL" <<EOF
#!/usr/bin/env bash
# generated by test/lib/servers.sh
# usage: rabbit-ctl.sh start|stop|restart|kill|pause|resume|pid|status
exec $(printf %q "$ctl") rabbitmq "\$@"
EOF
	chmod +x "$ctl" "$CHANCED_TEST_RABBIT_CTL"
}

# --- Redis ---------------------------------------------------------------------------------

start_redis() {
	_ct_need_dir || return 1
	local dir="$CHANCED_TEST_DIR/redis" pid i
	_ct_pid redis >/dev/null && return 0
	command -v redis-server >/dev/null || { _ct_log "redis-server not installed (run test/deps.sh)"; return 1; }
	_ct_port CHANCED_TEST_REDIS_PORT redis || return 1
	mkdir -p "$dir"
	/usr/bin/python3 -c "$_CT_PGRP_PY" redis-server --port "$CHANCED_TEST_REDIS_PORT" \
		--bind 127.0.0.1 --dir "$dir" --save '' --appendonly no --daemonize no \
		--logfile "$dir/redis.log" </dev/null >>"$dir/stdout.log" 2>&1 &
	pid=$!
	disown "$pid" 2>/dev/null # no "Killed" job notices when a test kills it
	_ct_record redis "$pid" # at once: an interrupted start is still stopped by stop_all
	for i in $(seq 1 200); do
		if [ "$(redis-cli -h 127.0.0.1 -p "$CHANCED_TEST_REDIS_PORT" ping 2>/dev/null)" = PONG ]; then
			export CHANCED_TEST_REDIS_PID=$pid
			export CHANCED_TEST_REDIS_URL="redis://127.0.0.1:$CHANCED_TEST_REDIS_PORT/0"
			_ct_write_ctl
			_ct_save_env
			_ct_log "redis    pid $pid on 127.0.0.1:$CHANCED_TEST_REDIS_PORT"
			return 0
		fi
		_ct_alive "$pid" || break
		sleep 0.1
	done
	kill -s KILL "$pid" 2>/dev/null
	_ct_fail redis "$dir/redis.log" "no PONG on port $CHANCED_TEST_REDIS_PORT"
}

# --- PostgreSQL ----------------------------------------------------------------------------

_ct_pg_bin() {
	local d
	if [ -n "${CHANCED_TEST_PG_BIN:-}" ] && [ -x "$CHANCED_TEST_PG_BIN/initdb" ]; then
		echo "$CHANCED_TEST_PG_BIN"
		return 0
	fi
	d=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
	[ -x "$d/initdb" ] || return 1
	echo "$d"
}

# _ct_as_pg [exec] CMD...: run as the postgres system user when we are root (initdb and postgres
# refuse to run as root); "exec" replaces the current (sub)shell
_ct_as_pg() {
	local ex=()
	if [ "$1" = exec ]; then ex=(exec); shift; fi
	if [ "$(id -u)" = 0 ]; then
		"${ex[@]}" setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
	else
		"${ex[@]}" "$@"
	fi
}

start_postgres() {
	_ct_need_dir || return 1
	local dir="$CHANCED_TEST_DIR/postgres" bin pid i log port
	_ct_pid postgres >/dev/null && return 0
	bin=$(_ct_pg_bin) || { _ct_log "PostgreSQL server binaries not found (run test/deps.sh)"; return 1; }
	_ct_port CHANCED_TEST_POSTGRES_PORT postgres || return 1
	port=$CHANCED_TEST_POSTGRES_PORT
	log="$dir/postgres.log"
	mkdir -p "$dir/run"
	if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$dir" "$dir/run"; fi
	if [ ! -f "$dir/data/PG_VERSION" ]; then
		(cd "$dir" && _ct_as_pg "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 \
			--no-locale --no-sync) >"$dir/initdb.log" 2>&1 ||
			{ _ct_fail postgres "$dir/initdb.log" "initdb failed"; return 1; }
	fi
	# after a kill -9 the old postmaster may linger as a zombie until reaped, and its lock file
	# would make the new postmaster refuse to start
	if [ -f "$dir/data/postmaster.pid" ]; then
		read -r i 2>/dev/null <"$dir/data/postmaster.pid"
		if [ -n "$i" ] && ! _ct_alive "$i"; then rm -f "$dir/data/postmaster.pid"; fi
	fi
	(
		cd "$dir" || exit 1
		_ct_as_pg exec /usr/bin/python3 -c "$_CT_PGRP_PY" "$bin/postgres" -D "$dir/data" \
			-k "$dir/run" -p "$port" -c listen_addresses=127.0.0.1 -c fsync=off \
			-c synchronous_commit=off -c full_page_writes=off -c max_connections=200
	) </dev/null >>"$log" 2>&1 &
	pid=$!
	disown "$pid" 2>/dev/null # no "Killed" job notices when a test kills it
	_ct_record postgres "$pid"
	for i in $(seq 1 300); do
		"$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres && break
		_ct_alive "$pid" || { _ct_fail postgres "$log" "postgres exited during start"; return 1; }
		sleep 0.1
	done
	if ! "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres; then
		_ct_stop_pids INT "$pid:$(_ct_starttime "$pid")"
		_ct_fail postgres "$log" "not ready after 30s on port $port"
		return 1
	fi
	# role and database, created once per data directory
	if ! "$bin/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
		"SELECT 1 FROM pg_roles WHERE rolname = 'chanced'" | grep -q 1; then
		"$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres \
			-c "CREATE ROLE chanced LOGIN CREATEDB" \
			-c "CREATE DATABASE chanced OWNER chanced" >>"$dir/setup.log" 2>&1 ||
			{ _ct_fail postgres "$dir/setup.log" "could not create role/database chanced"; return 1; }
	fi
	export CHANCED_TEST_POSTGRES_PID=$pid CHANCED_TEST_PG_BIN=$bin
	export CHANCED_TEST_POSTGRES_URL="postgresql://chanced@127.0.0.1:$port/chanced"
	# superuser, for tests that look behind the daemon's back; never give it to chanced
	export CHANCED_TEST_POSTGRES_ADMIN_URL="postgresql://postgres@127.0.0.1:$port/postgres"
	_ct_write_ctl
	_ct_save_env
	_ct_log "postgres pid $pid on 127.0.0.1:$port (data $dir/data)"
	return 0
}

# --- RabbitMQ ------------------------------------------------------------------------------

_ct_rabbit_bin() {
	local d
	for d in /usr/lib/rabbitmq/bin /usr/lib/rabbitmq/sbin; do
		[ -x "$d/rabbitmq-server" ] && { echo "$d"; return 0; }
	done
	return 1
}

# _ct_rabbit_env: the environment of our private node (right for rabbitmqctl too).  The Debian
# /usr/sbin/rabbitmq-* wrappers switch to the rabbitmq user and /var/lib/rabbitmq; the scripts
# in /usr/lib/rabbitmq/bin do not.
_ct_rabbit_env() {
	local dir="$CHANCED_TEST_DIR/rabbitmq"
	export HOME="$dir/home" # private .erlang.cookie
	export RABBITMQ_NODENAME="$CHANCED_TEST_RABBIT_NODE"
	export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
	export RABBITMQ_NODE_PORT="$CHANCED_TEST_AMQP_PORT"
	export RABBITMQ_DIST_PORT="$CHANCED_TEST_RABBIT_DIST_PORT"
	# the CLI tools otherwise listen on the fixed range 35672-35682
	export RABBITMQ_CTL_DIST_PORT_MIN="$CHANCED_TEST_RABBIT_CTL_PORT"
	export RABBITMQ_CTL_DIST_PORT_MAX="$CHANCED_TEST_RABBIT_CTL_PORT"
	export ERL_EPMD_PORT="$CHANCED_TEST_EPMD_PORT"
	export ERL_EPMD_ADDRESS=127.0.0.1
	export RABBITMQ_MNESIA_BASE="$dir/mnesia"
	export RABBITMQ_LOG_BASE="$dir/log"
	export RABBITMQ_LOGS="$dir/log/rabbit.log"
	export RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
	export RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
	export RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" # not /etc/rabbitmq/rabbitmq-env.conf
	export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
	export RABBITMQ_PID_FILE="$dir/rabbit.pid"
	export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

_ct_amqp_ready() { # port -> 0 when the broker answers the AMQP 0-9-1 header with Connection.Start
	/usr/bin/python3 - "$1" 2>/dev/null <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
s.sendall(b"AMQP\x00\x00\x09\x01")
sys.exit(0 if s.recv(8)[:1] == b"\x01" else 1)
PY
}

# our own epmd on our own port: the broker registers there, and stop_all can stop it by PID
# (an epmd that erl started by itself would daemonize and be nobody's child)
_ct_start_epmd() {
	local dir="$CHANCED_TEST_DIR/rabbitmq" pid i
	_ct_pid epmd >/dev/null && return 0
	ERL_EPMD_ADDRESS=127.0.0.1 /usr/bin/python3 -c "$_CT_PGRP_PY" epmd \
		-port "$CHANCED_TEST_EPMD_PORT" -address 127.0.0.1 </dev/null >>"$dir/log/epmd.log" 2>&1 &
	pid=$!
	disown "$pid" 2>/dev/null # no "Killed" job notices when a test kills it
	_ct_record epmd "$pid"
	for i in $(seq 1 100); do
		if _ct_tcp_open "$CHANCED_TEST_EPMD_PORT"; then
			return 0
		fi
		_ct_alive "$pid" || break
		sleep 0.05
	done
	_ct_fail epmd "$dir/log/epmd.log" "epmd did not listen on $CHANCED_TEST_EPMD_PORT"
}

start_rabbitmq() {
	_ct_need_dir || return 1
	local dir="$CHANCED_TEST_DIR/rabbitmq" rbin pid beam i log
	rbin=$(_ct_rabbit_bin) || { _ct_log "rabbitmq-server not installed (run test/deps.sh)"; return 1; }
	command -v epmd >/dev/null || { _ct_log "epmd (erlang) not found"; return 1; }
	_ct_port CHANCED_TEST_AMQP_PORT amqp || return 1
	if _ct_pid rabbitmq >/dev/null; then
		# running, or still booting after an interrupted start: wait for it rather than start a
		# second node on the same ports
		for i in $(seq 1 900); do
			_ct_amqp_ready "$CHANCED_TEST_AMQP_PORT" && return 0
			_ct_pid rabbitmq >/dev/null || break
			sleep 0.1
		done
		_ct_pid rabbitmq >/dev/null && { _ct_log "rabbitmq: running but no AMQP after 90s"; return 1; }
	fi
	# The node's Erlang distribution port is found through our epmd, so a restart may move it;
	# it must: kept from the first start, the port can meanwhile be some client's ephemeral
	# port, and the node then dies at boot (dist_port_already_used, seen in CI after a fault
	# test restarted the broker).
	unset CHANCED_TEST_RABBIT_DIST_PORT
	rm -f "$CHANCED_TEST_DIR/rabbit-dist.port"
	_ct_port CHANCED_TEST_RABBIT_DIST_PORT rabbit-dist || return 1
	_ct_port CHANCED_TEST_RABBIT_CTL_PORT rabbit-ctl || return 1
	_ct_port CHANCED_TEST_EPMD_PORT epmd || return 1
	export CHANCED_TEST_RABBIT_NODE="chanced_test_${CHANCED_TEST_AMQP_PORT}@localhost"
	log="$dir/log/stdout.log"
	mkdir -p "$dir/home" "$dir/mnesia" "$dir/log"
	if [ ! -f "$dir/home/.erlang.cookie" ]; then
		head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/home/.erlang.cookie"
		chmod 400 "$dir/home/.erlang.cookie"
	fi
	cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$CHANCED_TEST_AMQP_PORT
loopback_users = none
disk_free_limit.absolute = 10MB
log.console = false
log.file.level = info
EOF
	# extra rabbitmq.conf lines for a test's own broker (e.g. a TLS listener)
	if [ -n "${CHANCED_TEST_RABBIT_CONF_EXTRA:-}" ]; then
		printf '%s\n' "$CHANCED_TEST_RABBIT_CONF_EXTRA" >>"$dir/rabbitmq.conf"
	fi
	echo '[].' >"$dir/enabled_plugins"
	: >"$dir/rabbitmq-env.conf"
	_ct_start_epmd || return 1
	(
		_ct_rabbit_env
		cd "$dir" || exit 1
		exec /usr/bin/python3 -c "$_CT_PGRP_PY" "$rbin/rabbitmq-server"
	) </dev/null >>"$log" 2>&1 &
	pid=$!
	disown "$pid" 2>/dev/null # no "Killed" job notices when a test kills it
	# rabbitmq-server stays as a shell that turns TERM into a clean stop of its beam.smp child,
	# the broker itself; record both
	_ct_record rabbitmq-sh "$pid"
	_ct_record rabbitmq "$pid"
	beam=""
	for i in $(seq 1 900); do # 90 s; a boot takes ~8 s on 2 cores
		if [ -z "$beam" ]; then
			beam=$(_ct_descendants "$pid" | while read -r c; do
				[ "$(cat "/proc/$c/comm" 2>/dev/null)" = beam.smp ] && echo "$c"
			done | head -n 1)
			[ -n "$beam" ] && _ct_record rabbitmq "$beam"
		fi
		_ct_amqp_ready "$CHANCED_TEST_AMQP_PORT" && break
		if ! _ct_alive "$pid"; then
			_ct_fail rabbitmq "$dir/log/rabbit.log" "rabbitmq-server exited during start"
			tail -n 20 "$log" >&2
			return 1
		fi
		sleep 0.1
	done
	if ! _ct_amqp_ready "$CHANCED_TEST_AMQP_PORT"; then
		_ct_stop_pids TERM "$pid:$(_ct_starttime "$pid")"
		_ct_fail rabbitmq "$dir/log/rabbit.log" "no AMQP on port $CHANCED_TEST_AMQP_PORT after 90s"
		return 1
	fi
	export CHANCED_TEST_RABBIT_PID=${beam:-$pid}
	export CHANCED_TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:$CHANCED_TEST_AMQP_PORT/"
	_ct_write_ctl
	_ct_save_env
	_ct_log "rabbitmq pid $CHANCED_TEST_RABBIT_PID on 127.0.0.1:$CHANCED_TEST_AMQP_PORT (node $CHANCED_TEST_RABBIT_NODE, epmd port $CHANCED_TEST_EPMD_PORT)"
	return 0
}

stop_rabbitmq() { _ct_stop_one rabbitmq; }

# rabbitmqctl against our node, e.g.  ct_rabbitmqctl list_queues name messages
ct_rabbitmqctl() {
	(
		_ct_rabbit_env
		exec "$(_ct_rabbit_bin)/rabbitmqctl" -n "$CHANCED_TEST_RABBIT_NODE" "$@"
	)
}

# --- MongoDB (or the wire-protocol stand-in) -----------------------------------------------

start_mongo() {
	_ct_need_dir || return 1
	local dir="$CHANCED_TEST_DIR/mongo" pid i standin log
	_ct_pid mongo >/dev/null && return 0
	standin=${CHANCED_TEST_MONGO_STANDIN:-$CHANCED_TEST_SRC_ROOT/test/mongo/mongo_standin.py}
	log="$dir/mongo.log"
	if ! command -v mongod >/dev/null && [ ! -f "$standin" ]; then
		_ct_log "MongoDB NOT STARTED: no mongod on PATH and no stand-in at $standin;"
		_ct_log "CHANCED_TEST_MONGO_URL stays unset (strict runs fail the MongoDB tests)"
		return 0
	fi
	_ct_port CHANCED_TEST_MONGO_PORT mongo || return 1
	mkdir -p "$dir/db"
	if command -v mongod >/dev/null; then
		export CHANCED_TEST_MONGO_KIND=mongod
		/usr/bin/python3 -c "$_CT_PGRP_PY" mongod --port "$CHANCED_TEST_MONGO_PORT" \
			--bind_ip 127.0.0.1 --dbpath "$dir/db" --nounixsocket </dev/null >>"$log" 2>&1 &
	else
		export CHANCED_TEST_MONGO_KIND=standin
		/usr/bin/python3 -c "$_CT_PGRP_PY" /usr/bin/python3 "$standin" \
			--port "$CHANCED_TEST_MONGO_PORT" </dev/null >>"$log" 2>&1 &
	fi
	pid=$!
	disown "$pid" 2>/dev/null # no "Killed" job notices when a test kills it
	_ct_record mongo "$pid"
	for i in $(seq 1 300); do
		if _ct_tcp_open "$CHANCED_TEST_MONGO_PORT"; then
			export CHANCED_TEST_MONGO_PID=$pid
			export CHANCED_TEST_MONGO_URL="mongodb://127.0.0.1:$CHANCED_TEST_MONGO_PORT/chanced?socketTimeoutMS=5000&serverSelectionTimeoutMS=3000"
			_ct_write_ctl
			_ct_save_env
			_ct_log "mongo    pid $pid on 127.0.0.1:$CHANCED_TEST_MONGO_PORT ($CHANCED_TEST_MONGO_KIND)"
			return 0
		fi
		_ct_alive "$pid" || break
		sleep 0.1
	done
	kill -s KILL "$pid" 2>/dev/null
	_ct_fail mongo "$log" "did not accept connections on port $CHANCED_TEST_MONGO_PORT"
}

# --- stopping ------------------------------------------------------------------------------

# _ct_stop_one NAME: stop one server cleanly (KILL after CHANCED_TEST_STOP_WAIT seconds).
_ct_stop_one() {
	local name=$1 entries="" pid st f
	for f in "$name" "$name-sh"; do
		[ -f "$CHANCED_TEST_DIR/$f.pid" ] || continue
		read -r pid st <"$CHANCED_TEST_DIR/$f.pid"
		_ct_alive "$pid" "$st" && entries="$entries $pid:$st"
	done
	[ -n "$entries" ] && _ct_stop_pids "$(_ct_stop_signal "$name")" "$entries"
	return 0
}

# stop_all: stop every live process recorded in $CHANCED_TEST_DIR/pids (servers, and daemons
# that a test run left behind); epmd last, after the broker that uses it.
stop_all() {
	[ -n "${CHANCED_TEST_DIR:-}" ] && [ -f "$CHANCED_TEST_DIR/pids" ] || return 0
	local name pid st lines int="" term="" epmd="" bg=""
	lines=$(tac "$CHANCED_TEST_DIR/pids")
	while read -r name pid st; do
		[ -n "$pid" ] || continue
		_ct_alive "$pid" "$st" || continue
		case "$name" in
		epmd) epmd="$epmd $pid:$st" ;;
		postgres) int="$int $pid:$st" ;;
		*) term="$term $pid:$st" ;;
		esac
	done <<<"$lines"
	if [ -n "$int" ]; then
		_ct_stop_pids INT "$int" &
		bg=$!
	fi
	[ -n "$term" ] && _ct_stop_pids TERM "$term"
	[ -n "$bg" ] && wait "$bg"
	[ -n "$epmd" ] && _ct_stop_pids TERM "$epmd"
	return 0
}

# --- server-ctl.sh -------------------------------------------------------------------------

server_ctl() {
	local name=${1:-} cmd=${2:-} pid p s
	case "$name" in
	redis | postgres | rabbitmq | mongo) ;;
	*)
		echo "usage: server-ctl.sh redis|postgres|rabbitmq|mongo start|stop|restart|kill|pause|resume|pid|status" >&2
		return 2
		;;
	esac
	case "$cmd" in
	start) "start_$name" ;;
	stop) _ct_stop_one "$name" ;;
	restart) _ct_stop_one "$name" && "start_$name" ;;
	kill) # SIGKILL, as in a crash, of the server and all its processes
		pid=$(_ct_pid "$name") || return 0
		for p in $pid $(_ct_descendants "$pid"); do kill -s KILL "$p" 2>/dev/null; done
		_ct_wait_dead "$pid" 10
		if [ "$name" = rabbitmq ] && pid=$(_ct_pid rabbitmq-sh); then _ct_wait_dead "$pid" 10; fi
		return 0
		;;
	pause | resume) # SIGSTOP / SIGCONT the server and all its processes
		pid=$(_ct_pid "$name") || { echo "$name is not running" >&2; return 1; }
		s=STOP
		[ "$cmd" = resume ] && s=CONT
		for p in $pid $(_ct_descendants "$pid"); do kill -s "$s" "$p" 2>/dev/null; done
		return 0
		;;
	pid) _ct_pid "$name" ;;
	status)
		if pid=$(_ct_pid "$name"); then
			echo "$name running pid $pid state $(_ct_state "$pid")"
		else
			echo "$name stopped"
			return 3
		fi
		;;
	*)
		echo "usage: server-ctl.sh $name start|stop|restart|kill|pause|resume|pid|status" >&2
		return 2
		;;
	esac
}
