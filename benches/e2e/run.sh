#!/usr/bin/env bash
# Issue 7 part 4: end-to-end REGISTER load through the compose topology, regmirror against the
# classic tutorial design (Kamailio REGISTERs on the nodes itself: benches/kamailio/tutorial/).
#
# For each mode: a fresh stack, N users provisioned in bulk (through the provisioner account),
# then SIPp in the tester registers a fresh block of users through Kamailio at each rate for
# STEP_SECS seconds. Per step it records what the phone saw (failed registrations, p50/p99 of
# first REGISTER -> 200 OK), how many of the block Kamailio accepted (its `location` table), how
# many reached each Asterisk node (`pjsip show contacts`) and how long that took after the burst,
# and the containers' CPU (`docker stats`) in the middle of the burst.
#
#   benches/e2e/run.sh                    # four modes, rates 100..800 (stops early), ~25-35 min
#   MODES=tutorial RATES="100 200" benches/e2e/run.sh
#   MODES="regmirror1 tutorial" RATES=20 SQL_PROFILE=1 benches/e2e/run.sh   # SQL per registration
#
# Modes: none (baseline: Kamailio saves the phone's binding and notifies nobody, benches/kamailio/none/;
#        the nodes run idle), tutorial (no regmirror; benches/kamailio/tutorial/), regmirror1 (one
#        instance), regmirror1-uncapped (one instance, farm.max_register_rate = 0: the nodes take
#        new bindings at the pace of their own answers, the latency window), regmirror1-cap<N>
#        (one instance, farm.max_register_rate = N: a point between the two), regmirror (the
#        compose default pair regmirror + regmirror2).
# Env: MODES ("none tutorial regmirror1 regmirror"), RATES ("100 150 200 250 300 400 500 600 700
#      800"), STOP_AFTER (2: leave a mode after that many non-clean steps in a row; 0 = run every
#      rate), STEP_SECS (10),
#      REGMIRROR_FARM (example: regmirror.example.toml's farm periods, probe 5 s, reconcile 60 s,
#      audit 5 min; compose: the compose file's test periods 1 s / 15 s / 10 s), CONVERGE_MAX (150 s
#      after a burst), STALL_SECS (stop waiting when no node count moved for that
#      long; default 20, 70 for regmirror with REGMIRROR_FARM=example: one reconcile period), OUT (target/e2ebench/<time>), KEEP_STACK=1 (do not tear down at the end),
#      MAX_REGISTER_RATE (regmirror's farm.max_register_rate for this run; default: the compose
#      file's, 100), AUDIT_INTERVAL (5m, the example config's), STORM_HOLD (farm.storm_hold; default
#      the service's, 30s; 0s = off), NODE_CPU_SHARES (docker cpu-shares of ast1/ast2),
#      SQL_PROFILE=1 (MariaDB general log per step: DIR/sql-profile.md, statements per phone
#      registration by client; costs MariaDB CPU, so profile at low rates only), SQL_PROFILE_SETTLE
#      (5 s logged after the burst), HEALTH_INTERVAL (30s: the containers' healthcheck period
#      for this run; the compose default of 2 s runs ~3 docker execs a second, and each exec
#      (runc) takes the CPUs for tens of ms: 100-300 ms stalls every ~2 s at 1,000/s and more,
#      worse with more containers, so every mode runs with 30 s).
#      CALL_SAMPLES (20; 0 = off): phones spread over each burst that are called the moment their
#      200 OK is in (callable_probe.py: time to callable, calls to registered phones that
#      failed) -> $OUT/callable.csv; TUTORIAL_DIALPLAN (asis: the tutorial's nodes dial only the
#      contacts they hold, benches/e2e/extensions-tutorial.conf; fallback: the project's dialplan,
#      which hands a call for a user with no contact on the node to Kamailio).
# Results: $OUT/results.csv, $OUT/results.md, raw SIPp files and docker stats per step.
# Not part of tests/run-all.sh: it is a benchmark. It always ends with `scripts/stack down`.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/benches/e2e"
STACK="$ROOT/scripts/stack"
DOCKER=${DOCKER:-/usr/bin/docker}
MODES=${MODES:-"none tutorial regmirror1 regmirror"}
RATES=${RATES:-"100 150 200 250 300 400 500 600 700 800"}
STOP_AFTER=${STOP_AFTER:-2}
STEP_SECS=${STEP_SECS:-10}
CONVERGE_MAX=${CONVERGE_MAX:-150}
export REGMIRROR_FARM=${REGMIRROR_FARM:-example}
export HEALTH_INTERVAL=${HEALTH_INTERVAL:-30s}
STALL_SECS=${STALL_SECS:-}
SQL_PROFILE=${SQL_PROFILE:-0}
SQL_PROFILE_SETTLE=${SQL_PROFILE_SETTLE:-5}
OUT=${OUT:-"$ROOT/target/e2ebench/$(date -u +%Y%m%d-%H%M%S)"}
PROVISIONER_DB_PASSWORD=${PROVISIONER_DB_PASSWORD:-provisioner-demo}
BASE=300000
CALL_SAMPLES=${CALL_SAMPLES:-20}
TUTORIAL_DIALPLAN=${TUTORIAL_DIALPLAN:-asis}
PROBE_BASE=900000
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-regmirror}

