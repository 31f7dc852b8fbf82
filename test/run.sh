#!/usr/bin/env bash
# test/run.sh: the test runner behind `make test` (the Makefile builds first).
#
# Starts private Redis, PostgreSQL, RabbitMQ and MongoDB (stand-in) servers on free loopback ports
# in a scratch directory, runs every unit test binary build/test/unit/test_* and the pytest suites,
# stops every server it started (pass, fail or Ctrl-C), and ends with one line
#     make test: N passed, N failed, N skipped
# exiting non-zero on any failure or when no test ran.
#
# Environment:
#   CHANCED_BIN              daemon under test (default build/chanced)
#   PYTEST_ARGS              extra pytest arguments, shell-quoted, e.g. PYTEST_ARGS="-k 'nest and not slow'"
#                            (arguments given to this script are passed to pytest too)
#   CHANCED_PYTEST_PATHS     what pytest collects (default: test/integration and every other
#                            test/<dir> holding test_*.py files)
#   CHANCED_TEST_OUTPUT      artifacts (default build/test-output): logs, junit.xml, server logs
#   CHANCED_KEEP_TEST_DIR=1  keep the scratch directory (server data) for a post-mortem
#   CHANCED_TEST_BUDGET      seconds for the whole run (default 1140); pytest is interrupted
#                            cleanly at the end of it, then hard-stopped 120 s later
#   CHANCED_UNIT_DIRS        where the unit test binaries test_* are, space-separated (default
#                            build/test/unit; empty: run no unit tests)
#   CHANCED_UNIT_TIMEOUT     seconds per unit test binary (default 300)

# shellcheck disable=SC2317  # finish and on_signal run from traps
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Run under a small subreaper so that any process orphaned during the run (a server restarted by
# server-ctl.sh from inside a test, a grandchild of a daemon) is reaped here and not left as a
# zombie or a stray process; it also stops anything still left when this script ends.
if [ -z "${_CHANCED_RUN_REAPER:-}" ]; then
	export _CHANCED_RUN_REAPER=1
	exec /usr/bin/python3 -c '
import ctypes, os, signal, sys, time
PR_SET_CHILD_SUBREAPER = 36
ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
child = os.fork()
if child == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
def forward(sig, frame):
    try:
        os.kill(child, sig)
    except ProcessLookupError:
        pass
# a Ctrl-C at the terminal reaches the script directly; TERM/HUP sent to us only are forwarded
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, forward)
signal.signal(signal.SIGHUP, forward)
status = 1
while True:
    try:
        pid, st = os.wait()
    except ChildProcessError:
        break
    if pid == child:
        status = os.waitstatus_to_exitcode(st)
        status = 128 - status if status < 0 else status
        break
def leftovers():
    me = str(os.getpid())
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open("/proc/%s/stat" % p) as f:
                    rest = f.read().rsplit(") ", 1)[1].split()
            except (OSError, IndexError):
                continue
            if rest[1] == me and rest[0] != "Z":
                out.append(int(p))
    return out
# anything still running now is ours: an orphan re-parented to us.  TERM, then KILL after 10 s;
# rescan, since a stopped parent can hand us its children
told = set()
deadline = time.time() + 10
while True:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass
    left = leftovers()
    if not left or time.time() > deadline + 10:
        break
    for p in left:
        sig = signal.SIGKILL if time.time() > deadline else signal.SIGTERM
        if p in told and sig == signal.SIGTERM:
            continue
        try:
            comm = open("/proc/%d/comm" % p).read().strip()
        except OSError:
            comm = "?"
        print("run.sh: %s leftover process %d (%s)"
              % ("stopping" if sig == signal.SIGTERM else "killing", p, comm), file=sys.stderr)
        told.add(p)
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass
    time.sleep(0.1)
sys.exit(status)
' bash "$ROOT/test/run.sh" "$@"
fi

cd "$ROOT" || exit 1
START=$SECONDS
BUDGET=${CHANCED_TEST_BUDGET:-1140}

