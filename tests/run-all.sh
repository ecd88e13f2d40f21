#!/usr/bin/env bash
# The project's test command (README): static checks, unit and core tests, database tests against
# a real MariaDB, then the compose suite with real Kamailio, Asterisk, MariaDB, SIPp and baresip.
set -euo pipefail
cd "$(dirname "$0")/.."
# A fresh machine: the test dependencies from the distribution (says what, refuses where it cannot).
bash scripts/deps.sh test
# Debian's docker client talks to the engine here; another client may sit earlier in PATH.
export PATH="/usr/bin:$PATH"
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$PATH:$HOME/.cargo/bin"
command -v cargo >/dev/null || { echo "run-all: cargo (Rust >= 1.85) is required: https://rustup.rs" >&2; exit 1; }

echo "== static checks"
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings

echo "== unit, core, service and database tests (real MariaDB)"
REGMIRROR_REQUIRE_DB=1 REGMIRROR_REQUIRE_CHROMIUM=1 bash tests/with-mariadb.sh cargo test --all-targets

if [ "${REGMIRROR_SKIP_E2E:-0}" = 1 ]; then
  echo "== compose suite skipped (REGMIRROR_SKIP_E2E=1)"
  exit 0
fi
echo "== compose suite"
bash tests/e2e/run.sh
echo "== compose suite, two Kamailio proxies"
PROXIES=2 bash tests/e2e/run.sh
