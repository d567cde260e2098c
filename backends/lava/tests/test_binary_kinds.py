"""Binary-spike models of each kind (tests/binary_kinds.py: SpikingJelly 2.0 SEW-ResNet with
IFNode, snntorch CSNN with Leaky, a Meta-SpikeFormer-style clock_driven MultiStepLIFNode model),
exported at batch 1 and compiled by the installed `snncc` for loihi in floating and fixed point:
`snncc simulate out --backend lava` runs them with spike counts equal to the reference executor's
(floating_pt) or to the target's own integer model (fixed_pt); so does the SEW stem's max pooling of
spikes (burst emission; graded emission is refused in one line naming the node).

The installed command runs one case of each subcommand the file covers (the first kind's floating-point
`compile` and `simulate`); the other runs call the same `snncc.cli.main` in this process, which spares
a Python and torch start-up (about 2.8 CPU s) per command and checks the same output (the refused
graded compile through tests/cli_run.py's `run_main`: exit code 2 and one line read at the file
descriptors, warnings and log records included)."""

from __future__ import annotations

import json

import pytest
from binary_kinds import KINDS, cli, export, sew, snntorch_tutorial
from cli_run import run_main

import snncc

INSTALLED = sorted(KINDS)[0]  # the kind whose floating-point compile and simulate run the installed command


def _compile_for_loihi(pt2, out, precision, run=cli):
    """`snncc compile PT2 --target loihi` (precision=fixed when asked) into `out`; the artefact."""
    opts = ["--target-option", "precision=fixed"] if precision == "fixed" else []
    r = run("compile", pt2, "--target", "loihi", *opts, "-o", out)
    assert r.returncode == 0, r.stderr
    return snncc.load(str(out))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_binary_model_compiles_for_loihi_and_runs_in_lava_equal_to_the_reference(kind, tmp_path, snncc_in_process):
    pt2 = tmp_path / "m.pt2"
    export(KINDS[kind], pt2)
    for precision in ("float", "fixed"):
        out = tmp_path / precision
        run = cli if (kind, precision) == (INSTALLED, "float") else snncc_in_process
        dep = _compile_for_loihi(pt2, out, precision, run)
        fires = dep.deployed.neurons()
        assert {f.attrs["D"] for f in fires} == {1}  # binary spikes
        r = run("simulate", out, "--backend", "lava", "--samples", "2")
        assert r.returncode == 0, r.stdout + r.stderr
        line = r.stdout.strip().splitlines()[-1]
        assert line.startswith("lava: 2 samples, spike counts == "), r.stdout
        if precision == "float":  # floating_pt: the reference executor itself, to the bit
            assert "spike counts == reference" in line and "max |output diff| 0," in line, line
        # the seeded inputs make every population fire (the comparison is not vacuous)
        ref = dep.reference(samples=2, seed=0).counts
        assert all(ref[f.name].sum() > 0 for f in fires), {f.name: int(ref[f.name].sum()) for f in fires}


def _two_samples_in_lava_equal_the_reference(out, dep, precision: str, run) -> None:
    """`snncc simulate OUT --backend lava` on 2 samples: counts equal the reference (float) or the
    fixed_pt integer model (fixed), and every population fires on them."""
    r = run("simulate", out, "--backend", "lava", "--samples", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    line = r.stdout.strip().splitlines()[-1]
    if precision == "float":
        assert "lava: 2 samples, spike counts == reference" in line and "max |output diff| 0," in line, line
    else:
        assert line.startswith("lava: 2 samples, spike counts == snncc's fixed_pt integer model"), line
    ref = dep.reference(samples=2, seed=0).counts
    assert all(ref[f.name].sum() > 0 for f in dep.deployed.neurons())


def test_sew_max_pool_stem_compiles_for_loihi_and_runs_in_lava_count_for_count(tmp_path, snncc_in_process):
    """The SEW stem's max pooling of IFNode spikes (binary: an OR per window) runs as OR neurons
    (snncc_lava.network.MaxPool): floating_pt equal to the reference, fixed_pt to the integer
    model; graded emission, which cannot OR, is refused in one line naming the node."""
    pt2 = tmp_path / "m.pt2"
    export(lambda: sew("max"), pt2)
    for precision in ("float", "fixed"):
        out = tmp_path / precision
        dep = _compile_for_loihi(pt2, out, precision, snncc_in_process)
        pools = [n.name for n in dep.deployed.nodes if n.op == "max_pool"]
        assert pools == ["stem_3_max_pool2d"]
        procs = {p["name"]: p for p in json.loads((out / "lava" / "network.json").read_text())["processes"]}
        lif, pool = procs["stem_3_max_pool2d"], procs["stem_3_max_pool2d.pool"]
        assert (lif["process"], lif["model"], lif["vth"]) == (
            ("lava.proc.lif.process.LIF", "PyLifModelFloat", 0.5) if precision == "float" else
            ("lava.proc.lif.process.LIF", "PyLifModelBitAcc", 1))
        assert (pool["source"], pool["delay"], pool["nonzero"]) == ("stem_2.s_out", 1, 4 * 4 * 4 * 4)  # D = 1; 2x2 windows
        _two_samples_in_lava_equal_the_reference(out, dep, precision, snncc_in_process)
    code, _, err = run_main("compile", pt2, "--target", "loihi", "--target-option", "emit=graded", "-o",
                            tmp_path / "graded")
    assert code == 2 and err.count("\n") == 1, err
    assert "node stem_3_max_pool2d: max pooling of spikes with emit=graded" in err, err
    assert not (tmp_path / "graded").exists()


def test_snntorch_tutorial_max_pool_of_the_encoding_runs_in_lava(tmp_path, snncc_in_process):
    """snntorch tutorial's block 1 Conv -> MaxPool -> Leaky: the max pool of the image's encoding is
    part of the host current of the first Leaky (no MaxPool process; the max pool of spikes in
    block 2 is one), floating_pt equal to the reference, fixed_pt to the integer model."""
    pt2 = tmp_path / "m.pt2"
    export(snntorch_tutorial, pt2)
    for precision in ("float", "fixed"):
        out = tmp_path / precision
        dep = _compile_for_loihi(pt2, out, precision, snncc_in_process)
        pools = {n.name: n.kind for n in dep.deployed.nodes if n.op == "max_pool"}
        assert pools == {"net_1_max_pool2d": "current", "net_5_max_pool2d_1": "spike"}
        procs = {p["name"] for p in json.loads((out / "lava" / "network.json").read_text())["processes"]}
        assert "net_5_max_pool2d_1.pool" in procs and not any(p.startswith("net_1_max_pool2d") for p in procs)
        _two_samples_in_lava_equal_the_reference(out, dep, precision, snncc_in_process)
