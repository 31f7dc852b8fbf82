#!/bin/sh
# Self-test of the interop tools against the reference Nest server (no chanced,
# no broker): Nest ClientTCP <-> Nest TCP microservice, plus a re-capture of
# test/data/nest_frames.txt that must come out byte-identical.
#   sh test/interop/selftest.sh        (after: npm ci --prefix test/interop)
set -u
cd "$(dirname "$0")"
pass=0; fail=0
out=$(mktemp -d)
node nest_server.js --port 0 >"$out/server.out" 2>"$out/server.err" &
spid=$!
trap 'kill $spid 2>/dev/null; rm -rf "$out"' EXIT
i=0; while [ $i -lt 100 ] && ! grep -q listening "$out/server.out" 2>/dev/null; do sleep 0.1; i=$((i+1)); done
port=$(head -1 "$out/server.out" | sed 's/.*"port":\([0-9]*\).*/\1/')

check() { # name expected_rc expected_stdout cmd...
  name=$1 erc=$2 eout=$3; shift 3
  got=$("$@" 2>/dev/null); rc=$?
  if [ "$rc" = "$erc" ] && [ "$got" = "$eout" ]; then pass=$((pass+1)); else
    fail=$((fail+1)); echo "FAIL $name: rc=$rc (want $erc)"; echo "  got:  $got"; echo "  want: $eout"; fi
}
C="node nest_client.js"
check echo 0 '{"ok":true,"response":{"a":1,"t":"سلام 🎉"}}' $C call --port "$port" --cmd echo --data '{"a":1,"t":"سلام 🎉"}'
check stream 0 '{"ok":true,"responses":[{"seq":1},{"seq":2},{"seq":3}]}' $C call --port "$port" --cmd stream --stream
check stream.slow 0 '{"ok":true,"responses":[{"seq":1},{"seq":2},{"seq":3}]}' $C call --port "$port" --cmd stream.slow --stream
check empty 0 '{"ok":true,"empty":true}' $C call --port "$port" --cmd empty
check fail 0 '{"ok":false,"err":{"code":"bad_thing","message":"something bad happened"}}' $C call --port "$port" --cmd fail
check unknown 0 '{"ok":false,"err":"There is no matching message handler defined in the remote service."}' $C call --port "$port" --cmd nope
check timeout 2 '{"ok":false,"failure":"timeout","message":"no complete reply within 300 ms"}' $C call --port "$port" --cmd sleep --data '{"ms":2000}' --timeout 300
check refused 2 '{"ok":false,"failure":"connection","message":"connect ECONNREFUSED 127.0.0.1:1"}' $C call --port 1 --cmd echo
check emit 0 '{"ok":true}' $C emit --port "$port" --cmd note --data '{"n":"کد 🎁"}'
echo '[{"cmd":"sleep","data":{"ms":200,"i":0}},{"cmd":"sleep","data":{"ms":10,"i":1}},{"cmd":"fail"},{"cmd":"stream","stream":true}]' >"$out/calls.json"
check batch 0 '[{"ok":true,"response":{"ms":200,"i":0}},{"ok":true,"response":{"ms":10,"i":1}},{"ok":false,"err":{"code":"bad_thing","message":"something bad happened"}},{"ok":true,"responses":[{"seq":1},{"seq":2},{"seq":3}]}]' $C batch --port "$port" --file "$out/calls.json"
check event_seen 0 '{"event":{"cmd":"note"},"data":{"n":"کد 🎁"}}' sed -n 2p "$out/server.out"
node capture_frames.js "$out/frames.txt" >/dev/null 2>&1
check frames_reproduce 0 '' cmp "$out/frames.txt" ../data/nest_frames.txt
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
