#!/usr/bin/env bash
# The compose suite (issue 4): bring the stack up, run pytest on tests/e2e, save every
# container's logs (and the tester's SIPp/baresip scratch files) to target/artifacts/ on
# failure, and always tear the stack down. Exit code: pytest's (or the stack's, if it did not
# come up). Extra arguments go to pytest, e.g. `tests/e2e/run.sh -k calls`.
#   E2E_KEEP_STACK=1   leave the stack running afterwards (debugging)
#   PROXIES=2          the proxy-pair topology instead, and only the tests that need it
#                      (tests/e2e/test_proxies.py)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
export PATH="/usr/bin:$PATH"
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-regmirror}
ART="$ROOT/target/artifacts"
STACK="$ROOT/scripts/stack"
rc=1

PY=python3
for cand in /usr/bin/python3 python3; do
    if "$cand" -c 'import pytest' 2>/dev/null; then PY=$cand; break; fi
done

save_artifacts() {
    rm -rf "$ART" && mkdir -p "$ART"
    local svc id
    for svc in $("$STACK" compose config --services 2>/dev/null); do
        "$STACK" compose logs --no-color --timestamps "$svc" > "$ART/$svc.log" 2>&1
    done
    for n in ast1 ast2; do
        "$STACK" compose exec -T "$n" asterisk -rx "pjsip show contacts" > "$ART/$n-contacts.txt" 2>&1
    done
    "$STACK" compose ps > "$ART/ps.txt" 2>&1
    id=$("$STACK" compose ps -q tester 2>/dev/null)
    if [ -n "$id" ] && docker cp "$id:/tmp/e2e" "$ART/tester-tmp" >/dev/null 2>&1; then
        # test passwords live in SIPp inf files and baresip accounts: keep them out
        find "$ART/tester-tmp" \( -name '*.csv' -o -name accounts \) -delete
    fi
    [ -f "$ART.pytest.log" ] && mv "$ART.pytest.log" "$ART/pytest.log"
    echo "e2e: logs saved to $ART" >&2
}

finish() {
    trap - EXIT INT TERM
    if [ "$rc" -ne 0 ]; then save_artifacts; else rm -f "$ART.pytest.log"; fi
    if [ "${E2E_KEEP_STACK:-0}" = 1 ]; then
        echo "e2e: stack left running (E2E_KEEP_STACK=1)" >&2
    else
        "$STACK" down >/dev/null 2>&1 || echo "e2e: stack down failed" >&2
    fi
    exit "$rc"
}
trap finish EXIT
trap 'rc=130; finish' INT TERM

t0=$SECONDS
"$STACK" up || { rc=$?; echo "e2e: stack did not come up" >&2; exit "$rc"; }
echo "e2e: stack up in $((SECONDS - t0)) s" >&2

mkdir -p "$(dirname "$ART")"
ops_rc=0
tests=("$ROOT/tests/e2e")
if [ "${PROXIES:-1}" = 2 ]; then
    tests=("$ROOT/tests/e2e/test_proxies.py")
    export REGMIRROR_REQUIRE_PROXIES=1
else
    # Issue 6 against the live stack: /metrics after real traffic, `regmirror status <user>`,
    # and the status page rendered in headless Chromium (screenshot in target/artifacts/).
    REGMIRROR_TEST_STACK_ADMIN=http://10.77.0.40:9070 REGMIRROR_REQUIRE_STACK=1 \
        cargo test --release --test stack_ops -- --nocapture
    ops_rc=$?
    echo "e2e: stack_ops exit $ops_rc" >&2
fi
t1=$SECONDS
"$PY" -m pytest "${tests[@]}" -v -p no:cacheprovider -rfE "$@" 2>&1 | tee "$ART.pytest.log"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] && [ "$ops_rc" -ne 0 ] && rc=$ops_rc
echo "e2e: pytest exit $rc in $((SECONDS - t1)) s" >&2
exit "$rc"
