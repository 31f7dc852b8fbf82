#!/usr/bin/env bash
# test/deps.sh: install what building and testing chanced needs on Debian 12 (bookworm).
# Idempotent: does nothing (and needs no network) when everything is there.  Run as root, or as
# a user with passwordless sudo.  Services are not started by the packages (policy-rc.d); the
# tests run their own private servers on free ports (test/lib/servers.sh), never the system ones.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

PACKAGES=(
	# build
	build-essential pkg-config clang libclang-rt-14-dev
	libevent-dev libhiredis-dev libcjson-dev librabbitmq-dev libmongoc-dev libbson-dev
	libargon2-dev libinih-dev libssl-dev libpq-dev libsystemd-dev
	# servers for the tests (and openssl: the store TLS tests make
	# their own CA; deploy/gen-certs.sh, for make run and the internal links' tests, runs it too)
	redis-server redis-tools postgresql postgresql-contrib rabbitmq-server pgbouncer
	# a name with several addresses for the gateway's endpoint tests (LD_PRELOAD nss_wrapper)
	libnss-wrapper openssl
	# test drivers (they run under /usr/bin/python3)
	wrk bc python3-pytest python3-mockupdb python3-mongomock python3-pika python3-psycopg2 python3-redis python3-yaml
	# the C BSON codec for the MongoDB stand-in (test/mongo) and pymongo: without it every
	# document the logger stores is encoded and decoded in pure Python (make bench: the stand-in
	# was the largest CPU user per claim after PostgreSQL)
	python3-bson-ext python3-pymongo-ext
	# NestJS interop peers
	nodejs npm
	# the web app's browser tests (test/browser drives it with playwright-core)
	chromium fonts-liberation
	# the image tests (test/image): build the Dockerfile and run it without a Docker engine;
	# buildah brings uidmap, podman (for `podman import` of the base) crun and conmon, and
	# debootstrap makes the debian:bookworm-slim stand-in. Root on ext4 needs no fuse-overlayfs.
	buildah podman debootstrap
)

say() { printf 'deps.sh: %s\n' "$*"; }

SUDO=()
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
		SUDO=(sudo -n)
	else
		SUDO=(false) # only fails if something must be installed
	fi
fi

# virtual packages that installed packages provide (e.g. NodeSource's nodejs Provides: npm)
PROVIDED=" $(dpkg-query -W -f='${db:Status-Abbrev}|${Provides}\n' 2>/dev/null |
	sed -n 's/^ii *|//p' | tr ',' '\n' | sed 's/ *(.*//; s/^ *//' | sort -u | tr '\n' ' ') "

installed() {
	# no `dpkg -s | grep -q`: under pipefail, grep -q quitting early makes dpkg die of SIGPIPE
	[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ] && return 0
	case "$PROVIDED" in *" $1 "*) return 0 ;; esac
	return 1
}

missing=()
for p in "${PACKAGES[@]}"; do
	installed "$p" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
	say "installing: ${missing[*]}"
	if [ "${SUDO[0]:-}" = false ]; then
		say "not root and no passwordless sudo: install these packages, then run again"
		exit 1
	fi
	# keep packaging from starting redis, postgresql or rabbitmq (exit 101 = "not allowed")
	policy=/usr/sbin/policy-rc.d
	made_policy=""
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\n# temporary, from chanced test/deps.sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
		"${SUDO[@]}" chmod 755 "$policy"
		made_policy=1
	fi
	cleanup() { if [ -n "$made_policy" ]; then "${SUDO[@]}" rm -f "$policy"; fi; }
	trap cleanup EXIT
	export DEBIAN_FRONTEND=noninteractive
	apt_opts=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold
		-o DPkg::Lock::Timeout=300 --no-install-recommends)
	"${SUDO[@]}" apt-get update -q
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" "${missing[@]}" </dev/null
	still=()
	for p in "${missing[@]}"; do installed "$p" || still+=("$p"); done
	if [ "${#still[@]}" -gt 0 ]; then
		say "still missing after apt-get install: ${still[*]}"
		exit 1
	fi
	cleanup
	trap - EXIT
	say "installed ${#missing[@]} packages"
else
	say "all ${#PACKAGES[@]} Debian packages present"
fi

# System services that packaging may have started (or that an image runs) are left alone; the
# tests never use them: they bind kernel-chosen free ports on 127.0.0.1 (never 6379/5432/5672/
# 27017), run rabbitmq with its own node name, cookie and epmd port, and test_infra.py checks
# that each server it reaches lives in the test's scratch directory.
for svc in redis-server postgresql rabbitmq-server; do
	if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
		say "note: system $svc is running; the tests do not use it"
	fi
done

# NestJS reference peers for the interop tests
if [ -f "$ROOT/test/interop/package.json" ] && [ ! -d "$ROOT/test/interop/node_modules" ]; then
	say "installing test/interop node modules"
	if [ -f "$ROOT/test/interop/package-lock.json" ]; then
		npm_cmd=(npm ci)
	else
		npm_cmd=(npm install)
	fi
	if ! (cd "$ROOT/test/interop" && "${npm_cmd[@]}" --no-audit --no-fund </dev/null); then
		say "WARNING: '${npm_cmd[*]}' failed in test/interop; the NestJS interop tests will fail"
	fi
fi
# playwright-core for the web app's browser tests (it drives Debian's chromium; no download)
if [ -f "$ROOT/test/browser/package.json" ] && [ ! -d "$ROOT/test/browser/node_modules/playwright-core" ]; then
	say "installing test/browser node modules"
	if ! (cd "$ROOT/test/browser" && npm ci --no-audit --no-fund </dev/null); then
		say "WARNING: 'npm ci' failed in test/browser; the browser tests will fail"
	fi
fi
exit 0
