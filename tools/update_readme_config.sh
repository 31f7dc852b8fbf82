#!/usr/bin/env bash
# Regenerates the configuration table in README.md from the binary's own key tables
# (`chanced config markdown`). test/integration/test_readme.py fails when they drift apart.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/build/chanced}
TABLE=$(env -i PATH="$PATH" "$BIN" config markdown)
/usr/bin/python3 - "$ROOT/README.md" "$TABLE" <<'PY'
import sys
path, table = sys.argv[1], sys.argv[2]
text = open(path).read()
begin = text.index("<!-- BEGIN CONFIG TABLE")
begin = text.index("\n", begin) + 1
end = text.index("<!-- END CONFIG TABLE -->")
open(path, "w").write(text[:begin] + table.rstrip("\n") + "\n" + text[end:])
PY
