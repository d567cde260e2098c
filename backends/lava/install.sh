#!/usr/bin/env bash
# Install the Lava runtime the snncc Loihi backend (snncc_lava) needs, then the backend itself.
#
# lava-nc 0.10.0 (the last release) declares Python < 3.11; it runs on 3.11 once snncc_lava.compat
# patches one dataclass module in memory, so it is installed without its metadata checks. Its real
# dependencies (numpy < 2, scipy, networkx <= 2.8.7, scikit-learn) come with snncc's own environment;
# asteval is the one extra it needs. Idempotent: nothing is reinstalled when the versions match.
# Usage: backends/lava/install.sh [PIP]   (default: the project's .venv/bin/pip)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PIP="${1:-$here/../../.venv/bin/pip}"
PY="$(dirname "$PIP")/python"

have() {  # have DIST VERSION_PREFIX -> 0 when DIST is installed at that version
    "$PY" - "$1" "$2" <<'PYEOF'
import sys
from importlib.metadata import version, PackageNotFoundError
try:
    v = version(sys.argv[1])
except PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if v == sys.argv[2] or v.startswith(sys.argv[2] + ".") else 1)
PYEOF
}

if have lava-nc 0.10.0 && have asteval 0.9; then
    echo "lava-nc 0.10.0 and asteval 0.9.x already installed"
else
    "$PIP" install --no-deps --ignore-requires-python lava-nc==0.10.0 "asteval>=0.9.31,<0.10"
fi
# lava-dl 0.6.0 (netx's reader, used by the tests that run snncc's netx files in Lava) declares
# Python < 3.11 and torch < 2.4, and pulls opencv and a CUDA torchvision; netx needs none of them
# beyond what snncc has (snncc_lava.compat.install_lava_dl stubs the unused object-detection import).
if have lava-dl 0.6.0; then
    echo "lava-dl 0.6.0 already installed"
else
    "$PIP" install --no-deps --ignore-requires-python lava-dl==0.6.0
fi
if have snncc-lava 0.1.0; then
    echo "snncc-lava already installed"
else
    "$PIP" install --no-deps --no-build-isolation -e "$here"
fi
