#!/usr/bin/env bash
# test/image/image.sh: build the repository's Dockerfile with buildah, without a Docker engine.
# test/image/test_image.py calls it; it also works by hand (as root):
#
#   test/image/image.sh base             # make localhost/debian:bookworm-slim if it is missing
#   test/image/image.sh build [IIDFILE]  # base, then the Dockerfile -> localhost/chanced:test
#   test/image/image.sh clean [--base]   # remove the test's working containers, the test image
#                                        # and dangling layers (--base: the base image too)
#
# The base image stands in for Docker Hub's debian:bookworm-slim: `debootstrap --variant=minbase
# bookworm` from the Debian mirror that /etc/apt/sources.list* names, slimmed the same way (no
# docs, man pages or locales; apt keeps no .debs or lists), with apt sources for bookworm,
# bookworm-updates and bookworm-security, imported once into buildah/podman storage
# (/var/lib/containers) and reused afterwards. The build runs with chroot isolation (buildah's
# other isolations need an OCI runtime, which cannot create containers here) and --layers, so a
# rebuild with unchanged sources is all cache hits. One lock file serialises base creation and
# builds between concurrent runs.
#
# Environment:
#   CHANCED_IMAGE_TAG       the image built (default localhost/chanced:test)
#   CHANCED_IMAGE_BASE      the base image name (default localhost/debian:bookworm-slim; the
#                           Dockerfile's FROM debian:bookworm-slim finds it with --pull=never)
#   CHANCED_IMAGE_MIRROR    Debian mirror for debootstrap (default: from /etc/apt/sources.list*)
#   CHANCED_IMAGE_LOCK      lock file (default /var/tmp/chanced-image-test.lock)
#   CHANCED_IMAGE_LOCK_WAIT seconds to wait for the lock (default 1200)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TAG=${CHANCED_IMAGE_TAG:-localhost/chanced:test}
BASE=${CHANCED_IMAGE_BASE:-localhost/debian:bookworm-slim}
LOCK=${CHANCED_IMAGE_LOCK:-/var/tmp/chanced-image-test.lock}
LOCK_WAIT=${CHANCED_IMAGE_LOCK_WAIT:-1200}
SUITE=bookworm
WORK_PREFIX=chanced-imgtest- # working containers made by test_image.py

say() { printf 'image.sh: %s\n' "$*" >&2; }
die() {
	say "$*"
	exit 1
}

need() {
	local t
	for t in "$@"; do
		command -v "$t" >/dev/null || die "$t is missing (test/deps.sh installs it)"
	done
}

lock() {
	exec 9>>"$LOCK"
	if ! flock -n 9; then
		say "waiting for $LOCK (another build holds it)"
		flock -w "$LOCK_WAIT" 9 || die "no lock on $LOCK after ${LOCK_WAIT}s"
	fi
}

image_exists() { buildah inspect --type image "$1" >/dev/null 2>&1; }

# mirrors: print "MAIN SECURITY", the first Debian URIs serving $SUITE and $SUITE-security in
# the host's apt sources (one-line and deb822 formats); Debian's own hosts where none is found.
mirrors() {
	/usr/bin/python3 - "$SUITE" <<'PY'
import glob, re, sys
suite = sys.argv[1]
found = {}
def note(uris, suites):
    for s in suites:
        for u in uris:
            found.setdefault(s, u.rstrip("/"))
for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*")):
    try:
        text = open(path, encoding="utf-8", errors="replace").read()
    except OSError:
        continue
    if path.endswith(".sources"):
        for stanza in re.split(r"\n\s*\n", text):
            f = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                k, v = line.split(":", 1)
                f[k.strip().lower()] = v.split()
            if "deb" in f.get("types", []) and f.get("enabled", ["yes"])[0] != "no":
                note(f.get("uris", []), f.get("suites", []))
    elif path.endswith(".list"):
        for line in text.splitlines():
            line = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(line) >= 3 and line[0] == "deb":
                note([line[1]], [line[2]])
main = found.get(suite, "http://deb.debian.org/debian")
sec = found.get(suite + "-security", "http://deb.debian.org/debian-security")
print(main, sec)
PY
}

