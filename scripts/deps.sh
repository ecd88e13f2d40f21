#!/usr/bin/env bash
# What this project needs on the machine, installed from the distribution when missing
# (Debian or Ubuntu, as root). Says what it installs before doing it, shows progress, and
# refuses clearly on a system it cannot set up.
#   scripts/deps.sh stack   Docker engine and compose, debootstrap      (scripts/stack up)
#   scripts/deps.sh test    those, MariaDB, SIPp, pytest, Chromium, ... (tests/run-all.sh)
set -euo pipefail
what=${1:-stack}
want=(docker.io docker-compose debootstrap)
case "$what" in
    stack) ;;
    test) want+=(mariadb-server mariadb-client sip-tester python3-pytest iproute2 curl chromium) ;;
    *) echo "usage: scripts/deps.sh stack|test" >&2; exit 1 ;;
esac
missing=()
if command -v dpkg >/dev/null 2>&1; then
    for p in "${want[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
else
    missing=("${want[@]}")
fi
# The Docker engine answering (a machine without systemd does not start it by itself).
start_docker() {
    /usr/bin/docker info >/dev/null 2>&1 && return 0
    echo "deps: starting the Docker engine (dockerd, log /var/log/dockerd.log)" >&2
    (nohup dockerd >/var/log/dockerd.log 2>&1 &)
    for _ in $(seq 1 60); do /usr/bin/docker info >/dev/null 2>&1 && return 0; sleep 1; done
    echo "deps: dockerd did not start:" >&2; tail -20 /var/log/dockerd.log >&2; exit 1
}
if [ ${#missing[@]} -eq 0 ]; then start_docker; exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "deps: needs ${missing[*]} (Debian package names); only Debian and Ubuntu are set up" \
         "automatically: install their equivalents and run again" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "deps: missing ${missing[*]}: run as root (or install them with sudo apt-get install)" >&2
    exit 1
fi
echo "deps: installing ${missing[*]} from the distribution (a few minutes)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# One line of progress instead of apt's pages; the whole output if it fails.
log=$(mktemp)
if ! apt-get install -y --no-install-recommends "${missing[@]}" 2>&1 | tee "$log" |
        awk '/^Setting up /{n++; printf "\rdeps: %d packages set up", n > "/dev/stderr"} END {print "" > "/dev/stderr"}'; then
    cat "$log" >&2
    rm -f "$log"
    echo "deps: apt-get install failed" >&2
    exit 1
fi
grep -q "^E: " "$log" && { cat "$log" >&2; rm -f "$log"; exit 1; }
rm -f "$log"
echo "deps: done" >&2
start_docker
