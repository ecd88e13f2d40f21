#!/bin/sh
# Healthy = the CLI answers, the realtime DB connection is up and the UDP transport exists.
asterisk -rx "core show version" >/dev/null 2>&1 || exit 1
asterisk -rx "odbc show regmirror" 2>/dev/null | grep -Eq "active connections: [1-9]" || exit 1
asterisk -rx "pjsip show transports" 2>/dev/null | grep -q "transport-udp" || exit 1
