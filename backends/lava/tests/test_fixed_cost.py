"""What fixed point costs, through the installed command (issue 27): `snncc simulate OUT --backend
snncc` on a precision=fixed artefact of the shipped digits CNN prints the fixed-point integer
model's argmax agreement with the float integer model, the share of neuron counts that differ and
both accuracies; every number equals one computed here from the two models' outputs. The compile
report lists the per-layer quantisation table."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]
ART = ROOT / "examples" / "digits" / "artifacts"
EXE = os.path.join(os.path.dirname(sys.executable), "snncc")
N = 60


def snncc(*args) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p and os.path.isdir(p)))
    r = subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def cnn_fixed(tmp_path_factory):
    out = tmp_path_factory.mktemp("cost") / "cnn-fixed"
    snncc("compile", ART / "digits_cnn.pt2", "--target", "loihi", "--target-option", "precision=fixed", "-o", out)
    return out


def test_simulate_prints_what_fixed_point_costs(cnn_fixed):
    import snncc as api

    text = snncc("simulate", cnn_fixed, "--data", ART / "digits_test.npz", "--samples", N, "--schedule", "exact")
    line = next(s for s in text.splitlines() if s.startswith("snncc's fixed_pt integer model"))
    m = re.search(r": (\d+) samples, agreement with the integer model [\d.]+% \((\d+)/(\d+)\), [\d.]+% of neuron "
                  r"counts differ \((\d+)/(\d+)(?:; most in (\w+): (\d+)/(\d+))?\), accuracy [\d.]+ \((\d+)/(\d+)\), "
                  r"integer model [\d.]+ \((\d+)/(\d+)\)", line)
    assert m, line
    got = m.groups()
    # by hand from the two models' outputs on the same samples
    d = np.load(ART / "digits_test.npz")
    x, y = torch.as_tensor(d["x_test"][:N]).double(), d["y_test"][:N]
    dep = api.load(str(cnn_fixed))
    fx, _ = dep.target_reference(x)
    ref = dep.reference(x)
    pf, pr = fx.output.argmax(1).numpy(), ref.output.argmax(1).numpy()
    pops = [n.name for n in dep.deployed.neurons()]
    diff = {p: int((fx.counts[p].double() != ref.counts[p].double()).sum()) for p in pops}
    size = {p: ref.counts[p].numel() for p in pops}
    worst = max(pops, key=lambda p: diff[p] / size[p])
    assert int(got[0]) == N and int(got[2]) == N and int(got[1]) == int((pf == pr).sum())
    assert int(got[3]) == sum(diff.values()) and int(got[4]) == sum(size.values()) == N * 27712  # digits_cnn: 27,712 neurons per sample
    if sum(diff.values()):
        assert got[5:8] == (worst, str(diff[worst]), str(size[worst]))
    assert (int(got[8]), int(got[9])) == (int((pf == y).sum()), N)
    assert (int(got[10]), int(got[11])) == (int((pr == y).sum()), N)
    assert 0 < int(got[3]) < int(got[4])  # quantisation moves some counts, not all


def test_compile_report_lists_the_quantisation_per_layer(cnn_fixed):
    report = (cnn_fixed / "report.md").read_text()
    assert "| population | source | form | weight_exp | mantissa range | nonzero | clipped | vanished | vth " \
           "| bias_exp | bias_halvings | clipped biases |" in report
    import json

    q = json.loads((cnn_fixed / "lava" / "quantisation.json").read_text())
    section = report.split("## Fixed point (Loihi 2 fixed_pt)", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in section.splitlines() if r.startswith("| ") and not r.startswith("| population")]
    assert len(rows) == sum(len(p["projections"]) for p in q["populations"].values()) + len(q["output"]["projections"])
