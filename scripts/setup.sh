#!/usr/bin/env bash
# Create .venv and install snncc, its chip backends and the pinned dev/test dependencies.
# Idempotent: re-running only checks what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
PIP=".venv/bin/pip --disable-pip-version-check -q"
# This machine's pip config names optional local indexes; hide pip's notes about the missing ones.
exec 2> >(grep -v "^WARNING: Location 'file://" >&2)
# torch first, pinned: a bare 'torch' requirement can pull a multi-GB CUDA build.
$PIP install torch==2.13.0
$PIP install -r requirements-dev.txt
# sinabs without its declared `samna` (a placeholder on PyPI that downloads code from elsewhere when
# imported); its real dependencies are pinned in requirements-dev.txt. A samna left by an older
# set-up is removed, so the real-samna code path stays behind its import check.
$PIP install --no-deps sinabs==3.1.3
if .venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('samna') is None)"; then
  echo "[setup] removing the samna placeholder (never imported here)"
  $PIP uninstall -y samna
fi
# SpikingJelly without its declared torchvision/torchaudio (CUDA builds on PyPI that would replace
# torch 2.13; unused by the activation_based layers snncc reads): a peer whose models snncc compiles
# (tests/test_peer_models.py, tests/test_research_multistep.py); what its neuron and functional
# modules import is pinned in requirements-dev.txt (loguru, tqdm).
$PIP install --no-deps spikingjelly==2.0.0
# norse 1.1.0 (pure Python sdist; its C++ extension is optional): reads snncc's NIR exports in
# tests/test_nir_peers.py. --no-deps for the same torchvision reason.
$PIP install --no-deps norse==1.1.0
# snntorch 1.0.0 (pure Python): tests/test_nir_peers.py holds docs/formats.md's account of why its NIR
# reader cannot run snncc's exports (IF read as a leaky snn.Leaky; no SumPool2d mapping).
$PIP install --no-deps snntorch==1.0.0
$PIP install --no-deps -e .
# Chip backends are separate packages; one with an install.sh needs more than pip (lava-nc).
for b in backends/speck backends/lava; do
  if [ -f "$b/install.sh" ]; then
    bash "$b/install.sh" "$PWD/.venv/bin/pip"
  elif [ -f "$b/pyproject.toml" ]; then
    $PIP install --no-deps -e "$b"
  fi
done
echo "[setup] ready: $(.venv/bin/python -c 'import torch, snncc; print("snncc", snncc.__version__, "torch", torch.__version__)')"
