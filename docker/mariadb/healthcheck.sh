#!/bin/sh
# Healthy = server answers and the schema has been applied since this start.
test -f /run/mysqld/seeded && mariadb-admin --protocol=socket ping >/dev/null 2>&1
