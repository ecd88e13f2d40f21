#!/usr/bin/env bash
# Create the database and the service accounts, then apply the regmirror schema and demo
# users. Everything here is idempotent: it runs at every container start.
set -euo pipefail
: "${DB_NAME:=regmirror}"
: "${ASTERISK_DB_PASSWORD:=asterisk-demo}"
: "${KAMAILIO_DB_PASSWORD:=kamailio-demo}"
: "${REGMIRROR_DB_PASSWORD:=regmirror-demo}"

sql_root() { mariadb --protocol=socket -uroot "$@"; }

# Passwords go through stdin, never argv (no leak via ps).
sql_root <<SQL
CREATE DATABASE IF NOT EXISTS \`$DB_NAME\` CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS 'asterisk'@'%' IDENTIFIED BY '$ASTERISK_DB_PASSWORD';
CREATE USER IF NOT EXISTS 'kamailio'@'%' IDENTIFIED BY '$KAMAILIO_DB_PASSWORD';
CREATE USER IF NOT EXISTS 'regmirror'@'%' IDENTIFIED BY '$REGMIRROR_DB_PASSWORD';
GRANT ALL PRIVILEGES ON \`$DB_NAME\`.* TO 'asterisk'@'%';
GRANT ALL PRIVILEGES ON \`$DB_NAME\`.* TO 'kamailio'@'%';
GRANT ALL PRIVILEGES ON \`$DB_NAME\`.* TO 'regmirror'@'%';
FLUSH PRIVILEGES;
SQL

if [ -x /opt/regmirror/sql/apply.sh ]; then
    /opt/regmirror/sql/apply.sh
else
    for f in /opt/regmirror/schema/*.sql; do
        sql_root "$DB_NAME" < "$f"
    done
fi
