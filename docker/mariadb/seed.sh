#!/usr/bin/env bash
# Apply the regmirror schema (sql/apply.sh: tables, views, least-privilege accounts) and,
# unless REGMIRROR_DB_DEMO=0, the demo users. Idempotent: runs at every container start.
# Account passwords come from REGMIRROR_DB_{KAMAILIO,ASTERISK,REGMIRROR,PROVISIONER}_PASSWORD.
set -euo pipefail
export MYSQL_UNIX_PORT=/run/mysqld/mysqld.sock MYSQL_USER=root
export MYSQL_DATABASE=${DB_NAME:-regmirror}
args=()
[ "${REGMIRROR_DB_DEMO:-1}" = 1 ] && args+=(--demo)
/opt/regmirror/sql/apply.sh "${args[@]}"
