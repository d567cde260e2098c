"""Every byte of a Speck artefact is independent of the thread count and the hash seed (BLAS/OpenMP reductions sum in
an order that depends on it: diagnostics computed through them changed their last digits)."""

from __future__ import annotations

import os
import subprocess
import sys

EXE = os.path.join(os.path.dirname(sys.executable), "snncc")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_speck_artefact_bytes_do_not_depend_on_threads(tmp_path):
    a = os.path.join(ROOT, "examples", "events", "artifacts")
    outs = []
    for n in (1, 2):
        out = tmp_path / f"t{n}"
        env = dict(os.environ, OMP_NUM_THREADS=str(n), MKL_NUM_THREADS=str(n), OPENBLAS_NUM_THREADS=str(n),
                   PYTHONHASHSEED=str(n))  # and another hash seed
        r = subprocess.run([EXE, "compile", os.path.join(a, "speck_cnn.pt"), "--model-def",
                            "snncc.models.speck:speck_cnn", "--factory-kwargs", '{"size": "small"}', "--input-shape",
                            "2,32,32", "--timesteps", "4", "--input-kind", "spike", "--target", "speck", "-o",
                            str(out)], capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr
        outs.append(out)
    names = sorted(os.listdir(outs[0]))
    assert names == sorted(os.listdir(outs[1])) and "speck_config.json" in names
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
