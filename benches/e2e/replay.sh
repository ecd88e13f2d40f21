#!/usr/bin/env bash
# Issue 7: replay onto a real Asterisk 22. How long an emptied node takes to get N live bindings
# back at each `farm.replay_rate`, and the highest pacing it accepts without errors.
#
# One stack (the compose default: mariadb, kamailio, ast1, ast2, regmirror primary + regmirror2
# standby, tester); N users provisioned in bulk through the provisioner account; N live rows put
# straight into Kamailio's `location` (regmirror's reconciliation reads exactly that:
# `location.expires > NOW()` joined with the credentials, src/store/credentials.rs). Then per
# pacing R: regmirror's config gets `farm.replay_rate = R` (docker cp + restart; its startup
# reconciliation registers the N users on both nodes at R), and ast1 is re-created with an empty
# contact store the way tests/e2e/test_resilience.py::test_wiped_node_gets_every_binding_back
# does (`rm -sf ast1`, marked down, `up -d --no-deps ast1`). replay_watch.py times it (re-create,
# healthy, regmirror sees it up, all N registered again) and collects the errors (regmirror's
# /metrics deltas: REGISTER answers other than 200/401, retransmissions, Timer F timeouts, failing
# bindings, the node marked down again; ast1's own WARNING/ERROR lines) and the CPU.
#
#   benches/e2e/replay.sh                        # N=5000, pacings 200 500 1000 2000 4000, ~4 min
#   N=1000 RATES="200 1000" benches/e2e/replay.sh
#
# Env: N (5000), RATES ("200 500 1000 2000 4000"), OUT (target/e2ebench/replay-<time>),
#      SKIP_CARGO (1: use the release binary already in target/; 0 lets scripts/stack build it),
#      KEEP_STACK=1 (do not tear down at the end).
# Results: $OUT/results.csv, $OUT/results.md, per pacing R: $OUT/R.json (everything measured),
# $OUT/R-ast-log.txt (ast1's warnings/errors), $OUT/R-docker-stats.txt.
# Not part of tests/run-all.sh: it is a benchmark. It always ends with `scripts/stack down`.
# Wrap it in the stack lock: flock /tmp/regmirror-stack.lock benches/e2e/replay.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/benches/e2e"
STACK="$ROOT/scripts/stack"
DOCKER=${DOCKER:-/usr/bin/docker}
N=${N:-5000}
RATES=${RATES:-"200 500 1000 2000 4000"}
OUT=${OUT:-"$ROOT/target/e2ebench/replay-$(date -u +%Y%m%d-%H%M%S)"}
PROVISIONER_DB_PASSWORD=${PROVISIONER_DB_PASSWORD:-provisioner-demo}
ADMIN=http://10.77.0.40:9070
ADMIN2=http://10.77.0.41:9070
BASE=400000
LAST=$((BASE + N - 1))
WATCH="$HERE/replay_watch.py"
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-regmirror}
export SKIP_CARGO=${SKIP_CARGO:-1}

mkdir -p "$OUT"
log() { echo "replaybench $(date -u +%T): $*" | tee -a "$OUT/run.log" >&2; }
compose() { "$STACK" compose "$@"; }

cleanup() {
    if [ "${KEEP_STACK:-0}" != 1 ]; then
        log "tearing the stack down"
        "$STACK" down >>"$OUT/stack.log" 2>&1 || true
    fi
}
trap cleanup EXIT

declare -A CID
cids() { for s in mariadb ast1 ast2 regmirror regmirror2 tester; do CID[$s]=$(compose ps -q "$s"); done; }

# Users of our block holding Kamailio's contact on a node (`pjsip show contacts`).
node_count() { # node
    "$DOCKER" exec "$(compose ps -q "$1")" asterisk -rx "pjsip show contacts" 2>/dev/null \
        | { grep -oE 'sip:[0-9]+@10\.77\.0\.20:5060' || true; } | cut -d: -f2 | cut -d@ -f1 | sort -u \
        | awk -v lo="$BASE" -v hi="$LAST" '$1 >= lo && $1 <= hi' | wc -l
}

wait_for() { # description timeout-seconds command...
    local what=$1 timeout=$2 start=$SECONDS
    shift 2
    until "$@"; do
        if [ $((SECONDS - start)) -ge "$timeout" ]; then log "timeout: $what"; return 1; fi
        sleep 0.3
    done
}

