#!/usr/bin/env bash
# Measures, with the real binary over UDP, how long regmirror takes to (1) register N live users
# found by its first reconciliation and (2) replay all of them onto a node that restarts with an
# empty contact table. Fake registrars (examples/fake_registrar.rs) stand in for Asterisk; the
# database is a real MariaDB. Run: tests/with-mariadb.sh tests/replay-udp.sh [N]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-1000}
FIRST=1000
LAST=$((FIRST + N - 1))
: "${REGMIRROR_TEST_DB_ENV:?run through tests/with-mariadb.sh}"
# shellcheck disable=SC1090
. "$REGMIRROR_TEST_DB_ENV"
BIN=$ROOT/target/release
[ -x "$BIN/regmirror" ] && [ -x "$BIN/examples/fake_registrar" ] || {
    echo "build first: cargo build --release --features testing --example fake_registrar --bin regmirror" >&2
    exit 1
}
TMP=$(mktemp -d /tmp/regmirror-replay.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT INT TERM

mariadb --no-defaults ${MYSQL_HOST:+-h"$MYSQL_HOST"} ${MYSQL_TCP_PORT:+-P"$MYSQL_TCP_PORT"} \
    -u"$MYSQL_USER" "$MYSQL_DATABASE" <<SQL
INSERT INTO ps_aors (id, max_contacts, remove_existing, qualify_frequency)
  SELECT seq, 1, 'yes', 0 FROM seq_${FIRST}_to_${LAST};
INSERT INTO ps_auths (id, auth_type, username, realm, password)
  SELECT seq, 'userpass', seq, 'regmirror.test', CONCAT('secret', seq) FROM seq_${FIRST}_to_${LAST};
INSERT INTO ps_endpoints (id, aors, auth, context, disallow, allow, direct_media, rewrite_contact,
  rtp_symmetric, force_rport, dtmf_mode, identify_by)
  SELECT seq, seq, seq, 'phones', 'all', 'ulaw,alaw', 'no', 'no', 'yes', 'no', 'rfc4733', 'username'
  FROM seq_${FIRST}_to_${LAST};
INSERT INTO location (ruid, username, contact, expires)
  SELECT CONCAT('bench-', seq), seq, CONCAT('sip:', seq, '@192.0.2.1:5060'), NOW() + INTERVAL 1 HOUR
  FROM seq_${FIRST}_to_${LAST};
SQL

# Ports away from the defaults other runs may hold; override with REPLAY_PORT_BASE.
B=${REPLAY_PORT_BASE:-15100}
fake() { # port logfile; sets LAST_PID
    "$BIN/examples/fake_registrar" "127.0.0.1:$1" regmirror.test "$FIRST" "$N" >"$2" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}
fake $((B + 1)) "$TMP/fake1.log"
fake $((B + 2)) "$TMP/fake2.log"
FAKE2=$LAST_PID
cat >"$TMP/regmirror.toml" <<TOML
[sip]
listen = "127.0.0.1:$B"
domain = "regmirror.test"
[kamailio]
trusted = ["127.0.0.1"]
contact_host = "10.77.0.20:5060"
[[nodes]]
name = "fake1"
address = "127.0.0.1:$((B + 1))"
[[nodes]]
name = "fake2"
address = "127.0.0.1:$((B + 2))"
[database]
url = "$REGMIRROR_TEST_REGMIRROR_URL"
[admin]
listen = "127.0.0.1:$((B + 9))"
[farm]
replay_rate = ${REPLAY_RATE:-200}
TOML

# Waits until the fake's last "live_contacts" line says N; prints the seconds waited.
wait_full() { # logfile timeout
    local t0 now
    t0=$(date +%s.%N)
    while :; do
        if tail -n1 "$1" 2>/dev/null | grep -qx "live_contacts $N"; then
            now=$(date +%s.%N); echo "$now - $t0" | bc; return 0
        fi
        now=$(date +%s.%N)
        if (( $(echo "$now - $t0 > $2" | bc) )); then echo "timeout"; return 1; fi
        sleep 0.05
    done
}

"$BIN/regmirror" run --config "$TMP/regmirror.toml" >"$TMP/regmirror.log" 2>&1 &
PIDS+=($!)
echo "start: $N users found by the first reconciliation, registered on 2 nodes in $(wait_full "$TMP/fake2.log" 60) s (fake logs tick each 1 s)"
kill "$FAKE2"
sleep 15
grep -q "node down" "$TMP/regmirror.log" && echo "fake2 marked down" || echo "fake2 NOT marked down"
fake $((B + 2)) "$TMP/fake2b.log"
TOOK=$(wait_full "$TMP/fake2b.log" 60)
FULL=$(date +%s.%N)
UP=$(date -d "$(grep -m1 'node up' "$TMP/regmirror.log" | awk '{print $1}')" +%s.%N)
echo "replay: fake2 back empty, $N bindings back in $TOOK s after its restart, $(echo "$FULL - $UP" | bc) s after regmirror saw it up (fake logs tick each 1 s)"
grep -E "node (down|up)" "$TMP/regmirror.log" | sed 's/^/  log: /' | head -4
curl -s http://127.0.0.1:$((B + 9))/metrics | grep -E "^regmirror_(nodes_down|reconcile_runs_total|drift)" | sed 's/^/  /'
