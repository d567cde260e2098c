"""NIR interop (issue 7): deployed graphs round-trip exactly through NIR files; IF/LIF/conv graphs
written with the nir package import and simulate with NIR's IF semantics; refusals name nodes."""

import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nets import Attention, ConvChain, ResidualSepConv, randomize_bn
from snncc.cli import main
from snncc.errors import FrontendError, TargetError
from snncc.frontend.loader import LoadedModel, trace
from snncc.interop.nir_io import from_nir, load_nir, to_nir, write_nir
from snncc.passes.manager import run_pipeline
from snncc.sim.reference import run


def deployed(model):
    torch.manual_seed(0)
    m = randomize_bn(model)
    g = trace(LoadedModel(m, None, tuple(m.input_shape)))
    return m, run_pipeline(g, "deploy").graph


@pytest.mark.parametrize("factory", [ConvChain, ResidualSepConv])
def test_round_trip_through_hdf5_is_exact(tmp_path, factory):
    m, g = deployed(factory())
    path = tmp_path / "m.nir"
    ex = write_nir(g, str(path))
    back = from_nir(nir.read(str(path)))
    x = torch.randn((16,) + tuple(m.input_shape), generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2
    a, b = run(g, x), run(back, x)
    assert sorted(a.counts) == sorted(b.counts)
    for k in a.counts:
        assert torch.equal(a.counts[k], b.counts[k]), k
    assert torch.equal(a.output, b.output)
    assert any(s.startswith("graded spikes: ") and "(D=4)" in s for s in ex.lost)
    assert any(s.startswith("firing condition: NIR IF fires when v > v_threshold") for s in ex.lost)
    # what a foreign reader sees: IF with r = 1, v_threshold = theta; the neuron's constant current
    # (bias + beta = theta/2) written into the projection in front of it
    first = g.neurons()[0]
    if_node = ex.graph.nodes[first.name]
    assert isinstance(if_node, nir.IF) and np.all(if_node.r == 1.0) and np.all(if_node.v_threshold == first.attrs["theta"])
    assert if_node.metadata["snncc_D"] == 4
    proj = ex.graph.nodes[first.inputs[0]]
    want = np.broadcast_to(first.params["bias"] + first.attrs["beta"], first.shape)[:, 0, 0]
    np.testing.assert_allclose(proj.bias, want)


def test_spike_products_and_token_linears_are_refused_by_name():
    _, g = deployed(Attention())
    prod = [n.name for n in g.nodes if n.op == "spike_product"]
    with pytest.raises(TargetError) as e:
        to_nir(g)
    msg = e.value.one_line()
    assert f"spike product (multiplicative synapse): {', '.join(prod)}" in msg
    assert "linear over a token axis" in msg and "permute (NIR has no transpose)" in msg


def _if_graph(W1, b1, r1, th1, W2, th2, metadata=None):
    return nir.NIRGraph(
        nodes={"in": nir.Input(input_type={"input": np.array([W1.shape[1]])}),
               "fc1": nir.Affine(weight=W1, bias=b1), "if1": nir.IF(r=r1, v_threshold=th1),
               "fc2": nir.Linear(weight=W2), "if2": nir.IF(r=np.ones(W2.shape[0]), v_threshold=th2),
               "out": nir.Output(output_type={"output": np.array([W2.shape[0]])})},
        edges=[("in", "fc1"), ("fc1", "if1"), ("if1", "fc2"), ("fc2", "if2"), ("if2", "out")],
        metadata=metadata or {})


def _simulate_nir_if(layers, xs):
    """NIR IF, one step per input frame: v += r * I; z = v > thr; v -= z * thr."""
    counts = []
    vs = [np.zeros((xs.shape[1], th.shape[0])) for _, _, _, th in layers]
    for t in range(xs.shape[0]):
        s = xs[t]
        for i, (W, b, r, th) in enumerate(layers):
            vs[i] = vs[i] + r * (s @ W.T + b)
            z = (vs[i] > th).astype(np.float64)
            vs[i] -= z * th
            if t == 0:
                counts.append(z.copy())
            else:
                counts[i] += z
            s = z
    return counts


def test_foreign_if_graph_simulates_with_nir_semantics(tmp_path):
    rng = np.random.default_rng(0)
    W1, b1 = rng.normal(size=(6, 4)).round(3), rng.normal(size=6).round(3) * 0.1
    r1 = np.array([1.0, 2.0, 0.5, 1.0, 1.5, 1.0])  # per-neuron r: threshold/r differs per neuron
    th1 = np.full(6, 0.7)
    W2, th2 = rng.normal(size=(3, 6)).round(3), np.full(3, 0.9)
    path = tmp_path / "foreign.nir"
    nir.write(str(path), _if_graph(W1, b1, r1, th1, W2, th2))
    g = from_nir(nir.read(str(path)), T=5)
    assert g.T == 5 and [n.attrs["D"] for n in g.neurons()] == [1, 1]
    assert all(n.attrs["stateful"] for n in g.neurons())
    assert g["if2"].attrs["theta"] == 0.9 and g["if1"].attrs["theta"] == 1.0  # per-neuron: input scaled
    np.testing.assert_allclose(g["if1.r"].params["factor"], r1 / th1)
    assert any("v > v_threshold" in s for s in g.meta["nir_approximations"])
    xs = rng.uniform(0, 1, size=(5, 7, 4)).round(2)
    ref = run(g, torch.as_tensor(xs))
    want = _simulate_nir_if([(W1, b1, r1, th1), (W2, np.zeros(3), np.ones(3), th2)], xs)
    np.testing.assert_array_equal(ref.counts["if1"].numpy(), want[0])
    np.testing.assert_array_equal(ref.counts["if2"].numpy(), want[1])
    assert want[1].sum() > 0 and want[0].max() >= 3  # the test exercises real spiking


def test_lif_is_refused_unless_approximated():
    g = nir.NIRGraph(nodes={"in": nir.Input(input_type={"input": np.array([2])}),
                            "fc": nir.Linear(weight=np.eye(2)),
                            "lif": nir.LIF(tau=np.full(2, 10.0), r=np.ones(2), v_leak=np.zeros(2),
                                           v_threshold=np.ones(2)),
                            "out": nir.Output(output_type={"output": np.array([2])})},
                     edges=[("in", "fc"), ("fc", "lif"), ("lif", "out")])
    with pytest.raises(FrontendError, match=r"NIR node 'lif' \(LIF\): LIF leak has no counterpart"):
        from_nir(g)
    h = from_nir(g, approximate_lif=True)
    assert h["lif"].op == "fire" and any("leak dropped" in s for s in h.meta["nir_approximations"])


def test_foreign_conv_sumpool_flatten_graph():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(3, 2, 3, 3))
    fc = rng.normal(size=(5, 3 * 2 * 2))
    g = nir.NIRGraph(
        nodes={"in": nir.Input(input_type={"input": np.array([2, 4, 4])}),
               "conv": nir.Conv2d(input_shape=(4, 4), weight=w, stride=1, padding=1, dilation=1, groups=1,
                                  bias=np.zeros(3)),
               "if": nir.IF(r=np.ones((3, 4, 4)), v_threshold=np.full((3, 4, 4), 0.5)),
               "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
               "flat": nir.Flatten(input_type={"input": np.array([3, 2, 2])}, start_dim=0, end_dim=-1),
               "fc": nir.Linear(weight=fc),
               "out": nir.Output(output_type={"output": np.array([5])})},
        edges=[("in", "conv"), ("conv", "if"), ("if", "pool"), ("pool", "flat"), ("flat", "fc"), ("fc", "out")])
    h = from_nir(g)
    assert [(n.name, n.op, n.shape) for n in h.nodes] == [
        ("in", "input", (2, 4, 4)), ("conv", "conv", (3, 4, 4)), ("if", "fire", (3, 4, 4)),
        ("pool", "pool", (3, 2, 2)), ("flat", "reshape", (12,)), ("fc", "linear", (5,)), ("out", "output", (5,))]
    x = torch.as_tensor(rng.uniform(0, 1, size=(3, 2, 4, 4)))
    z = (F.conv2d(x, torch.as_tensor(w), padding=1) >= 0.5).double()  # one step from rest: at most 1 spike
    want = F.linear(F.avg_pool2d(z, 2).mul(4).flatten(1), torch.as_tensor(fc))
    assert torch.allclose(run(h, x).output, want, atol=1e-12)


def test_cli_export_nir_then_compile_nir(tmp_path, capsys):
    torch.manual_seed(0)
    m = randomize_bn(ConvChain())
    pt2 = tmp_path / "c.pt2"
    torch.export.save(torch.export.export(m, (torch.zeros(2, 2, 8, 8),)), pt2)
    art = str(tmp_path / "art")
    assert main(["compile", str(pt2), "-o", art]) == 0
    nf = str(tmp_path / "c.nir")
    assert main(["export-nir", art, nf]) == 0
    out = capsys.readouterr().out
    assert "- graded spikes: n1 (D=4), n2 (D=4)" in out
    art2 = str(tmp_path / "art2")
    assert main(["compile", nf, "-o", art2]) == 0
    assert main(["simulate", art2, "--samples", "4", "--schedule", "exact"]) == 0
    assert "spike counts == reference" in capsys.readouterr().out
    ref = load_nir(nf)
    assert [n.name for n in ref.neurons()] == ["n1", "n2"]
    bad = tmp_path / "bad.nir"
    bad.write_bytes(open(nf, "rb").read()[:100])
    code = main(["compile", str(bad), "-o", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines()[-1].startswith("snncc: error: ") and "not a readable NIR file" in err
