"""Kernel-level fixed point (issue 27): a one-kernel projection is quantised on its kernel
(hand-computed integers on a tiny conv), stored as an int8 kernel in the artefact (round trip),
the integer model runs it with convolutions from those integers and equals both the explicit
matrix model and real Lava fixed_pt (whose Sparse matrices are composed from the same integers)."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch

from snncc.ir.graph import Graph, Node
from snncc_lava import describe, fixed
from snncc_lava.fixed import quantize, simulate_fixed
from snncc_lava.lower import run_network
from snncc_lava.network import build

K = np.array([[[[1.0, -0.5], [0.25, 0.1]]], [[[0.5, 0.75], [-1.0, 0.02]]]])
W = np.array([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.25]])


def tiny_conv() -> Graph:
    """x (1x3x3) -> a (fire, host) -> conv 2x2 (K) -> b (2x2x2, theta 2) -> mean HW -> linear W -> out."""
    return Graph([
        Node("x", "input", [], {"shape": (1, 3, 3)}),
        Node("a", "fire", ["x"], {"D": 4, "theta": 1.0, "beta": 0.5, "norm": 1.0, "rounding": "floor"}),
        Node("c", "conv", ["a"], {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)}, {"weight": K}),
        Node("b", "fire", ["c"], {"D": 4, "theta": 2.0, "beta": 0.0, "norm": 1.0, "rounding": "floor"}),
        Node("m", "mean", ["b"], {"dims": (1, 2)}),
        Node("l", "linear", ["m"], {}, {"weight": W}),
        Node("out", "output", ["l"])]).infer()


def as_matrix_model(q: fixed.QNetwork) -> fixed.QNetwork:
    """The same integers with every projection as its explicit mantissa matrix (the pre-kernel model)."""
    projs = [fixed.QProjection(p.source, p.target, p.weight, p.exp, p.delay, p.nodes) for p in q.projections]
    return fixed.QNetwork(q.net, q.policy, q.populations, projs, q.output_scale, q.report)


def test_tiny_conv_kernel_integers_by_hand():
    net = build(tiny_conv(), explicit=False)
    assert all(p.weight is None and p.kernel is not None for p in net.projections)  # no matrix built
    q = quantize(net)
    ab, out = q.projections
    # b: largest kernel weight 1.0 -> s = 254 * 2**j, j = 3 the first with vth = round(2 * s) >= 2048
    # (508, 1016, 2032, 4064); exponent 3 brings the largest weight back to 254; mantissas
    # round_even(k * 254): -127 -> -128 (rint(-63.5) = -64), 63.5 -> 64, 25.4 -> 26, 127 -> 128,
    # 190.5 -> 190, 5.08 -> 6
    assert q.populations["b"].scale == 2032.0 and q.populations["b"].vth == 4064 and ab.exp == 3
    assert ab.kernel.tolist() == [[[[254, -128], [64, 26]]], [[[128, 190], [-254, 6]]]]
    # the read-out: mean over 2x2 folded into the linear's kernel, W / 4, largest 0.75 -> 254
    assert out.kernel.shape == (3, 2) and q.output_scale == 254 / 0.75
    assert out.kernel.tolist() == [[84, -170], [42, 254], [-128, 22]]  # 84.67, 169.3, 42.3, 254, 127, 21.2
    # Lava's matrix, composed from the integers: 2 channels x 4 positions x 4 taps, each one kernel entry
    w = ab.weight.toarray()
    assert w.shape == (8, 9) and np.count_nonzero(w) == 32
    assert w[0].tolist() == [254, -128, 0, 64, 26, 0, 0, 0, 0]  # channel 0, output (0, 0)
    assert out.weight.toarray()[0].tolist() == [84] * 4 + [-170] * 4  # the mean's 4 positions, one entry each
    rep = q.report["populations"]["b"]["projections"][0]
    assert (rep["form"], rep["mantissa_range"], rep["nonzero"], rep["vanished"]) == ("kernel", [-254, 254], 8, 0)


def test_tiny_conv_integer_model_equals_matrix_model_and_lava():
    g = tiny_conv()
    x = torch.rand((3, 1, 3, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 4
    q = quantize(build(g, explicit=False))
    ref = simulate_fixed(q, x)
    assert sum(int(c.sum()) for c in ref.counts.values()) > 20 and int(ref.counts["b"].sum()) > 0
    mat = simulate_fixed(as_matrix_model(q), x)
    lava = run_network(build(g), x, "burst", quantize(build(g)))
    for res in (mat, lava):
        for k in ref.counts:
            assert torch.equal(res.counts[k], ref.counts[k]), k
        assert np.array_equal(res.readout, ref.readout)
        assert torch.equal(res.output, ref.output)


def test_fixed_artefact_stores_int8_kernels_round_trip():
    g = tiny_conv()
    q = quantize(build(g, explicit=False))
    files = describe.files(q.net, "burst", {}, q)
    doc = json.loads(files["lava/network.json"])
    npz = np.load(io.BytesIO(files["lava/weights.npz"]))
    syn = [p for p in doc["processes"] if p["name"].startswith("proj")]
    assert [s["weight"]["format"] for s in syn] == ["kernel", "kernel"]
    for s, qp in zip(syn, q.projections):
        stored = npz[s["weight"]["half_mantissas"]]
        assert stored.dtype == np.int8 and stored.shape == qp.kernel.shape
        assert np.array_equal(describe.load_kernel(npz, s), qp.kernel) and s["weight_exp"] == qp.exp
        # the matrix Lava runs, composed from the stored integers along the stored IR chain
        assert np.array_equal(describe.load_weight(npz, s, g).toarray(), qp.weight.toarray())
    pops = {p["name"]: p for p in doc["processes"] if p.get("model") == "PyWindowBurstIFModelFixed"}
    for name, qp in q.populations.items():
        assert npz[f"{name}.bias_mant"].dtype == np.int16
        assert np.array_equal(npz[f"{name}.bias_mant"], qp.bias_mant)
        assert (pops[name]["vth"], pops[name]["bias_exp"], pops[name]["v_init"]) == (qp.vth, qp.bias_exp, qp.v_init)
    # no array of the fixed description is wider than what it stores (no float matrices, no int64 weights)
    with zipfile.ZipFile(io.BytesIO(files["lava/weights.npz"])) as z:
        names = z.namelist()
    assert not [n for n in names if n.endswith(".data.npy")]
    assert [n for n in names if n.endswith(".const.npy")] == ["output.const.npy"]  # the host's float read-out constant


@pytest.mark.parametrize("layer_scale", [None, 0.5])
def test_e_spikeformer_integer_model_with_convolutions_equals_matrix_model(layer_scale):
    """On the architecture the issue is about (tiny E-SpikeFormer: attention products, membrane
    shortcuts, depthwise convs, downsampling, the mean head): the kernel-form integer model (no
    matrix built for one-kernel projections) equals the explicit-matrix integer model bit for bit."""
    from nets import randomize_bn

    from snncc.frontend.loader import LoadedModel, trace
    from snncc.models import e_spikeformer
    from snncc.passes.manager import run_pipeline

    torch.manual_seed(0)
    m = randomize_bn(e_spikeformer("tiny-test", **({"layer_scale": layer_scale} if layer_scale else {})), seed=1)
    with torch.no_grad():  # layer scales that differ per channel (a fold on the wrong axis would show)
        gammas = [p for name, p in m.named_parameters() if name.endswith("gamma")]
        for i, p in enumerate(gammas):
            p.uniform_(0.2, 1.0, generator=torch.Generator().manual_seed(i))
    assert bool(gammas) == bool(layer_scale)
    g = run_pipeline(trace(LoadedModel(m, None, (3, 32, 32))), "deploy").graph
    net = build(g, explicit=False)
    # every projection is one kernel (layer scales folded per output channel) but the last
    # downsampling conv (3x3) averaged into the head: a mean after a spatial kernel sums several
    # kernel entries per synapse, so it keeps a matrix
    matrices = [(p.source, p.target) for p in net.projections if p.kernel is None]
    assert matrices == [("downsample3_spike", "head_spike")] and len(net.projections) == 67
    q = quantize(net)
    x = torch.randn((2, 3, 32, 32), generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2
    ref = simulate_fixed(q, x)
    assert sum(int(c.sum()) for c in ref.counts.values()) > 1000
    mat = simulate_fixed(as_matrix_model(q), x)
    for k in ref.counts:
        assert torch.equal(mat.counts[k], ref.counts[k]), k
    assert np.array_equal(mat.readout, ref.readout)


def test_compile_report_lists_the_quantisation_per_layer():
    from snncc_lava.target import LoihiTarget

    files = LoihiTarget().emit(tiny_conv(), {"precision": "fixed"})
    section = LoihiTarget().report_section(files)
    assert "## Fixed point (Loihi 2 fixed_pt)" in section
    # b reads a through the 2x2 kernel: exponent 3, mantissas -254..254 used, 8 kernel weights, none
    # clipped or vanished; vth 4064, bias exponent 0, scale not halved for a bias, no clipped bias
    assert "| b | a | kernel | 3 | [-254, 254] | 8 | 0 | 0 | 4064 | 0 | 0 | 0 |" in section
    assert "| output | b | kernel | 0 | [-170, 254] | 6 | 0 | 0 |" in section


def test_fixed_is_refused_only_for_what_needs_matrices(monkeypatch):
    """precision=fixed needs matrices only for projections that are not one kernel: with less memory
    than the tiny conv's 46 explicit synapses (24 bytes each while building) it still compiles
    fixed and its integer model runs, while netx (every matrix) is refused in one line."""
    import snncc.resources
    from snncc_lava import network
    from snncc_lava.target import LoihiTarget

    g = tiny_conv()
    assert network.materialised_synapses(g) == 8 * 4 + 8 + 3 * 2 and network.matrix_form_nodes(g) == []
    monkeypatch.setattr(snncc.resources, "available_bytes", lambda: 1000)
    t = LoihiTarget()
    assert t.check(g, {"precision": "fixed"}) == []
    (p,) = t.check(g, {"netx": True})
    assert p.startswith("netx=true exports the explicit synapse matrices, and the Lava lowering stores 46 synapses")
    x = torch.rand((2, 1, 3, 3), generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 4
    r = t.reference(g, x, {"precision": "fixed"})  # the integer model runs from the kernels
    assert torch.equal(r.counts["b"], simulate_fixed(quantize(build(g)), x).counts["b"])
