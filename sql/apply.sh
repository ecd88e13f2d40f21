#!/usr/bin/env bash
# Apply regmirror's shared schema to a MariaDB 10.11 (tested) or MySQL 8 database.
# Idempotent: on an empty database it creates everything; on an existing Asterisk
# and/or Kamailio database it adds only what is missing; a second run changes nothing.
#
# Usage: sql/apply.sh [--demo] [--no-users]
#   --demo       also load demo-users.sql (users 1001..1005, realm regmirror.test) and
#                demo-farm.sql (the compose stack's nodes ast1, ast2, while set 1 is empty)
#   --no-users   skip 40-users.sql (manage database users yourself)
# Connection, from the environment (the standard client variables):
#   MYSQL_HOST, MYSQL_TCP_PORT, MYSQL_UNIX_PORT (socket), MYSQL_USER, MYSQL_PWD
#   MYSQL_DATABASE   database to apply to (default: regmirror); created if missing
# Database users (40-users.sql), each created only when its password is set:
#   REGMIRROR_DB_KAMAILIO_PASSWORD, REGMIRROR_DB_ASTERISK_PASSWORD,
#   REGMIRROR_DB_REGMIRROR_PASSWORD, REGMIRROR_DB_PROVISIONER_PASSWORD
#   REGMIRROR_DB_USER_HOST   host part of those accounts (default: %)
set -euo pipefail

DIR=$(cd "$(dirname "$0")" && pwd)
DEMO=0
USERS=1
for arg in "$@"; do
    case "$arg" in
        --demo) DEMO=1 ;;
        --no-users) USERS=0 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "apply.sh: unknown argument '$arg'" >&2; exit 1 ;;
    esac
done
[ "${REGMIRROR_DB_DEMO:-0}" = 1 ] && DEMO=1

DB=${MYSQL_DATABASE:-regmirror}
case "$DB" in
    *[!A-Za-z0-9_]*|"") echo "apply.sh: database name '$DB' must be [A-Za-z0-9_]+" >&2; exit 1 ;;
esac

CLIENT=$(command -v mariadb || command -v mysql || true)
[ -n "$CLIENT" ] || { echo "apply.sh: no mariadb/mysql client found" >&2; exit 1; }
# --no-defaults is not accepted after other options, so it goes first; the
# MYSQL_* variables above still apply.
# The client reads MYSQL_HOST/MYSQL_TCP_PORT/MYSQL_UNIX_PORT/MYSQL_PWD itself,
# but not MYSQL_USER.
USER_ARGS=()
[ -n "${MYSQL_USER:-}" ] && USER_ARGS=(--user="$MYSQL_USER")
sql() { "$CLIENT" --no-defaults "${USER_ARGS[@]}" --batch --skip-column-names "$@"; }

# hex keeps any byte of a password intact on its way into SQL
hexvar() {
    local name=$1 value=${2-}
    if [ -z "$value" ]; then
        printf 'SET @%s = NULL;\n' "$name"
    else
        printf "SET @%s = CONVERT(UNHEX('%s') USING utf8mb4);\n" "$name" "$(printf '%s' "$value" | od -An -tx1 | tr -d ' \n')"
    fi
}

sql -e "CREATE DATABASE IF NOT EXISTS \`$DB\`"

run() {
    echo "apply.sh: $1" >&2
    sql "$DB" <"$DIR/$1"
}

run 00-helpers.sql
run 10-asterisk-pjsip.sql
run 20-kamailio.sql
run 30-views.sql
if [ "$USERS" = 1 ]; then
    echo "apply.sh: 40-users.sql" >&2
    {
        hexvar regmirror_user_host "${REGMIRROR_DB_USER_HOST:-%}"
        hexvar kamailio_pw "${REGMIRROR_DB_KAMAILIO_PASSWORD:-}"
        hexvar asterisk_pw "${REGMIRROR_DB_ASTERISK_PASSWORD:-}"
        hexvar regmirror_pw "${REGMIRROR_DB_REGMIRROR_PASSWORD:-}"
        hexvar provisioner_pw "${REGMIRROR_DB_PROVISIONER_PASSWORD:-}"
        cat "$DIR/40-users.sql"
    } | sql "$DB"
fi
if [ "$DEMO" = 1 ]; then run demo-users.sql; run demo-farm.sql; fi
run 90-cleanup.sql
echo "apply.sh: done ($DB)" >&2
