#!/usr/bin/env bash
# Set up (if needed) and run the main job end to end: load (or train) the bundled examples,
# compile them for every installed target, simulate, verify and print the report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/demo.py "$@"
