#!/usr/bin/env bash
# benchmarks/run_python.sh NAME ARGS...: run benchmarks/NAME.py from the repository root with $PYTHON (default
# python), first installing this package with `pip install --no-deps -e .` when it is not importable (a bare
# GPU machine has torch and the other dependencies but not asge). gpu_check.sh and reproduce.sh use it.
set -u
cd "$(dirname "$0")/.."
name="$1"; shift
PY="${PYTHON:-python}"
if ! "$PY" -c "import asge" >/dev/null 2>&1; then
    echo "$name: installing asge (pip install --no-deps -e .)"
    "$PY" -m pip install --quiet --no-deps -e . || { echo "$name: install failed" >&2; }
fi
exec "$PY" "benchmarks/$name.py" "$@"
