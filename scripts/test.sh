#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, slow tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
dirs="tests"
for b in backends/*/tests; do [ -d "$b" ] && dirs="$dirs $b"; done
# One worker per core; a test file stays on one worker so its module-scoped fixtures
# (compiled artefacts shared by its tests) are built once. Every worker collects tests/, so
# tests/conftest.py gives each worker, and the processes its tests start (the installed snncc,
# Lava's runtime), one OpenMP/BLAS thread.
# SNNCC_TEST_COSTS=costs.tsv: record each test's CPU and wall seconds there (scripts/pytest_costs.py;
# `python scripts/pytest_costs.py costs.tsv` ranks them).
plugins=()
if [ -n "${SNNCC_TEST_COSTS:-}" ]; then
  export PYTHONPATH="$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}"
  plugins=(-p pytest_costs)
fi
exec .venv/bin/python -m pytest -q -n auto --dist loadfile "${plugins[@]}" $dirs "$@"
