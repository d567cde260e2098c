"""weight_bits=16 (issue 27: digits_former's fixed-point agreement): every projection is two 8-bit
synapse groups into the same neurons, hi << e plus lo << (e - 8). Integers by hand on a tiny conv;
Lava fixed_pt (two Sparse processes summed at the input port) equals the integer model bit for
bit, in memory and through the installed `snncc compile --target-option weight_bits=16` on a
`.pt2`, whose artefact stores both groups and whose mapping charges both; bad values are one line,
exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from snncc_lava import describe, fixed
from snncc_lava.fixed import quantize, simulate_fixed
from snncc_lava.lower import run_network
from snncc_lava.network import build

from cli_run import run_main
from nets import ConvChain, randomize_bn
from test_fixed_kernels import tiny_conv

EXE = os.path.join(os.path.dirname(sys.executable), "snncc")


def cli(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p and os.path.isdir(p)))
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env, timeout=600)


def test_two_groups_by_hand():
    """b: scale 2032, exponent 3 (test_fixed_kernels), low exponent 3 - 8 = -5: M = round_even(k x
    2032 x 2**5) = round_even(k x 65024), hi = round_even(M / 256), lo = M - 256 hi:
    1.0 -> 65024 = 254 x 256 (lo 0); -0.5 -> -32512: hi rint(-63.5) x 2 = -128 leaves lo 256 > 254,
    so hi -126, lo -256; 0.25 -> 16256: hi 64, lo -128; 0.1 -> 6502.4 -> 6502: hi 26, lo -154;
    0.5 -> 32512: hi 128, lo -256; 0.75 -> 48768: hi 190, lo 128; 0.02 -> 1300.48 -> 1300: hi 6, lo -236.
    The read-out (exponent 0) gets its low group at -8."""
    q = quantize(build(tiny_conv(), explicit=False), weight_bits=16)
    ab, out = q.projections
    assert (ab.exp, ab.low.exp, out.exp, out.low.exp) == (3, -5, 0, -8)
    assert ab.kernel.tolist() == [[[[254, -126], [64, 26]]], [[[128, 190], [-254, 6]]]]
    assert ab.low.kernel.tolist() == [[[[0, -256], [-128, -154]]], [[[-256, 128], [0, -236]]]]
    # the represented weights are within half a low step (2**-5 / 2032 x 2) of the float kernel
    k = np.array([[[[1.0, -0.5], [0.25, 0.1]]], [[[0.5, 0.75], [-1.0, 0.02]]]])
    got = (ab.kernel * 2.0**3 + ab.low.kernel * 2.0**-5) / 2032.0
    assert np.abs(got - k).max() <= 2.0**-5 / 2032.0
    assert np.abs(quantize(build(tiny_conv(), explicit=False)).projections[0].kernel * 8 / 2032.0 - k).max() > 0.003
    rep = q.report["populations"]["b"]["projections"][0]
    assert (rep["exp"], rep["low_exp"], rep["low_mantissa_range"], q.report["weight_bits"]) == (3, -5, [-256, 128], 16)
    # the Sparse output is the sum of both groups, each shifted once (Lava shifts the summed product)
    s = np.array([[1, 0, 0, 1, 1, 0, 0, 0, 0]], np.int64)  # inputs (0,0), (1,0), (1,1) of the 3x3 map
    a = fixed._dense(ab, s, 8)
    hi = 254 + 64 + 26  # channel 0, output (0, 0): taps (0,0), (1,0), (1,1)
    lo = 0 - 128 - 154
    assert a[0, 0] == (hi << 3) + (lo >> 5)


def test_low_group_floor_is_added_back_to_the_bias_by_hand():
    """b's low group (exponent -5) is shifted right by 5 every sub-step, losing on average
    1/2 - 2**-5 = 15/32 activation units (even sums: residues 0, 2, ..., 30 of 32); b bursts from a
    (D = 4), so its bias gets 4 x 15/32 x 64 = 120 membrane units (b has no bias of its own). At 8
    bits nothing is added; the read-out (host-side) gets nothing either."""
    q16 = quantize(build(tiny_conv(), explicit=False), weight_bits=16)
    q8 = quantize(build(tiny_conv(), explicit=False))
    b = q16.populations["b"]
    assert (b.bias_mant.tolist(), b.bias_exp) == ([120] * 8, 0)
    assert q16.report["populations"]["b"]["floor_compensation"] == 120.0
    assert q16.report["populations"]["b"]["bias_max_abs_error"] == 0.0
    assert not q8.populations["b"].bias_mant.any() and "floor_compensation" not in q8.report["populations"]["b"]
    assert not q16.populations["a"].bias_mant.any()  # fed by the host only: no synapse group


def test_lava_runs_both_groups_bit_for_bit():
    g = tiny_conv()
    x = torch.rand((3, 1, 3, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 4
    q = quantize(build(g, explicit=False), weight_bits=16)
    ref = simulate_fixed(q, x)
    assert int(ref.counts["b"].sum()) > 0
    lava = run_network(build(g), x, "burst", quantize(build(g), weight_bits=16))
    assert lava.processes == simulate_processes(g) + 2  # one more Sparse per projection
    for k in ref.counts:
        assert torch.equal(lava.counts[k], ref.counts[k]), k
    assert np.array_equal(lava.readout, ref.readout) and torch.equal(lava.output, ref.output)
    assert not np.array_equal(simulate_fixed(quantize(build(g, explicit=False)), x).readout, ref.readout)


def simulate_processes(g) -> int:
    """Lava processes of the 8-bit lowering of g (counted without running it)."""
    net = build(g)
    host = sum(p.host_input for p in net.populations.values())
    recorders = -(-(len(net.populations) + 1) // 64)
    return len(net.populations) + host + len(net.projections) + recorders


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """ConvChain (2x8x8 -> 6x8x8 -> 8x4x4, 512 neurons) exported at batch 1, compiled by the installed
    command with precision=fixed, weight_bits=16."""
    d = tmp_path_factory.mktemp("wide")
    torch.manual_seed(0)
    m = randomize_bn(ConvChain(rounding="floor"), 3).eval()
    torch.export.save(torch.export.export(m, (torch.zeros(1, 2, 8, 8),)), str(d / "m.pt2"))
    np.savez(d / "test.npz", x=np.random.default_rng(5).random((2, 2, 8, 8)).astype(np.float32) * 1.5)
    r = cli("compile", d / "m.pt2", "--target", "loihi", "--target-option", "precision=fixed",
            "--target-option", "weight_bits=16", "-o", d / "out")
    assert r.returncode == 0, r.stderr
    return d


def test_artefact_stores_both_groups_and_lava_reads_them(wide):
    import snncc

    d = wide
    dep = snncc.load(str(d / "out"))
    assert dep.deployed.meta["target"] == {"loihi": {"weight_bits": 16}}  # the loihi target's own meta
    assert fixed.stored_weight_bits(dep.deployed) == 16
    qn = fixed.quantize(build(dep.deployed, explicit=False))  # reads the stored weight_bits
    assert all(p.low is not None for p in qn.projections)
    doc = json.loads((d / "out" / "lava" / "network.json").read_text())
    syn = [e for e in doc["processes"] if e["name"].startswith("proj")]
    assert doc["weight_bits"] == 16 and len(syn) == len(qn.projections)
    with np.load(d / "out" / "lava" / "weights.npz") as npz:
        for e, qp in zip(syn, qn.projections):
            assert e["weight"]["format"] == e["low"]["weight"]["format"] == "kernel"
            assert npz[e["low"]["weight"]["half_mantissas"]].dtype == np.int8
            assert np.array_equal(describe.load_kernel(npz, e), qp.kernel)
            assert np.array_equal(describe.load_kernel(npz, e["low"]), qp.low.kernel)
            assert (e["weight_exp"], e["low"]["weight_exp"]) == (qp.exp, qp.exp - 8)
    q = json.loads((d / "out" / "lava" / "quantisation.json").read_text())
    assert q["weight_bits"] == 16 and "| low_exp |" in (d / "out" / "report.md").read_text()
    xt = torch.as_tensor(np.load(d / "test.npz")["x"], dtype=torch.float64)
    lava = dep.simulate(xt, backend="lava")
    ours, _ = dep.target_reference(xt)
    assert sum(int(c.sum()) for c in ours.counts.values()) > 100
    for p in ours.counts:
        assert torch.equal(lava.counts[p], ours.counts[p]), p
    assert torch.equal(lava.output, ours.output)
    narrow = fixed.simulate_fixed(fixed.quantize(build(dep.deployed, explicit=False), weight_bits=8), xt)
    assert not torch.equal(narrow.output, ours.output)  # the low group is read


def test_mapping_charges_both_groups(conv_chain):
    """Synapse memory per piece doubles (weights, and a sparse entry's index), neuron state does not."""
    from snncc_lava.mapping import load_resources
    from snncc_lava.target import LoihiTarget

    t = LoihiTarget()
    eight = t.map_onto(conv_chain, {"precision": "fixed"})
    sixteen = t.map_onto(conv_chain, {"precision": "fixed", "weight_bits": 16})
    state = load_resources().neuron_state_bytes
    assert [p.neurons for p in eight.pieces] == [p.neurons for p in sixteen.pieces]
    syn8 = [p.memory - p.neurons * state for p in eight.pieces]
    syn16 = [p.memory - p.neurons * state for p in sixteen.pieces]
    assert sum(syn8) > 0 and all(abs(b - 2 * a) <= 1 for a, b in zip(syn8, syn16))


@pytest.mark.parametrize("opts, msg", [(["precision=fixed", "weight_bits=12"], "weight_bits must be 8 or 16, got 12"),
                                       (["weight_bits=16"], "precision is float"),
                                       (["precision=fixed", "netx=true", "weight_bits=16"], "netx stores one 8-bit")])
def test_bad_weight_bits_is_one_line_exit_2(wide, opts, msg, tmp_path, snncc_in_process):
    """Through `snncc.cli.main` in this process (the installed compile runs in the fixture): the first
    refusal read at the file descriptors with the warnings and log records the console script would
    print (tests/cli_run.py's `run_main`), the others through capsys."""
    args = [a for o in opts for a in ("--target-option", o)]
    argv = ("compile", wide / "m.pt2", "--target", "loihi", *args, "-o", tmp_path / "out")
    if "weight_bits=12" in opts:
        code, _, err = run_main(*argv)
    else:
        r = snncc_in_process(*argv)
        code, err = r.returncode, r.stderr
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "weight_bits" in lines[0] and msg in lines[0], err
    assert not (tmp_path / "out").exists()


def test_lava_part_reads_the_stored_weight_bits(wide):
    """`simulate --backend lava --populations ...` of a weight_bits=16 artefact: the part of every
    population is the whole 16-bit integer model, Lava fixed_pt equal to it bit for bit."""
    import snncc
    from snncc_lava import part

    dep = snncc.load(str(wide / "out"))
    xt = torch.as_tensor(np.load(wide / "test.npz")["x"], dtype=torch.float64)
    names = [n.name for n in dep.deployed.neurons()]
    r = part.simulate(dep.deployed, xt, names, precision="fixed")
    ours, _ = dep.target_reference(xt)
    narrow = fixed.simulate_fixed(fixed.quantize(build(dep.deployed, explicit=False), weight_bits=8), xt)
    assert any(not torch.equal(narrow.counts[p], ours.counts[p]) for p in names)  # the low group matters here
    for p in names:
        assert torch.equal(r.counts[p], ours.counts[p]) and torch.equal(r.reference[p], ours.counts[p]), p


def test_an_older_artefacts_top_level_keys_are_still_read():
    """Artefacts written before the loihi target's meta sub-dict hold meta.loihi_weight_bits and
    meta.loihi_fixed_choices: both still read; the sub-dict wins where both are present."""
    from snncc.ir import Graph

    old = Graph(meta={"loihi_weight_bits": 16, "loihi_fixed_choices": {"f": {"shift": 1, "clip": 1.25}}})
    assert fixed.stored_weight_bits(old) == 16
    assert fixed.stored_choices(old) == {"f": {"shift": 1, "clip": 1.25}}
    assert fixed.stored_weight_bits(Graph()) == 8 and fixed.stored_choices(Graph()) is None
    both = Graph(meta={"loihi_weight_bits": 16, "target": {"loihi": {"weight_bits": 8}}})
    assert fixed.stored_weight_bits(both) == 8
