#!/usr/bin/env bash
# `regmirror user import` of 20,000 users (issue 17's target: under 10 s) against the compose
# MariaDB (`scripts/stack up mariadb`): a fresh import and a re-run (nothing to change), each
# repeated REPEATS times, the users deleted before each fresh import. Prints one line per run.
#   benches/user-import.sh [USERS] [REPEATS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
USERS=${1:-20000} REPEATS=${2:-3}
BIN=${BIN:-$ROOT/target/release/regmirror}
URL=${URL:-mysql://provisioner:provisioner-demo@10.77.0.10:3306/regmirror}
DB_CONTAINER=${DB_CONTAINER:-regmirror_mariadb_1}
csv=$(mktemp --suffix .csv)
trap 'rm -f "$csv"' EXIT
python3 - "$USERS" > "$csv" <<'PY'
import secrets, sys
print("user,password,context,codecs")
for i in range(int(sys.argv[1])):
    print(f"bench{i:06d},{secrets.token_hex(8)},phones,\"ulaw,alaw\"")
PY
wipe() {
    docker exec -i "$DB_CONTAINER" mariadb regmirror -e "DELETE FROM ps_endpoints WHERE id LIKE 'bench%';
        DELETE FROM ps_auths WHERE id LIKE 'bench%'; DELETE FROM ps_aors WHERE id LIKE 'bench%';"
}
timed() {
    local s e
    s=$(date +%s%N)
    REGMIRROR_DATABASE_URL=$URL "$BIN" user import --csv "$csv" --realm regmirror.test | tail -1 >&2
    e=$(date +%s%N)
    echo "$(( (e - s) / 1000000 ))"
}
for r in $(seq 1 "$REPEATS"); do
    wipe
    echo "run $r: fresh $(timed) ms, re-run $(timed) ms ($USERS users)"
done
wipe
