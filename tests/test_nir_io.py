"""NIR interop: deployed graphs round-trip exactly through NIR files; IF/LIF/conv graphs
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
@pytest.mark.parametrize("form", ["multispike", "binary"])
def test_round_trip_through_hdf5_is_exact(tmp_path, factory, form):
    """snncc reads its own file back exactly: the compact form neuron for neuron; the binary form as
    single-spike copies whose summed counts are the deployed graph's."""
    m, g = deployed(factory())
    path = tmp_path / "m.nir"
    ex = write_nir(g, str(path), form)
    back = from_nir(nir.read(str(path)))
    x = torch.randn((16,) + tuple(m.input_shape), generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2
    a, b = run(g, x), run(back, x)
    assert sorted(ex.names[k] for k in a.counts) == sorted(b.counts)
    for k in a.counts:
        assert torch.equal(a.counts[k], ex.neuron_counts(k, b.counts[ex.names[k]])), k
    assert torch.equal(a.output, b.output)
    if form == "binary":
        assert sorted(ex.copies) == sorted(a.counts) and set(ex.copies.values()) == {4}
        assert any(s.startswith("binary form: ") and "(D=4)" in s for s in ex.lost)
        assert not any(s.startswith("graded spikes: ") for s in ex.lost)
        return
    assert any(s.startswith("graded spikes: ") and "(D=4)" in s for s in ex.lost)
    assert any(s.startswith("firing condition: NIR IF fires when v > v_threshold") for s in ex.lost)
    # what a foreign reader sees: IF with r = 1, v_threshold = theta; the neuron's constant current
    # (bias + beta = theta/2) written into the projection in front of it
    first = g.neurons()[0]
    if_node = ex.graph.nodes[ex.names[first.name]]
    assert isinstance(if_node, nir.IF) and np.all(if_node.r == 1.0)
    assert np.all(if_node.v_threshold == first.attrs["theta"])
    assert if_node.metadata["snncc_D"] == 4
    proj = ex.graph.nodes[ex.names[first.inputs[0]]]
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


def _one_lif(tau=10.0, r=1.0, v_leak=0.0, vth=1.0, n=2):
    arr = lambda v: np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)).copy()  # noqa: E731
    return nir.NIRGraph(nodes={"in": nir.Input(input_type={"input": np.array([n])}),
                               "fc": nir.Linear(weight=np.eye(n)),
                               "lif": nir.LIF(tau=arr(tau), r=arr(r), v_leak=arr(v_leak), v_threshold=arr(vth)),
                               "out": nir.Output(output_type={"output": np.array([n])})},
                        edges=[("in", "fc"), ("fc", "lif"), ("lif", "out")])


def test_lif_is_refused_without_a_rule_and_approximated_on_request():
    g = _one_lif()
    with pytest.raises(FrontendError, match=r"NIR node 'lif' \(LIF\): LIF is continuous-time: how it becomes "
                                            r"steps is the reader's choice") as e:
        from_nir(g)
    assert "--nir-lif steps | euler:DT | exp:DT | approximate" in e.value.one_line()
    for h in (from_nir(g, approximate_lif=True), from_nir(g, lif="approximate")):
        assert h["lif"].op == "fire" and h["lif"].attrs["leak"] == 1.0
        assert any("leak dropped" in s for s in h.meta["nir_approximations"])


@pytest.mark.parametrize("rule,leak,counts", [
    # tau 4, r 2, v_leak 0.4, threshold 1, input 1 every step. euler:1: leak 0.75, each step adds
    # 0.25 x 2 x 1 + 0.25 x 0.4 = 0.6: v = 0.6, 1.05 (spike, 0.05 left), 0.6375, 1.078125 (spike): 2
    ("euler:1", 0.75, 2),
    # exp:1: a = exp(-0.25) = 0.7788, each step adds (1 - a)(0.4 + 2) = 0.5309: v = 0.5309, 0.9444,
    # 1.2664 (spike, 0.2664 left), 0.7384: 1
    ("exp:1", float(np.exp(-0.25)), 1),
    # euler:0.5: leak 0.875, adds 0.3 per step: 0.3, 0.5625, 0.7922, 0.9932: none
    ("euler:0.5", 0.875, 0),
])
def test_lif_rules_by_hand(rule, leak, counts):
    g = from_nir(_one_lif(tau=4.0, r=2.0, v_leak=0.4, n=1), T=4, lif=rule)
    f = g["lif"]
    assert f.attrs["stateful"] and f.attrs["D"] == 1 and f.attrs["leak"] == pytest.approx(leak, rel=1e-15)
    assert g.meta["nir_lif"] == rule
    res = run(g, torch.ones(4, 1, 1, dtype=torch.float64))
    assert res.counts["lif"].tolist() == [[counts]]


