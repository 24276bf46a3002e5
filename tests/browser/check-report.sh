#!/usr/bin/env bash
# Loads failure reports in headless Chromium and checks them from inside the page
# (tests/browser/report_check.js): the operation that cannot be placed is in view, no two
# visible labels overlap, and the page has no script errors. One report of each kind:
# linearizability, convergence, a Raft invariant. The control: the report this page
# replaced (tests/browser/before-history.html) must fail the same check.
#
#   tests/browser/check-report.sh [OUT]     # OUT: where reports and screenshots go
#
# CHROMIUM names the browser (default: chromium on the PATH).
set -euo pipefail
cd "$(dirname "$0")/../.."
out="$(realpath -m "${1:-target/odgm-sim/report-check}")"
browser="${CHROMIUM:-$(command -v chromium || true)}"
if [ -z "$browser" ]; then
  echo "check-report: no chromium (set CHROMIUM or install Debian's chromium)" >&2
  exit 2
fi
rm -rf "$out"
mkdir -p "$out"
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
  --disable-background-networking --disable-component-update --disable-sync
  --hide-scrollbars --user-data-dir="$profile" --window-size=1600,1000)

# A run that fails writes its folder; the exit code says it failed, which is expected.
report() { # kind scenario seed bug
  cargo run --quiet -- run "scenarios/$2.toml" --seed "$3" --bug "$4" --out "$out/$1" >/dev/null || true
  local page="$out/$1/$2-seed-$3/history.html"
  [ -f "$page" ] || { echo "check-report: $1: no report at $page" >&2; exit 1; }
  echo "$page"
}

# Prints the page's own verdict on itself (JSON).
inspect() { # page name
  cp tests/browser/report_check.js "$out/report_check.js"
  sed 's#</body>#<script src="report_check.js"></script></body>#' "$1" >"$out/$2.html"
  "$browser" "${flags[@]}" --virtual-time-budget=5000 --dump-dom "file://$out/$2.html" 2>/dev/null \
    | python3 -c 'import sys, re, html; m = re.search(r"<pre id=\"report-check\">(.*?)</pre>", sys.stdin.read(), re.S); print(html.unescape(m.group(1)) if m else "{}")'
  "$browser" "${flags[@]}" --virtual-time-budget=5000 --screenshot="$out/$2.png" "file://$1" >/dev/null 2>&1
}

# judge NAME JSON NEEDS HEADLINE_WORD: exit status 0 if the page passes. NEEDS: "failed" (the
# operation that cannot be placed in view), "moment" (the failure's moment and operations in
# view) or "ops" (operations in view).
judge() {
  python3 - "$@" <<'PY'
import json, sys
name, raw, needs, word = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
r = json.loads(raw or "{}")
bad = []
if not r:
    bad.append("the page reported nothing (did its script run?)")
else:
    if r["errors"]:
        bad.append(f"script errors: {r['errors']}")
    if r["overlaps"]:
        bad.append(f"{r['overlaps']} pairs of visible labels overlap, e.g. {r['first_overlaps']}")
    if r["labels"] == 0:
        bad.append("no label is visible")
    if needs == "failed" and not r["failed_in_view"]:
        bad.append(f"the operation that cannot be placed is not in view ({r['failed_ops']} marked)")
    if needs == "moment" and not r.get("moment_in_view"):
        bad.append("the failure's moment is not in view")
    if needs in ("moment", "ops") and not r.get("ops_in_view"):
        bad.append("no operation is in view")
    if word.lower() not in r["headline"].lower():
        bad.append(f"the headline does not name the failure ({word!r}): {r['headline'][:200]!r}")
print(f"{name}: {'ok' if not bad else 'FAILS: ' + '; '.join(bad)} ({r.get('labels', 0)} labels, {r.get('ops_in_view', 0)} operations in view)")
sys.exit(1 if bad else 0)
PY
}

status=0
lin=$(report linearizability raft-leader-partition 0 raft-follower-local-reads)
judge linearizability "$(inspect "$lin" linearizability)" failed "linearizability" || status=1
conv=$(report convergence mst-partition-skew 0 mst-no-tombstones)
judge convergence "$(inspect "$conv" convergence)" ops "convergence" || status=1
raft=$(report raft-invariant raft-cut-on-vote 0 raft-vote-not-synced)
judge raft-invariant "$(inspect "$raft" raft-invariant)" moment "durability" || status=1

# The control: the check must fire on the report this page replaced, on what it checks for
# in the page itself (labels that overlap, the failing operation out of view), not only on
# the headline the old page did not have.
before=$(inspect tests/browser/before-history.html before)
if judge "control (the old report)" "$before" failed "linearizability"; then
  echo "check-report: the control passed: the check cannot tell a bad report" >&2
  status=1
elif ! python3 -c 'import json, sys; r = json.loads(sys.argv[1]); sys.exit(0 if r["overlaps"] > 0 and not r["failed_in_view"] else 1)' "$before"; then
  echo "check-report: the control failed, but not on overlapping labels and the failing operation out of view" >&2
  status=1
else
  echo "check-report: the control failed on overlapping labels and the failing operation out of view, as it must"
fi
echo "check-report: screenshots in $out/*.png"
exit $status
