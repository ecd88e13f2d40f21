#!/usr/bin/env bash
# Start MariaDB, (re)apply the regmirror schema and demo data (idempotent), then stay in the
# foreground with the server. The healthcheck reports healthy only after seeding finished.
set -euo pipefail

DATADIR=/var/lib/mysql
SEEDED=/run/mysqld/seeded
export DB_NAME=${DB_NAME:-regmirror}

log() { echo "mariadb-entrypoint: $*" >&2; }

mkdir -p /run/mysqld
chown mysql:mysql /run/mysqld "$DATADIR"
rm -f "$SEEDED"

if [ ! -d "$DATADIR/mysql" ]; then
    log "initializing datadir"
    mariadb-install-db --user=mysql --datadir="$DATADIR" --skip-test-db \
        --auth-root-authentication-method=socket >/dev/null
fi

mariadbd --user=mysql --datadir="$DATADIR" "$@" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null' TERM INT

for _ in $(seq 1 120); do
    mariadb-admin --protocol=socket ping >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { log "mariadbd exited"; wait "$pid"; exit 1; }
    sleep 0.5
done

log "applying schema to database $DB_NAME"
/usr/local/bin/seed.sh
touch "$SEEDED"
log "ready"

# wait returns early on a trapped signal; wait again for the server's own exit status.
wait "$pid" || true
wait "$pid" 2>/dev/null || true
