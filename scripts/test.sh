#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, slow tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
dirs="tests"
for b in backends/*/tests; do [ -d "$b" ] && dirs="$dirs $b"; done
exec .venv/bin/python -m pytest -q $dirs "$@"