mkdir -p "$OUT"
log() { echo "e2ebench $(date -u +%T): $*" | tee -a "$OUT/run.log" >&2; }
compose() { "$STACK" compose "$@"; }
now_ms() { date +%s%3N; }

cleanup() {
    if [ "${KEEP_STACK:-0}" != 1 ]; then
        log "tearing the stack down"
        "$STACK" down >>"$OUT/stack.log" 2>&1 || true
    fi
}
trap cleanup EXIT

total_users=0
for r in $RATES; do total_users=$((total_users + r * STEP_SECS)); done

# Container ids (plain `docker exec` in the polling loops: compose v1 takes ~1 s per call).
declare -A CID
cids() { for s in mariadb kamailio ast1 ast2 tester; do CID[$s]=$(compose ps -q "$s"); done; }

# Count the block's contacts (sip:<user>@<kamailio>) on one node.
node_count() { # node lo hi: users of the block with a contact on the node; -1 = no listing
    # The CLI listing takes ~15 s at 45,000 contacts; one that ends without its footer is not
    # a count (run 11 read 0 for minutes from a node that, rerun, held every binding).
    local out try
    for try in 1 2 3; do
        out=$("$DOCKER" exec "${CID[$1]}" asterisk -rx "pjsip show contacts" 2>/dev/null) || true
        if printf '%s\n' "$out" | grep -qE '^Objects found: |No objects found'; then
            printf '%s\n' "$out" \
                | { grep -oE 'sip:[0-9]+@10\.77\.0\.20:5060' || true; } | cut -d: -f2 | cut -d@ -f1 | sort -u \
                | awk -v lo="$2" -v hi="$3" '$1 >= lo && $1 <= hi' | wc -l
            return
        fi
        sleep 1
    done
    log "$1: pjsip show contacts gave no complete listing ($(printf '%s' "$out" | wc -c) bytes)"
    echo -1
}

location_count() { # lo hi
    "$DOCKER" exec "${CID[mariadb]}" mariadb -N regmirror -e \
        "SELECT COUNT(DISTINCT username) FROM location WHERE CAST(username AS UNSIGNED) BETWEEN $1 AND $2" \
        | tr -d '[:space:]'
}

provision() { # first count
    log "provisioning $2 users from $1 (bulk, provisioner account)"
    python3 - "$1" "$2" >"$OUT/users.sql" <<'PY'
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
    compose exec -T -e MYSQL_PWD="$PROVISIONER_DB_PASSWORD" mariadb \
        mariadb -h 127.0.0.1 -u provisioner regmirror <"$OUT/users.sql"
}

