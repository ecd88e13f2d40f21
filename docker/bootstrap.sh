#!/usr/bin/env bash
# Make sure the Debian base images the Dockerfiles start FROM exist locally.
# Order of attempts per image: already present -> docker pull -> debootstrap + docker import.
# Idempotent; fast when the images are present.
#
# Env:
#   DEBIAN_MIRROR   mirror for debootstrap (default: http://deb.debian.org/debian)
#   BOOTSTRAP_SUITES  suites to ensure (default: "bookworm sid")
set -euo pipefail

DOCKER=${DOCKER:-/usr/bin/docker}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITES=${BOOTSTRAP_SUITES:-bookworm sid}

log() { echo "bootstrap: $*" >&2; }

have_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

ensure_debootstrap() {
    command -v debootstrap >/dev/null 2>&1 && return 0
    log "installing debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

build_with_debootstrap() {
    local suite=$1 image=$2 dir
    ensure_debootstrap
    dir=$(mktemp -d "/tmp/debootstrap-$suite.XXXXXX")
    # shellcheck disable=SC2064  # expand $dir now
    trap "rm -rf '$dir'" RETURN
    log "debootstrap --variant=minbase $suite from $MIRROR (takes a few minutes)"
    debootstrap --variant=minbase "$suite" "$dir" "$MIRROR" >"$dir.log" 2>&1 || {
        log "debootstrap failed, see $dir.log"; tail -20 "$dir.log" >&2; return 1; }
    rm -f "$dir.log"
    # Keep the image lean like the official -slim ones.
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/archives/*.deb
    tar -C "$dir" -c . | "$DOCKER" import \
        -c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8' - "$image" >/dev/null
    log "imported $image"
}

for suite in $SUITES; do
    image="debian:${suite}-slim"
    if have_image "$image"; then
        log "$image present"
        continue
    fi
    if timeout 60 "$DOCKER" pull -q "$image" >/dev/null 2>&1; then
        log "pulled $image"
        continue
    fi
    build_with_debootstrap "$suite" "$image"
done
