#!/usr/bin/env bash
# Smoke test of the running compose stack (scripts/stack up): a phone registers through
# Kamailio, regmirror mirrors it onto both Asterisk nodes, a second phone calls it through the
# farm, the unregister removes it from both nodes. Exit 0 = all passed.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v docker-compose >/dev/null 2>&1; then DC=(docker-compose); else DC=(docker compose); fi
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-regmirror}
dc() { "${DC[@]}" "$@"; }
t() { dc exec -T tester bash -c "$1"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }
SIPP="sipp -i 10.77.0.50 -s regmirror.test -m 1 -nostdin -timeout 10"

contacts_on() { dc exec -T "$1" asterisk -rx "pjsip show contacts" | grep -c "Contact:  $2/sip:$2@10.77.0.20" || true; }
wait_contacts() { # node aor want
    for _ in $(seq 1 50); do [ "$(contacts_on "$1" "$2")" = "$3" ] && return 0; sleep 0.2; done
    return 1
}

t "printf 'SEQUENTIAL\n1002;secret1002;120\n' > /tmp/s-1002.csv
   $SIPP -sf /work/tests/sipp/register.xml -inf /tmp/s-1002.csv -p 5072 10.77.0.20:5060 >/dev/null 2>&1" \
    || fail "REGISTER 1002 through Kamailio"
pass "REGISTER 1002 through Kamailio: 401 then 200"

for n in ast1 ast2; do
    wait_contacts "$n" 1002 1 || fail "1002 not registered on $n"
    pass "1002 mirrored onto $n"
done

t "printf 'SEQUENTIAL\n1001;secret1001;1002\n' > /tmp/s-call.csv
   $SIPP -sf /work/tests/sipp/uas-answer.xml -p 5072 -timeout 20 >/dev/null 2>&1 & uas=\$!
   sleep 0.5
   $SIPP -sf /work/tests/sipp/uac-call.xml -inf /tmp/s-call.csv -p 5063 -timeout 20 10.77.0.20:5060 >/dev/null 2>&1
   wait \$uas" || fail "call 1001 -> 1002 through the farm"
pass "call 1001 -> 1002 through Kamailio and the farm"

t "printf 'SEQUENTIAL\n1001;secret1001;600\n' > /tmp/s-echo.csv
   $SIPP -sf /work/tests/sipp/uac-call.xml -inf /tmp/s-echo.csv -p 5063 10.77.0.20:5060 >/dev/null 2>&1" \
    || fail "echo test 600"
pass "echo test 600"

t "printf 'SEQUENTIAL\n1002;secret1002;0\n' > /tmp/s-unreg.csv
   $SIPP -sf /work/tests/sipp/register.xml -inf /tmp/s-unreg.csv -p 5072 10.77.0.20:5060 >/dev/null 2>&1" \
    || fail "unREGISTER 1002"
for n in ast1 ast2; do
    wait_contacts "$n" 1002 0 || fail "1002 still registered on $n after unregister"
    pass "1002 removed from $n"
done
echo "all passed"