# slim ROOTFS: what Docker Hub's -slim variants leave out, and apt settings for images
slim() {
	local r=$1
	mkdir -p "$r/etc/dpkg/dpkg.cfg.d" "$r/etc/apt/apt.conf.d"
	cat >"$r/etc/dpkg/dpkg.cfg.d/chanced-test-slim" <<'EOF'
# test/image/image.sh: a slim image keeps no documentation, manuals or translations
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
EOF
	cat >"$r/etc/apt/apt.conf.d/chanced-test-slim" <<'EOF'
// test/image/image.sh: no package cache, no translations, no suggested packages kept
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
APT::AutoRemove::SuggestsImportant "false";
EOF
	find "$r/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
	find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
	rm -rf "$r/usr/share/man/"* "$r/usr/share/info/"* "$r/usr/share/groff/"* \
		"$r/usr/share/lintian/"* "$r/usr/share/locale/"*
	rm -rf "$r/var/lib/apt/lists/"* "$r/var/cache/apt/"*.bin "$r/var/cache/apt/archives/"*.deb \
		"$r/var/log/"*.log "$r/var/log/apt/"* "$r/var/cache/ldconfig/aux-cache"
}

make_base() {
	need debootstrap podman
	local main sec tmp rc=0
	read -r main sec < <(mirrors)
	main=${CHANCED_IMAGE_MIRROR:-$main}
	tmp=$(mktemp -d /var/tmp/chanced-base.XXXXXX)
	# --one-file-system: never into a /proc or /sys that a failed debootstrap left mounted
	# shellcheck disable=SC2064 # expand now: tmp is local
	trap "rm -rf --one-file-system '$tmp'" EXIT
	say "making $BASE: debootstrap --variant=minbase $SUITE from $main (about a minute)"
	if ! debootstrap --variant=minbase "$SUITE" "$tmp/rootfs" "$main" \
		>"$tmp/debootstrap.log" 2>&1; then
		tail -n 30 "$tmp/debootstrap.log" >&2
		die "debootstrap failed"
	fi
	rm -f "$tmp/rootfs/etc/apt/sources.list"
	cat >"$tmp/rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $main
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $sec
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
	slim "$tmp/rootfs"
	# an image has empty /dev, /proc, /sys, /run and /tmp (the runtime fills them)
	tar --numeric-owner --xattrs -C "$tmp/rootfs" \
		--exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./run/*' \
		--exclude='./tmp/*' -cf - . |
		podman import --quiet \
			--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
			--change 'CMD ["bash"]' \
			--message "debootstrap --variant=minbase $SUITE $main (chanced test/image/image.sh)" \
			- "$BASE" >/dev/null || rc=$?
	rm -rf --one-file-system "$tmp"
	trap - EXIT
	[ "$rc" -eq 0 ] || die "podman import failed"
	say "made $BASE"
}

cmd_base() {
	need buildah
	image_exists "$BASE" && return 0
	lock
	image_exists "$BASE" || make_base # someone may have made it while we waited
}

cmd_build() {
	need buildah
	local iidfile=${1:-}
	lock
	image_exists "$BASE" || make_base
	local args=(--isolation chroot --pull=never --layers --format docker -t "$TAG")
	[ -n "$iidfile" ] && args+=(--iidfile "$iidfile")
	say "buildah bud ${args[*]} ."
	(cd "$ROOT" && buildah bud "${args[@]}" .)
}

cmd_clean() {
	need buildah
	lock
	local c
	while read -r c; do
		case "$c" in "$WORK_PREFIX"*) buildah rm "$c" >/dev/null && say "removed container $c" ;; esac
	done < <(buildah containers --format '{{.ContainerName}}')
	if image_exists "$TAG"; then buildah rmi "$TAG" >/dev/null && say "removed $TAG"; fi
	if [ "${1:-}" = --base ] && image_exists "$BASE"; then
		buildah rmi "$BASE" >/dev/null && say "removed $BASE"
	fi
	# the --layers cache: untagged images, of this and any other build in root's storage
	buildah rmi --prune >/dev/null 2>&1 || true
	say "storage: $(du -sh /var/lib/containers/storage 2>/dev/null | cut -f1)"
}

case "${1:-}" in
base) cmd_base ;;
build) cmd_build "${2:-}" ;;
clean) cmd_clean "${2:-}" ;;
*)
	sed -n '2,9p' "${BASH_SOURCE[0]}" >&2
	exit 64
	;;
esac
