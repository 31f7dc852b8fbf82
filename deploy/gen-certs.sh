#!/bin/sh
# deploy/gen-certs.sh: a private CA and one certificate per role for chanced's internal links
# (mutual TLS between the gateway and the chance and logger roles). Uses the openssl command.
#
#   deploy/gen-certs.sh DIR [ROLE[=NAME,NAME...] ...]      (default roles: gateway chance logger)
#
# Writes, in DIR:
#   ca/ca.key        the CA's private key (0400). Keep it here, off the servers: it signs peers.
#   ca/ca.crt        the CA certificate (0444)
#   ROLE/ca.crt      a copy of it                 -> rpc_tls_ca
#   ROLE/cert.pem    the role's certificate (0444) -> rpc_tls_cert
#   ROLE/key.pem     its private key (0400)        -> rpc_tls_key
#
# Each role certificate carries, as subjectAltName, the role's name, localhost, 127.0.0.1 and ::1,
# plus the names given after "=" (DNS names or IP addresses: chance=chance.internal,10.0.0.5).
# A client checks the server's certificate against the host of the address it dials
# (chance_addr), so that host must be among them. Each certificate serves both ends of a link
# (extendedKeyUsage serverAuth and clientAuth): with --role=all one process is both. Keys are
# EC P-256; the CA is valid for GEN_CERTS_CA_DAYS (3650), role certificates for GEN_CERTS_DAYS
# (825) days.
#
# Idempotent: an existing CA is kept; a role's files are kept while they verify against the CA,
# match each other, name every requested host and stay valid for 30 more days; otherwise that
# role's key and certificate are made anew. Files are replaced by rename, never rewritten in place.
set -eu

usage() {
	echo "usage: $0 DIR [ROLE[=NAME,NAME...] ...]" >&2
	exit 64
}
[ $# -ge 1 ] || usage
case "$1" in -*) usage ;; esac
DIR=$1
shift
[ $# -gt 0 ] || set -- gateway chance logger
command -v openssl >/dev/null 2>&1 || {
	echo "$0: openssl is not installed" >&2
	exit 69
}
# Bad input changes nothing: every argument is checked before a file is written.
for spec in "$@"; do
	role=${spec%%=*}
	case "$role" in
	'' | *[!A-Za-z0-9_-]*)
		echo "$0: bad role name '$role' (letters, digits, - and _)" >&2
		exit 64
		;;
	esac
	case "$spec" in
	*=*[!A-Za-z0-9.:,-]* | *=*,,* | *=,* | *=*, | *=)
		echo "$0: bad names in '$spec' (DNS names or IP addresses, comma-separated)" >&2
		exit 64
		;;
	esac
done
CA_DAYS=${GEN_CERTS_CA_DAYS:-3650}
DAYS=${GEN_CERTS_DAYS:-825}
RENEW_S=2592000 # renew what expires within 30 days

umask 077
mkdir -p "$DIR/ca"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/gen-certs.XXXXXX") # scratch: configuration and requests
trap 'rm -rf "$TMP"; rm -f "$DIR"/*/.*.new' EXIT INT TERM

say() { printf 'gen-certs: %s\n' "$*"; }

# install_file NEW MODE: NEW is DIR/x/.NAME.new, written in the directory it belongs to; give it
# its mode and rename it over DIR/x/NAME.
install_file() {
	chmod "$2" "$1"
	base=${1##*/.}
	mv -f "$1" "${1%/*}/${base%.new}"
}

# A configuration of our own, so the system's openssl.cnf defaults add nothing.
cat >"$TMP/req.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
[ca_ext]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
EOF

CA_KEY=$DIR/ca/ca.key
CA_CRT=$DIR/ca/ca.crt
if [ -s "$CA_KEY" ] && [ -s "$CA_CRT" ]; then
	say "keeping the CA in $DIR/ca"
else
	openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$DIR/ca/.ca.key.new" -out "$DIR/ca/.ca.crt.new" -days "$CA_DAYS" \
		-config "$TMP/req.cnf" -extensions ca_ext \
		-subj "/O=chanced/CN=chanced internal CA $(date -u +%Y%m%d%H%M%S)" 2>"$TMP/err" || {
		cat "$TMP/err" >&2
		exit 1
	}
	install_file "$DIR/ca/.ca.key.new" 0400
	install_file "$DIR/ca/.ca.crt.new" 0444
	say "new CA in $DIR/ca (its key signs every role certificate: keep it private)"
fi

is_ip() {
	case "$1" in
	*:*) return 0 ;;
	*[!0-9.]*) return 1 ;;
	*) return 0 ;;
	esac
}

# role_ok ROLE NAMES: the role's files exist, verify, match and name every host.
role_ok() {
	d=$DIR/$1
	[ -s "$d/cert.pem" ] && [ -s "$d/key.pem" ] && [ -s "$d/ca.crt" ] || return 1
	cmp -s "$d/ca.crt" "$CA_CRT" || return 1
	openssl verify -CAfile "$CA_CRT" "$d/cert.pem" >/dev/null 2>&1 || return 1
	openssl x509 -in "$d/cert.pem" -noout -checkend "$RENEW_S" >/dev/null 2>&1 || return 1
	a=$(openssl x509 -in "$d/cert.pem" -noout -pubkey 2>/dev/null) || return 1
	b=$(openssl pkey -in "$d/key.pem" -pubout 2>/dev/null) || return 1
	[ "$a" = "$b" ] || return 1
	for n in $(echo "$2" | tr ',' ' '); do
		if is_ip "$n"; then
			openssl x509 -in "$d/cert.pem" -noout -checkip "$n" | grep -q ' does match' || return 1
		else
			openssl x509 -in "$d/cert.pem" -noout -checkhost "$n" | grep -q ' does match' || return 1
		fi
	done
	return 0
}

for spec in "$@"; do
	role=${spec%%=*}
	extra=
	[ "$role" = "$spec" ] || extra=${spec#*=}
	names="$role,localhost,127.0.0.1,::1${extra:+,$extra}"
	mkdir -p "$DIR/$role"
	if role_ok "$role" "$names"; then
		say "keeping $DIR/$role"
		continue
	fi
	san=
	for n in $(echo "$names" | tr ',' ' '); do
		if is_ip "$n"; then san="$san,IP:$n"; else san="$san,DNS:$n"; fi
	done
	cat >"$TMP/$role.ext" <<EOF
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = ${san#,}
EOF
	d=$DIR/$role
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/.key.pem.new" \
		-out "$TMP/req.csr" -config "$TMP/req.cnf" -subj "/O=chanced/CN=$role" 2>"$TMP/err" &&
		openssl x509 -req -in "$TMP/req.csr" -CA "$CA_CRT" -CAkey "$CA_KEY" \
			-set_serial "0x$(openssl rand -hex 16)" -days "$DAYS" -extfile "$TMP/$role.ext" \
			-out "$d/.cert.pem.new" 2>"$TMP/err" || {
		cat "$TMP/err" >&2
		exit 1
	}
	cp "$CA_CRT" "$d/.ca.crt.new"
	install_file "$d/.key.pem.new" 0400
	install_file "$d/.cert.pem.new" 0444
	install_file "$d/.ca.crt.new" 0444
	say "new certificate for $role in $DIR/$role (${san#,})"
done