provision() {
    log "provisioning $N users $BASE..$LAST (bulk, provisioner account) and $N live location rows"
    python3 - "$BASE" "$N" >"$OUT/users.sql" <<'PY'
import sys
first, count = int(sys.argv[1]), int(sys.argv[2])
for start in range(first, first + count, 1000):
    ids = range(start, min(start + 1000, first + count))
    print("INSERT INTO ps_aors (id, max_contacts, remove_existing, qualify_frequency) VALUES "
          + ",".join(f"('{i}',1,'yes',0)" for i in ids) + ";")
    print("INSERT INTO ps_auths (id, auth_type, username, realm, password) VALUES "
          + ",".join(f"('{i}','userpass','{i}','regmirror.test','pw{i}')" for i in ids) + ";")
    print("INSERT INTO ps_endpoints (id, aors, auth, context, disallow, allow, direct_media, "
          "rewrite_contact, rtp_symmetric, force_rport, dtmf_mode, identify_by) VALUES "
          + ",".join(f"('{i}','{i}','{i}','phones','all','ulaw,alaw','no','no','yes','no',"
                     f"'rfc4733','username')" for i in ids) + ";")
PY
    "$DOCKER" exec -i -e MYSQL_PWD="$PROVISIONER_DB_PASSWORD" "${CID[mariadb]}" \
        mariadb -h 127.0.0.1 -u provisioner regmirror <"$OUT/users.sql"
    # Bindings as Kamailio's usrloc would write them (a phone at the tester, 2 hours left):
    # Kamailio itself never hears of them, which the replay does not need.
    python3 - "$BASE" "$N" >"$OUT/location.sql" <<'PY'
import sys
first, count = int(sys.argv[1]), int(sys.argv[2])
for start in range(first, first + count, 1000):
    ids = range(start, min(start + 1000, first + count))
    print("INSERT INTO location (ruid, username, contact, received, expires, callid, cseq, "
          "last_modified, user_agent, socket) VALUES "
          + ",".join(f"('replaybench-{i}','{i}','sip:{i}@10.78.0.50:5061',NULL,"
                     f"NOW() + INTERVAL 2 HOUR,'replaybench-{i}',1,NOW(),'replaybench',"
                     f"'udp:10.78.0.20:5060')" for i in ids) + ";")
PY
    "$DOCKER" exec -i "${CID[mariadb]}" mariadb regmirror <"$OUT/location.sql"
    local live
    live=$("$DOCKER" exec "${CID[mariadb]}" mariadb -N regmirror -e \
        "SELECT COUNT(DISTINCT username) FROM location WHERE expires > NOW() AND username BETWEEN '$BASE' AND '$LAST'")
    log "live location rows of the block: $live"
    [ "$live" = "$N" ]
}

