#!/usr/bin/env bash
# The installable artefact: `python -m build` makes a wheel and an sdist; the
# wheel is installed in a clean virtual environment and smoke-tested from
# outside the source tree (console script, then build/fit/export).
set -euo pipefail
cd "$(dirname "$0")/.."
source_tree="$PWD"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
.venv/bin/python -m build --outdir "$work/dist" . > "$work/build.log" 2>&1 \
    || { cat "$work/build.log"; exit 1; }
ls "$work"/dist/*.whl "$work"/dist/*.tar.gz > /dev/null
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet "$work"/dist/*.whl
cd "$work"
# absl exits with 1 after --help; what it printed is the check.
help="$("$work/venv/bin/keras-repnet" --help 2>&1 || true)"
grep -q "keras-repnet train --data=PATH" <<< "$help" || { echo "$help"; exit 1; }
"$work/venv/bin/python" "$source_tree/.ci/wheel_smoke.py"
