"""Populations with different D in one Loihi network (an SDT-V3 detector's D = 4 backbone and D = 1
neck): one clock whose window is the largest D, each WindowBurstIF capped at its own D. floating_pt
counts equal the reference executor's, fixed_pt equals `simulate_fixed` bit for bit, and the
installed command compiles a batch-1 program of such a model for loihi (float and fixed)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import torch
from conftest import assert_counts_equal
from nets import ConvChain, randomize_bn
from test_leaky_lava import fixed_lava_equals_ours

from snncc.frontend.loader import LoadedModel, trace
from snncc.passes.manager import run_pipeline
from snncc.sim.reference import run
from snncc_lava.lower import simulate

EXE = os.path.join(os.path.dirname(sys.executable), "snncc")


def mixed(D2: int = 1) -> torch.nn.Module:
    """ConvChain with populations of D = 4, D2 and 2 (the head's)."""
    torch.manual_seed(0)
    m = ConvChain(head_norm=1)
    m.n2.D = m.n2.norm = D2
    m.head_fire.D = 2
    return randomize_bn(m)


def deployed(m):
    return run_pipeline(trace(LoadedModel(m, None, (2, 8, 8))), "deploy").graph


def test_mixed_D_in_lava_floating_and_fixed_pt():
    g = deployed(mixed())
    assert sorted({n.attrs["D"] for n in g.neurons()}) == [1, 2, 4]
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64) * 2
    ref = assert_counts_equal(g, x, simulate(g, x))
    # the cap binds: with D = 4 the same membranes would give n2 more than one spike per window
    uncapped = run(deployed(mixed(D2=4)), x)
    assert int(uncapped.counts["n2"].max()) > 1 and int(ref.counts["n2"].max()) == 1
    q, ours = fixed_lava_equals_ours(g, x)
    assert q.populations["n2"].D == 1 and q.populations["n1"].D == 4
    assert int(ours.counts["n2"].max()) == 1 and int(ours.counts["n2"].sum()) > 0


def test_mixed_D_program_compiles_for_loihi_through_the_command(tmp_path, capsys, monkeypatch):
    """Floating point through the installed command (compile, simulate, export-netx); fixed point
    through the same `snncc.cli.main` in this process (no second Python and torch start-up per
    subcommand, about 2.8 CPU s each)."""
    from snncc.cli import main

    def in_process(argv, cwd, capture_output, text):
        capsys.readouterr()
        code = main(argv[1:])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(argv, code, out, err)

    monkeypatch.chdir(tmp_path)
    torch.export.save(torch.export.export(mixed(), (torch.zeros(1, 2, 8, 8),)), str(tmp_path / "m.pt2"))
    np.savez(tmp_path / "x.npz", x=np.random.RandomState(0).randn(8, 2, 8, 8) * 2)
    for opt in ([], ["--target-option", "precision=fixed"]):
        run = subprocess.run if not opt else in_process
        r = run([EXE, "compile", "m.pt2", "--target", "loihi", "-o", "art"] + opt, cwd=tmp_path,
                capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        r = run([EXE, "simulate", "art", "--data", "x.npz", "--backend", "snncc"], cwd=tmp_path,
                capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        line = "spike counts == reference" if not opt else "0.000% of neuron counts differ"
        assert line in r.stdout, r.stdout
        r = run([EXE, "export-netx", "art", "n.h5"], cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 2 and "node n2: D = 1 beside n1's D = 4" in r.stderr, r.stderr
        assert not (tmp_path / "n.h5").exists()
        (tmp_path / "art").rename(tmp_path / f"art{len(opt)}")