def test_lif_per_neuron_thresholds_scale_the_membrane():
    """Thresholds 0.5 and 2 under euler:1 (tau 2: leak 0.5, gain 0.5): the membrane in units of the
    threshold is the same neuron; input 1.2 every step: v = 0.6 (spike at 0.5), ... by hand below."""
    g = from_nir(_one_lif(tau=2.0, vth=[0.5, 2.0]), T=3, lif="euler:1")
    assert g["lif"].attrs["theta"] == 1.0 and g[g["lif"].inputs[0]].op == "scale"
    # neuron 0 (threshold 0.5): v = 0.6 -> spike, 0.1; 0.05 + 0.6 = 0.65 -> spike, 0.15; 0.675 -> spike: 3
    # neuron 1 (threshold 2): v = 0.6, 0.9, 1.05: none
    res = run(g, torch.full((3, 1, 2), 1.2, dtype=torch.float64))
    assert res.counts["lif"].tolist() == [[3, 0]]


@pytest.mark.parametrize("kw,rule,msg", [
    ({"tau": [2.0, 3.0]}, "exp:1", "per-neuron or non-positive tau"),
    ({"tau": 0.5}, "euler:1", "euler step DT = 1 > tau = 0.5 gives a negative leak"),
    ({"v_leak": 0.1}, "steps", "LIF rule steps (sinabs' reading) needs v_leak = 0"),
    ({}, "euler", "unknown LIF rule 'euler'"),
    ({}, "exp:-1", "unknown LIF rule 'exp:-1'"),
    ({}, "leaky", "unknown LIF rule 'leaky'"),
])
def test_bad_lif_rules_and_neurons_are_refused_in_one_line(kw, rule, msg):
    with pytest.raises(FrontendError) as e:
        from_nir(_one_lif(**kw), lif=rule)
    assert msg in e.value.one_line() and "\n" not in e.value.one_line()


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
    capsys.readouterr()
    assert main(["export-nir", art, str(tmp_path / "b.nir")]) == 0
    out = capsys.readouterr().out
    assert "binary form" in out.splitlines()[0] and "- binary form: n1 (D=4), n2 (D=4) are written as D" in out
    assert main(["export-nir", art, nf, "--nir-form", "multispike"]) == 0
    out = capsys.readouterr().out
    assert "- graded spikes: n1 (D=4), n2 (D=4)" in out and "--nir-form binary writes single-spike copies" in out
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