stack_up() { # mode
    "$STACK" down >>"$OUT/stack.log" 2>&1 || true
    if [ "$1" = none ]; then
        # Baseline: Kamailio alone (no notification, no REGISTER to the nodes; nodes idle).
        STACK_OVERLAYS=benches/e2e/compose.none.yml KAMAILIO_REGMIRROR_ADDR2= SKIP_CARGO=1 \
            "$STACK" up mariadb kamailio ast1 ast2 tester >>"$OUT/stack.log" 2>&1
    elif [ "$1" = tutorial ]; then
        # No regmirror at all; Kamailio forwards REGISTERs itself (benches/kamailio/tutorial/).
        STACK_OVERLAYS=benches/e2e/compose.tutorial.yml KAMAILIO_REGMIRROR_ADDR2= \
            AST_REGISTRAR_ADDRS=10.77.0.20 SKIP_CARGO=1 \
            "$STACK" up mariadb kamailio ast1 ast2 tester >>"$OUT/stack.log" 2>&1
        # Demo only: the plaintext-password view the tutorial needs (see the file).
        compose exec -T mariadb mariadb regmirror <"$HERE/tutorial-grant.sql"
        if [ "$TUTORIAL_DIALPLAN" = asis ]; then
            local n c
            for n in ast1 ast2; do
                c=$(compose ps -q "$n")
                "$DOCKER" cp "$HERE/extensions-tutorial.conf" "$c":/etc/asterisk/extensions.conf
                "$DOCKER" exec "$c" asterisk -rx "dialplan reload" >/dev/null
            done
        fi
    elif [ "${1%%-*}" = regmirror1 ]; then
        # one regmirror instance instead of the HA pair
        KAMAILIO_REGMIRROR_ADDR2= "$STACK" up mariadb kamailio ast1 ast2 regmirror tester >>"$OUT/stack.log" 2>&1
    else
        "$STACK" up >>"$OUT/stack.log" 2>&1
    fi
    if [ "${1#regmirror}" != "$1" ] && [ "${REGMIRROR_FARM:-compose}" = example ]; then
        # regmirror.example.toml's farm periods instead of the compose file's test periods
        # (probe 1 s, reconcile 15 s, AMI audit 10 s: each audit lists every contact of a node).
        local svc c
        for svc in regmirror regmirror2; do
            c=$(compose ps -q "$svc")
            [ -n "$c" ] || continue
            "$DOCKER" cp "$c":/etc/regmirror/regmirror.toml "$OUT/regmirror.toml"
            sed -i -e 's/^probe_interval = .*/probe_interval = "5s"/' -e 's/^probe_timeout = .*/probe_timeout = "2s"/' \
                -e 's/^reconcile_interval = .*/reconcile_interval = "60s"/' \
                -e "s/^audit_interval = .*/audit_interval = \"${AUDIT_INTERVAL:-5m}\"/" "$OUT/regmirror.toml"
            local cap=${MAX_REGISTER_RATE:-}
            [ "$1" = regmirror1-uncapped ] && cap=0
            [ "${1#regmirror1-cap}" != "$1" ] && cap=${1#regmirror1-cap}
            if [ -n "$cap" ]; then
                sed -i -e '/^max_register_rate = /d' -e "/^\[farm\]/a max_register_rate = $cap" "$OUT/regmirror.toml"
            fi
            if [ -n "${STORM_HOLD:-}" ]; then
                sed -i -e '/^storm_hold = /d' -e "/^\[farm\]/a storm_hold = \"$STORM_HOLD\"" "$OUT/regmirror.toml"
            fi
            "$DOCKER" cp "$OUT/regmirror.toml" "$c":/etc/regmirror/regmirror.toml
            "$DOCKER" restart "$c" >/dev/null
        done
        "$STACK" wait
    fi
    cids
    "$DOCKER" exec "${CID[tester]}" mkdir -p /tmp/e2e
    "$DOCKER" cp "$HERE/register-rtd.xml" "${CID[tester]}":/tmp/e2e/register-rtd.xml
    "$DOCKER" cp "$HERE/callable_probe.py" "${CID[tester]}":/tmp/e2e/callable_probe.py
    # let dispatcher's first OPTIONS probes mark both nodes up
    sleep 6
}

# SQL_PROFILE=1: MariaDB's general log (a global switch, so it also covers the connections the
# clients opened earlier) for the burst plus SQL_PROFILE_SETTLE seconds, and the server's
# Handler_*/Com_* counters over the same window. Costs MariaDB CPU: profile at low rates only.
mysql_root() { "$DOCKER" exec -i "${CID[mariadb]}" mariadb -N -B "$@"; }
status_snapshot() {
    mysql_root -e "SHOW GLOBAL STATUS WHERE Variable_name RLIKE '^(Questions|Com_(select|insert|update|delete|replace|stmt_prepare|stmt_execute|stmt_close|commit)|Handler_read_(first|key|next|prev|rnd|rnd_next)|Innodb_rows_(read|inserted|updated|deleted))$'"
}
sql_profile_start() {
    status_snapshot >"$OUT/.status0"
    mysql_root -e "SET GLOBAL general_log = 0; TRUNCATE mysql.general_log; SET GLOBAL log_output = 'TABLE'; SET GLOBAL general_log = 1"
}
sql_profile_stop() { # dir registrations
    sleep "$SQL_PROFILE_SETTLE"
    mysql_root -e "SET GLOBAL general_log = 0"
    status_snapshot >"$1/status-after.txt"
    mv "$OUT/.status0" "$1/status-before.txt"
    mysql_root -e "SELECT thread_id, user_host, command_type, argument FROM mysql.general_log" >"$1/general-log.tsv"
    python3 "$HERE/step_summary.py" --sql-profile "$1" "$2" >"$1/sql-profile.md"
    log "SQL profile: $1/sql-profile.md"
}

cpu_sample() { # file
    sleep $((STEP_SECS / 2))
    "$DOCKER" stats --no-stream --format '{{.Name}};{{.CPUPerc}};{{.MemUsage}}' >"$1" 2>/dev/null || true
}

run_step() { # mode rate lo
    local mode=$1 rate=$2 lo=$3 n=$(($2 * STEP_SECS)) hi dir t0 t1 accepted a1 a2 conv
    hi=$((lo + n - 1))
    dir="$OUT/$mode-$rate"
    mkdir -p "$dir"
    python3 -c "
import sys
lo, hi = int(sys.argv[1]), int(sys.argv[2])
print('SEQUENTIAL')
for i in range(lo, hi + 1):
    print(f'{i};pw{i};3600')
" "$lo" "$hi" | "$DOCKER" exec -i "${CID[tester]}" sh -c "cat > /tmp/e2e/users-$mode-$rate.csv"
    log "$mode: $n registrations at $rate/s (users $lo..$hi)"
    [ "$SQL_PROFILE" = 1 ] && sql_profile_start
    local prober=""
    if [ "$CALL_SAMPLES" -gt 0 ]; then
        # this step's sample phones and their callers: PROBE_BASE + 2 * (step * samples + i) (+1)
        python3 -c "
import sys
first, n = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    a = first + 2 * i
    print(f'{a};pw{a};{a + 1};pw{a + 1}')
" "$((PROBE_BASE + 2 * step_no * CALL_SAMPLES))" "$CALL_SAMPLES" \
            | "$DOCKER" exec -i "${CID[tester]}" sh -c "mkdir -p /tmp/e2e/$mode-$rate && cat > /tmp/e2e/$mode-$rate/probe-users.csv"
        "$DOCKER" exec "${CID[tester]}" python3 /tmp/e2e/callable_probe.py /tmp/e2e/$mode-$rate/callable.csv \
            "$STEP_SECS" "$CALL_SAMPLES" 7000 /tmp/e2e/$mode-$rate/probe-users.csv >"$dir/callable.txt" 2>&1 &
        prober=$!
    fi
    cpu_sample "$dir/docker-stats.txt" &
    local sampler=$!
    t0=$(now_ms)
    "$DOCKER" exec "${CID[tester]}" sh -c "mkdir -p /tmp/e2e/$mode-$rate && cd /tmp/e2e/$mode-$rate && \
        sipp -sf /tmp/e2e/register-rtd.xml -inf /tmp/e2e/users-$mode-$rate.csv \
        -r $rate -rp 1000 -m $n -l 10000 -i 10.78.0.50 -p 5061 -s regmirror.test 10.78.0.20:5060 \
        -nostdin -timeout $((STEP_SECS + 45)) -trace_rtt -rtt_freq 1 -trace_stat -fd 1 -stf stat.csv \
        -trace_err -error_file errors.log >sipp.out 2>&1; echo \$? > rc" || true
    t1=$(now_ms)
    wait "$sampler" || true
    for f in stat.csv rc errors.log; do
        "$DOCKER" exec "${CID[tester]}" sh -c "cat /tmp/e2e/$mode-$rate/$f 2>/dev/null" >"$dir/$f" || true
    done
    "$DOCKER" exec "${CID[tester]}" sh -c "cat /tmp/e2e/$mode-$rate/*_rtt.csv 2>/dev/null" >"$dir/rtt.csv" || true

    # The profile window closes before the convergence polling below (`pjsip show contacts`
    # makes the nodes look things up too).
    [ "$SQL_PROFILE" = 1 ] && sql_profile_stop "$dir" "$n"

    # Convergence: until both nodes hold every binding Kamailio accepted, or nothing moved for
    # STALL_SECS, or CONVERGE_MAX.
    local start last_change prev="" waited ok=0 stall=${STALL_SECS:-20}
    # regmirror repairs what its retries missed at the next reconcile: wait past one
    if [ -z "$STALL_SECS" ] && [ "${mode#regmirror}" != "$mode" ] && [ "${REGMIRROR_FARM:-compose}" = example ]; then stall=70; fi
    start=$(now_ms); last_change=$start
    while [ "$mode" = none ]; do # nothing goes to the nodes: only what Kamailio accepted counts
        accepted=$(location_count "$lo" "$hi"); a1=-; a2=-; waited=0; ok=1; break
    done
    while [ $ok = 0 ]; do
        accepted=$(location_count "$lo" "$hi")
        a1=$(node_count ast1 "$lo" "$hi"); a2=$(node_count ast2 "$lo" "$hi")
        waited=$(($(now_ms) - start))
        if [ "$a1" -ge "$accepted" ] && [ "$a2" -ge "$accepted" ]; then ok=1; break; fi
        if [ "$a1/$a2/$accepted" != "$prev" ]; then prev="$a1/$a2/$accepted"; last_change=$(now_ms); fi
        if [ $(($(now_ms) - last_change)) -ge $((stall * 1000)) ] || [ "$waited" -ge $((CONVERGE_MAX * 1000)) ]; then
            break
        fi
        sleep 1
    done
    if [ $ok = 1 ]; then conv=$(awk -v ms="$waited" 'BEGIN{printf "%.1f", ms/1000}'); else conv="no(${waited}ms)"; fi
    log "$mode $rate/s: accepted $accepted, ast1 $a1, ast2 $a2, converged $conv s after the burst"
    if [ -n "$prober" ]; then
        wait "$prober" || true
        "$DOCKER" exec "${CID[tester]}" cat /tmp/e2e/$mode-$rate/callable.csv >"$dir/callable.csv" 2>/dev/null || true
        log "$mode $rate/s time to callable: $(tail -1 "$dir/callable.txt")"
        echo "$mode,$rate,$(tail -1 "$dir/callable.txt" | tr ' ' ',')" >>"$OUT/callable.csv"
    fi
    python3 "$HERE/step_summary.py" "$dir" "$mode" "$rate" "$n" "$((t1 - t0))" "$accepted" "$a1" "$a2" "$conv" \
        >>"$OUT/results.csv"
    tail -1 "$OUT/results.csv" | tee -a "$OUT/run.log" >&2
}

echo "mode,rate,sent,ok,failed,burst_s,p50_ms,p99_ms,max_ms,accepted,ast1,ast2,converge_s,cpu_mariadb,cpu_kamailio,cpu_ast1,cpu_ast2,cpu_regmirror,cpu_regmirror2" \
    >"$OUT/results.csv"
log "machine: $(nproc) cpu, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
for mode in $MODES; do
    case "$mode" in none|tutorial|regmirror1|regmirror1-uncapped|regmirror1-cap[0-9]*|regmirror) ;; *) log "unknown mode $mode"; exit 2 ;; esac
    log "mode $mode: stack up"
    stack_up "$mode"
    if [ -n "${NODE_CPU_SHARES:-}" ]; then
        for s in ast1 ast2; do "$DOCKER" update --cpu-shares "$NODE_CPU_SHARES" "$(compose ps -q "$s")" >/dev/null; done
        log "nodes at cpu-shares $NODE_CPU_SHARES"
    fi
    provision "$BASE" "$total_users"
    nrates=$(echo $RATES | wc -w)
    [ "$CALL_SAMPLES" -gt 0 ] && provision "$PROBE_BASE" "$((2 * CALL_SAMPLES * nrates))"
    lo=$BASE
    bad=0
    step_no=0
    for r in $RATES; do
        run_step "$mode" "$r" "$lo"
        step_no=$((step_no + 1))
        lo=$((lo + r * STEP_SECS))
        if python3 "$HERE/step_summary.py" --last-clean "$OUT/results.csv"; then bad=0; else bad=$((bad + 1)); fi
        if [ "$STOP_AFTER" -gt 0 ] && [ "$bad" -ge "$STOP_AFTER" ]; then
            log "$mode: $bad non-clean steps in a row, skipping its higher rates"
            break
        fi
    done
    compose logs --no-color kamailio >"$OUT/kamailio-$mode.log" 2>&1 || true
    # Everything but regmirror's per-binding INFO lines, and the nodes' own logs.
    for svc in regmirror regmirror2 ast1 ast2; do
        compose logs --no-color "$svc" 2>&1 | grep -v ' binding user=' >"$OUT/$svc-$mode.log" || true
    done
    compose exec -T kamailio kamcmd -s unix:/run/kamailio/kamailio_ctl core.shmmem >"$OUT/kamailio-shm-$mode.txt" 2>&1 || true
done
python3 "$HERE/step_summary.py" --table "$OUT/results.csv" >"$OUT/results.md"
cat "$OUT/results.md"
log "results in $OUT"