# farm.replay_rate = R in both instances' config; restart the primary (the pacing is read at
# start), wait until it is active again, regmirror2 standby, and both nodes hold all N.
set_rate() { # R
    local r=$1 svc t0
    sed "/^\[farm\]/a replay_rate = $r" "$OUT/regmirror.toml.orig" >"$OUT/regmirror-$r.toml"
    chmod 644 "$OUT/regmirror-$r.toml"
    for svc in regmirror regmirror2; do
        "$DOCKER" cp "$OUT/regmirror-$r.toml" "${CID[$svc]}":/etc/regmirror/regmirror.toml
    done
    t0=$(date +%s%3N)
    "$DOCKER" restart "${CID[regmirror]}" >/dev/null
    "$STACK" wait >>"$OUT/stack.log" 2>&1
    wait_for "regmirror active, regmirror2 standby" 30 \
        bash -c "[ \"\$(python3 '$WATCH' metrics $ADMIN | grep -c '^regmirror_ha_active 1')\" = 1 ] &&
                 [ \"\$(python3 '$WATCH' metrics $ADMIN2 | grep -c '^regmirror_ha_active 0')\" = 1 ]" || true
    local secs
    secs=$(python3 "$WATCH" wait "$ADMIN" "$N" $((N * 2 / r + 120))) || secs=timeout
    log "R=$r: regmirror restarted; $N bindings registered on both nodes ${secs} s after it was healthy ($(( $(date +%s%3N) - t0 )) ms after the restart)"
    echo "$secs" >"$OUT/$r-initial-s.txt"
}

replay_step() { # R
    local r=$1 a1 a2 rc=0 since
    since=$(date +%s)
    set_rate "$r"
    a1=$(node_count ast1); a2=$(node_count ast2)
    log "R=$r: before the wipe ast1 $a1, ast2 $a2 of $N"
    compose rm -sf ast1 >>"$OUT/stack.log" 2>&1
    wait_for "regmirror marks ast1 down" 20 bash -c "[ \"\$(python3 '$WATCH' metrics $ADMIN | grep -c '^regmirror_node_up{node=\"ast1\"} 0')\" = 1 ]"
    python3 "$WATCH" metrics "$ADMIN" >"$OUT/$r-metrics-before.txt"
    python3 "$WATCH" watch "$ADMIN" ast1 "$N" "$r" "$OUT/$r-metrics-before.txt" "$OUT/$r.json" \
        >"$OUT/$r-watch.txt" &
    local watcher=$!
    compose up -d --no-deps ast1 >>"$OUT/stack.log" 2>&1
    wait "$watcher" || rc=$?
    log "R=$r: $(cat "$OUT/$r-watch.txt")"
    python3 "$WATCH" metrics "$ADMIN" >"$OUT/$r-metrics-after.txt"
    a1=$(node_count ast1); a2=$(node_count ast2)
    log "R=$r: after the replay ast1 $a1, ast2 $a2 of $N (pjsip show contacts)"
    "$DOCKER" logs --since "$since" "$(compose ps -q regmirror)" 2>&1 | grep -E ' (WARN|ERROR) ' >"$OUT/$r-regmirror-warn.txt" || true
    python3 - "$OUT/$r.json" "$a1" "$a2" "$(cat "$OUT/$r-initial-s.txt")" "$rc" >>"$OUT/results.csv" <<'PY'
import csv, json, sys
path, a1, a2, initial, rc = sys.argv[1:]
try:
    j = json.load(open(path))
except (OSError, ValueError):
    j = {}
cw, ds = j.get("cpu_window", {}), j.get("docker_stats", {})
clean = (rc == "0" and a1 == str(j.get("n")) and j.get("bad_codes", 1) == 0
         and j.get("timeouts", 1) == 0 and j.get("worst_failed", 1) == 0
         and j.get("down_again", 1) == 0)
codes = " ".join(f"{k}:{v}" for k, v in sorted(j.get("codes", {}).items()))
csv.writer(sys.stdout, lineterminator="\n").writerow([
    j.get("rate"), j.get("n"), j.get("healthy_s"), j.get("up_s"), j.get("replay_s"),
    j.get("from_create_s"), j.get("achieved"), a1, a2, codes, j.get("bad_codes"),
    j.get("retransmits"), j.get("timeouts"), j.get("failed_transitions"), j.get("worst_failed"),
    j.get("down_again"), j.get("ast_bad_lines"), j.get("ast_taskprocessor"), j.get("ast_unable"),
    cw.get("ast1"), cw.get("mariadb"), cw.get("regmirror"), ds.get("ast1"), ds.get("mariadb"),
    initial, "yes" if clean else "no"])
PY
    tail -1 "$OUT/results.csv" | tee -a "$OUT/run.log" >&2
    echo "$rc" >"$OUT/$r-rc"
}

table() {
    python3 - "$OUT/results.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print("| replay_rate | N | replay s (seen up -> all N) | achieved/s | healthy / seen up after re-create s | ast1 / ast2 contacts | REGISTER answers (code:count) | retransmits / timeouts / failing | ast1 WARNING+ERROR lines | CPU % of a core over the replay: ast1 / mariadb / regmirror | docker stats mid-replay ast1 / mariadb | clean |")
print("| ---: | ---: | ---: | ---: | --- | --- | --- | --- | ---: | --- | --- | --- |")
for r in rows:
    print(f"| {r['rate']} | {r['n']} | {r['replay_s']} | {r['achieved']} | {r['healthy_s']} / {r['up_s']} "
          f"| {r['ast1']} / {r['ast2']} | {r['codes']} | {r['retransmits']} / {r['timeouts']} / "
          f"{r['failed_transitions']} | {r['ast_bad_lines']} | {r['cpu_ast1']} / {r['cpu_mariadb']} / "
          f"{r['cpu_regmirror']} | {r['ds_ast1']} / {r['ds_mariadb']} | {r['clean']} |")
clean = [int(r["rate"]) for r in rows if r["clean"] == "yes"]
print()
print(f"Highest error-free pacing: {max(clean) if clean else 'none'} (of {', '.join(r['rate'] for r in rows)})")
PY
}

echo "rate,n,healthy_s,up_s,replay_s,from_create_s,achieved,ast1,ast2,codes,bad_codes,retransmits,timeouts,failed_transitions,worst_failed,down_again,ast_bad_lines,ast_taskprocessor,ast_unable,cpu_ast1,cpu_mariadb,cpu_regmirror,ds_ast1,ds_mariadb,initial_s,clean" \
    >"$OUT/results.csv"
log "machine: $(nproc) cpu, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
log "stack up (SKIP_CARGO=$SKIP_CARGO)"
"$STACK" down >>"$OUT/stack.log" 2>&1 || true
"$STACK" up >>"$OUT/stack.log" 2>&1
cids
"$DOCKER" cp "${CID[regmirror]}":/etc/regmirror/regmirror.toml "$OUT/regmirror.toml.orig"
grep -q '^\[farm\]' "$OUT/regmirror.toml.orig"
provision
for r in $RATES; do
    replay_step "$r"
    if [ "$(cat "$OUT/$r-rc")" != 0 ]; then
        log "R=$r: ast1 did not get all $N back in time; skipping the higher pacings"
        break
    fi
    cids
done
table >"$OUT/results.md"
cat "$OUT/results.md"
log "results in $OUT"
