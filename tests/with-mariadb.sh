#!/usr/bin/env bash
# Run CMD... against a throwaway MariaDB started here (Debian's mariadbd, not a mock).
# Data dir and socket live in a temp dir; TCP on 127.0.0.1:${REGMIRROR_TEST_DB_PORT:-3307}.
# The schema in sql/ is applied with sql/apply.sh, then CMD runs with these set:
#   REGMIRROR_TEST_DATABASE_URL      admin (all privileges on the test database)
#   REGMIRROR_TEST_KAMAILIO_URL, REGMIRROR_TEST_ASTERISK_URL,
#   REGMIRROR_TEST_REGMIRROR_URL, REGMIRROR_TEST_PROVISIONER_URL   one per role
#   REGMIRROR_TEST_DB_ENV            a file to source for MYSQL_* admin client settings
# The server is always stopped, whatever CMD returns.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PORT=${REGMIRROR_TEST_DB_PORT:-3307}
DB=${REGMIRROR_TEST_DB_NAME:-regmirror_test}

if ! command -v mariadbd >/dev/null 2>&1; then
    echo "with-mariadb: installing mariadb-server" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server mariadb-client >/dev/null
fi

TMP=$(mktemp -d /tmp/regmirror-mariadb.XXXXXX)
SOCK=$TMP/mysqld.sock
PID=""
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        env -u MYSQL_PWD mariadb-admin --no-defaults --socket="$SOCK" -uroot shutdown >/dev/null 2>&1 || kill "$PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

# root may run mariadbd only when told so explicitly
RUN_AS=root
[ "$(id -u)" = 0 ] || RUN_AS=$(id -un)

mariadb-install-db --no-defaults --datadir="$TMP/data" --user="$RUN_AS" \
    --auth-root-authentication-method=normal --skip-test-db >"$TMP/install.log" 2>&1 \
    || { cat "$TMP/install.log" >&2; exit 1; }

mariadbd --no-defaults --datadir="$TMP/data" --socket="$SOCK" --port="$PORT" \
    --bind-address=127.0.0.1 --pid-file="$TMP/mysqld.pid" --user="$RUN_AS" \
    --skip-log-bin --innodb-buffer-pool-size=64M --innodb-log-file-size=16M \
    --log-error="$TMP/error.log" --character-set-server=utf8mb4 \
    --collation-server=utf8mb4_general_ci &
PID=$!

for _ in $(seq 1 150); do
    mariadb-admin --no-defaults --socket="$SOCK" -uroot ping >/dev/null 2>&1 && break
    kill -0 "$PID" 2>/dev/null || { cat "$TMP/error.log" >&2; exit 1; }
    sleep 0.2
done
mariadb-admin --no-defaults --socket="$SOCK" -uroot ping >/dev/null || { cat "$TMP/error.log" >&2; exit 1; }

ADMIN_PW=admin-test-pw
mariadb --no-defaults --socket="$SOCK" -uroot <<SQL
CREATE USER IF NOT EXISTS 'rmadmin'@'127.0.0.1' IDENTIFIED BY '$ADMIN_PW';
GRANT ALL PRIVILEGES ON *.* TO 'rmadmin'@'127.0.0.1' WITH GRANT OPTION;
SQL

cat >"$TMP/db.env" <<ENV
export MYSQL_HOST=127.0.0.1
export MYSQL_TCP_PORT=$PORT
export MYSQL_USER=rmadmin
export MYSQL_PWD=$ADMIN_PW
export MYSQL_DATABASE=$DB
export REGMIRROR_DB_USER_HOST=127.0.0.1
export REGMIRROR_DB_KAMAILIO_PASSWORD=kamailio-test-pw
export REGMIRROR_DB_ASTERISK_PASSWORD=asterisk-test-pw
export REGMIRROR_DB_REGMIRROR_PASSWORD=regmirror-test-pw
export REGMIRROR_DB_PROVISIONER_PASSWORD=provisioner-test-pw
ENV
# shellcheck disable=SC1091
. "$TMP/db.env"

"$ROOT/sql/apply.sh" >"$TMP/apply.log" 2>&1 || { cat "$TMP/apply.log" >&2; exit 1; }

export REGMIRROR_TEST_DB_ENV=$TMP/db.env
export REGMIRROR_TEST_DATABASE_URL="mysql://rmadmin:$ADMIN_PW@127.0.0.1:$PORT/$DB"
export REGMIRROR_TEST_KAMAILIO_URL="mysql://kamailio:kamailio-test-pw@127.0.0.1:$PORT/$DB"
export REGMIRROR_TEST_ASTERISK_URL="mysql://asterisk:asterisk-test-pw@127.0.0.1:$PORT/$DB"
export REGMIRROR_TEST_REGMIRROR_URL="mysql://regmirror:regmirror-test-pw@127.0.0.1:$PORT/$DB"
export REGMIRROR_TEST_PROVISIONER_URL="mysql://provisioner:provisioner-test-pw@127.0.0.1:$PORT/$DB"
export REGMIRROR_TEST_APPLY="$ROOT/sql/apply.sh"

set +e
"$@"
RC=$?
set -e
exit $RC