CHANCED_BIN=${CHANCED_BIN:-build/chanced}
case "$CHANCED_BIN" in /*) ;; *) CHANCED_BIN="$ROOT/$CHANCED_BIN" ;; esac
export CHANCED_BIN

OUT=${CHANCED_TEST_OUTPUT:-$ROOT/build/test-output}
case "$OUT" in /*) ;; *) OUT="$ROOT/$OUT" ;; esac
rm -rf "$OUT"
mkdir -p "$OUT/unit" "$OUT/servers"
export CHANCED_TEST_OUTPUT=$OUT

# sanitizers: the build has ASan + UBSan; a leak, an error or UB aborts the process
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
if [ -f "$ROOT/test/lsan.supp" ]; then export LSAN_OPTIONS="suppressions=$ROOT/test/lsan.supp"; fi
export CHANCED_TEST_STRICT=1 # a missing server is a test failure, never a skip
export PYTHONDONTWRITEBYTECODE=1

U_PASS=0 U_FAIL=0 U_SKIP=0 P_PASS=0 P_FAIL=0 P_SKIP=0 SETUP_FAIL=0 INTERRUPTED=0
CHILD="" CHILD_SIG=TERM IN_SIGNAL="" FINISHED=""

CHANCED_TEST_DIR=$(mktemp -d /tmp/chanced-test.XXXXXX) || exit 1
export CHANCED_TEST_DIR
# shellcheck source=test/lib/servers.sh
. "$ROOT/test/lib/servers.sh"

say() { printf 'run.sh: %s\n' "$*"; }
exec 7>&1 8>&2

finish() {
	[ -n "$FINISHED" ] && return
	FINISHED=1
	trap '' INT TERM HUP
	exec 1>&7 2>&8 # a trap can fire inside a redirected command: back to the real output
	# stop the test process first if a signal interrupted it
	if [ -n "$CHILD" ]; then
		kill -s "$CHILD_SIG" "$CHILD" 2>/dev/null
		while kill -0 "$CHILD" 2>/dev/null; do wait "$CHILD" 2>/dev/null; done
	fi
	say "stopping servers"
	stop_all
	# keep the server logs, drop the data
	(cd "$CHANCED_TEST_DIR" && find . -name '*.log' -type f -print0 2>/dev/null |
		while IFS= read -r -d '' f; do
			mkdir -p "$OUT/servers/$(dirname "$f")"
			cp "$f" "$OUT/servers/$f" 2>/dev/null
		done)
	if [ "${CHANCED_KEEP_TEST_DIR:-0}" = 1 ]; then
		say "scratch directory kept: $CHANCED_TEST_DIR"
	else
		case "$CHANCED_TEST_DIR" in /tmp/chanced-test.*) rm -rf "$CHANCED_TEST_DIR" ;; esac
	fi
	local passed=$((U_PASS + P_PASS)) failed=$((U_FAIL + P_FAIL + SETUP_FAIL + INTERRUPTED))
	local skipped=$((U_SKIP + P_SKIP)) rc=0
	[ "$INTERRUPTED" -gt 0 ] && say "INTERRUPTED: counted as a failure"
	if [ $((passed + failed)) -eq 0 ]; then
		say "no test ran: that is a failure"
		rc=1
	fi
	[ "$failed" -gt 0 ] && rc=1
	say "artifacts (logs, junit.xml, server logs) in $OUT ($((SECONDS - START)) s)"
	echo "make test: $passed passed, $failed failed, $skipped skipped"
	exit "$rc"
}

on_signal() {
	[ -n "$IN_SIGNAL" ] && return
	IN_SIGNAL=1
	say "caught SIG$1: stopping"
	INTERRUPTED=1
	finish
}

trap finish EXIT
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP

# run_child CMD...: run in the background and wait, so a signal reaches our trap at once
run_child() {
	"$@" &
	CHILD=$!
	wait "$CHILD"
	local rc=$?
	CHILD=""
	return "$rc"
}

# --- servers -------------------------------------------------------------------------------

say "scratch directory $CHANCED_TEST_DIR"
for s in redis postgres rabbitmq mongo; do
	if ! "start_$s"; then
		say "FAILED to start $s"
		SETUP_FAIL=$((SETUP_FAIL + 1))
	fi
done
[ -n "${CHANCED_TEST_MONGO_URL:-}" ] || { say "FAILED: no MongoDB (or stand-in) for the tests"; SETUP_FAIL=$((SETUP_FAIL + 1)); }
say "servers up after $((SECONDS - START)) s; control them with $CHANCED_TEST_DIR/server-ctl.sh"

# --- unit tests ----------------------------------------------------------------------------

shopt -s nullglob
units=()
UNIT_DIRS=${CHANCED_UNIT_DIRS-build/test/unit}
for d in $UNIT_DIRS; do
	for t in "$d"/test_*; do
		case "$t" in *.o | *.d | *.c | *.h | *.log | *.dSYM) continue ;; esac
		[ -f "$t" ] && [ -x "$t" ] && units+=("$t")
	done
done
say "unit: ${#units[@]} test binaries in ${UNIT_DIRS:-(none)}"
for t in "${units[@]}"; do
	name=$(basename "$(dirname "$(dirname "$(dirname "$t")")")")-$(basename "$t")
	log="$OUT/unit/$name.log"
	run_child timeout -k 10 "${CHANCED_UNIT_TIMEOUT:-300}" "$t" >"$log" 2>&1
	rc=$?
	line=$(grep -E '[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
	p=0 f=0 k=0
	if [[ "$line" =~ ([0-9]+)\ passed,\ ([0-9]+)\ failed(,\ ([0-9]+)\ skipped)? ]]; then
		p=${BASH_REMATCH[1]} f=${BASH_REMATCH[2]} k=${BASH_REMATCH[4]:-0}
	else
		say "$name printed no 'N passed, N failed' line"
		f=1
	fi
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1 # crashed, timed out (rc 124/137) or exited non-zero after reporting success
	fi
	U_PASS=$((U_PASS + p)) U_FAIL=$((U_FAIL + f)) U_SKIP=$((U_SKIP + k))
	if [ "$f" -gt 0 ]; then
		say "unit $name: FAILED (exit $rc, $p passed, $f failed); last lines of $log:"
		tail -n 25 "$log" | sed 's/^/    /'
	else
		say "unit $name: $p passed, $k skipped"
	fi
done

# --- pytest suites -------------------------------------------------------------------------

if [ -n "${CHANCED_PYTEST_PATHS:-}" ]; then
	read -r -a paths <<<"$CHANCED_PYTEST_PATHS"
else
	paths=(test/integration)
	while IFS= read -r d; do
		[ "$d" = test/integration ] || paths+=("$d")
	done < <(find test -mindepth 2 -name 'test_*.py' -not -path '*/node_modules/*' \
		-not -path 'test/lib/*' -not -path 'test/unit/*' | cut -d/ -f1-2 | sort -u)
fi
extra=()
if [ -n "${PYTEST_ARGS:-}" ]; then
	mapfile -t extra < <(/usr/bin/python3 -c 'import os, shlex
for a in shlex.split(os.environ["PYTEST_ARGS"]):
    print(a)')
fi
left=$((BUDGET - (SECONDS - START)))
[ "$left" -lt 60 ] && left=60
say "pytest ${paths[*]} ${extra[*]} $* (budget ${left}s)"

# pytest runs in its own process group (a Ctrl-C reaches only this script, which then sends it
# exactly one TERM); TERM, INT or the end of the budget become a KeyboardInterrupt, so fixtures
# still tear down and junit.xml is written; a hard stop follows 120 s later.  A test running
# over 300 s gets its tracebacks dumped (faulthandler_timeout), as a hint.
exec 3> >(trap '' INT TERM HUP; exec tee "$OUT/pytest.log") # survives a Ctrl-C, to log the teardown
TEE_PID=$!
run_child /usr/bin/python3 -c '
import faulthandler, os, signal, sys, threading
os.setpgid(0, 0)
budget = int(sys.argv.pop(1))
def hard_stop():
    print("\nrun.sh: pytest still running %d s after the budget: tracebacks, then exit" % 120,
          file=sys.stderr, flush=True)
    faulthandler.dump_traceback(all_threads=True)
    os._exit(3)
timer = threading.Timer(budget + 120, hard_stop)
timer.daemon = True
timer.start()
def interrupt(signum, frame):
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(s, signal.SIG_IGN)
    if signum == signal.SIGALRM:
        raise KeyboardInterrupt("run.sh: time budget of %d s used up" % budget)
    raise KeyboardInterrupt("run.sh: %s" % signal.Signals(signum).name)
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
    signal.signal(s, interrupt)
signal.alarm(budget)
import pytest
sys.exit(pytest.main(sys.argv[1:]))
' "$left" -q -p no:cacheprovider -rfEs --durations=10 --junitxml="$OUT/junit.xml" \
	-o junit_suite_name=chanced -o junit_family=xunit2 -o faulthandler_timeout=300 \
	"${paths[@]}" "${extra[@]}" "$@" >&3 2>&3
prc=$?
exec 3>&-
wait "$TEE_PID" 2>/dev/null

if [ -f "$OUT/junit.xml" ]; then
	read -r P_PASS P_FAIL P_SKIP < <(/usr/bin/python3 - "$OUT/junit.xml" <<'PY'
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.iter("testsuite")
t = f = s = 0
for su in suites:
    t += int(su.get("tests", 0))
    f += int(su.get("failures", 0)) + int(su.get("errors", 0))
    s += int(su.get("skipped", 0))
print(t - f - s, f, s)
PY
	)
	P_PASS=${P_PASS:-0} P_FAIL=${P_FAIL:-1} P_SKIP=${P_SKIP:-0}
else
	say "pytest wrote no junit.xml (exit $prc)"
	P_FAIL=1
fi
case "$prc" in
0 | 1 | 5) ;;
*) if [ "$P_FAIL" -eq 0 ]; then
	say "pytest exited $prc (interrupted or internal error): counted as a failure"
	P_FAIL=1
fi ;;
esac
exit 0 # the EXIT trap stops the servers and prints the summary
