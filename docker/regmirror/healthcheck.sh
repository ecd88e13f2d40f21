#!/bin/bash
# Healthy = the admin listener answers /healthz with 200 (no curl in the slim image).
exec 3<>/dev/tcp/127.0.0.1/9070 || exit 1
printf 'GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
IFS= read -r -t 3 status <&3 || exit 1
case "$status" in *" 200 "*) exit 0 ;; *) exit 1 ;; esac
