#!/usr/bin/env bash
# Renders regmirror's status page in headless Chromium (Debian's `chromium`), saves a screenshot
# and asserts the page's content from the DOM Chromium built.
#   tests/status-page.sh ADMIN_URL SCREENSHOT_NAME [NODE=CONFIRMED ...]
# e.g. tests/status-page.sh http://10.77.0.40:9070 compose-status.png ast1=1 ast2=1
# Each NODE must appear in the farm table; with =N its `confirmed` count must be N.
# Artifacts (PNG and the dumped DOM) go to $REGMIRROR_ARTIFACTS (default target/artifacts).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
URL=${1:?admin URL}
NAME=${2:?screenshot file name}
shift 2
OUT=${REGMIRROR_ARTIFACTS:-$ROOT/target/artifacts}
mkdir -p "$OUT"
PROFILE=$(mktemp -d /tmp/regmirror-chromium.XXXXXX)
trap 'rm -rf "$PROFILE"' EXIT
FLAGS=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
       --disable-background-networking --disable-component-update --disable-sync
       --disable-dev-shm-usage --hide-scrollbars --user-data-dir="$PROFILE" --window-size=1200,800)

timeout 60 chromium "${FLAGS[@]}" --screenshot="$OUT/$NAME" "$URL/status" >"$PROFILE/shot.log" 2>&1 \
    || { cat "$PROFILE/shot.log" >&2; echo "status-page: screenshot failed" >&2; exit 1; }
[ -s "$OUT/$NAME" ] || { echo "status-page: empty screenshot" >&2; exit 1; }
DOM="$OUT/${NAME%.png}.html"
timeout 60 chromium "${FLAGS[@]}" --dump-dom "$URL/status" >"$DOM" 2>"$PROFILE/dom.log" \
    || { cat "$PROFILE/dom.log" >&2; echo "status-page: dump-dom failed" >&2; exit 1; }

# A search: the first listed binding's user, sorted by node.
FIRST=$(python3 -c 'import re,sys; m=re.search(r"<tr class=\"binding\"><td>([^<]+)</td>", open(sys.argv[1]).read()); print(m.group(1) if m else "")' "$DOM")
SEARCH="$OUT/${NAME%.png}-search.html"
if [ -n "$FIRST" ]; then
    timeout 60 chromium "${FLAGS[@]}" --dump-dom "$URL/status?user=$FIRST&sort=node" >"$SEARCH" 2>"$PROFILE/search.log" \
        || { cat "$PROFILE/search.log" >&2; echo "status-page: search dump-dom failed" >&2; exit 1; }
fi

python3 - "$DOM" "$SEARCH" "$FIRST" "$@" <<'PY'
import re, sys
dom = open(sys.argv[1], encoding="utf-8").read()
search_file, first = sys.argv[2], sys.argv[3]
del sys.argv[1:4]
sys.argv.insert(1, "")
fail = []
if not re.search(r'<form method="get" action="/status" id="search">', dom):
    fail.append("no search form")
if dom.count('<svg class="spark') < 3:
    fail.append("no pictures of the last hour")
if first:
    found = open(search_file, encoding="utf-8").read()
    users = re.findall(r'<tr class="binding"><td>([^<]+)</td>', found)
    if not users or any(not u.startswith(first) for u in users):
        fail.append(f"search for {first}: rows {users[:5]}")
    if f'value="{first}"' not in found or '<a class="sort on" href="/status?user=' not in found:
        fail.append("search page does not keep the search and the sort")
if 'sort=age">waiting</a>' not in dom:
    fail.append("bindings cannot be sorted by age")
if "<h1>regmirror</h1>" not in dom:
    fail.append("no regmirror heading")
if 'http-equiv="refresh"' not in dom:
    fail.append("page does not refresh itself")
rows = {m.group(1): m.group(2) for m in re.finditer(r'<tr class="node" data-node="([^"]+)">(.*?)</tr>', dom, re.S)}
for spec in sys.argv[2:]:
    node, _, want = spec.partition("=")
    row = rows.get(node)
    if row is None:
        fail.append(f"node {node} missing (have {sorted(rows)})")
        continue
    if want:
        m = re.search(r'<td class="n confirmed[^"]*">(\d+)</td>', row)
        got = m.group(1) if m else None
        if got != want:
            fail.append(f"node {node}: confirmed {got}, expected {want}")
if fail:
    print("status-page: " + "; ".join(fail), file=sys.stderr)
    sys.exit(1)
print(f"status-page: ok ({', '.join(sys.argv[2:]) or 'page rendered'})")
PY
echo "status-page: screenshot $OUT/$NAME"