def test_cli_nir_lif(tmp_path, capsys):
    path = tmp_path / "lif.nir"
    nir.write(str(path), _one_lif(tau=4.0))
    assert main(["compile", str(path), "--nir-lif", "exp:1", "-o", str(tmp_path / "a")]) == 0
    assert "NIR LIF neurons stepped by rule exp:1" in capsys.readouterr().out
    assert main(["compile", str(path), "--nir-lif", "exp:0", "-o", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown LIF rule 'exp:0'" in err and "--nir-lif" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_binary_copies_by_hand():
    """x (2) -> linear [[1], [1]] + bias -> fire D = 3, theta = 1, beta = 0.5 -> linear [1, 2] -> out.
    Input 2.2, bias (0, -1.2): membranes v = 2.7 and 1.5 fire 2 and 1. In the binary form copy k
    (k = 0, 1, 2) sees v + k and fires at 3: (2.7, 3.7, 4.7) -> (0, 1, 1) and (1.5, 2.5, 3.5) ->
    (0, 0, 1); the consumer reads [1, 1, 1, 2, 2, 2] and gets 2 + 2 * 1 = 4."""
    from snncc.ir.graph import Graph, Node
    from snncc.interop.nir_io import nir_graph

    g = Graph([Node("x", "input", [], {"kind": "current", "shape": (1,)}),
               Node("l", "linear", ["x"], {}, {"weight": np.array([[1.0], [1.0]]), "bias": np.array([0.0, -1.2])}),
               Node("f", "fire", ["l"], {"D": 3, "theta": 1.0, "beta": 0.5, "rounding": "floor"}),
               Node("h", "linear", ["f"], {}, {"weight": np.array([[1.0, 2.0]])}),
               Node("o", "output", ["h"])]).infer().verify()
    x = torch.tensor([[2.2]], dtype=torch.float64)
    b, names, copies = nir_graph(g, "binary")
    assert copies == {"f": 3} and b["f"].attrs["D"] == 1 and b["f"].attrs["theta"] == 3.0
    assert b["l"].params["weight"].shape == (6, 1) and b["h"].params["weight"].tolist() == [[1, 1, 1, 2, 2, 2]]
    np.testing.assert_allclose(b["f"].params["bias"], [0.5, 1.5, 2.5, 0.5, 1.5, 2.5])  # beta + k theta
    np.testing.assert_allclose(b["l"].params["bias"], [0, 0, 0, -1.2, -1.2, -1.2])
    r = run(b, x)
    assert r.counts["f"].tolist() == [[0, 1, 1, 0, 0, 1]] and r.output.tolist() == [[4.0]]
    assert run(g, x).counts["f"].tolist() == [[2, 1]] and run(g, x).output.tolist() == [[4.0]]
    # the projection also feeds another node: a ones fan-out in front of the copies instead
    g2 = Graph(list(g.nodes[:3]) + [Node("f2", "fire", ["l"], {"D": 1, "rounding": "floor"}),
                                    Node("h", "linear", ["f"], {}, {"weight": np.array([[1.0, 2.0]])}),
                                    Node("o", "output", ["h"])]).infer().verify()
    b2, _, _ = nir_graph(g2, "binary")
    assert b2["f"].inputs == ["f_fanout"] and b2["f_fanout"].params["weight"].shape == (6, 2)
    assert run(b2, x).counts["f"].tolist() == [[0, 1, 1, 0, 0, 1]] and run(b2, x).output.tolist() == [[4.0]]


def test_start_pulse_gives_carried_copies_their_initial_membrane_by_hand(tmp_path):
    """One stateful neuron (D = 2, theta 1, beta 0.5) over T = 3 windows reading 3 spike inputs with
    weights 1: inputs 2, 3, 0 give V = 2.5 -> 2 spikes (carry 0), 3.5 -> 2 (capped, carry 1),
    1.5 -> 1: 5 spikes. The binary export (a vector input: the start pulse's constants are an
    Affine) reads back with exactly these counts, the pulse firing once per sample; without the
    pulse (copies from 0) the copies would fire 0 + 2 + 0."""
    from snncc.ir.graph import Graph, Node

    fire = {"D": 2, "theta": 1.0, "beta": 0.5, "norm": 1.0, "rounding": "floor", "stateful": True}
    g = Graph([Node("x", "input", [], {"shape": (3,), "kind": "spike"}),
               Node("fc", "linear", ["x"], {}, {"weight": np.ones((1, 3))}),
               Node("n", "fire", ["fc"], fire), Node("out", "output", ["n"])], T=3).infer()
    x = torch.tensor([[[1.0, 1.0, 0.0]], [[1.0, 1.0, 1.0]], [[0.0, 0.0, 0.0]]], dtype=torch.float64)  # (T, B, 3)
    assert run(g, x).counts["n"].tolist() == [[5.0]]
    ex = write_nir(g, str(tmp_path / "n.nir"))
    assert ex.copies == {"n": 2} and {"start", "start_const", "start_clock"} <= set(ex.graph.nodes)
    assert ex.graph.nodes["start_const"].bias.tolist() == [1.0, 0.5]
    back = run(load_nir(str(tmp_path / "n.nir")), x)
    assert ex.neuron_counts("n", back.counts[ex.names["n"]]).tolist() == [[5.0]]
    assert back.counts["start"].tolist() == [[1.0]] and back.counts["start_clock"].tolist() == [[3.0, 1.0]]
